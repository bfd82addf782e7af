// Bit-sliced tile layouts of the rotated formats inside KV-cache pages (internal).
//
// A rotated format whose passes have 1 or 2 bits has symmetric levels, and every symmetric 2- or
// 4-level codebook is affine in its bits: level(code) = c0 + sum_j alpha_j * bit_j(code). So the
// decoded, unscaled rotated vector is
//     z_hat[i] = C0 + sum over planes p (pass k, bit j) of alpha_p * bit_p[i],   C0 = sum_k c0_k,
// and attention can work on bit-planes directly (docs/design.md). The cache stores such formats
// in tiles of 16 tokens laid out for the attention kernels (docs/format.md, "KV cache pages"):
//
//   key tile:   16 x f32 scale | for each plane p: for each group g of 4 coordinates (ceil(d/4)):
//               8 bytes, bit (4 t + j) = bit p of token t, coordinate 4 g + j
//   value tile: 16 x f32 scale | for each plane p: for each token quad q (4): for each chunk c of
//               16 coordinates (ceil(d/16)): 8 bytes, bit (4 i + u) = bit p of token 4 q + u,
//               coordinate 16 c + i
// Missing coordinates (d not a multiple of 4 / 16) and missing tokens hold zero bits and scale 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tqkv/format.h"
#include "tqkv/quantizer.h"

namespace tqkv {

inline constexpr int kTileTokens = 16;

struct TileLayout {
  bool is_value = false;
  int dim = 0, passes = 0, bits = 0, planes = 0;  // planes = passes * bits
  float c0 = 0;                   // C0
  double design_mse = 0;          // the codebooks' per-coordinate MSE (unit-variance source)
  // Integer plane weights for the AVX-512 kernels: alpha_p ~ lambda * mult[p] with a relative
  // error <= 0.2% for every plane and sum(mult) <= 255 (keys, unsigned bytes) or <= 127 (values,
  // signed bytes), so all planes of a coordinate fold into ONE byte per vpdpbusd.
  bool combined = false;
  std::vector<uint8_t> mult;      // (planes,)
  float lambda = 0;
  std::vector<float> alpha;       // (planes,) plane p = pass k * bits + bit j
  size_t plane_bytes = 0;         // bytes of one plane in one tile
  size_t tile_bytes = 0;          // 64 + planes * plane_bytes
  int groups = 0;                 // key: ceil(d/4); value: ceil(d/16) chunks

  // Per-vector code (the quantizer's format) of one token -> tile slot t (0..15).
  void scatter(const uint8_t* code, size_t plane_stride_in_code, int t, uint8_t* tile) const;
  // Tile slot t -> per-vector code (scale + planes).
  void gather(const uint8_t* tile, int t, uint8_t* code) const;
  // Value of bit p of token t, coordinate i.
  int bit(const uint8_t* tile, int p, int t, int i) const;
  const float* scales(const uint8_t* tile) const { return reinterpret_cast<const float*>(tile); }
};

// The tile layout of `q` (an rvq/tq quantizer with 1- or 2-bit passes), or nullptr when the
// format is stored per vector (every other format). `out` receives the layout.
bool make_tile_layout(const Quantizer& q, bool is_value, TileLayout* out);

}  // namespace tqkv
