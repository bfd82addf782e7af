// Compressed KV cache of one transformer layer (several independent sequences) and of a model.
//
// Stores ONLY the encoded formats of tqkv/format.h, in fixed-size pages of `page_tokens` tokens
// per (sequence, kv head), so growth never copies history. Keys and values have independent
// formats. Optional f16 windows: the first `sink_tokens` tokens and the most recent
// `recent_window` tokens of each sequence are kept in f16; a token leaving the recent window is
// encoded into the compressed format at that moment (from its f16 copy).
// Rotated key formats (rvq, tq) are stored in the rotated domain; attention rotates the query
// once with the same rotation (scores are preserved because the rotation is orthogonal).
// Layout: docs/format.md ("KV cache pages"); design: docs/design.md. Attention reads the cache
// only through view() / sequence_view() (tqkv/kv_view.h) and runs in tqkv::attend (tqkv/attention.h).
//
// Thread-safety: const methods (attend, read, n_tokens, bytes_resident) may run concurrently;
// mutating methods (append, truncate, clear) need exclusive access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tqkv/attention.h"
#include "tqkv/cache_config.h"
#include "tqkv/format.h"
#include "tqkv/head_shard.h"
#include "tqkv/kv_view.h"
#include "tqkv/quantizer.h"
#include "tqkv/status.h"

namespace tqkv {

class LayerKVCache {
 public:
  // n_kv_heads >= 1, head_dim >= 1, layer is mixed into the rotation seed of each head.
  static StatusOr<std::unique_ptr<LayerKVCache>> make(int n_kv_heads, int head_dim,
                                                      const KVCacheOptions& options, int layer = 0);
  // A cache for the kv heads [shard.kv_head_offset, + shard.n_kv_heads) of a layer of
  // shard.n_total_kv_heads heads (tensor parallelism, tqkv/head_shard.h). Local head h is global
  // head kv_head_offset + h: its rotation seeds are those of the unsharded cache's head
  // kv_head_offset + h, so its pages are that head's pages bit for bit. Everything else (append,
  // attend, read: heads numbered locally, 0 .. n_kv_heads - 1) is as for a whole layer.
  static StatusOr<std::unique_ptr<LayerKVCache>> make(const HeadShard& shard, int head_dim,
                                                      const KVCacheOptions& options, int layer = 0);
  ~LayerKVCache();

  int n_kv_heads() const;  // heads held (the shard's count)
  const HeadShard& shard() const;
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

  // Read-only views for attention implementations (tqkv/kv_view.h, tqkv/attention.h).
  // view() is valid while the cache lives; a SequenceView until the next append/truncate/clear.
  const LayerView& view() const;
  // The page tables of `seq`; an empty view (0 tokens) for a sequence never appended to.
  SequenceView sequence_view(int seq) const;
  // True when keys are appended and stored before RoPE (KVCacheOptions::keys_pre_rope or a
  // pre-RoPE key format): the forward pass must then append un-rotated keys.
  bool keys_pre_rope() const;

  // Convenience wrappers around tqkv::attend (tqkv/attention.h) for the last m tokens of `seq`:
  // q, out: (n_q_heads, m, head_dim), n_q_heads a multiple of n_kv_heads.
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

 private:
  friend class CacheFileAccess;  // save/restore of stored pages as they are (src/cache/cache_file.cc)
  struct Impl;
  explicit LayerKVCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class ModelKVCache {
 public:
  static StatusOr<std::unique_ptr<ModelKVCache>> make(int n_layers, int n_kv_heads, int head_dim,
                                                      const ModelCacheConfig& config);
  // Every layer holds the same kv heads `shard` (tensor parallelism, tqkv/head_shard.h).
  static StatusOr<std::unique_ptr<ModelKVCache>> make(int n_layers, const HeadShard& shard, int head_dim,
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
