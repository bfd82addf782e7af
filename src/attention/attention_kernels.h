// Inner kernels of the fused attention (internal). Scalar versions in attention.cc are the
// reference; AVX-512 versions in attention_avx512.cc. A "state" is one (query head, query token)
// pair of the GQA group being processed; `ns` states are handled together so every KV byte is read
// once for all of them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "tqkv/kv_view.h"
#include "quant/kernels.h"

namespace tqkv::attn {

inline constexpr int kBlock = 64;  // tokens per softmax block (4 tiles)
// Lookup tiles (TileParams::lut) at AVX-512: levels, query and value weights as 14-bit integers
// (|x| <= 8191) multiplied by vpdpwssd. 16 products of two such numbers sum to < 2^30, so an int32
// accumulator never overflows when it is flushed to float every 16 coordinates (keys) or after
// each tile of 16 tokens (values).
inline constexpr int kLut16Max = 8191;
// The f16 kernels (f16_scores_*, f16_accum_*) convert a block to a stack tile of kBlock x d floats;
// they require d <= kF16DirectMaxDim (checked) and attend() uses the general decode path above.
inline constexpr int kF16DirectMaxDim = 1024;

// Calls f(std::integral_constant<int, NS>{}, s0) for groups of NS = 4 states and the remainder
// (NS = 3, 2, 1), so kernels keep NS accumulators in registers with NS known at compile time.
template <typename F>
inline void by_state_groups(int ns, F&& f) {
  int s = 0;
  for (; s + 4 <= ns; s += 4) f(std::integral_constant<int, 4>{}, s);
  switch (ns - s) {
    case 3: f(std::integral_constant<int, 3>{}, s); break;
    case 2: f(std::integral_constant<int, 2>{}, s); break;
    case 1: f(std::integral_constant<int, 1>{}, s); break;
    default: break;
  }
}

// exp(x) = 2^n * p(r), x = n ln2 + r: Cephes-style split of ln2 and degree-6 polynomial, shared by
// the AVX2 and AVX-512 softmax kernels (relative error ~2e-7).
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2Hi = 0.693359375f;
inline constexpr float kLn2Lo = -2.12194440e-4f;
inline constexpr float kExpPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                      4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

// Queries of one work item, prepared once.
struct Queries {
  int ns = 0, d = 0;
  std::vector<float> q;      // (ns, d) scaled by the softmax scale, original domain
  std::vector<float> qr;     // (ns, d) rotated with the key rotation (fast key layout only)
  std::vector<float> qsum;   // (ns,) sum_i qr[i]
  // AVX-512 key kernel: per state, plane p and coordinate i, x = alpha_p * qr[i] / delta[s, p] in
  // [-127, 127] as int8 digits: x ~ q8 (|error| <= 1/2) or x ~ q8 + q8lo / 254 (|error| <= 1/508).
  std::vector<int8_t> q8;    // (ns, planes, groups * 4)
  std::vector<int8_t> q8lo;  // (ns, planes, groups * 4)
  std::vector<float> delta;  // (ns, planes) scale of each state's plane digits
  int digits = 1;            // 1: q8 only; 2: q8 + q8lo / 254
  bool combined = false;     // planes folded into one byte (TileParams::mult); q8: (ns, groups * 4)
  std::vector<float> klut;   // (ns, groups, 16) scalar key kernel: nibble partial sums of qr
  // AVX-512 lookup key tiles (TileParams::lut): q16 = round(qr / dq) in [-kLut16Max, kLut16Max]
  // per state (ns, d), dq per state times the level step (lut_step) in dq16; lut16 = the levels
  // as int16 round(level / lut_step), |.| <= kLut16Max, repeated to 32 entries for vpermw.
  std::vector<int16_t> q16;
  std::vector<float> dq16;   // (ns,)
  alignas(64) int16_t lut16[32] = {};
  std::vector<int> valid;    // (ns,) scratch: valid tokens of the current block per state
};

// Fast keys: scores[s * 16 + t] = scale_t * (C0 * qsum_s + sum_p alpha_p sum_{i: bit} qr_s[i]) for
// the 16 tokens of one key tile.
void fast_key_scores_scalar(const TileParams& L, const uint8_t* tile, const Queries& Q, float* scores);
void fast_key_scores_avx512(const TileParams& L, const uint8_t* tile, const Queries& Q, float* scores);
void prepare_q8_avx512(const TileParams& L, Queries* Q);
void prepare_key_lut_scalar(const TileParams& L, Queries* Q);

// Fast values: for the n_tiles (<= 4) value tiles of a block and weights w (ns, 64) (softmax
// probability times the token's value scale; 0 for masked tokens):
//   o[s * dpad + i] += sum_p alpha_p sum_t w[s, t] * bit_p(t, i)     (rotated domain, no C0 term)
// dpad = 16 * L.groups. The AVX-512 version quantizes each state's weights to 8 bits
// (documented error bound in docs/design.md).
void fast_value_accum_scalar(const TileParams& L, const uint8_t* const* tiles, int n_tiles,
                             const float* w, int ns, float* o);
void fast_value_accum_avx512(const TileParams& L, const uint8_t* const* tiles, int n_tiles,
                             const float* w, int ns, float* o);

// Float tiles (decoded per-vector formats, f16 windows): k, v (n, d) rows.
//   scores[s * 64 + t] = q_s . k_t ;   o[s * d + i] += sum_t p[s * 64 + t] * v[t, i]
void float_scores_scalar(const float* q, int ns, const float* k, int n, int d, float* scores);
void float_accum_scalar(const float* p, int ns, const float* v, int n, int d, float* o);
void float_scores_avx512(const float* q, int ns, const float* k, int n, int d, float* scores);
void float_accum_avx512(const float* p, int ns, const float* v, int n, int d, float* o);

void float_scores_avx2(const float* q, int ns, const float* k, int n, int d, float* scores);
void float_accum_avx2(const float* p, int ns, const float* v, int n, int d, float* o);
void f16_scores_avx2(const float* q, int ns, const uint16_t* k, int n, int d, float* scores);
void f16_accum_avx2(const float* p, int ns, const uint16_t* v, int n, int d, float* o);
void softmax_block_avx2(float* scores, int ns, const int* valid, float* m, float* l, float* corr);

// Per-vector rotated codes (tq3/tq4, rvq with 3-4 bit passes) -> rows scale * z_hat in the
// ROTATED domain (no inverse rotation; the accumulated output is un-rotated once). d % 16 == 0.
void decode_rotated_domain_avx512(const kernels::RotatedParams& p, const uint8_t* codes, int n, float* out);

// f16 rows straight from the cache (the baseline f16/f16 cache and the f16 windows).
void f16_scores_avx512(const float* q, int ns, const uint16_t* k, int n, int d, float* scores);
void f16_accum_avx512(const float* p, int ns, const uint16_t* v, int n, int d, float* o);

// Online-softmax step for one block: scores (ns, 64) become probabilities p = exp(score - m_new)
// for tokens t < valid[s] and 0 for the rest; m (running max) and l (running sum) are updated
// and corr[s] = exp(m_old - m_new) is returned for rescaling the accumulators (1 if unchanged).
void softmax_block_scalar(float* scores, int ns, const int* valid, float* m, float* l, float* corr);
void softmax_block_avx512(float* scores, int ns, const int* valid, float* m, float* l, float* corr);
// Scan of the first n scores of one state before the softmax: kScoresNan if any is NaN,
// kScoresLive if any is not -inf (NaN counts as live; only meaningful without kScoresNan).
inline constexpr int kScoresNan = 1, kScoresLive = 2;
int score_flags_avx512(const float* sc, int n);
int score_flags_avx2(const float* sc, int n);
// w[s, t] = p[s, t] * vscale[t]; cw[s] += sum_t w[s, t]. vscale: (64,), zero past the block end.
void value_weights_scalar(const float* p, int ns, const float* vscale, float* w, float* cw);
void value_weights_avx512(const float* p, int ns, const float* vscale, float* w, float* cw);

}  // namespace tqkv::attn
