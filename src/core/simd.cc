#include "tqkv/simd.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace tqkv {
namespace {

// Exactly the features the *_avx512.cc files are compiled for (CMakeLists.txt) and use: F, BW, DQ,
// VL, VNNI (vpdpbusd in the attention kernels) plus AVX2/FMA/F16C/BMI2. Ice Lake and Cascade Lake
// servers qualify; nothing needs AVX512_BF16.
SimdLevel detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2"))
    return SimdLevel::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2"))
    return SimdLevel::kAvx2;
#endif
  return SimdLevel::kScalar;
}

SimdLevel initial() {
  SimdLevel d = detect();
  const char* env = std::getenv("TQKV_SIMD");
  if (env == nullptr || *env == 0) return d;
  SimdLevel want;
  if (!std::strcmp(env, "scalar")) want = SimdLevel::kScalar;
  else if (!std::strcmp(env, "avx2")) want = SimdLevel::kAvx2;
  else if (!std::strcmp(env, "avx512")) want = SimdLevel::kAvx512;
  else {
    std::fprintf(stderr, "tqkv: ignoring TQKV_SIMD=%s (expected scalar, avx2 or avx512)\n", env);
    return d;
  }
  if (static_cast<int>(want) > static_cast<int>(d)) {
    std::fprintf(stderr, "tqkv: TQKV_SIMD=%s is not supported by this CPU; using %s\n", env,
                 simd_level_name(d));
    return d;
  }
  return want;
}

std::atomic<int>& active() {
  static std::atomic<int> level{static_cast<int>(initial())};
  return level;
}

}  // namespace

SimdLevel detected_simd_level() {
  static const SimdLevel d = detect();
  return d;
}

SimdLevel active_simd_level() { return static_cast<SimdLevel>(active().load(std::memory_order_relaxed)); }

SimdLevel set_simd_level(SimdLevel level) {
  if (static_cast<int>(level) > static_cast<int>(detected_simd_level())) level = detected_simd_level();
  active().store(static_cast<int>(level));
  return level;
}

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar: return "scalar";
    case SimdLevel::kAvx2: return "avx2";
    case SimdLevel::kAvx512: return "avx512";
  }
  return "?";
}

}  // namespace tqkv
