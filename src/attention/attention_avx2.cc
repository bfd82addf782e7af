// AVX2 (+FMA, F16C) kernels of the fused attention for float tiles (decoded per-vector formats,
// f16 caches and windows) and the softmax step. Bit-sliced tiles (rvq/tq with 1-2 bit passes)
// use the scalar nibble-LUT kernels at this level: AVX2 has no VNNI byte dot product.
#include "core/simd_intrinsics.h"

#include <algorithm>
#include <cmath>

#include "attention/attention_kernels.h"
#include "core/check.h"

namespace tqkv::attn {

namespace {
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int NS>
void scores_ns(const float* q, int d, const float* k, int n, int s0, float* scores) {
  const int full = d / 8 * 8;
  for (int t = 0; t < n; ++t) {
    const float* kt = k + static_cast<size_t>(t) * d;
    __m256 acc[NS];
    for (int j = 0; j < NS; ++j) acc[j] = _mm256_setzero_ps();
    for (int i = 0; i < full; i += 8) {
      const __m256 kv = _mm256_loadu_ps(kt + i);
      for (int j = 0; j < NS; ++j) acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + static_cast<size_t>(s0 + j) * d + i), kv, acc[j]);
    }
    for (int j = 0; j < NS; ++j) {
      float r = hsum(acc[j]);
      for (int i = full; i < d; ++i) r += q[static_cast<size_t>(s0 + j) * d + i] * kt[i];
      scores[(s0 + j) * kBlock + t] = r;
    }
  }
}

template <int NS>
void accum_ns(const float* p, int d, const float* v, int n, int s0, float* o) {
  const int full = d / 8 * 8;
  for (int i = 0; i < full; i += 8) {
    __m256 acc[NS];
    for (int j = 0; j < NS; ++j) acc[j] = _mm256_loadu_ps(o + static_cast<size_t>(s0 + j) * d + i);
    for (int t = 0; t < n; ++t) {
      const __m256 vv = _mm256_loadu_ps(v + static_cast<size_t>(t) * d + i);
      for (int j = 0; j < NS; ++j) acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(p[(s0 + j) * kBlock + t]), vv, acc[j]);
    }
    for (int j = 0; j < NS; ++j) _mm256_storeu_ps(o + static_cast<size_t>(s0 + j) * d + i, acc[j]);
  }
  for (int j = 0; j < NS; ++j)
    for (int t = 0; t < n; ++t)
      for (int i = full; i < d; ++i) o[static_cast<size_t>(s0 + j) * d + i] += p[(s0 + j) * kBlock + t] * v[static_cast<size_t>(t) * d + i];
}

inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kExpPoly[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpPoly[i]));
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}
}  // namespace

void float_scores_avx2(const float* q, int ns, const float* k, int n, int d, float* scores) {
  by_state_groups(ns, [&](auto NS, int s0) { scores_ns<decltype(NS)::value>(q, d, k, n, s0, scores); });
}
void float_accum_avx2(const float* p, int ns, const float* v, int n, int d, float* o) {
  by_state_groups(ns, [&](auto NS, int s0) { accum_ns<decltype(NS)::value>(p, d, v, n, s0, o); });
}

static void f16_to_f32_avx2(const uint16_t* src, size_t count, float* dst) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < count; ++i) dst[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(src[i])));
}
void f16_scores_avx2(const float* q, int ns, const uint16_t* k, int n, int d, float* scores) {
  alignas(64) static thread_local float tile[kBlock * kF16DirectMaxDim];
  TQKV_CHECK(d <= kF16DirectMaxDim);  // attend() takes the general decode path above
  f16_to_f32_avx2(k, static_cast<size_t>(n) * d, tile);
  float_scores_avx2(q, ns, tile, n, d, scores);
}
void f16_accum_avx2(const float* p, int ns, const uint16_t* v, int n, int d, float* o) {
  alignas(64) static thread_local float tile[kBlock * kF16DirectMaxDim];
  TQKV_CHECK(d <= kF16DirectMaxDim);  // attend() takes the general decode path above
  f16_to_f32_avx2(v, static_cast<size_t>(n) * d, tile);
  float_accum_avx2(p, ns, tile, n, d, o);
}

void softmax_block_avx2(float* scores, int ns, const int* valid, float* m, float* l, float* corr) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int s = 0; s < ns; ++s) {
    float* sc = scores + s * kBlock;
    corr[s] = 1.0f;
    if (valid[s] <= 0) {
      for (int t = 0; t < kBlock; t += 8) _mm256_storeu_ps(sc + t, _mm256_setzero_ps());
      continue;
    }
    float mx = -INFINITY;
    for (int t = 0; t < valid[s]; ++t) mx = std::max(mx, sc[t]);
    const float mnew = std::max(m[s], mx);
    corr[s] = m[s] == -INFINITY ? 0.0f : std::exp(m[s] - mnew);
    m[s] = mnew;
    __m256 sum = _mm256_setzero_ps();
    const __m256 mv = _mm256_set1_ps(mnew);
    for (int t = 0; t < kBlock; t += 8) {
      // masked-out lanes may hold -inf or stale values: exp of them is discarded by `keep`
      const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(valid[s]), _mm256_add_epi32(lane, _mm256_set1_epi32(t))));
      const __m256 e = _mm256_and_ps(keep, exp256(_mm256_sub_ps(_mm256_loadu_ps(sc + t), mv)));
      _mm256_storeu_ps(sc + t, e);
      sum = _mm256_add_ps(sum, e);
    }
    l[s] = l[s] * corr[s] + hsum(sum);
  }
}

}  // namespace tqkv::attn
