// Text generation as a stream of tokens, with the printing rules of `tqkv generate` (llama2.c's
// run.c): shared by the CLI and the Python module, so both produce the same text.
//
//   auto g = tqkv::TextGenerator::make(model, ctx.get(), "Once upon a time", options);
//   std::fputs((*g)->prompt_text().c_str(), stdout);     // the prompt as run.c prints it
//   tqkv::GeneratedToken t;
//   while (true) {
//     auto more = (*g)->next(&t);                         // first call runs the prompt (prefill)
//     if (!more.ok()) ...; if (!*more) break;
//     std::fputs(t.text.c_str(), stdout);
//   }
//
// Printing rules: a piece is the token's bytes after decode_piece_after(previous, token) (leading
// space dropped after BOS, <0xXX> tokens as that byte); a single unprintable byte is skipped
// (text empty) but still counts as a generated token. Generation stops after max_tokens new
// tokens, at EOS or BOS, or when the context (ctx->max_tokens()) is full.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tqkv/model.h"
#include "tqkv/status.h"

namespace tqkv {

struct GenerateOptions {
  int max_tokens = 128;    // new tokens, >= 0
  int steps = 0;           // > 0: run.c's steps (forward passes over BOS + prompt + new tokens); overrides max_tokens
  SamplerOptions sampler;  // greedy by default
  // Prompt-cache file (tqkv/cache_file.h; `tqkv generate --prompt-cache`): when it exists and
  // holds a prefix of the prompt, make() loads its compressed cache and the prefill runs only the
  // rest (at least the last prompt token, for its logits); otherwise the prefill computes the
  // whole prompt and saves its cache there (atomically). A file of another model, tokenizer or
  // cache format, or a corrupt one, is an error; one holding another prompt is replaced.
  std::string prompt_cache;
};

// What the prompt cache did (all zero without GenerateOptions::prompt_cache).
struct PromptCacheReport {
  int loaded_tokens = 0;          // tokens restored from the file
  int saved_tokens = 0;           // tokens saved to the file after the prefill
  size_t file_bytes = 0;          // the file (as loaded, or as saved)
  size_t f16_file_bytes = 0;      // the same file with f16 K/V
  double file_prefill_seconds = 0;  // the prefill time recorded in the loaded file
  double load_seconds = 0;        // reading and restoring it
  bool replaced_other_prompt = false;
};

// Checks max_tokens >= 0, steps >= 0, a finite temperature >= 0, top_p in (0, 1], top_k >= 0;
// errors name the option in both spellings ("temperature (--temp)"). make() calls it too.
Status validate_generate_options(const GenerateOptions& options);

struct GeneratedToken {
  int id = 0;
  std::string text;        // the bytes printed for this token (may be empty, may be part of a UTF-8 character)
};

class TextGenerator {
 public:
  // Tokenizes `prompt` (BOS first when the tokenizer adds one; an empty prompt is just BOS) and
  // checks it fits the context. Clears `ctx`: generation starts from an empty cache. `model` and
  // `ctx` must outlive the generator; ctx's cache holds the prompt and generated tokens afterwards.
  static StatusOr<std::unique_ptr<TextGenerator>> make(const Model& model, InferenceContext* ctx,
                                                       const std::string& prompt,
                                                       const GenerateOptions& options);

  const std::vector<int>& prompt_tokens() const { return prompt_; }
  // The prompt's pieces as `tqkv generate` prints them before the generated text.
  const std::string& prompt_text() const { return prompt_text_; }

  // Produces the next token: true and *out filled, or false when generation is over.
  // The first call runs the prompt through the model.
  StatusOr<bool> next(GeneratedToken* out);

  int generated() const { return generated_; }
  double prefill_seconds() const { return prefill_s_; }
  double decode_seconds() const { return decode_s_; }
  const PromptCacheReport& prompt_cache_report() const { return pc_; }

 private:
  TextGenerator() = default;

  const Model* model_ = nullptr;
  InferenceContext* ctx_ = nullptr;
  Sampler sampler_{SamplerOptions{}};
  std::vector<int> prompt_;
  std::string prompt_text_;
  std::vector<float> logits_;  // (vocab)
  int n_new_ = 0, generated_ = 0, prev_ = 0;
  bool prefilled_ = false, done_ = false;
  std::string prompt_cache_;
  int start_ = 0;  // prompt tokens already in the cache (restored from the prompt cache)
  PromptCacheReport pc_;
  double prefill_s_ = 0, decode_s_ = 0;
};

}  // namespace tqkv
