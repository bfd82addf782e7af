// The real pretrained model (../shared/models/stories260K): golden greedy output of llama2.c,
// compressed caches in the loop, and perplexity with f16 vs f32 caches. Skips when ../shared is absent.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "testing/runtime_cli.h"
#include "tqkv/model.h"
#include "tqkv/perplexity.h"

namespace tqkv {
namespace {

const std::string kShared = TQKV_SOURCE_DIR "/../shared";

class Stories260K : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kShared + "/models/stories260K.bin")) return;
    gguf_ = testing::temp_path("stories260K.gguf");
    const auto r = testing::run_cli("convert-llama2c " + kShared + "/models/stories260K.bin " + kShared +
                                    "/models/tok512.bin " + gguf_);
    convert_rc_ = r.rc;
    convert_err_ = r.err;
  }
  void SetUp() override {
    if (!std::filesystem::exists(kShared + "/models/stories260K.bin"))
      GTEST_SKIP() << "needs " << kShared << "/models/stories260K.bin (+ tok512.bin): ../shared is not present";
    ASSERT_EQ(convert_rc_, 0) << convert_err_;
  }
  static std::string gguf_, convert_err_;
  static int convert_rc_;
};
std::string Stories260K::gguf_, Stories260K::convert_err_;
int Stories260K::convert_rc_ = -1;

std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST_F(Stories260K, GreedyGenerationMatchesLlama2c) {
  // llama2.c run.c -t 0 -n 200 -i "Once upon a time": 200 forward passes (BOS + prompt + generated).
  const auto r = testing::run_cli("generate -m " + gguf_ + " -p \"Once upon a time\" --steps 200 --temp 0 -ctk f32 -ctv f32 -t 1");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, read_file(kShared + "/models/stories260K_greedy_once_upon_a_time_200.txt"));
  std::cout << "[stderr] " << r.err;
}

TEST_F(Stories260K, GenerationWithCompressedCaches) {
  for (const char* flags : {"--method turboquant_rvq --key-bits 1 --residuals 2 --value-bits 2", "-ctk tq2 -ctv tq2",
                            "-ctk f16 -ctv f16"}) {
    const auto r = testing::run_cli("generate -m " + gguf_ + " -p \"Once upon a time\" --steps 200 -t 1 " + flags);
    ASSERT_EQ(r.rc, 0) << flags << ": " << r.err;
    EXPECT_GT(r.out.size(), 100u);
    std::cout << "---- " << flags << "\n" << r.out << r.err;
  }
}

TEST_F(Stories260K, PerplexityF16MatchesF32AndKld) {
  auto model = Model::load(gguf_);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  auto text = read_text_file(kShared + "/corpora/tinystories_sample.txt.xz");
  ASSERT_TRUE(text.ok()) << text.status().to_string();
  PerplexityOptions o;
  o.ctx = 256;
  o.max_chunks = 6;
  o.threads = 1;  // deterministic timing on a shared 2-core CI machine
  o.kld_base_out = testing::temp_path("stories260K_f16.kld");
  auto f16 = run_perplexity(**model, *cache_config_from_method("f16", 1, 2, 2, true), *text, o);
  ASSERT_TRUE(f16.ok()) << f16.status().to_string();
  o.kld_base_out.clear();
  auto f32 = run_perplexity(**model, *cache_config_from_method("f32", 1, 2, 2, true), *text, o);
  ASSERT_TRUE(f32.ok()) << f32.status().to_string();
  EXPECT_EQ(f16->tokens, 6 * (256 - 1 - 128));
  EXPECT_GT(f16->ppl, 2.0);
  EXPECT_LT(f16->ppl, 30.0);
  EXPECT_NEAR(f16->ppl / f32->ppl, 1.0, 1e-3);
  EXPECT_NEAR(f16->kv_bits_per_element, 16.0, 0.5);
  std::cout << "ppl f16 " << f16->ppl << " +/- " << f16->ppl_stderr << ", f32 " << f32->ppl << "\n";

  // Against itself: zero divergence, full agreement.
  o.kld_in = testing::temp_path("stories260K_f16.kld");
  auto self = run_perplexity(**model, *cache_config_from_method("f16", 1, 2, 2, true), *text, o);
  ASSERT_TRUE(self.ok()) << self.status().to_string();
  ASSERT_TRUE(self->has_kld);
  EXPECT_LT(self->kld_max, 1e-6);
  EXPECT_EQ(self->top1_agreement, 1.0);
  // The compressed cache diverges; the top-32 file gives a lower bound of the full-vocabulary KLD.
  auto rvq = *cache_config_from_method("turboquant_rvq", 1, 2, 2, true);
  auto r32 = run_perplexity(**model, rvq, *text, o);
  ASSERT_TRUE(r32.ok()) << r32.status().to_string();
  o.kld_in.clear();
  o.kld_top_k = 0;
  o.kld_base_out = testing::temp_path("stories260K_f16_full.kld");
  ASSERT_TRUE(run_perplexity(**model, *cache_config_from_method("f16", 1, 2, 2, true), *text, o).ok());
  o.kld_base_out.clear();
  o.kld_in = testing::temp_path("stories260K_f16_full.kld");
  auto rfull = run_perplexity(**model, rvq, *text, o);
  ASSERT_TRUE(rfull.ok()) << rfull.status().to_string();
  EXPECT_GT(r32->kld_mean, 0.0);
  EXPECT_LE(r32->kld_mean, rfull->kld_mean * (1 + 1e-9));
  EXPECT_EQ(r32->top1_agreement, rfull->top1_agreement);
  std::cout << "rvq1x2/tq2: ppl " << rfull->ppl << ", KLD mean " << rfull->kld_mean << " (top-32 file: " << r32->kld_mean
            << "), top-1 " << rfull->top1_agreement << "\n";
  // A base file from another context size is refused.
  o.ctx = 128;
  EXPECT_EQ(run_perplexity(**model, rvq, *text, o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tqkv
