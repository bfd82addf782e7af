// Conversion of llama2.c checkpoints to GGUF.
#pragma once

#include <string>

#include "tqkv/status.h"

namespace tqkv {

// llama2.c checkpoint (legacy format) + tokenizer.bin -> GGUF llama (see docs/runtime.md).
Status convert_llama2c(const std::string& model_bin, const std::string& tokenizer_bin,
                       const std::string& out_gguf);

}  // namespace tqkv
