// Rotation seeds of the KV cache's quantizers.
//
// LayerKVCache builds one key quantizer and one value quantizer per (layer, kv head), each with
// its own rotation seed derived from the cache's base seed (KVCacheOptions::quant.seed). Stored
// codes of rotated formats (rvq, tq) are only meaningful with that seed, so the derivation is part
// of the storage contract (docs/format.md, "KV cache pages"). It is public so that a reader of the
// cache's bytes — or a test that checks the cache against an independent quantizer — can build
// the very same quantizer:
//
//   QuantOptions q = options.quant;
//   q.seed = tqkv::cache_rotation_seed(options.quant.seed, layer, head, tqkv::CacheStream::kKey);
//   auto kq = tqkv::make_quantizer(options.key_format, head_dim, q);
#pragma once

#include <cstdint>

namespace tqkv {

enum class CacheStream { kKey = 0, kValue = 1 };

// `head` is the GLOBAL kv head index: a cache of a subset of heads (tqkv/head_shard.h) uses
// kv_head_offset + h for its local head h, so any rank can rebuild any head's quantizers.
// SplitMix64-style finalizer of base ^ (golden * (layer * 1000003 + head * 2 + stream + 1)).
// Pure function; the exact formula is in docs/format.md.
uint64_t cache_rotation_seed(uint64_t base_seed, int layer, int head, CacheStream stream);

}  // namespace tqkv
