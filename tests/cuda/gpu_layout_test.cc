// The GPU page layout (src/cuda/gpu_layout.h, docs/format.md 2b) on the host: every element of a
// tile lands in exactly one field of one lane's chunk, the inverse map undoes it, and the field
// order matches bits worked out by hand from docs/format.md. Runs without a GPU.
#include <gtest/gtest.h>

#include <vector>

#include "cuda/gpu_layout.h"

namespace tqkv::gpu {
namespace {

TEST(GpuLayout, EveryElementHasItsOwnFieldAndTheInverseUndoesIt) {
  for (int codec : {kLut2, kLut4, kQ4, kQ8, kF16})
    for (int d : {16, 64, 80, 128, 256})
      for (bool value : {false, true}) {
        const int w = codec_field_bits(codec);
        const int chunk_bits = static_cast<int>(chunk_bytes(codec, d)) * 8;
        ASSERT_EQ(chunk_bits * 32, 16 * d * w);
        std::vector<int> owner(32 * chunk_bits, -1);
        for (int t = 0; t < 16; ++t)
          for (int i = 0; i < d; ++i) {
            int lane = -1, p = -1, s = -1;
            element_slot(value, d, t, i, &lane, &p, &s);
            ASSERT_TRUE(lane >= 0 && lane < 32 && p >= 0 && p < d / 4 && (s == 0 || s == 1))
                << codec << " d=" << d << " value=" << value << " t=" << t << " i=" << i;
            int t2 = -1, i2 = -1;
            slot_element(value, d, lane, p, s, &t2, &i2);
            ASSERT_EQ(t2, t);
            ASSERT_EQ(i2, i);
            const int bit = field_bit(codec, p, s);
            ASSERT_TRUE(bit >= 0 && bit + w <= chunk_bits) << codec << " d=" << d << " p=" << p << " s=" << s;
            ASSERT_TRUE(bit % 32 + w <= 32) << "field crosses a 32-bit word";
            for (int b = bit; b < bit + w; ++b) {
              ASSERT_EQ(owner[lane * chunk_bits + b], -1)
                  << "codec " << codec << " d=" << d << " value=" << value << ": bit " << b << " of lane " << lane
                  << " taken twice";
              owner[lane * chunk_bits + b] = t * d + i;
            }
          }
        for (int v : owner) ASSERT_NE(v, -1) << "codec " << codec << " d=" << d << ": an unused chunk bit";
      }
}

// docs/format.md 2b, written out by hand: d = 128, lane 0 of a key tile. Pair 5 is token 0,
// elements 10 (s = 0) and 11 (s = 1): lut2 bits 5*4 = 20 and 22 of the chunk; q4 bits
// (5/4)*32 + (5%4)*4 = 36 and 36 + 16 = 52. Value tile, lane 5 (g = 1, c = 1): pair 6
// (mm = 1, a = 2) is element 16 + 2 + 0 = 18, tokens 2 + 8 = 10 (s = 0) and 11 (s = 1): lut2 bits
// 24 and 26, lut4 48 and 52, q8 96 and 104.
TEST(GpuLayout, FieldOrderMatchesTheDocumentedBytes) {
  int lane, p, s;
  element_slot(false, 128, 0, 10, &lane, &p, &s);
  EXPECT_EQ(lane, 0); EXPECT_EQ(p, 5); EXPECT_EQ(s, 0);
  element_slot(false, 128, 0, 11, &lane, &p, &s);
  EXPECT_EQ(lane, 0); EXPECT_EQ(p, 5); EXPECT_EQ(s, 1);
  EXPECT_EQ(field_bit(kLut2, 5, 0), 20);
  EXPECT_EQ(field_bit(kLut2, 5, 1), 22);
  EXPECT_EQ(field_bit(kQ4, 5, 0), 36);
  EXPECT_EQ(field_bit(kQ4, 5, 1), 52);
  element_slot(true, 128, 10, 18, &lane, &p, &s);
  EXPECT_EQ(lane, 5); EXPECT_EQ(p, 6); EXPECT_EQ(s, 0);
  element_slot(true, 128, 11, 18, &lane, &p, &s);
  EXPECT_EQ(lane, 5); EXPECT_EQ(p, 6); EXPECT_EQ(s, 1);
  EXPECT_EQ(field_bit(kLut2, 6, 0), 24);
  EXPECT_EQ(field_bit(kLut2, 6, 1), 26);
  EXPECT_EQ(field_bit(kLut4, 6, 0), 48);
  EXPECT_EQ(field_bit(kLut4, 6, 1), 52);
  EXPECT_EQ(field_bit(kQ8, 6, 0), 96);
  EXPECT_EQ(field_bit(kQ8, 6, 1), 104);
}

}  // namespace
}  // namespace tqkv::gpu
