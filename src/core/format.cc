#include "tqkv/format.h"

#include <charconv>
#include <cmath>
#include <cstdio>
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

// pk: coded bits of one vector (the same rule as tqkv::prerope_total_bits).
long pk_total_bits(double avg_bits, int head_dim) { return std::lround(avg_bits * head_dim); }

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
    case FormatKind::kPk: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "pk%.6g", avg_bits);
      return buf;
    }
  }
  return "?";
}

StatusOr<FormatSpec> parse_format(std::string_view name) {
  const std::string known =
      "known formats: f32, f16, q8_0, q4_0, rvq{1-4}x{1-4} (e.g. rvq1x2), tq{1-4}, kivi2, kivi4, "
      "pk{b} (pre-RoPE keys, also values; b in (0, 8], e.g. pk2, pk2.5)";
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
  } else if (name.starts_with("pk") && name.size() > 2) {
    std::string_view num = name.substr(2);
    double avg = 0;
    auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), avg);
    if (ec == std::errc() && ptr == num.data() + num.size() && (num[0] >= '0' && num[0] <= '9')) {
      if (!(avg > 0 && avg <= 8))
        return invalid_argument("format '" + std::string(name) + "': pk average bits must be in (0, 8]");
      FormatSpec s{FormatKind::kPk, static_cast<int>(std::ceil(avg)), 1};
      s.avg_bits = avg;
      return s;
    }
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
    case FormatKind::kPk: {
      const long total = pk_total_bits(spec.avg_bits, head_dim);
      if (!std::isfinite(spec.avg_bits) || total < 1 || total > 8L * head_dim)
        return invalid_argument(spec.name() + " at head_dim " + std::to_string(head_dim) + " gives " +
                                std::to_string(total) + " coded bits per vector; need 1.." +
                                std::to_string(8L * head_dim));
      break;
    }
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
    case FormatKind::kPk:
      // bf16 scale, then the code stream of round(avg_bits * d) bits (docs/format.md "pk{b}").
      return 2 + div_up(static_cast<size_t>(pk_total_bits(spec.avg_bits, head_dim)), 8);
  }
  TQKV_CHECK(false);
  return 0;
}

double bits_per_element(const FormatSpec& spec, int head_dim) {
  return 8.0 * static_cast<double>(code_size(spec, head_dim)) / head_dim;
}

}  // namespace tqkv
