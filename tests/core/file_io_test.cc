// core/file_io: bounded reads that refuse directories and devices; atomic, checked writes.
#include "core/file_io.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "testing/runtime_cli.h"

namespace tqkv {
namespace {

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

TEST(FileIo, UncommittedAtomicFileLeavesTargetAlone) {
  const std::string p = testing::temp_path("fio_target");
  std::ofstream(p) << "old contents";
  {
    AtomicFile f;
    ASSERT_TRUE(f.open(p).ok());
    ASSERT_TRUE(f.write("new", 3).ok());
  }  // destroyed without commit
  EXPECT_EQ(slurp(p), "old contents");
  // No temporary file left next to it.
  const std::string dir = p.substr(0, p.rfind('/'));
  const std::string cmd = "ls " + dir + " | grep -c '" + p.substr(p.rfind('/') + 1) + ".tmp' > /dev/null";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  AtomicFile f;
  ASSERT_TRUE(f.open(p).ok());
  ASSERT_TRUE(f.write("new", 3).ok());
  ASSERT_TRUE(f.commit().ok());
  EXPECT_EQ(slurp(p), "new");
}

TEST(FileIo, WriteErrorsAreReported) {
  const Status s = write_file_atomic("/dev/full", "x", 1);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("No space left"), std::string::npos) << s.message();
  EXPECT_FALSE(write_file_atomic("/nonexistent_dir/x", "x", 1).ok());
  const std::string d = testing::temp_path("fio_dir");
  ::mkdir(d.c_str(), 0755);
  EXPECT_NE(write_file_atomic(d, "x", 1).message().find("is a directory"), std::string::npos);
}

TEST(FileIo, ReadsAreBoundedAndRegularOnly) {
  const std::string p = testing::temp_path("fio_read");
  std::ofstream(p) << "0123456789";
  auto a = read_file(p, 10, "test file");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->size(), 10u);
  auto b = read_file(p, 9, "test file");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("more than the 9 expected"), std::string::npos) << b.status().message();
  auto c = read_file_prefix(p, 4, "test file");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(std::string(c->begin(), c->end()), "0123");
  EXPECT_NE(read_file("/tmp", 100, "test file").status().message().find("is a directory"), std::string::npos);
  EXPECT_NE(read_file("/dev/zero", 100, "test file").status().message().find("not a regular file"), std::string::npos);
  EXPECT_EQ(read_file("/nonexistent", 1, "x").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tqkv
