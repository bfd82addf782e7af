// Perplexity / KL-divergence driver (text input: text_io.cc; threads: threads.cc).
#include "tqkv/perplexity.h"

#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <numeric>

#include "core/file_io.h"

namespace tqkv {
namespace {

constexpr char kKldMagic[8] = {'T', 'Q', 'K', 'V', 'K', 'L', 'D', '1'};
constexpr uint32_t kKldVersion = 2;  // 2: model_fingerprint in the former reserved field

struct KldHeader {
  char magic[8];
  uint32_t version, vocab, top_k, ctx, n_chunks, model_fingerprint;
  uint64_t n_positions, tokens_hash;
};
static_assert(sizeof(KldHeader) == 48, "KLD header is 48 bytes");

uint64_t fnv1a(const int* t, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    uint32_t v = static_cast<uint32_t>(t[i]);
    for (int b = 0; b < 4; ++b) { h ^= (v >> (8 * b)) & 0xff; h *= 0x100000001b3ull; }
  }
  return h;
}

// 32-bit fingerprint of the model a KLD base was made with (docs/format.md): FNV-1a 64 over the
// architecture, the shape fields, and the float bits of the final norm and the first layer's
// attention norm (trained weights, so two models of one shape differ), folded to 32 bits.
uint32_t model_fingerprint(const Model& model) {
  const ModelConfig& c = model.config();
  uint64_t h = 0xcbf29ce484222325ull;
  auto bytes = [&](const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) { h ^= static_cast<const uint8_t*>(p)[i]; h *= 0x100000001b3ull; }
  };
  bytes(c.arch.data(), c.arch.size());
  const int32_t f[] = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size};
  bytes(f, sizeof f);
  const ModelWeights& w = model.weights();
  if (w.output_norm) bytes(w.output_norm, sizeof(float) * size_t(c.dim));
  if (!w.layers.empty() && w.layers[0].attn_norm) bytes(w.layers[0].attn_norm, sizeof(float) * size_t(c.dim));
  return static_cast<uint32_t>(h ^ (h >> 32));
}

// log-softmax of x (n) into out (double).
void log_softmax(const float* x, int n, std::vector<double>& out) {
  out.resize(n);
  double mx = x[0];
  for (int i = 1; i < n; ++i) mx = std::max<double>(mx, x[i]);
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(x[i] - mx);
  const double lse = mx + std::log(s);
  for (int i = 0; i < n; ++i) out[i] = x[i] - lse;
}

void progress_bar(int done, int total, double ppl, double secs) {
  const int width = 30;
  const int fill = total ? done * width / total : width;
  std::fprintf(stderr, "\r[%.*s%*s] %d/%d chunks  ppl %.4f  %.1fs", fill,
               "==============================", width - fill, "", done, total, ppl, secs);
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

// Shape of a run: which tokens are scored, and the key of the KLD base file.
struct RunShape {
  int n_chunks = 0, first = 0, per_chunk = 0, V = 0, K = 0;
  uint64_t hash = 0;
  uint32_t fingerprint = 0;
};

Status check_options(const ModelConfig& c, const PerplexityOptions& o) {
  // ctx 2 scores no position (positions ctx/2 .. ctx-2): PPL would be 0/0.
  if (o.ctx < 3) return invalid_argument("context size must be >= 3, got " + std::to_string(o.ctx));
  if (o.max_chunks == 0 || o.max_chunks < -1) return invalid_argument("--chunks must be >= 1");
  if (o.ctx > c.context_length)
    return invalid_argument("context size " + std::to_string(o.ctx) + " exceeds the model's context length " +
                            std::to_string(c.context_length));
  if (!o.kld_base_out.empty() && !o.kld_in.empty())
    return invalid_argument("--kl-divergence-base and --kl-divergence are exclusive");
  return Status::Ok();
}

StatusOr<RunShape> run_shape(const Model& model, const std::vector<int>& tokens, const PerplexityOptions& o) {
  RunShape r;
  r.n_chunks = static_cast<int>(tokens.size() / o.ctx);
  if (o.max_chunks >= 0) r.n_chunks = std::min(r.n_chunks, o.max_chunks);
  if (r.n_chunks < 1)
    return invalid_argument("the text has " + std::to_string(tokens.size()) + " tokens, fewer than one context of " +
                            std::to_string(o.ctx));
  r.V = model.config().vocab_size;
  r.first = o.ctx / 2;
  r.per_chunk = o.ctx - 1 - r.first;
  r.hash = fnv1a(tokens.data(), size_t(r.n_chunks) * o.ctx);
  r.K = (o.kld_top_k <= 0 || o.kld_top_k > r.V) ? r.V : o.kld_top_k;
  r.fingerprint = model_fingerprint(model);
  return r;
}

// Writes the KLD base file (docs/format.md): header, then one record per scored position.
class KldWriter {
 public:
  Status open(const std::string& path, const RunShape& r, int ctx) {
    K_ = r.K;
    order_.resize(r.V);
    rec_.resize(8 + size_t(K_) * 8);
    TQKV_RETURN_IF_ERROR(out_.open(path));
    KldHeader h{};
    std::memcpy(h.magic, kKldMagic, 8);
    h.version = kKldVersion; h.vocab = r.V; h.top_k = K_; h.ctx = ctx; h.n_chunks = r.n_chunks;
    h.model_fingerprint = r.fingerprint;
    h.n_positions = uint64_t(r.n_chunks) * r.per_chunk;
    h.tokens_hash = r.hash;
    return out_.write(&h, sizeof h);
  }
  // The next token's log-prob and the top-K log-probs of one position.
  Status write(const std::vector<double>& lp, int next) {
    std::iota(order_.begin(), order_.end(), 0);
    std::partial_sort(order_.begin(), order_.begin() + K_, order_.end(),
                      [&](int a, int b) { return lp[a] > lp[b] || (lp[a] == lp[b] && a < b); });
    int32_t nx = next;
    float lnx = static_cast<float>(lp[next]);
    std::memcpy(rec_.data(), &nx, 4);
    std::memcpy(rec_.data() + 4, &lnx, 4);
    for (int i = 0; i < K_; ++i) {
      int32_t id = order_[i];
      float v = static_cast<float>(lp[order_[i]]);
      std::memcpy(rec_.data() + 8 + 4 * size_t(i), &id, 4);
      std::memcpy(rec_.data() + 8 + 4 * size_t(K_) + 4 * size_t(i), &v, 4);
    }
    return out_.write(rec_.data(), rec_.size());
  }
  Status commit() { return out_.commit(); }

 private:
  AtomicFile out_;
  int K_ = 0;
  std::vector<int> order_;
  std::vector<uint8_t> rec_;
};

// Reads a KLD base file and compares each scored position against it.
class KldReader {
 public:
  Status open(const std::string& path, const RunShape& r, int ctx) {
    path_ = path;
    V_ = r.V;
    // The header bounds the size: at most n_chunks (< 2^32) * ctx/2 records of 8 + 8 * vocab bytes,
    // checked against the file's real size before the records are read.
    TQKV_ASSIGN_OR_RETURN(data_, read_file_prefix(path, sizeof(KldHeader), "KLD base file"));
    if (data_.size() < sizeof(KldHeader)) return corrupt("'" + path + "' is not a KLD base file (too short)");
    std::memcpy(&h_, data_.data(), sizeof h_);
    if (std::memcmp(h_.magic, kKldMagic, 8) != 0) return corrupt("'" + path + "' is not a KLD base file (bad magic)");
    if (h_.version != kKldVersion)
      return corrupt("'" + path + "': unsupported KLD file version " + std::to_string(h_.version) + " (expected " +
                     std::to_string(kKldVersion) + "; regenerate it with --kl-divergence-base)");
    if (h_.vocab != uint32_t(r.V) || h_.ctx != uint32_t(ctx) || h_.tokens_hash != r.hash ||
        h_.n_chunks < uint32_t(r.n_chunks) || h_.model_fingerprint != r.fingerprint)
      return invalid_argument("'" + path + "' was made from another model, text, context size or chunk count "
                              "(base: vocab " + std::to_string(h_.vocab) + ", ctx " + std::to_string(h_.ctx) +
                              ", chunks " + std::to_string(h_.n_chunks) +
                              (h_.model_fingerprint != r.fingerprint ? ", another model" : "") + ")");
    if (h_.top_k < 1 || h_.top_k > h_.vocab) return corrupt("'" + path + "': bad top_k");
    rec_bytes_ = 8 + size_t(h_.top_k) * 8;
    if (h_.n_positions != uint64_t(h_.n_chunks) * r.per_chunk)
      return corrupt("'" + path + "' has an inconsistent header (n_positions)");
    // n_chunks < 2^32, per_chunk < 2^31, rec_bytes <= 8 + 8 * 2^32: the product can overflow 64 bits.
    if (h_.n_positions > (UINT64_MAX - sizeof(KldHeader)) / rec_bytes_)
      return corrupt("'" + path + "' has the wrong size (truncated?)");
    const uint64_t want = sizeof(KldHeader) + h_.n_positions * rec_bytes_;
    TQKV_ASSIGN_OR_RETURN(data_, read_file_prefix(path, want + 1, "KLD base file"));  // +1: detect a longer file
    if (data_.size() != want) return corrupt("'" + path + "' has the wrong size (truncated?)");
    return Status::Ok();
  }
  bool active() const { return !data_.empty(); }

  // Position pos_index: KLD(base || new), p_new(next) - p_base(next), top-1 agreement.
  Status compare(int64_t pos_index, const std::vector<double>& lp, const float* logits, int next) {
    const uint8_t* r = data_.data() + sizeof(KldHeader) + size_t(pos_index) * rec_bytes_;
    const int kb = static_cast<int>(h_.top_k);
    float lbn;
    std::memcpy(&lbn, r + 4, 4);
    double kld = 0, pb_sum = 0, pn_sum = 0;
    for (int i = 0; i < kb; ++i) {
      int32_t id;
      float lb;
      std::memcpy(&id, r + 8 + 4 * size_t(i), 4);
      std::memcpy(&lb, r + 8 + 4 * size_t(kb) + 4 * size_t(i), 4);
      if (id < 0 || id >= V_) return corrupt("'" + path_ + "': token id out of range");
      const double pb = std::exp(double(lb));
      kld += pb * (double(lb) - lp[id]);
      pb_sum += pb;
      pn_sum += std::exp(lp[id]);
      if (i == 0) {
        if (argmax(logits, V_) == id) ++agree_;
      }
    }
    const double pb_rest = 1.0 - pb_sum, pn_rest = std::max(1e-30, 1.0 - pn_sum);
    if (kb < V_ && pb_rest > 1e-12) kld += pb_rest * (std::log(pb_rest) - std::log(pn_rest));
    // A NaN (a NaN log-prob in the base file, or NaN logits) must not become KLD 0 through
    // std::max(0, NaN): it is an error. Tiny negative values are rounding and clamp to 0.
    if (!std::isfinite(kld) || !std::isfinite(lbn))
      return corrupt("'" + path_ + "': non-finite log-probability at scored position " +
                     std::to_string(pos_index) + " (corrupt base file, or NaN logits)");
    klds_.push_back(std::max(0.0, kld));
    const double dp = std::exp(lp[next]) - std::exp(double(lbn));
    dp2_ += dp * dp;
    return Status::Ok();
  }

  // KLD statistics into res (when any position was compared).
  void finish(PerplexityResult& res) const {
    if (klds_.empty()) return;
    res.has_kld = true;
    const size_t n = klds_.size();
    res.kld_mean = std::accumulate(klds_.begin(), klds_.end(), 0.0) / n;
    std::vector<double> s = klds_;
    std::sort(s.begin(), s.end());
    res.kld_median = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    res.kld_p99 = s[std::min(n - 1, static_cast<size_t>(std::ceil(0.99 * n)) - 1)];
    res.kld_max = s.back();
    res.rms_dp = std::sqrt(dp2_ / n);
    res.top1_agreement = double(agree_) / n;
  }

 private:
  std::string path_;
  std::vector<uint8_t> data_;
  KldHeader h_{};
  size_t rec_bytes_ = 0;
  int V_ = 0;
  std::vector<double> klds_;
  double dp2_ = 0;
  int64_t agree_ = 0;
};

// Running negative log-likelihood of the scored positions.
struct NllStats {
  double nll = 0, nll2 = 0;
  int64_t count = 0;
  void add(double l) { nll += l; nll2 += l * l; ++count; }
  void finish(PerplexityResult& res) const {
    const double mean = nll / count;
    const double var = nll2 / count - mean * mean;
    res.ppl = std::exp(mean);
    res.ppl_stderr = (var > 0 && count > 1) ? std::sqrt(var / (count - 1)) * res.ppl : 0.0;
    res.tokens = count;
  }
};

}  // namespace

StatusOr<PerplexityResult> run_perplexity(const Model& model, const ModelCacheConfig& cache_config,
                                          const std::string& text, const PerplexityOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& c = model.config();
  const Tokenizer& tok = model.tokenizer();
  TQKV_RETURN_IF_ERROR(check_options(c, o));
  const std::vector<int> tokens = tok.encode(text, tok.add_bos());
  TQKV_ASSIGN_OR_RETURN(const RunShape shape, run_shape(model, tokens, o));
  const int V = shape.V;

  KldWriter base_out;
  KldReader base_in;
  const bool writing_base = !o.kld_base_out.empty();
  if (writing_base) TQKV_RETURN_IF_ERROR(base_out.open(o.kld_base_out, shape, o.ctx));
  if (!o.kld_in.empty()) TQKV_RETURN_IF_ERROR(base_in.open(o.kld_in, shape, o.ctx));

  const int batch = std::max(1, std::min(o.batch, o.ctx));
  TQKV_ASSIGN_OR_RETURN(auto ictx, InferenceContext::make(model, cache_config, batch, o.ctx));
  ictx->set_threads(o.threads);
  std::vector<float> logits(size_t(batch) * V);
  std::vector<double> lp;
  NllStats stats;
  int64_t pos_index = 0;
  PerplexityResult res;

  for (int ch = 0; ch < shape.n_chunks; ++ch) {
    ictx->clear();
    std::vector<int> chunk(tokens.begin() + size_t(ch) * o.ctx, tokens.begin() + size_t(ch + 1) * o.ctx);
    if (tok.add_bos()) chunk[0] = tok.bos();  // llama-perplexity: only for tokenizers that add BOS
    for (int b0 = 0; b0 < o.ctx; b0 += batch) {
      const int m = std::min(batch, o.ctx - b0);
      TQKV_RETURN_IF_ERROR(ictx->forward(chunk.data() + b0, m, logits.data(), true));
      for (int t = 0; t < m; ++t) {
        const int j = b0 + t;
        if (j < shape.first || j >= o.ctx - 1) continue;
        const int next = chunk[j + 1];
        const float* lg = logits.data() + size_t(t) * V;
        log_softmax(lg, V, lp);
        stats.add(-lp[next]);
        if (writing_base) TQKV_RETURN_IF_ERROR(base_out.write(lp, next));
        if (base_in.active()) TQKV_RETURN_IF_ERROR(base_in.compare(pos_index, lp, lg, next));
        ++pos_index;
      }
      if (ch == 0 && b0 + m == o.ctx) {
        res.kv_bytes = ictx->cache().bytes_resident();
        res.kv_f16_bytes = ictx->cache().f16_bytes(0);
      }
    }
    if (o.progress) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      progress_bar(ch + 1, shape.n_chunks, std::exp(stats.nll / stats.count), secs);
    }
  }
  if (writing_base) TQKV_RETURN_IF_ERROR(base_out.commit());
  stats.finish(res);
  res.tokens_evaluated = int64_t(shape.n_chunks) * o.ctx;
  res.chunks = shape.n_chunks;
  const double elems = double(c.n_layers) * o.ctx * c.n_kv_heads * c.head_dim * 2;
  res.kv_bits_per_element = 8.0 * res.kv_bytes / elems;
  base_in.finish(res);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace tqkv
