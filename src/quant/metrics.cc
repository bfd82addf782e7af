#include "tqkv/metrics.h"

#include <cmath>
#include <vector>

#include "core/random.h"

namespace tqkv {

double cosine_similarity(const float* a, const float* b, int dim) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < dim; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  if (aa == 0 || bb == 0) return aa == bb ? 1.0 : 0.0;
  return ab / std::sqrt(aa * bb);
}

double relative_squared_error(const float* x, const float* x_hat, int dim) {
  double e = 0, s = 0;
  for (int i = 0; i < dim; ++i) {
    const double d = double(x[i]) - x_hat[i];
    e += d * d;
    s += double(x[i]) * x[i];
  }
  return s > 0 ? e / s : 0.0;
}

QualityStats measure_quality(const float* x, const float* x_hat, size_t n, int dim, uint64_t seed) {
  QualityStats st;
  SplitMix64 rng(seed);
  std::vector<double> q(dim);
  double sum_x2 = 0, sum_e2 = 0, ip_e2 = 0, ip_x2 = 0, mse_sum = 0, cos_sum = 0;
  double cos_min = 1;
  for (size_t v = 0; v < n; ++v) {
    const float* a = x + v * dim;
    const float* b = x_hat + v * dim;
    for (double& t : q) t = rng.normal();
    double x2 = 0, e2 = 0, ab = 0, b2 = 0, qx = 0, qb = 0;
    for (int i = 0; i < dim; ++i) {
      const double e = double(a[i]) - b[i];
      x2 += double(a[i]) * a[i];
      e2 += e * e;
      ab += double(a[i]) * b[i];
      b2 += double(b[i]) * b[i];
      qx += q[i] * a[i];
      qb += q[i] * b[i];
    }
    sum_x2 += x2;
    sum_e2 += e2;
    ip_e2 += (qx - qb) * (qx - qb);
    ip_x2 += qx * qx;
    if (x2 == 0) continue;
    ++st.vectors;
    mse_sum += e2 / x2;
    const double c = b2 > 0 ? ab / std::sqrt(x2 * b2) : 0.0;
    cos_sum += c;
    cos_min = std::min(cos_min, c);
  }
  if (st.vectors) {
    st.mse = mse_sum / st.vectors;
    st.cosine_mean = cos_sum / st.vectors;
    st.cosine_min = cos_min;
  }
  st.snr_db = sum_e2 > 0 ? 10 * std::log10(sum_x2 / sum_e2) : INFINITY;
  st.ip_rel_err = ip_x2 > 0 ? std::sqrt(ip_e2 / ip_x2) : 0.0;
  return st;
}

}  // namespace tqkv
