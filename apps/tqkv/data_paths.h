// Where the tqkv program finds its shipped data (the reference model and its held-out text) at
// run time. Nothing is baked in at build time, so a build tree, an installed tree and a moved
// tree all work.
#pragma once

#include <string>

namespace tqkv::cli {

// `rel` is a path under the data root, e.g. "models/tqkv-ref-d128.gguf". Returns the first
// existing candidate of:
//   $TQKV_DATA_DIR/rel                    (explicit override)
//   <dir of the executable>/rel           (next to the executable)
//   <dir of the executable>/../share/tqkv/rel   (installed: bin/tqkv, share/tqkv/...)
//   <each of 3 parent dirs of the executable's dir>/rel   (a build dir inside the source tree)
// or, when none exists, the installed-layout candidate (so the "no such file" error names it).
std::string default_data_file(const std::string& rel);

}  // namespace tqkv::cli
