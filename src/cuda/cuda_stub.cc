// tqkv/cuda.h when the library is built without CUDA (TQKV_CUDA=OFF or no nvcc): every entry
// point reports that the backend is absent.
#ifndef TQKV_WITH_CUDA
#include "tqkv/cuda.h"

namespace tqkv {
namespace {
Status no_cuda() { return unsupported("tqkv was built without CUDA (configure with -DTQKV_CUDA=ON and nvcc)"); }
}  // namespace

bool cuda_available(std::string* why) {
  if (why) *why = "tqkv was built without CUDA";
  return false;
}
std::string cuda_device_name() { return "none (built without CUDA)"; }
StatusOr<CudaBuffer> CudaBuffer::alloc(size_t) { return no_cuda(); }
CudaBuffer::CudaBuffer(CudaBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
CudaBuffer& CudaBuffer::operator=(CudaBuffer&& o) noexcept {
  p_ = o.p_; n_ = o.n_; o.p_ = nullptr; o.n_ = 0;
  return *this;
}
CudaBuffer::~CudaBuffer() = default;
Status CudaBuffer::upload(const void*, size_t, size_t) { return no_cuda(); }
Status CudaBuffer::download(void*, size_t, size_t) const { return no_cuda(); }
Status CudaBuffer::fill_byte(int) { return no_cuda(); }
Status cuda_synchronize() { return no_cuda(); }
Status cuda_encode_vectors(const Quantizer&, const void*, CudaDType, size_t, uint8_t*) { return no_cuda(); }
Status cuda_pk_encode_vectors(const PreRopeKeyCodec&, const void*, CudaDType, size_t, uint8_t*) { return no_cuda(); }

struct CudaLayerCache::Impl {};
CudaLayerCache::CudaLayerCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaLayerCache::~CudaLayerCache() = default;
StatusOr<std::unique_ptr<CudaLayerCache>> CudaLayerCache::make(const CudaCacheConfig&) { return no_cuda(); }
// The remaining members are unreachable: no CudaLayerCache can be made.
const CudaCacheConfig& CudaLayerCache::config() const { static CudaCacheConfig c; return c; }
int CudaLayerCache::n_tokens(int) const { return 0; }
size_t CudaLayerCache::bytes_resident() const { return 0; }
size_t CudaLayerCache::bytes_per_token_head() const { return 0; }
Status CudaLayerCache::append(const std::vector<int>&, int, const void*, const void*, CudaDType) { return no_cuda(); }
Status CudaLayerCache::truncate(int, int) { return no_cuda(); }
StatusOr<float> CudaLayerCache::append_timed(const std::vector<int>&, int, const void*, const void*, CudaDType, int) {
  return no_cuda();
}
Status CudaLayerCache::attend(const std::vector<int>&, int, int, const float*, float*, float, int) { return no_cuda(); }
Status CudaLayerCache::dequantize(const std::vector<int>&, int, bool, uint16_t*) const { return no_cuda(); }
Status CudaLayerCache::read_codes(int, int, bool, int, int, uint8_t*) const { return no_cuda(); }
Status CudaLayerCache::load_sequence(int, const LayerView&, const SequenceView&) { return no_cuda(); }
const Quantizer* CudaLayerCache::key_quantizer(int) const { return nullptr; }
const Quantizer* CudaLayerCache::value_quantizer(int) const { return nullptr; }
const PreRopeKeyCodec* CudaLayerCache::key_codec(int, int) const { return nullptr; }
Status CudaLayerCache::set_position_offset(int, int64_t) { return no_cuda(); }
}  // namespace tqkv
#endif
