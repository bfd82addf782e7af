// Plans and RoPE tables of the SIMD pk{b} key kernels (prerope_kernels.h). Portable code: runs
// once per attend() call (tables) or per work item (plan), never per token.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "attention/prerope_kernels.h"
#include "tqkv/codebook.h"

namespace tqkv::attn {

PkRopeTables make_pk_rope_tables(const RopeParams& rope, const float* inv_freq) {
  PkRopeTables T;
  T.pairs = rope.rotary_dims / 2;
  const int n = T.pairs;
  T.omega.resize(n);
  T.cos_t.resize(static_cast<size_t>(64) * n);
  T.sin_t.resize(T.cos_t.size());
  T.cos_step.resize(n);
  T.sin_step.resize(n);
  for (int j = 0; j < n; ++j) {
    const double w = static_cast<double>(inv_freq[j]) / static_cast<double>(rope.position_scale);
    T.omega[j] = w;
    // R(t w) = R(w)^t by a double recurrence: 63 steps add ~1e-14, far below the float rounding
    // of the stored entries (2^-24), and cost no trigonometry per entry.
    const double c1 = std::cos(w), s1 = std::sin(w);
    double c = 1, s = 0;
    for (int t = 0; t < 64; ++t) {
      T.cos_t[static_cast<size_t>(t) * n + j] = static_cast<float>(c);
      T.sin_t[static_cast<size_t>(t) * n + j] = static_cast<float>(s);
      const double cn = c * c1 - s * s1, sn = s * c1 + c * s1;
      c = cn;
      s = sn;
    }
    T.cos_step[j] = std::cos(64.0 * w);
    T.sin_step[j] = std::sin(64.0 * w);
  }
  return T;
}

void make_pk_plan(const PreRopeKeyCodec& codec, const RopeParams& rope, const PkRopeTables& tables, PkPlan* plan) {
  PkPlan& P = *plan;
  const PreRopeKeyStats& st = codec.stats();
  const int d = codec.dim(), R = rope.rotary_dims, half = R / 2;
  P.d = d;
  P.pairs = half;
  P.rot_vec = (half + kPkLanes - 1) / kPkLanes;
  P.pass_vec = (d - R + kPkLanes - 1) / kPkLanes;
  P.nvec = 2 * P.rot_vec + P.pass_vec;
  P.dp = kPkLanes * P.nvec;
  P.stream_bytes = static_cast<int>(codec.code_size()) - 2;
  P.fits_zmm2 = P.stream_bytes <= 128;
  std::vector<uint32_t> offset(d);  // stream bit of channel i's code
  uint32_t o = 0;
  for (int i = 0; i < d; ++i) {
    offset[i] = o;
    o += st.bits[i];
  }
  const bool adjacent = rope.style == RopeStyle::kAdjacent;
  auto chan_a = [&](int j) { return adjacent ? 2 * j : j; };
  auto chan_b = [&](int j) { return adjacent ? 2 * j + 1 : j + half; };
  // Pairs (and then the non-rotary channels) by their widest channel, widest first.
  std::vector<int> pairs(half), pass(d - R);
  std::iota(pairs.begin(), pairs.end(), 0);
  std::iota(pass.begin(), pass.end(), R);
  std::stable_sort(pairs.begin(), pairs.end(), [&](int x, int y) {
    return std::max(st.bits[chan_a(x)], st.bits[chan_b(x)]) > std::max(st.bits[chan_a(y)], st.bits[chan_b(y)]);
  });
  std::stable_sort(pass.begin(), pass.end(), [&](int x, int y) { return st.bits[x] > st.bits[y]; });
  const int arot = kPkLanes * P.rot_vec;
  P.chan.assign(P.dp, -1);
  P.pair.assign(arot, -1);
  for (int l = 0; l < half; ++l) {
    P.pair[l] = pairs[l];
    P.chan[l] = chan_a(pairs[l]);
    P.chan[arot + l] = chan_b(pairs[l]);
  }
  for (size_t l = 0; l < pass.size(); ++l) P.chan[2 * arot + l] = pass[l];
  P.shift16.assign(P.dp, 0);
  P.shift8.assign(P.dp, 0);
  P.byte_off.assign(P.dp, 0);
  P.mask.assign(P.dp, 0);
  P.base.assign(P.dp, 0);
  P.sd.assign(P.dp, 0.0f);
  P.mu.assign(P.dp, 0.0f);
  P.widx.assign(static_cast<size_t>(P.nvec) * 32, 0);
  P.windows.assign(P.nvec, 1);
  for (int l = 0; l < P.dp; ++l) {
    const int c = P.chan[l];
    if (c < 0) continue;
    const uint32_t oc = offset[c], b = st.bits[c];
    P.shift16[l] = oc % 16;
    P.shift8[l] = oc % 8;
    P.byte_off[l] = oc / 8;
    P.mask[l] = (1u << b) - 1;
    P.base[l] = b > 0 ? 1u << b : 0;
    P.sd[l] = st.sd[c];
    P.mu[l] = st.mean[c];
    const int v = l / kPkLanes, k = l % kPkLanes;
    P.widx[static_cast<size_t>(v) * 32 + 2 * k] = static_cast<uint16_t>(oc / 16);
    P.widx[static_cast<size_t>(v) * 32 + 2 * k + 1] = static_cast<uint16_t>((oc / 16 + 1) & 63);
    P.windows[v] = std::max(P.windows[v], static_cast<int>(((P.base[l] | P.mask[l]) >> 5) + 1));
  }
  P.vec.assign(P.nvec, PkPlan::Vec{});
  for (int v = 0; v < P.nvec; ++v) {
    PkPlan::Vec& V = P.vec[v];
    for (int k = 0; k < kPkLanes; ++k) {
      const int l = v * kPkLanes + k;
      V.widx[2 * k] = P.widx[static_cast<size_t>(v) * 32 + 2 * k];
      V.widx[2 * k + 1] = P.widx[static_cast<size_t>(v) * 32 + 2 * k + 1];
      V.shift16[k] = P.shift16[l];
      V.mask[k] = P.mask[l];
      V.base[k] = P.base[l];
      V.sd[k] = P.sd[l];
      V.mu[k] = P.mu[l];
    }
  }
  std::fill(std::begin(P.levels), std::end(P.levels), 0.0f);
  for (int b = 1; b <= 8; ++b) {
    bool used = false;
    for (int i = 0; i < d; ++i) used = used || st.bits[i] == b;
    if (!used) continue;
    const Codebook& cb = lloyd_max(Density::kGaussian, b);
    for (int c = 0; c < (1 << b); ++c) P.levels[(1 << b) + c] = cb.levels[c];
  }
  // Token-lane kernel tables.
  P.tl.clear();
  P.tl_b.clear();
  P.tl_tab.clear();
  P.tl_words = (P.stream_bytes + 1) / 2;
  auto add_lane = [&](int l) {
    const int c = P.chan[l];
    const uint32_t oc = offset[c];
    const int b = st.bits[c];
    PkPlan::TlLane T;
    T.lane = l;
    T.word = static_cast<int>(oc / 16);
    T.shift = static_cast<int>(oc % 16);
    T.kind = b <= 4 ? 1 : b == 5 ? 2 : 3;
    T.mask = (1u << b) - 1;
    T.mu = st.mean[c];
    T.tab = static_cast<int>(P.tl_tab.size());
    const int entries = b <= 4 ? 16 : 1 << b;
    const Codebook* cb = b > 0 ? &lloyd_max(Density::kGaussian, b) : nullptr;
    for (int e = 0; e < entries; ++e)
      P.tl_tab.push_back(cb ? st.sd[c] * cb->levels[e & ((1 << b) - 1)] : 0.0f);
    P.tl.push_back(T);
  };
  for (int l = 0; l < half; ++l) add_lane(l);
  P.tl_pairs = half;
  for (int l = 0; l < half; ++l) {
    P.tl_b.push_back(static_cast<int>(P.tl.size()));
    add_lane(arot + l);
  }
  for (int l = 2 * arot; l < P.dp; ++l)
    if (P.chan[l] >= 0) add_lane(l);
  P.tl_cos.assign(static_cast<size_t>(half) * 64, 1.0f);
  P.tl_sin.assign(P.tl_cos.size(), 0.0f);
  for (int l = 0; l < half; ++l)
    for (int t = 0; t < 64; ++t) {
      P.tl_cos[static_cast<size_t>(l) * 64 + t] = tables.cos_t[static_cast<size_t>(t) * tables.pairs + P.pair[l]];
      P.tl_sin[static_cast<size_t>(l) * 64 + t] = tables.sin_t[static_cast<size_t>(t) * tables.pairs + P.pair[l]];
    }
  P.cos_t.assign(static_cast<size_t>(64) * arot, 1.0f);
  P.sin_t.assign(P.cos_t.size(), 0.0f);
  for (int t = 0; t < 64; ++t)
    for (int l = 0; l < half; ++l) {
      P.cos_t[static_cast<size_t>(t) * arot + l] = tables.cos_t[static_cast<size_t>(t) * tables.pairs + P.pair[l]];
      P.sin_t[static_cast<size_t>(t) * arot + l] = tables.sin_t[static_cast<size_t>(t) * tables.pairs + P.pair[l]];
    }
}

void pk_permute_queries(const PkPlan& P, const float* q, int ns, float* qp) {
  for (int s = 0; s < ns; ++s)
    for (int l = 0; l < P.dp; ++l)
      qp[static_cast<size_t>(s) * P.dp + l] = P.chan[l] >= 0 ? q[static_cast<size_t>(s) * P.d + P.chan[l]] : 0.0f;
}

void pk_rotate_queries(const PkPlan& P, const float* qp, int ns, const double* cos_base, const double* sin_base,
                       float* qb) {
  const int arot = kPkLanes * P.rot_vec;
  for (int s = 0; s < ns; ++s) {
    const float* src = qp + static_cast<size_t>(s) * P.dp;
    float* dst = qb + static_cast<size_t>(s) * P.dp;
    for (int l = 0; l < arot; ++l) {  // R^T (a, b) = (c a + s b, -s a + c b), in double
      const double a = src[l], b = src[arot + l], c = cos_base[l], sn = sin_base[l];
      dst[l] = static_cast<float>(c * a + sn * b);
      dst[arot + l] = static_cast<float>(c * b - sn * a);
    }
    for (int l = 2 * arot; l < P.dp; ++l) dst[l] = src[l];
  }
}

}  // namespace tqkv::attn

namespace tqkv::attn {

void make_pk_basis_plan(const PreRopeKeyCodec& codec, const RopeParams& rope, const PkRopeTables& tables,
                        PkBasisPlan* plan) {
  PkBasisPlan& B = *plan;
  const ChannelBasis& basis = *codec.basis();
  RopeParams none = rope;
  none.rotary_dims = 0;
  make_pk_plan(codec, none, PkRopeTables{}, &B.y);  // y_hat: pass lanes only, no rotation
  const int d = codec.dim(), R = rope.rotary_dims, half = R / 2;
  B.d = d;
  B.pairs = half;
  B.rot_vec = (half + kPkLanes - 1) / kPkLanes;
  B.pass_vec = (d - R + kPkLanes - 1) / kPkLanes;
  B.nvec = 2 * B.rot_vec + B.pass_vec;
  B.dp = kPkLanes * B.nvec;
  const int arot = kPkLanes * B.rot_vec;
  const bool adjacent = rope.style == RopeStyle::kAdjacent;
  B.chan.assign(B.dp, -1);
  B.pair.assign(arot, -1);
  for (int j = 0; j < half; ++j) {  // natural pair order: a block-diagonal S stays in few vectors
    B.pair[j] = j;
    B.chan[j] = adjacent ? 2 * j : j;
    B.chan[arot + j] = adjacent ? 2 * j + 1 : j + half;
  }
  for (int i = R; i < d; ++i) B.chan[2 * arot + (i - R)] = i;
  B.nz_begin.assign(B.nvec + 1, 0);
  B.nz_lane.clear();
  B.col.clear();
  for (int v = 0; v < B.nvec; ++v) {
    for (int l = 0; l < B.y.dp; ++l) {  // y lanes in the y plan's order
      const int yc = B.y.chan[l];
      if (yc < 0) continue;
      float e[kPkLanes];
      bool any = false;
      for (int k = 0; k < kPkLanes; ++k) {
        const int xc = B.chan[v * kPkLanes + k];
        e[k] = xc < 0 ? 0.0f : basis.synthesis[static_cast<size_t>(xc) * d + yc];
        any = any || e[k] != 0.0f;
      }
      if (!any) continue;
      B.nz_lane.push_back(l);
      B.col.insert(B.col.end(), e, e + kPkLanes);
    }
    B.nz_begin[v + 1] = static_cast<int>(B.nz_lane.size());
  }
  B.cos_t.assign(static_cast<size_t>(64) * arot, 1.0f);
  B.sin_t.assign(B.cos_t.size(), 0.0f);
  for (int t = 0; t < 64; ++t)
    for (int l = 0; l < half; ++l) {
      B.cos_t[static_cast<size_t>(t) * arot + l] = tables.cos_t[static_cast<size_t>(t) * tables.pairs + l];
      B.sin_t[static_cast<size_t>(t) * arot + l] = tables.sin_t[static_cast<size_t>(t) * tables.pairs + l];
    }
}

PkPlan pk_basis_query_plan(const PkBasisPlan& B) {
  PkPlan P;
  P.d = B.d;
  P.pairs = B.pairs;
  P.rot_vec = B.rot_vec;
  P.pass_vec = B.pass_vec;
  P.nvec = B.nvec;
  P.dp = B.dp;
  P.chan = B.chan;
  P.pair = B.pair;
  return P;
}

}  // namespace tqkv::attn
