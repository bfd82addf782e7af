// GPT-2 style BPE tokenizer: pieces and merges from the input ("P piece" / "M a b" lines, an
// optional "R pre" line), then encode/decode of the text after the separator.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "tqkv/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string spec, text;
  tqkv::fuzz::split2(data, size, &spec, &text);
  std::vector<std::string> pieces, merges;
  std::vector<int32_t> types;
  std::string pre;
  size_t i = 0;
  while (i < spec.size() && pieces.size() + merges.size() < 8192) {
    size_t e = spec.find('\n', i);
    if (e == std::string::npos) e = spec.size();
    std::string line = spec.substr(i, e - i);
    i = e + 1;
    if (line.size() < 2) continue;
    if (line[0] == 'P') { pieces.push_back(line.substr(2)); types.push_back(1); }
    else if (line[0] == 'C') { pieces.push_back(line.substr(2)); types.push_back(3); }
    else if (line[0] == 'M') merges.push_back(line.substr(2));
    else if (line[0] == 'R') pre = line.substr(2);
  }
  if (pieces.empty()) return 0;
  const int n = static_cast<int>(pieces.size());
  auto t = tqkv::Tokenizer::from_bpe(pieces, types, merges, pre, 0, n - 1, size % 2 == 0);
  if (!t.ok()) return 0;
  auto ids = (*t)->encode(text, true);
  for (int id : ids)
    if (id < 0 || id >= (*t)->vocab_size()) __builtin_trap();
  (void)(*t)->decode(ids);
  return 0;
}
