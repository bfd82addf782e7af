// Quantizer base, the block-format quantizers and the factory.
#include "tqkv/quantizer.h"

#include <cstring>

#include "format/format_table.h"
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

// Every non-rotated format (f32, f16, q8_0, q4_0, kivi): stateless kernels of its table row,
// selected per call.
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
  if (spec.kind == FormatKind::kPk)
    return unsupported(spec.name() + " codes need per-sequence statistics: use tqkv::PreRopeKeyCodec "
                       "(tqkv/prerope_keys.h) or a KV cache with that key format");
  if (spec.kind == FormatKind::kTqo)
    return unsupported(spec.name() + " codes need a per-sequence outlier channel set: use "
                       "tqkv::make_outlier_split_quantizer (tqkv/outlier_split.h) or a KV cache with that format");
  if (format::row(spec).make != nullptr) return format::row(spec).make(spec, dim, options);
  if (format::row(spec).rotated) {
    TQKV_ASSIGN_OR_RETURN(auto q, RotatedQuantizer::make(spec, dim, options));
    return std::unique_ptr<Quantizer>(std::move(q));
  }
  return std::unique_ptr<Quantizer>(new BlockQuantizer(spec, dim));
}

}  // namespace tqkv
