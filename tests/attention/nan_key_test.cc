// Regression (issue 11, finding 6): a NaN key used to be dropped by the AVX2/AVX-512 softmax but
// to poison the whole output in the scalar path. The documented behaviour (docs/design.md,
// "NaN keys") is the same at every SIMD level: a token whose score is NaN gets weight 0; a query
// that sees only such tokens gets a zero output. Checked against float64 attention over the
// remaining tokens, for float (f32, f16) and quantized (q8_0) key formats.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "testing/attention_reference.h"
#include "tqkv/kv_cache.h"
#include "tqkv/simd.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

void check_level(const char* fmt, SimdLevel level, int d, int len, int nan_at) {
  const SimdLevel saved = active_simd_level();
  if (set_simd_level(level) != level) { set_simd_level(saved); return; }  // CPU lacks it
  KVCacheOptions o;
  o.key_format = *parse_format(fmt);
  o.value_format = *parse_format("f32");
  auto cache = LayerKVCache::make(1, d, o, 0);
  ASSERT_TRUE(cache.ok());
  std::vector<float> k(static_cast<size_t>(len) * d), v(k.size()), q(d);
  generate_gaussian(k.data(), len, d, 11);
  generate_gaussian(v.data(), len, d, 12);
  generate_gaussian(q.data(), 1, d, 13);
  k[static_cast<size_t>(nan_at) * d + 3] = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE((*cache)->append(0, len, {k.data(), int64_t(len) * d, d}, {v.data(), int64_t(len) * d, d}).ok());
  std::vector<float> out(d, -1.0f);
  ASSERT_TRUE((*cache)->attend(0, 1, 1, {q.data(), d, d}, {out.data(), d, d}).ok());
  // Reference: the decoded cache without the NaN token.
  std::vector<float> kd(k.size()), vd(k.size()), kr, vr;
  ASSERT_TRUE((*cache)->read(0, 0, 0, len, kd.data(), vd.data()).ok());
  for (int t = 0; t < len; ++t) {
    if (t == nan_at) continue;
    kr.insert(kr.end(), kd.data() + static_cast<size_t>(t) * d, kd.data() + static_cast<size_t>(t + 1) * d);
    vr.insert(vr.end(), vd.data() + static_cast<size_t>(t) * d, vd.data() + static_cast<size_t>(t + 1) * d);
  }
  std::vector<double> ref;
  testing::reference_attention(q.data(), kr.data(), vr.data(), len - 1, d, 1 / std::sqrt(double(d)), ref);
  // Float32 accumulation over <= 200 tokens of unit-scale values: 1e-4 absolute is ~100x the
  // expected rounding; a poisoned output is NaN and a mis-weighted one is off by O(0.1).
  for (int i = 0; i < d; ++i)
    ASSERT_NEAR(out[i], ref[i], 1e-4) << fmt << " level " << simd_level_name(level) << " i " << i;
  set_simd_level(saved);
}

TEST(NanKey, DroppedAtEverySimdLevel) {
  for (const char* fmt : {"f32", "f16", "q8_0"})
    for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512})
      for (int nan_at : {0, 5, 70, 199}) check_level(fmt, l, 64, 200, nan_at);
}

TEST(NanKey, OnlyNanKeysGiveZeroOutput) {
  for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    const SimdLevel saved = active_simd_level();
    if (set_simd_level(l) != l) { set_simd_level(saved); continue; }
    KVCacheOptions o;
    o.key_format = *parse_format("f32");
    o.value_format = *parse_format("f32");
    auto cache = LayerKVCache::make(1, 16, o, 0);
    ASSERT_TRUE(cache.ok());
    std::vector<float> k(16, std::numeric_limits<float>::quiet_NaN()), v(16, 1.0f), q(16, 1.0f), out(16, -1.0f);
    ASSERT_TRUE((*cache)->append(0, 1, {k.data(), 16, 16}, {v.data(), 16, 16}).ok());
    ASSERT_TRUE((*cache)->attend(0, 1, 1, {q.data(), 16, 16}, {out.data(), 16, 16}).ok());
    for (float x : out) ASSERT_EQ(x, 0.0f) << simd_level_name(l);
    set_simd_level(saved);
  }
}

// Scores of -inf without any NaN (a key with -inf where the query is positive) are masked tokens
// too: the SIMD levels' vector scan (softmax_step) must report a row of only -inf as fully masked
// (zero output, never exp(-inf - -inf) = NaN), and -inf tokens among finite ones get weight 0.
TEST(NanKey, MinusInfScoresAreMaskedAtEverySimdLevel) {
  const int d = 16, len = 70;  // more than one 64-token block, a 6-token tail
  for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    const SimdLevel saved = active_simd_level();
    if (set_simd_level(l) != l) { set_simd_level(saved); continue; }
    for (int n_finite : {0, 1, 9}) {  // the last n_finite tokens have finite keys
      KVCacheOptions o;
      o.key_format = *parse_format("f32");
      o.value_format = *parse_format("f32");
      auto cache = LayerKVCache::make(1, d, o, 0);
      ASSERT_TRUE(cache.ok());
      std::vector<float> k(static_cast<size_t>(len) * d), v(k.size()), q(d, 0.5f), out(d, -1.0f);
      generate_gaussian(k.data(), len, d, 21);
      generate_gaussian(v.data(), len, d, 22);
      for (int t = 0; t < len - n_finite; ++t) k[static_cast<size_t>(t) * d] = -std::numeric_limits<float>::infinity();
      ASSERT_TRUE((*cache)->append(0, len, {k.data(), int64_t(len) * d, d}, {v.data(), int64_t(len) * d, d}).ok());
      ASSERT_TRUE((*cache)->attend(0, 1, 1, {q.data(), d, d}, {out.data(), d, d}).ok());
      std::vector<double> ref(d, 0.0);
      if (n_finite > 0)
        testing::reference_attention(q.data(), k.data() + static_cast<size_t>(len - n_finite) * d,
                                     v.data() + static_cast<size_t>(len - n_finite) * d, n_finite, d,
                                     1 / std::sqrt(double(d)), ref);
      // Same float32 tolerance as DroppedAtEverySimdLevel; the all -inf row must be exactly 0.
      for (int i = 0; i < d; ++i)
        ASSERT_NEAR(out[i], ref[i], n_finite > 0 ? 1e-4 : 0.0) << simd_level_name(l) << " finite " << n_finite << " i " << i;
    }
    set_simd_level(saved);
  }
}

}  // namespace
}  // namespace tqkv
