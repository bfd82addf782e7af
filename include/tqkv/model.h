// Llama-family model loaded from GGUF, and its forward pass over a tqkv KV cache.
//
//   auto model = tqkv::Model::load("m.gguf");                    // arch llama, qwen2 or qwen3
//   auto ctx = tqkv::InferenceContext::make(**model, cache_config);
//   std::vector<float> logits((*model)->config().vocab_size);
//   (*ctx)->forward(tokens.data(), n, logits.data(), /*all_logits=*/false);  // prefill
//   (*ctx)->forward(&next, 1, logits.data(), false);                         // decode
//
// Weights: F32, F16, BF16 and Q8_0 matrices are used in place from the mmap; Q4_0 / Q4_K / Q6_K tensors (and
// every 1-D tensor and the token embedding) are dequantized to f32 once at load. Matmuls: f32 via
// OpenBLAS (sgemv for decode, sgemm for prefill); f16/bf16 via an AVX2+F16C row kernel for decode
// and 64-row blocks widened to f32 + sgemm for prefill.
// Attention of every layer goes through LayerKVCache (append K/V, then attend): keys post-RoPE,
// or pre-RoPE when the cache stores them so (LayerKVCache::keys_pre_rope; attention applies RoPE).
//
// Conventions (GGUF "llama"): q/k rows are stored so that RoPE rotates ADJACENT pairs
// (x[2i], x[2i+1]) by pos * base^(-2i/rot_dim) (divided by rope_freqs[i] when the file has that
// tensor). qwen2/qwen3 use NeoX pairs (x[i], x[i + rot_dim/2]); qwen3 RMS-normalizes every q and k
// head (weights attn_q_norm / attn_k_norm) before RoPE.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tqkv/gguf.h"
#include "tqkv/kv_cache.h"
#include "tqkv/llama2c.h"  // convert_llama2c (moved; kept for old includes)
#include "tqkv/sampler.h"  // Sampler (moved; kept for old includes)
#include "tqkv/status.h"
#include "tqkv/tokenizer.h"

namespace tqkv {

// RopeStyle (adjacent or NeoX pairs) and RoPE itself: tqkv/attention.h.

struct ModelConfig {
  std::string arch;          // "llama", "qwen2" or "qwen3"
  int dim = 0;               // embedding length
  int hidden_dim = 0;        // feed-forward length
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;          // dim / n_heads unless the file says otherwise (attention.key_length)
  int vocab_size = 0;
  int context_length = 0;    // training context (generate/perplexity refuse to exceed it)
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
  float rope_scale = 1.0f;   // linear RoPE scaling: positions are divided by this factor
  int rope_dim = 0;          // rotated dims per head (rope.dimension_count, default head_dim)
  RopeStyle rope_style = RopeStyle::kAdjacent;
  bool qkv_bias = false;     // qwen2
  bool qk_norm = false;      // qwen3: RMSNorm of each q and k head before RoPE
  bool tied_output = false;  // output head = token embedding
};

// A weight matrix W (out, in), row-major, y = W x: f32 (in the mmap or Model-owned after
// dequantization), or f16 / bf16 / q8_0 used in place from the mmap.
struct Matrix {
  const void* data = nullptr;
  GgmlType type = GgmlType::kF32;  // kF32, kF16, kBF16 or kQ8_0
};

// Vectors are f32, pointers either into the mmap (F32) or into Model-owned buffers.
struct LayerWeights {
  const float* attn_norm = nullptr;  // (dim)
  Matrix wq;                         // (n_heads * head_dim, dim)
  Matrix wk;                         // (n_kv_heads * head_dim, dim)
  Matrix wv;                         // (n_kv_heads * head_dim, dim)
  const float* bq = nullptr;         // (n_heads * head_dim) or null
  const float* bk = nullptr;         // (n_kv_heads * head_dim) or null
  const float* bv = nullptr;         // (n_kv_heads * head_dim) or null
  const float* q_norm = nullptr;     // (head_dim) or null (qwen3)
  const float* k_norm = nullptr;     // (head_dim) or null (qwen3)
  Matrix wo;                         // (dim, n_heads * head_dim)
  const float* ffn_norm = nullptr;   // (dim)
  Matrix w_gate;                     // (hidden_dim, dim)  "w1"
  Matrix w_down;                     // (dim, hidden_dim)  "w2"
  Matrix w_up;                       // (hidden_dim, dim)  "w3"
};

struct ModelWeights {
  const float* token_embd = nullptr;  // (vocab_size, dim)
  std::vector<LayerWeights> layers;   // (n_layers)
  const float* output_norm = nullptr; // (dim)
  Matrix output;                      // (vocab_size, dim); token_embd's data when tied
  const float* rope_freqs = nullptr;  // (rope_dim / 2) or null: per-pair divisors of the frequency (Llama 3.1)
};

class Model {
 public:
  // Opens, validates (architecture, hyper-parameters, every tensor's presence, type and shape)
  // and prepares the weights. Errors name the missing key/tensor or the unsupported feature.
  static StatusOr<std::unique_ptr<Model>> load(const std::string& path);
  static StatusOr<std::unique_ptr<Model>> from_gguf(std::unique_ptr<GgufFile> file);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const GgufFile& gguf() const { return *file_; }
  // Bytes of weights one decoded token reads (every matrix and the output head; not the
  // embedding row): the numerator of the achieved-bandwidth figure.
  size_t weight_bytes_per_token() const;

 private:
  Model() = default;
  Status init();
  Status load_weights();
  Status load_layer(int l);
  StatusOr<const float*> tensor(const std::string& name, std::vector<int64_t> dims, bool required = true);
  StatusOr<Matrix> matrix(const std::string& name, std::vector<int64_t> dims, bool required = true);

  std::unique_ptr<GgufFile> file_;
  ModelConfig config_;
  ModelWeights weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<std::vector<float>> owned_;  // dequantized tensors
};

// One sequence being run: the model-level KV cache plus preallocated scratch buffers.
class InferenceContext {
 public:
  // max_batch: the most tokens one forward() call processes at once internally (longer inputs are
  // split). max_tokens: the context limit (0 = the model's context_length).
  static StatusOr<std::unique_ptr<InferenceContext>> make(const Model& model,
                                                          const ModelCacheConfig& cache_config,
                                                          int max_batch = 256, int max_tokens = 0);

  // Runs tokens[0..n) at positions n_past() .. n_past()+n-1 and appends them to the cache.
  // logits: (n, vocab) when all_logits, else (vocab) for the last token.
  // kOutOfRange when the context would exceed max_tokens; kInvalidArgument for a bad token id.
  Status forward(const int* tokens, int n, float* logits, bool all_logits);

  int n_past() const { return n_past_; }
  int max_tokens() const { return max_tokens_; }
  Status truncate(int n);      // rollback to n tokens
  void clear();
  const ModelKVCache& cache() const { return *cache_; }
  // Prompt-cache files (tqkv/cache_file.h): the cache to restore sequence 0 into, then
  // resume_at(n) to continue after its n tokens (n must equal what every layer now holds).
  ModelKVCache& mutable_cache() { return *cache_; }
  Status resume_at(int n);

  // Attention threads (0 = OpenMP default).
  void set_threads(int t) { attn_options_.threads = t; }

 private:
  InferenceContext() = default;
  Status forward_batch(const int* tokens, int n, float* logits, bool all_logits);

  const Model* model_ = nullptr;
  std::unique_ptr<ModelKVCache> cache_;
  AttentionOptions attn_options_;
  int max_batch_ = 0, max_tokens_ = 0, n_past_ = 0;
  // Scratch, B = max_batch.
  std::vector<float> x_;     // (B, dim) residual stream
  std::vector<float> xb_;    // (B, dim) normed input
  std::vector<float> q_;     // (B, n_heads * head_dim)
  std::vector<float> k_;     // (B, n_kv_heads * head_dim)
  std::vector<float> v_;     // (B, n_kv_heads * head_dim)
  std::vector<float> att_;   // (B, n_heads * head_dim) attention output
  std::vector<float> h1_;    // (B, hidden_dim)
  std::vector<float> h3_;    // (B, hidden_dim)
  RopeParams rope_;                   // the model's RoPE (tqkv/attention.h)
  std::vector<float> rope_inv_freq_;  // rope_inv_freq(rope_)
};

}  // namespace tqkv
