// The attention contract: causal attention of m query tokens per request over the keys and values
// one layer of the cache holds, read through its read-only view (tqkv/kv_view.h).
//
//   tqkv::LayerView layer = cache.view();
//   TQKV_ASSIGN_OR_RETURN(tqkv::SequenceView sv, cache.sequence_view(seq));
//   tqkv::AttentionQuery q{sv, m, q_view, out_view};
//   tqkv::AttentionParams p{&q, 1, n_q_heads};
//   TQKV_RETURN_IF_ERROR(tqkv::attend(layer, p));
//
// Semantics (every implementation, CPU or CUDA, computes exactly this):
//   query j (0 <= j < m) of a request sits at token index p_j = seq.n_tokens - m + j and attends to
//   stored tokens 0..p_j (the chunk's own keys as stored, so prefill and decode see the same keys);
//   q head h uses kv head h / (n_q_heads / n_kv_heads) (GQA);
//   out = sum_t softmax_t(scale * q . k_t) v_t, k_t and v_t as decoded from the cache, with
//   RoPE applied to k_t at position position_offset + t when the key stream is stored pre-RoPE.
// Queries are ALWAYS given after RoPE (at position position_offset + p_j).
//
// Thread-safety: attend() only reads the view; several calls may run concurrently on one cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tqkv/kv_view.h"
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

// Which coordinates RoPE rotates together: (2i, 2i+1) (Llama/GGUF "adjacent") or (i, i + dims/2)
// (GPT-NeoX / Qwen2 "neox halves").
enum class RopeStyle { kAdjacent, kNeox };

// RoPE as the model applies it (src/runtime/forward.cc uses exactly these functions):
//   pair i (0 <= i < rotary_dims / 2) of a head vector at integer position p is rotated by
//   theta_i = (p / position_scale) * inv_freq_i,   inv_freq_i = base^(-2i / rotary_dims) / freq_divisors[i]
// (inv_freq computed in double, then rounded to float; theta and its sin/cos in float).
// Coordinates >= rotary_dims are not rotated. rotary_dims == 0 means "no RoPE information": only
// post-RoPE key streams can then be attended.
struct RopeParams {
  int rotary_dims = 0;                 // even, <= head_dim
  float base = 10000.0f;               // rope.freq_base
  float position_scale = 1.0f;         // linear scaling (rope.scale_linear): positions / scale
  RopeStyle style = RopeStyle::kAdjacent;
  const float* freq_divisors = nullptr;  // (rotary_dims / 2) per-pair divisors (Llama 3.1), or null
};

// inv_freq_i for i in 0 .. rotary_dims / 2 - 1.
std::vector<float> rope_inv_freq(const RopeParams& rope);
// Rotates one head vector x (head_dim >= rotary_dims floats) in place to position `pos`.
// inv_freq: rope_inv_freq(rope).
void apply_rope(const RopeParams& rope, const float* inv_freq, int64_t pos, float* x);

struct AttentionOptions {
  float scale = 0;       // score scale; 0 means 1/sqrt(head_dim)
  int threads = 0;       // 0 = all threads of the OpenMP runtime
  int split_tokens = 0;  // split-K: compressed tokens per work item (multiple of 64); 0 = automatic
  RopeParams rope;       // needed when the layer's key stream is stored pre-RoPE
};

// One request: the last m tokens of one sequence.
struct AttentionQuery {
  SequenceView seq;
  int m = 1;                  // 1 <= m <= seq.n_tokens
  HeadTokenView q;            // (n_q_heads, m, head_dim), after RoPE
  MutableHeadTokenView out;   // (n_q_heads, m, head_dim)
  int64_t position_offset = 0;  // RoPE position of stored token t is position_offset + t
};

struct AttentionParams {
  const AttentionQuery* queries = nullptr;
  size_t n_queries = 0;
  int n_q_heads = 0;  // a positive multiple of the layer's n_kv_heads (GQA ratio n_q_heads / n_kv_heads)
  AttentionOptions options;
};

// Runs every request of `params` (in parallel: requests x kv heads x splits of the compressed
// range) on the CPU at the active SIMD level (tqkv/simd.h). Errors: invalid shapes, null views,
// a pre-RoPE key stream without options.rope.rotary_dims.
Status attend(const LayerView& layer, const AttentionParams& params);

}  // namespace tqkv
