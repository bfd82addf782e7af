// llama.cpp's q4_0 (block 32, fp16 scale): x[i] = d * (q[i] - 8), d = (signed max-magnitude) / -8,
// q = min(15, floor(x / d + 8.5)). Element j in the low nibble of qs[j], j + 16 in the high
// nibble. A block holding NaN/Inf stores d = NaN; |d| saturates at 65504. Reference kernels.
#include <cmath>
#include <cstring>

#include "core/half.h"
#include "quant/block_formats.h"
#include "quant/kernels.h"

namespace tqkv::kernels {

void encode_q4_0_scalar(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  const int nb = (dim + kQ4Block - 1) / kQ4Block;
  for (size_t v = 0; v < n; ++v) {
    BlockQ4_0* out = reinterpret_cast<BlockQ4_0*>(codes + v * nb * sizeof(BlockQ4_0));
    const float* xv = x + v * x_stride;
    for (int b = 0; b < nb; ++b) {
      float vals[kQ4Block] = {};
      const int cnt = std::min(kQ4Block, dim - b * kQ4Block);
      bool finite = true;
      float amax = 0, mx = 0;
      for (int i = 0; i < cnt; ++i) {
        vals[i] = xv[b * kQ4Block + i];
        finite = finite && std::isfinite(vals[i]);
        if (std::fabs(vals[i]) > amax) { amax = std::fabs(vals[i]); mx = vals[i]; }
      }
      BlockQ4_0& blk = out[b];
      if (!finite) {
        blk.d = 0x7e00;
        std::memset(blk.qs, 0x88, sizeof(blk.qs));
        continue;
      }
      float d = mx / -8.0f;
      if (d > 65504.0f) d = 65504.0f;
      if (d < -65504.0f) d = -65504.0f;
      const float id = d != 0 ? 1.0f / d : 0.0f;
      uint8_t q[kQ4Block];
      for (int i = 0; i < kQ4Block; ++i) {
        float t = std::floor(vals[i] * id + 8.5f);
        t = std::min(15.0f, std::max(0.0f, t));
        q[i] = static_cast<uint8_t>(t);
      }
      for (int j = 0; j < 16; ++j) blk.qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
      blk.d = float_to_half(d);
    }
  }
}

void decode_q4_0_scalar(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  const int nb = (dim + kQ4Block - 1) / kQ4Block;
  for (size_t v = 0; v < n; ++v) {
    const BlockQ4_0* in = reinterpret_cast<const BlockQ4_0*>(codes + v * nb * sizeof(BlockQ4_0));
    float* yv = y + v * y_stride;
    for (int i = 0; i < dim; ++i) {
      const BlockQ4_0& blk = in[i / kQ4Block];
      const int j = i % kQ4Block;
      const int q = j < 16 ? (blk.qs[j] & 15) : (blk.qs[j - 16] >> 4);
      yv[i] = half_to_float(blk.d) * static_cast<float>(q - 8);
    }
  }
}

}  // namespace tqkv::kernels
