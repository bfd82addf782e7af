// The KLD base file (docs/format.md, "KLD base file") byte by byte: a file written by a base run
// is parsed here from the documented layout alone, and a base file built here by hand is read
// back by a later run, whose KLD / top-1 / RMS-dp statistics must equal the values computed in
// this test from the documented formula.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "testing/runtime_cli.h"
#include "testing/runtime_tiny_model.h"
#include "tqkv/perplexity.h"

namespace tqkv {
namespace {

template <typename T>
T get(const std::vector<uint8_t>& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}
template <typename T>
void put(std::vector<uint8_t>& b, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  b.insert(b.end(), p, p + sizeof(T));
}

std::vector<uint8_t> slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

TEST(KldFile, WrittenBytesFollowTheDocumentedLayoutAndHandBuiltFileIsReadBack) {
  testing::TinySpec s;
  s.ctx = 16;
  GgufWriter w;
  const testing::TinyModel tiny = testing::make_tiny_model(s, &w);
  auto model = Model::from_gguf(std::move(*GgufFile::parse(w.to_bytes())));
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  std::string text;
  for (int i = 0; i < 120; ++i) text += static_cast<char>('a' + (i * 7) % 26);
  const ModelCacheConfig f16 = *cache_config_from_method("f16", 1, 2, 2, true);

  // 1. A base run storing the whole distribution (top_k = vocab).
  PerplexityOptions o;
  o.ctx = 16;
  o.threads = 1;
  o.kld_top_k = 0;
  o.kld_base_out = testing::temp_path("kld_full.kld");
  auto base = run_perplexity(**model, f16, text, o);
  ASSERT_TRUE(base.ok()) << base.status().to_string();
  const std::vector<uint8_t> a = slurp(o.kld_base_out);
  ASSERT_GE(a.size(), 48u);
  EXPECT_EQ(std::string(a.begin(), a.begin() + 8), "TQKVKLD1");
  EXPECT_EQ(get<uint32_t>(a, 8), 2u);                       // version
  const uint32_t V = get<uint32_t>(a, 12);
  EXPECT_EQ(V, static_cast<uint32_t>(s.vocab));             // vocab
  EXPECT_EQ(get<uint32_t>(a, 16), V);                       // top_k = vocab
  EXPECT_EQ(get<uint32_t>(a, 20), 16u);                     // ctx
  const uint32_t n_chunks = get<uint32_t>(a, 24);
  EXPECT_EQ(n_chunks, static_cast<uint32_t>(base->chunks));
  {
    // model_fingerprint: FNV-1a 64 over the arch name, the int32 shape fields and the float32
    // output_norm and blk.0.attn_norm weights, folded as h ^ (h >> 32).
    uint64_t h = 0xcbf29ce484222325ull;
    auto bytes = [&](const void* p, size_t n) {
      for (size_t i = 0; i < n; ++i) { h ^= static_cast<const uint8_t*>(p)[i]; h *= 0x100000001b3ull; }
    };
    bytes(s.arch.data(), s.arch.size());
    const int32_t f[] = {s.dim, s.hidden, s.n_layers, s.n_heads, s.n_kv_heads, s.dim / s.n_heads, s.vocab};
    bytes(f, sizeof f);
    bytes(tiny.out_norm.data(), tiny.out_norm.size() * sizeof(float));
    bytes(tiny.layers[0].attn_norm.data(), tiny.layers[0].attn_norm.size() * sizeof(float));
    EXPECT_EQ(get<uint32_t>(a, 28), static_cast<uint32_t>(h ^ (h >> 32)));  // model_fingerprint
  }
  const uint64_t n_pos = get<uint64_t>(a, 32);
  EXPECT_EQ(n_pos, uint64_t(n_chunks) * (16 - 1 - 16 / 2));
  EXPECT_EQ(n_pos, static_cast<uint64_t>(base->tokens));
  const size_t rec = 8 + 8 * size_t(V);
  ASSERT_EQ(a.size(), 48 + n_pos * rec);
  // Per record: ids a permutation of the vocabulary, most likely first (ties: lower id first),
  // log-probs of a distribution, logprob_next equal to the stored log-prob of next_token.
  std::vector<std::vector<double>> la(n_pos, std::vector<double>(V));  // the base run's log-probs
  std::vector<int> next(n_pos), top1(n_pos);
  for (uint64_t r = 0; r < n_pos; ++r) {
    const size_t off = 48 + r * rec;
    next[r] = get<int32_t>(a, off);
    ASSERT_GE(next[r], 0);
    ASSERT_LT(next[r], static_cast<int>(V));
    std::vector<bool> seen(V, false);
    double sum = 0;
    for (uint32_t i = 0; i < V; ++i) {
      const int id = get<int32_t>(a, off + 8 + 4 * i);
      const float lp = get<float>(a, off + 8 + 4 * V + 4 * i);
      ASSERT_TRUE(id >= 0 && id < static_cast<int>(V) && !seen[id]) << "record " << r << " slot " << i;
      seen[id] = true;
      la[r][id] = lp;
      sum += std::exp(double(lp));
      if (i == 0) top1[r] = id;
      if (i > 0) {
        const float prev = get<float>(a, off + 8 + 4 * V + 4 * (i - 1));
        const int prev_id = get<int32_t>(a, off + 8 + 4 * (i - 1));
        EXPECT_TRUE(prev > lp || (prev == lp && prev_id < id)) << "record " << r << " not sorted at " << i;
      }
    }
    // float32 log-probs of ~37 terms: the sum is 1 to ~V * 2^-24 relative.
    EXPECT_NEAR(sum, 1.0, 1e-5) << "record " << r;
    EXPECT_EQ(get<float>(a, off + 4), static_cast<float>(la[r][next[r]])) << "record " << r;
  }

  // 2. A hand-built base file: the same header with top_k = 3, every position claiming
  //    p(2) = 1/2, p(0) = 1/4, p(5) = 1/8 (rest 1/8) and p(next) = 1/2.
  std::vector<uint8_t> b(a.begin(), a.begin() + 48);
  const uint32_t k3 = 3;
  std::memcpy(b.data() + 16, &k3, 4);
  const int ids[3] = {2, 0, 5};
  const double pb[3] = {0.5, 0.25, 0.125};
  for (uint64_t r = 0; r < n_pos; ++r) {
    put<int32_t>(b, next[r]);
    put<float>(b, static_cast<float>(std::log(0.5)));
    for (int id : ids) put<int32_t>(b, id);
    for (double p : pb) put<float>(b, static_cast<float>(std::log(p)));
  }
  const std::string bpath = testing::temp_path("kld_hand.kld");
  std::ofstream(bpath, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
  // The new run is the same f16 run as the base of step 1, so its log-probs are la (to float32).
  double kld = 0, dp2 = 0;
  int agree = 0;
  for (uint64_t r = 0; r < n_pos; ++r) {
    double pn_sum = 0, k = 0;
    for (int i = 0; i < 3; ++i) {
      const double lb = double(static_cast<float>(std::log(pb[i])));
      k += std::exp(lb) * (lb - la[r][ids[i]]);
      pn_sum += std::exp(la[r][ids[i]]);
    }
    double pb_sum = 0;
    for (double p : pb) pb_sum += std::exp(double(static_cast<float>(std::log(p))));
    k += (1 - pb_sum) * (std::log(1 - pb_sum) - std::log(1 - pn_sum));
    kld += std::max(0.0, k);
    agree += top1[r] == 2;
    const double dp = std::exp(la[r][next[r]]) - std::exp(double(static_cast<float>(std::log(0.5))));
    dp2 += dp * dp;
  }
  PerplexityOptions o2 = o;
  o2.kld_base_out.clear();
  o2.kld_in = bpath;
  auto got = run_perplexity(**model, f16, text, o2);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_TRUE(got->has_kld);
  // The only difference from this computation: the run uses its float64 log-probs where this
  // test has their float32 copies (relative 6e-8 of |log p| <= ~10): 1e-5 absolute is ample, and
  // far below the KLD itself (> 0.1 here: the hand-built distribution is nothing like the model's).
  EXPECT_GT(kld / n_pos, 0.1);
  EXPECT_NEAR(got->kld_mean, kld / n_pos, 1e-5);
  EXPECT_NEAR(got->rms_dp, std::sqrt(dp2 / n_pos), 1e-5);
  EXPECT_EQ(got->top1_agreement, double(agree) / n_pos);
}

}  // namespace
}  // namespace tqkv
