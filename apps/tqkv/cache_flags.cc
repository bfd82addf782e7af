#include "cache_flags.h"

#include <cblas.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tqkv/codebook.h"
#include "tqkv/format.h"

namespace tqkv::cli {

void add_cache_flags(CLI::App& app, CacheFlags* f) {
  app.add_option("--method", f->method, "Cache method: " + cache_method_names() + " (default f16)");
  app.add_option("--key-bits", f->key_bits, "Key bits per pass (--method)");
  app.add_option("--residuals", f->residuals, "Key passes in total for turboquant_rvq (--method)");
  app.add_option("--value-bits", f->value_bits, "Value bits (--method)");
  app.add_flag("--no-hadamard", f->no_hadamard, "Disable the randomized Hadamard rotation");
  app.add_option("--cache-type-k", f->cache_type_k, "Key format (-ctk): f32 f16 q8_0 q4_0 rvq1x2 tq2 kivi2 ...");
  app.add_option("--cache-type-v", f->cache_type_v, "Value format (-ctv)");
  app.add_option("--kv-boundary-layers", f->boundary_layers, "First and last N layers use --kv-boundary-type");
  app.add_option("--kv-boundary-type", f->boundary_type, "Format of boundary layers (K and V), default q8_0");
  app.add_option("--kv-window", f->window, "Keep the W most recent tokens in f16");
  app.add_option("--kv-sinks", f->sinks, "Keep the first S tokens in f16");
  app.add_option("--residual-codebook", f->residual_codebook, "rvq pass design: joint, optimal, laplacian");
  app.add_flag("--no-norm-correction", f->no_norm_correction,
               "rvq/tq: store norm/sqrt(d) instead of the scale that preserves each vector's norm");
}

StatusOr<ModelCacheConfig> make_cache_config(const CacheFlags& f) {
  ModelCacheConfig c;
  if (!f.method.empty()) {
    TQKV_ASSIGN_OR_RETURN(c, cache_config_from_method(f.method, f.key_bits, f.residuals, f.value_bits,
                                                      !f.no_hadamard));
  } else {
    c.base.key_format = FormatSpec{FormatKind::kF16, 16, 1};
    c.base.value_format = FormatSpec{FormatKind::kF16, 16, 1};
    c.base.quant.use_hadamard = !f.no_hadamard;
  }
  if (!f.cache_type_k.empty()) {
    auto k = parse_format(f.cache_type_k);
    if (!k.ok()) return invalid_argument("invalid --cache-type-k: " + k.status().message());
    c.base.key_format = *k;
  }
  if (!f.cache_type_v.empty()) {
    auto v = parse_format(f.cache_type_v);
    if (!v.ok()) return invalid_argument("invalid --cache-type-v: " + v.status().message());
    c.base.value_format = *v;
  }
  if (f.boundary_layers < 0) return invalid_argument("--kv-boundary-layers must be >= 0");
  if (f.window < 0) return invalid_argument("--kv-window must be >= 0");
  if (f.sinks < 0) return invalid_argument("--kv-sinks must be >= 0");
  c.boundary_layers = f.boundary_layers;
  auto b = parse_format(f.boundary_type);
  if (!b.ok()) return invalid_argument("invalid --kv-boundary-type: " + b.status().message());
  c.boundary_key_format = c.boundary_value_format = *b;
  c.base.recent_window = f.window;
  c.base.sink_tokens = f.sinks;
  auto rc = parse_residual_codebook(f.residual_codebook);
  if (!rc.ok()) return invalid_argument("invalid --residual-codebook: " + rc.status().message());
  c.base.quant.residual_codebook = *rc;
  c.base.quant.norm_correction = !f.no_norm_correction;
  return c;
}

void note_if_slow_blas() {
  const char* core = openblas_get_corename();
  if (!core || std::getenv("OPENBLAS_CORETYPE")) return;
  static const char* kOld[] = {"Prescott", "Katmai", "Coppermine", "Northwood", "Core2", "Penryn", "Dunnington",
                               "Nehalem", "Atom", "Banias"};
  bool old = false;
  for (const char* k : kOld) old = old || std::strcmp(core, k) == 0;
  if (old && __builtin_cpu_supports("avx2"))
    std::fprintf(stderr,
                 "tqkv: note: OpenBLAS chose its '%s' kernels on this AVX2 CPU (unrecognized model); "
                 "run with OPENBLAS_CORETYPE=%s for ~2x faster prefill\n",
                 core, __builtin_cpu_supports("avx512f") ? "SkylakeX" : "Haswell");
}

std::string describe_cache_config(const ModelCacheConfig& c) {
  std::string s = "k=" + c.base.key_format.name() + " v=" + c.base.value_format.name();
  if (c.base.recent_window) s += " window=" + std::to_string(c.base.recent_window);
  if (c.base.sink_tokens) s += " sinks=" + std::to_string(c.base.sink_tokens);
  if (c.boundary_layers)
    s += " boundary=" + std::to_string(c.boundary_layers) + "x" + c.boundary_key_format.name();
  if (!c.base.quant.use_hadamard) s += " no-hadamard";
  return s;
}

}  // namespace tqkv::cli
