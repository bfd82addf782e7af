// Shared by `tqkv quant-eval` and `tqkv demo`: encode + decode a data set and measure quality.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tqkv/metrics.h"
#include "tqkv/quantizer.h"

namespace tqkv::cli {

struct EvalResult {
  std::string method, format;
  double bits_per_element = 0, compression_vs_f16 = 0;
  QualityStats q;
  bool use_hadamard = true;
  std::string residual_codebook;
  nlohmann::json to_json() const;
};

// Maps the seed-style method name + bits/residuals to a format.
StatusOr<FormatSpec> format_for_method(const std::string& method, int bits, int residuals);

StatusOr<EvalResult> evaluate(const std::string& method, const FormatSpec& spec, int dim,
                              const std::vector<float>& data, const QuantOptions& opts);

}  // namespace tqkv::cli
