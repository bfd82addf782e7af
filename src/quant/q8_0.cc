// llama.cpp's q8_0 (block 32, fp16 scale): x[i] = d * qs[i]. Reference kernels of the cache: the
// block math is format/blocks.cc (shared with GGUF weights), rounding to nearest even.
// Differences from llama.cpp's reference, documented in docs/format.md: rounding is to nearest
// even (not half away from zero), a block holding NaN/Inf stores d = NaN, and d saturates at the
// fp16 maximum 65504 (the quants then clip at +-127).
#include <algorithm>

#include "format/blocks.h"
#include "quant/kernels.h"

namespace tqkv::kernels {

void encode_q8_0_scalar(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  const int nb = (dim + kQ8Block - 1) / kQ8Block;
  for (size_t v = 0; v < n; ++v) {
    BlockQ8_0* out = reinterpret_cast<BlockQ8_0*>(codes + v * nb * sizeof(BlockQ8_0));
    for (int b = 0; b < nb; ++b)
      quantize_block_q8_0(x + v * x_stride + b * kQ8Block, std::min(kQ8Block, dim - b * kQ8Block), &out[b],
                          Rounding::kNearestEven);
  }
}

void decode_q8_0_scalar(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  const int nb = (dim + kQ8Block - 1) / kQ8Block;
  for (size_t v = 0; v < n; ++v) {
    const BlockQ8_0* in = reinterpret_cast<const BlockQ8_0*>(codes + v * nb * sizeof(BlockQ8_0));
    for (int b = 0; b < nb; ++b)
      dequantize_block_q8_0(in[b], std::min(kQ8Block, dim - b * kQ8Block), y + v * y_stride + b * kQ8Block);
  }
}

}  // namespace tqkv::kernels
