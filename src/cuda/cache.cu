// CudaLayerCache (tqkv/cuda.h): page pools in GPU memory, the host-side page table, job lists of
// the fused encode kernel, and the attention launch.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/half.h"
#include "cuda/cuda_internal.h"
#include "cuda/gpu_layout.h"
#include "cuda/prerope_cuda.h"
#include "quant/rotated_quantizer.h"
#include "tqkv/cache_seed.h"
#include "tqkv/cuda.h"

namespace tqkv {

using gpu::cuda_status;

bool cuda_available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (why) *why = e != cudaSuccess ? std::string("no CUDA device: ") + cudaGetErrorString(e) : "no CUDA device";
    return false;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major < 9) {
    if (why) *why = "device 0 is not compute capability >= 9.0 (the kernels are built for sm_90a)";
    return false;
  }
  return true;
}

std::string cuda_device_name() {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "none";
  return std::string(prop.name) + ", " + std::to_string(prop.multiProcessorCount) + " SMs, " +
         std::to_string(prop.totalGlobalMem >> 30) + " GiB, cc " + std::to_string(prop.major) + "." +
         std::to_string(prop.minor) + ", L2 " + std::to_string(prop.l2CacheSize >> 20) + " MiB";
}

// ---- CudaBuffer ----
StatusOr<CudaBuffer> CudaBuffer::alloc(size_t bytes) {
  CudaBuffer b;
  if (bytes == 0) return std::move(b);
  TQKV_CUDA_TRY(cudaMalloc(&b.p_, bytes));
  b.n_ = bytes;
  return std::move(b);
}
CudaBuffer::CudaBuffer(CudaBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
CudaBuffer& CudaBuffer::operator=(CudaBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFree(p_);
    p_ = o.p_; n_ = o.n_; o.p_ = nullptr; o.n_ = 0;
  }
  return *this;
}
CudaBuffer::~CudaBuffer() { if (p_) cudaFree(p_); }
Status CudaBuffer::upload(const void* host, size_t bytes, size_t offset) {
  if (offset + bytes > n_) return out_of_range("CudaBuffer::upload past the end");
  TQKV_CUDA_TRY(cudaMemcpy(static_cast<char*>(p_) + offset, host, bytes, cudaMemcpyHostToDevice));
  return Status::Ok();
}
Status CudaBuffer::download(void* host, size_t bytes, size_t offset) const {
  if (offset + bytes > n_) return out_of_range("CudaBuffer::download past the end");
  TQKV_CUDA_TRY(cudaMemcpy(host, static_cast<const char*>(p_) + offset, bytes, cudaMemcpyDeviceToHost));
  return Status::Ok();
}
Status CudaBuffer::fill_byte(int value) {
  if (n_) TQKV_CUDA_TRY(cudaMemset(p_, value, n_));
  return Status::Ok();
}
Status cuda_synchronize() {
  TQKV_CUDA_TRY(cudaDeviceSynchronize());
  return Status::Ok();
}

namespace {

// Host description of one side: encoder parameters, per-head rotations, decode tables.
struct SideHost {
  gpu::EncodeSide enc;
  int codec = -1;  // -1: no page codec (per-vector encode only)
  std::vector<float> signs;
  std::vector<int> perm;
  std::vector<uint32_t> lut;   // pair table (f16x2)
  std::vector<float> zlut;     // field -> z (float)
  std::vector<float> sign0;    // [heads][dim] signs of the single round (power-of-two dims)
};

Status describe_side(const std::vector<const Quantizer*>& qs, SideHost* out) {
  const Quantizer& q0 = *qs[0];
  const FormatSpec f = q0.format();
  const int d = q0.dim();
  if (d > 256) return unsupported("CUDA encode supports head_dim <= 256, got " + std::to_string(d));
  gpu::EncodeSide& e = out->enc;
  e.dim = d;
  e.code_size = static_cast<int>(q0.code_size());
  // Formats outside the CUDA subset (the peers rq4_0/riq4_nl/qjl/tqp/rabitq1, kivi; pk{b} keys
  // take prerope_cache.cu's path before this, pk values are refused by make) are refused here
  // with the supported list, before any rotated-quantizer assumption.
  constexpr const char* kSupported =
      " (CUDA supports rvq1x2, tq2, rvq2x2, tq4, rvq1x4, q4_0, q8_0, f16, and pk{b} keys with CudaCacheConfig::rope)";
  if (f.pre_rope() || (f.rotated() && !dynamic_cast<const RotatedQuantizer*>(&q0)))
    return unsupported("no CUDA path for format " + f.name() + kSupported);
  if (f.rotated()) {
    const int total = f.bits * f.passes;
    if (total > 8) return unsupported("CUDA encode needs passes * bits <= 8, got " + f.name());
    e.kind = 0;
    e.bits = f.bits;
    e.passes = f.passes;
    out->codec = total == 2 ? gpu::kLut2 : total == 4 ? gpu::kLut4 : -1;
    const auto* rq = dynamic_cast<const RotatedQuantizer*>(&q0);
    if (!rq) return internal_error("rotated format without a RotatedQuantizer");
    e.norm_correction = rq->params().norm_correction ? 1 : 0;
    for (int k = 0; k < f.passes; ++k) {
      const auto& cb = rq->codebooks()->passes[k];
      for (size_t j = 0; j < cb.levels.size() && j < 16; ++j) e.levels[k][j] = cb.levels[j];
      for (size_t j = 0; j < cb.thresholds.size() && j < 16; ++j) e.thresholds[k][j] = cb.thresholds[j];
    }
    const Rotation& r0 = *rq->rotation();
    if (!r0.enabled()) {
      e.rounds = 0;
      e.pow2 = 1;
    } else {
      e.rounds = static_cast<int>(r0.rounds().size());
      e.pow2 = r0.rounds()[0].perm.empty() ? 1 : 0;
    }
    for (const Quantizer* q : qs) {
      const auto* r = dynamic_cast<const RotatedQuantizer*>(q);
      for (const auto& rd : r->rotation()->rounds()) {
        out->signs.insert(out->signs.end(), rd.signs.begin(), rd.signs.end());
        if (!e.pow2) out->perm.insert(out->perm.end(), rd.perm.begin(), rd.perm.end());
      }
      if (e.pow2) {
        if (r->rotation()->enabled()) out->sign0.insert(out->sign0.end(), r->rotation()->rounds()[0].signs.begin(), r->rotation()->rounds()[0].signs.end());
        else out->sign0.insert(out->sign0.end(), d, 1.0f);
      }
    }
    if (out->codec >= 0) {
      const int w = total, nf = 1 << w;
      out->zlut.resize(nf);
      for (int fld = 0; fld < nf; ++fld) {
        float z = 0;
        for (int k = 0; k < f.passes; ++k) {
          const int qk = (fld >> (f.bits * k)) & ((1 << f.bits) - 1);
          z = k == 0 ? e.levels[0][qk] : z + e.levels[k][qk];  // the CPU decoder's order
        }
        out->zlut[fld] = z;
      }
      out->lut.resize(static_cast<size_t>(nf) * nf);
      for (int hi = 0; hi < nf; ++hi)
        for (int lo = 0; lo < nf; ++lo)
          out->lut[lo | (hi << w)] = float_to_half(out->zlut[lo]) | (static_cast<uint32_t>(float_to_half(out->zlut[hi])) << 16);
    }
  } else if (f.kind == FormatKind::kQ8_0) {
    e.kind = 1; out->codec = gpu::kQ8;
  } else if (f.kind == FormatKind::kQ4_0) {
    e.kind = 2; out->codec = gpu::kQ4;
  } else if (f.kind == FormatKind::kF16) {
    e.kind = 3; out->codec = gpu::kF16;
  } else {
    return unsupported("no CUDA path for format " + f.name() + kSupported);
  }
  e.codec = std::max(out->codec, 0);
  if (out->codec >= 0 && d % 16 != 0) out->codec = -1;  // pages need head_dim % 16 == 0
  return Status::Ok();
}

template <class T>
Status upload_vec(const std::vector<T>& v, CudaBuffer* b) {
  if (v.empty()) return Status::Ok();
  TQKV_ASSIGN_OR_RETURN(*b, CudaBuffer::alloc(v.size() * sizeof(T)));
  return b->upload(v.data(), v.size() * sizeof(T));
}

struct DeviceSide {
  CudaBuffer signs, perm, lut, zlut, sign0;
};
Status upload_side(SideHost& s, DeviceSide* d) {
  TQKV_RETURN_IF_ERROR(upload_vec(s.signs, &d->signs));
  TQKV_RETURN_IF_ERROR(upload_vec(s.perm, &d->perm));
  TQKV_RETURN_IF_ERROR(upload_vec(s.lut, &d->lut));
  TQKV_RETURN_IF_ERROR(upload_vec(s.zlut, &d->zlut));
  TQKV_RETURN_IF_ERROR(upload_vec(s.sign0, &d->sign0));
  s.enc.signs = d->signs.as<float>();
  s.enc.perm = d->perm.as<int>();
  return Status::Ok();
}

}  // namespace

// ---- per-vector encode ----
Status cuda_encode_vectors(const Quantizer& q, const void* x, CudaDType dtype, size_t n, uint8_t* codes) {
  SideHost s;
  TQKV_RETURN_IF_ERROR(describe_side({&q}, &s));
  DeviceSide ds;
  TQKV_RETURN_IF_ERROR(upload_side(s, &ds));
  gpu::EncodeSide sides[2] = {s.enc, s.enc};
  std::vector<gpu::EncodeJob> jobs;
  const size_t esz = dtype == CudaDType::kBF16 ? 2 : 4;
  for (size_t v0 = 0; v0 < n; v0 += 16) {
    gpu::EncodeJob j{};
    j.src = static_cast<const char*>(x) + v0 * q.dim() * esz;
    j.src_stride = q.dim();
    j.vec_out = codes + v0 * q.code_size();
    j.s0 = 0;
    j.s1 = static_cast<int>(std::min<size_t>(16, n - v0));
    jobs.push_back(j);
  }
  TQKV_ASSIGN_OR_RETURN(CudaBuffer dsides, CudaBuffer::alloc(sizeof(sides)));
  TQKV_RETURN_IF_ERROR(dsides.upload(sides, sizeof(sides)));
  TQKV_ASSIGN_OR_RETURN(CudaBuffer djobs, CudaBuffer::alloc(jobs.size() * sizeof(gpu::EncodeJob)));
  TQKV_RETURN_IF_ERROR(djobs.upload(jobs.data(), jobs.size() * sizeof(gpu::EncodeJob)));
  TQKV_CUDA_TRY(gpu::launch_encode(q.dim(), dtype == CudaDType::kBF16, dsides.as<gpu::EncodeSide>(),
                                   djobs.as<gpu::EncodeJob>(), static_cast<int>(jobs.size()), 0));
  TQKV_CUDA_TRY(cudaDeviceSynchronize());
  return Status::Ok();
}

// ---- the cache ----
struct CudaLayerCache::Impl {
  CudaCacheConfig cfg;
  std::vector<std::unique_ptr<Quantizer>> keyq, valq;
  SideHost hk, hv;
  DeviceSide dk, dv;
  CudaBuffer kpool, vpool, block_table, sides, jobs, items, ws;
  size_t kphb = 0, vphb = 0;  // page bytes per head
  std::vector<int> free_pages;
  std::vector<std::vector<int>> seq_pages;
  std::vector<int> seq_len;
  std::vector<int> table_host;
  int last_jobs = 0;
  int ctas_per_sm[3] = {0, 0, 0};  // per kernel variant (TQKV_ATTN_VARIANT 0, 1, 2)
  int sms = 0;                  // multiprocessors of the device
  std::map<std::vector<int>, CudaBuffer> item_lists;
  gpu::PkStatePtr pk;  // pk{b} keys (prerope_cache.cu); null otherwise

  gpu::PkCtx pk_ctx() {
    gpu::PkCtx c;
    c.cfg = &cfg;
    c.kpool = kpool.as<uint8_t>();
    c.kphb = kphb;
    c.vpool = vpool.as<uint8_t>();
    c.vphb = vphb;
    c.vcodec = hv.codec;
    c.sides = sides.as<gpu::EncodeSide>();
    c.vside = attn_side(true);
    c.vzlut = dv.zlut.as<float>();
    c.v_rotated = cfg.value_format.rotated() && hv.enc.rounds > 0 ? 1 : 0;
    c.block_table = block_table.as<int>();
    c.seq_pages = &seq_pages;
    c.seq_len = &seq_len;
    return c;
  }

  gpu::AttnSide attn_side(bool value) const {
    gpu::AttnSide s;
    const SideHost& h = value ? hv : hk;
    s.pool = (value ? vpool : kpool).as<uint8_t>();
    s.page_head_bytes = value ? vphb : kphb;
    s.meta_region = gpu::meta_region_bytes(h.codec, cfg.head_dim, cfg.page_tokens);
    s.meta_bytes = gpu::codec_meta_bytes(h.codec, cfg.head_dim);
    s.lut = (value ? dv : dk).lut.as<uint32_t>();
    s.signs = (value ? dv : dk).sign0.as<float>();
    return s;
  }
  Status ensure_capacity(CudaBuffer* b, size_t bytes) {
    if (b->bytes() >= bytes) return Status::Ok();
    TQKV_ASSIGN_OR_RETURN(*b, CudaBuffer::alloc(std::max(bytes, 2 * b->bytes())));
    return Status::Ok();
  }
};

CudaLayerCache::CudaLayerCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaLayerCache::~CudaLayerCache() = default;
const CudaCacheConfig& CudaLayerCache::config() const { return impl_->cfg; }
int CudaLayerCache::n_tokens(int seq) const {
  return seq >= 0 && seq < static_cast<int>(impl_->seq_len.size()) ? impl_->seq_len[seq] : 0;
}
const Quantizer* CudaLayerCache::key_quantizer(int head) const {
  return head >= 0 && head < static_cast<int>(impl_->keyq.size()) ? impl_->keyq[head].get() : nullptr;
}
const PreRopeKeyCodec* CudaLayerCache::key_codec(int seq, int head) const {
  return impl_->pk ? gpu::pk_codec(*impl_->pk, seq, head) : nullptr;
}
Status CudaLayerCache::set_position_offset(int seq, int64_t offset) {
  if (!impl_->pk) return Status::Ok();  // post-RoPE keys: positions do not enter attention
  return gpu::pk_set_offset(*impl_->pk, seq, offset);
}
const Quantizer* CudaLayerCache::value_quantizer(int head) const { return impl_->valq[head].get(); }
size_t CudaLayerCache::bytes_resident() const {
  return impl_->kpool.bytes() + impl_->vpool.bytes() + impl_->block_table.bytes() +
         (impl_->pk ? gpu::pk_bytes_resident(*impl_->pk) : 0);
}
size_t CudaLayerCache::bytes_per_token_head() const {
  const auto& c = impl_->cfg;
  return (impl_->kphb + impl_->vphb) / c.page_tokens;
}

StatusOr<std::unique_ptr<CudaLayerCache>> CudaLayerCache::make(const CudaCacheConfig& cfg) {
  std::string why;
  if (!cuda_available(&why)) return unsupported(why);
  if (cfg.n_kv_heads < 1) return invalid_argument("n_kv_heads must be >= 1");
  if (cfg.kv_head_offset < 0) return invalid_argument("kv_head_offset must be >= 0, got " + std::to_string(cfg.kv_head_offset));
  if (cfg.head_dim < 16 || cfg.head_dim % 16 != 0 || cfg.head_dim > 256)
    return invalid_argument("CUDA cache needs head_dim a multiple of 16 in 16..256, got " + std::to_string(cfg.head_dim));
  if (cfg.page_tokens < 16 || cfg.page_tokens % 16 != 0)
    return invalid_argument("page_tokens must be a positive multiple of 16, got " + std::to_string(cfg.page_tokens));
  if (cfg.max_pages < 1 || cfg.max_seqs < 1) return invalid_argument("max_pages and max_seqs must be >= 1");
  auto impl = std::make_unique<Impl>();
  impl->cfg = cfg;
  if (impl->cfg.max_pages_per_seq <= 0) impl->cfg.max_pages_per_seq = cfg.max_pages;
  for (const FormatSpec& f : {cfg.key_format, cfg.value_format})
    if (f.kind == FormatKind::kTqo)  // a per-sequence outlier channel set (tqkv/outlier_split.h)
      return unsupported("no CUDA path for format " + f.name() + " (per-sequence outlier channels are CPU-only)");
  if (cfg.value_format.pre_rope())  // pk values (-ctv pk{b}) are CPU-only
    return unsupported("no CUDA path for value format " + cfg.value_format.name() +
                       " (pk{b} is a GPU key format only; values: rvq1x2, tq2, rvq2x2, tq4, rvq1x4, q4_0, q8_0, f16)");
  const bool pk = cfg.key_format.pre_rope();  // pk{b} keys: prerope_cache.cu
  if (pk) {
    TQKV_ASSIGN_OR_RETURN(impl->pk, gpu::pk_make(impl->cfg));
  }
  std::vector<const Quantizer*> kq, vq;
  for (int h = 0; h < cfg.n_kv_heads; ++h) {
    QuantOptions qk = cfg.quant, qv = cfg.quant;
    const int g = cfg.kv_head_offset + h;  // the global head: == LayerKVCache::make(HeadShard, ...)
    qk.seed = cache_rotation_seed(cfg.quant.seed, cfg.layer, g, CacheStream::kKey);
    qv.seed = cache_rotation_seed(cfg.quant.seed, cfg.layer, g, CacheStream::kValue);
    qv.value_stream = true;
    TQKV_ASSIGN_OR_RETURN(auto b, make_quantizer(cfg.value_format, cfg.head_dim, qv));
    vq.push_back(b.get());
    impl->valq.push_back(std::move(b));
    if (pk) continue;  // pk keys have a codec per sequence (fitted at pk_calib_tokens)
    TQKV_ASSIGN_OR_RETURN(auto a, make_quantizer(cfg.key_format, cfg.head_dim, qk));
    kq.push_back(a.get());
    impl->keyq.push_back(std::move(a));
  }
  TQKV_RETURN_IF_ERROR(describe_side(vq, &impl->hv));
  if (pk) impl->hk = impl->hv;  // placeholder key side: the fused encode's side 0 is never used
  else TQKV_RETURN_IF_ERROR(describe_side(kq, &impl->hk));
  if (impl->hk.codec < 0 || impl->hv.codec < 0)
    return unsupported("no CUDA page layout for " + cfg.key_format.name() + " / " + cfg.value_format.name() +
                       " (supported: rvq1x2, tq2, rvq2x2, tq4, rvq1x4, q4_0, q8_0, f16)");
  TQKV_RETURN_IF_ERROR(upload_side(impl->hk, &impl->dk));
  TQKV_RETURN_IF_ERROR(upload_side(impl->hv, &impl->dv));
  impl->hk.enc.codec = impl->hk.codec;
  impl->hv.enc.codec = impl->hv.codec;
  gpu::EncodeSide sides[2] = {impl->hk.enc, impl->hv.enc};
  TQKV_ASSIGN_OR_RETURN(impl->sides, CudaBuffer::alloc(sizeof(sides)));
  TQKV_RETURN_IF_ERROR(impl->sides.upload(sides, sizeof(sides)));
  impl->kphb = pk ? gpu::pk_key_page_head_bytes(cfg) : gpu::page_head_bytes(impl->hk.codec, cfg.head_dim, cfg.page_tokens);
  impl->vphb = gpu::page_head_bytes(impl->hv.codec, cfg.head_dim, cfg.page_tokens);
  const size_t H = cfg.n_kv_heads;
  TQKV_ASSIGN_OR_RETURN(impl->kpool, CudaBuffer::alloc(static_cast<size_t>(cfg.max_pages) * H * impl->kphb));
  TQKV_ASSIGN_OR_RETURN(impl->vpool, CudaBuffer::alloc(static_cast<size_t>(cfg.max_pages) * H * impl->vphb));
  TQKV_RETURN_IF_ERROR(impl->kpool.fill_byte(0));
  TQKV_RETURN_IF_ERROR(impl->vpool.fill_byte(0));
  impl->table_host.assign(static_cast<size_t>(cfg.max_seqs) * impl->cfg.max_pages_per_seq, 0);
  TQKV_ASSIGN_OR_RETURN(impl->block_table, CudaBuffer::alloc(impl->table_host.size() * sizeof(int)));
  TQKV_RETURN_IF_ERROR(impl->block_table.upload(impl->table_host.data(), impl->table_host.size() * sizeof(int)));
  for (int i = cfg.max_pages - 1; i >= 0; --i) impl->free_pages.push_back(i);
  impl->seq_pages.resize(cfg.max_seqs);
  impl->seq_len.assign(cfg.max_seqs, 0);
  return std::unique_ptr<CudaLayerCache>(new CudaLayerCache(std::move(impl)));
}

Status CudaLayerCache::append(const std::vector<int>& seqs, int n, const void* k, const void* v, CudaDType dtype) {
  Impl& I = *impl_;
  const auto& c = I.cfg;
  if (n < 1) return invalid_argument("append needs n >= 1");
  const int P = c.page_tokens, D = c.head_dim, H = c.n_kv_heads;
  for (size_t a = 0; a < seqs.size(); ++a) {
    if (seqs[a] < 0 || seqs[a] >= c.max_seqs) return invalid_argument("sequence id out of range: " + std::to_string(seqs[a]));
    for (size_t b = 0; b < a; ++b)
      if (seqs[a] == seqs[b]) return invalid_argument("append: sequence ids must be distinct");
  }
  // pages
  for (int s : seqs) {
    const int need = (I.seq_len[s] + n + P - 1) / P;
    if (need > c.max_pages_per_seq) return out_of_range("sequence " + std::to_string(s) + " would exceed max_pages_per_seq");
    while (static_cast<int>(I.seq_pages[s].size()) < need) {
      if (I.free_pages.empty()) return out_of_range("CUDA cache page pool exhausted (max_pages " + std::to_string(c.max_pages) + ")");
      const int pid = I.free_pages.back();
      I.free_pages.pop_back();
      I.table_host[static_cast<size_t>(s) * c.max_pages_per_seq + I.seq_pages[s].size()] = pid;
      I.seq_pages[s].push_back(pid);
    }
    TQKV_RETURN_IF_ERROR(I.block_table.upload(I.table_host.data() + static_cast<size_t>(s) * c.max_pages_per_seq,
                                              c.max_pages_per_seq * sizeof(int), static_cast<size_t>(s) * c.max_pages_per_seq * sizeof(int)));
  }
  if (I.pk) return gpu::pk_append(*I.pk, I.pk_ctx(), seqs, n, k, v, dtype);
  // jobs
  const size_t esz = dtype == CudaDType::kBF16 ? 2 : 4;
  std::vector<gpu::EncodeJob> jobs;
  for (size_t a = 0; a < seqs.size(); ++a) {
    const int s = seqs[a], len = I.seq_len[s];
    for (int side = 0; side < 2; ++side) {
      const SideHost& sh = side ? I.hv : I.hk;
      uint8_t* pool = (side ? I.vpool : I.kpool).as<uint8_t>();
      const size_t phb = side ? I.vphb : I.kphb;
      const size_t meta_region = gpu::meta_region_bytes(sh.codec, D, P);
      const size_t tb = gpu::tile_body_bytes(sh.codec, D);
      const int mb = gpu::codec_meta_bytes(sh.codec, D);
      const char* src = static_cast<const char*>(side ? v : k);
      for (int h = 0; h < H; ++h) {
        for (int ti = len / 16; ti * 16 < len + n; ++ti) {
          const int s0 = std::max(len, ti * 16) - ti * 16, s1 = std::min(len + n, ti * 16 + 16) - ti * 16;
          const int page = ti * 16 / P, lt = (ti * 16 % P) / 16;
          uint8_t* base = pool + (static_cast<size_t>(I.seq_pages[s][page]) * H + h) * phb;
          gpu::EncodeJob j{};
          j.src = src + ((a * H + h) * static_cast<size_t>(n) + (ti * 16 + s0 - len)) * D * esz;
          j.src_stride = D;
          j.tile = base + meta_region + lt * tb;
          j.meta = base + static_cast<size_t>(lt) * 16 * mb;
          j.s0 = s0;
          j.s1 = s1;
          j.head = h;
          j.side = side;
          j.merge = s0 > 0 ? 1 : 0;
          jobs.push_back(j);
        }
      }
    }
  }
  TQKV_RETURN_IF_ERROR(I.ensure_capacity(&I.jobs, jobs.size() * sizeof(gpu::EncodeJob)));
  TQKV_RETURN_IF_ERROR(I.jobs.upload(jobs.data(), jobs.size() * sizeof(gpu::EncodeJob)));
  TQKV_CUDA_TRY(gpu::launch_encode(D, dtype == CudaDType::kBF16, I.sides.as<gpu::EncodeSide>(), I.jobs.as<gpu::EncodeJob>(),
                                   static_cast<int>(jobs.size()), 0));
  for (int s : seqs) I.seq_len[s] += n;
  I.last_jobs = static_cast<int>(jobs.size());
  return Status::Ok();
}

StatusOr<float> CudaLayerCache::append_timed(const std::vector<int>& seqs, int n, const void* k, const void* v,
                                             CudaDType dtype, int repeats) {
  if (impl_->pk) return unsupported("append_timed re-runs one fused encode launch: not available for pk{b} keys");
  TQKV_RETURN_IF_ERROR(append(seqs, n, k, v, dtype));
  Impl& I = *impl_;
  cudaEvent_t e0, e1;
  TQKV_CUDA_TRY(cudaEventCreate(&e0));
  TQKV_CUDA_TRY(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int r = 0; r < std::max(1, repeats); ++r) {
    TQKV_CUDA_TRY(cudaEventRecord(e0, 0));
    TQKV_CUDA_TRY(gpu::launch_encode(I.cfg.head_dim, dtype == CudaDType::kBF16, I.sides.as<gpu::EncodeSide>(),
                                     I.jobs.as<gpu::EncodeJob>(), I.last_jobs, 0));
    TQKV_CUDA_TRY(cudaEventRecord(e1, 0));
    TQKV_CUDA_TRY(cudaEventSynchronize(e1));
    float t = 0;
    TQKV_CUDA_TRY(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Status CudaLayerCache::truncate(int seq, int n) {
  Impl& I = *impl_;
  if (seq < 0 || seq >= I.cfg.max_seqs || n < 0 || n > I.seq_len[seq]) return invalid_argument("truncate: bad sequence or length");
  const int keep = (n + I.cfg.page_tokens - 1) / I.cfg.page_tokens;
  while (static_cast<int>(I.seq_pages[seq].size()) > keep) {
    const int pid = I.seq_pages[seq].back();
    I.seq_pages[seq].pop_back();
    const size_t H = I.cfg.n_kv_heads;
    TQKV_CUDA_TRY(cudaMemset(I.kpool.as<uint8_t>() + pid * H * I.kphb, 0, H * I.kphb));
    TQKV_CUDA_TRY(cudaMemset(I.vpool.as<uint8_t>() + pid * H * I.vphb, 0, H * I.vphb));
    I.free_pages.push_back(pid);
  }
  I.seq_len[seq] = n;
  if (I.pk) gpu::pk_truncate(*I.pk, seq, n);
  return Status::Ok();
}

Status CudaLayerCache::attend(const std::vector<int>& seqs, int m, int n_q_heads, const float* q, float* out, float scale,
                              int n_splits) {
  Impl& I = *impl_;
  const auto& c = I.cfg;
  if (I.pk) return gpu::pk_attend(*I.pk, I.pk_ctx(), seqs, m, n_q_heads, q, out, scale, n_splits);
  if (seqs.empty()) return Status::Ok();
  if (n_q_heads % c.n_kv_heads != 0 || n_q_heads / c.n_kv_heads > 8 || n_q_heads < c.n_kv_heads)
    return invalid_argument("n_q_heads must be n_kv_heads * g with g in 1..8");
  if (!gpu::attention_supported(I.hk.codec, I.hv.codec, c.head_dim))
    return unsupported("CUDA attention supports head_dim 64/128/256 and equal key/value codecs (or 2-bit/4-bit rotated mixes)");
  int maxlen = 0;
  std::vector<int> host(2 * seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int s = seqs[i];
    if (s < 0 || s >= c.max_seqs) return invalid_argument("sequence id out of range");
    if (m < 1 || m > I.seq_len[s]) return invalid_argument("attend: m must be in 1..n_tokens(seq)");
    host[i] = s;
    host[seqs.size() + i] = I.seq_len[s];
    maxlen = std::max(maxlen, I.seq_len[s]);
  }
  // Item lists live on the device, keyed by content: repeated batches (every decode step of a
  // benchmark, or of a server whose lengths did not change) launch with no host-to-device copy.
  auto it = I.item_lists.find(host);
  if (it == I.item_lists.end()) {
    if (I.item_lists.size() >= 256) I.item_lists.clear();
    TQKV_ASSIGN_OR_RETURN(CudaBuffer buf, CudaBuffer::alloc(host.size() * sizeof(int)));
    TQKV_RETURN_IF_ERROR(buf.upload(host.data(), host.size() * sizeof(int)));
    it = I.item_lists.emplace(host, std::move(buf)).first;
  }
  const CudaBuffer& items = it->second;
  gpu::AttnParams p;
  p.k = I.attn_side(false);
  p.v = I.attn_side(true);
  p.n_kv_heads = c.n_kv_heads;
  p.group = n_q_heads / c.n_kv_heads;
  p.page_tokens = c.page_tokens;
  p.dim = c.head_dim;
  p.block_table = I.block_table.as<int>();
  p.max_pages_per_seq = c.max_pages_per_seq;
  p.item_seq = items.as<int>();
  p.item_len = items.as<int>() + seqs.size();
  p.m = m;
  p.qpc = 8 / p.group;
  const int batch = static_cast<int>(seqs.size());
  const int ntiles = (maxlen + 15) / 16;
  const int qchunks = (m + p.qpc - 1) / p.qpc;
  // TQKV_ATTN_VARIANT=1 selects the second compiled kernel variant (d = 128; see
  // AttnShape in attention.cu): a benchmark knob for the registers-versus-ILP trade-off;
  // TQKV_ATTN_VARIANT=2 the half-size lut4 tables (lut4 formats, d = 128).
  const char* venv = std::getenv("TQKV_ATTN_VARIANT");
  const int variant = (venv && (venv[0] == '1' || venv[0] == '2') && venv[1] == 0) ? venv[0] - '0' : 0;
  p.variant = variant;
  if (n_splits <= 0) {
    if (I.sms <= 0) {  // queried once: attend() is on the host's critical path of every decode step
      int dev = 0, n = 0;
      if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess)
        I.sms = n;
      if (I.sms <= 0) I.sms = 132;
    }
    const int sms = I.sms;
    // Fill exactly one wave of resident CTAs: a second, partial wave would double the time.
    int& cps = I.ctas_per_sm[variant];
    if (cps <= 0) cps = gpu::attention_ctas_per_sm(I.hk.codec, I.hv.codec, c.head_dim, variant);
    const long slots = static_cast<long>(sms) * cps;
    const long ctas = static_cast<long>(batch) * c.n_kv_heads * qchunks;
    n_splits = static_cast<int>(std::max<long>(1, slots / ctas));
    n_splits = std::min(n_splits, std::max(1, ntiles / 8));  // at least 2 tiles per warp
  }
  n_splits = std::max(1, std::min(n_splits, ntiles));
  p.tiles_per_split = (ntiles + n_splits - 1) / n_splits;
  p.n_splits = (ntiles + p.tiles_per_split - 1) / p.tiles_per_split;
  p.q = q;
  p.out = out;
  const float sc = scale > 0 ? scale : 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  p.scale_log2 = sc * 1.4426950408889634f;
  const size_t rows = static_cast<size_t>(batch) * n_q_heads * m * p.n_splits;
  TQKV_RETURN_IF_ERROR(I.ensure_capacity(&I.ws, rows * (c.head_dim + 2) * sizeof(float)));
  p.ws_o = I.ws.as<float>();
  p.ws_ml = I.ws.as<float>() + rows * c.head_dim;
  p.k_rotated = c.key_format.rotated() && I.hk.enc.rounds > 0 ? 1 : 0;
  p.v_rotated = c.value_format.rotated() && I.hv.enc.rounds > 0 ? 1 : 0;
  TQKV_CUDA_TRY(gpu::launch_attention(I.hk.codec, I.hv.codec, p, batch, 0));
  return Status::Ok();
}

Status CudaLayerCache::dequantize(const std::vector<int>& seqs, int L, bool value, uint16_t* out) const {
  const Impl& I = *impl_;
  const auto& c = I.cfg;
  if (I.pk && !value) return unsupported("dequantize: pk{b} keys have no dense GPU dequantization (RoPE is applied in attention)");
  std::vector<int> host(2 * seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (seqs[i] < 0 || seqs[i] >= c.max_seqs || I.seq_len[seqs[i]] > L) return invalid_argument("dequantize: bad sequence or L");
    host[i] = seqs[i];
    host[seqs.size() + i] = I.seq_len[seqs[i]];
  }
  TQKV_ASSIGN_OR_RETURN(CudaBuffer items, CudaBuffer::alloc(host.size() * sizeof(int)));
  TQKV_RETURN_IF_ERROR(items.upload(host.data(), host.size() * sizeof(int)));
  gpu::AttnParams p;
  p.n_kv_heads = c.n_kv_heads;
  p.page_tokens = c.page_tokens;
  p.dim = c.head_dim;
  p.block_table = I.block_table.as<int>();
  p.max_pages_per_seq = c.max_pages_per_seq;
  p.item_seq = items.as<int>();
  p.item_len = items.as<int>() + seqs.size();
  TQKV_CUDA_TRY(gpu::launch_dequant((value ? I.hv : I.hk).codec, value, p, I.attn_side(value),
                                    (value ? I.dv : I.dk).zlut.as<float>(), static_cast<int>(seqs.size()), L, out, 0));
  TQKV_CUDA_TRY(cudaDeviceSynchronize());  // `items` is freed on return
  return Status::Ok();
}

Status CudaLayerCache::load_sequence(int seq, const LayerView& L, const SequenceView& src) {
  Impl& I = *impl_;
  const auto& c = I.cfg;
  if (seq < 0 || seq >= c.max_seqs || I.seq_len[seq] != 0) return invalid_argument("load_sequence: target sequence must exist and be empty");
  if (L.n_kv_heads != c.n_kv_heads || L.head_dim != c.head_dim || !(L.key.format == c.key_format) ||
      !(L.value.format == c.value_format))
    return invalid_argument("load_sequence: the CPU layer has other heads, head_dim or formats");
  if (L.sink_tokens != 0 || L.recent_window != 0 || src.n_compressed != src.n_tokens)
    return unsupported("load_sequence: CPU caches with f16 sinks or a recent window are not supported");
  if (L.key.pre_rope) return unsupported("load_sequence: pre-RoPE keys have no CUDA path");
  const int n = src.n_tokens, D = c.head_dim, P = c.page_tokens;
  // Same rotations (and so the same quantizers) as this cache's heads?
  for (int h = 0; h < c.n_kv_heads; ++h)
    for (int side = 0; side < 2; ++side) {
      const HeadCodec& hc = (side ? L.value : L.key).heads[h];
      const auto* mine = dynamic_cast<const RotatedQuantizer*>(side ? I.valq[h].get() : I.keyq[h].get());
      if (mine && (!hc.rotation || hc.rotation->rounds().size() != mine->rotation()->rounds().size() ||
                   (!hc.rotation->rounds().empty() && hc.rotation->rounds()[0].signs != mine->rotation()->rounds()[0].signs)))
        return invalid_argument("load_sequence: the CPU layer's rotations differ (other seed or layer index)");
    }
  // pages
  const int need = (n + P - 1) / P;
  if (need > c.max_pages_per_seq) return out_of_range("load_sequence: sequence longer than max_pages_per_seq");
  if (static_cast<int>(I.free_pages.size()) < need) return out_of_range("CUDA cache page pool exhausted");
  for (int pg = 0; pg < need; ++pg) {
    const int pid = I.free_pages.back();
    I.free_pages.pop_back();
    I.table_host[static_cast<size_t>(seq) * c.max_pages_per_seq + pg] = pid;
    I.seq_pages[seq].push_back(pid);
  }
  TQKV_RETURN_IF_ERROR(I.block_table.upload(I.table_host.data() + static_cast<size_t>(seq) * c.max_pages_per_seq,
                                            c.max_pages_per_seq * sizeof(int), static_cast<size_t>(seq) * c.max_pages_per_seq * sizeof(int)));
  // gather per-vector codes from the view, build GPU pages on the host, upload
  for (int side = 0; side < 2; ++side) {
    const StreamLayout& sl = side ? L.value : L.key;
    const SideHost& sh = side ? I.hv : I.hk;
    const FormatSpec f = sl.format;
    const int codec = sh.codec;
    const size_t phb = side ? I.vphb : I.kphb, cs = sl.code_size;
    const size_t mr = gpu::meta_region_bytes(codec, D, P), tb = gpu::tile_body_bytes(codec, D);
    const int mb = gpu::codec_meta_bytes(codec, D), w = gpu::codec_field_bits(codec);
    uint8_t* pool = (side ? I.vpool : I.kpool).as<uint8_t>();
    std::vector<uint8_t> code(cs), page(phb);
    std::vector<uint16_t> fields(D);
    for (int h = 0; h < c.n_kv_heads; ++h) {
      const StreamPages& sp = side ? src.heads[h].value : src.heads[h].key;
      for (int pg = 0; pg < need; ++pg) {
        std::fill(page.begin(), page.end(), 0);
        for (int tp = 0; tp < P && pg * P + tp < n; ++tp) {
          const int t = pg * P + tp;
          if (sl.storage == KVStorage::kPerVector) {
            std::memcpy(code.data(), sl.code(sp.pages, t), cs);
          } else {  // bit-sliced CPU tile -> per-vector code (docs/format.md "KV cache pages")
            const uint8_t* tile = sl.tile(sp.pages, t);
            const int slot = t % kTileTokens, pb = (D + 7) / 8;
            std::fill(code.begin(), code.end(), 0);
            std::memcpy(code.data(), sl.tiles.scales(tile) + slot, 4);
            for (int pl = 0; pl < sl.tiles.planes; ++pl)
              for (int i = 0; i < D; ++i) {
                size_t byte;  // both tile layouts (2-bit and lut), TileParams::bit_location
                int b;
                sl.tiles.bit_location(pl, slot, i, &byte, &b);
                if ((tile[byte] >> b) & 1) code[4 + pl * pb + i / 8] |= static_cast<uint8_t>(1 << (i % 8));
              }
          }
          // per-vector code -> fields + meta
          uint8_t* meta = page.data() + static_cast<size_t>(tp) * mb;
          if (f.rotated()) {
            std::memcpy(meta, code.data(), 4);
            const int pb = (D + 7) / 8;
            for (int i = 0; i < D; ++i) {
              uint16_t fl = 0;
              for (int k = 0; k < f.passes * f.bits; ++k)
                fl |= static_cast<uint16_t>(((code[4 + k * pb + i / 8] >> (i % 8)) & 1) << k);
              fields[i] = fl;
            }
          } else if (f.kind == FormatKind::kQ8_0 || f.kind == FormatKind::kQ4_0) {
            const bool q4 = f.kind == FormatKind::kQ4_0;
            const int bb = q4 ? 18 : 34;
            for (int b = 0; b < (D + 31) / 32; ++b) std::memcpy(meta + 2 * b, code.data() + b * bb, 2);
            for (int i = 0; i < D; ++i) {
              const uint8_t* blk = code.data() + (i / 32) * bb + 2;
              const int e = i % 32;
              fields[i] = q4 ? static_cast<uint16_t>(e < 16 ? blk[e] & 15 : blk[e - 16] >> 4) : blk[e];
            }
          } else {
            for (int i = 0; i < D; ++i) std::memcpy(&fields[i], code.data() + 2 * i, 2);
          }
          uint8_t* tile = page.data() + mr + (tp / 16) * tb;
          for (int i = 0; i < D; ++i) {
            int lane, pr, s;
            gpu::element_slot(side == 1, D, tp % 16, i, &lane, &pr, &s);
            const int bit = gpu::field_bit(codec, pr, s);
            uint32_t word;
            uint8_t* wp = tile + lane * gpu::chunk_bytes(codec, D) + 4 * (bit / 32);
            std::memcpy(&word, wp, 4);
            word |= (static_cast<uint32_t>(fields[i]) & (w == 16 ? 0xffffu : ((1u << w) - 1u))) << (bit % 32);
            std::memcpy(wp, &word, 4);
          }
        }
        const int pid = I.seq_pages[seq][pg];
        TQKV_CUDA_TRY(cudaMemcpy(pool + (static_cast<size_t>(pid) * c.n_kv_heads + h) * phb, page.data(), phb,
                                 cudaMemcpyHostToDevice));
      }
    }
  }
  I.seq_len[seq] = n;
  return Status::Ok();
}

Status CudaLayerCache::read_codes(int seq, int head, bool value, int t0, int t1, uint8_t* codes) const {
  const Impl& I = *impl_;
  const auto& c = I.cfg;
  if (seq < 0 || seq >= c.max_seqs || head < 0 || head >= c.n_kv_heads || t0 < 0 || t1 > I.seq_len[seq] || t0 > t1)
    return invalid_argument("read_codes: bad range");
  if (I.pk && !value) return gpu::pk_read_key_codes(*I.pk, const_cast<Impl&>(I).pk_ctx(), seq, head, t0, t1, codes);
  const SideHost& sh = value ? I.hv : I.hk;
  const int D = c.head_dim, P = c.page_tokens, codec = sh.codec;
  const size_t phb = value ? I.vphb : I.kphb;
  const size_t mr = gpu::meta_region_bytes(codec, D, P), tb = gpu::tile_body_bytes(codec, D);
  const int mb = gpu::codec_meta_bytes(codec, D);
  const size_t cs = (value ? I.valq : I.keyq)[head]->code_size();
  const FormatSpec f = value ? c.value_format : c.key_format;
  std::vector<uint8_t> page(phb);
  int loaded = -1;
  for (int t = t0; t < t1; ++t) {
    const int pg = t / P;
    if (pg != loaded) {
      const uint8_t* src = (value ? I.vpool : I.kpool).as<uint8_t>() + (static_cast<size_t>(I.seq_pages[seq][pg]) * c.n_kv_heads + head) * phb;
      TQKV_CUDA_TRY(cudaMemcpy(page.data(), src, phb, cudaMemcpyDeviceToHost));
      loaded = pg;
    }
    const int tp = t % P, lt = tp / 16, tt = tp % 16;
    const uint8_t* tile = page.data() + mr + lt * tb;
    auto field = [&](int i) -> uint32_t {
      int lane, pr, s;
      gpu::element_slot(value, D, tt, i, &lane, &pr, &s);
      const int bit = gpu::field_bit(codec, pr, s), w = gpu::codec_field_bits(codec);
      uint32_t word;
      std::memcpy(&word, tile + lane * gpu::chunk_bytes(codec, D) + 4 * (bit / 32), 4);
      return (word >> (bit % 32)) & (w == 16 ? 0xffffu : ((1u << w) - 1u));
    };
    uint8_t* out = codes + static_cast<size_t>(t - t0) * cs;
    std::memset(out, 0, cs);
    const uint8_t* meta = page.data() + static_cast<size_t>(tp) * mb;
    if (f.rotated()) {
      std::memcpy(out, meta, 4);
      const int pb = (D + 7) / 8;
      for (int i = 0; i < D; ++i) {
        const uint32_t fl = field(i);
        for (int k = 0; k < f.passes; ++k)
          for (int j = 0; j < f.bits; ++j)
            if ((fl >> (f.bits * k + j)) & 1) out[4 + (k * f.bits + j) * pb + i / 8] |= static_cast<uint8_t>(1 << (i % 8));
      }
    } else if (f.kind == FormatKind::kQ8_0 || f.kind == FormatKind::kQ4_0) {
      const bool q4 = f.kind == FormatKind::kQ4_0;
      const int nb = (D + 31) / 32, bb = q4 ? 18 : 34;
      for (int b = 0; b < nb; ++b) {
        std::memcpy(out + b * bb, meta + 2 * b, 2);
        for (int e = 0; e < 32; ++e) {
          const int i = 32 * b + e;
          const uint32_t fl = i < D ? field(i) : (q4 ? 8u : 0u);
          if (!q4) out[b * bb + 2 + e] = static_cast<uint8_t>(fl);
          else out[b * bb + 2 + (e % 16)] |= static_cast<uint8_t>(e < 16 ? fl : fl << 4);
        }
      }
    } else {
      for (int i = 0; i < D; ++i) {
        const uint16_t hv = static_cast<uint16_t>(field(i));
        std::memcpy(out + 2 * i, &hv, 2);
      }
    }
  }
  return Status::Ok();
}

}  // namespace tqkv
