// tqkv generate / perplexity / convert-llama2c on bad input: one clear error line, non-zero exit.
// And the JSON keys of perplexity on a tiny model written here.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "testing/runtime_cli.h"
#include "testing/runtime_tiny_model.h"

namespace tqkv {
namespace {

using testing::run_cli;

std::string write_tiny(const std::string& name, const testing::TinySpec& s) {
  return testing::write_tiny_model_file(name, s);
}

std::string write_text(const std::string& name, const std::string& text) {
  const std::string p = testing::temp_path("") + name;
  std::ofstream(p) << text;
  return p;
}

void expect_one_error_line(const testing::CliResult& r, const std::string& needle) {
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.err.rfind("tqkv: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

TEST(Cli, BadInputGivesOneErrorLine) {
  testing::TinySpec s;
  s.ctx = 16;
  const std::string model = write_tiny("cli_tiny.gguf", s);
  testing::TinySpec bad = s;
  bad.arch = "mamba";
  const std::string bad_arch = write_tiny("cli_mamba.gguf", bad);
  const std::string text = write_text("cli_text.txt", std::string(200, 'a'));
  const std::string not_gguf = write_text("cli_not.gguf", "hello, I am not a model file at all");

  expect_one_error_line(run_cli("generate -m /nonexistent/m.gguf -p hi"), "no such file");
  expect_one_error_line(run_cli("generate -m " + not_gguf + " -p hi"), "not a GGUF file");
  expect_one_error_line(run_cli("generate -m " + bad_arch + " -p hi"), "architecture 'mamba' is not supported");
  expect_one_error_line(run_cli("generate -m " + model + " -p \"a b c d e f g h i j k l m n o p q\""),
                        "longer than the context of 16");
  expect_one_error_line(run_cli("generate -m " + model + " -p hi -ctk rvq9x9"), "--cache-type-k");
  expect_one_error_line(run_cli("generate -m " + model + " -p hi --method nope"), "unknown cache method");
  expect_one_error_line(run_cli("perplexity -m " + model + " -f " + text + " -c 1"), "must be >= 3");
  expect_one_error_line(run_cli("perplexity -m " + model + " -f " + text + " -c 32"), "exceeds the model's context");
  expect_one_error_line(run_cli("perplexity -m " + model + " -f /nonexistent.txt -c 16"), "cannot open");
  expect_one_error_line(run_cli("perplexity -m " + model + " -f " + text + " -c 16 --kl-divergence /nonexistent.kld"),
                        "cannot open");
  expect_one_error_line(run_cli("convert-llama2c " + not_gguf + " " + not_gguf + " " + testing::temp_path("x.gguf")),
                        "llama2.c header");
}

TEST(Cli, PerplexityJsonKeysAndGenerate) {
  testing::TinySpec s;
  s.ctx = 16;
  const std::string model = write_tiny("cli_tiny2.gguf", s);
  const std::string text = write_text("cli_text2.txt", std::string(100, 'a'));
  const std::string base = testing::temp_path("cli_base.kld");
  auto r = run_cli("perplexity -m " + model + " -f " + text + " -c 16 --json --kl-divergence-base " + base);
  ASSERT_EQ(r.rc, 0) << r.err;
  r = run_cli("perplexity -m " + model + " -f " + text + " -c 16 --json -ctk q8_0 -ctv q8_0 --kl-divergence " + base);
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  for (const char* k : {"ppl", "ppl_stderr", "kld_mean", "kld_p99", "top1_agreement", "tokens", "kv_bits_per_element",
                        "kv_bytes"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["tokens"].get<int>(), 6 * (16 - 1 - 8));  // BOS + 3 + 100 unknown-byte tokens -> 6 chunks
  EXPECT_GT(j["ppl"].get<double>(), 1.0);
  const double kld_q8 = j["kld_mean"].get<double>();
  // The same f16 configuration as the base run must reproduce it: full top-1 agreement and a KLD
  // that only reflects the float32 storage of the base log-probs (|error| <= 2^-24 |log p|, so
  // KLD <= ~1e-7 for |log p| <= ~4 on a 37-token vocabulary; bound 1e-6); q8_0 keys/values change the logits, so its
  // KLD is strictly positive, and q4_0 (16 levels instead of 255) diverges more.
  r = run_cli("perplexity -m " + model + " -f " + text + " -c 16 --json --kl-divergence " + base);
  ASSERT_EQ(r.rc, 0) << r.err;
  auto self = nlohmann::json::parse(r.out);
  EXPECT_LT(self["kld_mean"].get<double>(), 1e-6);
  EXPECT_EQ(self["top1_agreement"].get<double>(), 1.0);
  r = run_cli("perplexity -m " + model + " -f " + text + " -c 16 --json -ctk q4_0 -ctv q4_0 --kl-divergence " + base);
  ASSERT_EQ(r.rc, 0) << r.err;
  const double kld_q4 = nlohmann::json::parse(r.out)["kld_mean"].get<double>();
  EXPECT_GT(kld_q8, 0.0);
  EXPECT_LT(kld_q8, kld_q4);

  // A truncated or foreign base file is refused with one line.
  {
    std::ifstream in(base, std::ios::binary);
    std::string b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string cut = testing::temp_path("cli_cut.kld");
    std::ofstream(cut, std::ios::binary) << b.substr(0, b.size() - 3);
    expect_one_error_line(run_cli("perplexity -m " + model + " -f " + text + " -c 16 --kl-divergence " + cut),
                          "wrong size");
    expect_one_error_line(run_cli("perplexity -m " + model + " -f " + text + " -c 8 --kl-divergence " + base),
                          "made from another model, text, context size or chunk count");
    std::ofstream(cut, std::ios::binary) << "TQKVKLD9" << b.substr(8);
    expect_one_error_line(run_cli("perplexity -m " + model + " -f " + text + " -c 16 --kl-divergence " + cut),
                          "bad magic");
  }
  r = run_cli("generate -m " + model + " -p aaa -n 5 --temp 0.8 --top-k 5 --top-p 0.9 --seed 3 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prompt_tokens"].get<int>(), 7);  // BOS + U+2581 as 3 unknown bytes + 3 unknown chars
  EXPECT_LE(j["generated_tokens"].get<int>(), 5);
}

}  // namespace
}  // namespace tqkv

namespace tqkv {
namespace {

TEST(Cli, DefaultModelAndTextAreFoundAtRunTime) {
  // No path is baked in at build time: the build-tree binary finds the shipped model and text in
  // the source tree above its build directory (apps/tqkv/data_paths.cc); --help shows the
  // resolved defaults, and both must exist.
  for (const char* cmd : {"generate --help", "perplexity --help"}) {
    const auto r = testing::run_cli(cmd);
    ASSERT_EQ(r.rc, 0) << r.err;
    for (const std::string opt : {"--model TEXT=", "--file TEXT="}) {
      const size_t at = r.out.find(opt);
      if (at == std::string::npos) {
        EXPECT_NE(std::string(cmd), "perplexity --help") << opt << " default missing:\n" << r.out;
        continue;
      }
      const size_t b = at + opt.size();
      const std::string path = r.out.substr(b, r.out.find_first_of(" \n", b) - b);
      EXPECT_TRUE(std::filesystem::is_regular_file(path)) << cmd << ": default " << path << " does not exist";
    }
  }
}

}  // namespace
}  // namespace tqkv
