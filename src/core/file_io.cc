#include "core/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tqkv {
namespace {

std::string err() { return std::strerror(errno); }

std::string dir_of(const std::string& path) {
  const size_t s = path.rfind('/');
  if (s == std::string::npos) return ".";
  return s == 0 ? "/" : path.substr(0, s);
}

}  // namespace

namespace {

StatusOr<std::vector<uint8_t>> read_impl(const std::string& path, uint64_t max_bytes, const std::string& what,
                                         bool prefix) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return not_found("cannot open " + what + " '" + path + "': no such file");
    return io_error("cannot open " + what + " '" + path + "': " + err());
  }
  struct Closer { int fd; ~Closer() { ::close(fd); } } closer{fd};
  struct stat st;
  if (fstat(fd, &st) != 0) return io_error("cannot stat '" + path + "': " + err());
  if (S_ISDIR(st.st_mode)) return invalid_argument(what + " '" + path + "' is a directory");
  if (!S_ISREG(st.st_mode)) return invalid_argument(what + " '" + path + "' is not a regular file");
  uint64_t n = static_cast<uint64_t>(st.st_size);
  if (n > max_bytes) {
    if (!prefix)
      return invalid_argument(what + " '" + path + "' is " + std::to_string(n) + " bytes, more than the " +
                              std::to_string(max_bytes) + " expected");
    n = max_bytes;
  }
  std::vector<uint8_t> b(static_cast<size_t>(n));
  size_t got = 0;
  while (got < b.size()) {
    const ssize_t r = ::read(fd, b.data() + got, b.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return io_error("read from '" + path + "' failed: " + err());
    if (r == 0) break;  // shrank while reading
    got += static_cast<size_t>(r);
  }
  b.resize(got);
  return b;
}

}  // namespace

StatusOr<std::vector<uint8_t>> read_file(const std::string& path, uint64_t max_bytes, const std::string& what) {
  return read_impl(path, max_bytes, what, false);
}

StatusOr<std::vector<uint8_t>> read_file_prefix(const std::string& path, uint64_t n, const std::string& what) {
  return read_impl(path, n, what, true);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

Status AtomicFile::open(const std::string& path) {
  path_ = path;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return invalid_argument("output '" + path + "' is a directory");
    in_place_ = !S_ISREG(st.st_mode);
  }
  if (in_place_) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0) return io_error("cannot open '" + path + "' for writing: " + err());
    return Status::Ok();
  }
  std::string t = path + ".tmp.XXXXXX";
  fd_ = ::mkstemp(t.data());
  if (fd_ < 0) return io_error("cannot create a file next to '" + path + "': " + err());
  tmp_ = t;
  ::fchmod(fd_, 0644);
  return Status::Ok();
}

Status AtomicFile::write(const void* data, size_t n) {
  if (fd_ < 0) return internal_error("AtomicFile::write on a closed file");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return io_error("write to '" + path_ + "' failed: " + (w < 0 ? err() : std::string("no progress")));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

Status AtomicFile::commit() {
  if (fd_ < 0) return internal_error("AtomicFile::commit on a closed file");
  if (!in_place_ && ::fsync(fd_) != 0) return io_error("fsync of '" + path_ + "' failed: " + err());
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return io_error("close of '" + path_ + "' failed: " + err());
  if (in_place_) return Status::Ok();
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) return io_error("cannot rename onto '" + path_ + "': " + err());
  tmp_.clear();
  const int dfd = ::open(dir_of(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {  // best effort: some file systems refuse fsync on directories
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

Status write_file_atomic(const std::string& path, const void* data, size_t n) {
  AtomicFile f;
  TQKV_RETURN_IF_ERROR(f.open(path));
  TQKV_RETURN_IF_ERROR(f.write(data, n));
  return f.commit();
}

}  // namespace tqkv
