// llama.cpp's q4_0 (block 32, fp16 scale): x[i] = d * (q[i] - 8), d = (signed max-magnitude) / -8,
// q = min(15, floor(x / d + 8.5)). Element j in the low nibble of qs[j], j + 16 in the high
// nibble. A block holding NaN/Inf stores d = NaN; |d| saturates at 65504. Reference kernels of
// the cache; the block math is format/blocks.cc (shared with GGUF weights).
#include <algorithm>

#include "format/blocks.h"
#include "quant/kernels.h"

namespace tqkv::kernels {

void encode_q4_0_scalar(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  const int nb = (dim + kQ4Block - 1) / kQ4Block;
  for (size_t v = 0; v < n; ++v) {
    BlockQ4_0* out = reinterpret_cast<BlockQ4_0*>(codes + v * nb * sizeof(BlockQ4_0));
    for (int b = 0; b < nb; ++b)
      quantize_block_q4_0(x + v * x_stride + b * kQ4Block, std::min(kQ4Block, dim - b * kQ4Block), &out[b]);
  }
}

void decode_q4_0_scalar(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  const int nb = (dim + kQ4Block - 1) / kQ4Block;
  for (size_t v = 0; v < n; ++v) {
    const BlockQ4_0* in = reinterpret_cast<const BlockQ4_0*>(codes + v * nb * sizeof(BlockQ4_0));
    for (int b = 0; b < nb; ++b)
      dequantize_block_q4_0(in[b], std::min(kQ4Block, dim - b * kQ4Block), y + v * y_stride + b * kQ4Block);
  }
}

}  // namespace tqkv::kernels
