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
    const float* ct = &P.cos_t[static_cast<size_t>(t) * arot];
    const float* sn = &P.sin_t[static_cast<size_t>(t) * arot];
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

}  // namespace tqkv::attn
