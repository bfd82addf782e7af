// SentencePiece ("llama") tokenizer: vocabulary from the input (one piece per line, a type digit
// and a score byte in front), then encode/decode of the text after the separator.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "tqkv/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string vocab, text;
  tqkv::fuzz::split2(data, size, &vocab, &text);
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;
  size_t i = 0;
  while (i < vocab.size() && pieces.size() < 4096) {
    size_t e = vocab.find('\n', i);
    if (e == std::string::npos) e = vocab.size();
    std::string line = vocab.substr(i, e - i);
    i = e + 1;
    if (line.size() < 2) continue;
    types.push_back(line[0] >= '1' && line[0] <= '6' ? line[0] - '0' : 1);
    scores.push_back(static_cast<float>(static_cast<int8_t>(line[1])));
    pieces.push_back(line.substr(2));
  }
  if (pieces.empty()) return 0;
  const int n = static_cast<int>(pieces.size());
  auto t = tqkv::Tokenizer::from_vocab(pieces, scores, types, n > 1 ? 1 : 0, n > 2 ? 2 : 0, size % 2 == 0);
  if (!t.ok()) return 0;
  auto ids = (*t)->encode(text, true);
  for (int id : ids)
    if (id < 0 || id >= (*t)->vocab_size()) __builtin_trap();
  (void)(*t)->decode(ids);
  return 0;
}
