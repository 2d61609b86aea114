// safetensors reading and writing (include/mpsim/safetensors.h). The header is parsed with
// nlohmann-json; every number of the header is validated before it sizes or indexes anything,
// so a corrupt or hostile file ends in a SafetensorsError, never in a wild read.
#include "mpsim/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>

#include "src/io/atomic_file.h"

namespace mpsim {
namespace {

using nlohmann::json;

constexpr const char* kMetadataKey = "__metadata__";

[[noreturn]] void fail(const std::string& what, const std::string& message) {
  throw SafetensorsError("safetensors file '" + what + "': " + message);
}

std::uint64_t load_le(const std::uint8_t* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void store_le(std::uint8_t* p, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

// IEEE binary16 to float: every half value (subnormals, infinities, NaN payloads) is exact.
float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h >> 15) << 31;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
  // Subnormal or zero: man * 2^-24, exact in float (the product needs 10 bits).
  const float mag = std::ldexp(static_cast<float>(man), -24);
  return sign ? -mag : mag;
}

// An integer is exact in float32 when its significant bits (trailing zeros stripped) fit in 24.
bool magnitude_fits_float(std::uint64_t m) { return m == 0 || (m >> std::countr_zero(m)) < (1u << 24); }

enum class Dtype { f64, f32, f16, bf16, i64, i32, i16, i8, u64, u32, u16, u8, boolean };

struct DtypeInfo {
  const char* name;
  Dtype dtype;
  int bytes;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", Dtype::f64, 8}, {"F32", Dtype::f32, 4},  {"F16", Dtype::f16, 2}, {"BF16", Dtype::bf16, 2},
    {"I64", Dtype::i64, 8}, {"I32", Dtype::i32, 4},  {"I16", Dtype::i16, 2}, {"I8", Dtype::i8, 1},
    {"U64", Dtype::u64, 8}, {"U32", Dtype::u32, 4},  {"U16", Dtype::u16, 2}, {"U8", Dtype::u8, 1},
    {"BOOL", Dtype::boolean, 1},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const DtypeInfo& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

std::string supported_dtypes() {
  std::string s;
  for (const DtypeInfo& d : kDtypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

// Converts element i of `p` (raw little-endian) to float. Returns false when the value has no
// exact float32 equivalent.
bool convert_element(const DtypeInfo& d, const std::uint8_t* p, float& out) {
  const std::uint64_t raw = load_le(p, d.bytes);
  switch (d.dtype) {
    case Dtype::f32:
      out = std::bit_cast<float>(static_cast<std::uint32_t>(raw));
      return true;
    case Dtype::f16:
      out = half_to_float(static_cast<std::uint16_t>(raw));
      return true;
    case Dtype::bf16:
      out = std::bit_cast<float>(static_cast<std::uint32_t>(raw) << 16);
      return true;
    case Dtype::f64: {
      const double v = std::bit_cast<double>(raw);
      if (std::isnan(v)) {
        out = std::numeric_limits<float>::quiet_NaN();
        return true;
      }
      // Out-of-range finite values would overflow the conversion; they are not exact anyway.
      if (std::isfinite(v) && std::fabs(v) > static_cast<double>(std::numeric_limits<float>::max())) return false;
      out = static_cast<float>(v);
      return static_cast<double>(out) == v;
    }
    case Dtype::i64:
    case Dtype::i32:
    case Dtype::i16:
    case Dtype::i8: {
      // Sign-extend from the stored width.
      const int shift = 64 - 8 * d.bytes;
      const auto v = static_cast<std::int64_t>(raw << shift) >> shift;
      const std::uint64_t mag = v < 0 ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
      if (!magnitude_fits_float(mag)) return false;
      out = static_cast<float>(v);
      return true;
    }
    case Dtype::u64:
    case Dtype::u32:
    case Dtype::u16:
    case Dtype::u8:
      if (!magnitude_fits_float(raw)) return false;
      out = static_cast<float>(raw);
      return true;
    case Dtype::boolean:
      if (raw > 1) return false;
      out = static_cast<float>(raw);
      return true;
  }
  return false;
}

std::string dtype_value_text(const DtypeInfo& d, const std::uint8_t* p) {
  const std::uint64_t raw = load_le(p, d.bytes);
  switch (d.dtype) {
    case Dtype::f64: {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.17g", std::bit_cast<double>(raw));
      return buf;
    }
    case Dtype::i64:
    case Dtype::i32:
    case Dtype::i16:
    case Dtype::i8: {
      const int shift = 64 - 8 * d.bytes;
      return std::to_string(static_cast<std::int64_t>(raw << shift) >> shift);
    }
    default:
      return std::to_string(raw);
  }
}

// nlohmann-json keeps the last of duplicate keys silently; a duplicate tensor name (or a
// duplicate field inside an entry) must be an error, so the parser callback tracks the keys
// of every open object and remembers the first repeat.
struct DuplicateKeyCheck {
  std::vector<std::set<std::string>> open;
  std::string duplicate;
  int duplicate_depth = -1;

  bool operator()(int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open.empty()) open.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open.empty() && !open.back().insert(parsed.get<std::string>()).second && duplicate_depth < 0) {
          duplicate = parsed.get<std::string>();
          duplicate_depth = depth;
        }
        break;
      default:
        break;
    }
    return true;
  }
};

std::uint64_t header_number(const json& v, const std::string& what, const std::string& context) {
  if (!v.is_number_unsigned()) fail(what, context + " must be a non-negative integer, got " + v.dump());
  return v.get<std::uint64_t>();
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype = nullptr;
  Shape shape;
  std::uint64_t begin = 0, end = 0, count = 0;
};

Entry parse_entry(const std::string& name, const json& info, const std::string& what) {
  const std::string ctx = "tensor '" + name + "'";
  if (!info.is_object()) fail(what, ctx + ": expected an object with dtype, shape and data_offsets, got " + info.dump());
  for (const auto& [key, value] : info.items()) {
    (void)value;
    if (key != "dtype" && key != "shape" && key != "data_offsets") fail(what, ctx + ": unknown field '" + key + "'");
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!info.contains(key)) fail(what, ctx + ": missing field '" + key + "'");
  }
  Entry e;
  e.name = name;
  const json& dtype = info["dtype"];
  if (!dtype.is_string()) fail(what, ctx + ": dtype must be a string, got " + dtype.dump());
  e.dtype = find_dtype(dtype.get<std::string>());
  if (!e.dtype) {
    fail(what, ctx + ": unsupported dtype '" + dtype.get<std::string>() + "' (supported: " + supported_dtypes() + ")");
  }
  const json& shape = info["shape"];
  if (!shape.is_array()) fail(what, ctx + ": shape must be an array, got " + shape.dump());
  e.count = 1;
  bool overflow = false;
  for (const json& d : shape) {
    const std::uint64_t n = header_number(d, what, ctx + ": shape dimension");
    if (n != 0 && e.count > std::numeric_limits<std::uint64_t>::max() / n) overflow = true;
    e.count *= n;
    e.shape.push_back(static_cast<std::size_t>(n));
  }
  if (overflow || e.count > std::numeric_limits<std::uint64_t>::max() / static_cast<std::uint64_t>(e.dtype->bytes)) {
    fail(what, ctx + ": shape " + shape.dump() + " is too large");
  }
  const json& offsets = info["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    fail(what, ctx + ": data_offsets must be [begin, end], got " + offsets.dump());
  }
  e.begin = header_number(offsets[0], what, ctx + ": data_offsets begin");
  e.end = header_number(offsets[1], what, ctx + ": data_offsets end");
  if (e.end < e.begin) fail(what, ctx + ": data_offsets " + offsets.dump() + " end before they begin");
  const std::uint64_t want = e.count * static_cast<std::uint64_t>(e.dtype->bytes);
  if (e.end - e.begin != want) {
    fail(what, ctx + ": shape " + shape.dump() + " of " + e.dtype->name + " needs " + std::to_string(want) +
                   " bytes, data_offsets " + offsets.dump() + " span " + std::to_string(e.end - e.begin));
  }
  return e;
}

std::string errno_text() { return std::strerror(errno); }

std::vector<std::uint8_t> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const std::string why = S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file";
    ::close(fd);
    fail(path, why);
  }
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = errno_text();
      ::close(fd);
      fail(path, "read error: " + why);
    }
    if (n == 0) break;  // the file shrank while being read: parsing reports what is missing
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  bytes.resize(got);
  return bytes;
}

}  // namespace

TensorFile parse_safetensors(std::span<const std::uint8_t> bytes, const std::string& what) {
  if (bytes.size() < 8) {
    fail(what, "truncated: " + std::to_string(bytes.size()) + " bytes, fewer than the 8-byte header length");
  }
  const std::uint64_t header_len = load_le(bytes.data(), 8);
  const std::uint64_t rest = bytes.size() - 8;
  if (header_len > rest) {
    fail(what, "header length " + std::to_string(header_len) + " exceeds the " + std::to_string(rest) +
                   " bytes after it (truncated or not a safetensors file)");
  }
  const auto* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  DuplicateKeyCheck dup;
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_len, std::ref(dup));
  } catch (const json::exception& e) {
    fail(what, std::string("malformed JSON header: ") + e.what());
  }
  if (dup.duplicate_depth == 1) fail(what, "duplicate tensor name '" + dup.duplicate + "' in the header");
  if (dup.duplicate_depth > 1) fail(what, "duplicate key '" + dup.duplicate + "' in the header");
  if (!header.is_object()) fail(what, "the header must be a JSON object, got " + std::string(header.type_name()));

  TensorFile out;
  std::vector<Entry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name == kMetadataKey) {
      if (!info.is_object()) fail(what, "__metadata__ must be an object of strings, got " + info.dump());
      for (const auto& [key, value] : info.items()) {
        if (!value.is_string()) fail(what, "__metadata__ '" + key + "' must be a string, got " + value.dump());
        out.metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    entries.push_back(parse_entry(name, info, what));
  }

  // The tensors must tile the data section: sorted by offset, each begins where the previous
  // ended, the first at 0 and the last at the section's end.
  const std::uint64_t data_len = rest - header_len;
  std::vector<const Entry*> order;
  for (const Entry& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  std::uint64_t next = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    if (e->end > data_len) {
      fail(what, "truncated: tensor '" + e->name + "' ends at data byte " + std::to_string(e->end) +
                     ", the data section has " + std::to_string(data_len) + " bytes");
    }
    if (e->begin < next) {
      fail(what, "tensors '" + prev->name + "' and '" + e->name + "' overlap (data_offsets begin " +
                     std::to_string(e->begin) + " < " + std::to_string(next) + ")");
    }
    if (e->begin > next) {
      fail(what, "gap in the data section: bytes [" + std::to_string(next) + ", " + std::to_string(e->begin) +
                     ") before tensor '" + e->name + "' belong to no tensor");
    }
    next = e->end;
    prev = e;
  }
  if (next != data_len) {
    fail(what, std::to_string(data_len - next) + " bytes after the last tensor (data section of " +
                   std::to_string(data_len) + " bytes, tensors cover " + std::to_string(next) + ")");
  }

  const std::uint8_t* data = bytes.data() + 8 + header_len;
  for (const Entry& e : entries) {
    std::vector<float> values(static_cast<std::size_t>(e.count));
    const std::uint8_t* p = data + e.begin;
    for (std::size_t i = 0; i < values.size(); ++i, p += e.dtype->bytes) {
      if (!convert_element(*e.dtype, p, values[i])) {
        fail(what, "tensor '" + e.name + "' element " + std::to_string(i) + " (" + e.dtype->name + " " +
                       dtype_value_text(*e.dtype, p) + ") is not exactly representable in float32");
      }
    }
    out.tensors.emplace(e.name, Tensor(e.shape, std::move(values)));
  }
  return out;
}

std::vector<std::uint8_t> serialize_safetensors(const TensorFile& file) {
  json header = json::object();
  std::uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    if (name.empty()) throw SafetensorsError("safetensors: a tensor name must not be empty");
    if (name == kMetadataKey) throw SafetensorsError("safetensors: '__metadata__' is reserved, not a tensor name");
    if (t.size() != shape_size(t.shape())) {
      // Only a default-constructed Tensor (shape [], no elements) can get here.
      throw SafetensorsError("safetensors: tensor '" + name + "' of shape " + to_string(t.shape()) + " has " +
                             std::to_string(t.size()) + " elements");
    }
    const std::uint64_t bytes = static_cast<std::uint64_t>(t.size()) * 4;
    header[name] = {{"dtype", "F32"}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!file.metadata.empty()) header[kMetadataKey] = file.metadata;
  std::string text = header.dump();
  // Spaces pad the header to a multiple of 8 bytes (as the reference writer does) so that the
  // data section is 8-byte aligned in the file and a reader can map it in place.
  text.append((8 - text.size() % 8) % 8, ' ');

  std::vector<std::uint8_t> out(8 + text.size() + static_cast<std::size_t>(offset));
  store_le(out.data(), text.size(), 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::uint8_t* p = out.data() + 8 + text.size();
  for (const auto& [name, t] : file.tensors) {
    for (const float v : t.values()) {
      store_le(p, std::bit_cast<std::uint32_t>(v), 4);
      p += 4;
    }
  }
  return out;
}

TensorFile read_safetensors(const std::string& path) {
  const std::vector<std::uint8_t> bytes = read_file(path);
  return parse_safetensors(bytes, path);
}

void write_safetensors(const std::string& path, const TensorFile& file) {
  std::vector<std::uint8_t> bytes;
  try {
    bytes = serialize_safetensors(file);
  } catch (const SafetensorsError& e) {
    fail(path, std::string("cannot write: ") + e.what());
  }
  try {
    detail::write_file_atomically(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  } catch (const detail::AtomicWriteError& e) {
    fail(path, e.what());
  }
}

}  // namespace mpsim
