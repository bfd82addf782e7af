// Runs the tqkv program (TQKV_CLI_PATH) with a shell-quoted argument string and captures its
// stdout, stderr and exit code.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "testing/runtime_tiny_model.h"

namespace tqkv::testing {

struct CliResult {
  int rc = -1;
  std::string out, err;
};

// A path in the test temp dir unique to this process (ctest runs tests in parallel processes).
inline std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/tqkv_" + std::to_string(getpid()) + "_" + name;
}

// Writes a tiny model (runtime_tiny_model.h) to a temp GGUF file for the CLI; returns its path.
inline std::string write_tiny_model_file(const std::string& name, const TinySpec& s) {
  GgufWriter w;
  make_tiny_model(s, &w);
  const std::string p = temp_path("") + name;
  EXPECT_TRUE(w.write(p).ok());
  return p;
}

// Writes text (bytes as given) to a temp file for the CLI; returns its path.
inline std::string write_text_file(const std::string& name, const std::string& text) {
  const std::string p = temp_path("") + name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

inline CliResult run_cli(const std::string& args) {
  static int counter = 0;
  const std::string err_path = temp_path("cli_stderr_" + std::to_string(++counter) + ".txt");
  const std::string cmd = std::string(TQKV_CLI_PATH) + " " + args + " 2>" + err_path;
  CliResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream f(err_path);
  std::stringstream ss;
  ss << f.rdbuf();
  r.err = ss.str();
  std::remove(err_path.c_str());
  return r;
}

}  // namespace tqkv::testing
