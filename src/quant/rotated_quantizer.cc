#include "quant/rotated_quantizer.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "format/format_table.h"
#include "quant/dispatch.h"
#include "quant/reduce.h"

namespace tqkv {

// ---- scalar reference kernels ------------------------------------------------------------

namespace kernels {

void encode_rotated_scalar(const RotatedParams& p, const float* x, size_t n, size_t x_stride,
                           uint8_t* codes) {
  const int d = p.dim;
  const int L = 1 << p.bits;
  std::vector<float> r(d), zhat(d);
  std::vector<uint8_t> code(d);
  for (size_t v = 0; v < n; ++v) {
    const float* xv = x + v * x_stride;
    uint8_t* out = codes + v * p.code_size;
    const double sumsq = sumsq_canonical(xv, d);
    const double norm = std::sqrt(sumsq);
    // Scale to unit variance per coordinate; computed in double so that no finite input
    // overflows or underflows (x * sqrt(d) / n has magnitude <= sqrt(d)).
    const double m = norm > 0 ? std::sqrt(static_cast<double>(d)) / norm : 0.0;
    for (int i = 0; i < d; ++i) r[i] = static_cast<float>(static_cast<double>(xv[i]) * m);
    p.rotation->forward(r.data(), r.data());
    uint8_t* planes = out + sizeof(float);
    for (int k = 0; k < p.passes; ++k) {
      const float* t = p.thresholds[k];
      const float* c = p.levels[k];
      for (int i = 0; i < d; ++i) {
        int q = 0;
        for (int j = 0; j < L - 1; ++j) q += r[i] > t[j];
        code[i] = static_cast<uint8_t>(q);
        r[i] = r[i] - c[q];
        zhat[i] = k == 0 ? c[q] : zhat[i] + c[q];
      }
      for (int j = 0; j < p.bits; ++j)
        pack_plane(code.data(), d, j, planes + (static_cast<size_t>(k) * p.bits + j) * p.plane_bytes);
    }
    float scale;
    if (!std::isfinite(sumsq)) {
      scale = std::numeric_limits<float>::quiet_NaN();  // non-finite input: decodes to NaN
    } else if (p.norm_correction) {
      const double q = sumsq_canonical(zhat.data(), d);
      scale = q > 0 ? static_cast<float>(norm / std::sqrt(q)) : 0.0f;
    } else {
      scale = static_cast<float>(norm / std::sqrt(static_cast<double>(d)));
    }
    std::memcpy(out, &scale, sizeof(float));
  }
}

void decode_rotated_scalar(const RotatedParams& p, const uint8_t* codes, size_t n, float* y,
                           size_t y_stride) {
  const int d = p.dim;
  std::vector<uint8_t> code(d);
  for (size_t v = 0; v < n; ++v) {
    const uint8_t* in = codes + v * p.code_size;
    float* yv = y + v * y_stride;
    float scale;
    std::memcpy(&scale, in, sizeof(float));
    const uint8_t* planes = in + sizeof(float);
    for (int k = 0; k < p.passes; ++k) {
      std::memset(code.data(), 0, d);
      for (int j = 0; j < p.bits; ++j)
        unpack_plane(planes + (static_cast<size_t>(k) * p.bits + j) * p.plane_bytes, d, j, code.data());
      for (int i = 0; i < d; ++i) yv[i] = k == 0 ? p.levels[k][code[i]] : yv[i] + p.levels[k][code[i]];
    }
    p.rotation->inverse(yv, yv);
    for (int i = 0; i < d; ++i) yv[i] = yv[i] * scale;
  }
}

}  // namespace kernels

// ---- the quantizer ------------------------------------------------------------------------

StatusOr<std::unique_ptr<RotatedQuantizer>> RotatedQuantizer::make(const FormatSpec& spec, int dim,
                                                                   const QuantOptions& options) {
  TQKV_RETURN_IF_ERROR(validate_format(spec, dim));
  const format::FormatRow& row = format::row(spec);
  if (!row.rotated) return invalid_argument("RotatedQuantizer needs an rvq or tq format");
  TQKV_ASSIGN_OR_RETURN(Rotation rot, Rotation::make(dim, options.seed, options.use_hadamard));
  const Density src = source_density_for_dim(dim);
  const ResidualCodebook mode =
      row.laplacian_passes ? ResidualCodebook::kLaplacian : options.residual_codebook;
  const PassCodebooks& cbs = residual_codebooks(mode, spec.bits, spec.passes, src, dim);
  return std::unique_ptr<RotatedQuantizer>(
      new RotatedQuantizer(spec, dim, std::move(rot), &cbs, options.norm_correction));
}

RotatedQuantizer::RotatedQuantizer(const FormatSpec& spec, int dim, Rotation rotation,
                                   const PassCodebooks* cbs, bool norm_correction)
    : Quantizer(spec, dim), rotation_(std::move(rotation)), codebooks_(cbs) {
  params_.dim = dim;
  params_.bits = spec.bits;
  params_.passes = spec.passes;
  for (int k = 0; k < spec.passes; ++k) {
    params_.levels[k] = cbs->passes[k].levels.data();
    params_.thresholds[k] = cbs->passes[k].thresholds.data();
  }
  params_.rotation = &rotation_;
  params_.norm_correction = norm_correction;
  params_.plane_bytes = format::plane_bytes(dim);
  params_.code_size = code_size();
}

void RotatedQuantizer::encode(const float* x, size_t n, uint8_t* codes, size_t x_stride) const {
  // The rotation pointer must refer to this object's member even after moves.
  kernels::RotatedParams p = params_;
  p.rotation = &rotation_;
  dispatch::encode_rotated(format().kind, active_simd_level())(p, x, n, x_stride ? x_stride : dim(), codes);
}

void RotatedQuantizer::decode(const uint8_t* codes, size_t n, float* y, size_t y_stride) const {
  kernels::RotatedParams p = params_;
  p.rotation = &rotation_;
  dispatch::decode_rotated(format().kind, active_simd_level())(p, codes, n, y, y_stride ? y_stride : dim());
}

}  // namespace tqkv
