// llama2.c legacy checkpoint + tokenizer.bin -> GGUF "llama" (F32 tensors).
// llama2.c applies RoPE to adjacent pairs, the GGUF llama convention, so wq/wk are copied as is.
#include <cstdint>
#include <cstring>

#include "core/file_io.h"
#include "tqkv/gguf.h"
#include "tqkv/model.h"

namespace tqkv {
namespace {

// Checkpoints up to 64 GiB (fp32 llama2.c models are far smaller); tokenizer.bin up to 1 GiB.
constexpr uint64_t kMaxCheckpointBytes = uint64_t{64} << 30;
constexpr uint64_t kMaxTokenizerBytes = uint64_t{1} << 30;

}  // namespace

namespace {

// The 7 int32 header fields of a llama2.c checkpoint, validated, and the float count they imply.
struct L2cHeader {
  int dim = 0, hidden = 0, n_layers = 0, n_heads = 0, n_kv = 0, vocab = 0, seq_len = 0;
  bool shared = false;  // classifier shares the embedding
  int64_t hd = 0, kvd = 0, n_floats = 0;
};

StatusOr<L2cHeader> parse_header(const std::vector<uint8_t>& mb, const std::string& model_bin) {
  if (mb.size() < 28) return corrupt("'" + model_bin + "' is too small for a llama2.c header");
  int32_t hdr[7];
  std::memcpy(hdr, mb.data(), 28);
  L2cHeader h;
  h.dim = hdr[0], h.hidden = hdr[1], h.n_layers = hdr[2], h.n_heads = hdr[3], h.n_kv = hdr[4];
  h.shared = hdr[5] > 0;
  // In 64 bits: -INT_MIN overflows int (UB); the bound check below then refuses it.
  const int64_t vocab64 = h.shared ? int64_t{hdr[5]} : -int64_t{hdr[5]};
  h.vocab = vocab64 > (1 << 20) ? -1 : static_cast<int>(vocab64);
  h.seq_len = hdr[6];
  auto bad = [](int v, int hi) { return v < 1 || v > hi; };
  if (bad(h.dim, 1 << 16) || bad(h.hidden, 1 << 18) || bad(h.n_layers, 1024) || bad(h.n_heads, 1024) ||
      bad(h.n_kv, 1024) || bad(h.vocab, 1 << 20) || bad(h.seq_len, 1 << 22) || h.dim % h.n_heads ||
      h.n_heads % h.n_kv || (h.dim / h.n_heads) % 2)  // RoPE rotates pairs: head_dim must be even
    return corrupt("'" + model_bin + "' does not have a plausible llama2.c header (dim " + std::to_string(h.dim) +
                   ", layers " + std::to_string(h.n_layers) + ", heads " + std::to_string(h.n_heads) + "/" +
                   std::to_string(h.n_kv) + ", vocab " + std::to_string(hdr[5]) + ")");
  h.hd = h.dim / h.n_heads;
  h.kvd = h.hd * h.n_kv;
  const int64_t L = h.n_layers, D = h.dim, H = h.hidden, V = h.vocab;
  h.n_floats = V * D + L * D + L * D * D + 2 * L * h.kvd * D + L * D * D + L * D + 3 * L * H * D + D +
               int64_t{h.seq_len} * h.hd + (h.shared ? 0 : V * D);
  if (static_cast<int64_t>(mb.size()) < 28 + h.n_floats * 4)
    return corrupt("'" + model_bin + "' is truncated: needs " + std::to_string(28 + h.n_floats * 4) + " bytes, has " +
                   std::to_string(mb.size()));
  return h;
}

void add_hparams(GgufWriter& w, const L2cHeader& h) {
  w.add_string("general.architecture", "llama");
  w.add_string("general.name", "llama2.c");
  w.add_u32("llama.context_length", h.seq_len);
  w.add_u32("llama.embedding_length", h.dim);
  w.add_u32("llama.feed_forward_length", h.hidden);
  w.add_u32("llama.block_count", h.n_layers);
  w.add_u32("llama.attention.head_count", h.n_heads);
  w.add_u32("llama.attention.head_count_kv", h.n_kv);
  w.add_u32("llama.rope.dimension_count", static_cast<uint32_t>(h.hd));
  w.add_f32("llama.rope.freq_base", 10000.0f);
  w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
}

// tokenizer.bin: int32 max_len, then per token f32 score, i32 len, bytes. Validated with the
// loader's own rules before anything is written: a crafted tokenizer.bin must be refused here, not
// produce a file the loader then rejects (or worse).
Status add_tokenizer(GgufWriter& w, const std::vector<uint8_t>& tb, int vocab, const std::string& tokenizer_bin) {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;
  size_t off = 4;
  for (int i = 0; i < vocab; ++i) {
    float score;
    int32_t len;
    if (off + 8 > tb.size()) return corrupt("'" + tokenizer_bin + "' is truncated at token " + std::to_string(i));
    std::memcpy(&score, tb.data() + off, 4);
    std::memcpy(&len, tb.data() + off + 4, 4);
    off += 8;
    if (len < 0 || static_cast<size_t>(len) > tb.size() - off)
      return corrupt("'" + tokenizer_bin + "': token " + std::to_string(i) + " has a bad length");
    std::string s(reinterpret_cast<const char*>(tb.data() + off), len);
    off += len;
    int32_t type = Tokenizer::kNormal;
    if (i == 0) type = Tokenizer::kUnknown;
    else if (i == 1 || i == 2) type = Tokenizer::kControl;
    else if (s.size() == 6 && s.rfind("<0x", 0) == 0 && s[5] == '>') type = Tokenizer::kByte;
    if (type == Tokenizer::kNormal) {  // llama2.c's export wrote U+2581 as ' ': restore it
      std::string t;
      for (char ch : s) t += ch == ' ' ? std::string("\xE2\x96\x81") : std::string(1, ch);
      s = t;
    }
    pieces.push_back(std::move(s));
    scores.push_back(score);
    types.push_back(type);
  }
  {
    auto t = Tokenizer::from_vocab(pieces, scores, types, 1, 2, true);
    if (!t.ok()) return Status(t.status().code(), "'" + tokenizer_bin + "': " + t.status().message());
  }
  w.add_string("tokenizer.ggml.model", "llama");
  w.add_string_array("tokenizer.ggml.tokens", pieces);
  w.add_f32_array("tokenizer.ggml.scores", scores);
  w.add_i32_array("tokenizer.ggml.token_type", types);
  w.add_u32("tokenizer.ggml.bos_token_id", 1);
  w.add_u32("tokenizer.ggml.eos_token_id", 2);
  w.add_u32("tokenizer.ggml.unknown_token_id", 0);
  w.add_bool("tokenizer.ggml.add_bos_token", true);
  w.add_bool("tokenizer.ggml.add_space_prefix", true);
  return Status::Ok();
}

// The checkpoint's float arrays (in llama2.c's order) as GGUF tensors. fl: h.n_floats floats.
void add_weights(GgufWriter& w, const L2cHeader& h, const float* fl) {
  const int64_t L = h.n_layers, D = h.dim, H = h.hidden, V = h.vocab, kvd = h.kvd;
  const float* cur = fl;
  auto take = [&](int64_t n) { const float* r = cur; cur += n; return r; };
  const float* emb = take(V * D);
  w.add_f32_tensor("token_embd.weight", {D, V}, emb);
  const float* rms_att = take(L * D);
  const float* wq = take(L * D * D);
  const float* wk = take(L * kvd * D);
  const float* wv = take(L * kvd * D);
  const float* wo = take(L * D * D);
  const float* rms_ffn = take(L * D);
  const float* w1 = take(L * H * D);
  const float* w2 = take(L * D * H);
  const float* w3 = take(L * H * D);
  const float* rms_final = take(D);
  take(int64_t{h.seq_len} * h.hd);  // legacy RoPE tables (cos, sin), unused
  const float* wcls = h.shared ? nullptr : take(V * D);
  for (int64_t l = 0; l < L; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    w.add_f32_tensor(b + "attn_norm.weight", {D}, rms_att + l * D);
    w.add_f32_tensor(b + "attn_q.weight", {D, D}, wq + l * D * D);
    w.add_f32_tensor(b + "attn_k.weight", {D, kvd}, wk + l * kvd * D);
    w.add_f32_tensor(b + "attn_v.weight", {D, kvd}, wv + l * kvd * D);
    w.add_f32_tensor(b + "attn_output.weight", {D, D}, wo + l * D * D);
    w.add_f32_tensor(b + "ffn_norm.weight", {D}, rms_ffn + l * D);
    w.add_f32_tensor(b + "ffn_gate.weight", {D, H}, w1 + l * H * D);
    w.add_f32_tensor(b + "ffn_down.weight", {H, D}, w2 + l * D * H);
    w.add_f32_tensor(b + "ffn_up.weight", {D, H}, w3 + l * H * D);
  }
  w.add_f32_tensor("output_norm.weight", {D}, rms_final);
  if (wcls) w.add_f32_tensor("output.weight", {D, V}, wcls);
}

}  // namespace

Status convert_llama2c(const std::string& model_bin, const std::string& tokenizer_bin,
                       const std::string& out_gguf) {
  TQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> mb, read_file(model_bin, kMaxCheckpointBytes, "llama2.c checkpoint"));
  TQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> tb, read_file(tokenizer_bin, kMaxTokenizerBytes, "llama2.c tokenizer"));
  TQKV_ASSIGN_OR_RETURN(const L2cHeader h, parse_header(mb, model_bin));
  const float* p = reinterpret_cast<const float*>(mb.data() + 28);  // vector data is 16-byte aligned
  const std::vector<float> fl(p, p + h.n_floats);  // aligned copy
  GgufWriter w;
  add_hparams(w, h);
  TQKV_RETURN_IF_ERROR(add_tokenizer(w, tb, h.vocab, tokenizer_bin));
  add_weights(w, h, fl.data());
  return w.write(out_gguf);
}

}  // namespace tqkv
