// AVX2 decode + RoPE of pk{b} key blocks (prerope_kernels.h); also the AVX-512 level's kernel for
// code streams over 128 bytes.
//
// Per 8 lanes: vpgatherdd reads the 32-bit word at each lane's stream byte o / 8 (the block's
// codes are first copied into a buffer with 4 zero bytes of tail, so no gather reads past it),
// vpsrlvd by o % 8 aligns the code (<= 7 + 8 bits), (code & mask) | (1 << b) indexes the level
// table, vgatherdps looks the levels up. Then mean + (scale * sd) * level and the lane-wise RoPE
// rotation, as in the AVX-512 kernel.
#include "core/simd_intrinsics.h"

#include <cstring>
#include <vector>

#include "attention/prerope_kernels.h"

namespace tqkv::attn {

void pk_decode_rope_avx2(const PkPlan& P, const uint8_t* codes, size_t code_size, int cnt, float* rows) {
  thread_local std::vector<uint8_t> buf;
  const size_t bytes = static_cast<size_t>(cnt) * code_size;
  buf.resize(bytes + 4);
  std::memcpy(buf.data(), codes, bytes);
  std::memset(buf.data() + bytes, 0, 4);
  const int arot = kPkLanes * P.rot_vec;
  for (int t = 0; t < cnt; ++t) {
    const uint8_t* c = buf.data() + static_cast<size_t>(t) * code_size;
    uint16_t sbits;
    std::memcpy(&sbits, c, 2);
    const __m256 s = _mm256_set1_ps(bf16_to_float(sbits));
    const int* stream = reinterpret_cast<const int*>(c + 2);
    float* row = rows + static_cast<size_t>(t) * P.dp;
    auto decode = [&](int l) {  // lanes l .. l + 7
      const __m256i off = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&P.byte_off[l]));
      const __m256i w = _mm256_i32gather_epi32(stream, off, 1);
      const __m256i code = _mm256_srlv_epi32(w, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&P.shift8[l])));
      const __m256i idx = _mm256_or_si256(
          _mm256_and_si256(code, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&P.mask[l]))),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&P.base[l])));
      const __m256 lv = _mm256_i32gather_ps(P.levels, idx, 4);
      return _mm256_fmadd_ps(_mm256_mul_ps(s, _mm256_loadu_ps(&P.sd[l])), lv, _mm256_loadu_ps(&P.mu[l]));
    };
    const float* ct = P.cos_t.data() + static_cast<size_t>(t) * arot;
    const float* st = P.sin_t.data() + static_cast<size_t>(t) * arot;
    for (int l = 0; l < arot; l += 8) {
      const __m256 a = decode(l), b = decode(arot + l);
      const __m256 co = _mm256_loadu_ps(ct + l), si = _mm256_loadu_ps(st + l);
      _mm256_storeu_ps(row + l, _mm256_fmsub_ps(a, co, _mm256_mul_ps(b, si)));
      _mm256_storeu_ps(row + arot + l, _mm256_fmadd_ps(a, si, _mm256_mul_ps(b, co)));
    }
    for (int l = 2 * arot; l < P.dp; l += 8) _mm256_storeu_ps(row + l, decode(l));
  }
}

// Basis codecs (prerope_kernels.h): as the AVX-512 kernel, 4 tokens x 2 half-vectors at a time;
// the same FMAs in the same order per lane, so rows are bit-identical to the AVX-512 kernel's.
void pk_decode_basis_rope_avx2(const PkBasisPlan& B, const uint8_t* codes, size_t code_size, int cnt, float* ybuf,
                               float* rows) {
  constexpr int T = 4;
  const int ydp = B.y.dp, dp = B.dp, arot = kPkLanes * B.rot_vec;
  pk_decode_rope_avx2(B.y, codes, code_size, cnt, ybuf);
  const int cntT = (cnt + T - 1) / T * T;
  std::memset(ybuf + static_cast<size_t>(cnt) * ydp, 0, sizeof(float) * static_cast<size_t>(cntT - cnt) * ydp);
  const float* col = B.col.data();
  const int* lane = B.nz_lane.data();
  for (int v = 0; v < B.nvec; ++v) {
    const int kb = B.nz_begin[v], ke = B.nz_begin[v + 1];
    for (int t0 = 0; t0 < cntT; t0 += T) {
      __m256 lo[T], hi[T];
      for (int u = 0; u < T; ++u) lo[u] = hi[u] = _mm256_setzero_ps();
      const float* y0 = ybuf + static_cast<size_t>(t0) * ydp;
      for (int k = kb; k < ke; ++k) {
        const __m256 c0 = _mm256_loadu_ps(col + static_cast<size_t>(k) * kPkLanes);
        const __m256 c1 = _mm256_loadu_ps(col + static_cast<size_t>(k) * kPkLanes + 8);
        const float* yl = y0 + lane[k];
        for (int u = 0; u < T; ++u) {
          const __m256 yb = _mm256_broadcast_ss(yl + static_cast<size_t>(u) * ydp);
          lo[u] = _mm256_fmadd_ps(yb, c0, lo[u]);
          hi[u] = _mm256_fmadd_ps(yb, c1, hi[u]);
        }
      }
      for (int u = 0; u < T; ++u) {
        float* dst = rows + static_cast<size_t>(t0 + u) * dp + kPkLanes * v;
        _mm256_storeu_ps(dst, lo[u]);
        _mm256_storeu_ps(dst + 8, hi[u]);
      }
    }
  }
  for (int t = 0; t < cnt; ++t) {
    float* row = rows + static_cast<size_t>(t) * dp;
    const float* ct = B.cos_t.data() + static_cast<size_t>(t) * arot;
    const float* st = B.sin_t.data() + static_cast<size_t>(t) * arot;
    for (int l = 0; l < arot; l += 8) {
      const __m256 a = _mm256_loadu_ps(row + l), b = _mm256_loadu_ps(row + arot + l);
      const __m256 co = _mm256_loadu_ps(ct + l), si = _mm256_loadu_ps(st + l);
      _mm256_storeu_ps(row + l, _mm256_fmsub_ps(a, co, _mm256_mul_ps(b, si)));
      _mm256_storeu_ps(row + arot + l, _mm256_fmadd_ps(a, si, _mm256_mul_ps(b, co)));
    }
  }
}

}  // namespace tqkv::attn
