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
// gpt2 (byte-level BPE) is not implemented: from_gguf returns kUnsupported naming the model.
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

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  int bos() const { return bos_; }
  int eos() const { return eos_; }
  bool add_bos() const { return add_bos_; }
  const std::string& piece(int id) const { return pieces_[id]; }

 private:
  Tokenizer() = default;
  Status init();

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
