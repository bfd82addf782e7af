// The SIMD encode/decode pipelines, written once over an ISA "ops" struct (internal).
//
// Included by kernels_avx2.cc and kernels_avx512.cc, each compiled with its own -m flags, after
// defining TQKV_SIMD_NS: everything here lives in tqkv::kernels::TQKV_SIMD_NS, so no inline
// function compiled for AVX-512 can be picked by the linker for another level (the usual
// COMDAT hazard of mixing -m flags). For the same reason this header calls no non-trivial
// inline function of other headers (half.h, reduce.h); it re-states the few formulas it needs,
// each marked with the reference it mirrors (only trivial accessors such as Rotation::rounds()
// and std::vector::data() are used, and fwht_inplace, which is out of line).
//
// Rotated formats (rvq, tq): power-of-two d from W to 16 W (64, 128, 256 on AVX-512) take a
// register-resident fast path (load, norm, scaling, WHT, passes, bit-planes, without scratch).
// Every other d (7, 33, 80, 96, 576, ...) takes the general path: stage by stage over batches
// of vectors in per-thread scratch, with the seeded permutations as gathers, WHT blocks of at
// least W lanes vectorized and smaller blocks (d = 7: 4 + 2 + 1) done by fwht_inplace itself.
//
// Bit-exactness rules followed throughout (the scalar reference is the truth):
//  - same operations in the same order per element; no FMA (separate mul and add);
//  - sums of squares accumulate in double, element i into lane i % 8, lanes combined by the
//    reduce8_tree of reduce.h;
//  - min/max use the operand order that reproduces std::min/std::max on NaN, and the sign of
//    a zero minimum/maximum is taken from the first such element, as the scalar loops do;
//  - elements past the end of a vector are never loaded (masked loads) nor stored.
//
// An Ops struct provides (W = lanes of one float vector, 8 or 16):
//   F, I, W; load/loadn/store/storen/zero/set1/add/sub/mul; gathern; inreg_stages (WHT stages
//   h = 1 .. W/2); sumsq (canonical); scale_to; Pass/make_pass/code/level; plane_bits /
//   add_plane_bits; and the 32-element block helpers of the block formats (Blk*).
#pragma once

#ifndef TQKV_SIMD_NS
#error "define TQKV_SIMD_NS before including quant/simd_common.h"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "format/blocks.h"
#include "quant/kernels.h"

namespace tqkv::kernels::TQKV_SIMD_NS {

// ---- scratch --------------------------------------------------------------------------------

// Per-thread scratch, grown on demand and reused: no allocation in the per-vector loops.
struct Scratch {
  void* p = nullptr;
  size_t cap = 0;
  ~Scratch() { std::free(p); }
  void* get(size_t bytes) {
    if (bytes > cap) {
      std::free(p);
      cap = (bytes + 4095) & ~size_t{4095};
      p = std::aligned_alloc(64, cap);
      if (p == nullptr) std::abort();  // out of memory: nothing sensible to return
    }
    return p;
  }
};
inline Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}

// Mirrors reduce8_tree (reduce.h): ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
inline double reduce8(const double l[8]) {
  const double a0 = l[0] + l[4], a1 = l[1] + l[5];
  const double a2 = l[2] + l[6], a3 = l[3] + l[7];
  const double b0 = a0 + a2, b1 = a1 + a3;
  return b0 + b1;
}

// ---- Walsh-Hadamard transform ---------------------------------------------------------------

// Butterfly stages between registers, h = H, 2H, ... < NV (in units of vectors).
template <class O, int NV, int H>
inline void cross_stages(typename O::F* v) {
  if constexpr (H < NV) {
#pragma GCC unroll 16
    for (int i = 0; i < NV; i += 2 * H)
#pragma GCC unroll 16
      for (int j = i; j < i + H; ++j) {
        const typename O::F a = v[j], b = v[j + H];
        v[j] = O::add(a, b);
        v[j + H] = O::sub(a, b);
      }
    cross_stages<O, NV, 2 * H>(v);
  }
}

// The normalized WHT of NV vectors held in registers: optional pre-multiply (signs), the
// butterflies in the order h = 1, 2, 4, ... (fwht_inplace), the 1/sqrt(n) multiply, optional
// post-multiply (signs).
template <class O, int NV>
inline void wht_vecs(typename O::F* v, const float* pre, float s, const float* post) {
  constexpr int W = O::W;
#pragma GCC unroll 16
  for (int i = 0; i < NV; ++i) {
    if (pre) v[i] = O::mul(v[i], O::load(pre + i * W));
    v[i] = O::inreg_stages(v[i]);
  }
  cross_stages<O, NV, 1>(v);
  const typename O::F sv = O::set1(s);
#pragma GCC unroll 16
  for (int i = 0; i < NV; ++i) {
    v[i] = O::mul(v[i], sv);
    if (post) v[i] = O::mul(v[i], O::load(post + i * W));
  }
}

// wht_vecs on y[0 .. NV * W) in memory.
template <class O, int NV>
inline void wht_regs(float* y, const float* pre, float s, const float* post) {
  typename O::F v[NV];
#pragma GCC unroll 16
  for (int i = 0; i < NV; ++i) v[i] = O::load(y + i * O::W);
  wht_vecs<O, NV>(v, pre, s, post);
#pragma GCC unroll 16
  for (int i = 0; i < NV; ++i) O::store(y + i * O::W, v[i]);
}

// Normalized WHT of one power-of-two block y[0..n) (blocks_wht in rotation.cc), any n.
template <class O>
inline void wht_block(float* y, int n, const float* pre = nullptr, const float* post = nullptr) {
  constexpr int W = O::W;
  const float s = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  if (n < W) {  // smaller than a vector: the scalar reference code itself
    if (pre)
      for (int i = 0; i < n; ++i) y[i] *= pre[i];
    if (n > 1) {
      fwht_inplace(y, n);
      for (int i = 0; i < n; ++i) y[i] *= s;
    }
    if (post)
      for (int i = 0; i < n; ++i) y[i] *= post[i];
    return;
  }
  switch (n / W) {
    case 1: return wht_regs<O, 1>(y, pre, s, post);
    case 2: return wht_regs<O, 2>(y, pre, s, post);
    case 4: return wht_regs<O, 4>(y, pre, s, post);
    case 8: return wht_regs<O, 8>(y, pre, s, post);
    case 16: return wht_regs<O, 16>(y, pre, s, post);
    default: break;
  }
  // Large blocks: in-register stages per vector, then the cross-vector stages through L1.
  for (int i = 0; i < n; i += W) {
    typename O::F v = O::load(y + i);
    if (pre) v = O::mul(v, O::load(pre + i));
    O::store(y + i, O::inreg_stages(v));
  }
  for (int h = W; h < n; h <<= 1)
    for (int i = 0; i < n; i += 2 * h)
      for (int j = i; j < i + h; j += W) {
        const typename O::F a = O::load(y + j), b = O::load(y + j + h);
        O::store(y + j, O::add(a, b));
        O::store(y + j + h, O::sub(a, b));
      }
  const typename O::F sv = O::set1(s);
  for (int i = 0; i < n; i += W) {
    typename O::F v = O::mul(O::load(y + i), sv);
    if (post) v = O::mul(v, O::load(post + i));
    O::store(y + i, v);
  }
}

// y[0..d) *= m[0..d)
template <class O>
inline void mul_inplace(float* y, const float* m, int d) {
  int i = 0;
  for (; i + O::W <= d; i += O::W) O::store(y + i, O::mul(O::load(y + i), O::load(m + i)));
  if (i < d) O::storen(y + i, O::mul(O::loadn(y + i, d - i), O::loadn(m + i, d - i)), d - i);
}

// y[i] = src[idx[i]], i < d
template <class O>
inline void gather(float* y, const float* src, const int32_t* idx, int d) {
  for (int i = 0; i < d; i += O::W) {
    const int cnt = d - i < O::W ? d - i : O::W;
    O::storen(y + i, O::gathern(src, idx + i, cnt), cnt);
  }
}

// The rotation with everything precomputed per call (inverse permutations).
struct RotPlan {
  const Rotation* rot = nullptr;
  bool fast = false;           // one round, one block, no permutation, W <= d: signs fused
  int32_t* inv_perm[2] = {};   // per round: inv_perm[perm[i]] = i (decode only)
};

template <class O>
inline RotPlan make_plan(const Rotation& r, int32_t* inv_space /* (2, dim) or null */) {
  RotPlan p;
  p.rot = &r;
  if (!r.enabled()) return p;
  p.fast = r.rounds().size() == 1 && r.rounds()[0].perm.empty() && r.blocks().size() == 1 &&
           r.dim() >= O::W;
  if (inv_space) {
    for (size_t k = 0; k < r.rounds().size() && k < 2; ++k) {
      const auto& perm = r.rounds()[k].perm;
      if (perm.empty()) continue;
      p.inv_perm[k] = inv_space + k * r.dim();
      for (int i = 0; i < r.dim(); ++i) p.inv_perm[k][perm[i]] = i;
    }
  }
  return p;
}

// Rotation::forward, in place on y (dim floats); tmp: dim floats.
template <class O>
inline void rotate_forward(const RotPlan& plan, float* y, float* tmp) {
  const Rotation& r = *plan.rot;
  if (!r.enabled()) return;
  const int d = r.dim();
  if (plan.fast) return wht_block<O>(y, d, r.rounds()[0].signs.data(), nullptr);
  for (const Rotation::Round& rd : r.rounds()) {
    mul_inplace<O>(y, rd.signs.data(), d);
    if (!rd.perm.empty()) {
      std::memcpy(tmp, y, sizeof(float) * d);
      gather<O>(y, tmp, rd.perm.data(), d);
    }
    for (const Rotation::Block& b : r.blocks()) wht_block<O>(y + b.offset, b.size);
  }
}

// Rotation::inverse, in place on y (dim floats); tmp: dim floats.
template <class O>
inline void rotate_inverse(const RotPlan& plan, float* y, float* tmp) {
  const Rotation& r = *plan.rot;
  if (!r.enabled()) return;
  const int d = r.dim();
  if (plan.fast) return wht_block<O>(y, d, nullptr, r.rounds()[0].signs.data());
  for (int k = static_cast<int>(r.rounds().size()) - 1; k >= 0; --k) {
    const Rotation::Round& rd = r.rounds()[k];
    for (const Rotation::Block& b : r.blocks()) wht_block<O>(y + b.offset, b.size);
    if (!rd.perm.empty()) {
      std::memcpy(tmp, y, sizeof(float) * d);
      gather<O>(y, tmp, plan.inv_perm[k], d);
    }
    mul_inplace<O>(y, rd.signs.data(), d);
  }
}

// ---- rotated Lloyd-Max family (encode_rotated_scalar / decode_rotated_scalar) ---------------

// W bits of chunk c of a bit-plane (plane_bytes long): bit i of `bits` = element c * W + i.
template <int W>
inline void put_bits(uint8_t* plane, size_t plane_bytes, int c, uint32_t bits) {
  const size_t off = static_cast<size_t>(c) * (W / 8);
  if (off + W / 8 <= plane_bytes) {  // little-endian: byte b = bits >> 8b
    std::memcpy(plane + off, &bits, W / 8);
    return;
  }
  for (int b = 0; b < W / 8; ++b)
    if (off + b < plane_bytes) plane[off + b] = static_cast<uint8_t>(bits >> (8 * b));
}
template <int W>
inline uint32_t get_bits(const uint8_t* plane, size_t plane_bytes, int c) {
  const size_t off = static_cast<size_t>(c) * (W / 8);
  uint32_t bits = 0;
  if (off + W / 8 <= plane_bytes) {
    std::memcpy(&bits, plane + off, W / 8);
    return bits;
  }
  for (int b = 0; b < W / 8; ++b)
    if (off + b < plane_bytes) bits |= static_cast<uint32_t>(plane[off + b]) << (8 * b);
  return bits;
}

// Vectors per batch: each stage runs over the whole batch before the next one starts, so the
// long dependency chains of one vector (the canonical sums, the WHT) overlap with the next
// vector's. The batch's scratch stays within L1/L2.
inline int batch_size(size_t dp) {
  const size_t b = 4096 / dp;
  return b < 1 ? 1 : b > 16 ? 16 : static_cast<int>(b);
}

// Fast path: power-of-two d = NV * W with the rotation enabled (one round of signs, one block,
// no permutation). The whole vector stays in registers from load to packed codes; the
// operations per element are exactly those of the general path below.
template <class O, int NV>
void encode_rotated_fast(const RotatedParams& p, const typename O::Pass* pass, const float* x,
                         size_t n, size_t x_stride, uint8_t* codes) {
  constexpr int W = O::W, d = NV * W;
  const float* signs = p.rotation->rounds()[0].signs.data();
  const float s = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const double sqrt_d = std::sqrt(static_cast<double>(d));
  const size_t pb = p.plane_bytes;  // == d / 8
  for (size_t v = 0; v < n; ++v) {
    const float* xv = x + v * x_stride;
    uint8_t* out = codes + v * p.code_size;
    // zh is written by pass 0 (p.passes >= 1); zero-initialized so that no path reads it unset.
    typename O::F r[NV], zh[NV];
#pragma GCC unroll 16
    for (int c = 0; c < NV; ++c) {
      r[c] = O::load(xv + c * W);
      zh[c] = O::zero();
    }
    const double sumsq = O::sumsq_vecs(r, NV);
    const double norm = std::sqrt(sumsq);
    const double m = norm > 0 ? sqrt_d / norm : 0.0;
#pragma GCC unroll 16
    for (int c = 0; c < NV; ++c) r[c] = O::scale_vec(r[c], m);
    wht_vecs<O, NV>(r, signs, s, nullptr);
    uint8_t* planes = out + sizeof(float);
    for (int k = 0; k < p.passes; ++k) {
#pragma GCC unroll 16
      for (int c = 0; c < NV; ++c) {
        const typename O::I q = O::code(pass[k], r[c]);
        const typename O::F lv = O::level(pass[k], q);
        r[c] = O::sub(r[c], lv);
        zh[c] = k == 0 ? lv : O::add(zh[c], lv);
        for (int j = 0; j < p.bits; ++j) {
          const uint32_t bits = O::plane_bits(q, j);
          std::memcpy(planes + (static_cast<size_t>(k) * p.bits + j) * pb + c * (W / 8), &bits, W / 8);
        }
      }
    }
    float scale;
    if (!std::isfinite(sumsq)) {
      scale = std::numeric_limits<float>::quiet_NaN();
    } else if (p.norm_correction) {
      const double q = O::sumsq_vecs(zh, NV);
      scale = q > 0 ? static_cast<float>(norm / std::sqrt(q)) : 0.0f;
    } else {
      scale = static_cast<float>(norm / sqrt_d);
    }
    std::memcpy(out, &scale, sizeof(float));
  }
}

template <class O, int NV>
void decode_rotated_fast(const RotatedParams& p, const typename O::Pass* pass,
                         const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  constexpr int W = O::W, d = NV * W;
  const float* signs = p.rotation->rounds()[0].signs.data();
  const float s = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const size_t pb = p.plane_bytes;
  for (size_t v = 0; v < n; ++v) {
    const uint8_t* in = codes + v * p.code_size;
    float scale;
    std::memcpy(&scale, in, sizeof(float));
    const uint8_t* planes = in + sizeof(float);
    typename O::F a[NV];
#pragma GCC unroll 16
    for (int c = 0; c < NV; ++c) {
      a[c] = O::zero();  // overwritten by pass 0 (p.passes >= 1); never read unset
      for (int k = 0; k < p.passes; ++k) {
        typename O::I q = O::izero();
        for (int j = 0; j < p.bits; ++j) {
          uint32_t bits = 0;
          std::memcpy(&bits, planes + (static_cast<size_t>(k) * p.bits + j) * pb + c * (W / 8), W / 8);
          q = O::add_plane_bits(q, bits, j);
        }
        const typename O::F lv = O::level(pass[k], q);
        a[c] = k == 0 ? lv : O::add(a[c], lv);
      }
    }
    wht_vecs<O, NV>(a, nullptr, s, signs);
    const typename O::F sv = O::set1(scale);
    float* yv = y + v * y_stride;
#pragma GCC unroll 16
    for (int c = 0; c < NV; ++c) O::store(yv + c * W, O::mul(a[c], sv));
  }
}

// NV of the fast path for this d, or 0.
template <class O>
inline int fast_nv(const RotatedParams& p) {
  const Rotation& r = *p.rotation;
  if (!r.enabled() || r.rounds().size() != 1 || !r.rounds()[0].perm.empty() || r.blocks().size() != 1)
    return 0;
  const int nv = p.dim / O::W;
  return nv * O::W == p.dim && (nv == 1 || nv == 2 || nv == 4 || nv == 8 || nv == 16) ? nv : 0;
}

template <class O>
void encode_rotated(const RotatedParams& p, const float* x, size_t n, size_t x_stride,
                    uint8_t* codes) {
  constexpr int W = O::W;
  const int d = p.dim;
  const int nc = (d + W - 1) / W;   // chunks of W lanes
  const size_t dp = static_cast<size_t>(nc) * W;
  const int B = batch_size(dp);
  float* r = static_cast<float*>(scratch().get((2 * B + 1) * dp * sizeof(float)));
  float* zhat = r + B * dp;     // (B, dp) reconstruction; r: (B, dp) rotated residual
  float* tmp = zhat + B * dp;   // (dp,) permutation
  typename O::Pass pass[4];
  for (int k = 0; k < p.passes; ++k) O::make_pass(pass[k], p.levels[k], p.thresholds[k], p.bits);
  switch (fast_nv<O>(p)) {
    case 1: return encode_rotated_fast<O, 1>(p, pass, x, n, x_stride, codes);
    case 2: return encode_rotated_fast<O, 2>(p, pass, x, n, x_stride, codes);
    case 4: return encode_rotated_fast<O, 4>(p, pass, x, n, x_stride, codes);
    case 8: return encode_rotated_fast<O, 8>(p, pass, x, n, x_stride, codes);
    case 16: return encode_rotated_fast<O, 16>(p, pass, x, n, x_stride, codes);
    default: break;
  }
  const RotPlan plan = make_plan<O>(*p.rotation, nullptr);
  const uint32_t full = W == 32 ? ~0u : (1u << W) - 1;
  const uint32_t last = d % W ? (1u << (d % W)) - 1 : full;
  const double sqrt_d = std::sqrt(static_cast<double>(d));
  double sumsq[16], norm[16];

  for (size_t v0 = 0; v0 < n; v0 += B) {
    const int nb = n - v0 < static_cast<size_t>(B) ? static_cast<int>(n - v0) : B;
    // norm, scale to unit variance per coordinate (in double), rotate
    for (int b = 0; b < nb; ++b) sumsq[b] = O::sumsq(x + (v0 + b) * x_stride, d);
    for (int b = 0; b < nb; ++b) {
      norm[b] = std::sqrt(sumsq[b]);
      const double m = norm[b] > 0 ? sqrt_d / norm[b] : 0.0;
      O::scale_to(x + (v0 + b) * x_stride, d, m, r + b * dp);
    }
    for (int b = 0; b < nb; ++b) rotate_forward<O>(plan, r + b * dp, tmp);
    // passes: codes, bit-planes, reconstruction
    for (int b = 0; b < nb; ++b) {
      uint8_t* planes = codes + (v0 + b) * p.code_size + sizeof(float);
      const float* rb = r + b * dp;
      float* zb = zhat + b * dp;
      for (int c = 0; c < nc; ++c) {
        typename O::F rv = O::load(rb + c * W), zh = O::zero();
        const uint32_t valid = c == nc - 1 ? last : full;
        for (int k = 0; k < p.passes; ++k) {
          const typename O::I q = O::code(pass[k], rv);
          const typename O::F lv = O::level(pass[k], q);
          rv = O::sub(rv, lv);
          zh = k == 0 ? lv : O::add(zh, lv);
          for (int j = 0; j < p.bits; ++j)
            put_bits<W>(planes + (static_cast<size_t>(k) * p.bits + j) * p.plane_bytes,
                        p.plane_bytes, c, O::plane_bits(q, j) & valid);
        }
        O::store(zb + c * W, zh);
      }
    }
    // scale
    for (int b = 0; b < nb; ++b) {
      float scale;
      if (!std::isfinite(sumsq[b])) {
        scale = std::numeric_limits<float>::quiet_NaN();
      } else if (p.norm_correction) {
        const double q = O::sumsq(zhat + b * dp, d);
        scale = q > 0 ? static_cast<float>(norm[b] / std::sqrt(q)) : 0.0f;
      } else {
        scale = static_cast<float>(norm[b] / sqrt_d);
      }
      std::memcpy(codes + (v0 + b) * p.code_size, &scale, sizeof(float));
    }
  }
}

template <class O>
void decode_rotated(const RotatedParams& p, const uint8_t* codes, size_t n, float* y,
                    size_t y_stride) {
  constexpr int W = O::W;
  const int d = p.dim;
  const int nc = (d + W - 1) / W;
  const size_t dp = static_cast<size_t>(nc) * W;
  const int B = batch_size(dp);
  char* base = static_cast<char*>(
      scratch().get((B + 1) * dp * sizeof(float) + 2 * dp * sizeof(int32_t)));
  float* acc = reinterpret_cast<float*>(base);  // (B, dp) rotated reconstruction
  float* tmp = acc + B * dp;                    // (dp,)
  int32_t* inv = reinterpret_cast<int32_t*>(tmp + dp);  // (2, d) inverse permutations
  typename O::Pass pass[4];
  for (int k = 0; k < p.passes; ++k) O::make_pass(pass[k], p.levels[k], p.thresholds[k], p.bits);
  switch (fast_nv<O>(p)) {
    case 1: return decode_rotated_fast<O, 1>(p, pass, codes, n, y, y_stride);
    case 2: return decode_rotated_fast<O, 2>(p, pass, codes, n, y, y_stride);
    case 4: return decode_rotated_fast<O, 4>(p, pass, codes, n, y, y_stride);
    case 8: return decode_rotated_fast<O, 8>(p, pass, codes, n, y, y_stride);
    case 16: return decode_rotated_fast<O, 16>(p, pass, codes, n, y, y_stride);
    default: break;
  }
  const RotPlan plan = make_plan<O>(*p.rotation, inv);

  for (size_t v0 = 0; v0 < n; v0 += B) {
    const int nb = n - v0 < static_cast<size_t>(B) ? static_cast<int>(n - v0) : B;
    for (int b = 0; b < nb; ++b) {
      const uint8_t* planes = codes + (v0 + b) * p.code_size + sizeof(float);
      float* ab = acc + b * dp;
      for (int c = 0; c < nc; ++c) {
        typename O::F a = O::zero();
        for (int k = 0; k < p.passes; ++k) {
          typename O::I q = O::izero();
          for (int j = 0; j < p.bits; ++j)
            q = O::add_plane_bits(
                q, get_bits<W>(planes + (static_cast<size_t>(k) * p.bits + j) * p.plane_bytes,
                               p.plane_bytes, c),
                j);
          const typename O::F lv = O::level(pass[k], q);
          a = k == 0 ? lv : O::add(a, lv);
        }
        O::store(ab + c * W, a);
      }
    }
    for (int b = 0; b < nb; ++b) rotate_inverse<O>(plan, acc + b * dp, tmp);
    for (int b = 0; b < nb; ++b) {
      float scale;
      std::memcpy(&scale, codes + (v0 + b) * p.code_size, sizeof(float));
      const typename O::F sv = O::set1(scale);
      float* yv = y + (v0 + b) * y_stride;
      for (int c = 0; c < nc; ++c) {
        const int cnt = d - c * W < W ? d - c * W : W;
        O::storen(yv + c * W, O::mul(O::load(acc + b * dp + c * W), sv), cnt);
      }
    }
  }
}

// ---- block formats ------------------------------------------------------------------------

// Mirrors the std::min/std::max expressions of the scalar kernels for floats.
inline float smax(float a, float b) { return (a < b) ? b : a; }  // std::max(a, b)
inline float smin(float a, float b) { return (b < a) ? b : a; }  // std::min(a, b)

// q8_0 (q8_0.cc)
template <class O>
void encode_q8_0(int dim, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  constexpr int NB = kQ8Block / O::W;
  const int nb = (dim + kQ8Block - 1) / kQ8Block;
  for (size_t v = 0; v < n; ++v) {
    uint8_t* out = codes + v * nb * sizeof(BlockQ8_0);
    const float* xv = x + v * x_stride;
    for (int b = 0; b < nb; ++b) {
      uint8_t* blk = out + b * sizeof(BlockQ8_0);
      const int cnt = dim - b * kQ8Block < kQ8Block ? dim - b * kQ8Block : kQ8Block;
      typename O::F vals[NB];
      O::blk_load(xv + b * kQ8Block, cnt, vals, 0.0f);
      if (!O::blk_all_finite(vals)) {
        const uint16_t nan = 0x7e00;
        std::memcpy(blk, &nan, 2);
        std::memset(blk + 2, 0, kQ8Block);
        continue;
      }
      const float amax = smax(0.0f, O::blk_max_abs(vals));
      float d = amax / 127.0f;
      if (d > 65504.0f) d = 65504.0f;
      const float id = d > 0 ? 1.0f / d : 0.0f;
      O::blk_q8(vals, id, reinterpret_cast<int8_t*>(blk + 2));
      const uint16_t h = O::f32_to_f16(d);
      std::memcpy(blk, &h, 2);
    }
  }
}

template <class O>
void decode_q8_0(int dim, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  const int nb = (dim + kQ8Block - 1) / kQ8Block;
  for (size_t v = 0; v < n; ++v) {
    const uint8_t* in = codes + v * nb * sizeof(BlockQ8_0);
    float* yv = y + v * y_stride;
    for (int b = 0; b < nb; ++b) {
      const uint8_t* blk = in + b * sizeof(BlockQ8_0);
      uint16_t h;
      std::memcpy(&h, blk, 2);
      const int cnt = dim - b * kQ8Block < kQ8Block ? dim - b * kQ8Block : kQ8Block;
      O::blk_dq8(reinterpret_cast<const int8_t*>(blk + 2), O::f16_to_f32(h), yv + b * kQ8Block, cnt);
    }
  }
}

// q4_0 (q4_0.cc)
template <class O>
void encode_q4_0(int dim, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  constexpr int NB = kQ4Block / O::W;
  const int nb = (dim + kQ4Block - 1) / kQ4Block;
  for (size_t v = 0; v < n; ++v) {
    uint8_t* out = codes + v * nb * sizeof(BlockQ4_0);
    const float* xv = x + v * x_stride;
    for (int b = 0; b < nb; ++b) {
      uint8_t* blk = out + b * sizeof(BlockQ4_0);
      const float* xb = xv + b * kQ4Block;
      const int cnt = dim - b * kQ4Block < kQ4Block ? dim - b * kQ4Block : kQ4Block;
      typename O::F vals[NB];
      O::blk_load(xb, cnt, vals, 0.0f);
      if (!O::blk_all_finite(vals)) {
        const uint16_t nan = 0x7e00;
        std::memcpy(blk, &nan, 2);
        std::memset(blk + 2, 0x88, kQ4Block / 2);
        continue;
      }
      // The scalar loop keeps the first element of largest magnitude (strict >), and mx = +0
      // when every element is zero.
      const float amax = O::blk_max_abs(vals);
      float mx = 0.0f;
      if (amax > 0) mx = xb[__builtin_ctz(O::blk_eq_abs_mask(vals, amax))];
      float d = mx / -8.0f;
      if (d > 65504.0f) d = 65504.0f;
      if (d < -65504.0f) d = -65504.0f;
      const float id = d != 0 ? 1.0f / d : 0.0f;
      O::blk_q4(vals, id, blk + 2);
      const uint16_t h = O::f32_to_f16(d);
      std::memcpy(blk, &h, 2);
    }
  }
}

template <class O>
void decode_q4_0(int dim, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  const int nb = (dim + kQ4Block - 1) / kQ4Block;
  for (size_t v = 0; v < n; ++v) {
    const uint8_t* in = codes + v * nb * sizeof(BlockQ4_0);
    float* yv = y + v * y_stride;
    for (int b = 0; b < nb; ++b) {
      const uint8_t* blk = in + b * sizeof(BlockQ4_0);
      uint16_t h;
      std::memcpy(&h, blk, 2);
      const int cnt = dim - b * kQ4Block < kQ4Block ? dim - b * kQ4Block : kQ4Block;
      O::blk_dq4(blk + 2, O::f16_to_f32(h), yv + b * kQ4Block, cnt);
    }
  }
}

// kivi (kivi.cc)
inline float kivi_sat(float v) { return smin(65504.0f, smax(-65504.0f, v)); }

// BITS: the plane count as a constant (2, 4), or 0 for the runtime `bits`.
template <class O, int BITS>
void encode_kivi_bits(int dim, int runtime_bits, const float* x, size_t n, size_t x_stride,
                      uint8_t* codes) {
  constexpr int NB = kKiviGroup / O::W;
  const int bits = BITS ? BITS : runtime_bits;
  const int ng = (dim + kKiviGroup - 1) / kKiviGroup;
  const size_t gb = kivi_group_bytes(bits);
  const int qmax = (1 << bits) - 1;
  for (size_t v = 0; v < n; ++v) {
    const float* xv = x + v * x_stride;
    for (int g = 0; g < ng; ++g) {
      uint8_t* out = codes + (v * ng + g) * gb;
      const float* xg = xv + g * kKiviGroup;
      const int cnt = dim - g * kKiviGroup < kKiviGroup ? dim - g * kKiviGroup : kKiviGroup;
      typename O::F vals[NB];
      O::blk_load(xg, cnt, vals, xg[0]);  // pad with a member: min/max unchanged
      uint16_t hs, hm;
      uint32_t planes[4] = {0, 0, 0, 0};
      if (!O::blk_all_finite(vals)) {
        hs = 0x7e00;
        hm = 0;
      } else {
        float mn = O::blk_min(vals), mx = O::blk_max(vals);
        // The scalar loop keeps the first of equal candidates: only zeros can differ (sign).
        if (mn == 0) mn = xg[__builtin_ctz(O::blk_eq_mask(vals, 0.0f))];
        if (mx == 0) mx = xg[__builtin_ctz(O::blk_eq_mask(vals, 0.0f))];
        hm = O::f32_to_f16(kivi_sat(mn));
        hs = O::f32_to_f16(kivi_sat((mx - mn) / static_cast<float>(qmax)));
        const float m = O::f16_to_f32(hm), s = O::f16_to_f32(hs);
        const float inv = s > 0 ? 1.0f / s : 0.0f;
        O::template blk_kivi<BITS>(vals, m, inv, static_cast<float>(qmax), bits, planes);
        const uint32_t valid = cnt == 32 ? ~0u : (1u << cnt) - 1;
        for (int j = 0; j < bits; ++j) planes[j] &= valid;
      }
      std::memcpy(out, &hs, 2);
      std::memcpy(out + 2, &hm, 2);
      for (int j = 0; j < bits; ++j) std::memcpy(out + 4 + 4 * j, &planes[j], 4);
    }
  }
}

template <class O>
void encode_kivi(int dim, int bits, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  if (bits == 2) return encode_kivi_bits<O, 2>(dim, bits, x, n, x_stride, codes);
  if (bits == 4) return encode_kivi_bits<O, 4>(dim, bits, x, n, x_stride, codes);
  encode_kivi_bits<O, 0>(dim, bits, x, n, x_stride, codes);
}

template <class O>
void decode_kivi(int dim, int bits, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  const int ng = (dim + kKiviGroup - 1) / kKiviGroup;
  const size_t gb = kivi_group_bytes(bits);
  for (size_t v = 0; v < n; ++v) {
    float* yv = y + v * y_stride;
    for (int g = 0; g < ng; ++g) {
      const uint8_t* in = codes + (v * ng + g) * gb;
      uint16_t hs, hm;
      std::memcpy(&hs, in, 2);
      std::memcpy(&hm, in + 2, 2);
      uint32_t planes[4] = {0, 0, 0, 0};
      for (int j = 0; j < bits; ++j) std::memcpy(&planes[j], in + 4 + 4 * j, 4);
      const int cnt = dim - g * kKiviGroup < kKiviGroup ? dim - g * kKiviGroup : kKiviGroup;
      O::blk_dkivi(planes, bits, O::f16_to_f32(hm), O::f16_to_f32(hs), yv + g * kKiviGroup, cnt);
    }
  }
}

}  // namespace tqkv::kernels::TQKV_SIMD_NS
