#include "tqkv/synthetic.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/random.h"

namespace tqkv {

void generate_gaussian(float* out, size_t n, int dim, uint64_t seed) {
  SplitMix64 rng(seed);
  for (size_t i = 0; i < n * static_cast<size_t>(dim); ++i) out[i] = static_cast<float>(rng.normal());
}

void generate_llm_like(float* out, size_t n, int dim, uint64_t seed) {
  SplitMix64 rng(seed ^ 0x11e11e);
  const int pairs = dim / 2;
  std::vector<double> amp(dim), offset(dim), freq(pairs), phase(pairs);
  for (int i = 0; i < dim; ++i) amp[i] = std::exp(0.5 * rng.normal());
  for (int p = 0; p < pairs; ++p) amp[2 * p + 1] = amp[2 * p];
  const int n_out = std::max(1, dim / 32);
  for (int k = 0; k < n_out && pairs > 0; ++k) {
    const int p = static_cast<int>(rng.uniform(static_cast<uint32_t>(pairs)));
    const double f = 10 + 10 * rng.uniform01();
    amp[2 * p] *= f;
    amp[2 * p + 1] *= f;
  }
  for (int i = 0; i < dim; ++i) offset[i] = 0.5 * rng.normal() * amp[i];
  for (int p = 0; p < pairs; ++p) {
    freq[p] = std::pow(10000.0, -2.0 * p / dim);
    phase[p] = 6.283185307179586 * rng.uniform01();
  }
  for (size_t t = 0; t < n; ++t) {
    float* v = out + t * dim;
    for (int p = 0; p < pairs; ++p) {
      const double ang = freq[p] * static_cast<double>(t) + phase[p];
      const double r = amp[2 * p] * (1 + 0.2 * rng.normal());
      v[2 * p] = static_cast<float>(offset[2 * p] + r * std::cos(ang) + 0.3 * amp[2 * p] * rng.normal());
      v[2 * p + 1] = static_cast<float>(offset[2 * p + 1] + r * std::sin(ang) + 0.3 * amp[2 * p + 1] * rng.normal());
    }
    if (dim % 2) v[dim - 1] = static_cast<float>(offset[dim - 1] + amp[dim - 1] * rng.normal());
  }
}

}  // namespace tqkv
