// The fused attention against two independent float64 references, computed from the ORIGINAL
// K/V with the public quantizer API only (never the cache's own read()):
//
// 1. Tight: float64 attention on the DECODED original (tests/testing/cache_reference.h: what the
//    cache must hold, quantizer decode of each original token). Tolerance from the arithmetic:
//  - float kernels (scalar level everywhere; AVX-512 for f32/f16/q8_0/q4_0/kivi and rotated
//    formats stored per vector): float32
//    accumulation of <= 4096 terms, ~1e-6 relative RMS measured; bound 2e-5 (20x headroom,
//    still far below the error of the best lossy format, q8_0).
//  - AVX-512 bit-sliced kernels (rvq/tq with 1-2 bit passes) quantize the rotated query to int8
//    and the block's softmax weights to 7 bits, the lookup-tile kernels (3-4 planes, d % 16 == 0:
//    tq3/tq4/rvq2x2/...) the query, levels and weights to 14-bit integers; their extra error must
//    stay below 5% of the format's own error against exact attention on the original K/V
//    (docs/design.md; lookup tiles measured 0.05-0.15%).
//
// 2. Loose: float64 attention on the ORIGINAL K/V, with a bound predicted from the format's
//    measured per-token errors dk_t = k_hat_t - k_t, dv_t = v_hat_t - v_t (quantizer round trip
//    of the originals; the window/sink tokens carry their f16 error). To first order, with
//    p_t the exact softmax weights and o the exact output,
//        do = sum_t p_t dv_t + sum_t p_t ds_t (v_t - o),   ds_t = scale * q . dk_t
//    and, for errors independent across tokens and of the random Gaussian query q
//    (E[(q . dk)^2] = |q|^2 |dk|^2 / d),
//        E|do|^2 = sum_t p_t^2 |dv_t|^2 + scale^2 |q|^2 / d * sum_t p_t^2 |dk_t|^2 |v_t - o|^2.
//    Summed over every query of a case, the measured RMS must stay below 3x this prediction plus
//    the tight float tolerance: the factor 3 covers the second-order softmax term (convexity of
//    exp, which matters for 1-bit keys) and sampling noise (a case with one query has the
//    fluctuation of a single draw); the measured ratio is 0.37-1.76 over these cases (recorded as
//    the test property error_over_predicted; the largest is tq3/rvq1x1 with a single query).
//    A cache that stores a token in the wrong place, or a kernel that reads the wrong slot, has
//    errors of the size of |k_t - k_u| (~|k|), far above any format's prediction, so this check
//    catches bugs that the cache's own read() would share.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "testing/attention_reference.h"
#include "testing/cache_reference.h"
#include "tqkv/kv_cache.h"
#include "tqkv/simd.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

struct Case {
  const char* kfmt;
  const char* vfmt;
  int d, kv_len, n_kv, gqa, m;
  int window = 0, sinks = 0, seqs = 1;
  int threads = 0;  // 8 with one kv head and a long sequence: split-K (several splits merged)
  int split = 0;    // explicit split-K: compressed tokens per work item (0 = automatic)
  int calib = 0;    // pk_calib_tokens (tqo: tokens that fix the outlier channels); 0 = default
};

std::string name(const Case& c) {
  return std::string(c.kfmt) + "_" + c.vfmt + "_d" + std::to_string(c.d) + "_n" + std::to_string(c.kv_len) +
         "_g" + std::to_string(c.gqa) + "_m" + std::to_string(c.m) + "_w" + std::to_string(c.window) +
         "_s" + std::to_string(c.sinks) + "_q" + std::to_string(c.seqs) + "_t" + std::to_string(c.threads) +
         "_k" + std::to_string(c.split) + (c.calib ? "_c" + std::to_string(c.calib) : "");
}

struct Errors {
  double fused_vs_decoded = 0, decoded_vs_exact = 0, fused_vs_exact = 0, predicted = 0, norm = 0;
};

constexpr int kLayer = 3;

// Fills caches for c.seqs sequences (lengths kv_len, kv_len - 13, ...), K/V given as strided views
// into a padded buffer, and compares the fused output of the last m tokens.
Errors run_case(const Case& c, SimdLevel level) {
  const SimdLevel saved = active_simd_level();
  set_simd_level(level);
  KVCacheOptions o;
  o.key_format = *parse_format(c.kfmt);
  o.value_format = *parse_format(c.vfmt);
  o.recent_window = c.window;
  o.sink_tokens = c.sinks;
  if (c.calib > 0) o.pk_calib_tokens = c.calib;
  auto cache = LayerKVCache::make(c.n_kv, c.d, o, kLayer);
  EXPECT_TRUE(cache.ok()) << cache.status().to_string();
  const int nq = c.n_kv * c.gqa;
  Errors e;
  std::vector<LayerKVCache::Request> reqs;
  std::vector<std::vector<float>> qs, outs, ks, vs;
  std::vector<int> lens;
  for (int sq = 0; sq < c.seqs; ++sq) {
    const int len = std::max(c.m, c.kv_len - 13 * sq);
    lens.push_back(len);
    // K/V padded: token stride d + 5, head stride len * (d + 5) + 3.
    const int64_t ts = c.d + 5, hs = len * ts + 3;
    std::vector<float> k(c.n_kv * hs), v(c.n_kv * hs);
    std::vector<float> tmp(static_cast<size_t>(len) * c.d);
    for (int h = 0; h < c.n_kv; ++h) {
      generate_llm_like(tmp.data(), len, c.d, 100 + h + 10 * sq);
      for (int t = 0; t < len; ++t) std::memcpy(&k[h * hs + t * ts], &tmp[t * c.d], c.d * 4);
      generate_gaussian(tmp.data(), len, c.d, 200 + h + 10 * sq);
      for (int t = 0; t < len; ++t) std::memcpy(&v[h * hs + t * ts], &tmp[t * c.d], c.d * 4);
    }
    // Append in uneven chunks (exercises page boundaries and the window).
    for (int t0 = 0; t0 < len;) {
      const int n = std::min(len - t0, 1 + (t0 * 7 + 33) % 150);
      EXPECT_TRUE((*cache)->append(sq, n, {&k[t0 * ts], hs, ts}, {&v[t0 * ts], hs, ts}).ok());
      t0 += n;
    }
    ks.push_back(k);
    vs.push_back(v);
    std::vector<float> q(static_cast<size_t>(nq) * c.m * c.d);
    generate_gaussian(q.data(), nq * c.m, c.d, 300 + sq);
    for (float& x : q) x *= 3;  // peakier softmax than unit queries
    qs.push_back(q);
    outs.emplace_back(q.size(), 0.0f);
  }
  for (int sq = 0; sq < c.seqs; ++sq)
    reqs.push_back({sq, c.m, {qs[sq].data(), int64_t(c.m) * c.d, c.d}, {outs[sq].data(), int64_t(c.m) * c.d, c.d}});
  AttentionOptions ao;
  ao.threads = c.threads;
  ao.split_tokens = c.split;
  Status st = (*cache)->attend_batch(reqs, nq, ao);
  EXPECT_TRUE(st.ok()) << st.to_string();
  const double scale = 1 / std::sqrt(double(c.d));
  for (int sq = 0; sq < c.seqs; ++sq) {
    const int len = lens[sq];
    const int64_t ts = c.d + 5, hs = len * ts + 3;
    for (int h = 0; h < c.n_kv; ++h) {
      std::vector<float> ko(static_cast<size_t>(len) * c.d), vo(ko.size());
      for (int t = 0; t < len; ++t) {
        std::memcpy(&ko[t * c.d], &ks[sq][h * hs + t * ts], c.d * 4);
        std::memcpy(&vo[t * c.d], &vs[sq][h * hs + t * ts], c.d * 4);
      }
      const std::vector<float> kd = testing::expected_contents(o, c.d, kLayer, h, CacheStream::kKey, ko.data(), len);
      const std::vector<float> vd = testing::expected_contents(o, c.d, kLayer, h, CacheStream::kValue, vo.data(), len);
      // Per-token squared errors of the format on these originals.
      std::vector<double> dk2(len), dv2(len);
      for (int t = 0; t < len; ++t)
        for (int i = 0; i < c.d; ++i) {
          const size_t x = static_cast<size_t>(t) * c.d + i;
          dk2[t] += (double(kd[x]) - ko[x]) * (double(kd[x]) - ko[x]);
          dv2[t] += (double(vd[x]) - vo[x]) * (double(vd[x]) - vo[x]);
        }
      for (int g = 0; g < c.gqa; ++g)
        for (int j = 0; j < c.m; ++j) {
          const int qh = h * c.gqa + g;
          const float* q = &qs[sq][(static_cast<size_t>(qh) * c.m + j) * c.d];
          const float* out = &outs[sq][(static_cast<size_t>(qh) * c.m + j) * c.d];
          const int visible = len - c.m + j + 1;
          std::vector<double> ref, exact, p;
          testing::reference_attention(q, kd.data(), vd.data(), visible, c.d, scale, ref);
          testing::reference_attention(q, ko.data(), vo.data(), visible, c.d, scale, exact, &p);
          double q2 = 0;
          for (int i = 0; i < c.d; ++i) q2 += double(q[i]) * q[i];
          for (int t = 0; t < visible; ++t) {
            double vo2 = 0;  // |v_t - o|^2
            for (int i = 0; i < c.d; ++i) {
              const double dd = vo[static_cast<size_t>(t) * c.d + i] - exact[i];
              vo2 += dd * dd;
            }
            e.predicted += p[t] * p[t] * (dv2[t] + scale * scale * q2 / c.d * dk2[t] * vo2);
          }
          for (int i = 0; i < c.d; ++i) {
            e.fused_vs_decoded += (out[i] - ref[i]) * (out[i] - ref[i]);
            e.decoded_vs_exact += (ref[i] - exact[i]) * (ref[i] - exact[i]);
            e.fused_vs_exact += (out[i] - exact[i]) * (out[i] - exact[i]);
            e.norm += exact[i] * exact[i];
          }
        }
    }
  }
  e.fused_vs_decoded = std::sqrt(e.fused_vs_decoded / e.norm);
  e.decoded_vs_exact = std::sqrt(e.decoded_vs_exact / e.norm);
  e.fused_vs_exact = std::sqrt(e.fused_vs_exact / e.norm);
  e.predicted = std::sqrt(e.predicted / e.norm);
  set_simd_level(saved);
  return e;
}

// Check 2 (see the top): against exact attention on the original K/V.
void expect_within_predicted(const Case& c, const Errors& e) {
  EXPECT_LT(e.fused_vs_exact, 3 * e.predicted + 2e-5)
      << name(c) << ": error vs exact attention on the original K/V " << e.fused_vs_exact
      << ", predicted from the format's measured error " << e.predicted;
  ::testing::Test::RecordProperty("error_over_predicted",
                                  std::to_string(e.predicted > 0 ? e.fused_vs_exact / e.predicted : 0.0));
}

// Formats the AVX-512 kernels run on quantized integers: bit-sliced tiles (1-2 bit passes) and
// lookup tiles (3-4 planes, d % 16 == 0: int16 levels, query and weights).
bool bit_sliced(const char* f, int d) {
  auto s = *parse_format(f);
  return s.rotated() && (s.bits <= 2 || (s.passes * s.bits <= 4 && d % 16 == 0));
}

class FusedAttention : public ::testing::TestWithParam<Case> {};

TEST_P(FusedAttention, ScalarMatchesDecodedReference) {
  const Case& c = GetParam();
  Errors e = run_case(c, SimdLevel::kScalar);
  EXPECT_LT(e.fused_vs_decoded, 2e-5) << name(c) << " format error " << e.decoded_vs_exact;
  expect_within_predicted(c, e);
}

TEST_P(FusedAttention, Avx2MatchesDecodedReference) {
  // AVX2 float kernels (and the scalar nibble-LUT kernels for bit-sliced tiles): float32 accuracy.
  const Case& c = GetParam();
  if (detected_simd_level() < SimdLevel::kAvx2) GTEST_SKIP() << "CPU has no AVX2";
  Errors e = run_case(c, SimdLevel::kAvx2);
  EXPECT_LT(e.fused_vs_decoded, 2e-5) << name(c) << " format error " << e.decoded_vs_exact;
  expect_within_predicted(c, e);
}

TEST_P(FusedAttention, Avx512WithinDerivedTolerance) {
  const Case& c = GetParam();
  if (detected_simd_level() < SimdLevel::kAvx512) GTEST_SKIP() << "CPU has no AVX-512 (VNNI)";
  Errors e = run_case(c, SimdLevel::kAvx512);
  const bool quantized = bit_sliced(c.kfmt, c.d) || bit_sliced(c.vfmt, c.d);
  RecordProperty("format_error", std::to_string(e.decoded_vs_exact));
  RecordProperty("kernel_error", std::to_string(e.fused_vs_decoded));
  if (quantized) {
    EXPECT_LT(e.fused_vs_decoded, 0.05 * e.decoded_vs_exact)
        << name(c) << ": kernel error " << e.fused_vs_decoded << " vs format error " << e.decoded_vs_exact;
  } else {
    EXPECT_LT(e.fused_vs_decoded, 2e-5) << name(c);
  }
  expect_within_predicted(c, e);
}

const Case kCases[] = {
    // Every key format x value format at d = 128, GQA 4, 97 tokens.
    {"f32", "f32", 128, 97, 2, 4, 1}, {"f16", "f16", 128, 97, 2, 4, 1}, {"q8_0", "q8_0", 128, 97, 2, 4, 1},
    {"q4_0", "q4_0", 128, 97, 2, 4, 1}, {"kivi4", "kivi2", 128, 97, 2, 4, 1},
    {"q4_0", "q4_0", 8, 97, 4, 2, 5}, {"tq4", "tq4", 8, 97, 4, 2, 5}, {"rvq1x2", "tq2", 8, 97, 4, 2, 5}, {"kivi2", "kivi4", 128, 97, 2, 4, 1},
    {"tq4", "tq4", 128, 97, 2, 4, 1}, {"tq2", "tq2", 128, 97, 2, 4, 1}, {"tq1", "tq2", 128, 97, 2, 4, 1},
    {"rvq1x2", "tq2", 128, 97, 2, 4, 1}, {"rvq2x2", "tq4", 128, 97, 2, 4, 1}, {"rvq1x3", "q8_0", 128, 97, 2, 4, 1},
    {"rvq3x2", "kivi4", 128, 97, 2, 4, 1}, {"q8_0", "tq2", 128, 97, 2, 4, 1}, {"rvq1x2", "f16", 128, 97, 2, 4, 1},
    {"rvq4x1", "q4_0", 128, 97, 2, 4, 1}, {"rvq2x1", "kivi2", 128, 97, 2, 4, 1},
    // Shapes: head_dim 64/80/256, kv_len 1/54/4096, GQA 1/7/8, prefill chunks.
    {"rvq1x2", "tq2", 64, 54, 1, 1, 1}, {"rvq1x2", "tq2", 80, 54, 2, 7, 1}, {"rvq1x2", "tq2", 256, 97, 1, 8, 1},
    {"rvq1x2", "tq2", 128, 1, 2, 4, 1}, {"rvq1x2", "tq2", 128, 4096, 1, 8, 1}, {"f16", "f16", 80, 4096, 1, 4, 1},
    {"rvq2x2", "tq4", 80, 54, 1, 7, 8}, {"rvq1x2", "tq2", 128, 300, 2, 4, 37}, {"q4_0", "kivi4", 256, 54, 1, 1, 5},
    // Several sequences of different lengths in one batch.
    {"rvq1x2", "tq2", 128, 200, 2, 4, 2, 0, 0, 3}, {"f16", "q8_0", 64, 97, 2, 4, 1, 0, 0, 3},
    // Windows and sinks.
    {"rvq1x2", "tq2", 128, 300, 2, 4, 1, 32, 0}, {"rvq1x2", "tq2", 128, 300, 2, 4, 3, 0, 4},
    {"rvq2x2", "tq4", 80, 97, 1, 7, 2, 16, 4, 2}, {"q4_0", "q4_0", 64, 54, 2, 4, 1, 64, 4},
    // GQA 1/4/7/8 x kv_len 1/54/97/300 (300 = 18+ tiles, 4+ pages), decode (m = 1) and a causal
    // prefill of the whole sequence (m = kv_len), on the bit-sliced and a per-vector format.
    {"rvq1x2", "tq2", 96, 1, 1, 1, 1}, {"rvq1x2", "tq2", 96, 54, 1, 4, 54}, {"rvq1x2", "tq2", 96, 97, 2, 7, 1},
    {"rvq1x2", "tq2", 96, 300, 1, 8, 300}, {"rvq2x1", "tq1", 64, 97, 1, 8, 97}, {"tq3", "rvq1x1", 80, 300, 1, 1, 1},
    {"q8_0", "q4_0", 96, 1, 2, 8, 1}, {"q4_0", "kivi2", 96, 54, 1, 7, 1}, {"kivi4", "q8_0", 576, 97, 1, 4, 97},
    {"f16", "tq4", 96, 300, 1, 7, 300}, {"rvq2x3", "rvq1x3", 80, 300, 2, 1, 300},
    // Causal prefill longer than the window: early queries must not see the window's (future)
    // tokens, late ones see them in f16.
    {"q8_0", "q8_0", 64, 100, 1, 1, 100, 16, 0}, {"tq2", "tq2", 64, 130, 1, 4, 128, 16, 4},
    {"rvq1x2", "f16", 96, 97, 2, 7, 60, 32, 0},
    // Split-K: one kv head, 2500 tokens, 8 threads -> splits of 1024 tokens merged (plus sinks
    // and window in split 0).
    {"rvq1x2", "tq2", 128, 2500, 1, 4, 1, 0, 0, 1, 8}, {"q4_0", "q8_0", 96, 2500, 1, 7, 3, 32, 4, 1, 8},
    {"rvq2x2", "tq4", 80, 2500, 1, 1, 1, 0, 0, 2, 8},
    // Explicit split-K of 64 tokens: every tile boundary of a page is also a split boundary;
    // decode and prefill, with sinks and a window (split 0 also handles those).
    {"rvq1x2", "tq2", 96, 300, 2, 4, 1, 0, 0, 1, 2, 64}, {"rvq1x2", "tq2", 64, 300, 1, 7, 100, 16, 4, 2, 2, 64},
    {"q8_0", "kivi4", 80, 200, 1, 8, 50, 0, 3, 1, 2, 128}, {"f16", "rvq2x1", 128, 97, 2, 1, 97, 0, 0, 1, 2, 64},
    // The peers (src/quant/peers.cc), attended through their decode one 64-token tile at a time:
    // llama.cpp's rotated q4_0 / iq4_nl (keys H_128, values H_64 at d = 128; unrotated at d = 80),
    // QJL keys (unbiased, high-variance scores: check 2's first-order model assumes errors
    // independent of the query direction, which the Gaussian projection gives), TurboQuant-prod.
    {"rq4_0", "rq4_0", 128, 97, 2, 4, 1}, {"riq4_nl", "riq4_nl", 128, 97, 2, 4, 1}, {"rq4_0", "riq4_nl", 80, 54, 1, 7, 8},
    {"qjl1", "tq2", 128, 97, 2, 4, 1}, {"qjl2", "f16", 64, 300, 1, 8, 300}, {"qjl4", "rq4_0", 128, 200, 2, 4, 2, 0, 0, 3},
    {"tqp2", "tq2", 128, 97, 2, 4, 1}, {"tqp3", "tq3", 128, 97, 2, 4, 1}, {"tqp4", "tq4", 128, 300, 2, 4, 3, 32, 4},
    {"tqp3", "riq4_nl", 80, 54, 1, 7, 8}, {"tqp3", "rq4_0", 128, 2500, 1, 4, 1, 0, 0, 1, 8},
    {"riq4_nl", "tqp2", 64, 300, 1, 7, 100, 16, 4, 2, 2, 64},
    // rabitq1: tq1's bit-sliced tiles with RaBitQ's scale (the AVX-512 bit-sliced kernels).
    {"rabitq1", "tq2", 128, 97, 2, 4, 1}, {"rabitq1", "rabitq1", 80, 300, 1, 7, 100, 16, 4, 2, 2, 64},
    // The TurboQuant outlier split (tqkv/outlier_split.h): per-sequence channel set from the first
    // `calib` tokens (f16 until then), attended through its decode. head_dim 64/80/96/128, kv_len
    // 1 (still pending), 54, 97, 300 (4+ pages), GQA 1/4/7/8, prefill, sinks + window, split-K,
    // as keys and as values, next to a tq / pk-free partner stream that waits with it.
    {"tqo3x2", "tq2", 128, 97, 2, 4, 1, 0, 0, 1, 0, 0, 32}, {"tqo3x2", "tqo3x2", 64, 54, 1, 8, 1, 0, 0, 1, 0, 0, 16},
    {"tqo4x2", "tq3", 80, 97, 2, 7, 5, 0, 0, 1, 0, 0, 40}, {"tq2", "tqo3x2", 96, 54, 1, 1, 54, 0, 0, 1, 0, 0, 20},
    {"tqo3x2", "f16", 128, 1, 1, 4, 1, 0, 0, 1, 0, 0, 8}, {"tqo4x3", "tqo3x2", 96, 300, 2, 4, 3, 16, 4, 2, 2, 64, 100},
    {"tqo3x2", "tq2", 128, 97, 1, 8, 97}, {"tqo2x1", "q8_0", 80, 300, 1, 7, 100, 0, 0, 1, 8, 0, 64},
    // tt{b} (trellis code, src/quant/trellis.h), attended through its decode: head_dim 64/80/96/128,
    // kv_len 1/54/97, GQA 1/4/7/8, decode and prefill, sinks/window, several sequences, split-K.
    {"tq3", "tt3", 128, 97, 2, 4, 1}, {"tt2", "tt2", 128, 97, 2, 4, 1}, {"tt3", "tt4", 64, 54, 1, 1, 54},
    {"tt1", "tt3", 80, 97, 1, 7, 8}, {"f16", "tt2", 96, 1, 2, 8, 1}, {"tt4", "tt2", 96, 54, 1, 8, 1, 16, 4},
    {"q8_0", "tt3", 128, 300, 2, 4, 3, 32, 4, 2, 2, 64}, {"tt3", "tt3", 80, 97, 1, 4, 97, 0, 0, 3},
};

INSTANTIATE_TEST_SUITE_P(All, FusedAttention, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& i) { return name(i.param); });

}  // namespace
}  // namespace tqkv
