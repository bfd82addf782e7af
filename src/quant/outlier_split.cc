// The TurboQuant outlier split (tqo{h}x{l}): channel selection, the per-vector reference
// encode/decode and the mask block. Readable on purpose: each channel set is coded by the project's
// tq{b} quantizer (src/quant/rotated_quantizer.cc, the TurboQuant-MSE reference), and this file
// only splits, repacks (f32 scale -> bf16) and merges. Layout: docs/format.md ("tqo{h}x{l}");
// contract: include/tqkv/outlier_split.h.
#include "tqkv/outlier_split.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "core/check.h"
#include "core/random.h"
#include "tqkv/prerope_keys.h"  // float_to_bf16_saturate, bf16_to_float

namespace tqkv {

namespace {

// Seed salts of the two sets' rotations: seed_set = SplitMix64(seed ^ salt).next().
constexpr uint64_t kOutlierSalt = 0x6f75746c69657273ull;  // "outliers"
constexpr uint64_t kRegularSalt = 0x726567756c617273ull;  // "regulars"

class OutlierSplitQuantizer final : public Quantizer {
 public:
  OutlierSplitQuantizer(const FormatSpec& spec, int dim, std::vector<int> idx_o, std::vector<int> idx_r,
                        std::unique_ptr<Quantizer> q_o, std::unique_ptr<Quantizer> q_r)
      : Quantizer(spec, dim), idx_{std::move(idx_o), std::move(idx_r)}, q_{std::move(q_o), std::move(q_r)} {
    for (int g = 0; g < 2; ++g) planes_[g] = q_[g] ? q_[g]->code_size() - sizeof(float) : 0;
    // The table's code size (format_table.cc, size_tqo) is the two scales plus both sets' planes.
    TQKV_CHECK(4 + planes_[0] + planes_[1] == code_size());
  }

  // Per vector: [bf16 scale_O][bf16 scale_R][outlier planes][regular planes]. Each set's bytes are
  // its tq code with the f32 scale replaced by its bf16 rounding. A vector with NaN/Inf anywhere
  // stores NaN in both scales (decodes to all-NaN, as tq does).
  void encode(const float* x, size_t n, uint8_t* codes, size_t x_stride) const override {
    const int d = dim();
    if (x_stride == 0) x_stride = static_cast<size_t>(d);
    const size_t cs = code_size();
    std::vector<float> sub;
    std::vector<uint8_t> tc;
    for (size_t r = 0; r < n; ++r) {
      const float* row = x + r * x_stride;
      uint8_t* out = codes + r * cs;
      std::memset(out, 0, cs);
      bool finite = true;
      for (int i = 0; i < d; ++i) finite = finite && std::isfinite(row[i]);
      size_t off = 4;
      for (int g = 0; g < 2; ++g) {
        const std::vector<int>& idx = idx_[g];
        uint16_t sb = finite ? 0 : 0x7fc0;
        if (q_[g]) {
          sub.resize(idx.size());
          for (size_t j = 0; j < idx.size(); ++j) sub[j] = row[idx[j]];
          tc.resize(q_[g]->code_size());
          q_[g]->encode(sub.data(), 1, tc.data());
          float s;
          std::memcpy(&s, tc.data(), sizeof s);
          if (finite) sb = float_to_bf16_saturate(s);
          else std::memset(tc.data() + sizeof(float), 0, planes_[g]);
          std::memcpy(out + off, tc.data() + sizeof(float), planes_[g]);
        }
        std::memcpy(out + 2 * g, &sb, 2);
        off += planes_[g];
      }
    }
  }

  // Set by set, all n vectors at once (one tq decode call per set: attention decodes blocks of 64).
  void decode(const uint8_t* codes, size_t n, float* y, size_t y_stride) const override {
    const int d = dim();
    if (y_stride == 0) y_stride = static_cast<size_t>(d);
    const size_t cs = code_size();
    std::vector<float> sub;
    std::vector<uint8_t> tc;
    size_t off = 4;  // the set's planes within a tqo code
    for (int g = 0; g < 2; ++g) {
      if (!q_[g]) continue;
      const size_t tcs = q_[g]->code_size(), ng = idx_[g].size();
      tc.resize(n * tcs);
      for (size_t r = 0; r < n; ++r) {  // the set's tq code: f32 of the bf16 scale, then its planes
        const uint8_t* in = codes + r * cs;
        uint16_t sb;
        std::memcpy(&sb, in + 2 * g, 2);
        const float s = bf16_to_float(sb);
        std::memcpy(&tc[r * tcs], &s, sizeof s);
        std::memcpy(&tc[r * tcs + sizeof(float)], in + off, planes_[g]);
      }
      off += planes_[g];
      sub.resize(n * ng);
      q_[g]->decode(tc.data(), n, sub.data());
      for (size_t r = 0; r < n; ++r)
        for (size_t j = 0; j < ng; ++j) y[r * y_stride + idx_[g][j]] = sub[r * ng + j];
    }
  }

 private:
  std::vector<int> idx_[2];           // channel indices of the outlier set (0) and the rest (1), ascending
  std::unique_ptr<Quantizer> q_[2];   // tq{h} / tq{l} of each set (null for an empty set)
  size_t planes_[2] = {};             // bytes of each set's bit-planes
};

}  // namespace

int outlier_channel_count(int dim) { return dim < 1 ? 0 : 2 * ((dim + 4) / 8); }

StatusOr<std::vector<uint8_t>> select_outlier_channels(const float* x, size_t n, int dim, size_t stride, int count) {
  if (dim < 1 || dim > 65536) return invalid_argument("outlier channels need head_dim in 1..65536");
  if (n < 1 || x == nullptr) return invalid_argument("outlier channel selection needs at least one vector");
  if (count < 0) count = outlier_channel_count(dim);
  if (count > dim) return invalid_argument("cannot pick " + std::to_string(count) + " of " + std::to_string(dim) + " channels");
  if (stride == 0) stride = static_cast<size_t>(dim);
  std::vector<double> ms(dim, 0.0);  // sum of x_i^2 over the finite rows
  for (size_t r = 0; r < n; ++r) {
    const float* row = x + r * stride;
    bool finite = true;
    for (int i = 0; i < dim; ++i) finite = finite && std::isfinite(row[i]);
    if (!finite) continue;
    for (int i = 0; i < dim; ++i) ms[i] += static_cast<double>(row[i]) * row[i];
  }
  std::vector<int> order(dim);
  std::iota(order.begin(), order.end(), 0);
  // Largest mean square first; equal ones by index (a stable sort keeps the index order).
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return ms[a] > ms[b]; });
  std::vector<uint8_t> mask(dim, 0);
  for (int j = 0; j < count; ++j) mask[order[j]] = 1;
  return mask;
}

StatusOr<std::unique_ptr<Quantizer>> make_outlier_split_quantizer(const FormatSpec& spec, int dim,
                                                                  const QuantOptions& options,
                                                                  const std::vector<uint8_t>& mask) {
  if (spec.kind != FormatKind::kTqo) return invalid_argument(spec.name() + " is not a tqo{h}x{l} format");
  TQKV_RETURN_IF_ERROR(validate_format(spec, dim));
  if (mask.size() != static_cast<size_t>(dim))
    return invalid_argument("outlier mask has " + std::to_string(mask.size()) + " entries, head_dim is " +
                            std::to_string(dim));
  std::vector<int> idx[2];
  for (int i = 0; i < dim; ++i) {
    if (mask[i] > 1) return invalid_argument("outlier mask entries must be 0 or 1");
    idx[mask[i] ? 0 : 1].push_back(i);
  }
  if (static_cast<int>(idx[0].size()) != outlier_channel_count(dim))
    return invalid_argument("outlier mask has " + std::to_string(idx[0].size()) + " channels set, " + spec.name() +
                            " at head_dim " + std::to_string(dim) + " needs " +
                            std::to_string(outlier_channel_count(dim)));
  std::unique_ptr<Quantizer> q[2];
  const int bits[2] = {spec.bits, spec.passes};
  const uint64_t salt[2] = {kOutlierSalt, kRegularSalt};
  for (int g = 0; g < 2; ++g) {
    if (idx[g].empty()) continue;
    QuantOptions o = options;
    o.seed = SplitMix64(options.seed ^ salt[g]).next();
    TQKV_ASSIGN_OR_RETURN(q[g], make_quantizer(FormatSpec{FormatKind::kTq, bits[g], 1}, static_cast<int>(idx[g].size()), o));
  }
  return std::unique_ptr<Quantizer>(
      new OutlierSplitQuantizer(spec, dim, std::move(idx[0]), std::move(idx[1]), std::move(q[0]), std::move(q[1])));
}

void write_outlier_mask(const std::vector<uint8_t>& mask, uint8_t* out) {
  std::memset(out, 0, outlier_mask_bytes(static_cast<int>(mask.size())));
  for (size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) out[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
}

StatusOr<std::vector<uint8_t>> read_outlier_mask(const uint8_t* data, size_t size, int dim) {
  if (dim < 1 || dim > 65536) return invalid_argument("outlier mask needs head_dim in 1..65536");
  if (data == nullptr || size != outlier_mask_bytes(dim))
    return corrupt("outlier mask block is " + std::to_string(size) + " bytes, expected " +
                   std::to_string(outlier_mask_bytes(dim)) + " for head_dim " + std::to_string(dim));
  std::vector<uint8_t> mask(dim);
  int set = 0;
  for (size_t i = 0; i < size * 8; ++i) {
    const int bit = data[i / 8] >> (i % 8) & 1;
    if (i >= static_cast<size_t>(dim)) {
      if (bit) return corrupt("outlier mask block has bits set past head_dim " + std::to_string(dim));
      continue;
    }
    mask[i] = static_cast<uint8_t>(bit);
    set += bit;
  }
  if (set != outlier_channel_count(dim))
    return corrupt("outlier mask block has " + std::to_string(set) + " channels set, expected " +
                   std::to_string(outlier_channel_count(dim)) + " at head_dim " + std::to_string(dim));
  return mask;
}

}  // namespace tqkv
