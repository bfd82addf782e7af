#include "tqkv/generate.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>

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
  return g;
}

StatusOr<bool> TextGenerator::next(GeneratedToken* out) {
  if (done_) return false;
  auto t0 = std::chrono::steady_clock::now();
  if (!prefilled_) {
    Status s = ctx_->forward(prompt_.data(), static_cast<int>(prompt_.size()), logits_.data(), false);
    prefill_s_ = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    if (!s.ok()) { done_ = true; return s; }
    prefilled_ = true;
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
