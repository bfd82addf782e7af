// NaN / all-masked scan of one state's block scores (see score_scan_avx512.cc), 8 lanes.
#include "core/simd_intrinsics.h"

#include <cmath>

#include "attention/attention_kernels.h"

namespace tqkv::attn {

int score_flags_avx2(const float* sc, int n) {
  int nan = 0, live = 0, t = 0;
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (; t + 8 <= n; t += 8) {
    const __m256 x = _mm256_loadu_ps(sc + t);
    nan |= _mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    live |= _mm256_movemask_ps(_mm256_cmp_ps(x, ninf, _CMP_NEQ_UQ));
  }
  for (; t < n; ++t) {
    nan |= std::isnan(sc[t]);
    live |= sc[t] != -INFINITY;
  }
  return (nan ? kScoresNan : 0) | (live ? kScoresLive : 0);
}

}  // namespace tqkv::attn
