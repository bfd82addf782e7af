// Synthetic head vectors for evaluation and benchmarks (deterministic for a seed).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tqkv {

// i.i.d. N(0, 1) coordinates. out: (n, dim).
void generate_gaussian(float* out, size_t n, int dim, uint64_t seed);

// "llm-like" keys: the structure that makes real keys hard to quantize without a rotation.
//  - RoPE-like pairs: coordinates (2i, 2i+1) form a pair with amplitude a_i that rotates with the
//    token position t at frequency 10000^(-2i/dim) (position t = vector index).
//  - Pair amplitudes are log-normal (sigma 0.5); max(1, dim/32) pairs are outlier channels whose
//    amplitude is 10-20x the median (their own factor drawn uniformly in [10, 20]).
//  - Every channel has a fixed offset (N(0, 0.5) times its amplitude) and per-token noise
//    (N(0, 0.3) times its amplitude).
// Per-channel RMS max/median comes out around 10-20 and the coordinate kurtosis is high, like
// the keys of real models (models/README.md); the Hadamard rotation flattens both.
// Odd dims: the last coordinate is an unpaired ordinary channel. out: (n, dim).
void generate_llm_like(float* out, size_t n, int dim, uint64_t seed);

}  // namespace tqkv
