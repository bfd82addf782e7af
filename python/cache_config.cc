// Cache configuration and caches: tqkv.KVCacheConfig (the seed's fields and llama.cpp's
// cache_type_k / cache_type_v), tqkv.KVCacheBuilder.build(model, config) and tqkv.Cache.
// The fields become a tqkv::CacheSettings and go through tqkv::make_cache_config, the function
// the CLI's cache flags use, so a config means the same here and on the command line.
#include <optional>
#include <string>

#include "bindings.h"
#include "tqkv/kv_cache.h"

namespace tqkv::python {

PyCacheConfig cache_config_of(const py::object& kv_cache) {
  if (kv_cache.is_none()) {
    PyCacheConfig c;
    c.config = check(make_cache_config(c.settings));
    return c;
  }
  if (py::isinstance<PyCacheConfig>(kv_cache)) return kv_cache.cast<const PyCacheConfig&>();
  if (py::isinstance<PyCache>(kv_cache)) return kv_cache.cast<const PyCache&>().config;
  throw py::type_error("kv_cache must be a tqkv.Cache (KVCacheBuilder.build), a tqkv.KVCacheConfig or None, got " +
                       py::str(py::type::of(kv_cache)).cast<std::string>());
}

std::unique_ptr<PyCache> build_cache(const std::shared_ptr<PyModel>& model, const PyCacheConfig& config,
                                     int max_tokens) {
  if (max_tokens < 0) throw py::value_error("max_tokens must be >= 0 (0 = the model's context), got " +
                                            std::to_string(max_tokens));
  auto c = std::make_unique<PyCache>();
  c->model = model;
  c->config = config;
  const int ctx_len = model->model->config().context_length;
  c->ctx = check(InferenceContext::make(*model->model, config.config, 256, max_tokens ? max_tokens : ctx_len));
  return c;
}

void bind_cache_config(py::module_& m) {
  py::class_<PyCacheConfig>(
      m, "KVCacheConfig",
      "KVCacheConfig(method=None, bits=1, value_bits=2, num_residuals=2, use_hadamard=True, cache_type_k=None, "
      "cache_type_v=None, kv_window=0, kv_sinks=0, boundary_layers=0, boundary_type='q8_0', "
      "residual_codebook='joint', norm_correction=True, pk_calib=None, pk_basis=None)\n\n"
      "Seed style: method in turboquant_rvq (keys rvq{bits}x{num_residuals}, values tq{value_bits}), "
      "turboquant_mse (tq{bits} / tq{value_bits}), kivi, q8_0, q4_0, f16, f32. llama.cpp style: cache_type_k / "
      "cache_type_v format names, each overriding the method's choice. Neither: f16 keys and values. "
      "pk{b} formats (pre-RoPE keys): pk_calib = N tokens that give the statistics (None = the library's 128; "
      "--pk-calib), pk_basis = 'weights' (code keys in the eigenbasis of the model's key projection), "
      "'weights:B' (block-diagonal, blocks of B channels) or 'none' (--pk-basis). Bad values raise ValueError.")
      .def(py::init([](std::optional<std::string> method, int bits, int value_bits, int num_residuals,
                       bool use_hadamard, std::optional<std::string> cache_type_k,
                       std::optional<std::string> cache_type_v, int kv_window, int kv_sinks, int boundary_layers,
                       const std::string& boundary_type, const std::string& residual_codebook,
                       bool norm_correction, std::optional<int> pk_calib,
                       std::optional<std::string> pk_basis) {
             PyCacheConfig c;
             CacheSettings& s = c.settings;
             s.method = method.value_or("");
             s.key_bits = bits;
             s.value_bits = value_bits;
             s.residuals = num_residuals;
             s.use_hadamard = use_hadamard;
             s.cache_type_k = cache_type_k.value_or("");
             s.cache_type_v = cache_type_v.value_or("");
             s.window = kv_window;
             s.sinks = kv_sinks;
             s.boundary_layers = boundary_layers;
             s.boundary_type = boundary_type;
             s.residual_codebook = residual_codebook;
             s.norm_correction = norm_correction;
             s.pk_calib = pk_calib.value_or(-1);
             if (pk_calib && *pk_calib == -1)  // -1 is CacheSettings' "unset"; refuse it like any value < 1
               throw py::value_error("pk_calib (--pk-calib) must be >= 1, got -1");
             s.pk_basis = pk_basis.value_or("");
             if (pk_basis && pk_basis->empty())
               throw py::value_error("invalid pk_basis (--pk-basis) '': use weights or none");
             c.config = check(make_cache_config(s));
             return c;
           }),
           py::kw_only(), py::arg("method") = py::none(), py::arg("bits") = 1, py::arg("value_bits") = 2,
           py::arg("num_residuals") = 2, py::arg("use_hadamard") = true, py::arg("cache_type_k") = py::none(),
           py::arg("cache_type_v") = py::none(), py::arg("kv_window") = 0, py::arg("kv_sinks") = 0,
           py::arg("boundary_layers") = 0, py::arg("boundary_type") = "q8_0",
           py::arg("residual_codebook") = "joint", py::arg("norm_correction") = true,
           py::arg("pk_calib") = py::none(), py::arg("pk_basis") = py::none())
      .def_property_readonly("key_format", [](const PyCacheConfig& c) { return c.config.base.key_format.name(); })
      .def_property_readonly("value_format", [](const PyCacheConfig& c) { return c.config.base.value_format.name(); })
      .def_property_readonly("method", [](const PyCacheConfig& c) -> py::object {
        return c.settings.method.empty() ? py::object(py::none()) : py::str(c.settings.method);
      })
      .def_property_readonly("bits", [](const PyCacheConfig& c) { return c.settings.key_bits; })
      .def_property_readonly("value_bits", [](const PyCacheConfig& c) { return c.settings.value_bits; })
      .def_property_readonly("num_residuals", [](const PyCacheConfig& c) { return c.settings.residuals; })
      .def_property_readonly("use_hadamard", [](const PyCacheConfig& c) { return c.settings.use_hadamard; })
      .def_property_readonly("kv_window", [](const PyCacheConfig& c) { return c.settings.window; })
      .def_property_readonly("kv_sinks", [](const PyCacheConfig& c) { return c.settings.sinks; })
      .def_property_readonly("boundary_layers", [](const PyCacheConfig& c) { return c.settings.boundary_layers; })
      .def_property_readonly("pk_calib", [](const PyCacheConfig& c) { return c.config.base.pk_calib_tokens; },
                             "tokens whose statistics pk{b} streams use (the library default when not given)")
      .def_property_readonly("pk_basis", [](const PyCacheConfig& c) {
        if (!c.config.pk_weight_basis) return std::string("none");
        return c.config.pk_weight_basis_block > 0 ? "weights:" + std::to_string(c.config.pk_weight_basis_block)
                                                  : std::string("weights");
      }, "the pk{b} keys' channel basis: 'weights', 'weights:B' or 'none'")
      .def("describe", [](const PyCacheConfig& c) { return describe_cache_config(c.config); },
           "The cache as the CLI's JSON names it, e.g. 'k=rvq1x2 v=tq2'.")
      .def("__repr__", [](const PyCacheConfig& c) {
        return "<tqkv.KVCacheConfig " + describe_cache_config(c.config) + ">";
      });

  py::class_<PyCache>(m, "Cache",
                      "A model's compressed KV cache (one sequence), from KVCacheBuilder.build(model, config). "
                      "generate(kv_cache=cache) starts it empty and leaves the prompt and generated tokens in it.")
      .def_property_readonly("bytes_resident", [](const PyCache& c) { return c.ctx->cache().bytes_resident(); },
                             "every byte the cache holds (codes, pages, page tables, windows)")
      .def_property_readonly("f16_bytes", [](const PyCache& c) { return c.ctx->cache().f16_bytes(0); },
                             "bytes the same tokens would take as f16 K and V")
      .def_property_readonly("n_tokens", [](const PyCache& c) { return c.ctx->n_past(); })
      .def_property_readonly("max_tokens", [](const PyCache& c) { return c.ctx->max_tokens(); })
      .def_property_readonly("n_layers", [](const PyCache& c) { return c.ctx->cache().n_layers(); })
      .def_property_readonly("config", [](const PyCache& c) { return c.config; })
      .def("clear", [](PyCache& c) {
        if (c.busy) throw std::runtime_error("the cache is in use by an unfinished generation");
        c.ctx->clear();
      })
      .def("__repr__", [](const PyCache& c) {
        return "<tqkv.Cache " + describe_cache_config(c.config.config) + " tokens=" + std::to_string(c.ctx->n_past()) +
               " bytes_resident=" + std::to_string(c.ctx->cache().bytes_resident()) + ">";
      });

  // The seed's builder: KVCacheBuilder.build(model, config) (for_model is the seed's newer name).
  struct KVCacheBuilder {};
  auto build = [](const std::shared_ptr<PyModel>& model, const py::object& config, int max_tokens) {
    return build_cache(model, cache_config_of(config), max_tokens);
  };
  py::class_<KVCacheBuilder>(m, "KVCacheBuilder", "KVCacheBuilder.build(model, config=None, max_tokens=0) -> Cache")
      .def_static("build", build, py::arg("model"), py::arg("config") = py::none(), py::arg("max_tokens") = 0,
                  "A cache for `model` in the format of `config` (a KVCacheConfig; None = f16), holding up to "
                  "max_tokens tokens (0 = the model's context length).")
      .def_static("for_model", build, py::arg("model"), py::arg("config") = py::none(), py::arg("max_tokens") = 0);
}

}  // namespace tqkv::python
