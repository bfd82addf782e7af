// tqkv.Model: a GGUF model with generate (whole text or a token stream) and perplexity/KLD.
// Generation is tqkv::TextGenerator (what `tqkv generate` prints); perplexity is
// tqkv::run_perplexity with the keys of `tqkv perplexity --json`. The GIL is released while the
// model runs.
#include <optional>
#include <string>
#include <vector>

#include "bindings.h"
#include "tqkv/attention.h"
#include "tqkv/generate.h"
#include "tqkv/gguf.h"
#include "tqkv/perplexity.h"

namespace tqkv::python {
namespace {

// Bytes from the model (pieces may split a UTF-8 character) as str; invalid bytes become U+FFFD.
py::str utf8(const std::string& bytes) {
  return py::reinterpret_steal<py::str>(PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()),
                                                             "replace"));
}

// Validated by TextGenerator::make (the CLI's checks).
GenerateOptions generate_options(int max_tokens, float temperature, int top_k, float top_p, uint64_t seed,
                                 int steps) {
  GenerateOptions o;
  o.max_tokens = max_tokens;
  o.steps = steps;
  o.sampler.temperature = temperature;
  o.sampler.top_k = top_k;
  o.sampler.top_p = top_p;
  o.sampler.seed = seed;
  return o;
}

void set_threads(int threads) {
  if (threads < 0 || threads > kMaxThreads)
    throw py::value_error("threads must be between 0 (all) and " + std::to_string(kMaxThreads) + ", got " +
                          std::to_string(threads));
  if (threads > 0) set_runtime_threads(threads);
}

// The cache one generation runs on: the caller's Cache (marked busy), or a new one it owns.
class CacheLease {
 public:
  CacheLease(const std::shared_ptr<PyModel>& model, const py::object& kv_cache, int threads) {
    if (!kv_cache.is_none() && py::isinstance<PyCache>(kv_cache)) {
      cache_obj_ = kv_cache;
      cache_ = &kv_cache.cast<PyCache&>();
      if (cache_->model != model)
        throw py::value_error("kv_cache was built for another model (KVCacheBuilder.build(model, config))");
      if (cache_->busy) throw std::runtime_error("kv_cache is in use by an unfinished generation");
      cache_->busy = true;
    } else {
      owned_ = build_cache(model, cache_config_of(kv_cache), 0);
      cache_ = owned_.get();
    }
    cache_->ctx->set_threads(threads);
  }
  ~CacheLease() { release(); }
  void release() {
    if (cache_) cache_->busy = false;
  }
  InferenceContext* ctx() { return cache_->ctx.get(); }

 private:
  py::object cache_obj_;           // keeps the caller's Cache alive
  PyCache* cache_ = nullptr;
  std::unique_ptr<PyCache> owned_;
};

// Iterator of generated text pieces (str), from Model.stream.
class TokenStream {
 public:
  TokenStream(std::shared_ptr<PyModel> model, const py::object& kv_cache, const std::string& prompt,
              const GenerateOptions& o, int threads, bool echo)
      : model_(std::move(model)), lease_(model_, kv_cache, threads) {
    gen_ = check(TextGenerator::make(*model_->model, lease_.ctx(), prompt, o));
    decoder_ = py::module_::import("codecs").attr("getincrementaldecoder")("utf-8")("replace");
    if (echo) pending_ = gen_->prompt_text();
  }

  py::str next() {
    if (running_) throw std::runtime_error("this stream is being advanced by another thread");
    while (gen_) {
      GeneratedToken t;
      StatusOr<bool> more = false;
      running_ = true;
      {
        py::gil_scoped_release nogil;
        more = gen_->next(&t);
      }
      running_ = false;
      if (!more.ok()) {
        finish();
        raise_status(more.status());
      }
      if (!*more) {
        generated_ = gen_->generated();
        finish();
        break;
      }
      pending_ += t.text;
      py::str s = decoder_.attr("decode")(py::bytes(pending_), false);
      pending_.clear();
      if (py::len(s) > 0) return s;
    }
    py::str rest = decoder_.attr("decode")(py::bytes(pending_), true);
    pending_.clear();
    if (py::len(rest) > 0) return rest;
    throw py::stop_iteration();
  }
  int generated() const { return gen_ ? gen_->generated() : generated_; }

 private:
  void finish() {
    gen_.reset();
    lease_.release();
  }
  std::shared_ptr<PyModel> model_;
  CacheLease lease_;
  std::unique_ptr<TextGenerator> gen_;
  py::object decoder_;
  std::string pending_;
  int generated_ = 0;
  bool running_ = false;  // next() is running without the GIL
};

py::object ppl_value(bool has, double v) { return has ? py::object(py::float_(v)) : py::object(py::none()); }

}  // namespace

void bind_model(py::module_& m) {
  py::class_<TokenStream>(m, "TokenStream", "Iterator of generated text pieces (str), from Model.stream().")
      .def("__iter__", [](TokenStream& s) -> TokenStream& { return s; })
      .def("__next__", &TokenStream::next)
      .def_property_readonly("generated", &TokenStream::generated, "tokens generated so far");

  py::class_<PyModel, std::shared_ptr<PyModel>>(
      m, "Model", "Model(path): a GGUF model (llama, qwen2, qwen3). Weights are mmapped; see docs/runtime.md.")
      .def(py::init([](const std::string& path) {
             auto p = std::make_shared<PyModel>();
             p->path = path;
             StatusOr<std::unique_ptr<Model>> loaded = Status::Ok();
             {
               py::gil_scoped_release nogil;
               loaded = Model::load(path);
             }
             p->model = check(std::move(loaded));
             return p;
           }),
           py::arg("path"))
      .def_property_readonly("path", [](const PyModel& p) { return p.path; })
      .def_property_readonly("config", [](const PyModel& p) {
        const ModelConfig& c = p.model->config();
        py::dict d;
        d["arch"] = c.arch;
        d["dim"] = c.dim;
        d["hidden_dim"] = c.hidden_dim;
        d["n_layers"] = c.n_layers;
        d["n_heads"] = c.n_heads;
        d["n_kv_heads"] = c.n_kv_heads;
        d["head_dim"] = c.head_dim;
        d["vocab_size"] = c.vocab_size;
        d["context_length"] = c.context_length;
        d["rope_freq_base"] = c.rope_freq_base;
        d["rope_scale"] = c.rope_scale;
        d["rope_dim"] = c.rope_dim;
        d["rope_style"] = c.rope_style == RopeStyle::kNeox ? "neox" : "adjacent";
        d["rms_eps"] = c.rms_eps;
        d["qkv_bias"] = c.qkv_bias;
        d["qk_norm"] = c.qk_norm;
        d["tied_output"] = c.tied_output;
        d["has_rope_freqs"] = p.model->weights().rope_freqs != nullptr;
        return d;
      }, "hyper-parameters read from the GGUF")
      .def_property_readonly("tensor_names", [](const PyModel& p) {
        std::vector<std::string> names;
        for (const GgufTensorInfo& t : p.model->gguf().tensors()) names.push_back(t.name);
        return names;
      }, "names of the GGUF's tensors, in file order")
      .def("tensor", [](const PyModel& p, const std::string& name) {
             // A GGUF tensor as float32, numpy order (GGUF dims reversed: a matrix is [rows, cols] with
             // rows = dims[1]), dequantized row by row with tqkv's own dequantize_row.
             const GgufTensorInfo* t = p.model->gguf().find_tensor(name);
             if (!t) throw py::key_error("no tensor '" + name + "' in " + p.path);
             if (!ggml_type_dequantizable(t->type) || t->dims.empty())
               throw py::value_error("tensor '" + name + "' has type " + ggml_type_name(static_cast<uint32_t>(t->type)) +
                                     ", which cannot be dequantized");
             std::vector<py::ssize_t> shape(t->dims.rbegin(), t->dims.rend());
             py::array_t<float> out(shape);
             const int64_t row = t->dims[0], rows = t->n_elements / row;
             int64_t block_elems = 1, block_bytes = 4;
             ggml_type_layout(static_cast<uint32_t>(t->type), &block_elems, &block_bytes);
             const size_t row_bytes = static_cast<size_t>(row / block_elems * block_bytes);
             float* dst = out.mutable_data();
             {
               py::gil_scoped_release nogil;
               for (int64_t r = 0; r < rows; ++r) dequantize_row(t->type, t->data + r * row_bytes, dst + r * row, row);
             }
             return out;
           }, py::arg("name"))
      .def("logits",
           [](const std::shared_ptr<PyModel>& p, const std::vector<int>& tokens, const py::object& kv_cache,
              int threads) {
             // One forward pass over `tokens` from an empty cache: what generate and perplexity compute.
             if (tokens.empty()) throw py::value_error("logits needs at least one token");
             set_threads(threads);
             const PyCacheConfig cc = cache_config_of(kv_cache);
             auto ctx = check(InferenceContext::make(*p->model, cc.config, 256, static_cast<int>(tokens.size())));
             const int V = p->model->config().vocab_size;
             py::array_t<float> out({static_cast<py::ssize_t>(tokens.size()), static_cast<py::ssize_t>(V)});
             float* dst = out.mutable_data();
             Status st = Status::Ok();
             {
               py::gil_scoped_release nogil;
               ctx->set_threads(threads);
               st = ctx->forward(tokens.data(), static_cast<int>(tokens.size()), dst, true);
             }
             check(st);
             return out;
           },
           py::arg("tokens"), py::arg("kv_cache") = py::none(), py::arg("threads") = 0,
           "float32 logits (n, vocab) of every position of `tokens` (one forward pass from an empty cache in the "
           "format of kv_cache: a KVCacheConfig, a Cache's config, or None for f16).")
      .def("tokenize", [](const PyModel& p, const std::string& text, bool add_bos) {
             return p.model->tokenizer().encode(text, add_bos);
           }, py::arg("text"), py::arg("add_bos") = true)
      .def("detokenize", [](const PyModel& p, const std::vector<int>& tokens) {
             const int V = p.model->config().vocab_size;
             for (int t : tokens)
               if (t < 0 || t >= V)
                 throw py::value_error("token id " + std::to_string(t) + " is outside the vocabulary (0.." +
                                       std::to_string(V - 1) + ")");
             return utf8(p.model->tokenizer().decode(tokens));
           }, py::arg("tokens"))
      .def("generate",
           [](const std::shared_ptr<PyModel>& p, const std::string& prompt, int max_tokens, float temperature,
              int top_k, float top_p, uint64_t seed, const py::object& kv_cache, int steps, bool echo, int threads) {
             const GenerateOptions o = generate_options(max_tokens, temperature, top_k, top_p, seed, steps);
             set_threads(threads);
             CacheLease lease(p, kv_cache, threads);
             auto gen = check(TextGenerator::make(*p->model, lease.ctx(), prompt, o));
             std::string text = echo ? gen->prompt_text() : std::string();
             Status err;
             {
               py::gil_scoped_release nogil;
               GeneratedToken t;
               while (true) {
                 StatusOr<bool> more = gen->next(&t);
                 if (!more.ok()) { err = more.status(); break; }
                 if (!*more) break;
                 text += t.text;
               }
             }
             check(err);
             return utf8(text);
           },
           py::arg("prompt"), py::kw_only(), py::arg("max_tokens") = 128, py::arg("temperature") = 0.0f,
           py::arg("top_k") = 40, py::arg("top_p") = 0.95f, py::arg("seed") = 42, py::arg("kv_cache") = py::none(),
           py::arg("steps") = 0, py::arg("echo") = false, py::arg("threads") = 0,
           "The generated text (the prompt too with echo=True: then it is exactly what `tqkv generate` prints, "
           "without the final newline). temperature 0 = greedy. kv_cache: a Cache (KVCacheBuilder.build), a "
           "KVCacheConfig, or None for f16; a Cache is cleared first and holds the tokens afterwards.")
      .def("stream",
           [](const std::shared_ptr<PyModel>& p, const std::string& prompt, int max_tokens, float temperature,
              int top_k, float top_p, uint64_t seed, const py::object& kv_cache, int steps, bool echo, int threads) {
             const GenerateOptions o = generate_options(max_tokens, temperature, top_k, top_p, seed, steps);
             set_threads(threads);
             return std::make_unique<TokenStream>(p, kv_cache, prompt, o, threads, echo);
           },
           py::arg("prompt"), py::kw_only(), py::arg("max_tokens") = 128, py::arg("temperature") = 0.0f,
           py::arg("top_k") = 40, py::arg("top_p") = 0.95f, py::arg("seed") = 42, py::arg("kv_cache") = py::none(),
           py::arg("steps") = 0, py::arg("echo") = false, py::arg("threads") = 0,
           "Like generate, as an iterator of str pieces (a piece can hold several tokens when one character "
           "spans them).")
      .def("perplexity",
           [](const std::shared_ptr<PyModel>& p, const std::string& text, int ctx, int chunks, int batch,
              const py::object& kv_cache, std::optional<std::string> kld_base,
              std::optional<std::string> write_kld_base, int kld_top_k, int threads) {
             if (ctx < 2) throw py::value_error("ctx must be >= 2, got " + std::to_string(ctx));
             set_threads(threads);
             const PyCacheConfig cc = cache_config_of(kv_cache);
             PerplexityOptions o;
             o.ctx = ctx;
             o.max_chunks = chunks;
             o.batch = batch;
             o.kld_in = kld_base.value_or("");
             o.kld_base_out = write_kld_base.value_or("");
             o.kld_top_k = kld_top_k;
             o.threads = threads;
             StatusOr<PerplexityResult> res = Status::Ok();
             {
               py::gil_scoped_release nogil;
               res = run_perplexity(*p->model, cc.config, text, o);
             }
             const PerplexityResult r = check(std::move(res));
             py::dict d;
             d["ppl"] = r.ppl;
             d["ppl_stderr"] = r.ppl_stderr;
             d["tokens"] = r.tokens;
             d["tokens_evaluated"] = r.tokens_evaluated;
             d["chunks"] = r.chunks;
             d["ctx"] = ctx;
             d["kv_bits_per_element"] = r.kv_bits_per_element;
             d["kv_bytes"] = r.kv_bytes;
             d["kv_f16_bytes"] = r.kv_f16_bytes;
             d["cache"] = describe_cache_config(cc.config);
             d["seconds"] = r.seconds;
             d["kld_mean"] = ppl_value(r.has_kld, r.kld_mean);
             d["kld_median"] = ppl_value(r.has_kld, r.kld_median);
             d["kld_p99"] = ppl_value(r.has_kld, r.kld_p99);
             d["kld_max"] = ppl_value(r.has_kld, r.kld_max);
             d["rms_dp"] = ppl_value(r.has_kld, r.rms_dp);
             d["top1_agreement"] = ppl_value(r.has_kld, r.top1_agreement);
             return d;
           },
           py::arg("text"), py::kw_only(), py::arg("ctx") = 512, py::arg("chunks") = -1, py::arg("batch") = 512,
           py::arg("kv_cache") = py::none(), py::arg("kld_base") = py::none(), py::arg("write_kld_base") = py::none(),
           py::arg("kld_top_k") = 32, py::arg("threads") = 0,
           "Perplexity (and KL divergence) with llama-perplexity semantics, as a dict with the keys of "
           "`tqkv perplexity --json`. kv_cache: a KVCacheConfig (or a Cache, for its config; None = f16). "
           "write_kld_base=PATH writes the reference log-probs (--kl-divergence-base); kld_base=PATH compares "
           "against them (--kl-divergence) and fills the kld_* keys.")
      .def("__repr__", [](const PyModel& p) {
        const ModelConfig& c = p.model->config();
        return "<tqkv.Model " + p.path + " " + c.arch + " layers=" + std::to_string(c.n_layers) +
               " head_dim=" + std::to_string(c.head_dim) + ">";
      });

  m.def("read_text_file", [](const std::string& path) { return utf8(check(read_text_file(path))); },
        py::arg("path"), "A text file as str; files ending in .xz are decompressed.");
  m.def("set_threads", [](int t) {
        if (t < 1 || t > kMaxThreads)
          throw py::value_error("threads must be between 1 and " + std::to_string(kMaxThreads) + ", got " +
                                std::to_string(t));
        set_runtime_threads(t);
      }, py::arg("threads"), "Threads of the runtime (OpenMP) for every later call.");
  // mlx_lm-style helpers, so the seed's quickstart keeps its shape: load(path) -> (model, tokenizer).
  m.def("load", [](const std::string& path) {
        py::object model = py::module_::import("tqkv").attr("Model")(path);
        return py::make_tuple(model, model);
      }, py::arg("path"), "(model, tokenizer) like mlx_lm.load; tqkv's Model is its own tokenizer.");
  m.def("generate",
        [](const py::object& model, const py::object& /*tokenizer*/, const std::string& prompt, int max_tokens,
           const py::object& kv_cache, float temperature, uint64_t seed) {
          return model.attr("generate")(prompt, py::arg("max_tokens") = max_tokens,
                                        py::arg("kv_cache") = kv_cache, py::arg("temperature") = temperature,
                                        py::arg("seed") = seed);
        },
        py::arg("model"), py::arg("tokenizer") = py::none(), py::kw_only(), py::arg("prompt"),
        py::arg("max_tokens") = 128, py::arg("kv_cache") = py::none(), py::arg("temperature") = 0.0f,
        py::arg("seed") = 42, "mlx_lm.generate's shape: model.generate(prompt, ...).");
}

}  // namespace tqkv::python
