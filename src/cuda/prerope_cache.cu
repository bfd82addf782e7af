// The pk{b} side of CudaLayerCache (tqkv/cuda.h): pending f16 rows, the statistics fit at N (on
// the host, with the CPU codec, so statistics and codes are the CPU's bit for bit), the encode
// launches for keys (prerope_encode.cu) and values (encode.cu's fused encode), and the attention
// launch (prerope_attention.cu). cache.cu owns the pages and calls in through prerope_cuda.h.
//
// The rule is LayerKVCache's (src/cache/kv_cache.cc, append_prerope) without sinks or window:
// token t < N of a sequence is stored as f16 K and V rows ("pending"); when the sequence reaches
// N tokens, each head's statistics are fitted on its f16 keys 0..N-1 (PreRopeKeyCodec::fit), the
// pending rows are encoded from their f16 values, and every later token is encoded as appended.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/half.h"
#include "cuda/cuda_internal.h"
#include "cuda/prerope_cuda.h"
#include "tqkv/codebook.h"

namespace tqkv::gpu {

struct PkState {
  CudaCacheConfig cfg;
  int D = 0, H = 0, N = 0, total_bits = 0, sbw = 0, code_size = 0, pairs = 0;
  bool neox = false;
  CudaBuffer omega, tab, step, levels, thresholds, chan, kpend, vpend, vtmp, items, ws;
  std::vector<float> lev_host, thr_host;
  bool have_bits[9] = {};
  std::vector<std::unique_ptr<PreRopeKeyCodec>> codec;  // [seq * H + head]
  std::vector<char> fitted;                              // [seq]
  std::vector<long long> offset;                         // [seq]
  int sms = 0;
  int ctas[3][4][2] = {};  // [dim 64/128/256][ncols 1/2/4/8][lut2/lut4]
};

void PkStateDeleter::operator()(PkState* s) const { delete s; }

size_t pk_key_page_head_bytes(const CudaCacheConfig& cfg) {
  return pk_page_head_bytes(prerope_total_bits(cfg.key_format.avg_bits, cfg.head_dim), cfg.page_tokens);
}

StatusOr<PkStatePtr> pk_make(const CudaCacheConfig& cfg) {
  PkStatePtr s(new PkState);
  s->cfg = cfg;
  s->D = cfg.head_dim;
  s->H = cfg.n_kv_heads;
  s->N = cfg.pk_calib_tokens;
  if (s->N < 1) return invalid_argument("pk_calib_tokens must be >= 1, got " + std::to_string(s->N));
  s->total_bits = prerope_total_bits(cfg.key_format.avg_bits, s->D);
  if (s->total_bits < 1 || s->total_bits > 8 * s->D)
    return invalid_argument(cfg.key_format.name() + " gives " + std::to_string(s->total_bits) + " bits per key");
  s->sbw = pk_stream_words(s->total_bits);
  s->code_size = 2 + (s->total_bits + 7) / 8;
  const RopeParams& r = cfg.rope;
  if (r.rotary_dims <= 0 || r.rotary_dims % 2 != 0 || r.rotary_dims > s->D)
    return invalid_argument("pk keys on the GPU need CudaCacheConfig::rope.rotary_dims even in 2.." + std::to_string(s->D) +
                            ", got " + std::to_string(r.rotary_dims));
  if (!(r.position_scale > 0) || !std::isfinite(r.position_scale) || !(r.base > 0))
    return invalid_argument("pk keys on the GPU need a RoPE base and position_scale > 0");
  s->pairs = r.rotary_dims / 2;
  s->neox = r.style == RopeStyle::kNeox;
  // RoPE: omega_j = inv_freq_j / position_scale (inv_freq as the forward pass rounds it), and the
  // offset table cos/sin(u omega_j), u = 0..31, in double rounded to float.
  const std::vector<float> inv = rope_inv_freq(r);
  std::vector<double> om(s->pairs);
  std::vector<float> tab(2 * 32 * static_cast<size_t>(s->pairs));
  std::vector<double> step(2 * static_cast<size_t>(s->pairs));
  for (int j = 0; j < s->pairs; ++j) {
    om[j] = static_cast<double>(inv[j]) / static_cast<double>(r.position_scale);
    for (int u = 0; u < 32; ++u) {
      tab[(static_cast<size_t>(u) * s->pairs + j) * 2] = static_cast<float>(std::cos(u * om[j]));
      tab[(static_cast<size_t>(u) * s->pairs + j) * 2 + 1] = static_cast<float>(std::sin(u * om[j]));
    }
    step[2 * j] = std::cos(128.0 * om[j]);
    step[2 * j + 1] = std::sin(128.0 * om[j]);
  }
  TQKV_ASSIGN_OR_RETURN(s->step, CudaBuffer::alloc(step.size() * sizeof(double)));
  TQKV_RETURN_IF_ERROR(s->step.upload(step.data(), step.size() * sizeof(double)));
  TQKV_ASSIGN_OR_RETURN(s->omega, CudaBuffer::alloc(om.size() * sizeof(double)));
  TQKV_RETURN_IF_ERROR(s->omega.upload(om.data(), om.size() * sizeof(double)));
  TQKV_ASSIGN_OR_RETURN(s->tab, CudaBuffer::alloc(tab.size() * sizeof(float)));
  TQKV_RETURN_IF_ERROR(s->tab.upload(tab.data(), tab.size() * sizeof(float)));
  s->lev_host.assign(512, 0.0f);
  s->thr_host.assign(512, 0.0f);
  TQKV_ASSIGN_OR_RETURN(s->levels, CudaBuffer::alloc(512 * sizeof(float)));
  TQKV_ASSIGN_OR_RETURN(s->thresholds, CudaBuffer::alloc(512 * sizeof(float)));
  TQKV_RETURN_IF_ERROR(s->levels.fill_byte(0));
  TQKV_RETURN_IF_ERROR(s->thresholds.fill_byte(0));
  const size_t SH = static_cast<size_t>(cfg.max_seqs) * s->H;
  TQKV_ASSIGN_OR_RETURN(s->chan, CudaBuffer::alloc(SH * s->D * sizeof(float4)));
  TQKV_RETURN_IF_ERROR(s->chan.fill_byte(0));
  TQKV_ASSIGN_OR_RETURN(s->kpend, CudaBuffer::alloc(SH * s->N * s->D * 2));
  TQKV_ASSIGN_OR_RETURN(s->vpend, CudaBuffer::alloc(SH * s->N * s->D * 2));
  TQKV_RETURN_IF_ERROR(s->kpend.fill_byte(0));
  TQKV_RETURN_IF_ERROR(s->vpend.fill_byte(0));
  s->codec.resize(SH);
  s->fitted.assign(cfg.max_seqs, 0);
  s->offset.assign(cfg.max_seqs, 0);
  return StatusOr<PkStatePtr>(std::move(s));
}

size_t pk_bytes_resident(const PkState& s) {
  return s.chan.bytes() + s.kpend.bytes() + s.vpend.bytes() + s.omega.bytes() + s.tab.bytes() + s.levels.bytes() +
         s.thresholds.bytes();
}

const PreRopeKeyCodec* pk_codec(const PkState& s, int seq, int head) {
  if (seq < 0 || seq >= s.cfg.max_seqs || head < 0 || head >= s.H) return nullptr;
  return s.codec[static_cast<size_t>(seq) * s.H + head].get();
}

Status pk_set_offset(PkState& s, int seq, int64_t offset) {
  if (seq < 0 || seq >= s.cfg.max_seqs) return invalid_argument("set_position_offset: sequence out of range");
  s.offset[seq] = offset;
  return Status::Ok();
}

void pk_truncate(PkState& s, int seq, int n) {
  if (n == 0) {  // emptied: the next tokens fit new statistics (LayerKVCache: kept unless emptied)
    s.fitted[seq] = 0;
    for (int h = 0; h < s.H; ++h) s.codec[static_cast<size_t>(seq) * s.H + h].reset();
  }
}

namespace {

// Uploads the levels and thresholds of the bit widths `bits` uses that are not on the device yet.
Status ensure_codebooks(PkState& s, const std::vector<uint8_t>& bits) {
  bool changed = false;
  for (uint8_t b : bits) {
    if (b == 0 || s.have_bits[b]) continue;
    const Codebook& cb = lloyd_max(Density::kGaussian, b);
    for (int c = 0; c < (1 << b); ++c) s.lev_host[(1 << b) + c] = cb.levels[c];
    for (int j = 0; j + 1 < (1 << b); ++j) s.thr_host[(1 << b) + j] = cb.thresholds[j];
    s.have_bits[b] = true;
    changed = true;
  }
  if (changed) {
    TQKV_RETURN_IF_ERROR(s.levels.upload(s.lev_host.data(), 512 * sizeof(float)));
    TQKV_RETURN_IF_ERROR(s.thresholds.upload(s.thr_host.data(), 512 * sizeof(float)));
  }
  return Status::Ok();
}

// The channel table of one codec: {mean, sd, offset << 4 | bits, 0} per channel.
std::vector<float4> channel_table(const PreRopeKeyStats& st) {
  std::vector<float4> t(st.mean.size());
  uint32_t o = 0;
  for (size_t i = 0; i < st.mean.size(); ++i) {
    uint32_t ob = (o << 4) | st.bits[i];
    float obf;
    std::memcpy(&obf, &ob, 4);
    t[i] = make_float4(st.mean[i], st.sd[i], obf, 0.0f);
    o += st.bits[i];
  }
  return t;
}

// Item arrays of one launch, uploaded into s.items: seq, t0, n (int) and src offsets (int64).
struct Items {
  std::vector<int> seq, t0, n;
  std::vector<long long> src;
  int n_max = 0;
  void add(int sq, int t, int cnt, long long so) {
    seq.push_back(sq);
    t0.push_back(t);
    n.push_back(cnt);
    src.push_back(so);
    n_max = std::max(n_max, cnt);
  }
};
Status upload_items(PkState& s, const Items& it, PkEncodeParams* p) {
  const size_t k = it.seq.size();
  const size_t bytes = k * 8 + 3 * k * 4;
  if (s.items.bytes() < bytes) {
    TQKV_ASSIGN_OR_RETURN(s.items, CudaBuffer::alloc(std::max<size_t>(bytes, 4096)));
  }
  std::vector<uint8_t> host(bytes);
  std::memcpy(host.data(), it.src.data(), k * 8);
  std::memcpy(host.data() + k * 8, it.seq.data(), k * 4);
  std::memcpy(host.data() + k * 12, it.t0.data(), k * 4);
  std::memcpy(host.data() + k * 16, it.n.data(), k * 4);
  TQKV_RETURN_IF_ERROR(s.items.upload(host.data(), bytes));
  const uint8_t* d = s.items.as<uint8_t>();
  p->item_src = reinterpret_cast<const long long*>(d);
  p->item_seq = reinterpret_cast<const int*>(d + k * 8);
  p->item_t0 = reinterpret_cast<const int*>(d + k * 12);
  p->item_n = reinterpret_cast<const int*>(d + k * 16);
  p->n_items = static_cast<int>(k);
  p->n_max = it.n_max;
  return Status::Ok();
}

// Value encode jobs (encode.cu's fused kernel, side 1) for tokens [t0, t0 + cnt) of `seq`, head h's
// rows at src + h * stride_h + i * D elements (esz bytes each).
void value_jobs(const PkCtx& c, int seq, int t0, int cnt, const char* src, size_t stride_h, size_t esz,
                std::vector<EncodeJob>* jobs) {
  const int P = c.cfg->page_tokens, D = c.cfg->head_dim, H = c.cfg->n_kv_heads;
  const size_t meta_region = meta_region_bytes(c.vcodec, D, P), tb = tile_body_bytes(c.vcodec, D);
  const int mb = codec_meta_bytes(c.vcodec, D);
  for (int h = 0; h < H; ++h)
    for (int ti = t0 / 16; ti * 16 < t0 + cnt; ++ti) {
      const int s0 = std::max(t0, ti * 16) - ti * 16, s1 = std::min(t0 + cnt, ti * 16 + 16) - ti * 16;
      const int page = ti * 16 / P, lt = (ti * 16 % P) / 16;
      uint8_t* base = c.vpool + (static_cast<size_t>((*c.seq_pages)[seq][page]) * H + h) * c.vphb;
      EncodeJob j{};
      j.src = src + (h * stride_h + static_cast<size_t>(ti * 16 + s0 - t0) * D) * esz;
      j.src_stride = D;
      j.tile = base + meta_region + lt * tb;
      j.meta = base + static_cast<size_t>(lt) * 16 * mb;
      j.s0 = s0;
      j.s1 = s1;
      j.head = h;
      j.side = 1;
      j.merge = s0 > 0 ? 1 : 0;
      jobs->push_back(j);
    }
}

Status run_value_jobs(PkState& s, const PkCtx& c, const std::vector<EncodeJob>& jobs, bool bf16) {
  if (jobs.empty()) return Status::Ok();
  TQKV_ASSIGN_OR_RETURN(CudaBuffer dj, CudaBuffer::alloc(jobs.size() * sizeof(EncodeJob)));
  TQKV_RETURN_IF_ERROR(dj.upload(jobs.data(), jobs.size() * sizeof(EncodeJob)));
  TQKV_CUDA_TRY(launch_encode(c.cfg->head_dim, bf16, c.sides, dj.as<EncodeJob>(), static_cast<int>(jobs.size()), 0));
  TQKV_CUDA_TRY(cudaDeviceSynchronize());  // dj is freed on return
  (void)s;
  return Status::Ok();
}

PkEncodeParams key_params(const PkState& s, const PkCtx& c) {
  PkEncodeParams p;
  p.H = s.H;
  p.D = s.D;
  p.total_bits = s.total_bits;
  p.norm_correction = c.cfg->quant.norm_correction ? 1 : 0;
  p.pool = c.kpool;
  p.phb = c.kphb;
  p.P = c.cfg->page_tokens;
  p.sbw = s.sbw;
  p.max_pages_per_seq = c.cfg->max_pages_per_seq;
  p.block_table = c.block_table;
  p.chan = s.chan.as<float4>();
  p.levels = s.levels.as<float>();
  p.thresholds = s.thresholds.as<float>();
  return p;
}

}  // namespace

std::vector<float4> channel_table_public(const PreRopeKeyStats& st) { return channel_table(st); }

Status pk_append(PkState& s, const PkCtx& c, const std::vector<int>& seqs, int n, const void* k, const void* v,
                 CudaDType dtype) {
  const int D = s.D, H = s.H, N = s.N;
  const int src_dtype = dtype == CudaDType::kBF16 ? kSrcBF16 : kSrcF32;
  const size_t esz = dtype == CudaDType::kBF16 ? 2 : 4;
  const long long per_item = static_cast<long long>(H) * n * D;  // input [item][head][n][D]
  // Sequences whose statistics exist encode every new token directly, also below N (after a
  // truncate that kept them, as LayerKVCache does).
  std::vector<char> was_fitted(seqs.size());
  for (size_t a = 0; a < seqs.size(); ++a) was_fitted[a] = s.fitted[seqs[a]];
  // 1. tokens below N: pending f16 rows (K and V)
  Items pend;
  for (size_t a = 0; a < seqs.size(); ++a) {
    const int len = (*c.seq_len)[seqs[a]];
    if (!s.fitted[seqs[a]] && len < N) pend.add(seqs[a], len, std::min(n, N - len), static_cast<long long>(a) * per_item);
  }
  if (!pend.seq.empty()) {
    PkEncodeParams p = key_params(s, c);
    p.dtype = src_dtype;
    p.stride_h = static_cast<long long>(n) * D;
    p.stride_i = D;
    TQKV_RETURN_IF_ERROR(upload_items(s, pend, &p));
    p.src = k;
    TQKV_CUDA_TRY(launch_pk_to_f16(p, N, s.kpend.as<uint16_t>(), 0));
    p.src = v;
    TQKV_CUDA_TRY(launch_pk_to_f16(p, N, s.vpend.as<uint16_t>(), 0));
  }
  // 2. sequences reaching N: fit every head on its f16 keys 0..N-1, encode the pending rows
  std::vector<EncodeJob> vjobs;
  Items flush;
  std::vector<int> fit_seqs;
  for (int sq : seqs)
    if (!s.fitted[sq] && (*c.seq_len)[sq] + n >= N) fit_seqs.push_back(sq);
  if (!fit_seqs.empty()) {
    TQKV_CUDA_TRY(cudaDeviceSynchronize());
    std::vector<uint16_t> rows(static_cast<size_t>(N) * D);
    std::vector<float> calib(rows.size());
    const size_t vt = static_cast<size_t>(N) * D * H;  // f32 values of one sequence's pending rows
    if (s.vtmp.bytes() < fit_seqs.size() * vt * 4) {
      TQKV_ASSIGN_OR_RETURN(s.vtmp, CudaBuffer::alloc(fit_seqs.size() * vt * 4));
    }
    for (size_t f = 0; f < fit_seqs.size(); ++f) {
      const int sq = fit_seqs[f];
      for (int h = 0; h < H; ++h) {
        const size_t slot = static_cast<size_t>(sq) * H + h;
        TQKV_RETURN_IF_ERROR(s.kpend.download(rows.data(), rows.size() * 2, slot * N * D * 2));
        for (size_t i = 0; i < rows.size(); ++i) calib[i] = half_to_float(rows[i]);
        TQKV_ASSIGN_OR_RETURN(PreRopeKeyCodec codec, PreRopeKeyCodec::fit(calib.data(), N, D, 0, s.cfg.key_format.avg_bits,
                                                                         s.cfg.quant.norm_correction));
        TQKV_RETURN_IF_ERROR(ensure_codebooks(s, codec.stats().bits));
        const std::vector<float4> tab = channel_table(codec.stats());
        TQKV_RETURN_IF_ERROR(s.chan.upload(tab.data(), tab.size() * sizeof(float4), slot * D * sizeof(float4)));
        s.codec[slot] = std::make_unique<PreRopeKeyCodec>(std::move(codec));
      }
      s.fitted[sq] = 1;
      flush.add(sq, 0, N, static_cast<long long>(sq) * H * N * D);
      float* vf = s.vtmp.as<float>() + f * vt;
      TQKV_CUDA_TRY(launch_f16_to_f32(s.vpend.as<uint16_t>() + static_cast<size_t>(sq) * H * N * D, vt, vf, 0));
      value_jobs(c, sq, 0, N, reinterpret_cast<const char*>(vf), static_cast<size_t>(N) * D, 4, &vjobs);
    }
    PkEncodeParams p = key_params(s, c);
    p.src = s.kpend.get();
    p.dtype = kSrcF16;
    p.stride_h = static_cast<long long>(N) * D;
    p.stride_i = D;
    TQKV_RETURN_IF_ERROR(upload_items(s, flush, &p));
    TQKV_CUDA_TRY(launch_pk_encode(p, 0));
    TQKV_RETURN_IF_ERROR(run_value_jobs(s, c, vjobs, false));
    vjobs.clear();
  }
  // 3. tokens at or past N: encoded from the input
  Items direct;
  for (size_t a = 0; a < seqs.size(); ++a) {
    const int len = (*c.seq_len)[seqs[a]];
    const int first = was_fitted[a] ? len : std::max(len, N);  // first token encoded directly
    if (first >= len + n) continue;
    const int i0 = first - len;
    direct.add(seqs[a], first, len + n - first, static_cast<long long>(a) * per_item + static_cast<long long>(i0) * D);
    value_jobs(c, seqs[a], first, len + n - first, static_cast<const char*>(v) + (static_cast<size_t>(a) * per_item + static_cast<size_t>(i0) * D) * esz,
               static_cast<size_t>(n) * D, esz, &vjobs);
  }
  if (!direct.seq.empty()) {
    PkEncodeParams p = key_params(s, c);
    p.src = k;
    p.dtype = src_dtype;
    p.stride_h = static_cast<long long>(n) * D;
    p.stride_i = D;
    TQKV_RETURN_IF_ERROR(upload_items(s, direct, &p));
    TQKV_CUDA_TRY(launch_pk_encode(p, 0));
    TQKV_RETURN_IF_ERROR(run_value_jobs(s, c, vjobs, dtype == CudaDType::kBF16));
  }
  for (int sq : seqs) (*c.seq_len)[sq] += n;
  return Status::Ok();
}

Status pk_read_key_codes(const PkState& s, const PkCtx& c, int seq, int head, int t0, int t1, uint8_t* codes) {
  if (!s.fitted[seq]) return invalid_argument("read_codes: the pk keys of this sequence are still pending f16 rows");
  const int P = c.cfg->page_tokens;
  std::vector<uint8_t> page(c.kphb);
  int loaded = -1;
  for (int t = t0; t < t1; ++t) {
    const int pg = t / P;
    if (pg != loaded) {
      const uint8_t* src = c.kpool + (static_cast<size_t>((*c.seq_pages)[seq][pg]) * s.H + head) * c.kphb;
      TQKV_CUDA_TRY(cudaMemcpy(page.data(), src, c.kphb, cudaMemcpyDeviceToHost));
      loaded = pg;
    }
    uint8_t* out = codes + static_cast<size_t>(t - t0) * s.code_size;
    std::memcpy(out, page.data() + static_cast<size_t>(t % P) * 2, 2);
    std::memcpy(out + 2, page.data() + pk_scale_region(P) + static_cast<size_t>(t % P) * 4 * s.sbw, s.code_size - 2);
  }
  return Status::Ok();
}

Status pk_attend(PkState& s, const PkCtx& c, const std::vector<int>& seqs, int m, int n_q_heads, const float* q,
                 float* out, float scale, int n_splits) {
  const CudaCacheConfig& cfg = *c.cfg;
  if (seqs.empty()) return Status::Ok();
  if (n_q_heads % cfg.n_kv_heads != 0 || n_q_heads / cfg.n_kv_heads > 8 || n_q_heads < cfg.n_kv_heads)
    return invalid_argument("n_q_heads must be n_kv_heads * g with g in 1..8");
  if (!pk_attention_supported(c.vcodec, cfg.head_dim))
    return unsupported("CUDA attention over pk keys supports head_dim 64/128/256 and rvq1x2, tq2, rvq2x2, tq4 or rvq1x4 values");
  const int B = static_cast<int>(seqs.size());
  std::vector<int> ints(3 * B);
  std::vector<long long> offs(B);
  int maxlen = 0;
  for (int i = 0; i < B; ++i) {
    const int sq = seqs[i];
    if (sq < 0 || sq >= cfg.max_seqs) return invalid_argument("sequence id out of range");
    const int len = (*c.seq_len)[sq];
    if (m < 1 || m > len) return invalid_argument("attend: m must be in 1..n_tokens(seq)");
    ints[i] = sq;
    ints[B + i] = len;
    ints[2 * B + i] = s.fitted[sq] ? 0 : 1;
    offs[i] = s.offset[sq];
    maxlen = std::max(maxlen, len);
  }
  PkAttnParams p;
  p.kpool = c.kpool;
  p.kphb = c.kphb;
  p.kscale_region = pk_scale_region(cfg.page_tokens);
  p.sbw = s.sbw;
  p.chan = s.chan.as<float4>();
  p.levels = s.levels.as<float>();
  p.kpend = s.kpend.as<uint16_t>();
  p.vpend = s.vpend.as<uint16_t>();
  p.n_calib = s.N;
  p.v = c.vside;
  p.vzlut = c.vzlut;
  p.v_rotated = c.v_rotated;
  p.pairs = s.pairs;
  p.neox = s.neox ? 1 : 0;
  p.omega = s.omega.as<double>();
  p.tab = s.tab.as<float>();
  p.step = s.step.as<double>();
  p.n_kv_heads = cfg.n_kv_heads;
  p.group = n_q_heads / cfg.n_kv_heads;
  p.page_tokens = cfg.page_tokens;
  p.dim = cfg.head_dim;
  p.block_table = c.block_table;
  p.max_pages_per_seq = cfg.max_pages_per_seq;
  p.m = m;
  p.qpc = std::max(1, 8 / p.group);
  p.ncols = p.group * std::min(m, p.qpc);
  const int nch = (maxlen + 31) / 32;
  const int qchunks = (m + p.qpc - 1) / p.qpc;
  if (n_splits <= 0) {
    if (s.sms <= 0) {
      int dev = 0, nsm = 0;
      if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess)
        s.sms = nsm;
      if (s.sms <= 0) s.sms = 132;
    }
    const int di = cfg.head_dim == 64 ? 0 : cfg.head_dim == 128 ? 1 : 2;
    const int ni = p.ncols <= 1 ? 0 : p.ncols <= 2 ? 1 : p.ncols <= 4 ? 2 : 3;
    int& cps = s.ctas[di][ni][c.vcodec == kLut4 ? 1 : 0];
    if (cps <= 0) cps = pk_attention_ctas_per_sm(c.vcodec, cfg.head_dim, p.ncols, s.pairs, s.sbw);
    const long slots = static_cast<long>(s.sms) * cps;
    const long ctas = static_cast<long>(B) * cfg.n_kv_heads * qchunks;
    n_splits = static_cast<int>(std::max<long>(1, slots / ctas));
    n_splits = std::min(n_splits, std::max(1, nch / 8));  // at least 2 chunks per warp
  }
  n_splits = std::max(1, std::min(n_splits, nch));
  p.chunks_per_split = (nch + n_splits - 1) / n_splits;
  p.n_splits = (nch + p.chunks_per_split - 1) / p.chunks_per_split;
  p.q = q;
  p.out = out;
  const float sc = scale > 0 ? scale : 1.0f / std::sqrt(static_cast<float>(cfg.head_dim));
  p.scale_log2 = sc * 1.4426950408889634f;
  const size_t rows = static_cast<size_t>(B) * n_q_heads * m * p.n_splits;
  const size_t ws_bytes = rows * (cfg.head_dim + 2) * sizeof(float);
  const size_t item_bytes = static_cast<size_t>(B) * (3 * 4 + 8);
  if (s.ws.bytes() < ws_bytes + item_bytes + 16) {
    TQKV_ASSIGN_OR_RETURN(s.ws, CudaBuffer::alloc(std::max(ws_bytes + item_bytes + 16, 2 * s.ws.bytes())));
  }
  // items after the workspace: offsets (8-byte aligned), then seq, len, pend
  const size_t ioff = (ws_bytes + 15) / 16 * 16;
  std::vector<uint8_t> host(item_bytes);
  std::memcpy(host.data(), offs.data(), B * 8);
  std::memcpy(host.data() + B * 8, ints.data(), 3 * B * 4);
  TQKV_RETURN_IF_ERROR(s.ws.upload(host.data(), item_bytes, ioff));
  const uint8_t* ib = s.ws.as<uint8_t>() + ioff;
  p.item_off = reinterpret_cast<const long long*>(ib);
  p.item_seq = reinterpret_cast<const int*>(ib + B * 8);
  p.item_len = p.item_seq + B;
  p.item_pend = p.item_seq + 2 * B;
  p.ws_o = s.ws.as<float>();
  p.ws_ml = s.ws.as<float>() + rows * cfg.head_dim;
  TQKV_CUDA_TRY(launch_pk_attention(c.vcodec, p, B, 0));
  return Status::Ok();
}

}  // namespace tqkv::gpu

namespace tqkv {

Status cuda_pk_encode_vectors(const PreRopeKeyCodec& codec, const void* x, CudaDType dtype, size_t n, uint8_t* codes) {
  const int D = codec.dim();
  if (D > 256) return unsupported("CUDA pk encode supports head_dim <= 256, got " + std::to_string(D));
  if (codec.basis() != nullptr) return unsupported("CUDA pk encode has no channel basis path");
  if (n == 0) return Status::Ok();
  if (n > (1u << 30)) return invalid_argument("cuda_pk_encode_vectors: too many vectors");
  const PreRopeKeyStats& st = codec.stats();
  std::vector<float> lev(512, 0.0f), thr(512, 0.0f);
  for (uint8_t b : st.bits) {
    if (b == 0) continue;
    const Codebook& cb = lloyd_max(Density::kGaussian, b);
    for (int c = 0; c < (1 << b); ++c) lev[(1 << b) + c] = cb.levels[c];
    for (int j = 0; j + 1 < (1 << b); ++j) thr[(1 << b) + j] = cb.thresholds[j];
  }
  const std::vector<float4> tab = gpu::channel_table_public(st);
  TQKV_ASSIGN_OR_RETURN(CudaBuffer dl, CudaBuffer::alloc(512 * 4));
  TQKV_ASSIGN_OR_RETURN(CudaBuffer dt, CudaBuffer::alloc(512 * 4));
  TQKV_ASSIGN_OR_RETURN(CudaBuffer dc, CudaBuffer::alloc(tab.size() * sizeof(float4)));
  TQKV_RETURN_IF_ERROR(dl.upload(lev.data(), 512 * 4));
  TQKV_RETURN_IF_ERROR(dt.upload(thr.data(), 512 * 4));
  TQKV_RETURN_IF_ERROR(dc.upload(tab.data(), tab.size() * sizeof(float4)));
  // one item of n tokens, one "head"
  const long long src0 = 0;
  const int seq0 = 0, t00 = 0, nn = static_cast<int>(n);
  TQKV_ASSIGN_OR_RETURN(CudaBuffer di, CudaBuffer::alloc(32));
  uint8_t host[32] = {};
  std::memcpy(host, &src0, 8);
  std::memcpy(host + 8, &seq0, 4);
  std::memcpy(host + 12, &t00, 4);
  std::memcpy(host + 16, &nn, 4);
  TQKV_RETURN_IF_ERROR(di.upload(host, 32));
  gpu::PkEncodeParams p;
  p.src = x;
  p.dtype = dtype == CudaDType::kBF16 ? gpu::kSrcBF16 : gpu::kSrcF32;
  p.stride_h = 0;
  p.stride_i = D;
  p.item_src = di.as<long long>();
  p.item_seq = reinterpret_cast<const int*>(di.as<uint8_t>() + 8);
  p.item_t0 = reinterpret_cast<const int*>(di.as<uint8_t>() + 12);
  p.item_n = reinterpret_cast<const int*>(di.as<uint8_t>() + 16);
  p.n_items = 1;
  p.H = 1;
  p.n_max = nn;
  p.D = D;
  p.total_bits = codec.total_bits();
  p.norm_correction = codec.norm_correction() ? 1 : 0;
  p.vec_out = codes;
  p.code_size = static_cast<int>(codec.code_size());
  p.chan = dc.as<float4>();
  p.levels = dl.as<float>();
  p.thresholds = dt.as<float>();
  TQKV_CUDA_TRY(gpu::launch_pk_encode(p, 0));
  TQKV_CUDA_TRY(cudaDeviceSynchronize());
  return Status::Ok();
}

}  // namespace tqkv
