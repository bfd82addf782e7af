// pk{b} pre-RoPE keys on the GPU (tqkv/cuda.h, src/cuda/prerope_*.cu). Skipped, with the reason,
// without a GPU of compute capability >= 9.0. Fresh random inputs every run (the seed is printed);
// GPU outputs are poisoned (NaN bytes) before each kernel.
//
// Independent truths: the CPU pk codec (PreRopeKeyCodec::encode / fit) and the CPU LayerKVCache
// (its pending-row rule, its statistics, its pages) for the codes; float64 attention over the
// CPU-decoded keys rotated with exact (double) RoPE angles for attention.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/random.h"
#include "tqkv/attention.h"
#include "tqkv/cuda.h"
#include "tqkv/format.h"
#include "tqkv/kv_cache.h"
#include "tqkv/prerope_keys.h"
#include "tqkv/quantizer.h"

#include "testing/cuda_testing.h"

namespace tqkv {
namespace {

uint64_t fresh_seed() { return testing::fresh_seed("cuda_pk_test"); }

float f16_round(float x) { return half_to_float(float_to_half(x)); }

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Pre-RoPE-like keys: a per-channel mean and a per-channel spread over two orders of magnitude
// (so the greedy allocation hands out 0..8 bits).
struct KeyModel {
  std::vector<float> mean, sd;
  KeyModel(int d, SplitMix64& rng) : mean(d), sd(d) {
    for (int i = 0; i < d; ++i) {
      mean[i] = static_cast<float>(2.0 * rng.normal());
      sd[i] = static_cast<float>(std::exp(1.5 * rng.normal()));
    }
  }
  float draw(int i, SplitMix64& rng) const { return static_cast<float>(mean[i] + sd[i] * rng.normal()); }
};

// ---- encode: bit-identical to PreRopeKeyCodec::encode ----

struct PkEncodeCase {
  const char* fmt;
  int dim;
};
class CudaPkEncode : public ::testing::TestWithParam<PkEncodeCase> {};

TEST_P(CudaPkEncode, BitIdenticalToCpu) {
  REQUIRE_GPU();
  const PkEncodeCase c = GetParam();
  const FormatSpec spec = parse_format(c.fmt).value();
  SplitMix64 rng(fresh_seed());
  const int d = c.dim;
  KeyModel km(d, rng);
  const size_t n_cal = 100, n = 203;
  std::vector<float> cal(n_cal * d);
  for (size_t t = 0; t < n_cal; ++t)
    for (int i = 0; i < d; ++i) cal[t * d + i] = km.draw(i, rng);
  for (bool norm_corr : {true, false}) {
    auto codec = PreRopeKeyCodec::fit(cal.data(), n_cal, d, 0, spec.avg_bits, norm_corr);
    ASSERT_TRUE(codec.ok()) << codec.status().to_string();
    int maxb = 0;
    for (uint8_t b : codec->stats().bits) maxb = std::max<int>(maxb, b);
    for (bool bf16 : {false, true}) {
      std::vector<float> x(n * d);
      for (size_t t = 0; t < n; ++t)
        for (int i = 0; i < d; ++i) x[t * d + i] = km.draw(i, rng) * static_cast<float>(t % 3 == 0 ? 10.0 : 1.0);
      // edge cases: the mean itself (scale 0), NaN, Inf, huge, tiny deviations
      for (int i = 0; i < d; ++i) x[0 * d + i] = codec->stats().mean[i];
      x[1 * d + d / 2] = std::nanf("");
      x[2 * d + 1] = INFINITY;
      for (int i = 0; i < d; ++i) x[3 * d + i] = 1e30f * static_cast<float>(rng.normal());
      for (int i = 0; i < d; ++i) x[4 * d + i] = codec->stats().mean[i] + 1e-30f * static_cast<float>(rng.normal());
      std::vector<uint16_t> xb(x.size());
      if (bf16)
        for (size_t i = 0; i < x.size(); ++i) {
          xb[i] = to_bf16(x[i]);
          x[i] = from_bf16(xb[i]);  // the CPU encodes exactly the bf16 values
        }
      const size_t cs = codec->code_size();
      std::vector<uint8_t> want(n * cs), got(n * cs);
      codec->encode(x.data(), n, want.data());
      auto dx = CudaBuffer::alloc(x.size() * 4);
      auto dc = CudaBuffer::alloc(n * cs);
      ASSERT_TRUE(dx.ok() && dc.ok());
      if (bf16) ASSERT_OK(dx->upload(xb.data(), xb.size() * 2));
      else ASSERT_OK(dx->upload(x.data(), x.size() * 4));
      ASSERT_OK(dc->fill_byte(0xA5));
      ASSERT_OK(cuda_pk_encode_vectors(*codec, dx->get(), bf16 ? CudaDType::kBF16 : CudaDType::kF32, n, dc->as<uint8_t>()));
      ASSERT_OK(dc->download(got.data(), got.size()));
      size_t bad = 0;
      for (size_t v = 0; v < n; ++v)
        if (std::memcmp(want.data() + v * cs, got.data() + v * cs, cs) != 0 && bad++ < 3)
          ADD_FAILURE() << c.fmt << " d=" << d << (bf16 ? " bf16" : " f32") << " norm_corr=" << norm_corr << ": vector " << v
                        << " differs";
      EXPECT_EQ(bad, 0u) << c.fmt << " d=" << d << " (widest channel " << maxb << " bits)";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, CudaPkEncode,
                         ::testing::Values(PkEncodeCase{"pk2", 64}, PkEncodeCase{"pk2", 128}, PkEncodeCase{"pk2", 80},
                                           PkEncodeCase{"pk2.5", 128}, PkEncodeCase{"pk2.5", 96}, PkEncodeCase{"pk3", 64},
                                           PkEncodeCase{"pk3", 128}, PkEncodeCase{"pk3", 256}, PkEncodeCase{"pk4", 128},
                                           PkEncodeCase{"pk4", 80}, PkEncodeCase{"pk4", 256}, PkEncodeCase{"pk6", 48}),
                         [](const auto& info) {
                           std::string f = info.param.fmt;
                           std::replace(f.begin(), f.end(), '.', '_');
                           return f + "_d" + std::to_string(info.param.dim);
                         });

// ---- the cache: statistics, codes, attention ----

struct PkCacheCase {
  const char* kfmt;
  const char* vfmt;
  int dim, group;
  bool neox;
  int rotary;        // rotary_dims (< dim: partial rotary)
  long long offset;  // RoPE position of token 0
  int calib;         // pk_calib_tokens
  int page;          // page_tokens
  float pos_scale = 1.0f;
};

// Everything the float64 reference needs of one (sequence, kv head).
struct RefHead {
  int n = 0;
  std::vector<double> k;      // (n, d) decoded keys rotated to their positions (exact angles)
  std::vector<double> v;      // (n, d) decoded values
  std::vector<double> anorm;  // (n,) ||a_t||, a_t,i = |mean_i| + |k_t,i - mean_i| (pending: |k_t,i|)
};

struct Harness {
  CudaCacheConfig cfg;
  std::unique_ptr<CudaLayerCache> gpu;
  std::unique_ptr<LayerKVCache> cpu;
  std::vector<float> inv_freq;
  std::vector<std::vector<float>> Kh, Vh;  // [seq * H + h] appended rows (pre-RoPE keys)
  std::vector<long long> offset;
  std::vector<int> f16_rows;  // [seq] leading rows encoded from their f16 pending copies
  int H = 2, D = 0, max_seqs = 4;
};

void make_harness(const PkCacheCase& c, SplitMix64& rng, Harness* hs) {
  Harness& X = *hs;
  X.D = c.dim;
  X.cfg.n_kv_heads = X.H;
  X.cfg.head_dim = c.dim;
  X.cfg.key_format = parse_format(c.kfmt).value();
  X.cfg.value_format = parse_format(c.vfmt).value();
  X.cfg.quant.seed = rng.next();
  X.cfg.layer = 3;
  X.cfg.page_tokens = c.page;
  X.cfg.max_pages = 64 * 64 / c.page + 8;
  X.cfg.max_seqs = X.max_seqs;
  X.cfg.rope.rotary_dims = c.rotary;
  X.cfg.rope.base = 10000.0f;
  X.cfg.rope.position_scale = c.pos_scale;
  X.cfg.rope.style = c.neox ? RopeStyle::kNeox : RopeStyle::kAdjacent;
  X.cfg.pk_calib_tokens = c.calib;
  auto g = CudaLayerCache::make(X.cfg);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  X.gpu = std::move(*g);
  KVCacheOptions o;
  o.key_format = X.cfg.key_format;
  o.value_format = X.cfg.value_format;
  o.quant = X.cfg.quant;
  o.pk_calib_tokens = c.calib;
  auto cc = LayerKVCache::make(X.H, c.dim, o, X.cfg.layer);
  ASSERT_TRUE(cc.ok()) << cc.status().to_string();
  X.cpu = std::move(*cc);
  X.inv_freq = rope_inv_freq(X.cfg.rope);
  X.Kh.assign(X.max_seqs * X.H, {});
  X.Vh.assign(X.max_seqs * X.H, {});
  X.offset.assign(X.max_seqs, c.offset);
  X.f16_rows.assign(X.max_seqs, c.calib);
  for (int s = 0; s < X.max_seqs; ++s) ASSERT_OK(X.gpu->set_position_offset(s, c.offset));
}

// Appends n tokens to each of `ss` on the GPU (one call) and the CPU cache (per sequence).
void append_chunk(Harness& X, const std::vector<KeyModel>& km, const std::vector<int>& ss, int n, SplitMix64& rng) {
  const int H = X.H, D = X.D;
  std::vector<float> k(ss.size() * H * n * D), v(k.size());
  for (size_t a = 0; a < ss.size(); ++a)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < n; ++t)
        for (int i = 0; i < D; ++i) {
          const size_t idx = ((a * H + h) * n + t) * D + i;
          k[idx] = km[h].draw(i, rng);
          v[idx] = static_cast<float>(2.0 * rng.normal());
          X.Kh[ss[a] * H + h].push_back(k[idx]);
          X.Vh[ss[a] * H + h].push_back(v[idx]);
        }
  auto dk = CudaBuffer::alloc(k.size() * 4), dv = CudaBuffer::alloc(v.size() * 4);
  ASSERT_TRUE(dk.ok() && dv.ok());
  ASSERT_OK(dk->upload(k.data(), k.size() * 4));
  ASSERT_OK(dv->upload(v.data(), v.size() * 4));
  ASSERT_OK(X.gpu->append(ss, n, dk->get(), dv->get()));
  ASSERT_OK(cuda_synchronize());
  for (size_t a = 0; a < ss.size(); ++a) {
    const int64_t hstride = static_cast<int64_t>(n) * D;
    ASSERT_OK(X.cpu->append(ss[a], n, HeadTokenView{k.data() + a * H * n * D, hstride, D},
                            HeadTokenView{v.data() + a * H * n * D, hstride, D}));
  }
}

// 1. statistics and key codes equal the CPU cache's; value codes equal the value quantizer's
// encode of what the CPU cache encodes (f16-rounded rows below N); 2. the float64 reference.
void check_codes_and_build_ref(Harness& X, int s, std::vector<RefHead>* ref) {
  const int H = X.H, D = X.D, n = X.gpu->n_tokens(s);
  const int N = X.cfg.pk_calib_tokens;
  const SequenceView sv = X.cpu->sequence_view(s);
  const LayerView lv = X.cpu->view();
  ASSERT_EQ(sv.n_tokens, n);
  ref->assign(H, {});
  for (int h = 0; h < H; ++h) {
    RefHead& r = (*ref)[h];
    r.n = n;
    r.k.assign(static_cast<size_t>(n) * D, 0.0);
    r.v.assign(static_cast<size_t>(n) * D, 0.0);
    r.anorm.assign(n, 0.0);
    const PreRopeKeyCodec* gc = X.gpu->key_codec(s, h);
    const PreRopeKeyCodec* cc = sv.heads[h].key.prerope;
    ASSERT_EQ(gc != nullptr, cc != nullptr) << "seq " << s << " head " << h << ": GPU and CPU disagree on the fit at N = " << N;
    ASSERT_EQ(gc != nullptr, n >= N);
    std::vector<float> kd(static_cast<size_t>(n) * D), vd(kd.size());
    if (gc) {
      ASSERT_EQ(sv.n_compressed, n);
      ASSERT_TRUE(gc->stats().mean == cc->stats().mean) << "seq " << s << " head " << h << ": means differ";
      ASSERT_TRUE(gc->stats().sd == cc->stats().sd) << "seq " << s << " head " << h << ": sds differ";
      ASSERT_TRUE(gc->stats().bits == cc->stats().bits) << "seq " << s << " head " << h << ": bits differ";
      const size_t cs = gc->code_size();
      std::vector<uint8_t> got(static_cast<size_t>(n) * cs);
      ASSERT_OK(X.gpu->read_codes(s, h, false, 0, n, got.data()));
      for (int t = 0; t < n; ++t)
        ASSERT_EQ(std::memcmp(got.data() + t * cs, lv.key.code(sv.heads[h].key.pages, t), cs), 0)
            << "seq " << s << " head " << h << " key token " << t << " differs from the CPU cache's code";
      gc->decode(got.data(), n, kd.data());
      // values: the CPU cache encodes rows below N from their f16 copies
      const Quantizer& vq = *X.gpu->value_quantizer(h);
      std::vector<float> vin(X.Vh[s * H + h].begin(), X.Vh[s * H + h].end());
      for (size_t i = 0; i < static_cast<size_t>(std::min(N, X.f16_rows[s])) * D; ++i) vin[i] = f16_round(vin[i]);
      const size_t vcs = vq.code_size();
      std::vector<uint8_t> want(static_cast<size_t>(n) * vcs), vgot(want.size());
      vq.encode(vin.data(), n, want.data());
      ASSERT_OK(X.gpu->read_codes(s, h, true, 0, n, vgot.data()));
      for (int t = 0; t < n; ++t)
        ASSERT_EQ(std::memcmp(want.data() + t * vcs, vgot.data() + t * vcs, vcs), 0) << "seq " << s << " head " << h << " value token " << t;
      vq.decode(vgot.data(), n, vd.data());
      for (int t = 0; t < n; ++t) {
        double a2 = 0;
        for (int i = 0; i < D; ++i) {
          const double m = gc->stats().mean[i];
          const double a = std::fabs(m) + std::fabs(kd[static_cast<size_t>(t) * D + i] - m);
          a2 += a * a;
        }
        r.anorm[t] = std::sqrt(a2);
      }
    } else {
      ASSERT_EQ(sv.n_pending, n);
      for (size_t i = 0; i < kd.size(); ++i) {
        kd[i] = f16_round(X.Kh[s * H + h][i]);
        vd[i] = f16_round(X.Vh[s * H + h][i]);
      }
      for (int t = 0; t < n; ++t) {
        double a2 = 0;
        for (int i = 0; i < D; ++i) a2 += static_cast<double>(kd[static_cast<size_t>(t) * D + i]) * kd[static_cast<size_t>(t) * D + i];
        r.anorm[t] = std::sqrt(a2);
      }
    }
    // exact RoPE: theta_j = (offset + t) * inv_freq_j / position_scale, in double
    const int half = X.cfg.rope.rotary_dims / 2;
    const bool neox = X.cfg.rope.style == RopeStyle::kNeox;
    for (int t = 0; t < n; ++t) {
      double* kr = r.k.data() + static_cast<size_t>(t) * D;
      for (int i = 0; i < D; ++i) kr[i] = kd[static_cast<size_t>(t) * D + i];
      for (int j = 0; j < half; ++j) {
        const double th = static_cast<double>(X.offset[s] + t) * (static_cast<double>(X.inv_freq[j]) / X.cfg.rope.position_scale);
        const int a = neox ? j : 2 * j, b = neox ? j + half : 2 * j + 1;
        const double x0 = kr[a], x1 = kr[b];
        kr[a] = x0 * std::cos(th) - x1 * std::sin(th);
        kr[b] = x0 * std::sin(th) + x1 * std::cos(th);
      }
      for (int i = 0; i < D; ++i) r.v[static_cast<size_t>(t) * D + i] = vd[static_cast<size_t>(t) * D + i];
    }
  }
}

// Attention of the m last tokens of each of `seqs` vs float64 attention on `refs`, at split
// counts 0 (automatic), 1, 3; outputs poisoned first. Returns the worst error / bound.
//
// Bound (||out - ref||_2 per (item, q head, query)), from the kernel's arithmetic (f32 throughout):
//  - score: the query is rotated back by the chunk angle (double, rounded to float: u = 2^-24
//    relative per coordinate), the decoded key (the CPU decode's float operations, so exactly the
//    reference's decoded key; within u |mean| + u |k - mean| otherwise) is rotated by the float
//    offset table (entries within u) with float products and sums (<= 3 u (|k_a| + |k_b|) per
//    coordinate), and the d products are accumulated by f32 FMA (<= d u sum |q'_i k'_i|). With
//    sum_pairs (|x_a| + |x_b|)(|y_a| + |y_b|) <= 2 ||x|| ||y|| this is
//      |ds_t| <= (d + 16) u sm ||q|| ||a_t||;  the test uses eps_t = 2^-23 (d + 32) sm ||q|| ||a_t||
//    (a factor 2 and +16 for the scaling of q by sm log2(e) and the exp2 argument), a_t as RefHead.
//  - softmax weights then move by at most a factor e^{2 max eps}: (e^{2 eps} - 1) sum_t p_t ||v_t||;
//  - ex2.approx (relative error <= 2^-22) on the weights: 2^-21 sum_t p_t ||v_t||;
//  - f32 accumulation of O and l over n tokens (one rounding per token and per rescale, <= n + n/32),
//    the warp and split merges (+ 16), and the value scale folded into the weight (+ 1):
//    (n + n/32 + 32) u sum_t p_t ||v_t||; the f32 Walsh-Hadamard back-rotation of rotated values
//    (log2 d levels of sums, then the rsqrt(d) scale): sqrt(d) (log2 d + 1) u ||o||, ||o|| <= sum p ||v||.
double check_attention(Harness& X, const std::vector<int>& seqs, int m, int group,
                       const std::vector<std::vector<RefHead>>& refs, SplitMix64& rng, const char* what) {
  const int H = X.H, D = X.D, HQ = H * group, B = static_cast<int>(seqs.size());
  const double sm = 1.0 / std::sqrt(static_cast<double>(D)), u = std::ldexp(1.0, -24);
  std::vector<float> q(static_cast<size_t>(B) * HQ * m * D), out(q.size());
  for (auto& e : q) e = static_cast<float>(rng.normal());
  auto dq = CudaBuffer::alloc(q.size() * 4), dout = CudaBuffer::alloc(q.size() * 4);
  EXPECT_TRUE(dq.ok() && dout.ok());
  EXPECT_TRUE(dq->upload(q.data(), q.size() * 4).ok());
  double worst = 0;
  for (int splits : {0, 1, 3}) {
    EXPECT_TRUE(dout->fill_byte(0xFF).ok());  // NaN poison: an unwritten element fails
    const Status st = X.gpu->attend(seqs, m, HQ, dq->as<float>(), dout->as<float>(), 0.f, splits);
    EXPECT_TRUE(st.ok()) << st.to_string();
    if (!st.ok()) return 1e30;
    EXPECT_TRUE(cuda_synchronize().ok());
    EXPECT_TRUE(dout->download(out.data(), out.size() * 4).ok());
    for (int b = 0; b < B; ++b) {
      const int n = X.gpu->n_tokens(seqs[b]);
      for (int hq = 0; hq < HQ; ++hq) {
        const RefHead& r = refs[b][hq / group];
        for (int j = 0; j < m; ++j) {
          const int pos = n - m + j;
          const float* qv = q.data() + ((static_cast<size_t>(b) * HQ + hq) * m + j) * D;
          double qn = 0;
          for (int i = 0; i < D; ++i) qn += static_cast<double>(qv[i]) * qv[i];
          qn = std::sqrt(qn);
          std::vector<double> sc(pos + 1);
          double mx = -1e300, eps = 0;
          for (int t = 0; t <= pos; ++t) {
            double a = 0;
            for (int i = 0; i < D; ++i) a += static_cast<double>(qv[i]) * r.k[static_cast<size_t>(t) * D + i];
            sc[t] = a * sm;
            mx = std::max(mx, sc[t]);
            eps = std::max(eps, std::ldexp(1.0, -23) * (D + 32) * sm * qn * r.anorm[t]);
          }
          double l = 0;
          for (int t = 0; t <= pos; ++t) l += (sc[t] = std::exp(sc[t] - mx));
          std::vector<double> ref(D, 0.0);
          double pv = 0;
          for (int t = 0; t <= pos; ++t) {
            const double p = sc[t] / l;
            double v2 = 0;
            for (int i = 0; i < D; ++i) {
              ref[i] += p * r.v[static_cast<size_t>(t) * D + i];
              v2 += r.v[static_cast<size_t>(t) * D + i] * r.v[static_cast<size_t>(t) * D + i];
            }
            pv += p * std::sqrt(v2);
          }
          const double nn = pos + 1;
          const double bound = (std::expm1(2 * eps) + std::ldexp(1.0, -21) + (nn + nn / 32 + 32) * u +
                                std::sqrt(static_cast<double>(D)) * (std::log2(static_cast<double>(D)) + 1) * u) *
                               pv;
          const float* o = out.data() + ((static_cast<size_t>(b) * HQ + hq) * m + j) * D;
          double err = 0;
          for (int i = 0; i < D; ++i) {
            EXPECT_TRUE(std::isfinite(o[i])) << what << ": unwritten or non-finite output b=" << b << " hq=" << hq << " j=" << j;
            if (!std::isfinite(o[i])) return 1e30;
            err += (o[i] - ref[i]) * (o[i] - ref[i]);
          }
          err = std::sqrt(err);
          worst = std::max(worst, err / bound);
          EXPECT_LE(err, bound) << what << " m=" << m << " splits=" << splits << " item " << b << " (n=" << n << ") q head " << hq
                                << " query " << j;
          if (err > bound) return err / bound;
        }
      }
    }
  }
  return worst;
}

class CudaPkCache : public ::testing::TestWithParam<PkCacheCase> {};

// Ragged sequences of 1, 54, 97 and > N tokens appended in uneven chunks (partial tiles and pages,
// a chunk that crosses N), then statistics and codes vs the CPU cache and attention (decode m = 1
// and causal prefill m = 5) vs float64 with exact RoPE.
TEST_P(CudaPkCache, CodesStatsAndAttention) {
  REQUIRE_GPU();
  const PkCacheCase c = GetParam();
  SplitMix64 rng(fresh_seed());
  Harness X;
  make_harness(c, rng, &X);
  ASSERT_FALSE(HasFatalFailure());
  std::vector<KeyModel> km;
  for (int h = 0; h < X.H; ++h) km.emplace_back(c.dim, rng);
  const std::vector<int> seqs = {2, 0, 3, 1};
  const std::vector<int> target = {c.calib + 150 + static_cast<int>(rng.uniform(300)), 1, 54, 97};
  append_chunk(X, km, seqs, 1, rng);
  ASSERT_FALSE(HasFatalFailure());
  for (size_t a = 0; a < seqs.size(); ++a)
    for (int guard = 0; X.gpu->n_tokens(seqs[a]) < target[a] && guard < 100; ++guard) {
      const int left = target[a] - X.gpu->n_tokens(seqs[a]);
      append_chunk(X, km, {seqs[a]}, std::min(left, 1 + static_cast<int>(rng.uniform(90))), rng);
      ASSERT_FALSE(HasFatalFailure());
    }
  std::vector<std::vector<RefHead>> refs(seqs.size());
  for (size_t a = 0; a < seqs.size(); ++a) {
    ASSERT_EQ(X.gpu->n_tokens(seqs[a]), target[a]);
    check_codes_and_build_ref(X, seqs[a], &refs[a]);
    ASSERT_FALSE(HasFatalFailure());
  }
  const std::string what = std::string(c.kfmt) + "/" + c.vfmt + " d=" + std::to_string(c.dim) + " g=" + std::to_string(c.group);
  const double w1 = check_attention(X, seqs, 1, c.group, refs, rng, what.c_str());
  // prefill: the items with at least 5 tokens
  std::vector<int> s5;
  std::vector<std::vector<RefHead>> r5;
  for (size_t a = 0; a < seqs.size(); ++a)
    if (target[a] >= 5) {
      s5.push_back(seqs[a]);
      r5.push_back(refs[a]);
    }
  const double w5 = check_attention(X, s5, 5, c.group, r5, rng, what.c_str());
  std::printf("[cuda_pk_test] %s N=%d offset=%lld: worst error / bound m=1 %.3g, m=5 %.3g\n", what.c_str(), c.calib, c.offset,
              w1, w5);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, CudaPkCache,
    ::testing::Values(PkCacheCase{"pk2", "tq2", 128, 4, false, 128, 0, 128, 64},
                      PkCacheCase{"pk3", "tq4", 128, 8, true, 128, 60000, 64, 64},
                      PkCacheCase{"pk4", "tq4", 64, 1, false, 32, 60000, 128, 48},
                      PkCacheCase{"pk2.5", "tq2", 256, 4, true, 256, 7, 100, 64, 2.0f},
                      PkCacheCase{"pk3", "rvq1x2", 128, 4, true, 64, 60000, 128, 16},
                      PkCacheCase{"pk2", "rvq2x2", 64, 8, false, 64, 12345, 50, 32}),
    [](const auto& info) {
      std::string k = info.param.kfmt;
      std::replace(k.begin(), k.end(), '.', '_');
      return k + "_" + info.param.vfmt + "_d" + std::to_string(info.param.dim) + "_g" + std::to_string(info.param.group) +
             (info.param.neox ? "_neox" : "_adj") + "_r" + std::to_string(info.param.rotary) + "_N" +
             std::to_string(info.param.calib);
    });

// Decode steps around N: a 61-token prompt (pending f16 only), then one token per step up to
// N + 3, attention after every step (the step that reaches N fits and encodes inside append).
TEST(CudaPkCacheDecode, CrossesCalibrationDuringDecode) {
  REQUIRE_GPU();
  SplitMix64 rng(fresh_seed());
  const PkCacheCase c{"pk3", "tq4", 128, 4, false, 128, 60000, 64, 64};
  Harness X;
  make_harness(c, rng, &X);
  ASSERT_FALSE(HasFatalFailure());
  std::vector<KeyModel> km;
  for (int h = 0; h < X.H; ++h) km.emplace_back(c.dim, rng);
  append_chunk(X, km, {0, 1}, 61, rng);
  ASSERT_FALSE(HasFatalFailure());
  double worst = 0;
  for (int step = 0; X.gpu->n_tokens(0) < c.calib + 3; ++step) {
    append_chunk(X, km, {0, 1}, 1, rng);
    ASSERT_FALSE(HasFatalFailure());
    std::vector<std::vector<RefHead>> refs(2);
    for (int s = 0; s < 2; ++s) {
      check_codes_and_build_ref(X, s, &refs[s]);
      ASSERT_FALSE(HasFatalFailure());
    }
    worst = std::max(worst, check_attention(X, {0, 1}, 1, c.group, refs, rng, "decode across N"));
    ASSERT_FALSE(HasFailure()) << "after " << X.gpu->n_tokens(0) << " tokens";
  }
  // truncate below N keeps the statistics (LayerKVCache's rule): the next tokens are encoded
  // directly, also those below N
  const int keep = c.calib - 10;
  ASSERT_OK(X.gpu->truncate(0, keep));
  ASSERT_OK(X.cpu->truncate(0, keep));
  for (int h = 0; h < X.H; ++h) {
    X.Kh[0 * X.H + h].resize(static_cast<size_t>(keep) * X.D);
    X.Vh[0 * X.H + h].resize(static_cast<size_t>(keep) * X.D);
  }
  ASSERT_NE(X.gpu->key_codec(0, 0), nullptr);
  X.f16_rows[0] = keep;
  append_chunk(X, km, {0}, 20, rng);
  ASSERT_FALSE(HasFatalFailure());
  {
    std::vector<std::vector<RefHead>> refs(2);
    for (int s = 0; s < 2; ++s) {
      check_codes_and_build_ref(X, s, &refs[s]);
      ASSERT_FALSE(HasFatalFailure()) << "after truncating to " << keep << " and appending 20";
    }
    worst = std::max(worst, check_attention(X, {0, 1}, 1, c.group, refs, rng, "after truncate below N"));
  }
  // truncate to 0 forgets the statistics; the sequence starts pending again
  ASSERT_OK(X.gpu->truncate(0, 0));
  EXPECT_EQ(X.gpu->key_codec(0, 0), nullptr);
  std::printf("[cuda_pk_test] decode across N=%d: worst error / bound %.3g\n", c.calib, worst);
}

TEST(CudaPkCacheErrors, RefusesWhatHasNoPath) {
  REQUIRE_GPU();
  CudaCacheConfig cfg;
  cfg.max_pages = 4;
  cfg.key_format = parse_format("pk3").value();
  cfg.value_format = parse_format("tq2").value();
  auto r = CudaLayerCache::make(cfg);  // no RoPE given
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().to_string().find("rotary_dims"), std::string::npos) << r.status().to_string();
  cfg.rope.rotary_dims = 128;
  cfg.value_format = parse_format("pk3").value();  // pk values have no GPU path
  r = CudaLayerCache::make(cfg);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().to_string().find("no CUDA path"), std::string::npos) << r.status().to_string();
  cfg.value_format = parse_format("q4_0").value();  // the pk attention reads lut values only
  auto q = CudaLayerCache::make(cfg);
  ASSERT_TRUE(q.ok()) << q.status().to_string();
  auto k = CudaBuffer::alloc(8 * 4 * 128 * 4);
  ASSERT_TRUE(k.ok());
  ASSERT_OK(k->fill_byte(0));
  ASSERT_OK((*q)->append({0}, 4, k->get(), k->get()));
  const Status s = (*q)->attend({0}, 1, 8, k->as<float>(), k->as<float>());
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.to_string().find("pk keys"), std::string::npos) << s.to_string();
}

}  // namespace
}  // namespace tqkv
