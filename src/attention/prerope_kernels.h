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
  // Token-lane kernel (pk_scores_tl_avx512): one 16-token group per vector, one channel at a time.
  // Per real lane (lanes with a channel, in lane order): the stream word o / 16 whose 32-bit window
  // holds the code, the shift o % 16, the kind of lookup (1: b <= 4, a 16-entry table repeated
  // every 2^b entries so the index needs no mask; 2: b = 5, 32 entries; 3: b >= 6, a gather under
  // mask 2^b - 1), the table's offset in `tl_tab` (entries sd * level, so key = fma(scale, entry, mu)).
  struct TlLane {
    int lane, word, shift, kind, tab;
    uint32_t mask;
    float mu;
  };
  std::vector<TlLane> tl;         // real lanes; the A lanes of pairs first (0 .. tl_pairs - 1)
  int tl_pairs = 0;               // real A lanes (= RoPE pairs); their B lanes are lane + 16 rot_vec
  std::vector<int> tl_b;          // (tl_pairs,) index into tl of each A lane's B lane
  std::vector<float> tl_tab;      // lookup tables (64-byte aligned offsets)
  std::vector<float> tl_cos, tl_sin;  // (tl_pairs, 64): cos / sin of t omega of each A lane's pair
  int tl_words = 0;               // 32-bit windows per token: ceil(stream_bytes / 2)
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

// Scores of cnt <= 64 codes against ns back-rotated queries qb (ns, dp) in one pass over the
// block, with the block transposed to 16-token vectors ("token lanes"): per 16 tokens, a gather
// per 32-bit stream window, then per channel one shift, one table permute and one FMA give 16
// tokens' key coordinate, rotated lane-wise with its pair's partner and stored channel-major in kt
// (dp, 64); the scores are then a (ns x dp) by (dp x 64) product with 16 tokens' scores per
// register (no horizontal sums). scores: (ns, 64), row stride 64; tokens >= cnt get finite junk.
// kt: scratch of dp * 64 floats. Needs P.tl_words <= kPkTlMaxWords.
inline constexpr int kPkTlMaxWords = 64;
void pk_scores_tl_avx512(const PkPlan& P, const uint8_t* codes, size_t code_size, int cnt, const float* qb, int ns,
                         float* kt, float* scores);

// Codecs with a channel basis (prerope_keys.h: x = S y_hat, y_hat the per-channel decode): the
// basis plan decodes y_hat with a rotation-free PkPlan (`y`: every lane a pass lane, sorted by
// width), synthesizes x = S y_hat into the RoPE lane layout (A lanes: each pair's first channel,
// B lanes: its second, pairs in natural order; then the non-rotary channels) and rotates the A/B
// lanes by the offset angle, so rows come out as pk_decode_rope_* rows do and the same query
// permutation / back-rotation applies (the plan's chan / pair / cos_t / sin_t have the PkPlan
// meaning). The synthesis skips S's zero entries per output vector of 16 lanes: a block-diagonal
// basis (blocks of B channels) costs d * B / 16 .. 2 d * B / 16 FMAs per token instead of d^2 / 16.
// Per output vector v, its nonzero columns are nz_lane[nz_begin[v] .. nz_begin[v + 1]) (a lane of
// y's rows) with the 16 entries col[16 k .. 16 k + 15] = S[chan[16 v + i]][y channel of that lane].
// Sums run over k in that order (float, one FMA per term).
struct PkBasisPlan {
  PkPlan y;                      // decode plan of y_hat (rotation-free)
  int d = 0, pairs = 0, rot_vec = 0, pass_vec = 0, nvec = 0, dp = 0;  // x layout, as PkPlan's
  std::vector<int> chan;         // (dp,) x channel of each lane, -1 for padding
  std::vector<int> pair;         // (rot_vec * 16,) RoPE pair of each A lane, -1 for padding
  std::vector<int> nz_begin;     // (nvec + 1,)
  std::vector<int> nz_lane;      // (nz,)
  std::vector<float> col;        // (nz, 16)
  std::vector<float> cos_t, sin_t;  // (64, rot_vec * 16) offset table in A-lane order, pads 1/0
  size_t nz_terms() const { return nz_lane.size(); }
};
void make_pk_basis_plan(const PreRopeKeyCodec& codec, const RopeParams& rope, const PkRopeTables& tables,
                        PkBasisPlan* plan);
// The basis plan's x layout as a PkPlan view for pk_permute_queries / pk_rotate_queries (only
// d, pairs, rot_vec, nvec, dp, chan, pair are set).
PkPlan pk_basis_query_plan(const PkBasisPlan& B);
// Decodes cnt <= 64 codes into rows (cnt, B.dp) of the x layout, row t rotated by t * omega.
// ybuf: scratch of 64 * B.y.dp floats.
void pk_decode_basis_rope_avx512(const PkBasisPlan& B, const uint8_t* codes, size_t code_size, int cnt, float* ybuf,
                                 float* rows);
void pk_decode_basis_rope_avx2(const PkBasisPlan& B, const uint8_t* codes, size_t code_size, int cnt, float* ybuf,
                               float* rows);

}  // namespace tqkv::attn
