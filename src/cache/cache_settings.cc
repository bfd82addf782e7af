#include "tqkv/cache_settings.h"

#include "tqkv/codebook.h"
#include "tqkv/format.h"

namespace tqkv {

StatusOr<ModelCacheConfig> make_cache_config(const CacheSettings& s) {
  ModelCacheConfig c;
  if (!s.preset.empty() && !s.method.empty())
    return invalid_argument("preset (--kv-preset) and method (--method) both choose the cache formats; give one");
  if (!s.preset.empty()) {
    TQKV_ASSIGN_OR_RETURN(c, cache_config_from_preset(s.preset));
    c.base.quant.use_hadamard = s.use_hadamard;
  } else if (!s.method.empty()) {
    TQKV_ASSIGN_OR_RETURN(c, cache_config_from_method(s.method, s.key_bits, s.residuals, s.value_bits,
                                                      s.use_hadamard));
  } else {
    c.base.key_format = FormatSpec{FormatKind::kF16, 16, 1};
    c.base.value_format = FormatSpec{FormatKind::kF16, 16, 1};
    c.base.quant.use_hadamard = s.use_hadamard;
  }
  if (!s.cache_type_k.empty()) {
    auto k = parse_format(s.cache_type_k);
    if (!k.ok()) return invalid_argument("invalid cache_type_k (--cache-type-k): " + k.status().message());
    c.base.key_format = *k;
  }
  if (!s.cache_type_v.empty()) {
    auto v = parse_format(s.cache_type_v);
    if (!v.ok()) return invalid_argument("invalid cache_type_v (--cache-type-v): " + v.status().message());
    c.base.value_format = *v;
  }
  if (s.boundary_layers < 0)
    return invalid_argument("boundary_layers (--kv-boundary-layers) must be >= 0, got " +
                            std::to_string(s.boundary_layers));
  if (s.window < 0)
    return invalid_argument("kv_window (--kv-window) must be >= 0, got " + std::to_string(s.window));
  if (s.sinks < 0)
    return invalid_argument("kv_sinks (--kv-sinks) must be >= 0, got " + std::to_string(s.sinks));
  c.boundary_layers = s.boundary_layers;
  auto b = parse_format(s.boundary_type);
  if (!b.ok()) return invalid_argument("invalid boundary_type (--kv-boundary-type): " + b.status().message());
  c.boundary_key_format = c.boundary_value_format = *b;
  c.base.recent_window = s.window;
  c.base.sink_tokens = s.sinks;
  auto rc = parse_residual_codebook(s.residual_codebook);
  if (!rc.ok())
    return invalid_argument("invalid residual_codebook (--residual-codebook): " + rc.status().message());
  c.base.quant.residual_codebook = *rc;
  c.base.quant.norm_correction = s.norm_correction;
  if (s.pk_calib != -1) {
    if (s.pk_calib < 1)
      return invalid_argument("pk_calib (--pk-calib) must be >= 1, got " + std::to_string(s.pk_calib));
    c.base.pk_calib_tokens = s.pk_calib;
  }
  if (s.pk_basis == "weights") {
    c.pk_weight_basis = true;
  } else if (s.pk_basis.rfind("weights:", 0) == 0) {  // weights:B, block-diagonal with blocks of B
    const std::string n = s.pk_basis.substr(8);
    int b = 0;
    bool ok = !n.empty() && n.size() <= 5;
    for (char ch : n) ok = ok && ch >= '0' && ch <= '9';
    if (ok) b = std::stoi(n);
    if (!ok || b < 1)
      return invalid_argument("invalid pk_basis (--pk-basis) '" + s.pk_basis +
                              "': use weights, weights:B (block-diagonal, B channels per block, 1..99999) or none");
    c.pk_weight_basis = true;
    c.pk_weight_basis_block = b;
  } else if (s.pk_basis == "none") {
    c.pk_weight_basis = false;
  } else if (!s.pk_basis.empty()) {
    return invalid_argument("invalid pk_basis (--pk-basis) '" + s.pk_basis + "': use weights, weights:B or none");
  }
  if (s.pk_code == "trellis") c.base.pk_trellis = true;
  else if (s.pk_code == "lloyd" || s.pk_code.empty()) c.base.pk_trellis = false;
  else return invalid_argument("invalid pk_code (--pk-code) '" + s.pk_code + "': use trellis or lloyd");
  return c;
}

std::string describe_cache_config(const ModelCacheConfig& c) {
  std::string s = "k=" + c.base.key_format.name() + " v=" + c.base.value_format.name();
  if (c.base.recent_window) s += " window=" + std::to_string(c.base.recent_window);
  if (c.base.sink_tokens) s += " sinks=" + std::to_string(c.base.sink_tokens);
  if (c.boundary_layers)
    s += " boundary=" + std::to_string(c.boundary_layers) + "x" + c.boundary_key_format.name();
  if (!c.base.quant.use_hadamard) s += " no-hadamard";
  if (c.base.key_format.kind == FormatKind::kPk || c.base.value_format.kind == FormatKind::kPk ||
      c.base.key_format.kind == FormatKind::kTqo || c.base.value_format.kind == FormatKind::kTqo)
    s += " pk-calib=" + std::to_string(c.base.pk_calib_tokens);
  if (c.pk_weight_basis)
    s += c.pk_weight_basis_block > 0 ? " pk-basis=weights:" + std::to_string(c.pk_weight_basis_block)
                                     : std::string(" pk-basis=weights");
  if (c.base.pk_trellis) s += " pk-code=trellis";
  return s;
}

}  // namespace tqkv
