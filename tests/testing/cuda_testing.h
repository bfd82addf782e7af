// Helpers shared by the CUDA test files: skip without a GPU, assert a Status, a fresh logged seed.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>

#include "tqkv/cuda.h"
#include "tqkv/status.h"

#define REQUIRE_GPU()                                                       \
  do {                                                                      \
    std::string why_;                                                       \
    if (!::tqkv::cuda_available(&why_)) GTEST_SKIP() << "no GPU: " << why_; \
  } while (0)
#define ASSERT_OK(expr)                                      \
  do {                                                       \
    const ::tqkv::Status s_ = (expr);                        \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.to_string(); \
  } while (0)

namespace tqkv::testing {

// A fresh seed per run (the GPU tests draw new inputs each time), printed so a failure can be replayed.
inline uint64_t fresh_seed(const char* tag) {
  std::random_device rd;
  const uint64_t s = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  std::printf("[%s] seed %llu\n", tag, static_cast<unsigned long long>(s));
  return s;
}

}  // namespace tqkv::testing
