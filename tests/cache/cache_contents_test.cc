// LayerKVCache::read() equals, token by token and bit for bit, the public quantizer's decode() of
// the ORIGINAL input (tests/testing/cache_reference.h), for every format, across page (64) and
// tile (16) boundaries, awkward head_dims, uneven append chunks, several heads, with and without
// sinks and a recent window. Equality is exact: the cache must store precisely the quantizer's
// code of each token (codes are bit-identical at every SIMD level, decode is deterministic), so
// any misplaced, mixed-up or re-encoded token shows as a mismatch.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "testing/cache_reference.h"
#include "tqkv/kv_cache.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

const char* const kFormats[] = {"f32",    "f16",    "q8_0",   "q4_0",   "rvq1x1", "rvq1x2", "rvq1x3",
                                "rvq2x1", "rvq2x2", "rvq2x3", "rvq3x2", "rvq4x1", "tq1",    "tq2",
                                "tq3",    "tq4",    "kivi2",  "kivi4",  "rq4_0",  "riq4_nl", "qjl1",
                                "qjl3",   "tqp2",   "tqp4",   "rabitq1"};
constexpr int kNumFormats = sizeof(kFormats) / sizeof(kFormats[0]);

struct Windows {
  int window, sinks;
};

// Appends `len` tokens of H heads in uneven chunks and checks every token of every head.
void check(const char* kfmt, const char* vfmt, int d, int len, Windows w, int layer) {
  const int H = 2;
  KVCacheOptions o;
  o.key_format = *parse_format(kfmt);
  o.value_format = *parse_format(vfmt);
  o.recent_window = w.window;
  o.sink_tokens = w.sinks;
  o.quant.seed = 0x1234 + layer;
  auto cache = LayerKVCache::make(H, d, o, layer);
  ASSERT_TRUE(cache.ok()) << cache.status().to_string();
  // (H, len, d) originals: llm-like keys (outlier channels), Gaussian values.
  std::vector<float> k(static_cast<size_t>(H) * len * d), v(k.size());
  generate_llm_like(k.data(), static_cast<size_t>(H) * len, d, 7 + d + len);
  generate_gaussian(v.data(), static_cast<size_t>(H) * len, d, 8 + d + len);
  const int64_t hs = static_cast<int64_t>(len) * d;
  for (int t0 = 0, step = 0; t0 < len; ++step) {
    const int n = std::min(len - t0, 1 + (step * 37 + 5) % 70);  // 6, 43, 10, 47, ... crosses 16 and 64
    ASSERT_TRUE((*cache)->append(0, n, {&k[static_cast<size_t>(t0) * d], hs, d},
                                 {&v[static_cast<size_t>(t0) * d], hs, d}).ok());
    t0 += n;
  }
  ASSERT_EQ((*cache)->n_tokens(0), len);
  const std::string where = std::string(kfmt) + "/" + vfmt + " d=" + std::to_string(d) + " n=" + std::to_string(len) +
                            " W=" + std::to_string(w.window) + " S=" + std::to_string(w.sinks);
  for (int h = 0; h < H; ++h) {
    const std::vector<float> ek = testing::expected_contents(o, d, layer, h, CacheStream::kKey, &k[h * hs], len);
    const std::vector<float> ev = testing::expected_contents(o, d, layer, h, CacheStream::kValue, &v[h * hs], len);
    std::vector<float> rk(static_cast<size_t>(len) * d), rv(rk.size());
    ASSERT_TRUE((*cache)->read(0, h, 0, len, rk.data(), rv.data()).ok());
    int bad = 0;
    for (int t = 0; t < len && bad < 3; ++t) {
      const size_t off = static_cast<size_t>(t) * d;
      // memcmp: bit-exact, and NaN-safe (there are none here, but equal NaNs would compare equal).
      if (std::memcmp(&rk[off], &ek[off], d * sizeof(float)) != 0) {
        ADD_FAILURE() << where << ": key of head " << h << " token " << t << " differs from the quantizer's decode "
                      << "(first coordinate " << rk[off] << " vs " << ek[off] << ")";
        ++bad;
      }
      if (std::memcmp(&rv[off], &ev[off], d * sizeof(float)) != 0) {
        ADD_FAILURE() << where << ": value of head " << h << " token " << t << " differs from the quantizer's decode "
                      << "(first coordinate " << rv[off] << " vs " << ev[off] << ")";
        ++bad;
      }
    }
    // A sub-range read returns the same rows (read() of [t0, t1) is not just a prefix read).
    if (len > 20) {
      std::vector<float> sk(static_cast<size_t>(len - 17) * d), sv(sk.size());
      ASSERT_TRUE((*cache)->read(0, h, 17, len, sk.data(), sv.data()).ok());
      EXPECT_EQ(0, std::memcmp(sk.data(), &ek[static_cast<size_t>(17) * d], sk.size() * sizeof(float))) << where;
      EXPECT_EQ(0, std::memcmp(sv.data(), &ev[static_cast<size_t>(17) * d], sv.size() * sizeof(float))) << where;
    }
  }
}

class CacheContents : public ::testing::TestWithParam<int> {};

TEST_P(CacheContents, ReadEqualsQuantizerDecodeOfOriginal) {
  // Key format i, value format i + 7 (mod n): every format is tested in both streams.
  const char* kf = kFormats[GetParam()];
  const char* vf = kFormats[(GetParam() + 7) % kNumFormats];
  for (int d : {64, 80, 96, 576})
    for (int len : {1, 54, 97, 200})  // 200: 3+ pages of 64 tokens, 12+ tiles of 16
      for (Windows w : {Windows{0, 0}, Windows{0, 3}, Windows{20, 0}, Windows{16, 4}})
        check(kf, vf, d, len, w, /*layer=*/GetParam() % 5);
}

INSTANTIATE_TEST_SUITE_P(AllFormats, CacheContents, ::testing::Range(0, kNumFormats),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return std::string(kFormats[i.param]) + "_" + kFormats[(i.param + 7) % kNumFormats];
                         });

TEST(CacheContents, SeedsDifferPerLayerHeadAndStream) {
  // The derivation is a contract (docs/format.md): pin a few values so a change is deliberate.
  const uint64_t s = 0x5eed;
  EXPECT_NE(cache_rotation_seed(s, 0, 0, CacheStream::kKey), cache_rotation_seed(s, 0, 0, CacheStream::kValue));
  EXPECT_NE(cache_rotation_seed(s, 0, 1, CacheStream::kKey), cache_rotation_seed(s, 0, 0, CacheStream::kKey));
  EXPECT_NE(cache_rotation_seed(s, 1, 0, CacheStream::kKey), cache_rotation_seed(s, 0, 0, CacheStream::kKey));
  // Hand evaluation of the documented formula for (0x5eed, layer 2, head 3, value):
  // z = 0x5eed ^ (0x9e3779b97f4a7c15 * (2 * 1000003 + 3 * 2 + 1 + 1)); z = (z ^ z >> 30) * 0xbf58476d1ce4e5b9;
  // z ^ z >> 31 (all mod 2^64).
  uint64_t z = 0x5eedull ^ (0x9e3779b97f4a7c15ull * (2ull * 1000003 + 3 * 2 + 1 + 1));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z ^= z >> 31;
  EXPECT_EQ(cache_rotation_seed(s, 2, 3, CacheStream::kValue), z);
}

}  // namespace
}  // namespace tqkv
