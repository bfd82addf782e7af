// Split-KV flash-decoding (and causal chunked prefill) straight from the packed GPU pages.
//
// Grid: x = KV split, y = kv head x query chunk, z = batch item. A CTA (4 warps) owns one kv head
// of one item, so every K/V tile is read once per GQA group; its 8 "columns" are (q head of the
// group, query token) pairs. Warp w walks its own contiguous quarter of the split with its own online
// softmax state; the 4 warps are merged in shared memory and the split's (m, l, O) goes to a
// workspace that merge_kernel combines (and rotates back for rotated values).
//
// Per 16-token tile (tensor cores, mma.m16n8k16 f16 -> f32):
//   S   = K Q^T      A = K tile (16 tokens x 16 coords), decoded pair by pair from the packed
//                    fields into f16x2 registers (lut formats: a shared table, one entry per pair
//                    of fields, replicated per lane so no two lanes share a bank), B = the rotated,
//                    scaled query (built once per CTA).
//   S  *= per-token key scale; mask (ragged length, causal limit per column); online softmax.
//   O^T += V^T P'    A = V tile (16 coords x 16 tokens), B = P' = p * vscale / max(vscale) moved
//                    from the C layout into the B layout by 4 shuffles; O += max(vscale) * mma.
// Error budget (docs/design.md "CUDA attention"): decoded coordinates, the query and P' are
// rounded to f16 (relative 2^-11 each); accumulation is f32.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cuda_internal.h"
#include "cuda/gpu_layout.h"

namespace tqkv::gpu {
namespace {

constexpr float kNegInf = -__builtin_huge_valf();

__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t h2_sub(uint32_t a, uint32_t b) {
  __half2 r = __hsub2(*reinterpret_cast<__half2*>(&a), *reinterpret_cast<__half2*>(&b));
  return *reinterpret_cast<uint32_t*>(&r);
}
__device__ __forceinline__ uint32_t h2_mul(uint32_t a, uint32_t b) {
  __half2 r = __hmul2(*reinterpret_cast<__half2*>(&a), *reinterpret_cast<__half2*>(&b));
  return *reinterpret_cast<uint32_t*>(&r);
}

template <int C> struct CodecTraits;
template <> struct CodecTraits<kLut2> { static constexpr int w = 2, lut = 16; };
template <> struct CodecTraits<kLut4> { static constexpr int w = 4, lut = 256; };
template <> struct CodecTraits<kQ4> { static constexpr int w = 4, lut = 0; };
template <> struct CodecTraits<kQ8> { static constexpr int w = 8, lut = 0; };
template <> struct CodecTraits<kF16> { static constexpr int w = 16, lut = 0; };

// A lane's chunk of one tile: NW words, kept in registers when small, read from global otherwise.
template <int NW>
struct Chunk {
  static constexpr bool kRegs = NW <= 16;
  uint32_t w[kRegs ? NW : 1];
  const uint32_t* g;
  __device__ __forceinline__ void load(const uint8_t* p) {
    g = reinterpret_cast<const uint32_t*>(p);
    if constexpr (kRegs) {
      if constexpr (NW % 4 == 0) {
#pragma unroll
        for (int i = 0; i < NW / 4; ++i) {
          const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i);
          w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
        }
      } else {
#pragma unroll
        for (int i = 0; i < NW / 2; ++i) {
          const uint2 v = __ldg(reinterpret_cast<const uint2*>(p) + i);
          w[2 * i] = v.x; w[2 * i + 1] = v.y;
        }
      }
    }
  }
  __device__ __forceinline__ uint32_t word(int i) const {
    if constexpr (kRegs) return w[i]; else return __ldg(g + i);
  }
};

// Pair p of a chunk -> f16x2. lut: per-lane table base; sc: f16x2 scale of the pair (q4/q8).
template <int C, int NW>
__device__ __forceinline__ uint32_t decode_pair(const Chunk<NW>& ch, int p, const uint32_t* lut, uint32_t sc) {
  if constexpr (C == kLut2) {
    // Table at a 2 KiB-aligned shared address: entry e of lane l at base | e << 7 | l << 2, so
    // the address is one shift and one AND-OR (lut carries base | l << 2 as an integer).
    const int bit = p * 4;
    const uint32_t wv = ch.word(bit / 32);
    constexpr int kShift = 7;
    const int sh = bit % 32;
    const uint32_t moved = sh >= kShift ? (wv >> (sh - kShift)) : (wv << (kShift - sh));
    const uint32_t addr = (moved & 0x780u) | static_cast<uint32_t>(reinterpret_cast<uintptr_t>(lut));
    uint32_t r;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(r) : "r"(addr));
    return r;
  } else if constexpr (C == kLut4) {
    constexpr int w = CodecTraits<C>::w;
    const int bit = p * 2 * w;
    const uint32_t idx = (ch.word(bit / 32) >> (bit % 32)) & ((1u << (2 * w)) - 1u);
    return lut[idx * 32];
  } else if constexpr (C == kQ4) {
    const uint32_t v = ((ch.word(p / 4) >> ((p % 4) * 4)) & 0x000F000Fu) | 0x64006400u;
    return h2_mul(h2_sub(v, 0x64086408u), sc);  // (1024 + q) - 1032 = q - 8, exact
  } else if constexpr (C == kQ8) {
    const uint32_t x = ch.word(p / 2) ^ 0x80808080u;
    const uint32_t v = __byte_perm(x, 0x64646464u, (p % 2) ? 0x4342 : 0x4140);
    return h2_mul(h2_sub(v, 0x64806480u), sc);  // (1024 + q + 128) - 1152 = q, exact
  } else {
    return ch.word(p);
  }
}

template <int C>
__device__ __forceinline__ uint32_t load_h(const uint8_t* p) {
  return *reinterpret_cast<const unsigned short*>(p);
}

template <int KC, int VC, int D>
__global__ void __launch_bounds__(128) attn_kernel(const AttnParams p) {
  constexpr int KS = D / 16;                      // k-steps of S = m-tiles of O
  constexpr int KNW = D * CodecTraits<KC>::w / 64;  // words per lane chunk
  constexpr int VNW = D * CodecTraits<VC>::w / 64;
  constexpr int KLUT = CodecTraits<KC>::lut, VLUT = CodecTraits<VC>::lut;
  constexpr size_t kLutBytes = static_cast<size_t>(KLUT + VLUT) * 32 * 4 + 2048;  // + alignment slack
  constexpr size_t kMergeBytes = static_cast<size_t>(4) * (8 * D + 16) * 4;
  constexpr size_t kRegion0 = kLutBytes > kMergeBytes ? kLutBytes : kMergeBytes;
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t sbase = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint32_t lut_off = (2048u - (sbase & 2047u)) & 2047u;  // lut2 tables on a 2 KiB boundary
  uint32_t* klut_s = reinterpret_cast<uint32_t*>(smem + lut_off);
  uint32_t* vlut_s = klut_s + KLUT * 32;
  float* merge_s = reinterpret_cast<float*>(smem);
  float* qbuf = reinterpret_cast<float*>(smem + kRegion0);  // [8][D]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, c = lane % 4;
  const int b = blockIdx.z;
  const int h = blockIdx.y % p.n_kv_heads, qc = blockIdx.y / p.n_kv_heads;
  const int split = blockIdx.x;
  const int len = p.item_len[b];
  const int seq = p.item_seq[b];
  const int ntiles = (len + 15) / 16;
  const int tile0 = split * p.tiles_per_split;
  const int tile1 = min(ntiles, tile0 + p.tiles_per_split);
  if (tile0 >= tile1) return;  // merge_kernel ignores splits past the end
  const int G = p.group, n_q_heads = p.n_kv_heads * G;

  // ---- prologue: tables, query columns (rotated, scaled) ----
  for (int i = tid; i < KLUT * 32; i += 128) klut_s[i] = __ldg(p.k.lut + i / 32);
  for (int i = tid; i < VLUT * 32; i += 128) vlut_s[i] = __ldg(p.v.lut + i / 32);
  for (int i = tid; i < 8 * D; i += 128) {
    const int n = i / D, e = i % D;
    const int hl = n % G, jq = qc * p.qpc + n / G;
    float x = 0;
    if (n < G * p.qpc && jq < p.m) {
      x = p.q[((static_cast<size_t>(b) * n_q_heads + h * G + hl) * p.m + jq) * D + e];
      if (p.k_rotated) x *= p.k.signs[h * D + e];
    }
    qbuf[i] = x;
  }
  __syncthreads();
  if (p.k_rotated) {
    for (int hh = 1; hh < D; hh <<= 1) {
      for (int i = tid; i < 8 * D / 2; i += 128) {
        const int n = i / (D / 2), k = i % (D / 2);
        const int lo = (k / hh) * 2 * hh + (k % hh);
        float* v = qbuf + n * D;
        const float a = v[lo], bb = v[lo + hh];
        v[lo] = a + bb;
        v[lo + hh] = a - bb;
      }
      __syncthreads();
    }
  }
  const float qmul = p.scale_log2 * (p.k_rotated ? rsqrtf(static_cast<float>(D)) : 1.0f);
  uint32_t qf[KS][2];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    const float* v = qbuf + g * D + c * (D / 4) + 4 * kk;
    qf[kk][0] = pack_half2(v[0] * qmul, v[1] * qmul);
    qf[kk][1] = pack_half2(v[2] * qmul, v[3] * qmul);
  }
  // causal limits of this thread's two columns (2c, 2c+1)
  int lim[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int n = 2 * c + j, jq = qc * p.qpc + n / G;
    lim[j] = (n < G * p.qpc && jq < p.m) ? len - p.m + jq : -1;
  }
  __syncthreads();  // tables and qbuf complete

  // lut2: the tables' shared addresses | lane * 4 (integers cast to pointers, decoded in
  // decode_pair); other lut formats: ordinary pointers to the lane's column.
  const uint32_t* klut = KC == kLut2 ? reinterpret_cast<const uint32_t*>(static_cast<uintptr_t>(sbase + lut_off + lane * 4))
                                     : klut_s + lane;
  const uint32_t* vlut = VC == kLut2 ? reinterpret_cast<const uint32_t*>(static_cast<uintptr_t>(sbase + lut_off + KLUT * 128 + lane * 4))
                                     : vlut_s + lane;
  const int* btab = p.block_table + static_cast<size_t>(seq) * p.max_pages_per_seq;
  const int tiles_per_page = p.page_tokens / 16;
  const bool tpp_pow2 = (tiles_per_page & (tiles_per_page - 1)) == 0;
  const int tpp_shift = __ffs(tiles_per_page) - 1;
  const size_t klane_off = p.k.meta_region + lane * (KNW * 4), vlane_off = p.v.meta_region + lane * (VNW * 4);
  int cached_page = -1;
  const uint8_t* kpage = nullptr;
  const uint8_t* vpage = nullptr;
  constexpr int KNB = (KC == kQ4 || KC == kQ8) ? ((D / 4) > 32 ? (D / 4) / 32 : 1) : 1;
  const int knb = (D + 31) / 32;  // q4/q8 blocks per token

  float m_run[2] = {kNegInf, kNegInf}, l_run[2] = {0.f, 0.f};
  float o[KS][4];
#pragma unroll
  for (int i = 0; i < KS; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;

  // One tile's registers: packed chunks and scales. The next tile of the warp is loaded while
  // the current one is computed (register double buffering), so HBM latency overlaps the math.
  struct TileRegs {
    Chunk<KNW> kch;
    Chunk<VNW> vch;
    float ks0, ks1, vs0, vs1;
    uint32_t ksc[2][KNB];
    uint32_t vsc[2];
  };
  auto load_tile = [&](int ti, TileRegs& R) {
    const int page = tpp_pow2 ? ti >> tpp_shift : ti / tiles_per_page;
    const int lt = ti - page * tiles_per_page;
    if (page != cached_page) {  // warps walk contiguous tiles: a page lookup every few tiles
      cached_page = page;
      const size_t pid = static_cast<size_t>(__ldg(btab + page)) * p.n_kv_heads + h;
      kpage = p.k.pool + pid * p.k.page_head_bytes;
      vpage = p.v.pool + pid * p.v.page_head_bytes;
    }
    const uint8_t* kbase = kpage;
    const uint8_t* vbase = vpage;
    R.kch.load(kbase + klane_off + lt * (16 * D * CodecTraits<KC>::w / 8));
    R.vch.load(vbase + vlane_off + lt * (16 * D * CodecTraits<VC>::w / 8));
    const int T0 = ti * 16 + g, T1 = T0 + 8;
    R.ks0 = R.ks1 = 1.f;
    R.vs0 = R.vs1 = 0.f;
    R.vsc[0] = R.vsc[1] = 0;
#pragma unroll
    for (int bb = 0; bb < KNB; ++bb) R.ksc[0][bb] = R.ksc[1][bb] = 0;
    if constexpr (KC == kLut2 || KC == kLut4) {
      R.ks0 = __ldg(reinterpret_cast<const float*>(kbase) + lt * 16 + g);
      R.ks1 = __ldg(reinterpret_cast<const float*>(kbase) + lt * 16 + g + 8);
    } else if constexpr (KC == kQ4 || KC == kQ8) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf)
#pragma unroll
        for (int bb = 0; bb < KNB; ++bb) {
          const int blk = (c * (D / 4)) / 32 + bb;
          const uint32_t d16 = load_h<KC>(kbase + (static_cast<size_t>(lt * 16 + g + 8 * hf) * knb + blk) * 2);
          R.ksc[hf][bb] = d16 | (d16 << 16);
        }
    }
    if constexpr (VC == kLut2 || VC == kLut4) {
      R.vs0 = T0 < len ? __ldg(reinterpret_cast<const float*>(vbase) + lt * 16 + g) : 0.f;
      R.vs1 = T1 < len ? __ldg(reinterpret_cast<const float*>(vbase) + lt * 16 + g + 8) : 0.f;
    } else if constexpr (VC == kQ4 || VC == kQ8) {
      const int blk = (g * (D / 8)) / 32;
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int t = lt * 16 + 2 * c + 8 * hf;
        const uint32_t lo = load_h<VC>(vbase + (static_cast<size_t>(t) * knb + blk) * 2);
        const uint32_t hi = load_h<VC>(vbase + (static_cast<size_t>(t + 1) * knb + blk) * 2);
        R.vsc[hf] = lo | (hi << 16);
      }
    }
  };

  // Values of lut formats: P' = p * vscale / vref with vref the running maximum of the value
  // scales seen by this warp (so P' <= 1 fits f16); when vref grows, O is rescaled like the
  // softmax maximum, and the true O is vref * O.
  float vref = 0.f;
  TileRegs cur, nxt;
  // Warp w owns a contiguous quarter of the split's tiles (same page for several tiles).
  const int per_warp = (tile1 - tile0 + 3) / 4;
  const int wt0 = tile0 + warp * per_warp, wt1 = min(tile1, wt0 + per_warp);
  if (wt0 < wt1) load_tile(wt0, cur);
  for (int ti = wt0; ti < wt1; ++ti) {
    if (ti + 1 < wt1) load_tile(ti + 1, nxt);
    const int T0 = ti * 16 + g, T1 = T0 + 8;

    // ---- S = K Q^T ----
    float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      uint32_t a[4];
      const int bb = (KNB > 1) ? (4 * kk) / 32 : 0;  // block of this k-step inside the chunk
      a[0] = decode_pair<KC>(cur.kch, 2 * kk, klut, cur.ksc[0][bb]);
      a[1] = decode_pair<KC>(cur.kch, D / 8 + 2 * kk, klut, cur.ksc[1][bb]);
      a[2] = decode_pair<KC>(cur.kch, 2 * kk + 1, klut, cur.ksc[0][bb]);
      a[3] = decode_pair<KC>(cur.kch, D / 8 + 2 * kk + 1, klut, cur.ksc[1][bb]);
      mma16816(s, a, qf[kk][0], qf[kk][1]);
    }
    s[0] = T0 <= lim[0] ? s[0] * cur.ks0 : kNegInf;
    s[1] = T0 <= lim[1] ? s[1] * cur.ks0 : kNegInf;
    s[2] = T1 <= lim[0] ? s[2] * cur.ks1 : kNegInf;
    s[3] = T1 <= lim[1] ? s[3] * cur.ks1 : kNegInf;

    // ---- value scale reference (lut values) ----
    float rf = 1.f, w0 = 1.f, w1 = 1.f;
    if constexpr (VC == kLut2 || VC == kLut4) {
      float vm = fmaxf(cur.vs0, cur.vs1);
      vm = fmaxf(vm, __shfl_xor_sync(0xffffffffu, vm, 4));
      vm = fmaxf(vm, __shfl_xor_sync(0xffffffffu, vm, 8));
      vm = fmaxf(vm, __shfl_xor_sync(0xffffffffu, vm, 16));
      const float vnew = fmaxf(vref, vm);
      if (vnew > 0.f) {
        const float inv = 1.f / vnew;
        rf = vref * inv;
        w0 = cur.vs0 * inv;
        w1 = cur.vs1 * inv;
      } else {
        w0 = w1 = 0.f;
      }
      vref = vnew;
    }

    // ---- online softmax per column ----
    float pr[4], oas[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float mx = fmaxf(s[j], s[j + 2]);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
      const float mn = fmaxf(m_run[j], mx);
      const float mu = mn == kNegInf ? 0.f : mn;
      const float alpha = fast_exp2(m_run[j] - mu);
      pr[j] = fast_exp2(s[j] - mu);
      pr[j + 2] = fast_exp2(s[j + 2] - mu);
      l_run[j] = l_run[j] * alpha + pr[j] + pr[j + 2];
      m_run[j] = mn;
      oas[j] = alpha * rf;
    }
    // Rescale O only when some column's maximum (or the value reference) moved: after the first
    // tiles this is rare, and it saves KS * 4 multiplies per tile.
    if (__any_sync(0xffffffffu, oas[0] != 1.f || oas[1] != 1.f)) {
#pragma unroll
      for (int mm = 0; mm < KS; ++mm) {
        o[mm][0] *= oas[0];
        o[mm][2] *= oas[0];
        o[mm][1] *= oas[1];
        o[mm][3] *= oas[1];
      }
    }
    // ---- P' in f16, moved from the C layout to the B layout ----
    const uint32_t X0 = pack_half2(pr[0] * w0, pr[1] * w0);  // token g,   columns 2c, 2c+1
    const uint32_t X1 = pack_half2(pr[2] * w1, pr[3] * w1);  // token g+8
    const int la = 4 * (2 * c) + (g >> 1), lb = la + 4;
    const uint32_t Y0a = __shfl_sync(0xffffffffu, X0, la), Y0b = __shfl_sync(0xffffffffu, X0, lb);
    const uint32_t Y1a = __shfl_sync(0xffffffffu, X1, la), Y1b = __shfl_sync(0xffffffffu, X1, lb);
    const uint32_t sel = (g & 1) ? 0x7632 : 0x5410;
    const uint32_t pb0 = __byte_perm(Y0a, Y0b, sel), pb1 = __byte_perm(Y1a, Y1b, sel);

    // ---- O^T += V^T P' ----
#pragma unroll
    for (int mm = 0; mm < KS; ++mm) {
      uint32_t a[4];
      a[0] = decode_pair<VC>(cur.vch, 4 * mm + 0, vlut, cur.vsc[0]);
      a[1] = decode_pair<VC>(cur.vch, 4 * mm + 1, vlut, cur.vsc[0]);
      a[2] = decode_pair<VC>(cur.vch, 4 * mm + 2, vlut, cur.vsc[1]);
      a[3] = decode_pair<VC>(cur.vch, 4 * mm + 3, vlut, cur.vsc[1]);
      mma16816(o[mm], a, pb0, pb1);
    }
    cur = nxt;
  }
  if constexpr (VC == kLut2 || VC == kLut4) {
#pragma unroll
    for (int mm = 0; mm < KS; ++mm)
#pragma unroll
      for (int r = 0; r < 4; ++r) o[mm][r] *= vref;
  }

  // ---- merge the 4 warps ----
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    l_run[j] += __shfl_xor_sync(0xffffffffu, l_run[j], 4);
    l_run[j] += __shfl_xor_sync(0xffffffffu, l_run[j], 8);
    l_run[j] += __shfl_xor_sync(0xffffffffu, l_run[j], 16);
  }
  __syncthreads();  // tables no longer needed: merge_s aliases them
  float* wo = merge_s + warp * (8 * D + 16);
#pragma unroll
  for (int mm = 0; mm < KS; ++mm) {
    const int dim = g * (D / 8) + 2 * mm;
    wo[(2 * c) * D + dim] = o[mm][0];
    wo[(2 * c + 1) * D + dim] = o[mm][1];
    wo[(2 * c) * D + dim + 1] = o[mm][2];
    wo[(2 * c + 1) * D + dim + 1] = o[mm][3];
  }
  if (g == 0) {
    wo[8 * D + 2 * c] = m_run[0];
    wo[8 * D + 2 * c + 1] = m_run[1];
    wo[8 * D + 8 + 2 * c] = l_run[0];
    wo[8 * D + 8 + 2 * c + 1] = l_run[1];
  }
  __syncthreads();
  for (int i = tid; i < 8 * D; i += 128) {
    const int n = i / D, e = i % D;
    const int hl = n % G, jq = qc * p.qpc + n / G;
    if (!(n < G * p.qpc && jq < p.m)) continue;
    float M = kNegInf;
#pragma unroll
    for (int w = 0; w < 4; ++w) M = fmaxf(M, merge_s[w * (8 * D + 16) + 8 * D + n]);
    const float mu = M == kNegInf ? 0.f : M;
    float acc = 0.f, L = 0.f;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const float* ww = merge_s + w * (8 * D + 16);
      const float f = fast_exp2(ww[8 * D + n] - mu);
      acc += f * ww[n * D + e];
      L += f * ww[8 * D + 8 + n];
    }
    const size_t row = ((static_cast<size_t>(b) * n_q_heads + h * G + hl) * p.m + jq) * p.n_splits + split;
    p.ws_o[row * D + e] = acc;
    if (e == 0) {
      p.ws_ml[row * 2] = M;
      p.ws_ml[row * 2 + 1] = L;
    }
  }
}

// One block per (item, q head, query): combines the splits, normalizes, rotates values back.
template <int D>
__global__ void __launch_bounds__(D) merge_kernel(const AttnParams p) {
  __shared__ float v[D];
  const int b = blockIdx.z, hq = blockIdx.y, jq = blockIdx.x, e = threadIdx.x;
  const int n_q_heads = p.n_kv_heads * p.group;
  const int len = p.item_len[b];
  const int ntiles = (len + 15) / 16;
  const int ns = min(p.n_splits, (ntiles + p.tiles_per_split - 1) / p.tiles_per_split);
  const size_t row0 = ((static_cast<size_t>(b) * n_q_heads + hq) * p.m + jq) * p.n_splits;
  float M = kNegInf;
  for (int s = 0; s < ns; ++s) M = fmaxf(M, p.ws_ml[(row0 + s) * 2]);
  const float mu = M == kNegInf ? 0.f : M;
  float acc = 0.f, L = 0.f;
  for (int s = 0; s < ns; ++s) {
    const float f = fast_exp2(p.ws_ml[(row0 + s) * 2] - mu);
    acc += f * p.ws_o[(row0 + s) * D + e];
    L += f * p.ws_ml[(row0 + s) * 2 + 1];
  }
  float y = L > 0.f ? acc / L : 0.f;
  if (p.v_rotated) {
    v[e] = y;
    __syncthreads();
    for (int hh = 1; hh < D; hh <<= 1) {
      float a = v[e], bb = v[e ^ hh];
      y = (e & hh) ? bb - a : a + bb;
      __syncthreads();
      v[e] = y;
      __syncthreads();
    }
    y = v[e] * rsqrtf(static_cast<float>(D)) * p.v.signs[(hq / p.group) * D + e];
  }
  p.out[((static_cast<size_t>(b) * n_q_heads + hq) * p.m + jq) * D + e] = y;
}

template <int KC, int VC, int D>
cudaError_t launch_t(const AttnParams& p, int batch, cudaStream_t st) {
  constexpr size_t kLutBytes = static_cast<size_t>(CodecTraits<KC>::lut + CodecTraits<VC>::lut) * 32 * 4 + 2048;
  constexpr size_t kMergeBytes = static_cast<size_t>(4) * (8 * D + 16) * 4;
  constexpr size_t smem = (kLutBytes > kMergeBytes ? kLutBytes : kMergeBytes) + 8 * D * 4;
  auto* k = attn_kernel<KC, VC, D>;
  cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (e != cudaSuccess) return e;
  const int qchunks = (p.m + p.qpc - 1) / p.qpc;
  dim3 grid(p.n_splits, p.n_kv_heads * qchunks, batch);
  k<<<grid, 128, smem, st>>>(p);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  merge_kernel<D><<<dim3(p.m, p.n_kv_heads * p.group, batch), D, 0, st>>>(p);
  return cudaGetLastError();
}

template <int KC, int VC>
cudaError_t launch_d(const AttnParams& p, int batch, cudaStream_t st) {
  switch (p.dim) {
    case 64: return launch_t<KC, VC, 64>(p, batch, st);
    case 128: return launch_t<KC, VC, 128>(p, batch, st);
    case 256: return launch_t<KC, VC, 256>(p, batch, st);
    default: return cudaErrorInvalidValue;
  }
}

template <int KC, int VC, int D>
int occupancy_t() {
  constexpr size_t kLutBytes = static_cast<size_t>(CodecTraits<KC>::lut + CodecTraits<VC>::lut) * 32 * 4 + 2048;
  constexpr size_t kMergeBytes = static_cast<size_t>(4) * (8 * D + 16) * 4;
  constexpr size_t smem = (kLutBytes > kMergeBytes ? kLutBytes : kMergeBytes) + 8 * D * 4;
  auto* k = attn_kernel<KC, VC, D>;
  if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) != cudaSuccess) return 1;
  int n = 1;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, 128, smem) != cudaSuccess) return 1;
  return n > 0 ? n : 1;
}
template <int KC, int VC>
int occupancy_d(int dim) {
  return dim == 64 ? occupancy_t<KC, VC, 64>() : dim == 128 ? occupancy_t<KC, VC, 128>() : occupancy_t<KC, VC, 256>();
}

}  // namespace

int attention_ctas_per_sm(int kc, int vc, int dim) {
  if (kc == vc) {
    switch (kc) {
      case kLut2: return occupancy_d<kLut2, kLut2>(dim);
      case kLut4: return occupancy_d<kLut4, kLut4>(dim);
      case kQ4: return occupancy_d<kQ4, kQ4>(dim);
      case kQ8: return occupancy_d<kQ8, kQ8>(dim);
      case kF16: return occupancy_d<kF16, kF16>(dim);
    }
  }
  if (kc == kLut2 && vc == kLut4) return occupancy_d<kLut2, kLut4>(dim);
  if (kc == kLut4 && vc == kLut2) return occupancy_d<kLut4, kLut2>(dim);
  return 1;
}

namespace {
}  // namespace

bool attention_supported(int kc, int vc, int dim) {
  if (dim != 64 && dim != 128 && dim != 256) return false;
  return (kc == vc) || (kc == kLut2 && vc == kLut4) || (kc == kLut4 && vc == kLut2);
}

cudaError_t launch_attention(int kc, int vc, const AttnParams& p, int batch, cudaStream_t st) {
  if (kc == vc) {
    switch (kc) {
      case kLut2: return launch_d<kLut2, kLut2>(p, batch, st);
      case kLut4: return launch_d<kLut4, kLut4>(p, batch, st);
      case kQ4: return launch_d<kQ4, kQ4>(p, batch, st);
      case kQ8: return launch_d<kQ8, kQ8>(p, batch, st);
      case kF16: return launch_d<kF16, kF16>(p, batch, st);
    }
  }
  if (kc == kLut2 && vc == kLut4) return launch_d<kLut2, kLut4>(p, batch, st);
  if (kc == kLut4 && vc == kLut2) return launch_d<kLut4, kLut2>(p, batch, st);
  return cudaErrorInvalidValue;
}

}  // namespace tqkv::gpu
