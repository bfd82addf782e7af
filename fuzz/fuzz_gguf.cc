// GGUF reader + model/tokenizer construction + a short tokenization, on arbitrary bytes.
#include <cstdint>
#include <vector>

#include "tqkv/gguf.h"
#include "tqkv/model.h"
#include "tqkv/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = tqkv::GgufFile::parse(std::vector<uint8_t>(data, data + size));
  if (!f.ok()) return 0;
  auto tok = tqkv::Tokenizer::from_gguf(**f);
  if (tok.ok()) {
    auto ids = (*tok)->encode("Hello world, \xE2\x96\x81 caf\xC3\xA9 <0x41>\n\t 123", true);
    (void)(*tok)->decode(ids);
  }
  auto m = tqkv::Model::from_gguf(std::move(f).value());
  (void)m;
  return 0;
}
