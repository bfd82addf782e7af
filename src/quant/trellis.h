// tt{b}: a tail-biting "bitshift" trellis code on the Hadamard-rotated vector (internal; the public
// entry point is make_quantizer; bytes in docs/format.md "tt{b}", design in docs/design.md 13).
//
// Per vector x (d floats), like tq{b}:
//   n = ||x|| (double);  z = R (x * sqrt(d) / n)       rotated, coordinates ~ N(0, 1)
// Then ONE b-bit code c_i per coordinate, but the decoded coordinate is not a function of c_i
// alone: it is a table lookup on the window of the last W codes,
//   w_i = c_i | c_{i-1} << b | ... | c_{i-W+1} << (b (W-1))    (indices mod d: tail-biting)
//   z_hat_i = T[w_i],  T = 2^(b W) Gaussian quantiles in a fixed pseudo-random order,
// with W = min(12 / b, d) (a 12-bit window: 4096 table entries, for every b). The encoder picks
// the codes jointly by a Viterbi search over the 2^(b (W-1)) window states (cost d 2^(b W) per
// pass, two passes for the tail-biting), which is what buys ~2 dB over scalar Lloyd-Max at the
// same b: the decoder still reads b bits per coordinate, but the coordinates share them.
//   scale = n / ||z_hat|| (norm correction) or n / sqrt(d), stored as bf16
//   decode: x_hat = scale * R^T z_hat
// Scalar and readable on purpose: this is the reference (there are no SIMD kernels).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tqkv/quantizer.h"

namespace tqkv {

inline constexpr int kTrellisWindowBits = 12;  // table entries 2^12, for every b

// Codes per window: W = min(12 / b, d) (b in 1..4).
int trellis_window(int bits, int dim);

// The decode table of `entries` = 2^(b W) values (a power of two, 2..4096): entry j is the
// Gaussian quantile Phi^-1((perm[j] + 0.5) / entries) (double bisection on erfc, rounded to float),
// perm the Fisher-Yates shuffle of 0..entries-1 by SplitMix64(kTrellisTableSeed): for
// i = entries-1 .. 1: swap(perm[i], perm[rng.uniform(i + 1)]). Memoized per process.
inline constexpr uint64_t kTrellisTableSeed = 0x7463712d74626c31ull;  // "tcq-tbl1"
const std::vector<float>& trellis_table(int entries);

// The Viterbi search on one rotated, normalized vector z (d floats): writes the d codes (each
// < 2^bits) minimizing sum_i (z_i - T[w_i])^2 over tail-biting paths found by the two-pass rule
// of docs/format.md, and returns that sum (float path metric, in element order).
float trellis_search(const float* z, int d, int bits, uint8_t* codes);

// z_hat_i = T[w_i] of a code vector (the decode before rotation and scale).
void trellis_reconstruct(const uint8_t* codes, int d, int bits, float* zhat);

// Factory of the format table row (FormatRow::make).
StatusOr<std::unique_ptr<Quantizer>> make_trellis_quantizer(const FormatSpec& spec, int dim,
                                                            const QuantOptions& options);

}  // namespace tqkv
