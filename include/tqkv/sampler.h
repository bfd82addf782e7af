// Next-token sampling from logits.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace tqkv {

// Greedy when temperature <= 0 (argmax, lowest id on ties); otherwise softmax(logits/T)
// restricted to the top_k most likely (0 = all) and the smallest set with mass >= top_p (1 = all).
struct SamplerOptions {
  float temperature = 0.0f;
  int top_k = 40;
  float top_p = 0.95f;
  uint64_t seed = 42;
};
class Sampler {
 public:
  explicit Sampler(const SamplerOptions& o);
  int sample(const float* logits, int vocab);
 private:
  SamplerOptions o_;
  uint64_t state_;
  std::vector<std::pair<float, int>> buf_;
};
int argmax(const float* x, int n);

}  // namespace tqkv
