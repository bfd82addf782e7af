// Shared helpers of the libFuzzer targets (fuzz/README in docs/fuzzing.md).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace tqkv::fuzz {

// A per-process scratch file in /dev/shm (or /tmp) for readers that take a path.
inline std::string scratch_path(const char* tag) {
  const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return std::string(dir) + "/tqkv_fuzz_" + tag + "_" + std::to_string(getpid());
}

inline void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
}

// Splits the input at the first occurrence of the 4-byte separator "\xF0SEP" (seeds use it to
// carry two files, e.g. a llama2.c checkpoint and its tokenizer).
inline void split2(const uint8_t* data, size_t size, std::string* a, std::string* b) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  const size_t p = s.find("\xF0SEP");
  if (p == std::string::npos) { *a = s; b->clear(); return; }
  *a = s.substr(0, p);
  *b = s.substr(p + 4);
}

}  // namespace tqkv::fuzz
