// Checked file input/output for everything tqkv reads from strangers and writes for users.
//  - read_file: regular files only (a directory or device is refused with one line), bounded by
//    max_bytes BEFORE anything is allocated.
//  - AtomicFile: writes to a temporary file next to the target, then fsync + rename + fsync of the
//    directory on commit(), so a crash or an error never leaves a half file under the final name
//    (and an input file named as the output is only replaced once the output is complete).
//    Every write, fsync and close is checked. A target that exists and is not a regular file
//    (/dev/full, a FIFO) cannot be replaced atomically: it is written in place, still checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tqkv/status.h"

namespace tqkv {

// Reads all of `path`. `what` names the file in messages ("text file", "KLD base file").
StatusOr<std::vector<uint8_t>> read_file(const std::string& path, uint64_t max_bytes, const std::string& what);
// Reads at most the first n bytes of `path` (fewer if the file is shorter).
StatusOr<std::vector<uint8_t>> read_file_prefix(const std::string& path, uint64_t n, const std::string& what);

class AtomicFile {
 public:
  AtomicFile() = default;
  ~AtomicFile();  // not committed: the temporary file is removed, the target is untouched
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  Status open(const std::string& path);
  Status write(const void* data, size_t n);
  Status commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool in_place_ = false;
};

// open + write + commit.
Status write_file_atomic(const std::string& path, const void* data, size_t n);

}  // namespace tqkv
