// SentencePiece-BPE ("llama") tokenizer: a linked list of symbols and a priority queue of
// candidate merges (highest score first, leftmost on ties); stale queue entries are skipped.
#include "tqkv/tokenizer.h"

#include <queue>

namespace tqkv {
namespace {

const std::string kSpace = "\xE2\x96\x81";  // U+2581

size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;  // continuation or invalid lead byte: a one-byte symbol
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "<0xHH>" with exactly two hex digits -> 0..255. (sscanf("%2x") accepted a sign or a space:
// "<0x-D>" gave -13 and byte_ids_[-13] was written out of bounds.)
bool parse_byte_piece(const std::string& p, int* byte) {
  if (p.size() != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return false;
  const int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
  if (hi < 0 || lo < 0) return false;
  *byte = hi * 16 + lo;
  return true;
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf(const GgufFile& f) {
  TQKV_ASSIGN_OR_RETURN(std::string model, f.get_string("tokenizer.ggml.model"));
  if (model != "llama" && model != "gpt2")
    return unsupported("tokenizer model '" + model + "' is not supported (supported: llama, gpt2)");
  const GgufValue* toks = f.find("tokenizer.ggml.tokens");
  if (!toks || toks->type != GgufType::kArray || toks->array_type != GgufType::kString)
    return corrupt("tokenizer.ggml.tokens is missing or not a string array");
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->pieces_ = toks->strings;
  const size_t n = t->pieces_.size();
  if (const GgufValue* s = f.find("tokenizer.ggml.scores")) {
    if (s->type != GgufType::kArray || s->array_type != GgufType::kFloat32 || s->floats.size() != n)
      return corrupt("tokenizer.ggml.scores must be a float32 array of " + std::to_string(n) + " entries");
    t->scores_.assign(s->floats.begin(), s->floats.end());
  }
  if (const GgufValue* s = f.find("tokenizer.ggml.token_type")) {
    if (s->type != GgufType::kArray || s->ints.size() != n)
      return corrupt("tokenizer.ggml.token_type must be an integer array of " + std::to_string(n) + " entries");
    t->types_.assign(s->ints.begin(), s->ints.end());
  }
  TQKV_ASSIGN_OR_RETURN(int64_t bos, f.get_int_or("tokenizer.ggml.bos_token_id", 1));
  TQKV_ASSIGN_OR_RETURN(int64_t eos, f.get_int_or("tokenizer.ggml.eos_token_id", 2));
  TQKV_ASSIGN_OR_RETURN(int64_t unk, f.get_int_or("tokenizer.ggml.unknown_token_id", 0));
  TQKV_ASSIGN_OR_RETURN(bool add_bos, f.get_bool_or("tokenizer.ggml.add_bos_token", true));
  TQKV_ASSIGN_OR_RETURN(bool asp, f.get_bool_or("tokenizer.ggml.add_space_prefix", true));
  t->bos_ = static_cast<int>(bos);
  t->eos_ = static_cast<int>(eos);
  t->unk_ = static_cast<int>(unk);
  t->add_bos_ = add_bos;
  t->add_space_prefix_ = asp;
  TQKV_RETURN_IF_ERROR(t->init());
  if (model == "gpt2") TQKV_RETURN_IF_ERROR(t->init_bpe(f));
  return t;
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::from_vocab(std::vector<std::string> pieces,
                                                           std::vector<float> scores,
                                                           std::vector<int32_t> types, int bos,
                                                           int eos, bool add_space_prefix) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->pieces_ = std::move(pieces);
  t->scores_ = std::move(scores);
  t->types_ = std::move(types);
  t->bos_ = bos;
  t->eos_ = eos;
  t->unk_ = 0;
  t->add_space_prefix_ = add_space_prefix;
  TQKV_RETURN_IF_ERROR(t->init());
  return t;
}

Status Tokenizer::init() {
  const int n = static_cast<int>(pieces_.size());
  if (n < 1) return corrupt("tokenizer vocabulary is empty");
  if (scores_.empty()) scores_.assign(n, 0.0f);
  if (scores_.size() != pieces_.size()) return corrupt("tokenizer scores and tokens differ in length");
  if (types_.empty()) {
    types_.assign(n, kNormal);
    int b;
    for (int i = 0; i < n; ++i)
      if (parse_byte_piece(pieces_[i], &b)) types_[i] = kByte;
  }
  if (types_.size() != pieces_.size()) return corrupt("tokenizer token types and tokens differ in length");
  for (int id : {bos_, eos_, unk_})
    if (id < 0 || id >= n) return corrupt("special token id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(n));
  for (int& b : byte_ids_) b = -1;
  index_.reserve(n * 2);
  for (int i = 0; i < n; ++i) {
    int b;
    if (types_[i] == kByte && parse_byte_piece(pieces_[i], &b)) byte_ids_[b] = i;
    // Keep the first id of duplicated pieces; byte and control pieces never match text.
    if (types_[i] == kNormal || types_[i] == kUserDefined || types_[i] == kUnused)
      index_.emplace(pieces_[i], i);
  }
  return Status::Ok();
}

std::vector<int> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int> out;
  if (add_bos) out.push_back(bos_);
  if (text.empty()) return out;
  if (kind_ == Kind::kBpe) {
    encode_bpe(text, &out);
    return out;
  }
  std::string s;
  s.reserve(text.size() * 2 + 3);
  if (add_space_prefix_) s += kSpace;
  for (char c : text) {
    if (c == ' ') s += kSpace; else s += c;
  }
  struct Sym { int prev, next; size_t off, len; };
  std::vector<Sym> syms;
  for (size_t off = 0; off < s.size();) {
    const size_t len = std::min(utf8_len(static_cast<unsigned char>(s[off])), s.size() - off);
    const int i = static_cast<int>(syms.size());
    syms.push_back({i - 1, i + 1, off, len});
    off += len;
  }
  syms.back().next = -1;

  struct Cand { float score; int left; size_t len; };
  auto worse = [](const Cand& a, const Cand& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> q(worse);
  auto try_add = [&](int l) {
    if (l < 0 || syms[l].next < 0) return;
    const int r = syms[l].next;
    const size_t len = syms[l].len + syms[r].len;
    auto it = index_.find(std::string(s.data() + syms[l].off, len));
    if (it == index_.end()) return;
    q.push({scores_[it->second], l, len});
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) try_add(i);
  while (!q.empty()) {
    const Cand c = q.top();
    q.pop();
    Sym& l = syms[c.left];
    if (l.len == 0 || l.next < 0) continue;
    Sym& r = syms[l.next];
    if (l.len + r.len != c.len) continue;  // stale: one side changed since the entry was queued
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    try_add(l.prev);
    try_add(c.left);
  }
  for (int i = 0; i >= 0; i = syms[i].next) {
    const Sym& y = syms[i];
    auto it = index_.find(std::string(s.data() + y.off, y.len));
    if (it != index_.end()) {
      out.push_back(it->second);
      continue;
    }
    for (size_t j = 0; j < y.len; ++j) {
      const int b = byte_ids_[static_cast<unsigned char>(s[y.off + j])];
      out.push_back(b >= 0 ? b : unk_);
    }
  }
  return out;
}

std::string Tokenizer::decode_piece(int token) const {
  if (token < 0 || token >= vocab_size()) return "";
  if (kind_ == Kind::kBpe) return decode_bpe_piece(token);
  const int type = types_[token];
  int b;
  if (type == kByte && parse_byte_piece(pieces_[token], &b)) return std::string(1, static_cast<char>(b));
  if (type == kControl || type == kUnknown || type == kUnused) return "";
  const std::string& p = pieces_[token];
  std::string out;
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, 3, kSpace) == 0) { out += ' '; i += 3; }
    else out += p[i++];
  }
  return out;
}

std::string Tokenizer::decode_piece_after(int prev_token, int token) const {
  std::string p = decode_piece(token);
  if (kind_ == Kind::kSpm && prev_token == bos_ && !p.empty() && p[0] == ' ') p.erase(0, 1);
  return p;
}

std::string Tokenizer::decode(const std::vector<int>& tokens) const {
  std::string out;
  int prev = -1;
  for (int t : tokens) {
    out += decode_piece_after(prev, t);
    prev = t;
  }
  return out;
}

}  // namespace tqkv
