// Recommended cache configurations by K+V average bits (`--kv-preset`). Chosen from the measured
// quality-per-bit table (docs/results.md; reasoning in docs/design.md "Pre-RoPE keys"): for each
// budget the configuration with the lowest KLD at or below it on the shipped d128 model.
#include <string>

#include "tqkv/cache_config.h"

namespace tqkv {
namespace {

struct Preset {
  const char* name;
  const char* key_format;
  const char* value_format;
  const char* why;
};

// K+V bits per element at head_dim 128 and 1024 tokens, everything counted.
constexpr Preset kPresets[] = {
    {"2bit", "pk2", "tq2", "2.24 b/elem, KLD 0.0419 (tq2/tq2: 0.0984)"},
    {"2.5bit", "pk2.5", "tq2", "2.49 b/elem, KLD 0.0292, dPPL +2.52% (the <= 3% at <= 2.5 b goal)"},
    {"3bit", "pk3", "tq3", "3.24 b/elem, KLD 0.0106 (tq3/tq3: 0.0250)"},
    {"4bit", "pk4", "tq4", "4.24 b/elem, KLD 0.0029 (tq4/tq4: 0.0071; llama.cpp iq4_nl 4.5 b: 0.0060)"},
};

}  // namespace

std::string cache_preset_names() {
  std::string s;
  for (const Preset& p : kPresets) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

StatusOr<ModelCacheConfig> cache_config_from_preset(const std::string& name) {
  for (const Preset& p : kPresets) {
    if (name != p.name) continue;
    ModelCacheConfig c;
    TQKV_ASSIGN_OR_RETURN(c.base.key_format, parse_format(p.key_format));
    TQKV_ASSIGN_OR_RETURN(c.base.value_format, parse_format(p.value_format));
    return c;
  }
  return invalid_argument("unknown --kv-preset '" + name + "'; known: " + cache_preset_names());
}

}  // namespace tqkv
