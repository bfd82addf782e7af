// Pre-RoPE key codec (pk{b}): bit allocation against hand-computed cases, exact bytes, the code's
// MSE on synthetic anisotropic Gaussian keys against the Lloyd-Max table, statistics validation.
#include "tqkv/prerope_keys.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "tqkv/codebook.h"
#include "tqkv/format.h"
#include "tqkv/quantizer.h"

namespace tqkv {
namespace {

TEST(PreRopeKeys, FormatNamesAndSizes) {
  auto f = parse_format("pk2.5");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->kind, FormatKind::kPk);
  EXPECT_EQ(f->name(), "pk2.5");
  EXPECT_TRUE(f->pre_rope());
  EXPECT_FALSE(f->rotated());
  EXPECT_EQ(code_size(*f, 128), 2u + 40u);
  EXPECT_EQ(parse_format("pk2")->name(), "pk2");
  EXPECT_EQ(parse_format("pk3.125")->name(), "pk3.125");
  EXPECT_EQ(code_size(*parse_format("pk2"), 128), 34u);
  EXPECT_EQ(code_size(*parse_format("pk2"), 64), 18u);
  EXPECT_EQ(code_size(*parse_format("pk2.5"), 7), 2u + 3u);  // round(17.5) = 18 bits
  EXPECT_DOUBLE_EQ(bits_per_element(*parse_format("pk2"), 128), 2.125);
  for (const char* bad : {"pk", "pk0", "pk-1", "pk8.5", "pkx", "pk2x", "pk.5", "pknan", "pkinf"})
    EXPECT_FALSE(parse_format(bad).ok()) << bad;
  EXPECT_TRUE(validate_format(*parse_format("pk0.01"), 128).ok());  // 1 bit per vector
  EXPECT_FALSE(validate_format(*parse_format("pk0.01"), 8).ok());   // 0 bits
  auto q = make_quantizer(*f, 128);
  EXPECT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), StatusCode::kUnsupported);
  EXPECT_FALSE(parse_format("tq2")->pre_rope());
}

TEST(PreRopeKeys, DistortionTable) {
  EXPECT_EQ(gaussian_lloyd_max_distortion(0), 1.0);
  EXPECT_NEAR(gaussian_lloyd_max_distortion(1), 1 - 2 / M_PI, 1e-7);  // closed form
  EXPECT_NEAR(gaussian_lloyd_max_distortion(2), 0.1175, 1e-4);        // Max (1960)
  for (int b = 1; b <= 8; ++b) EXPECT_LT(gaussian_lloyd_max_distortion(b), gaussian_lloyd_max_distortion(b - 1));
}

// Hand computation with Max's table D = 1, 0.3634, 0.1175, 0.03454 (0..3 bits):
// variances {4, 1}. Step 1: gains 4 * 0.6366 = 2.546 vs 0.6366 -> channel 0.
// Step 2: 4 * (0.3634 - 0.1175) = 0.984 vs 0.6366 -> channel 0.
// Step 3: 4 * (0.1175 - 0.03454) = 0.332 vs 0.6366 -> channel 1.
// Step 4: 0.332 vs 1 * (0.3634 - 0.1175) = 0.246 -> channel 0.
TEST(PreRopeKeys, AllocationHandCases) {
  auto a = [](std::vector<double> v, int total) { return *allocate_channel_bits(v, total); };
  EXPECT_EQ(a({4, 1}, 1), (std::vector<uint8_t>{1, 0}));
  EXPECT_EQ(a({4, 1}, 2), (std::vector<uint8_t>{2, 0}));
  EXPECT_EQ(a({4, 1}, 3), (std::vector<uint8_t>{2, 1}));
  EXPECT_EQ(a({4, 1}, 4), (std::vector<uint8_t>{3, 1}));
  // Equal variances: ties go to the lowest index, so 4 bits over 3 channels is {2, 1, 1}.
  EXPECT_EQ(a({1, 1, 1}, 4), (std::vector<uint8_t>{2, 1, 1}));
  // A zero-variance channel gets a bit only when every other channel is full (8 bits).
  EXPECT_EQ(a({0, 1}, 8), (std::vector<uint8_t>{0, 8}));
  EXPECT_EQ(a({0, 1}, 9), (std::vector<uint8_t>{1, 8}));
  EXPECT_EQ(a({0, 1}, 16), (std::vector<uint8_t>{8, 8}));
  // Variance ratio 16 (sd ratio 4): 1 bit of the large channel is worth 16 * 0.6366 = 10.2, its
  // 2nd 3.93, 3rd 1.33, 4th 0.41; the small channel's 1st is 0.6366, so bits 1..3 go to channel 0
  // and the 4th to channel 1 (0.6366 > 0.41).
  EXPECT_EQ(a({16, 1}, 3), (std::vector<uint8_t>{3, 0}));
  EXPECT_EQ(a({16, 1}, 4), (std::vector<uint8_t>{3, 1}));
  EXPECT_FALSE(allocate_channel_bits({1, 1}, 17).ok());
  EXPECT_FALSE(allocate_channel_bits({1, 1}, -1).ok());
  EXPECT_FALSE(allocate_channel_bits({1, NAN}, 2).ok());
  EXPECT_FALSE(allocate_channel_bits({}, 0).ok());
}

TEST(PreRopeKeys, FractionalBudget) {
  EXPECT_EQ(prerope_total_bits(2.5, 128), 320);
  EXPECT_EQ(prerope_total_bits(2.125, 64), 136);
  std::vector<float> x(64 * 8);
  std::mt19937 rng(1);
  std::normal_distribution<float> g;
  for (float& v : x) v = g(rng);
  auto c = PreRopeKeyCodec::fit(x.data(), 64, 8, 0, 2.5);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->total_bits(), 20);
  EXPECT_EQ(c->code_size(), 2u + 3u);
  EXPECT_FALSE(PreRopeKeyCodec::fit(x.data(), 64, 8, 0, 0.01).ok());  // rounds to 0 bits
  EXPECT_FALSE(PreRopeKeyCodec::fit(x.data(), 64, 8, 0, 8.2).ok());
  EXPECT_FALSE(PreRopeKeyCodec::fit(x.data(), 0, 8, 0, 2).ok());
}

TEST(PreRopeKeys, Bf16Scale) {
  EXPECT_EQ(float_to_bf16_saturate(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16_saturate(-2.0f), 0xc000);
  EXPECT_EQ(float_to_bf16_saturate(0.0f), 0x0000);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(float_to_bf16_saturate(1.0f + 1.0f / 256), 0x3f80);
  EXPECT_EQ(float_to_bf16_saturate(1.0f + 3.0f / 256), 0x3f82);
  EXPECT_EQ(float_to_bf16_saturate(INFINITY), 0x7f7f);
  EXPECT_EQ(float_to_bf16_saturate(3.4e38f), 0x7f7f);  // would round to Inf: saturates
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16_saturate(NAN))));
  EXPECT_EQ(bf16_to_float(0x4034), 2.8125f);
  EXPECT_EQ(bf16_to_float(0x7f7f), 0x1.fep127f);
}

// Hand-built bytes. d = 4, mean {1, 0, 0, 0}, sd 1, bits {2, 1, 0, 1} (4 bits: 1 code byte).
// x = mean + z, z = {1.5, -0.5, 3, 0.5}: ||z||^2 = 11.75, RMS 1.71391, u = z / RMS =
// {0.875, -0.292, 1.750, 0.292}. 2-bit thresholds {-0.9816, 0, 0.9816}: u0 -> code 2 (level
// 0.4528); 1-bit threshold 0: u1 -> 0 (-0.7979), u3 -> 1 (+0.7979). Stream bits: ch0 at 0..1 =
// 0b10, ch1 at bit 2 = 0, ch3 at bit 3 = 1: byte 0b1010 = 0x0a. Norm-corrected scale
// sqrt(11.75 / (0.4528^2 + 2 * 0.7979^2)) = 2.8193 = 1.4097 * 2^1: bf16 0x4034 (2.8125).
TEST(PreRopeKeys, ExactBytes) {
  PreRopeKeyStats st{{1, 0, 0, 0}, {1, 1, 1, 1}, {2, 1, 0, 1}};
  auto c = PreRopeKeyCodec::from_stats(st);
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->code_size(), 3u);
  const float x[4] = {2.5f, -0.5f, 3.0f, 0.5f};
  uint8_t code[3];
  c->encode(x, 1, code);
  EXPECT_EQ(code[0], 0x34);
  EXPECT_EQ(code[1], 0x40);
  EXPECT_EQ(code[2], 0x0a);
  float y[4];
  c->decode(code, 1, y);
  const auto& l2 = lloyd_max(Density::kGaussian, 2).levels;
  const auto& l1 = lloyd_max(Density::kGaussian, 1).levels;
  EXPECT_EQ(y[0], 1.0f + 2.8125f * l2[2]);
  EXPECT_EQ(y[1], 0.0f + 2.8125f * l1[0]);
  EXPECT_EQ(y[2], 0.0f);  // 0-bit channel: the mean
  EXPECT_EQ(y[3], 0.0f + 2.8125f * l1[1]);
  // Without norm correction the scale is the RMS of z: 1.71391 -> bf16 0x3fdb (1.7109).
  auto c2 = PreRopeKeyCodec::from_stats(st, false);
  c2->encode(x, 1, code);
  EXPECT_EQ(code[0], 0xdb);
  EXPECT_EQ(code[1], 0x3f);
  EXPECT_EQ(code[2], 0x0a);
}

TEST(PreRopeKeys, SpecialVectors) {
  PreRopeKeyStats st{{1, 2, 3}, {1, 0.5f, 2}, {2, 2, 1}};
  auto c = PreRopeKeyCodec::from_stats(st);
  ASSERT_TRUE(c.ok());
  std::vector<uint8_t> code(c->code_size());
  float y[3];
  const float mean[3] = {1, 2, 3};
  c->encode(mean, 1, code.data());
  c->decode(code.data(), 1, y);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(y[i], mean[i]);
  const float bad[3] = {1, NAN, 3};
  c->encode(bad, 1, code.data());
  c->decode(code.data(), 1, y);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(std::isnan(y[i]));
  const float inf[3] = {INFINITY, 0, 0};
  c->encode(inf, 1, code.data());
  c->decode(code.data(), 1, y);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(std::isnan(y[i]));
}

TEST(PreRopeKeys, StatsBlockRoundTripAndValidation) {
  const int d = 6;
  std::vector<float> x(50 * d);
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  for (size_t i = 0; i < x.size(); ++i) x[i] = g(rng) * (1 + i % d) + 0.5f * (i % d);
  auto c = PreRopeKeyCodec::fit(x.data(), 50, d, 0, 3.0);
  ASSERT_TRUE(c.ok());
  std::vector<uint8_t> blk(PreRopeKeyCodec::stats_bytes(d));
  ASSERT_EQ(blk.size(), 54u);
  c->write_stats(blk.data());
  auto st = PreRopeKeyCodec::read_stats(blk.data(), blk.size(), d);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->mean, c->stats().mean);
  EXPECT_EQ(st->sd, c->stats().sd);
  EXPECT_EQ(st->bits, c->stats().bits);
  EXPECT_FALSE(PreRopeKeyCodec::read_stats(blk.data(), blk.size() - 1, d).ok());
  auto corrupt_at = [&](size_t off, const void* v, size_t n) {
    std::vector<uint8_t> b = blk;
    std::memcpy(&b[off], v, n);
    return PreRopeKeyCodec::read_stats(b.data(), b.size(), d).ok();
  };
  const float nan = NAN, zero = 0, neg = -1;
  const uint8_t nine = 9;
  EXPECT_FALSE(corrupt_at(0, &nan, 4));           // mean
  EXPECT_FALSE(corrupt_at(4 * d, &zero, 4));      // sd must be > 0
  EXPECT_FALSE(corrupt_at(4 * d + 4, &neg, 4));
  EXPECT_FALSE(corrupt_at(4 * d + 8, &nan, 4));
  EXPECT_FALSE(corrupt_at(8 * d + 1, &nine, 1));  // bits <= 8
  std::vector<uint8_t> nobits = blk;
  std::memset(&nobits[8 * d], 0, d);
  EXPECT_FALSE(PreRopeKeyCodec::read_stats(nobits.data(), nobits.size(), d).ok());
}

TEST(PreRopeKeys, FitEstimatesAndSkipsNonFiniteRows) {
  const int d = 4;
  std::vector<float> x = {1, 2, 3, 4,  3, 2, 1, 4,  NAN, 0, 0, 0,  2, 2, 2, 4};
  auto c = PreRopeKeyCodec::fit(x.data(), 4, d, 0, 2.0);
  ASSERT_TRUE(c.ok());
  // Finite rows {1,2,3,4}, {3,2,1,4}, {2,2,2,4}: mean {2,2,2,4}, population sd {sqrt(2/3), 0, sqrt(2/3), 0};
  // zero sd is floored at 1e-6 of the largest.
  EXPECT_FLOAT_EQ(c->stats().mean[0], 2);
  EXPECT_FLOAT_EQ(c->stats().mean[3], 4);
  EXPECT_FLOAT_EQ(c->stats().sd[0], std::sqrt(2.0f / 3));
  EXPECT_FLOAT_EQ(c->stats().sd[1], 1e-6f * std::sqrt(2.0f / 3));
  // 8 bits over variances {2/3, ~0, 2/3, ~0}: channels 0 and 2 alternate (ties to the lower index).
  EXPECT_EQ(c->stats().bits, (std::vector<uint8_t>{4, 0, 4, 0}));
  // Constant data: sd 1 everywhere.
  std::vector<float> k(3 * d, 5.0f);
  auto k1 = PreRopeKeyCodec::fit(k.data(), 3, d, 0, 1.0);
  ASSERT_TRUE(k1.ok());
  for (int i = 0; i < d; ++i) EXPECT_EQ(k1->stats().sd[i], 1.0f);
}

TEST(PreRopeKeys, BitsPerElementCountsScaleAndStats) {
  const int d = 128;
  std::vector<float> x(4 * d, 0.0f);
  for (int i = 0; i < 4 * d; ++i) x[i] = static_cast<float>((i * 37) % 11) - 5;
  auto c = PreRopeKeyCodec::fit(x.data(), 4, d, 0, 2.0);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->code_size(), 34u);  // 2 (bf16 scale) + 256 bits
  // 1024 tokens: 8 * (1024 * 34 + 9 * 128) / (1024 * 128) = 2.125 + 0.0703125
  EXPECT_DOUBLE_EQ(c->bits_per_element(1024), 2.125 + 9.0 * 8 / 1024);
}

// The code's MSE on anisotropic Gaussian keys x = mu + sd * g (g ~ N(0, I_d)), coded with the TRUE
// statistics and no norm correction. Derivation: z = g, u = z / (||z|| / sqrt(d)) = sqrt(d) z / ||z||
// is sqrt(d) times a uniform unit vector, independent of ||z||, and the error of channel i is
// sd_i * (||z|| / sqrt(d)) * (u_i - c_{b_i}(u_i)). Hence
//   E[(x_i - y_i)^2] = sd_i^2 * E[||z||^2 / d] * E[(u_i - c(u_i))^2] = sd_i^2 * greedy_mse(LM_{b_i}, sphere, d),
// the Lloyd-Max codebook's exact MSE on the sphere marginal (1 for b_i = 0). The bf16 scale adds an
// error of at most 2^-8 |s c_i| per coordinate: |dMSE_i| <= sd_i^2 (2 sqrt(D_i) 2^-8 + 2^-16)
// (Cauchy-Schwarz with E[s^2 c_i^2] <= E[z_i^2] = 1). Tolerance: that plus 5 standard errors.
TEST(PreRopeKeys, MseMatchesLloydMaxTablePerChannel) {
  const int d = 64, n = 40000;
  PreRopeKeyStats st;
  std::vector<double> var(d);
  for (int i = 0; i < d; ++i) {
    const float sd = 0.05f + 4.0f * std::exp(-0.15f * i);  // a few dominant channels, a long tail
    st.mean.push_back(0.3f * static_cast<float>(i % 5) - 0.6f);
    st.sd.push_back(sd);
    var[i] = static_cast<double>(sd) * sd;
  }
  for (double avg : {2.0, 3.0}) {
    st.bits = *allocate_channel_bits(var, prerope_total_bits(avg, d));
    auto c = PreRopeKeyCodec::from_stats(st, /*norm_correction=*/false);
    ASSERT_TRUE(c.ok());
    std::mt19937_64 rng(42);
    std::normal_distribution<double> g;
    std::vector<float> x(static_cast<size_t>(n) * d), y(x.size());
    for (int r = 0; r < n; ++r)
      for (int i = 0; i < d; ++i) x[static_cast<size_t>(r) * d + i] = st.mean[i] + st.sd[i] * static_cast<float>(g(rng));
    std::vector<uint8_t> codes(static_cast<size_t>(n) * c->code_size());
    c->encode(x.data(), n, codes.data());
    c->decode(codes.data(), n, y.data());
    int zero_bit_channels = 0;
    for (int i = 0; i < d; ++i) {
      double s1 = 0, s2 = 0;
      for (int r = 0; r < n; ++r) {
        const double e = static_cast<double>(x[static_cast<size_t>(r) * d + i]) - y[static_cast<size_t>(r) * d + i];
        s1 += e * e;
        s2 += e * e * e * e;
      }
      const double mse = s1 / n, se = std::sqrt((s2 / n - mse * mse) / n);
      const int b = st.bits[i];
      const double D = b == 0 ? 1.0 : greedy_mse({lloyd_max(Density::kGaussian, b)}, Density::kSphere, d);
      const double expect = var[i] * D;
      const double bf16 = var[i] * (2 * std::sqrt(D) * std::ldexp(1.0, -8) + std::ldexp(1.0, -16));
      EXPECT_NEAR(mse, expect, 5 * se + bf16) << "avg bits " << avg << " channel " << i << " bits " << b;
      zero_bit_channels += b == 0;
    }
    if (avg == 2.0) {
      EXPECT_GT(zero_bit_channels, 0) << "the 2-bit case should cover 0-bit channels";
    }
  }
}

// Norm correction: the decoded whitened vector keeps the input's whitened norm, up to the bf16
// rounding of the scale (2^-8 relative) and float rounding of y = mean + (s sd) c.
TEST(PreRopeKeys, NormCorrectionPreservesWhitenedNorm) {
  const int d = 64, n = 2000;
  std::vector<float> x(static_cast<size_t>(n) * d), y(x.size());
  std::mt19937_64 rng(7);
  std::normal_distribution<float> g;
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < d; ++i) x[static_cast<size_t>(r) * d + i] = 1.0f + (0.1f + 3.0f * std::exp(-0.2f * i)) * g(rng);
  auto c = PreRopeKeyCodec::fit(x.data(), 512, d, 0, 2.0);
  ASSERT_TRUE(c.ok());
  std::vector<uint8_t> codes(static_cast<size_t>(n) * c->code_size());
  c->encode(x.data(), n, codes.data());
  c->decode(codes.data(), n, y.data());
  const auto& st = c->stats();
  for (int r = 0; r < n; ++r) {
    double zx = 0, zy = 0;
    for (int i = 0; i < d; ++i) {
      const double a = (x[static_cast<size_t>(r) * d + i] - st.mean[i]) / static_cast<double>(st.sd[i]);
      const double b = (y[static_cast<size_t>(r) * d + i] - st.mean[i]) / static_cast<double>(st.sd[i]);
      zx += a * a;
      zy += b * b;
    }
    // bf16 rounding (2^-8) plus float rounding of y = mean + (s sd) c (a few ulps of |y|, |y| <= ~15).
    EXPECT_NEAR(std::sqrt(zy) / std::sqrt(zx), 1.0, std::ldexp(1.0, -8) + 1e-5) << "row " << r;
  }
}

}  // namespace
}  // namespace tqkv
