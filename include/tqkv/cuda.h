// CUDA backend: a GPU-resident compressed KV cache of one layer, with a fused encode kernel
// (append) and fused split-KV attention straight from the packed codes (decode and causal
// prefill). No CUDA header is needed to use it: device buffers are plain pointers obtained from
// CudaBuffer (or any cudaMalloc'ed memory of the caller).
//
//   if (!tqkv::cuda_available()) ...                      // no GPU: everything returns an error
//   auto c = tqkv::CudaLayerCache::make(cfg);              // pages live in GPU memory
//   c->append(seqs, n, k_dev, v_dev);                      // encodes on the GPU
//   c->attend(batch, q_dev, out_dev);                      // flash-decoding over the pages
//
// Formats with a GPU path: rvq1x2, tq2 (2 bits per element), rvq2x2, tq4, rvq1x4 (4 bits),
// q4_0, q8_0, f16; attention needs head_dim 64, 128 or 256, the pages any head_dim <= 256 that is a
// multiple of 16 (cuda_encode_vectors produces per-vector codes of any head_dim <= 256).
// Pre-RoPE pk{b} keys (tqkv/prerope_keys.h; values rvq1x2, tq2, rvq2x2, tq4 or rvq1x4): keys are
// appended BEFORE RoPE; until a sequence holds pk_calib_tokens tokens its K/V rows wait as f16
// pending rows, then its statistics are fitted (on the host, with the CPU codec) and the rows are
// encoded on the GPU; attention applies CudaCacheConfig::rope to every key at position
// position_offset + t on the fly (docs/design.md section 10, "pk keys"). No channel basis.
// Codes are bit-identical to the CPU quantizer's (same per-(layer, head) rotation seeds as
// LayerKVCache); the GPU page layout (docs/format.md, "GPU pages") holds the same bits arranged
// for the tensor cores. Every entry point returns a Status carrying the CUDA error text.
// Not thread-safe: one host thread drives one cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tqkv/attention.h"
#include "tqkv/format.h"
#include "tqkv/kv_view.h"
#include "tqkv/prerope_keys.h"
#include "tqkv/quantizer.h"
#include "tqkv/status.h"

namespace tqkv {

// True when the library was built with CUDA and a device of compute capability >= 9.0 is
// present. `why` (optional) receives the reason when false.
bool cuda_available(std::string* why = nullptr);
// One line describing device 0 ("NVIDIA H200, 132 SMs, 141 GiB, cc 9.0").
std::string cuda_device_name();

// Owning device allocation (cudaMalloc / cudaFree).
class CudaBuffer {
 public:
  static StatusOr<CudaBuffer> alloc(size_t bytes);
  CudaBuffer() = default;
  CudaBuffer(CudaBuffer&& o) noexcept;
  CudaBuffer& operator=(CudaBuffer&& o) noexcept;
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  ~CudaBuffer();
  void* get() const { return p_; }
  size_t bytes() const { return n_; }
  template <class T> T* as() const { return static_cast<T*>(p_); }
  Status upload(const void* host, size_t bytes, size_t offset = 0);
  Status download(void* host, size_t bytes, size_t offset = 0) const;
  Status fill_byte(int value);  // cudaMemset (used to poison outputs in tests)

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

Status cuda_synchronize();

// Element type of device inputs (keys, values) given to append / encode.
enum class CudaDType { kF32, kBF16 };

struct CudaCacheConfig {
  int n_kv_heads = 8;
  int head_dim = 128;
  FormatSpec key_format{FormatKind::kRvq, 1, 2};
  FormatSpec value_format{FormatKind::kTq, 2, 1};
  QuantOptions quant;      // seed, rotation, codebook design, norm correction (as LayerKVCache)
  int layer = 0;           // mixed into the per-head rotation seeds exactly like LayerKVCache
  // Tensor parallelism (tqkv/head_shard.h): this cache holds the global kv heads
  // [kv_head_offset, kv_head_offset + n_kv_heads); head h's seeds are those of global head
  // kv_head_offset + h, exactly like LayerKVCache::make(HeadShard, ...).
  int kv_head_offset = 0;
  int page_tokens = 64;    // multiple of 16
  int max_pages = 0;       // pool size in pages (each page: page_tokens tokens of every kv head)
  int max_seqs = 1;
  int max_pages_per_seq = 0;  // 0: max_pages
  // pk{b} key formats only: the model's RoPE (rotary_dims > 0 required; freq_divisors, if any, is
  // read once by make) and the statistics' token count N (KVCacheOptions::pk_calib_tokens).
  RopeParams rope;
  int pk_calib_tokens = 128;
};

class CudaLayerCache {
 public:
  static StatusOr<std::unique_ptr<CudaLayerCache>> make(const CudaCacheConfig& cfg);
  ~CudaLayerCache();

  const CudaCacheConfig& config() const;
  int n_tokens(int seq) const;
  // Bytes of GPU memory the page pools, page table and tables take.
  size_t bytes_resident() const;
  // Bytes one token of one kv head takes in the pages (key + value, codes + scales).
  size_t bytes_per_token_head() const;

  // Appends n tokens to each sequence of `seqs` (distinct, 0 <= seq < max_seqs). k, v: device
  // arrays [seqs.size()][n_kv_heads][n][head_dim] of `dtype`. Encoding runs on the GPU (one fused
  // kernel for keys and values). Pages are taken from the pool; fails when it is exhausted.
  Status append(const std::vector<int>& seqs, int n, const void* k, const void* v,
                CudaDType dtype = CudaDType::kF32);
  Status truncate(int seq, int n);
  // Benchmark aid: appends like append(), then re-runs the same fused encode launch `repeats`
  // times over the same pages and returns the median kernel time in ms (CUDA events).
  StatusOr<float> append_timed(const std::vector<int>& seqs, int n, const void* k, const void* v,
                               CudaDType dtype, int repeats);

  // Decode / chunked-prefill attention. Item i of the batch reads sequence seqs[i]; its m query
  // tokens sit at the last m positions of that sequence (causal: query j attends to positions
  // 0 .. n_tokens - m + j). q, out: device float arrays [batch][n_q_heads][m][head_dim];
  // n_q_heads = n_kv_heads * group with group in 1..8. scale 0 = 1/sqrt(head_dim).
  // n_splits 0 = chosen to fill the GPU. Ragged lengths are fine.
  Status attend(const std::vector<int>& seqs, int m, int n_q_heads, const float* q, float* out,
                float scale = 0, int n_splits = 0);

  // Dense bf16 copy of the keys (value=false) or values of the items' sequences:
  // out [seqs.size()][n_kv_heads][L][head_dim] (L >= every length; positions past a sequence's
  // end are 0). Rotated formats come out in their rotated domain (z * scale) — multiply by the
  // head's rotation transpose for the original domain. For the naive dequantize-then-attend
  // baseline of the benchmark.
  Status dequantize(const std::vector<int>& seqs, int L, bool value, uint16_t* out) const;

  // Copies sequence `src_seq` of a CPU cache (through its read-only view, tqkv/kv_view.h) into
  // sequence `seq` of this cache (which must be empty): the CPU pages' codes are gathered
  // (per-vector or bit-sliced tiles) and written into GPU pages, bit for bit. The layer must have
  // the same heads, head_dim, formats and rotations (same base seed and layer index) and keep no
  // f16 sinks or window.
  Status load_sequence(int seq, const LayerView& layer, const SequenceView& src);

  // Test/debug access: per-vector codes (the CPU quantizer's format, docs/format.md section 1)
  // of tokens [t0, t1) of `head`, gathered from the GPU pages. `codes`: (t1 - t0) * code_size.
  Status read_codes(int seq, int head, bool value, int t0, int t1, uint8_t* codes) const;
  // The CPU quantizers this cache's codes are bit-identical to (per head; key_quantizer is null
  // for pk{b} keys, whose codec is per sequence: key_codec).
  const Quantizer* key_quantizer(int head) const;
  // pk{b} keys: the codec (statistics) of `seq`'s head, fitted on the host by PreRopeKeyCodec::fit
  // exactly as LayerKVCache does; null before the sequence reached pk_calib_tokens tokens.
  const PreRopeKeyCodec* key_codec(int seq, int head) const;
  // pk{b} keys: RoPE position of stored token t of `seq` is offset + t (AttentionQuery::
  // position_offset). Default 0; kept until changed (also across truncate).
  Status set_position_offset(int seq, int64_t offset);
  const Quantizer* value_quantizer(int head) const;

  struct Impl;

 private:
  explicit CudaLayerCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Encodes n vectors on the GPU into the CPU quantizer's per-vector format (bit-identical to
// q.encode): x device [n][dim] of `dtype` (row stride dim), codes device n * q.code_size() bytes.
// Works for every rvq/tq format with passes * bits <= 8 and for q8_0, q4_0, f16, any dim <= 256.
Status cuda_encode_vectors(const Quantizer& q, const void* x, CudaDType dtype, size_t n,
                           uint8_t* codes);
// pk{b}: encodes n pre-RoPE key vectors with `codec`'s statistics on the GPU, bit-identical to
// codec.encode (docs/format.md "pk{b}"): x device [n][dim] of `dtype`, codes device
// n * codec.code_size() bytes. dim <= 256, no channel basis.
Status cuda_pk_encode_vectors(const PreRopeKeyCodec& codec, const void* x, CudaDType dtype, size_t n,
                              uint8_t* codes);

}  // namespace tqkv
