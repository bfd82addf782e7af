// The extension `tqkv._tqkv` of the `tqkv` package (python/tqkv/__init__.py re-exports it): tqkv's
// quantizers, cache configuration and GGUF runtime over numpy, and the GPU cache over raw device
// pointers (python/gpu.cc; the torch wrapper is python/tqkv/gpu.py). Usage: docs/python.md.
#include "bindings.h"

namespace tqkv::python {

void raise_status(const Status& s) {
  const std::string& msg = s.message();
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
    case StatusCode::kCorrupt:
      throw py::value_error(msg);
    case StatusCode::kNotFound:
      PyErr_SetString(PyExc_FileNotFoundError, msg.c_str());
      throw py::error_already_set();
    case StatusCode::kIoError:
      PyErr_SetString(PyExc_OSError, msg.c_str());
      throw py::error_already_set();
    default:
      throw std::runtime_error(msg);
  }
}

}  // namespace tqkv::python

PYBIND11_MODULE(_tqkv, m) {
  m.doc() =
      "tqkv: KV-cache quantization (TurboQuant RVQ and peers) and a GGUF runtime whose attention reads "
      "the compressed cache. Quickstart: docs/python.md.";
  m.attr("__version__") = "0.1.0";
  tqkv::python::bind_quantizer(m);
  tqkv::python::bind_cache_config(m);
  tqkv::python::bind_model(m);
  tqkv::python::bind_layer_cache(m);
  tqkv::python::bind_gpu(m);
}
