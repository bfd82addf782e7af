// Configuration of a KV cache: the formats and f16 windows of one layer (KVCacheOptions), of a
// whole model (ModelCacheConfig), and the seed's method names mapped onto formats.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tqkv/channel_basis.h"
#include "tqkv/format.h"
#include "tqkv/quantizer.h"
#include "tqkv/status.h"

namespace tqkv {

// Largest recent_window / sink_tokens accepted: the f16 rings are allocated whole on first use.
inline constexpr int kMaxWindowTokens = 1 << 24;

struct KVCacheOptions {
  FormatSpec key_format{FormatKind::kF16, 16, 1};
  FormatSpec value_format{FormatKind::kF16, 16, 1};
  QuantOptions quant;        // rotation on/off, base seed, residual codebook, norm correction
  int recent_window = 0;     // most recent W tokens per sequence kept in f16 (0 = none)
  int sink_tokens = 0;       // first S tokens per sequence kept in f16 (0 = none)
  int page_tokens = 64;      // tokens per page (multiple of 64); small pages keep short sequences compact
  // Keys are appended (and stored) BEFORE RoPE; attention applies RoPE on the fly
  // (AttentionOptions::rope). Also forced on by key formats whose table row says so.
  bool keys_pre_rope = false;
  // pk{b} key formats: the sequence's first N tokens (N = pk_calib_tokens >= 1) give each kv
  // head's key statistics; until then tokens that would be compressed wait in f16 ("pending").
  // The statistics are fixed afterwards (no refresh). docs/design.md "Pre-RoPE keys".
  int pk_calib_tokens = 128;
  // pk{b} streams: an optional channel basis per kv head (tqkv/prerope_keys.h "channel basis",
  // tqkv/channel_basis.h): [stream 0 = keys, 1 = values][GLOBAL kv head: a cache of a head shard
  // (tqkv/head_shard.h) reads entry kv_head_offset + h for its head h], or empty
  // (plain per-channel pk). Not part of the cache's bytes: the owner (the model) re-derives it.
  std::vector<std::shared_ptr<const ChannelBasis>> pk_basis[2];
};

// Cache configuration for a whole model: the seed's style (method, bits, residuals, value bits,
// hadamard) or llama.cpp's (-ctk/-ctv format names), plus per-layer overrides.
struct ModelCacheConfig {
  KVCacheOptions base;            // formats and windows of ordinary layers
  int boundary_layers = 0;        // the first and last N layers use boundary_* formats
  FormatSpec boundary_key_format{FormatKind::kQ8_0, 8, 1};
  FormatSpec boundary_value_format{FormatKind::kQ8_0, 8, 1};
  // pk{b} streams code in a basis derived from the model's projection weights (tqkv/channel_basis.h):
  // the eigenvectors of W diag(g)^2 W^T, W = the kv head's rows of attn_k (keys) or attn_v
  // (values), g = the attention norm's gain. The forward pass (InferenceContext)
  // computes them and fills layer_pk_basis; docs/design.md "Pre-RoPE keys".
  bool pk_weight_basis = false;
  // 0: the dense eigenbasis; B >= 1: block-diagonal (block_eigenbasis: the Gram restricted to
  // blocks of B channels), cheaper to decode (--pk-basis weights:B).
  int pk_weight_basis_block = 0;
  // Per layer: KVCacheOptions::pk_basis of that layer (empty: none). Filled by InferenceContext.
  std::vector<std::vector<std::shared_ptr<const ChannelBasis>>> layer_pk_basis[2];
};

// Seed-style configuration: method in {turboquant_rvq, turboquant_mse, kivi, q8_0, q4_0, f16, f32}.
//   turboquant_rvq: keys rvq{key_bits}x{residuals}, values tq{value_bits}
//   turboquant_mse: keys tq{key_bits},              values tq{value_bits}
//   kivi:           keys kivi{key_bits},            values kivi{value_bits}
//   q8_0 / q4_0 / f16 / f32: both keys and values in that format
// The mapping is the method table in src/format/format_table.cc (also used by the CLI help).
StatusOr<ModelCacheConfig> cache_config_from_method(const std::string& method, int key_bits,
                                                    int residuals, int value_bits,
                                                    bool use_hadamard);
// "turboquant_rvq, turboquant_mse, kivi, q8_0, q4_0, f16, f32"
std::string cache_method_names();

// The recommended configuration for a K+V average bit budget ("2bit", "2.5bit", "3bit", "4bit"), chosen
// by measurement (docs/results.md, docs/design.md "Pre-RoPE keys"): pre-RoPE keys with
// per-channel bits (pk{b}) and rotated values (tq{b}).
StatusOr<ModelCacheConfig> cache_config_from_preset(const std::string& name);
// "2bit, 2.5bit, 3bit, 4bit"
std::string cache_preset_names();

}  // namespace tqkv
