// `tqkv perplexity` with pre-RoPE pk{b} keys and --kv-preset on a tiny model written here: the
// forward pass hands pre-RoPE keys to the cache, attention rotates them; more bits diverge less.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "testing/runtime_cli.h"
#include "testing/runtime_tiny_model.h"

namespace tqkv {
namespace {

using testing::run_cli;

std::string tiny_model(const std::string& name) {
  testing::TinySpec s;
  s.ctx = 32;
  return testing::write_tiny_model_file(name, s);
}

TEST(KvPresetCli, PresetsAndPkKeysRunWithKld) {
  const std::string model = tiny_model("preset_tiny.gguf");
  const std::string text = testing::temp_path("") + "preset_text.txt";
  std::ofstream(text) << std::string(300, 'a') + "bcd efg hij";
  const std::string base = testing::temp_path("preset_base.kld");
  const std::string common = "perplexity -m " + model + " -f " + text + " -c 32 --json ";
  auto r = run_cli(common + "--kl-divergence-base " + base);
  ASSERT_EQ(r.rc, 0) << r.err;
  double kld[4];
  const char* presets[4] = {"2bit", "2.5bit", "3bit", "4bit"};
  const char* keys[4] = {"k=pk2 v=tq2", "k=pk2.5 v=tq2", "k=pk3 v=tq3", "k=pk4 v=tq4"};
  for (int i = 0; i < 4; ++i) {
    r = run_cli(common + "--pk-calib 8 --kv-preset " + presets[i] + " --kl-divergence " + base);
    ASSERT_EQ(r.rc, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_NE(j["cache"].get<std::string>().find(keys[i]), std::string::npos) << j["cache"];
    kld[i] = j["kld_mean"].get<double>();
    EXPECT_TRUE(std::isfinite(kld[i]) && kld[i] > 0) << presets[i];
  }
  // pk8 keys (8-bit Lloyd-Max per coded channel) with f16 values stay much closer than pk2.
  r = run_cli(common + "--pk-calib 8 -ctk pk8 -ctv f16 --kl-divergence " + base);
  ASSERT_EQ(r.rc, 0) << r.err;
  const double kld8 = nlohmann::json::parse(r.out)["kld_mean"].get<double>();
  r = run_cli(common + "--pk-calib 8 -ctk pk2 -ctv f16 --kl-divergence " + base);
  ASSERT_EQ(r.rc, 0) << r.err;
  const double kld2 = nlohmann::json::parse(r.out)["kld_mean"].get<double>();
  EXPECT_LT(kld8, kld2);
  // Errors: unknown preset, preset with --method, bad --pk-calib: one line each.
  for (const char* bad : {"--kv-preset 5bit", "--kv-preset 2bit --method q8_0", "-ctk pk2 --pk-calib 0"}) {
    r = run_cli(common + bad);
    EXPECT_NE(r.rc, 0) << bad;
    EXPECT_EQ(r.err.rfind("tqkv: error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// --pk-basis and --pk-code reach the cache from the command line (cache_flags.cc copies each flag
// into CacheSettings): the description names them, and each changes the codes, so the KLD moves.
TEST(KvPresetCli, PkBasisAndCodeFlagsReachTheCache) {
  const std::string model = tiny_model("pkflags_tiny.gguf");
  const std::string text = testing::temp_path("") + "pkflags_text.txt";
  std::ofstream(text) << std::string(300, 'a') + "bcd efg hij";
  const std::string base = testing::temp_path("pkflags_base.kld");
  const std::string common = "perplexity -m " + model + " -f " + text + " -c 32 --json ";
  auto r = run_cli(common + "--kl-divergence-base " + base);
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string pk = common + "--pk-calib 8 -ctk pk2 -ctv f16 --kl-divergence " + base;
  struct Case {
    const char* flags;
    const char* described;
  } cases[3] = {{"", "k=pk2 v=f16 pk-calib=8"},
                {" --pk-code trellis", "pk-code=trellis"},
                {" --pk-basis weights:4", "pk-basis=weights:4"}};
  double kld[3];
  for (int i = 0; i < 3; ++i) {
    r = run_cli(pk + cases[i].flags);
    ASSERT_EQ(r.rc, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_NE(j["cache"].get<std::string>().find(cases[i].described), std::string::npos) << j["cache"];
    kld[i] = j["kld_mean"].get<double>();
    EXPECT_TRUE(std::isfinite(kld[i]) && kld[i] > 0) << cases[i].flags;
  }
  EXPECT_NE(kld[1], kld[0]);
  EXPECT_NE(kld[2], kld[0]);
}

}  // namespace
}  // namespace tqkv
