// tqkv generate -m M.gguf (-p PROMPT | -f FILE) -n N [-c CTX] [--temp T --top-k K --top-p P --seed S]
//               [cache flags] [--threads T] [--steps S] [--json] [--prompt-cache FILE]
// Streams the prompt and the generated text to stdout the way llama2.c's run.c prints it (pieces,
// leading space dropped after BOS, byte tokens as bytes, unprintable single bytes skipped, a final
// newline). Stops at N new tokens, at EOS/BOS, or when the context is full. Timing and KV bytes go
// to stderr (or, with --json, one JSON object on stdout instead of the streamed text).
// -c/--ctx-size: the context in tokens (default: the GGUF's context_length). A larger one is allowed
// with ONE warning line on stderr: RoPE positions beyond the trained context degrade quality.
// -f/--file: the prompt from a text file (plain or .xz, tqkv/text_io.h), instead of -p.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cache_flags.h"
#include "command.h"
#include "data_paths.h"
#include "tqkv/generate.h"
#include "tqkv/model.h"
#include "tqkv/perplexity.h"
#include "tqkv/text_io.h"

namespace tqkv::cli {
namespace {

// The largest -c accepted: positions stay far inside int and float RoPE angles; the cache grows by
// page as tokens arrive, so -c itself allocates nothing.
constexpr int kMaxCtx = 1 << 24;

struct Opts {
  std::string model, prompt, file;
  GenerateOptions gen;
  int ctx = 0;  // 0: the model's context_length
  int threads = 0;
  bool json = false;
  CacheFlags cache;
};

Status run(const Opts& o) {
  TQKV_RETURN_IF_ERROR(check_threads(o.threads));
  // Before loading the model: bad sampling settings fail fast.
  TQKV_RETURN_IF_ERROR(validate_generate_options(o.gen));
  if (o.ctx < 0 || o.ctx > kMaxCtx)
    return invalid_argument("context size (-c) must be in 1.." + std::to_string(kMaxCtx) + " (0 = the model's), got " +
                            std::to_string(o.ctx));
  if (!o.file.empty() && !o.prompt.empty()) return invalid_argument("give the prompt with -p or -f, not both");
  if (o.threads > 0) set_runtime_threads(o.threads);
  TQKV_ASSIGN_OR_RETURN(ModelCacheConfig cc, make_cache_config(o.cache));
  std::string prompt = o.prompt;
  if (!o.file.empty()) { TQKV_ASSIGN_OR_RETURN(prompt, read_text_file(o.file)); }
  TQKV_ASSIGN_OR_RETURN(auto model, Model::load(o.model));
  const int trained = model->config().context_length;
  const int n_ctx = o.ctx > 0 ? o.ctx : trained;
  TQKV_ASSIGN_OR_RETURN(auto ctx, InferenceContext::make(*model, cc, 256, n_ctx));
  ctx->set_threads(o.threads);
  TQKV_ASSIGN_OR_RETURN(auto gen, TextGenerator::make(*model, ctx.get(), prompt, o.gen));
  // Once the run is sure to start (a refused prompt prints only its error line).
  if (n_ctx > trained)
    std::fprintf(stderr, "tqkv: warning: context %d exceeds the model's trained context of %d tokens: RoPE positions "
                 "beyond it degrade quality\n", n_ctx, trained);
  std::string text = gen->prompt_text();
  auto print = [&](const std::string& p) {
    if (!o.json && !p.empty()) { std::fwrite(p.data(), 1, p.size(), stdout); std::fflush(stdout); }
  };
  print(text);
  GeneratedToken t;
  while (true) {
    TQKV_ASSIGN_OR_RETURN(bool more, gen->next(&t));
    if (!more) break;
    text += t.text;
    print(t.text);
  }
  const size_t n_prompt = gen->prompt_tokens().size();
  const int generated = gen->generated();
  const size_t kv = ctx->cache().bytes_resident(), f16 = ctx->cache().f16_bytes(0);
  const double pre_tps = n_prompt / std::max(gen->prefill_seconds(), 1e-9);
  const double gen_tps = generated / std::max(gen->decode_seconds(), 1e-9);
  if (o.json) {
    nlohmann::json j = {{"text", text},
                        {"prompt_tokens", n_prompt},
                        {"generated_tokens", generated},
                        {"prompt_tok_per_s", pre_tps},
                        {"gen_tok_per_s", gen_tps},
                        {"prefill_seconds", gen->prefill_seconds()},
                        {"decode_seconds", gen->decode_seconds()},
                        {"ctx_size", n_ctx},
                        {"trained_ctx", trained},
                        {"model_shape", {{"n_layers", model->config().n_layers}, {"n_heads", model->config().n_heads},
                                         {"n_kv_heads", model->config().n_kv_heads},
                                         {"head_dim", model->config().head_dim}}},
                        {"kv_bits_per_element", f16 ? 16.0 * double(kv) / double(f16) : 0.0},
                        {"kv_bytes", kv},
                        {"kv_f16_bytes", f16},
                        {"kv_ratio_vs_f16", kv ? double(f16) / kv : 0.0},
                        {"cache", describe_cache_config(cc)}};
    if (!o.gen.prompt_cache.empty()) {
      const PromptCacheReport& r = gen->prompt_cache_report();
      j["prompt_cache"] = {{"file", o.gen.prompt_cache}, {"loaded_tokens", r.loaded_tokens},
                           {"saved_tokens", r.saved_tokens}, {"file_bytes", r.file_bytes},
                           {"f16_file_bytes", r.f16_file_bytes}};
      if (r.loaded_tokens > 0)
        j["prompt_cache"]["prefill_seconds_saved"] = r.file_prefill_seconds - r.load_seconds - gen->prefill_seconds();
    }
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr, "prompt: %zu tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s\n", n_prompt,
                 pre_tps, generated, gen_tps);
    const double wb = double(model->weight_bytes_per_token());
    std::fprintf(stderr, "decode reads %.1f MB/token (weights %.1f MB + KV cache %.1f MB): %.2f GB/s achieved\n",
                 (wb + kv) / 1e6, wb / 1e6, kv / 1e6, (wb + kv) * gen_tps / 1e9);
    std::fprintf(stderr, "KV cache (%s): %zu bytes resident vs %zu bytes as f16 (f16 / resident = %.2fx)\n",
                 describe_cache_config(cc).c_str(), kv, f16, kv ? double(f16) / kv : 0.0);
    if (!o.gen.prompt_cache.empty()) {
      const PromptCacheReport& r = gen->prompt_cache_report();
      const double ratio = r.file_bytes ? double(r.f16_file_bytes) / r.file_bytes : 0.0;
      if (r.replaced_other_prompt)
        std::fprintf(stderr, "prompt cache %s held another prompt: recomputed\n", o.gen.prompt_cache.c_str());
      if (r.loaded_tokens > 0) {
        const double now = r.load_seconds + gen->prefill_seconds();
        std::fprintf(stderr, "prompt cache: loaded %d tokens from %s: %zu bytes (an f16 cache file would be %zu "
                     "bytes, %.2fx); prefill %.3f s -> %.3f s (saved %.3f s)\n", r.loaded_tokens,
                     o.gen.prompt_cache.c_str(), r.file_bytes, r.f16_file_bytes, ratio, r.file_prefill_seconds, now,
                     r.file_prefill_seconds - now);
      }
      if (r.saved_tokens > 0)
        std::fprintf(stderr, "prompt cache: saved %d tokens to %s: %zu bytes vs %zu bytes as an f16 cache file "
                     "(%.2fx smaller)\n", r.saved_tokens, o.gen.prompt_cache.c_str(), r.file_bytes, r.f16_file_bytes,
                     ratio);
    }
    note_if_slow_blas();
  }
  return Status::Ok();
}

Register reg("generate", "Generate text from a GGUF model with any KV cache format", [](CLI::App& app) {
  auto o = std::make_shared<Opts>();
  o->model = default_data_file("models/tqkv-ref-d128.gguf");
  app.add_option("-m,--model", o->model, "GGUF model (default: the shipped reference model)")->capture_default_str();
  app.add_option("-p,--prompt", o->prompt, "Prompt text");
  app.add_option("-f,--file", o->file, "Read the prompt from a text file (plain or .xz) instead of -p");
  app.add_option("-c,--ctx-size", o->ctx,
                 "Context in tokens (default: the model's trained context_length; beyond it RoPE positions degrade "
                 "quality, with a warning)");
  app.add_option("-n,--n-predict", o->gen.max_tokens, "New tokens to generate (default 128)");
  app.add_option("--steps", o->gen.steps, "llama2.c run.c steps: forward passes over BOS + prompt + generated tokens; overrides -n");
  app.add_option("--temp", o->gen.sampler.temperature, "Temperature (0 = greedy, the default)");
  app.add_option("--top-k", o->gen.sampler.top_k, "Top-k (0 = off)");
  app.add_option("--top-p", o->gen.sampler.top_p, "Top-p (1 = off)");
  app.add_option("--seed", o->gen.sampler.seed, "Sampling seed");
  app.add_option("-t,--threads", o->threads, "Threads (default: all)");
  app.add_flag("--json", o->json, "Print one JSON object instead of streaming");
  app.add_option("--prompt-cache", o->gen.prompt_cache,
                 "Load the prompt's compressed cache from FILE if it holds a prefix of the prompt, else compute and save it");
  add_cache_flags(app, &o->cache);
  return [o]() -> Status { return run(*o); };
});

}  // namespace
}  // namespace tqkv::cli
