// Quantizers on numpy arrays: tqkv.Quantizer, the seed-style TurboQuantRVQ / TurboQuantMSE, the
// Encoded codes object, cosine/quality metrics and the synthetic data generators.
//
// Layout rules (zero-copy where the layout allows):
//  - encode(x): x is float32 or float16, shape [..., head_dim]. float32 rows are read in place when
//    they sit at one constant stride (any C-contiguous array, and slices such as x[:, :, ::2]) or
//    when x is 4-D with a contiguous last axis (Quantizer::encode_tensor, e.g. a transposed view);
//    anything else is copied once. float16 is converted to float32 (a copy) first.
//  - Encoded.codes is a C-contiguous uint8 array (*x.shape[:-1], code_size): the packed codes of
//    docs/format.md, vector i at byte i * code_size, and nothing else (nbytes is honest).
//  - decode writes float32 [..., head_dim] into a new array or into `out` (same layout rules).
//  - The GIL is released while the C++ encode/decode runs.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "bindings.h"
#include "tqkv/codebook.h"
#include "tqkv/format.h"
#include "tqkv/metrics.h"
#include "tqkv/quantizer.h"
#include "tqkv/synthetic.h"

namespace tqkv::python {
namespace {

using Shape = std::vector<py::ssize_t>;

// Everything decode needs besides the codes (the quantizer's deterministic parameters).
struct QuantParams {
  std::string format;
  int head_dim = 0;
  bool use_hadamard = true;
  uint64_t seed = 0;
  std::string residual_codebook;
  bool norm_correction = true;
  bool operator==(const QuantParams&) const = default;
  std::string describe() const {
    return format + " head_dim=" + std::to_string(head_dim) + " use_hadamard=" + (use_hadamard ? "True" : "False") +
           " seed=" + std::to_string(seed) + " residual_codebook=" + residual_codebook +
           " norm_correction=" + (norm_correction ? "True" : "False");
  }
};

struct Encoded {
  py::array_t<uint8_t> codes;  // (*shape[:-1], code_size), C-contiguous
  Shape shape;                 // shape of the encoded array, last axis head_dim
  QuantParams params;
  size_t code_size = 0;
};

py::tuple to_tuple(const Shape& s) {
  py::tuple t(s.size());
  for (size_t i = 0; i < s.size(); ++i) t[i] = s[i];
  return t;
}

// Any array-like as a numpy array (no copy for an ndarray).
py::array as_array(const py::object& x) { return py::module_::import("numpy").attr("asarray")(x); }

// float32 view of `x` (float32 as is; float16 converted); anything else is a TypeError.
py::array as_float32(const py::object& x_obj, const char* what) {
  py::array x = as_array(x_obj);
  if (x.dtype().is(py::dtype::of<float>())) return x;
  if (x.dtype().kind() == 'f' && x.dtype().itemsize() == 2) return x.attr("astype")(py::dtype::of<float>());
  throw py::type_error(std::string(what) + ": expected a float32 or float16 array, got " +
                       py::str(x.dtype()).cast<std::string>() + " (convert with x.astype(numpy.float32))");
}

// The rows (every axis but the last) of `a` at one constant, non-overlapping stride: that stride
// in elements; nullopt when the layout has no such stride (then the caller copies or uses 4-D views).
std::optional<int64_t> uniform_row_stride(const py::array& a, int dim) {
  const int nd = static_cast<int>(a.ndim());
  const py::ssize_t item = a.itemsize();
  if (a.shape(nd - 1) > 1 && a.strides(nd - 1) != item) return std::nullopt;
  int64_t row = dim, next = -1;
  bool first = true;
  for (int i = nd - 2; i >= 0; --i) {
    if (a.shape(i) == 1) continue;
    if (a.strides(i) % item != 0) return std::nullopt;
    const int64_t s = a.strides(i) / item;
    if (first) {
      row = s;
      first = false;
    } else if (s != next) {
      return std::nullopt;
    }
    next = s * a.shape(i);
  }
  if (row < dim) return std::nullopt;  // negative, broadcast (0) or overlapping rows
  return row;
}

// 4-D with a contiguous last axis and element-aligned strides: usable as a TensorView4.
bool tensor4_layout(const py::array& a, int64_t stride[4]) {
  if (a.ndim() != 4) return false;
  const py::ssize_t item = a.itemsize();
  if (a.shape(3) > 1 && a.strides(3) != item) return false;
  for (int i = 0; i < 3; ++i) {
    if (a.strides(i) % item != 0) return false;
    stride[i] = a.strides(i) / item;
  }
  stride[3] = 1;
  return true;
}

class PyQuantizer {
 public:
  PyQuantizer(const std::string& format, int head_dim, bool use_hadamard, uint64_t seed,
              const std::string& residual_codebook, bool norm_correction) {
    const FormatSpec spec = check(parse_format(format));
    check(validate_format(spec, head_dim));
    QuantOptions o;
    o.use_hadamard = use_hadamard;
    o.seed = seed;
    o.residual_codebook = check(parse_residual_codebook(residual_codebook));
    o.norm_correction = norm_correction;
    q_ = check(make_quantizer(spec, head_dim, o));
    params_ = {spec.name(), head_dim, use_hadamard, seed, residual_codebook_name(o.residual_codebook),
               norm_correction};
  }
  PyQuantizer(PyQuantizer&&) = default;
  virtual ~PyQuantizer() = default;

  const Quantizer& q() const { return *q_; }
  const QuantParams& params() const { return params_; }

  Encoded encode(const py::object& x_obj) const {
    const int dim = q_->dim();
    py::array x = as_float32(x_obj, "encode");
    if (x.ndim() < 1) throw py::value_error("encode: expected an array [..., head_dim], got a 0-d array");
    if (x.shape(x.ndim() - 1) != dim)
      throw py::value_error("encode: the last axis has " + std::to_string(x.shape(x.ndim() - 1)) +
                            " elements, the quantizer's head_dim is " + std::to_string(dim));
    Encoded e;
    e.shape.assign(x.shape(), x.shape() + x.ndim());
    e.params = params_;
    e.code_size = q_->code_size();
    Shape code_shape(e.shape.begin(), e.shape.end() - 1);
    code_shape.push_back(static_cast<py::ssize_t>(e.code_size));
    e.codes = py::array_t<uint8_t>(code_shape);
    const size_t n = static_cast<size_t>(x.size() / dim);
    if (n == 0) return e;
    uint8_t* codes = e.codes.mutable_data();
    int64_t st[4];
    if (auto row = uniform_row_stride(x, dim)) {
      const float* p = static_cast<const float*>(x.data());
      py::gil_scoped_release nogil;
      q_->encode(p, n, codes, static_cast<size_t>(*row));
    } else if (tensor4_layout(x, st)) {
      TensorView4 v{static_cast<const float*>(x.data()), {x.shape(0), x.shape(1), x.shape(2), x.shape(3)},
                    {st[0], st[1], st[2], st[3]}};
      Status s;
      {
        py::gil_scoped_release nogil;
        s = q_->encode_tensor(v, codes);
      }
      check(s);
    } else {
      py::array c = py::module_::import("numpy").attr("ascontiguousarray")(x);
      const float* p = static_cast<const float*>(c.data());
      py::gil_scoped_release nogil;
      q_->encode(p, n, codes, dim);
    }
    return e;
  }

  py::array decode(const Encoded& e, std::optional<py::array> out) const {
    if (!(e.params == params_))
      throw py::value_error("decode: these codes were made by a different quantizer (" + e.params.describe() +
                            "; this one is " + params_.describe() + ")");
    const int dim = q_->dim();
    py::array y = out ? *out : py::array(py::array_t<float>(e.shape));
    if (out) {
      if (!y.dtype().is(py::dtype::of<float>())) throw py::type_error("decode: out must be a float32 array");
      if (!y.writeable()) throw py::value_error("decode: out is read-only");
      if (Shape(y.shape(), y.shape() + y.ndim()) != e.shape)
        throw py::value_error("decode: out has shape " + py::str(y.attr("shape")).cast<std::string>() +
                              ", the codes decode to " + py::str(to_tuple(e.shape)).cast<std::string>());
    }
    const size_t n = static_cast<size_t>(y.size() / dim);
    if (n == 0) return y;
    const uint8_t* codes = e.codes.data();
    int64_t st[4];
    if (auto row = uniform_row_stride(y, dim)) {
      float* p = static_cast<float*>(y.mutable_data());
      py::gil_scoped_release nogil;
      q_->decode(codes, n, p, static_cast<size_t>(*row));
    } else if (tensor4_layout(y, st)) {
      MutableTensorView4 v{static_cast<float*>(y.mutable_data()), {y.shape(0), y.shape(1), y.shape(2), y.shape(3)},
                           {st[0], st[1], st[2], st[3]}};
      Status s;
      {
        py::gil_scoped_release nogil;
        s = q_->decode_tensor(codes, v);
      }
      check(s);
    } else {
      throw py::value_error("decode: out's rows are not at one constant stride (pass a contiguous array)");
    }
    return y;
  }

  // Codes from elsewhere (e.g. a saved Encoded.codes): uint8 (..., code_size) from this quantizer.
  Encoded wrap(const py::array& codes_in) const {
    if (!codes_in.dtype().is(py::dtype::of<uint8_t>()))
      throw py::type_error("decode: expected an Encoded object or a uint8 codes array, got " +
                           py::str(codes_in.dtype()).cast<std::string>());
    if (codes_in.ndim() < 1 || codes_in.shape(codes_in.ndim() - 1) != static_cast<py::ssize_t>(q_->code_size()))
      throw py::value_error("decode: a codes array must have shape (..., " + std::to_string(q_->code_size()) +
                            ") for " + params_.format + " at head_dim " + std::to_string(q_->dim()));
    Encoded e;
    e.codes = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>(codes_in);
    e.shape.assign(codes_in.shape(), codes_in.shape() + codes_in.ndim());
    e.shape.back() = q_->dim();
    e.params = params_;
    e.code_size = q_->code_size();
    return e;
  }

 private:
  std::unique_ptr<Quantizer> q_;
  QuantParams params_;
};

// The seed's TurboQuantRVQ: keys rvq{bits}x{num_residuals}, values tq{value_bits}.
class PyTurboQuantRVQ : public PyQuantizer {
 public:
  PyTurboQuantRVQ(int bits, int num_residuals, bool use_hadamard, int head_dim, int value_bits, uint64_t seed,
                  const std::string& residual_codebook, bool norm_correction)
      : PyQuantizer(rvq_name(bits, num_residuals), head_dim, use_hadamard, seed, residual_codebook, norm_correction),
        values_(value_name(value_bits), head_dim, use_hadamard, seed, residual_codebook, norm_correction) {}
  const PyQuantizer& values() const { return values_; }

 private:
  static std::string rvq_name(int bits, int passes) {
    if (bits < 1 || bits > 4) throw py::value_error("bits must be in 1..4, got " + std::to_string(bits));
    if (passes < 1 || passes > 4)
      throw py::value_error("num_residuals (passes in total) must be in 1..4, got " + std::to_string(passes));
    return "rvq" + std::to_string(bits) + "x" + std::to_string(passes);
  }
  static std::string value_name(int value_bits) {
    if (value_bits != 2 && value_bits != 4)
      throw py::value_error("value_bits must be 2 or 4, got " + std::to_string(value_bits));
    return "tq" + std::to_string(value_bits);
  }
  PyQuantizer values_;
};

// Rows of two same-shaped float arrays, C-contiguous float32.
std::pair<py::array, py::array> paired_rows(const py::object& a_in, const py::object& b_in, const char* what) {
  py::array a = as_float32(a_in, what), b = as_float32(b_in, what);
  if (a.ndim() < 1) throw py::value_error(std::string(what) + ": expected arrays [..., head_dim]");
  if (Shape(a.shape(), a.shape() + a.ndim()) != Shape(b.shape(), b.shape() + b.ndim()))
    throw py::value_error(std::string(what) + ": shapes differ: " + py::str(a.attr("shape")).cast<std::string>() +
                          " vs " + py::str(b.attr("shape")).cast<std::string>());
  if (a.shape(a.ndim() - 1) < 1) throw py::value_error(std::string(what) + ": the last axis is empty");
  auto np = py::module_::import("numpy");
  return {np.attr("ascontiguousarray")(a), np.attr("ascontiguousarray")(b)};
}

py::array synthetic(void (*gen)(float*, size_t, int, uint64_t), int64_t n, int dim, uint64_t seed) {
  if (n < 0) throw py::value_error("n must be >= 0, got " + std::to_string(n));
  if (dim < 1) throw py::value_error("head_dim must be >= 1, got " + std::to_string(dim));
  py::array_t<float> x({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(dim)});
  float* p = x.mutable_data();
  {
    py::gil_scoped_release nogil;
    if (n > 0) gen(p, static_cast<size_t>(n), dim, seed);
  }
  return x;
}

}  // namespace

void bind_quantizer(py::module_& m) {
  constexpr uint64_t kSeed = QuantOptions{}.seed;

  py::class_<Encoded>(m, "Encoded",
                      "Packed codes of an array [..., head_dim]: .codes (uint8, (..., code_size)), .shape, "
                      ".nbytes (the codes' bytes, everything included; nothing else is stored).")
      .def_property_readonly("codes", [](const Encoded& e) { return e.codes; })
      .def_property_readonly("shape", [](const Encoded& e) { return to_tuple(e.shape); })
      .def_property_readonly("nbytes", [](const Encoded& e) { return e.codes.nbytes(); })
      .def_property_readonly("format", [](const Encoded& e) { return e.params.format; })
      .def_property_readonly("head_dim", [](const Encoded& e) { return e.params.head_dim; })
      .def_property_readonly("code_size", [](const Encoded& e) { return e.code_size; })
      .def_property_readonly("n_vectors",
                             [](const Encoded& e) { return e.codes.size() / std::max<size_t>(e.code_size, 1); })
      .def_property_readonly("bits_per_element", [](const Encoded& e) { return 8.0 * e.code_size / e.params.head_dim; })
      .def("__repr__", [](const Encoded& e) {
        return "<tqkv.Encoded " + e.params.format + " shape=" + py::str(to_tuple(e.shape)).cast<std::string>() +
               " nbytes=" + std::to_string(e.codes.nbytes()) + ">";
      });

  py::class_<PyQuantizer>(m, "Quantizer",
                          "Quantizer(format, head_dim=128, use_hadamard=True, seed=0x5eed, residual_codebook='joint', "
                          "norm_correction=True)\n\nformat: f32, f16, q8_0, q4_0, rvq{b}x{p}, tq{b}, kivi2, kivi4 "
                          "(docs/format.md). encode(x) takes float32/float16 [..., head_dim] and returns an Encoded; "
                          "decode(enc, out=None) returns float32 [..., head_dim].")
      .def(py::init<const std::string&, int, bool, uint64_t, const std::string&, bool>(), py::arg("format"),
           py::kw_only(), py::arg("head_dim") = 128, py::arg("use_hadamard") = true, py::arg("seed") = kSeed,
           py::arg("residual_codebook") = "joint", py::arg("norm_correction") = true)
      .def_property_readonly("format", [](const PyQuantizer& q) { return q.params().format; })
      .def_property_readonly("head_dim", [](const PyQuantizer& q) { return q.q().dim(); })
      .def_property_readonly("use_hadamard", [](const PyQuantizer& q) { return q.params().use_hadamard; })
      .def_property_readonly("seed", [](const PyQuantizer& q) { return q.params().seed; })
      .def_property_readonly("code_size", [](const PyQuantizer& q) { return q.q().code_size(); },
                             "bytes per encoded vector, scales and padding included")
      .def_property_readonly("bits_per_element", [](const PyQuantizer& q) { return q.q().bits_per_element(); })
      .def("encode", &PyQuantizer::encode, py::arg("x"))
      .def("decode", &PyQuantizer::decode, py::arg("encoded"), py::arg("out") = py::none())
      .def("decode", [](const PyQuantizer& q, const py::array& codes, std::optional<py::array> out) {
             return q.decode(q.wrap(codes), out);
           }, py::arg("codes"), py::arg("out") = py::none())
      .def("__repr__", [](const PyQuantizer& q) { return "<tqkv.Quantizer " + q.params().describe() + ">"; });

  py::class_<PyTurboQuantRVQ, PyQuantizer>(
      m, "TurboQuantRVQ",
      "The seed's TurboQuantRVQ: keys rvq{bits}x{num_residuals} (num_residuals = passes in total), values "
      "tq{value_bits} through encode_values/decode_values.")
      .def(py::init<int, int, bool, int, int, uint64_t, const std::string&, bool>(), py::kw_only(),
           py::arg("bits") = 1, py::arg("num_residuals") = 2, py::arg("use_hadamard") = true,
           py::arg("head_dim") = 128, py::arg("value_bits") = 2, py::arg("seed") = kSeed,
           py::arg("residual_codebook") = "joint", py::arg("norm_correction") = true)
      .def("encode_values", [](const PyTurboQuantRVQ& q, const py::object& v) { return q.values().encode(v); },
           py::arg("values"))
      .def("decode_values", [](const PyTurboQuantRVQ& q, const Encoded& e, std::optional<py::array> out) {
             return q.values().decode(e, out);
           }, py::arg("encoded"), py::arg("out") = py::none())
      .def_property_readonly("value_format", [](const PyTurboQuantRVQ& q) { return q.values().params().format; });

  m.def("TurboQuantMSE",
        [](int bits, bool use_hadamard, int head_dim, uint64_t seed) {
          if (bits < 1 || bits > 4) throw py::value_error("bits must be in 1..4, got " + std::to_string(bits));
          return PyQuantizer("tq" + std::to_string(bits), head_dim, use_hadamard, seed, "joint", true);
        },
        py::kw_only(), py::arg("bits") = 2, py::arg("use_hadamard") = true, py::arg("head_dim") = 128,
        py::arg("seed") = kSeed, "The seed's TurboQuantMSE: a Quantizer of format tq{bits}.");

  m.def("bits_per_element",
        [](const std::string& format, int head_dim) {
          const FormatSpec spec = check(parse_format(format));
          check(validate_format(spec, head_dim));
          return tqkv::bits_per_element(spec, head_dim);
        },
        py::arg("format"), py::arg("head_dim") = 128,
        "Stored bits per element of `format` at `head_dim`, every scale and pad counted.");
  m.def("code_size",
        [](const std::string& format, int head_dim) {
          const FormatSpec spec = check(parse_format(format));
          check(validate_format(spec, head_dim));
          return tqkv::code_size(spec, head_dim);
        },
        py::arg("format"), py::arg("head_dim") = 128, "Bytes of one encoded vector of `format` at `head_dim`.");

  m.def("cosine",
        [](const py::object& x, const py::object& y) -> py::object {
          auto [a, b] = paired_rows(x, y, "cosine");
          const int dim = static_cast<int>(a.shape(a.ndim() - 1));
          Shape lead(a.shape(), a.shape() + a.ndim() - 1);
          py::array_t<double> r(lead);
          const size_t n = static_cast<size_t>(r.size());
          const float* pa = static_cast<const float*>(a.data());
          const float* pb = static_cast<const float*>(b.data());
          double* pr = r.mutable_data();
          {
            py::gil_scoped_release nogil;
            for (size_t i = 0; i < n; ++i) pr[i] = cosine_similarity(pa + i * dim, pb + i * dim, dim);
          }
          if (lead.empty()) return py::float_(pr[0]);
          return r;
        },
        py::arg("x"), py::arg("y"),
        "Cosine similarity of each vector (last axis) of x and y: float64 array of x.shape[:-1] (a float for 1-D "
        "input). Two zero vectors give 1, one zero vector 0.");
  m.def("quality",
        [](const py::object& x, const py::object& x_hat, uint64_t seed) {
          auto [a, b] = paired_rows(x, x_hat, "quality");
          const int dim = static_cast<int>(a.shape(a.ndim() - 1));
          const size_t n = static_cast<size_t>(a.size() / dim);
          const float* pa = static_cast<const float*>(a.data());
          const float* pb = static_cast<const float*>(b.data());
          QualityStats q;
          {
            py::gil_scoped_release nogil;
            q = measure_quality(pa, pb, n, dim, seed);
          }
          py::dict d;
          d["mse"] = q.mse;
          d["cosine_mean"] = q.cosine_mean;
          d["cosine_min"] = q.cosine_min;
          d["snr_db"] = q.snr_db;
          d["ip_rel_err"] = q.ip_rel_err;
          d["vectors"] = q.vectors;
          return d;
        },
        py::arg("x"), py::arg("x_hat"), py::arg("seed") = 7,
        "The quality figures of `tqkv quant-eval` (mse, cosine_mean, cosine_min, snr_db, ip_rel_err, vectors) for a "
        "reconstruction x_hat of x; seed: the random query vectors of ip_rel_err (quant-eval uses 7).");
  m.def("gaussian", [](int64_t n, int dim, uint64_t seed) { return synthetic(generate_gaussian, n, dim, seed); },
        py::arg("n"), py::arg("head_dim") = 128, py::arg("seed") = 1,
        "float32 (n, head_dim) N(0, 1) vectors: the data of `tqkv quant-eval --data gaussian --seed S`.");
  m.def("llm_like", [](int64_t n, int dim, uint64_t seed) { return synthetic(generate_llm_like, n, dim, seed); },
        py::arg("n"), py::arg("head_dim") = 128, py::arg("seed") = 1,
        "float32 (n, head_dim) vectors with LLM-key-like outlier channels: `tqkv quant-eval --data llm-like`.");
}

}  // namespace tqkv::python
