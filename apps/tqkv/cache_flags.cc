#include "cache_flags.h"

#include <cblas.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

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
  app.add_option("--kv-preset", f->preset,
                 "Recommended K+V configuration by average bits: " + cache_preset_names() + " (measured, docs/results.md)");
  app.add_option("--pk-calib", f->pk_calib,
                 "pk{b} keys (and tqo{h}x{l} outlier channels): per-head statistics from each sequence's first N tokens, which wait in f16 until then");
  app.add_option("--pk-basis", f->pk_basis,
                 "pk{b} keys: code in the eigenbasis of the model's K projection (weights), a block-diagonal one with "
                 "blocks of B channels (weights:B, cheaper to decode) or per channel (none)");
  app.add_option("--pk-code", f->pk_code,
                 "pk{b} streams: code the 1-4-bit channels with a trellis code (trellis) or per-channel Lloyd-Max (lloyd)");
  app.add_flag("--no-norm-correction", f->no_norm_correction,
               "rvq/tq: store norm/sqrt(d) instead of the scale that preserves each vector's norm");
}

StatusOr<ModelCacheConfig> make_cache_config(const CacheFlags& f) {
  CacheSettings s;
  s.method = f.method;
  s.key_bits = f.key_bits;
  s.residuals = f.residuals;
  s.value_bits = f.value_bits;
  s.use_hadamard = !f.no_hadamard;
  s.cache_type_k = f.cache_type_k;
  s.cache_type_v = f.cache_type_v;
  s.boundary_layers = f.boundary_layers;
  s.boundary_type = f.boundary_type;
  s.window = f.window;
  s.sinks = f.sinks;
  s.residual_codebook = f.residual_codebook;
  s.norm_correction = !f.no_norm_correction;
  s.preset = f.preset;
  s.pk_calib = f.pk_calib;
  s.pk_basis = f.pk_basis;
  s.pk_code = f.pk_code;
  return tqkv::make_cache_config(s);
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

}  // namespace tqkv::cli
