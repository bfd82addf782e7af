// SentencePiece-BPE tokenizer: fixed text -> ids cases worked out by hand from the algorithm in
// tqkv/tokenizer.h, byte fallback, decode, and a round trip on the real stories260K vocabulary.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "testing/runtime_cli.h"
#include "tqkv/model.h"
#include "tqkv/perplexity.h"
#include "tqkv/tokenizer.h"

namespace tqkv {
namespace {

const std::string kSp = "\xE2\x96\x81";

struct Vocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;
  int add(const std::string& p, float s, int32_t t = Tokenizer::kNormal) {
    pieces.push_back(p);
    scores.push_back(s);
    types.push_back(t);
    return static_cast<int>(pieces.size()) - 1;
  }
};

Vocab base_vocab() {
  Vocab v;
  v.add("<unk>", 0, Tokenizer::kUnknown);
  v.add("<s>", 0, Tokenizer::kControl);
  v.add("</s>", 0, Tokenizer::kControl);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    v.add(buf, 0, Tokenizer::kByte);
  }
  return v;
}

class SpmTokenizer : public ::testing::Test {
 protected:
  void SetUp() override {
    Vocab v = base_vocab();
    sp = v.add(kSp, -1);
    for (const char* c : {"h", "e", "l", "o", "w", "r", "d", "a", "b", "c"}) ids[c] = v.add(c, -2);
    ids["ll"] = v.add("ll", -1);
    ids["_h"] = v.add(kSp + "h", -2);
    ids["_w"] = v.add(kSp + "w", -2);
    ids["el"] = v.add("el", -3);
    ids["or"] = v.add("or", -3);
    ids["ld"] = v.add("ld", -4);
    ids["ell"] = v.add("ell", -3.5);
    ids["ello"] = v.add("ello", -4.5);
    ids["_hello"] = v.add(kSp + "hello", -6);
    ids["_wor"] = v.add(kSp + "wor", -7);
    ids["_world"] = v.add(kSp + "world", -8);
    ids["ab"] = v.add("ab", -10);
    ids["bc"] = v.add("bc", -10);
    vocab = v;
    auto t = Tokenizer::from_vocab(v.pieces, v.scores, v.types, 1, 2);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    tok = std::move(*t);
  }
  Vocab vocab;
  std::map<std::string, int> ids;
  int sp = 0;
  std::unique_ptr<Tokenizer> tok;
};

TEST_F(SpmTokenizer, MergesByScore) {
  EXPECT_EQ(tok->encode("hello world", false), (std::vector<int>{ids["_hello"], ids["_world"]}));
  EXPECT_EQ(tok->encode("hello world", true), (std::vector<int>{1, ids["_hello"], ids["_world"]}));
}

TEST_F(SpmTokenizer, ByteFallbackAndNewline) {
  EXPECT_EQ(tok->encode("hello\n", false), (std::vector<int>{ids["_hello"], 3 + 0x0A}));
  EXPECT_EQ(tok->encode("\xC3\xA9", false), (std::vector<int>{sp, 3 + 0xC3, 3 + 0xA9}));  // "é"
}

TEST_F(SpmTokenizer, LeftmostPairWinsTies) {
  // (a,b) and (b,c) both score -10: the leftmost merges first, then "ab"+"c" is not a piece.
  EXPECT_EQ(tok->encode("abc", false), (std::vector<int>{sp, ids["ab"], ids["c"]}));
}

TEST_F(SpmTokenizer, HigherScoreWinsOverPosition) {
  Vocab v = vocab;
  v.scores[ids["bc"]] = -9;
  auto t = Tokenizer::from_vocab(v.pieces, v.scores, v.types, 1, 2);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->encode("abc", false), (std::vector<int>{sp, ids["a"], ids["bc"]}));
}

TEST_F(SpmTokenizer, SpacesAndEmpty) {
  EXPECT_EQ(tok->encode("", true), (std::vector<int>{1}));
  EXPECT_TRUE(tok->encode("", false).empty());
  EXPECT_EQ(tok->encode("a  b", false), (std::vector<int>{sp, ids["a"], sp, sp, ids["b"]}));
}

TEST_F(SpmTokenizer, NoSpacePrefix) {
  auto t = Tokenizer::from_vocab(vocab.pieces, vocab.scores, vocab.types, 1, 2, /*add_space_prefix=*/false);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->encode("hello", false), (std::vector<int>{ids["h"], ids["ello"]}));
}

TEST_F(SpmTokenizer, Decode) {
  EXPECT_EQ(tok->decode_piece(ids["_hello"]), " hello");
  EXPECT_EQ(tok->decode_piece(3 + 0x0A), "\n");
  EXPECT_EQ(tok->decode_piece(1), "");
  EXPECT_EQ(tok->decode_piece(-5), "");
  EXPECT_EQ(tok->decode_piece_after(1, ids["_hello"]), "hello");
  const std::string text = "hello world\nabc \xC3\xA9 x";
  EXPECT_EQ(tok->decode(tok->encode(text, true)), text);
}

TEST(SpmTokenizerReal, Stories260KRoundTrip) {
  const std::string shared = TQKV_SOURCE_DIR "/../shared";
  if (!std::filesystem::exists(shared + "/models/stories260K.bin"))
    GTEST_SKIP() << "needs " << shared << "/models (stories260K.bin, tok512.bin): not present";
  const std::string out = testing::temp_path("tok_stories260K.gguf");
  ASSERT_TRUE(convert_llama2c(shared + "/models/stories260K.bin", shared + "/models/tok512.bin", out).ok());
  auto m = Model::load(out);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  const Tokenizer& t = (*m)->tokenizer();
  const std::vector<int> ids = t.encode("Once upon a time", true);
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(t.decode(ids), "Once upon a time");
  auto text = read_text_file(shared + "/corpora/tinystories_sample.txt.xz");
  ASSERT_TRUE(text.ok()) << text.status().to_string();
  ASSERT_GT(text->size(), 10000u);
  // The text has no leading space, so decode (which drops the space after BOS) restores it exactly.
  EXPECT_EQ(t.decode(t.encode(*text, true)), *text);
}

}  // namespace
}  // namespace tqkv

namespace tqkv {
namespace {

// models/README.md: an llama.cpp-style SPM tokenizer must turn the whole of eval/heldout.txt into
// exactly eval/heldout.tokens.u16 (SentencePiece's own encoding, no BOS).
TEST(SpmTokenizerReal, ReferenceModelTokenizerTestVector) {
  const std::string dir = TQKV_SOURCE_DIR "/models";
  if (!std::filesystem::exists(dir + "/eval/heldout.tokens.u16") || !std::filesystem::exists(dir + "/tqkv-ref-d64.gguf"))
    GTEST_SKIP() << "needs " << dir << "/tqkv-ref-d64.gguf and eval/heldout.{txt,tokens.u16}";
  auto f = GgufFile::open(dir + "/tqkv-ref-d64.gguf");
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  auto t = Tokenizer::from_gguf(**f);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  auto text = read_text_file(dir + "/eval/heldout.txt");
  ASSERT_TRUE(text.ok()) << text.status().to_string();
  std::ifstream in(dir + "/eval/heldout.tokens.u16", std::ios::binary);
  const std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<int> want(raw.size() / 2);
  for (size_t i = 0; i < want.size(); ++i)
    want[i] = static_cast<uint8_t>(raw[2 * i]) | (static_cast<uint8_t>(raw[2 * i + 1]) << 8);
  const std::vector<int> got = (*t)->encode(*text, false);
  ASSERT_EQ(got.size(), want.size());
  size_t first_diff = got.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i]) { first_diff = i; break; }
  EXPECT_EQ(first_diff, got.size()) << "first difference at token " << first_diff;
  // Without BOS the space prefix the encoder added comes back as a leading space.
  EXPECT_TRUE((*t)->decode(got) == " " + *text);
}

}  // namespace
}  // namespace tqkv
