// Forward pass of tiny random models (written to GGUF here) against a naive float64 reference,
// for llama and qwen2, GQA on and off, tied and separate heads, every weight type; prefill and
// token-by-token decode; and the loader's errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>

#include "testing/runtime_tiny_model.h"
#include "tqkv/model.h"

namespace tqkv {
namespace {

using testing::TinySpec;

ModelCacheConfig f32_cache() {
  auto c = cache_config_from_method("f32", 1, 2, 2, false);
  return *c;
}

struct Case {
  const char* name;
  TinySpec spec;
};

// Tolerance: every logit is a chain of float32 dot products of length <= 64 through 2 layers
// (q/k/v, softmax, o, gate/up/down, head). Each dot product has relative error <= 64 * 2^-24
// ~ 4e-6 of the sum of |terms|; with O(1) activations the logits (RMS ~1-3) carry an absolute error
// of ~1e-5 at most. We allow 2e-5 * (1 + |logit|) (observed: <= 3.3e-6).
constexpr double kTol = 2e-5;

void check_close(const std::vector<float>& got, const std::vector<double>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]) / (1.0 + std::fabs(want[i]));
    worst = std::max(worst, err);
  }
  EXPECT_LT(worst, kTol) << what;
  if (getenv("TQKV_PRINT_ERR")) printf("%s worst %.3g\n", what, worst);
}

class ForwardVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardVsReference, PrefillAndDecodeMatchFloat64) {
  const TinySpec& s = GetParam().spec;
  GgufWriter w;
  testing::TinyModel ref = testing::make_tiny_model(s, &w);
  auto file = GgufFile::parse(w.to_bytes());
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  auto model = Model::from_gguf(std::move(*file));
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  EXPECT_EQ((*model)->config().tied_output, s.tied);
  const std::vector<int> tokens = {1, 5, 9, 33, 7, 7, 21, 3, 36, 0, 12, 18, 2};
  const std::vector<double> want = testing::reference_forward(ref, tokens);
  const int V = s.vocab, n = static_cast<int>(tokens.size());

  // Prefill in one call (and in batches of 5 to cross the internal batch boundary).
  for (int max_batch : {64, 5}) {
    auto ctx = InferenceContext::make(**model, f32_cache(), max_batch);
    ASSERT_TRUE(ctx.ok()) << ctx.status().to_string();
    std::vector<float> logits(size_t(n) * V);
    ASSERT_TRUE((*ctx)->forward(tokens.data(), n, logits.data(), true).ok());
    check_close(logits, want, "prefill");
  }
  // Prefill 4 tokens, then decode one at a time (last-token logits only).
  auto ctx = InferenceContext::make(**model, f32_cache());
  ASSERT_TRUE(ctx.ok());
  std::vector<float> last(V), got;
  ASSERT_TRUE((*ctx)->forward(tokens.data(), 4, last.data(), false).ok());
  got.insert(got.end(), last.begin(), last.end());
  for (int i = 4; i < n; ++i) {
    ASSERT_TRUE((*ctx)->forward(&tokens[i], 1, last.data(), false).ok());
    got.insert(got.end(), last.begin(), last.end());
  }
  check_close(got, std::vector<double>(want.begin() + size_t(3) * V, want.end()), "decode");
  EXPECT_EQ((*ctx)->n_past(), n);
  // Rollback then replay gives the same logits.
  ASSERT_TRUE((*ctx)->truncate(10).ok());
  ASSERT_TRUE((*ctx)->forward(&tokens[10], 1, last.data(), false).ok());
  check_close(last, std::vector<double>(want.begin() + size_t(10) * V, want.begin() + size_t(11) * V), "rollback");
}

TinySpec spec(std::string arch, int kv, bool tied, GgmlType t = GgmlType::kF32) {
  TinySpec s;
  s.arch = arch;
  s.n_kv_heads = kv;
  s.tied = tied;
  s.wtype = t;
  s.seed = 11 + kv;
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Tiny, ForwardVsReference,
    ::testing::Values(Case{"llama_mha", spec("llama", 4, false)}, Case{"llama_gqa2", spec("llama", 2, false)},
                      Case{"llama_mqa_tied", spec("llama", 1, true)}, Case{"qwen2_mha", spec("qwen2", 4, true)},
                      Case{"qwen2_gqa", spec("qwen2", 2, false)}, Case{"qwen3_gqa", spec("qwen3", 2, true)},
                      Case{"llama_rope_freqs", [] { auto s = spec("llama", 2, false); s.rope_freqs = true; return s; }()},
                      Case{"llama_f16", spec("llama", 2, false, GgmlType::kF16)},
                      Case{"llama_bf16", spec("llama", 2, false, GgmlType::kBF16)},
                      Case{"llama_q8_0", spec("llama", 2, false, GgmlType::kQ8_0)},
                      Case{"llama_q4_0", spec("llama", 2, true, GgmlType::kQ4_0)}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

TEST(ForwardErrors, ContextAndTokens) {
  GgufWriter w;
  TinySpec s;
  s.ctx = 8;
  testing::make_tiny_model(s, &w);
  auto model = Model::from_gguf(std::move(*GgufFile::parse(w.to_bytes())));
  ASSERT_TRUE(model.ok());
  auto ctx = InferenceContext::make(**model, f32_cache());
  std::vector<float> logits(size_t(9) * s.vocab);
  std::vector<int> toks(9, 3);
  EXPECT_EQ((*ctx)->forward(toks.data(), 9, logits.data(), true).code(), StatusCode::kOutOfRange);
  toks[0] = s.vocab;
  EXPECT_EQ((*ctx)->forward(toks.data(), 1, logits.data(), false).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*ctx)->n_past(), 0);
}

Status load_with_arch(const std::string& arch) {
  GgufWriter w;
  TinySpec s;
  s.arch = arch;
  testing::make_tiny_model(s, &w);
  auto f = GgufFile::parse(w.to_bytes());
  if (!f.ok()) return f.status();
  return Model::from_gguf(std::move(*f)).status();
}

TEST(ModelLoad, Errors) {
  Status st = load_with_arch("gpt-neox");
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("architecture 'gpt-neox'"), std::string::npos) << st.message();

  // A tensor of an unsupported type with the name the loader needs is rejected, naming both.
  GgufWriter w;
  TinySpec s;
  w.add_string("general.architecture", "llama");
  for (auto [k, v] : std::vector<std::pair<std::string, uint32_t>>{{"context_length", 16}, {"embedding_length", 256},
                                                                  {"feed_forward_length", 256}, {"block_count", 1},
                                                                  {"attention.head_count", 4}})
    w.add_u32("llama." + k, v);
  w.add_string("tokenizer.ggml.model", "llama");
  std::vector<std::string> toks(4, "x");
  toks[1] = "<s>"; toks[2] = "</s>"; toks[3] = "y";
  w.add_string_array("tokenizer.ggml.tokens", toks);
  w.add_tensor("token_embd.weight", GgmlType::kQ5_K, {256, 4}, std::vector<uint8_t>(4 * 176));
  auto f = GgufFile::parse(w.to_bytes());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  st = Model::from_gguf(std::move(*f)).status();
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("q5_K"), std::string::npos) << st.message();

  // Missing tensors / wrong shapes: an extra layer announced by the metadata has no tensors.
  GgufWriter w2;
  TinySpec s2;
  s2.n_layers = 2;
  testing::make_tiny_model(s2, &w2);
  auto bytes = w2.to_bytes();
  // Patch llama.block_count 2 -> 3 in place (the first uint32 value 2 after its key).
  const std::string key = "llama.block_count";
  auto it = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  ASSERT_NE(it, bytes.end());
  *(it + key.size() + 4) = 3;
  auto f2 = GgufFile::parse(bytes);
  ASSERT_TRUE(f2.ok());
  st = Model::from_gguf(std::move(*f2)).status();
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_NE(st.message().find("block_count 3 needs more tensors"), std::string::npos) << st.message();

  // A missing tensor: rename blk.1.ffn_up.weight in place.
  bytes = w2.to_bytes();
  const std::string up = "blk.1.ffn_up.weight";
  it = std::search(bytes.begin(), bytes.end(), up.begin(), up.end());
  ASSERT_NE(it, bytes.end());
  *(it + 10) = 'X';
  st = Model::from_gguf(std::move(*GgufFile::parse(bytes))).status();
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("missing tensor 'blk.1.ffn_up.weight'"), std::string::npos) << st.message();

  // Shape inconsistent with the metadata: feed_forward_length 64 -> 32.
  bytes = w2.to_bytes();
  const std::string ff = "llama.feed_forward_length";
  it = std::search(bytes.begin(), bytes.end(), ff.begin(), ff.end());
  *(it + ff.size() + 4) = 32;
  st = Model::from_gguf(std::move(*GgufFile::parse(bytes))).status();
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_NE(st.message().find("ffn_gate.weight' has shape [32, 64], expected [32, 32]"), std::string::npos)
      << st.message();
}

}  // namespace
}  // namespace tqkv

namespace tqkv {
namespace {

// Byte flips anywhere in a model file: loading returns an error or a model that runs; never a crash.
TEST(ModelLoad, CorruptedFilesNeverCrash) {
  GgufWriter w;
  TinySpec s;
  s.n_layers = 1;
  s.ctx = 8;
  testing::make_tiny_model(s, &w);
  const std::vector<uint8_t> good = w.to_bytes();
  auto gf = GgufFile::parse(good);
  ASSERT_TRUE(gf.ok());
  const size_t header = (*gf)->data_offset();
  std::mt19937 rng(5);
  int loaded = 0, refused = 0;
  std::vector<float> logits(size_t(2) * s.vocab);
  const int toks[2] = {1, 4};
  // Every header byte; about 200 places in the tensor data (flips there only change numbers).
  const size_t data_step = std::max<size_t>(1, (good.size() - header) / 200);
  for (size_t i = 0; i < good.size(); i += (i < header ? 1 : data_step)) {
    for (uint8_t x : {uint8_t{0xff}, static_cast<uint8_t>(rng() | 1)}) {
      auto b = good;
      b[i] ^= x;
      auto f = GgufFile::parse(std::move(b));
      if (!f.ok()) { ++refused; continue; }
      auto m = Model::from_gguf(std::move(*f));
      if (!m.ok()) { ++refused; continue; }
      ++loaded;
      auto ctx = InferenceContext::make(**m, f32_cache(), 4, 8);
      if (ctx.ok()) (void)(*ctx)->forward(toks, 2, logits.data(), true);
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(loaded, 0);
  std::printf("header %zu bytes of %zu: %d flips loaded, %d refused\n", header, good.size(), loaded, refused);
}

}  // namespace
}  // namespace tqkv
