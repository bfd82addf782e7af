// The SIMD pk{b} key kernels (src/attention/prerope_kernels.h) at every SIMD level this CPU has.
//
// Truths, none of which shares the kernels' code path:
//  A. float64 attention on the cache's decoded keys (the reference codec's decode, via read()),
//     rotated with EXACT angles theta = pos * double(inv_freq) / position_scale (double cos/sin).
//     The SIMD kernels compute these angles (block base in double, offset table rounded once to
//     float), so their bound is the float arithmetic's:
//       |d score_t| <= eps_t = 2^-23 (dp + 16) ||q|| ||a_t||,  a_t,i = |mean_i| + |k_t,i - mean_i|
//     (each product q_i k_i passes through <= 8 roundings of 2^-24 — decode FMA and scale product,
//     table entry, the two rotation roundings, the query's back-rotation, the product — the
//     rotation mixes the pair's two coordinates (factor 2), and the float sum over dp terms adds
//     dp 2^-24 sum |q_i k_i| <= dp 2^-24 ||q|| ||k||). The scalar reference rotates with float
//     angles fl(fl(pos / scale) * inv_freq) and float cos/sin: per pair |d theta| <=
//     2^-23 |theta| + 2^-22 on top of the same arithmetic.
//     Score errors <= eps move each softmax weight by a factor in [e^-2eps, e^2eps], so
//       ||o' - o|| = ||sum_t (p'_t - p_t)(v_t - o)|| <= (e^{2 eps} - 1) sum_t p_t ||v_t - o||,
//     plus the float32 softmax/accumulation tolerance of the fused tests, 2e-5 sum_t p_t ||v_t||.
//  B. SIMD vs scalar on the same cache: the sum of the two bounds of A.
//  C. float64 attention on the ORIGINAL K/V (float RoPE as the model applies it): the
//     Cauchy-Schwarz bound from the measured score errors (prerope_attention_test.cc, item 3).
// Awkward sizes: head_dim 8/64/80/96/128/256, kv_len 1/54/97/700, GQA 1/4/7/8, partial rotary,
// NeoX pairs, a position offset of 60000 (large angles), channels with 5-8 bits (more than one
// level-table window), streams over 64 and over 128 bytes (two-register and gather paths).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tqkv/attention.h"
#include "tqkv/channel_basis.h"
#include "tqkv/kv_cache.h"
#include "tqkv/prerope_keys.h"
#include "tqkv/simd.h"

namespace tqkv {
namespace {

// Pre-RoPE keys with a per-channel mean and dominant channels (geometric sd profile: the greedy
// allocation gives the first channels up to 8 bits at pk4).
void make_keys(float* k, int n, int d, uint64_t seed, float spread) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g;
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < d; ++i)
      k[static_cast<size_t>(t) * d + i] =
          0.3f * static_cast<float>((i * 7) % 5 - 2) + (0.1f + spread * std::exp(-0.15f * i)) * g(rng);
}
void make_gaussian(float* x, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g;
  for (size_t i = 0; i < n; ++i) x[i] = g(rng);
}

// RoPE with exact angles (double), the truth of item A.
void rope_exact(const RopeParams& rope, const std::vector<float>& inv_freq, int64_t pos, double* x) {
  const int half = rope.rotary_dims / 2;
  for (int i = 0; i < half; ++i) {
    const double th = static_cast<double>(pos) * static_cast<double>(inv_freq[i]) / rope.position_scale;
    const int a = rope.style == RopeStyle::kAdjacent ? 2 * i : i;
    const int b = rope.style == RopeStyle::kAdjacent ? 2 * i + 1 : i + half;
    const double x0 = x[a], x1 = x[b];
    x[a] = x0 * std::cos(th) - x1 * std::sin(th);
    x[b] = x0 * std::sin(th) + x1 * std::cos(th);
  }
}

struct Case {
  const char* kfmt;
  const char* vfmt;
  int d, n, gqa, m, calib, rotary;
  RopeStyle style;
  int64_t offset;  // RoPE position of token 0
  float spread;    // sd of the widest key channel
  int sinks = 0, window = 0;
  int basis = 0;  // channel basis per kv head: 0 none, 1 random orthonormal d x d, B > 1 block-diagonal (blocks of B)
};

// Random orthonormal basis, block-diagonal with blocks of `block` channels (block = d: dense), by
// Gram-Schmidt in double per block; entries outside the blocks are exactly zero.
std::shared_ptr<const ChannelBasis> random_basis(int d, int block, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g;
  std::vector<double> q(static_cast<size_t>(d) * d, 0.0);
  for (int b0 = 0; b0 < d; b0 += block) {
    const int b1 = std::min(d, b0 + block);
    for (int i = b0; i < b1; ++i)
      for (int j = b0; j < b1; ++j) q[static_cast<size_t>(i) * d + j] = g(rng);
    for (int j = b0; j < b1; ++j) {
      for (int pass = 0; pass < 2; ++pass)
        for (int k = b0; k < j; ++k) {
          double dot = 0;
          for (int i = b0; i < b1; ++i) dot += q[static_cast<size_t>(i) * d + j] * q[static_cast<size_t>(i) * d + k];
          for (int i = b0; i < b1; ++i) q[static_cast<size_t>(i) * d + j] -= dot * q[static_cast<size_t>(i) * d + k];
        }
      double nrm = 0;
      for (int i = b0; i < b1; ++i) nrm += q[static_cast<size_t>(i) * d + j] * q[static_cast<size_t>(i) * d + j];
      for (int i = b0; i < b1; ++i) q[static_cast<size_t>(i) * d + j] /= std::sqrt(nrm);
    }
  }
  return std::make_shared<const ChannelBasis>(orthonormal_basis(std::vector<float>(q.begin(), q.end()), d));
}

std::string name(const Case& c) {
  std::string k = std::string(c.kfmt) + "_" + c.vfmt;
  for (char& ch : k)
    if (ch == '.') ch = 'p';
  return k + "_d" + std::to_string(c.d) + "_n" + std::to_string(c.n) + "_g" + std::to_string(c.gqa) + "_m" +
         std::to_string(c.m) + "_N" + std::to_string(c.calib) + "_r" + std::to_string(c.rotary) +
         (c.style == RopeStyle::kNeox ? "_neox" : "") + "_o" + std::to_string(c.offset) + "_s" +
         std::to_string(c.sinks) + "_w" + std::to_string(c.window) +
         (c.basis ? "_basis" + std::to_string(c.basis == 1 ? c.d : c.basis) : "");
}

class PreRopeSimd : public ::testing::TestWithParam<Case> {};

TEST_P(PreRopeSimd, EveryLevelWithinDerivedBounds) {
  const Case c = GetParam();
  const int d = c.d, n = c.n, n_kv = 2, nq = n_kv * c.gqa;
  KVCacheOptions o;
  o.key_format = *parse_format(c.kfmt);
  o.value_format = *parse_format(c.vfmt);
  o.pk_calib_tokens = c.calib;
  o.sink_tokens = c.sinks;
  o.recent_window = c.window;
  for (int h = 0; h < n_kv && c.basis > 0; ++h) o.pk_basis[0].push_back(random_basis(d, c.basis == 1 ? d : c.basis, 90 + h));
  auto cache_or = LayerKVCache::make(n_kv, d, o, 3);
  ASSERT_TRUE(cache_or.ok()) << cache_or.status().to_string();
  LayerKVCache& cache = **cache_or;
  std::vector<float> k(static_cast<size_t>(n_kv) * n * d), v(k.size());
  for (int h = 0; h < n_kv; ++h) {
    make_keys(&k[static_cast<size_t>(h) * n * d], n, d, 40 + h, c.spread);
    make_gaussian(&v[static_cast<size_t>(h) * n * d], static_cast<size_t>(n) * d, 50 + h);
  }
  for (int t0 = 0; t0 < n;) {  // uneven appends
    const int cnt = std::min(n - t0, 1 + (t0 * 3 + 29) % 71);
    ASSERT_TRUE(cache.append(0, cnt, {&k[static_cast<size_t>(t0) * d], int64_t(n) * d, d},
                             {&v[static_cast<size_t>(t0) * d], int64_t(n) * d, d}).ok());
    t0 += cnt;
  }
  const SequenceView sv = cache.sequence_view(0);
  ASSERT_EQ(sv.n_compressed, n >= c.calib ? std::max(0, n - c.sinks - c.window) : 0);
  ASSERT_GT(sv.n_compressed, 0) << "the pk kernels must see compressed tokens";
  const PreRopeKeyCodec* codec = sv.heads[0].key.prerope;

  RopeParams rope;
  rope.rotary_dims = c.rotary;
  rope.style = c.style;
  const std::vector<float> inv_freq = rope_inv_freq(rope);
  std::vector<float> q(static_cast<size_t>(nq) * c.m * d);
  make_gaussian(q.data(), q.size(), 77);
  for (int qh = 0; qh < nq; ++qh)
    for (int j = 0; j < c.m; ++j)
      apply_rope(rope, inv_freq.data(), c.offset + n - c.m + j, &q[(static_cast<size_t>(qh) * c.m + j) * d]);

  // Fused outputs at every level this CPU has, each with one work item per head (the base angle
  // advanced block to block by the recurrence) and with 64-token splits (set directly per block).
  const SimdLevel saved = active_simd_level();
  std::vector<SimdLevel> levels;
  for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512})
    if (static_cast<int>(l) <= static_cast<int>(detected_simd_level())) levels.push_back(l);
  const int splits[2] = {1 << 20, 64};
  std::vector<std::vector<float>> outs(2 * levels.size(), std::vector<float>(q.size()));
  std::vector<SimdLevel> out_level(outs.size());
  const LayerView view = cache.view();
  for (size_t oi = 0; oi < outs.size(); ++oi) {
    out_level[oi] = levels[oi / 2];
    set_simd_level(out_level[oi]);
    AttentionQuery r;
    r.seq = sv;
    r.m = c.m;
    r.q = {q.data(), int64_t(c.m) * d, d};
    r.out = {outs[oi].data(), int64_t(c.m) * d, d};
    r.position_offset = c.offset;
    AttentionParams p;
    p.n_q_heads = nq;
    p.queries = &r;
    p.n_queries = 1;
    p.options.rope = rope;
    p.options.split_tokens = splits[oi % 2];
    const Status st = attend(view, p);
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  set_simd_level(saved);

  const double scale = 1 / std::sqrt(double(d));
  const int dp = 16 * (2 * ((c.rotary / 2 + 15) / 16) + (d - c.rotary + 15) / 16);
  const double u = std::ldexp(1.0, -24);
  const bool float_values = o.value_format.kind == FormatKind::kF16 || o.value_format.kind == FormatKind::kF32;
  for (int h = 0; h < n_kv; ++h) {
    std::vector<float> kd(static_cast<size_t>(n) * d), vd(kd.size());
    ASSERT_TRUE(cache.read(0, h, 0, n, kd.data(), vd.data()).ok());
    const PreRopeKeyCodec* hc = cache.sequence_view(0).heads[h].key.prerope;
    std::vector<double> kx(kd.begin(), kd.end()), a(n, 0.0);  // exact-angle keys; ||a_t||
    std::vector<float> kor(k.data() + static_cast<size_t>(h) * n * d, k.data() + static_cast<size_t>(h + 1) * n * d);
    std::vector<double> thmax(n);
    // With a basis, x_hat = S y_hat: the decode's magnitudes a_y,j = |mu_j| + |y_j - mu_j| live in
    // the basis (y = A^T x_hat in double), and bound the keys' coordinates by z = |S| a_y, so the
    // arithmetic of A applies with ||z|| in place of ||a||; the SIMD synthesis adds <= K + 2
    // roundings per term of |S| a_y (K <= d float FMAs per coordinate, the decode's rounding
    // carried through S): <= 2^-24 (d + 2) ||q|| ||z|| on the score (Cauchy-Schwarz), in eps_synth.
    const ChannelBasis* basis = hc != nullptr ? hc->basis() : nullptr;
    for (int t = 0; t < n; ++t) {
      double a2 = 0;
      const float* xt = &kd[static_cast<size_t>(t) * d];
      if (basis != nullptr) {
        std::vector<double> ay(d, 0.0);
        for (int j = 0; j < d; ++j) {
          double y = 0;
          for (int i = 0; i < d; ++i) y += double(basis->analysis[static_cast<size_t>(i) * d + j]) * xt[i];
          const double mu = hc->stats().mean[j];
          ay[j] = (std::fabs(mu) + std::fabs(y - mu)) * (1 + 1e-6);  // y within float rounding of y_hat
        }
        for (int i = 0; i < d; ++i) {
          double z = 0;
          for (int j = 0; j < d; ++j) z += std::fabs(double(basis->synthesis[static_cast<size_t>(i) * d + j])) * ay[j];
          a2 += z * z;
        }
      } else {
        for (int i = 0; i < d; ++i) {
          const double mu = hc != nullptr ? hc->stats().mean[i] : 0.0, x = xt[i];
          a2 += (std::fabs(mu) + std::fabs(x - mu)) * (std::fabs(mu) + std::fabs(x - mu));
        }
      }
      a[t] = std::sqrt(a2);
      rope_exact(rope, inv_freq, c.offset + t, &kx[static_cast<size_t>(t) * d]);
      apply_rope(rope, inv_freq.data(), c.offset + t, &kor[static_cast<size_t>(t) * d]);
      thmax[t] = static_cast<double>(c.offset + t) * inv_freq[0] / rope.position_scale;
    }
    const float* vo = &v[static_cast<size_t>(h) * n * d];
    for (int g = 0; g < c.gqa; ++g)
      for (int j = 0; j < c.m; ++j) {
        const int qh = h * c.gqa + g, vis = n - c.m + j + 1;
        const float* qq = &q[(static_cast<size_t>(qh) * c.m + j) * d];
        double qn = 0;
        for (int i = 0; i < d; ++i) qn += double(qq[i]) * qq[i];
        qn = std::sqrt(qn) * scale;
        // Item A's truth: exact angles on the decoded keys, the decoded values.
        std::vector<double> s(vis), pr(vis), ox(d, 0.0);
        double mx = -INFINITY, l = 0;
        for (int t = 0; t < vis; ++t) {
          double acc = 0;
          for (int i = 0; i < d; ++i) acc += double(qq[i]) * kx[static_cast<size_t>(t) * d + i];
          s[t] = acc * scale;
          mx = std::max(mx, s[t]);
        }
        for (int t = 0; t < vis; ++t) l += (pr[t] = std::exp(s[t] - mx));
        for (int t = 0; t < vis; ++t) {
          pr[t] /= l;
          for (int i = 0; i < d; ++i) ox[i] += pr[t] * vd[static_cast<size_t>(t) * d + i];
        }
        double spread = 0, vsum = 0, eps_simd = 0, eps_ref = 0;
        for (int t = 0; t < vis; ++t) {
          double dv = 0, nv = 0;
          for (int i = 0; i < d; ++i) {
            const double x = vd[static_cast<size_t>(t) * d + i];
            dv += (x - ox[i]) * (x - ox[i]);
            nv += x * x;
          }
          spread += pr[t] * std::sqrt(dv);
          vsum += pr[t] * std::sqrt(nv);
          const double arith = 2 * u * (dp + 16) * qn * a[t] + (basis != nullptr ? u * (d + 2) * qn * a[t] : 0.0);
          eps_simd = std::max(eps_simd, arith);
          eps_ref = std::max(eps_ref, arith + (2 * u * thmax[t] + 4 * u) * qn * a[t]);
        }
        const double float_tol = 2e-5 * vsum + 1e-7;
        for (size_t li = 0; li < outs.size(); ++li) {
          const float* of = &outs[li][(static_cast<size_t>(qh) * c.m + j) * d];
          double e2 = 0;
          for (int i = 0; i < d; ++i) e2 += (of[i] - ox[i]) * (of[i] - ox[i]);
          const double eps = out_level[li] == SimdLevel::kScalar ? eps_ref : eps_simd;
          const double bound = std::expm1(2 * eps) * spread + float_tol;
          if (float_values || out_level[li] == SimdLevel::kScalar || out_level[li] == SimdLevel::kAvx2) {
            EXPECT_LE(std::sqrt(e2), bound) << simd_level_name(out_level[li]) << " split " << li % 2 << " head " << qh
                                            << " query " << j;
          }
          // B: every SIMD level against the scalar reference.
          if (out_level[li] != SimdLevel::kScalar && float_values) {
            double b2 = 0;
            for (int i = 0; i < d; ++i) b2 += (of[i] - outs[0][(static_cast<size_t>(qh) * c.m + j) * d + i]) *
                                              (of[i] - outs[0][(static_cast<size_t>(qh) * c.m + j) * d + i]);
            EXPECT_LE(std::sqrt(b2), std::expm1(2 * (eps_simd + eps_ref)) * spread + 2 * float_tol)
                << simd_level_name(out_level[li]) << " vs scalar, head " << qh << " query " << j;
          }
        }
        // C: the ORIGINAL K/V, Cauchy-Schwarz bound from the measured score and value errors
        // (prerope_attention_test.cc): sqrt(E_p[(w - 1)^2]) sqrt(E_p ||v - o||^2) + sqrt(sum p' ||v_hat - v||^2).
        std::vector<double> so(vis), oo(d, 0.0);
        double mo = -INFINITY, lo = 0;
        for (int t = 0; t < vis; ++t) {
          double acc = 0;
          for (int i = 0; i < d; ++i) acc += double(qq[i]) * kor[static_cast<size_t>(t) * d + i];
          so[t] = acc * scale;
          mo = std::max(mo, so[t]);
        }
        for (int t = 0; t < vis; ++t) lo += std::exp(so[t] - mo);
        for (int t = 0; t < vis; ++t)
          for (int i = 0; i < d; ++i) oo[i] += std::exp(so[t] - mo) / lo * vo[static_cast<size_t>(t) * d + i];
        double ew = 0;
        for (int t = 0; t < vis; ++t) ew += std::exp(so[t] - mo) / lo * std::exp(s[t] - so[t]);
        double chi2 = 0, sp2 = 0, verr = 0;
        for (int t = 0; t < vis; ++t) {
          const double p = std::exp(so[t] - mo) / lo, w = std::exp(s[t] - so[t]) / ew;
          chi2 += p * (w - 1) * (w - 1);
          double dv = 0, ev = 0;
          for (int i = 0; i < d; ++i) {
            const double x = vo[static_cast<size_t>(t) * d + i];
            dv += (x - oo[i]) * (x - oo[i]);
            ev += (vd[static_cast<size_t>(t) * d + i] - x) * (vd[static_cast<size_t>(t) * d + i] - x);
          }
          sp2 += p * dv;
          verr += pr[t] * ev;
        }
        // The exact-angle keys' bound, plus the kernels' own arithmetic bound of A for float
        // values; lookup/bit-sliced values add their documented kernel error (<= 5% of the
        // format's error, fused_attention_test.cc), taken as 0.05 sqrt(verr) here.
        const double vkernel = float_values ? 0.0 : 0.05 * std::sqrt(verr);
        const double bound_o = std::sqrt(chi2) * std::sqrt(sp2) + std::sqrt(verr) + vkernel;
        for (size_t li = 0; li < outs.size(); ++li) {
          const float* of = &outs[li][(static_cast<size_t>(qh) * c.m + j) * d];
          double e2 = 0;
          for (int i = 0; i < d; ++i) e2 += (of[i] - oo[i]) * (of[i] - oo[i]);
          const double eps = out_level[li] == SimdLevel::kScalar ? eps_ref : eps_simd;
          EXPECT_LE(std::sqrt(e2), bound_o + std::expm1(2 * eps) * spread + float_tol)
              << "original K/V, " << simd_level_name(out_level[li]) << " head " << qh << " query " << j
              << " chi2 " << chi2;
        }
      }
  }
  (void)codec;
}

const Case kCases[] = {
    // kfmt   vfmt   d    n  gqa m  N  rotary style               offset spread
    {"pk2", "f16", 128, 97, 4, 1, 16, 128, RopeStyle::kAdjacent, 0, 2.5f},
    {"pk3", "f16", 128, 54, 8, 2, 1, 128, RopeStyle::kNeox, 0, 2.5f},
    {"pk4", "f32", 128, 700, 1, 1, 64, 128, RopeStyle::kAdjacent, 0, 6.0f},        // 5-8 bit channels
    {"pk4", "f16", 128, 97, 7, 1, 16, 128, RopeStyle::kNeox, 60000, 6.0f},         // large angles
    {"pk2", "f16", 64, 1, 4, 1, 1, 64, RopeStyle::kAdjacent, 0, 2.5f},             // one token
    {"pk3", "f16", 64, 97, 1, 3, 8, 32, RopeStyle::kNeox, 17, 2.5f},               // partial rotary
    {"pk2.5", "f16", 80, 54, 7, 1, 4, 80, RopeStyle::kAdjacent, 5, 2.5f},
    {"pk3", "f32", 80, 97, 8, 2, 16, 48, RopeStyle::kAdjacent, 1000, 4.0f},        // partial, d 80
    {"pk2", "f16", 96, 97, 4, 1, 16, 96, RopeStyle::kNeox, 0, 2.5f},
    {"pk4", "f16", 96, 54, 1, 1, 2, 64, RopeStyle::kAdjacent, 300, 6.0f},
    {"pk7", "f16", 128, 97, 4, 1, 16, 128, RopeStyle::kAdjacent, 0, 2.5f},        // stream 112 B
    {"pk5", "f16", 256, 54, 4, 1, 8, 256, RopeStyle::kNeox, 0, 2.5f},              // stream 160 B: gather
    {"pk2", "f32", 8, 97, 2, 1, 16, 8, RopeStyle::kAdjacent, 0, 2.5f},             // stories260K's d
    {"pk2", "tq2", 128, 700, 4, 1, 128, 128, RopeStyle::kAdjacent, 0, 2.5f},       // issue's pairs
    {"pk3", "tq3", 128, 97, 8, 1, 16, 128, RopeStyle::kNeox, 0, 2.5f},
    {"pk4", "tq4", 64, 97, 4, 1, 16, 64, RopeStyle::kAdjacent, 0, 6.0f},
    {"pk3", "f16", 128, 300, 4, 2, 32, 128, RopeStyle::kAdjacent, 9, 4.0f, 5, 40},  // sinks + window
    {"pk2", "f16", 64, 97, 7, 1, 16, 64, RopeStyle::kNeox, 0, 2.5f, 3, 0},
    // Channel bases (the SIMD basis kernels): dense and block-diagonal, NeoX and adjacent pairs,
    // partial rotary, sinks + window, 5-8-bit channels, streams over 64 and 128 bytes, odd d.
    {"pk2.5", "f16", 128, 97, 4, 1, 16, 128, RopeStyle::kAdjacent, 0, 2.5f, 0, 0, 1},
    {"pk3", "f32", 128, 300, 8, 2, 32, 128, RopeStyle::kNeox, 60000, 4.0f, 5, 40, 1},
    {"pk2", "f16", 128, 97, 4, 1, 16, 128, RopeStyle::kAdjacent, 0, 2.5f, 0, 0, 16},
    {"pk2.5", "f32", 128, 700, 1, 1, 64, 128, RopeStyle::kNeox, 9, 2.5f, 0, 0, 16},
    {"pk4", "f16", 96, 54, 7, 3, 2, 64, RopeStyle::kAdjacent, 300, 6.0f, 0, 0, 8},   // partial rotary
    {"pk3", "f16", 80, 97, 1, 1, 16, 48, RopeStyle::kNeox, 17, 4.0f, 3, 0, 1},
    {"pk7", "f16", 128, 97, 4, 1, 16, 128, RopeStyle::kAdjacent, 0, 2.5f, 0, 0, 32},  // stream 112 B
    {"pk5", "f16", 256, 54, 4, 1, 8, 256, RopeStyle::kNeox, 0, 2.5f, 0, 0, 1},       // stream 160 B
    {"pk2", "f32", 8, 97, 2, 1, 16, 8, RopeStyle::kAdjacent, 0, 2.5f, 0, 0, 1},
    {"pk2", "tq2", 128, 300, 4, 1, 64, 128, RopeStyle::kAdjacent, 0, 2.5f, 0, 0, 16},
    {"pk3", "f16", 40, 61, 3, 1, 7, 40, RopeStyle::kAdjacent, 0, 2.5f, 0, 0, 12},  // blocks not dividing d
};
INSTANTIATE_TEST_SUITE_P(All, PreRopeSimd, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return name(info.param); });

}  // namespace
}  // namespace tqkv
