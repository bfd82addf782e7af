// Storage formats of one head vector (head_dim floats) and their exact sizes.
//
// Names (used by the CLI, the cache, the docs):
//   f32, f16                 uncompressed baselines
//   q8_0, q4_0               llama.cpp block formats (block 32, fp16 scale)
//   rvq{b}x{p}               TurboQuant RVQ: Hadamard rotation, p passes of b bits each
//                            (rvq1x2 = 1-bit Gaussian pass + 1 residual pass), b in 1..4, p in 1..4
//   tq{b}                    single-stage TurboQuant-MSE: rotation + one b-bit Lloyd-Max pass
//   kivi{b}                  KIVI-style per-token asymmetric groups of 32 (fp16 scale + fp16 min), b in {2,4}
//   pk{b}                    pre-RoPE keys with per-channel bit allocation (also usable for values,
//                            where no RoPE is involved), b = average coded bits per element in (0, 8],
//                            fractional allowed (pk2, pk2.5, pk3.125); per-sequence statistics, so no
//                            stateless Quantizer (tqkv/prerope_keys.h)
// The peers (each with its own quantizer, src/quant/peers.cc; docs/format.md "Peers"):
//   rq4_0, riq4_nl           llama.cpp's q4_0 / iq4_nl blocks after llama.cpp's KV-cache Hadamard
//                            rotation (attn_rot_k/v: Sylvester Walsh-Hadamard, keys in blocks of the
//                            largest power of two dividing d, values in blocks of 64; none if d % 64)
//   qjl{b}                   QJL: sign bits of m = b d Gaussian projections + the norm (keys; unbiased
//                            inner products), b in 1..4
//   tqp{b}                   TurboQuant-prod: tq{b-1} + the QJL sign sketch (m = d) of its residual and
//                            the residual norm, b in 2..5
//   rabitq1                  RaBitQ's 1-bit code (no centroid): tq1's bytes with the unbiased scale
//                            ||x||^2 / <x, u> instead of the norm-correcting one
//   tqo{h}x{l}               the TurboQuant paper's outlier split: 25% of the channels (the largest
//                            mean square over the sequence's first N tokens) coded by tq{h}, the rest
//                            by tq{l} (tqo3x2 = the paper's "32 at 3 bits, 96 at 2"), h and l in 1..4;
//                            per-sequence channel set, so no stateless Quantizer (tqkv/outlier_split.h)
//   tt{b}                    tail-biting bitshift trellis code of the rotated vector: b bits per
//                            element, each coordinate decoded from a 12-bit window of codes
//                            (Viterbi encode, table-lookup decode; src/quant/trellis.h), b in 1..4
// The byte layout of every format is written down in docs/format.md. Every property of a format
// (name, bits, planes, code size, rotated, storage, kernels) is one row of the format table
// (src/format/format_table.cc); these functions and every consumer read it from there.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "tqkv/status.h"

namespace tqkv {

enum class FormatKind { kF32, kF16, kQ8_0, kQ4_0, kRvq, kTq, kKivi, kPk, kRq4_0, kRiq4Nl, kQjl, kTqp, kRabitq, kTqo, kTt };

struct FormatSpec {
  FormatKind kind = FormatKind::kF16;
  int bits = 16;   // bits per code per pass (rvq, tq, kivi); 32/16/8/4 for the baselines
  int passes = 1;  // rvq: total passes (first pass + residual passes); tqo: the regular channels' bits l
  double avg_bits = 0;  // pk only: average coded bits per element (bits = its ceiling)

  // Canonical name, e.g. "rvq1x2", "tq2", "q8_0".
  std::string name() const;
  // True for formats stored in the Hadamard-rotated domain (rvq, tq).
  bool rotated() const;
  // True for key formats that store keys before RoPE (pk): the cache receives pre-RoPE keys and
  // attention applies RoPE per position.
  bool pre_rope() const;
  bool operator==(const FormatSpec&) const = default;
};

// Parses a format name ("rvq1x2", "tq4", "q8_0", "f16", "kivi2", ...). Case-sensitive.
StatusOr<FormatSpec> parse_format(std::string_view name);

// Checks that `spec` can store vectors of `head_dim` elements (head_dim >= 1; q8_0/q4_0/kivi pad
// the last block of 32, rvq/tq need head_dim <= 65536).
Status validate_format(const FormatSpec& spec, int head_dim);

// Bytes one encoded vector of `head_dim` elements takes, everything included (scales, norms,
// padding). Precondition: validate_format(spec, head_dim).ok().
size_t code_size(const FormatSpec& spec, int head_dim);

// 8 * code_size / head_dim: the honest storage cost per element.
double bits_per_element(const FormatSpec& spec, int head_dim);

}  // namespace tqkv
