// KIVI-style per-token asymmetric group quantization (group 32, fp16 scale and min), the peer
// format for values. x[i] = min + scale * q[i], q in [0, 2^bits). The encoder quantizes with the
// fp16-rounded scale and min, so decode reproduces exactly what the encoder assumed.
// A group holding NaN/Inf stores scale = NaN; scale and min saturate at +-65504.
#include <cmath>
#include <cstring>

#include "core/half.h"
#include "format/blocks.h"
#include "quant/kernels.h"

namespace tqkv::kernels {

namespace {
float sat(float v) { return std::min(65504.0f, std::max(-65504.0f, v)); }
}  // namespace

void encode_kivi_scalar(int dim, int bits, const float* x, size_t n, size_t x_stride,
                        uint8_t* codes) {
  const int ng = (dim + kKiviGroup - 1) / kKiviGroup;
  const size_t gb = kivi_group_bytes(bits);
  const int qmax = (1 << bits) - 1;
  for (size_t v = 0; v < n; ++v) {
    const float* xv = x + v * x_stride;
    for (int g = 0; g < ng; ++g) {
      uint8_t* out = codes + (v * ng + g) * gb;
      const int cnt = std::min(kKiviGroup, dim - g * kKiviGroup);
      bool finite = true;
      float mn = xv[g * kKiviGroup], mx = mn;
      for (int i = 0; i < cnt; ++i) {
        const float e = xv[g * kKiviGroup + i];
        finite = finite && std::isfinite(e);
        mn = std::min(mn, e);
        mx = std::max(mx, e);
      }
      std::memset(out, 0, gb);
      uint16_t hs, hm;
      uint8_t q[kKiviGroup] = {};
      if (!finite) {
        hs = 0x7e00;
        hm = 0;
      } else {
        hm = float_to_half(sat(mn));
        hs = float_to_half(sat((mx - mn) / static_cast<float>(qmax)));
        const float m = half_to_float(hm), s = half_to_float(hs);
        const float inv = s > 0 ? 1.0f / s : 0.0f;
        for (int i = 0; i < cnt; ++i) {
          float t = std::nearbyint((xv[g * kKiviGroup + i] - m) * inv);
          t = std::min(static_cast<float>(qmax), std::max(0.0f, t));
          q[i] = static_cast<uint8_t>(t);
        }
      }
      std::memcpy(out, &hs, 2);
      std::memcpy(out + 2, &hm, 2);
      for (int j = 0; j < bits; ++j) {
        uint8_t* plane = out + 4 + 4 * j;
        for (int i = 0; i < kKiviGroup; ++i) plane[i / 8] |= static_cast<uint8_t>(((q[i] >> j) & 1) << (i % 8));
      }
    }
  }
}

void decode_kivi_scalar(int dim, int bits, const uint8_t* codes, size_t n, float* y,
                        size_t y_stride) {
  const int ng = (dim + kKiviGroup - 1) / kKiviGroup;
  const size_t gb = kivi_group_bytes(bits);
  for (size_t v = 0; v < n; ++v) {
    float* yv = y + v * y_stride;
    for (int g = 0; g < ng; ++g) {
      const uint8_t* in = codes + (v * ng + g) * gb;
      uint16_t hs, hm;
      std::memcpy(&hs, in, 2);
      std::memcpy(&hm, in + 2, 2);
      const float s = half_to_float(hs), m = half_to_float(hm);
      const int cnt = std::min(kKiviGroup, dim - g * kKiviGroup);
      for (int i = 0; i < cnt; ++i) {
        int q = 0;
        for (int j = 0; j < bits; ++j) q |= ((in[4 + 4 * j + i / 8] >> (i % 8)) & 1) << j;
        yv[g * kKiviGroup + i] = m + s * static_cast<float>(q);
      }
    }
  }
}

}  // namespace tqkv::kernels
