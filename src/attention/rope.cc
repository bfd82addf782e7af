// RoPE as declared in tqkv/attention.h: the forward pass rotates queries (and post-RoPE keys) with
// these functions, and attention rotates pre-RoPE stored keys with the same ones, so both agree
// bit for bit.
#include <cmath>

#include "tqkv/attention.h"

namespace tqkv {

std::vector<float> rope_inv_freq(const RopeParams& rope) {
  std::vector<float> f(rope.rotary_dims / 2);
  for (int i = 0; i < rope.rotary_dims / 2; ++i)
    f[i] = static_cast<float>(std::pow(static_cast<double>(rope.base), -2.0 * i / rope.rotary_dims) /
                              (rope.freq_divisors ? rope.freq_divisors[i] : 1.0f));
  return f;
}

void apply_rope(const RopeParams& rope, const float* inv_freq, int64_t position, float* x) {
  const float pos = static_cast<float>(position) / rope.position_scale;
  const int half = rope.rotary_dims / 2;
  const bool adjacent = rope.style == RopeStyle::kAdjacent;
  for (int i = 0; i < half; ++i) {
    const float theta = pos * inv_freq[i];
    const float c = std::cos(theta), s = std::sin(theta);
    const int a = adjacent ? 2 * i : i;
    const int b = adjacent ? 2 * i + 1 : i + half;
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
  }
}

}  // namespace tqkv
