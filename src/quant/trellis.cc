// tt{b}: tail-biting bitshift trellis code on the rotated vector. Reference encode (Viterbi) and
// decode; contracts in src/quant/trellis.h, bytes in docs/format.md ("tt{b}").
#include "quant/trellis.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>

#include "core/random.h"
#include "format/format_table.h"
#include "quant/reduce.h"

namespace tqkv {

// bf16 helpers of the pk codec (src/quant/prerope_keys.cc): round to nearest even, finite values
// saturate at +-3.3895e38, NaN -> 0x7fc0.
uint16_t float_to_bf16_saturate(float f);
float bf16_to_float(uint16_t b);

int trellis_window(int bits, int dim) { return std::min(kTrellisWindowBits / bits, dim); }

namespace {

// Phi^-1(p), 0 < p < 1: bisection on Phi(x) = erfc(-x / sqrt 2) / 2 to the last double.
double gaussian_quantile(double p) {
  double lo = -40, hi = 40;
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (mid == lo || mid == hi) break;
    if (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

std::vector<float> make_table(int entries) {
  std::vector<int> perm(entries);
  for (int i = 0; i < entries; ++i) perm[i] = i;
  SplitMix64 rng(kTrellisTableSeed);
  for (int i = entries - 1; i > 0; --i) std::swap(perm[i], perm[rng.uniform(static_cast<uint32_t>(i + 1))]);
  std::vector<float> t(entries);
  for (int j = 0; j < entries; ++j)
    t[j] = static_cast<float>(gaussian_quantile((perm[j] + 0.5) / entries));
  return t;
}

// One Viterbi pass over z[0..d-1] (the sequence as given). Window w of element i holds the codes
// c_i (low b bits) .. c_{i-W+1} (high b bits); the state after element i is the window without
// its oldest code, s_i = w_i mod H, H = 2^(b (W-1)); the state before element 0 is `start`
// (-1: any state, cost 0). The path ends in state `end` (-1: the cheapest). Per element:
//   cost(w)  = D[w >> b] + (z_i - T[w])^2                (float, in this order)
//   D'[s]    = min over the oldest code j of cost(s + j H), the first j on ties
// Writes the codes and the states after each element; returns the path metric. B = b as a
// template parameter so that the loop over the 2^b windows sharing a predecessor unrolls.
template <int B>
float viterbi_pass(const float* z, int d, int W, int start, int end, uint8_t* codes, int* states) {
  constexpr int K = 1 << B;
  const int H = 1 << (B * (W - 1)), N = H << B;
  const std::vector<float>& T = trellis_table(N);
  constexpr float kInf = std::numeric_limits<float>::infinity();
  thread_local std::vector<float> Dbuf, Dnbuf;
  thread_local std::vector<uint8_t> backbuf;  // [i * H + s]: oldest code j of the best window into s
  Dbuf.assign(H, start < 0 ? 0.0f : kInf);
  if (start >= 0) Dbuf[start] = 0.0f;
  Dnbuf.resize(H);
  backbuf.resize(static_cast<size_t>(d) * H);
  // Plain pointers: the loops below must not re-read the thread_local vectors.
  float* D = Dbuf.data();
  float* Dn = Dnbuf.data();
  uint8_t* back = backbuf.data();
  const float* Tp = T.data();
  for (int i = 0; i < d; ++i) {
    const float zi = z[i];
    uint8_t* bk = back + static_cast<size_t>(i) * H;
    if (W == 1) {  // d == 1: one state, the windows are the codes
      float best = kInf;
      int arg = 0;
      for (int j = 0; j < K; ++j) {
        const float e = zi - Tp[j];
        const float cost = D[0] + e * e;
        if (cost < best) {
          best = cost;
          arg = j;
        }
      }
      Dn[0] = best;
      bk[0] = static_cast<uint8_t>(arg);
    } else {
      // Window s + j H has predecessor state (s + j H) >> b = q + j Hq, q = s >> b, Hq = H >> b:
      // the K states s = q K .. q K + K - 1 share it. j = 0 first (initializes), then j >= 1.
      const int Hq = H >> B;
      for (int q = 0; q < Hq; ++q) {
        const float dq = D[q];
        for (int c = 0; c < K; ++c) {
          const float e = zi - Tp[q * K + c];
          Dn[q * K + c] = dq + e * e;
          bk[q * K + c] = 0;
        }
      }
      for (int j = 1; j < K; ++j) {
        const float* Tj = Tp + static_cast<size_t>(j) * H;
        const float* Dj = D + static_cast<size_t>(j) * Hq;
        for (int q = 0; q < Hq; ++q) {
          const float dq = Dj[q];
          for (int c = 0; c < K; ++c) {
            const float e = zi - Tj[q * K + c];
            const float cost = dq + e * e;
            // Branch-free select (random data makes a branch mispredict half the time): the
            // mask is all ones when this window is strictly better.
            const float old = Dn[q * K + c];
            const uint8_t m = static_cast<uint8_t>(-static_cast<int>(cost < old));
            Dn[q * K + c] = cost < old ? cost : old;
            bk[q * K + c] = static_cast<uint8_t>((bk[q * K + c] & ~m) | (j & m));
          }
        }
      }
    }
    std::swap(D, Dn);
  }
  int s = end;
  if (s < 0) {
    s = 0;
    for (int t = 1; t < H; ++t)
      if (D[t] < D[s]) s = t;
  }
  const float metric = D[s];
  for (int i = d - 1; i >= 0; --i) {
    states[i] = s;
    const int w = s + back[static_cast<size_t>(i) * H + s] * H;
    codes[i] = static_cast<uint8_t>(w & (K - 1));
    s = w >> B;
  }
  return metric;
}

float viterbi(const float* z, int d, int b, int W, int start, int end, uint8_t* codes, int* states) {
  switch (b) {
    case 1: return viterbi_pass<1>(z, d, W, start, end, codes, states);
    case 2: return viterbi_pass<2>(z, d, W, start, end, codes, states);
    case 3: return viterbi_pass<3>(z, d, W, start, end, codes, states);
    default: return viterbi_pass<4>(z, d, W, start, end, codes, states);
  }
}

// Bits of the code stream (docs/format.md): code i at stream bits b i .. b i + b - 1.
void pack_codes(const uint8_t* codes, int d, int b, uint8_t* out) {
  std::memset(out, 0, (static_cast<size_t>(d) * b + 7) / 8);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < b; ++j) {
      const size_t m = static_cast<size_t>(i) * b + j;
      out[m / 8] |= static_cast<uint8_t>(((codes[i] >> j) & 1) << (m % 8));
    }
}

void unpack_codes(const uint8_t* in, int d, int b, uint8_t* codes) {
  for (int i = 0; i < d; ++i) {
    int c = 0;
    for (int j = 0; j < b; ++j) {
      const size_t m = static_cast<size_t>(i) * b + j;
      c |= ((in[m / 8] >> (m % 8)) & 1) << j;
    }
    codes[i] = static_cast<uint8_t>(c);
  }
}

class TrellisQuantizer final : public Quantizer {
 public:
  TrellisQuantizer(const FormatSpec& spec, int dim, Rotation rotation, bool norm_correction)
      : Quantizer(spec, dim), rotation_(std::move(rotation)), norm_correction_(norm_correction) {}

  void encode(const float* x, size_t n, uint8_t* codes, size_t x_stride) const override {
    const int d = dim(), b = format().bits;
    if (x_stride == 0) x_stride = d;
    std::vector<float> z(d), zhat(d);
    std::vector<uint8_t> c(d);
    for (size_t v = 0; v < n; ++v) {
      const float* xv = x + v * x_stride;
      uint8_t* out = codes + v * code_size();
      const double sumsq = sumsq_canonical(xv, d);
      if (!std::isfinite(sumsq)) {  // NaN/Inf: scale NaN, codes 0 -> decodes to all-NaN
        std::memset(out, 0, code_size());
        const uint16_t nan = 0x7fc0;
        std::memcpy(out, &nan, 2);
        continue;
      }
      const double norm = std::sqrt(sumsq);
      const double m = norm > 0 ? std::sqrt(static_cast<double>(d)) / norm : 0.0;
      for (int i = 0; i < d; ++i) z[i] = static_cast<float>(static_cast<double>(xv[i]) * m);
      rotation_.forward(z.data(), z.data());
      trellis_search(z.data(), d, b, c.data());
      trellis_reconstruct(c.data(), d, b, zhat.data());
      double s;
      if (norm_correction_) {
        const double q = sumsq_canonical(zhat.data(), d);
        s = q > 0 ? norm / std::sqrt(q) : 0.0;
      } else {
        s = norm / std::sqrt(static_cast<double>(d));
      }
      const uint16_t sb = float_to_bf16_saturate(static_cast<float>(s));
      std::memcpy(out, &sb, 2);
      pack_codes(c.data(), d, b, out + 2);
    }
  }

  void decode(const uint8_t* codes, size_t n, float* y, size_t y_stride) const override {
    const int d = dim(), b = format().bits;
    if (y_stride == 0) y_stride = d;
    std::vector<uint8_t> c(d);
    for (size_t v = 0; v < n; ++v) {
      const uint8_t* in = codes + v * code_size();
      float* yv = y + v * y_stride;
      uint16_t sb;
      std::memcpy(&sb, in, 2);
      const float scale = bf16_to_float(sb);
      unpack_codes(in + 2, d, b, c.data());
      trellis_reconstruct(c.data(), d, b, yv);
      rotation_.inverse(yv, yv);
      for (int i = 0; i < d; ++i) yv[i] = yv[i] * scale;
    }
  }

  const Rotation* rotation() const override { return &rotation_; }

 private:
  Rotation rotation_;
  bool norm_correction_;
};

}  // namespace

const std::vector<float>& trellis_table(int entries) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<std::vector<float>>> memo;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = memo[entries];
  if (!slot) slot = std::make_unique<std::vector<float>>(make_table(entries));
  return *slot;
}

float trellis_search(const float* z, int d, int b, uint8_t* codes) {
  const int W = trellis_window(b, d);
  const int H = 1 << (b * (W - 1));
  std::vector<int> states(d);
  // Pass 1: the sequence rotated by h = d / 2 (element i at position (i - h) mod d), free start
  // and end; the state it reaches after element d - 1 (position d - 1 - h) fixes the tail.
  const int h = d / 2;
  std::vector<float> zr(d);
  for (int r = 0; r < d; ++r) zr[r] = z[(r + h) % d];
  viterbi(zr.data(), d, b, W, -1, -1, codes, states.data());
  const int s0 = states[d - 1 - h] & (H - 1);
  // Pass 2: the sequence in order, starting and ending in s0: the window of element 0 then holds
  // the path's own last W - 1 codes (tail-biting).
  return viterbi(z, d, b, W, s0, s0, codes, states.data());
}

void trellis_reconstruct(const uint8_t* codes, int d, int b, float* zhat) {
  const int W = trellis_window(b, d);
  const std::vector<float>& T = trellis_table(1 << (b * W));
  // Sliding window: start with the last W-1 codes (the tail that element 0's window wraps to),
  // then shift in one code per element and drop the oldest.
  const int mask = (1 << (b * W)) - 1;
  int w = 0;
  for (int t = d - (W - 1); t < d; ++t) w = (w << b) | codes[t];
  for (int i = 0; i < d; ++i) {
    w = ((w << b) | codes[i]) & mask;
    zhat[i] = T[w];
  }
}

StatusOr<std::unique_ptr<Quantizer>> make_trellis_quantizer(const FormatSpec& spec, int dim,
                                                            const QuantOptions& options) {
  TQKV_RETURN_IF_ERROR(validate_format(spec, dim));
  TQKV_ASSIGN_OR_RETURN(Rotation rot, Rotation::make(dim, options.seed, options.use_hadamard));
  return std::unique_ptr<Quantizer>(new TrellisQuantizer(spec, dim, std::move(rot), options.norm_correction));
}

}  // namespace tqkv
