// Perplexity and KL divergence with llama-perplexity semantics.
//
// The whole text is tokenized once (BOS prepended when the tokenizer adds one) and cut into
// n_chunks = tokens / ctx non-overlapping chunks of ctx tokens (capped by options.chunks). Each
// chunk starts from an empty cache with its first token replaced by BOS (when the tokenizer adds
// BOS); positions j in
// [ctx/2, ctx-1) are scored with -log p(token[j+1] | tokens[0..j]).
// ppl = exp(mean nll); ppl_stderr = ppl * sqrt(var(nll) / (N - 1)) (llama.cpp's estimate).
//
// KL divergence: a base run (normally the f16 cache) writes, for every scored position, the
// next token's log-prob and the top-k log-probs (file layout: docs/format.md, "KLD base file");
// a later run with another cache reads it and reports KLD(base || new) statistics, RMS of
// p_new(next) - p_base(next), and how often both runs agree on the most likely token.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tqkv/kv_cache.h"
#include "tqkv/model.h"
#include "tqkv/status.h"
#include "tqkv/text_io.h"  // read_text_file (moved; kept for old includes)
#include "tqkv/threads.h"  // set_runtime_threads (moved; kept for old includes)

namespace tqkv {

struct PerplexityOptions {
  int ctx = 512;                 // tokens per chunk, >= 3 (and <= the model's context length)
  int max_chunks = -1;           // -1 = all
  int batch = 512;               // tokens per forward call
  std::string kld_base_out;      // write the base file here (empty = no)
  std::string kld_in;            // compare against this base file (empty = no)
  int kld_top_k = 32;            // top-k stored in the base file; 0 = the whole vocabulary
  bool progress = false;         // progress bar on stderr
  int threads = 0;               // attention threads (0 = OpenMP default)
};

struct PerplexityResult {
  double ppl = 0, ppl_stderr = 0;
  int64_t tokens = 0;            // scored positions
  int64_t tokens_evaluated = 0;  // chunks * ctx
  int chunks = 0;
  size_t kv_bytes = 0;           // ModelKVCache::bytes_resident() with one full chunk cached
  size_t kv_f16_bytes = 0;       // the same tokens as f16 K and V
  double kv_bits_per_element = 0;  // 8 * kv_bytes / (layers * ctx * kv_heads * head_dim * 2)
  bool has_kld = false;
  double kld_mean = 0, kld_median = 0, kld_p99 = 0, kld_max = 0;
  double rms_dp = 0;             // RMS of p_new(next) - p_base(next)
  double top1_agreement = 0;     // fraction of positions with the same argmax
  double seconds = 0;
};

StatusOr<PerplexityResult> run_perplexity(const Model& model, const ModelCacheConfig& cache_config,
                                          const std::string& text, const PerplexityOptions& options);

}  // namespace tqkv
