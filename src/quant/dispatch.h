// Picks the kernel of each format for a SIMD level (internal).
#pragma once

#include "quant/kernels.h"
#include "tqkv/format.h"

namespace tqkv::dispatch {

kernels::EncodeRotatedFn encode_rotated(SimdLevel level);
kernels::DecodeRotatedFn decode_rotated(SimdLevel level);
// kind: kF16, kQ8_0, kQ4_0 or kKivi.
kernels::EncodeBlockFn encode_block(FormatKind kind, SimdLevel level);
kernels::DecodeBlockFn decode_block(FormatKind kind, SimdLevel level);

}  // namespace tqkv::dispatch
