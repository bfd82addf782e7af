// tqkv bench-attn: decode attention time on compressed caches vs an f16/f16 cache, same run.
//
// Each "step" is one decode attention call (1 query token per sequence, every head) over one
// layer's cache holding --batch sequences of --ctx tokens. To measure DRAM rather than the (large)
// L3, every cache type gets enough independent layers that their total size is >= 1.2 GB, and the
// timed loop cycles through them. Bandwidth reference: a multi-threaded streaming read of a 1 GB
// buffer measured in the same run.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "command.h"
#include "tqkv/channel_basis.h"
#include "tqkv/kv_cache.h"
#include "tqkv/perplexity.h"
#include "tqkv/simd.h"
#include "tqkv/synthetic.h"
#include <nlohmann/json.hpp>

namespace tqkv::cli {
namespace {

struct Opts {
  int ctx = 65536, q_heads = 32, kv_heads = 8, head_dim = 128, batch = 4, threads = 0;
  std::string ktype = "rvq1x2", vtype = "tq2";
  double min_time = 2.0;
  int dram_mb = 1024;  // buffer of the DRAM bandwidth reference
  bool json = false;
  bool interleave = false;  // time the format's and f16's steps alternately (see run())
  int pk_basis_block = 0;   // pk keys in a channel basis: 0 none, B block-diagonal (B = head_dim: dense)
};

// A random orthonormal channel basis, block-diagonal with blocks of `block` channels (the last
// block may be shorter): the eigenbasis of a random positive definite Gram per block. Decode cost
// depends only on the basis' zero pattern, not on its values (--pk-basis weights gives a dense one).
StatusOr<std::shared_ptr<const ChannelBasis>> random_block_basis(int d, int block, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g;
  std::vector<float> u(static_cast<size_t>(d) * d, 0.0f);
  for (int b0 = 0; b0 < d; b0 += block) {
    const int n = std::min(block, d - b0);
    std::vector<double> w(static_cast<size_t>(n) * n), gram(w.size(), 0.0);
    for (double& x : w) x = g(rng);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j)
        for (int k = 0; k < n; ++k) gram[i * n + j] += w[i * n + k] * w[j * n + k];
    TQKV_ASSIGN_OR_RETURN(std::vector<float> e, symmetric_eigenbasis(gram, n));
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) u[static_cast<size_t>(b0 + i) * d + b0 + j] = e[static_cast<size_t>(i) * n + j];
  }
  return std::make_shared<const ChannelBasis>(orthonormal_basis(std::move(u), d));
}

using Clock = std::chrono::steady_clock;

double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

// Streaming read bandwidth (GB/s) with `threads` threads over a buffer of `bytes`: integer sums
// (which the compiler vectorizes; float sums would be latency-bound without -ffast-math), best of 5.
double dram_read_gbps(size_t bytes, int threads) {
  const size_t n = bytes / sizeof(uint64_t);
  std::vector<uint64_t> buf(n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; ++i) buf[i] = i;
  double best = 0;
  volatile uint64_t sink = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = now_s();
    uint64_t total = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
    for (size_t i = 0; i < n; ++i) total += buf[i];
    const double dt = now_s() - t0;
    sink = sink + total;
    best = std::max(best, bytes / dt / 1e9);
  }
  return best;
}

struct Measured {
  int layers = 0;
  size_t bytes_per_layer = 0;   // resident bytes of one layer
  size_t read_per_step = 0;     // K+V code bytes one step reads
  double ms_per_step = 0;
  double bpe_k = 0, bpe_v = 0;
};

// One cache type, filled and warmed up: step(i) runs one decode attention call on layer i % layers.
struct Bench {
  Measured r;
  std::vector<std::unique_ptr<LayerKVCache>> layers;
  std::vector<float> q, out;
  std::vector<LayerKVCache::Request> reqs;
  AttentionOptions ao;
  int q_heads = 0;
  Status step(int i) { return layers[i % r.layers]->attend_batch(reqs, q_heads, ao); }
};

StatusOr<std::unique_ptr<Bench>> prepare(const Opts& o, const FormatSpec& kf, const FormatSpec& vf, int threads) {
  auto bench = std::make_unique<Bench>();
  Bench& B = *bench;
  B.q_heads = o.q_heads;
  Measured& r = B.r;
  std::vector<std::unique_ptr<LayerKVCache>>& layers = B.layers;
  KVCacheOptions co;
  co.key_format = kf;
  co.value_format = vf;
  if (o.pk_basis_block > 0 && kf.kind == FormatKind::kPk)
    for (int h = 0; h < o.kv_heads; ++h) {
      TQKV_ASSIGN_OR_RETURN(auto b, random_block_basis(o.head_dim, o.pk_basis_block, 11 + h));
      co.pk_basis[0].push_back(std::move(b));
    }
  r.bpe_k = bits_per_element(kf, o.head_dim);
  r.bpe_v = bits_per_element(vf, o.head_dim);
  const size_t per_layer = static_cast<size_t>(o.batch) * o.kv_heads * o.ctx *
                           (code_size(kf, o.head_dim) + code_size(vf, o.head_dim));
  r.read_per_step = per_layer;
  // Resident bytes round each (sequence, head) up to whole 64-token pages. Layers are cycled until
  // their total reaches 1.2 GB, but never more than kMaxLayers: a short --ctx (1 token used to ask
  // for 17 million layers) is then measured partly from the CPU caches, and the run says so.
  constexpr int kMaxLayers = 64;
  const size_t paged = static_cast<size_t>(o.batch) * o.kv_heads * ((o.ctx + 63) / 64 * 64) *
                       (code_size(kf, o.head_dim) + code_size(vf, o.head_dim));
  const size_t want = (size_t(1200) << 20) / paged + 1;
  r.layers = static_cast<int>(std::clamp<size_t>(want, 2, kMaxLayers));
  if (want > kMaxLayers)
    std::fprintf(stderr, "bench-attn: note: %d layers of %.1f MB are below 1.2 GB; part of the run may come from CPU caches\n",
                 r.layers, paged / 1e6);
  layers.resize(r.layers);
  // A pool of synthetic K (llm-like) and V (Gaussian) rows, reused at rotating offsets.
  const int pool = 8192, chunk = 2048, d = o.head_dim;
  std::vector<float> kpool(static_cast<size_t>(o.kv_heads) * pool * d), vpool(kpool.size());
  for (int h = 0; h < o.kv_heads; ++h) {
    generate_llm_like(&kpool[static_cast<size_t>(h) * pool * d], pool, d, 1 + h);
    generate_gaussian(&vpool[static_cast<size_t>(h) * pool * d], pool, d, 100 + h);
  }
  std::fprintf(stderr, "bench-attn: filling %d layer(s) of %s/%s (%d x %d tokens x %d kv heads, %.0f MB each)",
               r.layers, kf.name().c_str(), vf.name().c_str(), o.batch, o.ctx, o.kv_heads, per_layer / 1e6);
  Status fill_status;
  for (int l = 0; l < r.layers; ++l) {
    auto c = LayerKVCache::make(o.kv_heads, d, co, l);
    if (!c.ok()) return c.status();
    layers[l] = std::move(c).value();
  }
  int done = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int l = 0; l < r.layers; ++l) {
    for (int s = 0; s < o.batch; ++s)
      for (int t0 = 0; t0 < o.ctx; t0 += chunk) {
        const int n = std::min(chunk, o.ctx - t0);
        const int off = (t0 + 977 * (s + 3 * l)) % (pool - chunk);
        Status st = layers[l]->append(s, n, {&kpool[static_cast<size_t>(off) * d], static_cast<int64_t>(pool) * d, d},
                                      {&vpool[static_cast<size_t>(off) * d], static_cast<int64_t>(pool) * d, d});
        if (!st.ok()) {
#pragma omp critical
          fill_status = st;
        }
      }
#pragma omp critical
    {
      ++done;
      std::fprintf(stderr, ".");
    }
  }
  std::fprintf(stderr, " done\n");
  TQKV_RETURN_IF_ERROR(fill_status);
  r.bytes_per_layer = layers[0]->bytes_resident();
  // Queries and outputs: (q_heads, 1, d) per sequence.
  std::vector<float>& q = B.q;
  q.resize(static_cast<size_t>(o.batch) * o.q_heads * d);
  B.out.resize(q.size());
  generate_gaussian(q.data(), o.batch * o.q_heads, d, 7);
  for (int s = 0; s < o.batch; ++s)
    B.reqs.push_back({s, 1, {&q[static_cast<size_t>(s) * o.q_heads * d], d, d},
                      {&B.out[static_cast<size_t>(s) * o.q_heads * d], d, d}});
  AttentionOptions& ao = B.ao;
  ao.threads = threads;
  // Keys stored before RoPE (pk{b}): attention rotates them, with a Llama-style full-width RoPE.
  if (layers[0]->keys_pre_rope()) ao.rope.rotary_dims = d;
  for (int l = 0; l < r.layers; ++l) TQKV_RETURN_IF_ERROR(B.step(l));  // warm-up
  return bench;
}

StatusOr<Measured> measure(const Opts& o, const FormatSpec& kf, const FormatSpec& vf, int threads) {
  TQKV_ASSIGN_OR_RETURN(auto b, prepare(o, kf, vf, threads));
  int steps = 0;
  const double t0 = now_s();
  double t = t0;
  while (t - t0 < o.min_time || steps < 2 * b->r.layers) {
    TQKV_RETURN_IF_ERROR(b->step(steps));
    ++steps;
    t = now_s();
  }
  b->r.ms_per_step = (t - t0) * 1e3 / steps;
  return b->r;
}

// --interleave: both caches resident, one step of each in turn, each step timed alone. On a shared,
// loaded machine the load then falls on both alike and the ratio stays meaningful (timed one after
// the other, a 2-core box at load 10+ gave the same pair 1.7x and 11x).
Status measure_interleaved(const Opts& o, const FormatSpec& kf, const FormatSpec& vf, int threads, Measured* m,
                           Measured* f16m) {
  const FormatSpec f16{FormatKind::kF16, 16, 1};
  TQKV_ASSIGN_OR_RETURN(auto a, prepare(o, kf, vf, threads));
  TQKV_ASSIGN_OR_RETURN(auto b, prepare(o, f16, f16, threads));
  double ta = 0, tb = 0;
  int steps = 0;
  const int min_steps = 2 * std::max(a->r.layers, b->r.layers);
  while (ta + tb < 2 * o.min_time || steps < min_steps) {
    const double t0 = now_s();
    TQKV_RETURN_IF_ERROR(a->step(steps));
    const double t1 = now_s();
    TQKV_RETURN_IF_ERROR(b->step(steps));
    tb += now_s() - t1;
    ta += t1 - t0;
    ++steps;
  }
  a->r.ms_per_step = ta * 1e3 / steps;
  b->r.ms_per_step = tb * 1e3 / steps;
  *m = a->r;
  *f16m = b->r;
  return Status::Ok();
}

Status run(const Opts& o) {
  if (o.ctx < 1 || o.q_heads < 1 || o.kv_heads < 1 || o.head_dim < 1 || o.batch < 1)
    return invalid_argument("--ctx, --q-heads, --kv-heads, --head-dim and --batch must be >= 1");
  if (o.q_heads % o.kv_heads) return invalid_argument("--q-heads must be a multiple of --kv-heads");
  if (o.ctx > (1 << 24) || o.q_heads > 1024 || o.kv_heads > 1024 || o.head_dim > 4096 || o.batch > 1024)
    return invalid_argument("--ctx must be <= 2^24, --q-heads/--kv-heads/--batch <= 1024, --head-dim <= 4096");
  if (o.dram_mb < 1 || o.dram_mb > (1 << 16)) return invalid_argument("--dram-mb must be in 1..65536");
  if (o.pk_basis_block < 0 || o.pk_basis_block > o.head_dim)
    return invalid_argument("--pk-basis-block must be in 0..head_dim (" + std::to_string(o.head_dim) + ")");
  if (!(o.min_time >= 0 && o.min_time <= 3600)) return invalid_argument("--min-time must be in 0..3600 seconds");
  TQKV_RETURN_IF_ERROR(check_threads(o.threads));
  // One f16 layer must fit: (batch, kv_heads, ctx) x 512 bytes for head_dim 128.
  if (double(o.batch) * o.kv_heads * o.ctx * o.head_dim * 4 > double(uint64_t{32} << 30))
    return invalid_argument("--batch x --kv-heads x --ctx x --head-dim is too large: one f16 layer would exceed 32 GiB");
  TQKV_ASSIGN_OR_RETURN(FormatSpec kf, parse_format(o.ktype));
  TQKV_ASSIGN_OR_RETURN(FormatSpec vf, parse_format(o.vtype));
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  const double dram = dram_read_gbps(size_t(o.dram_mb) << 20, threads);
  const FormatSpec f16{FormatKind::kF16, 16, 1};
  Measured m, b;
  if (o.interleave) {
    TQKV_RETURN_IF_ERROR(measure_interleaved(o, kf, vf, threads, &m, &b));
  } else {
    TQKV_ASSIGN_OR_RETURN(m, measure(o, kf, vf, threads));
    TQKV_ASSIGN_OR_RETURN(b, measure(o, f16, f16, threads));
  }
  const double gbps = m.read_per_step / (m.ms_per_step * 1e-3) / 1e9;
  const double f16_gbps = b.read_per_step / (b.ms_per_step * 1e-3) / 1e9;
  nlohmann::json j = {
      {"ctx", o.ctx}, {"q_heads", o.q_heads}, {"kv_heads", o.kv_heads}, {"head_dim", o.head_dim},
      {"batch", o.batch}, {"threads", threads}, {"simd", simd_level_name(active_simd_level())},
      {"cache_type_k", kf.name()}, {"cache_type_v", vf.name()},
      {"ms_per_step", m.ms_per_step}, {"f16_ms_per_step", b.ms_per_step},
      {"speedup_vs_f16", b.ms_per_step / m.ms_per_step},
      {"bytes_read_per_step", m.read_per_step}, {"f16_bytes_read_per_step", b.read_per_step},
      {"gb_per_s", gbps}, {"f16_gb_per_s", f16_gbps}, {"dram_gb_per_s", dram},
      {"bandwidth_fraction", gbps / dram}, {"f16_bandwidth_fraction", f16_gbps / dram},
      {"bits_per_element_k", m.bpe_k}, {"bits_per_element_v", m.bpe_v},
      {"bytes_resident_per_layer", m.bytes_per_layer}, {"f16_bytes_resident_per_layer", b.bytes_per_layer},
      {"layers_cycled", m.layers}, {"f16_layers_cycled", b.layers}, {"interleaved", o.interleave},
      {"pk_basis_block", o.pk_basis_block}};
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("decode attention, ctx %d, batch %d, %d q heads / %d kv heads, head_dim %d, %d threads (%s)\n",
                o.ctx, o.batch, o.q_heads, o.kv_heads, o.head_dim, threads, simd_level_name(active_simd_level()));
    std::printf("%-14s %10s %10s %10s %10s\n", "cache K/V", "bits K/V", "ms/step", "GB/s", "of DRAM");
    std::printf("%-14s %4.2f/%-5.2f %10.3f %10.2f %9.0f%%\n", (kf.name() + "/" + vf.name()).c_str(), m.bpe_k,
                m.bpe_v, m.ms_per_step, gbps, 100 * gbps / dram);
    std::printf("%-14s %4.2f/%-5.2f %10.3f %10.2f %9.0f%%\n", "f16/f16", 16.0, 16.0, b.ms_per_step, f16_gbps,
                100 * f16_gbps / dram);
    std::printf("speedup vs f16: %.2fx   (DRAM streaming read measured now: %.2f GB/s)\n",
                b.ms_per_step / m.ms_per_step, dram);
  }
  return Status::Ok();
}

Register reg("bench-attn", "Time fused decode attention on compressed caches against an f16/f16 cache in the same run",
             [](CLI::App& app) {
               auto o = std::make_shared<Opts>();
               app.add_option("--ctx", o->ctx, "tokens per sequence")->capture_default_str();
               app.add_option("--q-heads", o->q_heads, "query heads")->capture_default_str();
               app.add_option("--kv-heads", o->kv_heads, "key/value heads")->capture_default_str();
               app.add_option("--head-dim", o->head_dim, "head dimension")->capture_default_str();
               app.add_option("--batch", o->batch, "sequences")->capture_default_str();
               app.add_option("--threads", o->threads, "threads (0 = all)")->capture_default_str();
               app.add_option("--cache-type-k", o->ktype, "key format (f16, q8_0, q4_0, rvq1x2, tq2, kivi2, ...)")->capture_default_str();
               app.add_option("--cache-type-v", o->vtype, "value format")->capture_default_str();
               app.add_option("--min-time", o->min_time, "seconds of timed steps per cache type")->capture_default_str();
               app.add_option("--dram-mb", o->dram_mb, "MiB read by the DRAM bandwidth reference")->capture_default_str();
               app.add_option("--pk-basis-block", o->pk_basis_block,
                              "pk keys: code them in a random orthonormal channel basis, block-diagonal with blocks "
                              "of B channels (B = head dim: dense, as --pk-basis weights); 0 = none")
                   ->capture_default_str();
               app.add_flag("--json", o->json, "print one JSON object");
               app.add_flag("--interleave", o->interleave,
                            "keep both caches resident and time their steps alternately (robust on a loaded machine)");
               return [o]() { return run(*o); };
             });

}  // namespace
}  // namespace tqkv::cli
