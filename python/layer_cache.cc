// tqkv.LayerCache (one layer's compressed KV cache, possibly for a subset of heads: tensor
// parallelism), tqkv.HeadShard and tqkv.shard_heads (tqkv/head_shard.h). Append and attention run
// in C++ (LayerKVCache, tqkv::attend) with the GIL released; this file only converts arrays.
//
// Arrays: k, v (n_kv_heads, n, head_dim) and q, out (n_q_heads, m, head_dim), float32 (float16 is
// converted). float32 is read in place when the last axis is contiguous and the strides are whole
// elements (HeadTokenView has a head and a token stride: a [seq, heads, d] tensor transposed to
// [heads, seq, d] needs no copy); other layouts are copied once.
#include <algorithm>
#include <string>
#include <vector>

#include "bindings.h"
#include "tqkv/head_shard.h"
#include "tqkv/kv_cache.h"
#include "tqkv/threads.h"

namespace tqkv::python {
namespace {

struct PyHeadShard {
  HeadShard kv;
  QueryHeadRange q;
};

// float32 3-D array usable as a HeadTokenView (copied when its layout is not).
py::array_t<float> as_heads(const py::object& obj, const char* what) {
  py::array x = py::module_::import("numpy").attr("asarray")(obj);
  const bool f32 = x.dtype().is(py::dtype::of<float>());
  const bool f16 = x.dtype().kind() == 'f' && x.dtype().itemsize() == 2;
  if (!f32 && !f16)
    throw py::type_error(std::string(what) + ": expected a float32 or float16 array, got " +
                         py::str(x.dtype()).cast<std::string>());
  if (x.ndim() != 3)
    throw py::value_error(std::string(what) + ": expected a 3-D array (heads, tokens, head_dim), got " +
                          std::to_string(x.ndim()) + "-D");
  bool in_place = f32 && (x.shape(2) <= 1 || x.strides(2) == 4) && x.strides(0) % 4 == 0 && x.strides(1) % 4 == 0 &&
                  x.strides(0) >= 0 && x.strides(1) >= 0;
  if (in_place) return py::array_t<float>(x);
  return py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(x);
}

HeadTokenView view_of(const py::array_t<float>& a) {
  return HeadTokenView{a.data(), static_cast<int64_t>(a.strides(0) / 4), static_cast<int64_t>(a.strides(1) / 4)};
}

class PyLayerCache {
 public:
  PyLayerCache(int n_kv_heads, int head_dim, const py::object& config, int layer, int n_layers, int kv_head_offset,
               int n_total_kv_heads, int page_tokens) {
    const PyCacheConfig cfg = cache_config_of(config);
    if (layer < 0) throw py::value_error("layer must be >= 0, got " + std::to_string(layer));
    KVCacheOptions o = cfg.config.base;
    const int B = cfg.config.boundary_layers;
    if (B > 0) {
      if (n_layers < 1)
        throw py::value_error("the config has boundary_layers=" + std::to_string(B) +
                              ": pass n_layers (the model's layer count) so the layer knows whether it is one");
      if (layer >= n_layers)
        throw py::value_error("layer " + std::to_string(layer) + " >= n_layers " + std::to_string(n_layers));
      if (layer < B || layer >= n_layers - B) {  // as ModelKVCache::make
        o.key_format = cfg.config.boundary_key_format;
        o.value_format = cfg.config.boundary_value_format;
      }
    }
    if (page_tokens != 0) o.page_tokens = page_tokens;
    const HeadShard s{kv_head_offset, n_kv_heads,
                      n_total_kv_heads != 0 ? n_total_kv_heads : std::max(kv_head_offset, 0) + n_kv_heads};
    cache_ = check(LayerKVCache::make(s, head_dim, o, layer));
    layer_ = layer;
    describe_ = describe_cache_config(cfg.config);
  }

  const LayerKVCache& c() const { return *cache_; }
  LayerKVCache& c() { return *cache_; }

  void append(const py::object& k_obj, const py::object& v_obj, int seq) {
    py::array_t<float> k = as_heads(k_obj, "append: k"), v = as_heads(v_obj, "append: v");
    const int H = cache_->n_kv_heads(), d = cache_->head_dim();
    for (const auto* a : {&k, &v})
      if (a->shape(0) != H || a->shape(2) != d || a->shape(1) != k.shape(1))
        throw py::value_error("append: k and v must both be (n_kv_heads=" + std::to_string(H) + ", n, head_dim=" +
                              std::to_string(d) + "), got k " + shape_str(k) + " and v " + shape_str(v));
    if (k.shape(1) < 1) throw py::value_error("append: n must be >= 1 token");
    if (seq < 0) throw py::value_error("seq must be >= 0, got " + std::to_string(seq));
    Status s;
    {
      py::gil_scoped_release nogil;
      s = cache_->append(seq, static_cast<int>(k.shape(1)), view_of(k), view_of(v));
    }
    check(s);
  }

  py::array_t<float> attend(const py::object& q_obj, int seq, const py::object& out_obj, float scale, int split_tokens,
                            int rope_dims, float rope_base, bool rope_neox, int threads) const {
    py::array_t<float> q = as_heads(q_obj, "attend: q");
    const int H = cache_->n_kv_heads(), d = cache_->head_dim();
    const int nq = static_cast<int>(q.shape(0)), m = static_cast<int>(q.shape(1));
    if (q.shape(2) != d || nq < 1 || nq % H != 0)
      throw py::value_error("attend: q must be (n_q_heads, m, head_dim=" + std::to_string(d) +
                            ") with n_q_heads a positive multiple of the cache's " + std::to_string(H) +
                            " kv heads, got " + shape_str(q));
    if (seq < 0) throw py::value_error("seq must be >= 0, got " + std::to_string(seq));
    if (m < 1 || m > cache_->n_tokens(seq))
      throw py::value_error("attend: m = " + std::to_string(m) + " query tokens, the sequence holds " +
                            std::to_string(cache_->n_tokens(seq)) + " (queries are its last m tokens)");
    if (threads < 0 || threads > kMaxThreads)
      throw py::value_error("threads must be between 0 (all) and " + std::to_string(kMaxThreads));
    py::array_t<float> out;
    if (out_obj.is_none()) {
      out = py::array_t<float>({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(d)});
    } else {
      py::array a = py::module_::import("numpy").attr("asarray")(out_obj);
      if (!a.dtype().is(py::dtype::of<float>()) || a.ndim() != 3 || a.shape(0) != nq || a.shape(1) != m ||
          a.shape(2) != d || !a.writeable() || (d > 1 && a.strides(2) != 4) || a.strides(0) % 4 != 0 ||
          a.strides(1) % 4 != 0)
        throw py::value_error("attend: out must be a writable float32 array shaped like q with a contiguous last axis");
      out = py::array_t<float>(a);
    }
    AttentionOptions o;
    o.scale = scale;
    o.split_tokens = split_tokens;
    o.threads = threads;
    o.rope.rotary_dims = rope_dims;
    o.rope.base = rope_base;
    o.rope.style = rope_neox ? RopeStyle::kNeox : RopeStyle::kAdjacent;
    const MutableHeadTokenView ov{out.mutable_data(), static_cast<int64_t>(out.strides(0) / 4),
                                  static_cast<int64_t>(out.strides(1) / 4)};
    Status s;
    {
      py::gil_scoped_release nogil;
      s = cache_->attend(seq, m, nq, view_of(q), ov, o);
    }
    check(s);
    return out;
  }

  py::tuple read(int head, int t0, std::optional<int> t1_opt, int seq) const {
    const int n = cache_->n_tokens(seq), d = cache_->head_dim();
    const int t1 = t1_opt.value_or(n);
    if (head < 0 || head >= cache_->n_kv_heads())
      throw py::value_error("head must be a local head in [0, " + std::to_string(cache_->n_kv_heads()) + "), got " +
                            std::to_string(head));
    if (t0 < 0 || t1 > n || t0 > t1)
      throw py::value_error("read: tokens [" + std::to_string(t0) + ", " + std::to_string(t1) +
                            ") outside the sequence's " + std::to_string(n));
    py::array_t<float> k({static_cast<py::ssize_t>(t1 - t0), static_cast<py::ssize_t>(d)}), v(k.request().shape);
    check(cache_->read(seq, head, t0, t1, k.mutable_data(), v.mutable_data()));
    return py::make_tuple(k, v);
  }

  // Every byte stored for local head `head` of `seq`: key pages, value pages (page_bytes each, in
  // page-table order), then the f16 sinks, window ring and pending rows of keys, then of values.
  py::bytes stored_bytes(int head, int seq) const {
    if (head < 0 || head >= cache_->n_kv_heads())
      throw py::value_error("head must be a local head in [0, " + std::to_string(cache_->n_kv_heads()) + "), got " +
                            std::to_string(head));
    const LayerView& L = cache_->view();
    const SequenceView sv = cache_->sequence_view(seq);
    std::string b;
    if (sv.heads == nullptr) return py::bytes(b);
    const size_t row = static_cast<size_t>(L.head_dim) * 2;
    const StreamLayout* lay[2] = {&L.key, &L.value};
    const StreamPages* sp[2] = {&sv.heads[head].key, &sv.heads[head].value};
    for (int st = 0; st < 2; ++st)
      for (int p = 0; p < sp[st]->n_pages; ++p)
        b.append(reinterpret_cast<const char*>(sp[st]->pages[p]), lay[st]->page_bytes);
    for (int st = 0; st < 2; ++st) {
      if (sp[st]->sink) b.append(reinterpret_cast<const char*>(sp[st]->sink), row * L.sink_tokens);
      if (sp[st]->window) b.append(reinterpret_cast<const char*>(sp[st]->window), row * L.recent_window);
      if (sp[st]->pending) b.append(reinterpret_cast<const char*>(sp[st]->pending), row * sv.n_pending);
    }
    return py::bytes(b);
  }

  std::string repr() const {
    const HeadShard& s = cache_->shard();
    return "<tqkv.LayerCache layer=" + std::to_string(layer_) + " " + describe_ + " kv_heads=[" +
           std::to_string(s.kv_head_offset) + ", " + std::to_string(s.kv_head_offset + s.n_kv_heads) + ") of " +
           std::to_string(s.n_total_kv_heads) + " head_dim=" + std::to_string(cache_->head_dim()) + ">";
  }
  int layer() const { return layer_; }

 private:
  static std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
  }
  std::unique_ptr<LayerKVCache> cache_;
  int layer_ = 0;
  std::string describe_;
};

}  // namespace

void bind_layer_cache(py::module_& m) {
  py::class_<PyHeadShard>(m, "HeadShard",
                          "The attention heads one tensor-parallel rank holds (tqkv.shard_heads): kv heads "
                          "[kv_head_offset, kv_head_offset + n_kv_heads) and query heads [q_head_offset, "
                          "q_head_offset + n_q_heads) of a layer with n_total_kv_heads / n_total_q_heads heads.")
      .def_property_readonly("kv_head_offset", [](const PyHeadShard& s) { return s.kv.kv_head_offset; })
      .def_property_readonly("n_kv_heads", [](const PyHeadShard& s) { return s.kv.n_kv_heads; })
      .def_property_readonly("n_total_kv_heads", [](const PyHeadShard& s) { return s.kv.n_total_kv_heads; })
      .def_property_readonly("q_head_offset", [](const PyHeadShard& s) { return s.q.offset; })
      .def_property_readonly("n_q_heads", [](const PyHeadShard& s) { return s.q.count; })
      .def_property_readonly("n_total_q_heads", [](const PyHeadShard& s) {
        return s.kv.n_total_kv_heads == 0 ? 0 : s.q.count / s.kv.n_kv_heads * s.kv.n_total_kv_heads;
      })
      .def("__eq__", [](const PyHeadShard& a, const PyHeadShard& b) { return a.kv == b.kv && a.q == b.q; })
      .def("__repr__", [](const PyHeadShard& s) {
        return "<tqkv.HeadShard kv_heads=[" + std::to_string(s.kv.kv_head_offset) + ", " +
               std::to_string(s.kv.kv_head_offset + s.kv.n_kv_heads) + ") of " + std::to_string(s.kv.n_total_kv_heads) +
               " q_heads=[" + std::to_string(s.q.offset) + ", " + std::to_string(s.q.offset + s.q.count) + ")>";
      });

  m.def(
      "shard_heads",
      [](int n_kv_heads, int n_heads, int rank, int world_size) {
        PyHeadShard s;
        s.kv = check(shard_kv_heads(n_kv_heads, rank, world_size));
        s.q = check(shard_query_heads(s.kv, n_heads));
        return s;
      },
      py::arg("n_kv_heads"), py::arg("n_heads"), py::arg("rank"), py::arg("world_size"),
      "The heads of tensor-parallel rank `rank` of `world_size` for a layer of n_heads query heads and n_kv_heads "
      "kv heads: contiguous blocks in rank order (balanced when world_size does not divide n_kv_heads), each kv "
      "head with its GQA group of query heads. ValueError when world_size > n_kv_heads or rank is out of range.");

  py::class_<PyLayerCache>(
      m, "LayerCache",
      "LayerCache(n_kv_heads, head_dim, config=None, *, layer=0, n_layers=0, kv_head_offset=0, n_total_kv_heads=0, "
      "page_tokens=0)\n\n"
      "One layer's compressed KV cache (any number of sequences), in the formats of `config` (a KVCacheConfig; "
      "None = f16). For tensor parallelism it holds the global kv heads [kv_head_offset, kv_head_offset + "
      "n_kv_heads) of a layer of n_total_kv_heads (0 = kv_head_offset + n_kv_heads): every per-head rotation is "
      "derived from (config seed, layer, GLOBAL head), so the shards store exactly the unsharded cache's bytes for "
      "their heads. n_layers is needed when the config has boundary_layers. Heads are numbered locally (0 .. "
      "n_kv_heads - 1) in every call.")
      .def(py::init<int, int, const py::object&, int, int, int, int, int>(), py::arg("n_kv_heads"),
           py::arg("head_dim"), py::arg("config") = py::none(), py::kw_only(), py::arg("layer") = 0,
           py::arg("n_layers") = 0, py::arg("kv_head_offset") = 0, py::arg("n_total_kv_heads") = 0,
           py::arg("page_tokens") = 0)
      .def("append", &PyLayerCache::append, py::arg("k"), py::arg("v"), py::arg("seq") = 0,
           "Appends n tokens: k, v (n_kv_heads, n, head_dim). Keys after RoPE, or before it when keys_pre_rope.")
      .def("attend", &PyLayerCache::attend, py::arg("q"), py::arg("seq") = 0, py::arg("out") = py::none(),
           py::kw_only(), py::arg("scale") = 0.0f, py::arg("split_tokens") = 0, py::arg("rope_dims") = 0,
           py::arg("rope_base") = 10000.0f, py::arg("rope_neox") = false, py::arg("threads") = 0,
           "Causal attention of the last m tokens of `seq`: q (n_q_heads, m, head_dim) after RoPE, n_q_heads a "
           "multiple of n_kv_heads (query head j reads kv head j // (n_q_heads // n_kv_heads)). Returns (or fills "
           "`out`) float32 (n_q_heads, m, head_dim). scale 0 = 1/sqrt(head_dim); split_tokens 0 = automatic; "
           "rope_* are needed when keys_pre_rope (the RoPE attention applies to the stored keys).")
      .def("read", &PyLayerCache::read, py::arg("head"), py::arg("t0") = 0, py::arg("t1") = py::none(),
           py::arg("seq") = 0, "Decoded (k, v) of local head `head`, tokens [t0, t1), float32 (t1 - t0, head_dim).")
      .def("stored_bytes", &PyLayerCache::stored_bytes, py::arg("head"), py::arg("seq") = 0,
           "Every byte stored for local head `head` of `seq` (pages, then f16 sinks/window/pending rows): equal "
           "for a shard's head and the unsharded cache's head kv_head_offset + head.")
      .def("n_tokens", [](const PyLayerCache& c, int seq) { return c.c().n_tokens(seq); }, py::arg("seq") = 0)
      .def("truncate", [](PyLayerCache& c, int seq, int n) { check(c.c().truncate(seq, n)); }, py::arg("seq"),
           py::arg("n"), "Drops tokens n.. of `seq`.")
      .def("clear", [](PyLayerCache& c) { c.c().clear(); })
      .def_property_readonly("bytes_resident", [](const PyLayerCache& c) { return c.c().bytes_resident(); })
      .def("f16_bytes", [](const PyLayerCache& c, int seq) {
             return static_cast<size_t>(c.c().n_tokens(seq)) * c.c().n_kv_heads() * c.c().head_dim() * 2 * 2;
           }, py::arg("seq") = 0, "bytes the sequence's tokens would take as f16 K and V")
      .def_property_readonly("n_kv_heads", [](const PyLayerCache& c) { return c.c().n_kv_heads(); })
      .def_property_readonly("head_dim", [](const PyLayerCache& c) { return c.c().head_dim(); })
      .def_property_readonly("kv_head_offset", [](const PyLayerCache& c) { return c.c().shard().kv_head_offset; })
      .def_property_readonly("n_total_kv_heads", [](const PyLayerCache& c) { return c.c().shard().n_total_kv_heads; })
      .def_property_readonly("layer", &PyLayerCache::layer)
      .def_property_readonly("keys_pre_rope", [](const PyLayerCache& c) { return c.c().keys_pre_rope(); })
      .def_property_readonly("key_format", [](const PyLayerCache& c) { return c.c().options().key_format.name(); })
      .def_property_readonly("value_format", [](const PyLayerCache& c) { return c.c().options().value_format.name(); })
      .def("__repr__", &PyLayerCache::repr);
}

}  // namespace tqkv::python
