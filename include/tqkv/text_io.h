// Reading evaluation text.
#pragma once

#include <cstdint>
#include <string>

#include "tqkv/status.h"

namespace tqkv {

// Reads a whole text file; files ending in ".xz" are decompressed (liblzma), streaming, and stop
// with an error as soon as the text passes kMaxTextBytes (an .xz bomb never reaches memory). The
// tokenizer needs ~55 bytes of working memory per text byte, so the cap bounds a run to ~3.5 GB.
// A directory or a device is refused with one line.
inline constexpr uint64_t kMaxTextBytes = uint64_t{64} << 20;
StatusOr<std::string> read_text_file(const std::string& path, uint64_t max_bytes = kMaxTextBytes);

}  // namespace tqkv
