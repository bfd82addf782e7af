// AVX-512 encode/decode kernels (16 float lanes). Codes are bit-identical to the scalar
// reference (tests/quant/simd_consistency_test.cc); the pipelines are in quant/simd_common.h,
// this file supplies the AVX-512 primitives they are written over.
#include "core/simd_intrinsics.h"

#define TQKV_SIMD_NS avx512_impl
#include "quant/simd_common.h"

namespace tqkv::kernels {
namespace avx512_impl {
namespace {

struct Ops {
  static constexpr int W = 16;
  using F = __m512;
  using I = __m512i;

  static __mmask16 tail(int n) { return static_cast<__mmask16>((1u << n) - 1); }  // n in 0..16
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F loadn(const float* p, int n) { return _mm512_maskz_loadu_ps(tail(n), p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static void storen(float* p, F v, int n) { _mm512_mask_storeu_ps(p, tail(n), v); }
  static F zero() { return _mm512_setzero_ps(); }
  static I izero() { return _mm512_setzero_si512(); }
  static F set1(float s) { return _mm512_set1_ps(s); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F gathern(const float* src, const int32_t* idx, int n) {
    const __mmask16 k = tail(n);
    const I ix = _mm512_maskz_loadu_epi32(k, idx);
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, ix, src, 4);
  }

  // One butterfly stage inside the register: lane i pairs with lane i ^ H. Lanes with bit H
  // clear hold a = v[j] and get a + b; lanes with bit H set hold b = v[j + H] and get a - b.
  template <int H>
  static F stage(F v) {
    const I idx = _mm512_xor_si512(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(H));
    constexpr __mmask16 upper = H == 1 ? 0xAAAA : H == 2 ? 0xCCCC : H == 4 ? 0xF0F0 : 0xFF00;
    const F p = _mm512_permutexvar_ps(idx, v);
    return _mm512_mask_sub_ps(_mm512_add_ps(v, p), upper, p, v);
  }
  static F inreg_stages(F v) { return stage<8>(stage<4>(stage<2>(stage<1>(v)))); }

  // sumsq_canonical: element i into double lane i % 8, in order.
  static double sumsq(const float* x, int n) {
    __m512d acc = _mm512_setzero_pd();
    auto add8 = [&acc](__m256 h) {
      const __m512d d = _mm512_cvtps_pd(h);
      acc = _mm512_add_pd(acc, _mm512_mul_pd(d, d));
    };
    int i = 0;
    for (; i + 16 <= n; i += 16) {
      const F v = load(x + i);
      add8(_mm512_castps512_ps256(v));
      add8(_mm512_extractf32x8_ps(v, 1));
    }
    if (i < n) {
      const F v = loadn(x + i, n - i);
      add8(_mm512_castps512_ps256(v));
      if (n - i > 8) add8(_mm512_extractf32x8_ps(v, 1));
    }
    alignas(64) double l[8];
    _mm512_store_pd(l, acc);
    return reduce8(l);
  }

  // sumsq of nv vectors held in registers (same order as sumsq).
  static double sumsq_vecs(const F* v, int nv) {
    __m512d acc = _mm512_setzero_pd();
    for (int i = 0; i < nv; ++i) {
      const __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v[i]));
      acc = _mm512_add_pd(acc, _mm512_mul_pd(a, a));
      const __m512d b = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v[i], 1));
      acc = _mm512_add_pd(acc, _mm512_mul_pd(b, b));
    }
    alignas(64) double l[8];
    _mm512_store_pd(l, acc);
    return reduce8(l);
  }
  // float(double(v) * m) per lane.
  static F scale_vec(F v, double m) {
    const __m512d md = _mm512_set1_pd(m);
    const __m256 lo = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), md));
    const __m256 hi = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)), md));
    return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
  }

  // r[i] = float(double(x[i]) * m) for i < n; zeros up to the next multiple of W.
  static void scale_to(const float* x, int n, double m, float* r) {
    const __m512d md = _mm512_set1_pd(m);
    for (int i = 0; i < n; i += 16) {
      const F v = n - i >= 16 ? load(x + i) : loadn(x + i, n - i);
      const __m256 lo = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), md));
      const __m256 hi = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)), md));
      store(r + i, _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1));
    }
  }

  // One pass: code = #{j : r > t[j]}, level = levels[code].
  struct Pass {
    F lv, tv;       // levels / thresholds, zero padded to 16
    F tb[15];       // thresholds broadcast
    int L = 2;
    bool binary = false;  // thresholds sorted: a binary search gives the same count
  };
  static void make_pass(Pass& p, const float* levels, const float* thr, int bits) {
    p.L = 1 << bits;
    p.lv = loadn(levels, p.L);
    p.tv = loadn(thr, p.L - 1);
    bool sorted = true;
    for (int j = 0; j < p.L - 1; ++j) {
      p.tb[j] = set1(thr[j]);
      if (j > 0 && !(thr[j - 1] <= thr[j])) sorted = false;
    }
    p.binary = bits >= 3 && sorted;
  }
  static I code(const Pass& p, F r) {
    I q = _mm512_setzero_si512();
    if (p.binary) {
      // Invariant: r > t[j] for all j < q. Probe t[q + s - 1]; sorted thresholds make the
      // result equal to the count (NaN r compares false everywhere: 0 either way).
      for (int s = p.L / 2; s >= 1; s >>= 1) {
        const F t = _mm512_permutexvar_ps(_mm512_add_epi32(q, _mm512_set1_epi32(s - 1)), p.tv);
        q = _mm512_mask_add_epi32(q, _mm512_cmp_ps_mask(r, t, _CMP_GT_OQ), q, _mm512_set1_epi32(s));
      }
      return q;
    }
    const I one = _mm512_set1_epi32(1);
    for (int j = 0; j < p.L - 1; ++j)
      q = _mm512_mask_add_epi32(q, _mm512_cmp_ps_mask(r, p.tb[j], _CMP_GT_OQ), q, one);
    return q;
  }
  static F level(const Pass& p, I q) { return _mm512_permutexvar_ps(q, p.lv); }
  static uint32_t plane_bits(I q, int j) {
    return _mm512_test_epi32_mask(q, _mm512_set1_epi32(1 << j));
  }
  static I add_plane_bits(I q, uint32_t bits, int j) {
    return _mm512_mask_or_epi32(q, static_cast<__mmask16>(bits), q, _mm512_set1_epi32(1 << j));
  }

  // ---- 32-element blocks (2 vectors) ----
  static F abs(F v) { return _mm512_abs_ps(v); }
  static void blk_load(const float* p, int cnt, F v[2], float fill) {
    if (cnt == 32) {
      v[0] = load(p);
      v[1] = load(p + 16);
      return;
    }
    const F f = set1(fill);
    v[0] = _mm512_mask_loadu_ps(f, tail(cnt < 16 ? cnt : 16), p);
    v[1] = cnt > 16 ? _mm512_mask_loadu_ps(f, tail(cnt - 16), p + 16) : f;
  }
  static bool blk_all_finite(const F v[2]) {
    const F inf = set1(std::numeric_limits<float>::infinity());
    return (_mm512_cmp_ps_mask(abs(v[0]), inf, _CMP_LT_OQ) &
            _mm512_cmp_ps_mask(abs(v[1]), inf, _CMP_LT_OQ)) == 0xFFFF;
  }
  static float blk_max_abs(const F v[2]) {
    return _mm512_reduce_max_ps(_mm512_max_ps(abs(v[0]), abs(v[1])));
  }
  static float blk_min(const F v[2]) { return _mm512_reduce_min_ps(_mm512_min_ps(v[0], v[1])); }
  static float blk_max(const F v[2]) { return _mm512_reduce_max_ps(_mm512_max_ps(v[0], v[1])); }
  static uint32_t blk_eq_abs_mask(const F v[2], float a) {
    const F s = set1(a);
    return _mm512_cmp_ps_mask(abs(v[0]), s, _CMP_EQ_OQ) |
           (static_cast<uint32_t>(_mm512_cmp_ps_mask(abs(v[1]), s, _CMP_EQ_OQ)) << 16);
  }
  static uint32_t blk_eq_mask(const F v[2], float a) {
    const F s = set1(a);
    return _mm512_cmp_ps_mask(v[0], s, _CMP_EQ_OQ) |
           (static_cast<uint32_t>(_mm512_cmp_ps_mask(v[1], s, _CMP_EQ_OQ)) << 16);
  }
  // std::min(hi, std::max(lo, t)) == min_ps(max_ps(t, lo), hi), NaN included.
  static F clamp(F t, float lo, float hi) {
    return _mm512_min_ps(_mm512_max_ps(t, set1(lo)), set1(hi));
  }
  static void blk_q8(const F v[2], float id, int8_t* out) {
    const F idv = set1(id);
    for (int h = 0; h < 2; ++h) {
      F q = _mm512_roundscale_ps(mul(v[h], idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = clamp(q, -127.0f, 127.0f);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * h),
                       _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q)));
    }
  }
  static void blk_q4(const F v[2], float id, uint8_t* out) {
    const F idv = set1(id), off = set1(8.5f);
    I q[2];
    for (int h = 0; h < 2; ++h) {
      F t = _mm512_roundscale_ps(add(mul(v[h], idv), off), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
      q[h] = _mm512_cvtps_epi32(clamp(t, 0.0f, 15.0f));
    }
    const I packed = _mm512_or_si512(q[0], _mm512_slli_epi32(q[1], 4));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtepi32_epi8(packed));
  }
  template <int BITS>
  static void blk_kivi(const F v[2], float m, float inv, float qmax, int runtime_bits,
                       uint32_t planes[4]) {
    const int bits = BITS ? BITS : runtime_bits;
    const F mv = set1(m), iv = set1(inv);
    for (int h = 0; h < 2; ++h) {
      F t = _mm512_roundscale_ps(mul(sub(v[h], mv), iv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const I q = _mm512_cvtps_epi32(clamp(t, 0.0f, qmax));
      for (int j = 0; j < bits; ++j) planes[j] |= plane_bits(q, j) << (16 * h);
    }
  }
  static void blk_dq8(const int8_t* qs, float d, float* y, int cnt) {
    const F dv = set1(d);
    for (int h = 0; h < 2 && 16 * h < cnt; ++h) {
      const I q = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 16 * h)));
      storen(y + 16 * h, mul(dv, _mm512_cvtepi32_ps(q)), cnt - 16 * h < 16 ? cnt - 16 * h : 16);
    }
  }
  static void blk_dq4(const uint8_t* qs, float d, float* y, int cnt) {
    const F dv = set1(d);
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m128i nib[2] = {_mm_and_si128(b, m4), _mm_and_si128(_mm_srli_epi16(b, 4), m4)};
    for (int h = 0; h < 2 && 16 * h < cnt; ++h) {
      const I q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(nib[h]), _mm512_set1_epi32(8));
      storen(y + 16 * h, mul(dv, _mm512_cvtepi32_ps(q)), cnt - 16 * h < 16 ? cnt - 16 * h : 16);
    }
  }
  static void blk_dkivi(const uint32_t planes[4], int bits, float m, float s, float* y, int cnt) {
    const F mv = set1(m), sv = set1(s);
    for (int h = 0; h < 2 && 16 * h < cnt; ++h) {
      I q = izero();
      for (int j = 0; j < bits; ++j) q = add_plane_bits(q, (planes[j] >> (16 * h)) & 0xffff, j);
      storen(y + 16 * h, add(mv, mul(sv, _mm512_cvtepi32_ps(q))), cnt - 16 * h < 16 ? cnt - 16 * h : 16);
    }
  }
  static uint16_t f32_to_f16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
  static float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
};

}  // namespace
}  // namespace avx512_impl

using Avx512Ops = avx512_impl::Ops;

void encode_rotated_avx512(const RotatedParams& p, const float* x, size_t n, size_t x_stride,
                           uint8_t* codes) {
  avx512_impl::encode_rotated<Avx512Ops>(p, x, n, x_stride, codes);
}
void decode_rotated_avx512(const RotatedParams& p, const uint8_t* codes, size_t n, float* y,
                           size_t y_stride) {
  avx512_impl::decode_rotated<Avx512Ops>(p, codes, n, y, y_stride);
}

// f16: F16C conversion rounds to nearest even and quiets NaNs exactly like float_to_half.
void encode_f16_avx512(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  for (size_t v = 0; v < n; ++v) {
    const float* xv = x + v * x_stride;
    uint16_t* out = reinterpret_cast<uint16_t*>(codes + v * 2 * dim);
    int i = 0;
    for (; i + 16 <= dim; i += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                          _mm512_cvtps_ph(_mm512_loadu_ps(xv + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < dim)
      _mm256_mask_storeu_epi16(out + i, Avx512Ops::tail(dim - i),
                               _mm512_cvtps_ph(Avx512Ops::loadn(xv + i, dim - i), _MM_FROUND_TO_NEAREST_INT));
  }
}
void decode_f16_avx512(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  for (size_t v = 0; v < n; ++v) {
    const uint16_t* in = reinterpret_cast<const uint16_t*>(codes + v * 2 * dim);
    float* yv = y + v * y_stride;
    int i = 0;
    for (; i + 16 <= dim; i += 16)
      _mm512_storeu_ps(yv + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i))));
    if (i < dim)
      Avx512Ops::storen(yv + i, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(Avx512Ops::tail(dim - i), in + i)),
                        dim - i);
  }
}

void encode_q8_0_avx512(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  avx512_impl::encode_q8_0<Avx512Ops>(dim, x, n, x_stride, codes);
}
void decode_q8_0_avx512(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  avx512_impl::decode_q8_0<Avx512Ops>(dim, codes, n, y, y_stride);
}
void encode_q4_0_avx512(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  avx512_impl::encode_q4_0<Avx512Ops>(dim, x, n, x_stride, codes);
}
void decode_q4_0_avx512(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  avx512_impl::decode_q4_0<Avx512Ops>(dim, codes, n, y, y_stride);
}
void encode_kivi_avx512(int dim, int bits, const float* x, size_t n, size_t x_stride,
                        uint8_t* codes) {
  avx512_impl::encode_kivi<Avx512Ops>(dim, bits, x, n, x_stride, codes);
}
void decode_kivi_avx512(int dim, int bits, const uint8_t* codes, size_t n, float* y,
                        size_t y_stride) {
  avx512_impl::decode_kivi<Avx512Ops>(dim, bits, codes, n, y, y_stride);
}

}  // namespace tqkv::kernels
