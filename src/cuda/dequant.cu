// Dense dequantization of GPU pages to bf16 (the naive "dequantize, then SDPA" baseline of the
// benchmark). One thread per output element; no attempt at speed beyond coalesced writes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/cuda_internal.h"

namespace tqkv::gpu {
namespace {

__global__ void dequant_kernel(int codec, bool value, const AttnParams p, const AttnSide side, const float* zlut,
                               int batch, int L, uint16_t* out) {
  const int D = p.dim;
  const size_t total = static_cast<size_t>(batch) * p.n_kv_heads * L * D;
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(idx % D);
    const int t = static_cast<int>((idx / D) % L);
    const int h = static_cast<int>((idx / (static_cast<size_t>(D) * L)) % p.n_kv_heads);
    const int b = static_cast<int>(idx / (static_cast<size_t>(D) * L * p.n_kv_heads));
    float y = 0.f;
    if (t < p.item_len[b]) {
      const int seq = p.item_seq[b];
      const int tpp = p.page_tokens / 16, ti = t / 16, tt = t % 16;
      const int pid = p.block_table[static_cast<size_t>(seq) * p.max_pages_per_seq + ti / tpp];
      const uint8_t* base = side.pool + (static_cast<size_t>(pid) * p.n_kv_heads + h) * side.page_head_bytes;
      const int lt = ti % tpp;
      const uint8_t* tile = base + side.meta_region + static_cast<size_t>(lt) * tile_body_bytes(codec, D);
      int lane, pr, s;
      element_slot(value, D, tt, i, &lane, &pr, &s);
      const int bit = field_bit(codec, pr, s);
      const int w = codec_field_bits(codec);
      const uint32_t word = reinterpret_cast<const uint32_t*>(tile + lane * chunk_bytes(codec, D))[bit / 32];
      const uint32_t f = (word >> (bit % 32)) & ((w == 16) ? 0xffffu : ((1u << w) - 1u));
      const int tok = lt * 16 + tt;
      if (codec == kLut2 || codec == kLut4) {
        y = zlut[f] * reinterpret_cast<const float*>(base)[tok];
      } else if (codec == kQ4 || codec == kQ8) {
        const int nb = (D + 31) / 32;
        const float d = __half2float(__ushort_as_half(reinterpret_cast<const unsigned short*>(base)[tok * nb + i / 32]));
        y = codec == kQ4 ? d * static_cast<float>(static_cast<int>(f) - 8) : d * static_cast<float>(static_cast<int8_t>(f));
      } else {
        y = __half2float(__ushort_as_half(static_cast<unsigned short>(f)));
      }
    }
    out[idx] = __bfloat16_as_ushort(__float2bfloat16_rn(y));
  }
}

}  // namespace

cudaError_t launch_dequant(int codec, bool value, const AttnParams& p, const AttnSide& side, const float* zlut,
                           int batch, int L, uint16_t* out, cudaStream_t st) {
  dequant_kernel<<<132 * 16, 256, 0, st>>>(codec, value, p, side, zlut, batch, L, out);
  return cudaGetLastError();
}

}  // namespace tqkv::gpu
