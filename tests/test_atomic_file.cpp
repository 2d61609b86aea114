// The atomic file replacement every result file goes through (src/io/atomic_file.h): it writes
// the bytes, replaces an existing file, gives ordinary permissions, leaves no temporary behind,
// and on failure names the problem and leaves the target as it was.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "src/io/atomic_file.h"

namespace mpsim {
namespace {

namespace fs = std::filesystem;

class AtomicFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mpsim_atomic_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // Names in the directory other than `keep`.
  std::size_t others(const std::string& keep) const {
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator(dir_)) n += e.path().filename() != keep;
    return n;
  }

  fs::path dir_;
};

TEST_F(AtomicFile, WritesAndReplacesWithOrdinaryPermissionsAndNoTemporaryLeft) {
  const fs::path p = dir_ / "metrics.csv";
  detail::write_file_atomically(p, "first\n");
  EXPECT_EQ(read(p), "first\n");
  const std::string binary("a\0b\xff", 4);  // bytes, not a C string
  detail::write_file_atomically(p, binary);
  EXPECT_EQ(read(p), binary);
  detail::write_file_atomically(p, "");
  EXPECT_EQ(fs::file_size(p), 0u);
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  EXPECT_EQ(others("metrics.csv"), 0u);
}

TEST_F(AtomicFile, AMissingDirectoryIsNamed) {
  const fs::path p = dir_ / "no" / "such" / "file.txt";
  try {
    detail::write_file_atomically(p, "x");
    FAIL() << "expected AtomicWriteError";
  } catch (const detail::AtomicWriteError& e) {
    EXPECT_NE(std::string(e.what()).find((dir_ / "no" / "such").string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
}

TEST_F(AtomicFile, AFailedRenameLeavesTheTargetAndNoTemporary) {
  // A non-empty directory cannot be replaced by a file: the rename fails after the write.
  const fs::path p = dir_ / "target";
  fs::create_directory(p);
  std::ofstream(p / "inside") << "kept";
  try {
    detail::write_file_atomically(p, "new");
    FAIL() << "expected AtomicWriteError";
  } catch (const detail::AtomicWriteError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot rename"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_directory(p));
  EXPECT_EQ(read(p / "inside"), "kept");
  EXPECT_EQ(others("target"), 0u);  // the temporary is gone
}

}  // namespace
}  // namespace mpsim
