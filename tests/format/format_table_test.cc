// The format table (src/format/format_table.h) and the one q8_0/q4_0 block implementation.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "format/blocks.h"
#include "format/format_table.h"
#include "tqkv/cache_config.h"
#include "tqkv/gguf.h"
#include "tqkv/quantizer.h"

namespace tqkv {
namespace {

const FormatKind kKinds[] = {FormatKind::kF32, FormatKind::kF16, FormatKind::kQ8_0, FormatKind::kQ4_0,
                             FormatKind::kRvq, FormatKind::kTq,  FormatKind::kKivi};

TEST(FormatTable, EveryRowParsesItsOwnNamesAndHasKernels) {
  for (FormatKind k : kKinds) {
    const format::FormatRow& r = format::row(k);
    EXPECT_EQ(r.kind, k);
    for (int b = 0; b <= 32; ++b) {
      if (r.fixed_bits ? b != r.fixed_bits : !(b < 32 && (r.bits_mask >> b & 1))) continue;
      for (int p = 1; p <= r.max_passes; ++p) {
        const FormatSpec spec{k, b, p};
        auto parsed = parse_format(spec.name());
        ASSERT_TRUE(parsed.ok()) << spec.name();
        EXPECT_EQ(*parsed, spec);
        for (int lvl = 0; lvl < 3; ++lvl) {
          if (r.rotated) {
            EXPECT_NE(r.encode_rotated[lvl], nullptr);
            EXPECT_NE(r.decode_rotated[lvl], nullptr);
          } else {
            EXPECT_NE(r.encode[lvl], nullptr);
            EXPECT_NE(r.decode[lvl], nullptr);
          }
        }
      }
    }
  }
  EXPECT_FALSE(parse_format("tq5").ok());
  EXPECT_FALSE(parse_format("kivi3").ok());
  EXPECT_FALSE(parse_format("rvq1x5").ok());
  EXPECT_FALSE(parse_format("q5_0").ok());
}

// Sizes written down in docs/format.md for d = 128 and d = 80 (independent of the table's code).
TEST(FormatTable, CodeSizesMatchDocs) {
  struct C { const char* name; int d; size_t bytes; } cases[] = {
      {"f32", 128, 512}, {"f16", 128, 256}, {"q8_0", 128, 136}, {"q4_0", 128, 72},
      {"rvq1x2", 128, 36}, {"tq2", 128, 36}, {"kivi2", 128, 48}, {"kivi4", 128, 80},
      {"q8_0", 80, 102}, {"rvq2x2", 80, 44}, {"kivi2", 80, 36}};
  for (const C& c : cases) EXPECT_EQ(code_size(*parse_format(c.name), c.d), c.bytes) << c.name << " d " << c.d;
}

TEST(FormatTable, MethodTableMapsToFormats) {
  auto c = cache_config_from_method("turboquant_mse", 3, 2, 4, true);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->base.key_format.name(), "tq3");
  EXPECT_EQ(c->base.value_format.name(), "tq4");
  EXPECT_FALSE(cache_config_from_method("turboquant_mse", 3, 2, 3, true).ok());
  EXPECT_FALSE(cache_config_from_method("nope", 1, 2, 2, true).ok());
  EXPECT_EQ(cache_method_names(), "turboquant_rvq, turboquant_mse, kivi, q8_0, q4_0, f16, f32");
}

// One q8_0 block implementation, two roundings: llama.cpp's quantize_row_q8_0_ref uses roundf
// (half away from zero) for weights; the cache rounds to nearest even. amax = 127 gives d = 1
// exactly (fp16 0x3c00), so x = 2.5 and -0.5 are exact ties.
TEST(FormatTable, Q8_0RoundingOfWeightsAndCache) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -0.5f;
  x[3] = 3.5f;
  BlockQ8_0 w, c;
  quantize_block_q8_0(x.data(), 32, &w, Rounding::kHalfAwayFromZero);
  quantize_block_q8_0(x.data(), 32, &c, Rounding::kNearestEven);
  EXPECT_EQ(w.d, 0x3c00);
  EXPECT_EQ(c.d, 0x3c00);
  EXPECT_EQ(w.qs[1], 3);
  EXPECT_EQ(w.qs[2], -1);
  EXPECT_EQ(w.qs[3], 4);
  EXPECT_EQ(c.qs[1], 2);
  EXPECT_EQ(c.qs[2], 0);
  EXPECT_EQ(c.qs[3], 4);
  // GGUF rows are written with the weights' rounding.
  const std::vector<uint8_t> row = quantize_q8_0_row(x.data(), 32);
  ASSERT_EQ(row.size(), sizeof(BlockQ8_0));
  EXPECT_EQ(std::memcmp(row.data(), &w, sizeof w), 0);
}

// GGUF weights and the cache decode q8_0/q4_0 through the same code: identical floats.
TEST(FormatTable, GgufWeightsDecodeLikeTheCache) {
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[i] = 0.37f * (i - 30) + 0.01f * i * i;
  for (const char* name : {"q8_0", "q4_0"}) {
    auto q = make_quantizer(*parse_format(name), 64);
    ASSERT_TRUE(q.ok());
    std::vector<uint8_t> codes((*q)->code_size());
    (*q)->encode(x.data(), 1, codes.data());
    std::vector<float> a(64), b(64);
    (*q)->decode(codes.data(), 1, a.data());
    dequantize_row(std::string(name) == "q8_0" ? GgmlType::kQ8_0 : GgmlType::kQ4_0, codes.data(), b.data(), 64);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), 64 * sizeof(float)), 0) << name;
  }
}

}  // namespace
}  // namespace tqkv
