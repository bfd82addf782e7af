// Matrix-times-activations for the forward pass over weights stored as f32 (mmap or converted),
// or f16 / bf16 used in place from the mmap (half the bytes per decoded token).
#pragma once

#include <cstdint>

#include "tqkv/gguf.h"

namespace tqkv::runtime {

// y (m, out) = x (m, in) W^T with W: (out, in) row-major of `type` (f32, f16, bf16 or q8_0; for
// q8_0, in % 32 == 0 and row o starts at byte o * (in / 32) * 34).
// threads >= 1: OpenMP splits the output rows when the work is large enough.
void matmul(const float* x, const void* w, GgmlType type, float* y, int m, int in, int out, int threads);

// Row kernels: y[o] = dot(W[o, :], x) for o in [0, rows). AVX2+F16C version and scalar reference.
void gemv_half_scalar(const uint16_t* w, bool bf16, const float* x, float* y, int rows, int in);
void gemv_half_avx2(const uint16_t* w, bool bf16, const float* x, float* y, int rows, int in);
// q8_0 rows: y[o] = sum over blocks of d_b * dot(q_b, x_b).
void gemv_q8_0_scalar(const uint8_t* w, const float* x, float* y, int rows, int in);
void gemv_q8_0_avx2(const uint8_t* w, const float* x, float* y, int rows, int in);
// dst[i] = float(src[i]) for n halves (f16 or bf16); exact conversions, identical to dequantize_row.
void widen_half_avx2(const uint16_t* src, bool bf16, float* dst, int64_t n);

}  // namespace tqkv::runtime
