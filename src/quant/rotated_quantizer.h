// The rotated Lloyd-Max family: TurboQuant RVQ (rvq{b}x{p}) and single-stage TurboQuant-MSE (tq{b})
// (internal; the public entry point is make_quantizer).
//
// Per vector x (d floats):
//   n = ||x|| (double);  z = R (x * sqrt(d) / n)       rotated, coordinates ~ N(0, 1)
//   pass 1..p: code_k[i] = #{j : r_k[i] > t_k[j]},  r_{k+1} = r_k - c_k[code_k[i]]   (r_1 = z)
//   z_hat = c_1[code_1] + ... + c_p[code_p]
//   scale = n / ||z_hat|| (norm correction) or n / sqrt(d)
//   decode: x_hat = scale * R^T z_hat
// Stored: f32 scale, then for each pass `bits` bit-planes (docs/format.md).
#pragma once

#include <memory>

#include "quant/kernels.h"
#include "tqkv/quantizer.h"

namespace tqkv {

class RotatedQuantizer final : public Quantizer {
 public:
  static StatusOr<std::unique_ptr<RotatedQuantizer>> make(const FormatSpec& spec, int dim,
                                                          const QuantOptions& options);
  void encode(const float* x, size_t n, uint8_t* codes, size_t x_stride = 0) const override;
  void decode(const uint8_t* codes, size_t n, float* y, size_t y_stride = 0) const override;

  const kernels::RotatedParams& params() const { return params_; }
  const Rotation* rotation() const override { return &rotation_; }
  const PassCodebooks* codebooks() const override { return codebooks_; }
  // Expected per-coordinate MSE of the codebooks on the design density (unit variance).
  double design_mse() const { return codebooks_->mse; }

 private:
  RotatedQuantizer(const FormatSpec& spec, int dim, Rotation rotation, const PassCodebooks* cbs,
                   bool norm_correction);
  Rotation rotation_;
  const PassCodebooks* codebooks_;  // memoized, process lifetime
  kernels::RotatedParams params_;
};

}  // namespace tqkv
