// LayerKVCache storage (append, truncate, read, accounting) and the model-level cache.
// Attention lives in src/attention (tqkv::attend); attend()/attend_batch() here only wrap it.
#include <cstdlib>
#include <cstring>
#include <string>

#include "cache/layer_cache_impl.h"
#include "tqkv/outlier_split.h"
#include "tqkv/cache_seed.h"
#include "core/check.h"
#include "core/half.h"
#include "format/format_table.h"

namespace tqkv {

namespace {
size_t page_alloc_bytes(size_t bytes) { return (bytes + 63) / 64 * 64; }
}  // namespace

StreamStore::StreamStore(StreamStore&& o) noexcept
    : pages(std::move(o.pages)), sink(std::move(o.sink)), win(std::move(o.win)) {
  o.pages.clear();
}
StreamStore& StreamStore::operator=(StreamStore&& o) noexcept {
  if (this != &o) {
    keep_pages(0);
    pages = std::move(o.pages);
    o.pages.clear();
    sink = std::move(o.sink);
    win = std::move(o.win);
  }
  return *this;
}
void StreamStore::add_page(size_t bytes) {
  const size_t rounded = page_alloc_bytes(bytes);
  void* p = std::aligned_alloc(64, rounded);
  TQKV_CHECK(p != nullptr);
  std::memset(p, 0, rounded);
  pages.push_back(static_cast<uint8_t*>(p));
}
void StreamStore::keep_pages(size_t n) {
  for (size_t i = n; i < pages.size(); ++i) std::free(pages[i]);
  if (n < pages.size()) pages.resize(n);
}

namespace {

void to_f16(const float* x, int d, uint16_t* out) {
  for (int i = 0; i < d; ++i) out[i] = float_to_half(x[i]);
}
void from_f16(const uint16_t* x, int d, float* out) {
  for (int i = 0; i < d; ++i) out[i] = half_to_float(x[i]);
}

}  // namespace

uint64_t cache_rotation_seed(uint64_t seed, int layer, int head, CacheStream stream) {
  const uint64_t which = stream == CacheStream::kValue ? 1 : 0;
  uint64_t z = seed ^ (0x9e3779b97f4a7c15ull * (static_cast<uint64_t>(layer) * 1000003 +
                                                static_cast<uint64_t>(head) * 2 + which + 1));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  return z ^ (z >> 31);
}

LayerKVCache::LayerKVCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LayerKVCache::~LayerKVCache() = default;

namespace {

// Builds the storage description of one stream from its quantizers.
void setup_stream(StreamConfig& sc, const FormatSpec& format, int head_dim, int page_tokens, bool is_value) {
  sc.format = format;
  if (format.kind == FormatKind::kPk || format.kind == FormatKind::kTqo) {  // per-sequence codecs; per-vector codes in pages
    sc.pk = format.kind == FormatKind::kPk;
    sc.outlier = format.kind == FormatKind::kTqo;
    sc.code_size = code_size(format, head_dim);
    sc.page_bytes = static_cast<size_t>(page_tokens) * sc.code_size;
    sc.codecs.assign(sc.q.size(), HeadCodec{});
    return;
  }
  sc.code_size = sc.q[0]->code_size();
  const PassCodebooks* cbs = sc.q[0]->codebooks();
  sc.tiled = cbs != nullptr && make_tile_layout(format, head_dim, *cbs, is_value, &sc.lay);
  const size_t P = page_tokens;
  sc.page_bytes = sc.tiled ? P / kTileTokens * sc.lay.tile_bytes : P * sc.code_size;
  for (const auto& q : sc.q) sc.codecs.push_back(HeadCodec{q.get(), q->rotation(), q->codebooks()});
}

StreamLayout stream_layout(const StreamConfig& sc, int page_tokens, bool pre_rope, bool norm_correction) {
  StreamLayout L;
  L.format = sc.format;
  L.storage = sc.tiled ? KVStorage::kTiles : KVStorage::kPerVector;
  L.code_size = sc.code_size;
  L.page_bytes = sc.page_bytes;
  L.page_tokens = page_tokens;
  L.pre_rope = pre_rope;
  L.norm_correction = norm_correction;
  if (sc.tiled) L.tiles = sc.lay;
  L.heads = sc.codecs.data();
  return L;
}

// Points the public page views of `s` at its current storage.
void refresh_views(SeqState& s) {
  s.views.resize(s.heads.size());
  for (size_t h = 0; h < s.heads.size(); ++h) {
    StreamPages* out[kStreams] = {&s.views[h].key, &s.views[h].value};
    for (int k = 0; k < kStreams; ++k) {
      const StreamStore& ss = s.heads[h].s[k];
      const PkHead* pk = s.heads[h].pk.get();
      *out[k] = StreamPages{ss.pages.data(), static_cast<int>(ss.pages.size()),
                            ss.sink.empty() ? nullptr : ss.sink.data(),
                            ss.win.empty() ? nullptr : ss.win.data(),
                            pk && !pk->pend[k].empty() ? pk->pend[k].data() : nullptr,
                            pk ? pk->codec[k].get() : nullptr,
                            pk ? pk->seq_quantizer(k) : nullptr};
    }
  }
}

}  // namespace

StatusOr<std::unique_ptr<LayerKVCache>> LayerKVCache::make(int n_kv_heads, int head_dim,
                                                           const KVCacheOptions& options, int layer) {
  if (n_kv_heads < 1) return invalid_argument("n_kv_heads must be >= 1, got " + std::to_string(n_kv_heads));
  return make(all_kv_heads(n_kv_heads), head_dim, options, layer);
}

StatusOr<std::unique_ptr<LayerKVCache>> LayerKVCache::make(const HeadShard& shard, int head_dim,
                                                           const KVCacheOptions& options, int layer) {
  TQKV_RETURN_IF_ERROR(validate_head_shard(shard));
  const int n_kv_heads = shard.n_kv_heads;
  TQKV_RETURN_IF_ERROR(validate_format(options.key_format, head_dim));
  TQKV_RETURN_IF_ERROR(validate_format(options.value_format, head_dim));
  if (options.page_tokens < 64 || options.page_tokens % 64 != 0)
    return invalid_argument("page_tokens must be a positive multiple of 64, got " + std::to_string(options.page_tokens));
  if (options.recent_window < 0 || options.sink_tokens < 0)
    return invalid_argument("recent_window and sink_tokens must be >= 0");
  if (options.recent_window > kMaxWindowTokens || options.sink_tokens > kMaxWindowTokens)  // rings are allocated whole
    return invalid_argument("recent_window and sink_tokens must be <= " + std::to_string(kMaxWindowTokens));
  if ((options.key_format.kind == FormatKind::kPk || options.value_format.kind == FormatKind::kPk ||
       options.key_format.kind == FormatKind::kTqo || options.value_format.kind == FormatKind::kTqo) &&
      options.pk_calib_tokens < 1)
    return invalid_argument("pk_calib_tokens must be >= 1, got " + std::to_string(options.pk_calib_tokens));
  auto impl = std::make_unique<Impl>();
  impl->n_kv_heads = n_kv_heads;
  impl->head_dim = head_dim;
  impl->layer = layer;
  impl->shard = shard;
  impl->opt = options;
  const FormatSpec formats[kStreams] = {options.key_format, options.value_format};
  for (int h = 0; h < n_kv_heads; ++h)
    for (int k = 0; k < kStreams; ++k) {
      QuantOptions qo = options.quant;
      // The GLOBAL head index: a shard's head h is the unsharded cache's head kv_head_offset + h.
      qo.seed = cache_rotation_seed(options.quant.seed, layer, shard.kv_head_offset + h,
                                    k == kValues ? CacheStream::kValue : CacheStream::kKey);
      qo.value_stream = k == kValues;
      if (formats[k].kind == FormatKind::kPk || formats[k].kind == FormatKind::kTqo) {  // per-sequence codecs, made when the statistics exist
        impl->st[k].q.push_back(nullptr);
        continue;
      }
      TQKV_ASSIGN_OR_RETURN(auto q, make_quantizer(formats[k], head_dim, qo));
      impl->st[k].q.push_back(std::move(q));
    }
  for (int k = 0; k < kStreams; ++k)
    setup_stream(impl->st[k], formats[k], head_dim, options.page_tokens, k == kValues);
  LayerView& v = impl->view;
  v.n_kv_heads = n_kv_heads;
  v.head_dim = head_dim;
  v.page_tokens = options.page_tokens;
  v.sink_tokens = options.sink_tokens;
  v.recent_window = options.recent_window;
  v.key = stream_layout(impl->st[kKeys], options.page_tokens,
                        options.keys_pre_rope || format::row(options.key_format).pre_rope,
                        options.quant.norm_correction);
  v.value = stream_layout(impl->st[kValues], options.page_tokens, false, options.quant.norm_correction);
  return std::unique_ptr<LayerKVCache>(new LayerKVCache(std::move(impl)));
}

int LayerKVCache::n_kv_heads() const { return impl_->n_kv_heads; }
const HeadShard& LayerKVCache::shard() const { return impl_->shard; }
int LayerKVCache::head_dim() const { return impl_->head_dim; }
const KVCacheOptions& LayerKVCache::options() const { return impl_->opt; }
const LayerView& LayerKVCache::view() const { return impl_->view; }
bool LayerKVCache::keys_pre_rope() const { return impl_->view.key.pre_rope; }

SequenceView LayerKVCache::sequence_view(int seq) const {
  auto it = impl_->seqs.find(seq);
  if (it == impl_->seqs.end()) return SequenceView{};
  const SeqState& s = it->second;
  return SequenceView{s.n, s.n_comp, s.views.data(), s.n_pend};
}

int LayerKVCache::n_tokens(int seq) const {
  auto it = impl_->seqs.find(seq);
  return it == impl_->seqs.end() ? 0 : it->second.n;
}

namespace {

// Encodes `count` tokens of one stream into compressed indices c.. (possibly spanning pages).
void put_compressed(const StreamConfig& sc, int P, int d, StreamStore& ss, int h, int c,
                    const float* x, int count, int64_t stride, std::vector<uint8_t>& tmp) {
  while (count > 0) {
    while (static_cast<int>(ss.pages.size()) <= c / P) ss.add_page(sc.page_bytes);
    const int in_page = std::min(count, P - c % P);
    uint8_t* page = ss.pages[c / P];
    if (sc.tiled) {
      tmp.resize(static_cast<size_t>(in_page) * sc.code_size);
      sc.q[h]->encode(x, in_page, tmp.data(), stride);
      for (int j = 0; j < in_page; ++j) {
        const int slot = c % P + j;
        sc.lay.scatter(&tmp[j * sc.code_size], format::plane_bytes(d), slot % kTileTokens,
                       page + static_cast<size_t>(slot / kTileTokens) * sc.lay.tile_bytes);
      }
    } else {
      sc.q[h]->encode(x, in_page, page + static_cast<size_t>(c % P) * sc.code_size, stride);
    }
    x += in_page * stride;
    c += in_page;
    count -= in_page;
  }
}

}  // namespace

// pk{b} key layers (docs/design.md "Pre-RoPE keys"). Token t of head h goes to: sinks (t < S);
// else the window ring (W > 0), whose oldest token leaves it when full; a token that leaves the
// window (or every token >= S when W = 0) is compressed when the head's statistics exist, else it
// waits as a pending f16 row. When the sequence holds N = pk_calib_tokens tokens, the statistics
// are fitted on the (f16-stored) pre-RoPE keys of tokens 0..N-1 and every pending row is compressed.
Status LayerKVCache::Impl::append_prerope(SeqState& s, int n, const HeadTokenView& k, const HeadTokenView& v) {
  Impl& I = *this;
  const int d = I.head_dim, S = I.sinks(), W = I.window(), P = I.page(), N = I.opt.pk_calib_tokens;
  const HeadTokenView* in[kStreams] = {&k, &v};
  const int n0 = s.n;
  std::vector<uint8_t> tmp;
  std::vector<float> row(2 * static_cast<size_t>(d));
  int comp = s.n_comp, pend = s.n_pend;
  for (int h = 0; h < I.n_kv_heads; ++h) {
    HeadStore& hs = s.heads[h];
    if (!hs.pk) hs.pk = std::make_unique<PkHead>();
    PkHead& ph = *hs.pk;
    comp = s.n_comp;
    pend = s.n_pend;
    // The token at position S + comp + pend leaves the f16 window (or skips it): compress or pend.
    auto leave = [&](const float* kx, const float* vx) {
      if (ph.fitted) {
        const float* x[kStreams] = {kx, vx};
        for (int st = 0; st < kStreams; ++st) {
          StreamStore& ss = hs.s[st];
          if (I.st[st].pk) {
            while (static_cast<int>(ss.pages.size()) <= comp / P) ss.add_page(I.st[st].page_bytes);
            ph.codec[st]->encode(x[st], 1, ss.pages[comp / P] + static_cast<size_t>(comp % P) * I.st[st].code_size);
          } else if (I.st[st].outlier) {
            while (static_cast<int>(ss.pages.size()) <= comp / P) ss.add_page(I.st[st].page_bytes);
            ph.outlier->quantizer[st]->encode(x[st], 1, ss.pages[comp / P] + static_cast<size_t>(comp % P) * I.st[st].code_size);
          } else {
            put_compressed(I.st[st], P, d, ss, h, comp, x[st], 1, d, tmp);
          }
        }
        ++comp;
      } else {
        const float* x[kStreams] = {kx, vx};
        for (int st = 0; st < kStreams; ++st) {
          std::vector<uint16_t>& pb = ph.pend[st];
          pb.resize(static_cast<size_t>(pend + 1) * d);
          to_f16(x[st], d, &pb[static_cast<size_t>(pend) * d]);
        }
        ++pend;
      }
    };
    // f16 copy of stream st at stored position t (t < N, before the statistics: nothing compressed).
    auto stored_row = [&](int st, int t, float* out) {
      const StreamStore& ks = hs.s[st];
      if (t < S) from_f16(&ks.sink[static_cast<size_t>(t) * d], d, out);
      else if (t < S + pend) from_f16(&ph.pend[st][static_cast<size_t>(t - S) * d], d, out);
      else from_f16(&ks.win[static_cast<size_t>(t % W) * d], d, out);
    };
    for (int i = 0; i < n; ++i) {
      const int t = n0 + i;
      if (t < S) {
        for (int st = 0; st < kStreams; ++st) {
          std::vector<uint16_t>& sink = hs.s[st].sink;
          if (sink.empty()) sink.resize(static_cast<size_t>(S) * d);
          to_f16(in[st]->at(h, i), d, &sink[static_cast<size_t>(t) * d]);
        }
      } else if (W == 0) {
        leave(k.at(h, i), v.at(h, i));
      } else {
        for (int st = 0; st < kStreams; ++st)
          if (hs.s[st].win.empty()) hs.s[st].win.resize(static_cast<size_t>(W) * d);
        if (t - (S + comp + pend) == W) {  // window full: its oldest token leaves it
          const int p = S + comp + pend;
          from_f16(&hs.s[kKeys].win[static_cast<size_t>(p % W) * d], d, row.data());
          from_f16(&hs.s[kValues].win[static_cast<size_t>(p % W) * d], d, row.data() + d);
          leave(row.data(), row.data() + d);
        }
        for (int st = 0; st < kStreams; ++st)
          to_f16(in[st]->at(h, i), d, &hs.s[st].win[static_cast<size_t>(t % W) * d]);
      }
      if (!ph.fitted && t + 1 == N) {  // N tokens stored: fit the statistics, compress the pending rows
        std::vector<float> calib(static_cast<size_t>(N) * d);
        for (int st = 0; st < kStreams; ++st) {
          if (!I.st[st].per_sequence()) continue;
          for (int u = 0; u < N; ++u) stored_row(st, u, &calib[static_cast<size_t>(u) * d]);
          if (I.st[st].outlier) {  // tqo: the channel set from the same N f16 rows (tqkv/outlier_split.h)
            auto mask = select_outlier_channels(calib.data(), N, d, 0);
            if (!mask.ok()) return mask.status();
            QuantOptions qo = I.opt.quant;
            qo.seed = cache_rotation_seed(I.opt.quant.seed, I.layer, I.shard.kv_head_offset + h,
                                          st == kValues ? CacheStream::kValue : CacheStream::kKey);
            qo.value_stream = st == kValues;
            auto q = make_outlier_split_quantizer(I.st[st].format, d, qo, *mask);
            if (!q.ok()) return q.status();
            if (!ph.outlier) ph.outlier = std::make_unique<PkHead::Outlier>();
            ph.outlier->quantizer[st] = std::move(*q);
            continue;
          }
          std::shared_ptr<const ChannelBasis> basis;
          // pk_basis is indexed by the GLOBAL kv head (a shard's head h is kv_head_offset + h).
          const size_t gh = static_cast<size_t>(I.shard.kv_head_offset) + h;
          if (gh < I.opt.pk_basis[st].size()) basis = I.opt.pk_basis[st][gh];
          auto codec = PreRopeKeyCodec::fit(calib.data(), N, d, 0, I.st[st].format.avg_bits,
                                            I.opt.quant.norm_correction, std::move(basis), I.opt.pk_trellis);
          if (!codec.ok()) return codec.status();
          ph.codec[st] = std::make_unique<PreRopeKeyCodec>(std::move(*codec));
        }
        ph.fitted = true;
        const int np = pend;
        std::vector<uint16_t> pk = std::move(ph.pend[kKeys]), pv = std::move(ph.pend[kValues]);
        ph.pend[kKeys] = {};
        ph.pend[kValues] = {};
        pend = 0;
        for (int r = 0; r < np; ++r) {
          from_f16(&pk[static_cast<size_t>(r) * d], d, row.data());
          from_f16(&pv[static_cast<size_t>(r) * d], d, row.data() + d);
          leave(row.data(), row.data() + d);
        }
      }
    }
  }
  s.n_comp = comp;  // every head advanced identically
  s.n_pend = pend;
  s.n = n0 + n;
  return Status::Ok();
}

Status LayerKVCache::append(int seq, int n, const HeadTokenView& k, const HeadTokenView& v) {
  Impl& I = *impl_;
  if (seq < 0) return invalid_argument("sequence id must be >= 0, got " + std::to_string(seq));
  if (n < 1) return invalid_argument("append needs n >= 1 tokens, got " + std::to_string(n));
  if (k.data == nullptr || v.data == nullptr) return invalid_argument("append: null K or V");
  SeqState& s = I.seqs[seq];
  if (s.heads.empty()) s.heads.resize(I.n_kv_heads);
  if (I.st[kKeys].per_sequence() || I.st[kValues].per_sequence()) {
    TQKV_RETURN_IF_ERROR(I.append_prerope(s, n, k, v));
    refresh_views(s);
    return Status::Ok();
  }
  const int d = I.head_dim, S = I.sinks(), W = I.window();
  const HeadTokenView* in[kStreams] = {&k, &v};
  std::vector<uint8_t> tmp;
  const int n0 = s.n;
  for (int h = 0; h < I.n_kv_heads; ++h) {
    HeadStore& hs = s.heads[h];
    int t = n0, i = 0;
    // Sinks.
    for (; i < n && t < S; ++i, ++t)
      for (int st = 0; st < kStreams; ++st) {
        std::vector<uint16_t>& sink = hs.s[st].sink;
        if (sink.empty()) sink.resize(static_cast<size_t>(S) * d);
        to_f16(in[st]->at(h, i), d, &sink[static_cast<size_t>(t) * d]);
      }
    if (i == n) continue;
    if (W == 0) {
      for (int st = 0; st < kStreams; ++st)
        put_compressed(I.st[st], I.page(), d, hs.s[st], h, s.n_comp, in[st]->at(h, i), n - i, in[st]->token_stride, tmp);
      continue;
    }
    for (int st = 0; st < kStreams; ++st)
      if (hs.s[st].win.empty()) hs.s[st].win.resize(static_cast<size_t>(W) * d);
    int comp = s.n_comp;  // per-head copy; all heads advance identically
    std::vector<float> row(d);
    for (; i < n; ++i, ++t) {
      if (t - (S + comp) == W) {  // window full: compress its oldest token
        const int p = S + comp;
        for (int st = 0; st < kStreams; ++st) {
          from_f16(&hs.s[st].win[static_cast<size_t>(p % W) * d], d, row.data());
          put_compressed(I.st[st], I.page(), d, hs.s[st], h, comp, row.data(), 1, d, tmp);
        }
        ++comp;
      }
      for (int st = 0; st < kStreams; ++st)
        to_f16(in[st]->at(h, i), d, &hs.s[st].win[static_cast<size_t>(t % W) * d]);
    }
    if (h == I.n_kv_heads - 1) s.n_comp = comp;
  }
  if (W == 0) s.n_comp = std::max(0, n0 + n - S);
  s.n = n0 + n;
  refresh_views(s);
  return Status::Ok();
}

Status LayerKVCache::truncate(int seq, int n) {
  Impl& I = *impl_;
  auto it = I.seqs.find(seq);
  const int cur = it == I.seqs.end() ? 0 : it->second.n;
  if (n < 0 || n > cur)
    return out_of_range("truncate(" + std::to_string(n) + ") of sequence " + std::to_string(seq) +
                        " holding " + std::to_string(cur) + " tokens");
  if (it == I.seqs.end()) return Status::Ok();
  SeqState& s = it->second;
  s.n = n;
  s.n_comp = std::min(s.n_comp, std::max(0, n - I.sinks()));
  s.n_pend = std::min(s.n_pend, std::max(0, n - I.sinks() - s.n_comp));
  const size_t pages = (static_cast<size_t>(s.n_comp) + I.page() - 1) / I.page();
  for (HeadStore& hs : s.heads)
    for (StreamStore& ss : hs.s) {
      ss.keep_pages(std::min(ss.pages.size(), pages));
    }
  for (HeadStore& hs : s.heads)
    if (hs.pk)
      for (auto& pb : hs.pk->pend) pb.resize(std::min(pb.size(), static_cast<size_t>(s.n_pend) * I.head_dim));
  if (n == 0) I.seqs.erase(it);
  else refresh_views(s);
  return Status::Ok();
}

void LayerKVCache::clear() { impl_->seqs.clear(); }

size_t LayerKVCache::bytes_resident() const {
  const Impl& I = *impl_;
  size_t b = 0;
  for (const auto& [id, s] : I.seqs) {
    // Bookkeeping outside the pages (the map node, the 64-byte HeadPages view descriptors of
    // sequence_view) is not counted, as before the views existed.
    b += sizeof(SeqState) - sizeof(s.views) + s.heads.capacity() * sizeof(HeadStore);
    for (const HeadStore& hs : s.heads) {
      for (int st = 0; st < kStreams; ++st) {
        const StreamStore& ss = hs.s[st];
        b += ss.pages.size() * page_alloc_bytes(I.st[st].page_bytes);
        b += ss.pages.capacity() * sizeof(uint8_t*);
        b += (ss.sink.capacity() + ss.win.capacity()) * sizeof(uint16_t);
      }
      // pk statistics block (docs/format.md) and the codec object holding it.
      if (hs.pk) {  // pending rows, statistics blocks (docs/format.md) and the codec objects
        b += sizeof(PkHead);
        if (hs.pk->outlier) b += sizeof(PkHead::Outlier);
        for (int st = 0; st < kStreams; ++st) {
          b += hs.pk->pend[st].capacity() * sizeof(uint16_t);
          if (hs.pk->codec[st]) b += PreRopeKeyCodec::stats_bytes(I.head_dim) + sizeof(PreRopeKeyCodec);
          // tqo: the outlier mask block (docs/format.md) and the quantizer's channel index lists
          // (d ints); its two tq rotations are re-derived from the seed, like the codebooks.
          if (hs.pk->seq_quantizer(st))
            b += outlier_mask_bytes(I.head_dim) + static_cast<size_t>(I.head_dim) * sizeof(int);
        }
      }
    }
  }
  return b;
}

Status LayerKVCache::read(int seq, int head, int t0, int t1, float* k, float* v) const {
  const Impl& I = *impl_;
  const int n = n_tokens(seq);
  if (head < 0 || head >= I.n_kv_heads) return invalid_argument("head out of range");
  if (t0 < 0 || t1 > n || t0 > t1) return out_of_range("read range outside the sequence");
  if (t0 == t1) return Status::Ok();
  const SeqState& s = I.seqs.at(seq);
  const HeadStore& hs = s.heads[head];
  const int d = I.head_dim, S = I.sinks(), W = I.window(), P = I.page();
  float* out[kStreams] = {k, v};
  std::vector<uint8_t> code(std::max(I.st[kKeys].code_size, I.st[kValues].code_size));
  for (int t = t0; t < t1; ++t)
    for (int st = 0; st < kStreams; ++st) {
      const StreamConfig& sc = I.st[st];
      const StreamStore& ss = hs.s[st];
      float* o = out[st] + static_cast<size_t>(t - t0) * d;
      if (t < S) {
        from_f16(&ss.sink[static_cast<size_t>(t) * d], d, o);
      } else if (t < S + s.n_comp) {
        const int c = t - S;
        const uint8_t* page = ss.pages[c / P];
        if (sc.pk) {
          hs.pk->codec[st]->decode(page + static_cast<size_t>(c % P) * sc.code_size, 1, o);
        } else if (sc.outlier) {
          hs.pk->outlier->quantizer[st]->decode(page + static_cast<size_t>(c % P) * sc.code_size, 1, o);
        } else if (sc.tiled) {
          sc.lay.gather(page + static_cast<size_t>((c % P) / kTileTokens) * sc.lay.tile_bytes, c % kTileTokens,
                        code.data());
          sc.q[head]->decode(code.data(), 1, o);
        } else {
          sc.q[head]->decode(page + static_cast<size_t>(c % P) * sc.code_size, 1, o);
        }
      } else if (t < S + s.n_comp + s.n_pend) {
        from_f16(&hs.pk->pend[st][static_cast<size_t>(t - S - s.n_comp) * d], d, o);
      } else {
        from_f16(&ss.win[static_cast<size_t>(t % W) * d], d, o);
      }
    }
  return Status::Ok();
}

// ---- attention: thin wrappers around tqkv::attend (the implementation is src/attention) ----

Status LayerKVCache::attend(int seq, int m, int n_q_heads, const HeadTokenView& q,
                            const MutableHeadTokenView& out, const AttentionOptions& options) const {
  return attend_batch({Request{seq, m, q, out}}, n_q_heads, options);
}

Status LayerKVCache::attend_batch(const std::vector<Request>& reqs, int n_q_heads,
                                  const AttentionOptions& options) const {
  std::vector<AttentionQuery> queries;
  queries.reserve(reqs.size());
  for (const Request& r : reqs) {
    if (r.seq < 0) return invalid_argument("attend: sequence id must be >= 0, got " + std::to_string(r.seq));
    queries.push_back(AttentionQuery{sequence_view(r.seq), r.m, r.q, r.out, 0});
  }
  return tqkv::attend(view(), AttentionParams{queries.data(), queries.size(), n_q_heads, options});
}

// ---- model level ----------------------------------------------------------------------------

std::string cache_method_names() { return format::method_names(); }

StatusOr<ModelCacheConfig> cache_config_from_method(const std::string& method, int key_bits,
                                                    int residuals, int value_bits, bool use_hadamard) {
  const format::MethodRow* row = format::find_method(method);
  if (row == nullptr)
    return invalid_argument("unknown cache method '" + method + "'; known: " + format::method_names());
  if (row->value_bits_mask != 0 && (value_bits < 0 || value_bits >= 32 || !(row->value_bits_mask >> value_bits & 1)))
    return invalid_argument("value bits must be 2 or 4, got " + std::to_string(value_bits));
  ModelCacheConfig c;
  TQKV_ASSIGN_OR_RETURN(c.base.key_format,
                        parse_format(format::expand_method_pattern(row->key_pattern, key_bits, residuals, value_bits)));
  TQKV_ASSIGN_OR_RETURN(c.base.value_format,
                        parse_format(format::expand_method_pattern(row->value_pattern, key_bits, residuals, value_bits)));
  c.base.quant.use_hadamard = use_hadamard;
  return c;
}

StatusOr<std::unique_ptr<ModelKVCache>> ModelKVCache::make(int n_layers, int n_kv_heads, int head_dim,
                                                           const ModelCacheConfig& config) {
  if (n_kv_heads < 1) return invalid_argument("n_kv_heads must be >= 1, got " + std::to_string(n_kv_heads));
  return make(n_layers, all_kv_heads(n_kv_heads), head_dim, config);
}

StatusOr<std::unique_ptr<ModelKVCache>> ModelKVCache::make(int n_layers, const HeadShard& shard, int head_dim,
                                                           const ModelCacheConfig& config) {
  if (n_layers < 1) return invalid_argument("n_layers must be >= 1");
  TQKV_RETURN_IF_ERROR(validate_head_shard(shard));
  const int n_kv_heads = shard.n_kv_heads;
  auto m = std::make_unique<ModelKVCache>();
  m->n_kv_heads_ = n_kv_heads;
  m->head_dim_ = head_dim;
  for (int l = 0; l < n_layers; ++l) {
    KVCacheOptions o = config.base;
    const bool boundary = l < config.boundary_layers || l >= n_layers - config.boundary_layers;
    if (boundary) {
      o.key_format = config.boundary_key_format;
      o.value_format = config.boundary_value_format;
    }
    for (int st = 0; st < 2; ++st)
      if (static_cast<size_t>(l) < config.layer_pk_basis[st].size()) o.pk_basis[st] = config.layer_pk_basis[st][l];
    TQKV_ASSIGN_OR_RETURN(auto layer, LayerKVCache::make(shard, head_dim, o, l));
    m->layers_.push_back(std::move(layer));
  }
  return m;
}

size_t ModelKVCache::bytes_resident() const {
  size_t b = 0;
  for (const auto& l : layers_) b += l->bytes_resident();
  return b;
}

size_t ModelKVCache::f16_bytes(int seq) const {
  if (layers_.empty()) return 0;
  return layers_.size() * static_cast<size_t>(layers_[0]->n_tokens(seq)) * n_kv_heads_ * head_dim_ * 2 * 2;
}

Status ModelKVCache::truncate(int seq, int n) {
  for (auto& l : layers_) TQKV_RETURN_IF_ERROR(l->truncate(seq, n));
  return Status::Ok();
}

void ModelKVCache::clear() {
  for (auto& l : layers_) l->clear();
}

}  // namespace tqkv
