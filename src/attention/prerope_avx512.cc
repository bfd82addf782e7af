// AVX-512 decode + RoPE of pk{b} key blocks (prerope_kernels.h). AVX512 F/BW only (vpermw,
// vpermt2w, vpermt2ps), no VBMI.
//
// Per token: the code stream (<= 128 bytes) is loaded into one or two zmm (masked loads: no byte
// past the code is touched). For each plan vector, vpermw/vpermt2w gathers the two 16-bit words
// holding each lane's code into its 32-bit lane, vpsrlvd aligns the code, one vpternlogd forms the
// level-table index (code & mask) | (1 << b), and vpermt2ps looks up 32 table entries (all widths
// <= 4 bits); wider channels take one more masked lookup per further 32 entries. The key is
// mean + (scale * sd) * level (one FMA), then A/B lanes are rotated by the offset angle.
#include "core/simd_intrinsics.h"

#include <cstring>

#include "attention/prerope_kernels.h"

namespace tqkv::attn {

void pk_decode_rope_avx512(const PkPlan& P, const uint8_t* codes, size_t code_size, int cnt, float* rows) {
  if (!P.fits_zmm2) {  // streams over 128 bytes: the gather kernel
    pk_decode_rope_avx2(P, codes, code_size, cnt, rows);
    return;
  }
  const int sb = P.stream_bytes, arot = kPkLanes * P.rot_vec;
  const bool two = sb > 64;
  const __mmask64 m0 = sb >= 64 ? ~__mmask64{0} : (__mmask64{1} << sb) - 1;
  const __mmask64 m1 = !two ? 0 : sb >= 128 ? ~__mmask64{0} : (__mmask64{1} << (sb - 64)) - 1;
  const __m512 lv0 = _mm512_load_ps(P.levels), lv1 = _mm512_load_ps(P.levels + 16);
  for (int t = 0; t < cnt; ++t) {
    const uint8_t* c = codes + static_cast<size_t>(t) * code_size;
    uint16_t sbits;
    std::memcpy(&sbits, c, 2);
    const __m512 s = _mm512_set1_ps(bf16_to_float(sbits));
    const __m512i S0 = _mm512_maskz_loadu_epi8(m0, c + 2);
    const __m512i S1 = two ? _mm512_maskz_loadu_epi8(m1, c + 66) : _mm512_setzero_si512();
    float* row = rows + static_cast<size_t>(t) * P.dp;
    auto decode = [&](int v) {
      const __m512i wi = _mm512_loadu_si512(&P.widx[static_cast<size_t>(v) * 32]);
      const __m512i w = two ? _mm512_permutex2var_epi16(S0, wi, S1) : _mm512_permutexvar_epi16(wi, S0);
      const __m512i code = _mm512_srlv_epi32(w, _mm512_loadu_si512(&P.shift16[v * kPkLanes]));
      // (code & mask) | base: imm 0xEA = (A & B) | C.
      const __m512i idx = _mm512_ternarylogic_epi32(code, _mm512_loadu_si512(&P.mask[v * kPkLanes]),
                                                    _mm512_loadu_si512(&P.base[v * kPkLanes]), 0xEA);
      __m512 lv = _mm512_permutex2var_ps(lv0, idx, lv1);
      for (int k = 1; k < P.windows[v]; ++k) {
        const __mmask16 mk = _mm512_cmpeq_epi32_mask(_mm512_srli_epi32(idx, 5), _mm512_set1_epi32(k));
        lv = _mm512_mask_mov_ps(lv, mk, _mm512_permutex2var_ps(_mm512_load_ps(P.levels + 32 * k), idx,
                                                               _mm512_load_ps(P.levels + 32 * k + 16)));
      }
      return _mm512_fmadd_ps(_mm512_mul_ps(s, _mm512_loadu_ps(&P.sd[v * kPkLanes])), lv,
                             _mm512_loadu_ps(&P.mu[v * kPkLanes]));
    };
    const float* ct = &P.cos_t[static_cast<size_t>(t) * arot];
    const float* st = &P.sin_t[static_cast<size_t>(t) * arot];
    for (int r = 0; r < P.rot_vec; ++r) {
      const __m512 a = decode(r), b = decode(P.rot_vec + r);
      const __m512 co = _mm512_loadu_ps(ct + kPkLanes * r), si = _mm512_loadu_ps(st + kPkLanes * r);
      _mm512_storeu_ps(row + kPkLanes * r, _mm512_fmsub_ps(a, co, _mm512_mul_ps(b, si)));
      _mm512_storeu_ps(row + arot + kPkLanes * r, _mm512_fmadd_ps(a, si, _mm512_mul_ps(b, co)));
    }
    for (int v = 2 * P.rot_vec; v < P.nvec; ++v) _mm512_storeu_ps(row + kPkLanes * v, decode(v));
  }
}

}  // namespace tqkv::attn
