// Storage of LayerKVCache (internal; shared by src/cache and src/attention).
//
// Per sequence and kv head, token position t lives in exactly one of three places:
//   sinks      t < S                           f16, (S, head_dim)
//   compressed S <= t < S + n_comp             key/value formats, pages of P tokens
//   window     S + n_comp <= t < n             f16 ring of W slots, slot t % W
// With W = 0 every token >= S is compressed on append. With W > 0 a token is compressed (from its
// f16 copy) when it leaves the window. Compressed codes of rotated formats are in the rotated
// domain of that head's key (or value) rotation.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "cache/tile_layout.h"
#include "tqkv/kv_cache.h"

namespace tqkv {

struct AlignedFree {
  void operator()(uint8_t* p) const;
};
using PageBuf = std::unique_ptr<uint8_t, AlignedFree>;

struct HeadStore {
  std::vector<PageBuf> kpages, vpages;   // each page: P * code_size bytes
  std::vector<uint16_t> sink_k, sink_v;  // (S, head_dim) f16, allocated on first use
  std::vector<uint16_t> win_k, win_v;    // (W, head_dim) f16 ring, allocated on first use
};

struct SeqState {
  int n = 0;       // tokens stored
  int n_comp = 0;  // compressed tokens (positions S .. S + n_comp - 1)
  std::vector<HeadStore> heads;  // (n_kv_heads,)
};

struct LayerKVCache::Impl {
  int n_kv_heads = 0, head_dim = 0, layer = 0;
  KVCacheOptions opt;
  size_t ksz = 0, vsz = 0;  // per-vector code sizes
  // Rotated formats with 1-2 bit passes are stored in bit-sliced tiles (tile_layout.h);
  // everything else as per-vector codes, token after token.
  bool kfast = false, vfast = false;
  TileLayout klay, vlay;
  size_t kpage_bytes = 0, vpage_bytes = 0;
  std::vector<std::unique_ptr<Quantizer>> keyq, valq;  // (n_kv_heads,)
  std::map<int, SeqState> seqs;

  int sinks() const { return opt.sink_tokens; }
  int window() const { return opt.recent_window; }
  int page() const { return opt.page_tokens; }
  // Per-vector layout only:
  const uint8_t* kcode(const HeadStore& h, int c) const {
    return h.kpages[c / page()].get() + static_cast<size_t>(c % page()) * ksz;
  }
  const uint8_t* vcode(const HeadStore& h, int c) const {
    return h.vpages[c / page()].get() + static_cast<size_t>(c % page()) * vsz;
  }
  // Tile layout only: the tile holding compressed index c (slot c % 16).
  const uint8_t* ktile(const HeadStore& h, int c) const {
    return h.kpages[c / page()].get() + static_cast<size_t>((c % page()) / kTileTokens) * klay.tile_bytes;
  }
  const uint8_t* vtile(const HeadStore& h, int c) const {
    return h.vpages[c / page()].get() + static_cast<size_t>((c % page()) / kTileTokens) * vlay.tile_bytes;
  }
};

}  // namespace tqkv
