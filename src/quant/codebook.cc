// Lloyd-Max and residual (multi-pass) codebooks computed from densities.
//
// Everything here is analytic: partial moments of the density over intervals (density.cc), no
// samples. A greedy pass-by-pass encoder partitions the real line into cells (one per reachable
// code tuple); the exact MSE is a sum over cells, and for a fixed partition the best levels solve
// a small linear least-squares problem. Levels are kept symmetric (c[L-1-i] = -c[i]), which the
// symmetric source densities make optimal and which the fused attention relies on (a symmetric
// 1- or 2-bit codebook is affine in its bit-planes).
#include "tqkv/codebook.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "core/check.h"
#include "quant/density.h"

namespace tqkv {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

Codebook make_codebook(const std::vector<double>& levels) {
  Codebook cb;
  std::vector<double> sorted = levels;
  std::sort(sorted.begin(), sorted.end());
  for (double v : sorted) cb.levels.push_back(static_cast<float>(v));
  for (size_t j = 0; j + 1 < cb.levels.size(); ++j)
    cb.thresholds.push_back(0.5f * (cb.levels[j] + cb.levels[j + 1]));
  return cb;
}

// One cell of the greedy encoder's partition of the real line.
struct Cell {
  double lo, hi;
  Moments m;
  std::vector<int> codes;  // (passes,)
  double offset;           // sum of the chosen levels
};

// Enumerates the partition produced by greedy encoding with `passes` (cells of zero mass dropped).
void enumerate(const std::vector<Codebook>& passes, const DensityModel& dm, size_t k, double lo,
               double hi, double offset, std::vector<int>& codes, std::vector<Cell>& out) {
  if (k == passes.size()) {
    Moments m = dm.moments(lo, hi);
    if (m.m0 > 0) out.push_back({lo, hi, m, codes, offset});
    return;
  }
  const Codebook& cb = passes[k];
  const int L = static_cast<int>(cb.levels.size());
  // Cell j of this pass: offset + t[j-1] < z <= offset + t[j] (as floats, like the encoder).
  for (int j = 0; j < L; ++j) {
    double a = j == 0 ? -kInf : offset + static_cast<double>(cb.thresholds[j - 1]);
    double b = j == L - 1 ? kInf : offset + static_cast<double>(cb.thresholds[j]);
    a = std::max(a, lo);
    b = std::min(b, hi);
    if (a >= b) continue;
    codes.push_back(j);
    enumerate(passes, dm, k + 1, a, b, offset + cb.levels[j], codes, out);
    codes.pop_back();
  }
}

std::vector<Cell> cells_of(const std::vector<Codebook>& passes, const DensityModel& dm) {
  std::vector<Cell> cells;
  std::vector<int> codes;
  const double s = dm.support();
  enumerate(passes, dm, 0, -s, s, 0.0, codes, cells);
  return cells;
}

double mse_of(const std::vector<Cell>& cells) {
  double e = 0;
  for (const Cell& c : cells) e += c.m.m2 - 2 * c.offset * c.m.m1 + c.offset * c.offset * c.m.m0;
  return std::max(e, 0.0);
}

// Solves A x = b (n x n, symmetric positive semi-definite) by Gaussian elimination with partial
// pivoting and a tiny ridge. Returns false if singular.
bool solve(std::vector<double> A, std::vector<double> b, int n, std::vector<double>* x) {
  double tr = 0;
  for (int i = 0; i < n; ++i) tr += A[i * n + i];
  for (int i = 0; i < n; ++i) A[i * n + i] += 1e-13 * (tr + 1e-300);
  for (int c = 0; c < n; ++c) {
    int p = c;
    for (int r = c + 1; r < n; ++r)
      if (std::fabs(A[r * n + c]) > std::fabs(A[p * n + c])) p = r;
    if (std::fabs(A[p * n + c]) < 1e-300) return false;
    if (p != c) {
      for (int k = 0; k < n; ++k) std::swap(A[c * n + k], A[p * n + k]);
      std::swap(b[c], b[p]);
    }
    for (int r = c + 1; r < n; ++r) {
      const double f = A[r * n + c] / A[c * n + c];
      for (int k = c; k < n; ++k) A[r * n + k] -= f * A[c * n + k];
      b[r] -= f * b[c];
    }
  }
  x->assign(n, 0);
  for (int c = n - 1; c >= 0; --c) {
    double s = b[c];
    for (int k = c + 1; k < n; ++k) s -= A[c * n + k] * (*x)[k];
    (*x)[c] = s / A[c * n + c];
  }
  return true;
}

// Symmetric parametrisation of an L-level codebook: c[L/2 + j] = p[j], c[L/2 - 1 - j] = -p[j].
void sym_index(int code, int L, int* j, double* sign) {
  const int h = L / 2;
  if (code >= h) { *j = code - h; *sign = 1; } else { *j = h - 1 - code; *sign = -1; }
}

// Least-squares refit of the passes marked free, for the partition of the current codebooks,
// iterated (refit, re-partition) while it improves. Returns the best codebooks found.
std::vector<Codebook> refit(std::vector<Codebook> passes, const std::vector<bool>& free,
                            const DensityModel& dm, int max_iter) {
  std::vector<Codebook> best = passes;
  double best_mse = mse_of(cells_of(passes, dm));
  std::vector<int> base(passes.size());
  int n = 0;
  for (size_t k = 0; k < passes.size(); ++k) {
    base[k] = n;
    if (free[k]) n += static_cast<int>(passes[k].levels.size()) / 2;
  }
  if (n == 0) return passes;
  // Bound the work: each iteration enumerates every cell (up to 2^(bits*passes) = 65536 for 4x4),
  // and fine configurations converge to MSEs far below anything measurable in a few iterations.
  const size_t n_cells = cells_of(passes, dm).size();
  max_iter = static_cast<int>(std::min<size_t>(max_iter, std::max<size_t>(8, 2000000 / std::max<size_t>(n_cells, 1))));
  for (int it = 0; it < max_iter; ++it) {
    std::vector<Cell> cells = cells_of(passes, dm);
    std::vector<double> A(n * n, 0.0), rhs(n, 0.0);
    std::vector<std::pair<int, double>> coef;
    for (const Cell& c : cells) {
      double fixed = 0;
      coef.clear();
      for (size_t k = 0; k < passes.size(); ++k) {
        const int L = static_cast<int>(passes[k].levels.size());
        if (!free[k]) { fixed += passes[k].levels[c.codes[k]]; continue; }
        int j; double sgn;
        sym_index(c.codes[k], L, &j, &sgn);
        coef.push_back({base[k] + j, sgn});
      }
      for (auto [i, si] : coef) {
        rhs[i] += si * (c.m.m1 - c.m.m0 * fixed);
        for (auto [k, sk] : coef) A[i * n + k] += si * sk * c.m.m0;
      }
    }
    std::vector<double> x;
    if (!solve(A, rhs, n, &x)) break;
    for (size_t k = 0; k < passes.size(); ++k) {
      if (!free[k]) continue;
      const int L = static_cast<int>(passes[k].levels.size());
      std::vector<double> lv(L);
      for (int code = 0; code < L; ++code) {
        int j; double sgn;
        sym_index(code, L, &j, &sgn);
        lv[code] = sgn * x[base[k] + j];
      }
      passes[k] = make_codebook(lv);
    }
    const double e = mse_of(cells_of(passes, dm));
    const double prev = best_mse;
    if (e < best_mse) { best_mse = e; best = passes; }
    if (!(e < prev - 1e-15 * std::max(prev, 1e-300))) {
      if (it > 3) break;  // the partition stopped improving
    }
  }
  return best;
}

Codebook lloyd_max_compute(const DensityModel& dm, int bits) {
  const int L = 1 << bits;
  // Start from the centroids of equal-probability cells (bisection on the CDF).
  const double s = dm.support();
  std::vector<double> t(L + 1);
  t[0] = -kInf;
  t[L] = kInf;
  for (int j = 1; j < L; ++j) {
    const double target = static_cast<double>(j) / L;
    double lo = -s, hi = s;
    for (int it = 0; it < 200; ++it) {
      const double mid = 0.5 * (lo + hi);
      (dm.moments(-kInf, mid).m0 < target ? lo : hi) = mid;
    }
    t[j] = 0.5 * (lo + hi);
  }
  std::vector<double> c(L);
  for (int it = 0; it < 100000; ++it) {
    double change = 0;
    for (int j = 0; j < L; ++j) {
      Moments m = dm.moments(t[j], t[j + 1]);
      const double v = m.m0 > 0 ? m.m1 / m.m0 : 0.5 * (std::max(t[j], -s) + std::min(t[j + 1], s));
      change = std::max(change, std::fabs(v - c[j]));
      c[j] = v;
    }
    for (int j = 1; j < L; ++j) t[j] = 0.5 * (c[j - 1] + c[j]);
    if (change < 1e-13) break;
  }
  // Symmetrise exactly (the densities are symmetric; this removes round-off asymmetry).
  for (int j = 0; j < L / 2; ++j) {
    const double v = 0.5 * (c[L - 1 - j] - c[j]);
    c[L - 1 - j] = v;
    c[j] = -v;
  }
  Codebook cb = make_codebook(c);
  cb.mse = mse_of(cells_of({cb}, dm));
  return cb;
}

Codebook scaled(const Codebook& cb, double s) {
  std::vector<double> lv;
  for (float v : cb.levels) lv.push_back(v * s);
  return make_codebook(lv);
}

PassCodebooks compute_residual(ResidualCodebook mode, int bits, int passes, Density source,
                               int dim) {
  const DensityModel& dm = density_model(source, dim);
  std::vector<Codebook> cbs = {lloyd_max(source, bits, dim)};
  // Seed-faithful residual passes: unit Laplacian Lloyd-Max scaled by the residual's exact RMS.
  for (int k = 1; k < passes; ++k) {
    const double rms = std::sqrt(mse_of(cells_of(cbs, dm)));
    cbs.push_back(scaled(lloyd_max(Density::kLaplacian, bits), rms));
  }
  if (mode != ResidualCodebook::kLaplacian) {
    // Best residual codebook for the passes before it, one pass at a time (Lloyd on the exact
    // residual distribution: for the last pass greedy encoding is nearest-neighbour, so the
    // refit/re-partition iteration is monotone).
    for (int k = 1; k < passes; ++k) {
      std::vector<Codebook> prefix(cbs.begin(), cbs.begin() + k + 1);
      std::vector<bool> free(k + 1, false);
      free[k] = true;
      prefix = refit(prefix, free, dm, 2000);
      cbs[k] = prefix[k];
      if (k + 1 < passes) {
        const double rms = std::sqrt(mse_of(cells_of(prefix, dm)));
        cbs[k + 1] = scaled(lloyd_max(Density::kLaplacian, bits), rms);
      }
    }
  }
  if (mode == ResidualCodebook::kJoint && passes > 1) {
    cbs = refit(cbs, std::vector<bool>(passes, true), dm, 2000);
  }
  PassCodebooks out;
  const double total = mse_of(cells_of(cbs, dm));
  for (int k = 0; k < passes; ++k) {
    std::vector<Codebook> prefix(cbs.begin(), cbs.begin() + k + 1);
    cbs[k].mse = mse_of(cells_of(prefix, dm));
  }
  out.passes = std::move(cbs);
  out.mse = total;
  return out;
}

}  // namespace

Density source_density_for_dim(int head_dim) {
  return head_dim >= 3 && head_dim < 64 ? Density::kSphere : Density::kGaussian;
}

const Codebook& lloyd_max(Density density, int bits, int dim) {
  TQKV_CHECK(bits >= 1 && bits <= 8);
  static std::mutex mu;
  static std::map<std::tuple<int, int, int>, std::unique_ptr<Codebook>> cache;
  const int key_dim = density == Density::kSphere ? dim : 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find({static_cast<int>(density), bits, key_dim});
    if (it != cache.end()) return *it->second;
  }
  auto cb = std::make_unique<Codebook>(lloyd_max_compute(density_model(density, dim), bits));
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{static_cast<int>(density), bits, key_dim}];
  if (!slot) slot = std::move(cb);
  return *slot;
}

const PassCodebooks& residual_codebooks(ResidualCodebook mode, int bits, int passes,
                                        Density source, int dim) {
  TQKV_CHECK(bits >= 1 && bits <= 8 && passes >= 1 && passes <= 4);
  static std::mutex mu;
  static std::map<std::tuple<int, int, int, int, int>, std::unique_ptr<PassCodebooks>> cache;
  const int key_dim = source == Density::kSphere ? dim : 0;
  const auto key = std::make_tuple(static_cast<int>(mode), bits, passes, static_cast<int>(source), key_dim);
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return *it->second;
  }
  auto pc = std::make_unique<PassCodebooks>(compute_residual(mode, bits, passes, source, dim));
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[key];
  if (!slot) slot = std::move(pc);
  return *slot;
}

double greedy_mse(const std::vector<Codebook>& passes, Density source, int dim) {
  return mse_of(cells_of(passes, density_model(source, dim)));
}

StatusOr<ResidualCodebook> parse_residual_codebook(std::string_view name) {
  if (name == "laplacian") return ResidualCodebook::kLaplacian;
  if (name == "optimal") return ResidualCodebook::kOptimal;
  if (name == "joint") return ResidualCodebook::kJoint;
  return invalid_argument("unknown residual codebook '" + std::string(name) +
                          "'; known: joint (default), optimal, laplacian (seed-faithful)");
}

const char* residual_codebook_name(ResidualCodebook r) {
  switch (r) {
    case ResidualCodebook::kLaplacian: return "laplacian";
    case ResidualCodebook::kOptimal: return "optimal";
    case ResidualCodebook::kJoint: return "joint";
  }
  return "?";
}

}  // namespace tqkv
