// Thread setup of the runtime.
#pragma once

namespace tqkv {

// Sets the OpenMP threads the runtime uses (t >= 1); OpenBLAS always runs single-threaded inside them.
void set_runtime_threads(int t);

}  // namespace tqkv
