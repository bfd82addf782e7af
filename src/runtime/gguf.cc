// GGUF reader/writer. Every read goes through Reader, which checks the remaining length first.
#include "tqkv/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <unordered_set>

#include "core/file_io.h"
#include "core/half.h"
#include "format/blocks.h"
#include "format/format_table.h"
#include "tqkv/simd.h"

namespace tqkv {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr int kMaxDims = 4;
constexpr int kMaxArrayDepth = 4;

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::kUint8: case GgufType::kInt8: case GgufType::kBool: return 1;
    case GgufType::kUint16: case GgufType::kInt16: return 2;
    case GgufType::kUint32: case GgufType::kInt32: case GgufType::kFloat32: return 4;
    case GgufType::kUint64: case GgufType::kInt64: case GgufType::kFloat64: return 8;
    default: return 0;
  }
}

bool known_value_type(uint32_t t) { return t <= 12; }

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return n_ - pos_; }

  Status bytes(void* dst, size_t k, const char* what) {
    if (k > remaining())
      return corrupt("truncated file: " + std::string(what) + " needs " + std::to_string(k) +
                     " bytes at offset " + std::to_string(pos_) + ", only " +
                     std::to_string(remaining()) + " left");
    std::memcpy(dst, p_ + pos_, k);
    pos_ += k;
    return Status::Ok();
  }
  template <typename T>
  Status get(T* v, const char* what) { return bytes(v, sizeof(T), what); }

  Status string(std::string* s, const char* what) {
    uint64_t len = 0;
    TQKV_RETURN_IF_ERROR(get(&len, what));
    if (len > remaining())
      return corrupt("string length " + std::to_string(len) + " of " + what + " at offset " +
                     std::to_string(pos_ - 8) + " runs past the end of the file");
    s->assign(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return Status::Ok();
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

Status read_scalar(Reader& r, GgufType t, GgufValue* v, const std::string& key) {
  v->type = t;
  const char* what = "metadata value";
  switch (t) {
    case GgufType::kUint8: { uint8_t x; TQKV_RETURN_IF_ERROR(r.get(&x, what)); v->i = x; break; }
    case GgufType::kInt8: { int8_t x; TQKV_RETURN_IF_ERROR(r.get(&x, what)); v->i = x; break; }
    case GgufType::kBool: {
      uint8_t x; TQKV_RETURN_IF_ERROR(r.get(&x, what));
      if (x > 1) return corrupt("metadata '" + key + "': bool value " + std::to_string(x) + " is not 0 or 1");
      v->i = x; break;
    }
    case GgufType::kUint16: { uint16_t x; TQKV_RETURN_IF_ERROR(r.get(&x, what)); v->i = x; break; }
    case GgufType::kInt16: { int16_t x; TQKV_RETURN_IF_ERROR(r.get(&x, what)); v->i = x; break; }
    case GgufType::kUint32: { uint32_t x; TQKV_RETURN_IF_ERROR(r.get(&x, what)); v->i = x; break; }
    case GgufType::kInt32: { int32_t x; TQKV_RETURN_IF_ERROR(r.get(&x, what)); v->i = x; break; }
    case GgufType::kUint64: { uint64_t x; TQKV_RETURN_IF_ERROR(r.get(&x, what)); v->i = static_cast<int64_t>(x); break; }
    case GgufType::kInt64: { int64_t x; TQKV_RETURN_IF_ERROR(r.get(&x, what)); v->i = x; break; }
    case GgufType::kFloat32: { float x; TQKV_RETURN_IF_ERROR(r.get(&x, what)); v->f = x; break; }
    case GgufType::kFloat64: { double x; TQKV_RETURN_IF_ERROR(r.get(&x, what)); v->f = x; break; }
    case GgufType::kString: TQKV_RETURN_IF_ERROR(r.string(&v->s, what)); break;
    default: return internal_error("read_scalar on array");
  }
  return Status::Ok();
}

Status read_value(Reader& r, GgufType t, GgufValue* v, const std::string& key, int depth) {
  if (t != GgufType::kArray) return read_scalar(r, t, v, key);
  if (depth >= kMaxArrayDepth) return corrupt("metadata '" + key + "': arrays nested too deeply");
  v->type = GgufType::kArray;
  uint32_t et = 0;
  uint64_t n = 0;
  TQKV_RETURN_IF_ERROR(r.get(&et, "array element type"));
  if (!known_value_type(et))
    return corrupt("metadata '" + key + "': unknown array element type " + std::to_string(et));
  TQKV_RETURN_IF_ERROR(r.get(&n, "array length"));
  v->array_type = static_cast<GgufType>(et);
  // Every element takes at least one byte (8 for strings/arrays): bound n before allocating.
  const size_t min_elem = v->array_type == GgufType::kString ? 8
                          : v->array_type == GgufType::kArray ? 12 : scalar_size(v->array_type);
  if (n > r.remaining() / min_elem)
    return corrupt("metadata '" + key + "': array of " + std::to_string(n) +
                   " elements runs past the end of the file");
  if (v->array_type == GgufType::kString) {
    v->strings.resize(n);
    for (uint64_t i = 0; i < n; ++i) TQKV_RETURN_IF_ERROR(r.string(&v->strings[i], "array string"));
  } else if (v->array_type == GgufType::kArray) {
    v->arrays.resize(n);
    for (uint64_t i = 0; i < n; ++i)
      TQKV_RETURN_IF_ERROR(read_value(r, GgufType::kArray, &v->arrays[i], key, depth + 1));
  } else {
    const bool is_f = v->array_type == GgufType::kFloat32 || v->array_type == GgufType::kFloat64;
    if (is_f) v->floats.resize(n); else v->ints.resize(n);
    GgufValue e;
    for (uint64_t i = 0; i < n; ++i) {
      TQKV_RETURN_IF_ERROR(read_scalar(r, v->array_type, &e, key));
      if (is_f) v->floats[i] = e.f; else v->ints[i] = e.i;
    }
  }
  return Status::Ok();
}

void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  out.insert(out.end(), b, b + n);
}
template <typename T>
void put(std::vector<uint8_t>& out, T v) { put_bytes(out, &v, sizeof(T)); }
void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  put_bytes(out, s.data(), s.size());
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                "bool", "string", "array", "uint64", "int64", "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "unknown";
}

bool ggml_type_layout(uint32_t type, int64_t* be, int64_t* bb) {
  int64_t e = 0, b = 0;
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32: e = 1; b = 4; break;
    case GgmlType::kF16: e = 1; b = 2; break;
    case GgmlType::kBF16: e = 1; b = 2; break;
    case GgmlType::kQ4_0: e = 32; b = 18; break;
    case GgmlType::kQ4_1: e = 32; b = 20; break;
    case GgmlType::kQ5_0: e = 32; b = 22; break;
    case GgmlType::kQ5_1: e = 32; b = 24; break;
    case GgmlType::kQ8_0: e = 32; b = 34; break;
    case GgmlType::kQ8_1: e = 32; b = 36; break;
    case GgmlType::kQ2_K: e = 256; b = 84; break;
    case GgmlType::kQ3_K: e = 256; b = 110; break;
    case GgmlType::kQ4_K: e = 256; b = 144; break;
    case GgmlType::kQ5_K: e = 256; b = 176; break;
    case GgmlType::kQ6_K: e = 256; b = 210; break;
    case GgmlType::kQ8_K: e = 256; b = 292; break;
    case GgmlType::kI8: e = 1; b = 1; break;
    case GgmlType::kI16: e = 1; b = 2; break;
    case GgmlType::kI32: e = 1; b = 4; break;
    case GgmlType::kI64: e = 1; b = 8; break;
    case GgmlType::kF64: e = 1; b = 8; break;
    default: return false;
  }
  if (be) *be = e;
  if (bb) *bb = b;
  return true;
}

std::string ggml_type_name(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32: return "f32";
    case GgmlType::kF16: return "f16";
    case GgmlType::kBF16: return "bf16";
    case GgmlType::kQ4_0: return "q4_0";
    case GgmlType::kQ4_1: return "q4_1";
    case GgmlType::kQ5_0: return "q5_0";
    case GgmlType::kQ5_1: return "q5_1";
    case GgmlType::kQ8_0: return "q8_0";
    case GgmlType::kQ8_1: return "q8_1";
    case GgmlType::kQ2_K: return "q2_K";
    case GgmlType::kQ3_K: return "q3_K";
    case GgmlType::kQ4_K: return "q4_K";
    case GgmlType::kQ5_K: return "q5_K";
    case GgmlType::kQ6_K: return "q6_K";
    case GgmlType::kQ8_K: return "q8_K";
    case GgmlType::kI8: return "i8";
    case GgmlType::kI16: return "i16";
    case GgmlType::kI32: return "i32";
    case GgmlType::kI64: return "i64";
    case GgmlType::kF64: return "f64";
    default: return "type" + std::to_string(type);
  }
}

bool ggml_type_dequantizable(GgmlType t) {
  return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16 ||
         t == GgmlType::kQ8_0 || t == GgmlType::kQ4_0 || t == GgmlType::kQ4_K || t == GgmlType::kQ6_K;
}

namespace {
// Q4_K's 6-bit (scale, min) pair j of the 12 packed bytes.
void scale_min_k4(int j, const uint8_t* q, int* d, int* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}
float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}
}  // namespace

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const uint8_t*>(src);
  // Types that share a cache format's layout (f32, f16, q8_0, q4_0): that format's decode kernel
  // from the format table (one implementation for cache and weights), in slices that keep the
  // kernel's int element count small. n is a multiple of the block size (32) for q8_0/q4_0.
  if (const format::FormatRow* row = format::row_for_ggml_type(static_cast<int>(type))) {
    const FormatSpec spec{row->kind, row->fixed_bits, 1};
    const int64_t slice = int64_t(1) << 20;  // elements, a multiple of 32
    const kernels::DecodeBlockFn decode = row->decode[static_cast<int>(active_simd_level())];
    for (int64_t i = 0; i < n; i += slice) {
      const int cnt = static_cast<int>(std::min(slice, n - i));
      decode(cnt, 0, b + row->code_size(spec, static_cast<size_t>(i)), 1, dst + i, static_cast<size_t>(cnt));
    }
    return;
  }
  switch (type) {
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h; std::memcpy(&h, b + 2 * i, 2);
        dst[i] = f32_from_bits(static_cast<uint32_t>(h) << 16);
      }
      break;
    case GgmlType::kQ4_K:  // block of 256: f16 d, f16 dmin, scales[12] (8 x 6-bit scale+min), qs[128]
      for (int64_t blk = 0; blk < n / 256; ++blk) {
        const uint8_t* p = b + blk * 144;
        const float d = f16_at(p), dmin = f16_at(p + 2);
        const uint8_t* sc = p + 4;
        const uint8_t* q = p + 16;
        float* y = dst + blk * 256;
        for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
          int s1, m1, s2, m2;
          scale_min_k4(is, sc, &s1, &m1);
          scale_min_k4(is + 1, sc, &s2, &m2);
          for (int l = 0; l < 32; ++l) *y++ = d * s1 * (q[l] & 0xF) - dmin * m1;
          for (int l = 0; l < 32; ++l) *y++ = d * s2 * (q[l] >> 4) - dmin * m2;
        }
      }
      break;
    case GgmlType::kQ6_K:  // block of 256: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d
      for (int64_t blk = 0; blk < n / 256; ++blk) {
        const uint8_t* p = b + blk * 210;
        const uint8_t* ql = p;
        const uint8_t* qh = p + 128;
        const auto* sc = reinterpret_cast<const int8_t*>(p + 192);
        const float d = f16_at(p + 208);
        float* y = dst + blk * 256;
        for (int h = 0; h < 2; ++h, y += 128, ql += 64, qh += 32, sc += 8) {
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
          }
        }
      }
      break;
    default: break;
  }
}

// llama.cpp's reference quantization (round half away from zero for q8_0), through the one
// block implementation shared with the cache (format/blocks.h).
std::vector<uint8_t> quantize_q8_0_row(const float* x, int64_t n) {
  std::vector<uint8_t> out(n / 32 * sizeof(BlockQ8_0));
  auto* blocks = reinterpret_cast<BlockQ8_0*>(out.data());
  for (int64_t blk = 0; blk < n / 32; ++blk) quantize_block_q8_0(x + blk * 32, 32, &blocks[blk], Rounding::kHalfAwayFromZero);
  return out;
}

std::vector<uint8_t> quantize_q4_0_row(const float* x, int64_t n) {
  std::vector<uint8_t> out(n / 32 * sizeof(BlockQ4_0));
  auto* blocks = reinterpret_cast<BlockQ4_0*>(out.data());
  for (int64_t blk = 0; blk < n / 32; ++blk) quantize_block_q4_0(x + blk * 32, 32, &blocks[blk]);
  return out;
}

size_t GgufValue::array_size() const {
  if (type != GgufType::kArray) return 0;
  if (array_type == GgufType::kString) return strings.size();
  if (array_type == GgufType::kArray) return arrays.size();
  if (array_type == GgufType::kFloat32 || array_type == GgufType::kFloat64) return floats.size();
  return ints.size();
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::kUint8: case GgufType::kInt8: case GgufType::kUint16: case GgufType::kInt16:
    case GgufType::kUint32: case GgufType::kInt32: case GgufType::kUint64: case GgufType::kInt64:
    case GgufType::kBool: return true;
    default: return false;
  }
}

GgufFile::~GgufFile() {
  if (map_) munmap(map_, size_);
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    if (errno == ENOENT) return not_found("cannot open '" + path + "': no such file");
    return io_error("cannot open '" + path + "': " + std::strerror(errno));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return io_error("'" + path + "' is not a regular file");
  }
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* m = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      return io_error("cannot mmap '" + path + "': " + std::strerror(errno));
    }
    f->map_ = m;
    f->base_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
  Status s = f->parse_header();
  if (!s.ok()) return Status(s.code(), "'" + path + "': " + s.message());
  return f;
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::parse(std::vector<uint8_t> bytes) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->owned_ = std::move(bytes);
  f->base_ = f->owned_.data();
  f->size_ = f->owned_.size();
  TQKV_RETURN_IF_ERROR(f->parse_header());
  return f;
}

Status GgufFile::parse_header() {
  Reader r(base_, size_);
  uint32_t magic = 0;
  if (size_ < 4) return corrupt("not a GGUF file (only " + std::to_string(size_) + " bytes)");
  TQKV_RETURN_IF_ERROR(r.get(&magic, "magic"));
  if (magic != kGgufMagic) return corrupt("not a GGUF file (bad magic)");
  TQKV_RETURN_IF_ERROR(r.get(&version_, "version"));
  if (version_ != 2 && version_ != 3)
    return corrupt("unsupported GGUF version " + std::to_string(version_) + " (supported: 2, 3)");
  uint64_t n_tensors = 0, n_kv = 0;
  TQKV_RETURN_IF_ERROR(r.get(&n_tensors, "tensor count"));
  TQKV_RETURN_IF_ERROR(r.get(&n_kv, "metadata count"));
  // A key-value pair takes at least 8 + 4 + 1 bytes; a tensor info at least 8 + 4 + 8 + 4 + 8.
  if (n_kv > r.remaining() / 13) return corrupt("metadata count " + std::to_string(n_kv) + " exceeds the file size");
  if (n_tensors > r.remaining() / 32) return corrupt("tensor count " + std::to_string(n_tensors) + " exceeds the file size");

  std::unordered_set<std::string> keys;
  kvs_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    GgufKV kv;
    TQKV_RETURN_IF_ERROR(r.string(&kv.key, "metadata key"));
    uint32_t t = 0;
    TQKV_RETURN_IF_ERROR(r.get(&t, "metadata value type"));
    if (!known_value_type(t))
      return corrupt("metadata '" + kv.key + "': unknown value type " + std::to_string(t));
    TQKV_RETURN_IF_ERROR(read_value(r, static_cast<GgufType>(t), &kv.value, kv.key, 0));
    if (!keys.insert(kv.key).second) return corrupt("duplicate metadata key '" + kv.key + "'");
    kvs_.push_back(std::move(kv));
  }

  alignment_ = 32;
  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != GgufType::kUint32 || a->i == 0 || (a->i & (a->i - 1)) != 0)
      return corrupt("general.alignment must be a uint32 power of two");
    alignment_ = static_cast<uint32_t>(a->i);
  }

  std::unordered_set<std::string> names;
  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    TQKV_RETURN_IF_ERROR(r.string(&t.name, "tensor name"));
    uint32_t n_dims = 0;
    TQKV_RETURN_IF_ERROR(r.get(&n_dims, "tensor n_dims"));
    if (n_dims < 1 || n_dims > kMaxDims)
      return corrupt("tensor '" + t.name + "': n_dims " + std::to_string(n_dims) + " not in 1..4");
    int64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = 0;
      TQKV_RETURN_IF_ERROR(r.get(&ne, "tensor dim"));
      if (ne < 1 || ne > (1ull << 40) || static_cast<uint64_t>(n_el) > (1ull << 50) / ne)
        return corrupt("tensor '" + t.name + "': dimension " + std::to_string(ne) + " out of range");
      t.dims.push_back(static_cast<int64_t>(ne));
      n_el *= static_cast<int64_t>(ne);
    }
    uint32_t type = 0;
    TQKV_RETURN_IF_ERROR(r.get(&type, "tensor type"));
    int64_t be = 0, bb = 0;
    if (!ggml_type_layout(type, &be, &bb))
      return corrupt("tensor '" + t.name + "': unknown tensor type " + std::to_string(type));
    t.type = static_cast<GgmlType>(type);
    if (t.dims[0] % be != 0)
      return corrupt("tensor '" + t.name + "': row length " + std::to_string(t.dims[0]) +
                     " is not a multiple of the " + ggml_type_name(type) + " block size " + std::to_string(be));
    t.n_elements = n_el;
    t.n_bytes = static_cast<size_t>(n_el / be * bb);
    TQKV_RETURN_IF_ERROR(r.get(&t.offset, "tensor offset"));
    if (t.offset % alignment_ != 0)
      return corrupt("tensor '" + t.name + "': offset " + std::to_string(t.offset) +
                     " is not a multiple of the alignment " + std::to_string(alignment_));
    if (!names.insert(t.name).second) return corrupt("duplicate tensor name '" + t.name + "'");
    tensors_.push_back(std::move(t));
  }
  const size_t header_end = r.pos();
  data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
  if (n_tensors > 0 && data_offset_ > size_)
    return corrupt("truncated file: data section starts at " + std::to_string(data_offset_) +
                   " past the end (" + std::to_string(size_) + " bytes)");
  const size_t data_size = size_ >= data_offset_ ? size_ - data_offset_ : 0;
  for (auto& t : tensors_) {
    if (t.offset > data_size || t.n_bytes > data_size - t.offset)
      return corrupt("tensor '" + t.name + "' (" + std::to_string(t.n_bytes) + " bytes at data offset " +
                     std::to_string(t.offset) + ") extends past the end of the file (truncated?)");
    t.data = base_ + data_offset_ + t.offset;
  }
  return Status::Ok();
}

const GgufValue* GgufFile::find(std::string_view key) const {
  for (const auto& kv : kvs_)
    if (kv.key == key) return &kv.value;
  return nullptr;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

StatusOr<int64_t> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return not_found("missing metadata key '" + std::string(key) + "'");
  if (!v->is_integer())
    return corrupt("metadata '" + std::string(key) + "' has type " + gguf_type_name(v->type) + ", expected an integer");
  return v->i;
}
StatusOr<double> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return not_found("missing metadata key '" + std::string(key) + "'");
  if (v->is_float()) return v->f;
  if (v->is_integer()) return static_cast<double>(v->i);
  return corrupt("metadata '" + std::string(key) + "' has type " + gguf_type_name(v->type) + ", expected a number");
}
StatusOr<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return not_found("missing metadata key '" + std::string(key) + "'");
  if (v->type != GgufType::kString)
    return corrupt("metadata '" + std::string(key) + "' has type " + gguf_type_name(v->type) + ", expected a string");
  return v->s;
}
StatusOr<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return not_found("missing metadata key '" + std::string(key) + "'");
  if (!v->is_integer())
    return corrupt("metadata '" + std::string(key) + "' has type " + gguf_type_name(v->type) + ", expected a bool");
  return v->i != 0;
}
StatusOr<int64_t> GgufFile::get_int_or(std::string_view key, int64_t def) const {
  return find(key) ? get_int(key) : StatusOr<int64_t>(def);
}
StatusOr<double> GgufFile::get_float_or(std::string_view key, double def) const {
  return find(key) ? get_float(key) : StatusOr<double>(def);
}
StatusOr<bool> GgufFile::get_bool_or(std::string_view key, bool def) const {
  return find(key) ? get_bool(key) : StatusOr<bool>(def);
}

// ---- writer ----

void GgufWriter::add_u32(const std::string& key, uint32_t v) {
  put_string(kv_bytes_, key); put<uint32_t>(kv_bytes_, 4); put(kv_bytes_, v); ++n_kv_;
}
void GgufWriter::add_i32(const std::string& key, int32_t v) {
  put_string(kv_bytes_, key); put<uint32_t>(kv_bytes_, 5); put(kv_bytes_, v); ++n_kv_;
}
void GgufWriter::add_u64(const std::string& key, uint64_t v) {
  put_string(kv_bytes_, key); put<uint32_t>(kv_bytes_, 10); put(kv_bytes_, v); ++n_kv_;
}
void GgufWriter::add_f32(const std::string& key, float v) {
  put_string(kv_bytes_, key); put<uint32_t>(kv_bytes_, 6); put(kv_bytes_, v); ++n_kv_;
}
void GgufWriter::add_bool(const std::string& key, bool v) {
  put_string(kv_bytes_, key); put<uint32_t>(kv_bytes_, 7); put<uint8_t>(kv_bytes_, v ? 1 : 0); ++n_kv_;
}
void GgufWriter::add_string(const std::string& key, const std::string& v) {
  put_string(kv_bytes_, key); put<uint32_t>(kv_bytes_, 8); put_string(kv_bytes_, v); ++n_kv_;
}
void GgufWriter::add_string_array(const std::string& key, const std::vector<std::string>& v) {
  put_string(kv_bytes_, key); put<uint32_t>(kv_bytes_, 9); put<uint32_t>(kv_bytes_, 8);
  put<uint64_t>(kv_bytes_, v.size());
  for (const auto& s : v) put_string(kv_bytes_, s);
  ++n_kv_;
}
void GgufWriter::add_f32_array(const std::string& key, const std::vector<float>& v) {
  put_string(kv_bytes_, key); put<uint32_t>(kv_bytes_, 9); put<uint32_t>(kv_bytes_, 6);
  put<uint64_t>(kv_bytes_, v.size());
  put_bytes(kv_bytes_, v.data(), v.size() * 4);
  ++n_kv_;
}
void GgufWriter::add_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  put_string(kv_bytes_, key); put<uint32_t>(kv_bytes_, 9); put<uint32_t>(kv_bytes_, 5);
  put<uint64_t>(kv_bytes_, v.size());
  put_bytes(kv_bytes_, v.data(), v.size() * 4);
  ++n_kv_;
}
void GgufWriter::add_raw(const std::string& key, GgufType type, const std::vector<uint8_t>& payload) {
  put_string(kv_bytes_, key); put<uint32_t>(kv_bytes_, static_cast<uint32_t>(type));
  put_bytes(kv_bytes_, payload.data(), payload.size());
  ++n_kv_;
}
void GgufWriter::add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& dims,
                            std::vector<uint8_t> bytes) {
  tensors_.push_back({name, type, dims, std::move(bytes)});
}
void GgufWriter::add_f32_tensor(const std::string& name, const std::vector<int64_t>& dims, const float* data) {
  int64_t n = 1;
  for (auto d : dims) n *= d;
  std::vector<uint8_t> b(n * 4);
  std::memcpy(b.data(), data, b.size());
  add_tensor(name, GgmlType::kF32, dims, std::move(b));
}

std::vector<uint8_t> GgufWriter::to_bytes() const {
  std::vector<uint8_t> out;
  put<uint32_t>(out, kGgufMagic);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, n_kv_ + (alignment_ != 32 ? 1 : 0));
  put_bytes(out, kv_bytes_.data(), kv_bytes_.size());
  if (alignment_ != 32) {
    put_string(out, "general.alignment"); put<uint32_t>(out, 4); put<uint32_t>(out, alignment_);
  }
  auto align = [&](uint64_t x) { return (x + alignment_ - 1) / alignment_ * alignment_; };
  uint64_t off = 0;
  for (const auto& t : tensors_) {
    put_string(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (auto d : t.dims) put<uint64_t>(out, static_cast<uint64_t>(d));
    put<uint32_t>(out, static_cast<uint32_t>(t.type));
    put<uint64_t>(out, off);
    off = align(off + t.bytes.size());
  }
  out.resize(align(out.size()), 0);
  const size_t data_start = out.size();
  off = 0;
  for (const auto& t : tensors_) {
    out.resize(data_start + off, 0);
    put_bytes(out, t.bytes.data(), t.bytes.size());
    off = align(off + t.bytes.size());
  }
  return out;
}

Status GgufWriter::write(const std::string& path) const {
  const std::vector<uint8_t> b = to_bytes();
  return write_file_atomic(path, b.data(), b.size());  // temp + fsync + rename, every step checked
}

}  // namespace tqkv
