// tqkv::attend (tqkv/attention.h), the CPU implementation: fused attention over a layer view: scores straight from the stored codes, online softmax,
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
#include "attention/prerope_kernels.h"
#include "cache/tile_layout.h"
#include "core/half.h"
#include "format/format_table.h"
#include "tqkv/attention.h"
#include "tqkv/prerope_keys.h"
#include "tqkv/quantizer.h"
#include "tqkv/simd.h"

namespace tqkv {

namespace attn {

// ---- scalar reference kernels --------------------------------------------------------------

// Key tile: group g of plane p holds, for token t, the nibble of coordinates 4g..4g+3 at byte
// t / 2, nibble t % 2. Score = scale_t * (C0 * qsum + sum_{p,g} alpha_p * lut[p][g][nibble]) with
// lut[p][g][n] = sum of qr[4g + u] over the set bits u of n (exact float sums).
void prepare_key_lut_scalar(const TileParams& L, Queries* Q) {
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

void fast_key_scores_scalar(const TileParams& L, const uint8_t* tile, const Queries& Q, float* scores) {
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
void fast_value_accum_scalar(const TileParams& L, const uint8_t* const* tiles, int n_tiles,
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
  std::vector<float> m, l, cw;   // (ns,) running max, sum of p, sum of p * value scale (tiled V)
  std::vector<float> o;          // (ns, d) original-domain accumulator
  std::vector<float> orot;       // (ns, dpad) rotated-domain accumulator (tiled or rotated V)
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

// What every work item of one attend() call shares: the layer view and the kernel choices.
struct Ctx {
  const LayerView* L;
  const AttentionQuery* reqs;
  int n_q_heads, G, d, dpad;
  float scale;
  bool avx512, avx2;
  bool ktiles, vtiles;  // bit-sliced tile storage (fast kernels on the planes)
  bool kf16, vf16;      // f16 codes read directly by the f16 kernels
  bool vrot;            // per-vector rotated values accumulated in the rotated domain (AVX-512, d % 16 == 0)
  bool pre_rope;        // keys stored before RoPE: rotate every key row at its position
  RopeParams opt_rope;          // the model's RoPE (pre_rope only)
  std::vector<float> inv_freq;  // rope_inv_freq(opt_rope) (pre_rope only)
  bool pk_simd = false;         // pk keys through the SIMD decode + RoPE kernels (prerope_kernels.h)
  attn::PkRopeTables pk_tables;  // offset rotations of those kernels (pk_simd only)
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

// Rotated-format parameters of one head for the rotated-domain decode kernel, from the view.
kernels::RotatedParams rotated_params(const StreamLayout& s, int head, int d) {
  kernels::RotatedParams p;
  const HeadCodec& hc = s.heads[head];
  p.dim = d;
  p.bits = s.format.bits;
  p.passes = s.format.passes;
  for (int k = 0; k < p.passes; ++k) {
    p.levels[k] = hc.codebooks->passes[k].levels.data();
    p.thresholds[k] = hc.codebooks->passes[k].thresholds.data();
  }
  p.rotation = hc.rotation;
  p.plane_bytes = format::plane_bytes(d);
  p.code_size = s.code_size;
  return p;
}

// Decodes compressed indices c0 .. c0 + cnt - 1 of one stream to float rows (original domain).
void decode_rows(const StreamLayout& s, const StreamPages& sp, int head, int c0, int cnt, float* out, int d) {
  // tqo{h}x{l}: the sequence's own quantizer (its outlier channel set); otherwise the head's.
  const Quantizer& q = sp.quantizer != nullptr ? *sp.quantizer : *s.heads[head].quantizer;
  if (s.storage == KVStorage::kPerVector) {
    q.decode(s.code(sp.pages, c0), cnt, out);  // a block never crosses a page
    return;
  }
  thread_local std::vector<uint8_t> code;
  code.resize(s.code_size);
  for (int t = 0; t < cnt; ++t) {
    const int c = c0 + t;
    gather_tile_slot(s.tiles, s.tile(sp.pages, c), c % kTileTokens, code.data());
    q.decode(code.data(), 1, out + static_cast<size_t>(t) * d);
  }
}

// Runs the softmax step of one block for the states and rescales their accumulators.
// NaN scores (a NaN key, or a NaN from a corrupt quantization scale) have ONE behaviour at every
// SIMD level: the token gets weight 0, as if masked. The kernels' max/exp differ in how they treat
// NaN (vmaxps returns its second operand, std::max its first), so NaN never reaches them: it is
// replaced by -inf here, and a row whose visible scores are all -inf is passed as fully masked
// (exp(-inf - -inf) would be NaN). A query that sees only such tokens gets a zero output.
void softmax_step(const Ctx& C, Partial& P, int ns, float* scores, const int* valid_in) {
  const int d = C.d, dpad = C.dpad;
  thread_local std::vector<float> corr;  // scratch reused across blocks
  thread_local std::vector<int> valid_buf;
  corr.resize(ns);
  valid_buf.assign(valid_in, valid_in + ns);
  int* valid = valid_buf.data();
  for (int s = 0; s < ns; ++s) {
    float* sc = scores + s * kBlock;
    // SIMD levels scan with two vector compares per 16 scores and only touch a row with a NaN;
    // the scalar level (and such a row) takes the reference loop.
    if (C.avx512 || C.avx2) {
      const int f = C.avx512 ? attn::score_flags_avx512(sc, valid[s]) : attn::score_flags_avx2(sc, valid[s]);
      if (!(f & attn::kScoresNan)) {
        if (!(f & attn::kScoresLive)) valid[s] = 0;
        continue;
      }
    }
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

// Per-thread scratch of the work items.
struct Scratch {
  attn::Queries Q;
  std::vector<float> kbuf, vbuf, scores, wts, tile_scores;
  // SIMD pk keys: the plan of the work item's codec (built at its first compressed block), the
  // permuted queries (ns, dp), the block's back-rotated queries (ns, dp), decoded rows (64, dp),
  // and the base angle of the next block (per A lane; advanced by a double recurrence).
  // Codecs with a channel basis: pk_bplan decodes (pk_plan is then its x layout for the queries).
  bool pk_ready = false, pk_basis = false;
  attn::PkPlan pk_plan;
  attn::PkBasisPlan pk_bplan;
  std::vector<float> pk_qp, pk_qb, pk_rows, pk_ybuf;
  std::vector<double> pk_cos, pk_sin;
  int pk_next = -1;  // compressed index whose base angle pk_cos / pk_sin hold, -1: none
};

// One work item: all states of one kv head of one request over one split of the compressed range.
class WorkRunner {
 public:
  WorkRunner(const Ctx& C, const Work& w, Scratch& S, Partial& P)
      : C_(C), L_(*C.L), w_(w), r_(C.reqs[w.req]), hp_(r_.seq.heads[w.head]), S_(S), P_(P),
        d_(C.d), m_(r_.m), ns_(C.G * r_.m), n_(r_.seq.n_tokens) {}

  void run() {
    prepare_queries();
    if (w_.first) f16_ranges();
    for (int c0 = w_.c_begin; c0 < w_.c_end; c0 += kBlock) compressed_block(c0, std::min(kBlock, w_.c_end - c0));
  }

 private:
  // Query states: state = g * m + j (q head head * G + g, query token j at position n - m + j),
  // scaled by the softmax scale; rotated with the key rotation for the tiled key kernels.
  void prepare_queries() {
    attn::Queries& Q = S_.Q;
    const int d = d_;
    Q.ns = ns_;
    Q.d = d;
    Q.q.assign(static_cast<size_t>(ns_) * d, 0.0f);
    for (int g = 0; g < C_.G; ++g)
      for (int j = 0; j < m_; ++j) {
        const float* src = r_.q.at(w_.head * C_.G + g, j);
        float* dst = &Q.q[static_cast<size_t>(g * m_ + j) * d];
        for (int i = 0; i < d; ++i) dst[i] = src[i] * C_.scale;
      }
    if (C_.ktiles) {
      const Rotation& rot = *L_.key.heads[w_.head].rotation;
      Q.qr.assign(static_cast<size_t>(ns_) * d, 0.0f);
      Q.qsum.assign(ns_, 0.0f);
      for (int st = 0; st < ns_; ++st) {
        rot.forward(&Q.q[static_cast<size_t>(st) * d], &Q.qr[static_cast<size_t>(st) * d]);
        float sum = 0;
        for (int i = 0; i < d; ++i) sum += Q.qr[static_cast<size_t>(st) * d + i];
        Q.qsum[st] = sum;
      }
      if (C_.avx512) attn::prepare_q8_avx512(L_.key.tiles, &Q);
      else attn::prepare_key_lut_scalar(L_.key.tiles, &Q);
    }
    S_.pk_ready = false;
    P_.reset(ns_, d, C_.dpad);
    S_.scores.resize(static_cast<size_t>(ns_) * kBlock);
    S_.wts.resize(static_cast<size_t>(ns_) * kBlock);
    S_.kbuf.resize(static_cast<size_t>(kBlock) * d);
    S_.vbuf.resize(static_cast<size_t>(kBlock) * d);
    S_.tile_scores.resize(static_cast<size_t>(ns_) * kTileTokens);
    Q.valid.resize(ns_);
  }

  // Causal mask: state st sees positions <= n - m + st % m; valid tokens are a prefix of a block.
  void set_valid(int pos0, int cnt) {
    for (int st = 0; st < ns_; ++st) S_.Q.valid[st] = std::clamp(n_ - m_ + st % m_ - pos0 + 1, 0, cnt);
  }

  // Pre-RoPE keys: rotate rows of token positions pos0.. to their RoPE positions.
  void rope_rows(float* k, int pos0, int cnt) const {
    if (!C_.pre_rope) return;
    for (int t = 0; t < cnt; ++t)
      apply_rope(C_.opt_rope, C_.inv_freq.data(), r_.position_offset + pos0 + t, k + static_cast<size_t>(t) * d_);
  }

  // Float rows (f16 sinks / window, or decoded per-vector formats) at positions pos0..pos0+cnt-1.
  void float_block(const float* k, const float* v, int pos0, int cnt) {
    float_scores(C_, S_.Q.q.data(), ns_, k, cnt, d_, S_.scores.data());
    set_valid(pos0, cnt);
    softmax_step(C_, P_, ns_, S_.scores.data(), S_.Q.valid.data());
    float_accum(C_, S_.scores.data(), ns_, v, cnt, d_, P_.o.data());
  }

  void f16_rows(const uint16_t* src, int row0, int cnt, float* dst, int ring) const {
    for (int t = 0; t < cnt; ++t) {
      const int row = ring ? (row0 + t) % ring : row0 + t;
      const uint16_t* h = src + static_cast<size_t>(row) * d_;
      for (int i = 0; i < d_; ++i) dst[static_cast<size_t>(t) * d_ + i] = half_to_float(h[i]);
    }
  }

  // Sinks (positions 0 .. min(S, n) - 1), pending rows (pk keys before their statistics:
  // positions S + n_comp .. S + n_comp + n_pending - 1) and the window (the positions after them,
  // ring slot = position % W), all f16.
  void f16_ranges() {
    const int S = L_.sink_tokens, W = L_.recent_window;
    const int pend0 = S + r_.seq.n_compressed, pend1 = pend0 + r_.seq.n_pending;
    for (int p0 = 0; p0 < std::min(S, n_); p0 += kBlock) {
      const int cnt = std::min(kBlock, std::min(S, n_) - p0);
      f16_rows(hp_.key.sink, p0, cnt, S_.kbuf.data(), 0);
      f16_rows(hp_.value.sink, p0, cnt, S_.vbuf.data(), 0);
      rope_rows(S_.kbuf.data(), p0, cnt);
      float_block(S_.kbuf.data(), S_.vbuf.data(), p0, cnt);
    }
    for (int p0 = pend0; p0 < pend1; p0 += kBlock) {
      const int cnt = std::min(kBlock, pend1 - p0);
      f16_rows(hp_.key.pending, p0 - pend0, cnt, S_.kbuf.data(), 0);
      f16_rows(hp_.value.pending, p0 - pend0, cnt, S_.vbuf.data(), 0);
      rope_rows(S_.kbuf.data(), p0, cnt);
      float_block(S_.kbuf.data(), S_.vbuf.data(), p0, cnt);
    }
    for (int p0 = pend1; p0 < n_; p0 += kBlock) {
      const int cnt = std::min(kBlock, n_ - p0);
      f16_rows(hp_.key.window, p0, cnt, S_.kbuf.data(), W);
      f16_rows(hp_.value.window, p0, cnt, S_.vbuf.data(), W);
      rope_rows(S_.kbuf.data(), p0, cnt);
      float_block(S_.kbuf.data(), S_.vbuf.data(), p0, cnt);
    }
  }

  // Software prefetch of the block at compressed index nc into L2: hardware prefetchers stop at
  // 4 KB pages and the kernels read each block in short bursts. Every 4th line: the L2 streamer
  // fetches the neighbours once a stream has started.
  void prefetch(int nc) const {
    const StreamLayout* ls[2] = {&L_.key, &L_.value};
    const StreamPages* ps[2] = {&hp_.key, &hp_.value};
    for (int k = 0; k < 2; ++k) {
      const bool tiled = ls[k]->storage == KVStorage::kTiles;
      const uint8_t* p = tiled ? ls[k]->tile(ps[k]->pages, nc) : ls[k]->code(ps[k]->pages, nc);
      const size_t bytes = tiled ? 4 * ls[k]->tiles.tile_bytes : kBlock * ls[k]->code_size;
      for (size_t o = 0; o < bytes; o += 256) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T1);
    }
  }

  // SIMD pk keys (prerope_kernels.h): q . R(theta_{P+t}) k_t = (R(theta_P)^T q) . (R(t omega) k_t)
  // with P the position of the block's first token.
  void pk_scores(int c0, int cnt, float* scores) {
    attn::PkPlan& P = S_.pk_plan;
    if (!S_.pk_ready) {
      const PreRopeKeyCodec& codec = *hp_.key.prerope;
      S_.pk_basis = codec.basis() != nullptr;
      if (S_.pk_basis) {
        attn::make_pk_basis_plan(codec, C_.opt_rope, C_.pk_tables, &S_.pk_bplan);
        P = attn::pk_basis_query_plan(S_.pk_bplan);
        S_.pk_ybuf.resize(static_cast<size_t>(kBlock) * S_.pk_bplan.y.dp);
      } else {
        attn::make_pk_plan(codec, C_.opt_rope, C_.pk_tables, &P);
      }
      S_.pk_qp.resize(static_cast<size_t>(ns_) * P.dp);
      S_.pk_qb.resize(S_.pk_qp.size());
      S_.pk_rows.resize(static_cast<size_t>(kBlock) * P.dp);
      S_.pk_cos.resize(attn::kPkLanes * P.rot_vec);
      S_.pk_sin.resize(S_.pk_cos.size());
      attn::pk_permute_queries(P, S_.Q.q.data(), ns_, S_.pk_qp.data());
      S_.pk_next = -1;
      S_.pk_ready = true;
    }
    const int arot = attn::kPkLanes * P.rot_vec;
    const attn::PkRopeTables& T = C_.pk_tables;
    if (c0 == S_.pk_next) {  // the previous block's angle + 64 omega
      for (int l = 0; l < arot; ++l) {
        if (P.pair[l] < 0) continue;
        const double c = S_.pk_cos[l], s = S_.pk_sin[l], cs = T.cos_step[P.pair[l]], ss = T.sin_step[P.pair[l]];
        S_.pk_cos[l] = c * cs - s * ss;
        S_.pk_sin[l] = s * cs + c * ss;
      }
    } else {
      const double pos = static_cast<double>(r_.position_offset + L_.sink_tokens + c0);
      for (int l = 0; l < arot; ++l) {
        const double th = P.pair[l] < 0 ? 0.0 : pos * T.omega[P.pair[l]];
        S_.pk_cos[l] = std::cos(th);
        S_.pk_sin[l] = std::sin(th);
      }
    }
    S_.pk_next = c0 + kBlock;
    attn::pk_rotate_queries(P, S_.pk_qp.data(), ns_, S_.pk_cos.data(), S_.pk_sin.data(), S_.pk_qb.data());
    const uint8_t* codes = L_.key.code(hp_.key.pages, c0);
    if (S_.pk_basis && C_.avx512)
      attn::pk_decode_basis_rope_avx512(S_.pk_bplan, codes, L_.key.code_size, cnt, S_.pk_ybuf.data(), S_.pk_rows.data());
    else if (S_.pk_basis)
      attn::pk_decode_basis_rope_avx2(S_.pk_bplan, codes, L_.key.code_size, cnt, S_.pk_ybuf.data(), S_.pk_rows.data());
    else if (C_.avx512 && P.tl_words <= attn::kPkTlMaxWords) {  // token lanes: decode + scores in one kernel
      attn::pk_scores_tl_avx512(P, codes, L_.key.code_size, cnt, S_.pk_qb.data(), ns_, S_.pk_rows.data(), scores);
      return;
    } else if (C_.avx512) attn::pk_decode_rope_avx512(P, codes, L_.key.code_size, cnt, S_.pk_rows.data());
    else attn::pk_decode_rope_avx2(P, codes, L_.key.code_size, cnt, S_.pk_rows.data());
    float_scores(C_, S_.pk_qb.data(), ns_, S_.pk_rows.data(), cnt, P.dp, scores);
  }

  // Scores of cnt compressed tokens c0.. into S_.scores (ns, 64).
  void key_scores(int c0, int cnt) {
    const StreamLayout& K = L_.key;
    float* scores = S_.scores.data();
    if (C_.ktiles) {
      const int n_tiles = (cnt + kTileTokens - 1) / kTileTokens;
      for (int tl = 0; tl < n_tiles; ++tl) {
        const uint8_t* tile = K.tile(hp_.key.pages, c0 + tl * kTileTokens);
        float* dst = S_.tile_scores.data();
        if (C_.avx512) attn::fast_key_scores_avx512(K.tiles, tile, S_.Q, dst);
        else attn::fast_key_scores_scalar(K.tiles, tile, S_.Q, dst);
        for (int st = 0; st < ns_; ++st)
          std::memcpy(&scores[st * kBlock + tl * kTileTokens], &dst[st * kTileTokens], kTileTokens * sizeof(float));
      }
    } else if (C_.kf16 && C_.avx512) {
      attn::f16_scores_avx512(S_.Q.q.data(), ns_, reinterpret_cast<const uint16_t*>(K.code(hp_.key.pages, c0)), cnt, d_, scores);
    } else if (C_.kf16 && C_.avx2) {
      attn::f16_scores_avx2(S_.Q.q.data(), ns_, reinterpret_cast<const uint16_t*>(K.code(hp_.key.pages, c0)), cnt, d_, scores);
    } else if (K.format.kind == FormatKind::kPk && C_.pk_simd && !hp_.key.prerope->trellis()) {
      pk_scores(c0, cnt, scores);  // with or without a channel basis; trellis codecs: the reference below
    } else if (K.format.kind == FormatKind::kPk) {
      // pk{b} reference: decode the block of pre-RoPE keys with this sequence's codec (reference decode,
      // including a channel basis' x = S y), rotate each row to its position (apply_rope, as the
      // forward pass rotates q), dot with q.
      hp_.key.prerope->decode(K.code(hp_.key.pages, c0), cnt, S_.kbuf.data());
      rope_rows(S_.kbuf.data(), L_.sink_tokens + c0, cnt);
      float_scores(C_, S_.Q.q.data(), ns_, S_.kbuf.data(), cnt, d_, scores);
    } else {
      decode_rows(K, hp_.key, w_.head, c0, cnt, S_.kbuf.data(), d_);
      rope_rows(S_.kbuf.data(), L_.sink_tokens + c0, cnt);
      float_scores(C_, S_.Q.q.data(), ns_, S_.kbuf.data(), cnt, d_, scores);
    }
  }

  // Accumulates the values of cnt compressed tokens c0.. weighted by the probabilities in S_.scores.
  void value_accum(int c0, int cnt) {
    const StreamLayout& V = L_.value;
    const float* p = S_.scores.data();
    if (C_.vtiles) {
      const uint8_t* tiles[4];
      const int n_tiles = (cnt + kTileTokens - 1) / kTileTokens;
      for (int tl = 0; tl < n_tiles; ++tl) tiles[tl] = V.tile(hp_.value.pages, c0 + tl * kTileTokens);
      float vscale[kBlock] = {};
      for (int tl = 0; tl < n_tiles; ++tl)
        std::memcpy(vscale + tl * kTileTokens, V.tiles.scales(tiles[tl]), kTileTokens * sizeof(float));
      for (int t = cnt; t < kBlock; ++t) vscale[t] = 0;
      if (C_.avx512) attn::value_weights_avx512(p, ns_, vscale, S_.wts.data(), P_.cw.data());
      else attn::value_weights_scalar(p, ns_, vscale, S_.wts.data(), P_.cw.data());
      if (C_.avx512) attn::fast_value_accum_avx512(V.tiles, tiles, n_tiles, S_.wts.data(), ns_, P_.orot.data());
      else attn::fast_value_accum_scalar(V.tiles, tiles, n_tiles, S_.wts.data(), ns_, P_.orot.data());
    } else if (C_.vf16 && C_.avx512) {
      attn::f16_accum_avx512(p, ns_, reinterpret_cast<const uint16_t*>(V.code(hp_.value.pages, c0)), cnt, d_, P_.o.data());
    } else if (C_.vf16 && C_.avx2) {
      attn::f16_accum_avx2(p, ns_, reinterpret_cast<const uint16_t*>(V.code(hp_.value.pages, c0)), cnt, d_, P_.o.data());
    } else if (C_.vrot) {
      const kernels::RotatedParams rp = rotated_params(V, w_.head, d_);
      attn::decode_rotated_domain_avx512(rp, V.code(hp_.value.pages, c0), cnt, S_.vbuf.data());
      float_accum(C_, p, ns_, S_.vbuf.data(), cnt, d_, P_.orot.data());
    } else if (V.format.kind == FormatKind::kPk) {  // per-channel values: this sequence's codec
      hp_.value.prerope->decode(V.code(hp_.value.pages, c0), cnt, S_.vbuf.data());
      float_accum(C_, p, ns_, S_.vbuf.data(), cnt, d_, P_.o.data());
    } else {
      decode_rows(V, hp_.value, w_.head, c0, cnt, S_.vbuf.data(), d_);
      float_accum(C_, p, ns_, S_.vbuf.data(), cnt, d_, P_.o.data());
    }
  }

  // One block of compressed tokens (a block never crosses a page): scores, causal mask and online
  // softmax, values.
  void compressed_block(int c0, int cnt) {
    if (c0 + kBlock < w_.c_end) prefetch(c0 + kBlock);
    key_scores(c0, cnt);
    set_valid(L_.sink_tokens + c0, cnt);
    softmax_step(C_, P_, ns_, S_.scores.data(), S_.Q.valid.data());
    value_accum(c0, cnt);
  }

  const Ctx& C_;
  const LayerView& L_;
  const Work& w_;
  const AttentionQuery& r_;
  const HeadPages& hp_;
  Scratch& S_;
  Partial& P_;
  const int d_, m_, ns_, n_;
};

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

Status validate(const LayerView& L, const AttentionParams& p) {
  if (L.n_kv_heads < 1) return invalid_argument("attend: empty layer view");
  if (p.n_q_heads < 1 || p.n_q_heads % L.n_kv_heads != 0)
    return invalid_argument("n_q_heads (" + std::to_string(p.n_q_heads) + ") must be a positive multiple of n_kv_heads (" +
                            std::to_string(L.n_kv_heads) + ")");
  if (p.n_queries > 0 && p.queries == nullptr) return invalid_argument("attend: null query array");
  for (size_t i = 0; i < p.n_queries; ++i) {
    const AttentionQuery& r = p.queries[i];
    const int n = r.seq.n_tokens;
    if (r.m < 1 || r.m > n)
      return invalid_argument("attend: m = " + std::to_string(r.m) + " query tokens but the sequence holds " +
                              std::to_string(n) + " tokens (append first)");
    if (r.q.data == nullptr || r.out.data == nullptr) return invalid_argument("attend: null q or out");
    if (r.seq.heads == nullptr) return invalid_argument("attend: sequence view without heads");
    if (r.seq.n_compressed > 0)
      for (int h = 0; h < L.n_kv_heads; ++h) {
        if ((L.key.format.kind == FormatKind::kPk && r.seq.heads[h].key.prerope == nullptr) ||
            (L.value.format.kind == FormatKind::kPk && r.seq.heads[h].value.prerope == nullptr))
          return invalid_argument("attend: pk codes are compressed but kv head " + std::to_string(h) +
                                  " has no statistics in the sequence view");
        if ((L.key.format.kind == FormatKind::kTqo && r.seq.heads[h].key.quantizer == nullptr) ||
            (L.value.format.kind == FormatKind::kTqo && r.seq.heads[h].value.quantizer == nullptr))
          return invalid_argument("attend: tqo codes are compressed but kv head " + std::to_string(h) +
                                  " has no outlier channel set in the sequence view");
      }
  }
  const RopeParams& rope = p.options.rope;
  if (L.key.pre_rope && (rope.rotary_dims < 2 || rope.rotary_dims % 2 != 0 || rope.rotary_dims > L.head_dim))
    return invalid_argument("attend: the keys are stored before RoPE, so options.rope.rotary_dims must be even and in 2.." +
                            std::to_string(L.head_dim) + " (got " + std::to_string(rope.rotary_dims) + ")");
  if (p.options.split_tokens < 0 || p.options.split_tokens % kBlock != 0)
    return invalid_argument("attend: split_tokens must be a multiple of 64 (0 = automatic), got " +
                            std::to_string(p.options.split_tokens));
  return Status::Ok();
}

// Work items: (request, kv head, split of the compressed range), enough of them for the threads.
std::vector<Work> make_work(const LayerView& L, const AttentionParams& p, int threads) {
  std::vector<Work> work;
  size_t total_comp = 0;
  for (size_t i = 0; i < p.n_queries; ++i) total_comp += p.queries[i].seq.n_compressed;
  const size_t items_wanted = static_cast<size_t>(threads) * 4;
  const size_t base_items = p.n_queries * L.n_kv_heads;
  int split_tokens = 1 << 30;
  if (p.options.split_tokens > 0) {
    split_tokens = p.options.split_tokens;
  } else if (base_items < items_wanted && total_comp > 0) {
    const size_t per = total_comp * L.n_kv_heads / items_wanted;
    split_tokens = static_cast<int>(std::max<size_t>(1024, (per + kBlock - 1) / kBlock * kBlock));
  }
  for (size_t ri = 0; ri < p.n_queries; ++ri) {
    const int n_comp = p.queries[ri].seq.n_compressed;
    for (int h = 0; h < L.n_kv_heads; ++h) {
      int c = 0;
      bool first = true;
      do {
        const int e = std::min(n_comp, c + split_tokens);
        work.push_back({static_cast<int>(ri), h, c, e, first});
        first = false;
        c = e;
      } while (c < n_comp);
    }
  }
  return work;
}

// Merges the splits of each (request, head) and writes the normalized outputs.
void write_outputs(const Ctx& C, const std::vector<Work>& work, std::vector<Partial>& partials) {
  const LayerView& L = *C.L;
  const int d = C.d;
  std::vector<float> tmp(std::max(d, C.dpad));
  for (size_t wi = 0; wi < work.size();) {
    size_t we = wi + 1;
    while (we < work.size() && !work[we].first) ++we;
    const AttentionQuery& r = C.reqs[work[wi].req];
    const int head = work[wi].head, ns = C.G * r.m;
    Partial& P = partials[wi];
    for (size_t k = wi + 1; k < we; ++k) merge(P, partials[k], ns, d, C.dpad);
    for (int st = 0; st < ns; ++st) {
      const int g = st / r.m, j = st % r.m;
      float* dst = r.out.at(head * C.G + g, j);
      const float inv = P.l[st] > 0 ? 1.0f / P.l[st] : 0.0f;
      if (C.vtiles || C.vrot) {
        const float c0 = C.vtiles ? L.value.tiles.c0 : 0.0f;
        for (int i = 0; i < d; ++i) tmp[i] = P.orot[static_cast<size_t>(st) * C.dpad + i] + c0 * P.cw[st];
        L.value.heads[head].rotation->inverse(tmp.data(), tmp.data());
        for (int i = 0; i < d; ++i) dst[i] = (P.o[static_cast<size_t>(st) * d + i] + tmp[i]) * inv;
      } else {
        for (int i = 0; i < d; ++i) dst[i] = P.o[static_cast<size_t>(st) * d + i] * inv;
      }
    }
    wi = we;
  }
}

}  // namespace

Status attend(const LayerView& L, const AttentionParams& params) {
  TQKV_RETURN_IF_ERROR(validate(L, params));
  if (params.n_queries == 0) return Status::Ok();
  const SimdLevel level = active_simd_level();
  Ctx C;
  C.L = &L;
  C.reqs = params.queries;
  C.n_q_heads = params.n_q_heads;
  C.G = params.n_q_heads / L.n_kv_heads;
  C.d = L.head_dim;
  C.avx512 = level == SimdLevel::kAvx512;
  C.avx2 = level == SimdLevel::kAvx2;
  C.pre_rope = L.key.pre_rope;
  // Lookup tiles (TileParams::lut) have AVX-512 kernels only; at other levels they are decoded
  // row by row (decode_rows) and run through the float kernels.
  C.ktiles = L.key.storage == KVStorage::kTiles && !C.pre_rope && (!L.key.tiles.lut || C.avx512);
  C.vtiles = L.value.storage == KVStorage::kTiles && (!L.value.tiles.lut || C.avx512);
  const format::FormatRow& krow = format::row(L.key.format);
  const format::FormatRow& vrow = format::row(L.value.format);
  C.kf16 = krow.f16_rows && L.head_dim <= attn::kF16DirectMaxDim && !C.pre_rope;
  C.vf16 = vrow.f16_rows && L.head_dim <= attn::kF16DirectMaxDim;
  C.vrot = L.value.storage == KVStorage::kPerVector && vrow.rotated && C.avx512 && L.head_dim % 16 == 0;
  C.dpad = C.vtiles ? 16 * L.value.tiles.groups : C.vrot ? L.head_dim : 0;
  C.scale = params.options.scale > 0 ? params.options.scale : 1.0f / std::sqrt(static_cast<float>(L.head_dim));
  C.opt_rope = params.options.rope;
  if (C.pre_rope) C.inv_freq = rope_inv_freq(params.options.rope);
  // pk keys at the AVX2 / AVX-512 levels: SIMD decode with RoPE by table (the scalar level keeps
  // the reference decode + apply_rope). head_dim <= 1024 bounds the plan's row buffers.
  C.pk_simd = C.pre_rope && L.key.format.kind == FormatKind::kPk && (C.avx512 || C.avx2) && L.head_dim <= 1024;
  if (C.pk_simd) C.pk_tables = attn::make_pk_rope_tables(params.options.rope, C.inv_freq.data());
  const int threads = params.options.threads > 0 ? params.options.threads : omp_get_max_threads();

  const std::vector<Work> work = make_work(L, params, threads);
  std::vector<Partial> partials(work.size());
#pragma omp parallel num_threads(threads)
  {
    Scratch S;
#pragma omp for schedule(dynamic, 1)
    for (size_t wi = 0; wi < work.size(); ++wi) WorkRunner(C, work[wi], S, partials[wi]).run();
  }
  write_outputs(C, work, partials);
  return Status::Ok();
}

}  // namespace tqkv
