// Decode + RoPE of pk{b} key blocks, per token: the scalar reference (PreRopeKeyCodec::decode +
// apply_rope, what attention ran before the SIMD kernels) vs the AVX2 / AVX-512 kernels
// (src/attention/prerope_kernels.h), head_dim 128, full-width RoPE, 64-token blocks of 4096
// encoded keys (L1/L2 resident: this measures compute, not memory). Keys: a mean plus a geometric
// per-channel sd profile; argument 1 is its widest channel's sd (0.1: every channel <= 4 bits;
// 3: pk4 gives 5-8-bit channels). Per-CPU-second rates (Google Benchmark's default).
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "attention/prerope_kernels.h"
#include "tqkv/attention.h"
#include "tqkv/prerope_keys.h"
#include "tqkv/simd.h"

namespace tqkv {
namespace {

constexpr int kDim = 128, kTokens = 4096;

struct Setup {
  std::vector<uint8_t> codes;
  std::vector<float> inv_freq;
  RopeParams rope;
  size_t cs = 0;
  PreRopeKeyCodec codec;
  attn::PkPlan plan;
};

Setup make_setup(double bits, double spread) {
  std::vector<float> x(static_cast<size_t>(kTokens) * kDim);
  std::mt19937 rng(1);
  std::normal_distribution<float> g;
  for (int t = 0; t < kTokens; ++t)
    for (int i = 0; i < kDim; ++i)
      x[static_cast<size_t>(t) * kDim + i] = 0.2f * (i % 3) + (0.1f + static_cast<float>(spread) * std::exp(-0.1f * i)) * g(rng);
  Setup s{{}, {}, {}, 0, *PreRopeKeyCodec::fit(x.data(), kTokens, kDim, 0, bits), {}};
  s.cs = s.codec.code_size();
  s.codes.resize(kTokens * s.cs);
  s.codec.encode(x.data(), kTokens, s.codes.data());
  s.rope.rotary_dims = kDim;
  s.inv_freq = rope_inv_freq(s.rope);
  const attn::PkRopeTables T = attn::make_pk_rope_tables(s.rope, s.inv_freq.data());
  attn::make_pk_plan(s.codec, s.rope, T, &s.plan);
  return s;
}

// state.range(0): 0 = reference, 1 = avx2, 2 = avx512; range(1): avg bits x 10; range(2): spread x 10.
void BM_PkDecodeRope(benchmark::State& state) {
  const int level = static_cast<int>(state.range(0));
  if (level > static_cast<int>(detected_simd_level())) {
    state.SkipWithError("SIMD level not supported by this CPU");
    return;
  }
  const Setup s = make_setup(state.range(1) / 10.0, state.range(2) / 10.0);
  std::vector<float> rows(static_cast<size_t>(64) * std::max(kDim, s.plan.dp));
  int blk = 0;
  for (auto _ : state) {
    const uint8_t* c = s.codes.data() + static_cast<size_t>(blk) * 64 * s.cs;
    if (level == 0) {
      s.codec.decode(c, 64, rows.data());
      for (int t = 0; t < 64; ++t) apply_rope(s.rope, s.inv_freq.data(), blk * 64 + t, rows.data() + t * kDim);
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
BENCHMARK(BM_PkDecodeRope)->ArgsProduct({{0, 1, 2}, {20, 30, 40}, {1, 30}});

}  // namespace
}  // namespace tqkv
