#include "data_paths.h"

#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <vector>

namespace tqkv::cli {

namespace fs = std::filesystem;

std::string default_data_file(const std::string& rel) {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("TQKV_DATA_DIR"); env != nullptr && *env != '\0')
    candidates.push_back(fs::path(env) / rel);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  fs::path installed;
  if (!ec) {
    const fs::path dir = exe.parent_path();
    installed = dir.parent_path() / "share" / "tqkv" / rel;
    candidates.push_back(dir / rel);
    candidates.push_back(installed);
    fs::path up = dir;
    for (int i = 0; i < 3 && up.has_parent_path() && up != up.parent_path(); ++i) {
      up = up.parent_path();
      candidates.push_back(up / rel);
    }
  }
  for (const fs::path& p : candidates)
    if (fs::is_regular_file(p, ec)) return p.lexically_normal().string();
  if (!installed.empty()) return installed.lexically_normal().string();
  return rel;
}

}  // namespace tqkv::cli
