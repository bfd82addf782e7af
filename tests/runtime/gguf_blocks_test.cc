// GGUF q4_0 / q8_0 weight blocks against hand-built bytes, per llama.cpp's published block
// layouts (ggml-common.h), independent of the round trip through tqkv's own quantizers:
//   block_q8_0 (34 bytes, 32 elements): fp16 d, int8 qs[32];            x[j] = d * qs[j]
//   block_q4_0 (18 bytes, 32 elements): fp16 d, uint8 qs[16];           x[j]      = d * ((qs[j] & 15) - 8)
//                                                                        x[j + 16] = d * ((qs[j] >> 4) - 8)
// and llama.cpp's reference quantizers (quantize_row_q8_0_ref / q4_0_ref):
//   q8_0: d = amax / 127, q = round(x / d)
//   q4_0: d = m / -8 with m the element of largest magnitude (sign kept), q = min(15, trunc(x / d + 8.5))
// The fp16 scales below are exact powers of two, written as their bit patterns by hand.
// (Q4_K and Q6_K blocks are hand-built in gguf_test.cc.)
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "tqkv/gguf.h"
#include "tqkv/simd.h"

namespace tqkv {
namespace {

// dequantize_row() runs the format table's decode kernel of the active SIMD level: every level
// the CPU has is checked against the same hand-built bytes.
std::vector<SimdLevel> levels() {
  std::vector<SimdLevel> l = {SimdLevel::kScalar};
  if (detected_simd_level() >= SimdLevel::kAvx2) l.push_back(SimdLevel::kAvx2);
  if (detected_simd_level() >= SimdLevel::kAvx512) l.push_back(SimdLevel::kAvx512);
  return l;
}
struct LevelGuard {
  SimdLevel saved = active_simd_level();
  ~LevelGuard() { set_simd_level(saved); }
};

TEST(GgufBlocks, Q4_0DequantizeHandBuilt) {
  // Two blocks: d = 0.5 (fp16 0x3800) and d = -2 (fp16 0xc000).
  // qs[j] = j | (15 - j) << 4: element j has code j, element j + 16 has code 15 - j.
  std::vector<uint8_t> b(36);
  b[0] = 0x00; b[1] = 0x38;
  b[18] = 0x00; b[19] = 0xc0;
  for (int j = 0; j < 16; ++j) b[2 + j] = b[20 + j] = static_cast<uint8_t>(j | (15 - j) << 4);
  LevelGuard guard;
  for (SimdLevel level : levels()) {
    set_simd_level(level);
    std::vector<float> y(64);
    dequantize_row(GgmlType::kQ4_0, b.data(), y.data(), 64);
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[j], 0.5f * (j - 8)) << j << " at " << simd_level_name(level);
      EXPECT_EQ(y[16 + j], 0.5f * (15 - j - 8)) << 16 + j << " at " << simd_level_name(level);
      EXPECT_EQ(y[32 + j], -2.0f * (j - 8)) << 32 + j << " at " << simd_level_name(level);
      EXPECT_EQ(y[48 + j], -2.0f * (15 - j - 8)) << 48 + j << " at " << simd_level_name(level);
    }
  }
}

TEST(GgufBlocks, Q4_0QuantizeToHandBuiltBytes) {
  // x[0] = -8 has the largest magnitude: d = -8 / -8 = 1 (fp16 0x3c00).
  // x[j] = j - 8 (j < 16) -> trunc(j - 8 + 8.5) = j; x[16 + j] = 7.25 - j -> trunc(15.75 - j) = 15 - j.
  std::vector<float> x(32);
  for (int j = 0; j < 16; ++j) {
    x[j] = static_cast<float>(j - 8);
    x[16 + j] = 7.25f - j;
  }
  const std::vector<uint8_t> got = quantize_q4_0_row(x.data(), 32);
  std::vector<uint8_t> want(18);
  want[0] = 0x00; want[1] = 0x3c;
  for (int j = 0; j < 16; ++j) want[2 + j] = static_cast<uint8_t>(j | (15 - j) << 4);
  EXPECT_EQ(got, want);
}

TEST(GgufBlocks, Q8_0DequantizeHandBuilt) {
  // d = 0.25 (fp16 0x3400), qs[j] = 8 j - 128 as int8 (bytes 0x80, 0x88, ...).
  std::vector<uint8_t> b(34);
  b[0] = 0x00; b[1] = 0x34;
  for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(0x80 + 8 * j);
  LevelGuard guard;
  for (SimdLevel level : levels()) {
    set_simd_level(level);
    std::vector<float> y(32);
    dequantize_row(GgmlType::kQ8_0, b.data(), y.data(), 32);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.25f * (8 * j - 128)) << j << " at " << simd_level_name(level);
  }
}

TEST(GgufBlocks, Q8_0QuantizeToHandBuiltBytes) {
  // amax = 254 -> d = 2 (fp16 0x4000); x[j] = 2 (j - 16) + 0.6 -> round(j - 16 + 0.3) = j - 16
  // (no ties: ggml rounds ties away from zero, tqkv's cache q8_0 to even).
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = 2.0f * (j - 16) + 0.6f;
  x[5] = -254.0f;  // -> -127 (0x81)
  const std::vector<uint8_t> got = quantize_q8_0_row(x.data(), 32);
  std::vector<uint8_t> want(34);
  want[0] = 0x00; want[1] = 0x40;
  for (int j = 0; j < 32; ++j) want[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  want[2 + 5] = 0x81;
  EXPECT_EQ(got, want);
}

TEST(GgufBlocks, ElementCountsAndSizes) {
  // ggml's type traits: (block elements, block bytes).
  struct T { GgmlType t; int64_t e, b; };
  for (const T& t : {T{GgmlType::kQ4_0, 32, 18}, T{GgmlType::kQ8_0, 32, 34}, T{GgmlType::kQ4_K, 256, 144},
                     T{GgmlType::kQ6_K, 256, 210}, T{GgmlType::kF16, 1, 2}, T{GgmlType::kBF16, 1, 2}}) {
    int64_t e = 0, b = 0;
    ASSERT_TRUE(ggml_type_layout(static_cast<uint32_t>(t.t), &e, &b));
    EXPECT_EQ(e, t.e);
    EXPECT_EQ(b, t.b);
  }
}

}  // namespace
}  // namespace tqkv
