// --pk-basis weights on the shipped reference model: the forward pass gives every pk key layer one
// channel basis per kv head, and each is an eigenbasis of W_k diag(g)^2 W_k^T recomputed here from
// the GGUF weights (dequantize_row; residual ||A u - lambda u|| small, eigenvalues descending,
// orthonormal); values and non-pk layers get none; the settings/CLI spelling and its errors.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tqkv/cache_settings.h"
#include "tqkv/gguf.h"
#include "tqkv/model.h"

namespace tqkv {
namespace {

const std::string kModel = std::string(TQKV_SOURCE_DIR) + "/models/tqkv-ref-d128.gguf";

TEST(PkBasis, SettingsSpelling) {
  CacheSettings s;
  s.cache_type_k = "pk2.5";
  s.pk_basis = "weights";
  auto c = make_cache_config(s);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->pk_weight_basis);
  EXPECT_EQ(describe_cache_config(*c), "k=pk2.5 v=f16 pk-calib=128 pk-basis=weights");
  EXPECT_EQ(c->pk_weight_basis_block, 0);
  s.pk_basis = "weights:16";
  c = make_cache_config(s);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(c->pk_weight_basis);
  EXPECT_EQ(c->pk_weight_basis_block, 16);
  EXPECT_EQ(describe_cache_config(*c), "k=pk2.5 v=f16 pk-calib=128 pk-basis=weights:16");
  for (const char* bad_block : {"weights:", "weights:0", "weights:-4", "weights:1x", "weights:123456"}) {
    s.pk_basis = bad_block;
    auto e = make_cache_config(s);
    ASSERT_FALSE(e.ok()) << bad_block;
    EXPECT_NE(e.status().message().find("weights:B"), std::string::npos) << e.status().message();
  }
  s.pk_basis = "none";
  EXPECT_FALSE(make_cache_config(s)->pk_weight_basis);
  s.pk_basis = "klt";
  auto bad = make_cache_config(s);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--pk-basis"), std::string::npos) << bad.status().message();
}

TEST(PkBasis, ForwardPassGivesEigenbasesOfTheKeyProjection) {
  auto model = Model::load(kModel);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  const ModelConfig& mc = (*model)->config();
  CacheSettings s;
  s.cache_type_k = "pk2.5";
  s.cache_type_v = "tq2";
  s.pk_basis = "weights";
  s.boundary_layers = 1;  // boundary layers in q8_0: no basis there
  auto cc = make_cache_config(s);
  ASSERT_TRUE(cc.ok());
  auto ctx = InferenceContext::make(**model, *cc, 16, 64);
  ASSERT_TRUE(ctx.ok()) << ctx.status().to_string();
  const int d = mc.head_dim, D = mc.dim;
  int checked = 0;
  for (int l = 0; l < mc.n_layers; ++l) {
    const KVCacheOptions& o = (*ctx)->cache().layer(l).options();
    EXPECT_TRUE(o.pk_basis[1].empty()) << "values get no basis";
    const bool boundary = l < 1 || l >= mc.n_layers - 1;
    if (boundary) {
      EXPECT_TRUE(o.pk_basis[0].empty()) << "layer " << l;
      continue;
    }
    ASSERT_EQ(o.pk_basis[0].size(), static_cast<size_t>(mc.n_kv_heads)) << "layer " << l;
    const LayerWeights& L = (*model)->weights().layers[l];
    int64_t be = 0, bb = 0;
    ASSERT_TRUE(ggml_type_layout(static_cast<uint32_t>(L.wk.type), &be, &bb));
    const size_t row_bytes = static_cast<size_t>(D / be * bb);
    for (int h = 0; h < mc.n_kv_heads; ++h) {
      // A = W_h diag(g)^2 W_h^T from the file's rows h*d .. h*d+d-1 of attn_k, in double.
      std::vector<float> w(static_cast<size_t>(d) * D);
      for (int r = 0; r < d; ++r)
        dequantize_row(L.wk.type, static_cast<const uint8_t*>(L.wk.data) + (static_cast<size_t>(h) * d + r) * row_bytes,
                       &w[static_cast<size_t>(r) * D], D);
      std::vector<double> a(static_cast<size_t>(d) * d, 0.0);
      double fro = 0;
      for (int r = 0; r < d; ++r)
        for (int t = 0; t < d; ++t) {
          double acc = 0;
          for (int c = 0; c < D; ++c) {
            const double gc = L.attn_norm[c];
            acc += static_cast<double>(w[static_cast<size_t>(r) * D + c]) * gc * gc * w[static_cast<size_t>(t) * D + c];
          }
          a[static_cast<size_t>(r) * d + t] = acc;
          fro += acc * acc;
        }
      fro = std::sqrt(fro);
      const ChannelBasis& b = *o.pk_basis[0][h];
      ASSERT_EQ(b.dim, d);
      EXPECT_EQ(b.analysis, b.synthesis) << "orthonormal basis";
      ASSERT_TRUE(validate_channel_basis(b).ok());
      double prev = INFINITY;
      for (int j = 0; j < d; ++j) {
        std::vector<double> au(d, 0.0);
        double lambda = 0;
        for (int r = 0; r < d; ++r) {
          for (int t = 0; t < d; ++t) au[r] += a[static_cast<size_t>(r) * d + t] * b.analysis[static_cast<size_t>(t) * d + j];
          lambda += b.analysis[static_cast<size_t>(r) * d + j] * au[r];
        }
        double res = 0;
        for (int r = 0; r < d; ++r) {
          const double e = au[r] - lambda * b.analysis[static_cast<size_t>(r) * d + j];
          res += e * e;
        }
        // Float storage of u (2^-24 relative per entry) bounds the residual by ~1e-6 ||A||.
        EXPECT_LE(std::sqrt(res), 1e-5 * fro) << "layer " << l << " head " << h << " vector " << j;
        EXPECT_LE(lambda, prev * (1 + 1e-6) + 1e-9 * fro) << "eigenvalues descending";
        prev = lambda;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

// weights:B gives every pk key layer and kv head an orthonormal basis with exact zeros outside the
// diagonal blocks of B channels, different from the dense one (block_eigenbasis itself is checked
// in channel_basis_test.cc; the Gram is the one ForwardPassGivesEigenbasesOfTheKeyProjection checks).
TEST(PkBasis, BlockDiagonalWeightsBasis) {
  auto model = Model::load(kModel);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  const ModelConfig& mc = (*model)->config();
  const int d = mc.head_dim, B = 16;
  CacheSettings s;
  s.cache_type_k = "pk2";
  s.cache_type_v = "tq2";
  s.pk_basis = "weights:16";
  auto ctx = InferenceContext::make(**model, *make_cache_config(s), 16, 64);
  ASSERT_TRUE(ctx.ok()) << ctx.status().to_string();
  s.pk_basis = "weights";
  auto dense = InferenceContext::make(**model, *make_cache_config(s), 16, 64);
  ASSERT_TRUE(dense.ok());
  for (int l = 0; l < mc.n_layers; ++l)
    for (int h = 0; h < mc.n_kv_heads; ++h) {
      const ChannelBasis& b = *(*ctx)->cache().layer(l).options().pk_basis[0][h];
      const ChannelBasis& full = *(*dense)->cache().layer(l).options().pk_basis[0][h];
      ASSERT_TRUE(validate_channel_basis(b).ok());
      EXPECT_NE(b.synthesis, full.synthesis);
      for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j)
          if (i / B != j / B) ASSERT_EQ(b.synthesis[static_cast<size_t>(i) * d + j], 0.0f) << l << " " << i << "," << j;
    }
}

}  // namespace
}  // namespace tqkv
