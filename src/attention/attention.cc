// Fused attention over a LayerKVCache: scores straight from the stored codes, online softmax,
// values accumulated without materializing them (docs/design.md, "Fused attention").
//
// Work item = (request, kv head, split of the compressed range). Each work item handles all
// n_q_heads / n_kv_heads query heads x m query tokens ("states") of its kv head, reading every KV
// byte once, and produces a partial softmax state (m, l, o) that is merged across splits.
#include <omp.h>
#include <xmmintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "attention/attention_kernels.h"
#include "cache/layer_cache_impl.h"
#include "core/half.h"
#include "quant/rotated_quantizer.h"
#include "tqkv/simd.h"

namespace tqkv {

namespace attn {

// ---- scalar reference kernels --------------------------------------------------------------

// Key tile: group g of plane p holds, for token t, the nibble of coordinates 4g..4g+3 at byte
// t / 2, nibble t % 2. Score = scale_t * (C0 * qsum + sum_{p,g} alpha_p * lut[p][g][nibble]) with
// lut[p][g][n] = sum of qr[4g + u] over the set bits u of n (exact float sums).
void prepare_key_lut_scalar(const TileLayout& L, Queries* Q) {
  Q->klut.assign(static_cast<size_t>(Q->ns) * L.groups * 16, 0.0f);
  for (int s = 0; s < Q->ns; ++s) {
    const float* qr = &Q->qr[static_cast<size_t>(s) * Q->d];
    float* lut = &Q->klut[static_cast<size_t>(s) * L.groups * 16];
    for (int g = 0; g < L.groups; ++g)
      for (int nib = 0; nib < 16; ++nib) {
        float v = 0;
        for (int u = 0; u < 4; ++u)
          if ((nib >> u) & 1 && 4 * g + u < L.dim) v += qr[4 * g + u];
        lut[g * 16 + nib] = v;
      }
  }
}

void fast_key_scores_scalar(const TileLayout& L, const uint8_t* tile, const Queries& Q, float* scores) {
  const float* sc = L.scales(tile);
  for (int s = 0; s < Q.ns; ++s) {
    const float* lut = &Q.klut[static_cast<size_t>(s) * L.groups * 16];
    float acc[kTileTokens];
    for (int t = 0; t < kTileTokens; ++t) acc[t] = L.c0 * Q.qsum[s];
    for (int p = 0; p < L.planes; ++p) {
      const uint8_t* plane = tile + 64 + p * L.plane_bytes;
      for (int t = 0; t < kTileTokens; ++t) {
        float part = 0;
        for (int g = 0; g < L.groups; ++g) part += lut[g * 16 + ((plane[g * 8 + t / 2] >> (4 * (t % 2))) & 15)];
        acc[t] += L.alpha[p] * part;
      }
    }
    for (int t = 0; t < kTileTokens; ++t) scores[s * kTileTokens + t] = sc[t] * acc[t];
  }
}

// Value tile: for quad q, chunk c of plane p, coordinate 16c + i has the 4 tokens' bits in the
// nibble at bits 4i..4i+3 of the 64-bit word. lut[q][n] = sum of w over the quad's tokens in n.
void fast_value_accum_scalar(const TileLayout& L, const uint8_t* const* tiles, int n_tiles,
                             const float* w, int ns, float* o) {
  const int dpad = 16 * L.groups, quads = 4 * n_tiles;
  std::vector<float> lut(static_cast<size_t>(quads) * 16);
  for (int s = 0; s < ns; ++s) {
    for (int q = 0; q < quads; ++q)
      for (int nib = 0; nib < 16; ++nib) {
        float v = 0;
        for (int u = 0; u < 4; ++u)
          if ((nib >> u) & 1) v += w[s * kBlock + 4 * q + u];
        lut[q * 16 + nib] = v;
      }
    for (int p = 0; p < L.planes; ++p)
      for (int c = 0; c < L.groups; ++c)
        for (int i = 0; i < 16 && 16 * c + i < L.dim; ++i) {
          float part = 0;
          for (int q = 0; q < quads; ++q) {
            const uint8_t* word = tiles[q / 4] + 64 + p * L.plane_bytes + (static_cast<size_t>(q % 4) * L.groups + c) * 8;
            part += lut[q * 16 + ((word[i / 2] >> (4 * (i % 2))) & 15)];
          }
          o[static_cast<size_t>(s) * dpad + 16 * c + i] += L.alpha[p] * part;
        }
  }
}

void float_scores_scalar(const float* q, int ns, const float* k, int n, int d, float* scores) {
  for (int s = 0; s < ns; ++s)
    for (int t = 0; t < n; ++t) {
      float acc = 0;
      for (int i = 0; i < d; ++i) acc += q[s * d + i] * k[static_cast<size_t>(t) * d + i];
      scores[s * kBlock + t] = acc;
    }
}

void softmax_block_scalar(float* scores, int ns, const int* valid, float* m, float* l, float* corr) {
  for (int s = 0; s < ns; ++s) {
    float* sc = scores + s * kBlock;
    corr[s] = 1.0f;
    if (valid[s] <= 0) {
      for (int t = 0; t < kBlock; ++t) sc[t] = 0;
      continue;
    }
    float mx = -std::numeric_limits<float>::infinity();
    for (int t = 0; t < valid[s]; ++t) mx = std::max(mx, sc[t]);
    const float mnew = std::max(m[s], mx);
    corr[s] = m[s] == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(m[s] - mnew);
    m[s] = mnew;
    float sum = 0;
    for (int t = 0; t < kBlock; ++t) {
      sc[t] = t < valid[s] ? std::exp(sc[t] - mnew) : 0.0f;
      sum += sc[t];
    }
    l[s] = l[s] * corr[s] + sum;
  }
}

void value_weights_scalar(const float* p, int ns, const float* vscale, float* w, float* cw) {
  for (int s = 0; s < ns; ++s) {
    float sum = 0;
    for (int t = 0; t < kBlock; ++t) {
      w[s * kBlock + t] = p[s * kBlock + t] * vscale[t];
      sum += w[s * kBlock + t];
    }
    cw[s] += sum;
  }
}

void float_accum_scalar(const float* p, int ns, const float* v, int n, int d, float* o) {
  for (int s = 0; s < ns; ++s)
    for (int t = 0; t < n; ++t) {
      const float w = p[s * kBlock + t];
      if (w == 0) continue;
      for (int i = 0; i < d; ++i) o[static_cast<size_t>(s) * d + i] += w * v[static_cast<size_t>(t) * d + i];
    }
}

}  // namespace attn

namespace {

using attn::kBlock;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Partial softmax state of `ns` states.
struct Partial {
  std::vector<float> m, l, cw;   // (ns,) running max, sum of p, sum of p * value scale (fast V)
  std::vector<float> o;          // (ns, d) original-domain accumulator
  std::vector<float> orot;       // (ns, dpad) rotated-domain accumulator (fast V)
  void reset(int ns, int d, int dpad) {
    m.assign(ns, kNegInf);
    l.assign(ns, 0.0f);
    cw.assign(ns, 0.0f);
    o.assign(static_cast<size_t>(ns) * d, 0.0f);
    orot.assign(static_cast<size_t>(ns) * dpad, 0.0f);
  }
};

struct Work {
  int req, head, c_begin, c_end;  // compressed index range of this split
  bool first;                     // split 0 also handles sinks and the window
};

struct Ctx {
  const LayerKVCache::Impl* I;
  int n_q_heads, G, d, dpad;
  float scale;
  bool avx512, avx2;
  bool vrot;  // per-vector rotated values accumulated in the rotated domain (AVX-512, d % 16 == 0)
};

void float_scores(const Ctx& C, const float* q, int ns, const float* k, int n, int d, float* scores) {
  if (C.avx512) attn::float_scores_avx512(q, ns, k, n, d, scores);
  else if (C.avx2) attn::float_scores_avx2(q, ns, k, n, d, scores);
  else attn::float_scores_scalar(q, ns, k, n, d, scores);
}
void float_accum(const Ctx& C, const float* p, int ns, const float* v, int n, int d, float* o) {
  if (C.avx512) attn::float_accum_avx512(p, ns, v, n, d, o);
  else if (C.avx2) attn::float_accum_avx2(p, ns, v, n, d, o);
  else attn::float_accum_scalar(p, ns, v, n, d, o);
}

// Runs the softmax step of one block for the states and rescales their accumulators.
// NaN scores (a NaN key, or a NaN from a corrupt quantization scale) have ONE behaviour at every
// SIMD level: the token gets weight 0, as if masked. The kernels' max/exp differ in how they treat
// NaN (vmaxps returns its second operand, std::max its first), so NaN never reaches them: it is
// replaced by -inf here, and a row whose visible scores are all -inf is passed as fully masked
// (exp(-inf - -inf) would be NaN). A query that sees only such tokens gets a zero output.
void softmax_step(const Ctx& C, Partial& P, int ns, float* scores, const int* valid_in, int d, int dpad) {
  thread_local std::vector<float> corr;  // scratch reused across blocks
  thread_local std::vector<int> valid_buf;
  corr.resize(ns);
  valid_buf.assign(valid_in, valid_in + ns);
  int* valid = valid_buf.data();
  for (int s = 0; s < ns; ++s) {
    float* sc = scores + s * kBlock;
    bool any = false;
    for (int t = 0; t < valid[s]; ++t) {
      if (std::isnan(sc[t])) sc[t] = kNegInf;
      any |= sc[t] != kNegInf;
    }
    if (!any) valid[s] = 0;
  }
  float* cr = corr.data();
  if (C.avx512) attn::softmax_block_avx512(scores, ns, valid, P.m.data(), P.l.data(), cr);
  else if (C.avx2) attn::softmax_block_avx2(scores, ns, valid, P.m.data(), P.l.data(), cr);
  else attn::softmax_block_scalar(scores, ns, valid, P.m.data(), P.l.data(), cr);
  for (int s = 0; s < ns; ++s) {
    if (cr[s] == 1.0f) continue;
    const float c = cr[s];
    P.cw[s] *= c;
    float* o = &P.o[static_cast<size_t>(s) * d];
    for (int i = 0; i < d; ++i) o[i] *= c;
    if (dpad == 0) continue;  // no rotated-domain accumulator (P.orot is empty)
    float* orr = P.orot.data() + static_cast<size_t>(s) * dpad;
    for (int i = 0; i < dpad; ++i) orr[i] *= c;
  }
}

void run_work(const Ctx& C, const std::vector<LayerKVCache::Request>& reqs, const Work& w,
              attn::Queries& Q, Partial& P, std::vector<float>& kbuf, std::vector<float>& vbuf,
              std::vector<float>& scores, std::vector<float>& wts) {
  const LayerKVCache::Impl& I = *C.I;
  const LayerKVCache::Request& r = reqs[w.req];
  const SeqState& s = I.seqs.at(r.seq);
  const HeadStore& hs = s.heads[w.head];
  const int d = C.d, G = C.G, m = r.m, ns = G * m;
  const int S = I.sinks(), W = I.window();
  const int n = s.n;
  // Query states: state = g * m + j (q head w.head * G + g, query token j at position n - m + j).
  Q.ns = ns;
  Q.d = d;
  Q.q.assign(static_cast<size_t>(ns) * d, 0.0f);
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < m; ++j) {
      const float* src = r.q.at(w.head * G + g, j);
      float* dst = &Q.q[static_cast<size_t>(g * m + j) * d];
      for (int i = 0; i < d; ++i) dst[i] = src[i] * C.scale;
    }
  if (I.kfast) {
    const Rotation& rot = static_cast<const RotatedQuantizer&>(*I.keyq[w.head]).rotation();
    Q.qr.assign(static_cast<size_t>(ns) * d, 0.0f);
    Q.qsum.assign(ns, 0.0f);
    for (int st = 0; st < ns; ++st) {
      rot.forward(&Q.q[static_cast<size_t>(st) * d], &Q.qr[static_cast<size_t>(st) * d]);
      float sum = 0;
      for (int i = 0; i < d; ++i) sum += Q.qr[static_cast<size_t>(st) * d + i];
      Q.qsum[st] = sum;
    }
    if (C.avx512) attn::prepare_q8_avx512(I.klay, &Q);
    else attn::prepare_key_lut_scalar(I.klay, &Q);
  }
  P.reset(ns, d, C.dpad);
  scores.resize(static_cast<size_t>(ns) * kBlock);
  wts.resize(static_cast<size_t>(ns) * kBlock);
  kbuf.resize(static_cast<size_t>(kBlock) * d);
  thread_local std::vector<float> tile_scores;  // (ns, 16) scores of one key tile
  tile_scores.resize(static_cast<size_t>(ns) * kTileTokens);
  vbuf.resize(static_cast<size_t>(kBlock) * d);
  auto pos_limit = [&](int st) { return n - m + st % m; };  // last visible position of state st
  std::vector<int>& valid = Q.valid;
  valid.resize(ns);

  // Float rows (f16 sinks / window, or decoded per-vector formats) at positions pos0..pos0+cnt-1.
  auto float_block = [&](const float* k, const float* v, int pos0, int cnt) {
    float_scores(C, Q.q.data(), ns, k, cnt, d, scores.data());
    for (int st = 0; st < ns; ++st) valid[st] = std::clamp(pos_limit(st) - pos0 + 1, 0, cnt);
    softmax_step(C, P, ns, scores.data(), valid.data(), d, C.dpad);
    float_accum(C, scores.data(), ns, v, cnt, d, P.o.data());
  };
  auto f16_rows = [&](const std::vector<uint16_t>& src, int row0, int cnt, float* dst, int ring) {
    for (int t = 0; t < cnt; ++t) {
      const int row = ring ? (row0 + t) % ring : row0 + t;
      const uint16_t* h = &src[static_cast<size_t>(row) * d];
      for (int i = 0; i < d; ++i) dst[static_cast<size_t>(t) * d + i] = half_to_float(h[i]);
    }
  };

  if (w.first) {
    // Sinks: positions 0 .. min(S, n) - 1.
    for (int p0 = 0; p0 < std::min(S, n); p0 += kBlock) {
      const int cnt = std::min(kBlock, std::min(S, n) - p0);
      f16_rows(hs.sink_k, p0, cnt, kbuf.data(), 0);
      f16_rows(hs.sink_v, p0, cnt, vbuf.data(), 0);
      float_block(kbuf.data(), vbuf.data(), p0, cnt);
    }
    // Window: positions S + n_comp .. n - 1 (ring slot = position % W).
    for (int p0 = S + s.n_comp; p0 < n; p0 += kBlock) {
      const int cnt = std::min(kBlock, n - p0);
      f16_rows(hs.win_k, p0, cnt, kbuf.data(), W);
      f16_rows(hs.win_v, p0, cnt, vbuf.data(), W);
      float_block(kbuf.data(), vbuf.data(), p0, cnt);
    }
  }
  // Compressed tokens, blocks of 64 (a block never crosses a page).
  const bool kf16 = I.opt.key_format.kind == FormatKind::kF16 && d <= 1024;
  const bool vf16 = I.opt.value_format.kind == FormatKind::kF16 && d <= 1024;
  for (int c0 = w.c_begin; c0 < w.c_end; c0 += kBlock) {
    const int cnt = std::min(kBlock, w.c_end - c0);
    const int pos0 = S + c0;
    // Software prefetch of the next block into L2: hardware prefetchers stop at 4 KB pages and
    // the kernels read each block in short bursts.
    if (c0 + kBlock < w.c_end) {
      const int nc = c0 + kBlock;
      const uint8_t* kp = I.kfast ? I.ktile(hs, nc) : I.kcode(hs, nc);
      const uint8_t* vp = I.vfast ? I.vtile(hs, nc) : I.vcode(hs, nc);
      const size_t kb = I.kfast ? 4 * I.klay.tile_bytes : kBlock * I.ksz;
      const size_t vb = I.vfast ? 4 * I.vlay.tile_bytes : kBlock * I.vsz;
      // Every 4th line: the L2 streamer fetches the neighbours once a stream has started.
      for (size_t o = 0; o < kb; o += 256) _mm_prefetch(reinterpret_cast<const char*>(kp + o), _MM_HINT_T1);
      for (size_t o = 0; o < vb; o += 256) _mm_prefetch(reinterpret_cast<const char*>(vp + o), _MM_HINT_T1);
    }
    // 1. Scores.
    if (I.kfast) {
      const int n_tiles = (cnt + kTileTokens - 1) / kTileTokens;
      for (int tl = 0; tl < n_tiles; ++tl) {
        const uint8_t* tile = I.ktile(hs, c0 + tl * kTileTokens);
        float* dst = tile_scores.data();
        if (C.avx512) attn::fast_key_scores_avx512(I.klay, tile, Q, dst);
        else attn::fast_key_scores_scalar(I.klay, tile, Q, dst);
        for (int st = 0; st < ns; ++st)
          std::memcpy(&scores[st * kBlock + tl * kTileTokens], &dst[st * kTileTokens], kTileTokens * sizeof(float));
      }
    } else if (kf16 && C.avx512) {
      attn::f16_scores_avx512(Q.q.data(), ns, reinterpret_cast<const uint16_t*>(I.kcode(hs, c0)), cnt, d, scores.data());
    } else if (kf16 && C.avx2) {
      attn::f16_scores_avx2(Q.q.data(), ns, reinterpret_cast<const uint16_t*>(I.kcode(hs, c0)), cnt, d, scores.data());
    } else {
      I.keyq[w.head]->decode(I.kcode(hs, c0), cnt, kbuf.data());
      float_scores(C, Q.q.data(), ns, kbuf.data(), cnt, d, scores.data());
    }
    // 2. Causal mask (valid tokens are a prefix of the block) and online softmax.
    for (int st = 0; st < ns; ++st) valid[st] = std::clamp(pos_limit(st) - pos0 + 1, 0, cnt);
    softmax_step(C, P, ns, scores.data(), valid.data(), d, C.dpad);
    // 4. Values.
    if (I.vfast) {
      const uint8_t* tiles[4];
      const int n_tiles = (cnt + kTileTokens - 1) / kTileTokens;
      for (int tl = 0; tl < n_tiles; ++tl) tiles[tl] = I.vtile(hs, c0 + tl * kTileTokens);
      float vscale[kBlock] = {};
      for (int tl = 0; tl < n_tiles; ++tl)
        std::memcpy(vscale + tl * kTileTokens, I.vlay.scales(tiles[tl]), kTileTokens * sizeof(float));
      for (int t = cnt; t < kBlock; ++t) vscale[t] = 0;
      if (C.avx512) attn::value_weights_avx512(scores.data(), ns, vscale, wts.data(), P.cw.data());
      else attn::value_weights_scalar(scores.data(), ns, vscale, wts.data(), P.cw.data());
      if (C.avx512) attn::fast_value_accum_avx512(I.vlay, tiles, n_tiles, wts.data(), ns, P.orot.data());
      else attn::fast_value_accum_scalar(I.vlay, tiles, n_tiles, wts.data(), ns, P.orot.data());
    } else if (vf16 && C.avx512) {
      attn::f16_accum_avx512(scores.data(), ns, reinterpret_cast<const uint16_t*>(I.vcode(hs, c0)), cnt, d, P.o.data());
    } else if (vf16 && C.avx2) {
      attn::f16_accum_avx2(scores.data(), ns, reinterpret_cast<const uint16_t*>(I.vcode(hs, c0)), cnt, d, P.o.data());
    } else if (C.vrot) {
      const auto& vq = static_cast<const RotatedQuantizer&>(*I.valq[w.head]);
      attn::decode_rotated_domain_avx512(vq.params(), I.vcode(hs, c0), cnt, vbuf.data());
      float_accum(C, scores.data(), ns, vbuf.data(), cnt, d, P.orot.data());
    } else {
      I.valq[w.head]->decode(I.vcode(hs, c0), cnt, vbuf.data());
      float_accum(C, scores.data(), ns, vbuf.data(), cnt, d, P.o.data());
    }
  }
}

// a <- merge(a, b)
void merge(Partial& a, const Partial& b, int ns, int d, int dpad) {
  for (int s = 0; s < ns; ++s) {
    if (b.m[s] == kNegInf) continue;
    const float M = std::max(a.m[s], b.m[s]);
    const float ca = a.m[s] == kNegInf ? 0.0f : std::exp(a.m[s] - M);
    const float cb = std::exp(b.m[s] - M);
    a.m[s] = M;
    a.l[s] = a.l[s] * ca + b.l[s] * cb;
    a.cw[s] = a.cw[s] * ca + b.cw[s] * cb;
    for (int i = 0; i < d; ++i) a.o[static_cast<size_t>(s) * d + i] = a.o[static_cast<size_t>(s) * d + i] * ca + b.o[static_cast<size_t>(s) * d + i] * cb;
    for (int i = 0; i < dpad; ++i)
      a.orot[static_cast<size_t>(s) * dpad + i] = a.orot[static_cast<size_t>(s) * dpad + i] * ca + b.orot[static_cast<size_t>(s) * dpad + i] * cb;
  }
}

}  // namespace

Status LayerKVCache::attend(int seq, int m, int n_q_heads, const HeadTokenView& q,
                            const MutableHeadTokenView& out, const AttentionOptions& options) const {
  return attend_batch({Request{seq, m, q, out}}, n_q_heads, options);
}

Status LayerKVCache::attend_batch(const std::vector<Request>& reqs, int n_q_heads,
                                  const AttentionOptions& options) const {
  const Impl& I = *impl_;
  if (n_q_heads < 1 || n_q_heads % I.n_kv_heads != 0)
    return invalid_argument("n_q_heads (" + std::to_string(n_q_heads) + ") must be a positive multiple of n_kv_heads (" +
                            std::to_string(I.n_kv_heads) + ")");
  for (const Request& r : reqs) {
    const int n = n_tokens(r.seq);
    if (r.m < 1 || r.m > n)
      return invalid_argument("attend: m = " + std::to_string(r.m) + " query tokens but sequence " +
                              std::to_string(r.seq) + " holds " + std::to_string(n) + " tokens (append first)");
    if (r.q.data == nullptr || r.out.data == nullptr) return invalid_argument("attend: null q or out");
  }
  Ctx C;
  C.I = &I;
  C.n_q_heads = n_q_heads;
  C.G = n_q_heads / I.n_kv_heads;
  C.d = I.head_dim;
  C.avx512 = active_simd_level() == SimdLevel::kAvx512;
  C.vrot = !I.vfast && I.opt.value_format.rotated() && C.avx512 && I.head_dim % 16 == 0;
  C.dpad = I.vfast ? 16 * I.vlay.groups : C.vrot ? I.head_dim : 0;
  C.scale = options.scale > 0 ? options.scale : 1.0f / std::sqrt(static_cast<float>(I.head_dim));
  C.avx512 = active_simd_level() == SimdLevel::kAvx512;
  C.avx2 = active_simd_level() == SimdLevel::kAvx2;
  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();

  // Split the compressed range so that there are enough work items for the threads.
  std::vector<Work> work;
  size_t total_comp = 0;
  for (const Request& r : reqs) total_comp += I.seqs.at(r.seq).n_comp;
  const size_t items_wanted = static_cast<size_t>(threads) * 4;
  const size_t base_items = reqs.size() * I.n_kv_heads;
  int split_tokens = 1 << 30;
  if (base_items < items_wanted && total_comp > 0) {
    const size_t per = total_comp * I.n_kv_heads / items_wanted;
    split_tokens = static_cast<int>(std::max<size_t>(1024, (per + kBlock - 1) / kBlock * kBlock));
  }
  for (size_t ri = 0; ri < reqs.size(); ++ri) {
    const SeqState& s = I.seqs.at(reqs[ri].seq);
    for (int h = 0; h < I.n_kv_heads; ++h) {
      int c = 0;
      bool first = true;
      do {
        const int e = std::min(s.n_comp, c + split_tokens);
        work.push_back({static_cast<int>(ri), h, c, e, first});
        first = false;
        c = e;
      } while (c < s.n_comp);
    }
  }
  std::vector<Partial> partials(work.size());
#pragma omp parallel num_threads(threads)
  {
    attn::Queries Q;
    std::vector<float> kbuf, vbuf, scores, wts;
#pragma omp for schedule(dynamic, 1)
    for (size_t wi = 0; wi < work.size(); ++wi)
      run_work(C, reqs, work[wi], Q, partials[wi], kbuf, vbuf, scores, wts);
  }
  // Merge splits and write outputs.
  for (size_t wi = 0; wi < work.size();) {
    size_t we = wi + 1;
    while (we < work.size() && !work[we].first) ++we;
    const Request& r = reqs[work[wi].req];
    const int head = work[wi].head, ns = C.G * r.m, d = C.d;
    Partial& P = partials[wi];
    for (size_t k = wi + 1; k < we; ++k) merge(P, partials[k], ns, d, C.dpad);
    std::vector<float> tmp(std::max(d, C.dpad));
    for (int st = 0; st < ns; ++st) {
      const int g = st / r.m, j = st % r.m;
      float* dst = r.out.at(head * C.G + g, j);
      const float inv = P.l[st] > 0 ? 1.0f / P.l[st] : 0.0f;
      if (I.vfast || C.vrot) {
        const float c0 = I.vfast ? I.vlay.c0 : 0.0f;
        for (int i = 0; i < d; ++i) tmp[i] = P.orot[static_cast<size_t>(st) * C.dpad + i] + c0 * P.cw[st];
        static_cast<const RotatedQuantizer&>(*I.valq[head]).rotation().inverse(tmp.data(), tmp.data());
        for (int i = 0; i < d; ++i) dst[i] = (P.o[static_cast<size_t>(st) * d + i] + tmp[i]) * inv;
      } else {
        for (int i = 0; i < d; ++i) dst[i] = P.o[static_cast<size_t>(st) * d + i] * inv;
      }
    }
    wi = we;
  }
  return Status::Ok();
}

}  // namespace tqkv
