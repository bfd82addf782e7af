// NaN / all-masked scan of one state's block scores before the softmax (softmax_step in
// attention.cc): two compares per 16 scores instead of a scalar loop per score.
#include "core/simd_intrinsics.h"

#include <cmath>

#include "attention/attention_kernels.h"

namespace tqkv::attn {

int score_flags_avx512(const float* sc, int n) {
  __mmask16 nan = 0, live = 0;
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  for (int c = 0; 16 * c < n; ++c) {
    const int left = n - 16 * c;
    const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(m, sc + 16 * c);
    nan |= _mm512_mask_cmp_ps_mask(m, x, x, _CMP_UNORD_Q);
    live |= _mm512_mask_cmp_ps_mask(m, x, ninf, _CMP_NEQ_UQ);
  }
  return (nan ? kScoresNan : 0) | (live ? kScoresLive : 0);
}

}  // namespace tqkv::attn
