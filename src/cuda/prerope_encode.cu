// pk{b} encode on the GPU, bit-identical to PreRopeKeyCodec::encode (src/quant/prerope_keys.cc).
// One thread per vector repeats the reference's arithmetic operation by operation, in the same
// order: z_i = (x_i - mean_i) / sd_i and ||z||^2 in double (sum in channel order), the RMS
// sc = sqrt(||z||^2 / d), u_i = float(z_i / sc), code_i = #{j : u_i > t_j}, ||c||^2 in double in
// channel order, scale = sqrt(||z||^2 / ||c||^2) (or sc), bf16 with saturation. Explicit _rn
// intrinsics (and -fmad=false for this file, cmake/cuda.cmake): no contraction anywhere.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/prerope_cuda.h"

namespace tqkv::gpu {
namespace {

__device__ __forceinline__ float load_src(const void* src, int dtype, long long idx) {
  if (dtype == kSrcF32) return static_cast<const float*>(src)[idx];
  const uint16_t h = static_cast<const uint16_t*>(src)[idx];
  if (dtype == kSrcBF16) return __uint_as_float(static_cast<uint32_t>(h) << 16);
  return __half2float(__ushort_as_half(h));
}

// float_to_bf16_saturate of prerope_keys.cc.
__device__ __forceinline__ uint16_t bf16_saturate(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  const uint32_t sign = u & 0x80000000u;
  if ((u & 0x7fffffffu) == 0x7f800000u) return static_cast<uint16_t>((sign >> 16) | 0x7f7f);
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  if ((rounded & 0x7f800000u) == 0x7f800000u) return static_cast<uint16_t>((sign >> 16) | 0x7f7f);
  return static_cast<uint16_t>(rounded >> 16);
}

__device__ __forceinline__ bool is_finite(float x) { return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u; }
__device__ __forceinline__ bool is_finite_d(double x) {
  return (static_cast<unsigned long long>(__double_as_longlong(x)) & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}

__global__ void __launch_bounds__(128) pk_encode_kernel(const PkEncodeParams p) {
  const int a = blockIdx.z, h = blockIdx.y;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.item_n[a]) return;
  const int D = p.D;
  const long long base = p.item_src[a] + h * p.stride_h + static_cast<long long>(i) * p.stride_i;
  const float4* ch = p.chan + (p.vec_out ? 0 : (static_cast<size_t>(p.item_seq[a]) * p.H + h) * D);
  bool finite = true;
  double zz = 0;
  for (int c = 0; c < D; ++c) {
    const float x = load_src(p.src, p.dtype, base + c);
    finite = finite && is_finite(x);
    const float4 cf = ch[c];
    const double z = __ddiv_rn(__dsub_rn(static_cast<double>(x), static_cast<double>(cf.x)), static_cast<double>(cf.y));
    zz = __dadd_rn(zz, __dmul_rn(z, z));
  }
  uint32_t words[64];  // the code stream (B <= 8 * 256 bits)
  const int sbw = pk_stream_words(p.total_bits);
  for (int w = 0; w < sbw; ++w) words[w] = 0;
  uint16_t sb = 0;
  if (!finite || !is_finite_d(zz)) {
    sb = 0x7fc0;
  } else if (zz != 0) {
    const double sc = __dsqrt_rn(__ddiv_rn(zz, static_cast<double>(D)));
    double cc = 0;
    for (int c = 0; c < D; ++c) {
      const float4 cf = ch[c];
      const uint32_t ob = __float_as_uint(cf.z);
      const int b = ob & 15;
      if (b == 0) continue;
      const uint32_t off = ob >> 4;
      const float x = load_src(p.src, p.dtype, base + c);
      const double z = __ddiv_rn(__dsub_rn(static_cast<double>(x), static_cast<double>(cf.x)), static_cast<double>(cf.y));
      const float u = __double2float_rn(__ddiv_rn(z, sc));
      const float* t = p.thresholds + (1 << b);
      uint32_t code = 0;
      for (int j = 0; j < (1 << b) - 1; ++j) code += u > t[j] ? 1u : 0u;
      const double lv = static_cast<double>(p.levels[(1 << b) + code]);
      cc = __dadd_rn(cc, __dmul_rn(lv, lv));
      words[off >> 5] |= code << (off & 31);
      if ((off & 31) + b > 32) words[(off >> 5) + 1] |= code >> (32 - (off & 31));
    }
    const double s = p.norm_correction ? __dsqrt_rn(__ddiv_rn(zz, cc)) : sc;
    sb = bf16_saturate(__double2float_rn(s));
  }
  if (p.vec_out) {  // the CPU's per-vector layout: bf16 scale, ceil(B/8) stream bytes
    uint8_t* o = p.vec_out + ((static_cast<size_t>(a) * p.H + h) * p.n_max + i) * p.code_size;
    o[0] = static_cast<uint8_t>(sb & 0xff);
    o[1] = static_cast<uint8_t>(sb >> 8);
    for (int k = 0; k < p.code_size - 2; ++k) o[2 + k] = static_cast<uint8_t>(words[k >> 2] >> (8 * (k & 3)));
  } else {
    const int t = p.item_t0[a] + i;
    const int pid = p.block_table[static_cast<size_t>(p.item_seq[a]) * p.max_pages_per_seq + t / p.P];
    uint8_t* pg = p.pool + (static_cast<size_t>(pid) * p.H + h) * p.phb;
    reinterpret_cast<uint16_t*>(pg)[t % p.P] = sb;
    uint32_t* row = reinterpret_cast<uint32_t*>(pg + pk_scale_region(p.P)) + static_cast<size_t>(t % p.P) * sbw;
    for (int w = 0; w < sbw; ++w) row[w] = words[w];
  }
}

__global__ void pk_to_f16_kernel(const PkEncodeParams p, int n_calib, uint16_t* dst) {
  const int a = blockIdx.z, h = blockIdx.y;
  const int i = blockIdx.x;
  if (i >= p.item_n[a]) return;
  const long long base = p.item_src[a] + h * p.stride_h + static_cast<long long>(i) * p.stride_i;
  uint16_t* o = dst + ((static_cast<size_t>(p.item_seq[a]) * p.H + h) * n_calib + p.item_t0[a] + i) * p.D;
  for (int c = threadIdx.x; c < p.D; c += blockDim.x)
    o[c] = __half_as_ushort(__float2half_rn(load_src(p.src, p.dtype, base + c)));
}

__global__ void f16_to_f32_kernel(const uint16_t* src, size_t count, float* dst) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    dst[i] = __half2float(__ushort_as_half(src[i]));
}

}  // namespace

cudaError_t launch_pk_encode(const PkEncodeParams& p, cudaStream_t st) {
  if (p.n_items == 0 || p.n_max == 0) return cudaSuccess;
  dim3 grid((p.n_max + 127) / 128, p.H, p.n_items);
  pk_encode_kernel<<<grid, 128, 0, st>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_pk_to_f16(const PkEncodeParams& p, int n_calib, uint16_t* dst, cudaStream_t st) {
  if (p.n_items == 0 || p.n_max == 0) return cudaSuccess;
  dim3 grid(p.n_max, p.H, p.n_items);
  pk_to_f16_kernel<<<grid, 64, 0, st>>>(p, n_calib, dst);
  return cudaGetLastError();
}

cudaError_t launch_f16_to_f32(const uint16_t* src, size_t count, float* dst, cudaStream_t st) {
  if (count == 0) return cudaSuccess;
  f16_to_f32_kernel<<<static_cast<unsigned>((count + 255) / 256 < 4096 ? (count + 255) / 256 : 4096), 256, 0, st>>>(
      src, count, dst);
  return cudaGetLastError();
}

}  // namespace tqkv::gpu
