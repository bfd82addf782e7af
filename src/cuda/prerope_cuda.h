// pk{b} pre-RoPE keys on the GPU (internal; docs/design.md section 10 "pk keys", docs/format.md 2b).
//
// Page of pk keys, per (page id, kv head), indexed like the other pools (page_id * n_kv_heads + head):
//   [bf16 scale of each of the page_tokens tokens, padded to 16 bytes]
//   [page_tokens code streams of sbw = ceil(B / 32) 32-bit words each]
// where B = round(b d) code bits; stream word w holds stream bits 32 w .. 32 w + 31 (bit m of the
// CPU code stream = bit m % 32 of word m / 32, i.e. the CPU's ceil(B/8) bytes, little-endian,
// zero-padded to whole words). Statistics live per (sequence, head) as a channel table of float4
// {mean, sd, bits (as uint32: offset << 4 | bits), 0}, uploaded when the host has fitted them.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/gpu_layout.h"
#include "tqkv/attention.h"
#include "tqkv/cuda.h"
#include "tqkv/prerope_keys.h"
#include "tqkv/status.h"

namespace tqkv::gpu {

TQKV_HD size_t pk_scale_region(int page_tokens) { return (static_cast<size_t>(page_tokens) * 2 + 15) / 16 * 16; }
TQKV_HD int pk_stream_words(int total_bits) { return (total_bits + 31) / 32; }
TQKV_HD size_t pk_page_head_bytes(int total_bits, int page_tokens) {
  return pk_scale_region(page_tokens) + static_cast<size_t>(page_tokens) * 4 * pk_stream_words(total_bits);
}

// ---- encode (prerope_encode.cu) ----
// Source dtypes of the encode and conversion kernels.
enum PkSrc : int { kSrcF32 = 0, kSrcBF16 = 1, kSrcF16 = 2 };

// Thread-per-vector encode of items x heads x tokens. Item a, head h, token i < item_n[a] reads
// src + item_src[a] + h * stride_h + i * stride_i (elements) and writes the code of token
// item_t0[a] + i of sequence item_seq[a] into the pages (pool != null) or, per-vector in the CPU
// format, to vec_out + ((a * H + h) * n_max + i) * code_size.
struct PkEncodeParams {
  const void* src = nullptr;
  int dtype = kSrcF32;
  long long stride_h = 0, stride_i = 0;
  const long long* item_src = nullptr;
  const int* item_seq = nullptr;
  const int* item_t0 = nullptr;
  const int* item_n = nullptr;
  int n_items = 0, H = 1, n_max = 0, D = 0, total_bits = 0, norm_correction = 1;
  uint8_t* pool = nullptr;
  size_t phb = 0;
  int P = 64, sbw = 0, max_pages_per_seq = 0;
  const int* block_table = nullptr;
  uint8_t* vec_out = nullptr;
  int code_size = 0;
  const float4* chan = nullptr;   // [seq * H + head][D] (vec_out mode: [D])
  const float* levels = nullptr;  // [512]: levels[(1 << b) + code]
  const float* thresholds = nullptr;  // [512]: thresholds[(1 << b) + j], j < 2^b - 1
};
cudaError_t launch_pk_encode(const PkEncodeParams& p, cudaStream_t st);
// Converts rows to f16 (pending rows): like the encode's source addressing, into
// dst + ((item_seq[a] * H + h) * n_calib + item_t0[a] + i) * D.
cudaError_t launch_pk_to_f16(const PkEncodeParams& p, int n_calib, uint16_t* dst, cudaStream_t st);
// f16 rows -> f32 (count elements).
cudaError_t launch_f16_to_f32(const uint16_t* src, size_t count, float* dst, cudaStream_t st);

// ---- attention (prerope_attention.cu) ----
struct PkAttnParams {
  // pk keys
  const uint8_t* kpool = nullptr;
  size_t kphb = 0, kscale_region = 0;
  int sbw = 0;
  const float4* chan = nullptr;   // [seq * H + head][D]
  const float* levels = nullptr;  // [512]
  // pending f16 rows [seq][head][n_calib][D]
  const uint16_t* kpend = nullptr;
  const uint16_t* vpend = nullptr;
  int n_calib = 0;
  // values (lut2 / lut4 pages of docs/format.md 2b)
  AttnSide v;
  const float* vzlut = nullptr;   // field -> z
  int v_rotated = 0;
  // RoPE
  int pairs = 0, neox = 0;
  const double* omega = nullptr;  // [pairs] inv_freq / position_scale (radians per position)
  const float* tab = nullptr;     // [32][pairs][2]: (cos, sin) of u * omega_j, u = 0..31
  const double* step = nullptr;   // [pairs][2]: (cos, sin) of 128 omega_j (a warp's chunk stride)
  // shape and items
  int n_kv_heads = 0, group = 1, page_tokens = 64, dim = 128;
  const int* block_table = nullptr;
  int max_pages_per_seq = 0;
  const int* item_seq = nullptr;
  const int* item_len = nullptr;
  const int* item_pend = nullptr;        // 1: the item's tokens are all pending f16 rows
  const long long* item_off = nullptr;   // RoPE position of token 0
  int m = 1, qpc = 1, ncols = 1;
  int n_splits = 1, chunks_per_split = 1;  // chunks of 32 tokens
  const float* q = nullptr;
  float* out = nullptr;
  float scale_log2 = 0;
  float* ws_o = nullptr;
  float* ws_ml = nullptr;
};
bool pk_attention_supported(int vcodec, int dim);
int pk_attention_ctas_per_sm(int vcodec, int dim, int ncols, int pairs, int sbw);
cudaError_t launch_pk_attention(int vcodec, const PkAttnParams& p, int batch, cudaStream_t st);

// ---- the cache's pk state (prerope_cache.cu), driven by cache.cu ----
// What the pk path needs of CudaLayerCache::Impl (cache.cu fills it on every call).
struct PkCtx {
  const CudaCacheConfig* cfg = nullptr;
  uint8_t* kpool = nullptr;
  size_t kphb = 0;
  uint8_t* vpool = nullptr;
  size_t vphb = 0;
  int vcodec = 0;
  const EncodeSide* sides = nullptr;  // device [2]; side 1 = values
  AttnSide vside;
  const float* vzlut = nullptr;
  int v_rotated = 0;
  const int* block_table = nullptr;
  const std::vector<std::vector<int>>* seq_pages = nullptr;
  std::vector<int>* seq_len = nullptr;
};
struct PkState;
struct PkStateDeleter {
  void operator()(PkState* s) const;
};
using PkStatePtr = std::unique_ptr<PkState, PkStateDeleter>;

StatusOr<PkStatePtr> pk_make(const CudaCacheConfig& cfg);
size_t pk_key_page_head_bytes(const CudaCacheConfig& cfg);
// After the pages are reserved: pending rows, the fit at N, encodes.
Status pk_append(PkState& s, const PkCtx& c, const std::vector<int>& seqs, int n, const void* k, const void* v,
                 CudaDType dtype);
Status pk_attend(PkState& s, const PkCtx& c, const std::vector<int>& seqs, int m, int n_q_heads, const float* q,
                 float* out, float scale, int n_splits);
Status pk_read_key_codes(const PkState& s, const PkCtx& c, int seq, int head, int t0, int t1, uint8_t* codes);
void pk_truncate(PkState& s, int seq, int n);
const PreRopeKeyCodec* pk_codec(const PkState& s, int seq, int head);
Status pk_set_offset(PkState& s, int seq, int64_t offset);
size_t pk_bytes_resident(const PkState& s);
// The channel table of a codec's statistics (layout at the top of this file).
std::vector<float4> channel_table_public(const PreRopeKeyStats& st);

}  // namespace tqkv::gpu
