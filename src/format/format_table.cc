// The rows of the format table (format_table.h) and of the method table.
#include "format/format_table.h"

#include "core/check.h"
#include "format/blocks.h"
#include "quant/peers.h"
#include "tqkv/outlier_split.h"
#include "quant/trellis.h"

#include <cmath>
#include <cstring>
#include <iterator>

namespace tqkv::format {
namespace {

using namespace kernels;

size_t div_up(size_t a, size_t b) { return (a + b - 1) / b; }

size_t size_f32(const FormatSpec&, size_t d) { return 4 * d; }
size_t size_f16(const FormatSpec&, size_t d) { return 2 * d; }
size_t size_q8_0(const FormatSpec&, size_t d) { return div_up(d, kQ8Block) * sizeof(BlockQ8_0); }
size_t size_q4_0(const FormatSpec&, size_t d) { return div_up(d, kQ4Block) * sizeof(BlockQ4_0); }
// f32 scale, then for each pass `bits` bit-planes of ceil(d/8) bytes.
size_t size_rotated(const FormatSpec& s, size_t d) {
  return sizeof(float) + static_cast<size_t>(s.passes) * s.bits * plane_bytes(d);
}
// Per group of 32: fp16 scale, fp16 min, then `bits` bit-planes of 4 bytes.
size_t size_kivi(const FormatSpec& s, size_t d) { return div_up(d, kKiviGroup) * kivi_group_bytes(s.bits); }

// pk{b}: bf16 scale, then the code stream of round(avg_bits * d) bits (docs/format.md "pk{b}").
size_t size_pk(const FormatSpec& s, size_t d) {
  return 2 + div_up(static_cast<size_t>(std::lround(s.avg_bits * static_cast<double>(d))), 8);
}

// riq4_nl: llama.cpp's iq4_nl blocks (fp16 scale, 16 nibbles).
size_t size_iq4_nl(const FormatSpec&, size_t d) { return div_up(d, kIq4NlBlock) * sizeof(BlockIq4Nl); }
// qjl{b}: bf16 norm, then m = b d sign bits.
size_t size_qjl(const FormatSpec& s, size_t d) { return 2 + div_up(static_cast<size_t>(s.bits) * d, 8); }
// tqp{b}: the tq{b-1} code (f32 scale + b-1 planes), then the residual's bf16 norm and d sign bits.
size_t size_tqp(const FormatSpec& s, size_t d) {
  return sizeof(float) + static_cast<size_t>(s.bits - 1) * plane_bytes(d) + 2 + plane_bytes(d);
}

// tqo{h}x{l}: bf16 scale of each set, then the outlier set's h planes and the rest's l planes
// (ceil(n/8) bytes each), n_o = outlier_channel_count(d) (docs/format.md "tqo{h}x{l}").
size_t size_tqo(const FormatSpec& s, size_t d) {
  const size_t n_o = static_cast<size_t>(outlier_channel_count(static_cast<int>(d)));
  return 4 + static_cast<size_t>(s.bits) * plane_bytes(n_o) + static_cast<size_t>(s.passes) * plane_bytes(d - n_o);
}
// tt{b}: bf16 scale, then the b-bit codes of the d coordinates as one bit stream.
size_t size_tt(const FormatSpec& s, size_t d) { return 2 + div_up(static_cast<size_t>(s.bits) * d, 8); }

int no_planes(const FormatSpec&) { return 0; }
int rotated_planes(const FormatSpec& s) { return s.passes * s.bits; }
int kivi_planes(const FormatSpec& s) { return s.bits; }

// f32 "kernels": the code is the float row itself.
void encode_f32(int dim, int, const float* x, size_t n, size_t x_stride, uint8_t* codes) {
  for (size_t v = 0; v < n; ++v) std::memcpy(codes + v * 4 * dim, x + v * x_stride, 4 * static_cast<size_t>(dim));
}
void decode_f32(int dim, int, const uint8_t* codes, size_t n, float* y, size_t y_stride) {
  for (size_t v = 0; v < n; ++v) std::memcpy(y + v * y_stride, codes + v * 4 * dim, 4 * static_cast<size_t>(dim));
}

#define TQKV_BLOCK_FNS(fmt)                                                     \
  {encode_##fmt##_scalar, encode_##fmt##_avx2, encode_##fmt##_avx512},          \
  {decode_##fmt##_scalar, decode_##fmt##_avx2, decode_##fmt##_avx512}, {}, {}
#define TQKV_ROTATED_FNS                                                        \
  {}, {}, {encode_rotated_scalar, encode_rotated_avx2, encode_rotated_avx512},  \
  {decode_rotated_scalar, decode_rotated_avx2, decode_rotated_avx512}

constexpr unsigned kBits2to5 = 0b111100;
constexpr unsigned kBits1to4 = 0b11110, kBits2or4 = 0b10100, kBits1to8 = 0b111111110;
constexpr int kGgmlF32 = 0, kGgmlF16 = 1, kGgmlQ4_0 = 2, kGgmlQ8_0 = 8;  // ggml type ids (tqkv/gguf.h)

// Indexed by FormatKind (checked in row()).
const FormatRow kRows[] = {
    // kind              name    pattern        fixed mask       passes  rot  lapl  code_size     planes          tile pre   f16   ggml
    {FormatKind::kF32,  "f32",  "f32",         32, 0,         false, 1, false, false, size_f32,     no_planes,      0, false, false, kGgmlF32,
     {encode_f32, encode_f32, encode_f32}, {decode_f32, decode_f32, decode_f32}, {}, {}},
    {FormatKind::kF16,  "f16",  "f16",         16, 0,         false, 1, false, false, size_f16,     no_planes,      0, false, true,  kGgmlF16,
     TQKV_BLOCK_FNS(f16)},
    {FormatKind::kQ8_0, "q8_0", "q8_0",        8,  0,         false, 1, false, false, size_q8_0,    no_planes,      0, false, false, kGgmlQ8_0,
     TQKV_BLOCK_FNS(q8_0)},
    {FormatKind::kQ4_0, "q4_0", "q4_0",        4,  0,         false, 1, false, false, size_q4_0,    no_planes,      0, false, false, kGgmlQ4_0,
     TQKV_BLOCK_FNS(q4_0)},
    {FormatKind::kRvq,  "rvq",  "rvq{b}x{p}",  0,  kBits1to4, true,  4, true,  false, size_rotated, rotated_planes, 2, false, false, -1,
     TQKV_ROTATED_FNS},
    {FormatKind::kTq,   "tq",   "tq{b}",       0,  kBits1to4, false, 1, true,  true,  size_rotated, rotated_planes, 2, false, false, -1,
     TQKV_ROTATED_FNS},
    {FormatKind::kKivi, "kivi", "kivi{b}",     0,  kBits2or4, false, 1, false, false, size_kivi,    kivi_planes,    0, false, false, -1,
     TQKV_BLOCK_FNS(kivi)},
    // pk{b}: fractional average bits (FormatSpec::avg_bits; bits = its ceiling); per-sequence
    // statistics, so no stateless kernels: the cache codes it with tqkv::PreRopeKeyCodec.
    {FormatKind::kPk,   "pk",   "pk{b}",       0,  kBits1to8, false, 1, false, false, size_pk,      no_planes,      0, true,  false, -1,
     {}, {}, {}, {}},
    // The peers: per-vector codes with their own quantizer (src/quant/peers.cc), attended through
    // their decode. rotated = false: the Hadamard domain is internal to the code (the attention
    // kernels never see it).
    {FormatKind::kRq4_0, "rq4_0", "rq4_0",     4,  0,         false, 1, false, false, size_q4_0,    no_planes,      0, false, false, -1,
     {}, {}, {}, {}, make_rotated_block_quantizer},
    {FormatKind::kRiq4Nl, "riq4_nl", "riq4_nl", 4, 0,         false, 1, false, false, size_iq4_nl,  no_planes,      0, false, false, -1,
     {}, {}, {}, {}, make_rotated_block_quantizer},
    {FormatKind::kQjl,  "qjl",  "qjl{b}",      0,  kBits1to4, false, 1, false, false, size_qjl,     no_planes,      0, false, false, -1,
     {}, {}, {}, {}, make_qjl_quantizer, 1024},
    {FormatKind::kTqp,  "tqp",  "tqp{b}",      0,  kBits2to5, false, 1, false, false, size_tqp,     no_planes,      0, false, false, -1,
     {}, {}, {}, {}, make_tqp_quantizer, 1024},
    // rabitq1: tq1's bytes and rotation with RaBitQ's unbiased scale, so rotated = true and the
    // bit-sliced tiles / rotated kernels read it exactly as they read tq1.
    {FormatKind::kRabitq, "rabitq1", "rabitq1", 1, 0,         false, 1, true,  true,  size_rotated, rotated_planes, 2, false, false, -1,
     TQKV_ROTATED_FNS, make_rabitq_quantizer},
    // tqo{h}x{l}: the TurboQuant outlier split (bits = h, passes = l); a per-sequence channel set,
    // so no stateless kernels or factory: the cache fits one per sequence (tqkv/outlier_split.h).
    {FormatKind::kTqo,  "tqo",  "tqo{h}x{l}",  0,  kBits1to4, true,  4, false, false, size_tqo,     no_planes,      0, false, false, -1,
     {}, {}, {}, {}},
    // tt{b}: trellis code of the rotated vector (src/quant/trellis.h). rotated = false like the
    // peers: the rotation is internal to the code and attention reads it through its decode.
    {FormatKind::kTt,   "tt",   "tt{b}",       0,  kBits1to4, false, 1, false, false, size_tt,      no_planes,      0, false, false, -1,
     {}, {}, {}, {}, make_trellis_quantizer},
};

const MethodRow kMethods[] = {
    {"turboquant_rvq", "rvq{k}x{r}", "tq{v}", kBits2or4},
    {"turboquant_mse", "tq{k}", "tq{v}", kBits2or4},
    {"kivi", "kivi{k}", "kivi{v}", 0},
    {"q8_0", "q8_0", "q8_0", 0},
    {"q4_0", "q4_0", "q4_0", 0},
    {"f16", "f16", "f16", 0},
    {"f32", "f32", "f32", 0},
};

std::string bits_list(unsigned mask) {
  std::string s;
  for (int b = 0; b < 32; ++b)
    if (mask >> b & 1) s += (s.empty() ? "" : ", ") + std::to_string(b);
  return s;
}

}  // namespace

const FormatRow& row(FormatKind kind) {
  const auto i = static_cast<size_t>(kind);
  TQKV_CHECK(i < std::size(kRows) && kRows[i].kind == kind);
  return kRows[i];
}

const FormatRow* row_for_ggml_type(int ggml_type) {
  for (const FormatRow& r : kRows)
    if (r.ggml_type == ggml_type) return &r;
  return nullptr;
}

std::string known_formats() {
  std::string s;
  for (const FormatRow& r : kRows) {
    if (!s.empty()) s += ", ";
    s += r.pattern;
    if (r.kind == FormatKind::kTqo) {  // {h}x{l}: two bit widths, both from the mask
      s += " (h, l " + bits_list(r.bits_mask) + ")";
    } else if (r.fixed_bits == 0) {
      s += " (b " + bits_list(r.bits_mask);
      if (r.has_passes) s += "; p 1-" + std::to_string(r.max_passes);
      s += ")";
    }
  }
  return s;
}

const MethodRow* find_method(std::string_view method) {
  for (const MethodRow& m : kMethods)
    if (method == m.method) return &m;
  return nullptr;
}

std::string method_names() {
  std::string s;
  for (const MethodRow& m : kMethods) s += (s.empty() ? "" : ", ") + std::string(m.method);
  return s;
}

std::string expand_method_pattern(const char* pattern, int key_bits, int residuals, int value_bits) {
  std::string out;
  for (const char* p = pattern; *p; ++p) {
    if (p[0] == '{' && p[1] && p[2] == '}') {
      const int v = p[1] == 'k' ? key_bits : p[1] == 'r' ? residuals : value_bits;
      out += std::to_string(v);
      p += 2;
    } else {
      out += *p;
    }
  }
  return out;
}

}  // namespace tqkv::format
