// pk{b} keys in the cache and the fused attention (pre-RoPE keys, RoPE applied per position):
//  1. the cache's decoded keys are bit-identical to the Phase-A reference codec (fitted on the
//     same first N keys) applied to the same inputs: pins the cache to the tested codec;
//  2. the fused attention equals float64 attention on the DECODED keys (rotated with the one RoPE
//     implementation, tqkv::apply_rope), to float32 accumulation precision (values in float or
//     per-vector formats; bit-sliced tq1/tq2 values have their own documented kernel error);
//  3. the fused attention on the ORIGINAL K/V is within a bound derived from the code's measured
//     error: with score errors delta_t = scale * q . (RoPE(k_t) - RoPE(k_hat_t)) and
//     w_t = exp(delta_t) / E_p[exp(delta)], the exact output o = sum p_t v_t and the decoded-key
//     output o' satisfy (Cauchy-Schwarz, E_p[w] = 1)
//       ||o' - o|| = ||sum_t p_t (w_t - 1)(v_t - o)|| <= sqrt(E_p[(w - 1)^2]) * sqrt(E_p ||v_t - o||^2),
//     plus the values' own error sqrt(sum_t p'_t ||v_hat_t - v_t||^2) and the float tolerance of 2.
//  4. prompts shorter than N stay in f16 (pending rows) and attend like f16 pre-RoPE keys;
//     bytes_resident counts the statistics; truncation into the pending rows works.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "testing/attention_reference.h"
#include "tqkv/attention.h"
#include "tqkv/channel_basis.h"
#include "tqkv/kv_cache.h"
#include "tqkv/prerope_keys.h"
#include "tqkv/simd.h"

namespace tqkv {
namespace {

// Pre-RoPE keys with a per-channel mean and a few dominant channels, like real heads.
void make_keys(float* k, int n, int d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g;
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < d; ++i)
      k[static_cast<size_t>(t) * d + i] = 0.4f * static_cast<float>((i * 7) % 5 - 2) + (0.15f + 2.5f * std::exp(-0.12f * i)) * g(rng);
}
void make_gaussian(float* x, size_t n, uint64_t seed, float s = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g;
  for (size_t i = 0; i < n; ++i) x[i] = s * g(rng);
}

struct Case {
  const char* kfmt;
  const char* vfmt;
  int d, n, n_kv, gqa, m, window, sinks, calib, rotary;
  RopeStyle style;
  int basis = 0;  // 1: pk keys in a random orthonormal channel basis per kv head; 2: pk values too
};

// Random orthonormal d x d basis (Gram-Schmidt in double, stored as float).
std::shared_ptr<const ChannelBasis> random_basis(int d, uint64_t seed) {
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
    for (int i = 0; i < d; ++i) q[i * d + j] /= std::sqrt(nrm);
  }
  return std::make_shared<const ChannelBasis>(orthonormal_basis(std::vector<float>(q.begin(), q.end()), d));
}

std::string name(const Case& c) {
  std::string k = std::string(c.kfmt) + "_" + c.vfmt;
  for (char& ch : k)
    if (ch == '.') ch = 'p';
  return k + "_d" + std::to_string(c.d) + "_n" + std::to_string(c.n) + "_kv" + std::to_string(c.n_kv) +
         "_g" + std::to_string(c.gqa) + "_m" + std::to_string(c.m) + "_w" + std::to_string(c.window) + "_s" +
         std::to_string(c.sinks) + "_N" + std::to_string(c.calib) + "_r" + std::to_string(c.rotary) +
         (c.style == RopeStyle::kNeox ? "_neox" : "") + (c.basis ? "_basis" + std::to_string(c.basis) : "");
}

class PreRopeAttention : public ::testing::TestWithParam<Case> {};

TEST_P(PreRopeAttention, CacheFusedAndOriginal) {
  const Case c = GetParam();
  const int d = c.d, n = c.n, nq = c.n_kv * c.gqa;
  KVCacheOptions o;
  o.key_format = *parse_format(c.kfmt);
  o.value_format = *parse_format(c.vfmt);
  o.recent_window = c.window;
  o.sink_tokens = c.sinks;
  o.pk_calib_tokens = c.calib;
  for (int h = 0; h < c.n_kv && c.basis > 0; ++h) {
    o.pk_basis[0].push_back(random_basis(d, 500 + h));
    if (c.basis == 2) o.pk_basis[1].push_back(random_basis(d, 600 + h));
  }
  auto cache_or = LayerKVCache::make(c.n_kv, d, o, 2);
  ASSERT_TRUE(cache_or.ok()) << cache_or.status().to_string();
  LayerKVCache& cache = **cache_or;
  ASSERT_TRUE(cache.keys_pre_rope());
  // K/V as strided views into padded buffers: token stride d + 3, head stride n * (d + 3) + 1.
  const int64_t ts = d + 3, hs = n * ts + 1;
  std::vector<float> k(c.n_kv * hs), v(c.n_kv * hs), tmp(static_cast<size_t>(n) * d);
  for (int h = 0; h < c.n_kv; ++h) {
    make_keys(tmp.data(), n, d, 10 + h);
    for (int t = 0; t < n; ++t) std::memcpy(&k[h * hs + t * ts], &tmp[static_cast<size_t>(t) * d], d * 4);
    make_gaussian(tmp.data(), tmp.size(), 20 + h);
    for (int t = 0; t < n; ++t) std::memcpy(&v[h * hs + t * ts], &tmp[static_cast<size_t>(t) * d], d * 4);
  }
  // Uneven appends; remember which tokens arrived after the statistics existed with no window
  // (those are encoded from their float input, all others from their f16 copy).
  std::vector<bool> from_float(n, false);
  for (int t0 = 0; t0 < n;) {
    const int cnt = std::min(n - t0, 1 + (t0 * 5 + 41) % 97);
    for (int t = t0; t < t0 + cnt; ++t) from_float[t] = c.window == 0 && t >= c.sinks && t >= c.calib;
    ASSERT_TRUE(cache.append(0, cnt, {&k[t0 * ts], hs, ts}, {&v[t0 * ts], hs, ts}).ok());
    t0 += cnt;
  }
  const SequenceView sv = cache.sequence_view(0);
  EXPECT_EQ(sv.n_tokens, n);
  if (n >= c.calib) {
    EXPECT_EQ(sv.n_pending, 0);
    EXPECT_EQ(sv.n_compressed, std::max(0, n - c.sinks - c.window));
  } else {
    EXPECT_EQ(sv.n_compressed, 0);
    EXPECT_EQ(sv.n_pending, std::max(0, n - c.sinks - c.window));
  }

  // 1. Decoded keys == reference codec (fitted on the f16 copies of the first N keys).
  std::vector<std::vector<float>> kd(c.n_kv), vd(c.n_kv), ko(c.n_kv), vo(c.n_kv);
  for (int h = 0; h < c.n_kv; ++h) {
    kd[h].resize(static_cast<size_t>(n) * d);
    vd[h].resize(kd[h].size());
    ko[h].resize(kd[h].size());
    vo[h].resize(kd[h].size());
    ASSERT_TRUE(cache.read(0, h, 0, n, kd[h].data(), vd[h].data()).ok());
    for (int t = 0; t < n; ++t) {
      std::memcpy(&ko[h][static_cast<size_t>(t) * d], &k[h * hs + t * ts], d * 4);
      std::memcpy(&vo[h][static_cast<size_t>(t) * d], &v[h * hs + t * ts], d * 4);
    }
    std::vector<float> f16(kd[h].size());
    for (size_t i = 0; i < f16.size(); ++i) f16[i] = half_to_float(float_to_half(ko[h][i]));
    if (n < c.calib) {
      EXPECT_EQ(kd[h], f16) << "short prompt: every key stays f16";
      continue;
    }
    auto ref = PreRopeKeyCodec::fit(f16.data(), c.calib, d, 0, o.key_format.avg_bits, true,
                                    c.basis ? o.pk_basis[0][h] : nullptr);
    ASSERT_TRUE(ref.ok());
    std::vector<uint8_t> code(ref->code_size());
    std::vector<float> y(d);
    for (int t = 0; t < n; ++t) {
      const bool comp = t >= c.sinks && t < c.sinks + sv.n_compressed;
      const float* src = comp ? (from_float[t] ? &ko[h][static_cast<size_t>(t) * d] : &f16[static_cast<size_t>(t) * d])
                              : nullptr;
      if (comp) {
        ref->encode(src, 1, code.data());
        ref->decode(code.data(), 1, y.data());
      } else {
        std::memcpy(y.data(), &f16[static_cast<size_t>(t) * d], d * 4);
      }
      ASSERT_EQ(0, std::memcmp(y.data(), &kd[h][static_cast<size_t>(t) * d], d * 4)) << "head " << h << " token " << t;
    }
  }

  // 2./3. Fused attention of the last m tokens.
  RopeParams rope;
  rope.rotary_dims = c.rotary;
  rope.base = 10000.0f;
  rope.style = c.style;
  const std::vector<float> inv_freq = rope_inv_freq(rope);
  std::vector<float> q(static_cast<size_t>(nq) * c.m * d), out(q.size());
  make_gaussian(q.data(), q.size(), 99);
  for (int qh = 0; qh < nq; ++qh)
    for (int j = 0; j < c.m; ++j) apply_rope(rope, inv_freq.data(), n - c.m + j, &q[(static_cast<size_t>(qh) * c.m + j) * d]);
  AttentionOptions ao;
  ao.rope = rope;
  // The scalar reference path (decode + apply_rope with float angles): its bound of 2 is float
  // accumulation only. The SIMD pk kernels use exact angles and are tested against their own
  // derived bounds at every level in prerope_simd_test.cc.
  const SimdLevel saved = active_simd_level();
  set_simd_level(SimdLevel::kScalar);
  Status st = cache.attend(0, c.m, nq, {q.data(), int64_t(c.m) * d, d}, {out.data(), int64_t(c.m) * d, d}, ao);
  set_simd_level(saved);
  ASSERT_TRUE(st.ok()) << st.to_string();
  // Codecs with a channel basis: attend again at the detected level (the SIMD basis kernels,
  // prerope_kernels.h), checked below against the same float64 reference on the decoded keys
  // (their derived bounds: prerope_simd_test.cc, the _basis cases).
  std::vector<float> out_simd;
  const bool simd_too = c.basis > 0 && saved != SimdLevel::kScalar;
  if (simd_too) {
    out_simd.resize(out.size());
    st = cache.attend(0, c.m, nq, {q.data(), int64_t(c.m) * d, d}, {out_simd.data(), int64_t(c.m) * d, d}, ao);
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  const double scale = 1 / std::sqrt(double(d));
  double err2 = 0, norm2 = 0, fmt2 = 0, exact2 = 0, err_simd2 = 0;
  for (int h = 0; h < c.n_kv; ++h) {
    std::vector<float> kdr = kd[h], kor = ko[h];
    for (int t = 0; t < n; ++t) {
      apply_rope(rope, inv_freq.data(), t, &kdr[static_cast<size_t>(t) * d]);
      apply_rope(rope, inv_freq.data(), t, &kor[static_cast<size_t>(t) * d]);
    }
    for (int g = 0; g < c.gqa; ++g)
      for (int j = 0; j < c.m; ++j) {
        const int qh = h * c.gqa + g, vis = n - c.m + j + 1;
        const float* qq = &q[(static_cast<size_t>(qh) * c.m + j) * d];
        const float* of = &out[(static_cast<size_t>(qh) * c.m + j) * d];
        std::vector<double> ref, exact;
        testing::reference_attention(qq, kdr.data(), vd[h].data(), vis, d, scale, ref);
        testing::reference_attention(qq, kor.data(), vo[h].data(), vis, d, scale, exact);
        double e2 = 0, r2 = 0;
        for (int i = 0; i < d; ++i) {
          e2 += (of[i] - ref[i]) * (of[i] - ref[i]);
          r2 += ref[i] * ref[i];
        }
        err2 += e2;
        norm2 += r2;
        if (simd_too)
          for (int i = 0; i < d; ++i) {
            const double e = out_simd[(static_cast<size_t>(qh) * c.m + j) * d + i] - ref[i];
            err_simd2 += e * e;
          }
        for (int i = 0; i < d; ++i) {
          fmt2 += (ref[i] - exact[i]) * (ref[i] - exact[i]);
          exact2 += exact[i] * exact[i];
        }
        // The derived bound of 3, from the measured score errors and value errors.
        std::vector<double> s(vis), sd(vis);
        double mx = -INFINITY, mxd = -INFINITY;
        for (int t = 0; t < vis; ++t) {
          double a = 0, b = 0;
          for (int i = 0; i < d; ++i) {
            a += double(qq[i]) * kor[static_cast<size_t>(t) * d + i];
            b += double(qq[i]) * kdr[static_cast<size_t>(t) * d + i];
          }
          s[t] = a * scale;
          sd[t] = b * scale;
          mx = std::max(mx, s[t]);
          mxd = std::max(mxd, sd[t]);
        }
        double l = 0, ld = 0, ew = 0;
        for (int t = 0; t < vis; ++t) {
          l += std::exp(s[t] - mx);
          ld += std::exp(sd[t] - mxd);
        }
        for (int t = 0; t < vis; ++t) ew += std::exp(s[t] - mx) / l * std::exp(sd[t] - s[t]);  // E_p[exp(delta)]
        double chi2 = 0, spread = 0, verr = 0;
        for (int t = 0; t < vis; ++t) {
          const double p = std::exp(s[t] - mx) / l, pd = std::exp(sd[t] - mxd) / ld;
          const double w = std::exp(sd[t] - s[t]) / ew;
          chi2 += p * (w - 1) * (w - 1);
          double dv = 0, ev = 0;
          for (int i = 0; i < d; ++i) {
            const double a = vo[h][static_cast<size_t>(t) * d + i] - exact[i];
            const double b = double(vd[h][static_cast<size_t>(t) * d + i]) - vo[h][static_cast<size_t>(t) * d + i];
            dv += a * a;
            ev += b * b;
          }
          spread += p * dv;
          verr += pd * ev;
        }
        const double bound = std::sqrt(chi2) * std::sqrt(spread) + std::sqrt(verr);
        double eo = 0, no = 0;
        for (int i = 0; i < d; ++i) {
          eo += (of[i] - exact[i]) * (of[i] - exact[i]);
          no += exact[i] * exact[i];
        }
        // Float tolerance of the fused path: 2e-5 of the output norm (float32 over <= 1024 tokens).
        EXPECT_LE(std::sqrt(eo), bound + 2e-5 * std::sqrt(no) + 1e-6)
            << "head " << qh << " query " << j << " chi2 " << chi2 << " value error " << std::sqrt(verr);
      }
  }
  // 2: float32 scores / online softmax / accumulation over <= 1024 tokens: 2e-5 (the scalar level
  // runs every value format on exact float sums).
  const double fused_vs_decoded = std::sqrt(err2 / norm2), format_error = std::sqrt(fmt2 / exact2);
  EXPECT_LE(fused_vs_decoded, 2e-5) << "format error " << format_error;
  // SIMD level: float kernels (2e-5) or, for values on the AVX-512 integer kernels, their contract
  // of < 5% of the format's own error (tests/attention/fused_attention_test.cc).
  if (simd_too)
    EXPECT_LE(std::sqrt(err_simd2 / norm2), std::max(2e-5, 0.05 * format_error)) << "format error " << format_error;
}

const Case kCases[] = {
    {"pk3", "f16", 128, 700, 2, 2, 3, 0, 0, 256, 128, RopeStyle::kAdjacent},
    {"pk2", "tq4", 128, 515, 1, 4, 1, 0, 0, 128, 128, RopeStyle::kAdjacent},
    {"pk4", "tq3", 64, 333, 2, 1, 2, 48, 4, 100, 64, RopeStyle::kNeox},       // window + sinks
    {"pk2.5", "f16", 96, 290, 1, 3, 5, 32, 0, 64, 64, RopeStyle::kNeox},      // partial rotary
    {"pk3", "f16", 64, 97, 1, 2, 4, 16, 2, 200, 64, RopeStyle::kAdjacent},   // shorter than N
    {"pk1.5", "q8_0", 40, 260, 3, 1, 2, 0, 5, 33, 40, RopeStyle::kAdjacent}, // odd sizes
    {"pk3", "pk2.5", 64, 300, 2, 2, 3, 24, 2, 128, 64, RopeStyle::kAdjacent}, // per-channel values too
    // Channel basis (--pk-basis weights uses the attn_k eigenbasis; here a random orthonormal one).
    {"pk2.5", "tq2", 128, 600, 1, 4, 3, 0, 0, 128, 128, RopeStyle::kAdjacent, 1},
    {"pk2", "f16", 64, 333, 2, 2, 2, 16, 3, 100, 64, RopeStyle::kNeox, 1},
    {"pk3", "pk2", 96, 300, 2, 1, 2, 0, 1, 64, 64, RopeStyle::kAdjacent, 2},
};
INSTANTIATE_TEST_SUITE_P(All, PreRopeAttention, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return name(info.param); });

TEST(PreRopeCache, AccountingTruncateAndErrors) {
  const int d = 64, N = 100;
  KVCacheOptions o;
  o.key_format = *parse_format("pk2");
  o.value_format = *parse_format("f16");
  o.pk_calib_tokens = N;
  auto c = LayerKVCache::make(1, d, o, 0);
  ASSERT_TRUE(c.ok());
  std::vector<float> k(200 * d), v(200 * d);
  make_keys(k.data(), 200, d, 5);
  make_gaussian(v.data(), v.size(), 6);
  ASSERT_TRUE((*c)->append(0, 60, {k.data(), 0, d}, {v.data(), 0, d}).ok());
  EXPECT_EQ((*c)->sequence_view(0).n_pending, 60);
  ASSERT_TRUE((*c)->truncate(0, 50).ok());
  EXPECT_EQ((*c)->sequence_view(0).n_pending, 50);
  ASSERT_TRUE((*c)->append(0, 150, {k.data() + 50 * d, 0, d}, {v.data() + 50 * d, 0, d}).ok());
  const SequenceView sv = (*c)->sequence_view(0);
  EXPECT_EQ(sv.n_pending, 0);
  EXPECT_EQ(sv.n_compressed, 200);
  ASSERT_NE(sv.heads[0].key.prerope, nullptr);
  EXPECT_EQ(sv.heads[0].key.pending, nullptr);
  // 200 tokens: 4 key pages of 64 x 18 bytes, 4 value pages of 64 x 128 bytes (64-byte rounded),
  // the 576-byte statistics block and the codec object; plus bookkeeping outside the pages.
  const size_t pages = 4 * ((64 * 18 + 63) / 64 * 64) + 4 * 64 * 128;
  EXPECT_GE((*c)->bytes_resident(), pages + PreRopeKeyCodec::stats_bytes(d) + sizeof(PreRopeKeyCodec));
  EXPECT_LT((*c)->bytes_resident(), pages + PreRopeKeyCodec::stats_bytes(d) + sizeof(PreRopeKeyCodec) + 1024);
  // Attention without RoPE parameters is refused for pre-RoPE keys.
  std::vector<float> q(d), out(d);
  EXPECT_FALSE((*c)->attend(0, 1, 1, {q.data(), d, d}, {out.data(), d, d}).ok());
  KVCacheOptions bad = o;
  bad.pk_calib_tokens = 0;
  EXPECT_FALSE(LayerKVCache::make(1, d, bad, 0).ok());
}

}  // namespace
}  // namespace tqkv
