// GPU page layout and kernel descriptors of the CUDA backend (internal; host and device).
//
// A "side" is the key or the value half of a layer. Every format with a GPU path stores, per
// element, one FIELD of w bits:
//   kLut2 (w=2)  rotated formats with passes*bits == 2 (rvq1x2, tq2): field = combined code
//                sum_k code_k << (bits*k); decoded through a table z[field] = c_0[.] + c_1[.]
//   kLut4 (w=4)  rotated formats with passes*bits == 4 (rvq2x2, tq4, rvq1x4), same rule
//   kQ4   (w=4)  q4_0 nibble q (x = d (q - 8)), per-token fp16 d per block of 32
//   kQ8   (w=8)  q8_0 int8 (x = d q)
//   kF16  (w=16) IEEE half
// A page holds page_tokens tokens of one kv head: [meta: page_tokens * meta_bytes, padded to
// 16][tiles of 16 tokens: 16 * dim * w / 8 bytes each]. Meta per token: f32 scale (lut), fp16 d
// per block (q4/q8), nothing (f16). Inside a tile, the fields are arranged in the register
// layout of the mma.m16n8k16 fragments (docs/format.md, "GPU pages"): lane L = 4 g + c (g, c in
// 0..7 x 0..3) owns a contiguous chunk of dim / 4 element PAIRS; pair p of the chunk is one
// f16x2 operand register:
//   key   pair p: half = p / (dim/8), pp = p % (dim/8): token g + 8 half, elements
//                 c*dim/4 + 2 pp (+0 low, +1 high)                 (A operand of S = K Q^T)
//   value pair p: mm = p / 4, a = p % 4: element g*dim/8 + 2 mm + (a & 1), tokens
//                 2c + 8 (a >> 1) (+0 low, +1 high)                (A operand of O^T = V^T P)
// Field of pair p, sub s (0 low, 1 high) at bit p*2w + s*w of the chunk, except kQ4: bit
// (p/4)*32 + (p%4)*4 + s*16 (so one AND extracts a pair).
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define TQKV_HD __host__ __device__ __forceinline__
#else
#define TQKV_HD inline
#endif

namespace tqkv::gpu {

enum Codec : int { kLut2 = 0, kLut4 = 1, kQ4 = 2, kQ8 = 3, kF16 = 4, kNumCodecs = 5 };

constexpr TQKV_HD int codec_field_bits(int codec) {
  return codec == kLut2 ? 2 : codec == kLut4 ? 4 : codec == kQ4 ? 4 : codec == kQ8 ? 8 : 16;
}
TQKV_HD int codec_meta_bytes(int codec, int dim) {
  return (codec == kLut2 || codec == kLut4) ? 4 : (codec == kQ4 || codec == kQ8) ? 2 * ((dim + 31) / 32) : 0;
}
TQKV_HD size_t tile_body_bytes(int codec, int dim) { return static_cast<size_t>(16) * dim * codec_field_bits(codec) / 8; }
TQKV_HD size_t chunk_bytes(int codec, int dim) { return tile_body_bytes(codec, dim) / 32; }
TQKV_HD size_t meta_region_bytes(int codec, int dim, int page_tokens) {
  return (static_cast<size_t>(page_tokens) * codec_meta_bytes(codec, dim) + 15) / 16 * 16;
}
TQKV_HD size_t page_head_bytes(int codec, int dim, int page_tokens) {
  return meta_region_bytes(codec, dim, page_tokens) + static_cast<size_t>(page_tokens / 16) * tile_body_bytes(codec, dim);
}

// Element (token t in 0..15, element i) -> (lane, pair p, sub s) of a tile.
constexpr TQKV_HD void element_slot(bool value, int dim, int t, int i, int* lane, int* p, int* s) {
  if (!value) {
    const int q = dim / 4, c = i / q, e = i % q, g = t % 8, half = t / 8;
    *lane = 4 * g + c;
    *p = half * (dim / 8) + e / 2;
    *s = e % 2;
  } else {
    const int q = dim / 8, g = i / q, o = i % q, mm = o / 2, dsub = o % 2;
    const int c = (t % 8) / 2, half = t / 8;
    *lane = 4 * g + c;
    *p = mm * 4 + dsub + 2 * half;
    *s = t % 2;
  }
}
// Inverse: (lane, pair, sub) -> (token, element).
TQKV_HD void slot_element(bool value, int dim, int lane, int p, int s, int* t, int* i) {
  const int g = lane / 4, c = lane % 4;
  if (!value) {
    const int half = p / (dim / 8), pp = p % (dim / 8);
    *t = g + 8 * half;
    *i = c * (dim / 4) + 2 * pp + s;
  } else {
    const int mm = p / 4, a = p % 4;
    *i = g * (dim / 8) + 2 * mm + (a & 1);
    *t = 2 * c + 8 * (a >> 1) + s;
  }
}
// Bit offset of field (p, s) inside a lane's chunk.
constexpr TQKV_HD int field_bit(int codec, int p, int s) {
  if (codec == kQ4) return (p / 4) * 32 + (p % 4) * 4 + s * 16;
  const int w = codec_field_bits(codec);
  return p * 2 * w + s * w;
}

// ---- encode ------------------------------------------------------------------------------

// One side's encoder parameters (rotated formats: per-head rotations in device arrays).
struct EncodeSide {
  int codec = kLut2;       // page codec (only meaningful when writing pages)
  int kind = 0;            // 0 rotated, 1 q8_0, 2 q4_0, 3 f16
  int dim = 0, bits = 1, passes = 1, rounds = 1;
  int pow2 = 1, norm_correction = 1;
  int code_size = 0;       // per-vector (CPU format) code bytes
  float levels[4][16] = {};
  float thresholds[4][16] = {};
  const float* signs = nullptr;   // [heads][rounds][dim]
  const int* perm = nullptr;      // [heads][rounds][dim] (non power of two only)
};

// One warp job: slots [s0, s1) of one tile (16 tokens) of one (page, head), or, for the
// per-vector path, up to 16 vectors written in CPU format.
struct EncodeJob {
  const void* src;        // token s0's input vector
  long long src_stride;   // elements between consecutive tokens
  uint8_t* tile;          // tile body (nullptr: per-vector output only)
  uint8_t* meta;          // meta of the tile's slot 0
  uint8_t* vec_out;       // per-vector codes of token s0 (nullptr: none)
  int s0, s1;             // slots written
  int head;               // rotation index
  int side;               // 0 key, 1 value
  int merge;              // 1: the tile holds earlier slots that must be kept
  int pad;
};

// ---- attention ---------------------------------------------------------------------------

struct AttnSide {
  const uint8_t* pool = nullptr;  // page pool: page id * n_kv_heads + head -> page_head_bytes
  size_t page_head_bytes = 0;
  size_t meta_region = 0;
  int meta_bytes = 0;
  const uint32_t* lut = nullptr;  // lut codecs: entries f16x2 (pair index -> (z[lo], z[hi]))
  const float* signs = nullptr;   // rotated: [heads][dim] signs of the (power-of-two) rotation
};

struct AttnParams {
  AttnSide k, v;
  int n_kv_heads = 0, group = 1, page_tokens = 64, dim = 128;
  const int* block_table = nullptr;  // [seq][max_pages_per_seq]
  int max_pages_per_seq = 0;
  const int* item_seq = nullptr;     // [batch]
  const int* item_len = nullptr;     // [batch] tokens in the cache
  int m = 1;                         // queries per item
  int qpc = 1;                       // queries per CTA (8 / group)
  int n_splits = 1, tiles_per_split = 1;
  const float* q = nullptr;          // [batch][n_q_heads][m][dim]
  float* out = nullptr;
  float scale_log2 = 0;              // softmax scale * log2(e)
  float* ws_o = nullptr;             // [batch][n_q_heads][m][splits][dim]
  float* ws_ml = nullptr;            // [batch][n_q_heads][m][splits][2]
  int k_rotated = 0, v_rotated = 0;
  int variant = 0;                   // kernel variant (0 default; 1: TQKV_ATTN_VARIANT=1, d = 128)
};

}  // namespace tqkv::gpu
