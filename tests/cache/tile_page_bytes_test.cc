// Bit-sliced tile pages (docs/format.md, "KV cache pages") built by hand, bit by bit, from 16
// per-vector codes (docs/format.md section 1), and compared with the bytes the cache's tile
// layout writes; and every tile slot read back to the per-vector code it came from. The
// expected tile is written from the documented formulas only:
//   key tile:   float32 scale[16] | plane p: group g (ceil(d/4)): uint64 w, bit (4 t + u) of w =
//               bit of token t, coordinate 4 g + u
//   value tile: float32 scale[16] | plane p: quad q (4): chunk c (ceil(d/16)): uint64 w,
//               bit (4 i + u) of w = bit of token 4 q + u, coordinate 16 c + i
// where "bit of token t, coordinate i, plane p" is bit (i % 8) of byte (i / 8) of plane p of
// token t's per-vector code. (Internal API: the layout has no public accessor.)
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "cache/tile_layout.h"
#include "tqkv/quantizer.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

std::vector<uint8_t> hand_built_tile(const std::vector<uint8_t>& codes, size_t code_size, int d, int planes,
                                     bool value) {
  const size_t pb = (d + 7) / 8;  // bytes of one plane in a per-vector code
  const int groups = value ? (d + 15) / 16 : (d + 3) / 4;
  const size_t plane_bytes = value ? 4 * size_t(groups) * 8 : size_t(groups) * 8;
  std::vector<uint8_t> tile(64 + planes * plane_bytes, 0);
  auto code_bit = [&](int t, int p, int i) {
    return (codes[t * code_size + 4 + p * pb + i / 8] >> (i % 8)) & 1;
  };
  for (int t = 0; t < 16; ++t) std::memcpy(&tile[4 * t], &codes[t * code_size], 4);
  for (int p = 0; p < planes; ++p) {
    uint8_t* plane = &tile[64 + p * plane_bytes];
    for (int t = 0; t < 16; ++t)
      for (int i = 0; i < d; ++i) {
        size_t word;
        int bit;
        if (!value) {
          word = i / 4;
          bit = 4 * t + i % 4;
        } else {
          word = size_t(t / 4) * groups + i / 16;
          bit = 4 * (i % 16) + t % 4;
        }
        uint64_t w;
        std::memcpy(&w, plane + 8 * word, 8);
        w |= uint64_t(code_bit(t, p, i)) << bit;
        std::memcpy(plane + 8 * word, &w, 8);
      }
  }
  return tile;
}

TEST(TilePageBytes, ScatterMatchesHandBuiltTileAndGatherInvertsIt) {
  for (const char* f : {"rvq1x2", "rvq2x2", "tq1", "tq2", "rvq1x3", "rvq2x1"})
    for (int d : {64, 80, 96, 36})
      for (bool value : {false, true}) {
        QuantOptions o;
        o.seed = 77 + d;
        auto q = std::move(make_quantizer(*parse_format(f), d, o)).value();
        TileLayout L;
        ASSERT_TRUE(make_tile_layout(*q, value, &L)) << f;
        const int planes = q->format().passes * q->format().bits;
        std::vector<float> x(16 * size_t(d));
        generate_llm_like(x.data(), 16, d, 5 + d);
        std::vector<uint8_t> codes(16 * q->code_size());
        q->encode(x.data(), 16, codes.data());
        const std::vector<uint8_t> want = hand_built_tile(codes, q->code_size(), d, planes, value);
        ASSERT_EQ(L.tile_bytes, want.size()) << f << " d=" << d;
        std::vector<uint8_t> tile(L.tile_bytes, 0);
        for (int t = 0; t < 16; ++t) L.scatter(&codes[t * q->code_size()], (d + 7) / 8, t, tile.data());
        EXPECT_EQ(tile, want) << f << " d=" << d << (value ? " value" : " key") << " tile";
        for (int t = 0; t < 16; ++t) {
          std::vector<uint8_t> back(q->code_size(), 0xff);
          L.gather(tile.data(), t, back.data());
          EXPECT_EQ(0, std::memcmp(back.data(), &codes[t * q->code_size()], q->code_size()))
              << f << " d=" << d << (value ? " value" : " key") << " slot " << t;
        }
      }
}

}  // namespace
}  // namespace tqkv
