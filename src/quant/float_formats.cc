// f16 storage (IEEE binary16, round to nearest even) — the uncompressed baseline.
#include <cstring>

#include "core/half.h"
#include "quant/kernels.h"

namespace tqkv::kernels {

void encode_f16_scalar(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  for (size_t v = 0; v < n; ++v) {
    uint16_t* out = reinterpret_cast<uint16_t*>(codes + v * 2 * dim);
    for (int i = 0; i < dim; ++i) out[i] = float_to_half(x[v * x_stride + i]);
  }
}

void decode_f16_scalar(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  for (size_t v = 0; v < n; ++v) {
    const uint16_t* in = reinterpret_cast<const uint16_t*>(codes + v * 2 * dim);
    for (int i = 0; i < dim; ++i) y[v * y_stride + i] = half_to_float(in[i]);
  }
}

}  // namespace tqkv::kernels
