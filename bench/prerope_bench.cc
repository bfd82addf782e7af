// Decode + RoPE of pk{b} key blocks, per token: the scalar reference (PreRopeKeyCodec::decode +
// apply_rope, what attention ran before the SIMD kernels) vs the AVX2 / AVX-512 kernels
// (src/attention/prerope_kernels.h), head_dim 128, full-width RoPE, 64-token blocks of 4096
// encoded keys (L1/L2 resident: this measures compute, not memory). Keys: a mean plus a geometric
// per-channel sd profile; argument 1 is its widest channel's sd (0.1: every channel <= 4 bits;
// 3: pk4 gives 5-8-bit channels). Per-CPU-second rates (Google Benchmark's default).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "attention/attention_kernels.h"
#include "attention/prerope_kernels.h"
#include "tqkv/attention.h"
#include "tqkv/channel_basis.h"
#include "tqkv/prerope_keys.h"
#include "tqkv/simd.h"

namespace tqkv {
namespace {

constexpr int kDim = 128, kTokens = 4096;

// Random orthonormal basis, block-diagonal with blocks of `block` channels (block = kDim: dense).
std::shared_ptr<const ChannelBasis> random_basis(int block) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> g;
  std::vector<double> q(static_cast<size_t>(kDim) * kDim, 0.0);
  for (int b0 = 0; b0 < kDim; b0 += block)
    for (int j = b0; j < b0 + block; ++j) {
      for (int i = b0; i < b0 + block; ++i) q[static_cast<size_t>(i) * kDim + j] = g(rng);
      for (int pass = 0; pass < 2; ++pass)
        for (int k = b0; k < j; ++k) {
          double dot = 0;
          for (int i = b0; i < b0 + block; ++i) dot += q[i * kDim + j] * q[i * kDim + k];
          for (int i = b0; i < b0 + block; ++i) q[i * kDim + j] -= dot * q[i * kDim + k];
        }
      double nrm = 0;
      for (int i = b0; i < b0 + block; ++i) nrm += q[i * kDim + j] * q[i * kDim + j];
      for (int i = b0; i < b0 + block; ++i) q[i * kDim + j] /= std::sqrt(nrm);
    }
  return std::make_shared<const ChannelBasis>(orthonormal_basis(std::vector<float>(q.begin(), q.end()), kDim));
}

struct Setup {
  std::vector<uint8_t> codes;
  std::vector<float> inv_freq;
  RopeParams rope;
  size_t cs = 0;
  PreRopeKeyCodec codec;
  attn::PkPlan plan;
  attn::PkBasisPlan bplan;
};

Setup make_setup(double bits, double spread, int block) {
  std::vector<float> x(static_cast<size_t>(kTokens) * kDim);
  std::mt19937 rng(1);
  std::normal_distribution<float> g;
  for (int t = 0; t < kTokens; ++t)
    for (int i = 0; i < kDim; ++i)
      x[static_cast<size_t>(t) * kDim + i] = 0.2f * (i % 3) + (0.1f + static_cast<float>(spread) * std::exp(-0.1f * i)) * g(rng);
  Setup s{{}, {}, {}, 0,
          *PreRopeKeyCodec::fit(x.data(), kTokens, kDim, 0, bits, true, block ? random_basis(block) : nullptr), {}, {}};
  s.cs = s.codec.code_size();
  s.codes.resize(kTokens * s.cs);
  s.codec.encode(x.data(), kTokens, s.codes.data());
  s.rope.rotary_dims = kDim;
  s.inv_freq = rope_inv_freq(s.rope);
  const attn::PkRopeTables T = attn::make_pk_rope_tables(s.rope, s.inv_freq.data());
  if (block) attn::make_pk_basis_plan(s.codec, s.rope, T, &s.bplan);
  else attn::make_pk_plan(s.codec, s.rope, T, &s.plan);
  return s;
}

// state.range(0): 0 = reference, 1 = avx2, 2 = avx512; range(1): avg bits x 10; range(2): spread x 10;
// range(3): channel basis, 0 none, B = block-diagonal random orthonormal with blocks of B (128: dense).
void BM_PkDecodeRope(benchmark::State& state) {
  const int level = static_cast<int>(state.range(0));
  if (level > static_cast<int>(detected_simd_level())) {
    state.SkipWithError("SIMD level not supported by this CPU");
    return;
  }
  const int block = static_cast<int>(state.range(3));
  const Setup s = make_setup(state.range(1) / 10.0, state.range(2) / 10.0, block);
  std::vector<float> rows(static_cast<size_t>(64) * std::max({kDim, s.plan.dp, s.bplan.dp}));
  std::vector<float> ybuf(static_cast<size_t>(64) * std::max(kDim, s.bplan.y.dp));
  int blk = 0;
  for (auto _ : state) {
    const uint8_t* c = s.codes.data() + static_cast<size_t>(blk) * 64 * s.cs;
    if (level == 0) {
      s.codec.decode(c, 64, rows.data());
      for (int t = 0; t < 64; ++t) apply_rope(s.rope, s.inv_freq.data(), blk * 64 + t, rows.data() + t * kDim);
    } else if (block && level == 1) {
      attn::pk_decode_basis_rope_avx2(s.bplan, c, s.cs, 64, ybuf.data(), rows.data());
    } else if (block) {
      attn::pk_decode_basis_rope_avx512(s.bplan, c, s.cs, 64, ybuf.data(), rows.data());
    } else if (level == 1) {
      attn::pk_decode_rope_avx2(s.plan, c, s.cs, 64, rows.data());
    } else {
      attn::pk_decode_rope_avx512(s.plan, c, s.cs, 64, rows.data());
    }
    benchmark::DoNotOptimize(rows.data());
    blk = (blk + 1) % (kTokens / 64);
  }
  state.SetItemsProcessed(state.iterations() * 64);  // tokens
}
BENCHMARK(BM_PkDecodeRope)->ArgsProduct({{0, 1, 2}, {20, 30, 40}, {1, 30}, {0}});
// Key scores of a 64-token block against ns back-rotated queries (the work of attention's key
// side per block), AVX-512: range(0) 0 = decode + RoPE rows then the float score kernel (the
// path before the token-lane kernel), 1 = the token-lane kernel, 2 = f16 keys (convert + the float
// score kernel; the f16 baseline's key side); range(1): avg bits x 10; range(2): ns (G m).
void BM_PkKeyScores(benchmark::State& state) {
  if (detected_simd_level() != SimdLevel::kAvx512) {
    state.SkipWithError("needs AVX-512");
    return;
  }
  const int path = static_cast<int>(state.range(0)), ns = static_cast<int>(state.range(2));
  const Setup s = make_setup(state.range(1) / 10.0, 3.0, 0);
  std::vector<float> rows(static_cast<size_t>(64) * s.plan.dp), qb(static_cast<size_t>(ns) * s.plan.dp),
      scores(static_cast<size_t>(ns) * 64);
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  for (float& x : qb) x = g(rng);
  std::vector<uint16_t> f16(static_cast<size_t>(kTokens) * kDim);
  for (auto& h : f16) h = 0x3c00;  // 1.0
  int blk = 0;
  for (auto _ : state) {
    const uint8_t* c = s.codes.data() + static_cast<size_t>(blk) * 64 * s.cs;
    if (path == 0) {
      attn::pk_decode_rope_avx512(s.plan, c, s.cs, 64, rows.data());
      attn::float_scores_avx512(qb.data(), ns, rows.data(), 64, s.plan.dp, scores.data());
    } else if (path == 1) {
      attn::pk_scores_tl_avx512(s.plan, c, s.cs, 64, qb.data(), ns, rows.data(), scores.data());
    } else {
      attn::f16_scores_avx512(qb.data(), ns, f16.data() + static_cast<size_t>(blk) * 64 * kDim, 64, kDim, scores.data());
    }
    benchmark::DoNotOptimize(scores.data());
    blk = (blk + 1) % (kTokens / 64);
  }
  state.SetItemsProcessed(state.iterations() * 64);  // tokens
}
BENCHMARK(BM_PkKeyScores)->ArgsProduct({{0, 1, 2}, {20, 30, 40}, {1, 4, 8}});

// Channel bases (--pk-basis): dense (128) and block-diagonal (8, 16, 32), pk2 / pk3 / pk4.
BENCHMARK(BM_PkDecodeRope)->ArgsProduct({{0, 1, 2}, {20, 30, 40}, {30}, {8, 16, 32, 128}});

}  // namespace
}  // namespace tqkv
