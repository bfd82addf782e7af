// Randomized Walsh-Hadamard rotation of head vectors: exactly orthogonal for any dimension.
//
// Power-of-two d: y = H_d * S * x, S a seeded +-1 diagonal, H_d the orthonormal Walsh-Hadamard
// matrix (fast transform, O(d log d)). Other d (80, 96, 576, ...): two rounds of
// (seeded signs, seeded permutation, block-diagonal orthonormal WHT over the binary decomposition
// of d, largest block first: 80 = 64 + 16, 96 = 64 + 32, 576 = 512 + 64). Every step is orthogonal,
// so norms and inner products are preserved exactly up to float rounding. Disabled rotations are
// the identity (for ablations). See docs/design.md.
// Thread-safety: a Rotation is immutable after construction; forward/inverse are const and
// re-entrant.
#pragma once

#include <cstdint>
#include <vector>

#include "tqkv/status.h"

namespace tqkv {

class Rotation {
 public:
  struct Round {
    std::vector<float> signs;    // (dim,) +1 or -1, applied first
    std::vector<int32_t> perm;   // (dim,) y[i] = x[perm[i]]; empty = identity
  };
  struct Block {
    int offset, size;  // size is a power of two
  };

  // dim >= 1. enabled=false gives the identity.
  static StatusOr<Rotation> make(int dim, uint64_t seed, bool enabled = true);

  int dim() const { return dim_; }
  bool enabled() const { return enabled_; }
  // y = R x. x and y: (dim,) floats; they may alias.
  void forward(const float* x, float* y) const;
  // x = R^T y. They may alias.
  void inverse(const float* y, float* x) const;

  const std::vector<Round>& rounds() const { return rounds_; }
  const std::vector<Block>& blocks() const { return blocks_; }

 private:
  int dim_ = 0;
  bool enabled_ = false;
  std::vector<Round> rounds_;
  std::vector<Block> blocks_;
};

// In-place unnormalized fast Walsh-Hadamard transform of n = 2^k floats, butterfly stages in the
// order h = 1, 2, 4, ..., n/2 with (a, b) -> (a + b, a - b). The SIMD paths reproduce exactly this
// order of operations, so results are bit-identical.
void fwht_inplace(float* v, int n);

}  // namespace tqkv
