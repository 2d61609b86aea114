// IDX reading and writing: round trips through plain and gzip files, every way a file can be
// broken (each must throw DataError naming the file and the fault), and the real
// Fashion-MNIST test set when the Debian package is installed.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "mpsim/idx.h"

namespace fs = std::filesystem;

namespace {

std::vector<std::uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// A small image stack with varied bytes, so a gzip of it has real Huffman blocks to corrupt.
mpsim::IdxArray sample_images() {
  mpsim::IdxArray a;
  a.dims = {3, 5, 7};
  a.data.resize(3 * 5 * 7);
  std::uint32_t x = 12345;
  for (auto& b : a.data) {
    x = x * 1103515245u + 12345u;
    b = static_cast<std::uint8_t>(x >> 24);
  }
  return a;
}

// CRC-32 of gzip (reflected polynomial 0xEDB88320), bit by bit: slow and obviously right.
std::uint32_t crc32(const std::vector<std::uint8_t>& bytes) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (const std::uint8_t b : bytes) {
    crc ^= b;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put_le(std::vector<std::uint8_t>& out, std::uint32_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// One gzip member (RFC 1952) holding `content` in deflate stored blocks (RFC 1951, BTYPE 00):
// built by hand so that the reader is tested against the standard, not only against the
// writer that zlib gives write_idx.
std::vector<std::uint8_t> gzip_stored(const std::vector<std::uint8_t>& content) {
  // ID1 ID2, CM = deflate, no flags, no mtime, no extra flags, OS = unknown.
  std::vector<std::uint8_t> out = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
  std::size_t pos = 0;
  do {
    const std::size_t len = std::min<std::size_t>(content.size() - pos, 0xFFFF);
    const bool last = pos + len == content.size();
    out.push_back(last ? 1 : 0);  // BFINAL, BTYPE = stored; the rest of the byte is padding
    put_le(out, static_cast<std::uint32_t>(len), 2);
    put_le(out, static_cast<std::uint32_t>(~len & 0xFFFF), 2);
    out.insert(out.end(), content.begin() + static_cast<std::ptrdiff_t>(pos),
               content.begin() + static_cast<std::ptrdiff_t>(pos + len));
    pos += len;
  } while (pos < content.size());
  put_le(out, crc32(content), 4);
  put_le(out, static_cast<std::uint32_t>(content.size()), 4);
  return out;
}

class Idx : public ::testing::Test {
 protected:
  void SetUp() override {
    // One directory per test and process, so parallel ctest runs never share files.
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("mpsim_test_idx_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Runs read_idx on `file`, expects DataError, and checks that its message names the file
  // and contains `fragment`.
  void expect_error(const std::string& file, const std::string& fragment) const {
    try {
      (void)mpsim::read_idx(file);
      ADD_FAILURE() << "no DataError for " << file << " (expected: " << fragment << ")";
    } catch (const mpsim::DataError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(file), std::string::npos) << "message does not name the file: " << msg;
      EXPECT_NE(msg.find(fragment), std::string::npos)
          << "message lacks \"" << fragment << "\": " << msg;
    }
  }

  fs::path dir_;
};

TEST_F(Idx, PlainRoundTrip) {
  const mpsim::IdxArray a = sample_images();
  mpsim::write_idx(path("a.idx"), a);
  const std::vector<std::uint8_t> raw = read_bytes(path("a.idx"));
  // The layout on disk, byte for byte: magic 00 00 08 03, then big-endian dims.
  ASSERT_EQ(raw.size(), 4 + 3 * 4 + a.data.size());
  EXPECT_EQ(std::vector<std::uint8_t>(raw.begin(), raw.begin() + 16),
            (std::vector<std::uint8_t>{0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 7}));
  const mpsim::IdxArray b = mpsim::read_idx(path("a.idx"));
  EXPECT_EQ(b.dims, a.dims);
  EXPECT_EQ(b.data, a.data);
  EXPECT_EQ(b.element_count(), 105u);
}

TEST_F(Idx, GzipRoundTripDetectedByMagicNotName) {
  const mpsim::IdxArray a = sample_images();
  // A gzip file without .gz and a plain file with .gz: the name must not matter.
  mpsim::write_idx(path("compressed.idx"), a, true);
  mpsim::write_idx(path("plain.gz"), a, false);
  const std::vector<std::uint8_t> raw = read_bytes(path("compressed.idx"));
  ASSERT_GE(raw.size(), 2u);
  EXPECT_EQ(raw[0], 0x1f);
  EXPECT_EQ(raw[1], 0x8b);
  EXPECT_EQ(mpsim::read_idx(path("compressed.idx")), a);
  EXPECT_EQ(mpsim::read_idx(path("plain.gz")), a);
}

TEST_F(Idx, HandMadeGzipMembers) {
  // A stored-block gzip made here, without zlib's writer: the reader must accept any standard
  // gzip, including several members in a row (what `cat a.gz b.gz` makes).
  const mpsim::IdxArray a = sample_images();
  mpsim::write_idx(path("a.idx"), a);
  const std::vector<std::uint8_t> plain = read_bytes(path("a.idx"));
  write_bytes(path("one_member.gz"), gzip_stored(plain));
  EXPECT_EQ(mpsim::read_idx(path("one_member.gz")), a);

  const std::size_t cut = 37;  // inside the data, away from any boundary of the format
  std::vector<std::uint8_t> two = gzip_stored({plain.begin(), plain.begin() + cut});
  const std::vector<std::uint8_t> second = gzip_stored({plain.begin() + cut, plain.end()});
  two.insert(two.end(), second.begin(), second.end());
  write_bytes(path("two_members.gz"), two);
  EXPECT_EQ(mpsim::read_idx(path("two_members.gz")), a);

  // Two whole copies inflate to the array followed by a second one: trailing garbage.
  const std::vector<std::uint8_t> member = gzip_stored(plain);
  std::vector<std::uint8_t> twice = member;
  twice.insert(twice.end(), member.begin(), member.end());
  write_bytes(path("twice.gz"), twice);
  expect_error(path("twice.gz"),
               std::to_string(plain.size()) + " bytes of trailing garbage after the 105 bytes of "
               "data (after gzip decompression)");
}

TEST_F(Idx, ZeroSizedDimension) {
  mpsim::IdxArray a;
  a.dims = {0, 28, 28};
  mpsim::write_idx(path("empty.idx"), a);
  EXPECT_EQ(mpsim::read_idx(path("empty.idx")), a);
}

TEST_F(Idx, MissingFile) {
  expect_error(path("does_not_exist.idx"), "cannot open");
  expect_error(path("does_not_exist.idx"), "No such file");
}

TEST_F(Idx, DirectoryIsNotAFile) { expect_error(dir_.string(), "read error"); }

TEST_F(Idx, EmptyFile) {
  write_bytes(path("empty"), {});
  expect_error(path("empty"), "truncated header");
}

TEST_F(Idx, TruncatedHeader) {
  // Magic says three dimensions (12 bytes of sizes) but only one and a half follow.
  write_bytes(path("short_header"), {0, 0, 8, 3, 0, 0, 0, 3, 0, 0});
  expect_error(path("short_header"),
               "truncated header: expected 16 bytes for 3 dimensions, got 10");
  write_bytes(path("short_magic"), {0, 0, 8});
  expect_error(path("short_magic"), "truncated header");
}

TEST_F(Idx, TruncatedData) {
  mpsim::write_idx(path("a.idx"), sample_images());
  std::vector<std::uint8_t> raw = read_bytes(path("a.idx"));
  raw.resize(raw.size() - 5);
  write_bytes(path("cut.idx"), raw);
  expect_error(path("cut.idx"), "truncated data: expected 105 bytes of data, got 100");
}

TEST_F(Idx, TruncatedDataInsideGzip) {
  // A complete, valid gzip stream whose content is short: an IDX error, not a gzip one, with
  // sizes that refer to the decompressed bytes.
  write_bytes(path("short.gz"), gzip_stored({0, 0, 8, 1, 0, 0, 0, 10, 1, 2, 3, 4, 5}));
  expect_error(path("short.gz"),
               "truncated data: expected 10 bytes of data, got 5 (after gzip decompression)");
}

TEST_F(Idx, TrailingGarbage) {
  mpsim::write_idx(path("a.idx"), sample_images());
  std::vector<std::uint8_t> raw = read_bytes(path("a.idx"));
  raw.push_back(0xAB);
  raw.push_back(0xCD);
  write_bytes(path("long.idx"), raw);
  expect_error(path("long.idx"), "2 bytes of trailing garbage after the 105 bytes of data");
}

TEST_F(Idx, WrongMagic) {
  mpsim::write_idx(path("a.idx"), sample_images());
  std::vector<std::uint8_t> raw = read_bytes(path("a.idx"));
  raw[0] = 0x12;
  write_bytes(path("bad_magic.idx"), raw);
  expect_error(path("bad_magic.idx"), "bad magic number 0x12 0x00 0x08 0x03");
  // A text file, the usual wrong download.
  write_bytes(path("page.html"), {'<', 'h', 't', 'm', 'l', '>'});
  expect_error(path("page.html"), "bad magic number");
}

TEST_F(Idx, UnsupportedType) {
  // float32 (0x0D): valid IDX, but not what this reader accepts.
  write_bytes(path("float.idx"), {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3f, 0x80, 0, 0});
  expect_error(path("float.idx"), "unsupported element type 0x0d (float32)");
  write_bytes(path("junk_type.idx"), {0, 0, 0x42, 1, 0, 0, 0, 0});
  expect_error(path("junk_type.idx"), "unsupported element type 0x42");
}

TEST_F(Idx, CorruptGzip) {
  mpsim::write_idx(path("a.gz"), sample_images(), true);
  std::vector<std::uint8_t> raw = read_bytes(path("a.gz"));
  ASSERT_GT(raw.size(), 40u);
  // Damage the deflate data (past the 10-byte gzip header, before the 8-byte trailer). Either
  // the block structure breaks or the CRC-32 in the trailer no longer matches; both must be
  // errors, never silently wrong pixels.
  std::vector<std::uint8_t> bad = raw;
  for (std::size_t i = 12; i < bad.size() - 8; i += 7) bad[i] ^= 0x5A;
  write_bytes(path("corrupt.gz"), bad);
  expect_error(path("corrupt.gz"), "corrupt gzip stream");

  // Only the CRC wrong: the deflate data decodes, the check must still catch it.
  std::vector<std::uint8_t> bad_crc = raw;
  bad_crc[bad_crc.size() - 8] ^= 0x01;
  write_bytes(path("bad_crc.gz"), bad_crc);
  expect_error(path("bad_crc.gz"), "corrupt gzip stream");
}

TEST_F(Idx, TruncatedGzip) {
  mpsim::write_idx(path("a.gz"), sample_images(), true);
  std::vector<std::uint8_t> raw = read_bytes(path("a.gz"));
  for (const std::size_t keep : {std::size_t{2}, std::size_t{11}, raw.size() / 2, raw.size() - 1}) {
    std::vector<std::uint8_t> cut(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(keep));
    write_bytes(path("cut.gz"), cut);
    expect_error(path("cut.gz"), "corrupt gzip stream");
  }
}

TEST_F(Idx, GarbageAfterGzipStream) {
  mpsim::write_idx(path("a.gz"), sample_images(), true);
  std::vector<std::uint8_t> raw = read_bytes(path("a.gz"));
  raw.insert(raw.end(), {'j', 'u', 'n', 'k'});
  write_bytes(path("junk.gz"), raw);
  expect_error(path("junk.gz"), "4 bytes of trailing garbage after the gzip stream");
}

TEST_F(Idx, WriteRejectsInconsistentArrays) {
  mpsim::IdxArray a;
  a.dims = {2, 3};
  a.data = {1, 2, 3};
  EXPECT_THROW(mpsim::write_idx(path("x.idx"), a), mpsim::DataError);
  a.dims = {std::size_t{1} << 33};
  EXPECT_THROW(mpsim::write_idx(path("x.idx"), a), mpsim::DataError);
  a.dims.assign(256, 1);
  a.data = {7};
  EXPECT_THROW(mpsim::write_idx(path("x.idx"), a), mpsim::DataError);
  EXPECT_THROW(mpsim::write_idx((dir_ / "no_such_dir" / "x.idx").string(), sample_images()),
               mpsim::DataError);
}

// The real data set, from Debian's dataset-fashion-mnist (scripts/setup.sh installs it).
TEST(IdxFashionMnist, TestSetShapes) {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  const std::string images = dir + "t10k-images-idx3-ubyte.gz";
  const std::string labels = dir + "t10k-labels-idx1-ubyte.gz";
  if (!fs::exists(images) || !fs::exists(labels)) {
    GTEST_SKIP() << "Fashion-MNIST not installed at " << dir;
  }
  const mpsim::IdxArray x = mpsim::read_idx(images);
  EXPECT_EQ(x.dims, (std::vector<std::size_t>{10000, 28, 28}));
  EXPECT_EQ(x.data.size(), 10000u * 28 * 28);
  const mpsim::IdxArray y = mpsim::read_idx(labels);
  ASSERT_EQ(y.dims, (std::vector<std::size_t>{10000}));
  std::vector<int> per_class(10, 0);
  for (const std::uint8_t label : y.data) {
    ASSERT_LT(label, 10);
    ++per_class[label];
  }
  // The test set is balanced: 1000 images of each class.
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[static_cast<std::size_t>(c)], 1000) << c;
}

}  // namespace
