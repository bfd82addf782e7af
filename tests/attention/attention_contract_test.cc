// The attention contract (tqkv/attention.h, tqkv/kv_view.h):
//  - the view the cache hands out addresses exactly the bytes the quantizer produced for the
//    original input (checked against an independent encode of the same rows);
//  - keys stored BEFORE RoPE and rotated on the fly give the same attention as keys stored after
//    RoPE (f32 keys: bit-identical, both paths compute the same float operations);
//  - the f16 direct kernels' head_dim limit is explicit: larger heads take the general path and
//    still match float64 attention.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "testing/attention_reference.h"
#include "tqkv/attention.h"
#include "tqkv/kv_cache.h"
#include "tqkv/synthetic.h"

namespace tqkv {
namespace {

std::unique_ptr<LayerKVCache> make_cache(const char* k, const char* v, int n_kv, int d, int window = 0,
                                         int sinks = 0, bool pre_rope = false) {
  KVCacheOptions o;
  o.key_format = *parse_format(k);
  o.value_format = *parse_format(v);
  o.recent_window = window;
  o.sink_tokens = sinks;
  o.keys_pre_rope = pre_rope;
  auto c = LayerKVCache::make(n_kv, d, o, 1);
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return std::move(*c);
}

TEST(AttentionContract, ViewAddressesTheQuantizersBytes) {
  const int d = 96, n_kv = 2, n = 150, S = 3;
  for (const char* kf : {"q8_0", "rvq1x2", "tq3"}) {
    auto cache = make_cache(kf, "kivi2", n_kv, d, /*window=*/0, S);
    std::vector<float> k(static_cast<size_t>(n_kv) * n * d), v(k.size());
    generate_llm_like(k.data(), n_kv * n, d, 7);
    generate_gaussian(v.data(), n_kv * n, d, 8);
    ASSERT_TRUE(cache->append(0, n, {k.data(), int64_t(n) * d, d}, {v.data(), int64_t(n) * d, d}).ok());
    const LayerView& L = cache->view();
    EXPECT_EQ(L.n_kv_heads, n_kv);
    EXPECT_EQ(L.head_dim, d);
    EXPECT_EQ(L.sink_tokens, S);
    EXPECT_EQ(L.key.code_size, code_size(L.key.format, d));
    // rvq1x2: bit-sliced tiles; tq3 (3 planes, d % 16 == 0): lookup tiles.
    EXPECT_EQ(L.key.storage, std::string(kf) == "q8_0" ? KVStorage::kPerVector : KVStorage::kTiles);
    EXPECT_EQ(L.key.tiles.lut, std::string(kf) == "tq3");
    EXPECT_EQ(L.value.storage, KVStorage::kPerVector);
    EXPECT_TRUE(L.key.norm_correction);  // the default QuantOptions
    const SequenceView sv = cache->sequence_view(0);
    EXPECT_EQ(sv.n_tokens, n);
    EXPECT_EQ(sv.n_compressed, n - S);
    EXPECT_EQ(cache->sequence_view(5).n_tokens, 0);
    for (int h = 0; h < n_kv; ++h) {
      const HeadCodec& kc = L.key.heads[h];
      ASSERT_NE(kc.quantizer, nullptr);
      EXPECT_EQ(kc.rotation != nullptr, L.key.format.rotated());
      EXPECT_EQ(sv.heads[h].key.n_pages, (n - S + L.page_tokens - 1) / L.page_tokens);
      // Sinks hold f16 copies.
      ASSERT_NE(sv.heads[h].key.sink, nullptr);
      // Every compressed token: the bytes at the view's address equal an independent encode of
      // the original row (values: per vector; keys: per vector or scale of the tile slot).
      std::vector<uint8_t> want(std::max(L.key.code_size, L.value.code_size));
      for (int c = 0; c < n - S; ++c) {
        const float* vrow = &v[(static_cast<size_t>(h) * n + S + c) * d];
        L.value.heads[h].quantizer->encode(vrow, 1, want.data());
        ASSERT_EQ(std::memcmp(L.value.code(sv.heads[h].value.pages, c), want.data(), L.value.code_size), 0) << kf << " c " << c;
        const float* krow = &k[(static_cast<size_t>(h) * n + S + c) * d];
        kc.quantizer->encode(krow, 1, want.data());
        if (L.key.storage == KVStorage::kPerVector) {
          ASSERT_EQ(std::memcmp(L.key.code(sv.heads[h].key.pages, c), want.data(), L.key.code_size), 0) << kf << " c " << c;
        } else {
          const float* sc = L.key.tiles.scales(L.key.tile(sv.heads[h].key.pages, c));
          ASSERT_EQ(std::memcmp(&sc[c % kTileTokens], want.data(), 4), 0) << kf << " c " << c;
        }
      }
    }
  }
}

// Appends raw keys to a pre-RoPE cache and RoPE'd keys to a post-RoPE cache; attention with the
// same (RoPE'd) queries must agree.
struct RopePair {
  std::vector<float> out_pre, out_post;
};

RopePair run_rope_pair(const char* kf, int d, int rot, RopeStyle style, int window, int sinks, int offset) {
  const int n_kv = 2, G = 2, n = 200, m = 3;
  RopeParams rope{rot, 10000.0f, 1.0f, style, nullptr};
  const std::vector<float> inv = rope_inv_freq(rope);
  std::vector<float> k(static_cast<size_t>(n_kv) * n * d), v(k.size()), kr;
  generate_llm_like(k.data(), n_kv * n, d, 11);
  generate_gaussian(v.data(), n_kv * n, d, 12);
  kr = k;
  for (int h = 0; h < n_kv; ++h)
    for (int t = 0; t < n; ++t) apply_rope(rope, inv.data(), offset + t, &kr[(static_cast<size_t>(h) * n + t) * d]);
  auto pre = make_cache(kf, "f32", n_kv, d, window, sinks, /*pre_rope=*/true);
  auto post = make_cache(kf, "f32", n_kv, d, window, sinks, false);
  EXPECT_TRUE(pre->keys_pre_rope());
  EXPECT_FALSE(post->keys_pre_rope());
  for (int t0 = 0; t0 < n;) {
    const int c = std::min(n - t0, 1 + (t0 * 7 + 33) % 90);
    EXPECT_TRUE(pre->append(0, c, {&k[t0 * d], int64_t(n) * d, d}, {&v[t0 * d], int64_t(n) * d, d}).ok());
    EXPECT_TRUE(post->append(0, c, {&kr[t0 * d], int64_t(n) * d, d}, {&v[t0 * d], int64_t(n) * d, d}).ok());
    t0 += c;
  }
  const int nq = n_kv * G;
  std::vector<float> q(static_cast<size_t>(nq) * m * d);
  generate_gaussian(q.data(), nq * m, d, 13);
  RopePair r;
  r.out_pre.assign(q.size(), 0.0f);
  r.out_post.assign(q.size(), 0.0f);
  AttentionOptions o;
  o.rope = rope;
  const AttentionQuery qp{pre->sequence_view(0), m, {q.data(), int64_t(m) * d, d}, {r.out_pre.data(), int64_t(m) * d, d}, offset};
  const AttentionQuery qq{post->sequence_view(0), m, {q.data(), int64_t(m) * d, d}, {r.out_post.data(), int64_t(m) * d, d}, offset};
  Status s1 = attend(pre->view(), AttentionParams{&qp, 1, nq, o});
  Status s2 = attend(post->view(), AttentionParams{&qq, 1, nq, o});
  EXPECT_TRUE(s1.ok()) << s1.to_string();
  EXPECT_TRUE(s2.ok()) << s2.to_string();
  return r;
}

TEST(AttentionContract, PreRopeKeysEqualPostRopeKeys) {
  // f32 keys, no f16 windows: the stored key rows are identical after rotation, and both paths
  // run the same float kernels, so the outputs are bit-identical.
  for (RopeStyle st : {RopeStyle::kAdjacent, RopeStyle::kNeox}) {
    for (int rot : {64, 48}) {
      RopePair r = run_rope_pair("f32", 64, rot, st, 0, 0, 17);
      for (size_t i = 0; i < r.out_pre.size(); ++i) ASSERT_EQ(r.out_pre[i], r.out_post[i]) << i;
    }
  }
}

TEST(AttentionContract, PreRopeWithF16WindowsMatchesPostRope) {
  // Sinks and window hold f16 copies: of the raw key (pre-RoPE cache) or of the rotated key
  // (post-RoPE cache). Rotation is orthogonal, so the two keys differ by at most 2 f16 roundings,
  // |dk| <= 2^-10 |k| per row; a score moves by <= |q| |k| 2^-10 and an output (a convex mix of
  // values with weights perturbed by that) by <= max|v| * 2 * max|dscore|. With |q| ~ 8, |k| ~ 8
  // (d = 64, unit-ish rows) and scale 1/8: |dscore| <= 8 * 8 / 8 * 2^-10 ~ 0.008 -> bound 0.05.
  RopePair r = run_rope_pair("f32", 64, 64, RopeStyle::kNeox, 40, 4, 0);
  double worst = 0;
  for (size_t i = 0; i < r.out_pre.size(); ++i) worst = std::max(worst, std::fabs(double(r.out_pre[i]) - r.out_post[i]));
  EXPECT_LT(worst, 0.05);
  EXPECT_GT(worst, 0.0);  // the windows really are stored differently
}

TEST(AttentionContract, PreRopeTiledKeysMatchFloat64OnDecodedKeys) {
  // rvq1x2 keys are stored in bit-sliced tiles; pre-RoPE they take the general path (tile ->
  // per-vector code -> decode -> RoPE). Reference: float64 attention on cache.read()'s decoded
  // (pre-RoPE) keys rotated with the same apply_rope. Only float32 rounding separates the two:
  // dot products of 64 terms and a 300-token softmax, ~1e-6 relative; 1e-4 absolute on outputs of
  // unit-variance values is a ~50x margin.
  const int d = 64, n = 300, m = 2, nq = 2;
  RopeParams rope{64, 10000.0f, 1.0f, RopeStyle::kNeox, nullptr};
  const std::vector<float> inv = rope_inv_freq(rope);
  auto cache = make_cache("rvq1x2", "f32", 1, d, 16, 2, true);
  ASSERT_EQ(cache->view().key.storage, KVStorage::kTiles);
  std::vector<float> k(static_cast<size_t>(n) * d), v(k.size()), q(static_cast<size_t>(nq) * m * d), out(q.size());
  generate_llm_like(k.data(), n, d, 31);
  generate_gaussian(v.data(), n, d, 32);
  generate_gaussian(q.data(), nq * m, d, 33);
  ASSERT_TRUE(cache->append(0, n, {k.data(), int64_t(n) * d, d}, {v.data(), int64_t(n) * d, d}).ok());
  AttentionOptions o;
  o.rope = rope;
  ASSERT_TRUE(cache->attend(0, m, nq, {q.data(), int64_t(m) * d, d}, {out.data(), int64_t(m) * d, d}, o).ok());
  std::vector<float> kd(k.size()), vd(v.size());
  ASSERT_TRUE(cache->read(0, 0, 0, n, kd.data(), vd.data()).ok());
  for (int t = 0; t < n; ++t) apply_rope(rope, inv.data(), t, &kd[static_cast<size_t>(t) * d]);
  for (int h = 0; h < nq; ++h)
    for (int j = 0; j < m; ++j) {
      std::vector<double> ref;
      const int visible = n - m + j + 1;
      testing::reference_attention(&q[(static_cast<size_t>(h) * m + j) * d], kd.data(), vd.data(), visible, d,
                                   1 / std::sqrt(double(d)), ref);
      for (int i = 0; i < d; ++i) ASSERT_NEAR(out[(static_cast<size_t>(h) * m + j) * d + i], ref[i], 1e-4) << h << " " << j;
    }
}

TEST(AttentionContract, PreRopeNeedsRopeParams) {
  auto pre = make_cache("q8_0", "f16", 1, 32, 0, 0, true);
  std::vector<float> k(64 * 32, 0.5f), q(32, 1.0f), out(32);
  ASSERT_TRUE(pre->append(0, 64, {k.data(), 64 * 32, 32}, {k.data(), 64 * 32, 32}).ok());
  Status s = pre->attend(0, 1, 1, {q.data(), 32, 32}, {out.data(), 32, 32});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("RoPE"), std::string::npos) << s.to_string();
}

TEST(AttentionContract, F16BeyondDirectKernelLimitTakesGeneralPath) {
  // head_dim 1040 > 1024 (the f16 kernels' stack tile): the result must still be attention.
  const int d = 1040, n = 70;
  auto cache = make_cache("f16", "f16", 1, d);
  std::vector<float> k(static_cast<size_t>(n) * d), v(k.size()), q(d), out(d);
  generate_gaussian(k.data(), n, d, 21);
  generate_gaussian(v.data(), n, d, 22);
  generate_gaussian(q.data(), 1, d, 23);
  for (float& x : q) x *= 0.1f;
  ASSERT_TRUE(cache->append(0, n, {k.data(), int64_t(n) * d, d}, {v.data(), int64_t(n) * d, d}).ok());
  ASSERT_TRUE(cache->attend(0, 1, 1, {q.data(), d, d}, {out.data(), d, d}).ok());
  std::vector<float> kd(k.size()), vd(v.size());
  ASSERT_TRUE(cache->read(0, 0, 0, n, kd.data(), vd.data()).ok());
  std::vector<double> ref;
  testing::reference_attention(q.data(), kd.data(), vd.data(), n, d, 1 / std::sqrt(double(d)), ref);
  // float32 dot products of 1040 terms and a 70-token softmax: relative error ~1e-6; 1e-4 absolute
  // on unit-variance values is a 100x margin.
  for (int i = 0; i < d; ++i) ASSERT_NEAR(out[i], ref[i], 1e-4) << i;
}

}  // namespace
}  // namespace tqkv
