// SIMD scores of pre-RoPE pk{b} keys (internal; docs/design.md §12 "Fused pk kernels").
//
// The scalar reference (attention.cc, key_scores) decodes a block with PreRopeKeyCodec::decode,
// rotates every row with apply_rope (float angle, std::cos/sin per pair and token) and dots it with
// the query. The SIMD path computes the same scores with no trigonometry per token:
//   q . R(theta_{P+t}) k_hat_t = (R(theta_P)^T q) . (R(theta_t) k_hat_t)
// for a block starting at position P (exact: R(a + b) = R(a) R(b)). Per block the query is rotated
// back by the block's base angle (cos/sin in double, advanced block to block by a double
// recurrence); per token the decoded key is rotated by the offset angle t * omega (t = 0..63, a
// table computed once per attend call in double and rounded to float).
//
// Decoded rows use a permuted lane layout (the plan): RoPE pairs sorted by their widest channel,
// the pair's first channels in the "A" vectors, the second channels in the "B" vectors at the same
// lanes, so the rotation is lane-wise (A' = A c - B s, B' = A s + B c) for either RoPE style; the
// channels beyond rotary_dims follow. Queries are permuted the same way, so the dot products are
// unchanged. Sorting puts the few wide (5-8 bit) channels into few vectors: a vector whose channels
// all have <= 4 bits decodes with one 32-entry permute of the level table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tqkv/attention.h"
#include "tqkv/prerope_keys.h"

namespace tqkv::attn {

inline constexpr int kPkLanes = 16;  // lanes of one plan vector (one zmm, two ymm)

// Offset rotations R(t * omega_j), t = 0..63, per RoPE pair j in natural order, and the per-pair
// angular speeds. Computed once per attend() call.
struct PkRopeTables {
  int pairs = 0;                    // rotary_dims / 2
  std::vector<double> omega;        // (pairs,) inv_freq_j / position_scale (radians per position)
  std::vector<float> cos_t, sin_t;  // (64, pairs) cos / sin of t * omega_j, double rounded to float
  std::vector<double> cos_step, sin_step;  // (pairs,) cos / sin of 64 * omega_j (block recurrence)
};
PkRopeTables make_pk_rope_tables(const RopeParams& rope, const float* inv_freq);

// Decode plan of one codec (one sequence's statistics for one kv head).
struct PkPlan {
  int d = 0, pairs = 0;          // head_dim, RoPE pairs
  int rot_vec = 0, pass_vec = 0;  // vectors of A lanes (= of B lanes), vectors of non-rotary lanes
  int nvec = 0, dp = 0;          // 2 rot_vec + pass_vec vectors; dp = 16 nvec floats per row
  int stream_bytes = 0;          // code bytes after the bf16 scale
  bool fits_zmm2 = false;        // stream <= 128 bytes (AVX-512 word-permute path)
  std::vector<int> chan;         // (dp,) source channel of each lane, -1 for padding
  std::vector<int> pair;         // (rot_vec * 16,) RoPE pair of each A lane, -1 for padding
  // Per lane: the channel's code starts at stream bit o and has b bits;
  // index into `levels` = ((window >> shift) & mask) | base, base = 1 << b (b = 0: 0).
  std::vector<uint32_t> shift16, shift8, byte_off, mask, base;  // (dp,) o % 16, o % 8, o / 8
  std::vector<uint16_t> widx;    // (nvec, 32) words (o / 16, o / 16 + 1) of each lane (AVX-512)
  std::vector<int> windows;      // (nvec,) 32-entry windows of `levels` the vector needs (1..16)
  std::vector<float> sd, mu;     // (dp,) channel statistics, 0 for padding
  // levels[(1 << b) + code] = b-bit Gaussian Lloyd-Max level; levels[0] = levels[1] = 0 (0-bit
  // channels decode to the mean, as the reference does).
  alignas(64) float levels[512] = {};
  std::vector<float> cos_t, sin_t;  // (64, rot_vec * 16) the offset table in A-lane order, pads 1/0
  // The same per-lane constants grouped per vector (one cache line each), for the AVX-512 kernel.
  struct alignas(64) Vec {
    uint16_t widx[32];
    uint32_t shift16[16], mask[16], base[16];
    float sd[16], mu[16];
  };
  std::vector<Vec> vec;  // (nvec,)
};

// Builds the plan of `codec` for `rope` (rotary_dims even, <= head_dim).
void make_pk_plan(const PreRopeKeyCodec& codec, const RopeParams& rope, const PkRopeTables& tables, PkPlan* plan);

// Permutes queries (ns, d) into the plan's lane layout: qp (ns, dp), zero in padding lanes.
void pk_permute_queries(const PkPlan& P, const float* q, int ns, float* qp);
// Rotates permuted queries back by the angles (cos_base, sin_base) of one block's first position
// (per A lane, double): qb = R(theta_P)^T qp.
void pk_rotate_queries(const PkPlan& P, const float* qp, int ns, const double* cos_base, const double* sin_base,
                       float* qb);

// Decodes cnt codes (stride code_size bytes, the first at `codes`) into rows (cnt, dp) of the
// permuted layout, row t rotated by the offset angle t * omega. cnt <= 64.
void pk_decode_rope_avx512(const PkPlan& P, const uint8_t* codes, size_t code_size, int cnt, float* rows);
void pk_decode_rope_avx2(const PkPlan& P, const uint8_t* codes, size_t code_size, int cnt, float* rows);

}  // namespace tqkv::attn
