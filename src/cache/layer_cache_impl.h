// Storage of LayerKVCache (internal to src/cache; attention reads it only through the public
// LayerView / SequenceView of tqkv/kv_view.h).
//
// Per sequence and kv head, token position t lives in exactly one of three places:
//   sinks      t < S                           f16, (S, head_dim)
//   compressed S <= t < S + n_comp             key/value formats, pages of P tokens
//   pending    S + n_comp <= t < S + n_comp + n_pend   f16 rows (layers with a pk{b} or tqo stream only:
//              tokens that would be compressed but wait for the sequence's statistics; K and V alike)
//   window     S + n_comp + n_pend <= t < n     f16 ring of W slots, slot t % W
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
#include "tqkv/prerope_keys.h"

namespace tqkv {

// Keys are stream 0, values stream 1: every per-stream field exists once, indexed by Stream.
enum Stream : int { kKeys = 0, kValues = 1 };
inline constexpr int kStreams = 2;

// One stream of one kv head of one sequence. Owns its pages (64-byte aligned, zero-filled);
// `pages` is itself the page table handed out in StreamPages.
struct StreamStore {
  std::vector<uint8_t*> pages;   // each page: StreamConfig::page_bytes
  std::vector<uint16_t> sink;    // (S, head_dim) f16, allocated on first use
  std::vector<uint16_t> win;     // (W, head_dim) f16 ring, allocated on first use

  StreamStore() = default;
  StreamStore(const StreamStore&) = delete;
  StreamStore& operator=(const StreamStore&) = delete;
  StreamStore(StreamStore&& o) noexcept;
  StreamStore& operator=(StreamStore&& o) noexcept;
  ~StreamStore() { keep_pages(0); }
  void add_page(size_t bytes);
  void keep_pages(size_t n);  // frees pages n..
};

// Per (sequence, kv head) state of layers with a pk{b} stream (allocated only for those layers, so
// other layers' bookkeeping does not grow).
struct PkHead {
  // pk{b} streams (keys: pre-RoPE; values may use the same codec): this sequence's statistics,
  // null until fitted (all pk streams of a head are fitted together, at N tokens) and for non-pk streams.
  std::unique_ptr<PreRopeKeyCodec> codec[kStreams];
  // tqo{h}x{l} streams (layers with one only; a separate allocation so that pk-only layers'
  // bookkeeping, counted in bytes_resident, does not grow): this sequence's outlier-split
  // quantizers (their channel sets; null until fitted, at N tokens like the pk statistics).
  struct Outlier {
    std::unique_ptr<Quantizer> quantizer[kStreams];
  };
  std::unique_ptr<Outlier> outlier;
  const Quantizer* seq_quantizer(int st) const { return outlier ? outlier->quantizer[st].get() : nullptr; }
  std::vector<uint16_t> pend[kStreams];  // (n_pend, head_dim) f16 rows before the statistics exist
  bool fitted = false;
};

struct HeadStore {
  StreamStore s[kStreams];
  std::unique_ptr<PkHead> pk;  // layers with a pk{b} stream only
};

struct SeqState {
  int n = 0;       // tokens stored
  int n_comp = 0;  // compressed tokens (positions S .. S + n_comp - 1)
  int n_pend = 0;  // pending f16 tokens after them (pk layers only)
  std::vector<HeadStore> heads;  // (n_kv_heads,)
  std::vector<HeadPages> views;  // (n_kv_heads,) refreshed after every mutation
};

// How one stream of the layer is stored (shared by every sequence).
struct StreamConfig {
  FormatSpec format;
  size_t code_size = 0;   // per-vector code size
  bool tiled = false;     // bit-sliced tiles (tile_layout.h) instead of per-vector codes
  bool pk = false;        // pk{b}: per-sequence codecs (HeadStore::pk), q holds nulls
  bool outlier = false;   // tqo{h}x{l}: per-sequence quantizers (PkHead::outlier), q holds nulls
  bool per_sequence() const { return pk || outlier; }
  TileLayout lay;
  size_t page_bytes = 0;
  std::vector<std::unique_ptr<Quantizer>> q;  // (n_kv_heads,)
  std::vector<HeadCodec> codecs;              // (n_kv_heads,) views of q
};

struct LayerKVCache::Impl {
  int n_kv_heads = 0, head_dim = 0, layer = 0;
  HeadShard shard;  // n_kv_heads == shard.n_kv_heads; seeds use global heads shard.kv_head_offset + h
  KVCacheOptions opt;
  StreamConfig st[kStreams];
  std::map<int, SeqState> seqs;
  LayerView view;  // filled once by make()

  int sinks() const { return opt.sink_tokens; }
  int window() const { return opt.recent_window; }
  int page() const { return opt.page_tokens; }
  // append() of layers with a pk{b} key or value format (kv_cache.cc).
  Status append_prerope(SeqState& s, int n, const HeadTokenView& k, const HeadTokenView& v);
};

}  // namespace tqkv
