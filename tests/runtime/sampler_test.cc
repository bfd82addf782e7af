// Sampler: greedy, top-k / top-p restriction, determinism per seed, temperature.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "tqkv/model.h"

namespace tqkv {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 2.5f, -1.0f, 3.0f, 0.0f};

TEST(Sampler, GreedyIsArgmaxLowestIdOnTies) {
  Sampler s(SamplerOptions{0.0f, 40, 0.95f, 1});
  EXPECT_EQ(s.sample(kLogits.data(), 6), 1);
  EXPECT_EQ(argmax(kLogits.data(), 6), 1);
}

TEST(Sampler, TopKAndTopPRestrictTheSupport) {
  std::map<int, int> seen;
  Sampler k2(SamplerOptions{100.0f, 2, 1.0f, 7});  // near-uniform over the top 2 (ids 1 and 4)
  for (int i = 0; i < 2000; ++i) ++seen[k2.sample(kLogits.data(), 6)];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[1], 800);
  EXPECT_GT(seen[4], 800);
  // top-p: p = softmax(x) = {.04, .30, .18, .01, .30, .02}, sorted 1, 4, 2, ...: 0.5 keeps {1, 4}.
  seen.clear();
  Sampler p(SamplerOptions{1.0f, 0, 0.5f, 9});
  for (int i = 0; i < 2000; ++i) ++seen[p.sample(kLogits.data(), 6)];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen.count(1) && seen.count(4));
  // Full distribution at T = 1: frequencies follow softmax (3 sigma of a binomial with n = 20000).
  seen.clear();
  Sampler all(SamplerOptions{1.0f, 0, 1.0f, 11});
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++seen[all.sample(kLogits.data(), 6)];
  double z = 0;
  for (float x : kLogits) z += std::exp(x);
  for (int id = 0; id < 6; ++id) {
    const double pr = std::exp(kLogits[id]) / z;
    EXPECT_NEAR(seen[id] / double(n), pr, 3 * std::sqrt(pr * (1 - pr) / n) + 1e-4) << id;
  }
}

TEST(Sampler, SameSeedSameSequence) {
  Sampler a(SamplerOptions{0.8f, 40, 0.95f, 123}), b(SamplerOptions{0.8f, 40, 0.95f, 123});
  Sampler c(SamplerOptions{0.8f, 40, 0.95f, 124});
  int diff = 0;
  for (int i = 0; i < 100; ++i) {
    const int x = a.sample(kLogits.data(), 6);
    EXPECT_EQ(x, b.sample(kLogits.data(), 6));
    diff += x != c.sample(kLogits.data(), 6);
  }
  EXPECT_GT(diff, 0);
}

}  // namespace
}  // namespace tqkv
