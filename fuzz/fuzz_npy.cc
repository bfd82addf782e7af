// .npy reader (quant-eval --data).
#include <cstdint>
#include <string>

#include "core/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto a = tqkv::parse_npy(std::string(reinterpret_cast<const char*>(data), size), "fuzz.npy");
  if (a.ok()) {
    size_t n = 1;
    for (int64_t d : a->shape) n *= static_cast<size_t>(d);
    if (n != a->data.size()) __builtin_trap();
  }
  return 0;
}
