#include "tqkv/generate.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>

#include "tqkv/cache_file.h"

namespace tqkv {
namespace {

// run.c's safe_printf rule: a single unprintable byte is not printed.
bool printable(const std::string& piece) {
  if (piece.empty()) return false;
  if (piece.size() == 1) {
    const unsigned char b = static_cast<unsigned char>(piece[0]);
    if (!(std::isprint(b) || std::isspace(b))) return false;
  }
  return true;
}

std::string printed_piece(const Tokenizer& tok, int prev, int token) {
  std::string p = tok.decode_piece_after(prev, token);
  return printable(p) ? p : std::string();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Status validate_generate_options(const GenerateOptions& options) {
  if (options.max_tokens < 0)
    return invalid_argument("max_tokens (-n) must be >= 0, got " + std::to_string(options.max_tokens));
  if (options.steps < 0) return invalid_argument("steps (--steps) must be >= 0, got " + std::to_string(options.steps));
  const SamplerOptions& so = options.sampler;
  // NaN compares false with everything: check that the value is in range, not that it is out.
  if (!(std::isfinite(so.temperature) && so.temperature >= 0))
    return invalid_argument("temperature (--temp) must be a finite number >= 0, got " + std::to_string(so.temperature));
  if (!(so.top_p > 0 && so.top_p <= 1))
    return invalid_argument("top_p (--top-p) must be in (0, 1], got " + std::to_string(so.top_p));
  if (so.top_k < 0) return invalid_argument("top_k (--top-k) must be >= 0, got " + std::to_string(so.top_k));
  return Status::Ok();
}

StatusOr<std::unique_ptr<TextGenerator>> TextGenerator::make(const Model& model, InferenceContext* ctx,
                                                             const std::string& prompt,
                                                             const GenerateOptions& options) {
  if (ctx == nullptr) return invalid_argument("generate: no inference context");
  TQKV_RETURN_IF_ERROR(validate_generate_options(options));
  const Tokenizer& tok = model.tokenizer();
  std::unique_ptr<TextGenerator> g(new TextGenerator());
  g->model_ = &model;
  g->ctx_ = ctx;
  g->sampler_ = Sampler(options.sampler);
  g->prompt_ = tok.encode(prompt, tok.add_bos());
  if (g->prompt_.empty()) g->prompt_.push_back(tok.bos());
  const int n_prompt = static_cast<int>(g->prompt_.size());
  if (n_prompt > ctx->max_tokens())
    return invalid_argument("prompt is " + std::to_string(n_prompt) + " tokens, longer than the context of " +
                            std::to_string(ctx->max_tokens()));
  g->n_new_ = options.max_tokens;
  // run.c runs `steps` forward passes (positions 0..steps-1) and prints the token each one yields.
  // (in 64 bits: steps = INT_MAX would overflow steps + 1)
  if (options.steps > 0)
    g->n_new_ = static_cast<int>(std::max<int64_t>(0, int64_t{options.steps} + 1 - n_prompt));
  for (int i = 1; i < n_prompt; ++i) g->prompt_text_ += printed_piece(tok, g->prompt_[i - 1], g->prompt_[i]);
  // Tokenizers without BOS: the first piece is printed too.
  if (g->prompt_[0] != tok.bos()) g->prompt_text_ = printed_piece(tok, -1, g->prompt_[0]) + g->prompt_text_;
  g->logits_.resize(model.config().vocab_size);
  g->prev_ = g->prompt_.back();
  ctx->clear();
  g->prompt_cache_ = options.prompt_cache;
  if (!g->prompt_cache_.empty() && ::access(g->prompt_cache_.c_str(), F_OK) == 0) {
    const auto t0 = std::chrono::steady_clock::now();
    TQKV_ASSIGN_OR_RETURN(CacheFileContents c,
                          load_cache_file(g->prompt_cache_, model, ctx->mutable_cache(), ctx->max_tokens()));
    const std::vector<int>* toks = nullptr;
    for (const auto& [id, t] : c.sequences)
      if (id == 0) toks = &t;
    if (toks && toks->size() <= g->prompt_.size() && std::equal(toks->begin(), toks->end(), g->prompt_.begin())) {
      const int cached = static_cast<int>(toks->size());
      TQKV_RETURN_IF_ERROR(ctx->resume_at(cached));
      g->start_ = std::min(cached, n_prompt - 1);  // the last prompt token runs again for its logits
      TQKV_RETURN_IF_ERROR(ctx->truncate(g->start_));
      g->pc_.loaded_tokens = cached;
      g->pc_.file_bytes = c.stats.file_bytes;
      g->pc_.f16_file_bytes = c.stats.f16_file_bytes;
      g->pc_.file_prefill_seconds = c.prefill_seconds;
    } else {
      ctx->clear();
      g->pc_.replaced_other_prompt = true;
    }
    g->pc_.load_seconds = seconds_since(t0);
  }
  return g;
}

StatusOr<bool> TextGenerator::next(GeneratedToken* out) {
  if (done_) return false;
  auto t0 = std::chrono::steady_clock::now();
  if (!prefilled_) {
    Status s = ctx_->forward(prompt_.data() + start_, static_cast<int>(prompt_.size()) - start_, logits_.data(), false);
    prefill_s_ = seconds_since(t0);
    if (!s.ok()) { done_ = true; return s; }
    prefilled_ = true;
    if (!prompt_cache_.empty() && pc_.loaded_tokens < static_cast<int>(prompt_.size())) {
      CacheFileContents c;
      c.sequences = {{0, prompt_}};
      c.prefill_seconds = prefill_s_ + pc_.file_prefill_seconds;
      auto st = save_cache_file(prompt_cache_, *model_, ctx_->cache(), c);
      if (!st.ok()) { done_ = true; return st.status(); }
      pc_.saved_tokens = static_cast<int>(prompt_.size());
      pc_.file_bytes = st->file_bytes;
      pc_.f16_file_bytes = st->f16_file_bytes;
    }
    t0 = std::chrono::steady_clock::now();
  } else {
    // The previous token has not been run yet: stop before running it when nothing more is wanted.
    if (generated_ >= n_new_ || ctx_->n_past() >= ctx_->max_tokens()) { done_ = true; return false; }
    Status s = ctx_->forward(&prev_, 1, logits_.data(), false);
    if (!s.ok()) { done_ = true; decode_s_ += seconds_since(t0); return s; }
  }
  bool more = generated_ < n_new_;
  int next = 0;
  if (more) {
    next = sampler_.sample(logits_.data(), model_->config().vocab_size);
    more = next != model_->tokenizer().eos() && next != model_->tokenizer().bos();
  }
  decode_s_ += seconds_since(t0);
  if (!more) { done_ = true; return false; }
  out->id = next;
  out->text = printed_piece(model_->tokenizer(), prev_, next);
  prev_ = next;
  ++generated_;
  return true;
}

}  // namespace tqkv
