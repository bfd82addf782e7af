// Channel bases for pk{b} (tqkv/channel_basis.h) and the pk codec in a basis:
//  - the Jacobi eigenbasis recovers a matrix built from a known orthonormal Q and known distinct
//    eigenvalues (columns up to the documented sign rule, U^T A U diagonal and descending);
//  - projection_gram against a hand computation; validate_channel_basis rejects bad pairs;
//  - the codec with a scaled signed-permutation pair (exact in float) produces the SAME bytes as
//    the plain codec on the transformed input, and decodes through the synthesis matrix: pins the
//    analysis/synthesis index convention exactly;
//  - the codec's MSE in a random orthonormal basis on x = mu + U (sd * g) matches the Lloyd-Max
//    table per basis channel (the derivation of PreRopeKeys.MseMatchesLloydMaxTablePerChannel in
//    prerope_keys_test.cc, unchanged by an orthonormal transform), plus the float rounding of the
//    two d-term transforms.
#include "tqkv/channel_basis.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "tqkv/codebook.h"
#include "tqkv/prerope_keys.h"

namespace tqkv {
namespace {

// Random orthonormal d x d matrix (row-major, columns orthonormal): Gram-Schmidt in double.
std::vector<double> random_orthonormal(int d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g;
  std::vector<double> q(static_cast<size_t>(d) * d);
  for (auto& x : q) x = g(rng);
  for (int j = 0; j < d; ++j) {
    for (int pass = 0; pass < 2; ++pass)
      for (int k = 0; k < j; ++k) {
        double dot = 0;
        for (int i = 0; i < d; ++i) dot += q[i * d + j] * q[i * d + k];
        for (int i = 0; i < d; ++i) q[i * d + j] -= dot * q[i * d + k];
      }
    double nrm = 0;
    for (int i = 0; i < d; ++i) nrm += q[i * d + j] * q[i * d + j];
    nrm = std::sqrt(nrm);
    for (int i = 0; i < d; ++i) q[i * d + j] /= nrm;
  }
  return q;
}

TEST(ChannelBasis, JacobiRecoversKnownEigenvectors) {
  for (int d : {1, 2, 5, 16, 64}) {
    const std::vector<double> q = random_orthonormal(d, 100 + d);
    std::vector<double> lam(d);
    for (int j = 0; j < d; ++j) lam[j] = 2.0 * (d - j) + 1.0 / (j + 1);  // distinct, descending, gaps >= 1
    // A = Q diag(lam) Q^T, eigenvalues of column j of Q in descending order already.
    std::vector<double> a(static_cast<size_t>(d) * d, 0.0);
    for (int i = 0; i < d; ++i)
      for (int k = 0; k < d; ++k) {
        double s = 0;
        for (int j = 0; j < d; ++j) s += q[i * d + j] * lam[j] * q[k * d + j];
        a[i * d + k] = s;
      }
    for (int i = 0; i < d; ++i)  // exact symmetry
      for (int k = i + 1; k < d; ++k) a[k * d + i] = a[i * d + k];
    auto u = symmetric_eigenbasis(a, d);
    ASSERT_TRUE(u.ok()) << u.status().to_string();
    for (int j = 0; j < d; ++j) {
      // Column j equals +-Q's column j; the sign rule makes the largest-magnitude entry positive.
      int big = 0;
      for (int i = 1; i < d; ++i)
        if (std::fabs(q[i * d + j]) > std::fabs(q[big * d + j])) big = i;
      const double sign = q[big * d + j] < 0 ? -1.0 : 1.0;
      for (int i = 0; i < d; ++i) EXPECT_NEAR((*u)[i * d + j], sign * q[i * d + j], 1e-5) << "d " << d << " col " << j;
      EXPECT_GT((*u)[big * d + j], 0.0f);
    }
    ChannelBasis b = orthonormal_basis(*u, d);
    EXPECT_TRUE(validate_channel_basis(b).ok());
  }
}

// block_eigenbasis: a random symmetric matrix restricted to blocks (d 10, blocks of 4: 4 + 4 + 2)
// gives, per block, exactly symmetric_eigenbasis of that block in its rows and columns and exact
// zeros elsewhere; block >= d is the dense eigenbasis; block 0 is refused.
TEST(ChannelBasis, BlockEigenbasis) {
  const int d = 10, block = 4;
  std::mt19937_64 rng(9);
  std::normal_distribution<double> g;
  std::vector<double> a(static_cast<size_t>(d) * d);
  for (int i = 0; i < d; ++i)
    for (int k = 0; k <= i; ++k) a[i * d + k] = a[k * d + i] = g(rng) + (i == k ? 4.0 : 0.0);
  auto u = block_eigenbasis(a, d, block);
  ASSERT_TRUE(u.ok()) << u.status().to_string();
  for (int b0 = 0; b0 < d; b0 += block) {
    const int n = std::min(block, d - b0);
    std::vector<double> sub(static_cast<size_t>(n) * n);
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < n; ++k) sub[i * n + k] = a[(b0 + i) * d + b0 + k];
    auto e = symmetric_eigenbasis(sub, n);
    ASSERT_TRUE(e.ok());
    for (int i = 0; i < d; ++i)
      for (int j = b0; j < b0 + n; ++j) {
        const bool inside = i >= b0 && i < b0 + n;
        EXPECT_EQ((*u)[i * d + j], inside ? (*e)[(i - b0) * n + (j - b0)] : 0.0f) << i << "," << j;
      }
  }
  EXPECT_TRUE(validate_channel_basis(orthonormal_basis(*u, d)).ok());
  EXPECT_EQ(*block_eigenbasis(a, d, d), *symmetric_eigenbasis(a, d));
  EXPECT_EQ(*block_eigenbasis(a, d, 1000), *symmetric_eigenbasis(a, d));
  EXPECT_FALSE(block_eigenbasis(a, d, 0).ok());
}

TEST(ChannelBasis, GramAndErrors) {
  // W = [[1, 2, 0], [0, 1, -1]], g = (1, 0.5, 2): W diag(g)^2 W^T = [[1 + 1, 0.5], [0.5, 0.25 + 4]].
  const float w[] = {1, 2, 0, 0, 1, -1};
  const float g[] = {1, 0.5f, 2};
  const std::vector<double> a = projection_gram(w, g, 2, 3);
  EXPECT_EQ(a, (std::vector<double>{2.0, 0.5, 0.5, 4.25}));
  EXPECT_EQ(projection_gram(w, nullptr, 2, 3), (std::vector<double>{5.0, 2.0, 2.0, 2.0}));
  EXPECT_FALSE(symmetric_eigenbasis({1, 2, 3, 4}, 2).ok());    // not symmetric
  EXPECT_FALSE(symmetric_eigenbasis({1, 2, 2}, 2).ok());       // wrong size
  EXPECT_FALSE(symmetric_eigenbasis({1, NAN, NAN, 1}, 2).ok());
  EXPECT_FALSE(symmetric_eigenbasis({}, 0).ok());
  ChannelBasis b = orthonormal_basis({1, 0, 0, 1}, 2);
  EXPECT_TRUE(validate_channel_basis(b).ok());
  b.synthesis = {1, 0, 0, 1.01f};
  EXPECT_FALSE(validate_channel_basis(b).ok());
  b.synthesis = {1, 0, 0};
  EXPECT_FALSE(validate_channel_basis(b).ok());
  b = orthonormal_basis({1, 0, 0, NAN}, 2);
  EXPECT_FALSE(validate_channel_basis(b).ok());
  // A basis for the wrong head_dim is refused by the codec.
  std::vector<float> x(3 * 20, 1.0f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7);
  auto c = PreRopeKeyCodec::fit(x.data(), 20, 3, 0, 2.0, true,
                                std::make_shared<const ChannelBasis>(orthonormal_basis({1, 0, 0, 1}, 2)));
  EXPECT_FALSE(c.ok());
}

// Scaled signed permutation pair (not orthonormal): analysis column j = s_j 2^{e_j} e_{perm[j]},
// synthesis column j = s_j 2^{-e_j} e_{perm[j]} (S A^T = I), so y_j = (A^T x)_j =
// s_j 2^{e_j} x_{perm[j]} exactly in float. The codec with that pair must write the bytes the
// plain codec writes for that input, and decode to x_hat_{perm[j]} = s_j 2^{-e_j} y_hat_j (one
// nonzero product per sum, power-of-two scale: exact). Using A where S belongs, or a transpose,
// breaks it.
TEST(ChannelBasis, ScaledSignedPermutationPairIsExact) {
  const int d = 48, n = 300;
  std::mt19937_64 rng(5);
  std::vector<int> perm(d);
  for (int j = 0; j < d; ++j) perm[j] = (j * 7 + 3) % d;  // 7 coprime to 48: a permutation, not an involution
  std::vector<float> sgn(d);
  for (int j = 0; j < d; ++j) sgn[j] = (j % 3 == 1) ? -1.0f : 1.0f;
  std::vector<float> scl(d);
  for (int j = 0; j < d; ++j) scl[j] = std::ldexp(1.0f, j % 5 - 2);  // 1/4 .. 4
  ChannelBasis pair;
  pair.dim = d;
  pair.analysis.assign(static_cast<size_t>(d) * d, 0.0f);
  pair.synthesis.assign(static_cast<size_t>(d) * d, 0.0f);
  for (int j = 0; j < d; ++j) {
    pair.analysis[static_cast<size_t>(perm[j]) * d + j] = sgn[j] * scl[j];
    pair.synthesis[static_cast<size_t>(perm[j]) * d + j] = sgn[j] / scl[j];
  }
  ASSERT_TRUE(validate_channel_basis(pair).ok());
  auto basis = std::make_shared<const ChannelBasis>(pair);
  std::normal_distribution<float> g;
  std::vector<float> x(static_cast<size_t>(n) * d), y(x.size());
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < d; ++i)
      x[static_cast<size_t>(r) * d + i] = 0.5f * static_cast<float>(i % 4) + (0.2f + 3.0f * std::exp(-0.1f * i)) * g(rng);
  for (int r = 0; r < n; ++r)
    for (int j = 0; j < d; ++j) y[static_cast<size_t>(r) * d + j] = sgn[j] * scl[j] * x[static_cast<size_t>(r) * d + perm[j]];
  for (double avg : {1.5, 2.5, 4.0}) {
    auto cb = PreRopeKeyCodec::fit(x.data(), 128, d, 0, avg, true, basis);
    auto cp = PreRopeKeyCodec::fit(y.data(), 128, d, 0, avg, true);
    ASSERT_TRUE(cb.ok() && cp.ok());
    EXPECT_EQ(cb->stats().bits, cp->stats().bits);
    EXPECT_EQ(cb->stats().mean, cp->stats().mean);
    EXPECT_EQ(cb->stats().sd, cp->stats().sd);
    ASSERT_EQ(cb->code_size(), cp->code_size());
    std::vector<uint8_t> codes_b(static_cast<size_t>(n) * cb->code_size()), codes_p(codes_b.size());
    cb->encode(x.data(), n, codes_b.data());
    cp->encode(y.data(), n, codes_p.data());
    EXPECT_EQ(codes_b, codes_p) << "avg " << avg;
    std::vector<float> xb(x.size()), yp(x.size());
    cb->decode(codes_b.data(), n, xb.data());
    cp->decode(codes_p.data(), n, yp.data());
    for (int r = 0; r < n; ++r)
      for (int j = 0; j < d; ++j)
        ASSERT_EQ(xb[static_cast<size_t>(r) * d + perm[j]], sgn[j] / scl[j] * yp[static_cast<size_t>(r) * d + j])
            << "avg " << avg << " row " << r << " basis channel " << j;
  }
}

// MSE per basis channel in a random orthonormal basis (see the file comment). Error of basis
// channel j: (U^T (x - x_hat))_j; expected sd_j^2 * D_sphere(b_j) as in prerope_keys_test.cc, plus
// the bf16 term, plus float rounding of x = mu + U(...) and x_hat = U y_hat (each a 64-term float
// sum / double sum rounded to float: <= 1e-6 relative per coordinate, 1e-5 * var_j covers it).
TEST(ChannelBasis, CodecMseInRandomBasisMatchesLloydMax) {
  const int d = 64, n = 20000;
  const std::vector<double> qd = random_orthonormal(d, 77);
  std::vector<float> u(qd.begin(), qd.end());
  auto basis = std::make_shared<const ChannelBasis>(orthonormal_basis(u, d));
  ASSERT_TRUE(validate_channel_basis(*basis).ok());
  PreRopeKeyStats st;
  std::vector<double> var(d);
  for (int j = 0; j < d; ++j) {
    const float sd = 0.05f + 4.0f * std::exp(-0.15f * j);
    st.mean.push_back(0.3f * static_cast<float>(j % 5) - 0.6f);
    st.sd.push_back(sd);
    var[j] = static_cast<double>(sd) * sd;
  }
  st.bits = *allocate_channel_bits(var, prerope_total_bits(2.5, d));
  auto c = PreRopeKeyCodec::from_stats(st, /*norm_correction=*/false, basis);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  std::mt19937_64 rng(9);
  std::normal_distribution<double> g;
  std::vector<float> x(static_cast<size_t>(n) * d), xh(x.size());
  std::vector<double> yb(d);
  for (int r = 0; r < n; ++r) {
    for (int j = 0; j < d; ++j) yb[j] = st.mean[j] + st.sd[j] * g(rng);
    for (int i = 0; i < d; ++i) {
      double s = 0;
      for (int j = 0; j < d; ++j) s += qd[i * d + j] * yb[j];
      x[static_cast<size_t>(r) * d + i] = static_cast<float>(s);
    }
  }
  std::vector<uint8_t> codes(static_cast<size_t>(n) * c->code_size());
  c->encode(x.data(), n, codes.data());
  c->decode(codes.data(), n, xh.data());
  std::vector<double> s1(d, 0.0), s2(d, 0.0);
  for (int r = 0; r < n; ++r)
    for (int j = 0; j < d; ++j) {
      double e = 0;
      for (int i = 0; i < d; ++i)
        e += qd[i * d + j] * (static_cast<double>(x[static_cast<size_t>(r) * d + i]) - xh[static_cast<size_t>(r) * d + i]);
      s1[j] += e * e;
      s2[j] += e * e * e * e;
    }
  for (int j = 0; j < d; ++j) {
    const double mse = s1[j] / n, se = std::sqrt((s2[j] / n - mse * mse) / n);
    const int b = st.bits[j];
    const double D = b == 0 ? 1.0 : greedy_mse({lloyd_max(Density::kGaussian, b)}, Density::kSphere, d);
    const double bf16 = var[j] * (2 * std::sqrt(D) * std::ldexp(1.0, -8) + std::ldexp(1.0, -16));
    EXPECT_NEAR(mse, var[j] * D, 5 * se + bf16 + 1e-5 * var[j]) << "basis channel " << j << " bits " << b;
  }
}

}  // namespace
}  // namespace tqkv
