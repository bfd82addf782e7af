// Bit-sliced tile layouts of the rotated formats inside KV-cache pages (internal).
// The parameters are the public TileParams (tqkv/kv_view.h); this file adds the conversion from
// and to per-vector codes.
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

#include "tqkv/codebook.h"
#include "tqkv/format.h"
#include "tqkv/kv_view.h"

namespace tqkv {

// The public parameters (tqkv/kv_view.h) plus the cache's scatter/gather of per-vector codes.
struct TileLayout : TileParams {
  // Per-vector code (the quantizer's format) of one token -> tile slot t (0..15).
  void scatter(const uint8_t* code, size_t plane_stride_in_code, int t, uint8_t* tile) const;
  // Tile slot t -> per-vector code (scale + planes).
  void gather(const uint8_t* tile, int t, uint8_t* code) const;
  // Value of bit p of token t, coordinate i.
  int bit(const uint8_t* tile, int p, int t, int i) const;
};

// Tile slot t -> per-vector code, for any reader of the public TileParams (the cache's read(),
// attention's general path).
void gather_tile_slot(const TileParams& L, const uint8_t* tile, int t, uint8_t* code);

// The tile layout of a rotated format with 1- or 2-bit passes whose codebooks are symmetric
// (affine in their bits). Returns false (the format is then stored per vector) otherwise.
bool make_tile_layout(const FormatSpec& spec, int dim, const PassCodebooks& codebooks, bool is_value,
                      TileLayout* out);

}  // namespace tqkv
