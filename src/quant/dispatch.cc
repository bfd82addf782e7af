#include "quant/dispatch.h"

#include "core/check.h"

namespace tqkv::dispatch {

using namespace kernels;

EncodeRotatedFn encode_rotated(SimdLevel level) {
  switch (level) {
    case SimdLevel::kAvx512: return encode_rotated_avx512;
    case SimdLevel::kAvx2: return encode_rotated_avx2;
    default: return encode_rotated_scalar;
  }
}

DecodeRotatedFn decode_rotated(SimdLevel level) {
  switch (level) {
    case SimdLevel::kAvx512: return decode_rotated_avx512;
    case SimdLevel::kAvx2: return decode_rotated_avx2;
    default: return decode_rotated_scalar;
  }
}

#define TQKV_PICK(fmt, dir)                                              \
  switch (level) {                                                       \
    case SimdLevel::kAvx512: return dir##_##fmt##_avx512;                \
    case SimdLevel::kAvx2: return dir##_##fmt##_avx2;                    \
    default: return dir##_##fmt##_scalar;                                \
  }

EncodeBlockFn encode_block(FormatKind kind, SimdLevel level) {
  switch (kind) {
    case FormatKind::kF16: TQKV_PICK(f16, encode)
    case FormatKind::kQ8_0: TQKV_PICK(q8_0, encode)
    case FormatKind::kQ4_0: TQKV_PICK(q4_0, encode)
    case FormatKind::kKivi: TQKV_PICK(kivi, encode)
    default: break;
  }
  TQKV_CHECK(false);
  return nullptr;
}

DecodeBlockFn decode_block(FormatKind kind, SimdLevel level) {
  switch (kind) {
    case FormatKind::kF16: TQKV_PICK(f16, decode)
    case FormatKind::kQ8_0: TQKV_PICK(q8_0, decode)
    case FormatKind::kQ4_0: TQKV_PICK(q4_0, decode)
    case FormatKind::kKivi: TQKV_PICK(kivi, decode)
    default: break;
  }
  TQKV_CHECK(false);
  return nullptr;
}

}  // namespace tqkv::dispatch
