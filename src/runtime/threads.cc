// Runtime thread setup (tqkv/threads.h).
#include "tqkv/threads.h"

#include <omp.h>

#include <string>

namespace tqkv {

void set_runtime_threads(int t) {
  if (t < 1) return;
  omp_set_num_threads(t);
}

Status check_threads(int t) {
  if (t < 0 || t > kMaxThreads)
    return invalid_argument("--threads must be between 0 (all) and " + std::to_string(kMaxThreads) + ", got " +
                            std::to_string(t));
  return Status::Ok();
}

}  // namespace tqkv
