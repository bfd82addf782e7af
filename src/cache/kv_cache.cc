// LayerKVCache storage (append, truncate, read, accounting) and the model-level cache.
// Attention lives in src/attention/attention.cc.
#include <cstdlib>
#include <cstring>
#include <string>

#include "cache/layer_cache_impl.h"
#include "tqkv/cache_seed.h"
#include "core/check.h"
#include "core/half.h"

namespace tqkv {

void AlignedFree::operator()(uint8_t* p) const { std::free(p); }

namespace {

PageBuf alloc_page(size_t bytes) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  TQKV_CHECK(p != nullptr);
  std::memset(p, 0, rounded);
  return PageBuf(static_cast<uint8_t*>(p));
}

size_t page_alloc_bytes(size_t bytes) { return (bytes + 63) / 64 * 64; }

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

StatusOr<std::unique_ptr<LayerKVCache>> LayerKVCache::make(int n_kv_heads, int head_dim,
                                                           const KVCacheOptions& options, int layer) {
  if (n_kv_heads < 1) return invalid_argument("n_kv_heads must be >= 1, got " + std::to_string(n_kv_heads));
  TQKV_RETURN_IF_ERROR(validate_format(options.key_format, head_dim));
  TQKV_RETURN_IF_ERROR(validate_format(options.value_format, head_dim));
  if (options.page_tokens < 64 || options.page_tokens % 64 != 0)
    return invalid_argument("page_tokens must be a positive multiple of 64, got " + std::to_string(options.page_tokens));
  if (options.recent_window < 0 || options.sink_tokens < 0)
    return invalid_argument("recent_window and sink_tokens must be >= 0");
  auto impl = std::make_unique<Impl>();
  impl->n_kv_heads = n_kv_heads;
  impl->head_dim = head_dim;
  impl->layer = layer;
  impl->opt = options;
  for (int h = 0; h < n_kv_heads; ++h) {
    QuantOptions qk = options.quant, qv = options.quant;
    qk.seed = cache_rotation_seed(options.quant.seed, layer, h, CacheStream::kKey);
    qv.seed = cache_rotation_seed(options.quant.seed, layer, h, CacheStream::kValue);
    TQKV_ASSIGN_OR_RETURN(auto kq, make_quantizer(options.key_format, head_dim, qk));
    TQKV_ASSIGN_OR_RETURN(auto vq, make_quantizer(options.value_format, head_dim, qv));
    impl->keyq.push_back(std::move(kq));
    impl->valq.push_back(std::move(vq));
  }
  impl->ksz = impl->keyq[0]->code_size();
  impl->vsz = impl->valq[0]->code_size();
  impl->kfast = make_tile_layout(*impl->keyq[0], false, &impl->klay);
  impl->vfast = make_tile_layout(*impl->valq[0], true, &impl->vlay);
  const size_t P = options.page_tokens;
  impl->kpage_bytes = impl->kfast ? P / kTileTokens * impl->klay.tile_bytes : P * impl->ksz;
  impl->vpage_bytes = impl->vfast ? P / kTileTokens * impl->vlay.tile_bytes : P * impl->vsz;
  return std::unique_ptr<LayerKVCache>(new LayerKVCache(std::move(impl)));
}

int LayerKVCache::n_kv_heads() const { return impl_->n_kv_heads; }
int LayerKVCache::head_dim() const { return impl_->head_dim; }
const KVCacheOptions& LayerKVCache::options() const { return impl_->opt; }

int LayerKVCache::n_tokens(int seq) const {
  auto it = impl_->seqs.find(seq);
  return it == impl_->seqs.end() ? 0 : it->second.n;
}

Status LayerKVCache::append(int seq, int n, const HeadTokenView& k, const HeadTokenView& v) {
  Impl& I = *impl_;
  if (seq < 0) return invalid_argument("sequence id must be >= 0, got " + std::to_string(seq));
  if (n < 1) return invalid_argument("append needs n >= 1 tokens, got " + std::to_string(n));
  if (k.data == nullptr || v.data == nullptr) return invalid_argument("append: null K or V");
  SeqState& s = I.seqs[seq];
  if (s.heads.empty()) s.heads.resize(I.n_kv_heads);
  const int d = I.head_dim, S = I.sinks(), W = I.window(), P = I.page();
  std::vector<uint8_t> tmp_codes;
  // Ensures pages exist for compressed index c.
  auto ensure = [&](HeadStore& hs, int c) {
    while (static_cast<int>(hs.kpages.size()) <= c / P) {
      hs.kpages.push_back(alloc_page(I.kpage_bytes));
      hs.vpages.push_back(alloc_page(I.vpage_bytes));
    }
  };
  auto put_comp = [&](HeadStore& hs, int h, int c, const float* kx, const float* vx, int count,
                      int64_t kstride, int64_t vstride) {
    // count tokens starting at compressed index c, possibly spanning pages.
    while (count > 0) {
      ensure(hs, c);
      const int in_page = std::min(count, P - c % P);
      uint8_t* kp = hs.kpages[c / P].get();
      uint8_t* vp = hs.vpages[c / P].get();
      if (I.kfast) {
        tmp_codes.resize(static_cast<size_t>(in_page) * I.ksz);
        I.keyq[h]->encode(kx, in_page, tmp_codes.data(), kstride);
        for (int j = 0; j < in_page; ++j) {
          const int slot = c % P + j;
          I.klay.scatter(&tmp_codes[j * I.ksz], (d + 7) / 8, slot % kTileTokens,
                         kp + static_cast<size_t>(slot / kTileTokens) * I.klay.tile_bytes);
        }
      } else {
        I.keyq[h]->encode(kx, in_page, kp + static_cast<size_t>(c % P) * I.ksz, kstride);
      }
      if (I.vfast) {
        tmp_codes.resize(static_cast<size_t>(in_page) * I.vsz);
        I.valq[h]->encode(vx, in_page, tmp_codes.data(), vstride);
        for (int j = 0; j < in_page; ++j) {
          const int slot = c % P + j;
          I.vlay.scatter(&tmp_codes[j * I.vsz], (d + 7) / 8, slot % kTileTokens,
                         vp + static_cast<size_t>(slot / kTileTokens) * I.vlay.tile_bytes);
        }
      } else {
        I.valq[h]->encode(vx, in_page, vp + static_cast<size_t>(c % P) * I.vsz, vstride);
      }
      kx += in_page * kstride;
      vx += in_page * vstride;
      c += in_page;
      count -= in_page;
    }
  };
  const int n0 = s.n;
  for (int h = 0; h < I.n_kv_heads; ++h) {
    HeadStore& hs = s.heads[h];
    int t = n0, i = 0;
    // Sinks.
    for (; i < n && t < S; ++i, ++t) {
      if (hs.sink_k.empty()) { hs.sink_k.resize(static_cast<size_t>(S) * d); hs.sink_v.resize(static_cast<size_t>(S) * d); }
      to_f16(k.at(h, i), d, &hs.sink_k[static_cast<size_t>(t) * d]);
      to_f16(v.at(h, i), d, &hs.sink_v[static_cast<size_t>(t) * d]);
    }
    if (i == n) continue;
    if (W == 0) {
      put_comp(hs, h, s.n_comp, k.at(h, i), v.at(h, i), n - i, k.token_stride, v.token_stride);
      continue;
    }
    if (hs.win_k.empty()) { hs.win_k.resize(static_cast<size_t>(W) * d); hs.win_v.resize(static_cast<size_t>(W) * d); }
    int comp = s.n_comp;  // per-head copy; all heads advance identically
    for (; i < n; ++i, ++t) {
      if (t - (S + comp) == W) {  // window full: compress its oldest token
        const int p = S + comp;
        std::vector<float> kv(2 * d);
        from_f16(&hs.win_k[static_cast<size_t>(p % W) * d], d, kv.data());
        from_f16(&hs.win_v[static_cast<size_t>(p % W) * d], d, kv.data() + d);
        put_comp(hs, h, comp, kv.data(), kv.data() + d, 1, d, d);
        ++comp;
      }
      to_f16(k.at(h, i), d, &hs.win_k[static_cast<size_t>(t % W) * d]);
      to_f16(v.at(h, i), d, &hs.win_v[static_cast<size_t>(t % W) * d]);
    }
    if (h == I.n_kv_heads - 1) s.n_comp = comp;
  }
  if (W == 0) s.n_comp = std::max(0, n0 + n - S);
  s.n = n0 + n;
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
  const size_t pages = (static_cast<size_t>(s.n_comp) + I.page() - 1) / I.page();
  for (HeadStore& hs : s.heads) {
    hs.kpages.resize(std::min(hs.kpages.size(), pages));
    hs.vpages.resize(std::min(hs.vpages.size(), pages));
  }
  if (n == 0) I.seqs.erase(it);
  return Status::Ok();
}

void LayerKVCache::clear() { impl_->seqs.clear(); }

size_t LayerKVCache::bytes_resident() const {
  const Impl& I = *impl_;
  size_t b = 0;
  for (const auto& [id, s] : I.seqs) {
    b += sizeof(SeqState) + s.heads.capacity() * sizeof(HeadStore);
    for (const HeadStore& hs : s.heads) {
      b += hs.kpages.size() * page_alloc_bytes(I.kpage_bytes);
      b += hs.vpages.size() * page_alloc_bytes(I.vpage_bytes);
      b += (hs.kpages.capacity() + hs.vpages.capacity()) * sizeof(PageBuf);
      b += (hs.sink_k.capacity() + hs.sink_v.capacity() + hs.win_k.capacity() + hs.win_v.capacity()) * sizeof(uint16_t);
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
  const int d = I.head_dim, S = I.sinks(), W = I.window();
  for (int t = t0; t < t1; ++t) {
    float* ko = k + static_cast<size_t>(t - t0) * d;
    float* vo = v + static_cast<size_t>(t - t0) * d;
    if (t < S) {
      from_f16(&hs.sink_k[static_cast<size_t>(t) * d], d, ko);
      from_f16(&hs.sink_v[static_cast<size_t>(t) * d], d, vo);
    } else if (t < S + s.n_comp) {
      const int c = t - S;
      std::vector<uint8_t> code(std::max(I.ksz, I.vsz));
      if (I.kfast) {
        I.klay.gather(I.ktile(hs, c), c % kTileTokens, code.data());
        I.keyq[head]->decode(code.data(), 1, ko);
      } else {
        I.keyq[head]->decode(I.kcode(hs, c), 1, ko);
      }
      if (I.vfast) {
        I.vlay.gather(I.vtile(hs, c), c % kTileTokens, code.data());
        I.valq[head]->decode(code.data(), 1, vo);
      } else {
        I.valq[head]->decode(I.vcode(hs, c), 1, vo);
      }
    } else {
      from_f16(&hs.win_k[static_cast<size_t>(t % W) * d], d, ko);
      from_f16(&hs.win_v[static_cast<size_t>(t % W) * d], d, vo);
    }
  }
  return Status::Ok();
}

// ---- model level ----------------------------------------------------------------------------

StatusOr<ModelCacheConfig> cache_config_from_method(const std::string& method, int key_bits,
                                                    int residuals, int value_bits, bool use_hadamard) {
  auto fmt = [](const std::string& n) { return parse_format(n); };
  std::string kn, vn;
  if (method == "turboquant_rvq") {
    kn = "rvq" + std::to_string(key_bits) + "x" + std::to_string(residuals);
    vn = "tq" + std::to_string(value_bits);
  } else if (method == "turboquant_mse") {
    kn = "tq" + std::to_string(key_bits);
    vn = "tq" + std::to_string(value_bits);
  } else if (method == "kivi") {
    kn = "kivi" + std::to_string(key_bits);
    vn = "kivi" + std::to_string(value_bits);
  } else if (method == "q8_0" || method == "q4_0" || method == "f16" || method == "f32") {
    kn = vn = method;
  } else {
    return invalid_argument("unknown cache method '" + method +
                            "'; known: turboquant_rvq, turboquant_mse, kivi, q8_0, q4_0, f16, f32");
  }
  if ((method == "turboquant_rvq" || method == "turboquant_mse") && value_bits != 2 && value_bits != 4)
    return invalid_argument("value bits must be 2 or 4, got " + std::to_string(value_bits));
  ModelCacheConfig c;
  TQKV_ASSIGN_OR_RETURN(c.base.key_format, fmt(kn));
  TQKV_ASSIGN_OR_RETURN(c.base.value_format, fmt(vn));
  c.base.quant.use_hadamard = use_hadamard;
  return c;
}

StatusOr<std::unique_ptr<ModelKVCache>> ModelKVCache::make(int n_layers, int n_kv_heads, int head_dim,
                                                           const ModelCacheConfig& config) {
  if (n_layers < 1) return invalid_argument("n_layers must be >= 1");
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
    TQKV_ASSIGN_OR_RETURN(auto layer, LayerKVCache::make(n_kv_heads, head_dim, o, l));
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
