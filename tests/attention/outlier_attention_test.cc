// tqo{h}x{l} in the cache and the fused attention with hostile tokens (the shapes and the bound
// against float64 attention on the ORIGINAL K/V are fused_attention_test.cc's tqo cases):
//  - a NaN or Inf key (compressed, after the channel set exists) decodes to all-NaN and gets
//    weight 0 at every SIMD level, like every other format (docs/design.md "NaN keys");
//  - a NaN in the first N tokens is skipped by the channel selection, a zero and a huge (1e4) key
//    and a zero / huge value are ordinary tokens;
//  - the cache's contents equal what the public API predicts (tests/testing/cache_reference.h),
//    and bytes_resident counts the mask block.
// Reference: float64 attention over the cache's decoded rows without the NaN tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "testing/attention_reference.h"
#include "testing/cache_reference.h"
#include "tqkv/kv_cache.h"
#include "tqkv/outlier_split.h"
#include "tqkv/simd.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

TEST(OutlierAttention, HostileTokensAtEverySimdLevel) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int d : {64, 96}) {
    const int len = 97, N = 16;
    KVCacheOptions o;
    o.key_format = *parse_format("tqo3x2");
    o.value_format = *parse_format("tqo3x2");
    o.pk_calib_tokens = N;
    std::vector<float> k(static_cast<size_t>(len) * d), v(k.size()), q(d);
    generate_llm_like(k.data(), len, d, 41);
    generate_gaussian(v.data(), len, d, 42);
    generate_gaussian(q.data(), 1, d, 43);
    k[3 * d + 1] = nan;                                   // in the calibration rows: skipped
    k[20 * d + 5] = nan;                                  // compressed NaN key: weight 0
    k[33 * d + 0] = -inf;                                 // compressed Inf key: weight 0
    for (int i = 0; i < d; ++i) k[40 * d + i] = 0;        // zero key
    for (int i = 0; i < d; ++i) k[50 * d + i] *= 1e4f;    // huge key (finite scores)
    for (int i = 0; i < d; ++i) v[60 * d + i] = 0;        // zero value
    for (int i = 0; i < d; ++i) v[70 * d + i] *= 1e4f;    // huge value
    // Token 3 waited as an f16 pending row (NaN kept) and was compressed from it: NaN as well.
    const std::vector<int> dropped = {3, 20, 33};
    for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
      const SimdLevel saved = active_simd_level();
      if (set_simd_level(l) != l) { set_simd_level(saved); continue; }
      auto cache = LayerKVCache::make(1, d, o, 2);
      ASSERT_TRUE(cache.ok()) << cache.status().to_string();
      for (int t0 = 0; t0 < len; t0 += 10) {
        const int n = std::min(10, len - t0);
        ASSERT_TRUE((*cache)->append(0, n, {&k[t0 * d], int64_t(len) * d, d}, {&v[t0 * d], int64_t(len) * d, d}).ok());
      }
      std::vector<float> kd(k.size()), vd(k.size());
      ASSERT_TRUE((*cache)->read(0, 0, 0, len, kd.data(), vd.data()).ok());
      // The cache holds what the public API predicts (NaN == NaN here).
      const std::vector<float> ke = testing::expected_contents(o, d, 2, 0, CacheStream::kKey, k.data(), len);
      const std::vector<float> ve = testing::expected_contents(o, d, 2, 0, CacheStream::kValue, v.data(), len);
      for (size_t i = 0; i < kd.size(); ++i) {
        ASSERT_TRUE(kd[i] == ke[i] || (std::isnan(kd[i]) && std::isnan(ke[i]))) << d << " key " << i;
        ASSERT_TRUE(vd[i] == ve[i] || (std::isnan(vd[i]) && std::isnan(ve[i]))) << d << " value " << i;
      }
      for (int t : dropped)
        for (int i = 0; i < d; ++i) ASSERT_TRUE(std::isnan(kd[static_cast<size_t>(t) * d + i])) << t << " " << i;
      std::vector<float> out(d, -1.0f);
      ASSERT_TRUE((*cache)->attend(0, 1, 1, {q.data(), d, d}, {out.data(), d, d}).ok());
      std::vector<float> kr, vr;
      int kept = 0;
      for (int t = 0; t < len; ++t) {
        if (std::isnan(kd[static_cast<size_t>(t) * d])) continue;
        kr.insert(kr.end(), kd.begin() + static_cast<size_t>(t) * d, kd.begin() + static_cast<size_t>(t + 1) * d);
        vr.insert(vr.end(), vd.begin() + static_cast<size_t>(t) * d, vd.begin() + static_cast<size_t>(t + 1) * d);
        ++kept;
      }
      ASSERT_EQ(kept, len - static_cast<int>(dropped.size()));
      std::vector<double> ref;
      testing::reference_attention(q.data(), kr.data(), vr.data(), kept, d, 1 / std::sqrt(double(d)), ref);
      double num = 0, den = 0;
      for (int i = 0; i < d; ++i) num += (out[i] - ref[i]) * (out[i] - ref[i]), den += ref[i] * ref[i];
      // Float32 accumulation of <= 97 terms (relative RMS ~1e-6); a poisoned output is NaN, a
      // mis-weighted one off by O(1).
      EXPECT_LT(std::sqrt(num / den), 2e-5) << "d " << d << " level " << simd_level_name(l);
      set_simd_level(saved);
    }
  }
}

// Before N tokens nothing is compressed (pending f16 rows, exact); at N every head gets its set.
TEST(OutlierAttention, PendingUntilCalibratedAndMaskCounted) {
  const int d = 128, N = 64;
  KVCacheOptions o;
  o.key_format = *parse_format("tqo3x2");
  o.value_format = *parse_format("f16");
  o.pk_calib_tokens = N;
  auto cache = LayerKVCache::make(2, d, o, 0);
  ASSERT_TRUE(cache.ok());
  std::vector<float> k(2 * 200 * d), v(k.size());
  generate_llm_like(k.data(), 400, d, 7);
  generate_gaussian(v.data(), 400, d, 8);
  ASSERT_TRUE((*cache)->append(0, N - 1, {k.data(), 200 * d, d}, {v.data(), 200 * d, d}).ok());
  EXPECT_EQ((*cache)->sequence_view(0).n_compressed, 0);
  EXPECT_EQ((*cache)->sequence_view(0).n_pending, N - 1);
  EXPECT_EQ((*cache)->sequence_view(0).heads[0].key.quantizer, nullptr);
  ASSERT_TRUE((*cache)->append(0, 1, {k.data() + (N - 1) * d, 200 * d, d}, {v.data() + (N - 1) * d, 200 * d, d}).ok());
  const SequenceView s = (*cache)->sequence_view(0);
  EXPECT_EQ(s.n_compressed, N);
  EXPECT_EQ(s.n_pending, 0);
  ASSERT_NE(s.heads[1].key.quantizer, nullptr);
  EXPECT_EQ(s.heads[1].key.quantizer->code_size(), 40u);
}

}  // namespace
}  // namespace tqkv
