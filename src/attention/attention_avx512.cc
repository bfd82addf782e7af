// AVX-512 (F/BW/VL + VNNI) kernels of the fused attention. Compiled with -mavx512*; called only
// when active_simd_level() == kAvx512. Cross-tested against the scalar kernels in attention.cc.
//
// Fast keys: each key tile stores, per bit-plane and group of 4 coordinates, 64 bits = 16 tokens
// x 4 coordinates. One mask load + vpmovm-style expansion (maskz_mov_epi8 of ones) gives the bits
// as bytes, and VNNI vpdpbusd multiplies them with the query's 4 int8 coordinates: every 16-lane
// int32 accumulator holds the scores of the 16 tokens, with no horizontal reduction.
// Fast values: per bit-plane, 16 coordinates x 4 tokens per 64 bits; vpdpbusd with the 4 tokens'
// 8-bit weights accumulates 16 coordinates at once.
#include "core/simd_intrinsics.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "attention/attention_kernels.h"
#include "core/check.h"

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

inline __mmask32 load_mask32(const uint8_t* p) {
  uint32_t m;
  std::memcpy(&m, p, 4);
  return static_cast<__mmask32>(m);
}

// Lookup tiles: the levels as int16 round(level / step), step = max|level| / kLut16Max.
static float lut_table(const TileParams& L, int16_t* t32) {
  const int n = 1 << L.planes;
  float lmax = 0;
  for (int c = 0; c < n; ++c) lmax = std::max(lmax, std::fabs(L.levels[c]));
  const float step = lmax > 0 ? lmax / kLut16Max : 1.0f;
  for (int c = 0; c < 32; ++c) t32[c] = c < n ? static_cast<int16_t>(std::nearbyint(L.levels[c] / step)) : 0;
  return step;
}

// Lookup tiles, keys: q16 = round(qr / dq), dq = max|qr| / kLut16Max (error <= dq / 2 per
// coordinate, 1/16382 of the largest coordinate); levels to int16 (error <= step / 2, 1/16382 of
// the largest level). Both are far below the error of the 3-4 bit codes (docs/design.md).
static void prepare_q16_avx512(const TileParams& L, Queries* Q) {
  const float step = lut_table(L, Q->lut16);
  Q->q16.assign(static_cast<size_t>(Q->ns) * Q->d, 0);
  Q->dq16.assign(Q->ns, 1.0f);
  for (int s = 0; s < Q->ns; ++s) {
    const float* qr = &Q->qr[static_cast<size_t>(s) * Q->d];
    float amax = 0;
    for (int i = 0; i < Q->d; ++i) amax = std::max(amax, std::fabs(qr[i]));
    const float dq = amax > 0 ? amax / kLut16Max : 1.0f;
    Q->dq16[s] = dq * step;
    for (int i = 0; i < Q->d; ++i)
      Q->q16[static_cast<size_t>(s) * Q->d + i] = static_cast<int16_t>(std::nearbyint(qr[i] / dq));
  }
}

void prepare_q8_avx512(const TileParams& L, Queries* Q) {
  if (L.lut) {
    prepare_q16_avx512(L, Q);
    return;
  }
  const int gi = L.groups * 4;
  // One int8 digit per coordinate when the format's own error is large, two (q8 + q8lo / 254)
  // when it is small (fine formats need the extra precision to keep the kernel's error below
  // 5% of theirs; see docs/design.md).
  Q->digits = L.design_mse < 0.05 ? 2 : 1;
  Q->combined = L.combined && Q->digits == 1;
  if (Q->combined) {
    // All planes fold into one byte per coordinate (u = sum_p mult_p * bit_p): one int8 query
    // digit per coordinate, delta = max|qr| / 127, score part = delta * lambda * sum_i u_i q8_i.
    Q->q8.assign(static_cast<size_t>(Q->ns) * gi, 0);
    Q->delta.assign(Q->ns, 1.0f);
    for (int s = 0; s < Q->ns; ++s) {
      const float* qr = &Q->qr[static_cast<size_t>(s) * Q->d];
      float amax = 0;
      for (int i = 0; i < Q->d; ++i) amax = std::max(amax, std::fabs(qr[i]));
      const float delta = amax > 0 ? amax / 127.0f : 1.0f;
      Q->delta[s] = delta * L.lambda;
      for (int i = 0; i < Q->d; ++i)
        Q->q8[static_cast<size_t>(s) * gi + i] = static_cast<int8_t>(std::nearbyint(qr[i] / delta));
    }
    return;
  }
  Q->q8.assign(static_cast<size_t>(Q->ns) * L.planes * gi, 0);
  Q->q8lo.assign(Q->digits == 2 ? Q->q8.size() : 0, 0);
  Q->delta.assign(static_cast<size_t>(Q->ns) * L.planes, 1.0f);
  for (int s = 0; s < Q->ns; ++s) {
    const float* qr = &Q->qr[static_cast<size_t>(s) * Q->d];
    float amax = 0;
    for (int i = 0; i < Q->d; ++i) amax = std::max(amax, std::fabs(qr[i]));
    for (int p = 0; p < L.planes; ++p) {
      const float a = std::fabs(L.alpha[p]) * amax;
      const float delta = a > 0 ? a / 127.0f : 1.0f;  // per (state, plane) scale
      Q->delta[static_cast<size_t>(s) * L.planes + p] = delta;
      const float inv = L.alpha[p] / delta;
      int8_t* hi = &Q->q8[(static_cast<size_t>(s) * L.planes + p) * gi];
      for (int i = 0; i < Q->d; ++i) {
        const float x = qr[i] * inv;  // in [-127, 127]
        const float h = std::nearbyint(x);
        hi[i] = static_cast<int8_t>(h);
        if (Q->digits == 2) Q->q8lo[(static_cast<size_t>(s) * L.planes + p) * gi + i] = static_cast<int8_t>(std::nearbyint((x - h) * 254.0f));
      }
    }
  }
}

template <int NS, int DIGITS>
static void key_scores_ns(const TileParams& L, const uint8_t* tile, const Queries& Q, int s0, float* scores) {
  const __m512i ones = _mm512_set1_epi8(1);
  const int gi = L.groups * 4;
  __m512 f[NS];
  for (int k = 0; k < NS; ++k) f[k] = _mm512_setzero_ps();
  for (int p = 0; p < L.planes; ++p) {
    const uint8_t* plane = tile + 64 + p * L.plane_bytes;
    __m512i acc[NS], lo[NS];
    const int8_t* qp[NS];
    const int8_t* ql[NS];
    for (int k = 0; k < NS; ++k) {
      acc[k] = lo[k] = _mm512_setzero_si512();
      qp[k] = &Q.q8[(static_cast<size_t>(s0 + k) * L.planes + p) * gi];
      ql[k] = DIGITS == 2 ? &Q.q8lo[(static_cast<size_t>(s0 + k) * L.planes + p) * gi] : nullptr;
    }
    for (int g = 0; g < L.groups; ++g) {
      const __m512i u = _mm512_maskz_mov_epi8(load_mask64(plane + 8 * g), ones);
      for (int k = 0; k < NS; ++k) {
        acc[k] = _mm512_dpbusd_epi32(acc[k], u, _mm512_set1_epi32(load_i32(qp[k] + 4 * g)));
        if (DIGITS == 2) lo[k] = _mm512_dpbusd_epi32(lo[k], u, _mm512_set1_epi32(load_i32(ql[k] + 4 * g)));
      }
    }
    for (int k = 0; k < NS; ++k) {
      __m512 v = _mm512_cvtepi32_ps(acc[k]);
      if (DIGITS == 2) v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_cvtepi32_ps(lo[k]), _mm512_set1_ps(1.0f / 254.0f)));
      f[k] = _mm512_fmadd_ps(v, _mm512_set1_ps(Q.delta[static_cast<size_t>(s0 + k) * L.planes + p]), f[k]);
    }
  }
  const __m512 sc = _mm512_loadu_ps(reinterpret_cast<const float*>(tile));
  for (int k = 0; k < NS; ++k) {
    const int s = s0 + k;
    const __m512 v = _mm512_add_ps(f[k], _mm512_set1_ps(L.c0 * Q.qsum[s]));
    _mm512_storeu_ps(scores + s * kTileTokens, _mm512_mul_ps(v, sc));
  }
}

template <int DIGITS>
static void key_scores(const TileParams& L, const uint8_t* tile, const Queries& Q, float* scores) {
  by_state_groups(Q.ns, [&](auto NS, int s0) { key_scores_ns<decltype(NS)::value, DIGITS>(L, tile, Q, s0, scores); });
}

// Folds the bits of every plane for 64 (token, coordinate) pairs into bytes sum_p mult_p * bit_p.
template <int PL>
static inline __m512i fold_planes(const TileParams& L, const uint8_t* base, size_t offset) {
  __m512i u = _mm512_maskz_mov_epi8(load_mask64(base + offset), _mm512_set1_epi8(static_cast<char>(L.mult[0])));
  const int planes = PL > 0 ? PL : L.planes;
  for (int p = 1; p < planes; ++p)
    u = _mm512_mask_add_epi8(u, load_mask64(base + p * L.plane_bytes + offset), u,
                             _mm512_set1_epi8(static_cast<char>(L.mult[p])));
  return u;
}

// Two accumulators per state (even / odd groups): vpdpbusd's latency is hidden by 2 * NS chains.
template <int NS, int PL>
static void key_scores_combined(const TileParams& L, const uint8_t* tile, const Queries& Q, int s0, float* scores) {
  const int gi = L.groups * 4;
  __m512i a0[NS], a1[NS];
  for (int k = 0; k < NS; ++k) a0[k] = a1[k] = _mm512_setzero_si512();
  const uint8_t* planes = tile + 64;
  const int8_t* qb[NS];
  for (int k = 0; k < NS; ++k) qb[k] = &Q.q8[static_cast<size_t>(s0 + k) * gi];
  int g = 0;
  for (; g + 2 <= L.groups; g += 2) {
    const __m512i u0 = fold_planes<PL>(L, planes, 8 * static_cast<size_t>(g));
    const __m512i u1 = fold_planes<PL>(L, planes, 8 * static_cast<size_t>(g + 1));
    for (int k = 0; k < NS; ++k) {
      a0[k] = _mm512_dpbusd_epi32(a0[k], u0, _mm512_set1_epi32(load_i32(qb[k] + 4 * g)));
      a1[k] = _mm512_dpbusd_epi32(a1[k], u1, _mm512_set1_epi32(load_i32(qb[k] + 4 * g + 4)));
    }
  }
  if (g < L.groups) {
    const __m512i u0 = fold_planes<PL>(L, planes, 8 * static_cast<size_t>(g));
    for (int k = 0; k < NS; ++k) a0[k] = _mm512_dpbusd_epi32(a0[k], u0, _mm512_set1_epi32(load_i32(qb[k] + 4 * g)));
  }
  const __m512 sc = _mm512_loadu_ps(reinterpret_cast<const float*>(tile));
  for (int k = 0; k < NS; ++k) {
    const int s = s0 + k;
    const __m512i acc = _mm512_add_epi32(a0[k], a1[k]);
    __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(Q.delta[s]), _mm512_set1_ps(L.c0 * Q.qsum[s]));
    _mm512_storeu_ps(scores + s * kTileTokens, _mm512_mul_ps(v, sc));
  }
}

template <int PL>
static void key_scores_combined_all(const TileParams& L, const uint8_t* tile, const Queries& Q, float* scores) {
  by_state_groups(Q.ns, [&](auto NS, int s0) { key_scores_combined<decltype(NS)::value, PL>(L, tile, Q, s0, scores); });
}

// Lookup tiles: the code index (bits 0..planes-1) of 16 tokens x 2 coordinates as 32 words, from
// the planes' 32-bit masks at base + p * plane_bytes + offset.
template <int PL>
static inline __m512i lut_index(const TileParams& L, const uint8_t* base, size_t offset) {
  __m512i idx = _mm512_maskz_mov_epi16(load_mask32(base + offset), _mm512_set1_epi16(1));
  const int planes = PL > 0 ? PL : L.planes;
  for (int p = 1; p < planes; ++p)
    idx = _mm512_mask_add_epi16(idx, load_mask32(base + p * L.plane_bytes + offset), idx,
                                _mm512_set1_epi16(static_cast<int16_t>(1 << p)));
  return idx;
}

// Lookup tiles: the code indices of two adjacent 32-bit groups (one 64-bit mask per plane at
// base + p * plane_bytes + offset) as bytes, widened to two vectors of 32 words.
template <int PL>
static inline void lut_index2(const TileParams& L, const uint8_t* base, size_t offset, __m512i* i0, __m512i* i1) {
  __m512i idx = _mm512_maskz_mov_epi8(load_mask64(base + offset), _mm512_set1_epi8(1));
  const int planes = PL > 0 ? PL : L.planes;
  for (int p = 1; p < planes; ++p)
    idx = _mm512_mask_add_epi8(idx, load_mask64(base + p * L.plane_bytes + offset), idx,
                               _mm512_set1_epi8(static_cast<char>(1 << p)));
  *i0 = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(idx));
  *i1 = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(idx, 1));
}

// Lookup key tile: vpermw turns the 32 indices into int16 levels, vpdpwssd multiplies them with
// the state's 2 int16 query coordinates: one instruction per 16 tokens x 2 coordinates.
template <int NS, int PL>
static void key_scores_lut(const TileParams& L, const uint8_t* tile, const Queries& Q, int s0, float* scores) {
  const __m512i T = _mm512_load_si512(Q.lut16);
  const uint8_t* planes = tile + 64;
  const int16_t* qb[NS];
  __m512 f[NS];
  for (int k = 0; k < NS; ++k) {
    qb[k] = &Q.q16[static_cast<size_t>(s0 + k) * Q.d];
    f[k] = _mm512_setzero_ps();
  }
  for (int g0 = 0; g0 < L.groups; g0 += 8) {  // flush to float every 16 coordinates (kLut16Max)
    const int ge = std::min(L.groups, g0 + 8);
    __m512i a0[NS], a1[NS];
    for (int k = 0; k < NS; ++k) a0[k] = a1[k] = _mm512_setzero_si512();
    for (int g = g0; g < ge; g += 2) {  // groups = d / 2 is a multiple of 8
      __m512i i0, i1;
      lut_index2<PL>(L, planes, 4 * static_cast<size_t>(g), &i0, &i1);
      const __m512i v0 = _mm512_permutexvar_epi16(i0, T);
      const __m512i v1 = _mm512_permutexvar_epi16(i1, T);
      for (int k = 0; k < NS; ++k) {
        a0[k] = _mm512_dpwssd_epi32(a0[k], v0, _mm512_set1_epi32(load_i32(qb[k] + 2 * g)));
        a1[k] = _mm512_dpwssd_epi32(a1[k], v1, _mm512_set1_epi32(load_i32(qb[k] + 2 * g + 2)));
      }
    }
    for (int k = 0; k < NS; ++k) f[k] = _mm512_add_ps(f[k], _mm512_cvtepi32_ps(_mm512_add_epi32(a0[k], a1[k])));
  }
  const __m512 sc = _mm512_loadu_ps(reinterpret_cast<const float*>(tile));
  for (int k = 0; k < NS; ++k) {
    const int s = s0 + k;
    _mm512_storeu_ps(scores + s * kTileTokens, _mm512_mul_ps(_mm512_mul_ps(f[k], _mm512_set1_ps(Q.dq16[s])), sc));
  }
}

template <int PL>
static void key_scores_lut_all(const TileParams& L, const uint8_t* tile, const Queries& Q, float* scores) {
  by_state_groups(Q.ns, [&](auto NS, int s0) { key_scores_lut<decltype(NS)::value, PL>(L, tile, Q, s0, scores); });
}

void fast_key_scores_avx512(const TileParams& L, const uint8_t* tile, const Queries& Q, float* scores) {
  if (L.lut) {
    if (L.planes == 4) key_scores_lut_all<4>(L, tile, Q, scores);
    else key_scores_lut_all<3>(L, tile, Q, scores);
    return;
  }
  if (Q.combined) {
    if (L.planes == 2) key_scores_combined_all<2>(L, tile, Q, scores);
    else if (L.planes == 1) key_scores_combined_all<1>(L, tile, Q, scores);
    else key_scores_combined_all<0>(L, tile, Q, scores);
    return;
  }
  if (Q.digits == 2) key_scores<2>(L, tile, Q, scores);
  else key_scores<1>(L, tile, Q, scores);
}

template <int NS>
static void value_accum_ns(const TileParams& L, const uint8_t* const* tiles, int n_tiles,
                           const uint8_t* w8, const float* eps, int s0, float* o) {
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
          acc[k] = _mm512_dpbusd_epi32(acc[k], _mm512_set1_epi32(load_i32(w8 + (s0 + k) * kBlock + 4 * qd)), u);
      }
      for (int k = 0; k < NS; ++k) {
        float* dst = o + static_cast<size_t>(s0 + k) * dpad + 16 * c;
        const __m512 f = _mm512_set1_ps(L.alpha[p] * eps[s0 + k]);
        _mm512_storeu_ps(dst, _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[k]), f, _mm512_loadu_ps(dst)));
      }
    }
  }
}

template <int NS, int PL>
static void value_accum_combined(const TileParams& L, const uint8_t* const* tiles, int n_tiles,
                                 const uint8_t* w8, const float* eps, int s0, float* o) {
  const int dpad = 16 * L.groups;
  const int quads = n_tiles * 4;
  const uint8_t* qbase[16];
  for (int qd = 0; qd < quads; ++qd) qbase[qd] = tiles[qd / 4] + 64 + static_cast<size_t>(qd % 4) * L.groups * 8;
  for (int c = 0; c < L.groups; ++c) {
    __m512i a0[NS], a1[NS];
    for (int k = 0; k < NS; ++k) a0[k] = a1[k] = _mm512_setzero_si512();
    int qd = 0;
    for (; qd + 2 <= quads; qd += 2) {
      const __m512i u0 = fold_planes<PL>(L, qbase[qd], 8 * static_cast<size_t>(c));
      const __m512i u1 = fold_planes<PL>(L, qbase[qd + 1], 8 * static_cast<size_t>(c));
      for (int k = 0; k < NS; ++k) {
        a0[k] = _mm512_dpbusd_epi32(a0[k], _mm512_set1_epi32(load_i32(w8 + (s0 + k) * kBlock + 4 * qd)), u0);
        a1[k] = _mm512_dpbusd_epi32(a1[k], _mm512_set1_epi32(load_i32(w8 + (s0 + k) * kBlock + 4 * qd + 4)), u1);
      }
    }
    if (qd < quads) {
      const __m512i u0 = fold_planes<PL>(L, qbase[qd], 8 * static_cast<size_t>(c));
      for (int k = 0; k < NS; ++k)
        a0[k] = _mm512_dpbusd_epi32(a0[k], _mm512_set1_epi32(load_i32(w8 + (s0 + k) * kBlock + 4 * qd)), u0);
    }
    for (int k = 0; k < NS; ++k) {
      float* dst = o + static_cast<size_t>(s0 + k) * dpad + 16 * c;
      const __m512 f = _mm512_set1_ps(L.lambda * eps[s0 + k]);
      _mm512_storeu_ps(dst, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a0[k], a1[k])), f, _mm512_loadu_ps(dst)));
    }
  }
}

template <int PL>
static void value_accum_combined_all(const TileParams& L, const uint8_t* const* tiles, int n_tiles,
                                     const uint8_t* w8, const float* eps, int ns, float* o) {
  by_state_groups(ns, [&](auto NS, int s0) {
    value_accum_combined<decltype(NS)::value, PL>(L, tiles, n_tiles, w8, eps, s0, o);
  });
}

// Lookup value tiles: per chunk of 16 coordinates and token pair, vpermw gives the int16 levels
// of 16 coordinates x 2 tokens and vpdpwssd multiplies them with the 2 tokens' int16 weights.
template <int NS, int PL>
static void value_accum_lut(const TileParams& L, const uint8_t* const* tiles, int n_tiles, const int16_t* w16,
                            const float* eps, int s0, const __m512i T, float* o) {
  const int dpad = 16 * L.groups;
  const int pairs = 8 * n_tiles;
  // Two chunks (c, c + 1: adjacent 32-bit groups, one 64-bit mask per plane) per step; groups =
  // d / 16 is odd for some d, then the last chunk runs alone through lut_index.
  int c = 0;
  for (; c + 2 <= L.groups; c += 2) {
    __m512 f0[NS], f1[NS];
    for (int k = 0; k < NS; ++k) f0[k] = f1[k] = _mm512_setzero_ps();
    for (int q0 = 0; q0 < pairs; q0 += 8) {  // one tile: flush to float every 16 tokens (kLut16Max)
      __m512i a0[NS], a1[NS];
      for (int k = 0; k < NS; ++k) a0[k] = a1[k] = _mm512_setzero_si512();
      const uint8_t* base = tiles[q0 / 8] + 64;
      for (int q = q0; q < q0 + 8; ++q) {
        __m512i i0, i1;
        lut_index2<PL>(L, base, (static_cast<size_t>(q % 8) * L.groups + c) * 4, &i0, &i1);
        const __m512i v0 = _mm512_permutexvar_epi16(i0, T);
        const __m512i v1 = _mm512_permutexvar_epi16(i1, T);
        for (int k = 0; k < NS; ++k) {
          const __m512i wk = _mm512_set1_epi32(load_i32(w16 + (s0 + k) * kBlock + 2 * q));
          a0[k] = _mm512_dpwssd_epi32(a0[k], v0, wk);
          a1[k] = _mm512_dpwssd_epi32(a1[k], v1, wk);
        }
      }
      for (int k = 0; k < NS; ++k) {
        f0[k] = _mm512_add_ps(f0[k], _mm512_cvtepi32_ps(a0[k]));
        f1[k] = _mm512_add_ps(f1[k], _mm512_cvtepi32_ps(a1[k]));
      }
    }
    for (int k = 0; k < NS; ++k) {
      float* dst = o + static_cast<size_t>(s0 + k) * dpad + 16 * c;
      const __m512 e = _mm512_set1_ps(eps[s0 + k]);
      _mm512_storeu_ps(dst, _mm512_fmadd_ps(f0[k], e, _mm512_loadu_ps(dst)));
      _mm512_storeu_ps(dst + 16, _mm512_fmadd_ps(f1[k], e, _mm512_loadu_ps(dst + 16)));
    }
  }
  for (; c < L.groups; ++c) {
    __m512 f[NS];
    for (int k = 0; k < NS; ++k) f[k] = _mm512_setzero_ps();
    for (int q0 = 0; q0 < pairs; q0 += 8) {
      __m512i a0[NS];
      for (int k = 0; k < NS; ++k) a0[k] = _mm512_setzero_si512();
      const uint8_t* base = tiles[q0 / 8] + 64;
      for (int q = q0; q < q0 + 8; ++q) {
        const __m512i v0 = _mm512_permutexvar_epi16(lut_index<PL>(L, base, (static_cast<size_t>(q % 8) * L.groups + c) * 4), T);
        for (int k = 0; k < NS; ++k)
          a0[k] = _mm512_dpwssd_epi32(a0[k], v0, _mm512_set1_epi32(load_i32(w16 + (s0 + k) * kBlock + 2 * q)));
      }
      for (int k = 0; k < NS; ++k) f[k] = _mm512_add_ps(f[k], _mm512_cvtepi32_ps(a0[k]));
    }
    for (int k = 0; k < NS; ++k) {
      float* dst = o + static_cast<size_t>(s0 + k) * dpad + 16 * c;
      _mm512_storeu_ps(dst, _mm512_fmadd_ps(f[k], _mm512_set1_ps(eps[s0 + k]), _mm512_loadu_ps(dst)));
    }
  }
}

// Weights to int16 per state and block: w16 = round(w / eps), eps = max w / kLut16Max (error <=
// eps / 2 per token); eps is returned times the level step.
static void value_accum_lut_all(const TileParams& L, const uint8_t* const* tiles, int n_tiles, const float* w, int ns,
                                float* o) {
  thread_local std::vector<int16_t> w16;
  thread_local std::vector<float> eps;
  w16.resize(static_cast<size_t>(ns) * kBlock);
  eps.resize(ns);
  alignas(64) int16_t t32[32];
  const float step = lut_table(L, t32);
  const __m512i T = _mm512_load_si512(t32);
  for (int s = 0; s < ns; ++s) {
    const float* ws = w + s * kBlock;
    __m512 mx = _mm512_setzero_ps();
    for (int t = 0; t < kBlock; t += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(ws + t));
    const float m = _mm512_reduce_max_ps(mx);
    eps[s] = m > 0 ? m / kLut16Max * step : 0.0f;
    const __m512 inv = _mm512_set1_ps(m > 0 ? kLut16Max / m : 0.0f);
    for (int t = 0; t < kBlock; t += 16) {
      const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(ws + t), inv));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w16.data() + s * kBlock + t), _mm512_cvtepi32_epi16(q));
    }
  }
  by_state_groups(ns, [&](auto NS, int s0) {
    if (L.planes == 4) value_accum_lut<decltype(NS)::value, 4>(L, tiles, n_tiles, w16.data(), eps.data(), s0, T, o);
    else value_accum_lut<decltype(NS)::value, 3>(L, tiles, n_tiles, w16.data(), eps.data(), s0, T, o);
  });
}

void fast_value_accum_avx512(const TileParams& L, const uint8_t* const* tiles, int n_tiles,
                             const float* w, int ns, float* o) {
  if (L.lut) {
    value_accum_lut_all(L, tiles, n_tiles, w, ns, o);
    return;
  }
  // 8-bit weights per state and block: w8 = round(w / eps), eps = max w / 255 (unsigned operand
  // of vpdpbusd; the bits are the signed operand).
  thread_local std::vector<uint8_t> w8;  // (ns, 64) scratch reused across blocks
  thread_local std::vector<float> eps;   // (ns,)
  w8.resize(static_cast<size_t>(ns) * kBlock);
  eps.resize(ns);
  uint8_t* w8p = w8.data();
  float* epsp = eps.data();
  for (int s = 0; s < ns; ++s) {
    const float* ws = w + s * kBlock;
    __m512 mx = _mm512_setzero_ps();
    for (int t = 0; t < kBlock; t += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(ws + t));
    const float m = _mm512_reduce_max_ps(mx);
    epsp[s] = m > 0 ? m / 255.0f : 0.0f;
    const __m512 inv = _mm512_set1_ps(m > 0 ? 255.0f / m : 0.0f);
    for (int t = 0; t < kBlock; t += 16) {
      const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(ws + t), inv));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(w8p + s * kBlock + t), _mm512_cvtusepi32_epi8(q));
    }
  }
  if (L.combined) {
    if (L.planes == 2) value_accum_combined_all<2>(L, tiles, n_tiles, w8p, epsp, ns, o);
    else if (L.planes == 1) value_accum_combined_all<1>(L, tiles, n_tiles, w8p, epsp, ns, o);
    else value_accum_combined_all<0>(L, tiles, n_tiles, w8p, epsp, ns, o);
    return;
  }
  by_state_groups(ns, [&](auto NS, int s0) { value_accum_ns<decltype(NS)::value>(L, tiles, n_tiles, w8p, epsp, s0, o); });
}

// ---- softmax -----------------------------------------------------------------------------

// exp(x) for x <= 0 (and -inf): Cephes-style range reduction x = n ln2 + r, |r| <= ln2/2,
// degree-6 polynomial, then 2^n by vscalefps. Relative error ~2e-7.
static inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-103.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kExpPoly[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[i]));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

void softmax_block_avx512(float* scores, int ns, const int* valid, float* m, float* l, float* corr) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int s = 0; s < ns; ++s) {
    float* sc = scores + s * kBlock;
    corr[s] = 1.0f;
    if (valid[s] <= 0) {
      for (int t = 0; t < kBlock; t += 16) _mm512_storeu_ps(sc + t, _mm512_setzero_ps());
      continue;
    }
    __mmask16 mk[kBlock / 16];
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int c = 0; c < kBlock / 16; ++c) {
      mk[c] = _mm512_cmplt_epi32_mask(_mm512_add_epi32(lane, _mm512_set1_epi32(16 * c)), _mm512_set1_epi32(valid[s]));
      mx = _mm512_mask_max_ps(mx, mk[c], mx, _mm512_loadu_ps(sc + 16 * c));
    }
    const float bmax = _mm512_reduce_max_ps(mx);
    const float mnew = std::max(m[s], bmax);
    corr[s] = m[s] == -INFINITY ? 0.0f : std::exp(m[s] - mnew);
    m[s] = mnew;
    __m512 sum = _mm512_setzero_ps();
    const __m512 mv = _mm512_set1_ps(mnew);
    for (int c = 0; c < kBlock / 16; ++c) {
      const __m512 e = _mm512_maskz_mov_ps(mk[c], exp512(_mm512_sub_ps(_mm512_loadu_ps(sc + 16 * c), mv)));
      _mm512_storeu_ps(sc + 16 * c, e);
      sum = _mm512_add_ps(sum, e);
    }
    l[s] = l[s] * corr[s] + _mm512_reduce_add_ps(sum);
  }
}

void value_weights_avx512(const float* p, int ns, const float* vscale, float* w, float* cw) {
  for (int s = 0; s < ns; ++s) {
    __m512 sum = _mm512_setzero_ps();
    for (int t = 0; t < kBlock; t += 16) {
      const __m512 x = _mm512_mul_ps(_mm512_loadu_ps(p + s * kBlock + t), _mm512_loadu_ps(vscale + t));
      _mm512_storeu_ps(w + s * kBlock + t, x);
      sum = _mm512_add_ps(sum, x);
    }
    cw[s] += _mm512_reduce_add_ps(sum);
  }
}

void decode_rotated_domain_avx512(const kernels::RotatedParams& p, const uint8_t* codes, int n, float* out) {
  const int d = p.dim, L = 1 << p.bits;
  __m512 lv[4];
  for (int k = 0; k < p.passes; ++k) {
    alignas(64) float tab[16] = {};
    for (int i = 0; i < L; ++i) tab[i] = p.levels[k][i];
    lv[k] = _mm512_load_ps(tab);
  }
  for (int t = 0; t < n; ++t) {
    const uint8_t* c = codes + static_cast<size_t>(t) * p.code_size;
    float scale;
    std::memcpy(&scale, c, 4);
    const __m512 sv = _mm512_set1_ps(scale);
    float* row = out + static_cast<size_t>(t) * d;
    for (int ch = 0; ch < d / 16; ++ch) {
      __m512 z = _mm512_setzero_ps();
      for (int k = 0; k < p.passes; ++k) {
        __m512i idx = _mm512_setzero_si512();
        for (int j = 0; j < p.bits; ++j) {
          uint16_t m;
          std::memcpy(&m, c + 4 + (static_cast<size_t>(k) * p.bits + j) * p.plane_bytes + 2 * ch, 2);
          idx = _mm512_mask_or_epi32(idx, m, idx, _mm512_set1_epi32(1 << j));
        }
        const __m512 l = _mm512_permutexvar_ps(idx, lv[k]);
        z = k == 0 ? l : _mm512_add_ps(z, l);
      }
      _mm512_storeu_ps(row + 16 * ch, _mm512_mul_ps(z, sv));
    }
  }
}

// ---- float / f16 rows ----------------------------------------------------------------------

// Scores of NS states against n float rows: accumulators stay in registers (NS fixed).
template <int NS>
static void scores_ns(const float* q, int d, const float* k, int n, int s0, float* scores) {
  // Two tokens per iteration: 2 * NS independent FMA chains hide the FMA latency.
  const int chunks = (d + 15) / 16;
  int t = 0;
  for (; t + 2 <= n; t += 2) {
    __m512 a0[NS], a1[NS];
    for (int j = 0; j < NS; ++j) a0[j] = a1[j] = _mm512_setzero_ps();
    const float* k0 = k + static_cast<size_t>(t) * d;
    const float* k1 = k0 + d;
    for (int c = 0; c < chunks; ++c) {
      const __mmask16 m = tail_mask(d - 16 * c);
      const __m512 kv0 = _mm512_maskz_loadu_ps(m, k0 + 16 * c);
      const __m512 kv1 = _mm512_maskz_loadu_ps(m, k1 + 16 * c);
      for (int j = 0; j < NS; ++j) {
        const __m512 qv = _mm512_maskz_loadu_ps(m, q + static_cast<size_t>(s0 + j) * d + 16 * c);
        a0[j] = _mm512_fmadd_ps(qv, kv0, a0[j]);
        a1[j] = _mm512_fmadd_ps(qv, kv1, a1[j]);
      }
    }
    for (int j = 0; j < NS; ++j) {
      scores[(s0 + j) * kBlock + t] = _mm512_reduce_add_ps(a0[j]);
      scores[(s0 + j) * kBlock + t + 1] = _mm512_reduce_add_ps(a1[j]);
    }
  }
  for (; t < n; ++t) {
    __m512 acc[NS];
    for (int j = 0; j < NS; ++j) acc[j] = _mm512_setzero_ps();
    for (int c = 0; c < chunks; ++c) {
      const __mmask16 m = tail_mask(d - 16 * c);
      const __m512 kv = _mm512_maskz_loadu_ps(m, k + static_cast<size_t>(t) * d + 16 * c);
      for (int j = 0; j < NS; ++j)
        acc[j] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + static_cast<size_t>(s0 + j) * d + 16 * c), kv, acc[j]);
    }
    for (int j = 0; j < NS; ++j) scores[(s0 + j) * kBlock + t] = _mm512_reduce_add_ps(acc[j]);
  }
}

// o[s] += sum_t p[s, t] v[t] for NS states; one 16-wide chunk of o per state in registers.
template <int NS>
static void accum_ns(const float* p, int d, const float* v, int n, int s0, float* o) {
  const int chunks = (d + 15) / 16;
  for (int c = 0; c < chunks; ++c) {
    const __mmask16 m = tail_mask(d - 16 * c);
    // Two independent accumulators per state (even / odd tokens) hide the FMA latency.
    __m512 acc[NS], acc1[NS];
    for (int k2 = 0; k2 < NS; ++k2) {
      acc[k2] = _mm512_maskz_loadu_ps(m, o + static_cast<size_t>(s0 + k2) * d + 16 * c);
      acc1[k2] = _mm512_setzero_ps();
    }
    int t = 0;
    for (; t + 2 <= n; t += 2) {
      const __m512 v0 = _mm512_maskz_loadu_ps(m, v + static_cast<size_t>(t) * d + 16 * c);
      const __m512 v1 = _mm512_maskz_loadu_ps(m, v + static_cast<size_t>(t + 1) * d + 16 * c);
      for (int k2 = 0; k2 < NS; ++k2) {
        acc[k2] = _mm512_fmadd_ps(_mm512_set1_ps(p[(s0 + k2) * kBlock + t]), v0, acc[k2]);
        acc1[k2] = _mm512_fmadd_ps(_mm512_set1_ps(p[(s0 + k2) * kBlock + t + 1]), v1, acc1[k2]);
      }
    }
    for (; t < n; ++t) {
      const __m512 vv = _mm512_maskz_loadu_ps(m, v + static_cast<size_t>(t) * d + 16 * c);
      for (int k2 = 0; k2 < NS; ++k2) acc[k2] = _mm512_fmadd_ps(_mm512_set1_ps(p[(s0 + k2) * kBlock + t]), vv, acc[k2]);
    }
    for (int k2 = 0; k2 < NS; ++k2)
      _mm512_mask_storeu_ps(o + static_cast<size_t>(s0 + k2) * d + 16 * c, m, _mm512_add_ps(acc[k2], acc1[k2]));
  }
}

void float_scores_avx512(const float* q, int ns, const float* k, int n, int d, float* scores) {
  by_state_groups(ns, [&](auto NS, int s0) { scores_ns<decltype(NS)::value>(q, d, k, n, s0, scores); });
}
void float_accum_avx512(const float* p, int ns, const float* v, int n, int d, float* o) {
  by_state_groups(ns, [&](auto NS, int s0) { accum_ns<decltype(NS)::value>(p, d, v, n, s0, o); });
}

// f16 rows: convert the block once (sequential, prefetch-friendly) into an L1-resident float
// tile, then run the float kernels.
static void f16_to_f32(const uint16_t* src, size_t count, float* dst) {
  size_t i = 0;
  for (; i + 16 <= count; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  for (; i < count; ++i) dst[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(src[i])));
}
void f16_scores_avx512(const float* q, int ns, const uint16_t* k, int n, int d, float* scores) {
  alignas(64) static thread_local float tile[kBlock * kF16DirectMaxDim];
  TQKV_CHECK(d <= kF16DirectMaxDim);  // attend() takes the general decode path above
  f16_to_f32(k, static_cast<size_t>(n) * d, tile);
  float_scores_avx512(q, ns, tile, n, d, scores);
}
void f16_accum_avx512(const float* p, int ns, const uint16_t* v, int n, int d, float* o) {
  alignas(64) static thread_local float tile[kBlock * kF16DirectMaxDim];
  TQKV_CHECK(d <= kF16DirectMaxDim);
  f16_to_f32(v, static_cast<size_t>(n) * d, tile);
  float_accum_avx512(p, ns, tile, n, d, o);
}

}  // namespace tqkv::attn
