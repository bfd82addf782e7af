// Pre-RoPE key codec with per-channel bit allocation (the `pk{b}` key formats).
//
// Before RoPE, the keys of one (layer, kv head) have a mean and a few channels with large, stable
// variance; RoPE then spins channel pairs by position-dependent angles and smears that structure.
// This codec works on keys BEFORE RoPE, per (layer, kv head):
//   - statistics from the sequence's own first N tokens (no offline calibration): the mean mu and
//     the per-channel standard deviation sd;
//   - integer bits per channel b_i in 0..8, sum = round(avg_bits * d), chosen greedily by the
//     reduction of Lloyd-Max distortion sd_i^2 * (D(b_i) - D(b_i + 1)) (allocate_channel_bits);
//   - per vector: whiten z = (x - mu) / sd, normalize u = z / (||z|| / sqrt(d)), code u_i with the
//     b_i-bit Gaussian Lloyd-Max codebook, and keep ONE scale s per vector. With norm correction
//     (default) s = ||z|| / ||c||, so the decoded whitened vector has the input's whitened norm.
//   - decode: y_i = mu_i + (s * sd_i) * c_{b_i}[code_i]   (channels with b_i = 0 decode to mu_i).
// Byte layouts (per-vector code and per-head statistics block): docs/format.md ("pk{b}").
//
// Optional channel basis (`basis`, issue 8 "quality per bit"): a transform pair (analysis A,
// synthesis S, S A^T = I; tqkv/channel_basis.h) given by the caller, derived from the model's
// projection weights. The codec then works on y = A^T x instead of x: the statistics, bits and
// codes above are those of y, and decode returns S y_hat. The basis is not stored with the codes
// (the caller owns and re-derives it); without one A = S = I (plain pk).
//
//   auto codec = tqkv::PreRopeKeyCodec::fit(k, n_calib, 128, 0, 2.5);  // k: (n_calib, 128)
//   std::vector<uint8_t> codes(n * codec->code_size());
//   codec->encode(x, n, codes.data());
//   codec->decode(codes.data(), n, y);
//
// Optional trellis channel code (`trellis`, `--pk-code trellis`, docs/design.md 13): the channels
// with 1..4 bits are coded, per bit width k, as ONE tail-biting bitshift trellis code of the unit-
// RMS whitened coordinates u_i of the channels with b_i = k, in channel order (src/quant/trellis.h:
// the decoded level of such a channel is T[window of the group's last W codes] instead of the
// Lloyd-Max level of its own code); channels with 5..8 bits keep their Lloyd-Max codes. Same bytes
// (the stream layout and the statistics block are unchanged), other meaning: a reader must know.
//
// Contracts: encode/decode are const and thread-safe. A vector with NaN/Inf stores a NaN scale and
// decodes to all-NaN; a vector equal to the mean stores scale 0 and decodes to the mean.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "tqkv/channel_basis.h"
#include "tqkv/status.h"

namespace tqkv {

struct Codebook;

// Expected squared error of the b-bit Lloyd-Max codebook on N(0, 1): D(0) = 1 (nothing coded),
// D(1..8) from tqkv::lloyd_max(Density::kGaussian, b).mse.
double gaussian_lloyd_max_distortion(int bits);

// Greedy integer bit allocation: starting from zero bits everywhere, `total_bits` times give one
// bit to the channel with the largest reduction variance[i] * (D(b_i) - D(b_i + 1)) (ties: lowest
// index; a channel at 8 bits takes no more). Optimal for these convex D. Needs
// 0 <= total_bits <= 8 * dim and finite variances >= 0.
StatusOr<std::vector<uint8_t>> allocate_channel_bits(const std::vector<double>& variance, int total_bits);

// Total coded bits of a `dim`-element vector at an average of `avg_bits` per element.
int prerope_total_bits(double avg_bits, int dim);

// Per-(layer, kv head) statistics. Stored as the statistics block of docs/format.md (9 d bytes).
struct PreRopeKeyStats {
  std::vector<float> mean;    // (d,)
  std::vector<float> sd;      // (d,) > 0, finite
  std::vector<uint8_t> bits;  // (d,) in 0..8
};

class PreRopeKeyCodec {
 public:
  // Estimates the statistics from n >= 1 calibration vectors x: (n, dim), row i at x + i * stride
  // (stride 0 means dim) and allocates round(avg_bits * dim) bits (1 <= that <= 8 dim). Rows with
  // NaN/Inf are skipped (no finite row: mean 0, sd 1). sd is floored at 1e-6 of the largest sd
  // (all zero: sd 1) so that whitening never divides by zero.
  // basis: null (identity) or a ChannelBasis of this dim (checked: validate_channel_basis); the
  // statistics are then those of y = A^T x.
  static StatusOr<PreRopeKeyCodec> fit(const float* x, size_t n, int dim, size_t stride, double avg_bits,
                                       bool norm_correction = true,
                                       std::shared_ptr<const ChannelBasis> basis = nullptr, bool trellis = false);
  // A codec from given statistics (validated: sizes, finite mean, finite sd > 0, bits <= 8, at
  // least one coded bit; the basis as in fit).
  static StatusOr<PreRopeKeyCodec> from_stats(PreRopeKeyStats stats, bool norm_correction = true,
                                              std::shared_ptr<const ChannelBasis> basis = nullptr,
                                              bool trellis = false);

  int dim() const { return static_cast<int>(stats_.mean.size()); }
  int total_bits() const { return total_bits_; }
  const PreRopeKeyStats& stats() const { return stats_; }
  bool norm_correction() const { return norm_correction_; }
  // The channel basis or null for the identity.
  const ChannelBasis* basis() const { return basis_.get(); }
  // True when the 1..4-bit channels use the trellis channel code (above).
  bool trellis() const { return trellis_ != nullptr; }

  // Bytes of one encoded vector: 2 (bf16 scale) + ceil(total_bits / 8).
  size_t code_size() const { return 2 + (static_cast<size_t>(total_bits_) + 7) / 8; }
  // Bytes of the per-head statistics block: 9 * dim.
  static size_t stats_bytes(int dim) { return 9 * static_cast<size_t>(dim); }
  // Storage per element of n_tokens >= 1 vectors with their statistics block, in bits:
  // 8 * (n_tokens * code_size + stats_bytes) / (n_tokens * dim).
  double bits_per_element(int64_t n_tokens) const;

  // x: (n, dim), row stride x_stride (0 = dim); codes: n * code_size() bytes.
  void encode(const float* x, size_t n, uint8_t* codes, size_t x_stride = 0) const;
  // y: (n, dim), row stride y_stride (0 = dim).
  void decode(const uint8_t* codes, size_t n, float* y, size_t y_stride = 0) const;

  // Statistics block (docs/format.md): out holds stats_bytes(dim()) bytes.
  void write_stats(uint8_t* out) const;
  // Parses and validates a statistics block of `size` bytes for vectors of `dim` elements.
  static StatusOr<PreRopeKeyStats> read_stats(const uint8_t* data, size_t size, int dim);

 private:
  PreRopeKeyCodec() = default;
  PreRopeKeyStats stats_;
  int total_bits_ = 0;
  bool norm_correction_ = true;
  std::shared_ptr<const ChannelBasis> basis_;
  const Codebook* codebook_[9] = {};  // [b]: the b-bit Gaussian Lloyd-Max codebook (b >= 1)
  // Trellis channel code: [k] the channels with k bits, in index order (null: Lloyd-Max only).
  // Behind a pointer so that a codec without it stays as small as before (the cache counts
  // sizeof(PreRopeKeyCodec) per head in bytes_resident).
  struct TrellisGroups {
    std::vector<int> group[5];
  };
  std::shared_ptr<const TrellisGroups> trellis_;
};

// bfloat16 <-> float (round to nearest even; NaN stays NaN; finite values beyond the bf16 range
// saturate to +-3.3895e38 instead of becoming Inf). The per-vector scale of pk codes.
uint16_t float_to_bf16_saturate(float f);
float bf16_to_float(uint16_t b);

}  // namespace tqkv
