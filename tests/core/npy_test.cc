#include "core/npy.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace tqkv {
namespace {

TEST(Npy, RoundTripAndCorruption) {
  const std::string path = ::testing::TempDir() + "/t.npy";
  std::vector<float> v = {1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(write_npy(path, {2, 3}, v.data()).ok());
  auto a = read_npy(path);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->data, v);
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string good = ss.str();
  // Every truncation is an error, never a crash.
  for (size_t n = 0; n < good.size(); ++n) EXPECT_FALSE(parse_npy(good.substr(0, n), "x").ok()) << n;
  // Byte flips: error or a valid parse, never a crash.
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0x5a;
    (void)parse_npy(bad, "x");
  }
  std::string big = good;
  big.replace(big.find("(2, 3)"), 6, "(9999999999999, 3)");
  EXPECT_FALSE(parse_npy(big, "x").ok());
  EXPECT_FALSE(read_npy("/nonexistent/file.npy").ok());
}

}  // namespace
}  // namespace tqkv
