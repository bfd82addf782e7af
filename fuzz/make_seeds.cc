// Writes the seed corpora of the fuzz targets into DIR/<target>/ from the same builders the tests
// use (tests/testing/runtime_tiny_model.h), so the seeds follow the formats as they evolve.
//   make_seeds DIR
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/npy.h"
#include "testing/runtime_tiny_model.h"
#include "tqkv/cache_file.h"
#include "tqkv/model.h"
#include "tqkv/perplexity.h"

namespace {

std::string g_dir;

void put(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string d = g_dir + "/" + target;
  ::mkdir(d.c_str(), 0755);
  FILE* f = std::fopen((d + "/" + name).c_str(), "wb");
  if (!f) { std::perror(d.c_str()); std::exit(1); }
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

std::string to_str(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

std::string slurp(const std::string& p) {
  std::string s;
  FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) return s;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fclose(f);
  return s;
}

std::string tiny_gguf(const char* arch, int vocab, uint32_t seed) {
  tqkv::testing::TinySpec s;
  s.arch = arch;
  s.vocab = vocab;
  s.dim = 16;
  s.hidden = 32;
  s.n_layers = 1;
  s.n_heads = 2;
  s.n_kv_heads = 1;
  s.ctx = 16;
  s.seed = seed;
  tqkv::GgufWriter w;
  tqkv::testing::make_tiny_model(s, &w);
  return to_str(w.to_bytes());
}

std::string llama2c_seed() {
  const int32_t dim = 8, hidden = 8, L = 1, H = 1, KV = 1, seq = 4;
  const std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "<0x41>", " a", "b", "ab"};
  const int32_t hdr[7] = {dim, hidden, L, H, KV, static_cast<int32_t>(pieces.size()), seq};
  const int64_t V = pieces.size(), D = dim, hd = dim / H;
  const int64_t n = V * D + L * D + L * D * D + 2 * L * hd * D + L * D * D + L * D + 3 * L * hidden * D + D + seq * hd;
  std::string b(reinterpret_cast<const char*>(hdr), 28);
  std::vector<float> w(n, 0.02f);
  b.append(reinterpret_cast<const char*>(w.data()), w.size() * 4);
  b += "\xF0SEP";
  const int32_t max_len = 2;
  b.append(reinterpret_cast<const char*>(&max_len), 4);
  for (const std::string& p : pieces) {
    const float score = -1.0f * p.size();
    const int32_t len = static_cast<int32_t>(p.size());
    b.append(reinterpret_cast<const char*>(&score), 4);
    b.append(reinterpret_cast<const char*>(&len), 4);
    b += p;
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) { std::fprintf(stderr, "usage: make_seeds DIR\n"); return 2; }
  g_dir = argv[1];
  ::mkdir(g_dir.c_str(), 0755);
  // GGUF: tiny llama / qwen2 / qwen3 models (the tests' builder), and a header-only file.
  put("gguf", "llama.gguf", tiny_gguf("llama", 37, 1));
  put("gguf", "qwen2.gguf", tiny_gguf("qwen2", 37, 2));
  {
    tqkv::GgufWriter w;
    w.add_string("general.architecture", "llama");
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_string_array("tokenizer.ggml.tokens", {"a", "b", "ab", "<|end|>"});
    w.add_string_array("tokenizer.ggml.merges", {"a b"});
    put("gguf", "tokenizer_only.gguf", to_str(w.to_bytes()));
  }
  // SentencePiece vocabularies: "<type digit><score byte><piece>" lines, then the text.
  put("tokenizer_spm", "basic", std::string("2\x01<unk>\n3\x01<s>\n3\x01</s>\n6\x01<0x41>\n6\x01<0xE2>\n1\x05\xE2\x96\x81\n1\x04") +
                                    "a\n1\x03" "b\n1\x06" "ab\n1\x07\xE2\x96\x81" "ab\n\xF0SEPab ab a\xE2\x96\x81 b");
  put("tokenizer_spm", "utf8", std::string("2\x01<unk>\n3\x01<s>\n3\x01</s>\n1\x02\xC3\xA9\n1\x03" "caf\n\xF0SEPcaf\xC3\xA9 \xF0\x9F\x98\x80"));
  // BPE: P piece / C control piece / M merge / R pre-tokenizer lines, then the text.
  put("tokenizer_bpe", "gpt2", "P a\nP b\nP ab\nP \xC4\xA0\nP \xC4\xA0" "a\nC <|end|>\nM a b\nM \xC4\xA0 a\n\xF0SEPab a b ab's 12");
  put("tokenizer_bpe", "llama3", "R llama-bpe\nP a\nP b\nP ab\nP 1\nM a b\n\xF0SEPab ab 111 a\n\n b");
  put("tokenizer_bpe", "qwen2", "R qwen2\nP a\nP b\nP ab\nM a b\n\xF0SEPab\xE4\xB8\xAD ab");
  // llama2.c: checkpoint \xF0SEP tokenizer.bin.
  put("llama2c", "tiny", llama2c_seed());
  // .npy: the writer's own output.
  {
    const std::string p = g_dir + "/tmp.npy";
    const float x[6] = {1, 2, 3, 4, 5, 6};
    if (!tqkv::write_npy(p, {2, 3}, x).ok()) return 1;
    put("npy", "f4_2x3.npy", slurp(p));
    std::remove(p.c_str());
  }
  // KLD base: what perplexity --kl-divergence-base writes for the fuzz target's own model and text.
  {
    tqkv::testing::TinySpec s;
    s.ctx = 16;
    tqkv::GgufWriter w;
    tqkv::testing::make_tiny_model(s, &w);
    auto f = tqkv::GgufFile::parse(w.to_bytes());
    auto m = tqkv::Model::from_gguf(std::move(f).value());
    if (!m.ok()) { std::fprintf(stderr, "%s\n", m.status().to_string().c_str()); return 1; }
    for (int k : {4, 0}) {
      const std::string p = g_dir + "/tmp.kld";
      tqkv::PerplexityOptions o;
      o.ctx = 8;
      o.batch = 8;
      o.threads = 1;
      o.kld_top_k = k;
      o.kld_base_out = p;
      auto r = tqkv::run_perplexity(**m, tqkv::ModelCacheConfig{}, std::string(40, 'a'), o);
      if (!r.ok()) { std::fprintf(stderr, "%s\n", r.status().to_string().c_str()); return 1; }
      put("kld", "top" + std::to_string(k) + ".kld", slurp(p));
      std::remove(p.c_str());
    }
  }
  // Prompt-cache files: what save_cache_file writes for fuzz_cache_file's model and cache (two
  // prompt lengths: inside the window, and several pages plus a partial tile).
  {
    tqkv::testing::TinySpec s;
    s.ctx = 128;
    s.n_kv_heads = 2;
    tqkv::GgufWriter w;
    tqkv::testing::make_tiny_model(s, &w);
    auto m = tqkv::Model::from_gguf(std::move(tqkv::GgufFile::parse(w.to_bytes())).value());
    if (!m.ok()) return 1;
    tqkv::ModelCacheConfig cc;
    cc.base.key_format = *tqkv::parse_format("rvq1x2");
    cc.base.value_format = *tqkv::parse_format("tq2");
    cc.base.recent_window = 4;
    cc.base.sink_tokens = 2;
    for (int n : {5, 83}) {
      auto ctx = tqkv::InferenceContext::make(**m, cc, 16, 128);
      std::vector<int> toks(n);
      for (int i = 0; i < n; ++i) toks[i] = (7 * i + 3) % (*m)->config().vocab_size;
      std::vector<float> logits((*m)->config().vocab_size);
      if (!(*ctx)->forward(toks.data(), n, logits.data(), false).ok()) return 1;
      tqkv::CacheFileContents c;
      c.sequences = {{0, toks}};
      const std::string p = g_dir + "/tmp.tqkvc";
      if (!tqkv::save_cache_file(p, **m, (*ctx)->cache(), c).ok()) return 1;
      put("cache_file", "n" + std::to_string(n) + ".tqkvc", slurp(p));
      std::remove(p.c_str());
    }
  }
  return 0;
}
