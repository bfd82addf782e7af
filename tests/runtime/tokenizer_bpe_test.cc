// Byte-level BPE ("gpt2") tokenizer: pre-tokenizer splits of GPT-2, Llama 3 and Qwen2 against
// fixtures produced from their regexes, merges by rank, byte alphabet round trip.
#include <gtest/gtest.h>

#include <map>

#include "tqkv/tokenizer.h"

namespace tqkv {
namespace {

// Generated from the pre-tokenizer regexes with Python's `regex` module (\p{L}, \p{N} support).
const std::vector<std::string> kPreTexts = {
    "Hello world's 12345 !!\n\n  x",
    "I'LL go, don't\tstop...\r\n  \n end  ",
    "caf\xc3""\xa9"" na\xc3""\xaf""ve \xe5""\x8c""\x97""\xe4""\xba""\xac"" \xd9""\xa1""\xd9""\xa2""\xd9""\xa3"" x\xc2""\xb2""",
    "  leading",
    "a\n\n\nb",
    "$100.50!? (ok)",
};
const std::map<std::string, std::vector<std::vector<std::string>>> kPreSplits = {
    {"gpt2", {
        {"Hello", " world", "'s", " 12345", " !!", "\n\n ", " x"},
        {"I", "'", "LL", " go", ",", " don", "'t", "\t", "stop", "...", "\r\n  \n", " end", "  "},
        {"caf\xc3""\xa9""", " na\xc3""\xaf""ve", " \xe5""\x8c""\x97""\xe4""\xba""\xac""", " \xd9""\xa1""\xd9""\xa2""\xd9""\xa3""", " x", "\xc2""\xb2"""},
        {" ", " leading"},
        {"a", "\n\n", "\n", "b"},
        {"$", "100", ".", "50", "!?", " (", "ok", ")"},
    }},
    {"llama-bpe", {
        {"Hello", " world", "'s", " ", "123", "45", " !!\n\n", " ", " x"},
        {"I", "'LL", " go", ",", " don", "'t", "\tstop", "...\r\n", "  \n", " end", "  "},
        {"caf\xc3""\xa9""", " na\xc3""\xaf""ve", " \xe5""\x8c""\x97""\xe4""\xba""\xac""", " ", "\xd9""\xa1""\xd9""\xa2""\xd9""\xa3""", " x", "\xc2""\xb2"""},
        {" ", " leading"},
        {"a", "\n\n\n", "b"},
        {"$", "100", ".", "50", "!?", " (", "ok", ")"},
    }},
    {"qwen2", {
        {"Hello", " world", "'s", " ", "1", "2", "3", "4", "5", " !!\n\n", " ", " x"},
        {"I", "'LL", " go", ",", " don", "'t", "\tstop", "...\r\n", "  \n", " end", "  "},
        {"caf\xc3""\xa9""", " na\xc3""\xaf""ve", " \xe5""\x8c""\x97""\xe4""\xba""\xac""", " ", "\xd9""\xa1""", "\xd9""\xa2""", "\xd9""\xa3""", " x", "\xc2""\xb2"""},
        {" ", " leading"},
        {"a", "\n\n\n", "b"},
        {"$", "1", "0", "0", ".", "5", "0", "!?", " (", "ok", ")"},
    }},
};

// GPT-2's byte alphabet as UTF-8 pieces, in byte order.
std::vector<std::string> byte_pieces() {
  std::vector<std::string> v;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const unsigned cp = keep ? b : 256 + n++;
    std::string s;
    if (cp < 0x80) s += static_cast<char>(cp);
    else { s += static_cast<char>(0xC0 | (cp >> 6)); s += static_cast<char>(0x80 | (cp & 0x3F)); }
    v.push_back(s);
  }
  return v;
}

std::unique_ptr<Tokenizer> make(const std::string& pre, const std::vector<std::string>& extra,
                                const std::vector<std::string>& merges) {
  std::vector<std::string> pieces = byte_pieces();  // ids 0..255 = bytes
  for (const auto& e : extra) pieces.push_back(e);
  pieces.push_back("<|bos|>");
  std::vector<int32_t> types(pieces.size(), Tokenizer::kNormal);
  types.back() = Tokenizer::kControl;
  auto t = Tokenizer::from_bpe(pieces, types, merges, pre, static_cast<int>(pieces.size()) - 1,
                               static_cast<int>(pieces.size()) - 1, true);
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  return t.ok() ? std::move(*t) : nullptr;
}

TEST(BpeTokenizer, PreTokenizerSplitsMatchTheRegexes) {
  for (const auto& [pre, splits] : kPreSplits) {
    auto t = make(pre, {}, {});
    ASSERT_NE(t, nullptr);
    for (size_t i = 0; i < kPreTexts.size(); ++i) EXPECT_EQ(t->pretokenize(kPreTexts[i]), splits[i]) << pre << " text " << i;
  }
}

TEST(BpeTokenizer, MergesByRank) {
  // "\xc4\xa0" is the byte alphabet's space (U+0120).
  const std::string sp = "\xc4\xa0";
  auto t = make("llama-bpe", {"he", "ll", sp + "he", "hell", "hello", sp + "w"},
                {"h e", "l l", sp + " he", "he ll", "hell o", sp + " w"});
  ASSERT_NE(t, nullptr);
  const int he = 256, ll = 257, sphe = 258, hell = 259, hello = 260, spw = 261, bos = 262;
  // "hello": h e l l o -> (h e) rank 0, (l l) rank 1, (he ll) rank 3, (hell o) rank 4.
  EXPECT_EQ(t->encode("hello", false), (std::vector<int>{hello}));
  // " hew": words " hew" -> sp h e w -> he (0) -> sp he (2) -> [sphe, w].
  EXPECT_EQ(t->encode(" hew", true), (std::vector<int>{bos, sphe, 'w'}));
  // Pre-tokenization keeps merges inside words: "he he" -> "he", " he".
  EXPECT_EQ(t->encode("he he", false), (std::vector<int>{he, sphe}));
  // Bytes outside the printable range come through the alphabet: "\n" is byte 10.
  EXPECT_EQ(t->encode("ll\n", false), (std::vector<int>{ll, '\n'}));
  (void)hell;
  (void)spw;
  const std::string text = "hello  world\n\tcaf\xc3\xa9 \xe5\x8c\x97 123";
  EXPECT_EQ(t->decode(t->encode(text, true)), text);
  EXPECT_EQ(t->decode_piece(bos), "");
}

TEST(BpeTokenizer, UnknownPreTokenizerIsRefused) {
  auto t = Tokenizer::from_bpe(byte_pieces(), {}, {}, "deepseek-coder", 0, 0, false);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(t.status().message().find("deepseek-coder"), std::string::npos);
}

}  // namespace
}  // namespace tqkv
