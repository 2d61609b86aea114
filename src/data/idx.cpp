// IDX reader and writer. The whole file is read into memory (and inflated there when it is
// gzip), then parsed: MNIST-sized files are tens of megabytes, and having every byte at hand
// lets each error say exactly how many bytes were expected and how many were there.
#include "mpsim/idx.h"

// zlib's inflate takes its input through a const pointer only with ZLIB_CONST.
#define ZLIB_CONST
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>

namespace mpsim {
namespace {

constexpr std::uint8_t kTypeUbyte = 0x08;
constexpr std::size_t kMaxDims = 255;  // the dimension count is one byte

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw DataError("IDX file '" + path + "': " + what);
}

std::string errno_text() { return std::strerror(errno); }

std::string hex_byte(std::uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", static_cast<unsigned>(b));
  return buf;
}

const char* type_name(std::uint8_t code) {
  switch (code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "not an IDX type";
  }
}

// Product of the dimensions, or nothing if it does not fit a size_t (a corrupt header must
// not wrap around into a small, plausible size).
std::optional<std::size_t> checked_product(const std::vector<std::size_t>& dims) {
  std::size_t n = 1;
  for (const std::size_t d : dims) {
    if (d != 0 && n > std::numeric_limits<std::size_t>::max() / d) return std::nullopt;
    n *= d;
  }
  return n;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

std::vector<std::uint8_t> read_file(const std::string& path) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) fail(path, "cannot open: " + errno_text());
  std::vector<std::uint8_t> bytes;
  constexpr std::size_t kChunk = std::size_t{1} << 20;
  for (;;) {
    const std::size_t old = bytes.size();
    bytes.resize(old + kChunk);
    const std::size_t got = std::fread(bytes.data() + old, 1, kChunk, f.get());
    bytes.resize(old + got);
    if (got < kChunk) break;
  }
  // fopen succeeds on a directory; the read is what fails (EISDIR).
  if (std::ferror(f.get())) fail(path, "read error: " + errno_text());
  return bytes;
}

bool is_gzip(const std::vector<std::uint8_t>& bytes) {
  return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

struct InflateGuard {
  z_stream* zs;
  ~InflateGuard() { inflateEnd(zs); }
};

// Inflates one or more concatenated gzip members (what `cat a.gz b.gz` makes and gzip -d
// accepts). Any byte after the last member that does not start another one is an error:
// silently dropping it could hide a damaged download.
std::vector<std::uint8_t> gunzip(const std::vector<std::uint8_t>& in, const std::string& path) {
  z_stream zs{};
  // 15 window bits + 16: expect a gzip header and trailer and check its CRC-32 and length.
  if (inflateInit2(&zs, 15 + 16) != Z_OK) fail(path, "cannot initialise zlib");
  InflateGuard guard{&zs};

  // avail_in/avail_out are 32-bit, so large buffers are fed in pieces.
  constexpr std::size_t kMaxPiece = std::size_t{1} << 30;
  const std::uint8_t* next = in.data();
  std::size_t left = in.size();
  std::vector<std::uint8_t> out(std::max<std::size_t>(in.size() * 4, 1 << 16));
  std::size_t produced = 0;

  for (;;) {
    if (zs.avail_in == 0 && left > 0) {
      const std::size_t piece = std::min(left, kMaxPiece);
      zs.next_in = next;
      zs.avail_in = static_cast<uInt>(piece);
      next += piece;
      left -= piece;
    }
    if (out.size() - produced < (std::size_t{1} << 16)) out.resize(out.size() * 2);
    const std::size_t room = std::min(out.size() - produced, kMaxPiece);
    zs.next_out = out.data() + produced;
    zs.avail_out = static_cast<uInt>(room);

    const int ret = inflate(&zs, Z_NO_FLUSH);
    produced += room - zs.avail_out;

    if (ret == Z_STREAM_END) {
      const std::size_t remaining = zs.avail_in + left;
      if (remaining == 0) break;
      // The rest starts right after what inflate consumed.
      const std::uint8_t* rest = zs.avail_in > 0 ? zs.next_in : next;
      if (remaining >= 2 && rest[0] == 0x1f && rest[1] == 0x8b) {
        inflateReset(&zs);  // keeps next_in/avail_in: the next member continues from there
        continue;
      }
      fail(path, std::to_string(remaining) + " bytes of trailing garbage after the gzip stream");
    }
    if (ret == Z_BUF_ERROR && zs.avail_in == 0 && left == 0) {
      // No progress possible and no input left: the stream stopped before its end.
      fail(path, "corrupt gzip stream: unexpected end of compressed data (truncated file?)");
    }
    if (ret != Z_OK && ret != Z_BUF_ERROR) {
      fail(path, std::string("corrupt gzip stream: ") + (zs.msg ? zs.msg : "zlib error " +
                                                                    std::to_string(ret)));
    }
  }
  out.resize(produced);
  return out;
}

std::uint32_t load_be32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) << 24 | static_cast<std::uint32_t>(p[1]) << 16 |
         static_cast<std::uint32_t>(p[2]) << 8 | static_cast<std::uint32_t>(p[3]);
}

void store_be32(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

IdxArray parse(std::vector<std::uint8_t> bytes, const std::string& path, bool was_gzip) {
  // Sizes reported after inflation would puzzle someone looking at the .gz file's size.
  const std::string where = was_gzip ? " (after gzip decompression)" : "";
  if (bytes.size() < 4) {
    fail(path, "truncated header: expected at least 4 bytes (the magic number), got " +
                   std::to_string(bytes.size()) + where);
  }
  if (bytes[0] != 0 || bytes[1] != 0) {
    fail(path, "bad magic number " + hex_byte(bytes[0]) + " " + hex_byte(bytes[1]) + " " +
                   hex_byte(bytes[2]) + " " + hex_byte(bytes[3]) +
                   ": an IDX file starts with two zero bytes");
  }
  const std::uint8_t type = bytes[2];
  if (type != kTypeUbyte) {
    fail(path, "unsupported element type " + hex_byte(type) + " (" + type_name(type) +
                   "); only 0x08 (unsigned byte) is supported");
  }
  const std::size_t ndims = bytes[3];
  const std::size_t header = 4 + 4 * ndims;
  if (bytes.size() < header) {
    fail(path, "truncated header: expected " + std::to_string(header) + " bytes for " +
                   std::to_string(ndims) + " dimensions, got " + std::to_string(bytes.size()) +
                   where);
  }

  IdxArray a;
  a.dims.resize(ndims);
  for (std::size_t i = 0; i < ndims; ++i) a.dims[i] = load_be32(&bytes[4 + 4 * i]);
  const std::optional<std::size_t> count = checked_product(a.dims);
  if (!count) fail(path, "the dimensions multiply to more elements than memory can address");

  const std::size_t have = bytes.size() - header;
  if (have < *count) {
    fail(path, "truncated data: expected " + std::to_string(*count) + " bytes of data, got " +
                   std::to_string(have) + where);
  }
  if (have > *count) {
    fail(path, std::to_string(have - *count) + " bytes of trailing garbage after the " +
                   std::to_string(*count) + " bytes of data" + where);
  }
  // Shift the elements to the front instead of copying them: the buffer can be large.
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  a.data = std::move(bytes);
  return a;
}

[[noreturn]] void fail_write(const std::string& path, const std::string& what) {
  throw DataError("cannot write IDX file '" + path + "': " + what);
}

}  // namespace

std::size_t IdxArray::element_count() const {
  std::size_t n = 1;
  for (const std::size_t d : dims) n *= d;
  return n;
}

IdxArray read_idx(const std::string& path) {
  std::vector<std::uint8_t> bytes = read_file(path);
  if (is_gzip(bytes)) return parse(gunzip(bytes, path), path, true);
  return parse(std::move(bytes), path, false);
}

void write_idx(const std::string& path, const IdxArray& array, bool gzip) {
  if (array.dims.size() > kMaxDims) {
    fail_write(path, std::to_string(array.dims.size()) + " dimensions (the format allows 255)");
  }
  std::vector<std::uint8_t> header(4 + 4 * array.dims.size());
  header[2] = kTypeUbyte;
  header[3] = static_cast<std::uint8_t>(array.dims.size());
  for (std::size_t i = 0; i < array.dims.size(); ++i) {
    if (array.dims[i] > std::numeric_limits<std::uint32_t>::max()) {
      fail_write(path, "dimension " + std::to_string(i) + " is " + std::to_string(array.dims[i]) +
                           " (the format stores 32-bit sizes)");
    }
    store_be32(&header[4 + 4 * i], static_cast<std::uint32_t>(array.dims[i]));
  }
  const std::optional<std::size_t> count = checked_product(array.dims);
  if (!count || *count != array.data.size()) {
    fail_write(path, "the dimensions give " + (count ? std::to_string(*count) : "too many") +
                         " elements but the data has " + std::to_string(array.data.size()));
  }

  if (gzip) {
    gzFile gz = gzopen(path.c_str(), "wb");
    if (!gz) fail_write(path, errno_text());
    // gzwrite takes an unsigned length; write in pieces so any size works.
    auto put = [&](const std::uint8_t* p, std::size_t n) {
      constexpr std::size_t kPiece = std::size_t{1} << 20;
      while (n > 0) {
        const std::size_t piece = std::min(n, kPiece);
        if (gzwrite(gz, p, static_cast<unsigned>(piece)) != static_cast<int>(piece)) return false;
        p += piece;
        n -= piece;
      }
      return true;
    };
    const bool ok = put(header.data(), header.size()) && put(array.data.data(), array.data.size());
    int errnum = Z_OK;
    const std::string gz_msg = ok ? "" : gzerror(gz, &errnum);
    // gzclose flushes the last block and the trailer, so its result counts as much as the
    // writes'.
    const int closed = gzclose(gz);
    if (!ok) fail_write(path, "gzip write failed: " + gz_msg);
    if (closed != Z_OK) fail_write(path, "gzip close failed (zlib error " +
                                             std::to_string(closed) + ")");
    return;
  }

  File f(std::fopen(path.c_str(), "wb"));
  if (!f) fail_write(path, errno_text());
  // An empty vector's data() may be null, which fwrite must not see even with a zero count.
  if (std::fwrite(header.data(), 1, header.size(), f.get()) != header.size() ||
      (!array.data.empty() &&
       std::fwrite(array.data.data(), 1, array.data.size(), f.get()) != array.data.size())) {
    fail_write(path, errno_text());
  }
  // Buffered bytes reach the disk only at fclose, so its failure is a write failure too.
  if (std::fclose(f.release()) != 0) fail_write(path, errno_text());
}

}  // namespace mpsim
