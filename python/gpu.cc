// tqkv._tqkv._GpuLayerCache: tqkv::CudaLayerCache (include/tqkv/cuda.h) over raw device pointers.
// The torch wrapper python/tqkv/gpu.py checks devices, dtypes, shapes and contiguity and passes
// data_ptr(), the sizes and torch.cuda.current_stream().cuda_stream here as integers, so the
// module never links torch (no dependence on torch's C++ ABI).
//
// Streams: the CUDA backend launches on the legacy default stream. A call given a non-zero stream
// s first makes the default stream wait for the work queued on s (an event recorded on s), then
// makes s wait for the backend's work (an event recorded on the default stream) before returning:
// torch code on s sees the results in order, with no host synchronization.
//
// Built without CUDA (CI) the class exists and construction raises RuntimeError naming the reason
// (the stub backend: src/cuda/cuda_stub.cc).
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bindings.h"
#include "tqkv/cuda.h"
#include "tqkv/head_shard.h"

#ifdef TQKV_PY_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace tqkv::python {
namespace {

struct PyGpuCache {
  std::unique_ptr<CudaLayerCache> cache;
  int device = 0;
  int max_tokens = 0;
  std::string key_format, value_format;
#ifdef TQKV_PY_WITH_CUDA
  cudaEvent_t before = nullptr, after = nullptr;
  ~PyGpuCache() {
    if (before) cudaEventDestroy(before);
    if (after) cudaEventDestroy(after);
  }
#endif
};

#ifdef TQKV_PY_WITH_CUDA
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(e) + ": " +
                             cudaGetErrorString(e));
}
#endif

// Runs `fn` (a call of the backend) ordered after the work queued on `stream` and before the work
// queued on it later (see the file comment). The GIL is released meanwhile.
template <typename Fn>
void on_stream(PyGpuCache& c, uintptr_t stream, Fn&& fn) {
  Status st = Status::Ok();
  {
    py::gil_scoped_release nogil;
#ifdef TQKV_PY_WITH_CUDA
    cuda_check(cudaSetDevice(c.device), "cudaSetDevice");
    auto s = reinterpret_cast<cudaStream_t>(stream);
    if (s) {
      cuda_check(cudaEventRecord(c.before, s), "cudaEventRecord");
      cuda_check(cudaStreamWaitEvent(nullptr, c.before, 0), "cudaStreamWaitEvent");
    }
    st = fn();
    if (st.ok() && s) {
      cuda_check(cudaEventRecord(c.after, nullptr), "cudaEventRecord");
      cuda_check(cudaStreamWaitEvent(s, c.after, 0), "cudaStreamWaitEvent");
    }
#else
    (void)stream;
    st = fn();
#endif
  }
  check(st);
}

CudaDType dtype_of(const std::string& name) {
  if (name == "float32") return CudaDType::kF32;
  if (name == "bfloat16") return CudaDType::kBF16;
  throw py::value_error("GPU cache inputs must be float32 or bfloat16, got " + name);
}

FormatSpec format_of(const std::string& name) { return check(parse_format(name)); }

}  // namespace

void bind_gpu(py::module_& m) {
  m.def("_cuda_available", [] {
    std::string why;
    const bool ok = cuda_available(&why);
    return py::make_tuple(ok, why);
  }, "(available, reason): built with CUDA and a device of compute capability >= 9.0 present");
  m.def("_cuda_device_name", [] { return cuda_device_name(); });

  py::class_<PyGpuCache>(m, "_GpuLayerCache",
                         "One layer's compressed KV cache in GPU memory (tqkv::CudaLayerCache) over raw device "
                         "pointers. Use tqkv.gpu.GpuLayerCache (torch tensors) instead.")
      .def(py::init([](int n_kv_heads, int head_dim, const py::object& config, std::optional<std::string> key_format,
                       std::optional<std::string> value_format, int layer, int n_layers, int max_seqs,
                       int max_tokens, int page_tokens, int device, bool use_hadamard, uint64_t seed,
                       int kv_head_offset, int n_total_kv_heads) {
             if (max_seqs < 1) throw py::value_error("max_seqs must be >= 1, got " + std::to_string(max_seqs));
             if (max_tokens < 1) throw py::value_error("max_tokens must be >= 1, got " + std::to_string(max_tokens));
             if (page_tokens < 16 || page_tokens % 16)
               throw py::value_error("page_tokens must be a positive multiple of 16, got " + std::to_string(page_tokens));
             if (layer < 0) throw py::value_error("layer must be >= 0, got " + std::to_string(layer));
             // Tensor parallelism (tqkv/head_shard.h): the global kv heads [kv_head_offset, + n_kv_heads)
             // of n_total_kv_heads (0 = kv_head_offset + n_kv_heads); rotations follow the global head.
             check(validate_head_shard(HeadShard{kv_head_offset, n_kv_heads,
                                                 n_total_kv_heads ? n_total_kv_heads : std::max(kv_head_offset, 0) + n_kv_heads}));
             CudaCacheConfig cc;
             cc.n_kv_heads = n_kv_heads;
             cc.kv_head_offset = kv_head_offset;
             cc.head_dim = head_dim;
             cc.layer = layer;
             if (!config.is_none()) {
               if (key_format || value_format)
                 throw py::value_error("give either config (a KVCacheConfig) or key_format/value_format, not both");
               const ModelCacheConfig& mc = config.cast<const PyCacheConfig&>().config;
               if (mc.base.recent_window || mc.base.sink_tokens)
                 throw py::value_error("kv_window / kv_sinks (f16 windows) have no GPU path; use 0");
               if (mc.base.keys_pre_rope)
                 throw py::value_error("pre-RoPE key formats (pk*) have no GPU path");
               cc.key_format = mc.base.key_format;
               cc.value_format = mc.base.value_format;
               if (mc.boundary_layers > 0) {
                 if (n_layers < 1 || layer >= n_layers)
                   throw py::value_error("boundary_layers needs n_layers (the model's layer count) > layer");
                 if (layer < mc.boundary_layers || layer >= n_layers - mc.boundary_layers) {
                   cc.key_format = mc.boundary_key_format;
                   cc.value_format = mc.boundary_value_format;
                 }
               }
               cc.quant = mc.base.quant;
             } else {
               cc.key_format = format_of(key_format.value_or("rvq1x2"));
               cc.value_format = format_of(value_format.value_or("tq2"));
               cc.quant.use_hadamard = use_hadamard;
               cc.quant.seed = seed;
             }
             cc.page_tokens = page_tokens;
             cc.max_seqs = max_seqs;
             cc.max_pages_per_seq = (max_tokens + page_tokens - 1) / page_tokens;
             cc.max_pages = cc.max_pages_per_seq * max_seqs;
             auto c = std::make_unique<PyGpuCache>();
             c->device = device;
             c->max_tokens = cc.max_pages_per_seq * page_tokens;
             c->key_format = cc.key_format.name();
             c->value_format = cc.value_format.name();
#ifdef TQKV_PY_WITH_CUDA
             cuda_check(cudaSetDevice(device), "cudaSetDevice");
#endif
             {
               StatusOr<std::unique_ptr<CudaLayerCache>> made = Status::Ok();
               {
                 py::gil_scoped_release nogil;
                 made = CudaLayerCache::make(cc);
               }
               c->cache = check(std::move(made));
             }
#ifdef TQKV_PY_WITH_CUDA
             cuda_check(cudaEventCreateWithFlags(&c->before, cudaEventDisableTiming), "cudaEventCreate");
             cuda_check(cudaEventCreateWithFlags(&c->after, cudaEventDisableTiming), "cudaEventCreate");
#endif
             return c;
           }),
           py::kw_only(), py::arg("n_kv_heads"), py::arg("head_dim"), py::arg("config") = py::none(),
           py::arg("key_format") = py::none(), py::arg("value_format") = py::none(), py::arg("layer") = 0,
           py::arg("n_layers") = 0, py::arg("max_seqs") = 1, py::arg("max_tokens"), py::arg("page_tokens") = 64,
           py::arg("device") = 0, py::arg("use_hadamard") = true, py::arg("seed") = 0x5eed,
           py::arg("kv_head_offset") = 0, py::arg("n_total_kv_heads") = 0)
      .def_property_readonly("key_format", [](const PyGpuCache& c) { return c.key_format; })
      .def_property_readonly("value_format", [](const PyGpuCache& c) { return c.value_format; })
      .def_property_readonly("n_kv_heads", [](const PyGpuCache& c) { return c.cache->config().n_kv_heads; })
      .def_property_readonly("kv_head_offset", [](const PyGpuCache& c) { return c.cache->config().kv_head_offset; })
      .def_property_readonly("head_dim", [](const PyGpuCache& c) { return c.cache->config().head_dim; })
      .def_property_readonly("max_seqs", [](const PyGpuCache& c) { return c.cache->config().max_seqs; })
      .def_property_readonly("max_tokens", [](const PyGpuCache& c) { return c.max_tokens; })
      .def_property_readonly("device", [](const PyGpuCache& c) { return c.device; })
      .def_property_readonly("bytes_resident", [](const PyGpuCache& c) { return c.cache->bytes_resident(); })
      .def_property_readonly("bytes_per_token_head", [](const PyGpuCache& c) { return c.cache->bytes_per_token_head(); })
      .def("n_tokens", [](const PyGpuCache& c, int seq) { return c.cache->n_tokens(seq); }, py::arg("seq"))
      .def("append",
           [](PyGpuCache& c, const std::vector<int>& seqs, int n, uintptr_t k, uintptr_t v, const std::string& dtype,
              uintptr_t stream) {
             const CudaDType dt = dtype_of(dtype);
             on_stream(c, stream, [&] {
               return c.cache->append(seqs, n, reinterpret_cast<const void*>(k), reinterpret_cast<const void*>(v), dt);
             });
           },
           py::arg("seqs"), py::arg("n"), py::arg("k_ptr"), py::arg("v_ptr"), py::arg("dtype"), py::arg("stream") = 0)
      .def("attend",
           [](PyGpuCache& c, const std::vector<int>& seqs, int m, int n_q_heads, uintptr_t q, uintptr_t out,
              float scale, int n_splits, uintptr_t stream) {
             on_stream(c, stream, [&] {
               return c.cache->attend(seqs, m, n_q_heads, reinterpret_cast<const float*>(q),
                                      reinterpret_cast<float*>(out), scale, n_splits);
             });
           },
           py::arg("seqs"), py::arg("m"), py::arg("n_q_heads"), py::arg("q_ptr"), py::arg("out_ptr"),
           py::arg("scale") = 0.0f, py::arg("n_splits") = 0, py::arg("stream") = 0)
      .def("truncate",
           [](PyGpuCache& c, int seq, int n, uintptr_t stream) {
             on_stream(c, stream, [&] { return c.cache->truncate(seq, n); });
           },
           py::arg("seq"), py::arg("n"), py::arg("stream") = 0)
      .def("read_codes",
           [](PyGpuCache& c, int seq, int head, bool value, int t0, int t1) {
             const auto& cfg = c.cache->config();
             if (head < 0 || head >= cfg.n_kv_heads) throw py::value_error("head out of range");
             if (seq < 0 || seq >= cfg.max_seqs) throw py::value_error("seq out of range");
             if (t0 < 0 || t1 < t0 || t1 > c.cache->n_tokens(seq))
               throw py::value_error("need 0 <= t0 <= t1 <= n_tokens(seq)");
             const Quantizer* q = value ? c.cache->value_quantizer(head) : c.cache->key_quantizer(head);
             py::array_t<uint8_t> out({static_cast<py::ssize_t>(t1 - t0), static_cast<py::ssize_t>(q->code_size())});
             uint8_t* p = out.mutable_data();
             on_stream(c, 0, [&] { return c.cache->read_codes(seq, head, value, t0, t1, p); });
             return out;
           },
           py::arg("seq"), py::arg("head"), py::arg("value"), py::arg("t0"), py::arg("t1"),
           "Per-vector codes (the CPU quantizer's format) of tokens [t0, t1) of one head, copied to the host.")
      .def("decode",
           [](PyGpuCache& c, int seq, int head, bool value, int t0, int t1) {
             const auto& cfg = c.cache->config();
             if (head < 0 || head >= cfg.n_kv_heads) throw py::value_error("head out of range");
             if (seq < 0 || seq >= cfg.max_seqs) throw py::value_error("seq out of range");
             if (t0 < 0 || t1 < t0 || t1 > c.cache->n_tokens(seq))
               throw py::value_error("need 0 <= t0 <= t1 <= n_tokens(seq)");
             const Quantizer* q = value ? c.cache->value_quantizer(head) : c.cache->key_quantizer(head);
             std::vector<uint8_t> codes(static_cast<size_t>(t1 - t0) * q->code_size());
             on_stream(c, 0, [&] { return c.cache->read_codes(seq, head, value, t0, t1, codes.data()); });
             py::array_t<float> out({static_cast<py::ssize_t>(t1 - t0), static_cast<py::ssize_t>(cfg.head_dim)});
             q->decode(codes.data(), static_cast<size_t>(t1 - t0), out.mutable_data());
             return out;
           },
           py::arg("seq"), py::arg("head"), py::arg("value"), py::arg("t0"), py::arg("t1"),
           "float32 [t1 - t0, head_dim]: tokens [t0, t1) of one head as the CPU quantizer decodes the GPU's codes "
           "(the values attention works with), for tests.")
      .def("__repr__", [](const PyGpuCache& c) {
        const auto& cfg = c.cache->config();
        return "<tqkv._GpuLayerCache k=" + c.key_format + " v=" + c.value_format + " layer=" + std::to_string(cfg.layer) +
               " heads=" + std::to_string(cfg.n_kv_heads) + " d=" + std::to_string(cfg.head_dim) +
               " bytes_resident=" + std::to_string(c.cache->bytes_resident()) + ">";
      });
}

}  // namespace tqkv::python
