// Tensor-parallel head shards (tqkv/head_shard.h): a cache for a subset of kv heads must store,
// for each of its heads, exactly the bytes the unsharded cache stores for that global head (pages,
// f16 sinks / window / pending rows), decode to the same values, and give bit-identical attention
// outputs for the shard's query heads. The truth is the unsharded LayerKVCache fed the same
// tokens; shards are built from shard_kv_heads (balanced blocks) and from hand-picked offsets.
// Hostile shards (offset + count > heads, zero count, negative offset, int overflow, world_size >
// heads, query heads not a multiple) must give one clear error, never a cache.
#include "tqkv/head_shard.h"

#include <gtest/gtest.h>

#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "tqkv/channel_basis.h"
#include "tqkv/kv_cache.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

// ---- shard arithmetic ------------------------------------------------------------------------

TEST(HeadShard, RanksTileTheHeadsInOrderAndBalanced) {
  for (int total = 1; total <= 9; ++total)
    for (int world = 1; world <= total; ++world) {
      int next = 0;
      for (int r = 0; r < world; ++r) {
        auto s = shard_kv_heads(total, r, world);
        ASSERT_TRUE(s.ok()) << s.status().to_string();
        EXPECT_EQ(s->kv_head_offset, next) << total << " heads, rank " << r << "/" << world;
        EXPECT_EQ(s->n_total_kv_heads, total);
        EXPECT_TRUE(s->n_kv_heads == total / world || s->n_kv_heads == total / world + 1);
        EXPECT_TRUE(validate_head_shard(*s).ok());
        next += s->n_kv_heads;
      }
      EXPECT_EQ(next, total);
    }
  // 8 kv heads on 2 ranks: 4 each; 32 query heads (g = 4): rank 1 holds query heads 16..31.
  auto s = shard_kv_heads(8, 1, 2);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, (HeadShard{4, 4, 8}));
  auto q = shard_query_heads(*s, 32);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, (QueryHeadRange{16, 16}));
  EXPECT_EQ(all_kv_heads(8), (HeadShard{0, 8, 8}));
}

void expect_error(const Status& s, const std::string& needle) {
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(needle), std::string::npos) << "message: " << s.message();
}

TEST(HeadShard, HostileShardsAreRefusedWithOneClearLine) {
  expect_error(validate_head_shard({6, 3, 8}), "kv heads [6, 9) lie outside the layer's 8 kv heads");
  expect_error(validate_head_shard({0, 0, 8}), "at least one kv head");
  expect_error(validate_head_shard({-1, 2, 8}), "kv_head_offset must be >= 0");
  expect_error(validate_head_shard({INT_MAX, INT_MAX, 8}), "lie outside");  // no int overflow
  expect_error(validate_head_shard({0, 1, 0}), "lie outside");
  expect_error(shard_kv_heads(8, 0, 16).status(), "world_size 16 exceeds the 8 kv heads");
  expect_error(shard_kv_heads(8, 2, 2).status(), "rank must be in [0, 2)");
  expect_error(shard_kv_heads(8, -1, 2).status(), "rank must be in [0, 2)");
  expect_error(shard_kv_heads(8, 0, 0).status(), "world_size must be >= 1");
  expect_error(shard_kv_heads(0, 0, 1).status(), "n_total_kv_heads must be >= 1");
  expect_error(shard_query_heads({0, 4, 8}, 12).status(), "positive multiple of the 8 kv heads");
  expect_error(shard_query_heads({0, 4, 8}, 0).status(), "positive multiple");
  expect_error(shard_query_heads({4, 5, 8}, 32).status(), "lie outside");

  KVCacheOptions o;
  expect_error(LayerKVCache::make(HeadShard{6, 3, 8}, 64, o, 0).status(), "lie outside the layer's 8 kv heads");
  expect_error(LayerKVCache::make(HeadShard{0, 0, 8}, 64, o, 0).status(), "at least one kv head");
  ModelCacheConfig mc;
  expect_error(ModelKVCache::make(2, HeadShard{7, 2, 8}, 64, mc).status(), "lie outside");
  expect_error(ModelKVCache::make(2, HeadShard{0, 0, 8}, 64, mc).status(), "at least one kv head");
  // The unsharded entry points keep their messages.
  expect_error(LayerKVCache::make(0, 64, o, 0).status(), "n_kv_heads must be >= 1");
}

// ---- sharded caches == unsharded cache ---------------------------------------------------------

struct Case {
  const char* k;
  const char* v;
  int d, window, sinks;
};

KVCacheOptions options_of(const Case& c) {
  KVCacheOptions o;
  o.key_format = *parse_format(c.k);
  o.value_format = *parse_format(c.v);
  o.recent_window = c.window;
  o.sink_tokens = c.sinks;
  o.pk_calib_tokens = 100;
  o.quant.seed = 0xabc;
  return o;
}

// Every stored byte of one stream of one head: page-table length, page bytes, f16 rows.
void expect_same_stream(const StreamLayout& L, const StreamPages& a, const StreamPages& b, int sinks, int window,
                        int n_pending, int d, const std::string& where) {
  ASSERT_EQ(a.n_pages, b.n_pages) << where;
  for (int p = 0; p < a.n_pages; ++p)
    ASSERT_EQ(std::memcmp(a.pages[p], b.pages[p], L.page_bytes), 0) << where << " page " << p;
  auto same_rows = [&](const uint16_t* x, const uint16_t* y, int rows, const char* what) {
    ASSERT_EQ(x == nullptr, y == nullptr) << where << " " << what;
    if (x) {
      ASSERT_EQ(std::memcmp(x, y, sizeof(uint16_t) * rows * d), 0) << where << " " << what;
    }
  };
  same_rows(a.sink, b.sink, sinks, "sinks");
  same_rows(a.window, b.window, window, "window");
  same_rows(a.pending, b.pending, n_pending, "pending");
}

// Appends the same (H, n, d) tokens to the unsharded cache and to each shard (in uneven chunks),
// then compares bytes, read() and attention of every shard head against the unsharded cache.
void check_shards(const Case& c, int H, int G, const std::vector<HeadShard>& shards, int len) {
  const int d = c.d, Q = H * G;
  const KVCacheOptions o = options_of(c);
  const int layer = 3;
  auto full = LayerKVCache::make(H, d, o, layer);
  ASSERT_TRUE(full.ok()) << full.status().to_string();
  std::vector<std::unique_ptr<LayerKVCache>> parts;
  for (const HeadShard& s : shards) {
    auto p = LayerKVCache::make(s, d, o, layer);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ((*p)->shard(), s);
    EXPECT_EQ((*p)->n_kv_heads(), s.n_kv_heads);
    parts.push_back(std::move(p).value());
  }
  std::vector<float> k(size_t(H) * len * d), v(k.size());
  generate_llm_like(k.data(), size_t(H) * len, d, 11 + d);
  generate_gaussian(v.data(), size_t(H) * len, d, 12 + d);
  const int64_t hs = int64_t(len) * d;
  for (int t0 = 0, step = 0; t0 < len; ++step) {
    const int n = std::min(len - t0, 1 + (step * 37 + 5) % 70);
    const size_t at = size_t(t0) * d;
    ASSERT_TRUE((*full)->append(0, n, {&k[at], hs, d}, {&v[at], hs, d}).ok());
    for (size_t i = 0; i < shards.size(); ++i) {
      const size_t off = at + size_t(shards[i].kv_head_offset) * hs;  // the shard's heads only
      ASSERT_TRUE(parts[i]->append(0, n, {&k[off], hs, d}, {&v[off], hs, d}).ok());
    }
    t0 += n;
  }
  // Attention: all Q query heads on the full cache, the shard's query heads on each shard.
  std::vector<float> q(size_t(Q) * d);
  generate_gaussian(q.data(), Q, d, 99);
  AttentionOptions ao;
  ao.rope.rotary_dims = d;  // pre-RoPE (pk) key streams need the RoPE parameters
  for (int split : {0, 64}) {
    ao.split_tokens = split;
    std::vector<float> ref(q.size());
    ASSERT_TRUE((*full)->attend(0, 1, Q, {q.data(), d, d}, {ref.data(), d, d}, ao).ok());
    for (size_t i = 0; i < shards.size(); ++i) {
      auto qr = shard_query_heads(shards[i], Q);
      ASSERT_TRUE(qr.ok());
      std::vector<float> out(size_t(qr->count) * d);
      ASSERT_TRUE(parts[i]->attend(0, 1, qr->count, {&q[size_t(qr->offset) * d], d, d}, {out.data(), d, d}, ao).ok());
      // Bit-identical: the same codes, and attention of a head never looks at another head.
      EXPECT_EQ(std::memcmp(out.data(), &ref[size_t(qr->offset) * d], sizeof(float) * out.size()), 0)
          << c.k << "/" << c.v << " d=" << d << " shard " << i << " split " << split;
    }
  }
  const LayerView& L = (*full)->view();
  const SequenceView fv = (*full)->sequence_view(0);
  for (size_t i = 0; i < shards.size(); ++i) {
    const SequenceView sv = parts[i]->sequence_view(0);
    ASSERT_EQ(sv.n_tokens, fv.n_tokens);
    ASSERT_EQ(sv.n_compressed, fv.n_compressed);
    ASSERT_EQ(sv.n_pending, fv.n_pending);
    EXPECT_EQ(parts[i]->view().key.page_bytes, L.key.page_bytes);
    for (int h = 0; h < shards[i].n_kv_heads; ++h) {
      const int g = shards[i].kv_head_offset + h;
      const std::string where = std::string(c.k) + "/" + c.v + " d=" + std::to_string(d) + " shard " +
                                std::to_string(i) + " head " + std::to_string(g);
      expect_same_stream(L.key, sv.heads[h].key, fv.heads[g].key, c.sinks, c.window, sv.n_pending, d, where + " keys");
      expect_same_stream(L.value, sv.heads[h].value, fv.heads[g].value, c.sinks, c.window, sv.n_pending, d,
                         where + " values");
      std::vector<float> ak(size_t(len) * d), av(ak.size()), bk(ak.size()), bv(ak.size());
      ASSERT_TRUE(parts[i]->read(0, h, 0, len, ak.data(), av.data()).ok());
      ASSERT_TRUE((*full)->read(0, g, 0, len, bk.data(), bv.data()).ok());
      EXPECT_EQ(std::memcmp(ak.data(), bk.data(), sizeof(float) * ak.size()), 0) << where;
      EXPECT_EQ(std::memcmp(av.data(), bv.data(), sizeof(float) * av.size()), 0) << where;
    }
  }
}

std::vector<HeadShard> ranks(int H, int world) {
  std::vector<HeadShard> s;
  for (int r = 0; r < world; ++r) s.push_back(*shard_kv_heads(H, r, world));
  return s;
}

const Case kCases[] = {
    {"f16", "f16", 128, 0, 0},      {"q8_0", "q4_0", 128, 0, 0},    {"rvq1x2", "tq2", 128, 0, 0},
    {"rvq1x2", "tq2", 128, 32, 4},  {"rvq2x2", "tq4", 128, 0, 0},   {"tq4", "tq4", 64, 0, 0},
    {"tq3", "tq3", 128, 0, 0},      {"rvq1x2", "tq2", 80, 16, 0},   {"kivi2", "kivi4", 64, 0, 0},
    {"pk2", "tq2", 128, 0, 0},      {"pk3", "tq4", 64, 16, 2},
    // Rotated peers (seeded per head like rvq/tq): llama.cpp's rotated q4_0 / iq4_nl, QJL, TQ-prod, RaBitQ.
    {"rq4_0", "riq4_nl", 128, 0, 0}, {"qjl2", "tqp2", 128, 0, 0},  {"rabitq1", "tqp3", 80, 0, 0},
};

TEST(HeadShard, ShardsConcatenatedEqualTheUnshardedCacheBitForBit) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(std::string(c.k) + "/" + c.v + " d=" + std::to_string(c.d));
    for (int world : {2, 4}) check_shards(c, 4, 2, ranks(4, world), 200);
    // Uneven and hand-picked: 5 kv heads on 3 ranks (2, 2, 1); a lone middle head.
    check_shards(c, 5, 3, ranks(5, 3), 100);
    check_shards(c, 5, 1, {HeadShard{2, 1, 5}}, 100);
  }
}

// The seeds follow the GLOBAL head: a shard of one head at offset 1 is not the unsharded cache's
// head 0 (guards against a shard silently using local head indices).
TEST(HeadShard, AShardHeadIsNotTheLocalIndexOfTheUnshardedCache) {
  const Case c{"rvq1x2", "tq2", 128, 0, 0};
  const KVCacheOptions o = options_of(c);
  auto full = LayerKVCache::make(2, 128, o, 0);
  auto part = LayerKVCache::make(HeadShard{1, 1, 2}, 128, o, 0);
  ASSERT_TRUE(full.ok() && part.ok());
  std::vector<float> k(2 * 64 * 128), v(k.size());
  generate_gaussian(k.data(), 2 * 64, 128, 1);
  generate_gaussian(v.data(), 2 * 64, 128, 2);
  // Head 0 of the full cache gets the same tokens as the shard's only head.
  std::vector<float> k2(k), v2(v);
  std::copy(k.begin(), k.begin() + 64 * 128, k2.begin() + 64 * 128);
  std::copy(v.begin(), v.begin() + 64 * 128, v2.begin() + 64 * 128);
  ASSERT_TRUE((*full)->append(0, 64, {k2.data(), 64 * 128, 128}, {v2.data(), 64 * 128, 128}).ok());
  ASSERT_TRUE((*part)->append(0, 64, {k.data(), 64 * 128, 128}, {v.data(), 64 * 128, 128}).ok());
  const SequenceView f = (*full)->sequence_view(0), p = (*part)->sequence_view(0);
  const size_t pb = (*full)->view().key.page_bytes;
  EXPECT_EQ(std::memcmp(p.heads[0].key.pages[0], f.heads[1].key.pages[0], pb), 0);  // global head 1
  EXPECT_NE(std::memcmp(p.heads[0].key.pages[0], f.heads[0].key.pages[0], pb), 0);  // not head 0's rotation
}

// pk{b} channel bases (KVCacheOptions::pk_basis) are indexed by the GLOBAL kv head: a shard given
// the model's per-head bases codes its heads with their own bases, as the unsharded cache does.
TEST(HeadShard, PkBasisFollowsTheGlobalHead) {
  const int H = 4, d = 64, n = 150;
  KVCacheOptions o = options_of({"pk2", "tq2", d, 0, 0});
  for (int h = 0; h < H; ++h) {  // a different orthonormal basis per head: a cyclic permutation
    std::vector<float> u(size_t(d) * d, 0.0f);
    for (int i = 0; i < d; ++i) u[size_t(i) * d + (i + 7 * (h + 1)) % d] = 1.0f;
    o.pk_basis[0].push_back(std::make_shared<const ChannelBasis>(orthonormal_basis(u, d)));
  }
  auto full = LayerKVCache::make(H, d, o, 1);
  auto part = LayerKVCache::make(HeadShard{2, 2, H}, d, o, 1);
  ASSERT_TRUE(full.ok() && part.ok());
  std::vector<float> k(size_t(H) * n * d), v(k.size());
  generate_llm_like(k.data(), size_t(H) * n, d, 5);
  generate_gaussian(v.data(), size_t(H) * n, d, 6);
  const int64_t hs = int64_t(n) * d;
  ASSERT_TRUE((*full)->append(0, n, {k.data(), hs, d}, {v.data(), hs, d}).ok());
  ASSERT_TRUE((*part)->append(0, n, {&k[2 * hs], hs, d}, {&v[2 * hs], hs, d}).ok());
  const SequenceView f = (*full)->sequence_view(0), p = (*part)->sequence_view(0);
  ASSERT_GT(p.n_compressed, 0);
  const size_t pb = (*full)->view().key.page_bytes;
  for (int h = 0; h < 2; ++h)
    for (int pg = 0; pg < p.heads[h].key.n_pages; ++pg)
      EXPECT_EQ(std::memcmp(p.heads[h].key.pages[pg], f.heads[2 + h].key.pages[pg], pb), 0) << "head " << 2 + h;
}

TEST(HeadShard, ModelCacheShardsEveryLayer) {
  ModelCacheConfig mc;
  mc.base = options_of({"rvq1x2", "tq2", 64, 0, 0});
  mc.boundary_layers = 1;
  auto m = ModelKVCache::make(3, HeadShard{2, 2, 4}, 64, mc);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  for (int l = 0; l < 3; ++l) {
    EXPECT_EQ((*m)->layer(l).shard(), (HeadShard{2, 2, 4}));
    EXPECT_EQ((*m)->layer(l).n_kv_heads(), 2);
  }
  auto whole = ModelKVCache::make(3, 4, 64, mc);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ((*whole)->layer(1).shard(), all_kv_heads(4));
}

}  // namespace
}  // namespace tqkv
