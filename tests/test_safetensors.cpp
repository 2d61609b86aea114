// safetensors reading and writing: files whose every byte is written here by hand from the
// format's definition (the independent oracle: no code under test produces them), the
// writer's bytes checked field by field, round trips through real files, the dtype
// conversions (exact or an error), and every way a file can be broken (each must throw a
// SafetensorsError naming the file and the fault).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mpsim/safetensors.h"

namespace fs = std::filesystem;
using mpsim::SafetensorsError;
using mpsim::Tensor;
using mpsim::TensorFile;
using Bytes = std::vector<std::uint8_t>;

namespace {

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "mpsim_safetensors_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

Bytes read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& p, const Bytes& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// The file layout, assembled by the test: 8-byte little-endian header length, header, data.
Bytes file_bytes(const std::string& header, const Bytes& data) {
  Bytes out;
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i, n >>= 8) out.push_back(static_cast<std::uint8_t>(n & 0xff));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::uint32_t bits(float f) { return std::bit_cast<std::uint32_t>(f); }

// Expects parse_safetensors to throw a SafetensorsError whose message names `what` and
// contains `fragment`.
void expect_error(const Bytes& bytes, const std::string& fragment, const std::string& what = "broken.safetensors") {
  try {
    (void)mpsim::parse_safetensors(bytes, what);
    ADD_FAILURE() << "no error; expected one mentioning '" << fragment << "'";
  } catch (const SafetensorsError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << msg;
  }
}

// One F32 tensor "x" of shape [2] at [0, 8) plus the given extra header text, with 8 data bytes.
const Bytes kTwoFloats = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0};  // 1.0f, -2.5f

}  // namespace

// A file written byte by byte from the format's definition: two F32 tensors (one rank 0), an
// I64 tensor and metadata, in an order different from the data order, with the header padded
// by trailing spaces (allowed: the header is JSON, whitespace included).
TEST(Safetensors, ReadsHandBuiltFile) {
  const std::string header =
      R"({"__metadata__":{"format":"pt","note":"hand made"},)"
      R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[4,20]},)"
      R"("s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
      R"("n":{"dtype":"I64","shape":[1],"data_offsets":[20,28]}}   )";
  const Bytes data = {
      0x00, 0x00, 0xc0, 0x7f,                          // s = NaN (quiet, 0x7fc00000)
      0x00, 0x00, 0x80, 0x3f,                          // w[0,0] = 1.0f   (0x3f800000)
      0x00, 0x00, 0x20, 0xc0,                          // w[0,1] = -2.5f  (0xc0200000)
      0xcd, 0xcc, 0xcc, 0x3d,                          // w[1,0] = 0.1f   (0x3dcccccd)
      0x01, 0x00, 0x00, 0x00,                          // w[1,1] = 2^-149 (smallest subnormal)
      0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  // n = -3 as int64
  };
  const TensorFile f = mpsim::parse_safetensors(file_bytes(header, data));
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"note", "hand made"}}));

  const Tensor& w = f.tensors.at("w");
  EXPECT_EQ(w.shape(), (mpsim::Shape{2, 2}));
  EXPECT_EQ(w[0], 1.0f);
  EXPECT_EQ(w[1], -2.5f);
  EXPECT_EQ(bits(w[2]), 0x3dcccccdu);
  EXPECT_EQ(w[3], std::numeric_limits<float>::denorm_min());

  const Tensor& s = f.tensors.at("s");
  EXPECT_EQ(s.shape(), mpsim::Shape{});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(bits(s[0]), 0x7fc00000u);

  const Tensor& n = f.tensors.at("n");
  EXPECT_EQ(n.shape(), mpsim::Shape{1});
  EXPECT_EQ(n[0], -3.0f);
}

TEST(Safetensors, ReadsEmptyFileAndZeroSizedTensors) {
  EXPECT_TRUE(mpsim::parse_safetensors(file_bytes("{}", {})).tensors.empty());
  // A tensor with a zero dimension has no bytes: begin == end, and it may share its offset.
  const TensorFile f = mpsim::parse_safetensors(file_bytes(
      R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
      kTwoFloats));
  EXPECT_EQ(f.tensors.at("e").shape(), (mpsim::Shape{0, 3}));
  EXPECT_EQ(f.tensors.at("e").size(), 0u);
  EXPECT_EQ(f.tensors.at("x")[1], -2.5f);
}

// The writer's output, decoded field by field from the definition (header length, JSON
// header, data bytes written out by hand).
TEST(Safetensors, WriterBytesFollowTheLayout) {
  TensorFile f;
  f.tensors.emplace("weight", Tensor({2, 2}, {1.0f, -2.5f, 0.1f, -0.0f}));
  f.tensors.emplace("bias", Tensor({1}, {std::numeric_limits<float>::infinity()}));
  f.metadata["step"] = "7";
  const Bytes out = mpsim::serialize_safetensors(f);

  ASSERT_GE(out.size(), 8u);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | out[static_cast<std::size_t>(i)];
  ASSERT_LE(8 + n, out.size());
  EXPECT_EQ((8 + n) % 8, 0u) << "data section should start 8-byte aligned";
  const std::string header(out.begin() + 8, out.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j.size(), 3u);
  EXPECT_EQ(j["__metadata__"], (nlohmann::json{{"step", "7"}}));
  // Data in name order: bias first, then weight.
  using nlohmann::json;
  EXPECT_EQ(j["bias"], (json{{"dtype", "F32"}, {"shape", json::array({1})}, {"data_offsets", json::array({0, 4})}}));
  EXPECT_EQ(j["weight"],
            (json{{"dtype", "F32"}, {"shape", json::array({2, 2})}, {"data_offsets", json::array({4, 20})}}));
  const Bytes data(out.begin() + 8 + static_cast<std::ptrdiff_t>(n), out.end());
  const Bytes expected = {
      0x00, 0x00, 0x80, 0x7f,  // +inf
      0x00, 0x00, 0x80, 0x3f,  // 1.0
      0x00, 0x00, 0x20, 0xc0,  // -2.5
      0xcd, 0xcc, 0xcc, 0x3d,  // 0.1f
      0x00, 0x00, 0x00, 0x80,  // -0.0
  };
  EXPECT_EQ(data, expected);
}

TEST(Safetensors, RoundTripThroughAFileIsBitExact) {
  TempDir dir;
  TensorFile f;
  std::vector<float> v(2 * 3 * 4 * 5);
  std::uint32_t x = 12345;
  for (float& e : v) {
    x = x * 1103515245u + 12345u;
    e = std::bit_cast<float>(x);  // every bit pattern class: NaNs, infinities, subnormals
  }
  f.tensors.emplace("layer1.0.conv1.weight", Tensor({2, 3, 4, 5}, v));
  f.tensors.emplace("scalar", Tensor(mpsim::Shape{}, std::vector<float>{-0.0f}));
  f.tensors.emplace("empty", Tensor({3, 0}));
  f.tensors.emplace("name with \"quotes\" and \xc3\xa9", Tensor({1}, {42.0f}));
  f.metadata = {{"arch", "resnet20"}, {"json", "{\"nested\": [1]}"}};
  const std::string path = dir.file("ckpt.safetensors");
  mpsim::write_safetensors(path, f);
  const TensorFile g = mpsim::read_safetensors(path);

  EXPECT_EQ(g.metadata, f.metadata);
  ASSERT_EQ(g.tensors.size(), f.tensors.size());
  for (const auto& [name, t] : f.tensors) {
    ASSERT_TRUE(g.tensors.count(name)) << name;
    const Tensor& u = g.tensors.at(name);
    EXPECT_EQ(u.shape(), t.shape()) << name;
    ASSERT_EQ(u.size(), t.size()) << name;
    for (std::size_t i = 0; i < t.size(); ++i) EXPECT_EQ(bits(u[i]), bits(t[i])) << name << " [" << i << "]";
  }
  // The file on disk is exactly what serialize produces, and no temporary file is left.
  EXPECT_EQ(read_bytes(path), mpsim::serialize_safetensors(f));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(Safetensors, WriteReplacesAnExistingFile) {
  TempDir dir;
  const std::string path = dir.file("a.safetensors");
  write_bytes(path, Bytes(1000, 0xab));
  TensorFile f;
  f.tensors.emplace("x", Tensor({2}, {1.0f, 2.0f}));
  mpsim::write_safetensors(path, f);
  EXPECT_EQ(read_bytes(path), mpsim::serialize_safetensors(f));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(Safetensors, WriteErrorsLeaveTheTargetAlone) {
  TempDir dir;
  const std::string path = dir.file("keep.safetensors");
  const Bytes original(100, 0x5a);
  write_bytes(path, original);

  const auto expect_write_error = [&](const TensorFile& f, const std::string& target, const std::string& fragment) {
    try {
      mpsim::write_safetensors(target, f);
      ADD_FAILURE() << "no error; expected '" << fragment << "'";
    } catch (const SafetensorsError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(target), std::string::npos) << msg;
      EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    }
  };
  TensorFile reserved;
  reserved.tensors.emplace("__metadata__", Tensor({1}));
  expect_write_error(reserved, path, "reserved");
  TensorFile unnamed;
  unnamed.tensors.emplace("", Tensor({1}));
  expect_write_error(unnamed, path, "empty");
  TensorFile hollow;
  hollow.tensors.emplace("t", Tensor());  // shape [] promises one element, holds none
  expect_write_error(hollow, path, "'t'");
  EXPECT_EQ(read_bytes(path), original);

  TensorFile ok;
  ok.tensors.emplace("x", Tensor({1}));
  const std::string nowhere = dir.file("no/such/dir/x.safetensors");
  expect_write_error(ok, nowhere, "temporary file");
  EXPECT_FALSE(fs::exists(nowhere));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// Every stored dtype converts exactly or is refused; the bytes below are the little-endian
// encodings of the values in the comments.
TEST(Safetensors, ConvertsOtherDtypesExactly) {
  const auto one = [](const std::string& dtype, std::size_t count, std::size_t width, const Bytes& data) {
    const std::string header = R"({"t":{"dtype":")" + dtype + R"(","shape":[)" + std::to_string(count) +
                               R"(],"data_offsets":[0,)" + std::to_string(count * width) + "]}}";
    return mpsim::parse_safetensors(file_bytes(header, data)).tensors.at("t").values();
  };
  // F64: 1.5, -2^-126 (float's smallest normal), 2^127 * 1.5
  EXPECT_EQ(one("F64", 3, 8,
                {0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0, 0, 0, 0, 0, 0, 0x10, 0xb8, 0, 0, 0, 0, 0, 0, 0xe8, 0x47}),
            (std::vector<float>{1.5f, -std::ldexp(1.0f, -126), std::ldexp(1.5f, 127)}));
  // F16: 1.0 (0x3c00), -2.0 (0xc000), 65504 (0x7bff), 2^-24 (0x0001, subnormal), +inf (0x7c00)
  EXPECT_EQ(one("F16", 5, 2, {0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00, 0x00, 0x7c}),
            (std::vector<float>{1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24), std::numeric_limits<float>::infinity()}));
  // BF16: 1.0 (0x3f80), -3.0 (0xc040)
  EXPECT_EQ(one("BF16", 2, 2, {0x80, 0x3f, 0x40, 0xc0}), (std::vector<float>{1.0f, -3.0f}));
  // I64: 2^24, -2^63 (exact: one significant bit), 3 * 2^40
  EXPECT_EQ(one("I64", 3, 8,
                {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 3, 0, 0}),
            (std::vector<float>{16777216.0f, -std::ldexp(1.0f, 63), std::ldexp(3.0f, 40)}));
  // I32 -1, I16 -32768, I8 -128, U8 255, BOOL 0 1
  EXPECT_EQ(one("I32", 1, 4, {0xff, 0xff, 0xff, 0xff}), std::vector<float>{-1.0f});
  EXPECT_EQ(one("I16", 1, 2, {0x00, 0x80}), std::vector<float>{-32768.0f});
  EXPECT_EQ(one("I8", 1, 1, {0x80}), std::vector<float>{-128.0f});
  EXPECT_EQ(one("U8", 1, 1, {0xff}), std::vector<float>{255.0f});
  EXPECT_EQ(one("U16", 1, 2, {0xff, 0xff}), std::vector<float>{65535.0f});
  EXPECT_EQ(one("BOOL", 2, 1, {0, 1}), (std::vector<float>{0.0f, 1.0f}));

  // Values that float32 cannot hold are refused, naming the tensor, element and value.
  const auto bad = [](const std::string& dtype, std::size_t width, const Bytes& data, const std::string& fragment) {
    const std::string header = R"({"t":{"dtype":")" + dtype + R"(","shape":[1],"data_offsets":[0,)" +
                               std::to_string(width) + "]}}";
    expect_error(file_bytes(header, data), fragment);
  };
  bad("F64", 8, {0x9a, 0x99, 0x99, 0x99, 0x99, 0x99, 0xb9, 0x3f}, "0.10000000000000001");  // 0.1
  bad("F64", 8, {0, 0, 0, 0, 0, 0, 0xf0, 0x47}, "not exactly representable");              // 2^128
  bad("F64", 8, {1, 0, 0, 0, 0, 0, 0, 0}, "not exactly representable");                    // 2^-1074
  bad("I64", 8, {1, 0, 0, 1, 0, 0, 0, 0}, "16777217");                                     // 2^24 + 1
  bad("I32", 4, {0xff, 0xff, 0xff, 0x7f}, "2147483647");
  bad("U64", 8, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "18446744073709551615");
  bad("BOOL", 1, {2}, "element 0");
}

TEST(Safetensors, ReadErrorsNameTheFileAndTheFault) {
  const auto x_with = [](const std::string& entry) { return R"({"x":)" + entry + "}"; };
  const std::string good_entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  ASSERT_NO_THROW((void)mpsim::parse_safetensors(file_bytes(x_with(good_entry), kTwoFloats)));

  // Truncation at every point of the file.
  const Bytes whole = file_bytes(x_with(good_entry), kTwoFloats);
  expect_error(Bytes(whole.begin(), whole.begin() + 5), "fewer than the 8-byte header length");
  expect_error(Bytes(whole.begin(), whole.begin() + 20), "header length 54 exceeds the 12 bytes");
  expect_error(Bytes(whole.begin(), whole.end() - 1), "truncated: tensor 'x' ends at data byte 8");
  expect_error(Bytes(whole.begin(), whole.begin() + 8 + 54), "truncated");
  // A length that does not fit any file (a text file read as safetensors, say).
  Bytes huge = whole;
  huge[7] = 0x7f;
  expect_error(huge, "exceeds");

  expect_error(file_bytes(x_with(good_entry), Bytes{1, 2, 3, 4, 5, 6, 7, 8, 9}), "1 bytes after the last tensor");
  expect_error(file_bytes("", {}), "malformed JSON");
  expect_error(file_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", kTwoFloats), "malformed JSON");
  expect_error(file_bytes("[1,2]", {}), "must be a JSON object");
  expect_error(file_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x)", kTwoFloats), "malformed JSON");
  expect_error(file_bytes("{\"\xff\":1}", {}), "malformed JSON");  // not UTF-8

  expect_error(file_bytes(x_with(R"({"dtype":"F12","shape":[2],"data_offsets":[0,8]})"), kTwoFloats),
               "unsupported dtype 'F12'");
  expect_error(file_bytes(x_with(R"({"dtype":"F8_E5M2","shape":[8],"data_offsets":[0,8]})"), kTwoFloats),
               "unsupported dtype 'F8_E5M2'");
  expect_error(file_bytes(x_with(R"({"dtype":1,"shape":[2],"data_offsets":[0,8]})"), kTwoFloats),
               "dtype must be a string");
  expect_error(file_bytes(x_with(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), kTwoFloats),
               "needs 12 bytes, data_offsets [0,8] span 8");
  expect_error(file_bytes(x_with(R"({"dtype":"F64","shape":[2],"data_offsets":[0,8]})"), kTwoFloats),
               "needs 16 bytes");
  expect_error(file_bytes(x_with(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), kTwoFloats),
               "shape dimension must be a non-negative integer");
  expect_error(file_bytes(x_with(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"), kTwoFloats),
               "shape dimension must be a non-negative integer");
  expect_error(file_bytes(x_with(R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})"), kTwoFloats),
               "shape must be an array");
  expect_error(
      file_bytes(x_with(R"({"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]})"), kTwoFloats),
      "too large");
  expect_error(file_bytes(x_with(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"), kTwoFloats),
               "data_offsets must be [begin, end]");
  expect_error(file_bytes(x_with(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), kTwoFloats),
               "end before they begin");
  expect_error(file_bytes(x_with(R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})"), kTwoFloats),
               "ends at data byte 12");
  expect_error(file_bytes(x_with(R"({"dtype":"F32","shape":[2]})"), kTwoFloats), "missing field 'data_offsets'");
  expect_error(file_bytes(x_with(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1})"), kTwoFloats),
               "unknown field 'x'");
  expect_error(file_bytes(x_with("[1]"), kTwoFloats), "tensor 'x': expected an object");

  // Offsets that do not tile the data section.
  expect_error(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                          kTwoFloats),
               "overlap");
  expect_error(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", kTwoFloats),
               "gap in the data section: bytes [0, 4) before tensor 'a'");
  expect_error(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                          R"("c":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          kTwoFloats),
               "overlap");

  // Duplicate names (JSON parsers keep the last silently; this one must not).
  expect_error(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          kTwoFloats),
               "duplicate tensor name 'a'");
  expect_error(file_bytes(x_with(R"({"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]})"), kTwoFloats),
               "duplicate key 'dtype'");

  // Metadata must be an object of strings.
  expect_error(file_bytes(R"({"__metadata__":{"epoch":3}})", {}), "__metadata__ 'epoch' must be a string");
  expect_error(file_bytes(R"({"__metadata__":"v1"})", {}), "__metadata__ must be an object");
}

TEST(Safetensors, FileErrorsNameThePath) {
  TempDir dir;
  const std::string missing = dir.file("missing.safetensors");
  try {
    (void)mpsim::read_safetensors(missing);
    ADD_FAILURE() << "no error for a missing file";
  } catch (const SafetensorsError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)mpsim::read_safetensors(dir.path().string()), SafetensorsError);

  const std::string cut = dir.file("cut.safetensors");
  const Bytes whole = file_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", kTwoFloats);
  write_bytes(cut, Bytes(whole.begin(), whole.end() - 3));
  try {
    (void)mpsim::read_safetensors(cut);
    ADD_FAILURE() << "no error for a truncated file";
  } catch (const SafetensorsError& e) {
    EXPECT_NE(std::string(e.what()).find(cut), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  // An error is also a std::runtime_error, for callers that catch those.
  EXPECT_THROW((void)mpsim::read_safetensors(cut), std::runtime_error);
}
