// Tiny randomly initialized llama / qwen2 models written to GGUF by the tests, and a naive
// float64 reference forward pass over the same (dequantized) weights.
#pragma once

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "tqkv/gguf.h"

namespace tqkv::testing {

struct TinySpec {
  std::string arch = "llama";
  int dim = 32, hidden = 64, n_layers = 2, n_heads = 4, n_kv_heads = 4, vocab = 37, ctx = 64;
  float rope_base = 10000.0f;
  bool tied = false;
  bool rope_freqs = false;  // write a rope_freqs.weight tensor (Llama 3.1 style)
  GgmlType wtype = GgmlType::kF32;  // type of the 2-D weight matrices
  uint32_t seed = 1;
};

struct TinyLayer {
  std::vector<float> attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, ffn_norm, w1, w2, w3;  // W: (out, in)
};
struct TinyModel {
  TinySpec s;
  std::vector<float> emb, out_norm, out;  // emb, out: (vocab, dim)
  std::vector<float> rope_freqs;          // (head_dim / 2) or empty
  std::vector<TinyLayer> layers;
  int head_dim() const { return s.dim / s.n_heads; }
};

// Rounds a (rows, cols) matrix through the GGUF type so the reference sees what the file holds.
inline std::vector<uint8_t> encode_matrix(std::vector<float>& w, int64_t rows, int64_t cols, GgmlType t) {
  std::vector<uint8_t> bytes;
  if (t == GgmlType::kF32) {
    bytes.resize(w.size() * 4);
    std::memcpy(bytes.data(), w.data(), bytes.size());
    return bytes;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = w.data() + r * cols;
    std::vector<uint8_t> row;
    if (t == GgmlType::kQ8_0) row = quantize_q8_0_row(x, cols);
    else if (t == GgmlType::kQ4_0) row = quantize_q4_0_row(x, cols);
    else {
      row.resize(cols * 2);
      for (int64_t i = 0; i < cols; ++i) {
        uint16_t h;
        if (t == GgmlType::kF16) {
          h = float_to_half(x[i]);
        } else {  // bf16, round to nearest even
          uint32_t u = f32_bits(x[i]);
          h = static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
        }
        std::memcpy(row.data() + 2 * i, &h, 2);
      }
    }
    dequantize_row(t, row.data(), w.data() + r * cols, cols);
    bytes.insert(bytes.end(), row.begin(), row.end());
  }
  return bytes;
}

inline TinyModel make_tiny_model(const TinySpec& s, GgufWriter* w) {
  TinyModel m;
  m.s = s;
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto rnd = [&](size_t n, float scale) {
    std::vector<float> v(n);
    for (auto& x : v) x = scale * nd(rng);
    return v;
  };
  auto norm = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = 1.0f + 0.2f * nd(rng);
    return v;
  };
  const int D = s.dim, H = s.hidden, hd = D / s.n_heads, KD = s.n_kv_heads * hd, V = s.vocab;
  const bool qwen = s.arch == "qwen2";
  const bool qwen3 = s.arch == "qwen3";
  w->add_string("general.architecture", s.arch);
  const std::string a = s.arch + ".";
  w->add_u32(a + "context_length", s.ctx);
  w->add_u32(a + "embedding_length", D);
  w->add_u32(a + "feed_forward_length", H);
  w->add_u32(a + "block_count", s.n_layers);
  w->add_u32(a + "attention.head_count", s.n_heads);
  w->add_u32(a + "attention.head_count_kv", s.n_kv_heads);
  w->add_f32(a + "rope.freq_base", s.rope_base);
  w->add_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  std::vector<std::string> toks = {"<unk>", "<s>", "</s>"};
  while (static_cast<int>(toks.size()) < V) {
    std::string t = "t";  // (not "t" + std::to_string(): GCC 12 -Wrestrict false positive, bug 105651)
    t += std::to_string(toks.size());
    toks.push_back(t);
  }
  w->add_string("tokenizer.ggml.model", "llama");
  w->add_string_array("tokenizer.ggml.tokens", toks);

  auto add_matrix = [&](const std::string& name, std::vector<float>& m_, int64_t rows, int64_t cols) {
    w->add_tensor(name, s.wtype, {cols, rows}, encode_matrix(m_, rows, cols, s.wtype));
  };
  m.emb = rnd(size_t(V) * D, 1.0f);
  add_matrix("token_embd.weight", m.emb, V, D);
  m.layers.resize(s.n_layers);
  for (int l = 0; l < s.n_layers; ++l) {
    TinyLayer& L = m.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    L.attn_norm = norm(D);
    L.ffn_norm = norm(D);
    L.wq = rnd(size_t(D) * D, 1.0f / std::sqrt(float(D)));
    L.wk = rnd(size_t(KD) * D, 1.0f / std::sqrt(float(D)));
    L.wv = rnd(size_t(KD) * D, 1.0f / std::sqrt(float(D)));
    L.wo = rnd(size_t(D) * D, 1.0f / std::sqrt(float(D)));
    L.w1 = rnd(size_t(H) * D, 1.0f / std::sqrt(float(D)));
    L.w3 = rnd(size_t(H) * D, 1.0f / std::sqrt(float(D)));
    L.w2 = rnd(size_t(D) * H, 1.0f / std::sqrt(float(H)));
    w->add_f32_tensor(p + "attn_norm.weight", {D}, L.attn_norm.data());
    w->add_f32_tensor(p + "ffn_norm.weight", {D}, L.ffn_norm.data());
    add_matrix(p + "attn_q.weight", L.wq, D, D);
    add_matrix(p + "attn_k.weight", L.wk, KD, D);
    add_matrix(p + "attn_v.weight", L.wv, KD, D);
    add_matrix(p + "attn_output.weight", L.wo, D, D);
    add_matrix(p + "ffn_gate.weight", L.w1, H, D);
    add_matrix(p + "ffn_up.weight", L.w3, H, D);
    add_matrix(p + "ffn_down.weight", L.w2, D, H);
    if (qwen3) {
      L.q_norm = norm(hd);
      L.k_norm = norm(hd);
      w->add_f32_tensor(p + "attn_q_norm.weight", {hd}, L.q_norm.data());
      w->add_f32_tensor(p + "attn_k_norm.weight", {hd}, L.k_norm.data());
    }
    if (qwen) {
      L.bq = rnd(D, 0.5f);
      L.bk = rnd(KD, 0.5f);
      L.bv = rnd(KD, 0.5f);
      w->add_f32_tensor(p + "attn_q.bias", {D}, L.bq.data());
      w->add_f32_tensor(p + "attn_k.bias", {KD}, L.bk.data());
      w->add_f32_tensor(p + "attn_v.bias", {KD}, L.bv.data());
    }
  }
  if (s.rope_freqs) {
    m.rope_freqs.resize(hd / 2);
    for (int i = 0; i < hd / 2; ++i) m.rope_freqs[i] = 1.0f + 3.0f * i;
    w->add_f32_tensor("rope_freqs.weight", {hd / 2}, m.rope_freqs.data());
  }
  m.out_norm = norm(D);
  w->add_f32_tensor("output_norm.weight", {D}, m.out_norm.data());
  if (s.tied) {
    m.out = m.emb;
  } else {
    m.out = rnd(size_t(V) * D, 1.0f / std::sqrt(float(D)));
    add_matrix("output.weight", m.out, V, D);
  }
  return m;
}

// Naive float64 forward over tokens[0..n): returns logits (n, vocab).
inline std::vector<double> reference_forward(const TinyModel& m, const std::vector<int>& tokens) {
  const TinySpec& s = m.s;
  const int D = s.dim, H = s.hidden, hd = D / s.n_heads, KD = s.n_kv_heads * hd, V = s.vocab;
  const int n = static_cast<int>(tokens.size());
  const bool neox = s.arch == "qwen2" || s.arch == "qwen3";
  auto matvec = [](const std::vector<float>& W, const std::vector<double>& x, int out, int in) {
    std::vector<double> y(out, 0.0);
    for (int o = 0; o < out; ++o)
      for (int i = 0; i < in; ++i) y[o] += double(W[size_t(o) * in + i]) * x[i];
    return y;
  };
  auto rmsnorm = [&](const std::vector<double>& x, const std::vector<float>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / x.size() + 1e-5);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * w[i];
    return y;
  };
  auto rope = [&](std::vector<double>& v, int heads, int pos) {
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const double th = pos * std::pow(double(s.rope_base), -2.0 * i / hd) /
                          (m.rope_freqs.empty() ? 1.0 : double(m.rope_freqs[i]));
        const int a = h * hd + (neox ? i : 2 * i), b = h * hd + (neox ? i + hd / 2 : 2 * i + 1);
        const double x0 = v[a], x1 = v[b];
        v[a] = x0 * std::cos(th) - x1 * std::sin(th);
        v[b] = x0 * std::sin(th) + x1 * std::cos(th);
      }
  };
  std::vector<std::vector<std::vector<double>>> kc(s.n_layers), vc(s.n_layers);
  std::vector<double> logits(size_t(n) * V);
  for (int p = 0; p < n; ++p) {
    std::vector<double> x(D);
    for (int i = 0; i < D; ++i) x[i] = m.emb[size_t(tokens[p]) * D + i];
    for (int l = 0; l < s.n_layers; ++l) {
      const TinyLayer& L = m.layers[l];
      auto xb = rmsnorm(x, L.attn_norm);
      auto q = matvec(L.wq, xb, D, D), k = matvec(L.wk, xb, KD, D), v = matvec(L.wv, xb, KD, D);
      if (!L.bq.empty()) {
        for (int i = 0; i < D; ++i) q[i] += L.bq[i];
        for (int i = 0; i < KD; ++i) { k[i] += L.bk[i]; v[i] += L.bv[i]; }
      }
      auto head_norm = [&](std::vector<double>& v, int heads, const std::vector<float>& w) {
        for (int h = 0; h < heads; ++h) {
          std::vector<double> x(v.begin() + h * hd, v.begin() + (h + 1) * hd);
          x = rmsnorm(x, w);
          std::copy(x.begin(), x.end(), v.begin() + h * hd);
        }
      };
      if (!L.q_norm.empty()) {
        head_norm(q, s.n_heads, L.q_norm);
        head_norm(k, s.n_kv_heads, L.k_norm);
      }
      rope(q, s.n_heads, p);
      rope(k, s.n_kv_heads, p);
      kc[l].push_back(k);
      vc[l].push_back(v);
      std::vector<double> att(D, 0.0);
      for (int h = 0; h < s.n_heads; ++h) {
        const int kh = h / (s.n_heads / s.n_kv_heads);
        std::vector<double> sc(p + 1);
        double mx = -1e300;
        for (int t = 0; t <= p; ++t) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += q[h * hd + i] * kc[l][t][kh * hd + i];
          sc[t] = d / std::sqrt(double(hd));
          mx = std::max(mx, sc[t]);
        }
        double z = 0;
        for (auto& e : sc) { e = std::exp(e - mx); z += e; }
        for (int t = 0; t <= p; ++t)
          for (int i = 0; i < hd; ++i) att[h * hd + i] += sc[t] / z * vc[l][t][kh * hd + i];
      }
      auto o = matvec(L.wo, att, D, D);
      for (int i = 0; i < D; ++i) x[i] += o[i];
      xb = rmsnorm(x, L.ffn_norm);
      auto g = matvec(L.w1, xb, H, D), u = matvec(L.w3, xb, H, D);
      for (int i = 0; i < H; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      auto dn = matvec(L.w2, g, D, H);
      for (int i = 0; i < D; ++i) x[i] += dn[i];
    }
    auto xf = rmsnorm(x, m.out_norm);
    auto lg = matvec(m.out, xf, V, D);
    for (int i = 0; i < V; ++i) logits[size_t(p) * V + i] = lg[i];
  }
  return logits;
}

}  // namespace tqkv::testing
