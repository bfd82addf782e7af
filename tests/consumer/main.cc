// Consumer of an installed tqkv: quantizes vectors, fills a compressed KV cache, runs the fused
// attention and checks the result against a float64 attention on the cache's contents.
// Exit code 0 on success; prints one line.
#include <tqkv/kv_cache.h>
#include <tqkv/quantizer.h>
#include <tqkv/synthetic.h>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  const int d = 128, n = 100, nq = 4;
  auto spec = tqkv::parse_format("rvq1x2");
  if (!spec.ok()) return 1;
  auto q = tqkv::make_quantizer(*spec, d);
  if (!q.ok()) return 1;
  std::vector<float> k(size_t(n) * d), v(k.size()), x(k.size());
  tqkv::generate_gaussian(k.data(), n, d, 1);
  tqkv::generate_gaussian(v.data(), n, d, 2);
  std::vector<uint8_t> codes(n * (*q)->code_size());
  (*q)->encode(k.data(), n, codes.data());
  (*q)->decode(codes.data(), n, x.data());

  // A cache whose formats attention reads with float kernels at every SIMD level (3-bit RVQ keys,
  // q8_0 values), so the fused result matches float64 to float32 accuracy. (3-4 plane rotated
  // values such as tq4 run on the AVX-512 integer lookup kernels, whose contract is 5% of the
  // format's own error: tests/attention/fused_attention_test.cc.)
  tqkv::KVCacheOptions o;
  o.key_format = *tqkv::parse_format("rvq3x2");
  o.value_format = *tqkv::parse_format("q8_0");
  auto cache = tqkv::LayerKVCache::make(1, d, o);
  if (!cache.ok() || !(*cache)->append(0, n, {k.data(), int64_t(n) * d, d}, {v.data(), int64_t(n) * d, d}).ok())
    return 1;
  std::vector<float> qv(size_t(nq) * d), out(qv.size());
  tqkv::generate_gaussian(qv.data(), nq, d, 3);
  if (!(*cache)->attend(0, 1, nq, {qv.data(), d, d}, {out.data(), d, d}).ok()) return 1;
  std::vector<float> kd(size_t(n) * d), vd(kd.size());
  if (!(*cache)->read(0, 0, 0, n, kd.data(), vd.data()).ok()) return 1;
  double err = 0, norm = 0;
  for (int h = 0; h < nq; ++h) {
    std::vector<double> s(n), o64(d, 0.0);
    double mx = -1e300, l = 0;
    for (int t = 0; t < n; ++t) {
      double a = 0;
      for (int i = 0; i < d; ++i) a += double(qv[h * d + i]) * kd[t * d + i];
      s[t] = a / std::sqrt(double(d));
      mx = std::max(mx, s[t]);
    }
    for (int t = 0; t < n; ++t) l += (s[t] = std::exp(s[t] - mx));
    for (int t = 0; t < n; ++t)
      for (int i = 0; i < d; ++i) o64[i] += s[t] / l * vd[t * d + i];
    for (int i = 0; i < d; ++i) {
      err += (out[h * d + i] - o64[i]) * (out[h * d + i] - o64[i]);
      norm += o64[i] * o64[i];
    }
  }
  const double rel = std::sqrt(err / norm);
  double qerr = 0, qnorm = 0;
  for (size_t i = 0; i < k.size(); ++i) {
    qerr += (double(x[i]) - k[i]) * (double(x[i]) - k[i]);
    qnorm += double(k[i]) * k[i];
  }
  std::printf("tqkv consumer: %s %.2f bits/elem, relative MSE %.4f; rvq3x2/q8_0 cache, fused attention vs "
              "float64 on the cache: %.2e relative\n",
              spec->name().c_str(), (*q)->bits_per_element(), qerr / qnorm, rel);
  // rvq1x2 on Gaussian data: relative MSE 2 (1 - sqrt(1 - 0.1175)) = 0.121 (tests/quant); float32
  // attention over 100 tokens: ~1e-6 (bound 2e-5 as in tests/attention/fused_attention_test.cc).
  return (rel < 2e-5 && qerr / qnorm > 0.10 && qerr / qnorm < 0.13) ? 0 : 1;
}
