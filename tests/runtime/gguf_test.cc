// GGUF reader: round trip of every metadata type, pinned header bytes, validation errors, and
// corruption (every truncation, byte flips) that must give an error or a valid file, never a crash.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/half.h"
#include "tqkv/gguf.h"

namespace tqkv {
namespace {

template <typename T>
std::vector<uint8_t> raw(T v) {
  std::vector<uint8_t> b(sizeof(T));
  std::memcpy(b.data(), &v, sizeof(T));
  return b;
}
void append(std::vector<uint8_t>& a, const std::vector<uint8_t>& b) { a.insert(a.end(), b.begin(), b.end()); }

// A small file with every metadata type and three tensors of different types.
std::vector<uint8_t> sample_file(uint32_t alignment = 32) {
  GgufWriter w(alignment);
  w.add_raw("t.u8", GgufType::kUint8, raw<uint8_t>(200));
  w.add_raw("t.i8", GgufType::kInt8, raw<int8_t>(-100));
  w.add_raw("t.u16", GgufType::kUint16, raw<uint16_t>(60000));
  w.add_raw("t.i16", GgufType::kInt16, raw<int16_t>(-30000));
  w.add_u32("t.u32", 4000000000u);
  w.add_i32("t.i32", -2000000000);
  w.add_f32("t.f32", 1.5f);
  w.add_bool("t.bool", true);
  w.add_string("t.str", "héllo");
  w.add_u64("t.u64", 1ull << 40);
  w.add_raw("t.i64", GgufType::kInt64, raw<int64_t>(-(1ll << 40)));
  w.add_raw("t.f64", GgufType::kFloat64, raw<double>(-0.25));
  w.add_string_array("t.strs", {"a", "", "ccc"});
  w.add_f32_array("t.f32s", {1.0f, -2.0f});
  w.add_i32_array("t.i32s", {7, -8, 9});
  {  // array of two arrays of u8
    std::vector<uint8_t> p = raw<uint32_t>(9);
    append(p, raw<uint64_t>(2));
    for (int i = 0; i < 2; ++i) {
      append(p, raw<uint32_t>(0));
      append(p, raw<uint64_t>(1));
      p.push_back(static_cast<uint8_t>(i + 5));
    }
    w.add_raw("t.nested", GgufType::kArray, p);
  }
  std::vector<float> a(64);
  for (int i = 0; i < 64; ++i) a[i] = 0.25f * i - 3;
  w.add_f32_tensor("a", {8, 8}, a.data());
  std::vector<uint8_t> h(2 * 32);
  for (int i = 0; i < 32; ++i) {
    const uint16_t x = float_to_half(a[i]);
    std::memcpy(h.data() + 2 * i, &x, 2);
  }
  w.add_tensor("b", GgmlType::kF16, {32}, h);
  w.add_tensor("c", GgmlType::kQ8_0, {32, 2}, quantize_q8_0_row(a.data(), 64));
  return w.to_bytes();
}

TEST(Gguf, RoundTripAllMetadataTypes) {
  auto f = GgufFile::parse(sample_file());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(*g.get_int("t.u8"), 200);
  EXPECT_EQ(*g.get_int("t.i8"), -100);
  EXPECT_EQ(*g.get_int("t.u16"), 60000);
  EXPECT_EQ(*g.get_int("t.i16"), -30000);
  EXPECT_EQ(*g.get_int("t.u32"), 4000000000ll);
  EXPECT_EQ(*g.get_int("t.i32"), -2000000000);
  EXPECT_EQ(*g.get_float("t.f32"), 1.5);
  EXPECT_EQ(*g.get_bool("t.bool"), true);
  EXPECT_EQ(*g.get_string("t.str"), "héllo");
  EXPECT_EQ(*g.get_int("t.u64"), 1ll << 40);
  EXPECT_EQ(*g.get_int("t.i64"), -(1ll << 40));
  EXPECT_EQ(*g.get_float("t.f64"), -0.25);
  EXPECT_EQ(g.find("t.strs")->strings, (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(g.find("t.f32s")->floats, (std::vector<double>{1.0, -2.0}));
  EXPECT_EQ(g.find("t.i32s")->ints, (std::vector<int64_t>{7, -8, 9}));
  const GgufValue* n = g.find("t.nested");
  ASSERT_EQ(n->array_size(), 2u);
  EXPECT_EQ(n->arrays[1].ints, (std::vector<int64_t>{6}));
  EXPECT_EQ(g.get_string("t.u32").status().code(), StatusCode::kCorrupt);  // wrong type
  EXPECT_EQ(g.get_int("absent").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*g.get_int_or("absent", 7), 7);

  ASSERT_EQ(g.tensors().size(), 3u);
  const GgufTensorInfo* a = g.find_tensor("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dims, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(a->n_bytes, 256u);
  float x[64];
  dequantize_row(a->type, a->data, x, 64);
  EXPECT_EQ(x[63], 0.25f * 63 - 3);
  const GgufTensorInfo* b = g.find_tensor("b");
  dequantize_row(b->type, b->data, x, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(x[i], 0.25f * i - 3);  // exact in f16
  const GgufTensorInfo* c = g.find_tensor("c");
  EXPECT_EQ(c->n_bytes, 68u);
  dequantize_row(c->type, c->data, x, 64);
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(x[i], 0.25f * i - 3, 0.5 * 12.75 / 127 * 1.01);  // half a step
  for (const auto& t : g.tensors()) EXPECT_EQ((t.data - (g.tensors()[0].data - g.tensors()[0].offset)) % 32, 0);
}

TEST(Gguf, HeaderBytesArePinned) {
  GgufWriter w;
  w.add_u32("k", 5);
  const std::vector<uint8_t> b = w.to_bytes();
  const std::vector<uint8_t> want = {'G', 'G', 'U', 'F', 3, 0, 0, 0,  // magic, version 3
                                     0, 0, 0, 0, 0, 0, 0, 0,          // 0 tensors
                                     1, 0, 0, 0, 0, 0, 0, 0,          // 1 key
                                     1, 0, 0, 0, 0, 0, 0, 0, 'k',     // key "k"
                                     4, 0, 0, 0, 5, 0, 0, 0};         // uint32 5
  ASSERT_GE(b.size(), want.size());
  EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.begin() + want.size()), want);
}

TEST(Gguf, Version2IsAccepted) {
  auto b = sample_file();
  b[4] = 2;  // v2 has the same layout as v3 (64-bit counts); v3 only adds big-endian files
  auto f = GgufFile::parse(std::move(b));
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ((*f)->version(), 2u);
  EXPECT_EQ((*f)->tensors().size(), 3u);
}

TEST(Gguf, CustomAlignment) {
  auto f = GgufFile::parse(sample_file(64));
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ((*f)->alignment(), 64u);
  EXPECT_EQ((*f)->data_offset() % 64, 0u);
  for (const auto& t : (*f)->tensors()) EXPECT_EQ(t.offset % 64, 0u);
}

TEST(Gguf, ValidationErrors) {
  const std::vector<uint8_t> good = sample_file();
  auto expect_corrupt = [](std::vector<uint8_t> b, const std::string& needle) {
    auto f = GgufFile::parse(std::move(b));
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), StatusCode::kCorrupt);
    EXPECT_NE(f.status().message().find(needle), std::string::npos) << f.status().message();
  };
  auto b = good;
  b[0] = 'X';
  expect_corrupt(b, "bad magic");
  b = good;
  b[4] = 1;
  expect_corrupt(b, "version 1");
  b = good;
  b[4] = 4;
  expect_corrupt(b, "version 4");
  expect_corrupt({'G', 'G'}, "not a GGUF");
  b = good;
  b[16] = 0xff; b[17] = 0xff; b[18] = 0xff;  // metadata count
  expect_corrupt(b, "metadata count");

  GgufWriter w;
  w.add_f32_tensor("x", {4}, std::vector<float>(4).data());
  auto with_tensor_field = [&](int field_from_end, uint64_t v, int width) {
    auto bytes = w.to_bytes();
    // The single tensor info ends right before the padding to the data section; locate it by name.
    size_t pos = 0;
    for (size_t i = 8; i + 1 < bytes.size(); ++i)
      if (bytes[i] == 'x' && bytes[i - 8] == 1) { pos = i + 1; break; }
    // Layout after the name: n_dims u32, dims u64, type u32, offset u64.
    const size_t off[] = {pos, pos + 4, pos + 12, pos + 16};
    std::memcpy(bytes.data() + off[field_from_end], &v, width);
    return bytes;
  };
  expect_corrupt(with_tensor_field(0, 7, 4), "n_dims");
  expect_corrupt(with_tensor_field(1, 0, 8), "dimension 0");
  expect_corrupt(with_tensor_field(2, 99, 4), "unknown tensor type 99");
  expect_corrupt(with_tensor_field(2, 8, 4), "not a multiple of the q8_0 block");
  expect_corrupt(with_tensor_field(3, 4, 8), "not a multiple of the alignment");
  expect_corrupt(with_tensor_field(3, 1 << 20, 8), "extends past the end");

  GgufWriter dup;
  dup.add_u32("a", 1);
  dup.add_u32("a", 2);
  expect_corrupt(dup.to_bytes(), "duplicate metadata key");
  GgufWriter al;
  al.add_u32("general.alignment", 24);
  expect_corrupt(al.to_bytes(), "power of two");
  GgufWriter ut;
  ut.add_raw("bad", static_cast<GgufType>(13), {});
  expect_corrupt(ut.to_bytes(), "unknown value type 13");
  GgufWriter big;
  std::vector<uint8_t> p = raw<uint32_t>(4);
  append(p, raw<uint64_t>(1ull << 60));
  big.add_raw("arr", GgufType::kArray, p);
  expect_corrupt(big.to_bytes(), "runs past the end");
}

TEST(Gguf, OpenErrors) {
  auto f = GgufFile::open("/nonexistent/model.gguf");
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  f = GgufFile::open("/");
  EXPECT_FALSE(f.ok());
}

// Every bound a successful parse promises must hold.
void check_invariants(const GgufFile& g) {
  for (const auto& t : g.tensors()) {
    ASSERT_LE(g.data_offset() + t.offset + t.n_bytes, g.file_size());
    ASSERT_GE(t.n_elements, 1);
  }
}

TEST(Gguf, EveryTruncationIsAnError) {
  const std::vector<uint8_t> good = sample_file();
  for (size_t n = 0; n < good.size(); ++n) {
    auto f = GgufFile::parse(std::vector<uint8_t>(good.begin(), good.begin() + n));
    ASSERT_FALSE(f.ok()) << "truncated to " << n << " bytes parsed fine";
    EXPECT_EQ(f.status().code(), StatusCode::kCorrupt);
  }
}

TEST(Gguf, ByteFlipsNeverCrash) {
  const std::vector<uint8_t> good = sample_file();
  std::mt19937 rng(7);
  int ok = 0, bad = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t x : {uint8_t{0xff}, uint8_t{0x80}, static_cast<uint8_t>(rng() | 1)}) {
      auto b = good;
      b[i] ^= x;
      auto f = GgufFile::parse(std::move(b));
      if (f.ok()) { check_invariants(**f); ++ok; } else { ++bad; }
    }
  }
  // Several random multi-byte corruptions too.
  for (int trial = 0; trial < 2000; ++trial) {
    auto b = good;
    for (int k = 0; k < 4; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    auto f = GgufFile::parse(std::move(b));
    if (f.ok()) check_invariants(**f);
  }
  EXPECT_GT(bad, 0);
  EXPECT_GT(ok, 0);  // flips inside tensor data leave a valid file
}

TEST(Gguf, DequantizeMatchesDefinitions) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> x(64), y(64);
  for (auto& v : x) v = nd(rng);
  // bf16: truncation of the f32 bit pattern when the low half is zero.
  std::vector<uint8_t> bf(128);
  for (int i = 0; i < 64; ++i) {
    const uint16_t h = static_cast<uint16_t>(f32_bits(x[i]) >> 16);
    std::memcpy(bf.data() + 2 * i, &h, 2);
  }
  dequantize_row(GgmlType::kBF16, bf.data(), y.data(), 64);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(y[i], f32_from_bits(f32_bits(x[i]) & 0xffff0000u));
  // q4_0: error at most half a step (d = max/-8) per element, the extreme value exact.
  auto q4 = quantize_q4_0_row(x.data(), 64);
  ASSERT_EQ(q4.size(), 36u);
  dequantize_row(GgmlType::kQ4_0, q4.data(), y.data(), 64);
  for (int blk = 0; blk < 2; ++blk) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[blk * 32 + j]));
    for (int j = 0; j < 32; ++j) EXPECT_NEAR(y[blk * 32 + j], x[blk * 32 + j], amax / 8 * 0.5 + 1e-3 * amax);
  }
  auto q8 = quantize_q8_0_row(x.data(), 64);
  dequantize_row(GgmlType::kQ8_0, q8.data(), y.data(), 64);
  for (int blk = 0; blk < 2; ++blk) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[blk * 32 + j]));
    for (int j = 0; j < 32; ++j) EXPECT_NEAR(y[blk * 32 + j], x[blk * 32 + j], amax / 127 * 0.5 + 1e-3 * amax);
  }
}

}  // namespace
}  // namespace tqkv

namespace tqkv {
namespace {

// K-quants: blocks packed element by element from ggml's layout description, then decoded.
TEST(Gguf, DequantizeQ4K) {
  std::vector<uint8_t> blk(144, 0);
  const float d = 0.5f, dmin = 0.25f;
  const uint16_t hd = float_to_half(d), hm = float_to_half(dmin);
  std::memcpy(blk.data(), &hd, 2);
  std::memcpy(blk.data() + 2, &hm, 2);
  int s[8], m[8];
  for (int j = 0; j < 8; ++j) { s[j] = 8 * j + 5; m[j] = 63 - 7 * j; }
  uint8_t* q = blk.data() + 4;  // 12 bytes: 6-bit scales and mins of 8 sub-blocks
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<uint8_t>(s[j] | ((s[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    q[j + 8] = static_cast<uint8_t>((s[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
  uint8_t* qs = blk.data() + 16;
  for (int e = 0; e < 256; ++e) {  // element e: byte 32*(e/64) + e%32, low nibble for the first 32 of 64
    const int v = (e * 7) % 16;
    uint8_t& byte = qs[32 * (e / 64) + e % 32];
    byte = static_cast<uint8_t>((e % 64) < 32 ? (byte & 0xF0) | v : (byte & 0x0F) | (v << 4));
  }
  std::vector<float> y(256);
  dequantize_row(GgmlType::kQ4_K, blk.data(), y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int sb = e / 32;
    EXPECT_FLOAT_EQ(y[e], d * s[sb] * ((e * 7) % 16) - dmin * m[sb]) << e;
  }
}

TEST(Gguf, DequantizeQ6K) {
  std::vector<uint8_t> blk(210, 0);
  const float d = 0.125f;
  const uint16_t hd = float_to_half(d);
  std::memcpy(blk.data() + 208, &hd, 2);
  auto* sc = reinterpret_cast<int8_t*>(blk.data() + 192);
  for (int i = 0; i < 16; ++i) sc[i] = static_cast<int8_t>(i * 9 - 70);
  uint8_t* ql = blk.data();
  uint8_t* qh = blk.data() + 128;
  auto scale_of = [](int e) { const int h = e / 128, r = e % 128; return h * 8 + (r % 32) / 16 + 2 * (r / 32); };
  for (int e = 0; e < 256; ++e) {  // 6-bit value: low 4 bits in ql, high 2 bits in qh
    const int v = (e * 5) % 64, h = e / 128, g = (e % 128) / 32, l = e % 32;
    uint8_t& lo = ql[h * 64 + l + (g & 1) * 32];
    lo = static_cast<uint8_t>(g < 2 ? (lo & 0xF0) | (v & 0xF) : (lo & 0x0F) | ((v & 0xF) << 4));
    qh[h * 32 + l] |= static_cast<uint8_t>((v >> 4) << (2 * g));
  }
  std::vector<float> y(256);
  dequantize_row(GgmlType::kQ6_K, blk.data(), y.data(), 256);
  for (int e = 0; e < 256; ++e) EXPECT_FLOAT_EQ(y[e], d * sc[scale_of(e)] * ((e * 5) % 64 - 32)) << e;
}

}  // namespace
}  // namespace tqkv
