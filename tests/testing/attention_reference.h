// Float64 reference attention for tests: exact softmax attention of explicit K/V rows.
#pragma once

#include <cmath>
#include <vector>

namespace tqkv::testing {

// q: (d), k/v: (n, d) rows; attends to rows 0..n-1. out: (d). probs (optional): the (n,) softmax
// weights.
inline void reference_attention(const float* q, const float* k, const float* v, int n, int d,
                                double scale, std::vector<double>& out, std::vector<double>* probs = nullptr) {
  std::vector<double> s(n);
  double mx = -INFINITY;
  for (int t = 0; t < n; ++t) {
    double a = 0;
    for (int i = 0; i < d; ++i) a += double(q[i]) * k[static_cast<size_t>(t) * d + i];
    s[t] = a * scale;
    mx = std::max(mx, s[t]);
  }
  double l = 0;
  for (int t = 0; t < n; ++t) { s[t] = std::exp(s[t] - mx); l += s[t]; }
  out.assign(d, 0.0);
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < d; ++i) out[i] += s[t] / l * v[static_cast<size_t>(t) * d + i];
  if (probs != nullptr) {
    probs->resize(n);
    for (int t = 0; t < n; ++t) (*probs)[t] = s[t] / l;
  }
}

}  // namespace tqkv::testing
