// Every SIMD level must produce codes byte-identical to the scalar reference, and decode the
// same codes to bit-identical floats (NaN compared as "both NaN"), for every format and for
// awkward dimensions (7, 8, 33, 80, 96, 576, ...), on hostile inputs: outliers, zeros, signed
// zeros, huge and tiny norms, subnormals, NaN/Inf, rounding ties, strided rows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "core/random.h"
#include "tqkv/quantizer.h"
#include "tqkv/simd.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

// Restores the SIMD level active before the test.
struct LevelGuard {
  SimdLevel saved = active_simd_level();
  ~LevelGuard() { set_simd_level(saved); }
};

// (n, dim) test rows, n returned in *n.
std::vector<float> test_rows(int dim, size_t* n) {
  std::vector<float> x;
  auto row = [&]() -> float* {
    x.resize(x.size() + dim);
    return x.data() + x.size() - dim;
  };
  auto gaussian_rows = [&](size_t k, uint64_t seed, float mul) {
    std::vector<float> g(k * dim);
    generate_gaussian(g.data(), k, dim, seed);
    for (float& v : g) v *= mul;
    x.insert(x.end(), g.begin(), g.end());
  };
  gaussian_rows(40, 11 + dim, 1.0f);
  {
    std::vector<float> l(24 * static_cast<size_t>(dim));
    generate_llm_like(l.data(), 24, dim, 29 + dim);
    x.insert(x.end(), l.begin(), l.end());
  }
  gaussian_rows(2, 31, 1e30f);   // huge norm
  gaussian_rows(2, 37, 1e-30f);  // tiny norm
  gaussian_rows(2, 41, 1e-41f);  // subnormal elements
  gaussian_rows(2, 43, 1e38f);   // near FLT_MAX: fp16 overflow, saturated scales
  {
    float* r = row();  // zeros
    for (int i = 0; i < dim; ++i) r[i] = 0.0f;
    r = row();  // negative zeros
    for (int i = 0; i < dim; ++i) r[i] = -0.0f;
    r = row();  // mixed signed zeros and positives: the sign of a zero minimum
    for (int i = 0; i < dim; ++i) r[i] = i % 3 == 0 ? 0.0f : i % 3 == 1 ? -0.0f : 1.0f + i;
    r = row();  // mixed signed zeros and negatives: the sign of a zero maximum
    for (int i = 0; i < dim; ++i) r[i] = i % 3 == 0 ? -0.0f : i % 3 == 1 ? 0.0f : -1.0f - i;
    r = row();  // constant
    for (int i = 0; i < dim; ++i) r[i] = 0.7f;
    r = row();  // one-hot
    for (int i = 0; i < dim; ++i) r[i] = i == dim / 3 ? 5.0f : 0.0f;
    r = row();  // equal magnitudes, opposite signs: q4_0 keeps the first
    for (int i = 0; i < dim; ++i) r[i] = i % 2 ? -3.0f : 3.0f;
    r = row();
    for (int i = 0; i < dim; ++i) r[i] = i % 2 ? 3.0f : -3.0f;
    r = row();  // q8_0 with d = 1: halves are rounding ties (nearest even)
    for (int i = 0; i < dim; ++i)
      r[i] = i % 32 == 0 ? 127.0f : static_cast<float>((i * 37) % 253 - 126) + (i % 2 ? 0.5f : 0.0f);
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  gaussian_rows(4, 47, 1.0f);
  float* tail = x.data() + x.size() - 4 * static_cast<size_t>(dim);
  tail[dim / 2] = nan;
  tail[dim + 0] = inf;
  tail[2 * dim + dim - 1] = -inf;
  tail[3 * dim + dim / 2] = -nan;
  *n = x.size() / dim;
  return x;
}

bool same_float(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  return ua == ub;
}

struct Case {
  const char* format;
  QuantOptions options;
  const char* variant;
};

QuantOptions opts(bool hadamard = true, ResidualCodebook rc = ResidualCodebook::kJoint,
                  bool norm_correction = true) {
  QuantOptions o;
  o.use_hadamard = hadamard;
  o.residual_codebook = rc;
  o.norm_correction = norm_correction;
  return o;
}

const Case kCases[] = {
    {"f16", opts(), ""},
    {"q8_0", opts(), ""},
    {"q4_0", opts(), ""},
    {"kivi2", opts(), ""},
    {"kivi4", opts(), ""},
    {"tq1", opts(), ""},
    {"tq2", opts(), ""},
    {"tq3", opts(), ""},
    {"tq4", opts(), ""},
    {"rvq1x1", opts(), ""},
    {"rvq1x2", opts(), ""},
    {"rvq1x3", opts(), ""},
    {"rvq1x4", opts(), ""},
    {"rvq2x1", opts(), ""},
    {"rvq2x2", opts(), ""},
    {"rvq2x3", opts(), ""},
    {"rvq3x2", opts(), ""},
    {"rvq3x3", opts(true, ResidualCodebook::kLaplacian), "laplacian"},
    {"rvq4x1", opts(), ""},
    {"rvq4x2", opts(), ""},
    // 4x4 with the analytic Laplacian residuals: the joint 4x4 design takes minutes to build.
    {"rvq4x4", opts(true, ResidualCodebook::kLaplacian), "laplacian"},
    {"rvq1x2", opts(false), "no_hadamard"},
    {"rvq2x2", opts(true, ResidualCodebook::kLaplacian), "laplacian"},
    {"tq2", opts(true, ResidualCodebook::kJoint, false), "no_norm_correction"},
};

const int kDims[] = {7, 8, 16, 33, 64, 80, 96, 128, 256, 576, 1024};

class SimdConsistency : public ::testing::TestWithParam<std::tuple<SimdLevel, int>> {};

TEST_P(SimdConsistency, CodesAndDecodeMatchScalar) {
  const SimdLevel level = std::get<0>(GetParam());
  const Case& c = kCases[std::get<1>(GetParam())];
  if (static_cast<int>(detected_simd_level()) < static_cast<int>(level))
    GTEST_SKIP() << "this CPU lacks " << simd_level_name(level) << " (detected "
                 << simd_level_name(detected_simd_level()) << ")";
  LevelGuard guard;
  for (int dim : kDims) {
    SCOPED_TRACE(std::string(c.format) + " " + c.variant + " dim=" + std::to_string(dim));
    auto spec = parse_format(c.format);
    ASSERT_TRUE(spec.ok());
    auto qr = make_quantizer(*spec, dim, c.options);
    ASSERT_TRUE(qr.ok()) << qr.status().to_string();
    const Quantizer& q = **qr;
    size_t n = 0;
    const std::vector<float> x = test_rows(dim, &n);
    const size_t cs = q.code_size();

    ASSERT_EQ(set_simd_level(SimdLevel::kScalar), SimdLevel::kScalar);
    std::vector<uint8_t> ref(n * cs);
    q.encode(x.data(), n, ref.data());
    std::vector<float> ref_y(n * dim);
    q.decode(ref.data(), n, ref_y.data());

    ASSERT_EQ(set_simd_level(level), level);
    std::vector<uint8_t> got(n * cs, 0xAB);
    q.encode(x.data(), n, got.data());
    for (size_t v = 0; v < n; ++v) {
      const int cmp = std::memcmp(ref.data() + v * cs, got.data() + v * cs, cs);
      if (cmp != 0) {
        size_t b = 0;
        while (ref[v * cs + b] == got[v * cs + b]) ++b;
        ADD_FAILURE() << "codes differ: vector " << v << " byte " << b << " scalar 0x" << std::hex
                      << int(ref[v * cs + b]) << " simd 0x" << int(got[v * cs + b]);
        break;
      }
    }
    // Strided rows (x_stride > dim) give the same codes.
    const size_t stride = dim + 5;
    std::vector<float> xs(n * stride, 123.0f);
    for (size_t v = 0; v < n; ++v) std::memcpy(&xs[v * stride], &x[v * dim], sizeof(float) * dim);
    std::vector<uint8_t> got_s(n * cs);
    q.encode(xs.data(), n, got_s.data(), stride);
    EXPECT_TRUE(got_s == ref) << "strided encode differs";

    // Decode of the reference codes, contiguous and strided (the gap must stay untouched).
    std::vector<float> y(n * dim);
    q.decode(ref.data(), n, y.data());
    for (size_t i = 0; i < n * dim; ++i)
      if (!same_float(ref_y[i], y[i])) {
        ADD_FAILURE() << "decode differs: vector " << i / dim << " element " << i % dim
                      << " scalar " << ref_y[i] << " simd " << y[i];
        break;
      }
    std::vector<float> ys(n * stride, 123.0f);
    q.decode(ref.data(), n, ys.data(), stride);
    for (size_t v = 0; v < n; ++v) {
      for (int i = 0; i < dim; ++i)
        if (!same_float(ref_y[v * dim + i], ys[v * stride + i])) {
          ADD_FAILURE() << "strided decode differs: vector " << v << " element " << i;
          v = n;
          break;
        }
      if (v < n)
        for (size_t i = dim; i < stride; ++i)
          if (ys[v * stride + i] != 123.0f) {
            ADD_FAILURE() << "strided decode wrote past the row: vector " << v;
            v = n;
            break;
          }
    }

    // Rotated formats: decode arbitrary codes too (random planes and padding bits, finite scale).
    if (spec->rotated()) {
      SplitMix64 rng(99 + dim);
      std::vector<uint8_t> rnd(n * cs);
      for (auto& b : rnd) b = static_cast<uint8_t>(rng.next());
      for (size_t v = 0; v < n; ++v) {
        const float s = static_cast<float>(rng.normal());
        std::memcpy(&rnd[v * cs], &s, 4);
      }
      set_simd_level(SimdLevel::kScalar);
      std::vector<float> ry(n * dim), sy(n * dim);
      q.decode(rnd.data(), n, ry.data());
      set_simd_level(level);
      q.decode(rnd.data(), n, sy.data());
      for (size_t i = 0; i < n * dim; ++i)
        if (!same_float(ry[i], sy[i])) {
          ADD_FAILURE() << "decode of random codes differs at vector " << i / dim << " element "
                        << i % dim;
          break;
        }
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<SimdLevel, int>>& info) {
  const Case& c = kCases[std::get<1>(info.param)];
  std::string s = std::string(simd_level_name(std::get<0>(info.param))) + "_" + c.format;
  if (*c.variant) s += std::string("_") + c.variant;
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    AllFormats, SimdConsistency,
    ::testing::Combine(::testing::Values(SimdLevel::kAvx2, SimdLevel::kAvx512),
                       ::testing::Range(0, static_cast<int>(sizeof(kCases) / sizeof(kCases[0])))),
    case_name);

}  // namespace
}  // namespace tqkv
