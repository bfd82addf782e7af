// Tensor parallelism: the attention heads one rank holds (a contiguous block of KV heads and,
// under grouped-query attention, the query heads that read them).
//
// A cache for a subset of heads (LayerKVCache::make(const HeadShard&, ...), CudaCacheConfig's
// kv_head_offset) derives every per-head rotation/transform seed from the GLOBAL kv head index:
//   cache_rotation_seed(options.quant.seed, layer, shard.kv_head_offset + h, stream)
// (tqkv/cache_seed.h), so any rank can rebuild any head's parameters from (seed, layer, global
// head) alone, and the shards' pages concatenated are the unsharded cache's pages bit for bit.
// Attention per head is independent of the other heads, so each rank attends locally; the
// engine's all-reduce of the row-parallel o_proj combines the ranks (docs/tensor-parallel.md).
//
//   auto shard = tqkv::shard_kv_heads(/*n_total_kv_heads=*/8, rank, world_size);  // StatusOr
//   auto q = tqkv::shard_query_heads(*shard, /*n_total_q_heads=*/32);              // GQA groups
//   auto cache = tqkv::LayerKVCache::make(*shard, head_dim, options, layer);
//   cache->append(seq, n, k_of_my_kv_heads, v_of_my_kv_heads);   // (shard->n_kv_heads, n, d)
//   cache->attend(seq, m, q->count, q_of_my_q_heads, out);          // (q->count, m, d)
#pragma once

#include "tqkv/status.h"

namespace tqkv {

struct HeadShard {
  int kv_head_offset = 0;    // global index of the first kv head held
  int n_kv_heads = 0;        // kv heads held (>= 1)
  int n_total_kv_heads = 0;  // kv heads of the whole layer
  bool operator==(const HeadShard&) const = default;
};

// The query heads of a shard: global heads [offset, offset + count).
struct QueryHeadRange {
  int offset = 0;
  int count = 0;
  bool operator==(const QueryHeadRange&) const = default;
};

// The whole layer as one shard (what LayerKVCache::make(n_kv_heads, ...) builds).
HeadShard all_kv_heads(int n_kv_heads);

// OK when 1 <= n_kv_heads, 0 <= kv_head_offset and kv_head_offset + n_kv_heads <= n_total_kv_heads.
Status validate_head_shard(const HeadShard& shard);

// The kv heads of rank `rank` of `world_size`: contiguous blocks in rank order, balanced (when
// world_size does not divide n_total_kv_heads the first n_total_kv_heads % world_size ranks hold
// one more). Errors: world_size < 1, rank outside [0, world_size), world_size > n_total_kv_heads
// (every rank needs at least one kv head; replicating kv heads is not supported).
StatusOr<HeadShard> shard_kv_heads(int n_total_kv_heads, int rank, int world_size);

// The query heads reading the shard's kv heads: query head j reads kv head j / g with
// g = n_total_q_heads / n_total_kv_heads, so the shard's query heads are
// [kv_head_offset * g, (kv_head_offset + n_kv_heads) * g). Errors: an invalid shard, or
// n_total_q_heads not a positive multiple of n_total_kv_heads.
StatusOr<QueryHeadRange> shard_query_heads(const HeadShard& shard, int n_total_q_heads);

}  // namespace tqkv
