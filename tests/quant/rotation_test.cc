#include "tqkv/rotation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/random.h"

namespace tqkv {
namespace {

class RotationDims : public ::testing::TestWithParam<int> {};

TEST_P(RotationDims, PreservesNormAndInverts) {
  const int d = GetParam();
  auto rot = Rotation::make(d, 1234);
  ASSERT_TRUE(rot.ok());
  SplitMix64 rng(d);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> x(d), y(d), z(d);
    double n2 = 0;
    for (float& v : x) { v = static_cast<float>(rng.normal()) * (trial + 1); n2 += double(v) * v; }
    rot->forward(x.data(), y.data());
    double m2 = 0, e2 = 0;
    for (float v : y) m2 += double(v) * v;
    EXPECT_NEAR(std::sqrt(m2) / std::sqrt(n2), 1.0, 1e-6);
    rot->inverse(y.data(), z.data());
    for (int i = 0; i < d; ++i) e2 += (double(z[i]) - x[i]) * (double(z[i]) - x[i]);
    EXPECT_LT(std::sqrt(e2 / n2), 1e-6) << "d=" << d;
  }
}

TEST_P(RotationDims, IsOrthogonalMatrix) {
  // Columns R e_i are orthonormal: check all inner products.
  const int d = GetParam();
  if (d > 256) GTEST_SKIP() << "O(d^3) check limited to d <= 256";
  auto rot = Rotation::make(d, 99);
  std::vector<std::vector<float>> cols(d, std::vector<float>(d));
  for (int i = 0; i < d; ++i) {
    std::vector<float> e(d, 0.0f);
    e[i] = 1;
    rot->forward(e.data(), cols[i].data());
  }
  for (int i = 0; i < d; ++i)
    for (int j = i; j < d; ++j) {
      double s = 0;
      for (int k = 0; k < d; ++k) s += double(cols[i][k]) * cols[j][k];
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 1e-6);
    }
}

INSTANTIATE_TEST_SUITE_P(Dims, RotationDims, ::testing::Values(1, 7, 8, 64, 80, 96, 112, 128, 160, 256, 576));

TEST(Rotation, SpreadsAnOutlierChannel) {
  // A vector with all its energy in one coordinate comes out flat: max |y_i| <= 1/sqrt(64).
  for (int d : {64, 128}) {
    auto rot = Rotation::make(d, 5);
    std::vector<float> x(d, 0.0f), y(d);
    x[3] = 1;
    rot->forward(x.data(), y.data());
    for (float v : y) EXPECT_NEAR(std::fabs(v), 1 / std::sqrt(double(d)), 1e-6);
  }
}

TEST(Rotation, DisabledIsIdentityAndSeedsDiffer) {
  auto id = Rotation::make(96, 1, false);
  std::vector<float> x(96), y(96);
  for (int i = 0; i < 96; ++i) x[i] = i;
  id->forward(x.data(), y.data());
  EXPECT_EQ(x, y);
  auto a = Rotation::make(128, 1), b = Rotation::make(128, 2);
  std::vector<float> x128(128), ya(128), yb(128);
  for (int i = 0; i < 128; ++i) x128[i] = static_cast<float>(i % 7) - 3;
  a->forward(x128.data(), ya.data());
  b->forward(x128.data(), yb.data());
  EXPECT_NE(ya, yb);
  EXPECT_FALSE(Rotation::make(0, 1).ok());
}

}  // namespace
}  // namespace tqkv
