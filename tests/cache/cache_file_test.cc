// Prompt-cache files (tqkv/cache_file.h): save -> load -> continue gives bit-identical logits to
// never having saved; every kind of bad file is refused with one clear line; hand-checked layout.
#include "tqkv/cache_file.h"

#include <xxhash.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "testing/runtime_cli.h"
#include "testing/runtime_tiny_model.h"
#include "tqkv/model.h"

namespace tqkv {
namespace {

std::unique_ptr<Model> tiny(uint32_t seed = 1, int vocab = 37) {
  testing::TinySpec s;
  s.ctx = 128;
  s.seed = seed;
  s.vocab = vocab;
  s.n_kv_heads = 2;  // GQA 2
  GgufWriter w;
  testing::make_tiny_model(s, &w);
  auto f = GgufFile::parse(w.to_bytes());
  EXPECT_TRUE(f.ok());
  auto m = Model::from_gguf(std::move(f).value());
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  return std::move(m).value();
}

std::unique_ptr<InferenceContext> make_ctx(const Model& m, const ModelCacheConfig& c, int batch, int max_tokens) {
  auto r = InferenceContext::make(m, c, batch, max_tokens);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return std::move(r).value();
}

ModelCacheConfig config(const char* k, const char* v, int window = 0, int sinks = 0) {
  ModelCacheConfig c;
  c.base.key_format = *parse_format(k);
  c.base.value_format = *parse_format(v);
  c.base.recent_window = window;
  c.base.sink_tokens = sinks;
  return c;
}

std::vector<int> tokens(int n, int vocab, int salt) {
  std::vector<int> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 7 + salt * 13 + 3) % vocab;
  return t;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void spit(const std::string& p, const std::string& b) { std::ofstream(p, std::ios::binary) << b; }

struct Case { const char* k; const char* v; int window, sinks, prompt; };

class CacheFileRoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(CacheFileRoundTrip, SaveLoadContinueIsBitIdentical) {
  const Case c = GetParam();
  auto model = tiny();
  const int V = model->config().vocab_size;
  const ModelCacheConfig cc = config(c.k, c.v, c.window, c.sinks);
  const std::vector<int> prompt = tokens(c.prompt, V, 1), next = tokens(6, V, 2);
  const std::string path = testing::temp_path(std::string("rt_") + c.k + c.v + ".tqkvc");
  // A: prefill, save, continue.
  auto a = make_ctx(*model, cc, 16, 128);
  std::vector<float> la(V), lb(V), all_a, all_b;
  ASSERT_TRUE(a->forward(prompt.data(), c.prompt, la.data(), false).ok());
  CacheFileContents contents;
  contents.sequences = {{0, prompt}};
  auto st = save_cache_file(path, *model, a->cache(), contents);
  ASSERT_TRUE(st.ok()) << st.status().to_string();
  EXPECT_EQ(st->file_bytes, slurp(path).size());
  for (int t : next) {
    ASSERT_TRUE(a->forward(&t, 1, la.data(), false).ok());
    all_a.insert(all_a.end(), la.begin(), la.end());
  }
  // B: load into a fresh context, continue with the same tokens.
  auto b = make_ctx(*model, cc, 16, 128);
  auto loaded = load_cache_file(path, *model, b->mutable_cache());
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  ASSERT_EQ(loaded->sequences.size(), 1u);
  EXPECT_EQ(loaded->sequences[0].second, prompt);
  EXPECT_EQ(loaded->stats.file_bytes, st->file_bytes);
  EXPECT_EQ(loaded->stats.f16_file_bytes, st->f16_file_bytes);
  ASSERT_TRUE(b->resume_at(c.prompt).ok());
  for (int t : next) {
    ASSERT_TRUE(b->forward(&t, 1, lb.data(), false).ok());
    all_b.insert(all_b.end(), lb.begin(), lb.end());
  }
  ASSERT_EQ(all_a.size(), all_b.size());
  EXPECT_EQ(std::memcmp(all_a.data(), all_b.data(), all_a.size() * sizeof(float)), 0) << "logits differ after reload";
  // Compressed formats give a file smaller than the f16 one.
  // (rotated formats; q8_0/q4_0 blocks of 32 are larger than f16 at this test model's head_dim 8)
  if (std::string(c.k).rfind("rvq", 0) == 0) {  // braces: EXPECT_* expands to an if/else
    EXPECT_LT(st->file_bytes, st->f16_file_bytes);
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, CacheFileRoundTrip,
                         ::testing::Values(Case{"rvq1x2", "tq2", 0, 0, 77},   // bit-sliced tiles, partial page
                                           Case{"rvq2x2", "tq4", 8, 4, 70},   // window + sinks
                                           Case{"q8_0", "q4_0", 0, 2, 64},    // per-vector, exactly one page
                                           Case{"f16", "f16", 5, 0, 3},       // all in the window
                                           Case{"kivi2", "tq3", 16, 0, 90}));

class CacheFileRefusals : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = tiny();
    V_ = model_->config().vocab_size;
    cc_ = config("rvq1x2", "tq2", 4, 2);
    auto a = make_ctx(*model_, cc_, 16, 128);
    prompt_ = tokens(50, V_, 3);
    std::vector<float> l(V_);
    ASSERT_TRUE(a->forward(prompt_.data(), 50, l.data(), false).ok());
    CacheFileContents c;
    c.sequences = {{0, prompt_}};
    path_ = testing::temp_path("refuse.tqkvc");
    ASSERT_TRUE(save_cache_file(path_, *model_, a->cache(), c).ok());
    bytes_ = slurp(path_);
  }
  // Loads `b` into a fresh context of `cc` (default: the saving config); returns the message.
  std::string load(const std::string& b, const ModelCacheConfig* cc = nullptr, const Model* m = nullptr) {
    const Model& mm = m ? *m : *model_;
    auto ctx = make_ctx(mm, cc ? *cc : cc_, 16, 128);
    const std::string p = testing::temp_path("refuse_variant.tqkvc");
    spit(p, b);
    auto r = load_cache_file(p, mm, ctx->mutable_cache());
    EXPECT_EQ(ctx->cache().layer(0).n_tokens(0), r.ok() ? 50 : 0) << "a refused file must leave the cache unchanged";
    if (r.ok()) return "OK";
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
    return r.status().message();
  }
  // Recomputes the header and section checksums after an edit (to reach the checks behind them).
  static std::string rehash(std::string b) {
    uint64_t h = XXH64(b.data(), 24, 0);
    std::memcpy(&b[24], &h, 8);
    size_t off = 32;
    while (off + 24 <= b.size()) {
      uint64_t len;
      std::memcpy(&len, &b[off + 8], 8);
      if (len > b.size() - off - 24) break;
      const uint64_t sh = XXH64(b.data() + off + 24, len, 0);
      std::memcpy(&b[off + 16], &sh, 8);
      off += 24 + len;
    }
    return b;
  }
  std::unique_ptr<Model> model_;
  int V_ = 0;
  ModelCacheConfig cc_;
  std::vector<int> prompt_;
  std::string path_, bytes_;
};

TEST_F(CacheFileRefusals, GoodFileLoads) { EXPECT_EQ(load(bytes_), "OK"); }

TEST_F(CacheFileRefusals, FlippedByteIsRefused) {
  // A flipped byte anywhere: header, fingerprint, token ids, compressed pages, window rows.
  for (size_t pos : {size_t(3), size_t(9), size_t(20), size_t(60), bytes_.size() / 2, bytes_.size() - 1}) {
    std::string b = bytes_;
    b[pos] ^= 0x10;
    const std::string m = load(b);
    EXPECT_TRUE(m.find("checksum mismatch") != std::string::npos || m.find("bad magic") != std::string::npos)
        << "byte " << pos << ": " << m;
  }
}

TEST_F(CacheFileRefusals, TruncatedFileIsRefused) {
  for (size_t n : {size_t(0), size_t(10), size_t(40), bytes_.size() / 3, bytes_.size() - 1}) {
    const std::string m = load(bytes_.substr(0, n));
    EXPECT_TRUE(m.find("truncated") != std::string::npos || m.find("bad magic") != std::string::npos) << n << ": " << m;
  }
  EXPECT_NE(load(bytes_ + "x").find("trailing bytes"), std::string::npos);
}

TEST_F(CacheFileRefusals, WrongVersionModelTokenizerOrFormatIsRefused) {
  std::string b = bytes_;
  b[8] = 9;
  EXPECT_NE(load(rehash(b)).find("format version 9"), std::string::npos);
  b = bytes_;
  b[0] = 'X';
  EXPECT_NE(load(b).find("bad magic"), std::string::npos);
  auto other_weights = tiny(2);
  EXPECT_NE(load(bytes_, nullptr, other_weights.get()).find("another model (same shape, other weights)"), std::string::npos);
  auto other_vocab = tiny(1, 41);
  EXPECT_NE(load(bytes_, nullptr, other_vocab.get()).find("another tokenizer"), std::string::npos);
  ModelCacheConfig q8 = config("q8_0", "tq2", 4, 2);
  EXPECT_NE(load(bytes_, &q8).find("another cache format (layer 0 keys: rvq1x2 in the file, q8_0 here)"), std::string::npos);
  ModelCacheConfig win = config("rvq1x2", "tq2", 8, 2);
  EXPECT_NE(load(bytes_, &win).find("--kv-window 4 in the file, 8 here"), std::string::npos);
  ModelCacheConfig seed = cc_;
  seed.base.quant.seed = 7;
  EXPECT_NE(load(bytes_, &seed).find("other rotation seed"), std::string::npos);
}

TEST_F(CacheFileRefusals, SizesThatDoNotAddUpAreRefused) {
  // Layout: header 32 | fingerprint section | meta section | sequence section: 24-byte section
  // header, then int32 seq, n_tokens, n_compressed, reserved.
  uint64_t flen;
  std::memcpy(&flen, &bytes_[32 + 8], 8);
  const size_t meta = 32 + 24 + flen, seq = meta + 24 + 8;
  int32_t n, nc;
  std::memcpy(&n, &bytes_[seq + 24 + 4], 4);
  std::memcpy(&nc, &bytes_[seq + 24 + 8], 4);
  ASSERT_EQ(n, 50);
  ASSERT_EQ(nc, 50 - 2 - 4);
  auto with = [&](size_t at, int32_t v) {
    std::string b = bytes_;
    std::memcpy(&b[at], &v, 4);
    return load(rehash(b));
  };
  EXPECT_NE(with(seq + 24 + 4, 49).find("sizes do not add up"), std::string::npos);          // n_tokens
  EXPECT_NE(with(seq + 24 + 4, 1 << 30).find("tokens (1..128 allowed)"), std::string::npos);  // huge n
  EXPECT_NE(with(seq + 24 + 8, 45).find("sizes do not add up"), std::string::npos);          // n_compressed
  EXPECT_NE(with(seq + 24 + 8, 10).find("impossible compressed count"), std::string::npos);  // window overflow
  EXPECT_NE(with(seq + 24 + 16, 999).find("outside the vocabulary"), std::string::npos);     // token 0
  // A section length larger than the file.
  std::string b = bytes_;
  const uint64_t huge = uint64_t(1) << 60;
  std::memcpy(&b[seq + 8], &huge, 8);
  EXPECT_NE(load(rehash(b)).find("sizes do not add up"), std::string::npos);
}

// Per-sequence formats (pk{b} statistics, tqo{h}x{l} outlier channels) are not in the file format:
// saving refuses them with one line naming the format family, after a forward pass that compressed.
TEST(CacheFileRefusals2, PerSequenceFormatsAreRefused) {
  auto model = tiny();
  const int V = model->config().vocab_size;
  for (const char* k : {"pk2", "tqo3x2"}) {
    ModelCacheConfig cc = config(k, "tq2");
    cc.base.pk_calib_tokens = 8;
    auto a = make_ctx(*model, cc, 16, 128);
    const std::vector<int> prompt = tokens(20, V, 1);
    std::vector<float> la(V);
    ASSERT_TRUE(a->forward(prompt.data(), 20, la.data(), false).ok()) << k;
    CacheFileContents contents;
    contents.sequences = {{0, prompt}};
    auto st = save_cache_file(testing::temp_path(std::string("refuse_") + k + ".tqkvc"), *model, a->cache(), contents);
    ASSERT_FALSE(st.ok()) << k;
    EXPECT_NE(st.status().message().find(std::string(k).substr(0, 2)), std::string::npos) << st.status().message();
    EXPECT_NE(st.status().message().find("do not store"), std::string::npos) << st.status().message();
  }
}

TEST(CacheFileCli, GenerateSavesThenLoadsThePromptCache) {
  testing::TinySpec s;
  s.ctx = 64;
  GgufWriter w;
  testing::make_tiny_model(s, &w);
  const std::string model = testing::temp_path("pc_model.gguf"), pc = testing::temp_path("pc.tqkvc");
  ASSERT_TRUE(w.write(model).ok());
  std::remove(pc.c_str());
  const std::string args = "generate -m " + model + " -p \"aaaa aaa aa\" -n 4 -ctk rvq1x2 -ctv tq2 --json --prompt-cache " + pc;
  auto r1 = testing::run_cli(args);
  ASSERT_EQ(r1.rc, 0) << r1.err;
  auto j1 = nlohmann::json::parse(r1.out);
  EXPECT_EQ(j1["prompt_cache"]["saved_tokens"], j1["prompt_tokens"]);
  EXPECT_LT(j1["prompt_cache"]["file_bytes"].get<size_t>(), j1["prompt_cache"]["f16_file_bytes"].get<size_t>());
  auto r2 = testing::run_cli(args);
  ASSERT_EQ(r2.rc, 0) << r2.err;
  auto j2 = nlohmann::json::parse(r2.out);
  EXPECT_EQ(j2["prompt_cache"]["loaded_tokens"], j1["prompt_tokens"]);
  EXPECT_TRUE(j2["prompt_cache"].contains("prefill_seconds_saved"));
  EXPECT_EQ(j2["text"], j1["text"]);
  // Another cache format: one clear error line, the file is kept.
  auto r3 = testing::run_cli("generate -m " + model + " -p aaaa -n 2 -ctk q8_0 --prompt-cache " + pc);
  EXPECT_EQ(r3.rc, 1);
  EXPECT_EQ(r3.err.rfind("tqkv: error: prompt cache", 0), 0u) << r3.err;
  EXPECT_NE(r3.err.find("another cache format"), std::string::npos) << r3.err;
  // A flipped byte: refused.
  std::string b = slurp(pc);
  b[b.size() / 2] ^= 1;
  spit(pc, b);
  auto r4 = testing::run_cli(args);
  EXPECT_EQ(r4.rc, 1);
  EXPECT_NE(r4.err.find("checksum mismatch"), std::string::npos) << r4.err;
}

}  // namespace
}  // namespace tqkv
