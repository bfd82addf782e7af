// Cache flags shared by `tqkv generate` and `tqkv perplexity`.
//
// Two styles, combinable:
//   seed style:      --method turboquant_rvq --key-bits 1 --residuals 2 --value-bits 2 [--no-hadamard]
//                    (methods: turboquant_rvq, turboquant_mse, kivi, q8_0, q4_0, f16, f32; see
//                    cache_config_from_method in tqkv/kv_cache.h)
//   llama.cpp style: -ctk/--cache-type-k NAME, -ctv/--cache-type-v NAME (f32, f16, q8_0, q4_0,
//                    rvq{b}x{p}, tq{b}, kivi{b}, keys also pk{b}); each overrides the key or value format that
//                    --method chose (or the default).
// Or --kv-preset 2bit|2.5bit|3bit|4bit: the measured recommendation for that K+V budget (tqkv/cache_config.h);
// -ctk/-ctv still override its formats; --method and --kv-preset exclude each other.
// Default with none: f16 keys and f16 values.
// Options: --kv-boundary-layers N (first and last N layers use --kv-boundary-type, default q8_0,
// for both K and V), --kv-window W (f16 copy of the W most recent tokens), --kv-sinks S (f16 copy
// of the first S tokens), --residual-codebook joint|optimal|laplacian (rvq pass design),
// --pk-calib N (pk{b} keys: statistics from the first N tokens of each sequence).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "tqkv/cache_settings.h"
#include "tqkv/kv_cache.h"
#include "tqkv/status.h"

namespace tqkv::cli {

struct CacheFlags {
  std::string method;
  int key_bits = 1;
  int residuals = 2;
  int value_bits = 2;
  bool no_hadamard = false;
  std::string cache_type_k, cache_type_v;
  int boundary_layers = 0;
  std::string boundary_type = "q8_0";
  int window = 0;
  int sinks = 0;
  std::string residual_codebook = "joint";
  bool no_norm_correction = false;
  int pk_calib = -1;  // --pk-calib N (pk{b} keys); -1 = the library default
  std::string preset;  // --kv-preset 2bit|2.5bit|3bit|4bit
  std::string pk_basis;  // --pk-basis weights|none
  std::string pk_code;   // --pk-code trellis|lloyd
};

void add_cache_flags(CLI::App& app, CacheFlags* flags);
// The flags as CacheSettings, turned into a config by tqkv::make_cache_config (the one
// implementation, shared with the Python module). describe_cache_config: tqkv/cache_settings.h.
StatusOr<ModelCacheConfig> make_cache_config(const CacheFlags& flags);

// After a successful run: one note on stderr when OpenBLAS fell back to pre-AVX kernels on an AVX2
// CPU it does not recognize (seen on this VM: "Prescott", 2x slower prefill), naming the fix
// (OPENBLAS_CORETYPE=Haswell or SkylakeX). OpenBLAS reads that variable before main() runs.
void note_if_slow_blas();

}  // namespace tqkv::cli
