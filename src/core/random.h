// Deterministic, platform-independent random numbers (seeded rotations, synthetic data).
#pragma once

#include <cmath>
#include <cstdint>

namespace tqkv {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform integer in [0, n), n >= 1 (multiply-shift; bias < 2^-32 for n < 2^32).
  uint32_t uniform(uint32_t n) { return static_cast<uint32_t>(((next() >> 32) * n) >> 32); }
  // Uniform double in [0, 1).
  double uniform01() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
  // Standard normal (Box-Muller, one value per call).
  double normal() {
    double u1 = uniform01(), u2 = uniform01();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t s_;
};

}  // namespace tqkv
