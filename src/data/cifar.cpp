// CIFAR-10 and CIFAR-100, binary versions: fixed-size records of label bytes then the R, G and
// B planes of a 32x32 image. There is no header, so the file size is the only integrity check
// the format offers besides the label range; both are checked.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "mpsim/data.h"
#include "src/data/pixels.h"

namespace mpsim {

namespace {

constexpr std::size_t kSide = 32;
constexpr std::size_t kPixels = 3 * kSide * kSide;  // 3072

struct Layout {
  const char* kind;               // "CIFAR-10" / "CIFAR-100", for messages
  std::size_t label_bytes;        // 1 (CIFAR-10) or 2 (CIFAR-100: coarse, fine)
  std::size_t class_counts[2];    // the range of each label byte
  std::size_t label_offset;       // which label byte becomes the label
  std::size_t record() const { return label_bytes + kPixels; }
  std::size_t num_classes() const { return class_counts[label_offset]; }
};

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

[[noreturn]] void fail(const Layout& layout, const std::string& path, const std::string& what) {
  throw DataError(std::string(layout.kind) + " file '" + path + "': " + what);
}

std::vector<std::uint8_t> read_all(const Layout& layout, const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) fail(layout, path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<std::uint8_t> bytes;
  constexpr std::size_t kChunk = std::size_t{1} << 22;
  for (;;) {
    const std::size_t old = bytes.size();
    bytes.resize(old + kChunk);
    const std::size_t got = std::fread(bytes.data() + old, 1, kChunk, f.get());
    bytes.resize(old + got);
    if (got < kChunk) break;
  }
  // fopen succeeds on a directory; the read is what fails.
  if (std::ferror(f.get())) fail(layout, path, std::string("read error: ") + std::strerror(errno));
  return bytes;
}

// Appends the records of `path` to `out` (pixels as [n, 3, 32, 32] bytes, labels).
void read_records(const Layout& layout, const std::string& path, std::vector<std::uint8_t>& pixels,
                  std::vector<std::uint32_t>& labels) {
  const std::vector<std::uint8_t> bytes = read_all(layout, path);
  const std::size_t rec = layout.record();
  if (bytes.empty()) fail(layout, path, "empty file");
  if (bytes.size() % rec != 0) {
    fail(layout, path,
         "size " + std::to_string(bytes.size()) + " bytes is not a multiple of the " + std::to_string(rec) +
             "-byte record (" + std::to_string(bytes.size() / rec) + " whole records and " +
             std::to_string(bytes.size() % rec) + " bytes more): truncated or not a " + layout.kind + " file");
  }
  const std::size_t n = bytes.size() / rec;
  pixels.reserve(pixels.size() + n * kPixels);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* r = bytes.data() + i * rec;
    // Every label byte is checked, the unused one too: out of range means a corrupt record.
    for (std::size_t k = 0; k < layout.label_bytes; ++k) {
      const std::size_t limit = layout.class_counts[k];
      if (r[k] >= limit) {
        fail(layout, path,
             "label " + std::to_string(r[k]) + " in record " + std::to_string(i) + " is out of range for " +
                 std::to_string(limit) + " classes");
      }
    }
    labels.push_back(r[layout.label_offset]);
    pixels.insert(pixels.end(), r + layout.label_bytes, r + rec);
  }
}

Dataset load_files(const Layout& layout, const std::vector<std::string>& paths, std::string name) {
  std::vector<std::uint8_t> pixels;
  Dataset out;
  out.name = std::move(name);
  out.num_classes = layout.num_classes();
  for (const std::string& p : paths) read_records(layout, p, pixels, out.labels);
  out.images = Tensor({out.labels.size(), 3, kSide, kSide});
  detail::bytes_to_unit(pixels.data(), out.images.data(), pixels.size());
  return out;
}

std::string in_dir(const std::string& dir, const std::string& file) {
  return (std::filesystem::path(dir) / file).string();
}

}  // namespace

Dataset load_cifar10(const std::string& dir, Split split) {
  const Layout layout{"CIFAR-10", 1, {10, 0}, 0};
  std::vector<std::string> paths;
  if (split == Split::train) {
    for (int b = 1; b <= 5; ++b) paths.push_back(in_dir(dir, "data_batch_" + std::to_string(b) + ".bin"));
  } else {
    paths.push_back(in_dir(dir, "test_batch.bin"));
  }
  return load_files(layout, paths, std::string("cifar10/") + to_string(split));
}

Dataset load_cifar100(const std::string& dir, Split split, CifarLabels labels) {
  const bool fine = labels == CifarLabels::fine;
  const Layout layout{"CIFAR-100", 2, {20, 100}, fine ? std::size_t{1} : std::size_t{0}};
  const std::string file = split == Split::train ? "train.bin" : "test.bin";
  return load_files(layout, {in_dir(dir, file)},
                    std::string(fine ? "cifar100/" : "cifar100-coarse/") + to_string(split));
}

}  // namespace mpsim
