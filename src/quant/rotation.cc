#include "tqkv/rotation.h"

#include <cmath>
#include <string>
#include <utility>

#include "core/random.h"

namespace tqkv {

void fwht_inplace(float* v, int n) {
  for (int h = 1; h < n; h <<= 1) {
    for (int i = 0; i < n; i += 2 * h) {
      for (int j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
}

StatusOr<Rotation> Rotation::make(int dim, uint64_t seed, bool enabled) {
  if (dim < 1) return invalid_argument("rotation dim must be >= 1, got " + std::to_string(dim));
  Rotation r;
  r.dim_ = dim;
  r.enabled_ = enabled;
  if (!enabled) return r;
  for (int rem = dim, off = 0; rem > 0;) {
    int b = 1;
    while (b * 2 <= rem) b *= 2;
    r.blocks_.push_back({off, b});
    off += b;
    rem -= b;
  }
  const bool pow2 = r.blocks_.size() == 1;
  SplitMix64 rng(seed ^ 0x7471'6b76'726f'7461ull);  // "tqkvrota"
  const int n_rounds = pow2 ? 1 : 2;
  for (int k = 0; k < n_rounds; ++k) {
    Round round;
    round.signs.resize(dim);
    for (int i = 0; i < dim; ++i) round.signs[i] = (rng.next() >> 63) ? -1.0f : 1.0f;
    if (!pow2) {
      round.perm.resize(dim);
      for (int i = 0; i < dim; ++i) round.perm[i] = i;
      for (int i = dim - 1; i > 0; --i) std::swap(round.perm[i], round.perm[rng.uniform(i + 1)]);
    }
    r.rounds_.push_back(std::move(round));
  }
  return r;
}

namespace {
void blocks_wht(const std::vector<Rotation::Block>& blocks, float* v) {
  for (const auto& b : blocks) {
    if (b.size == 1) continue;
    fwht_inplace(v + b.offset, b.size);
    const float s = static_cast<float>(1.0 / std::sqrt(static_cast<double>(b.size)));
    for (int i = 0; i < b.size; ++i) v[b.offset + i] *= s;
  }
}
}  // namespace

void Rotation::forward(const float* x, float* y) const {
  if (x != y)
    for (int i = 0; i < dim_; ++i) y[i] = x[i];
  if (!enabled_) return;
  thread_local std::vector<float> tmp;  // permutation scratch, reused across calls
  for (const Round& r : rounds_) {
    for (int i = 0; i < dim_; ++i) y[i] *= r.signs[i];
    if (!r.perm.empty()) {
      tmp.assign(y, y + dim_);
      for (int i = 0; i < dim_; ++i) y[i] = tmp[r.perm[i]];
    }
    blocks_wht(blocks_, y);
  }
}

void Rotation::inverse(const float* y, float* x) const {
  if (x != y)
    for (int i = 0; i < dim_; ++i) x[i] = y[i];
  if (!enabled_) return;
  thread_local std::vector<float> tmp;
  for (auto it = rounds_.rbegin(); it != rounds_.rend(); ++it) {
    blocks_wht(blocks_, x);  // the normalized WHT is its own inverse
    if (!it->perm.empty()) {
      tmp.assign(x, x + dim_);
      for (int i = 0; i < dim_; ++i) x[it->perm[i]] = tmp[i];
    }
    for (int i = 0; i < dim_; ++i) x[i] *= it->signs[i];
  }
}

}  // namespace tqkv
