// Prompt-cache file reader (generate --prompt-cache): the input is the file, loaded into the
// cache of a tiny model (rvq1x2 keys, tq2 values, window 4, sinks 2). A file that loads must
// leave a cache the model can continue from.
#include <cstdint>
#include <memory>
#include <vector>

#include "testing/runtime_tiny_model.h"
#include "tqkv/cache_file.h"
#include "tqkv/model.h"

namespace {

struct Env {
  std::unique_ptr<tqkv::Model> model;
  tqkv::ModelCacheConfig cc;
  Env() {
    tqkv::testing::TinySpec s;
    s.ctx = 128;
    s.n_kv_heads = 2;
    tqkv::GgufWriter w;
    tqkv::testing::make_tiny_model(s, &w);
    auto f = tqkv::GgufFile::parse(w.to_bytes());
    auto m = tqkv::Model::from_gguf(std::move(f).value());
    if (!m.ok()) __builtin_trap();
    model = std::move(m).value();
    cc.base.key_format = *tqkv::parse_format("rvq1x2");
    cc.base.value_format = *tqkv::parse_format("tq2");
    cc.base.recent_window = 4;
    cc.base.sink_tokens = 2;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Env env;
  auto ctx = tqkv::InferenceContext::make(*env.model, env.cc, 16, 128);
  if (!ctx.ok()) __builtin_trap();
  auto r = tqkv::load_cache_bytes(std::vector<uint8_t>(data, data + size), "fuzz", *env.model, (*ctx)->mutable_cache());
  if (!r.ok()) return 0;
  for (const auto& [id, toks] : r->sequences) {
    if (id != 0) continue;
    if (!(*ctx)->resume_at(static_cast<int>(toks.size())).ok()) __builtin_trap();
    if (static_cast<int>(toks.size()) < 128) {
      std::vector<float> logits(env.model->config().vocab_size);
      const int t = 1;
      if (!(*ctx)->forward(&t, 1, logits.data(), false).ok()) __builtin_trap();
    }
  }
  return 0;
}
