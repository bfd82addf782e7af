// tqkv demo: the quality table of the default configuration and its alternatives (a few seconds).
#include <chrono>
#include <cstdio>
#include <memory>

#include "command.h"
#include "quant_eval.h"
#include "tqkv/synthetic.h"

namespace tqkv::cli {
namespace {

struct Row {
  const char* label;
  const char* method;
  const char* format;
  bool hadamard;
  ResidualCodebook rc;
};

Status run(int dim, long n, bool json) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<float> data(static_cast<size_t>(n) * dim);
  generate_llm_like(data.data(), n, dim, 1);
  const Row rows[] = {
      {"f16 (baseline)", "f16", "f16", false, ResidualCodebook::kJoint},
      {"q8_0 (llama.cpp)", "q8_0", "q8_0", false, ResidualCodebook::kJoint},
      {"q4_0 (llama.cpp)", "q4_0", "q4_0", false, ResidualCodebook::kJoint},
      {"kivi4", "kivi", "kivi4", false, ResidualCodebook::kJoint},
      {"kivi2", "kivi", "kivi2", false, ResidualCodebook::kJoint},
      {"tq4 (TurboQuant-MSE)", "turboquant_mse", "tq4", true, ResidualCodebook::kJoint},
      {"tq2 (TurboQuant-MSE)", "turboquant_mse", "tq2", true, ResidualCodebook::kJoint},
      {"rvq2x2 joint", "turboquant_rvq", "rvq2x2", true, ResidualCodebook::kJoint},
      {"rvq2x2 laplacian (seed)", "turboquant_rvq", "rvq2x2", true, ResidualCodebook::kLaplacian},
      {"rvq1x2 joint (DEFAULT K)", "turboquant_rvq", "rvq1x2", true, ResidualCodebook::kJoint},
      {"rvq1x2 laplacian (seed)", "turboquant_rvq", "rvq1x2", true, ResidualCodebook::kLaplacian},
      {"rvq1x2 joint, no Hadamard", "turboquant_rvq", "rvq1x2", false, ResidualCodebook::kJoint},
  };
  nlohmann::json out = nlohmann::json::array();
  if (!json) {
    std::printf("tqkv demo: %ld llm-like key vectors (head_dim %d, outlier channels; see tqkv/synthetic.h)\n", n, dim);
    std::printf("%-28s %9s %8s %9s %8s %8s\n", "format", "bits/el", "vs f16", "cosine", "SNR dB", "ip err");
  }
  double bits_k = 0;
  for (const Row& row : rows) {
    TQKV_ASSIGN_OR_RETURN(FormatSpec spec, parse_format(row.format));
    QuantOptions qo;
    qo.use_hadamard = row.hadamard;
    qo.residual_codebook = row.rc;
    TQKV_ASSIGN_OR_RETURN(EvalResult r, evaluate(row.method, spec, dim, data, qo));
    if (std::string(row.label).find("DEFAULT") != std::string::npos) bits_k = r.bits_per_element;
    nlohmann::json j = r.to_json();
    j["label"] = row.label;
    out.push_back(j);
    if (!json)
      std::printf("%-28s %9.3f %7.2fx %9.5f %8.2f %8.4f\n", row.label, r.bits_per_element,
                  r.compression_vs_f16, r.q.cosine_mean, r.q.snr_db, r.q.ip_rel_err);
  }
  // The default value format: tq2 (2-bit rotated Lloyd-Max).
  const double bits_v = bits_per_element(*parse_format("tq2"), dim);
  const double kv_bits = 0.5 * (bits_k + bits_v);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (json) {
    nlohmann::json j = {{"rows", out}, {"default_kv_bits_per_element", kv_bits},
                        {"default_kv_compression_vs_f16", 16.0 / kv_bits}, {"seconds", secs}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("\nDefault cache (keys rvq1x2, values tq2): %.3f bits per K+V element, %.2fx smaller than f16 "
                "(every norm and scale counted).\n", kv_bits, 16.0 / kv_bits);
    std::printf("(%.1f s)\n", secs);
  }
  return Status::Ok();
}

Register reg("demo", "Quality table of the default TurboQuant RVQ configuration and alternatives on llm-like data",
             [](CLI::App& app) {
               auto dim = std::make_shared<int>(128);
               auto n = std::make_shared<long>(8192);
               auto json = std::make_shared<bool>(false);
               app.add_option("--head-dim", *dim, "vector length")->capture_default_str();
               app.add_option("--n", *n, "number of vectors")->capture_default_str();
               app.add_flag("--json", *json, "print JSON");
               return [=]() {
                 if (*dim < 1) return invalid_argument("--head-dim must be >= 1");
                 if (*n < 1) return invalid_argument("--n must be >= 1");
                 // The formats keep a few copies of the data: bound it to 2^27 floats (512 MiB).
                 if (*dim > 65536 || *n > (long{1} << 27) / *dim)
                   return invalid_argument("--n x --head-dim must be <= 2^27 elements and --head-dim <= 65536");
                 return run(*dim, *n, *json);
               };
             });

}  // namespace
}  // namespace tqkv::cli
