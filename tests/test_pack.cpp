// Packed codes against the scalar codec: the bit layout of pack_bits (round trips at every width
// and a hand-computed stream), encode_array/decode_array against encode()/decode() for every code
// of every narrow format (errors included), and pack/unpack against quantize_array.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "mpsim/format.h"
#include "mpsim/pack.h"
#include "mpsim/quantize_array.h"

namespace mpsim::test {
namespace {

std::uint64_t bits_of(double x) {
  std::uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

std::uint32_t bits_of(float x) {
  std::uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

// Bitwise equality, any NaN equal to any NaN (decode() makes one NaN; the carrier may keep others).
bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || bits_of(a) == bits_of(b); }
bool same(float a, float b) { return (std::isnan(a) && std::isnan(b)) || bits_of(a) == bits_of(b); }

// What encode() says: the code, or nothing when it throws.
std::optional<std::uint64_t> scalar_encode(const Format& f, double v) {
  try {
    return encode(f, v);
  } catch (const FormatError&) {
    return std::nullopt;
  }
}

template <typename T>
std::optional<std::uint16_t> array_encode_one(const Format& f, T v) {
  std::uint16_t c = 0;
  try {
    encode_array(&v, 1, f, &c);
    return c;
  } catch (const FormatError&) {
    return std::nullopt;
  }
}

// ---- pack_bits / unpack_bits --------------------------------------------------------------

TEST(PackBits, RoundTripsRandomCodesAtEveryWidth) {
  std::mt19937_64 rng(20240611);
  for (int bits = 1; bits <= 16; ++bits) {
    for (std::size_t n : {0, 1, 7, 8, 9, 1000, 1001}) {
      SCOPED_TRACE("bits=" + std::to_string(bits) + " n=" + std::to_string(n));
      std::vector<std::uint16_t> codes(n);
      for (auto& c : codes) c = static_cast<std::uint16_t>(rng() & ((1u << bits) - 1));
      const std::vector<std::uint8_t> bytes = pack_bits(codes.data(), n, bits);
      ASSERT_EQ(bytes.size(), (n * static_cast<std::size_t>(bits) + 7) / 8);
      // The bits past the last code are zero, so equal arrays pack to equal bytes.
      if ((n * static_cast<std::size_t>(bits)) % 8 != 0) {
        EXPECT_EQ(bytes.back() >> ((n * static_cast<std::size_t>(bits)) % 8), 0);
      }
      // Bit i*bits + k of the stream is bit k of code i (the definition, one bit at a time).
      for (std::size_t i = 0; i < n; ++i) {
        for (int k = 0; k < bits; ++k) {
          const std::size_t pos = i * static_cast<std::size_t>(bits) + static_cast<std::size_t>(k);
          ASSERT_EQ((bytes[pos / 8] >> (pos % 8)) & 1, (codes[i] >> k) & 1) << "code " << i << " bit " << k;
        }
      }
      std::vector<std::uint16_t> back(n, 0xffff);
      unpack_bits(bytes.data(), bytes.size(), n, bits, back.data());
      EXPECT_EQ(back, codes);
      // Extra bytes after the stream are ignored.
      std::vector<std::uint8_t> longer = bytes;
      longer.insert(longer.end(), 5, 0xff);
      std::vector<std::uint16_t> back2(n, 0xffff);
      unpack_bits(longer.data(), longer.size(), n, bits, back2.data());
      EXPECT_EQ(back2, codes);
    }
  }
}

// Every code of every width, at every bit offset the stream can start a code at: a lead of
// 0..7 codes shifts the rest by lead * bits bits.
TEST(PackBits, RoundTripsEveryCodeOfEveryWidth) {
  std::mt19937_64 rng(7);
  for (int bits = 1; bits <= 16; ++bits) {
    std::vector<std::uint16_t> all(std::size_t{1} << bits);
    for (std::size_t c = 0; c < all.size(); ++c) all[c] = static_cast<std::uint16_t>(c);
    std::shuffle(all.begin(), all.end(), rng);  // neighbours of every kind
    for (std::size_t lead = 0; lead < 8; ++lead) {
      SCOPED_TRACE("bits=" + std::to_string(bits) + " lead=" + std::to_string(lead));
      std::vector<std::uint16_t> codes(lead, static_cast<std::uint16_t>((1u << bits) - 1));
      codes.insert(codes.end(), all.begin(), all.end());
      const std::vector<std::uint8_t> bytes = pack_bits(codes.data(), codes.size(), bits);
      std::vector<std::uint16_t> back(codes.size(), 0);
      unpack_bits(bytes.data(), bytes.size(), back.size(), bits, back.data());
      ASSERT_EQ(back, codes);
    }
  }
}

TEST(PackBits, LayoutIsLsbFirstLittleEndian) {
  // 3-bit codes {1, 2, 3, 4, 5}: the stream is 1 | 2<<3 | 3<<6 | 4<<9 | 5<<12
  //   = 1 + 16 + 192 + 2048 + 20480 = 22737 = 0x58d1 (15 bits), so the bytes are d1 58:
  //   byte 0 = bits 0..7  = 1 (code 0), 010 (code 1), low two bits 11 of code 2  -> 11 010 001
  //   byte 1 = bits 8..15 = high bit 0 of code 2, 100 (code 3), 101 (code 4), pad 0 -> 0 101 100 0
  const std::uint16_t c3[] = {1, 2, 3, 4, 5};
  EXPECT_EQ(pack_bits(c3, 5, 3), (std::vector<std::uint8_t>{0xd1, 0x58}));
  // 4 bits: two codes a byte, the first in the low nibble.
  const std::uint16_t c4[] = {0x1, 0x2, 0x3};
  EXPECT_EQ(pack_bits(c4, 3, 4), (std::vector<std::uint8_t>{0x21, 0x03}));
  // 12 bits: 0xabc | 0x123 << 12 = 0x123abc.
  const std::uint16_t c12[] = {0xabc, 0x123};
  EXPECT_EQ(pack_bits(c12, 2, 12), (std::vector<std::uint8_t>{0xbc, 0x3a, 0x12}));
  // 16 bits: little-endian whatever the host.
  const std::uint16_t c16[] = {0x1234, 0xfedc};
  EXPECT_EQ(pack_bits(c16, 2, 16), (std::vector<std::uint8_t>{0x34, 0x12, 0xdc, 0xfe}));
  // 1 bit: code i is bit i.
  const std::uint16_t c1[] = {1, 0, 1, 1, 0, 0, 0, 0, 1};
  EXPECT_EQ(pack_bits(c1, 9, 1), (std::vector<std::uint8_t>{0x0d, 0x01}));
  // 8 bits: the codes themselves.
  const std::uint16_t c8[] = {0x00, 0x7f, 0xff};
  EXPECT_EQ(pack_bits(c8, 3, 8), (std::vector<std::uint8_t>{0x00, 0x7f, 0xff}));

  std::uint16_t back[5] = {};
  const std::uint8_t b3[] = {0xd1, 0x58};
  unpack_bits(b3, 2, 5, 3, back);
  EXPECT_EQ(std::vector<std::uint16_t>(back, back + 5), (std::vector<std::uint16_t>{1, 2, 3, 4, 5}));
}

TEST(PackBits, RejectsBadWidthsCodesAndShortStreams) {
  const std::uint16_t codes[] = {1, 7, 8, 3};
  EXPECT_THROW(pack_bits(codes, 4, 0), FormatError);
  EXPECT_THROW(pack_bits(codes, 4, 17), FormatError);
  try {
    pack_bits(codes, 4, 3);
    FAIL() << "code 8 packed into 3 bits";
  } catch (const FormatError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("code 8"), std::string::npos) << m;
    EXPECT_NE(m.find("index 2"), std::string::npos) << m;
  }
  EXPECT_NO_THROW(pack_bits(codes, 4, 4));
  const std::uint16_t wide[] = {0xffff};
  EXPECT_THROW(pack_bits(wide, 1, 15), FormatError);
  EXPECT_NO_THROW(pack_bits(wide, 1, 16));

  std::uint16_t out[10] = {};
  const std::uint8_t bytes[4] = {};
  EXPECT_THROW(unpack_bits(bytes, 4, 10, 4, out), FormatError);  // needs 5 bytes
  EXPECT_THROW(unpack_bits(bytes, 4, 3, 11, out), FormatError);  // needs 5 bytes (33 bits)
  EXPECT_THROW(unpack_bits(bytes, 1, 2, 8, out), FormatError);
  EXPECT_NO_THROW(unpack_bits(bytes, 4, 8, 4, out));
  EXPECT_THROW(unpack_bits(bytes, 4, 1, 0, out), FormatError);
  EXPECT_THROW(unpack_bits(bytes, 4, 1, 17, out), FormatError);
  EXPECT_NO_THROW(unpack_bits(nullptr, 0, 0, 5, out));
}

// ---- encode_array / decode_array against the scalar codec ---------------------------------

const char* const kFormats[] = {
    // float presets of at most 16 bits
    "fp16", "bf16", "dlfloat16", "e5m2", "e4m3", "e4m3fn", "e4m3fnuz", "e5m2fnuz", "e3m2fn", "e2m3fn", "e2m1fn",
    "e8m0fnu", "fp4r4",
    // variants: ext specials with CFG-5 / CFG-6 subnormals, saturation
    "e5m2:cfg5", "e4m3:cfg6", "e4m3fn:sat", "e3m1:sub=flushin", "e4m3fnuz:sub=flushin",
    // fixed point and integers
    "q4.4", "uq4.4", "q8.8", "int8", "uint4", "int8:scale=0.25", "int4:scale=0.5:zp=3",
    // a grid of full-length fp64 values (0.1 k): no fp32 table, and no direct index to encode
    "int8:scale=0.1"};

TEST(EncodeDecodeArray, AgreeWithTheScalarCodecOnEveryCode) {
  for (const char* name : kFormats) {
    SCOPED_TRACE(name);
    const Format f = Format::parse(name);
    const std::size_t count = code_count(f);
    std::vector<std::uint16_t> all(count);
    for (std::size_t c = 0; c < count; ++c) all[c] = static_cast<std::uint16_t>(c);

    // decode_array, both carriers.
    std::vector<double> v64(count);
    decode_array(all.data(), count, f, v64.data());
    std::map<std::uint64_t, int> uses;  // how many codes decode to each value (bits)
    bool fits32 = true;  // every value an fp32 number
    for (std::size_t c = 0; c < count; ++c) {
      const double d = decode(f, c).value;
      ASSERT_TRUE(same(v64[c], d)) << "code " << c << ": " << v64[c] << " vs " << d;
      if (!std::isnan(d)) ++uses[bits_of(d)];
      if (!std::isnan(d) && static_cast<double>(static_cast<float>(d)) != d) fits32 = false;
    }
    std::vector<float> v32(count);
    if (fits32) {
      decode_array(all.data(), count, f, v32.data());
      for (std::size_t c = 0; c < count; ++c) ASSERT_TRUE(same(v32[c], static_cast<float>(v64[c]))) << "code " << c;
    } else {
      EXPECT_THROW(decode_array(all.data(), count, f, v32.data()), FormatError);
    }

    // encode_array of every decoded value: the codes encode() gives (all of them are values of
    // the format, so none throws here; the rejected inputs are below).
    std::vector<double> accepted;
    std::vector<std::uint64_t> expected;
    for (std::size_t c = 0; c < count; ++c) {
      const auto e = scalar_encode(f, v64[c]);
      if (e) {
        accepted.push_back(v64[c]);
        expected.push_back(*e);
      } else {
        // Whatever encode() refuses, encode_array refuses too.
        EXPECT_FALSE(array_encode_one(f, v64[c]).has_value()) << "code " << c;
      }
    }
    std::vector<std::uint16_t> got(accepted.size());
    encode_array(accepted.data(), accepted.size(), f, got.data());
    for (std::size_t i = 0; i < accepted.size(); ++i) ASSERT_EQ(got[i], expected[i]) << "value " << accepted[i];
    if (fits32) {
      std::vector<float> accepted32(accepted.begin(), accepted.end());
      std::vector<std::uint16_t> got32(accepted.size());
      encode_array(accepted32.data(), accepted32.size(), f, got32.data());
      for (std::size_t i = 0; i < accepted.size(); ++i) {
        ASSERT_EQ(got32[i], expected[i]) << "value " << accepted[i] << " (fp32)";
      }
    }

    // code -> value -> code is the identity, except for NaN codes and values several codes share
    // (flushed subnormals read as zero); for those the code still decodes to the same value (up
    // to the sign of zero: fnuz:sub=flushin reads S.0..0.m as -0, but its only zero code is +0).
    std::vector<std::size_t> non_nan;
    for (std::size_t c = 0; c < count; ++c) {
      if (!std::isnan(v64[c])) non_nan.push_back(c);
    }
    std::vector<double> nn_values;
    for (std::size_t c : non_nan) nn_values.push_back(v64[c]);
    std::vector<std::uint16_t> nn_codes(nn_values.size());
    encode_array(nn_values.data(), nn_values.size(), f, nn_codes.data());
    int unique_codes = 0;
    for (std::size_t k = 0; k < non_nan.size(); ++k) {
      const std::size_t c = non_nan[k];
      if (uses[bits_of(v64[c])] == 1) {
        ++unique_codes;
        ASSERT_EQ(nn_codes[k], c) << "value " << v64[c];
      } else {
        ASSERT_EQ(decode(f, nn_codes[k]).value, v64[c]) << "code " << c;
      }
    }
    EXPECT_GT(unique_codes, 0);

    // Inputs encode() may refuse: specials, zeros of both signs, values off the grid, out of
    // range, negative values of unsigned formats. Each alone, so that each error is seen.
    const double max = describe(f).max_finite;
    const double extras[] = {std::numeric_limits<double>::quiet_NaN(),
                             -std::numeric_limits<double>::quiet_NaN(),
                             std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity(),
                             0.0,
                             -0.0,
                             1.0 / 3,
                             -1.0 / 3,
                             2 * max,
                             -2 * max,
                             std::nextafter(max, 0.0),
                             1e-300,
                             -1.0,
                             1.0,
                             0.5};
    for (const double x : extras) {
      const auto e = scalar_encode(f, x);
      const auto a = array_encode_one(f, x);
      EXPECT_EQ(a.has_value(), e.has_value()) << "value " << x;
      if (a && e) {
        EXPECT_EQ(*a, *e) << "value " << x;
      }
      const auto a32 = array_encode_one(f, static_cast<float>(x));
      const auto e32 = scalar_encode(f, static_cast<double>(static_cast<float>(x)));
      EXPECT_EQ(a32.has_value(), e32.has_value()) << "value " << x << " (fp32)";
      if (a32 && e32) {
        EXPECT_EQ(*a32, *e32) << "value " << x << " (fp32)";
      }
    }
  }
}

// The array forms keep the tables of recent formats: more formats than are kept, visited in
// turn and from several threads at once, must each still give the scalar codec's answers.
TEST(EncodeDecodeArray, KeptTablesServeEachFormatItsOwnAnswers) {
  const char* const names[] = {"e4m3fn", "e5m2", "fp16", "bf16", "e2m1fn", "e3m2fn", "int8", "q4.4",
                               "int8:scale=0.1", "uint8:scale=0.3:zp=7", "e4m3fnuz", "e5m2:cfg5", "fp16:sub=flushin"};
  const auto check = [&](const char* name, int round) {
    const Format f = Format::parse(name);
    const std::uint64_t count = code_count(f);
    std::vector<double> values;
    std::vector<std::uint16_t> want;
    for (std::uint64_t c = round % 7; c < count; c += 7) {
      const double v = decode(f, c).value;
      if (std::isnan(v)) continue;
      values.push_back(v);
      want.push_back(static_cast<std::uint16_t>(encode(f, v)));
    }
    std::vector<std::uint16_t> codes(values.size());
    encode_array(values.data(), values.size(), f, codes.data());
    std::vector<double> back(values.size());
    decode_array(codes.data(), codes.size(), f, back.data());
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (codes[i] != want[i] || back[i] != decode(f, want[i]).value) return false;
    }
    return true;
  };
  for (int round = 0; round < 3; ++round) {
    for (const char* name : names) EXPECT_TRUE(check(name, round)) << name << " round " << round;
  }
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 6; ++round) {
        const char* name = names[static_cast<std::size_t>(t * 5 + round) % std::size(names)];
        if (!check(name, round)) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(EncodeArray, NamesTheElementAndTheValueItRefuses) {
  const Format f = Format::parse("e4m3fn");
  const double vals[] = {1.0, 0.5, 1.0 / 3, 2.0};
  std::uint16_t codes[4];
  try {
    encode_array(vals, 4, f, codes);
    FAIL() << "1/3 encoded into e4m3fn";
  } catch (const FormatError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("element 2"), std::string::npos) << m;
    EXPECT_NE(m.find("0.3333333333333333"), std::string::npos) << m;
  }
  const Format e2m1 = Format::parse("e2m1fn");
  const float with_nan[] = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  try {
    encode_array(with_nan, 2, e2m1, codes);
    FAIL() << "NaN encoded into e2m1fn";
  } catch (const FormatError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("element 1"), std::string::npos) << m;
    EXPECT_NE(m.find("nan"), std::string::npos) << m;
  }
  // Formats wider than 16 bits have no packed form.
  EXPECT_THROW(encode_array(vals, 1, Format::parse("fp32"), codes), FormatError);
  EXPECT_THROW(encode_array(vals, 0, Format::parse("q12.12"), codes), FormatError);
}

TEST(DecodeArray, RefusesCodesOutsideTheFormatAndValuesTheCarrierLacks) {
  const std::uint16_t codes[] = {0x38, 0x100, 0x01};
  double out[3];
  float out32[3];
  try {
    decode_array(codes, 3, Format::parse("e4m3fn"), out);
    FAIL() << "code 256 decoded in an 8-bit format";
  } catch (const FormatError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("index 1"), std::string::npos) << m;
    EXPECT_NE(m.find("256"), std::string::npos) << m;
  }
  EXPECT_THROW(decode_array(codes, 3, Format::parse("e2m1fn"), out32), FormatError);
  EXPECT_NO_THROW(decode_array(codes, 3, Format::parse("fp16"), out32));
  EXPECT_THROW(decode_array(codes, 1, Format::parse("fp32"), out), FormatError);

  // Values beyond fp32 (2^134): the fp64 carrier only.
  const Format big = Format::parse("e8m3:bias=120");
  const std::uint16_t top[] = {0x7f7};
  EXPECT_THROW(decode_array(top, 1, big, out32), FormatError);
  decode_array(top, 1, big, out);
  EXPECT_EQ(out[0], decode(big, 0x7f7).value);
  // An integer grid whose fp64 values fp32 does not hold (0.1 * k).
  const Format tenth = Format::parse("int8:scale=0.1");
  const std::uint16_t one[] = {1};
  EXPECT_THROW(decode_array(one, 1, tenth, out32), FormatError);
  decode_array(one, 1, tenth, out);
  EXPECT_EQ(out[0], 0.1);
}

// ---- pack / unpack ------------------------------------------------------------------------

std::vector<float> random_inputs(std::size_t n, bool with_nan) {
  std::mt19937_64 rng(777);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(-12.0f, 6.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng) * std::exp2(scale(rng));
  x[0] = 0.0f;
  x[1] = -0.0f;
  x[2] = std::numeric_limits<float>::infinity();
  x[3] = -std::numeric_limits<float>::infinity();
  x[4] = 1e30f;
  x[5] = -1e-30f;
  x[6] = std::numeric_limits<float>::denorm_min();
  if (with_nan) x[7] = std::numeric_limits<float>::quiet_NaN();
  return x;
}

TEST(Pack, UnpackOfPackIsQuantizeArrayBitForBit) {
  for (const char* name : {"e4m3fn@sr", "e2m1fn", "e5m2", "q4.4", "int8:scale=0.25", "fp16@sr8", "e3m2fn@rz"}) {
    SCOPED_TRACE(name);
    const Format f = Format::parse(name);
    const bool has_nan = describe(f).has_nan;
    const std::size_t n = 10007;
    const std::vector<float> x = random_inputs(n, has_nan);
    QuantizeOptions o;
    o.key = RandomKey{0x5eedULL, 3};
    o.first_index = 1000;

    const PackedCodes p = pack(x.data(), n, f, o);
    EXPECT_EQ(p.format, f);
    EXPECT_EQ(p.count, n);
    EXPECT_EQ(p.bytes.size(), (n * static_cast<std::size_t>(f.bits()) + 7) / 8);
    std::vector<float> q(n), back(n);
    quantize_array(x.data(), q.data(), n, f, o);
    unpack(p, back.data());
    // Formats without a -0 code (fixed point, integers) give -0 back as +0.
    const bool neg_zero = describe(f).has_neg_zero;
    const auto expect_same = [&](auto got, auto want, std::size_t i) {
      if (want == 0 && !neg_zero) {
        ASSERT_EQ(got, 0) << "element " << i;
      } else {
        ASSERT_TRUE(same(got, want)) << "element " << i << ": " << x[i] << " -> " << want << ", unpacked " << got;
      }
    };
    for (std::size_t i = 0; i < n; ++i) expect_same(back[i], q[i], i);

    // The fp64 carrier: the same codes (the inputs and the grids are the same).
    const std::vector<double> x64(x.begin(), x.end());
    const PackedCodes p64 = pack(x64.data(), n, f, o);
    EXPECT_EQ(p64.bytes, p.bytes);
    std::vector<double> q64(n), back64(n);
    quantize_array(x64.data(), q64.data(), n, f, o);
    unpack(p64, back64.data());
    for (std::size_t i = 0; i < n; ++i) expect_same(back64[i], q64[i], i);
  }
}

// Integer formats whose values are not fp32 numbers (a scale that is not a power of two, a
// zero point): fp32 inputs pack to the codes of their fp64 quantization, which unpack exactly.
TEST(Pack, Fp32InputsIntoScaledIntegersPackTheirCodes) {
  for (const char* name : {"int8:scale=0.1", "int4:scale=0.1@sr", "uint8:scale=0.3:zp=7@rz", "int16:scale=0.001"}) {
    SCOPED_TRACE(name);
    const Format f = Format::parse(name);
    const std::size_t n = 4099;
    std::vector<float> x = random_inputs(n, false);
    for (std::size_t i = 0; i < n; i += 3) x[i] *= 0.01f;  // many inside the grid, not only saturating
    QuantizeOptions o;
    o.key = RandomKey{0x5eedULL, 4};
    o.first_index = 17;
    const PackedCodes p = pack(x.data(), n, f, o);
    const std::vector<double> x64(x.begin(), x.end());
    EXPECT_EQ(p.bytes, pack(x64.data(), n, f, o).bytes);
    std::vector<double> q64(n), back(n);
    quantize_array(x64.data(), q64.data(), n, f, o);
    unpack(p, back.data());
    std::size_t inside = 0;
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_EQ(back[i], q64[i]) << "element " << i << ": " << x[i];
      // The code is the one whose value the spec gives, decoded independently.
      ASSERT_EQ(decode(f, encode(f, q64[i])).value, q64[i]);
      inside += q64[i] != 0 && std::fabs(q64[i]) < describe(f).max_finite;
    }
    EXPECT_GT(inside, n / 8);
  }
}

TEST(Pack, NanIntoAFormatWithoutNanThrows) {
  const Format f = Format::parse("e2m1fn");
  const std::vector<float> x = {1.0f, 2.0f, std::numeric_limits<float>::quiet_NaN(), 3.0f};
  try {
    (void)pack(x.data(), x.size(), f);
    FAIL() << "NaN packed into e2m1fn";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("element 2"), std::string::npos) << e.what();
  }
  const std::vector<double> x64(x.begin(), x.end());
  EXPECT_THROW((void)pack(x64.data(), x64.size(), f), FormatError);
  // With a NaN code it packs and comes back NaN.
  const PackedCodes p = pack(x.data(), x.size(), Format::parse("e4m3fn"));
  std::vector<float> back(x.size());
  unpack(p, back.data());
  EXPECT_TRUE(std::isnan(back[2]));
  EXPECT_EQ(back[3], 3.0f);
}

TEST(Pack, RejectsWideFormatsAndTruncatedStreams) {
  const float x[] = {1.0f};
  EXPECT_THROW((void)pack(x, 1, Format::parse("fp32")), FormatError);
  EXPECT_THROW((void)pack(x, 1, Format::parse("e4m3fn@hyst")), FormatError);

  PackedCodes p = pack(x, 1, Format::parse("e2m1fn"));
  p.count = 3;  // 12 bits: two bytes needed, one there
  float out[3];
  EXPECT_THROW(unpack(p, out), FormatError);
  p.count = 2;
  EXPECT_NO_THROW(unpack(p, out));
  EXPECT_EQ(out[0], 1.0f);
}

TEST(Pack, EmptyArrays) {
  const Format f = Format::parse("e4m3fn");
  const PackedCodes p = pack(static_cast<const float*>(nullptr), 0, f);
  EXPECT_EQ(p.count, 0u);
  EXPECT_TRUE(p.bytes.empty());
  unpack(p, static_cast<float*>(nullptr));
  encode_array(static_cast<const double*>(nullptr), 0, f, nullptr);
  decode_array(nullptr, 0, f, static_cast<double*>(nullptr));
}

}  // namespace
}  // namespace mpsim::test
