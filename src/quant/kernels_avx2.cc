// AVX2 encode/decode kernels (8 float lanes; F16C for fp16). Codes are bit-identical to the
// scalar reference (tests/quant/simd_consistency_test.cc); the pipelines are in
// quant/simd_common.h, this file supplies the AVX2 primitives they are written over.
#include "core/simd_intrinsics.h"

#define TQKV_SIMD_NS avx2_impl
#include "quant/simd_common.h"

namespace tqkv::kernels {
namespace avx2_impl {
namespace {

struct Ops {
  static constexpr int W = 8;
  using F = __m256;
  using I = __m256i;

  static I iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static I tail(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota()); }  // lanes < n
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static F loadn(const float* p, int n) { return _mm256_maskload_ps(p, tail(n)); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static void storen(float* p, F v, int n) { _mm256_maskstore_ps(p, tail(n), v); }
  static F zero() { return _mm256_setzero_ps(); }
  static I izero() { return _mm256_setzero_si256(); }
  static F set1(float s) { return _mm256_set1_ps(s); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F gathern(const float* src, const int32_t* idx, int n) {
    const I m = tail(n);
    const I ix = _mm256_maskload_epi32(idx, m);
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), src, ix, _mm256_castsi256_ps(m), 4);
  }

  // One butterfly stage inside the register: lane i pairs with lane i ^ H; lanes with bit H
  // clear get a + b, lanes with bit H set get a - b (a = v[j], b = v[j + H]).
  template <int H>
  static F stage(F v) {
    constexpr int upper = H == 1 ? 0xAA : H == 2 ? 0xCC : 0xF0;
    const F p = _mm256_permutevar8x32_ps(v, _mm256_xor_si256(iota(), _mm256_set1_epi32(H)));
    return _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), upper);
  }
  static F inreg_stages(F v) { return stage<4>(stage<2>(stage<1>(v))); }

  // sumsq_canonical: element i into double lane i % 8 (lanes 0-3 and 4-7), in order.
  static double sumsq(const float* x, int n) {
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    for (int i = 0; i < n; i += 8) {
      const F v = n - i >= 8 ? load(x + i) : loadn(x + i, n - i);
      const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
      const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
      lo = _mm256_add_pd(lo, _mm256_mul_pd(a, a));
      hi = _mm256_add_pd(hi, _mm256_mul_pd(b, b));
    }
    alignas(32) double l[8];
    _mm256_store_pd(l, lo);
    _mm256_store_pd(l + 4, hi);
    return reduce8(l);
  }

  // sumsq of nv vectors held in registers (same order as sumsq).
  static double sumsq_vecs(const F* v, int nv) {
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    for (int i = 0; i < nv; ++i) {
      const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v[i]));
      const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v[i], 1));
      lo = _mm256_add_pd(lo, _mm256_mul_pd(a, a));
      hi = _mm256_add_pd(hi, _mm256_mul_pd(b, b));
    }
    alignas(32) double l[8];
    _mm256_store_pd(l, lo);
    _mm256_store_pd(l + 4, hi);
    return reduce8(l);
  }
  // float(double(v) * m) per lane.
  static F scale_vec(F v, double m) {
    const __m256d md = _mm256_set1_pd(m);
    const __m128 a = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), md));
    const __m128 b = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), md));
    return _mm256_set_m128(b, a);
  }

  // r[i] = float(double(x[i]) * m) for i < n; zeros up to the next multiple of W.
  static void scale_to(const float* x, int n, double m, float* r) {
    const __m256d md = _mm256_set1_pd(m);
    for (int i = 0; i < n; i += 8) {
      const F v = n - i >= 8 ? load(x + i) : loadn(x + i, n - i);
      const __m128 a = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), md));
      const __m128 b = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), md));
      store(r + i, _mm256_set_m128(b, a));
    }
  }

  // One pass: code = #{j : r > t[j]} (a compare per threshold), level = levels[code].
  struct Pass {
    F lv_lo, lv_hi;   // levels 0-7, 8-15 (zero padded)
    F tb[15];         // thresholds broadcast
    int L = 2;
  };
  static void make_pass(Pass& p, const float* levels, const float* thr, int bits) {
    p.L = 1 << bits;
    p.lv_lo = loadn(levels, p.L < 8 ? p.L : 8);
    p.lv_hi = p.L > 8 ? loadn(levels + 8, p.L - 8) : zero();
    for (int j = 0; j < p.L - 1; ++j) p.tb[j] = set1(thr[j]);
  }
  static I code(const Pass& p, F r) {
    I q = _mm256_setzero_si256();
    for (int j = 0; j < p.L - 1; ++j)  // a true compare is -1: subtracting it counts
      q = _mm256_sub_epi32(q, _mm256_castps_si256(_mm256_cmp_ps(r, p.tb[j], _CMP_GT_OQ)));
    return q;
  }
  static F level(const Pass& p, I q) {
    const F lo = _mm256_permutevar8x32_ps(p.lv_lo, q);
    if (p.L <= 8) return lo;
    const F hi = _mm256_permutevar8x32_ps(p.lv_hi, q);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(q, 28)));  // bit 3
  }
  static uint32_t plane_bits(I q, int j) {
    return static_cast<uint32_t>(
        _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_sll_epi32(q, _mm_cvtsi32_si128(31 - j)))));
  }
  static I add_plane_bits(I q, uint32_t bits, int j) {
    const I sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const I set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), sel), sel);
    return _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi32(1 << j)));
  }

  // ---- 32-element blocks (4 vectors) ----
  static F abs(F v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
  static void blk_load(const float* p, int cnt, F v[4], float fill) {
    const F f = set1(fill);
    for (int i = 0; i < 4; ++i) {
      const int rem = cnt - 8 * i;
      if (rem >= 8) {
        v[i] = load(p + 8 * i);
      } else if (rem > 0) {
        const I m = tail(rem);
        v[i] = _mm256_blendv_ps(f, _mm256_maskload_ps(p + 8 * i, m), _mm256_castsi256_ps(m));
      } else {
        v[i] = f;
      }
    }
  }
  static bool blk_all_finite(const F v[4]) {
    const F inf = set1(std::numeric_limits<float>::infinity());
    F ok = _mm256_cmp_ps(abs(v[0]), inf, _CMP_LT_OQ);
    for (int i = 1; i < 4; ++i) ok = _mm256_and_ps(ok, _mm256_cmp_ps(abs(v[i]), inf, _CMP_LT_OQ));
    return _mm256_movemask_ps(ok) == 0xFF;
  }
  // Horizontal max/min of finite values (exact in any order).
  static float hmax(F m) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
  }
  static float hmin(F m) {
    __m128 a = _mm_min_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    a = _mm_min_ps(a, _mm_movehl_ps(a, a));
    a = _mm_min_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
  }
  static float blk_max_abs(const F v[4]) {
    return hmax(_mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3]))));
  }
  static float blk_min(const F v[4]) {
    return hmin(_mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3])));
  }
  static float blk_max(const F v[4]) {
    return hmax(_mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3])));
  }
  static uint32_t blk_eq_abs_mask(const F v[4], float a) {
    const F s = set1(a);
    uint32_t m = 0;
    for (int i = 0; i < 4; ++i)
      m |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(abs(v[i]), s, _CMP_EQ_OQ))) << (8 * i);
    return m;
  }
  static uint32_t blk_eq_mask(const F v[4], float a) {
    const F s = set1(a);
    uint32_t m = 0;
    for (int i = 0; i < 4; ++i)
      m |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v[i], s, _CMP_EQ_OQ))) << (8 * i);
    return m;
  }
  // std::min(hi, std::max(lo, t)) == min_ps(max_ps(t, lo), hi), NaN included.
  static F clamp(F t, float lo, float hi) {
    return _mm256_min_ps(_mm256_max_ps(t, set1(lo)), set1(hi));
  }
  static void blk_q8(const F v[4], float id, int8_t* out) {
    const F idv = set1(id);
    I q[4];
    for (int i = 0; i < 4; ++i) {
      const F t = _mm256_round_ps(mul(v[i], idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q[i] = _mm256_cvtps_epi32(clamp(t, -127.0f, 127.0f));
    }
    const I p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  static void blk_q4(const F v[4], float id, uint8_t* out) {
    const F idv = set1(id), off = set1(8.5f);
    I q[4];
    for (int i = 0; i < 4; ++i) {
      const F t = _mm256_round_ps(add(mul(v[i], idv), off), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
      q[i] = _mm256_cvtps_epi32(clamp(t, 0.0f, 15.0f));
    }
    // byte j = q[j] | q[j + 16] << 4
    const I c0 = _mm256_or_si256(q[0], _mm256_slli_epi32(q[2], 4));  // j = 0..7
    const I c1 = _mm256_or_si256(q[1], _mm256_slli_epi32(q[3], 4));  // j = 8..15
    const I w = _mm256_packs_epi32(c0, c1);
    const I b = _mm256_packus_epi16(w, w);
    const I o = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(o));
  }
  template <int BITS>
  static void blk_kivi(const F v[4], float m, float inv, float qmax, int runtime_bits,
                       uint32_t planes[4]) {
    const int bits = BITS ? BITS : runtime_bits;
    const F mv = set1(m), iv = set1(inv);
    for (int i = 0; i < 4; ++i) {
      const F t = _mm256_round_ps(mul(sub(v[i], mv), iv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const I q = _mm256_cvtps_epi32(clamp(t, 0.0f, qmax));
      for (int j = 0; j < bits; ++j) planes[j] |= plane_bits(q, j) << (8 * i);
    }
  }
  static void blk_dq8(const int8_t* qs, float d, float* y, int cnt) {
    const F dv = set1(d);
    for (int i = 0; i < 4 && 8 * i < cnt; ++i) {
      const I q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8 * i)));
      const F r = mul(dv, _mm256_cvtepi32_ps(q));
      if (cnt - 8 * i >= 8) store(y + 8 * i, r); else storen(y + 8 * i, r, cnt - 8 * i);
    }
  }
  static void blk_dq4(const uint8_t* qs, float d, float* y, int cnt) {
    const F dv = set1(d);
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(b, m4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m4);
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int i = 0; i < 4 && 8 * i < cnt; ++i) {
      const I q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(parts[i]), _mm256_set1_epi32(8));
      const F r = mul(dv, _mm256_cvtepi32_ps(q));
      if (cnt - 8 * i >= 8) store(y + 8 * i, r); else storen(y + 8 * i, r, cnt - 8 * i);
    }
  }
  static void blk_dkivi(const uint32_t planes[4], int bits, float m, float s, float* y, int cnt) {
    const F mv = set1(m), sv = set1(s);
    for (int i = 0; i < 4 && 8 * i < cnt; ++i) {
      I q = izero();
      for (int j = 0; j < bits; ++j) q = add_plane_bits(q, (planes[j] >> (8 * i)) & 0xff, j);
      const F r = add(mv, mul(sv, _mm256_cvtepi32_ps(q)));
      if (cnt - 8 * i >= 8) store(y + 8 * i, r); else storen(y + 8 * i, r, cnt - 8 * i);
    }
  }
  static uint16_t f32_to_f16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
  static float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
};

}  // namespace
}  // namespace avx2_impl

using Avx2Ops = avx2_impl::Ops;

void encode_rotated_avx2(const RotatedParams& p, const float* x, size_t n, size_t x_stride,
                         uint8_t* codes) {
  avx2_impl::encode_rotated<Avx2Ops>(p, x, n, x_stride, codes);
}
void decode_rotated_avx2(const RotatedParams& p, const uint8_t* codes, size_t n, float* y,
                         size_t y_stride) {
  avx2_impl::decode_rotated<Avx2Ops>(p, codes, n, y, y_stride);
}

// f16: F16C conversion rounds to nearest even and quiets NaNs exactly like float_to_half.
void encode_f16_avx2(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  for (size_t v = 0; v < n; ++v) {
    const float* xv = x + v * x_stride;
    uint8_t* out = codes + v * 2 * dim;
    int i = 0;
    for (; i + 8 <= dim; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(xv + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < dim) {
      alignas(16) uint16_t t[8];
      _mm_store_si128(reinterpret_cast<__m128i*>(t),
                      _mm256_cvtps_ph(Avx2Ops::loadn(xv + i, dim - i), _MM_FROUND_TO_NEAREST_INT));
      std::memcpy(out + 2 * i, t, 2 * (dim - i));
    }
  }
}
void decode_f16_avx2(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  for (size_t v = 0; v < n; ++v) {
    const uint8_t* in = codes + v * 2 * dim;
    float* yv = y + v * y_stride;
    int i = 0;
    for (; i + 8 <= dim; i += 8)
      _mm256_storeu_ps(yv + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i))));
    if (i < dim) {
      alignas(16) uint16_t t[8] = {};
      std::memcpy(t, in + 2 * i, 2 * (dim - i));
      Avx2Ops::storen(yv + i, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(t))), dim - i);
    }
  }
}

void encode_q8_0_avx2(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  avx2_impl::encode_q8_0<Avx2Ops>(dim, x, n, x_stride, codes);
}
void decode_q8_0_avx2(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  avx2_impl::decode_q8_0<Avx2Ops>(dim, codes, n, y, y_stride);
}
void encode_q4_0_avx2(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  avx2_impl::encode_q4_0<Avx2Ops>(dim, x, n, x_stride, codes);
}
void decode_q4_0_avx2(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  avx2_impl::decode_q4_0<Avx2Ops>(dim, codes, n, y, y_stride);
}
void encode_kivi_avx2(int dim, int bits, const float* x, size_t n, size_t x_stride,
                      uint8_t* codes) {
  avx2_impl::encode_kivi<Avx2Ops>(dim, bits, x, n, x_stride, codes);
}
void decode_kivi_avx2(int dim, int bits, const uint8_t* codes, size_t n, float* y,
                      size_t y_stride) {
  avx2_impl::decode_kivi<Avx2Ops>(dim, bits, codes, n, y, y_stride);
}

}  // namespace tqkv::kernels
