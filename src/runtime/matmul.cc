// Forward-pass matmul over f32 / f16 / bf16 weights. One thread pool for everything: OpenMP splits
// the output rows and each thread calls single-threaded OpenBLAS (or the half-precision row kernel)
// on its slice; OpenBLAS's own pthreads and a spinning OpenMP team fight over the cores (measured:
// 5x slower decode on 2 cores).
#include "runtime/matmul.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/half.h"
#include "tqkv/simd.h"

namespace tqkv::runtime {

void gemv_half_scalar(const uint16_t* w, bool bf16, const float* x, float* y, int rows, int in) {
  for (int o = 0; o < rows; ++o) {
    const uint16_t* r = w + static_cast<size_t>(o) * in;
    float acc = 0;
    for (int i = 0; i < in; ++i)
      acc += (bf16 ? f32_from_bits(static_cast<uint32_t>(r[i]) << 16) : half_to_float(r[i])) * x[i];
    y[o] = acc;
  }
}

void gemv_q8_0_scalar(const uint8_t* w, const float* x, float* y, int rows, int in) {
  const int nb = in / 32;
  for (int o = 0; o < rows; ++o) {
    const uint8_t* r = w + static_cast<size_t>(o) * nb * 34;
    float acc = 0;
    for (int b = 0; b < nb; ++b, r += 34) {
      uint16_t hd;
      std::memcpy(&hd, r, 2);
      float s = 0;
      for (int i = 0; i < 32; ++i) s += static_cast<float>(static_cast<int8_t>(r[2 + i])) * x[b * 32 + i];
      acc += half_to_float(hd) * s;
    }
    y[o] = acc;
  }
}

namespace {

// Rows [o0, o1) of y for all m tokens.
void slice(const float* x, const void* w, GgmlType type, float* y, int m, int in, int out, int o0, int o1) {
  if (o1 <= o0) return;
  if (type == GgmlType::kF32) {
    const float* wf = static_cast<const float*>(w) + size_t(o0) * in;
    if (m == 1)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, o1 - o0, in, 1.0f, wf, in, x, 1, 0.0f, y + o0, 1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, o1 - o0, in, 1.0f, x, in, wf, in, 0.0f, y + o0, out);
    return;
  }
  if (type == GgmlType::kQ8_0) {
    const size_t row_bytes = size_t(in / 32) * 34;
    const uint8_t* wq = static_cast<const uint8_t*>(w) + size_t(o0) * row_bytes;
    if (m == 1) {
      if (active_simd_level() >= SimdLevel::kAvx2) gemv_q8_0_avx2(wq, x, y + o0, o1 - o0, in);
      else gemv_q8_0_scalar(wq, x, y + o0, o1 - o0, in);
      return;
    }
    constexpr int kRows = 64;
    thread_local std::vector<float> qbuf;
    qbuf.resize(size_t(kRows) * in);
    for (int r0 = o0; r0 < o1; r0 += kRows) {
      const int nr = std::min(kRows, o1 - r0);
      dequantize_row(type, static_cast<const uint8_t*>(w) + size_t(r0) * row_bytes, qbuf.data(), int64_t(nr) * in);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nr, in, 1.0f, x, in, qbuf.data(), in, 0.0f, y + r0, out);
    }
    return;
  }
  const bool bf16 = type == GgmlType::kBF16;
  const uint16_t* wh = static_cast<const uint16_t*>(w) + size_t(o0) * in;
  if (m == 1) {
    if (active_simd_level() >= SimdLevel::kAvx2) gemv_half_avx2(wh, bf16, x, y + o0, o1 - o0, in);
    else gemv_half_scalar(wh, bf16, x, y + o0, o1 - o0, in);
    return;
  }
  // Prefill: widen blocks of 64 rows to f32 and multiply them with sgemm (conversion amortized
  // over the m tokens).
  constexpr int kRows = 64;
  thread_local std::vector<float> buf;
  buf.resize(size_t(kRows) * in);
  for (int r0 = o0; r0 < o1; r0 += kRows) {
    const int nr = std::min(kRows, o1 - r0);
    const uint16_t* src = static_cast<const uint16_t*>(w) + size_t(r0) * in;
    if (active_simd_level() >= SimdLevel::kAvx2) widen_half_avx2(src, bf16, buf.data(), int64_t(nr) * in);
    else dequantize_row(type, src, buf.data(), int64_t(nr) * in);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nr, in, 1.0f, x, in, buf.data(), in, 0.0f, y + r0, out);
  }
}

}  // namespace

void matmul(const float* x, const void* w, GgmlType type, float* y, int m, int in, int out, int threads) {
  const double work = double(m) * in * out;
  if (threads <= 1 || work < double(1 << 22)) {  // below ~1 ms of work a team costs more than it saves
    slice(x, w, type, y, m, in, out, 0, out);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    const int per = (out + n - 1) / n;
    const int o0 = std::min(out, ((t * per) + 15) / 16 * 16);
    const int o1 = t == n - 1 ? out : std::min(out, (((t + 1) * per) + 15) / 16 * 16);
    slice(x, w, type, y, m, in, out, o0, o1);
  }
}

}  // namespace tqkv::runtime
