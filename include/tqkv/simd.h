// SIMD level used by encode/decode and the fused attention kernels.
//
// Detected once from CPUID. The environment variable TQKV_SIMD=scalar|avx2|avx512 forces a lower
// level (a level the CPU lacks is refused with a message on stderr and the detected one is kept).
// The scalar level is the readable reference every other level is tested against.
#pragma once

namespace tqkv {

enum class SimdLevel { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// Highest level this CPU supports (avx512 needs AVX512 F, BW, DQ, VL, VNNI plus the avx2 set;
// avx2 needs AVX2, FMA, F16C, BMI2). No other extension (e.g. AVX512_BF16) is required.
SimdLevel detected_simd_level();
// The level in use: detected, lowered by TQKV_SIMD or set_simd_level().
SimdLevel active_simd_level();
// Forces a level (clamped to the detected one); returns the level now active. For tests/benchmarks.
SimdLevel set_simd_level(SimdLevel level);
const char* simd_level_name(SimdLevel level);

}  // namespace tqkv
