// Llama / qwen2 forward pass over m tokens at a time (prefill and decode share the code).
// Matmuls: runtime::matmul (matmul.cc) with row-major activations (m, in) x W^T (in -> out).
// Attention: LayerKVCache::append (K after RoPE unless the cache stores pre-RoPE keys, V) then
// LayerKVCache::attend (tqkv::attend) for the m queries.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include <omp.h>

#include "runtime/matmul.h"
#include "tqkv/channel_basis.h"
#include "tqkv/gguf.h"
#include "tqkv/model.h"

namespace tqkv {
namespace {

void matmul(const float* x, const Matrix& w, float* y, int m, int in, int out, int threads) {
  runtime::matmul(x, w.data, w.type, y, m, in, out, threads);
}

void rmsnorm(float* out, const float* x, const float* w, int n, float eps) {
  float ss = 0;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const float s = 1.0f / std::sqrt(ss / n + eps);
  for (int i = 0; i < n; ++i) out[i] = w[i] * (s * x[i]);
}

// Rotates every head of one token in place (tqkv::apply_rope). v: (n_heads, head_dim).
void rope(float* v, int n_heads, int head_dim, const RopeParams& rope, const float* inv_freq, int64_t pos) {
  for (int h = 0; h < n_heads; ++h) apply_rope(rope, inv_freq, pos, v + h * head_dim);
}

// pk channel bases from the weights (ModelCacheConfig::pk_weight_basis, tqkv/channel_basis.h), per
// layer and kv head, for layers whose KEYS are pk: the orthonormal eigenbasis of
// A = W_h diag(g)^2 W_h^T, W_h = that head's rows of attn_k, g = the attention norm's gain
// (weights:B: of A restricted to diagonal blocks of B channels, block_eigenbasis). Values
// get none: on the shipped d128 model pk values in the attn_v basis measured worse than tq values
// and than pk values per channel (docs/design.md "Pre-RoPE keys"); the library takes one anyway
// (KVCacheOptions::pk_basis[1]).
Status fill_pk_basis(const Model& model, ModelCacheConfig* cc) {
  const ModelConfig& c = model.config();
  const int d = c.head_dim, D = c.dim;
  std::vector<float> rows(static_cast<size_t>(d) * D);
  auto read_rows = [&](const Matrix& w, const char* name, int l, int row0) -> Status {
    int64_t be = 0, bb = 0;
    if (!ggml_type_layout(static_cast<uint32_t>(w.type), &be, &bb) || !ggml_type_dequantizable(w.type) || D % be != 0)
      return invalid_argument(std::string("--pk-basis weights: cannot read the ") + name + " weights of layer " +
                              std::to_string(l));
    const size_t row_bytes = static_cast<size_t>(D / be * bb);
    for (int r = 0; r < d; ++r)
      dequantize_row(w.type, static_cast<const uint8_t*>(w.data) + static_cast<size_t>(row0 + r) * row_bytes,
                     &rows[static_cast<size_t>(r) * D], D);
    return Status::Ok();
  };
  for (int st = 0; st < 2; ++st) cc->layer_pk_basis[st].assign(c.n_layers, {});
  for (int l = 0; l < c.n_layers; ++l) {
    const bool boundary = l < cc->boundary_layers || l >= c.n_layers - cc->boundary_layers;
    const FormatSpec fk = boundary ? cc->boundary_key_format : cc->base.key_format;
    const FormatSpec fv = boundary ? cc->boundary_value_format : cc->base.value_format;
    const LayerWeights& L = model.weights().layers[l];
    (void)fv;
    for (int st = 0; st < 1; ++st) {  // keys only (see above)
      if ((st == 0 ? fk : fv).kind != FormatKind::kPk) continue;
      for (int h = 0; h < c.n_kv_heads; ++h) {
        TQKV_RETURN_IF_ERROR(read_rows(st == 0 ? L.wk : L.wv, st == 0 ? "attn_k" : "attn_v", l, h * d));
        const std::vector<double> gram = projection_gram(rows.data(), L.attn_norm, d, D);
        TQKV_ASSIGN_OR_RETURN(auto u, cc->pk_weight_basis_block > 0
                                          ? block_eigenbasis(gram, d, cc->pk_weight_basis_block)
                                          : symmetric_eigenbasis(gram, d));
        ChannelBasis basis = orthonormal_basis(std::move(u), d);
        cc->layer_pk_basis[st][l].push_back(std::make_shared<const ChannelBasis>(std::move(basis)));
      }
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::unique_ptr<InferenceContext>> InferenceContext::make(const Model& model,
                                                                   const ModelCacheConfig& cache_config,
                                                                   int max_batch, int max_tokens) {
  const ModelConfig& c = model.config();
  if (max_batch < 1) return invalid_argument("max_batch must be >= 1");
  if (max_tokens < 0) return invalid_argument("max_tokens must be >= 0");
  std::unique_ptr<InferenceContext> ctx(new InferenceContext());
  static const bool blas_single = [] {
    openblas_set_num_threads(1);  // threads come from OpenMP (see matmul)
    return true;
  }();
  (void)blas_single;
  ctx->model_ = &model;
  ctx->max_batch_ = max_batch;
  ctx->max_tokens_ = max_tokens > 0 ? max_tokens : c.context_length;
  // A window or sink count beyond the context behaves exactly like one equal to it (no token ever
  // leaves the window), so it is clamped: the f16 rings are sized by what the run can hold, not by
  // the flag (--kv-window 1000000 used to allocate 2.56 GB for a 2-token generation).
  ModelCacheConfig cc = cache_config;
  cc.base.recent_window = std::min(cc.base.recent_window, ctx->max_tokens_);
  cc.base.sink_tokens = std::min(cc.base.sink_tokens, ctx->max_tokens_);
  if (cc.pk_weight_basis) TQKV_RETURN_IF_ERROR(fill_pk_basis(model, &cc));
  TQKV_ASSIGN_OR_RETURN(ctx->cache_, ModelKVCache::make(c.n_layers, c.n_kv_heads, c.head_dim, cc));
  const size_t B = max_batch, QD = size_t(c.n_heads) * c.head_dim, KD = size_t(c.n_kv_heads) * c.head_dim;
  ctx->x_.resize(B * c.dim);
  ctx->xb_.resize(B * std::max<size_t>(c.dim, QD));
  ctx->q_.resize(B * QD);
  ctx->k_.resize(B * KD);
  ctx->v_.resize(B * KD);
  ctx->att_.resize(B * QD);
  ctx->h1_.resize(B * c.hidden_dim);
  ctx->h3_.resize(B * c.hidden_dim);
  ctx->rope_ = RopeParams{c.rope_dim, c.rope_freq_base, c.rope_scale, c.rope_style, model.weights().rope_freqs};
  ctx->rope_inv_freq_ = rope_inv_freq(ctx->rope_);
  return ctx;
}

Status InferenceContext::resume_at(int n) {
  if (n < 0 || n > max_tokens_) return out_of_range("resume_at(" + std::to_string(n) + ") outside the context");
  for (int l = 0; l < cache_->n_layers(); ++l)
    if (cache_->layer(l).n_tokens(0) != n)
      return invalid_argument("resume_at(" + std::to_string(n) + "): layer " + std::to_string(l) + " holds " +
                              std::to_string(cache_->layer(l).n_tokens(0)) + " tokens");
  n_past_ = n;
  return Status::Ok();
}

Status InferenceContext::truncate(int n) {
  if (n < 0 || n > n_past_) return invalid_argument("truncate: n out of range");
  TQKV_RETURN_IF_ERROR(cache_->truncate(0, n));
  n_past_ = n;
  return Status::Ok();
}

void InferenceContext::clear() {
  cache_->clear();
  n_past_ = 0;
}

Status InferenceContext::forward(const int* tokens, int n, float* logits, bool all_logits) {
  if (n < 1) return invalid_argument("forward needs at least one token");
  if (n_past_ + n > max_tokens_)
    return out_of_range("context full: " + std::to_string(n_past_) + " + " + std::to_string(n) +
                        " tokens exceed the context of " + std::to_string(max_tokens_));
  const int V = model_->config().vocab_size;
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      return invalid_argument("token id " + std::to_string(tokens[i]) + " outside the vocabulary of " + std::to_string(V));
  for (int i = 0; i < n; i += max_batch_) {
    const int m = std::min(max_batch_, n - i);
    const bool last = i + m == n;
    float* lg = all_logits ? logits + size_t(i) * V : (last ? logits : nullptr);
    Status s = forward_batch(tokens + i, m, lg, all_logits);
    if (!s.ok()) {  // leave every layer's cache at the last complete token
      (void)cache_->truncate(0, n_past_);
      return s;
    }
  }
  return Status::Ok();
}

Status InferenceContext::forward_batch(const int* tokens, int m, float* logits, bool all_logits) {
  const ModelConfig& c = model_->config();
  const ModelWeights& w = model_->weights();
  const int D = c.dim, HD = c.head_dim, QD = c.n_heads * HD, KD = c.n_kv_heads * HD, H = c.hidden_dim;
  float* x = x_.data();
  float* xb = xb_.data();
  for (int t = 0; t < m; ++t)
    std::memcpy(x + size_t(t) * D, w.token_embd + size_t(tokens[t]) * D, sizeof(float) * D);

  // Small attention problems run on one thread: an OpenMP team costs more than it saves there
  // (tens of microseconds per layer, far worse on a loaded machine).
  const int nt = attn_options_.threads > 0 ? attn_options_.threads : omp_get_max_threads();
  AttentionOptions attn = attn_options_;
  attn.rope = rope_;
  const double attn_work = double(n_past_ + m) * m * QD;
  if (attn.threads == 0 && attn_work < double(1 << 20)) attn.threads = 1;
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    for (int t = 0; t < m; ++t) rmsnorm(xb + size_t(t) * D, x + size_t(t) * D, L.attn_norm, D, c.rms_eps);
    matmul(xb, L.wq, q_.data(), m, D, QD, nt);
    matmul(xb, L.wk, k_.data(), m, D, KD, nt);
    matmul(xb, L.wv, v_.data(), m, D, KD, nt);
    for (int t = 0; t < m; ++t) {
      float* q = q_.data() + size_t(t) * QD;
      float* k = k_.data() + size_t(t) * KD;
      float* v = v_.data() + size_t(t) * KD;
      if (L.bq) for (int i = 0; i < QD; ++i) q[i] += L.bq[i];
      if (L.bk) for (int i = 0; i < KD; ++i) k[i] += L.bk[i];
      if (L.bv) for (int i = 0; i < KD; ++i) v[i] += L.bv[i];
      if (L.q_norm)
        for (int h = 0; h < c.n_heads; ++h) rmsnorm(q + h * HD, q + h * HD, L.q_norm, HD, c.rms_eps);
      if (L.k_norm)
        for (int h = 0; h < c.n_kv_heads; ++h) rmsnorm(k + h * HD, k + h * HD, L.k_norm, HD, c.rms_eps);
      const int64_t pos = n_past_ + t;
      rope(q, c.n_heads, HD, rope_, rope_inv_freq_.data(), pos);
      // Pre-RoPE caches store k as is; attention rotates it at its position.
      if (!cache_->layer(l).keys_pre_rope()) rope(k, c.n_kv_heads, HD, rope_, rope_inv_freq_.data(), pos);
    }
    LayerKVCache& cache = cache_->layer(l);
    // Views (heads, tokens, head_dim) over the token-major buffers.
    TQKV_RETURN_IF_ERROR(cache.append(0, m, HeadTokenView{k_.data(), HD, KD}, HeadTokenView{v_.data(), HD, KD}));
    TQKV_RETURN_IF_ERROR(cache.attend(0, m, c.n_heads, HeadTokenView{q_.data(), HD, QD},
                                      MutableHeadTokenView{att_.data(), HD, QD}, attn));
    matmul(att_.data(), L.wo, xb, m, QD, D, nt);
    for (size_t i = 0; i < size_t(m) * D; ++i) x[i] += xb[i];

    for (int t = 0; t < m; ++t) rmsnorm(xb + size_t(t) * D, x + size_t(t) * D, L.ffn_norm, D, c.rms_eps);
    matmul(xb, L.w_gate, h1_.data(), m, D, H, nt);
    matmul(xb, L.w_up, h3_.data(), m, D, H, nt);
    for (size_t i = 0; i < size_t(m) * H; ++i) {
      const float g = h1_[i];
      h1_[i] = g / (1.0f + std::exp(-g)) * h3_[i];
    }
    matmul(h1_.data(), L.w_down, xb, m, H, D, nt);
    for (size_t i = 0; i < size_t(m) * D; ++i) x[i] += xb[i];
  }
  n_past_ += m;
  if (!logits) return Status::Ok();
  const int first = all_logits ? 0 : m - 1;
  const int rows = m - first;
  for (int t = first; t < m; ++t)
    rmsnorm(xb + size_t(t - first) * D, x + size_t(t) * D, w.output_norm, D, c.rms_eps);
  matmul(xb, w.output, logits, rows, D, c.vocab_size, nt);
  return Status::Ok();
}

}  // namespace tqkv
