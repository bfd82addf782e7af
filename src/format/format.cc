// tqkv/format.h: names, parsing, validation and sizes, all read from the format table.
#include "tqkv/format.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>

#include "format/format_table.h"

namespace tqkv {
namespace {

bool parse_int(std::string_view s, int* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

const FormatKind kAllKinds[] = {FormatKind::kF32, FormatKind::kF16,  FormatKind::kQ8_0, FormatKind::kQ4_0,
                                FormatKind::kRvq, FormatKind::kTq, FormatKind::kKivi, FormatKind::kPk,
                                FormatKind::kRq4_0, FormatKind::kRiq4Nl, FormatKind::kQjl, FormatKind::kTqp,
                                FormatKind::kRabitq, FormatKind::kTqo, FormatKind::kTt};

// pk{b}: coded bits of one vector (the same rule as tqkv::prerope_total_bits).
long pk_total_bits(double avg_bits, int head_dim) { return std::lround(avg_bits * head_dim); }

// "rvq bits must be in 1..4" style message for a parametrized row.
std::string range_message(const format::FormatRow& r) {
  std::string bits;
  int lo = -1, hi = -1, count = 0;
  for (int b = 0; b < 32; ++b)
    if (r.bits_mask >> b & 1) {
      if (lo < 0) lo = b;
      hi = b;
      ++count;
      bits += (bits.empty() ? "" : " or ") + std::to_string(b);
    }
  const bool contiguous = count == hi - lo + 1;
  std::string s = std::string(r.name) + " bits";
  if (r.has_passes) s += std::string_view(r.pattern).find("{h}") != std::string_view::npos ? " h and l" : " and passes";
  s += " must be ";
  if (contiguous) s += "in " + std::to_string(lo) + ".." + std::to_string(hi);
  else s += bits;
  return s;
}

bool spec_in_range(const format::FormatRow& r, const FormatSpec& spec) {
  if (r.fixed_bits != 0) return true;
  if (spec.bits < 0 || spec.bits >= 32 || !(r.bits_mask >> spec.bits & 1)) return false;
  if (r.has_passes) return spec.passes >= 1 && spec.passes <= r.max_passes;
  return true;
}

}  // namespace

std::string FormatSpec::name() const {
  const format::FormatRow& r = format::row(kind);
  if (kind == FormatKind::kPk) {  // fractional bits: shortest decimal
    char buf[32];
    std::snprintf(buf, sizeof buf, "pk%.6g", avg_bits);
    return buf;
  }
  if (r.fixed_bits != 0) return r.name;
  std::string s(r.name);  // (not const char* + string&&: GCC 12 -Wrestrict false positive)
  s += std::to_string(bits);
  if (r.has_passes) {
    s += 'x';
    s += std::to_string(passes);
  }
  return s;
}

bool FormatSpec::rotated() const { return format::row(kind).rotated; }
bool FormatSpec::pre_rope() const { return format::row(kind).pre_rope; }

StatusOr<FormatSpec> parse_format(std::string_view name) {
  const std::string known = "known formats: " + format::known_formats();
  // Fixed names first (so "f16" never reads as a prefix).
  for (FormatKind k : kAllKinds) {
    const format::FormatRow& r = format::row(k);
    if (r.fixed_bits != 0 && name == r.name) return FormatSpec{k, r.fixed_bits, 1};
  }
  if (name.starts_with("pk") && name.size() > 2 && name[2] >= '0' && name[2] <= '9') {  // pk{b}, b fractional
    const std::string_view num = name.substr(2);
    double avg = 0;
    auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), avg);
    if (ec == std::errc() && ptr == num.data() + num.size()) {
      if (!(avg > 0 && avg <= 8))
        return invalid_argument("format '" + std::string(name) + "': pk average bits must be in (0, 8]");
      FormatSpec s{FormatKind::kPk, static_cast<int>(std::ceil(avg)), 1};
      s.avg_bits = avg;
      return s;
    }
  }
  for (FormatKind k : kAllKinds) {
    const format::FormatRow& r = format::row(k);
    if (k == FormatKind::kPk) continue;
    if (r.fixed_bits != 0 || !name.starts_with(r.name)) continue;
    const std::string_view rest = name.substr(std::string_view(r.name).size());
    FormatSpec spec{k, 0, 1};
    bool ok;
    if (r.has_passes) {
      const size_t x = rest.find('x');
      ok = x != std::string_view::npos && parse_int(rest.substr(0, x), &spec.bits) &&
           parse_int(rest.substr(x + 1), &spec.passes);
    } else {
      ok = parse_int(rest, &spec.bits);
    }
    if (!ok) continue;
    if (!spec_in_range(r, spec))
      return invalid_argument("format '" + std::string(name) + "': " + range_message(r));
    return spec;
  }
  return invalid_argument("unknown format '" + std::string(name) + "'; " + known);
}

Status validate_format(const FormatSpec& spec, int head_dim) {
  if (head_dim < 1) return invalid_argument("head_dim must be >= 1, got " + std::to_string(head_dim));
  if (head_dim > 65536)
    return invalid_argument("head_dim must be <= 65536, got " + std::to_string(head_dim));
  const format::FormatRow& r = format::row(spec.kind);
  if (!spec_in_range(r, spec)) return invalid_argument(range_message(r));
  if (head_dim > r.max_dim)
    return invalid_argument(spec.name() + " supports head_dim <= " + std::to_string(r.max_dim) + ", got " +
                            std::to_string(head_dim));
  if (spec.kind == FormatKind::kPk) {
    const long total = pk_total_bits(spec.avg_bits, head_dim);
    if (!std::isfinite(spec.avg_bits) || total < 1 || total > 8L * head_dim)
      return invalid_argument(spec.name() + " at head_dim " + std::to_string(head_dim) + " gives " +
                              std::to_string(total) + " coded bits per vector; need 1.." + std::to_string(8L * head_dim));
  }
  return Status::Ok();
}

// The one place code sizes are defined (the table's rows; see docs/format.md).
size_t code_size(const FormatSpec& spec, int head_dim) {
  return format::row(spec.kind).code_size(spec, static_cast<size_t>(head_dim));
}

double bits_per_element(const FormatSpec& spec, int head_dim) {
  return 8.0 * static_cast<double>(code_size(spec, head_dim)) / head_dim;
}

}  // namespace tqkv
