// tqkv: the command-line program. Subcommands live in apps/tqkv/cmd_*.cc (see command.h).
#include <algorithm>
#include <cstdio>
#include <map>
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
    tqkv::Status s = run();
    if (!s.ok()) {
      std::fprintf(stderr, "tqkv: error: %s\n", s.message().c_str());
      return 1;
    }
    return 0;
  }
  return 1;
}
