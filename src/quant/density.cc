#include "quant/density.h"

#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <vector>

#include "core/check.h"

namespace tqkv {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

class Gaussian final : public DensityModel {
 public:
  Moments moments(double a, double b) const override {
    Moments m;
    m.m0 = cdf(b) - cdf(a);
    m.m1 = pdf(a) - pdf(b);
    m.m2 = m.m0 + xpdf(a) - xpdf(b);
    return m;
  }
  double support() const override { return 12.0; }

 private:
  static double pdf(double x) { return std::isinf(x) ? 0.0 : std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI); }
  static double xpdf(double x) { return std::isinf(x) ? 0.0 : x * pdf(x); }
  static double cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
};

// Unit-variance Laplacian: f(x) = exp(-|x|/s) / (2s), s = 1/sqrt(2).
class Laplacian final : public DensityModel {
 public:
  Moments moments(double a, double b) const override {
    if (a >= b) return {};
    if (a >= 0) return pos(a, b);
    if (b <= 0) {
      Moments m = pos(-b, -a);
      m.m1 = -m.m1;
      return m;
    }
    Moments l = moments(a, 0), r = pos(0, b);
    return {l.m0 + r.m0, l.m1 + r.m1, l.m2 + r.m2};
  }
  double support() const override { return 60.0; }

 private:
  static constexpr double s = 0.70710678118654752440;
  // Tail integrals from x >= 0 to +inf.
  static Moments tail(double x) {
    if (std::isinf(x)) return {};
    const double e = 0.5 * std::exp(-x / s);
    return {e, (x + s) * e, (x * x + 2 * s * x + 2 * s * s) * e};
  }
  static Moments pos(double a, double b) {
    Moments ta = tail(a), tb = tail(b);
    return {ta.m0 - tb.m0, ta.m1 - tb.m1, ta.m2 - tb.m2};
  }
};

// Marginal of t = sqrt(d) u_1 for u uniform on S^{d-1}: f(t) ~ (1 - t^2/d)^((d-3)/2), |t| < sqrt(d).
// Tabulated: cumulative moments at kCells+1 nodes, exact 16-point Gauss-Legendre inside a cell.
class Sphere final : public DensityModel {
 public:
  explicit Sphere(int dim) : d_(dim), r_(std::sqrt(static_cast<double>(dim))) {
    TQKV_CHECK(dim >= 3);
    h_ = 2 * r_ / kCells;
    cum_.resize(kCells + 1);
    cum_[0] = {};
    for (int i = 0; i < kCells; ++i) {
      Moments c = gl(-r_ + i * h_, -r_ + (i + 1) * h_);
      cum_[i + 1] = {cum_[i].m0 + c.m0, cum_[i].m1 + c.m1, cum_[i].m2 + c.m2};
    }
    norm_ = cum_[kCells].m0;
  }
  Moments moments(double a, double b) const override {
    Moments fb = cumulative(b), fa = cumulative(a);
    return {(fb.m0 - fa.m0) / norm_, (fb.m1 - fa.m1) / norm_, (fb.m2 - fa.m2) / norm_};
  }
  double support() const override { return r_; }

 private:
  static constexpr int kCells = 4096;
  double f(double t) const {
    const double u = 1.0 - t * t / d_;
    return u <= 0 ? 0.0 : std::pow(u, 0.5 * (d_ - 3));
  }
  Moments gl(double a, double b) const {
    static const double x[8] = {0.0950125098376374, 0.2816035507792589, 0.4580167776572274,
                                0.6178762444026438, 0.7554044083550030, 0.8656312023878318,
                                0.9445750230732326, 0.9894009349916499};
    static const double w[8] = {0.1894506104550685, 0.1826034150449236, 0.1691565193950025,
                                0.1495959888165767, 0.1246289712555339, 0.0951585116824928,
                                0.0622535239386479, 0.0271524594117541};
    const double c = 0.5 * (a + b), h = 0.5 * (b - a);
    Moments m;
    for (int i = 0; i < 8; ++i) {
      for (double t : {c - h * x[i], c + h * x[i]}) {
        const double v = w[i] * f(t) * h;
        m.m0 += v; m.m1 += v * t; m.m2 += v * t * t;
      }
    }
    return m;
  }
  Moments cumulative(double x) const {
    if (x <= -r_) return {};
    if (x >= r_) return cum_[kCells];
    int i = static_cast<int>((x + r_) / h_);
    if (i >= kCells) i = kCells - 1;
    Moments base = cum_[i], part = gl(-r_ + i * h_, x);
    return {base.m0 + part.m0, base.m1 + part.m1, base.m2 + part.m2};
  }
  int d_;
  double r_, h_, norm_;
  std::vector<Moments> cum_;
};

}  // namespace

const DensityModel& density_model(Density density, int dim) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, std::unique_ptr<DensityModel>> cache;
  const int key_dim = density == Density::kSphere ? dim : 0;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{static_cast<int>(density), key_dim}];
  if (!slot) {
    switch (density) {
      case Density::kGaussian: slot = std::make_unique<Gaussian>(); break;
      case Density::kLaplacian: slot = std::make_unique<Laplacian>(); break;
      case Density::kSphere: slot = std::make_unique<Sphere>(dim); break;
    }
  }
  return *slot;
}

}  // namespace tqkv
