// Prompt-cache files: the compressed KV cache of a model (one sequence or all), saved and loaded
// with its pages as they are (no re-encoding, no fp16 detour). Byte layout: docs/format.md
// ("Prompt-cache file").
//
//   tqkv::CacheFileContents c;                 // what to save: sequences and their tokens
//   c.sequences = {{0, prompt_tokens}};
//   TQKV_RETURN_IF_ERROR(tqkv::save_cache_file(path, model, ctx->cache(), c));
//   ...
//   TQKV_ASSIGN_OR_RETURN(auto loaded, tqkv::load_cache_file(path, model, ctx->mutable_cache()));
//
// Contracts:
//  - save writes a temporary file next to `path`, fsyncs it and renames it over `path` (atomic:
//    a crash never leaves a half file under the final name); every write is checked.
//  - load refuses, with one line naming the problem: wrong magic or version; a file of another
//    model (architecture, layers, kv heads, head_dim), tokenizer, or cache layout (formats, page
//    size, sinks, window, rotation seeds, codebooks: pinned by a hash of each head's codes of a
//    fixed probe vector); truncation or trailing bytes; a checksum mismatch (xxHash64 of the
//    header and of every section); sizes that do not add up (each section's length must equal
//    what its counts imply); token ids outside the vocabulary; more tokens than max_tokens.
//    No allocation is sized by a number from the file before that number is checked against the
//    file's actual size. On error the cache is left unchanged.
//  - load replaces the listed sequences of the cache (other sequences are untouched).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tqkv/kv_cache.h"
#include "tqkv/status.h"

namespace tqkv {

class Model;

struct CacheFileStats {
  size_t file_bytes = 0;      // size of the cache file
  size_t f16_file_bytes = 0;  // size of the same file with every token's K and V as f16
};

struct CacheFileContents {
  // (sequence id, the tokens it holds): tokens.size() must equal the cache's n_tokens(seq).
  std::vector<std::pair<int, std::vector<int>>> sequences;
  double prefill_seconds = 0;  // how long computing these caches took (reported on load)
  CacheFileStats stats;        // filled by load
};

// Saves the listed sequences of `cache` (which must have been built for `model`).
StatusOr<CacheFileStats> save_cache_file(const std::string& path, const Model& model, const ModelKVCache& cache,
                                         const CacheFileContents& contents);

// Loads every sequence of the file into `cache`. max_tokens bounds the tokens of one sequence
// (0 = the model's context length).
StatusOr<CacheFileContents> load_cache_file(const std::string& path, const Model& model, ModelKVCache& cache,
                                            int max_tokens = 0);

// The same, from bytes already in memory (`name` is used in messages). For the fuzz target.
StatusOr<CacheFileContents> load_cache_bytes(const std::vector<uint8_t>& bytes, const std::string& name,
                                             const Model& model, ModelKVCache& cache, int max_tokens = 0);

}  // namespace tqkv
