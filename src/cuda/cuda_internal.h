// Launchers of the CUDA kernels (internal; included by .cu files only). Each returns the CUDA
// error of its launch (cudaGetLastError after every launch); cuda_status() turns it into a Status.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "cuda/gpu_layout.h"
#include "tqkv/status.h"

namespace tqkv::gpu {

inline Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return internal_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}
#define TQKV_CUDA_TRY(expr) TQKV_RETURN_IF_ERROR(::tqkv::gpu::cuda_status((expr), #expr))

// Fused encode of n_jobs warp jobs (gpu_layout.h). max_dim: the largest dim of the two sides.
cudaError_t launch_encode(int max_dim, bool bf16, const EncodeSide* sides, const EncodeJob* jobs, int n_jobs,
                          cudaStream_t st);

bool attention_supported(int kc, int vc, int dim);
// Resident CTAs per SM of the attention kernel (occupancy calculator), for choosing the split count.
// variant: AttnParams::variant.
int attention_ctas_per_sm(int kc, int vc, int dim, int variant);
// Split-KV attention + merge (two launches). batch items, p.n_splits splits each.
cudaError_t launch_attention(int kc, int vc, const AttnParams& p, int batch, cudaStream_t st);

// Dense dequantization of the pages into bf16 [batch][n_kv_heads][L][dim] (rotated domain for
// rotated formats: z * scale), positions >= len of an item are zero. For the naive baseline.
cudaError_t launch_dequant(int codec, bool value, const AttnParams& p, const AttnSide& side, const float* zlut,
                           int batch, int L, uint16_t* out, cudaStream_t st);

}  // namespace tqkv::gpu
