// Read-only view of the pages one LayerKVCache holds: what an attention implementation (the CPU
// kernels in src/attention, a CUDA backend) needs to read stored keys and values, and nothing else.
//
//   tqkv::LayerView L = cache.view();                       // formats, tile params, per-head codecs
//   TQKV_ASSIGN_OR_RETURN(tqkv::SequenceView s, cache.sequence_view(seq));  // page tables
//
// Where stored token t of a sequence (0 <= t < s.n_tokens) lives, per kv head h and stream
// (keys: L.key with s.heads[h].key; values: L.value with s.heads[h].value):
//   t <  S                      sink row t:  stream.sink + t * head_dim        (f16)
//   S <= t < S + n_compressed   compressed index c = t - S, in page pages[c / P] at slot c % P
//                               (P = page_tokens), addressed with StreamLayout::code()/tile()
//   S + n_compressed <= t < S + n_compressed + n_pending
//                               pending row t - S - n_compressed: stream.pending + row * head_dim (f16);
//                               only layers with a pk{b} or tqo stream have pending rows (tokens
//                               waiting for the sequence's statistics, tqkv/prerope_keys.h,
//                               tqkv/outlier_split.h)
//   otherwise                   window row t % W: stream.window + (t % W) * head_dim   (f16)
// with S = sink_tokens, W = recent_window. Byte layouts: docs/format.md ("KV cache pages").
//
// Keys are stored after RoPE unless StreamLayout::pre_rope is set; then EVERY stored key (sinks,
// window and compressed) is the pre-RoPE key of token t, which has RoPE position
// AttentionQuery::position_offset + t, and attention rotates it on the fly (tqkv/attention.h).
//
// Lifetime: a LayerView is valid while the cache lives. A SequenceView (its page-table pointers)
// is valid until the next mutating call on the cache (append, truncate, clear).
// Nothing in a view lets a reader modify the cache.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tqkv/codebook.h"
#include "tqkv/format.h"
#include "tqkv/rotation.h"

namespace tqkv {

class Quantizer;
class PreRopeKeyCodec;

// How the compressed tokens of one stream are laid out inside a page.
enum class KVStorage {
  kPerVector,  // token after token, code_size bytes each (the quantizer's format, docs/format.md)
  kTiles,      // bit-sliced tiles of kTileTokens tokens (rotated formats with 1- or 2-bit passes, and
               // lookup tiles of rotated formats with 3-4 planes: TileParams::lut)
};

inline constexpr int kTileTokens = 16;  // tokens per bit-sliced tile
inline constexpr int kMaxTilePlanes = 8;  // passes * bits <= 4 * 2

// Parameters of a bit-sliced tile layout (docs/design.md "Folded bit-planes", docs/format.md).
// Every symmetric 2- or 4-level codebook is affine in its bits, so the decoded, unscaled rotated
// vector is z_hat[i] = c0 + sum_p alpha[p] * bit_p[i] (plane p = pass k * bits + bit j).
//   key tile:   16 x f32 scale | for each plane p: for each group g of 4 coordinates (ceil(d/4)):
//               8 bytes, bit (4 t + j) = bit p of token t, coordinate 4 g + j
//   value tile: 16 x f32 scale | for each plane p: for each token quad q (4): for each chunk c of
//               16 coordinates (ceil(d/16)): 8 bytes, bit (4 i + u) = bit p of token 4 q + u,
//               coordinate 16 c + i
// Lookup tiles (lut = true: rotated formats with 3 or 4 bit-planes in all, passes * bits, and
// d % 16 == 0: tq3, tq4, rvq1x3, rvq1x4, rvq2x2, rvq3x1, rvq4x1): plane p = pass p / bits, bit
// p % bits, and the decoded coordinate is levels[sum_p bit_p << p] (the sum of the passes' levels;
// c0/alpha/mult unused). Bits are grouped by 2 instead of 4:
//   key tile:   16 x f32 scale | for each plane p: for each group g of 2 coordinates (d/2):
//               4 bytes, bit (2 t + j) = bit p of token t, coordinate 2 g + j
//   value tile: 16 x f32 scale | for each plane p: for each token pair q (8): for each chunk c of
//               16 coordinates (d/16): 4 bytes, bit (2 i + u) = bit p of token 2 q + u,
//               coordinate 16 c + i
// Use bit_location() to read any tile without knowing which layout it has.
// Plain data (fixed-size arrays, no pointers): can be copied to a device as is.
struct TileParams {
  bool is_value = false;
  int dim = 0, passes = 0, bits = 0, planes = 0;  // planes = passes * bits
  float c0 = 0;                    // sum over passes of the lowest level
  float alpha[kMaxTilePlanes] = {};  // (planes,) weight of each bit-plane
  double design_mse = 0;           // the codebooks' per-coordinate MSE (unit-variance source)
  // Integer plane weights: alpha_p ~ lambda * mult[p] with a relative error <= 0.2% for every
  // plane and sum(mult) <= 255 (keys) or <= 127 (values), so all planes of a coordinate fold into
  // one byte. combined = false when no such integers exist.
  bool combined = false;
  uint8_t mult[kMaxTilePlanes] = {};
  float lambda = 0;
  size_t plane_bytes = 0;          // bytes of one plane in one tile
  size_t tile_bytes = 0;           // 64 + planes * plane_bytes
  int groups = 0;                  // key: ceil(d/4) groups (lut: d/2); value: ceil(d/16) chunks
  bool lut = false;                // lookup tile (see above): z_hat[i] = levels[code]
  float levels[16] = {};           // lut only: decoded coordinate of each plane pattern (2^planes)

  // Byte offset (from the tile start) and bit of (plane p, token slot t, coordinate i).
  void bit_location(int p, int t, int i, size_t* byte, int* bit) const {
    size_t off = 64 + static_cast<size_t>(p) * plane_bytes;
    int b;
    if (lut) {
      if (!is_value) {
        off += static_cast<size_t>(i / 2) * 4;
        b = 2 * t + (i % 2);
      } else {
        off += (static_cast<size_t>(t / 2) * groups + i / 16) * 4;
        b = 2 * (i % 16) + (t % 2);
      }
    } else if (!is_value) {
      off += static_cast<size_t>(i / 4) * 8;
      b = 4 * t + (i % 4);
    } else {
      off += (static_cast<size_t>(t / 4) * groups + i / 16) * 8;
      b = 4 * (i % 16) + (t % 4);
    }
    *byte = off + b / 8;
    *bit = b % 8;
  }

  // The 16 f32 token scales at the start of a tile (0 for empty slots).
  const float* scales(const uint8_t* tile) const { return reinterpret_cast<const float*>(tile); }
};

// Per kv head parameters of one stream. Every pointer lives as long as the cache.
struct HeadCodec {
  const Quantizer* quantizer = nullptr;      // reference encode/decode of per-vector codes
  const Rotation* rotation = nullptr;        // rotated formats (rvq, tq): this head's rotation
  const PassCodebooks* codebooks = nullptr;  // rotated formats: levels/thresholds of each pass
};

// How one stream (keys or values) of a layer is stored; the same for every sequence.
struct StreamLayout {
  FormatSpec format;
  KVStorage storage = KVStorage::kPerVector;
  size_t code_size = 0;    // bytes of one token's per-vector code (== code_size(format, head_dim))
  size_t page_bytes = 0;   // bytes of one page
  int page_tokens = 0;     // tokens per page (multiple of 64)
  bool pre_rope = false;   // keys stored before RoPE (see top of file); always false for values
  // Rotated formats: the stored scale makes the decoded norm equal the input's (QuantOptions::
  // norm_correction); an encoder writing pages (e.g. a GPU backend) needs it, readers do not.
  bool norm_correction = true;
  TileParams tiles;        // storage == kTiles only
  const HeadCodec* heads = nullptr;  // (n_kv_heads,)

  // Per-vector storage: the code of compressed index c.
  const uint8_t* code(const uint8_t* const* pages, int c) const {
    return pages[c / page_tokens] + static_cast<size_t>(c % page_tokens) * code_size;
  }
  // Tile storage: the tile holding compressed index c (which sits in slot c % kTileTokens).
  const uint8_t* tile(const uint8_t* const* pages, int c) const {
    return pages[c / page_tokens] + static_cast<size_t>((c % page_tokens) / kTileTokens) * tiles.tile_bytes;
  }
};

// The shape and storage of one layer.
struct LayerView {
  int n_kv_heads = 0, head_dim = 0;
  int page_tokens = 0;    // tokens per page
  int sink_tokens = 0;    // S: the first S tokens of a sequence are kept in f16
  int recent_window = 0;  // W: the W most recent tokens of a sequence are kept in f16 (ring)
  StreamLayout key, value;
};

// The pages of one stream of one kv head of one sequence.
struct StreamPages {
  const uint8_t* const* pages = nullptr;  // page table: compressed index c is in pages[c / P]
  int n_pages = 0;
  const uint16_t* sink = nullptr;    // (S, head_dim) f16, or null when S == 0 or never written
  const uint16_t* window = nullptr;  // (W, head_dim) f16 ring (row t % W), or null
  const uint16_t* pending = nullptr;  // (n_pending, head_dim) f16 rows, or null
  // pk{b} streams: this sequence's codec of this head (its statistics); null until they exist.
  // Compressed pk codes decode with prerope->decode (keys: pre-RoPE keys; values: values).
  const PreRopeKeyCodec* prerope = nullptr;
  // tqo{h}x{l} streams: this sequence's quantizer of this head (its outlier channel set,
  // tqkv/outlier_split.h); null until it exists. Compressed codes decode with quantizer->decode
  // instead of the layout's HeadCodec::quantizer (null for every other format).
  const Quantizer* quantizer = nullptr;
};

struct HeadPages {
  StreamPages key, value;
};

// One sequence of a layer.
struct SequenceView {
  int n_tokens = 0;      // tokens stored
  int n_compressed = 0;  // compressed tokens: positions S .. S + n_compressed - 1
  const HeadPages* heads = nullptr;  // (n_kv_heads,)
  int n_pending = 0;     // f16 pending rows after the compressed ones (pk{b} before its statistics)
};

}  // namespace tqkv
