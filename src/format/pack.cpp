// Packed codes: bit streams of codes, and values <-> codes for whole arrays. encode() and
// decode() (codec.cpp) stay the definition; the array forms build a table from them once per
// format (the tables of recent formats are kept) and then only look values up, so they agree
// with the scalar functions by construction.
#include "mpsim/pack.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "text.h"

namespace mpsim {

namespace {

constexpr int kMaxBits = 16;

void check_bits(const char* who, int bits) {
  if (bits < 1 || bits > kMaxBits) {
    throw FormatError(std::string(who) + ": codes must have 1..16 bits, got " + std::to_string(bits));
  }
}

void check_width(const char* who, const Format& f) {
  if (f.bits() > kMaxBits) {
    throw FormatError(std::string(who) + ": format '" + f.to_string() + "' has " + std::to_string(f.bits()) +
                      "-bit codes; packed codes hold at most 16 bits");
  }
}

// ceil(n * bits / 8), refusing counts whose bit length does not fit a size_t.
std::size_t packed_bytes(const char* who, std::size_t n, int bits) {
  if (n > std::numeric_limits<std::size_t>::max() / kMaxBits) {
    throw FormatError(std::string(who) + ": " + std::to_string(n) + " codes are too many to address in bits");
  }
  const std::size_t total = n * static_cast<std::size_t>(bits);
  return total / 8 + (total % 8 != 0 ? 1 : 0);
}

// Little-endian words whatever the host, so a packed stream reads the same everywhere.
void store_le32(std::uint8_t* p, std::uint32_t v) {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(p, &v, sizeof v);
  } else {
    for (int k = 0; k < 4; ++k) p[k] = static_cast<std::uint8_t>(v >> (8 * k));
  }
}

std::uint32_t load_le32(const std::uint8_t* p) {
  if constexpr (std::endian::native == std::endian::little) {
    std::uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
  } else {
    return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24;
  }
}

// Throws for the first code with a bit at or above `bits`. The OR pass runs first because it
// vectorizes; the search for the culprit only runs when there is one.
void check_codes(const std::uint16_t* codes, std::size_t n, int bits) {
  if (bits >= kMaxBits) return;
  unsigned over = 0;
  for (std::size_t i = 0; i < n; ++i) over |= static_cast<unsigned>(codes[i]) >> bits;
  if (over == 0) return;
  for (std::size_t i = 0; i < n; ++i) {
    if (codes[i] >> bits) {
      throw FormatError("pack_bits: code " + std::to_string(codes[i]) + " at index " + std::to_string(i) +
                        " does not fit in " + std::to_string(bits) + " bits");
    }
  }
}

// Widths that divide 8: whole bytes of 8/B codes, then one partial byte.
template <int B>
void pack_small(const std::uint16_t* codes, std::size_t n, std::uint8_t* out) {
  constexpr std::size_t per = 8 / B;
  const std::size_t full = n / per;
  for (std::size_t j = 0; j < full; ++j) {
    unsigned byte = 0;
    for (std::size_t k = 0; k < per; ++k) byte |= static_cast<unsigned>(codes[j * per + k]) << (k * B);
    out[j] = static_cast<std::uint8_t>(byte);
  }
  if (full * per < n) {
    unsigned byte = 0;
    for (std::size_t k = 0; full * per + k < n; ++k) byte |= static_cast<unsigned>(codes[full * per + k]) << (k * B);
    out[full] = static_cast<std::uint8_t>(byte);
  }
}

template <int B>
void unpack_small(const std::uint8_t* bytes, std::size_t n, std::uint16_t* codes) {
  constexpr std::size_t per = 8 / B;
  constexpr unsigned mask = (1u << B) - 1;
  const std::size_t full = n / per;
  for (std::size_t j = 0; j < full; ++j) {
    const unsigned byte = bytes[j];
    for (std::size_t k = 0; k < per; ++k) codes[j * per + k] = static_cast<std::uint16_t>((byte >> (k * B)) & mask);
  }
  for (std::size_t k = 0; full * per + k < n; ++k) {
    codes[full * per + k] = static_cast<std::uint16_t>((static_cast<unsigned>(bytes[full]) >> (k * B)) & mask);
  }
}

// Any width: codes go into a 64-bit accumulator that is flushed 32 bits at a time (it holds
// fewer than 32 + 16 bits, so nothing is lost), the last partial word byte by byte.
void pack_general(const std::uint16_t* codes, std::size_t n, int bits, std::uint8_t* out) {
  std::uint64_t acc = 0;
  int nacc = 0;
  for (std::size_t i = 0; i < n; ++i) {
    acc |= std::uint64_t{codes[i]} << nacc;
    nacc += bits;
    if (nacc >= 32) {
      store_le32(out, static_cast<std::uint32_t>(acc));
      out += 4;
      acc >>= 32;
      nacc -= 32;
    }
  }
  for (; nacc > 0; nacc -= 8) {
    *out++ = static_cast<std::uint8_t>(acc);
    acc >>= 8;
  }
}

// The inverse, refilling 32 bits at a time while four bytes of the stream remain (`nbytes` is
// the exact stream length, so no read goes past it).
void unpack_general(const std::uint8_t* bytes, std::size_t nbytes, std::size_t n, int bits, std::uint16_t* codes) {
  const std::uint64_t mask = (std::uint64_t{1} << bits) - 1;
  std::uint64_t acc = 0;
  int nacc = 0;
  std::size_t pos = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (nacc < bits) {
      if (pos + 4 <= nbytes) {
        acc |= std::uint64_t{load_le32(bytes + pos)} << nacc;
        nacc += 32;
        pos += 4;
      } else {
        for (; nacc < bits; nacc += 8) acc |= std::uint64_t{bytes[pos++]} << nacc;
      }
    }
    codes[i] = static_cast<std::uint16_t>(acc & mask);
    acc >>= bits;
    nacc -= bits;
  }
}

// ---- values -> codes ----------------------------------------------------------------------

// Every non-NaN value that encode() accepts, keyed by the bits of the double, with the code
// encode() gives it: open addressing with linear probing at load factor <= 1/2, so a lookup is
// about one probe. NaN is kept aside (its bit patterns are many, its code one or none). Most
// lookups never probe: a direct index over the values' bits answers them (build_direct).
class EncodeTable {
 public:
  explicit EncodeTable(const Format& f) : f_(f) {
    const std::uint64_t count = code_count(f);
    std::size_t cap = 16;
    int log2_cap = 4;
    while (cap < 2 * (count + 4)) {
      cap *= 2;
      ++log2_cap;
    }
    keys_.assign(cap, kEmpty);
    codes_.assign(cap, 0);
    mask_ = cap - 1;
    shift_ = 64 - log2_cap;
    const bool integer = f.kind() == FormatKind::integer;
    for (std::uint64_t c = 0; c < count; ++c) {
      const double v = decode(f, c).value;
      if (std::isnan(v) || std::isinf(v) || v == 0) continue;  // asked of encode() below
      const std::uint64_t b = std::bit_cast<std::uint64_t>(v);
      const std::size_t h = find(b);
      // Float magnitudes grow with the code and encode() searches for the first code of a
      // magnitude, so of the codes that decode to the same value (flushed subnormals) the
      // smallest is encode()'s. Integer grids are the carrier's rounding of (z - zp) * scale,
      // whose ties and overflows only encode() itself settles, so it is asked for each value.
      if (keys_[h] != kEmpty) continue;
      std::uint64_t code = c;
      if (integer) {
        try {
          code = encode(f, v);
        } catch (const FormatError&) {
          continue;  // a miss: the lookup asks encode() again, which throws for the element
        }
      }
      keys_[h] = b;
      codes_[h] = static_cast<std::uint16_t>(code);
    }
    // Zeros and infinities: which sign has a code (fnuz has no -0, fixed point reads -0 as 0,
    // unsigned formats have no negatives) is encode()'s call, as it is for NaN.
    constexpr double kInf = std::numeric_limits<double>::infinity();
    for (const double v : {0.0, -0.0, kInf, -kInf}) {
      try {
        const std::uint64_t code = encode(f, v);
        const std::uint64_t b = std::bit_cast<std::uint64_t>(v);
        const std::size_t h = find(b);
        keys_[h] = b;
        codes_[h] = static_cast<std::uint16_t>(code);
      } catch (const FormatError&) {
      }
    }
    try {
      nan_code_ = static_cast<int>(encode(f, std::numeric_limits<double>::quiet_NaN()));
    } catch (const FormatError&) {
    }
    build_direct(count);
  }

  // The code of v, element i of a call by `who` (both name a value that has none).
  std::uint16_t code(double v, std::size_t i, const char* who) const {
    const std::uint64_t b = std::bit_cast<std::uint64_t>(v);
    if (!direct_.empty()) {
      const std::uint64_t m = b & ~kSignBit;
      const std::uint64_t j = (m >> direct_shift_) - direct_lo_;  // wraps for zero: out of range
      if (j < direct_span_ && (m & direct_low_mask_) == 0) [[likely]] {
        const std::int32_t c = direct_[(b >> 63) * direct_span_ + j];
        if (c >= 0) [[likely]] return static_cast<std::uint16_t>(c);
      } else if (m == 0 && zero_codes_[b >> 63] >= 0) {
        return static_cast<std::uint16_t>(zero_codes_[b >> 63]);  // zeros are common (ReLU, underflow)
      }
    }
    return probe(v, b, i, who);
  }

 private:
  // A NaN bit pattern: NaN never reaches the probe, so no key equals it.
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};
  static constexpr std::uint64_t kSignBit = std::uint64_t{1} << 63;
  static constexpr std::uint64_t kInfBits = 0x7ff0000000000000;

  // The probe's length varies with the key, and on random data its branches are mispredicted
  // often enough to cost several times a lookup. Narrow formats have few significant bits and a
  // short exponent range, so the magnitude bits of their nonzero finite values, shifted right
  // past the zeros they all end in, fall in a short interval [lo, lo + span): a plain array over
  // it (one half per sign) holds the code of each value, -1 elsewhere. Zeros, infinities, NaN
  // and values off the grid fall outside it (or on -1) and go to the probe. Grids with too many
  // significant bits for a small array (integers with scales like 0.1) use the probe alone.
  void build_direct(std::uint64_t count) {
    int shift = 63;
    std::uint64_t lo = ~std::uint64_t{0}, hi = 0;
    for (const std::uint64_t k : keys_) {
      const std::uint64_t m = k & ~kSignBit;
      if (k == kEmpty || m == 0 || m >= kInfBits) continue;
      shift = std::min(shift, std::countr_zero(m));
    }
    for (const std::uint64_t k : keys_) {
      const std::uint64_t m = k & ~kSignBit;
      if (k == kEmpty || m == 0 || m >= kInfBits) continue;
      lo = std::min(lo, m >> shift);
      hi = std::max(hi, m >> shift);
    }
    if (hi < lo) return;  // no nonzero finite value at all
    const std::uint64_t span = hi - lo + 1;
    if (span > std::max<std::uint64_t>(4096, 8 * count)) return;
    direct_shift_ = shift;
    direct_lo_ = lo;
    direct_span_ = span;
    direct_low_mask_ = (std::uint64_t{1} << shift) - 1;
    direct_.assign(2 * span, -1);
    for (const std::uint64_t z : {std::uint64_t{0}, kSignBit}) {
      const std::size_t h = find(z);
      zero_codes_[z >> 63] = keys_[h] == z ? codes_[h] : -1;
    }
    for (std::size_t h = 0; h < keys_.size(); ++h) {
      const std::uint64_t k = keys_[h];
      const std::uint64_t m = k & ~kSignBit;
      if (k == kEmpty || m == 0 || m >= kInfBits) continue;
      direct_[(k >> 63) * span + ((m >> shift) - lo)] = codes_[h];
    }
  }

  [[gnu::noinline]] std::uint16_t probe(double v, std::uint64_t b, std::size_t i, const char* who) const {
    if ((b & ~kSignBit) > kInfBits) [[unlikely]] {
      if (nan_code_ >= 0) return static_cast<std::uint16_t>(nan_code_);
      return miss(v, i, who);
    }
    for (std::size_t h = slot(b);; h = (h + 1) & mask_) {
      const std::uint64_t k = keys_[h];
      if (k == b) return codes_[h];
      if (k == kEmpty) [[unlikely]] return miss(v, i, who);
    }
  }

  // Fibonacci hashing: the top bits of the product mix all bits of the key, which matters
  // because the low mantissa bits of a narrow format's values are all zero.
  std::size_t slot(std::uint64_t b) const { return static_cast<std::size_t>((b * 0x9e3779b97f4a7c15) >> shift_); }

  std::size_t find(std::uint64_t b) const {
    std::size_t h = slot(b);
    while (keys_[h] != kEmpty && keys_[h] != b) h = (h + 1) & mask_;
    return h;
  }

  // Not in the table: encode() says why (or, should it accept the value after all, its code is
  // the answer), with the element named.
  [[gnu::noinline, gnu::cold]] std::uint16_t miss(double v, std::size_t i, const char* who) const {
    try {
      return static_cast<std::uint16_t>(encode(f_, v));
    } catch (const FormatError& e) {
      throw FormatError(std::string(who) + ": element " + std::to_string(i) + " (" + detail::shortest(v) +
                        "): " + e.what());
    }
  }

  const Format f_;
  std::vector<std::uint64_t> keys_;
  std::vector<std::uint16_t> codes_;
  std::size_t mask_ = 0;
  int shift_ = 0;
  int nan_code_ = -1;  // -1: the format has no NaN code
  std::vector<std::int32_t> direct_;  // empty: no direct index (see build_direct)
  std::int32_t zero_codes_[2] = {-1, -1};  // of +0 and -0 when there is a direct index
  int direct_shift_ = 0;
  std::uint64_t direct_lo_ = 0, direct_span_ = 0, direct_low_mask_ = 0;
};

// ---- tables kept between calls -------------------------------------------------------------

// A table decodes every code of its format once (65536 of them for 16-bit formats, about a
// millisecond), which would dominate calls on small arrays; the tables of the most recently
// used formats are kept, immutable and shared. A table that cannot be built (a format fp32
// cannot hold) throws and is not kept. Two threads asking for a new format at once may both
// build it; the tables are equal, so either may stay.
template <class Table>
class TableCache {
 public:
  template <class Make>
  std::shared_ptr<const Table> get(const Format& f, Make make) {
    {
      const std::lock_guard lock(mutex_);
      for (std::size_t i = 0; i < entries_.size(); ++i) {
        if (entries_[i].first != f) continue;
        auto found = entries_[i];
        entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(i));
        entries_.push_back(found);  // most recent last
        return found.second;
      }
    }
    auto table = std::make_shared<const Table>(make());  // outside the lock: builds take long
    const std::lock_guard lock(mutex_);
    entries_.emplace_back(f, table);
    if (entries_.size() > kEntries) entries_.erase(entries_.begin());
    return table;
  }

 private:
  static constexpr std::size_t kEntries = 8;
  std::mutex mutex_;
  std::vector<std::pair<Format, std::shared_ptr<const Table>>> entries_;
};

std::shared_ptr<const EncodeTable> encode_table(const Format& f) {
  static auto* cache = new TableCache<EncodeTable>;  // never destroyed: used from static destructors
  return cache->get(f, [&] { return EncodeTable(f); });
}

template <typename T>
void encode_impl(const T* values, std::size_t n, const Format& f, std::uint16_t* codes, const char* who) {
  check_width(who, f);
  const auto table = encode_table(f);
  for (std::size_t i = 0; i < n; ++i) codes[i] = table->code(static_cast<double>(values[i]), i, who);
}

// ---- codes -> values ----------------------------------------------------------------------

std::vector<double> value_table(const Format& f) {
  std::vector<double> t(code_count(f));
  for (std::uint64_t c = 0; c < t.size(); ++c) t[c] = decode(f, c).value;
  return t;
}

std::vector<float> value_table32(const Format& f) {
  // Integer grids are defined per carrier (one rounding of (z - zp) * scale), so an integer
  // format "fits" fp32 by definition; a decode() value that fp32 does not hold exactly would
  // come out different here, so it is refused instead.
  if (f.kind() != FormatKind::integer) f.require_fits(Carrier::fp32);
  std::vector<float> t(code_count(f));
  for (std::uint64_t c = 0; c < t.size(); ++c) {
    const double v = decode(f, c).value;
    t[c] = static_cast<float>(v);
    if (!std::isnan(v) && static_cast<double>(t[c]) != v) {
      throw FormatError("decode_array: format '" + f.to_string() + "' has values that fp32 cannot hold exactly (code " +
                        std::to_string(c) + " is " + detail::shortest(v) + "); use the fp64 carrier");
    }
  }
  return t;
}

template <typename T>
void decode_impl(const std::uint16_t* codes, std::size_t n, const Format& f, T* out, const std::vector<T>& table) {
  const std::size_t count = table.size();
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t c = codes[i];
    if (c >= count) [[unlikely]] {
      throw FormatError("decode_array: code " + std::to_string(c) + " at index " + std::to_string(i) +
                        " does not fit the " + std::to_string(f.bits()) + " bits of format '" + f.to_string() + "'");
    }
    out[i] = table[c];
  }
}

// ---- quantize and pack --------------------------------------------------------------------

template <typename T>
PackedCodes pack_impl(const T* in, std::size_t n, const Format& f, const QuantizeOptions& options) {
  check_width("pack", f);
  // The table comes before quantizing so that a format it refuses costs no quantization.
  const auto table = encode_table(f);
  const auto codes = std::make_unique_for_overwrite<std::uint16_t[]>(n);
  if (std::is_same_v<T, float> && f.kind() == FormatKind::integer) {
    // An integer format's values (z - zp) * scale need not be fp32 numbers (scale=0.1), so an
    // fp32 result need not be one of them: the codes come from the same inputs quantized in
    // fp64, which holds every value exactly and picks the same z (the grid and the input are
    // the same whatever the carrier).
    const auto wide = std::make_unique_for_overwrite<double[]>(n);
    std::copy(in, in + n, wide.get());
    quantize_array(wide.get(), wide.get(), n, f, options);
    for (std::size_t i = 0; i < n; ++i) codes[i] = table->code(wide[i], i, "pack");
  } else {
    const auto values = std::make_unique_for_overwrite<T[]>(n);
    quantize_array(in, values.get(), n, f, options);
    for (std::size_t i = 0; i < n; ++i) codes[i] = table->code(static_cast<double>(values[i]), i, "pack");
  }
  PackedCodes p;
  p.format = f;
  p.count = n;
  p.bytes = pack_bits(codes.get(), n, f.bits());
  return p;
}

std::unique_ptr<std::uint16_t[]> unpacked_codes(const PackedCodes& p) {
  check_width("unpack", p.format);
  auto codes = std::make_unique_for_overwrite<std::uint16_t[]>(p.count);
  unpack_bits(p.bytes.data(), p.bytes.size(), p.count, p.format.bits(), codes.get());
  return codes;
}

}  // namespace

std::vector<std::uint8_t> pack_bits(const std::uint16_t* codes, std::size_t n, int bits) {
  check_bits("pack_bits", bits);
  const std::size_t nbytes = packed_bytes("pack_bits", n, bits);
  check_codes(codes, n, bits);
  std::vector<std::uint8_t> out(nbytes);
  switch (bits) {
    case 1: pack_small<1>(codes, n, out.data()); break;
    case 2: pack_small<2>(codes, n, out.data()); break;
    case 4: pack_small<4>(codes, n, out.data()); break;
    case 8: {
      // Through a raw pointer: a byte store through out[] may alias the vector's own pointer,
      // which keeps the compiler from vectorizing the loop.
      std::uint8_t* o = out.data();
      for (std::size_t i = 0; i < n; ++i) o[i] = static_cast<std::uint8_t>(codes[i]);
      break;
    }
    case 16:
      if constexpr (std::endian::native == std::endian::little) {
        if (n > 0) std::memcpy(out.data(), codes, 2 * n);
      } else {
        for (std::size_t i = 0; i < n; ++i) {
          out[2 * i] = static_cast<std::uint8_t>(codes[i]);
          out[2 * i + 1] = static_cast<std::uint8_t>(codes[i] >> 8);
        }
      }
      break;
    default: pack_general(codes, n, bits, out.data()); break;
  }
  return out;
}

void unpack_bits(const std::uint8_t* bytes, std::size_t nbytes, std::size_t n, int bits, std::uint16_t* codes) {
  check_bits("unpack_bits", bits);
  const std::size_t need = packed_bytes("unpack_bits", n, bits);
  if (nbytes < need) {
    throw FormatError("unpack_bits: " + std::to_string(n) + " codes of " + std::to_string(bits) + " bits need " +
                      std::to_string(need) + " bytes, got " + std::to_string(nbytes));
  }
  switch (bits) {
    case 1: unpack_small<1>(bytes, n, codes); break;
    case 2: unpack_small<2>(bytes, n, codes); break;
    case 4: unpack_small<4>(bytes, n, codes); break;
    case 8:
      for (std::size_t i = 0; i < n; ++i) codes[i] = bytes[i];
      break;
    case 16:
      if constexpr (std::endian::native == std::endian::little) {
        if (n > 0) std::memcpy(codes, bytes, 2 * n);
      } else {
        for (std::size_t i = 0; i < n; ++i) {
          codes[i] = static_cast<std::uint16_t>(bytes[2 * i] | bytes[2 * i + 1] << 8);
        }
      }
      break;
    default: unpack_general(bytes, need, n, bits, codes); break;
  }
}

void encode_array(const float* values, std::size_t n, const Format& f, std::uint16_t* codes) {
  encode_impl(values, n, f, codes, "encode_array");
}

void encode_array(const double* values, std::size_t n, const Format& f, std::uint16_t* codes) {
  encode_impl(values, n, f, codes, "encode_array");
}

void decode_array(const std::uint16_t* codes, std::size_t n, const Format& f, float* out) {
  check_width("decode_array", f);
  static auto* cache = new TableCache<std::vector<float>>;
  decode_impl(codes, n, f, out, *cache->get(f, [&] { return value_table32(f); }));
}

void decode_array(const std::uint16_t* codes, std::size_t n, const Format& f, double* out) {
  check_width("decode_array", f);
  static auto* cache = new TableCache<std::vector<double>>;
  decode_impl(codes, n, f, out, *cache->get(f, [&] { return value_table(f); }));
}

PackedCodes pack(const float* in, std::size_t n, const Format& f, const QuantizeOptions& options) {
  return pack_impl(in, n, f, options);
}

PackedCodes pack(const double* in, std::size_t n, const Format& f, const QuantizeOptions& options) {
  return pack_impl(in, n, f, options);
}

void unpack(const PackedCodes& p, float* out) {
  const auto codes = unpacked_codes(p);
  decode_array(codes.get(), p.count, p.format, out);
}

void unpack(const PackedCodes& p, double* out) {
  const auto codes = unpacked_codes(p);
  decode_array(codes.get(), p.count, p.format, out);
}

}  // namespace mpsim
