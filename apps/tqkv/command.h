// Subcommand registry of the tqkv program. Each apps/tqkv/cmd_*.cc file registers itself:
//
//   static tqkv::cli::Register reg("demo", "Quality table of the default formats", [](CLI::App& app) {
//     auto opts = std::make_shared<Opts>();
//     app.add_option("--n", opts->n, "...");
//     return [opts]() -> tqkv::Status { ...; return tqkv::Status::Ok(); };
//   });
//
// main() parses the command line, runs the chosen subcommand, and turns a non-OK Status into one
// line on stderr ("tqkv: error: ...") and exit code 1.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "tqkv/status.h"

namespace tqkv::cli {

using Runner = std::function<Status()>;
using Setup = std::function<Runner(CLI::App&)>;

struct CommandDef {
  std::string name, help;
  Setup setup;
};

inline std::vector<CommandDef>& commands() {
  static std::vector<CommandDef> list;
  return list;
}

struct Register {
  Register(std::string name, std::string help, Setup setup) {
    commands().push_back({std::move(name), std::move(help), std::move(setup)});
  }
};

}  // namespace tqkv::cli
