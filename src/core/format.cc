#include "tqkv/format.h"

#include <charconv>
#include <string>

#include "core/check.h"
#include "quant/block_formats.h"

namespace tqkv {
namespace {

bool parse_int(std::string_view s, int* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

size_t div_up(size_t a, size_t b) { return (a + b - 1) / b; }

}  // namespace

std::string FormatSpec::name() const {
  switch (kind) {
    case FormatKind::kF32: return "f32";
    case FormatKind::kF16: return "f16";
    case FormatKind::kQ8_0: return "q8_0";
    case FormatKind::kQ4_0: return "q4_0";
    case FormatKind::kRvq: return "rvq" + std::to_string(bits) + "x" + std::to_string(passes);
    case FormatKind::kTq: return "tq" + std::to_string(bits);
    case FormatKind::kKivi: return "kivi" + std::to_string(bits);
  }
  return "?";
}

StatusOr<FormatSpec> parse_format(std::string_view name) {
  const std::string known =
      "known formats: f32, f16, q8_0, q4_0, rvq{1-4}x{1-4} (e.g. rvq1x2), tq{1-4}, kivi2, kivi4";
  if (name == "f32") return FormatSpec{FormatKind::kF32, 32, 1};
  if (name == "f16") return FormatSpec{FormatKind::kF16, 16, 1};
  if (name == "q8_0") return FormatSpec{FormatKind::kQ8_0, 8, 1};
  if (name == "q4_0") return FormatSpec{FormatKind::kQ4_0, 4, 1};
  int b = 0, p = 0;
  if (name.starts_with("rvq")) {
    std::string_view rest = name.substr(3);
    size_t x = rest.find('x');
    if (x != std::string_view::npos && parse_int(rest.substr(0, x), &b) &&
        parse_int(rest.substr(x + 1), &p)) {
      if (b < 1 || b > 4 || p < 1 || p > 4)
        return invalid_argument("format '" + std::string(name) +
                                "': rvq bits and passes must be in 1..4");
      return FormatSpec{FormatKind::kRvq, b, p};
    }
  } else if (name.starts_with("tq") && parse_int(name.substr(2), &b)) {
    if (b < 1 || b > 4)
      return invalid_argument("format '" + std::string(name) + "': tq bits must be in 1..4");
    return FormatSpec{FormatKind::kTq, b, 1};
  } else if (name.starts_with("kivi") && parse_int(name.substr(4), &b)) {
    if (b != 2 && b != 4)
      return invalid_argument("format '" + std::string(name) + "': kivi bits must be 2 or 4");
    return FormatSpec{FormatKind::kKivi, b, 1};
  }
  return invalid_argument("unknown format '" + std::string(name) + "'; " + known);
}

Status validate_format(const FormatSpec& spec, int head_dim) {
  if (head_dim < 1) return invalid_argument("head_dim must be >= 1, got " + std::to_string(head_dim));
  if (head_dim > 65536)
    return invalid_argument("head_dim must be <= 65536, got " + std::to_string(head_dim));
  switch (spec.kind) {
    case FormatKind::kRvq:
      if (spec.bits < 1 || spec.bits > 4 || spec.passes < 1 || spec.passes > 4)
        return invalid_argument("rvq bits and passes must be in 1..4");
      break;
    case FormatKind::kTq:
      if (spec.bits < 1 || spec.bits > 4) return invalid_argument("tq bits must be in 1..4");
      break;
    case FormatKind::kKivi:
      if (spec.bits != 2 && spec.bits != 4) return invalid_argument("kivi bits must be 2 or 4");
      break;
    default: break;
  }
  return Status::Ok();
}

// The one place code sizes are defined (see docs/format.md).
size_t code_size(const FormatSpec& spec, int head_dim) {
  const size_t d = static_cast<size_t>(head_dim);
  switch (spec.kind) {
    case FormatKind::kF32: return 4 * d;
    case FormatKind::kF16: return 2 * d;
    case FormatKind::kQ8_0: return div_up(d, kQ8Block) * sizeof(BlockQ8_0);
    case FormatKind::kQ4_0: return div_up(d, kQ4Block) * sizeof(BlockQ4_0);
    case FormatKind::kRvq:
    case FormatKind::kTq:
      // f32 scale, then for each pass `bits` bit-planes of ceil(d/8) bytes.
      return sizeof(float) + static_cast<size_t>(spec.passes) * spec.bits * div_up(d, 8);
    case FormatKind::kKivi:
      // per group of 32: fp16 scale, fp16 min, then `bits` bit-planes of 4 bytes.
      return div_up(d, kKiviGroup) * kivi_group_bytes(spec.bits);
  }
  TQKV_CHECK(false);
  return 0;
}

double bits_per_element(const FormatSpec& spec, int head_dim) {
  return 8.0 * static_cast<double>(code_size(spec, head_dim)) / head_dim;
}

}  // namespace tqkv
