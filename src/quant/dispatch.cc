#include "quant/dispatch.h"

#include "core/check.h"
#include "format/format_table.h"

namespace tqkv::dispatch {

namespace {
template <typename Fn>
Fn pick(const Fn (&fns)[3], SimdLevel level) {
  const Fn f = fns[static_cast<int>(level)];
  TQKV_CHECK(f != nullptr);
  return f;
}
}  // namespace

kernels::EncodeRotatedFn encode_rotated(FormatKind kind, SimdLevel level) {
  return pick(format::row(kind).encode_rotated, level);
}
kernels::DecodeRotatedFn decode_rotated(FormatKind kind, SimdLevel level) {
  return pick(format::row(kind).decode_rotated, level);
}
kernels::EncodeBlockFn encode_block(FormatKind kind, SimdLevel level) { return pick(format::row(kind).encode, level); }
kernels::DecodeBlockFn decode_block(FormatKind kind, SimdLevel level) { return pick(format::row(kind).decode, level); }

}  // namespace tqkv::dispatch
