// Shared by the binding files of the `tqkv` Python module (one file per area: quantizer.cc,
// cache_config.cc, model.cc). The bindings only convert: every computation is the C++ library's.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <utility>

#include "tqkv/cache_settings.h"
#include "tqkv/model.h"
#include "tqkv/status.h"

namespace tqkv::python {

namespace py = pybind11;

// A non-OK Status as the Python exception a user expects: ValueError for bad arguments and
// out-of-range requests, FileNotFoundError / OSError for files, RuntimeError otherwise.
[[noreturn]] void raise_status(const Status& s);

inline void check(const Status& s) {
  if (!s.ok()) raise_status(s);
}
template <typename T>
T check(StatusOr<T> v) {
  if (!v.ok()) raise_status(v.status());
  return std::move(v).value();
}

// tqkv.Model: held by shared_ptr so caches and token streams keep it alive.
struct PyModel {
  std::unique_ptr<Model> model;
  std::string path;
};

// tqkv.KVCacheConfig: the user's words and the config they resolve to (validated on construction).
struct PyCacheConfig {
  CacheSettings settings;
  ModelCacheConfig config;
};

// tqkv.Cache (from KVCacheBuilder.build): one sequence's compressed cache and scratch, for one model.
struct PyCache {
  std::shared_ptr<PyModel> model;
  PyCacheConfig config;
  std::unique_ptr<InferenceContext> ctx;
  bool busy = false;  // a generate() or an unfinished stream is using it
};

// The cache a generate/perplexity call asked for: a Cache, a KVCacheConfig, or None (f16).
PyCacheConfig cache_config_of(const py::object& kv_cache);
std::unique_ptr<PyCache> build_cache(const std::shared_ptr<PyModel>& model, const PyCacheConfig& config,
                                     int max_tokens);

void bind_quantizer(py::module_& m);
void bind_cache_config(py::module_& m);
void bind_model(py::module_& m);
void bind_layer_cache(py::module_& m);
void bind_gpu(py::module_& m);

}  // namespace tqkv::python
