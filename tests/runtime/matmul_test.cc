// Half-precision weight kernels: the AVX2 row kernel equals the scalar reference within float32
// summation-order error, at awkward lengths; matmul over f16/bf16 equals f32 over widened weights.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/half.h"
#include "tqkv/gguf.h"
#include "runtime/matmul.h"
#include "tqkv/simd.h"

namespace tqkv {
namespace {

TEST(HalfMatmul, Avx2RowKernelMatchesScalar) {
  if (detected_simd_level() < SimdLevel::kAvx2) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (int in : {1, 7, 16, 33, 97, 256}) {
    for (bool bf16 : {false, true}) {
      const int rows = 5;
      std::vector<uint16_t> w(size_t(rows) * in);
      for (auto& h : w) {
        const float v = nd(rng);
        h = bf16 ? static_cast<uint16_t>(f32_bits(v) >> 16) : float_to_half(v);
      }
      std::vector<float> x(in), a(rows), b(rows);
      for (auto& v : x) v = nd(rng);
      runtime::gemv_half_scalar(w.data(), bf16, x.data(), a.data(), rows, in);
      runtime::gemv_half_avx2(w.data(), bf16, x.data(), b.data(), rows, in);
      for (int r = 0; r < rows; ++r) {
        double mag = 0;  // sum of |terms| bounds the reordering error: in * 2^-24 * sum|w x|
        for (int i = 0; i < in; ++i) {
          const uint16_t h = w[size_t(r) * in + i];
          mag += std::fabs((bf16 ? f32_from_bits(uint32_t(h) << 16) : half_to_float(h)) * x[i]);
        }
        EXPECT_NEAR(a[r], b[r], 2.0 * in * 5.96e-8 * mag + 1e-30) << "in " << in << " bf16 " << bf16;
      }
    }
  }
}

TEST(HalfMatmul, Avx2WidenIsExact) {
  if (detected_simd_level() < SimdLevel::kAvx2) GTEST_SKIP() << "no AVX2 on this CPU";
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> a(65536), b(65536);
  for (bool bf16 : {false, true}) {
    dequantize_row(bf16 ? GgmlType::kBF16 : GgmlType::kF16, all.data(), a.data(), 65536);
    runtime::widen_half_avx2(all.data(), bf16, b.data(), 65533);  // odd tail too
    b[65533] = a[65533]; b[65534] = a[65534]; b[65535] = a[65535];
    for (int i = 0; i < 65536; ++i) {
      if (std::isnan(a[i])) {  // F16C quiets signaling NaNs; NaN-ness is what matters
        ASSERT_TRUE(std::isnan(b[i])) << "pattern " << i;
        continue;
      }
      ASSERT_EQ(f32_bits(a[i]), f32_bits(b[i])) << "pattern " << i << " bf16 " << bf16;
    }
  }
}

TEST(Q8Matmul, KernelsMatchWidenedF32) {
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  const int in = 96, out = 70, m = 3;
  std::vector<float> wsrc(size_t(out) * in), x(size_t(m) * in), wf(size_t(out) * in);
  for (auto& v : wsrc) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  std::vector<uint8_t> wq;
  for (int o = 0; o < out; ++o) {
    auto row = quantize_q8_0_row(wsrc.data() + size_t(o) * in, in);
    wq.insert(wq.end(), row.begin(), row.end());
    dequantize_row(GgmlType::kQ8_0, row.data(), wf.data() + size_t(o) * in, in);
  }
  std::vector<float> ref(size_t(m) * out), y(size_t(m) * out), a(out), b(out);
  runtime::matmul(x.data(), wf.data(), GgmlType::kF32, ref.data(), m, in, out, 1);
  runtime::matmul(x.data(), wq.data(), GgmlType::kQ8_0, y.data(), m, in, out, 1);  // prefill path
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-4 * (1 + std::fabs(ref[i])));
  for (int t = 0; t < m; ++t) {
    runtime::gemv_q8_0_scalar(wq.data(), x.data() + t * in, a.data(), out, in);
    if (detected_simd_level() >= SimdLevel::kAvx2) runtime::gemv_q8_0_avx2(wq.data(), x.data() + t * in, b.data(), out, in);
    else b = a;
    for (int o = 0; o < out; ++o) {
      EXPECT_NEAR(a[o], ref[size_t(t) * out + o], 1e-4 * (1 + std::fabs(ref[size_t(t) * out + o])));
      EXPECT_NEAR(b[o], a[o], 1e-4 * (1 + std::fabs(a[o])));
    }
  }
}

TEST(HalfMatmul, PrefillAndDecodeMatchF32) {
  std::mt19937 rng(2);
  std::normal_distribution<float> nd;
  const int in = 40, out = 150, m = 3;
  std::vector<uint16_t> w(size_t(out) * in);
  std::vector<float> wf(w.size()), x(size_t(m) * in), y(size_t(m) * out), ref(size_t(m) * out);
  for (size_t i = 0; i < w.size(); ++i) { w[i] = float_to_half(nd(rng)); wf[i] = half_to_float(w[i]); }
  for (auto& v : x) v = nd(rng);
  runtime::matmul(x.data(), wf.data(), GgmlType::kF32, ref.data(), m, in, out, 1);
  runtime::matmul(x.data(), w.data(), GgmlType::kF16, y.data(), m, in, out, 1);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-4 * (1 + std::fabs(ref[i])));
  for (int t = 0; t < m; ++t) {  // decode path, one token at a time
    runtime::matmul(x.data() + t * in, w.data(), GgmlType::kF16, y.data(), 1, in, out, 1);
    for (int o = 0; o < out; ++o) EXPECT_NEAR(y[o], ref[size_t(t) * out + o], 1e-4 * (1 + std::fabs(ref[size_t(t) * out + o])));
  }
}

}  // namespace
}  // namespace tqkv
