// CUDA backend tests (tqkv/cuda.h). Skipped, with the reason, when no GPU of compute capability
// >= 9.0 is present or the library was built without CUDA. Every run draws fresh random inputs
// (the seed is printed) and poisons GPU outputs (NaN bytes) before each kernel.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/random.h"
#include "tqkv/cache_seed.h"
#include "tqkv/cuda.h"
#include "tqkv/head_shard.h"
#include "tqkv/format.h"
#include "tqkv/kv_cache.h"
#include "tqkv/quantizer.h"

#include "testing/cuda_testing.h"

namespace tqkv {
namespace {

uint64_t fresh_seed() { return testing::fresh_seed("cuda_test"); }

// Random vectors with varied norms, plus edge cases (zero, tiny, huge, one NaN, one Inf, spikes).
std::vector<float> make_inputs(size_t n, int d, SplitMix64& rng, bool edge_cases) {
  std::vector<float> x(n * d);
  for (size_t v = 0; v < n; ++v) {
    const double mag = std::exp(3.0 * rng.normal());
    for (int i = 0; i < d; ++i) x[v * d + i] = static_cast<float>(mag * rng.normal());
  }
  if (edge_cases && n >= 8) {
    std::fill(x.begin(), x.begin() + d, 0.0f);
    for (int i = 0; i < d; ++i) x[1 * d + i] = 1e-30f * static_cast<float>(rng.normal());
    for (int i = 0; i < d; ++i) x[2 * d + i] = 1e30f * static_cast<float>(rng.normal());
    x[3 * d + d / 2] = std::nanf("");
    x[4 * d + 1] = INFINITY;
    for (int i = 0; i < d; ++i) x[5 * d + i] = (i % 7 == 0) ? 1000.0f : 0.001f;
    x[6 * d + 3] = 5.0f;  // single spike
  }
  return x;
}

uint16_t to_bf16(float f) {  // round to nearest even (inputs are finite or NaN)
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

// ---- encode: bit-identical to the CPU reference ----

struct EncodeCase {
  const char* fmt;
  int dim;
};

class CudaEncode : public ::testing::TestWithParam<EncodeCase> {};

TEST_P(CudaEncode, BitIdenticalToCpu) {
  REQUIRE_GPU();
  const EncodeCase c = GetParam();
  auto spec = parse_format(c.fmt);
  ASSERT_TRUE(spec.ok());
  SplitMix64 rng(fresh_seed());
  for (bool bf16 : {false, true}) {
    QuantOptions opt;
    opt.seed = rng.next();
    opt.norm_correction = (rng.next() & 1) != 0;
    auto q = make_quantizer(spec.value(), c.dim, opt);
    ASSERT_TRUE(q.ok());
    const size_t n = 203;  // not a multiple of 16: partial last job
    std::vector<float> x = make_inputs(n, c.dim, rng, true);
    std::vector<uint16_t> xb(x.size());
    if (bf16) {
      for (size_t i = 0; i < x.size(); ++i) {
        xb[i] = to_bf16(x[i]);
        x[i] = from_bf16(xb[i]);  // the CPU encodes exactly the bf16 values
      }
    }
    const size_t cs = (*q)->code_size();
    std::vector<uint8_t> want(n * cs), got(n * cs);
    (*q)->encode(x.data(), n, want.data());
    auto dx = CudaBuffer::alloc(x.size() * 4);
    auto dc = CudaBuffer::alloc(n * cs);
    ASSERT_TRUE(dx.ok() && dc.ok());
    if (bf16) ASSERT_OK(dx->upload(xb.data(), xb.size() * 2));
    else ASSERT_OK(dx->upload(x.data(), x.size() * 4));
    ASSERT_OK(dc->fill_byte(0xA5));
    ASSERT_OK(cuda_encode_vectors(**q, dx->get(), bf16 ? CudaDType::kBF16 : CudaDType::kF32, n, dc->as<uint8_t>()));
    ASSERT_OK(dc->download(got.data(), got.size()));
    size_t bad = 0;
    for (size_t v = 0; v < n; ++v)
      if (std::memcmp(want.data() + v * cs, got.data() + v * cs, cs) != 0 && bad++ < 3)
        ADD_FAILURE() << c.fmt << " d=" << c.dim << (bf16 ? " bf16" : " f32") << ": vector " << v << " differs";
    EXPECT_EQ(bad, 0u) << c.fmt << " d=" << c.dim;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Formats, CudaEncode,
    ::testing::Values(EncodeCase{"rvq1x2", 64}, EncodeCase{"rvq1x2", 80}, EncodeCase{"rvq1x2", 128},
                      EncodeCase{"rvq1x2", 256}, EncodeCase{"rvq1x2", 96}, EncodeCase{"rvq1x2", 100},
                      EncodeCase{"rvq2x2", 64}, EncodeCase{"rvq2x2", 80}, EncodeCase{"rvq2x2", 128},
                      EncodeCase{"rvq2x2", 256}, EncodeCase{"tq2", 64}, EncodeCase{"tq2", 80},
                      EncodeCase{"tq2", 128}, EncodeCase{"tq2", 256}, EncodeCase{"tq2", 48},
                      EncodeCase{"tq4", 64}, EncodeCase{"tq4", 80}, EncodeCase{"tq4", 128},
                      EncodeCase{"tq4", 256}, EncodeCase{"tq3", 128}, EncodeCase{"rvq1x3", 96},
                      EncodeCase{"q8_0", 64}, EncodeCase{"q8_0", 80}, EncodeCase{"q8_0", 128},
                      EncodeCase{"q8_0", 256}, EncodeCase{"q4_0", 64}, EncodeCase{"q4_0", 80},
                      EncodeCase{"q4_0", 128}, EncodeCase{"q4_0", 256}, EncodeCase{"f16", 80},
                      EncodeCase{"f16", 128}),
    [](const auto& info) { return std::string(info.param.fmt) + "_d" + std::to_string(info.param.dim); });

// ---- the cache: codes in the pages, attention ----

struct CacheCase {
  const char* kfmt;
  const char* vfmt;
  int dim;
  int group;
  int page = 64;  // page_tokens (the kernels walk pages tile by tile: 16 and 48 check the walk)
};

class CudaCache : public ::testing::TestWithParam<CacheCase> {};

std::vector<double> decode_all(const Quantizer& q, const std::vector<uint8_t>& codes, int n) {
  std::vector<float> y(static_cast<size_t>(n) * q.dim());
  q.decode(codes.data(), n, y.data());
  return std::vector<double>(y.begin(), y.end());
}

// Appends ragged sequences in uneven chunks (partial tiles merge), checks the pages hold the
// CPU's codes, then checks decode (m = 1) and causal prefill (m = 5) attention against float64
// attention over the CPU-decoded cache.
TEST_P(CudaCache, CodesAndAttention) {
  REQUIRE_GPU();
  const CacheCase c = GetParam();
  SplitMix64 rng(fresh_seed());
  CudaCacheConfig cfg;
  cfg.n_kv_heads = 2;
  cfg.head_dim = c.dim;
  cfg.key_format = parse_format(c.kfmt).value();
  cfg.value_format = parse_format(c.vfmt).value();
  cfg.quant.seed = rng.next();
  cfg.layer = 3;
  cfg.page_tokens = c.page;
  cfg.max_pages = 256 * 64 / c.page;
  cfg.max_seqs = 4;
  auto cache = CudaLayerCache::make(cfg);
  ASSERT_TRUE(cache.ok()) << cache.status().to_string();
  CudaLayerCache& C = **cache;
  const int H = cfg.n_kv_heads, D = c.dim;
  const std::vector<int> seqs = {2, 0, 3};
  const std::vector<int> target = {1000 + static_cast<int>(rng.uniform(700)), 37, 30 + static_cast<int>(rng.uniform(300))};  // >= the 29 tokens of the shared chunks
  // host copies of what was appended: [seq][head][t][D]
  std::vector<std::vector<float>> K(4), V(4);
  for (int s : seqs) K[s].reserve(2000 * H * D), V[s].reserve(2000 * H * D);
  std::vector<std::vector<float>> Kh(4 * H), Vh(4 * H);
  auto append_chunk = [&](const std::vector<int>& ss, int n) {
    std::vector<float> k(ss.size() * H * n * D), v(k.size());
    for (auto& e : k) e = static_cast<float>(rng.normal());
    for (auto& e : v) e = static_cast<float>(rng.normal() * 2.0);
    for (size_t a = 0; a < ss.size(); ++a)
      for (int h = 0; h < H; ++h)
        for (int t = 0; t < n; ++t)
          for (int i = 0; i < D; ++i) {
            const size_t idx = ((a * H + h) * n + t) * D + i;
            Kh[ss[a] * H + h].push_back(k[idx]);
            Vh[ss[a] * H + h].push_back(v[idx]);
          }
    auto dk = CudaBuffer::alloc(k.size() * 4), dv = CudaBuffer::alloc(v.size() * 4);
    ASSERT_TRUE(dk.ok() && dv.ok());
    ASSERT_OK(dk->upload(k.data(), k.size() * 4));
    ASSERT_OK(dv->upload(v.data(), v.size() * 4));
    ASSERT_OK(C.append(ss, n, dk->get(), dv->get()));
    ASSERT_OK(cuda_synchronize());
  };
  // uneven chunks: all three together, then single tokens, then the rest per sequence
  append_chunk(seqs, 5);
  ASSERT_FALSE(HasFatalFailure());
  for (int r = 0; r < 3; ++r) append_chunk(seqs, 1);
  append_chunk({0}, 37 - 8);
  append_chunk({2, 3}, 21);
  ASSERT_FALSE(HasFatalFailure());
  for (size_t a = 0; a < seqs.size(); ++a) {
    const int s = seqs[a];
    for (int guard = 0; C.n_tokens(s) < target[a] && guard < 100; ++guard) {
      append_chunk({s}, std::min(target[a] - C.n_tokens(s), 1 + static_cast<int>(rng.uniform(200))));
      ASSERT_FALSE(HasFatalFailure());
    }
    ASSERT_EQ(C.n_tokens(s), target[a]);
  }

  // 1. the pages hold exactly the CPU quantizer's codes
  std::vector<std::vector<double>> Kd(4 * H), Vd(4 * H);
  for (int s : seqs)
    for (int h = 0; h < H; ++h) {
      const int n = C.n_tokens(s);
      for (int side = 0; side < 2; ++side) {
        const Quantizer& q = side ? *C.value_quantizer(h) : *C.key_quantizer(h);
        const std::vector<float>& x = side ? Vh[s * H + h] : Kh[s * H + h];
        std::vector<uint8_t> want(static_cast<size_t>(n) * q.code_size()), got(want.size());
        q.encode(x.data(), n, want.data());
        ASSERT_OK(C.read_codes(s, h, side == 1, 0, n, got.data()));
        int bad = -1;
        for (int t = 0; t < n && bad < 0; ++t)
          if (std::memcmp(want.data() + t * q.code_size(), got.data() + t * q.code_size(), q.code_size()) != 0) bad = t;
        ASSERT_EQ(bad, -1) << "seq " << s << " head " << h << (side ? " value" : " key") << " token " << bad;
        (side ? Vd : Kd)[s * H + h] = decode_all(q, got, n);
      }
    }

  // 2. attention vs float64 attention over the CPU-decoded cache
  const int HQ = H * c.group;
  const double sm = 1.0 / std::sqrt(static_cast<double>(D));
  for (int m : {1, 5}) {
    const int B = static_cast<int>(seqs.size());
    std::vector<float> q(static_cast<size_t>(B) * HQ * m * D), out(q.size());
    for (auto& e : q) e = static_cast<float>(rng.normal());
    auto dq = CudaBuffer::alloc(q.size() * 4), dout = CudaBuffer::alloc(q.size() * 4);
    ASSERT_TRUE(dq.ok() && dout.ok());
    ASSERT_OK(dq->upload(q.data(), q.size() * 4));
    // every compiled kernel variant (TQKV_ATTN_VARIANT; 1 exists for d = 128, 2 for lut4/lut4 at
    // d = 128; elsewhere they fall back to the default kernel)
    for (int vs = 0; vs < 9; ++vs) {
      const int variant = vs / 3, splits = std::array<int, 3>{0, 1, 3}[vs % 3];
      ASSERT_EQ(setenv("TQKV_ATTN_VARIANT", variant == 2 ? "2" : variant == 1 ? "1" : "0", 1), 0);
      ASSERT_OK(dout->fill_byte(0xFF));  // NaN poison: an unwritten element fails
      ASSERT_OK(C.attend(seqs, m, HQ, dq->as<float>(), dout->as<float>(), 0.f, splits));
      ASSERT_OK(cuda_synchronize());
      ASSERT_OK(dout->download(out.data(), out.size() * 4));
      double worst = 0;
      for (int b = 0; b < B; ++b) {
        const int s = seqs[b], n = C.n_tokens(s);
        for (int hq = 0; hq < HQ; ++hq) {
          const int h = hq / c.group;
          const auto& kd = Kd[s * H + h];
          const auto& vd = Vd[s * H + h];
          for (int j = 0; j < m; ++j) {
            const int pos = n - m + j;
            const float* qv = q.data() + ((static_cast<size_t>(b) * HQ + hq) * m + j) * D;
            double qn = 0;
            for (int i = 0; i < D; ++i) qn += static_cast<double>(qv[i]) * qv[i];
            qn = std::sqrt(qn);
            std::vector<double> sc(pos + 1), kn(pos + 1);
            double mx = -1e300, eps = 0;
            for (int t = 0; t <= pos; ++t) {
              double a = 0, k2 = 0;
              for (int i = 0; i < D; ++i) {
                a += static_cast<double>(qv[i]) * kd[static_cast<size_t>(t) * D + i];
                k2 += kd[static_cast<size_t>(t) * D + i] * kd[static_cast<size_t>(t) * D + i];
              }
              sc[t] = a * sm;
              mx = std::max(mx, sc[t]);
              // Score error: q and each decoded key coordinate are rounded to f16 (2^-11 relative
              // each), products exact, f32 sums: |ds| <= (2^-10 + 2^-20) sm sum|q_i||k_i|
              // <= (2^-10 + 2^-20) sm ||q|| ||k|| (Cauchy-Schwarz; the rotation keeps norms).
              eps = std::max(eps, (std::ldexp(1.0, -10) + std::ldexp(1.0, -20)) * sm * qn * std::sqrt(k2));
            }
            double l = 0;
            for (int t = 0; t <= pos; ++t) l += (sc[t] = std::exp(sc[t] - mx));
            std::vector<double> ref(D, 0.0);
            double pv = 0;  // sum_t p_t ||v_t||
            for (int t = 0; t <= pos; ++t) {
              const double p = sc[t] / l;
              double v2 = 0;
              for (int i = 0; i < D; ++i) {
                ref[i] += p * vd[static_cast<size_t>(t) * D + i];
                v2 += vd[static_cast<size_t>(t) * D + i] * vd[static_cast<size_t>(t) * D + i];
              }
              pv += p * std::sqrt(v2);
            }
            // Output error (2-norm; the value rotation keeps it): softmax weights move by at most
            // a factor e^{2 eps}; decoded value coordinates and the f16 weights p' each add
            // 2^-11 relative; f16 subnormal weights add at most 2^-24 per token relative to the
            // tile's largest value scale; exp2/f32 rounding 2^-16 slack.
            double max_vn = 0;
            for (int t = 0; t <= pos; ++t) {
              double v2 = 0;
              for (int i = 0; i < D; ++i) v2 += vd[static_cast<size_t>(t) * D + i] * vd[static_cast<size_t>(t) * D + i];
              max_vn = std::max(max_vn, std::sqrt(v2));
            }
            const double bound = (std::expm1(2 * eps) + 2 * std::ldexp(1.0, -11) + std::ldexp(1.0, -16)) * pv +
                                 (pos + 1) * std::ldexp(1.0, -24) * max_vn * 4;
            const float* o = out.data() + ((static_cast<size_t>(b) * HQ + hq) * m + j) * D;
            double err = 0;
            for (int i = 0; i < D; ++i) {
              ASSERT_TRUE(std::isfinite(o[i])) << "unwritten or non-finite output b=" << b << " hq=" << hq << " j=" << j << " i=" << i;
              err += (o[i] - ref[i]) * (o[i] - ref[i]);
            }
            err = std::sqrt(err);
            worst = std::max(worst, err / bound);
            ASSERT_LE(err, bound) << c.kfmt << "/" << c.vfmt << " d=" << D << " m=" << m << " splits=" << splits << " variant=" << variant << " item " << b
                                  << " q head " << hq << " query " << j;
          }
        }
      }
      std::printf("[cuda_test] %s/%s d=%d g=%d m=%d splits=%d variant=%d: worst error / bound = %.3f\n", c.kfmt, c.vfmt, D,
                  c.group, m, splits, variant, worst);
    }
    unsetenv("TQKV_ATTN_VARIANT");
  }
}

INSTANTIATE_TEST_SUITE_P(
    Formats, CudaCache,
    ::testing::Values(CacheCase{"rvq1x2", "tq2", 128, 4}, CacheCase{"tq2", "tq2", 64, 2}, CacheCase{"rvq1x2", "tq2", 256, 8},
                      CacheCase{"rvq2x2", "tq4", 128, 4}, CacheCase{"tq4", "tq4", 64, 1}, CacheCase{"tq4", "tq4", 256, 4},
                      CacheCase{"rvq1x2", "tq4", 128, 4}, CacheCase{"q4_0", "q4_0", 128, 4}, CacheCase{"q4_0", "q4_0", 64, 3},
                      CacheCase{"q4_0", "q4_0", 256, 4}, CacheCase{"q8_0", "q8_0", 128, 4}, CacheCase{"q8_0", "q8_0", 256, 2},
                      CacheCase{"f16", "f16", 128, 4}, CacheCase{"f16", "f16", 64, 8}, CacheCase{"rvq1x2", "tq2", 128, 4, 48},
                      CacheCase{"tq4", "tq4", 128, 2, 16}, CacheCase{"q4_0", "q4_0", 128, 4, 80}),
    [](const auto& info) {
      return std::string(info.param.kfmt) + "_" + info.param.vfmt + "_d" + std::to_string(info.param.dim) + "_g" +
             std::to_string(info.param.group) + (info.param.page != 64 ? "_p" + std::to_string(info.param.page) : "");
    });

// The CPU cache's pages, read through its public view (tqkv/kv_view.h), land in the GPU pages bit
// for bit: the codes equal those of the GPU's own fused encode of the same vectors, and attention
// over the loaded sequence equals attention over the GPU-appended one exactly (same pages, same
// deterministic kernel).
TEST(CudaCacheView, LoadsCpuCachePagesBitForBit) {
  REQUIRE_GPU();
  SplitMix64 rng(fresh_seed());
  const int H = 2, D = 128, n = 300;
  for (const char* fm : {"rvq1x2/tq2", "tq4/tq4", "q4_0/q4_0", "q8_0/q8_0"}) {
    const std::string spec(fm);
    const std::string kf = spec.substr(0, spec.find('/')), vf = spec.substr(spec.find('/') + 1);
    KVCacheOptions o;
    o.key_format = parse_format(kf).value();
    o.value_format = parse_format(vf).value();
    o.quant.seed = rng.next();
    auto cpu = LayerKVCache::make(H, D, o, 2);
    ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
    std::vector<float> k(static_cast<size_t>(H) * n * D), v(k.size());
    for (auto& e : k) e = static_cast<float>(rng.normal());
    for (auto& e : v) e = static_cast<float>(rng.normal());
    ASSERT_OK((*cpu)->append(0, n, HeadTokenView{k.data(), static_cast<int64_t>(n) * D, D},
                             HeadTokenView{v.data(), static_cast<int64_t>(n) * D, D}));
    CudaCacheConfig cfg;
    cfg.n_kv_heads = H;
    cfg.head_dim = D;
    cfg.key_format = o.key_format;
    cfg.value_format = o.value_format;
    cfg.quant = o.quant;
    cfg.layer = 2;
    cfg.max_pages = 32;
    cfg.max_seqs = 2;
    auto gpu = CudaLayerCache::make(cfg);
    ASSERT_TRUE(gpu.ok()) << gpu.status().to_string();
    ASSERT_OK((*gpu)->load_sequence(0, (*cpu)->view(), (*cpu)->sequence_view(0)));
    auto dk = CudaBuffer::alloc(k.size() * 4), dv = CudaBuffer::alloc(v.size() * 4);
    ASSERT_TRUE(dk.ok() && dv.ok());
    ASSERT_OK(dk->upload(k.data(), k.size() * 4));
    ASSERT_OK(dv->upload(v.data(), v.size() * 4));
    ASSERT_OK((*gpu)->append({1}, n, dk->get(), dv->get()));
    for (int h = 0; h < H; ++h)
      for (int side = 0; side < 2; ++side) {
        const size_t cs = (side ? (*gpu)->value_quantizer(h) : (*gpu)->key_quantizer(h))->code_size();
        std::vector<uint8_t> a(n * cs), b(n * cs);
        ASSERT_OK((*gpu)->read_codes(0, h, side == 1, 0, n, a.data()));
        ASSERT_OK((*gpu)->read_codes(1, h, side == 1, 0, n, b.data()));
        ASSERT_TRUE(a == b) << fm << " head " << h << (side ? " values" : " keys") << ": loaded pages differ from GPU-encoded pages";
      }
    const int HQ = 8;
    std::vector<float> q(static_cast<size_t>(2) * HQ * D), out(q.size());
    for (auto& e : q) e = static_cast<float>(rng.normal());
    std::copy(q.begin(), q.begin() + HQ * D, q.begin() + HQ * D);  // same query for both items
    auto dq = CudaBuffer::alloc(q.size() * 4), dout = CudaBuffer::alloc(q.size() * 4);
    ASSERT_TRUE(dq.ok() && dout.ok());
    ASSERT_OK(dq->upload(q.data(), q.size() * 4));
    ASSERT_OK(dout->fill_byte(0xFF));
    ASSERT_OK((*gpu)->attend({0, 1}, 1, HQ, dq->as<float>(), dout->as<float>()));
    ASSERT_OK(dout->download(out.data(), out.size() * 4));
    for (int i = 0; i < HQ * D; ++i) {
      ASSERT_TRUE(std::isfinite(out[i]));
      ASSERT_EQ(out[i], out[HQ * D + i]) << fm << " element " << i;
    }
  }
}

// Tensor parallelism (tqkv/head_shard.h): a GPU cache of the global kv heads [2, 4) of a 4-head
// layer (CudaCacheConfig::kv_head_offset = 2) encodes each head exactly as the CPU quantizer of the
// GLOBAL head (seed cache_rotation_seed(seed, layer, 2 + h, stream)), and takes the pages of a CPU
// shard cache (LayerKVCache::make(HeadShard{2, 2, 4}, ...)) bit for bit.
TEST(CudaCacheShard, EncodesTheGlobalHeadsAndLoadsACpuShard) {
  REQUIRE_GPU();
  SplitMix64 rng(fresh_seed());
  const int H = 2, D = 128, n = 200, layer = 3;
  const HeadShard shard{2, H, 4};
  for (const char* fm : {"rvq1x2/tq2", "tq4/tq4"}) {
    const std::string spec(fm);
    KVCacheOptions o;
    o.key_format = parse_format(spec.substr(0, spec.find('/'))).value();
    o.value_format = parse_format(spec.substr(spec.find('/') + 1)).value();
    o.quant.seed = rng.next();
    std::vector<float> k(static_cast<size_t>(H) * n * D), v(k.size());
    for (auto& e : k) e = static_cast<float>(rng.normal());
    for (auto& e : v) e = static_cast<float>(rng.normal());
    auto cpu = LayerKVCache::make(shard, D, o, layer);
    ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
    ASSERT_OK((*cpu)->append(0, n, HeadTokenView{k.data(), static_cast<int64_t>(n) * D, D},
                             HeadTokenView{v.data(), static_cast<int64_t>(n) * D, D}));
    CudaCacheConfig cfg;
    cfg.n_kv_heads = H;
    cfg.kv_head_offset = shard.kv_head_offset;
    cfg.head_dim = D;
    cfg.key_format = o.key_format;
    cfg.value_format = o.value_format;
    cfg.quant = o.quant;
    cfg.layer = layer;
    cfg.max_pages = 32;
    cfg.max_seqs = 2;
    auto gpu = CudaLayerCache::make(cfg);
    ASSERT_TRUE(gpu.ok()) << gpu.status().to_string();
    ASSERT_OK((*gpu)->load_sequence(0, (*cpu)->view(), (*cpu)->sequence_view(0)));
    auto dk = CudaBuffer::alloc(k.size() * 4), dv = CudaBuffer::alloc(v.size() * 4);
    ASSERT_TRUE(dk.ok() && dv.ok());
    ASSERT_OK(dk->upload(k.data(), k.size() * 4));
    ASSERT_OK(dv->upload(v.data(), v.size() * 4));
    ASSERT_OK((*gpu)->append({1}, n, dk->get(), dv->get()));
    for (int h = 0; h < H; ++h)
      for (int side = 0; side < 2; ++side) {
        const CacheStream st = side ? CacheStream::kValue : CacheStream::kKey;
        QuantOptions qo = o.quant;
        qo.seed = cache_rotation_seed(o.quant.seed, layer, shard.kv_head_offset + h, st);
        qo.value_stream = side == 1;  // as the caches make their value quantizers
        auto q = make_quantizer(side ? o.value_format : o.key_format, D, qo);
        ASSERT_TRUE(q.ok());
        const size_t cs = (*q)->code_size();
        std::vector<uint8_t> want(n * cs), loaded(n * cs), encoded(n * cs);
        (*q)->encode((side ? v : k).data() + static_cast<size_t>(h) * n * D, n, want.data());
        ASSERT_OK((*gpu)->read_codes(0, h, side == 1, 0, n, loaded.data()));
        ASSERT_OK((*gpu)->read_codes(1, h, side == 1, 0, n, encoded.data()));
        ASSERT_TRUE(encoded == want) << fm << " head " << h << (side ? " values" : " keys")
                                     << ": GPU codes are not the global head's CPU codes";
        ASSERT_TRUE(loaded == want) << fm << " head " << h << (side ? " values" : " keys")
                                    << ": the CPU shard's pages did not load bit for bit";
      }
    // The unsharded CPU cache's rotations (heads 0, 1) are not this shard's: loading is refused.
    auto whole = LayerKVCache::make(H, D, o, layer);
    ASSERT_TRUE(whole.ok());
    ASSERT_OK((*whole)->append(0, n, HeadTokenView{k.data(), static_cast<int64_t>(n) * D, D},
                               HeadTokenView{v.data(), static_cast<int64_t>(n) * D, D}));
    ASSERT_OK((*gpu)->truncate(0, 0));
    EXPECT_FALSE((*gpu)->load_sequence(0, (*whole)->view(), (*whole)->sequence_view(0)).ok());
  }
  CudaCacheConfig bad;
  bad.kv_head_offset = -1;
  bad.max_pages = 1;
  EXPECT_FALSE(CudaLayerCache::make(bad).ok());
}

TEST(CudaCacheErrors, ReportsProblemsAsStatus) {
  REQUIRE_GPU();
  CudaCacheConfig cfg;
  cfg.max_pages = 2;
  cfg.max_pages_per_seq = 16;  // the pool (2 pages), not the per-sequence limit, runs out first
  cfg.max_seqs = 1;
  cfg.head_dim = 100;
  EXPECT_FALSE(CudaLayerCache::make(cfg).ok());
  cfg.head_dim = 128;
  cfg.key_format = parse_format("kivi2").value();
  EXPECT_FALSE(CudaLayerCache::make(cfg).ok());
  // Formats outside the CUDA subset: one "no CUDA path" line naming the format, never an internal error.
  for (const char* name : {"rq4_0", "riq4_nl", "qjl2", "tqp3", "rabitq1", "tqo3x2"}) {  // pk{b}: CudaPkCacheErrors
    cfg.key_format = parse_format(name).value();
    const auto r = CudaLayerCache::make(cfg);
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_NE(r.status().to_string().find(std::string("no CUDA path for format ") + name), std::string::npos)
        << r.status().to_string();
  }
  cfg.key_format = parse_format("rvq1x2").value();
  auto c = CudaLayerCache::make(cfg);
  ASSERT_TRUE(c.ok());
  auto k = CudaBuffer::alloc(8 * 200 * 128 * 4);
  ASSERT_TRUE(k.ok());
  ASSERT_OK(k->fill_byte(0));
  const Status s = (*c)->append({0}, 200, k->get(), k->get());  // needs 4 pages of 64, pool has 2
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.to_string().find("exhausted"), std::string::npos) << s.to_string();
  EXPECT_FALSE((*c)->append({1}, 1, k->get(), k->get()).ok());
}

TEST(CudaBuild, ReportsWhetherAGpuIsPresent) {
  std::string why;
  const bool ok = cuda_available(&why);
  std::printf("[cuda_test] cuda_available=%d (%s) device: %s\n", ok, why.c_str(), cuda_device_name().c_str());
  SUCCEED();
}

}  // namespace
}  // namespace tqkv
