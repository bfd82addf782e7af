// Partial moments of the scalar densities codebooks are designed for (internal).
#pragma once

#include <memory>

#include "tqkv/codebook.h"

namespace tqkv {

// m0 = P(a < X <= b), m1 = E[X; a < X <= b], m2 = E[X^2; a < X <= b]. a may be -inf, b +inf.
struct Moments {
  double m0 = 0, m1 = 0, m2 = 0;
};

class DensityModel {
 public:
  virtual ~DensityModel() = default;
  virtual Moments moments(double a, double b) const = 0;
  // A finite interval outside of which the density has negligible mass (< 1e-30).
  virtual double support() const = 0;
};

// Shared, memoized model for (density, dim). dim only matters for kSphere.
const DensityModel& density_model(Density density, int dim);

}  // namespace tqkv
