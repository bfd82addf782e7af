// Model loading (GGUF llama / qwen2) and validation of hyper-parameters and tensor shapes.
#include <cmath>
#include <cstring>

#include "tqkv/model.h"

namespace tqkv {
namespace {

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

StatusOr<int> positive_int(const GgufFile& f, const std::string& key) {
  TQKV_ASSIGN_OR_RETURN(int64_t v, f.get_int(key));
  if (v < 1 || v > (1 << 24)) return corrupt("metadata '" + key + "' = " + std::to_string(v) + " is out of range");
  return static_cast<int>(v);
}

// Hyper-parameters of the GGUF's architecture (everything in ModelConfig but vocab_size and
// tied_output, which come from the tensors).
Status read_hparams(const GgufFile& f, ModelConfig& c) {
  TQKV_ASSIGN_OR_RETURN(std::string arch, f.get_string("general.architecture"));
  c.arch = arch;
  if (arch == "llama") {
    c.rope_style = RopeStyle::kAdjacent;
  } else if (arch == "qwen2") {
    c.rope_style = RopeStyle::kNeox;
    c.qkv_bias = true;
  } else if (arch == "qwen3") {
    c.rope_style = RopeStyle::kNeox;
    c.qk_norm = true;
  } else {
    return unsupported("architecture '" + arch + "' is not supported (supported: llama, qwen2, qwen3)");
  }
  const std::string a = arch + ".";
  TQKV_ASSIGN_OR_RETURN(c.dim, positive_int(f, a + "embedding_length"));
  TQKV_ASSIGN_OR_RETURN(c.hidden_dim, positive_int(f, a + "feed_forward_length"));
  TQKV_ASSIGN_OR_RETURN(c.n_layers, positive_int(f, a + "block_count"));
  TQKV_ASSIGN_OR_RETURN(c.n_heads, positive_int(f, a + "attention.head_count"));
  c.n_kv_heads = c.n_heads;
  if (f.find(a + "attention.head_count_kv")) {
    TQKV_ASSIGN_OR_RETURN(c.n_kv_heads, positive_int(f, a + "attention.head_count_kv"));
  }
  TQKV_ASSIGN_OR_RETURN(c.context_length, positive_int(f, a + "context_length"));
  if (c.n_heads % c.n_kv_heads != 0)
    return corrupt("head_count " + std::to_string(c.n_heads) + " is not a multiple of head_count_kv " +
                   std::to_string(c.n_kv_heads));
  c.head_dim = c.dim / c.n_heads;
  if (f.find(a + "attention.key_length")) {
    TQKV_ASSIGN_OR_RETURN(c.head_dim, positive_int(f, a + "attention.key_length"));
    TQKV_ASSIGN_OR_RETURN(int vl, f.get_int_or(a + "attention.value_length", c.head_dim));
    if (vl != c.head_dim) return unsupported("attention.value_length != key_length is not supported");
  } else if (c.dim % c.n_heads != 0) {
    return corrupt("embedding_length is not a multiple of head_count");
  }
  if (c.head_dim % 2 != 0) return unsupported("odd head_dim " + std::to_string(c.head_dim) + " is not supported by RoPE");
  TQKV_ASSIGN_OR_RETURN(double eps, f.get_float_or(a + "attention.layer_norm_rms_epsilon", 1e-5));
  TQKV_ASSIGN_OR_RETURN(double base, f.get_float_or(a + "rope.freq_base", 10000.0));
  TQKV_ASSIGN_OR_RETURN(int64_t rope_dim, f.get_int_or(a + "rope.dimension_count", c.head_dim));
  if (!(eps > 0 && eps < 1)) return corrupt("attention.layer_norm_rms_epsilon out of range");
  if (!(base > 1 && std::isfinite(base))) return corrupt("rope.freq_base out of range");
  if (rope_dim < 2 || rope_dim > c.head_dim || rope_dim % 2) return corrupt("rope.dimension_count out of range");
  c.rms_eps = static_cast<float>(eps);
  c.rope_freq_base = static_cast<float>(base);
  c.rope_dim = static_cast<int>(rope_dim);
  if (const GgufValue* st = f.find(a + "rope.scaling.type")) {
    if (st->type != GgufType::kString) return corrupt("rope.scaling.type must be a string");
    if (st->s == "linear") {
      TQKV_ASSIGN_OR_RETURN(double factor, f.get_float_or(a + "rope.scaling.factor", 1.0));
      if (!(factor >= 1 && std::isfinite(factor))) return corrupt("rope.scaling.factor out of range");
      c.rope_scale = static_cast<float>(factor);
    } else if (st->s != "none") {
      return unsupported("rope scaling '" + st->s + "' is not supported (supported: none, linear)");
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::unique_ptr<Model>> Model::load(const std::string& path) {
  TQKV_ASSIGN_OR_RETURN(auto file, GgufFile::open(path));
  auto m = from_gguf(std::move(file));
  if (!m.ok()) return Status(m.status().code(), "'" + path + "': " + m.status().message());
  return m;
}

StatusOr<std::unique_ptr<Model>> Model::from_gguf(std::unique_ptr<GgufFile> file) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = std::move(file);
  TQKV_RETURN_IF_ERROR(m->init());
  return m;
}

// The tensor `name` after checking its shape and type; nullptr when absent and not required.
static StatusOr<const GgufTensorInfo*> checked_tensor(const GgufFile& f, const std::string& name,
                                                      const std::vector<int64_t>& dims, bool required) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (!t) {
    if (!required) return static_cast<const GgufTensorInfo*>(nullptr);
    return not_found("missing tensor '" + name + "'");
  }
  // Trailing dims of 1 may be omitted by writers.
  std::vector<int64_t> have = t->dims;
  while (have.size() > dims.size() && have.back() == 1) have.pop_back();
  if (have != dims)
    return corrupt("tensor '" + name + "' has shape " + dims_str(t->dims) + ", expected " + dims_str(dims) +
                   " from the model's metadata");
  if (!ggml_type_dequantizable(t->type))
    return unsupported("tensor '" + name + "' has type " + ggml_type_name(static_cast<uint32_t>(t->type)) +
                       " (supported: f32, f16, bf16, q8_0, q4_0, q4_K, q6_K)");
  return t;
}

StatusOr<Matrix> Model::matrix(const std::string& name, std::vector<int64_t> dims, bool required) {
  TQKV_ASSIGN_OR_RETURN(const GgufTensorInfo* t, checked_tensor(*file_, name, dims, required));
  if (t && (t->type == GgmlType::kF16 || t->type == GgmlType::kBF16) &&
      reinterpret_cast<uintptr_t>(t->data) % 2 == 0)
    return Matrix{t->data, t->type};
  if (t && t->type == GgmlType::kQ8_0) return Matrix{t->data, t->type};  // byte-addressed blocks
  TQKV_ASSIGN_OR_RETURN(const float* f, tensor(name, dims, required));
  return Matrix{f, GgmlType::kF32};
}

StatusOr<const float*> Model::tensor(const std::string& name, std::vector<int64_t> dims, bool required) {
  TQKV_ASSIGN_OR_RETURN(const GgufTensorInfo* t, checked_tensor(*file_, name, dims, required));
  if (!t) return static_cast<const float*>(nullptr);
  if (t->type == GgmlType::kF32 && reinterpret_cast<uintptr_t>(t->data) % alignof(float) == 0)
    return reinterpret_cast<const float*>(t->data);
  std::vector<float> out(t->n_elements);
  const int64_t row = t->dims[0];
  int64_t be = 1, bb = 4;
  ggml_type_layout(static_cast<uint32_t>(t->type), &be, &bb);
  const int64_t row_bytes = row / be * bb;
  for (int64_t r = 0; r < t->n_elements / row; ++r)
    dequantize_row(t->type, t->data + r * row_bytes, out.data() + r * row, row);
  owned_.push_back(std::move(out));
  return static_cast<const float*>(owned_.back().data());
}

size_t Model::weight_bytes_per_token() const {
  const ModelConfig& c = config_;
  const size_t D = c.dim, H = c.hidden_dim, QD = size_t(c.n_heads) * c.head_dim, KD = size_t(c.n_kv_heads) * c.head_dim;
  auto b = [](const Matrix& m, size_t n) -> size_t {  // bytes of n elements
    return m.type == GgmlType::kF32 ? 4 * n : m.type == GgmlType::kQ8_0 ? n / 32 * 34 : 2 * n;
  };
  size_t total = 4 * (D + size_t(c.n_layers) * 2 * D) + b(weights_.output, size_t(c.vocab_size) * D);
  for (const LayerWeights& L : weights_.layers)
    total += b(L.wq, QD * D) + b(L.wk, KD * D) + b(L.wv, KD * D) + b(L.wo, D * QD) + b(L.w_gate, H * D) +
             b(L.w_up, H * D) + b(L.w_down, H * D);
  return total;
}

Status Model::init() {
  const GgufFile& f = *file_;
  ModelConfig& c = config_;
  TQKV_RETURN_IF_ERROR(read_hparams(f, c));
  TQKV_ASSIGN_OR_RETURN(tokenizer_, Tokenizer::from_gguf(f));
  const GgufTensorInfo* emb = f.find_tensor("token_embd.weight");
  if (!emb) return not_found("missing tensor 'token_embd.weight'");
  if (emb->dims.size() != 2) return corrupt("token_embd.weight must be 2-D");
  c.vocab_size = static_cast<int>(emb->dims[1]);
  if (c.vocab_size != tokenizer_->vocab_size())
    return corrupt("token_embd.weight has " + std::to_string(c.vocab_size) + " rows but the tokenizer has " +
                   std::to_string(tokenizer_->vocab_size()) + " tokens");
  return load_weights();
}

// Every tensor, validated for presence, type and shape.
Status Model::load_weights() {
  const GgufFile& f = *file_;
  ModelConfig& c = config_;
  const int64_t D = c.dim, V = c.vocab_size;
  ModelWeights& w = weights_;
  TQKV_ASSIGN_OR_RETURN(w.token_embd, tensor("token_embd.weight", {D, V}));
  TQKV_ASSIGN_OR_RETURN(w.output_norm, tensor("output_norm.weight", {D}));
  TQKV_ASSIGN_OR_RETURN(w.output, matrix("output.weight", {D, V}, false));
  c.tied_output = w.output.data == nullptr;
  TQKV_ASSIGN_OR_RETURN(w.rope_freqs, tensor("rope_freqs.weight", {c.rope_dim / 2}, false));
  if (c.tied_output) {
    TQKV_ASSIGN_OR_RETURN(w.output, matrix("token_embd.weight", {D, V}));
  }
  // Every layer has at least 9 tensors: bound block_count before allocating per-layer state.
  if (static_cast<size_t>(c.n_layers) * 9 > f.tensors().size())
    return corrupt("block_count " + std::to_string(c.n_layers) + " needs more tensors than the file's " +
                   std::to_string(f.tensors().size()) + " (missing layers?)");
  w.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) TQKV_RETURN_IF_ERROR(load_layer(l));
  return Status::Ok();
}

Status Model::load_layer(int l) {
  const ModelConfig& c = config_;
  const int64_t D = c.dim, H = c.hidden_dim, QD = int64_t{c.n_heads} * c.head_dim,
                KD = int64_t{c.n_kv_heads} * c.head_dim;
  LayerWeights& L = weights_.layers[l];
  const std::string p = "blk." + std::to_string(l) + ".";
  TQKV_ASSIGN_OR_RETURN(L.attn_norm, tensor(p + "attn_norm.weight", {D}));
  TQKV_ASSIGN_OR_RETURN(L.wq, matrix(p + "attn_q.weight", {D, QD}));
  TQKV_ASSIGN_OR_RETURN(L.wk, matrix(p + "attn_k.weight", {D, KD}));
  TQKV_ASSIGN_OR_RETURN(L.wv, matrix(p + "attn_v.weight", {D, KD}));
  TQKV_ASSIGN_OR_RETURN(L.wo, matrix(p + "attn_output.weight", {QD, D}));
  TQKV_ASSIGN_OR_RETURN(L.bq, tensor(p + "attn_q.bias", {QD}, c.qkv_bias));
  TQKV_ASSIGN_OR_RETURN(L.bk, tensor(p + "attn_k.bias", {KD}, c.qkv_bias));
  TQKV_ASSIGN_OR_RETURN(L.bv, tensor(p + "attn_v.bias", {KD}, c.qkv_bias));
  TQKV_ASSIGN_OR_RETURN(L.q_norm, tensor(p + "attn_q_norm.weight", {c.head_dim}, c.qk_norm));
  TQKV_ASSIGN_OR_RETURN(L.k_norm, tensor(p + "attn_k_norm.weight", {c.head_dim}, c.qk_norm));
  TQKV_ASSIGN_OR_RETURN(L.ffn_norm, tensor(p + "ffn_norm.weight", {D}));
  TQKV_ASSIGN_OR_RETURN(L.w_gate, matrix(p + "ffn_gate.weight", {D, H}));
  TQKV_ASSIGN_OR_RETURN(L.w_down, matrix(p + "ffn_down.weight", {H, D}));
  TQKV_ASSIGN_OR_RETURN(L.w_up, matrix(p + "ffn_up.weight", {D, H}));
  return Status::Ok();
}

}  // namespace tqkv
