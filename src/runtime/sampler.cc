// Sampler and argmax (tqkv/sampler.h).
#include "tqkv/sampler.h"

#include <algorithm>
#include <cmath>

namespace tqkv {

int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

Sampler::Sampler(const SamplerOptions& o) : o_(o), state_(o.seed ? o.seed : 0x9e3779b97f4a7c15ull) {}

int Sampler::sample(const float* logits, int vocab) {
  if (o_.temperature <= 0) return argmax(logits, vocab);
  buf_.resize(vocab);
  for (int i = 0; i < vocab; ++i) buf_[i] = {logits[i] / o_.temperature, i};
  int k = (o_.top_k > 0 && o_.top_k < vocab) ? o_.top_k : vocab;
  auto by_value = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  std::partial_sort(buf_.begin(), buf_.begin() + k, buf_.end(), by_value);
  const float mx = buf_[0].first;
  double sum = 0;
  if (std::isfinite(mx)) {
    for (int i = 0; i < k; ++i) { buf_[i].first = std::exp(buf_[i].first - mx); sum += buf_[i].first; }
  } else {
    // logits / T overflowed (tiny T such as 1e-40): inf - inf was NaN and the loop below fell
    // through to the k-th token. Redo it in double from the logits themselves: (l - l_max) / T is
    // -inf or 0, i.e. the greedy choice, which is the limit T -> 0+.
    // The sort above ordered the overflowed values (ties among the infinities by id): sort the
    // logits themselves (same order for T > 0).
    for (int i = 0; i < vocab; ++i) buf_[i] = {logits[i], i};
    std::partial_sort(buf_.begin(), buf_.begin() + k, buf_.end(), by_value);
    const double lmx = buf_[0].first, t = o_.temperature;
    for (int i = 0; i < k; ++i) {
      buf_[i].first = static_cast<float>(std::exp((double(logits[buf_[i].second]) - lmx) / t));
      sum += buf_[i].first;
    }
  }
  if (o_.top_p < 1.0f) {
    double acc = 0;
    for (int i = 0; i < k; ++i) {
      acc += buf_[i].first / sum;
      if (acc >= o_.top_p) { k = i + 1; break; }
    }
    sum = 0;
    for (int i = 0; i < k; ++i) sum += buf_[i].first;
  }
  // xorshift64*: deterministic for a given seed.
  state_ ^= state_ >> 12; state_ ^= state_ << 25; state_ ^= state_ >> 27;
  const double u = static_cast<double>((state_ * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
  double acc = 0;
  for (int i = 0; i < k; ++i) {
    acc += buf_[i].first / sum;
    if (u < acc) return buf_[i].second;
  }
  return buf_[k - 1].second;
}

}  // namespace tqkv
