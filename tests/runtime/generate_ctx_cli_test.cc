// `tqkv generate -c/--ctx-size` beyond the GGUF's context_length (one warning line about RoPE) and
// `-f/--file` for the prompt, through the CLI: on a tiny model written here (context 16) and on the
// shipped d128 model (context 1024), which used to refuse prompts over 1024 tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "testing/runtime_cli.h"
#include "testing/runtime_tiny_model.h"

namespace tqkv {
namespace {

using testing::run_cli;

std::string write_tiny(const std::string& name) {
  testing::TinySpec s;
  s.ctx = 16;
  return testing::write_tiny_model_file(name, s);
}

using testing::write_text_file;

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

void expect_one_error_line(const testing::CliResult& r, const std::string& needle) {
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.err.rfind("tqkv: error: ", 0), 0u) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

// 18 prompt tokens on the tiny model: BOS + U+2581 as 3 unknown bytes + 14 unknown characters.
const char* kLongPrompt = "abcdefghijklmn";

TEST(GenerateCtxCli, CtxBeyondTrainedContextWarnsOnceAndIsHonored) {
  const std::string model = write_tiny("gen_ctx_tiny.gguf");
  // Without -c the trained context (16) applies and the prompt is refused.
  expect_one_error_line(run_cli("generate -m " + model + " -p " + kLongPrompt + " -n 2"),
                        "longer than the context of 16");
  // -c 24: accepted, with exactly one warning line naming RoPE and the trained context.
  auto r = run_cli("generate -m " + model + " -p " + kLongPrompt + " -c 24 -n 100 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_EQ(r.err.rfind("tqkv: warning: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("RoPE"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("trained context of 16"), std::string::npos) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const int prompt = j["prompt_tokens"].get<int>(), generated = j["generated_tokens"].get<int>();
  EXPECT_EQ(prompt, 18);
  EXPECT_EQ(j["ctx_size"].get<int>(), 24);
  EXPECT_EQ(j["trained_ctx"].get<int>(), 16);
  // The new context is the limit: generation stops when the cache is full. The last token is
  // sampled from the logits of position ctx-1 and never enters the cache: prompt + generated <= ctx + 1.
  EXPECT_LE(prompt + generated, 24 + 1);
  // A prompt longer than the -c given is refused, naming that context.
  expect_one_error_line(run_cli("generate -m " + model + " -p " + kLongPrompt + " -c 17 -n 1"),
                        "longer than the context of 17");
  // -c within the trained context: no warning at all (stderr empty with --json).
  r = run_cli("generate -m " + model + " -p abc -c 16 -n 2 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.err, "");
  r = run_cli("generate -m " + model + " -p abc -c 8 -n 100 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.err, "");
  j = nlohmann::json::parse(r.out);
  EXPECT_LE(j["prompt_tokens"].get<int>() + j["generated_tokens"].get<int>(), 8 + 1);
  // Bad values: one error line.
  expect_one_error_line(run_cli("generate -m " + model + " -p abc -c -5"), "context size (-c)");
  expect_one_error_line(run_cli("generate -m " + model + " -p abc -c 2000000000"), "context size (-c)");
}

TEST(GenerateCtxCli, PromptFromFileEqualsPromptFromArgument) {
  const std::string model = write_tiny("gen_file_tiny.gguf");
  const std::string prompt = "abc def";
  const std::string file = write_text_file("gen_prompt.txt", prompt);
  auto a = run_cli("generate -m " + model + " -p \"" + prompt + "\" -n 6 --temp 0 --json");
  auto b = run_cli("generate -m " + model + " -f " + file + " -n 6 --temp 0 --json");
  ASSERT_EQ(a.rc, 0) << a.err;
  ASSERT_EQ(b.rc, 0) << b.err;
  const auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["text"], jb["text"]);
  EXPECT_EQ(ja["prompt_tokens"], jb["prompt_tokens"]);
  // BOS + 2 x (U+2581 as 3 unknown bytes + 3 unknown characters): the file's text arrives unchanged.
  EXPECT_EQ(jb["prompt_tokens"].get<int>(), 1 + 2 * (3 + 3));
  // Streamed (not --json): the file's prompt is printed like -p's.
  a = run_cli("generate -m " + model + " -p \"" + prompt + "\" -n 6 --temp 0");
  b = run_cli("generate -m " + model + " -f " + file + " -n 6 --temp 0");
  ASSERT_EQ(a.rc, 0) << a.err;
  ASSERT_EQ(b.rc, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  expect_one_error_line(run_cli("generate -m " + model + " -f /nonexistent/prompt.txt"), "cannot open");
  expect_one_error_line(run_cli("generate -m " + model + " -p abc -f " + file), "not both");
}

// The shipped model (trained context 1024): a held-out prompt of more than 1024 tokens runs with
// -c 1400 (it was refused before -c existed), with a compressed cache too.
TEST(GenerateCtxCli, ShippedModelTakesPromptBeyondItsTrainedContext) {
  const std::string src = TQKV_SOURCE_DIR;
  std::ifstream in(src + "/models/eval/heldout.txt", std::ios::binary);
  ASSERT_TRUE(in.good());
  std::string text(4200, '\0');  // ~3.2 bytes per token: ~1300 tokens
  in.read(text.data(), text.size());
  text.resize(in.gcount());
  const std::string file = write_text_file("gen_long_prompt.txt", text);
  const std::string model = src + "/models/tqkv-ref-d128.gguf";
  expect_one_error_line(run_cli("generate -m " + model + " -f " + file + " -n 2 -t 2"), "longer than the context of 1024");
  auto r = run_cli("generate -m " + model + " -f " + file + " -c 1400 -n 3 -t 2 --json -ctk tq3 -ctv tq3");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("RoPE"), std::string::npos) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["prompt_tokens"].get<int>(), 1024);
  EXPECT_LE(j["prompt_tokens"].get<int>() + j["generated_tokens"].get<int>(), 1400 + 1);
  EXPECT_EQ(j["generated_tokens"].get<int>(), 3);
  EXPECT_GT(j["gen_tok_per_s"].get<double>(), 0.0);
  // tq3 at d128 codes 3 + 32/128 bits per element; pages and the f16 rows of the open tile add to it.
  EXPECT_GT(j["kv_bits_per_element"].get<double>(), 3.25);
  EXPECT_LT(j["kv_bits_per_element"].get<double>(), 4.0);
}

}  // namespace
}  // namespace tqkv
