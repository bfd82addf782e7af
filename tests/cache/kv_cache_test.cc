#include "tqkv/kv_cache.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "testing/cache_reference.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

KVCacheOptions opts(const char* k, const char* v, int window = 0, int sinks = 0) {
  KVCacheOptions o;
  o.key_format = *parse_format(k);
  o.value_format = *parse_format(v);
  o.recent_window = window;
  o.sink_tokens = sinks;
  return o;
}

struct Data {
  int heads, n, d;
  std::vector<float> k, v;
  Data(int h, int n_, int d_, uint64_t seed) : heads(h), n(n_), d(d_), k(size_t(h) * n_ * d_), v(k.size()) {
    generate_llm_like(k.data(), size_t(h) * n, d, seed);
    generate_gaussian(v.data(), size_t(h) * n, d, seed + 1);
  }
  HeadTokenView kv(int t0) const { return {&k[size_t(t0) * d], int64_t(n) * d, d}; }
  HeadTokenView vv(int t0) const { return {&v[size_t(t0) * d], int64_t(n) * d, d}; }
};

std::vector<float> attend_last(const LayerKVCache& c, int seq, int nq, int m, int d, uint64_t seed) {
  std::vector<float> q(size_t(nq) * m * d), out(q.size());
  generate_gaussian(q.data(), nq * m, d, seed);
  EXPECT_TRUE(c.attend(seq, m, nq, {q.data(), int64_t(m) * d, d}, {out.data(), int64_t(m) * d, d}).ok());
  return out;
}

class Rollback : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(Rollback, TruncateThenAppendEqualsNeverAppended) {
  const int H = 2, d = 80;
  Data a(H, 400, d, 1), b(H, 400, d, 50);
  for (int sinks : {0, 4}) {
    auto o = opts(GetParam().first, GetParam().second, 0, sinks);
    auto c1 = std::move(LayerKVCache::make(H, d, o)).value();
    auto c2 = std::move(LayerKVCache::make(H, d, o)).value();
    // c1: 300 tokens of a, then 100 of b, truncate back to 300 (also across a page boundary at 256),
    // then the same 100 tokens of b again; c2: 300 of a then 100 of b.
    ASSERT_TRUE(c1->append(0, 300, a.kv(0), a.vv(0)).ok());
    ASSERT_TRUE(c1->append(0, 100, b.kv(0), b.vv(0)).ok());
    ASSERT_TRUE(c1->truncate(0, 250).ok());
    EXPECT_EQ(c1->n_tokens(0), 250);
    ASSERT_TRUE(c1->append(0, 50, a.kv(250), a.vv(250)).ok());
    ASSERT_TRUE(c1->append(0, 100, b.kv(0), b.vv(0)).ok());
    ASSERT_TRUE(c2->append(0, 300, a.kv(0), a.vv(0)).ok());
    ASSERT_TRUE(c2->append(0, 100, b.kv(0), b.vv(0)).ok());
    EXPECT_EQ(attend_last(*c1, 0, 2 * H, 3, d, 9), attend_last(*c2, 0, 2 * H, 3, d, 9));
    EXPECT_EQ(c1->bytes_resident(), c2->bytes_resident());
    EXPECT_FALSE(c1->truncate(0, 401).ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, Rollback,
                         ::testing::Values(std::make_pair("rvq1x2", "tq2"), std::make_pair("q8_0", "kivi2"),
                                           std::make_pair("f16", "f16"), std::make_pair("rvq3x2", "tq4")));

TEST(KVCache, BytesResidentMatchesHandFormula) {
  const int H = 3, d = 128, P = 256;
  struct Case { const char* k; const char* v; size_t kpage, vpage; };
  // Tile formats: 16 tiles of (64 + planes * 2d) bytes; per-vector formats: P * code_size.
  const Case cases[] = {
      {"rvq1x2", "tq2", 16 * (64 + 2 * 256), 16 * (64 + 2 * 256)},
      {"q8_0", "q4_0", size_t(P) * 136, size_t(P) * 72},
      {"f16", "kivi4", size_t(P) * 256, size_t(P) * 80},
  };
  for (const Case& cs : cases) {
    KVCacheOptions o = opts(cs.k, cs.v);
    o.page_tokens = P;
    auto c = std::move(LayerKVCache::make(H, d, o)).value();
    EXPECT_EQ(c->bytes_resident(), 0u);
    Data a(H, 600, d, 3);
    ASSERT_TRUE(c->append(0, 600, a.kv(0), a.vv(0)).ok());
    ASSERT_TRUE(c->append(1, 10, a.kv(0), a.vv(0)).ok());
    // seq 0: 3 pages per head; seq 1: 1 page per head. Page tables hold >= pages pointers.
    size_t expect = 0;
    const size_t pages[2] = {3, 1};
    for (size_t p : pages) expect += H * p * ((cs.kpage + 63) / 64 * 64 + (cs.vpage + 63) / 64 * 64);
    const size_t b = c->bytes_resident();
    // Metadata (page tables, per-sequence structs) is counted too: a few hundred bytes.
    EXPECT_GE(b, expect + 2 * H * 8 * 2);
    EXPECT_LT(b, expect + 4096) << cs.k << "/" << cs.v;
    ASSERT_TRUE(c->truncate(0, 256).ok());
    EXPECT_LT(c->bytes_resident(), b - 2 * H * (cs.kpage + cs.vpage) + 1);
    c->clear();
    EXPECT_EQ(c->bytes_resident(), 0u);
  }
}

TEST(KVCache, WindowKeepsRecentTokensInF16) {
  // Sinks 0..3 and the 32 most recent tokens (268..299) are exactly the f16 round trip of the
  // input; tokens 4..267 are exactly the quantizer's decode of their f16 copy (they were
  // compressed when they left the window). Exact equality: see cache_contents_test.cc, which
  // covers every format and shape; this is the window case at a glance.
  const int H = 1, d = 64;
  Data a(H, 300, d, 4);
  const KVCacheOptions o = opts("rvq1x2", "tq2", 32, 4);
  auto c = std::move(LayerKVCache::make(H, d, o)).value();
  ASSERT_TRUE(c->append(0, 300, a.kv(0), a.vv(0)).ok());
  std::vector<float> k(300 * d), v(300 * d), f16(300 * d);
  ASSERT_TRUE(c->read(0, 0, 0, 300, k.data(), v.data()).ok());
  testing::f16_round_trip(a.k.data(), 300, d, f16.data());
  const std::vector<float> want = testing::expected_contents(o, d, 0, 0, CacheStream::kKey, a.k.data(), 300);
  for (int t : {0, 3, 268, 299})
    EXPECT_EQ(0, std::memcmp(&k[t * d], &f16[t * d], d * sizeof(float))) << "sink/window token " << t << " is f16";
  for (int t : {4, 100, 267}) {
    EXPECT_NE(0, std::memcmp(&k[t * d], &f16[t * d], d * sizeof(float))) << "token " << t << " is compressed";
    EXPECT_EQ(0, std::memcmp(&k[t * d], &want[t * d], d * sizeof(float))) << "token " << t;
  }
}

TEST(KVCache, ClearErrors) {
  auto c = std::move(LayerKVCache::make(2, 64, opts("rvq1x2", "tq2"))).value();
  std::vector<float> q(4 * 64), out(4 * 64);
  EXPECT_FALSE(c->attend(0, 1, 4, {q.data(), 64, 64}, {out.data(), 64, 64}).ok()) << "empty sequence";
  Data a(2, 10, 64, 5);
  ASSERT_TRUE(c->append(0, 10, a.kv(0), a.vv(0)).ok());
  EXPECT_FALSE(c->attend(0, 1, 3, {q.data(), 64, 64}, {out.data(), 64, 64}).ok()) << "3 q heads, 2 kv heads";
  EXPECT_FALSE(c->attend(0, 11, 4, {q.data(), 64, 64}, {out.data(), 64, 64}).ok()) << "m > tokens";
  EXPECT_FALSE(c->append(-1, 1, a.kv(0), a.vv(0)).ok());
  EXPECT_FALSE(LayerKVCache::make(0, 64, opts("f16", "f16")).ok());
  KVCacheOptions bad = opts("f16", "f16");
  bad.page_tokens = 100;
  EXPECT_FALSE(LayerKVCache::make(1, 64, bad).ok());
  EXPECT_FALSE(cache_config_from_method("turboquant_rvq", 1, 2, 3, true).ok());
  auto cfg = cache_config_from_method("turboquant_rvq", 1, 2, 2, true);
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->base.key_format.name(), "rvq1x2");
  EXPECT_EQ(cfg->base.value_format.name(), "tq2");
}

TEST(ModelKVCache, BoundaryLayersUseTheirFormat) {
  ModelCacheConfig cfg = *cache_config_from_method("turboquant_rvq", 1, 2, 2, true);
  cfg.boundary_layers = 1;
  auto m = std::move(ModelKVCache::make(4, 2, 64, cfg)).value();
  EXPECT_EQ(m->layer(0).options().key_format.name(), "q8_0");
  EXPECT_EQ(m->layer(1).options().key_format.name(), "rvq1x2");
  EXPECT_EQ(m->layer(3).options().value_format.name(), "q8_0");
  Data a(2, 100, 64, 6);
  for (int l = 0; l < 4; ++l) ASSERT_TRUE(m->layer(l).append(0, 100, a.kv(0), a.vv(0)).ok());
  EXPECT_EQ(m->f16_bytes(0), size_t(4) * 100 * 2 * 64 * 2 * 2);
  EXPECT_GT(m->bytes_resident(), 0u);
}

}  // namespace
}  // namespace tqkv
