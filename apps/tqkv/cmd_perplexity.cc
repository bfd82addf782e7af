// tqkv perplexity -m M.gguf -f TEXT [-c CTX] [--chunks N] [cache flags]
//                 [--kl-divergence-base FILE | --kl-divergence FILE] [--kld-top-k K] [--json]
// llama-perplexity semantics (see tqkv/perplexity.h). JSON keys: ppl, ppl_stderr, kld_mean,
// kld_median, kld_p99, kld_max, rms_dp, top1_agreement (null without --kl-divergence), tokens
// (scored positions), tokens_evaluated, chunks, ctx, kv_bits_per_element, kv_bytes, kv_f16_bytes,
// cache, seconds.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cache_flags.h"
#include "command.h"
#include "data_paths.h"
#include "tqkv/model.h"
#include "tqkv/perplexity.h"

namespace tqkv::cli {
namespace {

struct Opts {
  std::string model, file, kld_base, kld;
  PerplexityOptions p;
  int threads = 0;
  bool json = false;
  CacheFlags cache;
};

Status run(Opts o) {
  TQKV_RETURN_IF_ERROR(check_threads(o.threads));
  if (o.threads > 0) set_runtime_threads(o.threads);
  // -c 2 scores no position (positions c/2 .. c-2): PPL would be NaN.
  if (o.p.ctx < 3) return invalid_argument("context size (-c) must be >= 3, got " + std::to_string(o.p.ctx));
  TQKV_ASSIGN_OR_RETURN(ModelCacheConfig cc, make_cache_config(o.cache));
  TQKV_ASSIGN_OR_RETURN(auto model, Model::load(o.model));
  TQKV_ASSIGN_OR_RETURN(std::string text, read_text_file(o.file));
  o.p.kld_base_out = o.kld_base;
  o.p.kld_in = o.kld;
  o.p.threads = o.threads;
  o.p.progress = !o.json || isatty(2);
  TQKV_ASSIGN_OR_RETURN(PerplexityResult r, run_perplexity(*model, cc, text, o.p));
  if (o.json) {
    nlohmann::json j = {{"ppl", r.ppl},
                        {"ppl_stderr", r.ppl_stderr},
                        {"tokens", r.tokens},
                        {"tokens_evaluated", r.tokens_evaluated},
                        {"chunks", r.chunks},
                        {"ctx", o.p.ctx},
                        {"kv_bits_per_element", r.kv_bits_per_element},
                        {"kv_bytes", r.kv_bytes},
                        {"kv_f16_bytes", r.kv_f16_bytes},
                        {"cache", describe_cache_config(cc)},
                        {"seconds", r.seconds}};
    for (const char* k : {"kld_mean", "kld_median", "kld_p99", "kld_max", "rms_dp", "top1_agreement"}) j[k] = nullptr;
    if (r.has_kld) {
      j["kld_mean"] = r.kld_mean;
      j["kld_median"] = r.kld_median;
      j["kld_p99"] = r.kld_p99;
      j["kld_max"] = r.kld_max;
      j["rms_dp"] = r.rms_dp;
      j["top1_agreement"] = r.top1_agreement;
    }
    std::printf("%s\n", j.dump(2).c_str());
    return Status::Ok();
  }
  std::printf("cache %s: %d chunks of %d tokens, %lld scored positions, %.1f s\n", describe_cache_config(cc).c_str(),
              r.chunks, o.p.ctx, static_cast<long long>(r.tokens), r.seconds);
  std::printf("PPL = %.4f +/- %.4f\n", r.ppl, r.ppl_stderr);
  std::printf("KV cache: %zu bytes for %d tokens (%.3f bits/element; f16 would be %zu bytes, %.2fx)\n", r.kv_bytes,
              o.p.ctx, r.kv_bits_per_element, r.kv_f16_bytes, r.kv_bytes ? double(r.kv_f16_bytes) / r.kv_bytes : 0.0);
  if (r.has_kld)
    std::printf("KLD: mean %.6f  median %.6f  p99 %.6f  max %.6f | RMS dp %.4f%% | same top-1 %.2f%%\n", r.kld_mean,
                r.kld_median, r.kld_p99, r.kld_max, 100 * r.rms_dp, 100 * r.top1_agreement);
  if (!o.kld_base.empty()) std::printf("KLD base written to %s\n", o.kld_base.c_str());
  note_if_slow_blas();
  return Status::Ok();
}

Register reg("perplexity", "Perplexity and KL divergence (llama-perplexity semantics)", [](CLI::App& app) {
  auto o = std::make_shared<Opts>();
  o->model = default_data_file("models/tqkv-ref-d128.gguf");
  o->file = default_data_file("models/eval/heldout.txt");
  app.add_option("-m,--model", o->model, "GGUF model (default: the shipped reference model)")->capture_default_str();
  app.add_option("-f,--file", o->file, "Text file, plain or .xz (default: the reference model's held-out text)")->capture_default_str();
  app.add_option("-c,--ctx-size", o->p.ctx, "Tokens per chunk (default 512)");
  app.add_option("--chunks", o->p.max_chunks, "Max chunks (default all)");
  app.add_option("-b,--batch-size", o->p.batch, "Tokens per forward call (default 512)");
  app.add_option("--kl-divergence-base", o->kld_base, "Write reference log-probs to FILE");
  app.add_option("--kl-divergence", o->kld, "Compare against a reference FILE");
  app.add_option("--kld-top-k", o->p.kld_top_k, "Log-probs stored per position in the base file (0 = all)");
  app.add_option("-t,--threads", o->threads, "Threads (default: all)");
  app.add_flag("--json", o->json, "Print one JSON object");
  add_cache_flags(app, &o->cache);
  return [o]() -> Status { return run(*o); };
});

}  // namespace
}  // namespace tqkv::cli
