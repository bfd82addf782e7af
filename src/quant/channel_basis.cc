// Channel bases for pk{b} (tqkv/channel_basis.h): Gram matrix of a projection and its
// eigenvectors by cyclic Jacobi. Scalar and readable; runs once per (layer, kv head) at setup.
#include "tqkv/channel_basis.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace tqkv {

std::vector<double> projection_gram(const float* w, const float* g, int rows, int cols) {
  std::vector<double> a(static_cast<size_t>(rows) * rows, 0.0);
  std::vector<double> wg(static_cast<size_t>(rows) * cols);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      wg[static_cast<size_t>(r) * cols + c] = static_cast<double>(w[static_cast<size_t>(r) * cols + c]) * (g ? g[c] : 1.0f);
  for (int r = 0; r < rows; ++r)
    for (int s = r; s < rows; ++s) {
      double acc = 0;
      for (int c = 0; c < cols; ++c) acc += wg[static_cast<size_t>(r) * cols + c] * wg[static_cast<size_t>(s) * cols + c];
      a[static_cast<size_t>(r) * rows + s] = a[static_cast<size_t>(s) * rows + r] = acc;
    }
  return a;
}

StatusOr<std::vector<float>> symmetric_eigenbasis(const std::vector<double>& a_in, int d) {
  if (d < 1 || d > 4096) return invalid_argument("eigenbasis needs 1..4096 dimensions, got " + std::to_string(d));
  const size_t n = static_cast<size_t>(d);
  if (a_in.size() != n * n) return invalid_argument("eigenbasis: matrix has " + std::to_string(a_in.size()) +
                                                    " entries, expected " + std::to_string(n * n));
  double scale = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      const double x = a_in[i * n + j];
      if (!std::isfinite(x)) return invalid_argument("eigenbasis: non-finite matrix entry");
      if (std::fabs(x - a_in[j * n + i]) > 1e-9 * (std::fabs(x) + std::fabs(a_in[j * n + i])) + 1e-300)
        return invalid_argument("eigenbasis: matrix is not symmetric");
      scale += x * x;
    }
  std::vector<double> a = a_in, v(n * n, 0.0);
  for (size_t i = 0; i < n; ++i) v[i * n + i] = 1.0;
  auto off = [&] {
    double s = 0;
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j)
        if (i != j) s += a[i * n + j] * a[i * n + j];
    return s;
  };
  for (int sweep = 0; sweep < 100 && off() > 1e-26 * scale; ++sweep) {
    for (size_t p = 0; p + 1 < n; ++p)
      for (size_t q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (apq == 0) continue;
        // Rotation (c, s) zeroing a[p][q] (Golub & Van Loan, symmetric Schur decomposition).
        const double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (size_t k = 0; k < n; ++k) {  // A <- A J (columns p, q)
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (size_t k = 0; k < n; ++k) {  // A <- J^T A (rows p, q)
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (size_t k = 0; k < n; ++k) {  // V <- V J
          const double vkp = v[k * n + p], vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return a[x * n + x] > a[y * n + y]; });
  std::vector<float> u(n * n);
  for (size_t j = 0; j < n; ++j) {
    const size_t src = order[j];
    size_t big = 0;
    for (size_t i = 1; i < n; ++i)
      if (std::fabs(v[i * n + src]) > std::fabs(v[big * n + src])) big = i;
    const double sign = v[big * n + src] < 0 ? -1.0 : 1.0;
    double norm = 0;
    for (size_t i = 0; i < n; ++i) norm += v[i * n + src] * v[i * n + src];
    norm = std::sqrt(norm);
    for (size_t i = 0; i < n; ++i) u[i * n + j] = static_cast<float>(sign * v[i * n + src] / norm);
  }
  return u;
}

Status validate_channel_basis(const ChannelBasis& b) {
  const size_t d = static_cast<size_t>(b.dim);
  if (b.dim < 1 || b.dim > 65536) return invalid_argument("channel basis needs 1..65536 dimensions");
  if (b.analysis.size() != d * d || b.synthesis.size() != d * d)
    return invalid_argument("channel basis matrices must have head_dim^2 = " + std::to_string(d * d) + " entries");
  for (size_t i = 0; i < d * d; ++i)
    if (!std::isfinite(b.analysis[i]) || !std::isfinite(b.synthesis[i]))
      return invalid_argument("channel basis has a non-finite entry");
  for (size_t i = 0; i < d; ++i)
    for (size_t k = 0; k < d; ++k) {
      double dot = 0;  // (S A^T)[i][k]
      for (size_t j = 0; j < d; ++j) dot += static_cast<double>(b.synthesis[i * d + j]) * b.analysis[k * d + j];
      if (std::fabs(dot - (i == k ? 1.0 : 0.0)) > 1e-4)
        return invalid_argument("channel basis: synthesis * analysis^T is not the identity (entry " + std::to_string(i) +
                                ", " + std::to_string(k) + ": " + std::to_string(dot) + ")");
    }
  return Status::Ok();
}

StatusOr<std::vector<float>> block_eigenbasis(const std::vector<double>& a, int d, int block) {
  if (block < 1) return invalid_argument("block_eigenbasis: block must be >= 1, got " + std::to_string(block));
  if (d < 1 || a.size() != static_cast<size_t>(d) * d)
    return invalid_argument("block_eigenbasis: need a d x d matrix");
  if (block >= d) return symmetric_eigenbasis(a, d);
  std::vector<float> u(static_cast<size_t>(d) * d, 0.0f);
  for (int b0 = 0; b0 < d; b0 += block) {
    const int n = std::min(block, d - b0);
    std::vector<double> sub(static_cast<size_t>(n) * n);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) sub[static_cast<size_t>(i) * n + j] = a[static_cast<size_t>(b0 + i) * d + b0 + j];
    TQKV_ASSIGN_OR_RETURN(std::vector<float> e, symmetric_eigenbasis(sub, n));
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) u[static_cast<size_t>(b0 + i) * d + b0 + j] = e[static_cast<size_t>(i) * n + j];
  }
  return u;
}

ChannelBasis orthonormal_basis(std::vector<float> u, int d) {
  ChannelBasis b;
  b.dim = d;
  b.analysis = u;
  b.synthesis = std::move(u);
  return b;
}

}  // namespace tqkv
