// Compressed KV cache of one transformer layer (several independent sequences) and of a model.
//
// Stores ONLY the encoded formats of tqkv/format.h, in fixed-size pages of `page_tokens` tokens
// per (sequence, kv head), so growth never copies history. Keys and values have independent
// formats. Optional f16 windows: the first `sink_tokens` tokens and the most recent
// `recent_window` tokens of each sequence are kept in f16; a token leaving the recent window is
// encoded into the compressed format at that moment (from its f16 copy).
// Rotated key formats (rvq, tq) are stored in the rotated domain; attention rotates the query
// once with the same rotation (scores are preserved because the rotation is orthogonal).
// Layout: docs/format.md ("KV cache pages"); design: docs/design.md.
//
// Thread-safety: const methods (attend, read, n_tokens, bytes_resident) may run concurrently;
// mutating methods (append, truncate, clear) need exclusive access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tqkv/format.h"
#include "tqkv/quantizer.h"
#include "tqkv/status.h"

namespace tqkv {

// A (heads, tokens, head_dim) float tensor with explicit strides (elements; head_dim contiguous).
struct HeadTokenView {
  const float* data = nullptr;
  int64_t head_stride = 0;
  int64_t token_stride = 0;
  const float* at(int64_t h, int64_t t) const { return data + h * head_stride + t * token_stride; }
};
struct MutableHeadTokenView {
  float* data = nullptr;
  int64_t head_stride = 0;
  int64_t token_stride = 0;
  float* at(int64_t h, int64_t t) const { return data + h * head_stride + t * token_stride; }
};

inline constexpr int kMaxWindowTokens = 1 << 24;

struct KVCacheOptions {
  FormatSpec key_format{FormatKind::kF16, 16, 1};
  FormatSpec value_format{FormatKind::kF16, 16, 1};
  QuantOptions quant;        // rotation on/off, base seed, residual codebook, norm correction
  int recent_window = 0;     // most recent W tokens per sequence kept in f16 (0 = none)
  int sink_tokens = 0;       // first S tokens per sequence kept in f16 (0 = none)
                             // (both <= kMaxWindowTokens: the f16 rings are allocated whole on first use)
  int page_tokens = 64;      // tokens per page (multiple of 64); small pages keep short sequences compact
};

struct AttentionOptions {
  float scale = 0;           // score scale; 0 means 1/sqrt(head_dim)
  int threads = 0;           // 0 = all threads of the OpenMP runtime
};

class LayerKVCache {
 public:
  // n_kv_heads >= 1, head_dim >= 1, layer is mixed into the rotation seed of each head.
  static StatusOr<std::unique_ptr<LayerKVCache>> make(int n_kv_heads, int head_dim,
                                                      const KVCacheOptions& options, int layer = 0);
  ~LayerKVCache();

  int n_kv_heads() const;
  int head_dim() const;
  const KVCacheOptions& options() const;

  // Appends n >= 1 tokens to sequence `seq` (>= 0; sequences are created on first use).
  // k, v: (n_kv_heads, n, head_dim).
  Status append(int seq, int n, const HeadTokenView& k, const HeadTokenView& v);
  // Tokens stored for `seq` (0 for a sequence never appended to).
  int n_tokens(int seq) const;
  // Drops tokens n.. of `seq` (rollback / context shift); n <= n_tokens(seq).
  Status truncate(int seq, int n);
  void clear();
  // Every byte this cache holds for keys, values, page tables and windows (allocated capacity).
  size_t bytes_resident() const;

  // Causal attention for the LAST m tokens of `seq` (m >= 1; call after append): query j sits at
  // position p_j = n_tokens(seq) - m + j and attends to tokens 0..p_j, reading every key and value
  // from the cache (compressed or window copy — the chunk's own keys are used as stored, so
  // prefill and decode see the same keys). q, out: (n_q_heads, m, head_dim); n_q_heads must be
  // a multiple of n_kv_heads (GQA: q head h uses kv head h / (n_q_heads / n_kv_heads)).
  Status attend(int seq, int m, int n_q_heads, const HeadTokenView& q, const MutableHeadTokenView& out,
                const AttentionOptions& options = {}) const;

  // Batched form: independent requests run in parallel (sequences x heads x KV splits).
  struct Request {
    int seq = 0;
    int m = 1;
    HeadTokenView q;
    MutableHeadTokenView out;
  };
  Status attend_batch(const std::vector<Request>& requests, int n_q_heads,
                      const AttentionOptions& options = {}) const;

  // Decodes tokens [t0, t1) of kv head `head` of `seq` into k, v: (t1 - t0, head_dim) each, in the
  // ORIGINAL (unrotated) domain. For tests and the reference attention.
  Status read(int seq, int head, int t0, int t1, float* k, float* v) const;

  struct Impl;
 private:
  explicit LayerKVCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Cache configuration for a whole model: the seed's style (method, bits, residuals, value bits,
// hadamard) or llama.cpp's (-ctk/-ctv format names), plus per-layer overrides.
struct ModelCacheConfig {
  KVCacheOptions base;            // formats and windows of ordinary layers
  int boundary_layers = 0;        // the first and last N layers use boundary_* formats
  FormatSpec boundary_key_format{FormatKind::kQ8_0, 8, 1};
  FormatSpec boundary_value_format{FormatKind::kQ8_0, 8, 1};
};

// Seed-style configuration: method in {turboquant_rvq, turboquant_mse, kivi, q8_0, q4_0, f16, f32}.
//   turboquant_rvq: keys rvq{key_bits}x{residuals}, values tq{value_bits}
//   turboquant_mse: keys tq{key_bits},              values tq{value_bits}
//   kivi:           keys kivi{key_bits},            values kivi{value_bits}
//   q8_0 / q4_0 / f16 / f32: both keys and values in that format
StatusOr<ModelCacheConfig> cache_config_from_method(const std::string& method, int key_bits,
                                                    int residuals, int value_bits,
                                                    bool use_hadamard);

class ModelKVCache {
 public:
  static StatusOr<std::unique_ptr<ModelKVCache>> make(int n_layers, int n_kv_heads, int head_dim,
                                                      const ModelCacheConfig& config);
  int n_layers() const { return static_cast<int>(layers_.size()); }
  LayerKVCache& layer(int i) { return *layers_[i]; }
  const LayerKVCache& layer(int i) const { return *layers_[i]; }
  size_t bytes_resident() const;
  // Bytes the same tokens would take as f16 K and V (no paging overhead): the honest baseline.
  size_t f16_bytes(int seq) const;
  Status truncate(int seq, int n);
  void clear();

 private:
  std::vector<std::unique_ptr<LayerKVCache>> layers_;
  int n_kv_heads_ = 0, head_dim_ = 0;
};

}  // namespace tqkv
