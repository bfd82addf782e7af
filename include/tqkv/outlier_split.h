// The TurboQuant paper's outlier split (Zandieh et al. 2025, the `tqo{h}x{l}` peer formats).
//
// The paper's KV-cache experiments split each head vector's channels into an outlier set and the
// rest and quantize each set with its own TurboQuant-MSE instance, giving the outliers more bits:
// "32 outlier channels at 3 bits, the remaining 96 at 2 bits" at head_dim 128 (the paper calls
// that "2.5 bits"; (32 * 3 + 96 * 2) / 128 is 2.25 coded bits per element — tqo3x2 here; the
// scales make it 2.5 stored bits, docs/format.md "tqo{h}x{l}").
//
// tqo{h}x{l}, per (sequence, layer, kv head):
//   - the outlier channel set O: the n_o = outlier_channel_count(d) channels with the largest
//     mean square over the sequence's own first N tokens (select_outlier_channels; no calibration
//     file; stored as a bit mask, the statistics block of docs/format.md);
//   - per vector: x_O (the outlier channels in index order) coded by tq{h}, x_R (the others, in
//     index order) by tq{l}, each with its own seeded randomized Hadamard rotation, its Gaussian
//     Lloyd-Max codebook and its own norm-correcting scale (stored as bfloat16).
// Keys are coded AFTER RoPE (as the paper's cache does). The rotations are orthogonal within each
// set, so a set's code error depends only on its norm; RoPE only moves energy inside a channel
// pair, and a pair whose two channels land in the same set keeps that set's norm. The selection
// is per channel (no RoPE pairing is assumed), measured in docs/design.md §3.
//
//   std::vector<uint8_t> mask = *tqkv::select_outlier_channels(k, n_calib, 128, 0);  // first tokens
//   auto q = *tqkv::make_outlier_split_quantizer(*tqkv::parse_format("tqo3x2"), 128, {}, mask);
//   q->encode(x, n, codes);  q->decode(codes, n, y);    // a tqkv::Quantizer like any other
//
// make_quantizer() refuses tqo formats (it has no channel set); the KV cache fits one per
// sequence like pk{b} (tokens wait as f16 "pending" rows until N tokens exist).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "tqkv/quantizer.h"
#include "tqkv/status.h"

namespace tqkv {

// Outlier channels at head_dim d: 25% of d rounded to an even count, 2 * floor(d / 8 + 1/2)
// (d = 128: 32, 96: 24, 80: 20, 64: 16; d < 4: 0, i.e. one tq{l} set).
int outlier_channel_count(int dim);

// The outlier set from n >= 1 vectors x: (n, dim), row r at x + r * stride (0 = dim): the `count`
// channels with the largest mean of x_i^2 over the rows without NaN/Inf (ties: lower index
// first; no finite row: channels 0..count-1). Returns the mask (dim,) of 0/1 bytes.
// count = -1 means outlier_channel_count(dim).
StatusOr<std::vector<uint8_t>> select_outlier_channels(const float* x, size_t n, int dim, size_t stride,
                                                       int count = -1);

// The quantizer of tqo{h}x{l} (spec.bits = h, spec.passes = l) for the channel set `mask` (dim
// bytes of 0/1 with exactly outlier_channel_count(dim) ones). options.seed is the head's seed;
// the two sets' rotation seeds derive from it (docs/format.md).
StatusOr<std::unique_ptr<Quantizer>> make_outlier_split_quantizer(const FormatSpec& spec, int dim,
                                                                  const QuantOptions& options,
                                                                  const std::vector<uint8_t>& mask);

// The statistics block of one (sequence, layer, kv head): the mask as ceil(dim / 8) bytes, channel
// i at bit i % 8 of byte i / 8 (docs/format.md).
inline size_t outlier_mask_bytes(int dim) { return (static_cast<size_t>(dim) + 7) / 8; }
void write_outlier_mask(const std::vector<uint8_t>& mask, uint8_t* out);
// Parses and validates (size, exactly outlier_channel_count(dim) bits set, zero tail bits).
StatusOr<std::vector<uint8_t>> read_outlier_mask(const uint8_t* data, size_t size, int dim);

}  // namespace tqkv
