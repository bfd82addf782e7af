// Reading evaluation text.
#pragma once

#include <string>

#include "tqkv/status.h"

namespace tqkv {

// Reads a whole text file; files ending in ".xz" are decompressed (liblzma).
StatusOr<std::string> read_text_file(const std::string& path);

}  // namespace tqkv
