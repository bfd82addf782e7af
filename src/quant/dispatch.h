// Picks the kernel of a format for a SIMD level (internal): the format table's row
// (format/format_table.h) holds the kernels per level; these helpers only index it.
#pragma once

#include "quant/kernels.h"
#include "tqkv/format.h"

namespace tqkv::dispatch {

// kind: a rotated format (rvq, tq).
kernels::EncodeRotatedFn encode_rotated(FormatKind kind, SimdLevel level);
kernels::DecodeRotatedFn decode_rotated(FormatKind kind, SimdLevel level);
// kind: a block format (f32, f16, q8_0, q4_0, kivi).
kernels::EncodeBlockFn encode_block(FormatKind kind, SimdLevel level);
kernels::DecodeBlockFn decode_block(FormatKind kind, SimdLevel level);

}  // namespace tqkv::dispatch
