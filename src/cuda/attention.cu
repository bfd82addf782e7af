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

#include <atomic>
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
  __device__ __forceinline__ void zero() {
    if constexpr (kRegs) {
#pragma unroll
      for (int i = 0; i < NW; ++i) w[i] = 0;
    }
  }
  __device__ __forceinline__ uint32_t word(int i) const {
    if constexpr (kRegs) return w[i]; else return __ldg(g + i);
  }
};

// Lookup tables of the lut formats (shared memory): one 256-byte ROW per table entry e, keys in
// bytes [0, 128) and values in [128, 256) of the row, lane l's copy at 4 l (so the 32 lanes of a
// warp always hit 32 different banks). The row address is built by one byte permute: byte 1 of
// the address is the entry's index byte taken straight from the packed chunk (kLut4: a pair's
// 8-bit field; kLut2: a pair's 4-bit field, pre-masked for a whole word at once, with the table
// base's bits 12-15 OR-ed in), bytes 0, 2, 3 come from the lane's base address. (A register
// decode of kLut2 -- fields of a pair 8 bits apart, selector = x * 0x22 + 0x1010, PRMT from two
// table registers -- was measured slower: 2.9 integer ops per pair instead of PRMT + LDS, 116 M
// instead of 76 M warp instructions, 0.233 ms instead of 0.170 at B=16 L=32768; docs/design.md 10.)
// Variant 2 (TQKV_ATTN_VARIANT=2, lut4 at d = 128): 128-byte rows, 16 copies per entry (lanes l
// and l + 16 share copy l % 16: a 2-way bank conflict when they read different entries), so the
// tables take 32 KiB instead of 64 and 4 CTAs fit per SM; the row offset costs one shift more.
// Measured slower than the default (tq4/tq4 B=16 L=32768: 0.260 vs 0.232 ms, 16 instead of 12
// warps per SM: bench/results/gpu-2026-12-01-s3.md); kept as a benchmark knob.
constexpr uint32_t kRowBytes = 256;
template <int V> constexpr uint32_t row_bytes() { return V == 2 ? 128 : kRowBytes; }

// Pair p of a chunk -> f16x2. xl: the lane's table address (lut formats; see above); sc: f16x2
// scale of the pair (q4/q8).
template <int C, int NW, bool HALF = false>
__device__ __forceinline__ uint32_t decode_pair(const Chunk<NW>& ch, int p, uint32_t xl, uint32_t sc) {
  if constexpr (C == kLut2) {
    // Pair p's 4-bit field: word p/8, nibble p%8. Even pairs: the low nibbles of the word's
    // bytes, odd pairs: the high nibbles (shifted down); xl's byte 1 holds the table base's bits
    // 12-15 (the base is 4 KiB-aligned), OR-ed into every index byte by the same LOP3.
    const uint32_t wv = ch.word(p / 8);
    const uint32_t hi = (xl >> 8) & 0xF0u;
    const uint32_t rep = hi * 0x01010101u;
    const uint32_t idx = (p & 1) ? (((wv >> 4) & 0x0F0F0F0Fu) | rep) : ((wv & 0x0F0F0F0Fu) | rep);
    const uint32_t addr = __byte_perm(idx, xl, 0x7604u | (((p % 8) / 2) << 4));
    uint32_t r;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(r) : "r"(addr));
    return r;
  } else if constexpr (C == kLut4 && HALF) {
    // xl = 2 * (lane's offset in the 128-byte row) | table base << 8: (entry * 256 + 2 off) / 2.
    const uint32_t off = __byte_perm(ch.word(p / 4), xl & 0xFFu, 0x7604u | ((p % 4) << 4));
    uint32_t r;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(r) : "r"((off >> 1) + (xl >> 8)));
    return r;
  } else if constexpr (C == kLut4) {
    // Pair p's 8-bit field: word p/4, byte p%4 -> byte 1 of the row offset; xl = lane offset in
    // the row (< 256), the table's shared base added after.
    const uint32_t off = __byte_perm(ch.word(p / 4), xl & 0xFFu, 0x7604u | ((p % 4) << 4));
    uint32_t r;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(r) : "r"(off + (xl & ~0xFFu)));
    return r;
  } else if constexpr (C == kQ4) {
    // Nibble k = p % 4 of each half: k = 0, 2 (after >> 8) as the f16 mantissa bits 0-3 of
    // 1024 (0x6400, ulp 1): 1024 + q; k = 1, 3 as mantissa bits 4-7 of 64 (0x5400, ulp 1/16):
    // 64 + q. Either way minus (base + 8) is q - 8, exact, with no shift for k = 0, 1.
    const uint32_t wv = (p % 4) >= 2 ? (ch.word(p / 4) >> 8) : ch.word(p / 4);
    if ((p % 2) == 0) return h2_mul(h2_sub((wv & 0x000F000Fu) | 0x64006400u, 0x64086408u), sc);
    return h2_mul(h2_sub((wv & 0x00F000F0u) | 0x54005400u, 0x54805480u), sc);  // 72 = 0x5480
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

template <int KC, int VC, int D, int V = 0>
struct AttnShape {
  static constexpr int KNW = D * CodecTraits<KC>::w / 64;  // words per lane chunk
  static constexpr int VNW = D * CodecTraits<VC>::w / 64;
  // Tiles per softmax step: two when the chunks of four tiles (two steps, double-buffered) fit
  // in registers next to the rest, else one.
  static constexpr int TP0 = (KNW + VNW <= 8) ? 2 : 1;
  // Variant 1 (TQKV_ATTN_VARIANT=1, d = 128 only; for measuring the trade-off): the other step
  // size, so two tiles per step where the default takes one (chunks of up to 16 words) and one
  // where it takes two.
  static constexpr int TP = V != 1 ? TP0 : TP0 == 2 ? 1 : (KNW + VNW <= 16 ? 2 : 1);
  // Resident CTAs per SM the register allocation aims at: 4 (128 registers) where that does not
  // spill (checked with -Xptxas -v), else 3; d = 256 no cap.
  static constexpr bool kLutBoth = (KC == kLut2 || KC == kLut4) && (VC == kLut2 || VC == kLut4);
  static constexpr int kMinBlocks = D == 256 ? 1 : (TP == 1 && (kLutBoth || V == 1)) ? 4 : 3;
  static constexpr int KLUT = CodecTraits<KC>::lut, VLUT = CodecTraits<VC>::lut;
  static constexpr int kRows = KLUT > VLUT ? KLUT : VLUT;
  static constexpr bool kAlign4K = KC == kLut2 || VC == kLut2;
  static constexpr size_t kLutBytes = kRows == 0 ? 0 : static_cast<size_t>(kRows) * row_bytes<V>() + (kAlign4K ? 4096 : 0);
  static constexpr size_t kMergeBytes = static_cast<size_t>(4) * (8 * D + 16) * 4;
  static constexpr size_t kRegion0 = kLutBytes > kMergeBytes ? kLutBytes : kMergeBytes;
  static constexpr size_t kSmem = kRegion0 + 8 * D * 4;
};

template <int KC, int VC, int D, int V>
__global__ void __launch_bounds__(128, (AttnShape<KC, VC, D, V>::kMinBlocks)) attn_kernel(const AttnParams p) {
  using Sh = AttnShape<KC, VC, D, V>;
  constexpr int KS = D / 16;  // k-steps of S = m-tiles of O
  constexpr int KNW = Sh::KNW, VNW = Sh::VNW, TP = Sh::TP;
  constexpr int KLUT = Sh::KLUT, VLUT = Sh::VLUT;
  constexpr bool kLutV = VC == kLut2 || VC == kLut4;
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t sbase = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint32_t lut_off = Sh::kAlign4K ? ((4096u - (sbase & 4095u)) & 4095u) : 0u;  // lut2: table on a 4 KiB boundary
  uint32_t* tbl_s = reinterpret_cast<uint32_t*>(smem + lut_off);
  float* merge_s = reinterpret_cast<float*>(smem);
  float* qbuf = reinterpret_cast<float*>(smem + Sh::kRegion0);  // [8][D]

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

  // ---- prologue: tables (each entry replicated into its row, 16-byte stores), query columns ----
  constexpr int kRow16 = row_bytes<V>() / 16, kHalf16 = kRow16 / 2;  // 16-byte units per row, per half
  for (int i = tid; i < KLUT * kHalf16; i += 128) {
    const uint32_t v = __ldg(p.k.lut + i / kHalf16);
    reinterpret_cast<uint4*>(tbl_s)[(i / kHalf16) * kRow16 + i % kHalf16] = make_uint4(v, v, v, v);
  }
  for (int i = tid; i < VLUT * kHalf16; i += 128) {
    const uint32_t v = __ldg(p.v.lut + i / kHalf16);
    reinterpret_cast<uint4*>(tbl_s)[(i / kHalf16) * kRow16 + kHalf16 + i % kHalf16] = make_uint4(v, v, v, v);
  }
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
  // causal limits of this thread's two columns (2c, 2c+1); limw: the smallest limit of any used
  // column of the CTA (column 0 is always used): tiles that end at or before it need no mask.
  int lim[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int n = 2 * c + j, jq = qc * p.qpc + n / G;
    lim[j] = (n < G * p.qpc && jq < p.m) ? len - p.m + jq : -1;
  }
  const int limw = len - p.m + qc * p.qpc;
  __syncthreads();  // tables and qbuf complete

  // Lane table addresses (see decode_pair): lut2 the full shared address, lut4 the table base
  // with the lane offset in the low byte (variant 2: twice the row offset | base << 8).
  const uint32_t tbase = sbase + lut_off;
  uint32_t kxl = tbase + lane * 4, vxl = tbase + 128 + lane * 4;
  if constexpr (V == 2) {  // lut4 keys and values only (kHasHalf)
    kxl = 2 * ((lane % 16) * 4) | (tbase << 8);
    vxl = 2 * (64 + (lane % 16) * 4) | (tbase << 8);
  }
  const int* btab = p.block_table + static_cast<size_t>(seq) * p.max_pages_per_seq;
  const int tpp = p.page_tokens / 16;  // tiles per page
  constexpr uint32_t KTILE = 16 * D * CodecTraits<KC>::w / 8, VTILE = 16 * D * CodecTraits<VC>::w / 8;
  const uint32_t klane_off = static_cast<uint32_t>(p.k.meta_region) + lane * (KNW * 4);
  const uint32_t vlane_off = static_cast<uint32_t>(p.v.meta_region) + lane * (VNW * 4);
  constexpr int KNB = (KC == kQ4 || KC == kQ8) ? ((D / 4) > 32 ? (D / 4) / 32 : 1) : 1;
  const int knb = (D + 31) / 32;  // q4/q8 blocks per token

  float m_run[2] = {kNegInf, kNegInf}, l_run[2] = {0.f, 0.f}, mu[2] = {0.f, 0.f};
  float o[KS][4];
#pragma unroll
  for (int i = 0; i < KS; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;

  // Warp w owns a contiguous quarter of the split's tiles.
  const int per_warp = (tile1 - tile0 + 3) / 4;
  const int wt0 = tile0 + warp * per_warp, wt1 = min(tile1, wt0 + per_warp);

  // Page walk: the warp's tiles are contiguous, so its page changes every tpp tiles; the next
  // page's id is fetched one page ahead.
  const int last_pg = p.max_pages_per_seq - 1;
  int pg = wt0 / tpp, lt = wt0 - pg * tpp;
  constexpr uint32_t KMETA = 16 * static_cast<uint32_t>(
      (KC == kLut2 || KC == kLut4) ? 4 : (KC == kQ4 || KC == kQ8) ? 2 * ((D + 31) / 32) : 0);
  constexpr uint32_t VMETA = 16 * static_cast<uint32_t>(
      (VC == kLut2 || VC == kLut4) ? 4 : (VC == kQ4 || VC == kQ8) ? 2 * ((D + 31) / 32) : 0);
  const uint8_t* kpage = nullptr;  // the page of the next tile to load (its tile lt)
  const uint8_t* vpage = nullptr;
  int next_pid = 0;
  auto set_page = [&](int pid) {
    const size_t ph = static_cast<size_t>(pid) * p.n_kv_heads + h;
    kpage = p.k.pool + ph * p.k.page_head_bytes;
    vpage = p.v.pool + ph * p.v.page_head_bytes;
  };
  if (wt0 < wt1) {
    set_page(__ldg(btab + min(pg, last_pg)));
    next_pid = __ldg(btab + min(pg + 1, last_pg));
  }

  // One tile's registers: packed chunks and scales. The next step's tiles are loaded while the
  // current ones are computed (register double buffering), so HBM latency overlaps the math.
  struct TileRegs {
    Chunk<KNW> kch;
    Chunk<VNW> vch;
    float ks0, ks1, vs0, vs1;
    uint32_t ksc[2][KNB];
    uint32_t vsc[2];
  };
  auto load_tile = [&](int ti, TileRegs& R) {
    // 32-bit offsets inside the page (a page is far below 4 GiB), one 64-bit add per pointer
    const uint8_t* km = kpage + static_cast<uint32_t>(lt) * KMETA;
    const uint8_t* vm = vpage + static_cast<uint32_t>(lt) * VMETA;
    R.kch.load(kpage + (klane_off + static_cast<uint32_t>(lt) * KTILE));
    R.vch.load(vpage + (vlane_off + static_cast<uint32_t>(lt) * VTILE));
    R.ks0 = R.ks1 = 1.f;
    R.vs0 = R.vs1 = 0.f;
    R.vsc[0] = R.vsc[1] = 0;
#pragma unroll
    for (int bb = 0; bb < KNB; ++bb) R.ksc[0][bb] = R.ksc[1][bb] = 0;
    if constexpr (KC == kLut2 || KC == kLut4) {
      R.ks0 = __ldg(reinterpret_cast<const float*>(km) + g);
      R.ks1 = __ldg(reinterpret_cast<const float*>(km) + g + 8);
    } else if constexpr (KC == kQ4 || KC == kQ8) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf)
#pragma unroll
        for (int bb = 0; bb < KNB; ++bb) {
          const int blk = (c * (D / 4)) / 32 + bb;
          const uint32_t d16 = load_h<KC>(km + ((g + 8 * hf) * knb + blk) * 2);
          R.ksc[hf][bb] = d16 | (d16 << 16);
        }
    }
    if constexpr (kLutV) {
      if (ti * 16 + 16 <= len) {  // warp-uniform: every token of the tile is in the cache
        R.vs0 = __ldg(reinterpret_cast<const float*>(vm) + g);
        R.vs1 = __ldg(reinterpret_cast<const float*>(vm) + g + 8);
      } else {
        const int T0 = ti * 16 + g;
        R.vs0 = T0 < len ? __ldg(reinterpret_cast<const float*>(vm) + g) : 0.f;
        R.vs1 = T0 + 8 < len ? __ldg(reinterpret_cast<const float*>(vm) + g + 8) : 0.f;
      }
    } else if constexpr (VC == kQ4 || VC == kQ8) {
      const int blk = (g * (D / 8)) / 32;
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int t = 2 * c + 8 * hf;
        const uint32_t lo = load_h<VC>(vm + (t * knb + blk) * 2);
        const uint32_t hi = load_h<VC>(vm + ((t + 1) * knb + blk) * 2);
        R.vsc[hf] = lo | (hi << 16);
      }
    }
    if (++lt == tpp) {  // next page
      lt = 0;
      ++pg;
      set_page(next_pid);
      next_pid = __ldg(btab + min(pg + 1, last_pg));
    }
  };
  // A step slot past the warp's last tile: decodes to zeros, weight 0, masked.
  auto zero_tile = [&](TileRegs& R) {
    R.kch.zero();
    R.vch.zero();
    R.ks0 = R.ks1 = 1.f;
    R.vs0 = R.vs1 = 0.f;
    R.vsc[0] = R.vsc[1] = 0;
#pragma unroll
    for (int bb = 0; bb < KNB; ++bb) R.ksc[0][bb] = R.ksc[1][bb] = 0;
  };
  auto load_step = [&](int base, TileRegs (&R)[TP]) {
#pragma unroll
    for (int t = 0; t < TP; ++t) {
      if (base + t < wt1) load_tile(base + t, R[t]);
      else if constexpr (TP > 1) zero_tile(R[t]);
    }
  };

  // Values of lut formats: P' = p * vscale / vref with vref the running maximum of the value
  // scales seen by this warp (so P' <= 1 fits f16); when vref grows, O is rescaled like the
  // softmax maximum, and the true O is vref * O.
  float vref = 0.f, vinv = 0.f;

  // One softmax step over TP tiles starting at tile `base`.
  auto step = [&](int base, const TileRegs (&R)[TP]) {
    // ---- S = K Q^T (one independent mma chain per tile; two when TP == 1) ----
    float s[TP][4], s2[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int t = 0; t < TP; ++t) s[t][0] = s[t][1] = s[t][2] = s[t][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      const int bb = (KNB > 1) ? (4 * kk) / 32 : 0;  // block of this k-step inside the chunk
#pragma unroll
      for (int t = 0; t < TP; ++t) {
        uint32_t a[4];
        const uint32_t sc0 = R[t].ksc[0][bb], sc1 = R[t].ksc[1][bb];
        a[0] = decode_pair<KC, KNW, V == 2>(R[t].kch, 2 * kk, kxl, sc0);
        a[1] = decode_pair<KC, KNW, V == 2>(R[t].kch, D / 8 + 2 * kk, kxl, sc1);
        a[2] = decode_pair<KC, KNW, V == 2>(R[t].kch, 2 * kk + 1, kxl, sc0);
        a[3] = decode_pair<KC, KNW, V == 2>(R[t].kch, D / 8 + 2 * kk + 1, kxl, sc1);
        if (TP == 1 && (kk & 1)) mma16816(s2, a, qf[kk][0], qf[kk][1]);
        else mma16816(s[t], a, qf[kk][0], qf[kk][1]);
      }
    }
    if constexpr (TP == 1) {
#pragma unroll
      for (int r = 0; r < 4; ++r) s[0][r] += s2[r];
    }
    // key scales; masks only where a tile reaches past the smallest causal limit or the warp's end
    if (base + TP <= wt1 && (base + TP) * 16 - 1 <= limw) {
#pragma unroll
      for (int t = 0; t < TP; ++t) {
        s[t][0] *= R[t].ks0;
        s[t][1] *= R[t].ks0;
        s[t][2] *= R[t].ks1;
        s[t][3] *= R[t].ks1;
      }
    } else {
#pragma unroll
      for (int t = 0; t < TP; ++t) {
        const int T0 = base + t < wt1 ? (base + t) * 16 + g : (1 << 30), T1 = T0 + 8;
        s[t][0] = T0 <= lim[0] ? s[t][0] * R[t].ks0 : kNegInf;
        s[t][1] = T0 <= lim[1] ? s[t][1] * R[t].ks0 : kNegInf;
        s[t][2] = T1 <= lim[0] ? s[t][2] * R[t].ks1 : kNegInf;
        s[t][3] = T1 <= lim[1] ? s[t][3] * R[t].ks1 : kNegInf;
      }
    }

    // ---- online softmax, lazily: the running maxima (and the value reference) change only when
    // some lane sees a larger value; then the step does the warp reductions and rescales O. ----
    float lm0 = kNegInf, lm1 = kNegInf, vmx = 0.f;
#pragma unroll
    for (int t = 0; t < TP; ++t) {
      lm0 = fmaxf(lm0, fmaxf(s[t][0], s[t][2]));
      lm1 = fmaxf(lm1, fmaxf(s[t][1], s[t][3]));
      if constexpr (kLutV) vmx = fmaxf(vmx, fmaxf(R[t].vs0, R[t].vs1));
    }
    bool need = lm0 > m_run[0] || lm1 > m_run[1];
    if constexpr (kLutV) need = need || vmx > vref;
    if (__any_sync(0xffffffffu, need)) {
#pragma unroll
      for (int x = 4; x <= 16; x <<= 1) {
        lm0 = fmaxf(lm0, __shfl_xor_sync(0xffffffffu, lm0, x));
        lm1 = fmaxf(lm1, __shfl_xor_sync(0xffffffffu, lm1, x));
        if constexpr (kLutV) vmx = fmaxf(vmx, __shfl_xor_sync(0xffffffffu, vmx, x));
      }
      float rf = 1.f;
      if constexpr (kLutV) {
        if (vmx > vref) {
          const float inv = 1.f / vmx;
          rf = vref * inv;
          vref = vmx;
          vinv = inv;
        }
      }
      const float lmx[2] = {lm0, lm1};
      float oas[2];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float mn = fmaxf(m_run[j], lmx[j]);
        const float alpha = mn == m_run[j] ? 1.f : fast_exp2(m_run[j] - mn);  // m_run = -inf: 0
        l_run[j] *= alpha;
        m_run[j] = mn;
        mu[j] = mn == kNegInf ? 0.f : mn;
        oas[j] = alpha * rf;
      }
#pragma unroll
      for (int mm = 0; mm < KS; ++mm) {
        o[mm][0] *= oas[0];
        o[mm][2] *= oas[0];
        o[mm][1] *= oas[1];
        o[mm][3] *= oas[1];
      }
    }

    // ---- P' in f16, moved from the C layout to the B layout ----
    uint32_t pb[TP][2];
    const int la = 4 * (2 * c) + (g >> 1), lb = la + 4;
    const uint32_t sel = (g & 1) ? 0x7632 : 0x5410;
#pragma unroll
    for (int t = 0; t < TP; ++t) {
      const float p0 = fast_exp2(s[t][0] - mu[0]), p1 = fast_exp2(s[t][1] - mu[1]);
      const float p2 = fast_exp2(s[t][2] - mu[0]), p3 = fast_exp2(s[t][3] - mu[1]);
      l_run[0] += p0 + p2;
      l_run[1] += p1 + p3;
      float w0 = 1.f, w1 = 1.f;
      if constexpr (kLutV) {
        w0 = R[t].vs0 * vinv;
        w1 = R[t].vs1 * vinv;
      }
      const uint32_t X0 = pack_half2(p0 * w0, p1 * w0);  // token g,   columns 2c, 2c+1
      const uint32_t X1 = pack_half2(p2 * w1, p3 * w1);  // token g+8
      const uint32_t Y0a = __shfl_sync(0xffffffffu, X0, la), Y0b = __shfl_sync(0xffffffffu, X0, lb);
      const uint32_t Y1a = __shfl_sync(0xffffffffu, X1, la), Y1b = __shfl_sync(0xffffffffu, X1, lb);
      pb[t][0] = __byte_perm(Y0a, Y0b, sel);
      pb[t][1] = __byte_perm(Y1a, Y1b, sel);
    }

    // ---- O^T += V^T P' ----
#pragma unroll
    for (int mm = 0; mm < KS; ++mm) {
#pragma unroll
      for (int t = 0; t < TP; ++t) {
        uint32_t a[4];
        const uint32_t sc0 = R[t].vsc[0], sc1 = R[t].vsc[1];
        a[0] = decode_pair<VC, VNW, V == 2>(R[t].vch, 4 * mm + 0, vxl, sc0);
        a[1] = decode_pair<VC, VNW, V == 2>(R[t].vch, 4 * mm + 1, vxl, sc0);
        a[2] = decode_pair<VC, VNW, V == 2>(R[t].vch, 4 * mm + 2, vxl, sc1);
        a[3] = decode_pair<VC, VNW, V == 2>(R[t].vch, 4 * mm + 3, vxl, sc1);
        mma16816(o[mm], a, pb[t][0], pb[t][1]);
      }
    }
  };

  // Ping-pong between two step buffers (no register copies between steps).
  TileRegs bufA[TP], bufB[TP];
  if (wt0 < wt1) {
    load_step(wt0, bufA);
    for (int base = wt0;;) {
      const int nb = base + TP;
      if (nb < wt1) load_step(nb, bufB);
      step(base, bufA);
      if (nb >= wt1) break;
      const int nb2 = nb + TP;
      if (nb2 < wt1) load_step(nb2, bufA);
      step(nb, bufB);
      if (nb2 >= wt1) break;
      base = nb2;
    }
  }
  if constexpr (kLutV) {
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
  // Programmatic dependent launch: merge_kernel may start launching now; it waits (griddepcontrol
  // .wait) for this grid's completion and memory before reading the workspace.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

// One block per (item, q head, query): combines the splits, normalizes, rotates values back.
// The splits' (m, l) are loaded by all threads at once and their weights exp2(m_s - max) staged
// in shared memory, D splits per round, so the O loads of a round are independent (8 unrolled in
// flight per thread). Same operations in the same split order as the former one-split-at-a-time
// loop, so the same result. ncu puts this kernel at 12.2 us at B = 1, L = 131072 (49 splits; 13.5
// us with the former loop), so the loop's load latency was not what costs the time there.
template <int D>
__global__ void __launch_bounds__(D) merge_kernel(const AttnParams p) {
  __shared__ float v[D];
  __shared__ float fw[D], lw[D], red[D / 32];
  asm volatile("griddepcontrol.wait;" ::: "memory");  // the attention grid is complete and visible
  const int b = blockIdx.z, hq = blockIdx.y, jq = blockIdx.x, e = threadIdx.x;
  const int n_q_heads = p.n_kv_heads * p.group;
  const int len = p.item_len[b];
  const int ntiles = (len + 15) / 16;
  const int ns = min(p.n_splits, (ntiles + p.tiles_per_split - 1) / p.tiles_per_split);
  const size_t row0 = ((static_cast<size_t>(b) * n_q_heads + hq) * p.m + jq) * p.n_splits;
  float M = kNegInf;
  for (int s = e; s < ns; s += D) M = fmaxf(M, p.ws_ml[(row0 + s) * 2]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
  if (e % 32 == 0) red[e / 32] = M;
  __syncthreads();
  M = red[0];
#pragma unroll
  for (int w = 1; w < D / 32; ++w) M = fmaxf(M, red[w]);
  const float mu = M == kNegInf ? 0.f : M;
  float acc = 0.f, L = 0.f;
  for (int s0 = 0; s0 < ns; s0 += D) {
    const int n = min(D, ns - s0);
    __syncthreads();  // the previous round's weights are consumed
    if (e < n) {
      fw[e] = fast_exp2(p.ws_ml[(row0 + s0 + e) * 2] - mu);
      lw[e] = p.ws_ml[(row0 + s0 + e) * 2 + 1];
    }
    __syncthreads();
    const float* wo = p.ws_o + (row0 + s0) * D + e;
#pragma unroll 8
    for (int s = 0; s < n; ++s) {
      acc += fw[s] * wo[static_cast<size_t>(s) * D];
      L += fw[s] * lw[s];
    }
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

template <int KC, int VC, int D, int V = 0>
cudaError_t launch_t(const AttnParams& p, int batch, cudaStream_t st) {
  constexpr size_t smem = AttnShape<KC, VC, D, V>::kSmem;
  auto* k = attn_kernel<KC, VC, D, V>;
  // The shared-memory limit is a per-device attribute of the kernel: set once per device (a
  // driver call on every launch would sit on the host's critical path of each decode step).
  static std::atomic<uint64_t> attr_set{0};
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const uint64_t bit = dev < 64 ? (uint64_t{1} << dev) : 0;
  if (!bit || !(attr_set.load(std::memory_order_acquire) & bit)) {
    e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
    attr_set.fetch_or(bit, std::memory_order_acq_rel);
  }
  const int qchunks = (p.m + p.qpc - 1) / p.qpc;
  dim3 grid(p.n_splits, p.n_kv_heads * qchunks, batch);
  k<<<grid, 128, smem, st>>>(p);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  // merge_kernel as a programmatic dependent launch: its launch overlaps the attention grid's tail
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(p.m, p.n_kv_heads * p.group, batch);
  cfg.blockDim = dim3(D);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  e = cudaLaunchKernelEx(&cfg, merge_kernel<D>, p);
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

// Codec pairs compiled in a second variant (d = 128): the ones the benchmark goals name.
template <int KC, int VC>
constexpr bool kHasVariant = (KC == kLut2 && (VC == kLut2 || VC == kLut4)) || (KC == kLut4 && VC == kLut4) ||
                             (KC == kQ4 && VC == kQ4);
// Codec pairs compiled with the half-size lut4 tables (variant 2, d = 128); a lut2 side would
// need its own decode for 128-byte rows.
template <int KC, int VC>
constexpr bool kHasHalf = KC == kLut4 && VC == kLut4;

template <int KC, int VC>
cudaError_t launch_d(const AttnParams& p, int batch, cudaStream_t st) {
  switch (p.dim) {
    case 64: return launch_t<KC, VC, 64>(p, batch, st);
    case 128:
      if constexpr (kHasVariant<KC, VC>)
        if (p.variant == 1) return launch_t<KC, VC, 128, 1>(p, batch, st);
      if constexpr (kHasHalf<KC, VC>)
        if (p.variant == 2) return launch_t<KC, VC, 128, 2>(p, batch, st);
      return launch_t<KC, VC, 128>(p, batch, st);
    case 256: return launch_t<KC, VC, 256>(p, batch, st);
    default: return cudaErrorInvalidValue;
  }
}

template <int KC, int VC, int D, int V = 0>
int occupancy_t() {
  constexpr size_t smem = AttnShape<KC, VC, D, V>::kSmem;
  auto* k = attn_kernel<KC, VC, D, V>;
  if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) != cudaSuccess) return 1;
  int n = 1;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, 128, smem) != cudaSuccess) return 1;
  return n > 0 ? n : 1;
}
template <int KC, int VC>
int occupancy_d(int dim, int variant) {
  if constexpr (kHasVariant<KC, VC>)
    if (dim == 128 && variant == 1) return occupancy_t<KC, VC, 128, 1>();
  if constexpr (kHasHalf<KC, VC>)
    if (dim == 128 && variant == 2) return occupancy_t<KC, VC, 128, 2>();
  return dim == 64 ? occupancy_t<KC, VC, 64>() : dim == 128 ? occupancy_t<KC, VC, 128>() : occupancy_t<KC, VC, 256>();
}

}  // namespace

int attention_ctas_per_sm(int kc, int vc, int dim, int variant) {
  if (kc == vc) {
    switch (kc) {
      case kLut2: return occupancy_d<kLut2, kLut2>(dim, variant);
      case kLut4: return occupancy_d<kLut4, kLut4>(dim, variant);
      case kQ4: return occupancy_d<kQ4, kQ4>(dim, variant);
      case kQ8: return occupancy_d<kQ8, kQ8>(dim, variant);
      case kF16: return occupancy_d<kF16, kF16>(dim, variant);
    }
  }
  if (kc == kLut2 && vc == kLut4) return occupancy_d<kLut2, kLut4>(dim, variant);
  if (kc == kLut4 && vc == kLut2) return occupancy_d<kLut4, kLut2>(dim, variant);
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
