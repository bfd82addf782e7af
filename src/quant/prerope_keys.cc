// Pre-RoPE key codec (pk{b}): statistics, greedy bit allocation, reference encode/decode.
// Scalar and readable on purpose: this is the reference the fused attention is tested against.
// Layouts: docs/format.md ("pk{b}"); contract: include/tqkv/prerope_keys.h.
#include "tqkv/prerope_keys.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/half.h"
#include "quant/trellis.h"
#include "tqkv/codebook.h"

namespace tqkv {

uint16_t float_to_bf16_saturate(float f) {
  const uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN (sign dropped)
  const uint32_t sign = u & 0x80000000u;
  if ((u & 0x7fffffffu) == 0x7f800000u) return static_cast<uint16_t>((sign >> 16) | 0x7f7f);  // +-Inf saturates
  // Round to nearest even on the 16 dropped bits.
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  if ((rounded & 0x7f800000u) == 0x7f800000u) return static_cast<uint16_t>((sign >> 16) | 0x7f7f);
  return static_cast<uint16_t>(rounded >> 16);
}

float bf16_to_float(uint16_t b) { return f32_from_bits(static_cast<uint32_t>(b) << 16); }

double gaussian_lloyd_max_distortion(int bits) {
  if (bits <= 0) return 1.0;
  return lloyd_max(Density::kGaussian, std::min(bits, 8)).mse;
}

StatusOr<std::vector<uint8_t>> allocate_channel_bits(const std::vector<double>& variance, int total_bits) {
  const int d = static_cast<int>(variance.size());
  if (d < 1) return invalid_argument("bit allocation needs at least one channel");
  if (total_bits < 0 || total_bits > 8 * d)
    return invalid_argument("bit budget " + std::to_string(total_bits) + " outside 0.." + std::to_string(8 * d) +
                            " for " + std::to_string(d) + " channels");
  for (double v : variance)
    if (!std::isfinite(v) || v < 0) return invalid_argument("channel variances must be finite and >= 0");
  // D(b) on demand: the 7- and 8-bit codebooks take seconds to design and are rarely reached.
  double D[9];
  bool have[9] = {};
  auto dist = [&](int b) {
    if (!have[b]) {
      D[b] = gaussian_lloyd_max_distortion(b);
      have[b] = true;
    }
    return D[b];
  };
  std::vector<uint8_t> bits(d, 0);
  for (int step = 0; step < total_bits; ++step) {
    int best = -1;
    double best_gain = -1;
    for (int i = 0; i < d; ++i) {
      if (bits[i] >= 8) continue;
      if (variance[i] == 0 && best_gain >= 0) continue;  // gain 0 cannot beat a found channel
      const double gain = variance[i] * (dist(bits[i]) - dist(bits[i] + 1));
      if (gain > best_gain) {  // strict: ties go to the lowest index
        best_gain = gain;
        best = i;
      }
    }
    ++bits[best];  // total_bits <= 8 d guarantees a channel below 8 bits
  }
  return bits;
}

int prerope_total_bits(double avg_bits, int dim) {
  return static_cast<int>(std::lround(avg_bits * dim));
}

namespace {

Status check_basis(const ChannelBasis& b, size_t d) {
  if (static_cast<size_t>(b.dim) != d)
    return invalid_argument("channel basis is for head_dim " + std::to_string(b.dim) + ", not " + std::to_string(d));
  return validate_channel_basis(b);
}

// y = A^T x in double (A = the basis' analysis matrix, row-major d x d); no basis: y = x.
void to_basis(const ChannelBasis* basis, const float* x, int d, double* y) {
  const std::vector<float>* u = basis ? &basis->analysis : nullptr;
  if (u == nullptr) {
    for (int i = 0; i < d; ++i) y[i] = x[i];
    return;
  }
  for (int j = 0; j < d; ++j) y[j] = 0;
  for (int i = 0; i < d; ++i) {
    const double xi = x[i];
    const float* row = u->data() + static_cast<size_t>(i) * d;
    for (int j = 0; j < d; ++j) y[j] += static_cast<double>(row[j]) * xi;
  }
}

}  // namespace

StatusOr<PreRopeKeyCodec> PreRopeKeyCodec::from_stats(PreRopeKeyStats stats, bool norm_correction,
                                                      std::shared_ptr<const ChannelBasis> basis, bool trellis) {
  const size_t d = stats.mean.size();
  if (d < 1 || d > 65536) return invalid_argument("pre-RoPE key statistics need 1..65536 channels");
  if (stats.sd.size() != d || stats.bits.size() != d)
    return invalid_argument("pre-RoPE key statistics: mean, sd and bits must have the same length");
  int total = 0;
  for (size_t i = 0; i < d; ++i) {
    if (!std::isfinite(stats.mean[i])) return invalid_argument("pre-RoPE key statistics: non-finite mean");
    if (!std::isfinite(stats.sd[i]) || !(stats.sd[i] > 0))
      return invalid_argument("pre-RoPE key statistics: sd must be finite and > 0");
    if (stats.bits[i] > 8) return invalid_argument("pre-RoPE key statistics: more than 8 bits in a channel");
    total += stats.bits[i];
  }
  if (total < 1) return invalid_argument("pre-RoPE key statistics: no channel has a bit");
  if (basis) TQKV_RETURN_IF_ERROR(check_basis(*basis, d));
  PreRopeKeyCodec c;
  c.basis_ = std::move(basis);
  c.stats_ = std::move(stats);
  c.total_bits_ = total;
  c.norm_correction_ = norm_correction;
  if (trellis) {
    auto g = std::make_shared<TrellisGroups>();
    for (size_t i = 0; i < d; ++i)
      if (c.stats_.bits[i] >= 1 && c.stats_.bits[i] <= 4) g->group[c.stats_.bits[i]].push_back(static_cast<int>(i));
    c.trellis_ = std::move(g);
  }
  for (size_t i = 0; i < d; ++i) {  // only the widths in use (8-bit design takes seconds)
    const int b = c.stats_.bits[i];
    if (b > 0 && c.codebook_[b] == nullptr) c.codebook_[b] = &lloyd_max(Density::kGaussian, b);
  }
  return c;
}

StatusOr<PreRopeKeyCodec> PreRopeKeyCodec::fit(const float* x, size_t n, int dim, size_t stride, double avg_bits,
                                               bool norm_correction,
                                               std::shared_ptr<const ChannelBasis> basis, bool trellis) {
  if (dim < 1 || dim > 65536) return invalid_argument("pre-RoPE keys need head_dim in 1..65536");
  if (n < 1 || x == nullptr) return invalid_argument("pre-RoPE key statistics need at least one vector");
  if (!std::isfinite(avg_bits)) return invalid_argument("average bits must be finite");
  const int total = prerope_total_bits(avg_bits, dim);
  if (total < 1 || total > 8 * dim)
    return invalid_argument("average bits " + std::to_string(avg_bits) + " give " + std::to_string(total) +
                            " bits per vector; need 1.." + std::to_string(8 * dim));
  if (stride == 0) stride = static_cast<size_t>(dim);
  std::vector<float> rotated;  // with a basis: the calibration rows in the basis, y = A^T x
  if (basis) {
    TQKV_RETURN_IF_ERROR(check_basis(*basis, static_cast<size_t>(dim)));
    rotated.resize(n * static_cast<size_t>(dim));
    std::vector<double> y(dim);
    for (size_t r = 0; r < n; ++r) {
      to_basis(basis.get(), x + r * stride, dim, y.data());
      for (int i = 0; i < dim; ++i) rotated[r * dim + i] = static_cast<float>(y[i]);  // NaN/Inf stay non-finite
    }
    x = rotated.data();
    stride = static_cast<size_t>(dim);
  }
  std::vector<double> sum(dim, 0.0), sum2(dim, 0.0);
  size_t used = 0;
  for (size_t r = 0; r < n; ++r) {
    const float* row = x + r * stride;
    bool finite = true;
    for (int i = 0; i < dim; ++i) finite = finite && std::isfinite(row[i]);
    if (!finite) continue;
    for (int i = 0; i < dim; ++i) sum[i] += row[i];
    ++used;
  }
  PreRopeKeyStats st;
  st.mean.assign(dim, 0.0f);
  st.sd.assign(dim, 1.0f);
  std::vector<double> var(dim, 1.0);
  if (used > 0) {
    std::vector<double> mean(dim);
    for (int i = 0; i < dim; ++i) mean[i] = sum[i] / static_cast<double>(used);
    for (size_t r = 0; r < n; ++r) {
      const float* row = x + r * stride;
      bool finite = true;
      for (int i = 0; i < dim; ++i) finite = finite && std::isfinite(row[i]);
      if (!finite) continue;
      for (int i = 0; i < dim; ++i) {
        const double e = row[i] - mean[i];
        sum2[i] += e * e;
      }
    }
    double max_sd = 0;
    for (int i = 0; i < dim; ++i) {
      st.mean[i] = static_cast<float>(mean[i]);
      max_sd = std::max(max_sd, std::sqrt(sum2[i] / static_cast<double>(used)));
    }
    for (int i = 0; i < dim; ++i) {
      double sd = std::sqrt(sum2[i] / static_cast<double>(used));
      if (max_sd == 0) sd = 1.0;
      else sd = std::max(sd, 1e-6 * max_sd);
      sd = std::max(sd, static_cast<double>(std::numeric_limits<float>::min()));
      st.sd[i] = static_cast<float>(std::min(sd, static_cast<double>(std::numeric_limits<float>::max())));
      var[i] = static_cast<double>(st.sd[i]) * st.sd[i];
    }
  }
  TQKV_ASSIGN_OR_RETURN(st.bits, allocate_channel_bits(var, total));
  return from_stats(std::move(st), norm_correction, std::move(basis), trellis);
}

double PreRopeKeyCodec::bits_per_element(int64_t n_tokens) const {
  if (n_tokens < 1) n_tokens = 1;
  const double bytes = static_cast<double>(n_tokens) * code_size() + stats_bytes(dim());
  return 8.0 * bytes / (static_cast<double>(n_tokens) * dim());
}

void PreRopeKeyCodec::encode(const float* x, size_t n, uint8_t* codes, size_t x_stride) const {
  const int d = dim();
  if (x_stride == 0) x_stride = static_cast<size_t>(d);
  const size_t cs = code_size();
  std::vector<double> z(d), y(d);
  for (size_t r = 0; r < n; ++r) {
    const float* row = x + r * x_stride;
    uint8_t* out = codes + r * cs;
    std::memset(out, 0, cs);
    bool finite = true;
    for (int i = 0; i < d; ++i) finite = finite && std::isfinite(row[i]);
    to_basis(basis_.get(), row, d, y.data());  // y = A^T x (x itself without a basis)
    double zz = 0;  // ||z||^2, z = (y - mu) / sd (whitened)
    for (int i = 0; i < d; ++i) {
      z[i] = (y[i] - stats_.mean[i]) / stats_.sd[i];
      zz += z[i] * z[i];
    }
    if (!finite || !std::isfinite(zz)) {
      const uint16_t nan = 0x7fc0;
      std::memcpy(out, &nan, 2);
      continue;
    }
    if (zz == 0) continue;  // scale 0, codes 0: decodes to the mean
    const double sc = std::sqrt(zz / d);  // RMS of z: u = z / sc has ||u||^2 = d
    uint8_t* stream = out + 2;
    // The code of every coded channel: Lloyd-Max (#{j : u > t[j]}) or, for the trellis groups,
    // the group's Viterbi search; lv[i] = the decoded level.
    std::vector<uint32_t> code(d, 0);
    std::vector<double> lv(d, 0.0);
    for (int i = 0; i < d; ++i) {
      const int b = stats_.bits[i];
      if (b == 0 || (trellis_ && b <= 4)) continue;  // trellis groups below
      const Codebook& cb = *codebook_[b];
      const float u = static_cast<float>(z[i] / sc);
      uint32_t q = 0;
      for (float t : cb.thresholds) q += u > t ? 1u : 0u;
      code[i] = q;
      lv[i] = cb.levels[q];
    }
    for (int k = 1; k <= 4 && trellis_; ++k) {
      const std::vector<int>& g = trellis_->group[k];
      if (g.empty()) continue;
      const int n = static_cast<int>(g.size());
      std::vector<float> u(n), zh(n);
      std::vector<uint8_t> gc(n);
      for (int a = 0; a < n; ++a) u[a] = static_cast<float>(z[g[a]] / sc);
      trellis_search(u.data(), n, k, gc.data());
      trellis_reconstruct(gc.data(), n, k, zh.data());
      for (int a = 0; a < n; ++a) {
        code[g[a]] = gc[a];
        lv[g[a]] = zh[a];
      }
    }
    double cc = 0;        // ||c||^2 of the chosen levels (channel order)
    uint32_t offset = 0;  // stream bit of channel i's code: bits[0] + ... + bits[i-1]
    for (int i = 0; i < d; ++i) {
      const int b = stats_.bits[i];
      if (b == 0) continue;
      cc += lv[i] * lv[i];
      for (int k = 0; k < b; ++k) {
        const uint32_t bit = offset + k;
        if ((code[i] >> k) & 1u) stream[bit / 8] |= static_cast<uint8_t>(1u << (bit % 8));
      }
      offset += b;
    }
    // Norm correction: decoded whitened vector s * c has norm ||z||. Without: s = RMS of z.
    const double s = norm_correction_ ? std::sqrt(zz / cc) : sc;
    const uint16_t sb = float_to_bf16_saturate(static_cast<float>(s));
    std::memcpy(out, &sb, 2);
  }
}

void PreRopeKeyCodec::decode(const uint8_t* codes, size_t n, float* y, size_t y_stride) const {
  const int d = dim();
  if (y_stride == 0) y_stride = static_cast<size_t>(d);
  const size_t cs = code_size();
  std::vector<float> yb(basis_ ? d : 0);  // with a basis: y_hat, then out = S y_hat
  for (size_t r = 0; r < n; ++r) {
    const uint8_t* in = codes + r * cs;
    float* out = basis_ ? yb.data() : y + r * y_stride;
    uint16_t sb;
    std::memcpy(&sb, in, 2);
    const float s = bf16_to_float(sb);
    const uint8_t* stream = in + 2;
    thread_local std::vector<uint32_t> codes_of;  // trellis: every channel's code, read in channel order
    if (trellis_) codes_of.assign(d, 0);
    uint32_t offset = 0;
    for (int i = 0; i < d; ++i) {
      const int b = stats_.bits[i];
      if (b == 0) {
        out[i] = std::isnan(s) ? s : stats_.mean[i];
        continue;
      }
      uint32_t code = 0;
      for (int k = 0; k < b; ++k) {
        const uint32_t bit = offset + k;
        code |= static_cast<uint32_t>((stream[bit / 8] >> (bit % 8)) & 1u) << k;
      }
      offset += b;
      if (trellis_ && b <= 4) {  // the groups below
        codes_of[i] = code;
        continue;
      }
      const float lv = codebook_[b]->levels[code];
      out[i] = stats_.mean[i] + (s * stats_.sd[i]) * lv;
    }
    for (int k = 1; k <= 4 && trellis_; ++k) {  // trellis groups: the level is T[window of the group's codes]
      const std::vector<int>& g = trellis_->group[k];
      if (g.empty()) continue;
      const int n = static_cast<int>(g.size());
      thread_local std::vector<uint8_t> gc;
      thread_local std::vector<float> zh;
      gc.resize(n);
      zh.resize(n);
      for (int a = 0; a < n; ++a) gc[a] = static_cast<uint8_t>(codes_of[g[a]]);
      trellis_reconstruct(gc.data(), n, k, zh.data());
      for (int a = 0; a < n; ++a) out[g[a]] = stats_.mean[g[a]] + (s * stats_.sd[g[a]]) * zh[a];
    }
    if (basis_) {  // x_hat_i = sum_j S[i][j] y_hat_j (S = synthesis), summed in double in index order
      float* dst = y + r * y_stride;
      for (int i = 0; i < d; ++i) {
        const float* urow = basis_->synthesis.data() + static_cast<size_t>(i) * d;
        double acc = 0;
        for (int j = 0; j < d; ++j) acc += static_cast<double>(urow[j]) * yb[j];
        dst[i] = static_cast<float>(acc);
      }
    }
  }
}

void PreRopeKeyCodec::write_stats(uint8_t* out) const {
  const size_t d = static_cast<size_t>(dim());
  std::memcpy(out, stats_.mean.data(), 4 * d);
  std::memcpy(out + 4 * d, stats_.sd.data(), 4 * d);
  std::memcpy(out + 8 * d, stats_.bits.data(), d);
}

StatusOr<PreRopeKeyStats> PreRopeKeyCodec::read_stats(const uint8_t* data, size_t size, int dim) {
  if (dim < 1 || dim > 65536) return invalid_argument("pre-RoPE key statistics need head_dim in 1..65536");
  if (data == nullptr || size != stats_bytes(dim))
    return corrupt("pre-RoPE key statistics block is " + std::to_string(size) + " bytes, expected " +
                   std::to_string(stats_bytes(dim)) + " for head_dim " + std::to_string(dim));
  const size_t d = static_cast<size_t>(dim);
  PreRopeKeyStats st;
  st.mean.resize(d);
  st.sd.resize(d);
  st.bits.resize(d);
  std::memcpy(st.mean.data(), data, 4 * d);
  std::memcpy(st.sd.data(), data + 4 * d, 4 * d);
  std::memcpy(st.bits.data(), data + 8 * d, d);
  auto checked = from_stats(st);
  if (!checked.ok()) return corrupt("pre-RoPE key statistics block: " + checked.status().message());
  return st;
}

}  // namespace tqkv
