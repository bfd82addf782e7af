// Minimal reader of NumPy .npy files holding a float32/float64 array (internal; used by the CLI).
// Format: docs/format.md ("Input files"). Every malformed file yields a Status, never a crash.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tqkv/status.h"

namespace tqkv {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;  // C order, converted to float32
};

StatusOr<NpyArray> read_npy(const std::string& path);
StatusOr<NpyArray> parse_npy(const std::string& bytes, const std::string& name);
// Writes a C-order float32 array (used by tests and tools).
Status write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data);

}  // namespace tqkv
