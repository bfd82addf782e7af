// The peer formats: rq4_0 / riq4_nl (llama.cpp's rotated KV cache), qjl{b} (QJL) and tqp{b}
// (TurboQuant-prod). Scalar and readable on purpose: this is the reference the fused attention is
// tested against. Layouts: docs/format.md ("Peers"); contracts: src/quant/peers.h.
#include "quant/peers.h"

#include <cmath>
#include <cstring>
#include <string>

#include "core/half.h"
#include "core/random.h"
#include "format/blocks.h"
#include "format/format_table.h"

namespace tqkv {

// bf16 helpers of the pk codec (src/quant/prerope_keys.cc): round to nearest even, finite values
// saturate at +-3.3895e38, NaN -> 0x7fc0.
uint16_t float_to_bf16_saturate(float f);
float bf16_to_float(uint16_t b);

int llama_rotation_block(int head_dim, bool value_stream) {
  if (head_dim <= 0 || head_dim % 64 != 0) return 0;
  if (value_stream) return 64;
  int n = 64;
  while (head_dim % (2 * n) == 0) n *= 2;
  return n;
}

void llama_hadamard(const float* x, float* y, int dim, int block) {
  if (x != y) std::memcpy(y, x, sizeof(float) * static_cast<size_t>(dim));
  if (block <= 0) return;
  const float norm = static_cast<float>(1.0 / std::sqrt(static_cast<double>(block)));
  for (int b = 0; b + block <= dim; b += block) {
    fwht_inplace(y + b, block);  // unnormalized Sylvester order: (-1)^popcount(i & j)
    for (int i = 0; i < block; ++i) y[b + i] *= norm;
  }
}

std::vector<float> qjl_sketch_matrix(int m, int dim, uint64_t seed) {
  SplitMix64 rng(seed ^ kSketchSeedSalt);
  std::vector<float> s(static_cast<size_t>(m) * dim);
  for (float& v : s) v = static_cast<float>(rng.normal());
  return s;
}

namespace {

constexpr double kSqrtHalfPi = 1.2533141373155002512;  // sqrt(pi / 2)

bool all_finite(const float* x, int d) {
  for (int i = 0; i < d; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

// ---- rq4_0 / riq4_nl -------------------------------------------------------------------------

// llama.cpp's rotated KV cache: y = blockdiag(H) x (post-RoPE, as llama.cpp rotates the cached K
// and V), then its q4_0 / iq4_nl blocks of 32. Decode: the blocks, then blockdiag(H) again (H^2 = I).
class RotatedBlockQuantizer final : public Quantizer {
 public:
  RotatedBlockQuantizer(const FormatSpec& spec, int dim, int block) : Quantizer(spec, dim), block_(block) {}

  void encode(const float* x, size_t n, uint8_t* codes, size_t x_stride) const override {
    const int d = dim(), nb = (d + 31) / 32;
    if (x_stride == 0) x_stride = d;
    std::vector<float> r(d);
    for (size_t v = 0; v < n; ++v) {
      llama_hadamard(x + v * x_stride, r.data(), d, block_);
      uint8_t* out = codes + v * code_size();
      for (int b = 0; b < nb; ++b) {
        const int cnt = std::min(32, d - 32 * b);
        if (format().kind == FormatKind::kRq4_0)
          quantize_block_q4_0(&r[32 * b], cnt, reinterpret_cast<BlockQ4_0*>(out) + b);
        else
          quantize_block_iq4_nl(&r[32 * b], cnt, reinterpret_cast<BlockIq4Nl*>(out) + b, /*ntry=*/-1);
      }
    }
  }

  void decode(const uint8_t* codes, size_t n, float* y, size_t y_stride) const override {
    const int d = dim(), nb = (d + 31) / 32;
    if (y_stride == 0) y_stride = d;
    for (size_t v = 0; v < n; ++v) {
      const uint8_t* in = codes + v * code_size();
      float* row = y + v * y_stride;
      for (int b = 0; b < nb; ++b) {
        const int cnt = std::min(32, d - 32 * b);
        if (format().kind == FormatKind::kRq4_0)
          dequantize_block_q4_0(reinterpret_cast<const BlockQ4_0*>(in)[b], cnt, row + 32 * b);
        else
          dequantize_block_iq4_nl(reinterpret_cast<const BlockIq4Nl*>(in)[b], cnt, row + 32 * b);
      }
      llama_hadamard(row, row, d, block_);
    }
  }

 private:
  int block_;
};

// ---- the QJL sign sketch ---------------------------------------------------------------------

// m sign bits of S r (bit i of the stream = (S r)_i >= 0, at bit i % 8 of byte i / 8) and the norm
// ||r|| as bf16: together the unbiased inner-product estimator
//   <q, r> ~= ||r|| sqrt(pi/2) / m * sum_i sign_i (S q)_i = <q, r_hat>,
//   r_hat = ||r|| sqrt(pi/2) / m * S^T sign(S r)          (E_S[r_hat] = r).
struct Sketch {
  int m = 0, d = 0;
  std::vector<float> S;  // (m, d)

  size_t bytes() const { return 2 + (static_cast<size_t>(m) + 7) / 8; }

  // r: (d,) finite or not; out: bytes().
  void encode(const float* r, uint8_t* out) const {
    std::memset(out, 0, bytes());
    if (!all_finite(r, d)) {
      const uint16_t nan = 0x7fc0;
      std::memcpy(out, &nan, 2);
      return;
    }
    double n2 = 0;
    for (int j = 0; j < d; ++j) n2 += double(r[j]) * r[j];
    const uint16_t nb = float_to_bf16_saturate(static_cast<float>(std::sqrt(n2)));
    std::memcpy(out, &nb, 2);
    for (int i = 0; i < m; ++i) {
      double p = 0;
      const float* row = &S[static_cast<size_t>(i) * d];
      for (int j = 0; j < d; ++j) p += double(row[j]) * r[j];
      if (p >= 0) out[2 + i / 8] |= static_cast<uint8_t>(1u << (i % 8));
    }
  }

  // y += r_hat (float: the signed rows summed in order i = 0..m-1, then one scale).
  void add_decoded(const uint8_t* in, float* y, std::vector<float>& acc) const {
    uint16_t nb;
    std::memcpy(&nb, in, 2);
    const float norm = bf16_to_float(nb);
    const float c = static_cast<float>(norm * (kSqrtHalfPi / m));
    acc.assign(d, 0.0f);
    for (int i = 0; i < m; ++i) {
      const float* row = &S[static_cast<size_t>(i) * d];
      if (in[2 + i / 8] >> (i % 8) & 1)
        for (int j = 0; j < d; ++j) acc[j] += row[j];
      else
        for (int j = 0; j < d; ++j) acc[j] -= row[j];
    }
    for (int j = 0; j < d; ++j) y[j] += c * acc[j];
  }
};

// qjl{b}: the sketch of the key itself, m = b d.
class QjlQuantizer final : public Quantizer {
 public:
  QjlQuantizer(const FormatSpec& spec, int dim, uint64_t seed) : Quantizer(spec, dim) {
    sk_.m = spec.bits * dim;
    sk_.d = dim;
    sk_.S = qjl_sketch_matrix(sk_.m, dim, seed);
  }
  void encode(const float* x, size_t n, uint8_t* codes, size_t x_stride) const override {
    if (x_stride == 0) x_stride = dim();
    for (size_t v = 0; v < n; ++v) sk_.encode(x + v * x_stride, codes + v * code_size());
  }
  void decode(const uint8_t* codes, size_t n, float* y, size_t y_stride) const override {
    if (y_stride == 0) y_stride = dim();
    std::vector<float> acc;
    for (size_t v = 0; v < n; ++v) {
      float* row = y + v * y_stride;
      std::memset(row, 0, sizeof(float) * dim());
      sk_.add_decoded(codes + v * code_size(), row, acc);
    }
  }

 private:
  Sketch sk_;
};

// tqp{b}: [tq{b-1} code][QJL sketch (m = d) of the residual x - decode(tq code)].
class TqpQuantizer final : public Quantizer {
 public:
  TqpQuantizer(const FormatSpec& spec, int dim, std::unique_ptr<Quantizer> mse, uint64_t seed)
      : Quantizer(spec, dim), mse_(std::move(mse)) {
    sk_.m = dim;
    sk_.d = dim;
    sk_.S = qjl_sketch_matrix(dim, dim, seed);
  }
  void encode(const float* x, size_t n, uint8_t* codes, size_t x_stride) const override {
    const int d = dim();
    if (x_stride == 0) x_stride = d;
    const size_t cm = mse_->code_size();
    std::vector<float> r(d);
    for (size_t v = 0; v < n; ++v) {
      const float* xv = x + v * x_stride;
      uint8_t* out = codes + v * code_size();
      mse_->encode(xv, 1, out);
      mse_->decode(out, 1, r.data());
      for (int i = 0; i < d; ++i) r[i] = xv[i] - r[i];
      sk_.encode(r.data(), out + cm);
    }
  }
  void decode(const uint8_t* codes, size_t n, float* y, size_t y_stride) const override {
    if (y_stride == 0) y_stride = dim();
    std::vector<float> acc;
    for (size_t v = 0; v < n; ++v) {
      const uint8_t* in = codes + v * code_size();
      float* row = y + v * y_stride;
      mse_->decode(in, 1, row);
      sk_.add_decoded(in + mse_->code_size(), row, acc);
    }
  }

 private:
  std::unique_ptr<Quantizer> mse_;
  Sketch sk_;
};

// rabitq1: RaBitQ's 1-bit code (Gao & Long, SIGMOD 2024) without the centroid: the signs of the
// randomly rotated vector z = R x, and the scale of its unbiased estimator
//   <q, x> ~= ||x|| <x_bar, R q> / <x_bar, o>,   x_bar = sign(z) / sqrt(d),  o = z / ||x||,
// i.e. x_hat = ||x||^2 / sum|z_i| * R^T sign(z). The bytes are tq1's (f32 scale + 1 plane, the
// same rotation R and the 1-bit codebook +-c1): only the stored scale differs,
//   scale = ||x||^2 / (c1 sum|z_i|) = ||x||^2 / <x, u>,   u = R^T (c1 sign(z)) (tq1's unscaled decode),
// so <x, x_hat> = ||x||^2 (the projection onto x is exact). Stored in bit-sliced tiles like tq1,
// so the cache and the AVX-512 kernels read it as they read tq1.
class RabitqQuantizer final : public Quantizer {
 public:
  RabitqQuantizer(const FormatSpec& spec, int dim, std::unique_ptr<Quantizer> tq1) : Quantizer(spec, dim), tq1_(std::move(tq1)) {}
  void encode(const float* x, size_t n, uint8_t* codes, size_t x_stride) const override {
    const int d = dim();
    if (x_stride == 0) x_stride = d;
    std::vector<float> y(d);
    for (size_t v = 0; v < n; ++v) {
      const float* xv = x + v * x_stride;
      uint8_t* out = codes + v * code_size();
      tq1_->encode(xv, 1, out);
      tq1_->decode(out, 1, y.data());
      float s;
      std::memcpy(&s, out, 4);
      double xy = 0, xx = 0;
      for (int i = 0; i < d; ++i) xy += double(xv[i]) * y[i], xx += double(xv[i]) * xv[i];
      // tq1's decode is s u: scale = s ||x||^2 / <x, s u>. Zero vectors keep 0, NaN keeps NaN.
      if (std::isfinite(s) && s != 0 && xy > 0) s = static_cast<float>(s * xx / xy);
      std::memcpy(out, &s, 4);
    }
  }
  void decode(const uint8_t* codes, size_t n, float* y, size_t y_stride) const override {
    tq1_->decode(codes, n, y, y_stride);
  }
  const Rotation* rotation() const override { return tq1_->rotation(); }
  const PassCodebooks* codebooks() const override { return tq1_->codebooks(); }

 private:
  std::unique_ptr<Quantizer> tq1_;
};

}  // namespace

StatusOr<std::unique_ptr<Quantizer>> make_rabitq_quantizer(const FormatSpec& spec, int dim, const QuantOptions& options) {
  TQKV_RETURN_IF_ERROR(validate_format(spec, dim));
  TQKV_ASSIGN_OR_RETURN(auto tq1, make_quantizer(FormatSpec{FormatKind::kTq, 1, 1}, dim, options));
  return std::unique_ptr<Quantizer>(new RabitqQuantizer(spec, dim, std::move(tq1)));
}

StatusOr<std::unique_ptr<Quantizer>> make_rotated_block_quantizer(const FormatSpec& spec, int dim,
                                                                  const QuantOptions& options) {
  TQKV_RETURN_IF_ERROR(validate_format(spec, dim));
  return std::unique_ptr<Quantizer>(
      new RotatedBlockQuantizer(spec, dim, llama_rotation_block(dim, options.value_stream)));
}

StatusOr<std::unique_ptr<Quantizer>> make_qjl_quantizer(const FormatSpec& spec, int dim, const QuantOptions& options) {
  TQKV_RETURN_IF_ERROR(validate_format(spec, dim));
  return std::unique_ptr<Quantizer>(new QjlQuantizer(spec, dim, options.seed));
}

StatusOr<std::unique_ptr<Quantizer>> make_tqp_quantizer(const FormatSpec& spec, int dim, const QuantOptions& options) {
  TQKV_RETURN_IF_ERROR(validate_format(spec, dim));
  TQKV_ASSIGN_OR_RETURN(auto mse, make_quantizer(FormatSpec{FormatKind::kTq, spec.bits - 1, 1}, dim, options));
  return std::unique_ptr<Quantizer>(new TqpQuantizer(spec, dim, std::move(mse), options.seed));
}

}  // namespace tqkv
