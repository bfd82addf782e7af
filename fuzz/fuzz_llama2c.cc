// llama2.c checkpoint + tokenizer.bin converter: the input is "checkpoint \xF0SEP tokenizer".
#include <unistd.h>

#include <cstdint>
#include <string>

#include "fuzz_common.h"
#include "tqkv/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string m = tqkv::fuzz::scratch_path("l2c_model"), t = tqkv::fuzz::scratch_path("l2c_tok"),
                           o = tqkv::fuzz::scratch_path("l2c_out");
  std::string a, b;
  tqkv::fuzz::split2(data, size, &a, &b);
  tqkv::fuzz::write_bytes(m, reinterpret_cast<const uint8_t*>(a.data()), a.size());
  tqkv::fuzz::write_bytes(t, reinterpret_cast<const uint8_t*>(b.data()), b.size());
  if (tqkv::convert_llama2c(m, t, o).ok()) {
    auto model = tqkv::Model::load(o);  // what the converter writes must load
    if (!model.ok()) __builtin_trap();
  }
  return 0;
}
