// tqkv quant-eval: quality of one quantizer configuration on synthetic or user data.
#include <cmath>
#include <cstdio>
#include <memory>

#include "command.h"
#include "core/npy.h"
#include "quant_eval.h"
#include "tqkv/cache_config.h"
#include "tqkv/synthetic.h"

namespace tqkv::cli {

nlohmann::json EvalResult::to_json() const {
  return {{"method", method},
          {"format", format},
          {"bits_per_element", bits_per_element},
          {"compression_vs_f16", compression_vs_f16},
          {"mse", q.mse},
          {"cosine_mean", q.cosine_mean},
          {"cosine_min", q.cosine_min},
          {"snr_db", q.snr_db},
          {"ip_rel_err", q.ip_rel_err},
          {"vectors", q.vectors},
          {"use_hadamard", use_hadamard},
          {"residual_codebook", residual_codebook}};
}

// The key format the cache would use for `method` (one method table: cache_config_from_method).
StatusOr<FormatSpec> format_for_method(const std::string& method, int bits, int residuals) {
  TQKV_ASSIGN_OR_RETURN(ModelCacheConfig c, cache_config_from_method(method, bits, residuals, 2, true));
  return c.base.key_format;
}

StatusOr<EvalResult> evaluate(const std::string& method, const FormatSpec& spec, int dim,
                              const std::vector<float>& data, const QuantOptions& opts) {
  TQKV_ASSIGN_OR_RETURN(auto q, make_quantizer(spec, dim, opts));
  const size_t n = data.size() / dim;
  std::vector<uint8_t> codes(n * q->code_size());
  std::vector<float> dec(data.size());
  q->encode(data.data(), n, codes.data());
  q->decode(codes.data(), n, dec.data());
  EvalResult r;
  r.method = method;
  r.format = spec.name();
  r.bits_per_element = q->bits_per_element();
  r.compression_vs_f16 = 16.0 / r.bits_per_element;
  r.q = measure_quality(data.data(), dec.data(), n, dim, 7);
  r.use_hadamard = spec.rotated() ? opts.use_hadamard : false;
  r.residual_codebook = spec.passes > 1  // only rvq has residual passes
                            ? residual_codebook_name(opts.residual_codebook) : "n/a";
  return r;
}

namespace {

struct Opts {
  std::string method = "turboquant_rvq", data = "gaussian", residual_codebook = "joint";
  int bits = -1, residuals = 2, head_dim = 128;
  long n = 10000;
  uint64_t seed = 1;
  bool no_hadamard = false, no_norm_correction = false, json = false;
};

Status run(const Opts& o) {
  if (o.head_dim < 1) return invalid_argument("--head-dim must be >= 1, got " + std::to_string(o.head_dim));
  if (o.n < 1) return invalid_argument("--n must be >= 1");
  // The evaluation keeps a few copies of the data: bound it to 2^27 floats (512 MiB).
  if (o.head_dim > 65536 || o.n > (long{1} << 27) / o.head_dim)
    return invalid_argument("--n x --head-dim must be <= 2^27 elements and --head-dim <= 65536");
  int bits = o.bits;
  if (bits < 0) bits = o.method == "turboquant_rvq" ? 1 : 2;
  if (o.method == "turboquant_rvq" || o.method == "turboquant_mse") {
    if (bits < 1 || bits > 4) return invalid_argument("--bits must be in 1..4 for " + o.method + ", got " + std::to_string(bits));
    if (o.residuals < 1 || o.residuals > 4) return invalid_argument("--residuals must be in 1..4");
  }
  TQKV_ASSIGN_OR_RETURN(FormatSpec spec, format_for_method(o.method, bits, o.residuals));
  QuantOptions qo;
  qo.use_hadamard = !o.no_hadamard;
  qo.seed = o.seed;
  qo.norm_correction = !o.no_norm_correction;
  TQKV_ASSIGN_OR_RETURN(qo.residual_codebook, parse_residual_codebook(o.residual_codebook));
  int dim = o.head_dim;
  std::vector<float> data;
  if (o.data == "gaussian" || o.data == "llm-like") {
    data.resize(static_cast<size_t>(o.n) * dim);
    if (o.data == "gaussian") generate_gaussian(data.data(), o.n, dim, o.seed);
    else generate_llm_like(data.data(), o.n, dim, o.seed);
  } else {
    TQKV_ASSIGN_OR_RETURN(NpyArray a, read_npy(o.data));
    if (a.shape.size() != 2)
      return invalid_argument(o.data + ": expected a 2-D array (n, head_dim), got " + std::to_string(a.shape.size()) + " dimensions");
    if (a.shape[1] < 1 || a.shape[0] < 1) return invalid_argument(o.data + ": empty array");
    dim = static_cast<int>(a.shape[1]);
    data = std::move(a.data);
    for (size_t i = 0; i < data.size(); ++i)
      if (!std::isfinite(data[i]))
        return invalid_argument(o.data + ": non-finite value (NaN or Inf) at vector " +
                                std::to_string(i / dim) + ", element " + std::to_string(i % dim));
  }
  TQKV_ASSIGN_OR_RETURN(EvalResult r, evaluate(o.method, spec, dim, data, qo));
  nlohmann::json j = r.to_json();
  j["head_dim"] = dim;
  j["data"] = o.data;
  j["n"] = data.size() / dim;
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("method %s  format %s  head_dim %d  n %zu  data %s  hadamard %s  residual codebook %s\n",
                r.method.c_str(), r.format.c_str(), dim, data.size() / dim, o.data.c_str(),
                r.use_hadamard ? "on" : "off", r.residual_codebook.c_str());
    std::printf("bits/elem %.4f  compression vs f16 %.2fx\n", r.bits_per_element, r.compression_vs_f16);
    std::printf("mse %.6f  cosine mean %.6f  min %.6f  snr %.2f dB  ip rel err %.5f\n", r.q.mse,
                r.q.cosine_mean, r.q.cosine_min, r.q.snr_db, r.q.ip_rel_err);
  }
  return Status::Ok();
}

Register reg("quant-eval", "Encode+decode vectors with one format and report quality (mse, cosine, SNR, inner-product error)",
             [](CLI::App& app) {
               auto o = std::make_shared<Opts>();
               app.add_option("--method", o->method, cache_method_names())->capture_default_str();
               app.add_option("--bits", o->bits, "bits per pass (rvq: default 1; tq/kivi: default 2)");
               app.add_option("--residuals", o->residuals, "rvq: total passes (first + residual), 1..4")->capture_default_str();
               app.add_option("--head-dim", o->head_dim, "vector length (ignored for .npy input)")->capture_default_str();
               app.add_option("--n", o->n, "number of vectors (synthetic data)")->capture_default_str();
               app.add_option("--data", o->data, "gaussian | llm-like | FILE.npy (2-D float32/float64 array [n, head_dim])")->capture_default_str();
               app.add_option("--seed", o->seed, "seed of the data and the rotation")->capture_default_str();
               app.add_option("--residual-codebook", o->residual_codebook,
                              "rvq pass design: joint (default) | optimal | laplacian (seed-faithful)")->capture_default_str();
               app.add_flag("--no-hadamard", o->no_hadamard, "disable the randomized Hadamard rotation (ablation)");
               app.add_flag("--no-norm-correction", o->no_norm_correction, "store norm/sqrt(d) instead of the norm-correcting scale");
               app.add_flag("--json", o->json, "print one JSON object");
               return [o]() { return run(*o); };
             });

}  // namespace
}  // namespace tqkv::cli
