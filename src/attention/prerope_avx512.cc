// AVX-512 decode + RoPE of pk{b} key blocks (prerope_kernels.h). AVX512 F/BW only (vpermw,
// vpermt2w, vpermt2ps), no VBMI.
//
// Per token: the code stream (<= 128 bytes) is loaded into one or two zmm (masked loads: no byte
// past the code is touched). For each plan vector, vpermw/vpermt2w gathers the two 16-bit words
// holding each lane's code into its 32-bit lane, vpsrlvd aligns the code, one vpternlogd forms the
// level-table index (code & mask) | (1 << b), and vpermt2ps looks up 32 table entries (all widths
// <= 4 bits); a vector with 5-bit channels takes one more masked lookup, wider ones a masked
// gather from the 512-entry table. The key is mean + (scale * sd) * level (one FMA), then A/B
// lanes are rotated by the offset angle.
#include "core/simd_intrinsics.h"

#include <cstring>
#include <vector>

#include "attention/prerope_kernels.h"

namespace tqkv::attn {

namespace {

struct Stream {
  __m512i s0, s1;
  __m512 scale;
};

template <bool TWO>
inline Stream load_stream(const uint8_t* c, __mmask64 m0, __mmask64 m1) {
  uint16_t sbits;
  std::memcpy(&sbits, c, 2);
  float s;
  const uint32_t u = static_cast<uint32_t>(sbits) << 16;  // bf16 -> float
  std::memcpy(&s, &u, 4);
  Stream st;
  st.scale = _mm512_set1_ps(s);
  st.s0 = _mm512_maskz_loadu_epi8(m0, c + 2);
  st.s1 = TWO ? _mm512_maskz_loadu_epi8(m1, c + 66) : _mm512_setzero_si512();
  return st;
}

template <bool TWO>
inline __m512 decode_vec(const PkPlan& P, const PkPlan::Vec& V, int windows, const Stream& st, __m512 lv0,
                         __m512 lv1) {
  const __m512i wi = _mm512_load_si512(V.widx);
  const __m512i w = TWO ? _mm512_permutex2var_epi16(st.s0, wi, st.s1) : _mm512_permutexvar_epi16(wi, st.s0);
  const __m512i code = _mm512_srlv_epi32(w, _mm512_load_si512(V.shift16));
  // (code & mask) | base: imm 0xEA = (A & B) | C.
  const __m512i idx = _mm512_ternarylogic_epi32(code, _mm512_load_si512(V.mask), _mm512_load_si512(V.base), 0xEA);
  __m512 lv = _mm512_permutex2var_ps(lv0, idx, lv1);
  if (windows == 2) {
    const __mmask16 mk = _mm512_cmpge_epu32_mask(idx, _mm512_set1_epi32(32));
    lv = _mm512_mask_mov_ps(lv, mk, _mm512_permutex2var_ps(_mm512_load_ps(P.levels + 32), idx,
                                                           _mm512_load_ps(P.levels + 48)));
  } else if (windows > 2) {
    const __mmask16 mk = _mm512_cmpge_epu32_mask(idx, _mm512_set1_epi32(32));
    lv = _mm512_mask_i32gather_ps(lv, mk, idx, P.levels, 4);
  }
  return _mm512_fmadd_ps(_mm512_mul_ps(st.scale, _mm512_load_ps(V.sd)), lv, _mm512_load_ps(V.mu));
}

inline __mmask64 stream_mask(int bytes) {
  return bytes >= 64 ? ~__mmask64{0} : bytes <= 0 ? __mmask64{0} : (__mmask64{1} << bytes) - 1;
}

template <bool TWO>
void decode_rows(const PkPlan& P, const uint8_t* codes, size_t code_size, int cnt, float* __restrict rows) {
  const int arot = kPkLanes * P.rot_vec, rv = P.rot_vec, nv = P.nvec;
  const __mmask64 m0 = stream_mask(P.stream_bytes), m1 = stream_mask(P.stream_bytes - 64);
  const __m512 lv0 = _mm512_load_ps(P.levels), lv1 = _mm512_load_ps(P.levels + 16);
  const PkPlan::Vec* V = P.vec.data();
  const int* win = P.windows.data();
  for (int t = 0; t < cnt; ++t) {
    const Stream st = load_stream<TWO>(codes + static_cast<size_t>(t) * code_size, m0, m1);
    float* row = rows + static_cast<size_t>(t) * P.dp;
    const float* ct = P.cos_t.data() + static_cast<size_t>(t) * arot;
    const float* sn = P.sin_t.data() + static_cast<size_t>(t) * arot;
    for (int r = 0; r < rv; ++r) {
      const __m512 a = decode_vec<TWO>(P, V[r], win[r], st, lv0, lv1);
      const __m512 b = decode_vec<TWO>(P, V[rv + r], win[rv + r], st, lv0, lv1);
      const __m512 co = _mm512_loadu_ps(ct + kPkLanes * r), si = _mm512_loadu_ps(sn + kPkLanes * r);
      _mm512_storeu_ps(row + kPkLanes * r, _mm512_fmsub_ps(a, co, _mm512_mul_ps(b, si)));
      _mm512_storeu_ps(row + arot + kPkLanes * r, _mm512_fmadd_ps(a, si, _mm512_mul_ps(b, co)));
    }
    for (int v = 2 * rv; v < nv; ++v) _mm512_storeu_ps(row + kPkLanes * v, decode_vec<TWO>(P, V[v], win[v], st, lv0, lv1));
  }
}

}  // namespace

void pk_decode_rope_avx512(const PkPlan& P, const uint8_t* codes, size_t code_size, int cnt, float* rows) {
  if (!P.fits_zmm2) pk_decode_rope_avx2(P, codes, code_size, cnt, rows);  // streams over 128 bytes
  else if (P.stream_bytes > 64) decode_rows<true>(P, codes, code_size, cnt, rows);
  else decode_rows<false>(P, codes, code_size, cnt, rows);
}

// Token lanes (prerope_kernels.h, pk_scores_tl_avx512).
namespace {

// Lookup of one lane's codes for G 16-token groups: the lane's constants are loaded once.
struct TlConst {
  __m512i shift;
  __m512 t0, t1, mu;
  int word, kind, tab;
  uint32_t mask;
};
inline TlConst tl_const(const float* tabs, const PkPlan::TlLane& T) {
  TlConst c;
  c.shift = _mm512_set1_epi32(T.shift);
  c.mu = _mm512_set1_ps(T.mu);
  c.word = T.word;
  c.kind = T.kind;
  c.tab = T.tab;
  c.mask = T.mask;
  c.t0 = _mm512_loadu_ps(tabs + T.tab);
  c.t1 = T.kind == 2 ? _mm512_loadu_ps(tabs + T.tab + 16) : c.t0;
  return c;
}
inline __m512 tl_decode(const float* tabs, const TlConst& c, const __m512i* win, __m512 scale) {
  const __m512i code = _mm512_srlv_epi32(win[c.word], c.shift);
  __m512 lv;
  if (c.kind == 1) {  // 16 entries repeated every 2^b: the index's low 4 bits select, no mask
    lv = _mm512_permutexvar_ps(code, c.t0);
  } else if (c.kind == 2) {  // 32 entries: the low 5 bits select
    lv = _mm512_permutex2var_ps(c.t0, code, c.t1);
  } else {
    lv = _mm512_i32gather_ps(_mm512_and_si512(code, _mm512_set1_epi32(static_cast<int>(c.mask))), tabs + c.tab, 4);
  }
  return _mm512_fmadd_ps(scale, lv, c.mu);
}

// scores[s][t0 .. t0 + 16 NT) += qb[s] . kt[:, t0 ..] for NS states, NT 16-token vectors.
template <int NS, int NT>
void tl_gemm(const PkPlan& P, const float* qb, int s0, const float* kt, float* scores) {
  __m512 acc[NS][NT];
  for (int j = 0; j < NS; ++j)
    for (int g = 0; g < NT; ++g) acc[j][g] = _mm512_setzero_ps();
  for (const PkPlan::TlLane& T : P.tl) {
    const float* row = kt + static_cast<size_t>(T.lane) * 64;
    __m512 k[NT];
    for (int g = 0; g < NT; ++g) k[g] = _mm512_loadu_ps(row + 16 * g);
    for (int j = 0; j < NS; ++j) {
      const __m512 q = _mm512_set1_ps(qb[static_cast<size_t>(s0 + j) * P.dp + T.lane]);
      for (int g = 0; g < NT; ++g) acc[j][g] = _mm512_fmadd_ps(q, k[g], acc[j][g]);
    }
  }
  for (int j = 0; j < NS; ++j)
    for (int g = 0; g < NT; ++g) _mm512_storeu_ps(scores + static_cast<size_t>(s0 + j) * 64 + 16 * g, acc[j][g]);
}

template <int NS>
void tl_gemm_nt(const PkPlan& P, const float* qb, int s0, const float* kt, int groups, float* scores) {
  switch (groups) {
    case 1: tl_gemm<NS, 1>(P, qb, s0, kt, scores); break;
    case 2: tl_gemm<NS, 2>(P, qb, s0, kt, scores); break;
    case 3: tl_gemm<NS, 3>(P, qb, s0, kt, scores); break;
    default: tl_gemm<NS, 4>(P, qb, s0, kt, scores); break;
  }
}

}  // namespace

void pk_scores_tl_avx512(const PkPlan& P, const uint8_t* codes, size_t code_size, int cnt, const float* qb, int ns,
                         float* kt, float* scores) {
  const int groups = (cnt + 15) / 16;
  // The block's codes with zero rows up to the last group's end and 4 bytes of tail, so every
  // gather (4 bytes at a code's byte 2 + 2w) stays inside; zero rows decode to the mean (scale 0).
  thread_local std::vector<uint8_t> buf;
  const size_t bytes = static_cast<size_t>(cnt) * code_size, padded = static_cast<size_t>(groups) * 16 * code_size;
  buf.resize(padded + 4);
  std::memcpy(buf.data(), codes, bytes);
  std::memset(buf.data() + bytes, 0, padded + 4 - bytes);
  const __m512i stride = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(static_cast<int>(code_size)));
  // Windows and scales of all groups first (win[g * words + w]), then each lane's constants once
  // for all groups.
  const int words = P.tl_words;
  alignas(64) __m512i win[4 * kPkTlMaxWords];
  __m512 scale[4];
  for (int g = 0; g < groups; ++g) {
    const uint8_t* base = buf.data() + static_cast<size_t>(g) * 16 * code_size;
    // bf16 scale = the code's first 16 bits: the dword at byte 0, shifted up.
    scale[g] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_i32gather_epi32(stride, base, 1), 16));
    for (int w = 0; w < words; ++w) win[g * words + w] = _mm512_i32gather_epi32(stride, base + 2 + 2 * w, 1);
  }
  const float* tabs = P.tl_tab.data();
  const PkPlan::TlLane* lanes = P.tl.data();
  const int* blane = P.tl_b.data();
  const float* cosv = P.tl_cos.data();
  const float* sinv = P.tl_sin.data();
  const int pairs = P.tl_pairs, nl = static_cast<int>(P.tl.size());
  float* __restrict k = kt;
  for (int p = 0; p < pairs; ++p) {
    const TlConst A = tl_const(tabs, lanes[p]), B = tl_const(tabs, lanes[blane[p]]);
    float* ka = k + static_cast<size_t>(lanes[p].lane) * 64;
    float* kb = k + static_cast<size_t>(lanes[blane[p]].lane) * 64;
    const float* cp = cosv + static_cast<size_t>(p) * 64;
    const float* sp = sinv + static_cast<size_t>(p) * 64;
    for (int g = 0; g < groups; ++g) {
      const __m512 a = tl_decode(tabs, A, win + g * words, scale[g]), b = tl_decode(tabs, B, win + g * words, scale[g]);
      const __m512 co = _mm512_loadu_ps(cp + 16 * g), si = _mm512_loadu_ps(sp + 16 * g);
      _mm512_storeu_ps(ka + 16 * g, _mm512_fmsub_ps(a, co, _mm512_mul_ps(b, si)));
      _mm512_storeu_ps(kb + 16 * g, _mm512_fmadd_ps(a, si, _mm512_mul_ps(b, co)));
    }
  }
  for (int i = 2 * pairs; i < nl; ++i) {
    const TlConst C = tl_const(tabs, lanes[i]);
    float* kc = k + static_cast<size_t>(lanes[i].lane) * 64;
    for (int g = 0; g < groups; ++g) _mm512_storeu_ps(kc + 16 * g, tl_decode(tabs, C, win + g * words, scale[g]));
  }
  int s0 = 0;
  for (; s0 + 4 <= ns; s0 += 4) tl_gemm_nt<4>(P, qb, s0, kt, groups, scores);
  switch (ns - s0) {
    case 1: tl_gemm_nt<1>(P, qb, s0, kt, groups, scores); break;
    case 2: tl_gemm_nt<2>(P, qb, s0, kt, groups, scores); break;
    case 3: tl_gemm_nt<3>(P, qb, s0, kt, groups, scores); break;
    default: break;
  }
}

// Basis codecs: y_hat rows by the rotation-free plan, then x = S y_hat per output vector for 8
// tokens at a time (8 accumulators; each nonzero column loaded once per 8 tokens, y_hat entries
// broadcast), then the offset rotation of the A/B lanes in place.
void pk_decode_basis_rope_avx512(const PkBasisPlan& B, const uint8_t* codes, size_t code_size, int cnt, float* ybuf,
                                 float* rows) {
  constexpr int T = 8;
  const int ydp = B.y.dp, dp = B.dp, arot = kPkLanes * B.rot_vec;
  pk_decode_rope_avx512(B.y, codes, code_size, cnt, ybuf);
  const int cnt8 = (cnt + T - 1) / T * T;  // <= 64; the rows past cnt are zero and never read back
  std::memset(ybuf + static_cast<size_t>(cnt) * ydp, 0, sizeof(float) * static_cast<size_t>(cnt8 - cnt) * ydp);
  const float* col = B.col.data();
  const int* lane = B.nz_lane.data();
  for (int v = 0; v < B.nvec; ++v) {
    const int kb = B.nz_begin[v], ke = B.nz_begin[v + 1];
    for (int t0 = 0; t0 < cnt8; t0 += T) {
      __m512 acc[T];
      for (int u = 0; u < T; ++u) acc[u] = _mm512_setzero_ps();
      const float* y0 = ybuf + static_cast<size_t>(t0) * ydp;
      for (int k = kb; k < ke; ++k) {
        const __m512 c = _mm512_loadu_ps(col + static_cast<size_t>(k) * kPkLanes);
        const float* yl = y0 + lane[k];
        for (int u = 0; u < T; ++u) acc[u] = _mm512_fmadd_ps(_mm512_set1_ps(yl[u * ydp]), c, acc[u]);
      }
      for (int u = 0; u < T; ++u) _mm512_storeu_ps(rows + static_cast<size_t>(t0 + u) * dp + kPkLanes * v, acc[u]);
    }
  }
  for (int t = 0; t < cnt; ++t) {
    float* row = rows + static_cast<size_t>(t) * dp;
    const float* ct = B.cos_t.data() + static_cast<size_t>(t) * arot;
    const float* sn = B.sin_t.data() + static_cast<size_t>(t) * arot;
    for (int r = 0; r < B.rot_vec; ++r) {
      const __m512 a = _mm512_loadu_ps(row + kPkLanes * r), b = _mm512_loadu_ps(row + arot + kPkLanes * r);
      const __m512 co = _mm512_loadu_ps(ct + kPkLanes * r), si = _mm512_loadu_ps(sn + kPkLanes * r);
      _mm512_storeu_ps(row + kPkLanes * r, _mm512_fmsub_ps(a, co, _mm512_mul_ps(b, si)));
      _mm512_storeu_ps(row + arot + kPkLanes * r, _mm512_fmadd_ps(a, si, _mm512_mul_ps(b, co)));
    }
  }
}

}  // namespace tqkv::attn
