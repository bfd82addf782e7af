// AVX2 + F16C + FMA row kernel for f16 / bf16 weights (compiled with those flags; called only
// after runtime detection).
#include "core/simd_intrinsics.h"

#include <cstring>

#include "runtime/matmul.h"

namespace tqkv::runtime {

void gemv_half_avx2(const uint16_t* w, bool bf16, const float* x, float* y, int rows, int in) {
  for (int o = 0; o < rows; ++o) {
    const uint16_t* r = w + static_cast<size_t>(o) * in;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= in; i += 16) {
      const __m128i h0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + i));
      const __m128i h1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + i + 8));
      __m256 w0, w1;
      if (bf16) {
        w0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h0), 16));
        w1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h1), 16));
      } else {
        w0 = _mm256_cvtph_ps(h0);
        w1 = _mm256_cvtph_ps(h1);
      }
      a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
      a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
    }
    __m256 a = _mm256_add_ps(a0, a1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float acc = _mm_cvtss_f32(s);
    for (; i < in; ++i) {
      const float wf = bf16 ? _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(static_cast<int>(r[i]) << 16)))
                            : _cvtsh_ss(r[i]);
      acc += wf * x[i];
    }
    y[o] = acc;
  }
}

void gemv_q8_0_avx2(const uint8_t* w, const float* x, float* y, int rows, int in) {
  const int nb = in / 32;
  for (int o = 0; o < rows; ++o) {
    const uint8_t* r = w + static_cast<size_t>(o) * nb * 34;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b, r += 34) {
      uint16_t hd;
      std::memcpy(&hd, r, 2);
      const __m256 d = _mm256_set1_ps(_cvtsh_ss(hd));
      const float* xb = x + b * 32;
      __m256 s = _mm256_setzero_ps();
      for (int k = 0; k < 4; ++k) {
        const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(r + 2 + 8 * k));
        const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
        s = _mm256_fmadd_ps(q, _mm256_loadu_ps(xb + 8 * k), s);
      }
      acc = _mm256_fmadd_ps(d, s, acc);
    }
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    t = _mm_add_ss(t, _mm_movehdup_ps(t));
    y[o] = _mm_cvtss_f32(t);
  }
}

void widen_half_avx2(const uint16_t* src, bool bf16, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m256 f = bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)) : _mm256_cvtph_ps(h);
    _mm256_storeu_ps(dst + i, f);
  }
  for (; i < n; ++i)
    dst[i] = bf16 ? _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(static_cast<int>(src[i]) << 16))) : _cvtsh_ss(src[i]);
}

}  // namespace tqkv::runtime
