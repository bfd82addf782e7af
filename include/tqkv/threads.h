// Thread setup of the runtime.
#pragma once

#include "tqkv/status.h"

namespace tqkv {

// Sets the OpenMP threads the runtime uses (t >= 1); OpenBLAS always runs single-threaded inside them.
void set_runtime_threads(int t);
// Checks a user's thread count: 0 (all) or 1..kMaxThreads.
inline constexpr int kMaxThreads = 1024;
Status check_threads(int t);

}  // namespace tqkv
