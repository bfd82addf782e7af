// avx512 encode/decode kernels. Must produce codes bit-identical to the scalar reference.
// (Until specialised, a kernel forwards to the scalar reference.)
#include "quant/kernels.h"

namespace tqkv::kernels {

void encode_rotated_avx512(const RotatedParams& p, const float* x, size_t n, size_t x_stride,
                           uint8_t* codes) {
  encode_rotated_scalar(p, x, n, x_stride, codes);
}
void decode_rotated_avx512(const RotatedParams& p, const uint8_t* codes, size_t n, float* y,
                           size_t y_stride) {
  decode_rotated_scalar(p, codes, n, y, y_stride);
}

#define TQKV_FORWARD_BLOCK(fmt)                                                              \
  void encode_##fmt##_avx512(int dim, int bits, const float* x, size_t n, size_t xs,        \
                             uint8_t* c) {                                                   \
    encode_##fmt##_scalar(dim, bits, x, n, xs, c);                                          \
  }                                                                                          \
  void decode_##fmt##_avx512(int dim, int bits, const uint8_t* c, size_t n, float* y,       \
                             size_t ys) {                                                    \
    decode_##fmt##_scalar(dim, bits, c, n, y, ys);                                          \
  }
TQKV_FORWARD_BLOCK(f16)
TQKV_FORWARD_BLOCK(q8_0)
TQKV_FORWARD_BLOCK(q4_0)
TQKV_FORWARD_BLOCK(kivi)

}  // namespace tqkv::kernels
