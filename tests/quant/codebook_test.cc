#include "tqkv/codebook.h"

#include <gtest/gtest.h>

#include <cmath>

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

TEST(ResidualCodebooks, KnownGaussianNumbers) {
  // Numbers from the issue (per-coordinate MSE, unit-variance Gaussian source).
  auto mse = [](ResidualCodebook m, int b) {
    return residual_codebooks(m, b, 2, Density::kGaussian).mse;
  };
  EXPECT_NEAR(mse(ResidualCodebook::kLaplacian, 1), 0.134, 0.0005);
  EXPECT_NEAR(mse(ResidualCodebook::kOptimal, 1), 0.130, 0.0005);
  EXPECT_NEAR(mse(ResidualCodebook::kJoint, 1), 0.1175, 0.0001);
  EXPECT_NEAR(mse(ResidualCodebook::kLaplacian, 2), 0.026, 0.0005);
  EXPECT_NEAR(mse(ResidualCodebook::kOptimal, 2), 0.0197, 0.0002);
  EXPECT_NEAR(mse(ResidualCodebook::kJoint, 2), 0.0114, 0.0002);
  // 1x2 joint reproduces the 2-bit Lloyd-Max quantizer: levels +-a +-c, a = 0.9814, c = 0.5286.
  const auto& j = residual_codebooks(ResidualCodebook::kJoint, 1, 2, Density::kGaussian);
  EXPECT_NEAR(j.passes[0].levels[1], 0.9814, 0.001);
  EXPECT_NEAR(j.passes[1].levels[1], 0.5286, 0.001);
  // The seed-faithful residual scale is the exact residual RMS (sqrt(0.3634) = 0.603) times the
  // unit-variance Laplacian 1-bit level (1/sqrt(2) = 0.7071): 0.4263.
  const auto& l = residual_codebooks(ResidualCodebook::kLaplacian, 1, 2, Density::kGaussian);
  EXPECT_NEAR(l.passes[1].levels[1], std::sqrt(1 - 2 / M_PI) / std::sqrt(2.0), 1e-5);
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
