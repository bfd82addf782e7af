// C API over tqkv/cuda.h for the Python benchmark (bench/gpu_bench.py loads it with ctypes and
// passes torch device pointers). Functions return 0 on success; tqkv_capi_last_error() holds the
// message of the last failure.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "quant/rotated_quantizer.h"
#include "tqkv/cuda.h"

namespace {
std::string g_err;
int fail(const tqkv::Status& s) {
  g_err = s.to_string();
  return 1;
}
tqkv::CudaLayerCache* C(void* h) { return static_cast<tqkv::CudaLayerCache*>(h); }
}  // namespace

extern "C" {

const char* tqkv_capi_last_error() { return g_err.c_str(); }

void* tqkv_capi_cache_new(int n_kv_heads, int head_dim, const char* kfmt, const char* vfmt, int page_tokens,
                          int max_pages, int max_seqs) {
  tqkv::CudaCacheConfig cfg;
  auto kf = tqkv::parse_format(kfmt);
  auto vf = tqkv::parse_format(vfmt);
  if (!kf.ok()) { fail(kf.status()); return nullptr; }
  if (!vf.ok()) { fail(vf.status()); return nullptr; }
  cfg.n_kv_heads = n_kv_heads;
  cfg.head_dim = head_dim;
  cfg.key_format = kf.value();
  cfg.value_format = vf.value();
  cfg.page_tokens = page_tokens;
  cfg.max_pages = max_pages;
  cfg.max_seqs = max_seqs;
  if (cfg.key_format.pre_rope()) {  // pk{b} keys: Llama-style RoPE over the whole head (base 10000)
    cfg.rope.rotary_dims = head_dim;
    cfg.rope.base = 10000.0f;
  }
  auto c = tqkv::CudaLayerCache::make(cfg);
  if (!c.ok()) { fail(c.status()); return nullptr; }
  return std::move(c).value().release();
}

void tqkv_capi_cache_free(void* h) { delete C(h); }

int tqkv_capi_append(void* h, int nseqs, const int* seqs, int n, const void* k, const void* v, int bf16) {
  const auto s = C(h)->append(std::vector<int>(seqs, seqs + nseqs), n, k, v,
                              bf16 ? tqkv::CudaDType::kBF16 : tqkv::CudaDType::kF32);
  return s.ok() ? 0 : fail(s);
}

float tqkv_capi_append_timed(void* h, int nseqs, const int* seqs, int n, const void* k, const void* v, int bf16,
                             int repeats) {
  auto r = C(h)->append_timed(std::vector<int>(seqs, seqs + nseqs), n, k, v,
                              bf16 ? tqkv::CudaDType::kBF16 : tqkv::CudaDType::kF32, repeats);
  if (!r.ok()) { fail(r.status()); return -1.f; }
  return r.value();
}

int tqkv_capi_attend(void* h, int nitems, const int* seqs, int m, int n_q_heads, const float* q, float* out,
                     int splits) {
  const auto s = C(h)->attend(std::vector<int>(seqs, seqs + nitems), m, n_q_heads, q, out, 0.f, splits);
  return s.ok() ? 0 : fail(s);
}

int tqkv_capi_dequant(void* h, int nitems, const int* seqs, int L, int value, void* out) {
  const auto s = C(h)->dequantize(std::vector<int>(seqs, seqs + nitems), L, value != 0, static_cast<uint16_t*>(out));
  return s.ok() ? 0 : fail(s);
}

// Signs of the (single-round, power-of-two) rotation of a head: out[dim]. Returns 2 when the
// side is not rotated.
int tqkv_capi_signs(void* h, int value, int head, float* out) {
  const tqkv::Quantizer* q = value ? C(h)->value_quantizer(head) : C(h)->key_quantizer(head);
  const auto* rq = dynamic_cast<const tqkv::RotatedQuantizer*>(q);
  if (!rq || !rq->rotation()->enabled()) return 2;
  const auto& r = rq->rotation()->rounds();
  if (r.size() != 1) return fail(tqkv::unsupported("rotation with several rounds"));
  std::memcpy(out, r[0].signs.data(), r[0].signs.size() * sizeof(float));
  return 0;
}

long long tqkv_capi_bytes_per_token_head(void* h) { return static_cast<long long>(C(h)->bytes_per_token_head()); }

}  // extern "C"
