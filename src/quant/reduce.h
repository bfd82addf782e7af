// Canonical reductions and bit-plane packing shared by the scalar reference and the SIMD kernels
// (internal). Sums of squares accumulate in double, element i into lane i % 8, and the 8 lanes
// are combined by the fixed tree below, so every SIMD level gets bit-identical norms.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tqkv {

// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))
inline double reduce8_tree(const double lanes[8]) {
  const double a0 = lanes[0] + lanes[4], a1 = lanes[1] + lanes[5];
  const double a2 = lanes[2] + lanes[6], a3 = lanes[3] + lanes[7];
  const double b0 = a0 + a2, b1 = a1 + a3;
  return b0 + b1;
}

// Canonical double sum of squares of n floats.
inline double sumsq_canonical(const float* x, size_t n) {
  double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    lanes[i % 8] += v * v;
  }
  return reduce8_tree(lanes);
}

// Bit-plane j of b-bit codes: bit j of codes[i] at bit i % 8 of byte i / 8. `plane` has
// ceil(n / 8) bytes; padding bits are zero.
inline void pack_plane(const uint8_t* codes, size_t n, int j, uint8_t* plane) {
  for (size_t k = 0; k < (n + 7) / 8; ++k) plane[k] = 0;
  for (size_t i = 0; i < n; ++i) plane[i / 8] |= static_cast<uint8_t>(((codes[i] >> j) & 1) << (i % 8));
}
inline void unpack_plane(const uint8_t* plane, size_t n, int j, uint8_t* codes) {
  for (size_t i = 0; i < n; ++i) codes[i] |= static_cast<uint8_t>(((plane[i / 8] >> (i % 8)) & 1) << j);
}

}  // namespace tqkv
