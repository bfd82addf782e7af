// Prompt-cache files (tqkv/cache_file.h, docs/format.md "Prompt-cache file").
#include "tqkv/cache_file.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cache/layer_cache_impl.h"
#include "core/file_io.h"
#include "tqkv/model.h"

namespace tqkv {
namespace {

constexpr char kMagic[8] = {'T', 'Q', 'K', 'V', 'C', 'A', 'C', 'H'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 32;         // magic, version, n_sections, file_bytes, header_xxh64
constexpr size_t kSectionHeaderBytes = 24;  // tag, index, payload_bytes, payload_xxh64
constexpr uint32_t kTagFingerprint = 1, kTagMeta = 2, kTagSequence = 3;
constexpr uint32_t kMaxSequences = 4096;
constexpr uint64_t kMaxFileBytes = uint64_t{64} << 30;

uint64_t xxh(const void* p, size_t n) { return XXH64(p, n, 0); }

// ---- little-endian writer / bounded reader ----------------------------------------------------

struct Out {
  std::vector<uint8_t> b;
  void raw(const void* p, size_t n) { b.insert(b.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n); }
  void u8(uint8_t v) { raw(&v, 1); }
  void u32(uint32_t v) { raw(&v, 4); }
  void i32(int32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void f64(double v) { raw(&v, 8); }
};

struct In {
  const uint8_t* p;
  size_t n, off = 0;
  bool ok = true;
  bool take(void* dst, size_t k) {
    if (!ok || k > n - off) { ok = false; return false; }
    std::memcpy(dst, p + off, k);
    off += k;
    return true;
  }
  uint8_t u8() { uint8_t v = 0; take(&v, 1); return v; }
  uint32_t u32() { uint32_t v = 0; take(&v, 4); return v; }
  int32_t i32() { int32_t v = 0; take(&v, 4); return v; }
  uint64_t u64() { uint64_t v = 0; take(&v, 8); return v; }
  double f64() { double v = 0; take(&v, 8); return v; }
  const uint8_t* span(size_t k) {
    if (!ok || k > n - off) { ok = false; return nullptr; }
    const uint8_t* r = p + off;
    off += k;
    return r;
  }
};

// ---- fingerprint ------------------------------------------------------------------------------

struct StreamPrint {
  uint32_t kind = 0;
  int32_t bits = 0, passes = 0;
  uint32_t storage = 0;
  uint64_t code_size = 0, page_bytes = 0, tile_bytes = 0;
  uint8_t use_hadamard = 0, norm_correction = 0, pre_rope = 0, residual_codebook = 0;
  uint64_t quant_seed = 0, codec_hash = 0;
  bool operator==(const StreamPrint&) const = default;
};

struct Fingerprint {
  std::string arch;
  int32_t n_layers = 0, n_kv_heads = 0, head_dim = 0, page_tokens = 0, sink_tokens = 0, recent_window = 0;
  uint64_t tokenizer_hash = 0, weights_hash = 0;
  std::vector<StreamPrint> streams;  // (n_layers, 2): keys then values of each layer
};

// Tokenizer identity: the pieces, special ids, and the ids of a probe text (which depend on the
// scores, token types and merges).
uint64_t tokenizer_hash(const Tokenizer& t) {
  XXH64_state_t* s = XXH64_createState();
  XXH64_reset(s, 0);
  const int32_t head[4] = {t.vocab_size(), t.bos(), t.eos(), t.add_bos() ? 1 : 0};
  XXH64_update(s, head, sizeof head);
  for (int i = 0; i < t.vocab_size(); ++i) {
    const std::string& p = t.piece(i);
    const uint32_t len = static_cast<uint32_t>(p.size());
    XXH64_update(s, &len, 4);
    XXH64_update(s, p.data(), p.size());
  }
  const std::vector<int> ids = t.encode("The quick brown fox, 12 caf\xC3\xA9 <0x41> \xE2\x96\x81\n\tjumps'd.", true);
  XXH64_update(s, ids.data(), ids.size() * sizeof(int));
  const uint64_t h = XXH64_digest(s);
  XXH64_freeState(s);
  return h;
}

// Hash of every head's codes of a fixed probe vector: pins the rotation (seed, Hadamard signs or
// dense basis), the codebooks and the scale rule of each head exactly.
uint64_t codec_hash(const StreamLayout& sl, int n_heads, int d) {
  std::vector<float> x(d);
  for (int i = 0; i < d; ++i) x[i] = std::sin(0.7f * i + 0.3f) * (1.0f + 0.01f * i);
  std::vector<uint8_t> codes(sl.code_size);
  XXH64_state_t* s = XXH64_createState();
  XXH64_reset(s, 0);
  for (int h = 0; h < n_heads; ++h) {
    std::fill(codes.begin(), codes.end(), 0);
    if (sl.heads && sl.heads[h].quantizer) sl.heads[h].quantizer->encode(x.data(), 1, codes.data());
    XXH64_update(s, codes.data(), codes.size());
  }
  const uint64_t r = XXH64_digest(s);
  XXH64_freeState(s);
  return r;
}

Fingerprint fingerprint_of(const Model& model, const ModelKVCache& cache) {
  Fingerprint f;
  const ModelConfig& c = model.config();
  f.arch = c.arch;
  f.n_layers = cache.n_layers();
  const LayerView& L0 = cache.layer(0).view();
  f.n_kv_heads = L0.n_kv_heads;
  f.head_dim = L0.head_dim;
  f.page_tokens = L0.page_tokens;
  f.sink_tokens = L0.sink_tokens;
  f.recent_window = L0.recent_window;
  f.tokenizer_hash = tokenizer_hash(model.tokenizer());
  {  // trained weights: two models of one shape and tokenizer still differ here
    const ModelWeights& w = model.weights();
    XXH64_state_t* s = XXH64_createState();
    XXH64_reset(s, 0);
    if (w.output_norm) XXH64_update(s, w.output_norm, sizeof(float) * size_t(c.dim));
    if (!w.layers.empty() && w.layers[0].attn_norm) XXH64_update(s, w.layers[0].attn_norm, sizeof(float) * size_t(c.dim));
    f.weights_hash = XXH64_digest(s);
    XXH64_freeState(s);
  }
  for (int l = 0; l < cache.n_layers(); ++l) {
    const LayerKVCache& lc = cache.layer(l);
    const LayerView& L = lc.view();
    for (const StreamLayout* sl : {&L.key, &L.value}) {
      StreamPrint p;
      p.kind = static_cast<uint32_t>(sl->format.kind);
      p.bits = sl->format.bits;
      p.passes = sl->format.passes;
      p.storage = sl->storage == KVStorage::kTiles ? (sl->tiles.lut ? 2 : 1) : 0;  // 2: lookup tiles
      p.code_size = sl->code_size;
      p.page_bytes = sl->page_bytes;
      p.tile_bytes = sl->storage == KVStorage::kTiles ? sl->tiles.tile_bytes : 0;
      const QuantOptions& q = lc.options().quant;
      p.use_hadamard = q.use_hadamard;
      p.norm_correction = q.norm_correction;
      p.pre_rope = sl->pre_rope;
      p.residual_codebook = static_cast<uint8_t>(q.residual_codebook);
      p.quant_seed = q.seed;
      p.codec_hash = codec_hash(*sl, L.n_kv_heads, L.head_dim);
      f.streams.push_back(p);
    }
  }
  return f;
}

void put_fingerprint(Out& o, const Fingerprint& f) {
  o.u32(static_cast<uint32_t>(f.arch.size()));
  o.raw(f.arch.data(), f.arch.size());
  for (int32_t v : {f.n_layers, f.n_kv_heads, f.head_dim, f.page_tokens, f.sink_tokens, f.recent_window}) o.i32(v);
  o.u64(f.tokenizer_hash);
  o.u64(f.weights_hash);
  for (const StreamPrint& p : f.streams) {
    o.u32(p.kind); o.i32(p.bits); o.i32(p.passes); o.u32(p.storage);
    o.u64(p.code_size); o.u64(p.page_bytes); o.u64(p.tile_bytes);
    o.u8(p.use_hadamard); o.u8(p.norm_correction); o.u8(p.pre_rope); o.u8(p.residual_codebook);
    o.u64(p.quant_seed); o.u64(p.codec_hash);
  }
}

constexpr size_t kStreamPrintBytes = 4 * 4 + 3 * 8 + 4 + 2 * 8;

// Parses the fingerprint section; the layer count is bounded by the section's own length.
bool get_fingerprint(In& in, Fingerprint* f) {
  const uint32_t alen = in.u32();
  if (alen > 64) return false;
  const uint8_t* a = in.span(alen);
  if (!a) return false;
  f->arch.assign(reinterpret_cast<const char*>(a), alen);
  f->n_layers = in.i32(); f->n_kv_heads = in.i32(); f->head_dim = in.i32();
  f->page_tokens = in.i32(); f->sink_tokens = in.i32(); f->recent_window = in.i32();
  f->tokenizer_hash = in.u64();
  f->weights_hash = in.u64();
  if (!in.ok || f->n_layers < 1 || uint64_t(f->n_layers) * 2 * kStreamPrintBytes != in.n - in.off) return false;
  for (int i = 0; i < 2 * f->n_layers; ++i) {
    StreamPrint p;
    p.kind = in.u32(); p.bits = in.i32(); p.passes = in.i32(); p.storage = in.u32();
    p.code_size = in.u64(); p.page_bytes = in.u64(); p.tile_bytes = in.u64();
    p.use_hadamard = in.u8(); p.norm_correction = in.u8(); p.pre_rope = in.u8(); p.residual_codebook = in.u8();
    p.quant_seed = in.u64(); p.codec_hash = in.u64();
    f->streams.push_back(p);
  }
  return in.ok && in.off == in.n;
}

// One line naming the first difference between the file's fingerprint and this run's.
std::string fingerprint_mismatch(const Fingerprint& file, const Fingerprint& run) {
  auto num = [](const char* what, int64_t a, int64_t b) {
    return std::string(what) + " " + std::to_string(a) + " in the file, " + std::to_string(b) + " here";
  };
  if (file.arch != run.arch) return "another model (architecture '" + file.arch + "' in the file, '" + run.arch + "' here)";
  if (file.n_layers != run.n_layers) return "another model (" + num("layers", file.n_layers, run.n_layers) + ")";
  if (file.n_kv_heads != run.n_kv_heads) return "another model (" + num("kv heads", file.n_kv_heads, run.n_kv_heads) + ")";
  if (file.head_dim != run.head_dim) return "another model (" + num("head_dim", file.head_dim, run.head_dim) + ")";
  if (file.tokenizer_hash != run.tokenizer_hash) return "another tokenizer (vocabulary hash differs)";
  if (file.weights_hash != run.weights_hash) return "another model (same shape, other weights)";
  if (file.page_tokens != run.page_tokens) return "another cache layout (" + num("page tokens", file.page_tokens, run.page_tokens) + ")";
  if (file.sink_tokens != run.sink_tokens) return "another cache layout (" + num("--kv-sinks", file.sink_tokens, run.sink_tokens) + ")";
  if (file.recent_window != run.recent_window)
    return "another cache layout (" + num("--kv-window", file.recent_window, run.recent_window) + ")";
  for (size_t i = 0; i < run.streams.size(); ++i) {
    const StreamPrint &a = file.streams[i], &b = run.streams[i];
    if (a == b) continue;
    const std::string where = std::string("layer ") + std::to_string(i / 2) + (i % 2 ? " values" : " keys");
    if (a.kind != b.kind || a.bits != b.bits || a.passes != b.passes) {
      FormatSpec fa{static_cast<FormatKind>(a.kind), a.bits, a.passes}, fb{static_cast<FormatKind>(b.kind), b.bits, b.passes};
      const bool valid_a = validate_format(fa, run.head_dim).ok();
      return "another cache format (" + where + ": " + (valid_a ? fa.name() : std::string("unknown format")) +
             " in the file, " + fb.name() + " here)";
    }
    if (a.quant_seed != b.quant_seed || a.use_hadamard != b.use_hadamard)
      return "another cache format (" + where + ": other rotation seed or transform)";
    return "another cache format (" + where + ": other codebooks, scales or storage)";
  }
  return "another model";
}

// Bytes of the compressed codes of c tokens of one stream: whole pages, then the used part of
// the last one (whole tiles for tiled storage).
uint64_t used_bytes(const StreamLayout& sl, int c) {
  const uint64_t P = sl.page_tokens, full = c / P, rem = c % P;
  uint64_t b = full * sl.page_bytes;
  if (sl.storage == KVStorage::kTiles) b += (rem + kTileTokens - 1) / kTileTokens * sl.tiles.tile_bytes;
  else b += rem * sl.code_size;
  return b;
}

// Bytes of one sequence's payload after its 16-byte head, for n tokens of which n_comp compressed.
uint64_t sequence_bytes(const ModelKVCache& cache, int n, int n_comp) {
  const LayerView& L0 = cache.layer(0).view();
  const uint64_t d = L0.head_dim, sinks = std::min(n, L0.sink_tokens), win = n - sinks - n_comp;
  uint64_t b = uint64_t(n) * 4;
  for (int l = 0; l < cache.n_layers(); ++l) {
    const LayerView& L = cache.layer(l).view();
    for (const StreamLayout* sl : {&L.key, &L.value})
      b += uint64_t(L.n_kv_heads) * (used_bytes(*sl, n_comp) + (sinks + win) * d * 2);
  }
  return b;
}

void section(Out& o, uint32_t tag, uint32_t index, const std::vector<uint8_t>& payload) {
  o.u32(tag);
  o.u32(index);
  o.u64(payload.size());
  o.u64(xxh(payload.data(), payload.size()));
  o.raw(payload.data(), payload.size());
}

}  // namespace

// Access to LayerKVCache's storage for restoring a sequence (friend of LayerKVCache).
class CacheFileAccess {
 public:
  // Replaces `seq` of `c` with n tokens (n_comp compressed) read from `in` in the file's order.
  // The caller has checked that `in` holds exactly the bytes this needs.
  static void restore(LayerKVCache& c, int seq, int n, int n_comp, In& in) {
    LayerKVCache::Impl& I = *c.impl_;
    const LayerView& L = I.view;
    const int d = I.head_dim, S = I.sinks(), W = I.window();
    const int sinks = std::min(n, S);
    SeqState& s = I.seqs[seq];
    s = SeqState{};
    s.heads.resize(I.n_kv_heads);
    for (int h = 0; h < I.n_kv_heads; ++h)
      for (int st = 0; st < kStreams; ++st) {
        const StreamLayout& sl = st == kKeys ? L.key : L.value;
        StreamStore& ss = s.heads[h].s[st];
        uint64_t left = used_bytes(sl, n_comp);
        const int pages = (n_comp + L.page_tokens - 1) / L.page_tokens;
        for (int p = 0; p < pages; ++p) {
          ss.add_page(sl.page_bytes);  // zero-filled
          const size_t k = static_cast<size_t>(std::min<uint64_t>(left, sl.page_bytes));
          in.take(ss.pages.back(), k);
          left -= k;
        }
        if (sinks > 0) {
          ss.sink.assign(static_cast<size_t>(S) * d, 0);
          in.take(ss.sink.data(), static_cast<size_t>(sinks) * d * 2);
        }
        if (W > 0 && n > S) {
          ss.win.assign(static_cast<size_t>(W) * d, 0);
          for (int t = S + n_comp; t < n; ++t) in.take(&ss.win[static_cast<size_t>(t % W) * d], static_cast<size_t>(d) * 2);
        }
      }
    s.n = n;
    s.n_comp = n_comp;
    s.views.resize(s.heads.size());
    for (size_t h = 0; h < s.heads.size(); ++h) {
      StreamPages* out[kStreams] = {&s.views[h].key, &s.views[h].value};
      for (int k = 0; k < kStreams; ++k) {
        const StreamStore& ss = s.heads[h].s[k];
        *out[k] = StreamPages{ss.pages.data(), static_cast<int>(ss.pages.size()),
                              ss.sink.empty() ? nullptr : ss.sink.data(), ss.win.empty() ? nullptr : ss.win.data()};
      }
    }
  }
};

// pk{b} layers hold per-sequence statistics and pending f16 rows that this file format does not
// carry (yet): refuse them with one line instead of writing or reading an incomplete cache.
static Status refuse_pk(const ModelKVCache& cache) {
  for (int l = 0; l < cache.n_layers(); ++l) {
    const LayerView& L = cache.layer(l).view();
    if (L.key.format.kind == FormatKind::kPk || L.value.format.kind == FormatKind::kPk)
      return unsupported("prompt-cache files do not store pk{b} caches yet (per-sequence key statistics); "
                         "use another cache format with --prompt-cache");
    if (L.key.format.kind == FormatKind::kTqo || L.value.format.kind == FormatKind::kTqo)
      return unsupported("prompt-cache files do not store tqo{h}x{l} caches yet (per-sequence outlier channels); "
                         "use another cache format with --prompt-cache");
  }
  return Status::Ok();
}

StatusOr<CacheFileStats> save_cache_file(const std::string& path, const Model& model, const ModelKVCache& cache,
                                         const CacheFileContents& contents) {
  if (cache.n_layers() < 1) return invalid_argument("cannot save an empty model cache");
  TQKV_RETURN_IF_ERROR(refuse_pk(cache));
  if (contents.sequences.empty() || contents.sequences.size() > kMaxSequences)
    return invalid_argument("a cache file holds 1.." + std::to_string(kMaxSequences) + " sequences");
  const Fingerprint fp = fingerprint_of(model, cache);
  Out body;
  {
    Out f;
    put_fingerprint(f, fp);
    section(body, kTagFingerprint, 0, f.b);
    Out m;
    m.f64(contents.prefill_seconds);
    section(body, kTagMeta, 0, m.b);
  }
  const int d = fp.head_dim;
  uint64_t f16_payload = 0;
  for (size_t i = 0; i < contents.sequences.size(); ++i) {
    const auto& [seq, tokens] = contents.sequences[i];
    const int n = static_cast<int>(tokens.size());
    for (int l = 0; l < cache.n_layers(); ++l)
      if (cache.layer(l).n_tokens(seq) != n)
        return invalid_argument("sequence " + std::to_string(seq) + " holds " + std::to_string(cache.layer(l).n_tokens(seq)) +
                                " tokens in layer " + std::to_string(l) + ", not the " + std::to_string(n) + " tokens given");
    if (n < 1) return invalid_argument("sequence " + std::to_string(seq) + " is empty");
    const SequenceView sv0 = cache.layer(0).sequence_view(seq);
    const int n_comp = sv0.n_compressed, sinks = std::min(n, fp.sink_tokens);
    Out o;
    for (int32_t v : {seq, n, n_comp, 0}) o.i32(v);
    for (int t : tokens) o.i32(t);
    for (int l = 0; l < cache.n_layers(); ++l) {
      const LayerView& L = cache.layer(l).view();
      const SequenceView sv = cache.layer(l).sequence_view(seq);
      if (sv.n_compressed != n_comp) return internal_error("layers disagree on the compressed token count");
      for (int h = 0; h < L.n_kv_heads; ++h)
        for (int st = 0; st < 2; ++st) {
          const StreamLayout& sl = st == 0 ? L.key : L.value;
          const StreamPages& sp = st == 0 ? sv.heads[h].key : sv.heads[h].value;
          uint64_t left = used_bytes(sl, n_comp);
          for (int p = 0; left > 0; ++p) {  // the pages as they are
            if (p >= sp.n_pages) return internal_error("page table shorter than the compressed tokens");
            const size_t k = static_cast<size_t>(std::min<uint64_t>(left, sl.page_bytes));
            o.raw(sp.pages[p], k);
            left -= k;
          }
          if (sinks > 0) o.raw(sp.sink, static_cast<size_t>(sinks) * d * 2);
          for (int t = sinks + n_comp; t < n; ++t)
            o.raw(sp.window + static_cast<size_t>(t % L.recent_window) * d, static_cast<size_t>(d) * 2);
        }
    }
    if (o.b.size() != 16 + sequence_bytes(cache, n, n_comp)) return internal_error("cache file sequence size mismatch");
    section(body, kTagSequence, static_cast<uint32_t>(i), o.b);
    f16_payload += kSectionHeaderBytes + 16 + uint64_t(n) * 4 + uint64_t(cache.n_layers()) * fp.n_kv_heads * 2 * n * d * 2;
  }
  Out head;
  head.raw(kMagic, 8);
  head.u32(kVersion);
  head.u32(static_cast<uint32_t>(2 + contents.sequences.size()));
  head.u64(kHeaderBytes + body.b.size());
  head.u64(xxh(head.b.data(), head.b.size()));
  AtomicFile f;
  TQKV_RETURN_IF_ERROR(f.open(path));
  TQKV_RETURN_IF_ERROR(f.write(head.b.data(), head.b.size()));
  TQKV_RETURN_IF_ERROR(f.write(body.b.data(), body.b.size()));
  TQKV_RETURN_IF_ERROR(f.commit());
  CacheFileStats stats;
  stats.file_bytes = kHeaderBytes + body.b.size();
  // Same header, fingerprint and meta sections; every sequence as f16 K and V of every token.
  size_t fixed = kHeaderBytes;
  {
    In in{body.b.data(), body.b.size()};
    for (int s = 0; s < 2; ++s) {
      in.u32(); in.u32();
      const uint64_t len = in.u64();
      in.u64();
      in.span(static_cast<size_t>(len));
      fixed += kSectionHeaderBytes + static_cast<size_t>(len);
    }
  }
  stats.f16_file_bytes = fixed + static_cast<size_t>(f16_payload);
  return stats;
}

StatusOr<CacheFileContents> load_cache_bytes(const std::vector<uint8_t>& bytes, const std::string& name,
                                             const Model& model, ModelKVCache& cache, int max_tokens) {
  const std::string who = "prompt cache '" + name + "'";
  if (cache.n_layers() < 1) return invalid_argument("cannot load into an empty model cache");
  TQKV_RETURN_IF_ERROR(refuse_pk(cache));
  if (max_tokens <= 0) max_tokens = model.config().context_length;
  if (bytes.size() < kHeaderBytes || std::memcmp(bytes.data(), kMagic, 8) != 0)
    return corrupt(who + " is not a tqkv cache file (bad magic)");
  In in{bytes.data(), bytes.size()};
  in.span(8);
  const uint32_t version = in.u32();
  const uint32_t n_sections = in.u32();
  const uint64_t file_bytes = in.u64();
  const uint64_t head_hash = in.u64();
  if (head_hash != xxh(bytes.data(), 24)) return corrupt(who + ": header checksum mismatch (corrupt file)");
  if (version != kVersion)
    return corrupt(who + " has format version " + std::to_string(version) + "; this build reads version " +
                   std::to_string(kVersion) + " (delete it to recompute)");
  if (file_bytes != bytes.size())
    return corrupt(who + " is " + std::to_string(bytes.size()) + " bytes but its header says " +
                   std::to_string(file_bytes) + (bytes.size() < file_bytes ? " (truncated)" : " (trailing bytes)"));
  if (n_sections < 3 || n_sections > 2 + kMaxSequences)
    return corrupt(who + ": bad section count " + std::to_string(n_sections));
  const Fingerprint run = fingerprint_of(model, cache);
  CacheFileContents out;
  struct Seq { int id, n, n_comp; const uint8_t* data; size_t size; };
  std::vector<Seq> seqs;
  for (uint32_t i = 0; i < n_sections; ++i) {
    const uint32_t tag = in.u32(), index = in.u32();
    const uint64_t len = in.u64(), hash = in.u64();
    if (!in.ok) return corrupt(who + ": truncated section header " + std::to_string(i));
    if (len > in.n - in.off)
      return corrupt(who + ": section " + std::to_string(i) + " claims " + std::to_string(len) + " bytes, " +
                     std::to_string(in.n - in.off) + " remain (sizes do not add up)");
    const uint8_t* p = in.span(static_cast<size_t>(len));
    if (xxh(p, static_cast<size_t>(len)) != hash) return corrupt(who + ": checksum mismatch in section " + std::to_string(i) + " (corrupt file)");
    const uint32_t want = i == 0 ? kTagFingerprint : i == 1 ? kTagMeta : kTagSequence;
    if (tag != want || index != (i < 2 ? 0 : i - 2))
      return corrupt(who + ": section " + std::to_string(i) + " has tag " + std::to_string(tag) + ", expected " + std::to_string(want));
    In s{p, static_cast<size_t>(len)};
    if (tag == kTagFingerprint) {
      Fingerprint f;
      if (!get_fingerprint(s, &f)) return corrupt(who + ": malformed model fingerprint (sizes do not add up)");
      if (f.n_layers != run.n_layers || f.arch != run.arch || f.n_kv_heads != run.n_kv_heads ||
          f.head_dim != run.head_dim || f.tokenizer_hash != run.tokenizer_hash || f.weights_hash != run.weights_hash ||
          f.page_tokens != run.page_tokens ||
          f.sink_tokens != run.sink_tokens || f.recent_window != run.recent_window || !(f.streams == run.streams))
        return invalid_argument(who + " was made for " + fingerprint_mismatch(f, run));
    } else if (tag == kTagMeta) {
      out.prefill_seconds = s.f64();
      if (!s.ok || s.off != s.n || !std::isfinite(out.prefill_seconds))
        return corrupt(who + ": malformed metadata section");
    } else {
      const int id = s.i32(), n = s.i32(), n_comp = s.i32();
      s.i32();
      if (!s.ok) return corrupt(who + ": truncated sequence section " + std::to_string(i));
      if (id < 0 || n < 1 || n > max_tokens)
        return corrupt(who + ": sequence " + std::to_string(id) + " has " + std::to_string(n) + " tokens (1.." +
                       std::to_string(max_tokens) + " allowed)");
      // A consistent cache holds every token past the sinks either compressed or in the window.
      const int after_sinks = std::max(0, n - run.sink_tokens);
      if (n_comp < 0 || n_comp > after_sinks || after_sinks - n_comp > run.recent_window)
        return corrupt(who + ": sequence " + std::to_string(id) + " has an impossible compressed count " + std::to_string(n_comp));
      const uint64_t want_bytes = 16 + sequence_bytes(cache, n, n_comp);
      if (len != want_bytes)
        return corrupt(who + ": sequence " + std::to_string(id) + " section is " + std::to_string(len) + " bytes, " +
                       std::to_string(want_bytes) + " expected for its token counts (sizes do not add up)");
      for (const Seq& q : seqs)
        if (q.id == id) return corrupt(who + ": sequence " + std::to_string(id) + " appears twice");
      std::vector<int> tokens(n);
      s.take(tokens.data(), size_t(n) * 4);
      for (int t : tokens)
        if (t < 0 || t >= model.config().vocab_size)
          return corrupt(who + ": token id " + std::to_string(t) + " outside the vocabulary");
      out.sequences.emplace_back(id, std::move(tokens));
      seqs.push_back({id, n, n_comp, p + s.off, static_cast<size_t>(len) - s.off});
    }
  }
  if (in.off != in.n) return corrupt(who + ": trailing bytes after the last section");
  out.stats.file_bytes = bytes.size();
  out.stats.f16_file_bytes = bytes.size();
  for (const Seq& q : seqs)
    out.stats.f16_file_bytes += uint64_t(cache.n_layers()) * run.n_kv_heads * 2 * q.n * run.head_dim * 2 - q.size;
  // Everything checked: restore (cannot fail from here on).
  for (const Seq& q : seqs) {
    In s{q.data, q.size};
    for (int l = 0; l < cache.n_layers(); ++l) CacheFileAccess::restore(cache.layer(l), q.id, q.n, q.n_comp, s);
    if (!s.ok || s.off != s.n) return internal_error("cache file restore consumed the wrong byte count");
  }
  return out;
}

StatusOr<CacheFileContents> load_cache_file(const std::string& path, const Model& model, ModelKVCache& cache,
                                            int max_tokens) {
  TQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> b, read_file(path, kMaxFileBytes, "prompt cache file"));
  return load_cache_bytes(b, path, model, cache, max_tokens);
}

}  // namespace tqkv
