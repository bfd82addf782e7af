#include "cache/tile_layout.h"

#include "format/format_table.h"

#include <cmath>
#include <algorithm>
#include <cstring>


namespace tqkv {

bool make_tile_layout(const FormatSpec& spec, int dim, const PassCodebooks& codebooks, bool is_value,
                      TileLayout* out) {
  const format::FormatRow& row = format::row(spec);
  const int planes = spec.passes * spec.bits;
  if (row.lut_tiled(spec, dim)) {
    // Lookup tiles: 3 or 4 bit-planes in all (tq3, tq4, rvq1x3, rvq1x4, rvq2x2, rvq3x1, rvq4x1),
    // d % 16 == 0 (no padding: the tile holds exactly the bytes of 16 per-vector codes). The table
    // holds the decoded coordinate of every plane pattern, summed over passes as the per-vector
    // decoder sums them (pass 0 first, in float).
    TileLayout L;
    L.is_value = is_value;
    L.dim = dim;
    L.passes = spec.passes;
    L.bits = spec.bits;
    L.planes = planes;
    L.lut = true;
    const int mask = (1 << spec.bits) - 1;
    for (int idx = 0; idx < (1 << planes); ++idx) {
      float z = 0;
      for (int k = 0; k < spec.passes; ++k) {
        const auto& lv = codebooks.passes[k].levels;
        const size_t c = static_cast<size_t>((idx >> (k * spec.bits)) & mask);
        if (lv.size() != static_cast<size_t>(mask + 1)) return false;
        z = k == 0 ? lv[c] : z + lv[c];
      }
      L.levels[idx] = z;
    }
    L.design_mse = codebooks.mse;
    L.groups = is_value ? dim / 16 : dim / 2;
    L.plane_bytes = static_cast<size_t>(dim) * 2;  // 16 tokens x d bits
    L.tile_bytes = 64 + L.planes * L.plane_bytes;
    *out = L;
    return true;
  }
  if (!row.tiled(spec)) return false;
  TileLayout L;
  L.is_value = is_value;
  L.dim = dim;
  L.passes = spec.passes;
  L.bits = spec.bits;
  L.planes = L.passes * L.bits;
  int np = 0;
  for (int k = 0; k < L.passes; ++k) {
    const auto& lv = codebooks.passes[k].levels;
    const float c0 = lv[0];
    L.c0 += c0;
    if (L.bits == 1) {
      L.alpha[np++] = lv[1] - c0;
    } else {
      L.alpha[np++] = lv[1] - c0;
      L.alpha[np++] = lv[2] - c0;
      // Affine only for symmetric codebooks: c3 - c0 == (c1 - c0) + (c2 - c0).
      if (std::fabs((lv[3] - c0) - (L.alpha[np - 2] + L.alpha[np - 1])) > 1e-5f * std::fabs(lv[3]))
        return false;
    }
  }
  L.design_mse = codebooks.mse;
  {
    const int limit = is_value ? 127 : 255;
    float amax = 0;
    for (int p = 0; p < L.planes; ++p) amax = std::max(amax, std::fabs(L.alpha[p]));
    double best_err = 2e-3;  // accept at most 0.2% relative error per plane
    for (int top = 1; top <= limit; ++top) {
      const double lam = amax / top;
      uint8_t m[kMaxTilePlanes] = {};
      int sum = 0;
      double err = 0;
      bool ok = true;
      for (int p = 0; p < L.planes; ++p) {
        const float a = L.alpha[p];
        const long v = std::lround(a / lam);
        if (v < 1 || v > limit) { ok = false; break; }
        m[p] = static_cast<uint8_t>(v);
        sum += static_cast<int>(v);
        err = std::max(err, std::fabs(v * lam - a) / std::fabs(a));
      }
      if (!ok || sum > limit) continue;
      if (err < best_err) {
        best_err = err;
        L.combined = true;
        std::copy(m, m + kMaxTilePlanes, L.mult);
        L.lambda = static_cast<float>(lam);
        if (err < 1e-4) break;
      }
    }
  }
  L.groups = is_value ? (L.dim + 15) / 16 : (L.dim + 3) / 4;
  L.plane_bytes = is_value ? static_cast<size_t>(4) * L.groups * 8 : static_cast<size_t>(L.groups) * 8;
  L.tile_bytes = 64 + L.planes * L.plane_bytes;
  *out = L;
  return true;
}

namespace {
// Byte and bit of (plane p, token t, coordinate i) inside a tile.
inline void locate(const TileParams& L, int p, int t, int i, size_t* byte, int* bit) {
  L.bit_location(p, t, i, byte, bit);
}
}  // namespace

namespace {
// Spreads 16 bits to every 4th bit of a 64-bit word (bit i -> bit 4 i).
inline uint64_t spread4(uint64_t x) {
  x &= 0xffff;
  x = (x | (x << 24)) & 0x000000ff000000ffull;
  x = (x | (x << 12)) & 0x000f000f000f000full;
  x = (x | (x << 6)) & 0x0303030303030303ull;
  x = (x | (x << 3)) & 0x1111111111111111ull;
  return x;
}
}  // namespace

void TileLayout::scatter(const uint8_t* code, size_t plane_stride, int t, uint8_t* tile) const {
  std::memcpy(tile + 4 * t, code, 4);
  if (lut) {  // bit by bit (encode side, not the attention hot path)
    for (int p = 0; p < planes; ++p)
      for (int i = 0; i < dim; ++i) {
        size_t byte;
        int b;
        locate(*this, p, t, i, &byte, &b);
        const int v = (code[4 + p * plane_stride + i / 8] >> (i % 8)) & 1;
        tile[byte] = static_cast<uint8_t>((tile[byte] & ~(1u << b)) | (v << b));
      }
    return;
  }
  for (int p = 0; p < planes; ++p) {
    const uint8_t* plane = code + 4 + p * plane_stride;
    uint8_t* dst = tile + 64 + p * plane_bytes;
    const int pb = static_cast<int>(format::plane_bytes(dim));
    if (!is_value) {
      // Group g's 4 bits become nibble t % 2 of byte t / 2 of the group's 8 bytes.
      for (int g = 0; g < groups; ++g) {
        const int nib = (plane[g / 2] >> (4 * (g % 2))) & 0xf;
        uint8_t& b = dst[g * 8 + t / 2];
        b = static_cast<uint8_t>(t % 2 ? (b & 0x0f) | (nib << 4) : (b & 0xf0) | nib);
      }
    } else {
      // Chunk c's 16 bits go to bits 4 i + (t % 4) of the quad's 8 bytes.
      const uint64_t keep = ~(0x1111111111111111ull << (t % 4));
      for (int c = 0; c < groups; ++c) {
        uint64_t bits = plane[2 * c];
        if (2 * c + 1 < pb) bits |= static_cast<uint64_t>(plane[2 * c + 1]) << 8;
        uint8_t* w = dst + (static_cast<size_t>(t / 4) * groups + c) * 8;
        uint64_t word;
        std::memcpy(&word, w, 8);
        word = (word & keep) | (spread4(bits) << (t % 4));
        std::memcpy(w, &word, 8);
      }
    }
  }
}

void TileLayout::gather(const uint8_t* tile, int t, uint8_t* code) const { gather_tile_slot(*this, tile, t, code); }

void gather_tile_slot(const TileParams& L, const uint8_t* tile, int t, uint8_t* code) {
  const size_t pb = format::plane_bytes(L.dim);
  std::memcpy(code, tile + 4 * t, 4);
  std::memset(code + 4, 0, L.planes * pb);
  for (int p = 0; p < L.planes; ++p)
    for (int i = 0; i < L.dim; ++i) {
      size_t byte;
      int b;
      locate(L, p, t, i, &byte, &b);
      code[4 + p * pb + i / 8] |= static_cast<uint8_t>(((tile[byte] >> b) & 1) << (i % 8));
    }
}

int TileLayout::bit(const uint8_t* tile, int p, int t, int i) const {
  size_t byte;
  int b;
  locate(*this, p, t, i, &byte, &b);
  return (tile[byte] >> b) & 1;
}

}  // namespace tqkv
