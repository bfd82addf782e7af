// The quantizer interface: batched encode/decode of head vectors into a packed format.
//
//   auto q = tqkv::make_quantizer(*tqkv::parse_format("rvq1x2"), 128, {});
//   std::vector<uint8_t> codes(n * (*q)->code_size());
//   (*q)->encode(x, n, codes.data());       // x: (n, 128) floats
//   (*q)->decode(codes.data(), n, y);       // y: (n, 128) floats
//
// Contracts:
//  - codes hold n * code_size() bytes; vector i starts at byte i * code_size(). Layouts:
//    docs/format.md. Nothing else is stored anywhere: decode needs only the codes and the
//    quantizer's (deterministic) parameters.
//  - Non-finite input (NaN or +-Inf anywhere in a vector) is a documented result, not an error:
//    rvq/tq/f32/f16 vectors, and q8_0/q4_0/kivi blocks of 32, that contain one decode to all-NaN
//    (f32/f16 keep the values themselves). Zero vectors decode to zeros. Huge finite norms are
//    stored exactly in rvq/tq (f32 scale); q8_0/q4_0/kivi saturate their fp16 scales at 65504.
//  - encode/decode are const and thread-safe; a quantizer can be shared by threads.
//  - The SIMD level (scalar, avx2, avx512) is chosen once per call (see tqkv/simd.h); codes are
//    bit-identical at every level.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "tqkv/codebook.h"
#include "tqkv/format.h"
#include "tqkv/rotation.h"
#include "tqkv/status.h"
#include "tqkv/tensor.h"

namespace tqkv {

struct QuantOptions {
  bool use_hadamard = true;   // rvq/tq: randomized Hadamard rotation (false = identity)
  uint64_t seed = 0x5eed;     // rotation seed (the cache derives one per layer and head)
  ResidualCodebook residual_codebook = ResidualCodebook::kJoint;  // rvq pass design
  // rvq/tq: store the scale that makes the decoded vector's norm equal the input's norm
  // (true), or the plain norm / sqrt(d) (false). See docs/design.md for the measurement.
  bool norm_correction = true;
  // rq4_0 / riq4_nl: the quantizer codes a VALUE stream. llama.cpp rotates keys with the largest
  // Walsh-Hadamard block dividing head_dim and values with blocks of 64; the cache sets this.
  bool value_stream = false;
};

class Quantizer {
 public:
  virtual ~Quantizer() = default;

  const FormatSpec& format() const { return spec_; }
  int dim() const { return dim_; }
  // Bytes per encoded vector, everything included (== tqkv::code_size(format(), dim())).
  size_t code_size() const { return code_size_; }
  double bits_per_element() const { return 8.0 * code_size_ / dim_; }

  // x: (n, dim) floats, row i at x + i * x_stride (x_stride >= dim; 0 means dim).
  // codes: n * code_size() bytes.
  virtual void encode(const float* x, size_t n, uint8_t* codes, size_t x_stride = 0) const = 0;
  // y: (n, dim) floats, row i at y + i * y_stride (0 means dim).
  virtual void decode(const uint8_t* codes, size_t n, float* y, size_t y_stride = 0) const = 0;

  // Tensors shaped [batch, heads, seq, head_dim] (strided); codes are written/read in
  // (batch, head, seq) row-major order, vectors() * code_size() bytes.
  Status encode_tensor(const TensorView4& x, uint8_t* codes) const;
  Status decode_tensor(const uint8_t* codes, const MutableTensorView4& y) const;

  // Rotated formats (rvq, tq): the rotation applied before quantization and the codebooks of
  // each pass (what a kernel reading the codes directly needs). Null for every other format.
  virtual const Rotation* rotation() const { return nullptr; }
  virtual const PassCodebooks* codebooks() const { return nullptr; }

 protected:
  Quantizer(FormatSpec spec, int dim);

 private:
  FormatSpec spec_;
  int dim_;
  size_t code_size_;
};

// Creates the quantizer of `spec` for vectors of `dim` elements.
StatusOr<std::unique_ptr<Quantizer>> make_quantizer(const FormatSpec& spec, int dim,
                                                    const QuantOptions& options = {});

}  // namespace tqkv
