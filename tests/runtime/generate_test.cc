// tqkv::TextGenerator (the generation loop the CLI and the Python module share) against a loop
// written here from the documented rules, on the shipped reference model: greedy ids, the stop
// rules (max_tokens, steps, a full context, EOS), the printed prompt, and option checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "tqkv/cache_settings.h"
#include "tqkv/generate.h"
#include "tqkv/model.h"

namespace tqkv {
namespace {

const std::string kModel = std::string(TQKV_SOURCE_DIR) + "/models/tqkv-ref-d128.gguf";

class Generate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = Model::load(kModel);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    model_ = std::move(*m).release();
  }
  static void TearDownTestSuite() { delete model_; }

  std::unique_ptr<InferenceContext> context(int max_tokens = 0) {
    auto cc = make_cache_config(CacheSettings{});
    EXPECT_TRUE(cc.ok());
    auto ctx = InferenceContext::make(*model_, *cc, 256, max_tokens);
    EXPECT_TRUE(ctx.ok());
    return std::move(*ctx);
  }
  // Every token TextGenerator yields, and its text.
  static std::vector<int> run(TextGenerator& g, std::string* text = nullptr) {
    std::vector<int> ids;
    GeneratedToken t;
    while (true) {
      auto more = g.next(&t);
      EXPECT_TRUE(more.ok()) << more.status().to_string();
      if (!more.ok() || !*more) break;
      ids.push_back(t.id);
      if (text) *text += t.text;
    }
    return ids;
  }
  static Model* model_;
};
Model* Generate::model_ = nullptr;

// Greedy by hand: prefill, then argmax / forward one token at a time, n tokens, no early stop.
std::vector<int> greedy_by_hand(const Model& m, InferenceContext* ctx, const std::vector<int>& prompt, int n) {
  ctx->clear();
  std::vector<float> logits(m.config().vocab_size);
  EXPECT_TRUE(ctx->forward(prompt.data(), static_cast<int>(prompt.size()), logits.data(), false).ok());
  std::vector<int> ids;
  for (int i = 0; i < n; ++i) {
    const int next = argmax(logits.data(), m.config().vocab_size);
    ids.push_back(next);
    if (i + 1 < n) {
      EXPECT_TRUE(ctx->forward(&next, 1, logits.data(), false).ok());
    }
  }
  return ids;
}

TEST_F(Generate, GreedyIdsAndCacheContents) {
  auto ctx = context();
  GenerateOptions o;
  o.max_tokens = 20;
  auto g = TextGenerator::make(*model_, ctx.get(), "It is a truth universally acknowledged", o);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  const std::vector<int> prompt = (*g)->prompt_tokens();
  EXPECT_EQ(prompt, model_->tokenizer().encode("It is a truth universally acknowledged", true));
  std::string text;
  const std::vector<int> ids = run(**g, &text);
  ASSERT_EQ(ids.size(), 20u);  // this prompt does not reach EOS within 20 tokens
  EXPECT_EQ((*g)->generated(), 20);
  // The last token is never run through the model.
  EXPECT_EQ(ctx->n_past(), static_cast<int>(prompt.size()) + 19);
  // The text is the pieces after their predecessors (no control/unprintable tokens here).
  std::string want;
  int prev = prompt.back();
  for (int id : ids) {
    want += model_->tokenizer().decode_piece_after(prev, id);
    prev = id;
  }
  EXPECT_EQ(text, want);
  auto ctx2 = context();
  EXPECT_EQ(ids, greedy_by_hand(*model_, ctx2.get(), prompt, 20));
  // The printed prompt: every piece after BOS, in order.
  std::string ptext;
  for (size_t i = 1; i < prompt.size(); ++i) ptext += model_->tokenizer().decode_piece_after(prompt[i - 1], prompt[i]);
  EXPECT_EQ((*g)->prompt_text(), ptext);
  EXPECT_EQ(ptext, "It is a truth universally acknowledged");
  // Done stays done.
  GeneratedToken t;
  auto more = (*g)->next(&t);
  ASSERT_TRUE(more.ok());
  EXPECT_FALSE(*more);
}

TEST_F(Generate, StopsWhenTheContextIsFull) {
  const std::vector<int> prompt = model_->tokenizer().encode("Once upon a time", true);
  const int P = static_cast<int>(prompt.size());
  auto ctx = context(P + 5);
  GenerateOptions o;
  o.max_tokens = 100;
  auto g = TextGenerator::make(*model_, ctx.get(), "Once upon a time", o);
  ASSERT_TRUE(g.ok());
  const std::vector<int> ids = run(**g);
  // Tokens sampled at n_past = P, P+1, ..., P+5: six, the last one sampled from a full context.
  EXPECT_EQ(ids.size(), 6u);
  EXPECT_EQ(ctx->n_past(), P + 5);
}

TEST_F(Generate, StepsCountForwardPassesLikeRunC) {
  const std::vector<int> prompt = model_->tokenizer().encode("Once upon a time", true);
  const int P = static_cast<int>(prompt.size());
  for (int steps : {P + 7, P - 1, 1}) {
    auto ctx = context();
    GenerateOptions o;
    o.steps = steps;
    o.max_tokens = 1000;  // ignored when steps > 0
    auto g = TextGenerator::make(*model_, ctx.get(), "Once upon a time", o);
    ASSERT_TRUE(g.ok());
    // run.c: positions 0..steps-1, the tokens of positions >= P-1 are new: steps + 1 - P of them.
    EXPECT_EQ(run(**g).size(), static_cast<size_t>(std::max(0, steps + 1 - P))) << steps;
  }
}

TEST_F(Generate, ZeroTokensStillRunsThePrompt) {
  auto ctx = context();
  GenerateOptions o;
  o.max_tokens = 0;
  auto g = TextGenerator::make(*model_, ctx.get(), "Once upon a time", o);
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(run(**g).empty());
  EXPECT_EQ(ctx->n_past(), static_cast<int>((*g)->prompt_tokens().size()));
}

TEST_F(Generate, OptionErrorsNameTheOption) {
  auto ctx = context();
  auto error_of = [&](GenerateOptions o) {
    auto g = TextGenerator::make(*model_, ctx.get(), "hi", o);
    return g.ok() ? std::string("ok") : g.status().message();
  };
  GenerateOptions o;
  o.max_tokens = -1;
  EXPECT_NE(error_of(o).find("max_tokens (-n)"), std::string::npos);
  o = {};
  o.steps = -3;
  EXPECT_NE(error_of(o).find("--steps"), std::string::npos);
  o = {};
  o.sampler.temperature = std::nanf("");
  EXPECT_NE(error_of(o).find("--temp"), std::string::npos);
  o = {};
  o.sampler.top_p = 0;
  EXPECT_NE(error_of(o).find("--top-p"), std::string::npos);
  o = {};
  o.sampler.top_k = -1;
  EXPECT_NE(error_of(o).find("--top-k"), std::string::npos);
  std::string long_prompt;
  for (int i = 0; i < 3000; ++i) long_prompt += "word ";
  auto g = TextGenerator::make(*model_, ctx.get(), long_prompt, {});
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("longer than the context"), std::string::npos);
}

}  // namespace
}  // namespace tqkv
