// Quality of a reconstruction x_hat of n vectors x (each `dim` floats, contiguous rows).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tqkv {

struct QualityStats {
  double mse = 0;          // mean over vectors of ||x - x_hat||^2 / ||x||^2 (zero vectors skipped)
  double cosine_mean = 0;  // mean cosine(x, x_hat) (zero vectors skipped)
  double cosine_min = 0;
  double snr_db = 0;       // 10 log10( sum ||x||^2 / sum ||x - x_hat||^2 )
  double ip_rel_err = 0;   // sqrt( sum (q.x - q.x_hat)^2 / sum (q.x)^2 ), q ~ N(0, I) per vector
  size_t vectors = 0;      // vectors counted (non-zero norm)
};

// Deterministic for a given seed (the random query vectors). Accumulates in double.
QualityStats measure_quality(const float* x, const float* x_hat, size_t n, int dim,
                             uint64_t seed = 1);

// Per-vector helpers.
double cosine_similarity(const float* a, const float* b, int dim);
double relative_squared_error(const float* x, const float* x_hat, int dim);

}  // namespace tqkv
