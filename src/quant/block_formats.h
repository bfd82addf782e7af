// Block structs of the fixed-layout formats, shared by every implementation (scalar, SIMD, cache).
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

}  // namespace tqkv
