// tqkv generate -m M.gguf -p PROMPT -n N [--temp T --top-k K --top-p P --seed S] [cache flags]
//               [--threads T] [--steps S] [--json]
// Streams the prompt and the generated text to stdout the way llama2.c's run.c prints it (pieces,
// leading space dropped after BOS, byte tokens as bytes, unprintable single bytes skipped, a final
// newline). Stops at N new tokens, at EOS/BOS, or when the context is full. Timing and KV bytes go
// to stderr (or, with --json, one JSON object on stdout instead of the streamed text).
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cache_flags.h"
#include "command.h"
#include "data_paths.h"
#include "tqkv/cache_file.h"
#include "tqkv/model.h"
#include "tqkv/perplexity.h"

namespace tqkv::cli {
namespace {

struct Opts {
  std::string model, prompt;
  int n = 128;
  int steps = 0;
  SamplerOptions sampler;
  int threads = 0;
  bool json = false;
  std::string prompt_cache;
  CacheFlags cache;
};

// run.c's safe_printf rule.
bool printable(const std::string& piece) {
  if (piece.empty()) return false;
  if (piece.size() == 1) {
    const unsigned char b = static_cast<unsigned char>(piece[0]);
    if (!(std::isprint(b) || std::isspace(b))) return false;
  }
  return true;
}

Status run(const Opts& o) {
  TQKV_RETURN_IF_ERROR(check_threads(o.threads));
  // NaN compares false with everything: --temp nan sampled from NaN weights and printed nothing.
  if (!(std::isfinite(o.sampler.temperature) && o.sampler.temperature >= 0))
    return invalid_argument("--temp must be a finite number >= 0, got " + std::to_string(o.sampler.temperature));
  if (!(o.sampler.top_p > 0 && o.sampler.top_p <= 1))
    return invalid_argument("--top-p must be in (0, 1], got " + std::to_string(o.sampler.top_p));
  if (o.sampler.top_k < 0) return invalid_argument("--top-k must be >= 0");
  if (o.threads > 0) set_runtime_threads(o.threads);
  TQKV_ASSIGN_OR_RETURN(ModelCacheConfig cc, make_cache_config(o.cache));
  TQKV_ASSIGN_OR_RETURN(auto model, Model::load(o.model));
  const Tokenizer& tok = model->tokenizer();
  const int V = model->config().vocab_size;
  std::vector<int> prompt = tok.encode(o.prompt, tok.add_bos());
  if (prompt.empty()) prompt.push_back(tok.bos());
  const int ctx_len = model->config().context_length;
  if (static_cast<int>(prompt.size()) > ctx_len)
    return invalid_argument("prompt is " + std::to_string(prompt.size()) + " tokens, longer than the context of " +
                            std::to_string(ctx_len));
  if (o.n < 0) return invalid_argument("-n must be >= 0");
  if (o.steps < 0) return invalid_argument("--steps must be >= 0");
  int n_new = o.n;
  // run.c runs `steps` forward passes (positions 0..steps-1) and prints the token each one yields.
  // (in 64 bits: --steps 2147483647 overflowed o.steps + 1)
  if (o.steps > 0)
    n_new = static_cast<int>(std::max<int64_t>(0, int64_t{o.steps} + 1 - static_cast<int64_t>(prompt.size())));
  TQKV_ASSIGN_OR_RETURN(auto ctx, InferenceContext::make(*model, cc, 256, ctx_len));
  ctx->set_threads(o.threads);
  Sampler sampler(o.sampler);
  std::vector<float> logits(V);
  std::string text;
  auto emit = [&](int prev, int t) {
    const std::string p = tok.decode_piece_after(prev, t);
    if (!printable(p)) return;
    text += p;
    if (!o.json) { std::fwrite(p.data(), 1, p.size(), stdout); std::fflush(stdout); }
  };
  for (size_t i = 1; i < prompt.size(); ++i) emit(prompt[i - 1], prompt[i]);
  if (prompt[0] != tok.bos()) emit(-1, prompt[0]);  // tokenizers without BOS: print the first piece too

  // --prompt-cache FILE: restore the prompt's cache when FILE exists and holds a prefix of this
  // prompt (at least the last prompt token is run again, for its logits); else compute and save.
  const auto t0 = std::chrono::steady_clock::now();
  int start = 0, cached = 0;
  double file_prefill_s = 0;
  nlohmann::json pc_json;
  if (!o.prompt_cache.empty() && ::access(o.prompt_cache.c_str(), F_OK) == 0) {
    TQKV_ASSIGN_OR_RETURN(CacheFileContents c, load_cache_file(o.prompt_cache, *model, ctx->mutable_cache(), ctx_len));
    const std::vector<int>* toks = nullptr;
    for (const auto& [id, t] : c.sequences)
      if (id == 0) toks = &t;
    if (toks && toks->size() <= prompt.size() && std::equal(toks->begin(), toks->end(), prompt.begin())) {
      cached = static_cast<int>(toks->size());
      TQKV_RETURN_IF_ERROR(ctx->resume_at(cached));
      start = std::min(cached, static_cast<int>(prompt.size()) - 1);
      TQKV_RETURN_IF_ERROR(ctx->truncate(start));
      file_prefill_s = c.prefill_seconds;
      pc_json = {{"file", o.prompt_cache}, {"loaded_tokens", cached}, {"file_bytes", c.stats.file_bytes},
                 {"f16_file_bytes", c.stats.f16_file_bytes}};
    } else {
      ctx->clear();
      std::fprintf(stderr, "tqkv: prompt cache %s holds another prompt: recomputing and replacing it\n",
                   o.prompt_cache.c_str());
    }
  }
  TQKV_RETURN_IF_ERROR(ctx->forward(prompt.data() + start, static_cast<int>(prompt.size()) - start, logits.data(), false));
  const auto t1 = std::chrono::steady_clock::now();
  if (!o.prompt_cache.empty()) {
    const double spent = std::chrono::duration<double>(t1 - t0).count();
    if (cached > 0) {
      // The file's prefill took file_prefill_s; this run spent `spent` on loading + the rest.
      pc_json["prefill_seconds_saved"] = file_prefill_s - spent;
      if (!o.json)
        std::fprintf(stderr, "prompt cache: loaded %d tokens from %s: %zu bytes (an f16 cache file would be %zu bytes, "
                     "%.2fx); prefill %.3f s -> %.3f s (saved %.3f s)\n", cached, o.prompt_cache.c_str(),
                     pc_json["file_bytes"].get<size_t>(), pc_json["f16_file_bytes"].get<size_t>(),
                     double(pc_json["f16_file_bytes"].get<size_t>()) / pc_json["file_bytes"].get<size_t>(),
                     file_prefill_s, spent, file_prefill_s - spent);
    }
    if (cached < static_cast<int>(prompt.size())) {
      CacheFileContents c;
      c.sequences = {{0, prompt}};
      c.prefill_seconds = spent + (cached > 0 ? file_prefill_s : 0.0);
      TQKV_ASSIGN_OR_RETURN(CacheFileStats st, save_cache_file(o.prompt_cache, *model, ctx->cache(), c));
      pc_json["file"] = o.prompt_cache;
      pc_json["saved_tokens"] = prompt.size();
      pc_json["file_bytes"] = st.file_bytes;
      pc_json["f16_file_bytes"] = st.f16_file_bytes;
      if (!o.json)
        std::fprintf(stderr, "prompt cache: saved %zu tokens to %s: %zu bytes vs %zu bytes as an f16 cache file (%.2fx smaller)\n",
                     prompt.size(), o.prompt_cache.c_str(), st.file_bytes, st.f16_file_bytes,
                     double(st.f16_file_bytes) / st.file_bytes);
    }
  }
  int prev = prompt.back(), generated = 0;
  for (int i = 0; i < n_new; ++i) {
    const int next = sampler.sample(logits.data(), V);
    if (next == tok.eos() || next == tok.bos()) break;
    emit(prev, next);
    ++generated;
    prev = next;
    if (i + 1 == n_new || ctx->n_past() >= ctx_len) break;
    TQKV_RETURN_IF_ERROR(ctx->forward(&next, 1, logits.data(), false));
  }
  const auto t2 = std::chrono::steady_clock::now();
  const double pre_s = std::chrono::duration<double>(t1 - t0).count();
  const double gen_s = std::chrono::duration<double>(t2 - t1).count();
  const size_t kv = ctx->cache().bytes_resident(), f16 = ctx->cache().f16_bytes(0);
  const double pre_tps = prompt.size() / std::max(pre_s, 1e-9);
  const double gen_tps = generated / std::max(gen_s, 1e-9);
  if (o.json) {
    nlohmann::json j = {{"text", text},
                        {"prompt_tokens", prompt.size()},
                        {"generated_tokens", generated},
                        {"prompt_tok_per_s", pre_tps},
                        {"gen_tok_per_s", gen_tps},
                        {"kv_bytes", kv},
                        {"kv_f16_bytes", f16},
                        {"kv_ratio_vs_f16", kv ? double(f16) / kv : 0.0},
                        {"cache", describe_cache_config(cc)}};
    if (!pc_json.is_null()) j["prompt_cache"] = pc_json;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr, "prompt: %zu tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s\n", prompt.size(),
                 pre_tps, generated, gen_tps);
    const double wb = double(model->weight_bytes_per_token());
    std::fprintf(stderr, "decode reads %.1f MB/token (weights %.1f MB + KV cache %.1f MB): %.2f GB/s achieved\n",
                 (wb + kv) / 1e6, wb / 1e6, kv / 1e6, (wb + kv) * gen_tps / 1e9);
    std::fprintf(stderr, "KV cache (%s): %zu bytes resident vs %zu bytes as f16 (f16 / resident = %.2fx)\n",
                 describe_cache_config(cc).c_str(), kv, f16, kv ? double(f16) / kv : 0.0);
    note_if_slow_blas();
  }
  return Status::Ok();
}

Register reg("generate", "Generate text from a GGUF model with any KV cache format", [](CLI::App& app) {
  auto o = std::make_shared<Opts>();
  o->model = default_data_file("models/tqkv-ref-d128.gguf");
  app.add_option("-m,--model", o->model, "GGUF model (default: the shipped reference model)")->capture_default_str();
  app.add_option("-p,--prompt", o->prompt, "Prompt text");
  app.add_option("-n,--n-predict", o->n, "New tokens to generate (default 128)");
  app.add_option("--steps", o->steps, "llama2.c run.c steps: forward passes over BOS + prompt + generated tokens; overrides -n");
  app.add_option("--temp", o->sampler.temperature, "Temperature (0 = greedy, the default)");
  app.add_option("--top-k", o->sampler.top_k, "Top-k (0 = off)");
  app.add_option("--top-p", o->sampler.top_p, "Top-p (1 = off)");
  app.add_option("--seed", o->sampler.seed, "Sampling seed");
  app.add_option("-t,--threads", o->threads, "Threads (default: all)");
  app.add_flag("--json", o->json, "Print one JSON object instead of streaming");
  app.add_option("--prompt-cache", o->prompt_cache,
                 "Load the prompt's compressed cache from FILE if it holds a prefix of the prompt, else compute and save it");
  add_cache_flags(app, &o->cache);
  return [o]() -> Status { return run(*o); };
});

}  // namespace
}  // namespace tqkv::cli
