#include "tqkv/quantizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "quant/rotated_quantizer.h"
#include "tqkv/metrics.h"
#include "core/random.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

std::unique_ptr<Quantizer> make(const char* name, int dim, QuantOptions o = {}) {
  auto spec = parse_format(name);
  EXPECT_TRUE(spec.ok()) << name;
  auto q = make_quantizer(*spec, dim, o);
  EXPECT_TRUE(q.ok()) << q.status().to_string();
  return std::move(q).value();
}

TEST(Format, NamesRoundTripAndSizes) {
  for (const char* n : {"f32", "f16", "q8_0", "q4_0", "rvq1x2", "rvq4x4", "tq2", "kivi2", "kivi4"})
    EXPECT_EQ(parse_format(n)->name(), n);
  for (const char* n : {"rvq0x2", "rvq5x1", "rvq1x5", "tq0", "tq5", "kivi3", "q5_0", "", "rvq1x", "tq2b"})
    EXPECT_FALSE(parse_format(n).ok()) << n;
  // bits per element include every byte (scale, norms, padding).
  EXPECT_DOUBLE_EQ(bits_per_element(*parse_format("rvq1x2"), 128), 2.25);
  EXPECT_DOUBLE_EQ(bits_per_element(*parse_format("rvq2x2"), 128), 4.25);
  EXPECT_DOUBLE_EQ(bits_per_element(*parse_format("tq2"), 128), 2.25);
  EXPECT_DOUBLE_EQ(bits_per_element(*parse_format("q8_0"), 128), 8.5);
  EXPECT_DOUBLE_EQ(bits_per_element(*parse_format("q4_0"), 128), 4.5);
  EXPECT_DOUBLE_EQ(bits_per_element(*parse_format("kivi2"), 128), 3.0);
  EXPECT_DOUBLE_EQ(bits_per_element(*parse_format("kivi4"), 128), 5.0);
  EXPECT_DOUBLE_EQ(bits_per_element(*parse_format("f16"), 128), 16.0);
  // Padding is counted: d = 80 pads q8_0 to 3 blocks, rvq planes to 10 bytes.
  EXPECT_EQ(code_size(*parse_format("q8_0"), 80), 3u * 34u);
  EXPECT_EQ(code_size(*parse_format("rvq1x2"), 80), 4u + 2u * 10u);
  EXPECT_EQ(code_size(*parse_format("rvq1x2"), 7), 4u + 2u * 1u);
  EXPECT_FALSE(validate_format(*parse_format("rvq1x2"), 0).ok());
}

TEST(FormatBytes, Q8_0Pinned) {
  auto q = make("q8_0", 32);
  std::vector<float> x(32, 0.0f);
  x[31] = 127.0f;   // amax 127 -> d = 1.0 (fp16 0x3c00)
  x[1] = -2.6f;     // -> -3 (nearest)
  x[2] = 2.5f;      // tie -> 2 (nearest even)
  std::vector<uint8_t> c(q->code_size());
  q->encode(x.data(), 1, c.data());
  std::vector<uint8_t> want(34, 0);
  want[0] = 0x00; want[1] = 0x3c;
  want[2 + 1] = 0xfd; want[2 + 2] = 0x02; want[2 + 31] = 0x7f;
  EXPECT_EQ(c, want);
}

TEST(FormatBytes, Q4_0Pinned) {
  auto q = make("q4_0", 32);
  std::vector<float> x(32, 0.0f);
  x[0] = -8.0f;  // signed max magnitude -> d = -8 / -8 = 1.0
  x[1] = 4.0f;   // floor(4 + 8.5) = 12
  x[17] = -3.0f; // floor(-3 + 8.5) = 5, high nibble of byte 1
  std::vector<uint8_t> c(q->code_size());
  q->encode(x.data(), 1, c.data());
  std::vector<uint8_t> want(18, 0x88);
  want[0] = 0x00; want[1] = 0x3c;
  want[2] = 0x80;  // q0 = 0, q16 = 8
  want[3] = 0x5c;  // q1 = 12, q17 = 5
  EXPECT_EQ(c, want);
}

TEST(FormatBytes, Kivi2Pinned) {
  auto q = make("kivi2", 32);
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i % 4);  // min 0, scale 1, q = i % 4
  std::vector<uint8_t> c(q->code_size());
  q->encode(x.data(), 1, c.data());
  const std::vector<uint8_t> want = {0x00, 0x3c, 0x00, 0x00, 0xaa, 0xaa, 0xaa, 0xaa, 0xcc, 0xcc, 0xcc, 0xcc};
  EXPECT_EQ(c, want);
}

TEST(FormatBytes, Rvq1x2Pinned) {
  // No rotation, d = 8, alternating signs: z = +-1 everywhere. Pass 1 codes 1,0,1,0,... (0x55);
  // the residual +-(1 - a) has the same sign as z when a < 1, so pass 2 is 0x55 as well.
  QuantOptions o;
  o.use_hadamard = false;
  auto q = make("rvq1x2", 8, o);
  auto* rq = dynamic_cast<RotatedQuantizer*>(q.get());
  ASSERT_NE(rq, nullptr);
  const float a = rq->codebooks()->passes[0].levels[1], c2 = rq->codebooks()->passes[1].levels[1];
  ASSERT_LT(a, 1.0f);
  std::vector<float> x = {3, -3, 3, -3, 3, -3, 3, -3};
  std::vector<uint8_t> c(q->code_size());
  ASSERT_EQ(c.size(), 6u);
  q->encode(x.data(), 1, c.data());
  EXPECT_EQ(c[4], 0x55);
  EXPECT_EQ(c[5], 0x55);
  float scale;
  std::memcpy(&scale, c.data(), 4);
  // ||x|| = 3 sqrt(8), z_hat = +-(a + c2): scale = ||x|| / ||z_hat|| = 3 / (a + c2).
  EXPECT_NEAR(scale, 3.0 / (double(a) + c2), 1e-6);
  std::vector<float> y(8);
  q->decode(c.data(), 1, y.data());
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i], x[i], 1e-5);  // norm-corrected: exact here
}

struct QualityCase {
  const char* format;
  double max_rel_mse;  // bound on mean ||x - x_hat||^2 / ||x||^2 for N(0, I) data at d = 128
};

class FormatQuality : public ::testing::TestWithParam<QualityCase> {};

TEST_P(FormatQuality, GaussianRoundTrip) {
  const int d = 128, n = 2000;
  std::vector<float> x(n * d), y(n * d);
  generate_gaussian(x.data(), n, d, 3);
  auto q = make(GetParam().format, d);
  std::vector<uint8_t> c(n * q->code_size());
  q->encode(x.data(), n, c.data());
  q->decode(c.data(), n, y.data());
  QualityStats st = measure_quality(x.data(), y.data(), n, d);
  EXPECT_LT(st.mse, GetParam().max_rel_mse) << GetParam().format;
  EXPECT_GT(st.mse, GetParam().max_rel_mse / 20) << "suspiciously exact for a lossy format";
}

// Rotated formats decode with the norm-correcting scale: the reconstruction has the input's
// norm and cosine c = sqrt(1 - D) for a codebook of design MSE D, so the relative MSE is
// 2 (1 - sqrt(1 - D)); bound = that + 5%. Others: known step sizes.
constexpr double nc(double D) { return 2 * (1 - std::sqrt(1 - D)) * 1.05; }
INSTANTIATE_TEST_SUITE_P(Formats, FormatQuality,
                         ::testing::Values(QualityCase{"rvq1x2", nc(0.1175)},
                                           QualityCase{"rvq2x2", nc(0.0114)},
                                           QualityCase{"rvq1x3", nc(0.0369)},
                                           QualityCase{"tq1", nc(0.3634)},
                                           QualityCase{"tq2", nc(0.1175)},
                                           QualityCase{"tq4", nc(0.0095)},
                                           QualityCase{"q8_0", 2e-4},
                                           QualityCase{"q4_0", 0.02},
                                           QualityCase{"kivi4", 0.02},
                                           QualityCase{"kivi2", 0.3}));

TEST(RotatedQuantizer, MeasuredMseMatchesDesignWithoutNormCorrection) {
  const int d = 256, n = 4000;
  std::vector<float> x(n * d), y(n * d);
  generate_gaussian(x.data(), n, d, 11);
  for (const char* f : {"rvq1x2", "rvq2x2", "tq2", "tq3"}) {
    QuantOptions o;
    o.norm_correction = false;
    auto q = make(f, d, o);
    std::vector<uint8_t> c(n * q->code_size());
    q->encode(x.data(), n, c.data());
    q->decode(c.data(), n, y.data());
    const double design = dynamic_cast<RotatedQuantizer*>(q.get())->design_mse();
    // Rotated coordinates of a finite-d unit vector have slightly lighter tails than N(0,1);
    // measured MSE is within a few percent of the Gaussian design value.
    EXPECT_NEAR(measure_quality(x.data(), y.data(), n, d).mse / design, 1.0, 0.05) << f;
  }
}

TEST(RotatedQuantizer, NormCorrectionPreservesNorm) {
  const int d = 96, n = 200;
  std::vector<float> x(n * d), y(n * d);
  generate_llm_like(x.data(), n, d, 5);
  auto q = make("rvq1x2", d);
  std::vector<uint8_t> c(n * q->code_size());
  q->encode(x.data(), n, c.data());
  q->decode(c.data(), n, y.data());
  for (int v = 0; v < n; ++v) {
    double a = 0, b = 0;
    for (int i = 0; i < d; ++i) { a += double(x[v * d + i]) * x[v * d + i]; b += double(y[v * d + i]) * y[v * d + i]; }
    EXPECT_NEAR(std::sqrt(b / a), 1.0, 2e-6);
  }
}

TEST(RotatedQuantizer, HadamardHelpsOnOutliers) {
  const int d = 128, n = 2000;
  std::vector<float> x(n * d), y(n * d);
  generate_llm_like(x.data(), n, d, 9);
  double mse[2];
  for (int h = 0; h < 2; ++h) {
    QuantOptions o;
    o.use_hadamard = h == 1;
    auto q = make("rvq1x2", d, o);
    std::vector<uint8_t> c(n * q->code_size());
    q->encode(x.data(), n, c.data());
    q->decode(c.data(), n, y.data());
    mse[h] = measure_quality(x.data(), y.data(), n, d).mse;
  }
  EXPECT_LT(mse[1] * 3, mse[0]) << "rotation should cut the error on outlier channels";
}

class HostileInputs : public ::testing::TestWithParam<const char*> {};

TEST_P(HostileInputs, DocumentedResults) {
  const int d = 80;
  auto q = make(GetParam(), d);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // rows: zero, NaN at 5, +Inf at 70, huge (1e30), tiny (1e-40 denormals), ordinary
  std::vector<float> x(6 * d);
  SplitMix64 rng(1);
  for (int r = 1; r < 6; ++r)
    for (int i = 0; i < d; ++i) x[r * d + i] = static_cast<float>(rng.normal());
  x[1 * d + 5] = nan;
  x[2 * d + 70] = inf;
  for (int i = 0; i < d; ++i) { x[3 * d + i] *= 1e30f; x[4 * d + i] *= 1e-40f; }
  std::vector<uint8_t> c(6 * q->code_size());
  std::vector<float> y(6 * d);
  q->encode(x.data(), 6, c.data());
  q->decode(c.data(), 6, y.data());
  const FormatSpec spec = q->format();
  const bool blockwise = spec.kind == FormatKind::kQ8_0 || spec.kind == FormatKind::kQ4_0 || spec.kind == FormatKind::kKivi;
  for (int i = 0; i < d; ++i) EXPECT_EQ(y[i], 0.0f) << "zero vector decodes to zeros";
  for (int i = 0; i < d; ++i) {
    if (spec.kind == FormatKind::kF32 || spec.kind == FormatKind::kF16) break;
    const bool affected1 = blockwise ? i / 32 == 0 : true;   // NaN at 5: block 0
    const bool affected2 = blockwise ? i / 32 == 2 : true;   // Inf at 70: block 2
    EXPECT_EQ(std::isnan(y[1 * d + i]), affected1) << "row NaN, i=" << i;
    EXPECT_EQ(std::isnan(y[2 * d + i]), affected2) << "row Inf, i=" << i;
  }
  if (spec.rotated()) {
    // Huge and tiny norms are stored exactly (f32 scale): same relative error as ordinary data.
    EXPECT_LT(relative_squared_error(&x[3 * d], &y[3 * d], d), 0.5);
    EXPECT_LT(relative_squared_error(&x[4 * d], &y[4 * d], d), 0.5);
  }
  for (int i = 0; i < d; ++i) {
    EXPECT_FALSE(std::isnan(y[3 * d + i])) << "huge finite input never decodes to NaN";
    EXPECT_FALSE(std::isnan(y[5 * d + i]));
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, HostileInputs,
                         ::testing::Values("f32", "f16", "q8_0", "q4_0", "kivi2", "kivi4", "tq2", "tq4",
                                           "rvq1x2", "rvq2x2", "rvq3x3"));

TEST(QuantizerTensor, StridedEqualsContiguous) {
  const int B = 2, H = 3, S = 5, D = 64;
  // Padded layout: head stride leaves a gap, seq stride D + 16.
  const int64_t ss = D + 16, hs = S * ss + 7, bs = H * hs + 3;
  std::vector<float> big(B * bs), dense(B * H * S * D);
  generate_gaussian(big.data(), 1, static_cast<int>(big.size()), 2);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int s = 0; s < S; ++s)
        std::memcpy(&dense[((b * H + h) * S + s) * D], &big[b * bs + h * hs + s * ss], D * 4);
  auto q = make("rvq1x2", D);
  TensorView4 v{big.data(), {B, H, S, D}, {bs, hs, ss, 1}};
  std::vector<uint8_t> c1(B * H * S * q->code_size()), c2(c1.size());
  ASSERT_TRUE(q->encode_tensor(v, c1.data()).ok());
  q->encode(dense.data(), B * H * S, c2.data());
  EXPECT_EQ(c1, c2);
  std::vector<float> out(B * bs, -1.0f), ref(dense.size());
  MutableTensorView4 mv{out.data(), {B, H, S, D}, {bs, hs, ss, 1}};
  ASSERT_TRUE(q->decode_tensor(c1.data(), mv).ok());
  q->decode(c2.data(), B * H * S, ref.data());
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int s = 0; s < S; ++s)
        for (int i = 0; i < D; ++i)
          EXPECT_EQ(out[b * bs + h * hs + s * ss + i], ref[((b * H + h) * S + s) * D + i]);
  TensorView4 wrong{big.data(), {B, H, S, D + 1}, {bs, hs, ss, 1}};
  EXPECT_FALSE(q->encode_tensor(wrong, c1.data()).ok());
}

}  // namespace
}  // namespace tqkv
