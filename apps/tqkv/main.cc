// tqkv: the command-line program. Subcommands live in apps/tqkv/cmd_*.cc (see command.h).
#include <algorithm>
#include <cstdio>
#include <map>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "command.h"

int main(int argc, char** argv) {
  CLI::App app{"tqkv: TurboQuant RVQ KV-cache compression and fused attention on compressed caches"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tqkv 0.1.0");
  auto& defs = tqkv::cli::commands();
  std::sort(defs.begin(), defs.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::map<CLI::App*, tqkv::cli::Runner> runners;
  for (auto& def : defs) {
    CLI::App* sub = app.add_subcommand(def.name, def.help);
    runners[sub] = def.setup(*sub);
  }
  // llama.cpp spells some options with one dash and several letters (-ctk, -ctv), which CLI11
  // does not accept: rewrite them to their long names.
  std::vector<std::string> args;
  for (int i = argc - 1; i >= 1; --i) {
    std::string a = argv[i];
    if (a == "-ctk") a = "--cache-type-k";
    else if (a == "-ctv") a = "--cache-type-v";
    args.push_back(a);
  }
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (auto& [sub, run] : runners) {
    if (!sub->parsed()) continue;
    // Last line of defence: every known failure is a Status; an exception that still escapes
    // becomes one line too instead of std::terminate (rc 134).
    tqkv::Status s = tqkv::Status::Ok();
    try {
      s = run();
    } catch (const std::bad_alloc&) {
      s = tqkv::out_of_range("out of memory (a size on the command line or in a file is too large)");
    } catch (const std::exception& e) {
      s = tqkv::internal_error(std::string("unexpected exception: ") + e.what());
    }
    if (!s.ok()) {
      std::fprintf(stderr, "tqkv: error: %s\n", s.message().c_str());
      return 1;
    }
    return 0;
  }
  return 1;
}
