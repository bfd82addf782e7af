// Tokenizer built from GGUF metadata (tokenizer.ggml.*).
//
// Supported: tokenizer.ggml.model == "llama" (SentencePiece BPE with scores and byte fallback,
// the algorithm of llama.cpp's SPM tokenizer):
//   1. if add_space_prefix (tokenizer.ggml.add_space_prefix, default true) and the text is not
//      empty, prepend ' '; replace every ' ' by U+2581 ("▁");
//   2. split into UTF-8 characters (invalid bytes become one-byte symbols);
//   3. repeatedly merge the adjacent pair whose concatenation is a vocabulary piece with the
//      highest score (leftmost pair on ties) until no pair is in the vocabulary;
//   4. each remaining symbol is its vocabulary id, or one <0xXX> byte token per byte
//      (or the unknown id when the vocabulary has no byte tokens).
// encode() prepends BOS when asked. decode_piece(): "▁" -> ' ', <0xXX> tokens -> that byte,
// control tokens (BOS/EOS/...) -> "".
//
// tokenizer.ggml.model == "gpt2" (byte-level BPE, tokenizer.ggml.merges): the text is split by the
// pre-tokenizer named by tokenizer.ggml.pre ("llama-bpe"/"llama3": Llama 3's pattern, digits in
// groups of 1..3, whole-word lookup before merging; "qwen2": the same with single digits;
// "gpt2"/"gpt-2"/"default"/absent: GPT-2's pattern), each piece's bytes are mapped to GPT-2's
// printable byte alphabet, and merges are applied lowest rank first (leftmost on ties). Letters,
// digits and spaces are classified with the C library's Unicode tables (C.UTF-8 locale), an
// approximation of \p{L} / \p{N} / \s. Special tokens written inside the text are not parsed
// (they are tokenized as text). Decoding maps the byte alphabet back to bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tqkv/gguf.h"
#include "tqkv/status.h"

namespace tqkv {

class Tokenizer {
 public:
  // GGUF token types (tokenizer.ggml.token_type).
  enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

  static StatusOr<std::unique_ptr<Tokenizer>> from_gguf(const GgufFile& f);
  // Byte-level BPE from explicit tables (for tests); pre in {"gpt2", "llama-bpe", "qwen2"}.
  static StatusOr<std::unique_ptr<Tokenizer>> from_bpe(std::vector<std::string> pieces,
                                                       std::vector<int32_t> types,
                                                       const std::vector<std::string>& merges,
                                                       const std::string& pre, int bos, int eos,
                                                       bool add_bos);
  // From explicit tables (for tests); types may be empty (all normal, <0xXX> pieces are bytes).
  static StatusOr<std::unique_ptr<Tokenizer>> from_vocab(std::vector<std::string> pieces,
                                                         std::vector<float> scores,
                                                         std::vector<int32_t> types, int bos,
                                                         int eos, bool add_space_prefix = true);

  std::vector<int> encode(std::string_view text, bool add_bos) const;
  // Bytes of one token as text (see header comment).
  std::string decode_piece(int token) const;
  // llama2.c's run.c printing rule: after BOS a leading space of the piece is dropped.
  std::string decode_piece_after(int prev_token, int token) const;
  std::string decode(const std::vector<int>& tokens) const;

  // Byte-level BPE only: the pre-tokenizer's split of `text` (exposed for tests).
  std::vector<std::string> pretokenize(std::string_view text) const;

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  int bos() const { return bos_; }
  int eos() const { return eos_; }
  bool add_bos() const { return add_bos_; }
  const std::string& piece(int id) const { return pieces_[id]; }

 private:
  Tokenizer() = default;
  Status init();
  Status init_bpe(const GgufFile& f);
  void encode_bpe(std::string_view text, std::vector<int>* out) const;
  std::string decode_bpe_piece(int token) const;

  enum class Kind { kSpm, kBpe };
  enum class Pre { kGpt2, kLlama3, kQwen2 };
  Kind kind_ = Kind::kSpm;
  Pre pre_ = Pre::kGpt2;
  std::unordered_map<std::string, int> merge_rank_;  // "left right" -> rank
  std::string byte_to_piece_[256];                   // GPT-2 byte alphabet (UTF-8 of one code point)
  std::unordered_map<uint32_t, uint8_t> cp_to_byte_;

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<int32_t> types_;
  std::unordered_map<std::string, int> index_;
  int byte_ids_[256];
  int bos_ = 1, eos_ = 2, unk_ = 0;
  bool add_bos_ = true;
  bool add_space_prefix_ = true;
};

}  // namespace tqkv
