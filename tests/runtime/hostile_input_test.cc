// Regression tests for issue 11 ("hostile input"): each finding of the probe of 093999d, as a
// user or a stranger's file would trigger it. Every test here failed (crash, abort, memory
// blow-up, exit 0 with garbage) on 093999d; see docs/fuzzing.md for the list.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>

#include "testing/runtime_cli.h"
#include "testing/runtime_tiny_model.h"
#include "tqkv/model.h"
#include "tqkv/tokenizer.h"

namespace tqkv {
namespace {

using testing::run_cli;
using testing::temp_path;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

// Runs the CLI with its address space capped (ulimit -v, KiB): a run that tries to allocate what
// it does not need fails instead of taking the shared machine's memory. ASan reserves terabytes of
// virtual memory, so the cap is skipped in sanitizer builds (their CI job has its own budget).
testing::CliResult run_capped(const std::string& args, long mib) {
  if (kAsan) return run_cli(args);
  static int counter = 0;
  const std::string err_path = temp_path("capped_err_" + std::to_string(++counter));
  const std::string cmd = "ulimit -v " + std::to_string(mib * 1024) + "; " + TQKV_CLI_PATH + " " + args + " 2>" + err_path;
  testing::CliResult r;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream f(err_path);
  r.err.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  std::remove(err_path.c_str());
  return r;
}

void expect_error_line(const testing::CliResult& r, const std::string& needle) {
  EXPECT_EQ(r.rc, 1) << r.err;  // 1 = a Status; 134/139 or -1 = a crash
  EXPECT_EQ(r.err.rfind("tqkv: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "want '" << needle << "' in: " << r.err;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void spit(const std::string& p, const std::string& b) { std::ofstream(p, std::ios::binary) << b; }

std::string tiny_model(const std::string& name, uint32_t seed = 1, int ctx = 16) {
  testing::TinySpec s;
  s.ctx = ctx;
  s.seed = seed;
  GgufWriter w;
  testing::make_tiny_model(s, &w);
  const std::string p = temp_path(name);
  EXPECT_TRUE(w.write(p).ok());
  return p;
}

const std::string kRefModel = std::string(TQKV_SOURCE_DIR) + "/models/tqkv-ref-d128.gguf";

// ---- 1. Out-of-bounds write in the tokenizer loader ----------------------------------------

TEST(Hostile, SignedByteTokenIsNotAByte) {
  // "<0x-D>" was parsed by sscanf("%2x") as -13 and written to byte_ids_[-13].
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "<0x-D>", "<0x 7>", "<0x41>", "a"};
  std::vector<int32_t> types = {Tokenizer::kUnknown, Tokenizer::kControl, Tokenizer::kControl, Tokenizer::kByte,
                                Tokenizer::kByte,    Tokenizer::kByte,    Tokenizer::kNormal};
  auto t = Tokenizer::from_vocab(pieces, std::vector<float>(pieces.size(), 0.0f), types, 1, 2, false);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_NE((*t)->decode_piece(3), std::string(1, static_cast<char>(-13)));
  EXPECT_NE((*t)->decode_piece(4), std::string(1, '\x07'));
  EXPECT_EQ((*t)->decode_piece(5), "A");
  // Byte 0xF3 (= -13 as a char) has no byte piece: unknown, not id 3.
  EXPECT_EQ((*t)->encode("\xF3", false), std::vector<int>{0});
}

TEST(Hostile, OneByteChangeInModelVocabularyDoesNotCrash) {
  std::string b = slurp(kRefModel);
  ASSERT_GT(b.size(), 2000u);
  ASSERT_EQ(b.substr(1992, 6), "<0x4D>");  // the probe's offset 1995: '-' over the '4'
  b[1995] = '-';
  const std::string p = temp_path("flipped.gguf");
  spit(p, b);
  auto r = run_cli("generate -m " + p + " -p hi -n 3");
  EXPECT_EQ(r.rc, 0) << r.err;  // a malformed byte piece is an ordinary (never matched) piece
}

// ---- 3. Aborts instead of an error line ---------------------------------------------------

TEST(Hostile, DirectoryInputsGiveOneLine) {
  const std::string model = tiny_model("dir_m.gguf");
  const std::string dir = temp_path("a_directory");
  ::mkdir(dir.c_str(), 0755);
  expect_error_line(run_cli("perplexity -m " + model + " -f " + dir + " -c 8"), "is a directory");
  const std::string text = temp_path("dir_text.txt");
  spit(text, std::string(100, 'a'));
  expect_error_line(run_cli("perplexity -m " + model + " -f " + text + " -c 8 --kl-divergence " + dir),
                    "is a directory");
  expect_error_line(run_cli("convert-llama2c " + dir + " " + dir + " " + temp_path("o.gguf")), "is a directory");
  expect_error_line(run_cli("generate -m " + dir + " -p hi"), "not a regular file");
}

TEST(Hostile, HugeSizesGiveOneLineOrRunSmall) {
  const std::string model = tiny_model("huge_m.gguf");
  // Windows and sinks beyond the context are clamped to it (same behaviour, bounded memory).
  for (const char* f : {"--kv-window 2147483647", "--kv-sinks 2147483647", "--kv-window 1000000 --kv-sinks 1000000"}) {
    auto r = run_capped("generate -m " + model + " -p a -n 2 " + f, 2048);
    EXPECT_EQ(r.rc, 0) << f << ": " << r.err;
  }
  expect_error_line(run_capped("demo --n 9223372036854775807", 2048), "--n x --head-dim");
  expect_error_line(run_capped("demo --n 100000000", 2048), "--n x --head-dim");
  expect_error_line(run_capped("quant-eval --n 9223372036854775807", 2048), "--n x --head-dim");
  expect_error_line(run_capped("generate -m " + model + " -p a -t 100000", 2048), "--threads");
  expect_error_line(run_capped("perplexity -m " + model + " -t 100000", 2048), "--threads");
}

// ---- 4. Memory blow-ups -------------------------------------------------------------------

TEST(Hostile, BenchAttnShortContextStaysSmall) {
  auto r = run_capped("bench-attn --ctx 1 --batch 1 --q-heads 2 --kv-heads 1 --head-dim 64 --min-time 0.01 "
                      "--dram-mb 8 --threads 1 --json", 2048);
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_LE(j["layers_cycled"].get<int>(), 64);
  expect_error_line(run_capped("bench-attn --ctx 2147483647 --dram-mb 8", 2048), "--ctx");
}

TEST(Hostile, XzBombIsRefusedWhileStreaming) {
  const std::string model = tiny_model("xz_m.gguf");
  const std::string bomb = temp_path("bomb.txt.xz");
  // 80 MiB of zero bytes compress to ~12 KB: above the 64 MiB text limit.
  ASSERT_EQ(std::system(("head -c 83886080 /dev/zero | xz -0 -T1 > " + bomb).c_str()), 0);
  ASSERT_LT(slurp(bomb).size(), 100000u);
  expect_error_line(run_capped("perplexity -m " + model + " -f " + bomb + " -c 8", 1024), "MiB of text");
  // A plain text file above the limit is refused before it is read.
  const std::string big = temp_path("big.txt");
  { std::ofstream(big).close(); }
  ASSERT_EQ(::truncate(big.c_str(), (int64_t{64} << 20) + 1), 0);
  expect_error_line(run_capped("perplexity -m " + model + " -f " + big + " -c 8", 1024), "more than the");
  std::remove(big.c_str());
  std::remove(bomb.c_str());
}

// ---- 5. Silent data loss or wrong results ---------------------------------------------------

TEST(Hostile, KldBaseToDevFullFails) {
  const std::string model = tiny_model("full_m.gguf");
  const std::string text = temp_path("full.txt");
  spit(text, std::string(100, 'a'));
  expect_error_line(run_cli("perplexity -m " + model + " -f " + text + " -c 16 --kl-divergence-base /dev/full"),
                    "No space left on device");
}

TEST(Hostile, GgufWriteIsAtomic) {
  // The old writer truncated the target in place: a second name for the same file (a hard link,
  // or the converter's own input) saw the half-written bytes. Now the target is replaced by rename.
  const std::string a = temp_path("atomic_a.gguf"), b = temp_path("atomic_b.gguf");
  spit(a, "old contents");
  std::remove(b.c_str());
  ASSERT_EQ(::link(a.c_str(), b.c_str()), 0);
  GgufWriter w;
  w.add_u32("x", 1);
  ASSERT_TRUE(w.write(a).ok());
  EXPECT_EQ(slurp(b), "old contents");
  EXPECT_EQ(slurp(a).substr(0, 4), "GGUF");
}

// A minimal llama2.c checkpoint (dim 8, 1 layer, `heads` heads, 1 kv head, seq_len 16) and tokenizer.bin.
void write_llama2c(const std::string& model, const std::string& tok, const std::vector<std::string>& pieces,
                   int32_t vocab_field, int32_t heads = 1) {
  const int32_t dim = 8, hidden = 8, L = 1, H = heads, KV = 1, seq = 16;
  const int32_t hdr[7] = {dim, hidden, L, H, KV, vocab_field, seq};
  const int64_t V = static_cast<int64_t>(pieces.size()), D = dim, hd = dim / H;
  const int64_t n = V * D + L * D + L * D * D + 2 * L * hd * D + L * D * D + L * D + 3 * L * hidden * D + D + seq * hd;
  std::string b(reinterpret_cast<const char*>(hdr), 28);
  std::vector<float> w(n);
  for (int64_t i = 0; i < n; ++i) w[i] = 0.01f * float((i * 7) % 13) - 0.05f;
  b.append(reinterpret_cast<const char*>(w.data()), w.size() * 4);
  spit(model, b);
  std::string t(4, '\0');
  for (const std::string& p : pieces) {
    const float score = 0;
    const int32_t len = static_cast<int32_t>(p.size());
    t.append(reinterpret_cast<const char*>(&score), 4);
    t.append(reinterpret_cast<const char*>(&len), 4);
    t += p;
  }
  spit(tok, t);
}

TEST(Hostile, ConvertLlama2cCraftedTokenizerAndOwnInput) {
  const std::string m = temp_path("l2c.bin"), t = temp_path("l2c_tok.bin");
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "<0x-D>", "a", "b"};
  write_llama2c(m, t, pieces, 6);
  const std::string before = slurp(m);
  // Output = its own input: the input is read whole first and replaced only by a complete file.
  auto r = run_cli("convert-llama2c " + m + " " + t + " " + m);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(slurp(m).substr(0, 4), "GGUF");
  EXPECT_NE(slurp(m), before);
  r = run_cli("generate -m " + m + " -p a -n 2");
  EXPECT_EQ(r.rc, 0) << r.err;
  // INT_MIN vocab (negation overflowed int): refused as an implausible header.
  write_llama2c(m, t, pieces, INT_MIN);
  const std::string out = temp_path("l2c_out.gguf");
  spit(out, "precious");
  expect_error_line(run_cli("convert-llama2c " + m + " " + t + " " + out), "plausible llama2.c header");
  EXPECT_EQ(slurp(out), "precious");
  auto st = convert_llama2c(m, t, out);  // the library path, for the UBSan job
  EXPECT_FALSE(st.ok());
  // 8 heads of dim 8: head_dim 1, which RoPE cannot rotate. Found by fuzz_llama2c: the converter
  // wrote a GGUF that the loader then refused; now the header is refused and nothing is written.
  write_llama2c(m, t, pieces, 6, 8);
  std::remove(out.c_str());
  st = convert_llama2c(m, t, out);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.to_string().find("plausible llama2.c header"), std::string::npos) << st.to_string();
  EXPECT_FALSE(std::ifstream(out).good()) << "nothing written for a refused header";
}

struct KldFixture {
  std::string model, other, text, base;
};

KldFixture make_kld(const std::string& tag) {
  KldFixture f;
  f.model = tiny_model(tag + "_m1.gguf", 1);
  f.other = tiny_model(tag + "_m2.gguf", 2);  // same shape and vocabulary, other weights
  f.text = temp_path(tag + ".txt");
  spit(f.text, std::string(100, 'a'));
  f.base = temp_path(tag + ".kld");
  auto r = run_cli("perplexity -m " + f.model + " -f " + f.text + " -c 16 --kl-divergence-base " + f.base);
  EXPECT_EQ(r.rc, 0) << r.err;
  return f;
}

TEST(Hostile, KldBaseOfAnotherModelIsRefused) {
  KldFixture f = make_kld("kld_other");
  auto r = run_cli("perplexity -m " + f.model + " -f " + f.text + " -c 16 --kl-divergence " + f.base);
  EXPECT_EQ(r.rc, 0) << r.err;
  expect_error_line(run_cli("perplexity -m " + f.other + " -f " + f.text + " -c 16 --kl-divergence " + f.base),
                    "another model");
}

TEST(Hostile, NanInKldBaseIsAnError) {
  KldFixture f = make_kld("kld_nan");
  std::string b = slurp(f.base);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // First record: int32 next, float lp_next, int32 ids[top_k], float lps[top_k]; top_k at byte 16.
  uint32_t top_k;
  std::memcpy(&top_k, b.data() + 16, 4);
  std::memcpy(b.data() + 48 + 8 + 4 * size_t(top_k), &nan, 4);
  const std::string bad = temp_path("kld_nan_bad.kld");
  spit(bad, b);
  expect_error_line(run_cli("perplexity -m " + f.model + " -f " + f.text + " -c 16 --kl-divergence " + bad),
                    "non-finite");
}

// ---- 6. Silent garbage ------------------------------------------------------------------------

TEST(Hostile, TinyTemperatureIsGreedy) {
  std::vector<float> logits(100);
  for (int i = 0; i < 100; ++i) logits[i] = std::sin(float(i)) * 5;
  logits[37] = 10;
  SamplerOptions o;
  o.temperature = 1e-40f;  // logits / T overflowed to inf; inf - inf = NaN picked the 40th token
  o.top_k = 40;
  Sampler s(o);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.sample(logits.data(), 100), 37);
}

TEST(Hostile, BadSamplingFlagsAndTinyContextGiveOneLine) {
  const std::string model = tiny_model("samp_m.gguf");
  expect_error_line(run_cli("generate -m " + model + " -p a --temp nan"), "--temp");
  expect_error_line(run_cli("generate -m " + model + " -p a --temp -1"), "--temp");
  expect_error_line(run_cli("generate -m " + model + " -p a --temp 1 --top-p nan"), "--top-p");
  const std::string text = temp_path("c2.txt");
  spit(text, std::string(100, 'a'));
  expect_error_line(run_cli("perplexity -m " + model + " -f " + text + " -c 2"), "must be >= 3");
}

TEST(Hostile, MaxStepsDoesNotOverflow) {
  const std::string model = tiny_model("steps_m.gguf");
  // --steps S runs S forward passes; 2147483647 + 1 overflowed to a negative count (no tokens).
  auto a = run_cli("generate -m " + model + " -p a --steps 2147483647 --json");
  auto b = run_cli("generate -m " + model + " -p a --steps 1000 --json");
  ASSERT_EQ(a.rc, 0) << a.err;
  ASSERT_EQ(b.rc, 0) << b.err;
  const auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_GT(jb["generated_tokens"].get<int>(), 0);
  EXPECT_EQ(ja["generated_tokens"], jb["generated_tokens"]);
  EXPECT_EQ(ja["text"], jb["text"]);
  expect_error_line(run_cli("generate -m " + model + " -p a --steps -5"), "--steps");
}

}  // namespace
}  // namespace tqkv
