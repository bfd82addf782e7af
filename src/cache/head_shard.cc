// Head shards for tensor parallelism (tqkv/head_shard.h).
#include "tqkv/head_shard.h"

#include <string>

namespace tqkv {

HeadShard all_kv_heads(int n_kv_heads) { return HeadShard{0, n_kv_heads, n_kv_heads}; }

Status validate_head_shard(const HeadShard& s) {
  if (s.n_kv_heads < 1)
    return invalid_argument("a head shard needs at least one kv head, got n_kv_heads " + std::to_string(s.n_kv_heads));
  if (s.kv_head_offset < 0)
    return invalid_argument("kv_head_offset must be >= 0, got " + std::to_string(s.kv_head_offset));
  // Compared in 64 bits: offset + count may overflow int on hostile input.
  if (static_cast<long long>(s.kv_head_offset) + s.n_kv_heads > s.n_total_kv_heads)
    return invalid_argument("kv heads [" + std::to_string(s.kv_head_offset) + ", " +
                            std::to_string(static_cast<long long>(s.kv_head_offset) + s.n_kv_heads) +
                            ") lie outside the layer's " + std::to_string(s.n_total_kv_heads) +
                            " kv heads (kv_head_offset + n_kv_heads must be <= n_total_kv_heads)");
  return Status::Ok();
}

StatusOr<HeadShard> shard_kv_heads(int n_total_kv_heads, int rank, int world_size) {
  if (n_total_kv_heads < 1)
    return invalid_argument("n_total_kv_heads must be >= 1, got " + std::to_string(n_total_kv_heads));
  if (world_size < 1) return invalid_argument("world_size must be >= 1, got " + std::to_string(world_size));
  if (rank < 0 || rank >= world_size)
    return invalid_argument("rank must be in [0, " + std::to_string(world_size) + "), got " + std::to_string(rank));
  if (world_size > n_total_kv_heads)
    return invalid_argument("world_size " + std::to_string(world_size) + " exceeds the " +
                            std::to_string(n_total_kv_heads) +
                            " kv heads: every rank needs at least one kv head (replicated kv heads are not supported)");
  const int base = n_total_kv_heads / world_size, extra = n_total_kv_heads % world_size;
  HeadShard s;
  s.n_total_kv_heads = n_total_kv_heads;
  s.n_kv_heads = base + (rank < extra ? 1 : 0);
  s.kv_head_offset = rank * base + (rank < extra ? rank : extra);
  return s;
}

StatusOr<QueryHeadRange> shard_query_heads(const HeadShard& shard, int n_total_q_heads) {
  TQKV_RETURN_IF_ERROR(validate_head_shard(shard));
  if (n_total_q_heads < 1 || n_total_q_heads % shard.n_total_kv_heads != 0)
    return invalid_argument("n_total_q_heads must be a positive multiple of the " +
                            std::to_string(shard.n_total_kv_heads) + " kv heads, got " + std::to_string(n_total_q_heads));
  const int g = n_total_q_heads / shard.n_total_kv_heads;
  return QueryHeadRange{shard.kv_head_offset * g, shard.n_kv_heads * g};
}

}  // namespace tqkv
