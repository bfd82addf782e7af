// Encode/decode kernels of every format at every SIMD level (internal).
//
// The *_scalar functions are the readable reference (rotated_quantizer.cc, q8_0.cc, q4_0.cc,
// kivi.cc, float_formats.cc). The *_avx2 / *_avx512 versions live in kernels_avx2.cc /
// kernels_avx512.cc, are compiled with the matching -m flags, and must produce bit-identical
// codes (tests/quant/simd_consistency_test.cc). Pick one with kernels::select().
#pragma once

#include <cstddef>
#include <cstdint>

#include "tqkv/rotation.h"
#include "tqkv/simd.h"

namespace tqkv::kernels {

// Parameters of the rotated Lloyd-Max family (rvq{b}x{p}, tq{b}).
struct RotatedParams {
  int dim = 0;
  int bits = 1;                               // bits per pass, 1..4
  int passes = 1;                             // 1..4
  const float* levels[4] = {};                // pass k: (1 << bits) ascending levels
  const float* thresholds[4] = {};            // pass k: (1 << bits) - 1 midpoints
  const Rotation* rotation = nullptr;
  bool norm_correction = true;
  size_t plane_bytes = 0;                     // ceil(dim / 8)
  size_t code_size = 0;                       // 4 + passes * bits * plane_bytes
};

// x: n vectors at x + i * x_stride; codes: n * code_size bytes. y likewise.
#define TQKV_ROTATED_KERNELS(level)                                                          \
  void encode_rotated_##level(const RotatedParams& p, const float* x, size_t n,             \
                              size_t x_stride, uint8_t* codes);                              \
  void decode_rotated_##level(const RotatedParams& p, const uint8_t* codes, size_t n,       \
                              float* y, size_t y_stride);
// Block formats: `bits` is only used by kivi.
#define TQKV_BLOCK_KERNELS(level, fmt)                                                       \
  void encode_##fmt##_##level(int dim, int bits, const float* x, size_t n, size_t x_stride, \
                              uint8_t* codes);                                               \
  void decode_##fmt##_##level(int dim, int bits, const uint8_t* codes, size_t n, float* y,  \
                              size_t y_stride);
#define TQKV_ALL_KERNELS(level)      \
  TQKV_ROTATED_KERNELS(level)        \
  TQKV_BLOCK_KERNELS(level, f16)     \
  TQKV_BLOCK_KERNELS(level, q8_0)    \
  TQKV_BLOCK_KERNELS(level, q4_0)    \
  TQKV_BLOCK_KERNELS(level, kivi)

TQKV_ALL_KERNELS(scalar)
TQKV_ALL_KERNELS(avx2)
TQKV_ALL_KERNELS(avx512)

using EncodeRotatedFn = void (*)(const RotatedParams&, const float*, size_t, size_t, uint8_t*);
using DecodeRotatedFn = void (*)(const RotatedParams&, const uint8_t*, size_t, float*, size_t);
using EncodeBlockFn = void (*)(int, int, const float*, size_t, size_t, uint8_t*);
using DecodeBlockFn = void (*)(int, int, const uint8_t*, size_t, float*, size_t);

}  // namespace tqkv::kernels
