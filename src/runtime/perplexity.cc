// Perplexity / KL-divergence driver and text input (plain or .xz).
#include "tqkv/perplexity.h"

#include <cblas.h>
#include <lzma.h>
#include <omp.h>
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

}  // namespace

void set_runtime_threads(int t) {
  if (t < 1) return;
  omp_set_num_threads(t);
}

Status check_threads(int t) {
  if (t < 0 || t > kMaxThreads)
    return invalid_argument("--threads must be between 0 (all) and " + std::to_string(kMaxThreads) + ", got " +
                            std::to_string(t));
  return Status::Ok();
}

StatusOr<std::string> read_text_file(const std::string& path, uint64_t max_bytes) {
  const bool xz = path.size() >= 3 && path.compare(path.size() - 3, 3, ".xz") == 0;
  // The compressed file gets the same cap as plain text; the decompressed text is capped below.
  TQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, read_file(path, max_bytes, "text file"));
  if (!xz) return std::string(raw.begin(), raw.end());
  lzma_stream s = LZMA_STREAM_INIT;
  // 256 MiB dictionary memory limit: enough for any xz preset (-9e uses 674 MiB to compress but
  // 65 MiB to decompress).
  if (lzma_stream_decoder(&s, uint64_t{256} << 20, LZMA_CONCATENATED) != LZMA_OK)
    return internal_error("liblzma: cannot initialize the decoder");
  struct Ender { lzma_stream* s; ~Ender() { lzma_end(s); } } ender{&s};
  std::string out;
  std::vector<uint8_t> buf(1 << 16);
  s.next_in = raw.data();
  s.avail_in = raw.size();
  while (true) {
    s.next_out = buf.data();
    s.avail_out = buf.size();
    const lzma_ret r = lzma_code(&s, LZMA_FINISH);
    const size_t got = buf.size() - s.avail_out;
    if (out.size() + got > max_bytes)
      return invalid_argument("'" + path + "' decompresses to more than " + std::to_string(max_bytes >> 20) +
                              " MiB of text, the limit (split the text)");
    out.append(reinterpret_cast<const char*>(buf.data()), got);
    if (r == LZMA_STREAM_END) break;
    if (r == LZMA_MEMLIMIT_ERROR) return invalid_argument("'" + path + "' needs more than 256 MiB to decompress");
    if (r != LZMA_OK) return corrupt("'" + path + "' is not a valid .xz file (liblzma error " + std::to_string(r) + ")");
  }
  return out;
}

StatusOr<PerplexityResult> run_perplexity(const Model& model, const ModelCacheConfig& cache_config,
                                          const std::string& text, const PerplexityOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& c = model.config();
  const Tokenizer& tok = model.tokenizer();
  // ctx 2 scores no position (positions ctx/2 .. ctx-2): PPL would be 0/0.
  if (o.ctx < 3) return invalid_argument("context size must be >= 3, got " + std::to_string(o.ctx));
  if (o.max_chunks == 0 || o.max_chunks < -1) return invalid_argument("--chunks must be >= 1");
  if (o.ctx > c.context_length)
    return invalid_argument("context size " + std::to_string(o.ctx) + " exceeds the model's context length " +
                            std::to_string(c.context_length));
  if (!o.kld_base_out.empty() && !o.kld_in.empty())
    return invalid_argument("--kl-divergence-base and --kl-divergence are exclusive");
  std::vector<int> tokens = tok.encode(text, tok.add_bos());
  int n_chunks = static_cast<int>(tokens.size() / o.ctx);
  if (o.max_chunks >= 0) n_chunks = std::min(n_chunks, o.max_chunks);
  if (n_chunks < 1)
    return invalid_argument("the text has " + std::to_string(tokens.size()) + " tokens, fewer than one context of " +
                            std::to_string(o.ctx));
  const int V = c.vocab_size;
  const int first = o.ctx / 2;
  const int per_chunk = o.ctx - 1 - first;
  const uint64_t hash = fnv1a(tokens.data(), size_t(n_chunks) * o.ctx);
  const int K = (o.kld_top_k <= 0 || o.kld_top_k > V) ? V : o.kld_top_k;

  // KLD files.
  const uint32_t fingerprint = model_fingerprint(model);
  AtomicFile base_out;
  const bool writing_base = !o.kld_base_out.empty();
  std::vector<uint8_t> base_in;
  KldHeader hin{};
  size_t rec_bytes = 0;
  if (writing_base) {
    TQKV_RETURN_IF_ERROR(base_out.open(o.kld_base_out));
    KldHeader h{};
    std::memcpy(h.magic, kKldMagic, 8);
    h.version = kKldVersion; h.vocab = V; h.top_k = K; h.ctx = o.ctx; h.n_chunks = n_chunks;
    h.model_fingerprint = fingerprint;
    h.n_positions = uint64_t(n_chunks) * per_chunk;
    h.tokens_hash = hash;
    TQKV_RETURN_IF_ERROR(base_out.write(&h, sizeof h));
  }
  if (!o.kld_in.empty()) {
    // The header bounds the size: at most n_chunks (< 2^32) * ctx/2 records of 8 + 8 * vocab bytes,
    // checked against the file's real size before the records are read.
    TQKV_ASSIGN_OR_RETURN(base_in, read_file_prefix(o.kld_in, sizeof(KldHeader), "KLD base file"));
    if (base_in.size() < sizeof(KldHeader)) return corrupt("'" + o.kld_in + "' is not a KLD base file (too short)");
    std::memcpy(&hin, base_in.data(), sizeof hin);
    if (std::memcmp(hin.magic, kKldMagic, 8) != 0) return corrupt("'" + o.kld_in + "' is not a KLD base file (bad magic)");
    if (hin.version != kKldVersion)
      return corrupt("'" + o.kld_in + "': unsupported KLD file version " + std::to_string(hin.version) + " (expected " +
                     std::to_string(kKldVersion) + "; regenerate it with --kl-divergence-base)");
    if (hin.vocab != uint32_t(V) || hin.ctx != uint32_t(o.ctx) || hin.tokens_hash != hash ||
        hin.n_chunks < uint32_t(n_chunks) || hin.model_fingerprint != fingerprint)
      return invalid_argument("'" + o.kld_in + "' was made from another model, text, context size or chunk count "
                              "(base: vocab " + std::to_string(hin.vocab) + ", ctx " + std::to_string(hin.ctx) +
                              ", chunks " + std::to_string(hin.n_chunks) +
                              (hin.model_fingerprint != fingerprint ? ", another model" : "") + ")");
    if (hin.top_k < 1 || hin.top_k > hin.vocab) return corrupt("'" + o.kld_in + "': bad top_k");
    rec_bytes = 8 + size_t(hin.top_k) * 8;
    if (hin.n_positions != uint64_t(hin.n_chunks) * per_chunk)
      return corrupt("'" + o.kld_in + "' has an inconsistent header (n_positions)");
    // n_chunks < 2^32, per_chunk < 2^31, rec_bytes <= 8 + 8 * 2^32: the product can overflow 64 bits.
    if (hin.n_positions > (UINT64_MAX - sizeof(KldHeader)) / rec_bytes)
      return corrupt("'" + o.kld_in + "' has the wrong size (truncated?)");
    const uint64_t want = sizeof(KldHeader) + hin.n_positions * rec_bytes;
    TQKV_ASSIGN_OR_RETURN(base_in, read_file_prefix(o.kld_in, want + 1, "KLD base file"));  // +1: detect a longer file
    if (base_in.size() != want) return corrupt("'" + o.kld_in + "' has the wrong size (truncated?)");
  }

  const int batch = std::max(1, std::min(o.batch, o.ctx));
  TQKV_ASSIGN_OR_RETURN(auto ictx, InferenceContext::make(model, cache_config, batch, o.ctx));
  ictx->set_threads(o.threads);
  std::vector<float> logits(size_t(batch) * V);
  std::vector<double> lp;
  std::vector<int> order(V);
  std::vector<double> klds;
  double nll = 0, nll2 = 0, dp2 = 0;
  int64_t count = 0, agree = 0, pos_index = 0;
  PerplexityResult res;
  std::vector<uint8_t> rec(8 + size_t(K) * 8);

  for (int ch = 0; ch < n_chunks; ++ch) {
    ictx->clear();
    std::vector<int> chunk(tokens.begin() + size_t(ch) * o.ctx, tokens.begin() + size_t(ch + 1) * o.ctx);
    if (tok.add_bos()) chunk[0] = tok.bos();  // llama-perplexity: only for tokenizers that add BOS
    for (int b0 = 0; b0 < o.ctx; b0 += batch) {
      const int m = std::min(batch, o.ctx - b0);
      TQKV_RETURN_IF_ERROR(ictx->forward(chunk.data() + b0, m, logits.data(), true));
      for (int t = 0; t < m; ++t) {
        const int j = b0 + t;
        if (j < first || j >= o.ctx - 1) continue;
        const int next = chunk[j + 1];
        log_softmax(logits.data() + size_t(t) * V, V, lp);
        const double l = -lp[next];
        nll += l;
        nll2 += l * l;
        ++count;
        if (writing_base) {
          std::iota(order.begin(), order.end(), 0);
          std::partial_sort(order.begin(), order.begin() + K, order.end(),
                            [&](int a, int b) { return lp[a] > lp[b] || (lp[a] == lp[b] && a < b); });
          int32_t nx = next;
          float lnx = static_cast<float>(lp[next]);
          std::memcpy(rec.data(), &nx, 4);
          std::memcpy(rec.data() + 4, &lnx, 4);
          for (int i = 0; i < K; ++i) {
            int32_t id = order[i];
            float v = static_cast<float>(lp[order[i]]);
            std::memcpy(rec.data() + 8 + 4 * size_t(i), &id, 4);
            std::memcpy(rec.data() + 8 + 4 * size_t(K) + 4 * size_t(i), &v, 4);
          }
          TQKV_RETURN_IF_ERROR(base_out.write(rec.data(), rec.size()));
        }
        if (!base_in.empty()) {
          const uint8_t* r = base_in.data() + sizeof(KldHeader) + size_t(pos_index) * rec_bytes;
          const int kb = static_cast<int>(hin.top_k);
          float lbn;
          std::memcpy(&lbn, r + 4, 4);
          double kld = 0, pb_sum = 0, pn_sum = 0;
          for (int i = 0; i < kb; ++i) {
            int32_t id;
            float lb;
            std::memcpy(&id, r + 8 + 4 * size_t(i), 4);
            std::memcpy(&lb, r + 8 + 4 * size_t(kb) + 4 * size_t(i), 4);
            if (id < 0 || id >= V) return corrupt("'" + o.kld_in + "': token id out of range");
            const double pb = std::exp(double(lb));
            kld += pb * (double(lb) - lp[id]);
            pb_sum += pb;
            pn_sum += std::exp(lp[id]);
            if (i == 0) {
              if (argmax(logits.data() + size_t(t) * V, V) == id) ++agree;
            }
          }
          const double pb_rest = 1.0 - pb_sum, pn_rest = std::max(1e-30, 1.0 - pn_sum);
          if (kb < V && pb_rest > 1e-12) kld += pb_rest * (std::log(pb_rest) - std::log(pn_rest));
          // A NaN (a NaN log-prob in the base file, or NaN logits) must not become KLD 0 through
          // std::max(0, NaN): it is an error. Tiny negative values are rounding and clamp to 0.
          if (!std::isfinite(kld) || !std::isfinite(lbn))
            return corrupt("'" + o.kld_in + "': non-finite log-probability at scored position " +
                           std::to_string(pos_index) + " (corrupt base file, or NaN logits)");
          klds.push_back(std::max(0.0, kld));
          const double dp = std::exp(lp[next]) - std::exp(double(lbn));
          dp2 += dp * dp;
        }
        ++pos_index;
      }
      if (ch == 0 && b0 + m == o.ctx) {
        res.kv_bytes = ictx->cache().bytes_resident();
        res.kv_f16_bytes = ictx->cache().f16_bytes(0);
      }
    }
    if (o.progress) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      progress_bar(ch + 1, n_chunks, std::exp(nll / count), secs);
    }
  }
  if (writing_base) TQKV_RETURN_IF_ERROR(base_out.commit());
  const double mean = nll / count;
  double var = nll2 / count - mean * mean;
  res.ppl = std::exp(mean);
  res.ppl_stderr = (var > 0 && count > 1) ? std::sqrt(var / (count - 1)) * res.ppl : 0.0;
  res.tokens = count;
  res.tokens_evaluated = int64_t(n_chunks) * o.ctx;
  res.chunks = n_chunks;
  const double elems = double(c.n_layers) * o.ctx * c.n_kv_heads * c.head_dim * 2;
  res.kv_bits_per_element = 8.0 * res.kv_bytes / elems;
  if (!klds.empty()) {
    res.has_kld = true;
    const size_t n = klds.size();
    res.kld_mean = std::accumulate(klds.begin(), klds.end(), 0.0) / n;
    std::vector<double> s = klds;
    std::sort(s.begin(), s.end());
    res.kld_median = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    res.kld_p99 = s[std::min(n - 1, static_cast<size_t>(std::ceil(0.99 * n)) - 1)];
    res.kld_max = s.back();
    res.rms_dp = std::sqrt(dp2 / n);
    res.top1_agreement = double(agree) / n;
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace tqkv
