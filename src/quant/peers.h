// The peer formats (internal; the public entry point is make_quantizer): readable scalar
// reference encode/decode of
//   rq4_0, riq4_nl   llama.cpp's KV-cache Hadamard rotation (attn_rot_k / attn_rot_v) + its q4_0 /
//                    iq4_nl blocks;
//   qjl{b}           QJL: 1-bit signs of m = b d Gaussian projections of the key + its norm;
//   tqp{b}           TurboQuant-prod: the tq{b-1} code + the QJL sketch (m = d) of its residual;
//   rabitq1          RaBitQ's 1-bit code: tq1's bytes with RaBitQ's unbiased scale.
// Every code is per vector; the fused attention reads them through decode() (the generic path of
// src/attention/attention.cc, one 64-token tile at a time). Layouts: docs/format.md ("Peers").
#pragma once

#include <memory>
#include <vector>

#include "tqkv/quantizer.h"

namespace tqkv {

// Walsh-Hadamard block size llama.cpp's KV cache rotates with (llama_kv_cache::build_input_k_rot /
// build_input_v_rot): 0 (no rotation) unless head_dim % 64 == 0; then keys use the largest power
// of two dividing head_dim, values 64.
int llama_rotation_block(int head_dim, bool value_stream);

// y = blockdiag(H_n, H_n, ...) x, H_n the orthonormal Sylvester Walsh-Hadamard matrix
// (H[i][j] = (-1)^popcount(i & j) / sqrt(n)), n = block (0: copy). H_n is symmetric and its own
// inverse. x and y may alias.
void llama_hadamard(const float* x, float* y, int dim, int block);

// The m x d Gaussian projection S of qjl/tqp (entries N(0, 1), row-major, float), a deterministic
// function of (m, d, seed): SplitMix64(seed ^ kSketchSeedSalt) Box-Muller draws, row by row.
inline constexpr uint64_t kSketchSeedSalt = 0x514a4c2d534b4348ull;  // "QJL-SKCH"
std::vector<float> qjl_sketch_matrix(int m, int dim, uint64_t seed);

// Factories of the format table rows (FormatRow::make).
StatusOr<std::unique_ptr<Quantizer>> make_rotated_block_quantizer(const FormatSpec& spec, int dim,
                                                                  const QuantOptions& options);  // rq4_0, riq4_nl
StatusOr<std::unique_ptr<Quantizer>> make_qjl_quantizer(const FormatSpec& spec, int dim, const QuantOptions& options);
StatusOr<std::unique_ptr<Quantizer>> make_rabitq_quantizer(const FormatSpec& spec, int dim,
                                                           const QuantOptions& options);  // rabitq1 (tq1's bytes)
StatusOr<std::unique_ptr<Quantizer>> make_tqp_quantizer(const FormatSpec& spec, int dim, const QuantOptions& options);

}  // namespace tqkv
