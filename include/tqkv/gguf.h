// GGUF (v2/v3) reader and a small writer, as used by llama.cpp's model files.
//
//   auto f = tqkv::GgufFile::open("model.gguf");      // mmaps the file, validates everything
//   if (!f.ok()) return f.status();
//   const tqkv::GgufTensorInfo* t = (*f)->find_tensor("token_embd.weight");
//
// Contracts:
//  - open()/parse() validate the whole header before returning: magic "GGUF", version 2 or 3,
//    every string/array length and count within the file, known value and tensor types, tensor
//    dims >= 1 with no overflow, ne[0] a multiple of the type's block size, offsets aligned to
//    general.alignment (default 32; must be a power of two) and every tensor's bytes inside the
//    data section, unique keys and tensor names. Any violation is a kCorrupt Status naming the
//    offending item; a successful parse guarantees every tensor's data pointer covers n_bytes.
//    Nothing ever reads outside the mapped bytes.
//  - Tensor dims are in GGUF order: dims[0] is the fastest-varying (row length).
//  - The GgufFile owns the mapping; tensor data pointers live as long as the GgufFile.
// What is validated: docs/runtime.md ("GGUF reading").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tqkv/status.h"

namespace tqkv {

enum class GgufType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};
const char* gguf_type_name(GgufType t);

// ggml tensor types (the numeric ids are part of the file format).
enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ8_1 = 9,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kQ8_K = 15,
  kI8 = 24, kI16 = 25, kI32 = 26, kI64 = 27, kF64 = 28, kBF16 = 30,
};
// Name ("f32", "q8_0", ...) or "type<id>" for ids this build does not know.
std::string ggml_type_name(uint32_t type);
// Block size (elements) and bytes per block; false for an unknown id.
bool ggml_type_layout(uint32_t type, int64_t* block_elems, int64_t* block_bytes);
// True for the types dequantize_row() handles: f32, f16, bf16, q8_0, q4_0, q4_K, q6_K.
bool ggml_type_dequantizable(GgmlType t);
// Converts n elements (n a multiple of the block size) of `type` at `src` to floats.
// Precondition: ggml_type_dequantizable(type).
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);

// One metadata value. Scalars use exactly one of i / f / s (ints and bools in i, uint64 values
// bit-cast to int64); arrays keep their element type and the matching vector.
struct GgufValue {
  GgufType type = GgufType::kUint32;
  int64_t i = 0;
  double f = 0;
  std::string s;
  GgufType array_type = GgufType::kUint8;   // element type when type == kArray
  std::vector<int64_t> ints;                // integer/bool arrays
  std::vector<double> floats;               // float arrays
  std::vector<std::string> strings;         // string arrays
  std::vector<GgufValue> arrays;            // arrays of arrays
  size_t array_size() const;
  bool is_integer() const;                  // any integer scalar type or bool
  bool is_float() const { return type == GgufType::kFloat32 || type == GgufType::kFloat64; }
};

struct GgufKV {
  std::string key;
  GgufValue value;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;   // GGUF order: dims[0] fastest
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;         // relative to the data section
  size_t n_bytes = 0;
  int64_t n_elements = 0;
  const uint8_t* data = nullptr;  // points into the mapping
};

class GgufFile {
 public:
  // Maps and validates a file. kNotFound / kIoError for OS failures, kCorrupt for bad content.
  static StatusOr<std::unique_ptr<GgufFile>> open(const std::string& path);
  // Validates bytes held in memory (the GgufFile keeps them).
  static StatusOr<std::unique_ptr<GgufFile>> parse(std::vector<uint8_t> bytes);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  size_t data_offset() const { return data_offset_; }
  size_t file_size() const { return size_; }
  const std::vector<GgufKV>& metadata() const { return kvs_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  const GgufValue* find(std::string_view key) const;           // nullptr when absent
  const GgufTensorInfo* find_tensor(std::string_view name) const;

  // Typed getters: kNotFound when absent, kCorrupt when the stored type does not fit.
  StatusOr<int64_t> get_int(std::string_view key) const;       // any integer type
  StatusOr<double> get_float(std::string_view key) const;      // float or integer types
  StatusOr<std::string> get_string(std::string_view key) const;
  StatusOr<bool> get_bool(std::string_view key) const;
  // Same, with a default when the key is absent (a present key of the wrong type is still an error).
  StatusOr<int64_t> get_int_or(std::string_view key, int64_t def) const;
  StatusOr<double> get_float_or(std::string_view key, double def) const;
  StatusOr<bool> get_bool_or(std::string_view key, bool def) const;

 private:
  GgufFile() = default;
  Status parse_header();

  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  void* map_ = nullptr;             // mmap'd region (nullptr for parse())
  std::vector<uint8_t> owned_;      // bytes for parse()
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::vector<GgufKV> kvs_;
  std::vector<GgufTensorInfo> tensors_;
};

// Builds a GGUF v3 file in memory. For tests and converters; no validation beyond sizes.
class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = 32) : alignment_(alignment) {}
  void add_u32(const std::string& key, uint32_t v);
  void add_i32(const std::string& key, int32_t v);
  void add_u64(const std::string& key, uint64_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_string_array(const std::string& key, const std::vector<std::string>& v);
  void add_f32_array(const std::string& key, const std::vector<float>& v);
  void add_i32_array(const std::string& key, const std::vector<int32_t>& v);
  // Any value: writes key, type id and `payload` (the value's encoding) verbatim.
  void add_raw(const std::string& key, GgufType type, const std::vector<uint8_t>& payload);
  // Adds a tensor; `bytes` must hold exactly the size implied by type and dims (GGUF order).
  void add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& dims,
                  std::vector<uint8_t> bytes);
  void add_f32_tensor(const std::string& name, const std::vector<int64_t>& dims, const float* data);
  std::vector<uint8_t> to_bytes() const;
  Status write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> bytes;
  };
  uint32_t alignment_;
  uint64_t n_kv_ = 0;
  std::vector<uint8_t> kv_bytes_;
  std::vector<Tensor> tensors_;
};

// Quantizes n floats (n % 32 == 0) to ggml's q8_0 / q4_0 blocks (for tests and converters).
std::vector<uint8_t> quantize_q8_0_row(const float* x, int64_t n);
std::vector<uint8_t> quantize_q4_0_row(const float* x, int64_t n);

}  // namespace tqkv
