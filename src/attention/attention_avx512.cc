// AVX-512 (F/BW/VL + VNNI) kernels of the fused attention. Compiled with -mavx512*; called only
// when active_simd_level() == kAvx512. Cross-tested against the scalar kernels in attention.cc.
//
// Fast keys: each key tile stores, per bit-plane and group of 4 coordinates, 64 bits = 16 tokens
// x 4 coordinates. One mask load + vpmovm-style expansion (maskz_mov_epi8 of ones) gives the bits
// as bytes, and VNNI vpdpbusd multiplies them with the query's 4 int8 coordinates: every 16-lane
// int32 accumulator holds the scores of the 16 tokens, with no horizontal reduction.
// Fast values: per bit-plane, 16 coordinates x 4 tokens per 64 bits; vpdpbusd with the 4 tokens'
// 7-bit weights accumulates 16 coordinates at once.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "attention/attention_kernels.h"

namespace tqkv::attn {

namespace {
inline __mmask64 load_mask64(const uint8_t* p) {
  uint64_t m;
  std::memcpy(&m, p, 8);
  return static_cast<__mmask64>(m);
}
inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline __mmask16 tail_mask(int rem) { return rem >= 16 ? 0xffff : static_cast<__mmask16>((1u << rem) - 1); }
}  // namespace

void prepare_q8_avx512(const TileLayout& L, Queries* Q) {
  const int gi = L.groups * 4;
  Q->q8.assign(static_cast<size_t>(Q->ns) * L.planes * gi, 0);
  Q->q8lo.assign(static_cast<size_t>(Q->ns) * L.planes * gi, 0);
  Q->delta.assign(Q->ns, 1.0f);
  for (int s = 0; s < Q->ns; ++s) {
    const float* qr = &Q->qr[static_cast<size_t>(s) * Q->d];
    float amax = 0;
    for (int p = 0; p < L.planes; ++p)
      for (int i = 0; i < Q->d; ++i) amax = std::max(amax, std::fabs(L.alpha[p] * qr[i]));
    const float delta = amax > 0 ? amax / 127.0f : 1.0f;
    Q->delta[s] = delta;
    const float inv = 1.0f / delta;
    for (int p = 0; p < L.planes; ++p)
      for (int i = 0; i < Q->d; ++i) {
        const float x = L.alpha[p] * qr[i] * inv;  // in [-127, 127]
        const float hi = std::nearbyint(x);
        const size_t at = (static_cast<size_t>(s) * L.planes + p) * gi + i;
        Q->q8[at] = static_cast<int8_t>(hi);
        Q->q8lo[at] = static_cast<int8_t>(std::nearbyint((x - hi) * 254.0f));  // |x - hi| <= 1/2
      }
  }
}

template <int NS>
static void key_scores_ns(const TileLayout& L, const uint8_t* tile, const Queries& Q, int s0, float* scores) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i acc[NS], lo[NS];
  for (int k = 0; k < NS; ++k) acc[k] = lo[k] = _mm512_setzero_si512();
  const int gi = L.groups * 4;
  for (int p = 0; p < L.planes; ++p) {
    const uint8_t* plane = tile + 64 + p * L.plane_bytes;
    const int8_t* qp[NS];
    const int8_t* ql[NS];
    for (int k = 0; k < NS; ++k) {
      qp[k] = &Q.q8[(static_cast<size_t>(s0 + k) * L.planes + p) * gi];
      ql[k] = &Q.q8lo[(static_cast<size_t>(s0 + k) * L.planes + p) * gi];
    }
    for (int g = 0; g < L.groups; ++g) {
      const __m512i u = _mm512_maskz_mov_epi8(load_mask64(plane + 8 * g), ones);
      for (int k = 0; k < NS; ++k) {
        acc[k] = _mm512_dpbusd_epi32(acc[k], u, _mm512_set1_epi32(load_i32(qp[k] + 4 * g)));
        lo[k] = _mm512_dpbusd_epi32(lo[k], u, _mm512_set1_epi32(load_i32(ql[k] + 4 * g)));
      }
    }
  }
  const __m512 sc = _mm512_loadu_ps(reinterpret_cast<const float*>(tile));
  for (int k = 0; k < NS; ++k) {
    const int s = s0 + k;
    const __m512 hi_lo = _mm512_add_ps(_mm512_cvtepi32_ps(acc[k]),
                                       _mm512_mul_ps(_mm512_cvtepi32_ps(lo[k]), _mm512_set1_ps(1.0f / 254.0f)));
    __m512 v = _mm512_mul_ps(hi_lo, _mm512_set1_ps(Q.delta[s]));
    v = _mm512_add_ps(v, _mm512_set1_ps(L.c0 * Q.qsum[s]));
    _mm512_storeu_ps(scores + s * kTileTokens, _mm512_mul_ps(v, sc));
  }
}

void fast_key_scores_avx512(const TileLayout& L, const uint8_t* tile, const Queries& Q, float* scores) {
  int s = 0;
  for (; s + 4 <= Q.ns; s += 4) key_scores_ns<4>(L, tile, Q, s, scores);
  switch (Q.ns - s) {
    case 3: key_scores_ns<3>(L, tile, Q, s, scores); break;
    case 2: key_scores_ns<2>(L, tile, Q, s, scores); break;
    case 1: key_scores_ns<1>(L, tile, Q, s, scores); break;
    default: break;
  }
}

template <int NS>
static void value_accum_ns(const TileLayout& L, const uint8_t* const* tiles, int n_tiles,
                           const int8_t* w8, const float* eps, int s0, float* o) {
  const __m512i ones = _mm512_set1_epi8(1);
  const int dpad = 16 * L.groups;
  const int quads = n_tiles * 4;
  for (int p = 0; p < L.planes; ++p) {
    for (int c = 0; c < L.groups; ++c) {
      __m512i acc[NS];
      for (int k = 0; k < NS; ++k) acc[k] = _mm512_setzero_si512();
      for (int qd = 0; qd < quads; ++qd) {
        const uint8_t* src = tiles[qd / 4] + 64 + p * L.plane_bytes + (static_cast<size_t>(qd % 4) * L.groups + c) * 8;
        const __m512i u = _mm512_maskz_mov_epi8(load_mask64(src), ones);
        for (int k = 0; k < NS; ++k)
          acc[k] = _mm512_dpbusd_epi32(acc[k], u, _mm512_set1_epi32(load_i32(w8 + (s0 + k) * kBlock + 4 * qd)));
      }
      for (int k = 0; k < NS; ++k) {
        float* dst = o + static_cast<size_t>(s0 + k) * dpad + 16 * c;
        const __m512 f = _mm512_set1_ps(L.alpha[p] * eps[s0 + k]);
        _mm512_storeu_ps(dst, _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[k]), f, _mm512_loadu_ps(dst)));
      }
    }
  }
}

void fast_value_accum_avx512(const TileLayout& L, const uint8_t* const* tiles, int n_tiles,
                             const float* w, int ns, float* o) {
  // 7-bit weights per state and block: w8 = round(w / eps), eps = max w / 127.
  alignas(64) int8_t w8[64 * kBlock];
  float eps[64];
  int8_t* w8p = w8;
  std::vector<int8_t> w8big;
  std::vector<float> epsbig;
  float* epsp = eps;
  if (ns > 64) {
    w8big.resize(static_cast<size_t>(ns) * kBlock);
    epsbig.resize(ns);
    w8p = w8big.data();
    epsp = epsbig.data();
  }
  for (int s = 0; s < ns; ++s) {
    const float* ws = w + s * kBlock;
    __m512 mx = _mm512_setzero_ps();
    for (int t = 0; t < kBlock; t += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(ws + t));
    const float m = _mm512_reduce_max_ps(mx);
    epsp[s] = m > 0 ? m / 127.0f : 0.0f;
    const __m512 inv = _mm512_set1_ps(m > 0 ? 127.0f / m : 0.0f);
    for (int t = 0; t < kBlock; t += 16) {
      const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(ws + t), inv));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(w8p + s * kBlock + t), _mm512_cvtepi32_epi8(q));
    }
  }
  int s = 0;
  for (; s + 4 <= ns; s += 4) value_accum_ns<4>(L, tiles, n_tiles, w8p, epsp, s, o);
  switch (ns - s) {
    case 3: value_accum_ns<3>(L, tiles, n_tiles, w8p, epsp, s, o); break;
    case 2: value_accum_ns<2>(L, tiles, n_tiles, w8p, epsp, s, o); break;
    case 1: value_accum_ns<1>(L, tiles, n_tiles, w8p, epsp, s, o); break;
    default: break;
  }
}

// ---- float / f16 rows ----------------------------------------------------------------------

template <typename LoadRow>
static void scores_rows(const float* q, int ns, int n, int d, float* scores, LoadRow load) {
  const int chunks = (d + 15) / 16;
  for (int s0 = 0; s0 < ns; s0 += 4) {
    const int k_n = std::min(4, ns - s0);
    for (int t = 0; t < n; ++t) {
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int c = 0; c < chunks; ++c) {
        const __mmask16 m = tail_mask(d - 16 * c);
        const __m512 kv = load(t, c, m);
        for (int k = 0; k < k_n; ++k)
          acc[k] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + static_cast<size_t>(s0 + k) * d + 16 * c), kv, acc[k]);
      }
      for (int k = 0; k < k_n; ++k) scores[(s0 + k) * kBlock + t] = _mm512_reduce_add_ps(acc[k]);
    }
  }
}

template <typename LoadRow>
static void accum_rows(const float* p, int ns, int n, int d, float* o, LoadRow load) {
  const int chunks = (d + 15) / 16;
  for (int c = 0; c < chunks; ++c) {
    const __mmask16 m = tail_mask(d - 16 * c);
    for (int s0 = 0; s0 < ns; s0 += 4) {
      const int k_n = std::min(4, ns - s0);
      __m512 acc[4];
      for (int k = 0; k < k_n; ++k) acc[k] = _mm512_maskz_loadu_ps(m, o + static_cast<size_t>(s0 + k) * d + 16 * c);
      for (int t = 0; t < n; ++t) {
        const __m512 vv = load(t, c, m);
        for (int k = 0; k < k_n; ++k) acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(p[(s0 + k) * kBlock + t]), vv, acc[k]);
      }
      for (int k = 0; k < k_n; ++k) _mm512_mask_storeu_ps(o + static_cast<size_t>(s0 + k) * d + 16 * c, m, acc[k]);
    }
  }
}

void float_scores_avx512(const float* q, int ns, const float* k, int n, int d, float* scores) {
  scores_rows(q, ns, n, d, scores, [&](int t, int c, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, k + static_cast<size_t>(t) * d + 16 * c);
  });
}
void float_accum_avx512(const float* p, int ns, const float* v, int n, int d, float* o) {
  accum_rows(p, ns, n, d, o, [&](int t, int c, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, v + static_cast<size_t>(t) * d + 16 * c);
  });
}
void f16_scores_avx512(const float* q, int ns, const uint16_t* k, int n, int d, float* scores) {
  scores_rows(q, ns, n, d, scores, [&](int t, int c, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, k + static_cast<size_t>(t) * d + 16 * c));
  });
}
void f16_accum_avx512(const float* p, int ns, const uint16_t* v, int n, int d, float* o) {
  accum_rows(p, ns, n, d, o, [&](int t, int c, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, v + static_cast<size_t>(t) * d + 16 * c));
  });
}

}  // namespace tqkv::attn
