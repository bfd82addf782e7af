// The `tqkv` Python module: tqkv's quantizers, cache configuration and GGUF runtime over numpy.
// Usage and the seed-compatible names: docs/python.md.
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

PYBIND11_MODULE(tqkv, m) {
  m.doc() =
      "tqkv: KV-cache quantization (TurboQuant RVQ and peers) and a GGUF runtime whose attention reads "
      "the compressed cache. Quickstart: docs/python.md.";
  m.attr("__version__") = "0.1.0";
  tqkv::python::bind_quantizer(m);
  tqkv::python::bind_cache_config(m);
  tqkv::python::bind_model(m);
  tqkv::python::bind_layer_cache(m);
  // Pure-Python submodules (python/tqkv/*.py, copied next to the extension: tqkv.tp, ...). The
  // extension is a single-file module; this makes it a package whose __path__ is the folder
  // "tqkv" beside it, computed on first use (when __file__ is known): `import tqkv.tp` and
  // `tqkv.tp` both work (PEP 562 module __getattr__).
  m.def("__getattr__", [](const std::string& name) -> pybind11::object {
    namespace py = pybind11;
    py::module_ self = py::module_::import("tqkv");
    if (name == "__path__") {
      py::module_ os = py::module_::import("os");
      py::object dir = os.attr("path").attr("join")(os.attr("path").attr("dirname")(self.attr("__file__")), "tqkv");
      py::list path;
      path.append(dir);
      self.attr("__path__") = path;
      return path;
    }
    if (name == "tp") return py::module_::import("importlib").attr("import_module")("tqkv." + name);
    throw py::attribute_error("module 'tqkv' has no attribute '" + name + "'");
  });
}
