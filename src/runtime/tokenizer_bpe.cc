// Byte-level BPE ("gpt2" tokenizer model): pre-tokenizers of GPT-2, Llama 3 and Qwen2, GPT-2's
// byte alphabet, rank-ordered merges.
#include <locale.h>
#include <wctype.h>

#include <climits>

#include "tqkv/tokenizer.h"

namespace tqkv {
namespace {

std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Decodes UTF-8 into code points with their byte offsets; an invalid byte becomes its own
// "code point" 0xDC00 + byte (a lone surrogate, never a letter/digit/space).
struct Cps {
  std::vector<uint32_t> cp;
  std::vector<size_t> off;  // (n + 1) byte offsets
};
Cps utf8_decode(std::string_view s) {
  Cps r;
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    uint32_t cp = 0;
    bool ok = len > 0 && i + len <= s.size();
    if (ok) {
      cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
      for (size_t k = 1; k < len; ++k) {
        const auto d = static_cast<unsigned char>(s[i + k]);
        if ((d & 0xC0) != 0x80) { ok = false; break; }
        cp = (cp << 6) | (d & 0x3F);
      }
    }
    if (!ok) { cp = 0xDC00 + c; len = 1; }
    r.cp.push_back(cp);
    r.off.push_back(i);
    i += len;
  }
  r.off.push_back(s.size());
  return r;
}

locale_t utf8_locale() {
  static locale_t loc = [] {
    locale_t l = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
    if (!l) l = newlocale(LC_CTYPE_MASK, "en_US.UTF-8", static_cast<locale_t>(0));
    return l;
  }();
  return loc;
}

// \p{N} beyond ASCII: decimal digit blocks (Nd) and common No/Nl characters. glibc's wide-char
// classes put many of these into "alpha", so they are checked first.
bool in_number_table(uint32_t c) {
  static const uint32_t kRanges[][2] = {
      {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9}, {0x7C0, 0x7C9},
      {0x966, 0x96F}, {0x9E6, 0x9EF}, {0xA66, 0xA6F}, {0xAE6, 0xAEF}, {0xB66, 0xB6F}, {0xBE6, 0xBF2},
      {0xC66, 0xC6F}, {0xCE6, 0xCEF}, {0xD66, 0xD78}, {0xDE6, 0xDEF}, {0xE50, 0xE59}, {0xED0, 0xED9},
      {0xF20, 0xF33}, {0x1040, 0x1049}, {0x1090, 0x1099}, {0x1369, 0x137C}, {0x16EE, 0x16F0},
      {0x17E0, 0x17E9}, {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19DA}, {0x2070, 0x2070},
      {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189}, {0x2460, 0x249B},
      {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x3007, 0x3007}, {0x3021, 0x3029}, {0x3038, 0x303A},
      {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F}, {0x3251, 0x325F}, {0x3280, 0x3289},
      {0x32B1, 0x32BF}, {0xA620, 0xA629}, {0xA8D0, 0xA8D9}, {0xA900, 0xA909}, {0xAA50, 0xAA59},
      {0xABF0, 0xABF9}, {0xFF10, 0xFF19}, {0x1D7CE, 0x1D7FF}};
  for (const auto& r : kRanges)
    if (c >= r[0] && c <= r[1]) return true;
  return false;
}

bool is_letter(uint32_t c) {
  if (c < 0x80) return (c | 32) >= 'a' && (c | 32) <= 'z';
  if (c >= 0xD800 && c < 0xE000) return false;
  if (in_number_table(c)) return false;
  locale_t l = utf8_locale();
  return l ? iswalpha_l(static_cast<wint_t>(c), l) != 0 : true;
}
bool is_number(uint32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  if (c >= 0xD800 && c < 0xE000) return false;
  if (in_number_table(c)) return true;
  locale_t l = utf8_locale();
  return l ? (iswalnum_l(static_cast<wint_t>(c), l) && !iswalpha_l(static_cast<wint_t>(c), l)) : false;
}
bool is_space(uint32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 9 && c <= 13);
  if (c == 0x85 || c == 0xA0) return true;
  if (c >= 0xD800 && c < 0xE000) return false;
  locale_t l = utf8_locale();
  return l ? iswspace_l(static_cast<wint_t>(c), l) != 0 : false;
}
bool is_nl(uint32_t c) { return c == '\r' || c == '\n'; }
uint32_t lower(uint32_t c) { return c < 0x80 ? (c | 32) : c; }

// Length of a contraction ('s 't 're 've 'm 'll 'd) at i, 0 if none.
size_t contraction(const std::vector<uint32_t>& c, size_t i, bool any_case) {
  if (c[i] != '\'' || i + 1 >= c.size()) return 0;
  auto at = [&](size_t k) { return k < c.size() ? (any_case ? lower(c[k]) : c[k]) : 0u; };
  const uint32_t a = at(i + 1), b = at(i + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  return 0;
}

// Whitespace alternatives shared by all patterns: \s+(?!\S) then \s+.
size_t whitespace_run(const std::vector<uint32_t>& c, size_t i) {
  size_t j = i;
  while (j < c.size() && is_space(c[j])) ++j;
  if (j == i) return 0;
  if (j < c.size() && j - i > 1) return j - i - 1;  // leave one space for the next word
  return j - i;
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::from_bpe(std::vector<std::string> pieces,
                                                         std::vector<int32_t> types,
                                                         const std::vector<std::string>& merges,
                                                         const std::string& pre, int bos, int eos,
                                                         bool add_bos) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->pieces_ = std::move(pieces);
  t->types_ = std::move(types);
  t->bos_ = bos;
  t->eos_ = eos;
  t->unk_ = 0;
  t->add_bos_ = add_bos;
  TQKV_RETURN_IF_ERROR(t->init());
  GgufWriter w;  // reuse init_bpe's parsing through a tiny GGUF
  w.add_string_array("tokenizer.ggml.merges", merges);
  if (!pre.empty()) w.add_string("tokenizer.ggml.pre", pre);
  TQKV_ASSIGN_OR_RETURN(auto f, GgufFile::parse(w.to_bytes()));
  TQKV_RETURN_IF_ERROR(t->init_bpe(*f));
  return t;
}

Status Tokenizer::init_bpe(const GgufFile& f) {
  kind_ = Kind::kBpe;
  std::string pre = "default";
  if (f.find("tokenizer.ggml.pre")) {
    TQKV_ASSIGN_OR_RETURN(pre, f.get_string("tokenizer.ggml.pre"));
  }
  if (pre == "llama-bpe" || pre == "llama3") pre_ = Pre::kLlama3;
  else if (pre == "qwen2") pre_ = Pre::kQwen2;
  else if (pre == "default" || pre == "gpt2" || pre == "gpt-2") pre_ = Pre::kGpt2;
  else
    return unsupported("pre-tokenizer '" + pre + "' is not supported (supported: llama-bpe, qwen2, gpt2/default)");
  const GgufValue* m = f.find("tokenizer.ggml.merges");
  if (!m || m->type != GgufType::kArray || m->array_type != GgufType::kString)
    return corrupt("tokenizer.ggml.merges is missing or not a string array");
  merge_rank_.reserve(m->strings.size() * 2);
  for (size_t i = 0; i < m->strings.size(); ++i) {
    const std::string& s = m->strings[i];
    const size_t sp = s.find(' ', 1);
    if (sp == std::string::npos) return corrupt("tokenizer merge " + std::to_string(i) + " ('" + s + "') has no space");
    merge_rank_.emplace(s, static_cast<int>(i));
  }
  // GPT-2's byte alphabet: printable Latin-1 bytes map to themselves, the rest to U+0100 + n.
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const uint32_t cp = keep ? b : 256 + n++;
    byte_to_piece_[b] = utf8_encode(cp);
    cp_to_byte_[cp] = static_cast<uint8_t>(b);
  }
  // Byte-level vocabularies also name control tokens as text: only normal/user pieces match.
  return Status::Ok();
}

std::vector<std::string> Tokenizer::pretokenize(std::string_view text) const {
  const Cps d = utf8_decode(text);
  const std::vector<uint32_t>& c = d.cp;
  const size_t n = c.size();
  std::vector<std::string> words;
  size_t i = 0;
  while (i < n) {
    size_t len = 0;
    if (pre_ == Pre::kGpt2) {
      // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
      len = contraction(c, i, false);
      const size_t s = (c[i] == ' ' && i + 1 < n) ? 1 : 0;
      if (!len && i + s < n && is_letter(c[i + s])) {
        size_t j = i + s;
        while (j < n && is_letter(c[j])) ++j;
        len = j - i;
      }
      if (!len && i + s < n && is_number(c[i + s])) {
        size_t j = i + s;
        while (j < n && is_number(c[j])) ++j;
        len = j - i;
      }
      auto other = [](uint32_t x) { return !is_space(x) && !is_letter(x) && !is_number(x); };
      if (!len && i + s < n && other(c[i + s])) {
        size_t j = i + s;
        while (j < n && other(c[j])) ++j;
        len = j - i;
      }
      if (!len) len = whitespace_run(c, i);
    } else {
      // (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
      // | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+      (qwen2: \p{N} instead of \p{N}{1,3})
      len = contraction(c, i, true);
      if (!len) {
        const bool pre_ok = !is_nl(c[i]) && !is_letter(c[i]) && !is_number(c[i]);
        size_t j = i + ((pre_ok && i + 1 < n && is_letter(c[i + 1])) ? 1 : 0);
        const size_t start = j;
        while (j < n && is_letter(c[j])) ++j;
        if (j > start) len = j - i;
      }
      if (!len && is_number(c[i])) {
        const size_t max_digits = pre_ == Pre::kLlama3 ? 3 : 1;
        size_t j = i;
        while (j < n && j - i < max_digits && is_number(c[j])) ++j;
        len = j - i;
      }
      auto other = [](uint32_t x) { return !is_space(x) && !is_letter(x) && !is_number(x); };
      if (!len) {
        const size_t s = (c[i] == ' ' && i + 1 < n && other(c[i + 1])) ? 1 : 0;
        if (other(c[i + s])) {
          size_t j = i + s;
          while (j < n && other(c[j])) ++j;
          while (j < n && is_nl(c[j])) ++j;
          len = j - i;
        }
      }
      if (!len && is_space(c[i])) {  // \s*[\r\n]+ : up to and including the last newline of the run
        size_t j = i, last_nl = SIZE_MAX;
        while (j < n && is_space(c[j])) {
          if (is_nl(c[j])) last_nl = j;
          ++j;
        }
        if (last_nl != SIZE_MAX) len = last_nl + 1 - i;
      }
      if (!len) len = whitespace_run(c, i);
    }
    if (!len) len = 1;  // cannot happen: every code point matches some alternative
    words.emplace_back(text.substr(d.off[i], d.off[i + len] - d.off[i]));
    i += len;
  }
  return words;
}

void Tokenizer::encode_bpe(std::string_view text, std::vector<int>* out) const {
  for (const std::string& word : pretokenize(text)) {
    std::string mapped;
    std::vector<std::string> sym;
    for (unsigned char b : word) {
      mapped += byte_to_piece_[b];
      sym.push_back(byte_to_piece_[b]);
    }
    if (pre_ == Pre::kLlama3) {  // ignore_merges: a word that is a piece is emitted whole
      auto it = index_.find(mapped);
      if (it != index_.end()) {
        out->push_back(it->second);
        continue;
      }
    }
    while (sym.size() > 1) {
      int best = INT_MAX;
      size_t at = 0;
      for (size_t k = 0; k + 1 < sym.size(); ++k) {
        auto it = merge_rank_.find(sym[k] + " " + sym[k + 1]);
        if (it != merge_rank_.end() && it->second < best) { best = it->second; at = k; }
      }
      if (best == INT_MAX) break;
      sym[at] += sym[at + 1];
      sym.erase(sym.begin() + at + 1);
    }
    for (const std::string& s : sym) {
      auto it = index_.find(s);
      if (it != index_.end()) {
        out->push_back(it->second);
        continue;
      }
      // A symbol missing from the vocabulary (a malformed vocabulary): its bytes one by one.
      for (uint32_t cp : utf8_decode(s).cp) {
        auto b = cp_to_byte_.find(cp);
        auto t = b != cp_to_byte_.end() ? index_.find(byte_to_piece_[b->second]) : index_.end();
        out->push_back(t != index_.end() ? t->second : unk_);
      }
    }
  }
}

std::string Tokenizer::decode_bpe_piece(int token) const {
  const int type = types_[token];
  if (type == kControl || type == kUnknown || type == kUnused) return "";
  if (type == kUserDefined) return pieces_[token];
  std::string out;
  for (uint32_t cp : utf8_decode(pieces_[token]).cp) {
    auto it = cp_to_byte_.find(cp);
    if (it != cp_to_byte_.end()) out += static_cast<char>(it->second);
    else out += utf8_encode(cp);
  }
  return out;
}

}  // namespace tqkv
