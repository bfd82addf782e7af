// Scalar codebooks computed from densities (no calibration data), memoized per process.
//
// A Codebook has sorted levels c[0] < ... < c[L-1] and decision thresholds t[j] = (c[j]+c[j+1])/2.
// Encoding a value r gives code = #{j : r > t[j]}; the reconstruction is c[code]. NaN encodes to 0.
// All functions are thread-safe (results are computed once under a lock and then shared).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tqkv/status.h"

namespace tqkv {

struct Codebook {
  std::vector<float> levels;      // (L,) ascending
  std::vector<float> thresholds;  // (L-1,) midpoints of adjacent levels
  double mse = 0;                 // expected squared error on the density it was designed for
};

// Source densities of one rotated, sqrt(d)-scaled coordinate.
enum class Density {
  kGaussian,   // N(0, 1): the d -> infinity limit of a rotated unit vector's coordinate
  kLaplacian,  // unit-variance Laplacian (scale b = 1/sqrt(2))
  kSphere,     // exact marginal of sqrt(d) * u_i for u uniform on the unit sphere S^{d-1}
};

// Lloyd-Max (MSE-optimal scalar) codebook with 2^bits levels, bits in 1..8.
// `dim` is only used by Density::kSphere (dim >= 3).
const Codebook& lloyd_max(Density density, int bits, int dim = 0);

// How the passes of a multi-pass (residual) quantizer are designed.
enum class ResidualCodebook {
  // Seed-faithful: first pass Lloyd-Max for the source density; pass k >= 2 the unit-variance
  // Laplacian Lloyd-Max codebook scaled by the exact RMS of the residual left by passes 1..k-1
  // (computed analytically for the source density, greedy encoding).
  kLaplacian,
  // First pass Lloyd-Max for the source density; each later pass the Lloyd-Max codebook of the
  // exact residual distribution left by the passes before it.
  kOptimal,
  // All passes optimized together for the source density under greedy pass-by-pass encoding.
  kJoint,
};
StatusOr<ResidualCodebook> parse_residual_codebook(std::string_view name);
const char* residual_codebook_name(ResidualCodebook r);

// Codebooks of a `passes`-pass residual quantizer with `bits` bits per pass for the source
// coordinate density (kGaussian, or kSphere with `dim`). mse of the LAST codebook holds the
// total per-coordinate MSE of the whole sequence (unit-variance source).
struct PassCodebooks {
  std::vector<Codebook> passes;
  double mse = 0;  // total per-coordinate MSE after all passes, greedy encoding
};
const PassCodebooks& residual_codebooks(ResidualCodebook mode, int bits, int passes,
                                        Density source, int dim = 0);

// The source density tqkv uses for rotated vectors of `head_dim` coordinates: the exact sphere
// marginal below 64 dimensions (where it differs visibly from the Gaussian), the Gaussian above.
Density source_density_for_dim(int head_dim);

// Exact per-coordinate MSE of greedy pass-by-pass encoding of `source` with these codebooks.
double greedy_mse(const std::vector<Codebook>& passes, Density source, int dim = 0);

}  // namespace tqkv
