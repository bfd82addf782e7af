// The reference q8_0 / q4_0 block quantization (format/blocks.h).
#include "format/blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/half.h"

namespace tqkv {

void quantize_block_q8_0(const float* x, int cnt, BlockQ8_0* out, Rounding rounding) {
  float vals[kQ8Block] = {};
  bool finite = true;
  float amax = 0;
  for (int i = 0; i < cnt; ++i) {
    vals[i] = x[i];
    finite = finite && std::isfinite(vals[i]);
    amax = std::max(amax, std::fabs(vals[i]));
  }
  if (!finite) {
    out->d = 0x7e00;  // fp16 NaN
    std::memset(out->qs, 0, sizeof(out->qs));
    return;
  }
  float d = amax / 127.0f;
  if (d > 65504.0f) d = 65504.0f;
  const float id = d > 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < kQ8Block; ++i) {
    float q = rounding == Rounding::kNearestEven ? std::nearbyint(vals[i] * id) : std::round(vals[i] * id);
    q = std::min(127.0f, std::max(-127.0f, q));
    out->qs[i] = static_cast<int8_t>(q);
  }
  out->d = float_to_half(d);
}

void quantize_block_q4_0(const float* x, int cnt, BlockQ4_0* out) {
  float vals[kQ4Block] = {};
  bool finite = true;
  float amax = 0, mx = 0;
  for (int i = 0; i < cnt; ++i) {
    vals[i] = x[i];
    finite = finite && std::isfinite(vals[i]);
    if (std::fabs(vals[i]) > amax) { amax = std::fabs(vals[i]); mx = vals[i]; }
  }
  if (!finite) {
    out->d = 0x7e00;
    std::memset(out->qs, 0x88, sizeof(out->qs));
    return;
  }
  float d = mx / -8.0f;
  if (d > 65504.0f) d = 65504.0f;
  if (d < -65504.0f) d = -65504.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  uint8_t q[kQ4Block];
  for (int i = 0; i < kQ4Block; ++i) {
    float t = std::floor(vals[i] * id + 8.5f);
    t = std::min(15.0f, std::max(0.0f, t));
    q[i] = static_cast<uint8_t>(t);
  }
  for (int j = 0; j < 16; ++j) out->qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  out->d = float_to_half(d);
}

namespace {
// Index of the level nearest to x (ties to the upper level, as ggml's best_index_int8).
int nearest_iq4_level(float x) {
  const int8_t* v = kIq4NlValues;
  if (x <= v[0]) return 0;
  if (x >= v[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (x < v[mid]) hi = mid; else lo = mid;
  }
  return x - v[hi - 1] < v[hi] - x ? hi - 1 : hi;
}
}  // namespace

void quantize_block_iq4_nl(const float* x, int cnt, BlockIq4Nl* out, int ntry) {
  float xb[kIq4NlBlock] = {}, w[kIq4NlBlock];
  bool finite = true;
  float amax = 0, mx = 0;
  for (int i = 0; i < cnt; ++i) {
    xb[i] = x[i];
    finite = finite && std::isfinite(xb[i]);
  }
  std::memset(out->qs, 0, sizeof(out->qs));
  if (!finite) {
    out->d = 0x7e00;
    return;
  }
  for (int j = 0; j < kIq4NlBlock; ++j) {
    w[j] = xb[j] * xb[j];
    if (std::fabs(xb[j]) > amax) { amax = std::fabs(xb[j]); mx = xb[j]; }
  }
  if (amax < 1e-15f) {  // ggml's GROUP_MAX_EPS
    out->d = float_to_half(0.0f);
    return;
  }
  uint8_t L[kIq4NlBlock];
  float d = ntry > 0 ? -mx / kIq4NlValues[0] : mx / kIq4NlValues[0];
  float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int j = 0; j < kIq4NlBlock; ++j) {
    L[j] = static_cast<uint8_t>(nearest_iq4_level(id * xb[j]));
    const float q = kIq4NlValues[L[j]];
    sumqx += w[j] * q * xb[j];
    sumq2 += w[j] * q * q;
  }
  const float d0 = d;
  d = sumqx / sumq2;
  // |x| > ~1e11: the weighted sums (w = x^2) overflow and llama.cpp would store NaN; keep d0.
  if (!std::isfinite(d)) d = d0;
  float best = d * sumqx;
  for (int itry = -ntry; itry <= ntry; ++itry) {
    id = (itry + kIq4NlValues[0]) / mx;
    sumqx = sumq2 = 0;
    for (int j = 0; j < kIq4NlBlock; ++j) {
      const float q = kIq4NlValues[nearest_iq4_level(id * xb[j])];
      sumqx += w[j] * q * xb[j];
      sumq2 += w[j] * q * q;
    }
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  if (ntry > 0) {
    const float idf = d != 0 ? 1 / d : 0;
    for (int j = 0; j < kIq4NlBlock; ++j) L[j] = static_cast<uint8_t>(nearest_iq4_level(idf * xb[j]));
  }
  if (d > 65504.0f) d = 65504.0f;
  if (d < -65504.0f) d = -65504.0f;
  for (int j = 0; j < 16; ++j) out->qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  out->d = float_to_half(d);
}

void dequantize_block_iq4_nl(const BlockIq4Nl& b, int cnt, float* y) {
  const float d = half_to_float(b.d);
  for (int i = 0; i < cnt; ++i) {
    const int q = i < 16 ? (b.qs[i] & 15) : (b.qs[i - 16] >> 4);
    y[i] = d * static_cast<float>(kIq4NlValues[q]);
  }
}

void dequantize_block_q8_0(const BlockQ8_0& b, int cnt, float* y) {
  const float d = half_to_float(b.d);
  for (int i = 0; i < cnt; ++i) y[i] = d * static_cast<float>(b.qs[i]);
}

void dequantize_block_q4_0(const BlockQ4_0& b, int cnt, float* y) {
  const float d = half_to_float(b.d);
  for (int i = 0; i < cnt; ++i) {
    const int q = i < 16 ? (b.qs[i] & 15) : (b.qs[i - 16] >> 4);
    y[i] = d * static_cast<float>(q - 8);
  }
}

}  // namespace tqkv
