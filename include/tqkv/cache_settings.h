// A model's KV cache described in the user's terms, shared by the CLI's cache flags and the Python
// module's KVCacheConfig, so both turn the same words into the same ModelCacheConfig.
//
//   seed style:      method turboquant_rvq, key_bits 1, residuals 2, value_bits 2, use_hadamard
//                    (methods and their formats: cache_config_from_method in tqkv/kv_cache.h)
//   llama.cpp style: cache_type_k / cache_type_v format names (f32, f16, q8_0, q4_0, rvq{b}x{p},
//                    tq{b}, kivi{b}); each overrides the key or value format the method chose.
// With neither: f16 keys and f16 values.
#pragma once

#include <string>

#include "tqkv/cache_config.h"
#include "tqkv/status.h"

namespace tqkv {

struct CacheSettings {
  std::string method;                   // "" = f16 keys and values (before the overrides)
  int key_bits = 1;                     // bits per pass of the key format (method)
  int residuals = 2;                    // turboquant_rvq: key passes in total
  int value_bits = 2;                   // value bits (method)
  bool use_hadamard = true;             // randomized Hadamard rotation of rvq/tq formats
  std::string cache_type_k;             // key format name ("" = the method's)
  std::string cache_type_v;             // value format name ("" = the method's)
  int boundary_layers = 0;              // the first and last N layers use boundary_type (K and V)
  std::string boundary_type = "q8_0";
  int window = 0;                       // f16 copy of the W most recent tokens of each sequence
  int sinks = 0;                        // f16 copy of the first S tokens of each sequence
  std::string residual_codebook = "joint";  // rvq pass design: joint, optimal, laplacian
  bool norm_correction = true;          // rvq/tq: store the norm-preserving scale
  std::string preset;                   // "2bit" | "2.5bit" | "3bit" | "4bit" (cache_config_from_preset); excludes method
  int pk_calib = -1;                    // pk{b}: statistics from the first N tokens (-1 = library default)
  std::string pk_basis;                 // pk{b} channel basis: "weights" | "weights:B" | "none" | "" (the preset's, else none)
};

// Validates every field; errors name the field in both spellings (e.g. "cache_type_k
// (--cache-type-k)") so the CLI and the Python module report the same line.
StatusOr<ModelCacheConfig> make_cache_config(const CacheSettings& settings);

// One line for logs and JSON: "k=rvq1x2 v=tq2 window=16 boundary=1xq8_0 no-hadamard".
std::string describe_cache_config(const ModelCacheConfig& config);

}  // namespace tqkv
