// The format table (the ggml "type traits" idea): ONE row per FormatKind holding every property of
// a format. Every decision that depends on the format reads its row instead of switching on the
// kind: names and parsing (format.cc), code sizes and bits per element, the quantizer and its
// kernels per SIMD level (quant/quantizer.cc, quant/dispatch.cc), the cache's storage (per-vector
// or bit-sliced tiles, pre-RoPE keys; cache/kv_cache.cc), the attention kernels that read codes
// directly (attention/attention.cc), the seed's method names (cache_config_from_method and the
// CLI) and the GGUF weight types sharing a block layout (runtime/gguf.cc).
// Adding a format: one row here plus its kernels (docs/design.md, "Adding a format").
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "quant/kernels.h"
#include "tqkv/format.h"
#include "tqkv/quantizer.h"
#include "tqkv/simd.h"

namespace tqkv::format {

struct FormatRow {
  FormatKind kind;
  const char* name;      // fixed name ("q8_0") or the prefix of a parametrized one ("rvq")
  const char* pattern;   // how names are spelled: "q8_0", "rvq{b}x{p}", "tq{b}", "kivi{b}"
  int fixed_bits;        // bits of an unparametrized format (32, 16, 8, 4); 0 = bits in the name
  unsigned bits_mask;    // parametrized: allowed bits b have bit (1 << b) set
  bool has_passes;       // the name carries a pass count ("rvq{b}x{p}")
  int max_passes;        // 1 unless has_passes
  bool rotated;          // stored in the Hadamard-rotated domain (query/output rotate instead)
  bool laplacian_passes; // rotated: always the Laplacian pass design (tq), whatever QuantOptions says
  // Bytes of one encoded vector of d elements, everything included (docs/format.md).
  size_t (*code_size)(const FormatSpec& spec, size_t d);
  // Bit-planes per vector (rvq/tq: passes * bits, kivi: bits per group); 0 for byte formats.
  int (*planes)(const FormatSpec& spec);
  // The cache stores it in bit-sliced tiles (tqkv/kv_view.h) when the passes have <= tile_max_bits
  // bits (and the codebooks are affine in their bits); 0 = always per vector.
  int tile_max_bits;
  bool pre_rope;         // keys are stored before RoPE (attention applies it on the fly)
  bool f16_rows;         // codes are plain f16 rows: attention's f16 kernels read them directly
  int ggml_type;         // GGUF/ggml weight type with the same block layout (-1: none)
  // Reference (scalar) and SIMD kernels, indexed by SimdLevel. Block formats fill encode/decode;
  // rotated formats encode_rotated/decode_rotated (their kernels take the rotation and codebooks).
  kernels::EncodeBlockFn encode[3];
  kernels::DecodeBlockFn decode[3];
  kernels::EncodeRotatedFn encode_rotated[3];
  kernels::DecodeRotatedFn decode_rotated[3];
  // Formats with their own (stateful) quantizer class: the peers (src/quant/peers.h). Null: the
  // block kernels above (BlockQuantizer) or RotatedQuantizer (rotated rows).
  StatusOr<std::unique_ptr<Quantizer>> (*make)(const FormatSpec& spec, int dim, const QuantOptions& options) = nullptr;
  int max_dim = 65536;   // largest head_dim (qjl/tqp hold an m x d projection matrix per head)

  // True when a vector of this spec is stored in bit-sliced tiles (if its codebooks allow).
  bool tiled(const FormatSpec& spec) const { return tile_max_bits > 0 && spec.bits <= tile_max_bits; }
  // True when it is stored in lookup tiles instead (TileParams::lut): a tiled family (rvq, tq)
  // with 3 or 4 bit-planes in all and d % 16 == 0 (tq3, tq4, rvq2x2, rvq1x3, rvq3x1, ...).
  bool lut_tiled(const FormatSpec& spec, int d) const {
    const int planes = spec.passes * spec.bits;
    return tile_max_bits > 0 && rotated && planes >= 3 && planes <= 4 && d % 16 == 0;
  }
};

// Bytes of one bit-plane of a per-vector code of d elements (rvq/tq, docs/format.md): the one
// place the plane size is derived from head_dim.
inline size_t plane_bytes(size_t d) { return (d + 7) / 8; }

// The row of `kind` (every FormatKind has one).
const FormatRow& row(FormatKind kind);
inline const FormatRow& row(const FormatSpec& spec) { return row(spec.kind); }
// The row whose block layout is ggml weight type `ggml_type`, or nullptr.
const FormatRow* row_for_ggml_type(int ggml_type);
// "f32, f16, q8_0, q4_0, rvq{b}x{p} (b 1-4, p 1-4), tq{b} (b 1-4), kivi{b} (b 2, 4)"
std::string known_formats();

// The seed's cache methods: one row per method, formats spelled with {k} = key bits,
// {r} = residuals (passes), {v} = value bits.
struct MethodRow {
  const char* method;
  const char* key_pattern;
  const char* value_pattern;
  unsigned value_bits_mask;  // allowed value bits (bit (1 << b)); 0 = whatever the format allows
};
const MethodRow* find_method(std::string_view method);
// "turboquant_rvq, turboquant_mse, kivi, q8_0, q4_0, f16, f32"
std::string method_names();
// Replaces {k}, {r}, {v} in a pattern.
std::string expand_method_pattern(const char* pattern, int key_bits, int residuals, int value_bits);

}  // namespace tqkv::format
