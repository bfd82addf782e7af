// Non-owning strided views of 4-D float tensors shaped [batch, heads, seq, head_dim].
// Strides are in elements; the innermost (head_dim) stride must be 1.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tqkv {

struct TensorView4 {
  const float* data = nullptr;
  int64_t shape[4] = {0, 0, 0, 0};    // batch, heads, seq, head_dim
  int64_t stride[4] = {0, 0, 0, 1};   // elements; stride[3] must be 1

  // A dense, contiguous [b, h, s, d] view.
  static TensorView4 contiguous(const float* p, int64_t b, int64_t h, int64_t s, int64_t d) {
    return {p, {b, h, s, d}, {h * s * d, s * d, d, 1}};
  }
  int64_t vectors() const { return shape[0] * shape[1] * shape[2]; }
  const float* at(int64_t b, int64_t h, int64_t s) const {
    return data + b * stride[0] + h * stride[1] + s * stride[2];
  }
};

struct MutableTensorView4 {
  float* data = nullptr;
  int64_t shape[4] = {0, 0, 0, 0};
  int64_t stride[4] = {0, 0, 0, 1};

  static MutableTensorView4 contiguous(float* p, int64_t b, int64_t h, int64_t s, int64_t d) {
    return {p, {b, h, s, d}, {h * s * d, s * d, d, 1}};
  }
  int64_t vectors() const { return shape[0] * shape[1] * shape[2]; }
  float* at(int64_t b, int64_t h, int64_t s) const {
    return data + b * stride[0] + h * stride[1] + s * stride[2];
  }
};

}  // namespace tqkv
