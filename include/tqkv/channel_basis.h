// Channel bases for the pk{b} codec (tqkv/prerope_keys.h): an orthonormal basis in which a head's
// keys or values have unequal, decorrelated variances, so that per-channel bit allocation pays.
//
// Keys and values of one kv head are projections k = W (g * n) of the normalized hidden state n
// (g: the attention norm's gain). If n has roughly uncorrelated, equal-variance coordinates, the
// covariance of k is proportional to the Gram matrix A = W diag(g)^2 W^T, and its eigenvectors
// (the left singular vectors of W diag(g)) decorrelate k. That basis comes from the model's own
// weights: no calibration data, no bytes in the cache. The per-sequence statistics (mean, sd,
// bits) are still fitted on the sequence's first tokens in that basis.
//
// (A query-weighted variant, analysis diag(sqrt w) U / synthesis diag(1/sqrt w) U with w the
// RoPE-pair query energy of W_q, measured worse on the shipped d128 model: docs/design.md.)
//
//   std::vector<double> a = projection_gram(w_rows, g, head_dim, dim);  // (head_dim, head_dim)
//   auto u = symmetric_eigenbasis(a, head_dim);  // columns: eigenvectors, eigenvalues descending
//   ChannelBasis b = orthonormal_basis(*u, head_dim);
#pragma once

#include <vector>

#include "tqkv/status.h"

namespace tqkv {

// A = W diag(g)^2 W^T for W: (rows, cols) row-major floats, g: (cols) or null (all ones).
std::vector<double> projection_gram(const float* w, const float* g, int rows, int cols);

// Eigenvectors of a symmetric d x d matrix (row-major doubles) by cyclic Jacobi rotations (to a
// 1e-13 relative off-diagonal norm, at most 100 sweeps), as a row-major d x d float matrix whose
// column j is the j-th eigenvector, eigenvalues in descending order (ties: original index), each
// column's largest-magnitude entry made positive (a deterministic sign). Orthonormal to float
// rounding. Errors: d < 1, wrong size, non-finite or non-symmetric input.
StatusOr<std::vector<float>> symmetric_eigenbasis(const std::vector<double>& a, int d);

// Block-diagonal eigenbasis: the Gram `a` (d x d, row-major doubles) restricted to the diagonal
// blocks [b0, b0 + block) (the last one shorter when block does not divide d), each block
// decomposed by symmetric_eigenbasis and placed in its own rows and columns; entries outside the
// blocks are exactly 0. block >= d gives symmetric_eigenbasis(a, d). A sparse synthesis costs the
// SIMD pk kernels ~block instead of d multiply-adds per coordinate (docs/design.md §12).
// Errors: block < 1, or those of symmetric_eigenbasis on a block.
StatusOr<std::vector<float>> block_eigenbasis(const std::vector<double>& a, int d, int block);

// A linear transform pair for the pk codec: analysis y_j = sum_i analysis[i d + j] x_i and
// synthesis x_i = sum_j synthesis[i d + j] y_j (both d x d row-major), synthesis * analysis^T = I.
struct ChannelBasis {
  int dim = 0;
  std::vector<float> analysis;
  std::vector<float> synthesis;
};

// Checks sizes, finiteness and synthesis * analysis^T = I (every entry within 1e-4 absolute).
Status validate_channel_basis(const ChannelBasis& b);

// An orthonormal U (columns = basis vectors): analysis = synthesis = U.
ChannelBasis orthonormal_basis(std::vector<float> u, int d);

}  // namespace tqkv
