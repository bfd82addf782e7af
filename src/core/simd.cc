#include "tqkv/simd.h"

#include <atomic>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace tqkv {
namespace {

#if defined(__x86_64__) || defined(__i386__)
// Feature bits straight from CPUID (leaf 1: ECX; leaf 7 subleaf 0: EBX/ECX; leaf 7 subleaf 1:
// EAX) plus XGETBV for the OS-enabled register state. __builtin_cpu_supports is not used: clang 14
// rejects "f16c" and "avx512bf16" there, and it does not check that the OS saves ZMM state.
bool bit(unsigned reg, int b) { return (reg >> b) & 1u; }

SimdLevel detect() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return SimdLevel::kScalar;
  const bool fma = bit(c, 12), osxsave = bit(c, 27), avx = bit(c, 28), f16c = bit(c, 29);
  if (!osxsave || !avx) return SimdLevel::kScalar;
  unsigned xlo, xhi;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  const bool ymm_os = (xlo & 0x6u) == 0x6u;     // SSE + AVX state
  const bool zmm_os = (xlo & 0xE6u) == 0xE6u;   // + opmask, ZMM0-15 upper, ZMM16-31
  if (__get_cpuid_max(0, nullptr) < 7) return SimdLevel::kScalar;
  unsigned a7, b7, c7, d7;
  __cpuid_count(7, 0, a7, b7, c7, d7);
  const bool avx2 = bit(b7, 5), bmi2 = bit(b7, 8);
  const bool avx512f = bit(b7, 16), avx512dq = bit(b7, 17), avx512bw = bit(b7, 30),
             avx512vl = bit(b7, 31), avx512vnni = bit(c7, 11);
  // Exactly the features the *_avx512.cc files are compiled for (CMakeLists.txt) and use: F, BW,
  // DQ, VL, VNNI (vpdpbusd in the attention kernels) plus the AVX2 set. Nothing needs AVX512_BF16,
  // so Ice Lake and Cascade Lake servers qualify.
  const bool has_avx2 = ymm_os && avx2 && fma && f16c && bmi2;
  if (has_avx2 && zmm_os && avx512f && avx512bw && avx512dq && avx512vl && avx512vnni)
    return SimdLevel::kAvx512;
  if (has_avx2) return SimdLevel::kAvx2;
  return SimdLevel::kScalar;
}
#else
SimdLevel detect() { return SimdLevel::kScalar; }
#endif

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
