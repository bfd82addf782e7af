// Block structs of the fixed-layout formats, shared by every implementation (scalar, SIMD, cache,
// GGUF weights), and the ONE reference quantization of the llama.cpp blocks q8_0 / q4_0.
// Byte layouts are documented in docs/format.md and pinned by tests/quant/format_bytes_test.cc.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tqkv {

// llama.cpp q8_0: 32 elements, x[i] = d * qs[i].
inline constexpr int kQ8Block = 32;
struct BlockQ8_0 {
  uint16_t d;        // fp16 scale
  int8_t qs[32];     // quants
};
static_assert(sizeof(BlockQ8_0) == 34, "q8_0 block must be 34 bytes");

// llama.cpp q4_0: 32 elements, x[i] = d * (q[i] - 8); element j in the low nibble of qs[j],
// element j + 16 in the high nibble of qs[j].
inline constexpr int kQ4Block = 32;
struct BlockQ4_0 {
  uint16_t d;        // fp16 scale
  uint8_t qs[16];    // nibbles
};
static_assert(sizeof(BlockQ4_0) == 18, "q4_0 block must be 18 bytes");

// KIVI-style group: 32 elements, x[i] = min + scale * q[i], q in [0, 2^bits).
// Layout: fp16 scale, fp16 min, then `bits` bit-planes of 4 bytes (plane j holds bit j of q[i]
// at bit i%8 of byte i/8).
inline constexpr int kKiviGroup = 32;
inline constexpr size_t kivi_group_bytes(int bits) { return 4 + 4 * static_cast<size_t>(bits); }
static_assert(kivi_group_bytes(2) == 12 && kivi_group_bytes(4) == 20, "kivi group sizes");

// llama.cpp iq4_nl: 32 elements, x[i] = d * kIq4NlValues[q[i]]; element j in the low nibble of
// qs[j], element j + 16 in the high nibble (the q4_0 nibble order).
inline constexpr int kIq4NlBlock = 32;
struct BlockIq4Nl {
  uint16_t d;        // fp16 scale
  uint8_t qs[16];    // nibbles: indices into kIq4NlValues
};
static_assert(sizeof(BlockIq4Nl) == 18, "iq4_nl block must be 18 bytes");
// The 16 non-uniform levels of iq4_nl (ggml-common.h kvalues_iq4nl; docs/format.md).
inline constexpr int8_t kIq4NlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Reference quantization of one block of `cnt` <= 32 elements (missing elements count as 0).
// Shared by the KV cache (kernels in src/quant, rounding kNearestEven, the documented cache
// semantics) and GGUF weights (src/runtime/gguf.cc, kHalfAwayFromZero = llama.cpp's
// quantize_row_q8_0_ref). Both: a block holding NaN/Inf stores d = NaN (fp16 0x7e00) and zero
// quants; |d| saturates at the fp16 maximum 65504 and the quants clip at +-127.
enum class Rounding { kNearestEven, kHalfAwayFromZero };
void quantize_block_q8_0(const float* x, int cnt, BlockQ8_0* out, Rounding rounding);
// llama.cpp's q4_0 reference: d = (signed max-magnitude) / -8, q = min(15, floor(x / d + 8.5)).
// NaN/Inf: d = NaN, quants 8; |d| saturates at 65504.
void quantize_block_q4_0(const float* x, int cnt, BlockQ4_0* out);
// llama.cpp's iq4_nl quantization of one block of `cnt` <= 32 elements (missing ones count as 0),
// quantize_row_iq4_nl_impl with block = super-block = 32 and no importance weights (weights x^2):
// d0 = m / -127 (ntry > 0: m / 127), m the signed max-magnitude element; each element takes the
// nearest level to x / d0; d = sum(w q x) / sum(w q^2) (weighted least squares, w = x^2); then
// for ntry > 0, 2 ntry + 1 more scales id = (t + kIq4NlValues[0]) / m, t = -ntry..ntry, each
// re-assigning levels and keeping the best least-squares fit, and finally the levels are
// re-assigned with the chosen scale. llama.cpp's KV cache (quantize_row_iq4_nl_ref) uses ntry = -1:
// no search, no re-assignment. NaN/Inf: d = NaN, nibbles 0; all |x| < 1e-15: d = 0, nibbles 0;
// a least-squares scale that overflows (|x| > ~1e11) keeps d0; |d| saturates at 65504.
void quantize_block_iq4_nl(const float* x, int cnt, BlockIq4Nl* out, int ntry);
void dequantize_block_iq4_nl(const BlockIq4Nl& b, int cnt, float* y);
// y[i] = d * qs[i] (q8_0) or d * (q[i] - 8) (q4_0) for i < cnt.
void dequantize_block_q8_0(const BlockQ8_0& b, int cnt, float* y);
void dequantize_block_q4_0(const BlockQ4_0& b, int cnt, float* y);

}  // namespace tqkv
