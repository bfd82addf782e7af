// llama.cpp's q8_0 (block 32, fp16 scale): x[i] = d * qs[i]. Reference kernels.
// Differences from llama.cpp's reference, documented in docs/format.md: rounding is to nearest
// even (not half away from zero), a block holding NaN/Inf stores d = NaN, and d saturates at the
// fp16 maximum 65504 (the quants then clip at +-127).
#include <cmath>
#include <cstring>

#include "core/half.h"
#include "quant/block_formats.h"
#include "quant/kernels.h"

namespace tqkv::kernels {

void encode_q8_0_scalar(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  const int nb = (dim + kQ8Block - 1) / kQ8Block;
  for (size_t v = 0; v < n; ++v) {
    BlockQ8_0* out = reinterpret_cast<BlockQ8_0*>(codes + v * nb * sizeof(BlockQ8_0));
    const float* xv = x + v * x_stride;
    for (int b = 0; b < nb; ++b) {
      float vals[kQ8Block] = {};
      const int cnt = std::min(kQ8Block, dim - b * kQ8Block);
      bool finite = true;
      float amax = 0;
      for (int i = 0; i < cnt; ++i) {
        vals[i] = xv[b * kQ8Block + i];
        finite = finite && std::isfinite(vals[i]);
        amax = std::max(amax, std::fabs(vals[i]));
      }
      BlockQ8_0& blk = out[b];
      if (!finite) {
        blk.d = 0x7e00;  // fp16 NaN
        std::memset(blk.qs, 0, sizeof(blk.qs));
        continue;
      }
      float d = amax / 127.0f;
      if (d > 65504.0f) d = 65504.0f;
      const float id = d > 0 ? 1.0f / d : 0.0f;
      for (int i = 0; i < kQ8Block; ++i) {
        float q = std::nearbyint(vals[i] * id);
        q = std::min(127.0f, std::max(-127.0f, q));
        blk.qs[i] = static_cast<int8_t>(q);
      }
      blk.d = float_to_half(d);
    }
  }
}

void decode_q8_0_scalar(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  const int nb = (dim + kQ8Block - 1) / kQ8Block;
  for (size_t v = 0; v < n; ++v) {
    const BlockQ8_0* in = reinterpret_cast<const BlockQ8_0*>(codes + v * nb * sizeof(BlockQ8_0));
    float* yv = y + v * y_stride;
    for (int i = 0; i < dim; ++i) {
      const BlockQ8_0& blk = in[i / kQ8Block];
      yv[i] = half_to_float(blk.d) * static_cast<float>(blk.qs[i % kQ8Block]);
    }
  }
}

}  // namespace tqkv::kernels
