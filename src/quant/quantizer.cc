// Quantizer base, the block-format quantizers and the factory.
#include "tqkv/quantizer.h"

#include <cstring>

#include "quant/dispatch.h"
#include "quant/rotated_quantizer.h"

namespace tqkv {

Quantizer::Quantizer(FormatSpec spec, int dim)
    : spec_(spec), dim_(dim), code_size_(tqkv::code_size(spec, dim)) {}

Status Quantizer::encode_tensor(const TensorView4& x, uint8_t* codes) const {
  if (x.shape[3] != dim_)
    return invalid_argument("tensor head_dim " + std::to_string(x.shape[3]) +
                            " does not match the quantizer's " + std::to_string(dim_));
  if (x.stride[3] != 1) return invalid_argument("tensor innermost stride must be 1");
  if (x.data == nullptr && x.vectors() > 0) return invalid_argument("tensor data is null");
  size_t k = 0;
  for (int64_t b = 0; b < x.shape[0]; ++b)
    for (int64_t h = 0; h < x.shape[1]; ++h) {
      encode(x.at(b, h, 0), x.shape[2], codes + k * code_size_, x.stride[2]);
      k += x.shape[2];
    }
  return Status::Ok();
}

Status Quantizer::decode_tensor(const uint8_t* codes, const MutableTensorView4& y) const {
  if (y.shape[3] != dim_)
    return invalid_argument("tensor head_dim " + std::to_string(y.shape[3]) +
                            " does not match the quantizer's " + std::to_string(dim_));
  if (y.stride[3] != 1) return invalid_argument("tensor innermost stride must be 1");
  if (y.data == nullptr && y.vectors() > 0) return invalid_argument("tensor data is null");
  size_t k = 0;
  for (int64_t b = 0; b < y.shape[0]; ++b)
    for (int64_t h = 0; h < y.shape[1]; ++h) {
      decode(codes + k * code_size_, y.shape[2], y.at(b, h, 0), y.stride[2]);
      k += y.shape[2];
    }
  return Status::Ok();
}

namespace {

class F32Quantizer final : public Quantizer {
 public:
  explicit F32Quantizer(int dim) : Quantizer({FormatKind::kF32, 32, 1}, dim) {}
  void encode(const float* x, size_t n, uint8_t* codes, size_t x_stride) const override {
    if (!x_stride) x_stride = dim();
    for (size_t v = 0; v < n; ++v) std::memcpy(codes + v * code_size(), x + v * x_stride, code_size());
  }
  void decode(const uint8_t* codes, size_t n, float* y, size_t y_stride) const override {
    if (!y_stride) y_stride = dim();
    for (size_t v = 0; v < n; ++v) std::memcpy(y + v * y_stride, codes + v * code_size(), code_size());
  }
};

// f16, q8_0, q4_0, kivi: stateless kernels selected per call.
class BlockQuantizer final : public Quantizer {
 public:
  BlockQuantizer(const FormatSpec& spec, int dim) : Quantizer(spec, dim) {}
  void encode(const float* x, size_t n, uint8_t* codes, size_t x_stride) const override {
    dispatch::encode_block(format().kind, active_simd_level())(dim(), format().bits, x, n,
                                                               x_stride ? x_stride : dim(), codes);
  }
  void decode(const uint8_t* codes, size_t n, float* y, size_t y_stride) const override {
    dispatch::decode_block(format().kind, active_simd_level())(dim(), format().bits, codes, n, y,
                                                               y_stride ? y_stride : dim());
  }
};

}  // namespace

StatusOr<std::unique_ptr<Quantizer>> make_quantizer(const FormatSpec& spec, int dim,
                                                    const QuantOptions& options) {
  TQKV_RETURN_IF_ERROR(validate_format(spec, dim));
  switch (spec.kind) {
    case FormatKind::kF32: return std::unique_ptr<Quantizer>(new F32Quantizer(dim));
    case FormatKind::kF16:
    case FormatKind::kQ8_0:
    case FormatKind::kQ4_0:
    case FormatKind::kKivi: return std::unique_ptr<Quantizer>(new BlockQuantizer(spec, dim));
    case FormatKind::kRvq:
    case FormatKind::kTq: {
      TQKV_ASSIGN_OR_RETURN(auto q, RotatedQuantizer::make(spec, dim, options));
      return std::unique_ptr<Quantizer>(std::move(q));
    }
    case FormatKind::kPk:
      return unsupported(spec.name() + " codes need per-sequence statistics: use tqkv::PreRopeKeyCodec "
                         "(tqkv/prerope_keys.h) or a KV cache with that key format");
  }
  return internal_error("unhandled format kind");
}

}  // namespace tqkv
