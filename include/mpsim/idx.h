// IDX files, the container of MNIST and Fashion-MNIST (LeCun's format): a 4-byte magic
// (0, 0, element type, number of dimensions), the dimensions as big-endian uint32, then the
// elements in row-major order. Files may be gzip-compressed; that is detected from the gzip
// magic bytes, never from the file name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace mpsim {

// A data file that cannot be read as what it claims to be (missing, truncated, corrupt,
// unsupported). The message names the file and what is wrong with it; the CLI turns it into
// exit code 1.
struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An IDX array of unsigned bytes (type code 0x08, the only type MNIST-style data uses).
struct IdxArray {
  std::vector<std::size_t> dims;    // outermost first, e.g. {10000, 28, 28}
  std::vector<std::uint8_t> data;   // row-major, size() == product of dims

  // Product of the dimensions (1 for a 0-dimensional array, as the format allows).
  std::size_t element_count() const;

  bool operator==(const IdxArray&) const = default;
};

// Reads an IDX file, plain or gzip-compressed (one or more concatenated gzip members).
// Throws DataError naming the file when it is missing or unreadable, has a bad magic, an
// element type other than 0x08, a truncated header or data section, bytes after the data, or
// a corrupt gzip stream.
IdxArray read_idx(const std::string& path);

// Writes `array` as an IDX ubyte file, gzip-compressed if `gzip`. For tests and tools that
// produce data sets. Throws DataError if the dimensions do not match the data (or exceed the
// format's limits: at most 255 dimensions, each below 2^32) or the file cannot be written.
void write_idx(const std::string& path, const IdxArray& array, bool gzip = false);

}  // namespace mpsim
