// The bytes a LayerKVCache stores in its pages (read through the public read-only view,
// tqkv/kv_view.h), against pages built here by hand from docs/format.md ("KV cache pages"):
//  - per-vector pages: compressed token c at byte (c % P) * code_size of page c / P, holding the
//    quantizer's code of the ORIGINAL token (quantizer made with cache_rotation_seed());
//  - bit-sliced tile pages, built bit by bit from 16 such per-vector codes:
//      key tile:   float32 scale[16] | plane p: group g (ceil(d/4)): uint64 w, bit (4 t + u) of w =
//                  bit of token t, coordinate 4 g + u
//      value tile: float32 scale[16] | plane p: quad q (4): chunk c (ceil(d/16)): uint64 w,
//                  bit (4 i + u) of w = bit of token 4 q + u, coordinate 16 c + i
//    lookup tiles (3 or 4 planes in all, d % 16 == 0), 2 coordinates / tokens per group instead
//    of 4:
//      key tile:   float32 scale[16] | plane p: group g (d/2): uint32 w, bit (2 t + u) of w =
//                  bit of token t, coordinate 2 g + u
//      value tile: float32 scale[16] | plane p: pair q (8): chunk c (d/16): uint32 w,
//                  bit (2 i + u) of w = bit of token 2 q + u, coordinate 16 c + i
//    where "bit of token t, coordinate i, plane p" is bit (i % 8) of byte (i / 8) of plane p of
//    token t's per-vector code (docs/format.md section 1); slots past the last token hold zero
//    bits and scale 0.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "testing/cache_reference.h"
#include "tqkv/kv_cache.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

// codes: n_tok (<= 16) per-vector codes of the tokens in slots 0..n_tok-1 of one tile.
std::vector<uint8_t> hand_built_lut_tile(const uint8_t* codes, int n_tok, size_t code_size, int d, int planes,
                                         bool value) {
  const size_t pb = d / 8;
  const size_t plane_bytes = 2 * size_t(d);
  std::vector<uint8_t> tile(64 + planes * plane_bytes, 0);
  for (int t = 0; t < n_tok; ++t) std::memcpy(&tile[4 * t], &codes[t * code_size], 4);
  for (int p = 0; p < planes; ++p)
    for (int t = 0; t < n_tok; ++t)
      for (int i = 0; i < d; ++i) {
        const size_t word = value ? size_t(t / 2) * (d / 16) + i / 16 : size_t(i / 2);
        const int bit = value ? 2 * (i % 16) + t % 2 : 2 * t + i % 2;
        uint32_t w;
        uint8_t* at = &tile[64 + p * plane_bytes + 4 * word];
        std::memcpy(&w, at, 4);
        w |= uint32_t((codes[t * code_size + 4 + p * pb + i / 8] >> (i % 8)) & 1) << bit;
        std::memcpy(at, &w, 4);
      }
  return tile;
}

std::vector<uint8_t> hand_built_tile(const uint8_t* codes, int n_tok, size_t code_size, int d, int planes,
                                     bool value) {
  const size_t pb = (d + 7) / 8;  // bytes of one plane in a per-vector code
  const int groups = value ? (d + 15) / 16 : (d + 3) / 4;
  const size_t plane_bytes = value ? 4 * size_t(groups) * 8 : size_t(groups) * 8;
  std::vector<uint8_t> tile(64 + planes * plane_bytes, 0);
  auto code_bit = [&](int t, int p, int i) { return (codes[t * code_size + 4 + p * pb + i / 8] >> (i % 8)) & 1; };
  for (int t = 0; t < n_tok; ++t) std::memcpy(&tile[4 * t], &codes[t * code_size], 4);
  for (int p = 0; p < planes; ++p) {
    uint8_t* plane = &tile[64 + p * plane_bytes];
    for (int t = 0; t < n_tok; ++t)
      for (int i = 0; i < d; ++i) {
        const size_t word = value ? size_t(t / 4) * groups + i / 16 : size_t(i / 4);
        const int bit = value ? 4 * (i % 16) + t % 4 : 4 * t + i % 4;
        uint64_t w;
        std::memcpy(&w, plane + 8 * word, 8);
        w |= uint64_t(code_bit(t, p, i)) << bit;
        std::memcpy(plane + 8 * word, &w, 8);
      }
  }
  return tile;
}

void check_pages(const char* kfmt, const char* vfmt, int d, int len, int sinks) {
  const int H = 2;
  KVCacheOptions o;
  o.key_format = *parse_format(kfmt);
  o.value_format = *parse_format(vfmt);
  o.sink_tokens = sinks;
  o.quant.seed = 99;
  const int layer = 2;
  auto cache = std::move(LayerKVCache::make(H, d, o, layer)).value();
  std::vector<float> k(size_t(H) * len * d), v(k.size());
  generate_llm_like(k.data(), size_t(H) * len, d, 3 + d);
  generate_gaussian(v.data(), size_t(H) * len, d, 4 + d);
  const int64_t hs = int64_t(len) * d;
  for (int t0 = 0; t0 < len;) {
    const int n = std::min(len - t0, 29);
    ASSERT_TRUE(cache->append(0, n, {&k[size_t(t0) * d], hs, d}, {&v[size_t(t0) * d], hs, d}).ok());
    t0 += n;
  }
  const LayerView& L = cache->view();
  const SequenceView s = cache->sequence_view(0);
  ASSERT_EQ(s.n_tokens, len);
  const int n_comp = len - sinks;
  ASSERT_EQ(s.n_compressed, n_comp);
  const std::string where = std::string(kfmt) + "/" + vfmt + " d=" + std::to_string(d) + " n=" + std::to_string(len);
  for (int h = 0; h < H; ++h)
    for (CacheStream st : {CacheStream::kKey, CacheStream::kValue}) {
      const bool value = st == CacheStream::kValue;
      const StreamLayout& sl = value ? L.value : L.key;
      const StreamPages& pages = value ? s.heads[h].value : s.heads[h].key;
      auto q = testing::cache_quantizer(o, d, layer, h, st);
      ASSERT_EQ(sl.code_size, q->code_size());
      const float* x = (value ? v.data() : k.data()) + h * hs + size_t(sinks) * d;
      std::vector<uint8_t> codes(size_t(n_comp) * q->code_size());
      q->encode(x, n_comp, codes.data());
      const std::string w = where + (value ? " value" : " key") + " head " + std::to_string(h);
      ASSERT_EQ(pages.n_pages, (n_comp + sl.page_tokens - 1) / sl.page_tokens) << w;
      if (sl.storage == KVStorage::kPerVector) {
        for (int c = 0; c < n_comp; ++c)
          ASSERT_EQ(0, std::memcmp(sl.code(pages.pages, c), &codes[c * q->code_size()], q->code_size()))
              << w << ": compressed token " << c;
      } else {
        const int planes = q->format().passes * q->format().bits;
        ASSERT_EQ(sl.tiles.planes, planes);
        for (int c0 = 0; c0 < n_comp; c0 += kTileTokens) {
          const int nt = std::min(kTileTokens, n_comp - c0);
          const bool lut = planes >= 3 && planes <= 4 && d % 16 == 0;
          ASSERT_EQ(sl.tiles.lut, lut) << w;
          const std::vector<uint8_t> want =
              lut ? hand_built_lut_tile(&codes[c0 * q->code_size()], nt, q->code_size(), d, planes, value)
                  : hand_built_tile(&codes[c0 * q->code_size()], nt, q->code_size(), d, planes, value);
          ASSERT_EQ(sl.tiles.tile_bytes, want.size()) << w;
          const uint8_t* got = sl.tile(pages.pages, c0);
          ASSERT_EQ(0, std::memcmp(got, want.data(), want.size())) << w << ": tile of tokens " << c0 << "..";
        }
      }
    }
}

TEST(CachePageBytes, EqualHandBuiltPages) {
  // Tile formats (rvq/tq with 1-2 bit passes) and per-vector ones, both streams; 150 tokens =
  // 2+ pages of 64 and a partial last tile; d = 36 has padding in both tile layouts.
  // Lookup tiles (3-4 planes: tq3/tq4/rvq1x3/rvq2x2/rvq4x1) at d = 64, 80; d = 36 keeps the
  // 2-bit tile layout or per-vector codes.
  const char* pairs[][2] = {{"rvq1x2", "tq2"}, {"rvq2x2", "tq1"}, {"rvq1x3", "rvq2x1"}, {"tq3", "q4_0"},
                            {"q8_0", "kivi2"}, {"f16", "rvq4x1"}, {"kivi4", "f32"}, {"tq4", "tq3"},
                            {"rvq2x3", "tq4"}};
  for (const auto& p : pairs)
    for (int d : {64, 80, 36})
      for (int sinks : {0, 5}) check_pages(p[0], p[1], d, 150, sinks);
}

}  // namespace
}  // namespace tqkv
