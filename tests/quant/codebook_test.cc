#include "tqkv/codebook.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "quant/density.h"

namespace tqkv {
namespace {

// Independent check of a codebook's MSE on N(0,1): composite Simpson integration of
// (x - c(x))^2 phi(x) over [-12, 12], using only the encoding rule (thresholds).
double simpson_gaussian_mse(const Codebook& cb) {
  const int n = 240000;
  const double a = -12, b = 12, h = (b - a) / n;
  auto f = [&](double x) {
    int q = 0;
    for (float t : cb.thresholds) q += x > t;
    const double e = x - cb.levels[q];
    return e * e * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
  };
  double s = f(a) + f(b);
  for (int i = 1; i < n; ++i) s += f(a + i * h) * (i % 2 ? 4 : 2);
  return s * h / 3;
}

TEST(LloydMax, GaussianMseMatchesMaxTable) {
  // Max (1960). Our closed-form computation gives 0.363380, 0.117482, 0.034548, 0.0095010; Max's
  // printed table rounds the last two as 0.03454 and 0.009497 (a 4e-4 relative difference in the
  // 4th digit), so the comparison is to 5e-4 relative and the exact values are checked below.
  const double max_table[4] = {0.3634, 0.1175, 0.03454, 0.009497};
  for (int b = 1; b <= 4; ++b) {
    const Codebook& cb = lloyd_max(Density::kGaussian, b);
    EXPECT_NEAR(cb.mse / max_table[b - 1], 1.0, 5e-4) << "bits " << b;
    EXPECT_NEAR(cb.mse, simpson_gaussian_mse(cb), 1e-7) << "bits " << b;
  }
  EXPECT_NEAR(lloyd_max(Density::kGaussian, 1).mse, 1 - 2 / M_PI, 1e-7);
  EXPECT_NEAR(lloyd_max(Density::kGaussian, 1).levels[1], std::sqrt(2 / M_PI), 1e-6);
  EXPECT_NEAR(lloyd_max(Density::kGaussian, 2).levels[3], 1.5104, 1e-4);
  EXPECT_NEAR(lloyd_max(Density::kGaussian, 2).levels[2], 0.4528, 1e-4);
}

TEST(LloydMax, CentroidAndMidpointConditionsHold) {
  for (Density dens : {Density::kGaussian, Density::kLaplacian}) {
    const DensityModel& dm = density_model(dens, 0);
    for (int b = 1; b <= 8; ++b) {
      const Codebook& cb = lloyd_max(dens, b);
      const int L = 1 << b;
      ASSERT_EQ(static_cast<int>(cb.levels.size()), L);
      for (int j = 0; j + 1 < L; ++j) {
        EXPECT_LT(cb.levels[j], cb.levels[j + 1]);
        EXPECT_FLOAT_EQ(cb.thresholds[j], 0.5f * (cb.levels[j] + cb.levels[j + 1]));
      }
      for (int j = 0; j < L; ++j) {
        const double lo = j == 0 ? -INFINITY : cb.thresholds[j - 1];
        const double hi = j == L - 1 ? INFINITY : cb.thresholds[j];
        Moments m = dm.moments(lo, hi);
        // Centroid condition, to float precision of the stored level.
        EXPECT_NEAR(m.m1 / m.m0, cb.levels[j], 2e-6 * (1 + std::fabs(cb.levels[j])))
            << "density " << static_cast<int>(dens) << " bits " << b << " level " << j;
      }
    }
  }
}

TEST(LloydMax, MseStrictlyDecreasesWithBits) {
  for (Density dens : {Density::kGaussian, Density::kLaplacian}) {
    double prev = 2;
    for (int b = 1; b <= 8; ++b) {
      const double e = lloyd_max(dens, b).mse;
      EXPECT_LT(e, prev) << "bits " << b;
      prev = e;
    }
  }
}

TEST(LloydMax, SphereMarginalApproachesGaussian) {
  // At small d the exact marginal has lighter tails: its 2-bit outer level is smaller.
  const double g = lloyd_max(Density::kGaussian, 2).levels[3];
  const double s8 = lloyd_max(Density::kSphere, 2, 8).levels[3];
  const double s60 = lloyd_max(Density::kSphere, 2, 60).levels[3];
  EXPECT_LT(s8, s60);
  EXPECT_LT(s60, g);
  EXPECT_NEAR(s60, g, 0.02);
}

// Independent per-coordinate MSE of greedy pass-by-pass encoding on N(0,1): composite Simpson
// integration of (x - x_hat(x))^2 phi(x) over [-12, 12], where x_hat applies each pass's
// thresholds to the residual left by the passes before it (the encoding rule of docs/format.md),
// written here without the library's greedy_mse().
double simpson_greedy_mse(const std::vector<Codebook>& passes) {
  const int n = 240000;
  const double a = -12, b = 12, h = (b - a) / n;
  auto f = [&](double x) {
    double r = x;
    for (const Codebook& cb : passes) {
      int q = 0;
      for (float t : cb.thresholds) q += r > t;
      r -= cb.levels[q];
    }
    return r * r * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
  };
  double s = f(a) + f(b);
  for (int i = 1; i < n; ++i) s += f(a + i * h) * (i % 2 ? 4 : 2);
  return s * h / 3;
}

TEST(ResidualCodebooks, StatedMseEqualsIndependentIntegration) {
  // The stated total MSE of every design is the true greedy MSE of its codebooks. Simpson's rule
  // on a piecewise-smooth integrand with ~2^(b p) kinks: error O(h) per kink at h = 1e-4,
  // i.e. < 1e-6 for these few kinks (the 1-bit Lloyd-Max check above agrees to 1e-7).
  for (ResidualCodebook m : {ResidualCodebook::kLaplacian, ResidualCodebook::kOptimal, ResidualCodebook::kJoint})
    for (int b = 1; b <= 2; ++b)
      for (int p = 2; p <= 3; ++p) {
        const PassCodebooks& cbs = residual_codebooks(m, b, p, Density::kGaussian);
        ASSERT_EQ(static_cast<int>(cbs.passes.size()), p);
        EXPECT_NEAR(cbs.mse, simpson_greedy_mse(cbs.passes), 1e-6)
            << residual_codebook_name(m) << " " << b << "x" << p;
      }
}

TEST(ResidualCodebooks, ClosedFormTwoPassOneBitDesigns) {
  const double a = std::sqrt(2 / M_PI);  // 1-bit Lloyd-Max level of N(0,1): E|x|
  // Joint 1x2 = the 2-bit Lloyd-Max quantizer (levels +-a +-c): Max (1960) tabulates the 2-bit
  // Gaussian levels 0.4528 and 1.510 and MSE 0.1175, so a = (1.510 + 0.4528) / 2 = 0.9814,
  // c = (1.510 - 0.4528) / 2 = 0.5286 (table precision +-5e-4).
  const auto& j = residual_codebooks(ResidualCodebook::kJoint, 1, 2, Density::kGaussian);
  EXPECT_NEAR(j.passes[0].levels[1] + j.passes[1].levels[1], 1.510, 5e-4);
  EXPECT_NEAR(j.passes[0].levels[1] - j.passes[1].levels[1], 0.4528, 5e-4);
  EXPECT_NEAR(j.mse, 0.1175, 5e-5);
  // Optimal 1x2: pass 2 is the 1-bit Lloyd-Max quantizer of the residual r = x - sign(x) a, a
  // symmetric density, whose optimal level is E|r|; the MSE is E r^2 - (E|r|)^2 with
  // E r^2 = 1 - 2/pi. E|r| = 2 * integral_0^inf |x - a| phi(x) dx by Simpson on [0, 12] with a
  // node at the kink x = a (split in two pieces).
  auto phi = [](double x) { return std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI); };
  auto simpson = [&](double lo, double hi) {
    const int n = 100000;
    const double h = (hi - lo) / n;
    auto f = [&](double x) { return std::fabs(x - a) * phi(x); };
    double s = f(lo) + f(hi);
    for (int i = 1; i < n; ++i) s += f(lo + i * h) * (i % 2 ? 4 : 2);
    return s * h / 3;
  };
  const double e_abs_r = 2 * (simpson(0, a) + simpson(a, 12));
  const auto& o = residual_codebooks(ResidualCodebook::kOptimal, 1, 2, Density::kGaussian);
  EXPECT_NEAR(o.passes[0].levels[1], a, 1e-6);
  EXPECT_NEAR(o.passes[1].levels[1], e_abs_r, 1e-6);  // float level
  EXPECT_NEAR(o.mse, (1 - 2 / M_PI) - e_abs_r * e_abs_r, 1e-6);
  // Laplacian (seed-faithful) 1x2: pass 2 is the unit-variance Laplacian 1-bit level (its E|y| =
  // 1/sqrt(2)) scaled by the exact residual RMS sqrt(1 - 2/pi).
  const auto& l = residual_codebooks(ResidualCodebook::kLaplacian, 1, 2, Density::kGaussian);
  EXPECT_NEAR(l.passes[1].levels[1], std::sqrt(1 - 2 / M_PI) / std::sqrt(2.0), 1e-6);
  // Any 2x2 design is a 16-level quantizer: it cannot beat the 4-bit Lloyd-Max MSE (Max: 0.009497).
  for (ResidualCodebook m : {ResidualCodebook::kLaplacian, ResidualCodebook::kOptimal, ResidualCodebook::kJoint})
    EXPECT_GT(residual_codebooks(m, 2, 2, Density::kGaussian).mse, 0.009497 * (1 - 5e-4));
}

TEST(ResidualCodebooks, MoreCarefulDesignNeverWorse) {
  for (int b = 1; b <= 3; ++b)
    for (int p = 1; p <= 3; ++p) {
      const double lap = residual_codebooks(ResidualCodebook::kLaplacian, b, p, Density::kGaussian).mse;
      const double opt = residual_codebooks(ResidualCodebook::kOptimal, b, p, Density::kGaussian).mse;
      const double joint = residual_codebooks(ResidualCodebook::kJoint, b, p, Density::kGaussian).mse;
      EXPECT_LE(opt, lap * (1 + 1e-9)) << b << "x" << p;
      EXPECT_LE(joint, opt * (1 + 1e-9)) << b << "x" << p;
      // The stated MSE is the exact greedy-encoding MSE of the stored codebooks.
      const auto& cbs = residual_codebooks(ResidualCodebook::kJoint, b, p, Density::kGaussian);
      EXPECT_NEAR(greedy_mse(cbs.passes, Density::kGaussian), joint, 1e-12);
    }
}

TEST(ResidualCodebooks, ParseNames) {
  EXPECT_EQ(*parse_residual_codebook("joint"), ResidualCodebook::kJoint);
  EXPECT_EQ(*parse_residual_codebook("laplacian"), ResidualCodebook::kLaplacian);
  EXPECT_FALSE(parse_residual_codebook("gaussian").ok());
}

}  // namespace
}  // namespace tqkv
