// KLD base file reader (perplexity --kl-divergence), through the real run on a tiny model: the
// input is the base file. The model (random weights, 37-token vocabulary) is built once.
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz_common.h"
#include "testing/runtime_tiny_model.h"
#include "tqkv/model.h"
#include "tqkv/perplexity.h"

namespace {

struct Env {
  std::unique_ptr<tqkv::Model> model;
  std::string text = std::string(40, 'a');
  std::string base = tqkv::fuzz::scratch_path("kld_in");
  Env() {
    tqkv::testing::TinySpec s;
    s.ctx = 16;
    tqkv::GgufWriter w;
    tqkv::testing::make_tiny_model(s, &w);
    auto f = tqkv::GgufFile::parse(w.to_bytes());
    if (!f.ok()) __builtin_trap();
    auto m = tqkv::Model::from_gguf(std::move(f).value());
    if (!m.ok()) __builtin_trap();
    model = std::move(m).value();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Env env;
  tqkv::fuzz::write_bytes(env.base, data, size);
  tqkv::PerplexityOptions o;
  o.ctx = 8;
  o.batch = 8;
  o.threads = 1;
  o.kld_in = env.base;
  auto r = tqkv::run_perplexity(*env.model, tqkv::ModelCacheConfig{}, env.text, o);
  if (r.ok() && r->has_kld && !(r->kld_mean >= 0)) __builtin_trap();  // NaN or negative KLD
  return 0;
}
