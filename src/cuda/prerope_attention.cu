// Split-KV decode / causal chunked-prefill attention over pk{b} pre-RoPE keys (docs/design.md
// section 10, "pk keys"). CUDA cores, f32 arithmetic throughout.
//
// Grid: x = KV split, y = kv head x query chunk, z = item; 4 warps per CTA, each with its own online
// softmax over chunks of 32 tokens (chunk c of the split goes to warp c % 4). Columns n < NC are
// (q head of the group, query token) pairs, as in attention.cu.
// Per chunk starting at token T0:
//   RoPE: q . R(theta_{T0+u}) k = (R(theta_{T0})^T q) . (R(u omega) k): the warp rotates its
//     columns back by the chunk's base angle (double cos/sin of (offset + T0) omega_j, rounded to
//     float) and each key by the offset angle u omega_j (a float table of u = 0..31, computed in
//     double on the host). Adjacent or NeoX pairs; channels >= rotary_dims are not rotated.
//   Keys, lane u = token T0 + u: the token's code stream is staged in shared memory (row stride odd,
//     so no bank conflicts), each channel's code cut out with a funnel shift at its stream offset,
//     y = mean + (scale sd) level (the reference decode's float operations, unfused: bit-identical
//     to PreRopeKeyCodec::decode), rotated, dotted with the NC columns (f32 FMA).
//     Pending items (fewer than pk_calib_tokens tokens): the f16 rows instead of codes.
//   Softmax: warp max per column, p = exp2(s - max), p' = p * value scale into shared memory.
//   Values, lane = elements lane + 32 k: the lut field of (token, element) read from the GPU value
//     page (docs/format.md 2b), z from the field table, O[n][e] += p' z (pending: f16 values).
// The 4 warps merge in shared memory; merge (second kernel) combines the splits and rotates rotated
// values back (R^T: Walsh-Hadamard + signs), exactly as attention.cu's merge_kernel.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/prerope_cuda.h"

namespace tqkv::gpu {
namespace {

constexpr float kNegInf = -__builtin_huge_valf();

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// NC consecutive floats of shared memory (16-byte aligned for NC >= 4) into registers.
template <int NC>
__device__ __forceinline__ void load_cols(const float* p, float (&x)[NC]) {
  if constexpr (NC % 4 == 0) {
#pragma unroll
    for (int i = 0; i < NC / 4; ++i) {
      const float4 v = reinterpret_cast<const float4*>(p)[i];
      x[4 * i] = v.x;
      x[4 * i + 1] = v.y;
      x[4 * i + 2] = v.z;
      x[4 * i + 3] = v.w;
    }
  } else if constexpr (NC == 2) {
    const float2 v = *reinterpret_cast<const float2*>(p);
    x[0] = v.x;
    x[1] = v.y;
  } else {
    x[0] = p[0];
  }
}

// A 64-bit window (words k, k + 1) of a lane's staged code stream.
struct Win {
  int k = -2;
  uint32_t w0 = 0, w1 = 0;
};

// Shared-memory layout (floats), sized at launch.
struct PkSmem {
  int tab_stride, rw;  // rope table row stride (pairs + 1, odd), staged stream row stride (odd)
  size_t chan, lev, zl, qraw, tab, warp0, warp_floats, total;
};
__host__ __device__ inline PkSmem pk_smem(int D, int NC, int pairs, int sbw) {
  PkSmem s;
  s.tab_stride = (pairs + 1) | 1;
  s.rw = (sbw + 1) | 1;
  s.chan = 0;                     // float4 [D]
  s.lev = 4 * D;                  // [512]
  s.zl = s.lev + 512;             // [16]
  s.qraw = s.zl + 16;             // [NC][D]
  s.tab = s.qraw + NC * D;        // float2 [32][tab_stride]: (cos, sin)
  s.warp0 = s.tab + 2 * 32 * s.tab_stride;
  s.warp0 = (s.warp0 + 3) / 4 * 4;
  // per warp: qr [D][NC], pw [32][NC], krow [32][rw]; the merge reuses it for o [NC][D] + m, l [NC]
  s.warp_floats = static_cast<size_t>(D) * NC + 32 * NC + 32 * s.rw;
  s.warp_floats = (s.warp_floats + 3) / 4 * 4;
  s.total = (s.warp0 + 4 * s.warp_floats) * 4;
  return s;
}

template <int D, int NC, int VC>
__global__ void __launch_bounds__(128) pk_attn_kernel(const PkAttnParams p) {
  constexpr int KV = D / 32;
  constexpr int W = VC == kLut2 ? 2 : 4;
  constexpr uint32_t CHUNK_BITS = D * W / 2;  // one lane chunk of a value tile, in bits
  extern __shared__ __align__(16) float sm[];
  const int pairs = p.pairs, sbw = p.sbw;
  const PkSmem L = pk_smem(D, NC, pairs, sbw);
  float4* chan_s = reinterpret_cast<float4*>(sm + L.chan);
  float* lev_s = sm + L.lev;
  float* zl_s = sm + L.zl;
  float* qraw = sm + L.qraw;
  float2* tab_s = reinterpret_cast<float2*>(sm + L.tab);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  float* qr = sm + L.warp0 + warp * L.warp_floats;  // [D][NC]
  float* pw = qr + D * NC;                          // [32][NC]
  uint32_t* krow = reinterpret_cast<uint32_t*>(pw + 32 * NC);  // [32][rw]

  const int b = blockIdx.z;
  const int H = p.n_kv_heads, G = p.group;
  const int h = blockIdx.y % H, qc = blockIdx.y / H;
  const int split = blockIdx.x;
  const int len = p.item_len[b], seq = p.item_seq[b];
  const bool pend = p.item_pend[b] != 0;
  const long long off = p.item_off[b];
  const int nch = (len + 31) / 32;
  const int c0 = split * p.chunks_per_split, c1 = min(nch, c0 + p.chunks_per_split);
  if (c0 >= c1) return;  // the merge ignores splits past the end
  const int n_q_heads = H * G;

  // ---- prologue: channel table, levels, value field table, RoPE offset table, query columns ----
  if (!pend) {
    const float4* ch = p.chan + (static_cast<size_t>(seq) * H + h) * D;
    for (int i = tid; i < D; i += 128) chan_s[i] = ch[i];
  }
  for (int i = tid; i < 512; i += 128) lev_s[i] = p.levels[i];
  if (tid < (1 << W)) zl_s[tid] = p.vzlut[tid];
  for (int i = tid; i < 32 * pairs; i += 128) {
    const int u = i / pairs, j = i % pairs;
    tab_s[u * L.tab_stride + j] = reinterpret_cast<const float2*>(p.tab)[i];
  }
  int lim[NC];
#pragma unroll
  for (int n = 0; n < NC; ++n) {
    const int jq = qc * p.qpc + n / G;
    lim[n] = (n < p.ncols && jq < p.m) ? len - p.m + jq : -1;
  }
  for (int i = tid; i < NC * D; i += 128) {
    const int n = i / D, e = i % D;
    const int hl = n % G, jq = qc * p.qpc + n / G;
    float x = 0.f;
    if (n < p.ncols && jq < p.m) x = p.q[((static_cast<size_t>(b) * n_q_heads + h * G + hl) * p.m + jq) * D + e] * p.scale_log2;
    qraw[i] = x;
  }
  __syncthreads();

  const int* btab = p.block_table + static_cast<size_t>(seq) * p.max_pages_per_seq;
  const int P = p.page_tokens;
  const uint16_t* kpend = p.kpend + (static_cast<size_t>(seq) * H + h) * p.n_calib * D;
  const uint16_t* vpend = p.vpend + (static_cast<size_t>(seq) * H + h) * p.n_calib * D;

  float m_run[NC], l_run[NC], o[NC][KV];
#pragma unroll
  for (int n = 0; n < NC; ++n) {
    m_run[n] = kNegInf;
    l_run[n] = 0.f;
#pragma unroll
    for (int k = 0; k < KV; ++k) o[n][k] = 0.f;
  }
  // value field positions of this lane's elements e = lane + 32 k (token 0 of a tile): the lane
  // chunk 4 g (+ c per token) and the pair / sub offsets of gpu_layout.h's element_slot.
  uint32_t vbit0[KV];
#pragma unroll
  for (int k = 0; k < KV; ++k) {
    int ln, pr, s;
    element_slot(true, D, 0, lane + 32 * k, &ln, &pr, &s);
    vbit0[k] = ln * CHUNK_BITS + field_bit(VC, pr, s);
  }
  const size_t tile_bytes = tile_body_bytes(VC, D);
  // Base angle of this lane's pairs j = lane + 32 i at the warp's current chunk: double sincos at
  // the first chunk, then R(theta + 128 omega) = R(theta) R(128 omega) per chunk (a warp's chunks
  // are 4 x 32 tokens apart), in double (the recurrence's rounding, ~1e-16 per step, stays far
  // below the float rounding of the rotated query).
  constexpr int PJ = D / 64;  // pairs per lane, at most
  double bcs[PJ], bsn[PJ];
#pragma unroll
  for (int i = 0; i < PJ; ++i) {
    const int j = lane + 32 * i;
    bcs[i] = 1.0;
    bsn[i] = 0.0;
    if (j < pairs) sincos(static_cast<double>(off + 32LL * (c0 + warp)) * p.omega[j], &bsn[i], &bcs[i]);
  }

  for (int c = c0 + warp; c < c1; c += 4) {
    const int T0 = c * 32, t = T0 + lane;
    const bool tv = t < len;
    // 1. the columns rotated back by the chunk's base angle, [D][NC]
#pragma unroll
    for (int i = 0; i < PJ; ++i) {
      const int j = lane + 32 * i;
      if (j >= pairs) continue;
      const double cs = bcs[i], sn = bsn[i];
      const int ca = p.neox ? j : 2 * j, cb = p.neox ? j + pairs : 2 * j + 1;
#pragma unroll
      for (int n = 0; n < NC; ++n) {
        const double qa = qraw[n * D + ca], qb = qraw[n * D + cb];
        qr[ca * NC + n] = static_cast<float>(cs * qa + sn * qb);
        qr[cb * NC + n] = static_cast<float>(cs * qb - sn * qa);
      }
      const double c2 = p.step[2 * j], s2 = p.step[2 * j + 1];  // advance to the next chunk (+128)
      bcs[i] = cs * c2 - sn * s2;
      bsn[i] = sn * c2 + cs * s2;
    }
    for (int e = 2 * pairs + lane; e < D; e += 32)
#pragma unroll
      for (int n = 0; n < NC; ++n) qr[e * NC + n] = qraw[n * D + e];
    // 2. this lane's token: scale and code stream into shared memory
    float ksc = 0.f;
    const uint8_t* vpage = nullptr;
    float vs = pend ? 1.f : 0.f;
    if (tv && !pend) {
      const int pid = __ldg(btab + t / P);
      const size_t ph = static_cast<size_t>(pid) * H + h;
      const uint8_t* kp = p.kpool + ph * p.kphb;
      ksc = __uint_as_float(static_cast<uint32_t>(__ldg(reinterpret_cast<const unsigned short*>(kp) + t % P)) << 16);
      const uint32_t* src = reinterpret_cast<const uint32_t*>(kp + p.kscale_region) + static_cast<size_t>(t % P) * sbw;
      if ((sbw & 3) == 0) {
        for (int w = 0; w < sbw; w += 4) {
          const uint4 x = __ldg(reinterpret_cast<const uint4*>(src + w));
          krow[lane * L.rw + w] = x.x;
          krow[lane * L.rw + w + 1] = x.y;
          krow[lane * L.rw + w + 2] = x.z;
          krow[lane * L.rw + w + 3] = x.w;
        }
      } else if ((sbw & 1) == 0) {
        for (int w = 0; w < sbw; w += 2) {
          const uint2 x = __ldg(reinterpret_cast<const uint2*>(src + w));
          krow[lane * L.rw + w] = x.x;
          krow[lane * L.rw + w + 1] = x.y;
        }
      } else {
        for (int w = 0; w < sbw; ++w) krow[lane * L.rw + w] = __ldg(src + w);
      }
      krow[lane * L.rw + sbw] = 0;
      vpage = p.v.pool + ph * p.v.page_head_bytes;
      vs = __ldg(reinterpret_cast<const float*>(vpage) + t % P);
    }
    __syncwarp();
    // 3. scores of this lane's token
    float acc[NC], acc2[NC];  // two FMA chains (a and b channels of the pairs)
#pragma unroll
    for (int n = 0; n < NC; ++n) acc[n] = acc2[n] = 0.f;
    if (tv) {
      const uint32_t* row = krow + lane * L.rw;
      const uint16_t* prow = kpend + static_cast<size_t>(t) * D;
      // Code streams read through two sliding windows of 64 bits (the a channels and the b
      // channels of the pairs: for adjacent pairs both walk the stream in channel order, for NeoX
      // one the first half, one the second): every offset is the same for the 32 lanes, so the
      // window moves by warp-uniform branches and costs one shared load per 32 stream bits.
      auto key = [&](int ch, Win& w) -> float {
        if (pend) return __half2float(__ushort_as_half(prow[ch]));
        const float4 cf = chan_s[ch];
        const uint32_t ob = __float_as_uint(cf.z), bits = ob & 15u, o_ = ob >> 4;
        if (bits == 0) return isnan(ksc) ? ksc : cf.x;
        const int kk = static_cast<int>(o_ >> 5);
        if (kk != w.k) {
          if (kk == w.k + 1) {
            w.w0 = w.w1;
          } else {
            w.w0 = row[kk];
          }
          w.w1 = row[kk + 1];
          w.k = kk;
        }
        const uint32_t code = __funnelshift_r(w.w0, w.w1, o_ & 31) & ((1u << bits) - 1u);
        return __fadd_rn(cf.x, __fmul_rn(__fmul_rn(ksc, cf.y), lev_s[(1u << bits) + code]));
      };
      const float2* tr = tab_s + lane * L.tab_stride;
      // The pairing is a compile-time branch, so both windows stay in registers.
      auto walk = [&](auto neox_tag) {
        constexpr bool NX = decltype(neox_tag)::value;
        Win wa, wb;
        Win& wbsel = NX ? wb : wa;
#pragma unroll 2
        for (int j = 0; j < pairs; ++j) {
          const int ca = NX ? j : 2 * j, cb = NX ? j + pairs : 2 * j + 1;
          const float ka = key(ca, wa), kb = key(cb, wbsel);
          const float2 r = tr[j];
          const float ra = ka * r.x - kb * r.y, rb = ka * r.y + kb * r.x;
          float qa[NC], qb[NC];
          load_cols<NC>(qr + ca * NC, qa);
          load_cols<NC>(qr + cb * NC, qb);
#pragma unroll
          for (int n = 0; n < NC; ++n) {
            acc[n] = fmaf(qa[n], ra, acc[n]);
            acc2[n] = fmaf(qb[n], rb, acc2[n]);
          }
        }
        for (int e = 2 * pairs; e < D; ++e) {  // channels past rotary_dims (the stream continues)
          const float k = key(e, wbsel);
          float qe[NC];
          load_cols<NC>(qr + e * NC, qe);
#pragma unroll
          for (int n = 0; n < NC; ++n) acc[n] = fmaf(qe[n], k, acc[n]);
        }
      };
      if (p.neox) walk(std::true_type{});
      else walk(std::false_type{});
#pragma unroll
      for (int n = 0; n < NC; ++n) acc[n] += acc2[n];
    }
    // 4. online softmax (per column, over the warp's chunks)
#pragma unroll
    for (int n = 0; n < NC; ++n) {
      const float s = (tv && t <= lim[n]) ? acc[n] : kNegInf;
      float mx = s;
#pragma unroll
      for (int x = 16; x >= 1; x >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, x));
      const float mn = fmaxf(m_run[n], mx);
      const float alpha = mn == m_run[n] ? 1.f : ex2(m_run[n] - mn);  // m_run = -inf: 0
      m_run[n] = mn;
      const float mu = mn == kNegInf ? 0.f : mn;
      const float pr = s == kNegInf ? 0.f : ex2(s - mu);
      l_run[n] = l_run[n] * alpha + pr;
#pragma unroll
      for (int k = 0; k < KV; ++k) o[n][k] *= alpha;
      pw[lane * NC + n] = pr * vs;
    }
    __syncwarp();
    // 5. values
    const int cnt = min(32, len - T0);
    // the chunk's two value tiles (tokens T0 .. T0 + 15, T0 + 16 .. T0 + 31; a tile never spans pages)
    auto tile_of = [&](int tk) -> const uint32_t* {
      if (pend || tk >= len) return nullptr;
      const int pid = __ldg(btab + tk / P);
      return reinterpret_cast<const uint32_t*>(p.v.pool + (static_cast<size_t>(pid) * H + h) * p.v.page_head_bytes +
                                               p.v.meta_region + static_cast<size_t>((tk % P) / 16) * tile_bytes);
    };
    const uint32_t* vt0 = tile_of(T0);
    const uint32_t* vt1 = tile_of(T0 + 16);
#pragma unroll 2
    for (int u = 0; u < cnt; ++u) {
      float pv[NC];
      load_cols<NC>(pw + u * NC, pv);
      const int tok = T0 + u;
      if (pend) {
        const uint16_t* vr = vpend + static_cast<size_t>(tok) * D;
#pragma unroll
        for (int k = 0; k < KV; ++k) {
          const float v = __half2float(__ushort_as_half(vr[lane + 32 * k]));
#pragma unroll
          for (int n = 0; n < NC; ++n) o[n][k] = fmaf(pv[n], v, o[n][k]);
        }
      } else {
        const uint32_t* tw = u < 16 ? vt0 : vt1;
        const int tt = u & 15;  // T0 is a multiple of 32
        // token tt moves the field by chunk c = (tt % 8) / 2, pair + 2 (tt / 8), sub tt % 2
        const uint32_t dbit = ((tt % 8) / 2) * CHUNK_BITS + (tt / 8) * 4 * W + (tt % 2) * W;
#pragma unroll
        for (int k = 0; k < KV; ++k) {
          const uint32_t bit = vbit0[k] + dbit;
          const uint32_t f = (__ldg(tw + (bit >> 5)) >> (bit & 31)) & ((1u << W) - 1u);
          const float v = zl_s[f];
#pragma unroll
          for (int n = 0; n < NC; ++n) o[n][k] = fmaf(pv[n], v, o[n][k]);
        }
      }
    }
    __syncwarp();
  }

  // ---- merge the 4 warps ----
#pragma unroll
  for (int n = 0; n < NC; ++n)
#pragma unroll
    for (int x = 16; x >= 1; x >>= 1) l_run[n] += __shfl_xor_sync(0xffffffffu, l_run[n], x);
  float* wo = qr;  // [NC][D], then m [NC], l [NC]
#pragma unroll
  for (int n = 0; n < NC; ++n)
#pragma unroll
    for (int k = 0; k < KV; ++k) wo[n * D + lane + 32 * k] = o[n][k];
  if (lane == 0) {
#pragma unroll
    for (int n = 0; n < NC; ++n) {
      wo[NC * D + n] = m_run[n];
      wo[NC * D + NC + n] = l_run[n];
    }
  }
  __syncthreads();
  for (int i = tid; i < NC * D; i += 128) {
    const int n = i / D, e = i % D;
    const int hl = n % G, jq = qc * p.qpc + n / G;
    if (!(n < p.ncols && jq < p.m)) continue;
    float M = kNegInf;
#pragma unroll
    for (int w = 0; w < 4; ++w) M = fmaxf(M, sm[L.warp0 + w * L.warp_floats + NC * D + n]);
    const float mu = M == kNegInf ? 0.f : M;
    float a = 0.f, l = 0.f;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const float* ww = sm + L.warp0 + w * L.warp_floats;
      const float f = ww[NC * D + n] == kNegInf ? 0.f : ex2(ww[NC * D + n] - mu);
      a += f * ww[n * D + e];
      l += f * ww[NC * D + NC + n];
    }
    const size_t r = ((static_cast<size_t>(b) * n_q_heads + h * G + hl) * p.m + jq) * p.n_splits + split;
    p.ws_o[r * D + e] = a;
    if (e == 0) {
      p.ws_ml[r * 2] = M;
      p.ws_ml[r * 2 + 1] = l;
    }
  }
}

// One block per (item, q head, query): combines the splits, normalizes, rotates values back
// (rotated formats, compressed items), as attention.cu's merge_kernel.
template <int D>
__global__ void __launch_bounds__(D) pk_merge_kernel(const PkAttnParams p) {
  __shared__ float v[D];
  const int b = blockIdx.z, hq = blockIdx.y, jq = blockIdx.x, e = threadIdx.x;
  const int n_q_heads = p.n_kv_heads * p.group;
  const int nch = (p.item_len[b] + 31) / 32;
  const int ns = min(p.n_splits, (nch + p.chunks_per_split - 1) / p.chunks_per_split);
  const size_t row0 = ((static_cast<size_t>(b) * n_q_heads + hq) * p.m + jq) * p.n_splits;
  float M = kNegInf;
  for (int s = 0; s < ns; ++s) M = fmaxf(M, p.ws_ml[(row0 + s) * 2]);
  const float mu = M == kNegInf ? 0.f : M;
  float acc = 0.f, L = 0.f;
  for (int s = 0; s < ns; ++s) {
    const float ms = p.ws_ml[(row0 + s) * 2];
    const float f = ms == kNegInf ? 0.f : ex2(ms - mu);
    acc += f * p.ws_o[(row0 + s) * D + e];
    L += f * p.ws_ml[(row0 + s) * 2 + 1];
  }
  float y = L > 0.f ? acc / L : 0.f;
  if (p.v_rotated && !p.item_pend[b]) {
    v[e] = y;
    __syncthreads();
    for (int hh = 1; hh < D; hh <<= 1) {
      const float a = v[e], bb = v[e ^ hh];
      y = (e & hh) ? bb - a : a + bb;
      __syncthreads();
      v[e] = y;
      __syncthreads();
    }
    y = v[e] * rsqrtf(static_cast<float>(D)) * p.v.signs[(hq / p.group) * D + e];
  }
  p.out[((static_cast<size_t>(b) * n_q_heads + hq) * p.m + jq) * D + e] = y;
}

template <int D, int NC, int VC>
cudaError_t launch_t(const PkAttnParams& p, int batch, cudaStream_t st) {
  const PkSmem L = pk_smem(D, NC, p.pairs, p.sbw);
  auto* k = pk_attn_kernel<D, NC, VC>;
  cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(L.total));
  if (e != cudaSuccess) return e;
  const int qchunks = (p.m + p.qpc - 1) / p.qpc;
  k<<<dim3(p.n_splits, p.n_kv_heads * qchunks, batch), 128, L.total, st>>>(p);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  pk_merge_kernel<D><<<dim3(p.m, p.n_kv_heads * p.group, batch), D, 0, st>>>(p);
  return cudaGetLastError();
}

template <int D, int NC, int VC>
int occupancy_t(int pairs, int sbw) {
  const PkSmem L = pk_smem(D, NC, pairs, sbw);
  auto* k = pk_attn_kernel<D, NC, VC>;
  if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(L.total)) != cudaSuccess)
    return 1;
  int n = 1;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, 128, L.total) != cudaSuccess) return 1;
  return n > 0 ? n : 1;
}

template <int D, int VC>
cudaError_t launch_nc(const PkAttnParams& p, int batch, cudaStream_t st) {
  if (p.ncols <= 1) return launch_t<D, 1, VC>(p, batch, st);
  if (p.ncols <= 2) return launch_t<D, 2, VC>(p, batch, st);
  if (p.ncols <= 4) return launch_t<D, 4, VC>(p, batch, st);
  return launch_t<D, 8, VC>(p, batch, st);
}
template <int D, int VC>
int occupancy_nc(int ncols, int pairs, int sbw) {
  if (ncols <= 1) return occupancy_t<D, 1, VC>(pairs, sbw);
  if (ncols <= 2) return occupancy_t<D, 2, VC>(pairs, sbw);
  if (ncols <= 4) return occupancy_t<D, 4, VC>(pairs, sbw);
  return occupancy_t<D, 8, VC>(pairs, sbw);
}
template <int VC>
cudaError_t launch_d(const PkAttnParams& p, int batch, cudaStream_t st) {
  switch (p.dim) {
    case 64: return launch_nc<64, VC>(p, batch, st);
    case 128: return launch_nc<128, VC>(p, batch, st);
    case 256: return launch_nc<256, VC>(p, batch, st);
    default: return cudaErrorInvalidValue;
  }
}
template <int VC>
int occupancy_d(int dim, int ncols, int pairs, int sbw) {
  return dim == 64 ? occupancy_nc<64, VC>(ncols, pairs, sbw)
         : dim == 128 ? occupancy_nc<128, VC>(ncols, pairs, sbw)
                      : occupancy_nc<256, VC>(ncols, pairs, sbw);
}

}  // namespace

bool pk_attention_supported(int vcodec, int dim) {
  return (vcodec == kLut2 || vcodec == kLut4) && (dim == 64 || dim == 128 || dim == 256);
}

int pk_attention_ctas_per_sm(int vcodec, int dim, int ncols, int pairs, int sbw) {
  return vcodec == kLut2 ? occupancy_d<kLut2>(dim, ncols, pairs, sbw) : occupancy_d<kLut4>(dim, ncols, pairs, sbw);
}

cudaError_t launch_pk_attention(int vcodec, const PkAttnParams& p, int batch, cudaStream_t st) {
  if (vcodec == kLut2) return launch_d<kLut2>(p, batch, st);
  if (vcodec == kLut4) return launch_d<kLut4>(p, batch, st);
  return cudaErrorInvalidValue;
}

}  // namespace tqkv::gpu
