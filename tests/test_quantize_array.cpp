// The array quantizer (SIMD kernels, OpenMP, chunking) against the scalar reference, bit for
// bit: every preset and variant, every rounding mode, fp32 and fp64 carriers, at each
// instruction-set level this CPU can run (forced one after the other), across thread counts
// and call chunkings. Levels the CPU lacks are reported as skipped.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mpsim/quantize.h"
#include "mpsim/quantize_array.h"
#include "mpsim/rng.h"
#include "sample_inputs.h"
#include "bit_helpers.h"

namespace mpsim::test {
namespace {

const char* const kFormats[] = {
    // presets
    "fp32", "tf32", "bf16", "fp16", "dlfloat16", "e5m2", "e4m3", "e4m3fn", "e4m3fnuz", "e5m2fnuz", "e3m2fn",
    "e2m3fn", "e2m1fn", "e8m0fnu", "fp4r4", "fp64",
    // the FPGA variants and option combinations
    "e5m2:cfg2", "e5m2:cfg4", "e5m2:cfg5", "e5m2:cfg6", "e4m3:cfg2", "e4m3:cfg5", "e4m3:cfg6", "e4m3fn:sat",
    "e5m2:sat", "e4m3fnuz:sat", "e2m1fn:sat", "e6m5", "e6m5:cfg5", "e5m10:cfg5", "e8m7:cfg6", "e3m4",
    "e4m3:bias=4", "e5m2:sp=fn", "e5m2:sp=none", "e4m0", "e5m0:sp=fn", "e3m1:sub=flushin", "e8m0fnu:sat",
    "e8m3:bias=120", "e8m3", "e11m10",  // rne on the bits without range checks (fp32, fp64)
    // no subnormals, lowest normal binade the carrier's own (its subnormals lie below the range)
    "bf16:sub=flushin", "e8m3:sub=flushin", "e11m52:sub=flushin", "e11m4:sub=flushin",
    // fixed point and integers
    "q4.4", "q8.8", "uq4.4", "q1.7", "q3.5:wrap", "q12.12", "uq8.8:wrap", "int8", "uint8", "int4",
    "int8:scale=0.25", "int16:scale=0.0078125", "int8:scale=0.1", "int8:scale=0.5:zp=3", "uint4:scale=2",
    "int16:scale=0.1", "uint16:scale=0.3:zp=1000", "int32:scale=3e-7:zp=-12345", "int8:scale=1e-300",
    "int8:scale=1e37"};  // values past fp32's range: they round to infinity there

const char* const kModes[] = {"rne", "rna", "rz", "ru", "rd", "ro", "sr", "sr1", "sr8", "sr13", "sr32"};

std::string level_names() {
  std::string s;
  for (SimdLevel l : available_simd_levels()) s += to_string(l) + " ";
  return s;
}

template <typename T>
void expect_array_matches_reference(const Format& f, const std::vector<double>& sample, const RandomKey& key,
                                    std::uint64_t first) {
  std::vector<T> in;
  for (double x : sample) in.push_back(static_cast<T>(x));
  std::vector<T> want(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) want[i] = quantize(in[i], f, first + i, key);
  for (SimdLevel level : available_simd_levels()) {
    LevelGuard guard(level);
    std::vector<T> got(in.size());
    QuantizeOptions o;
    o.key = key;
    o.first_index = first;
    quantize_array(in.data(), got.data(), in.size(), f, o);
    std::size_t bad = 0, first_bad = 0;
    for (std::size_t i = 0; i < in.size(); ++i) {
      if (bits_of(got[i]) != bits_of(want[i])) {
        if (bad++ == 0) first_bad = i;
      }
    }
    EXPECT_EQ(bad, 0u) << f.to_string() << " " << (sizeof(T) == 4 ? "fp32" : "fp64") << " at "
                       << to_string(level) << ": e.g. x=" << std::hexfloat << static_cast<double>(in[first_bad])
                       << " index " << first + first_bad << " got " << static_cast<double>(got[first_bad])
                       << " want " << static_cast<double>(want[first_bad]);
  }
}

class EveryFormat : public ::testing::TestWithParam<const char*> {};

TEST_P(EveryFormat, EveryModeEqualsTheReferenceAtEveryLevel) {
  const Format base = Format::parse(GetParam());
  const std::vector<double> sample = sample_inputs(base, 3000);
  for (const char* mode : kModes) {
    const Format f = base.with_rounding(parse_rounding(mode));
    const RandomKey key{0x5eed0000ULL + static_cast<std::uint64_t>(mode[0]), 7};
    if (f.kind() == FormatKind::integer || f.fits(Carrier::fp32)) {
      expect_array_matches_reference<float>(f, sample, key, 1000003);
    }
    expect_array_matches_reference<double>(f, sample, key, 5);
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, EveryFormat, ::testing::ValuesIn(kFormats), [](const auto& p) {
  std::string s = p.param;
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
});

// sr below a format's normal range: vectors whose lanes are all zero or between the smallest
// subnormal and a few binades above the smallest normal value take the per-lane-shift path
// (SrBelowNormal), the others the general one; both must equal the reference bit for bit.
TEST(QuantizeArray, StochasticRoundingBelowTheNormalRangeEqualsTheReference) {
  for (const char* name : {"e4m3fn", "e5m2", "fp16", "bf16", "e3m2fn", "e2m1fn", "e4m3fn:sat", "e4m3fnuz", "e6m5"}) {
    const Format base = Format::parse(name);
    const FormatInfo info = describe(base);
    const double smallest = info.min_subnormal;
    std::mt19937_64 gen(11);
    std::uniform_real_distribution<double> binade(0.0, static_cast<double>(info.man_bits + 3));
    std::vector<double> sample;
    for (int i = 0; i < 4096; ++i) {
      // Mostly within [smallest subnormal, 8 x smallest normal), some zeros, a few below.
      const double mag = (i % 97 == 0) ? 0.0 : smallest * std::exp2(binade(gen) - (i % 211 == 0 ? 2.0 : 0.0));
      sample.push_back((gen() & 1) ? -mag : mag);
    }
    for (const char* mode : {"sr", "sr5"}) {
      const Format f = base.with_rounding(parse_rounding(mode));
      expect_array_matches_reference<float>(f, sample, RandomKey{99, 3}, 17);
      expect_array_matches_reference<double>(f, sample, RandomKey{99, 3}, 17);
    }
  }
}

TEST(QuantizeArray, ReportsTheLevels) {
  const auto levels = available_simd_levels();
  ASSERT_FALSE(levels.empty());
  EXPECT_EQ(levels.front(), SimdLevel::scalar);
  EXPECT_EQ(active_simd_level(), levels.back());
  for (SimdLevel l : levels) {
    LevelGuard g(l);
    EXPECT_EQ(active_simd_level(), l);
  }
  EXPECT_EQ(active_simd_level(), levels.back());
  std::printf("levels this CPU runs: %s\n", level_names().c_str());
  for (SimdLevel l : {SimdLevel::avx2, SimdLevel::avx512}) {
    bool there = false;
    for (SimdLevel a : levels) there = there || a == l;
    if (!there) {
      EXPECT_THROW(force_simd_level(l), FormatError);
    }
  }
}

TEST(QuantizeArray, AvxLevelsRunHere) {
  // The equality tests above cover the levels the CPU has; say so when one is missing, so a
  // report never suggests AVX-512 was checked on a machine without it.
  for (SimdLevel l : {SimdLevel::avx2, SimdLevel::avx512}) {
    bool there = false;
    for (SimdLevel a : available_simd_levels()) there = there || a == l;
    if (!there) GTEST_SKIP() << to_string(l) << " is not available on this CPU; its kernels were built but not run";
  }
}

std::vector<float> random_floats(std::size_t n, std::uint64_t seed, float scale) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

TEST(QuantizeArray, ThreadCountsAndChunkingsGiveTheSameBits) {
  const std::size_t n = 300007;
  const std::vector<float> in = random_floats(n, 1, 3.0f);
  for (const char* fmt : {"e4m3fn@sr", "e5m2@sr8", "bf16@sr", "fp16@rne", "q4.4@sr", "e4m3:cfg5@sr"}) {
    const Format f = Format::parse(fmt);
    QuantizeOptions o;
    o.key = {99, 3};
    o.first_index = 17;
    o.threads = 1;
    std::vector<float> one(n), two(n), pieces(n);
    quantize_array(in.data(), one.data(), n, f, o);
    o.threads = 2;
    quantize_array(in.data(), two.data(), n, f, o);
    EXPECT_EQ(std::memcmp(one.data(), two.data(), n * sizeof(float)), 0) << fmt;
    // Pieces of odd sizes, each with its own first_index, as a caller streaming the array would.
    std::size_t at = 0;
    const std::size_t sizes[] = {1, 3, 1023, 1024, 1025, 4097, 16384, 16385, 77};
    for (std::size_t k = 0; at < n; ++k) {
      const std::size_t len = std::min(sizes[k % std::size(sizes)], n - at);
      QuantizeOptions po = o;
      po.first_index = o.first_index + at;
      po.threads = static_cast<int>(k % 2) + 1;
      quantize_array(in.data() + at, pieces.data() + at, len, f, po);
      at += len;
    }
    EXPECT_EQ(std::memcmp(one.data(), pieces.data(), n * sizeof(float)), 0) << fmt;
    // And each element is the reference.
    std::size_t bad = 0;
    for (std::size_t i = 0; i < n; i += 97) bad += bits_of(one[i]) != bits_of(quantize(in[i], f, 17 + i, o.key));
    EXPECT_EQ(bad, 0u) << fmt;
  }
}

TEST(QuantizeArray, ElementIndicesWrappingPast2To64) {
  // The element index is first_index + i modulo 2^64; a chunk in which it wraps draws its random
  // words one element at a time instead of by Philox blocks. Same bits as the reference.
  const std::vector<float> in = random_floats(3000, 5, 3.0f);
  for (const char* fmt : {"e4m3fn@sr", "e5m2@sr8", "q4.4@sr"}) {
    const Format f = Format::parse(fmt);
    QuantizeOptions o;
    o.key = {5, 1};
    o.first_index = ~std::uint64_t{0} - 700;
    o.threads = 1;
    std::vector<float> out(in.size());
    quantize_array(in.data(), out.data(), in.size(), f, o);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < in.size(); ++i) bad += bits_of(out[i]) != bits_of(quantize(in[i], f, o.first_index + i, o.key));
    EXPECT_EQ(bad, 0u) << fmt;
  }
}

TEST(QuantizeArray, InPlace) {
  std::vector<float> v = random_floats(5000, 2, 10.0f);
  const std::vector<float> orig = v;
  const Format f = Format::parse("e4m3:cfg5@sr");  // with fallback lanes (the CFG-5 gap)
  v[10] = 0.0009f;
  QuantizeOptions o;
  o.key = {5, 0};
  std::vector<float> want(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) want[i] = quantize(v[i], f, i, o.key);
  quantize_array(v.data(), v.data(), v.size(), f, o);
  EXPECT_EQ(std::memcmp(v.data(), want.data(), v.size() * sizeof(float)), 0);
}

// In place with lanes that the scaled-integer kernel hands to the reference: the reference
// must see the inputs, not the kernel's provisional results. Inputs on or next to half-integer
// quotients make srN's kept bits straddle the error interval often (about one lane in six
// under sr1).
template <typename T>
void expect_in_place_matches_reference(const char* name) {
  const Format f = Format::parse(name);
  const double scale = f.int_spec().scale, zp = static_cast<double>(f.int_spec().zp);
  std::vector<T> v;
  for (int k = -150; k <= 300; ++k) {
    const double x = (k + 0.5 - zp) * scale;
    v.push_back(static_cast<T>(x));
    v.push_back(std::nextafter(static_cast<T>(x), T{0}));
  }
  QuantizeOptions o;
  o.key = {17, 3};
  o.first_index = 11;
  std::vector<T> want(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) want[i] = quantize(v[i], f, o.first_index + i, o.key);
  for (SimdLevel level : available_simd_levels()) {
    LevelGuard guard(level);
    std::vector<T> got = v;
    quantize_array(got.data(), got.data(), got.size(), f, o);
    for (std::size_t i = 0; i < v.size(); ++i) {
      ASSERT_EQ(bits_of(got[i]), bits_of(want[i])) << name << " at " << to_string(level) << ", x = " << std::hexfloat
                                                   << static_cast<double>(v[i]);
    }
  }
}

TEST(QuantizeArray, InPlaceScaledIntegersWithReferenceLanes) {
  for (const char* name : {"int8:scale=0.1@sr1", "uint8:scale=0.3:zp=7@sr1", "int8:scale=0.1@sr8", "int16:scale=0.1@sr"}) {
    expect_in_place_matches_reference<float>(name);
    expect_in_place_matches_reference<double>(name);
  }
}

TEST(QuantizeArray, SimdPhiloxEqualsRandomWord) {
  const RandomKey key{0xfeedfacecafebeefULL, 0x12345678u};
  for (SimdLevel level : available_simd_levels()) {
    LevelGuard guard(level);
    for (std::uint64_t first : {0ULL, 1ULL, 2ULL, 3ULL, 0xfffffff0ULL, 0x3ffffffffULL - 5}) {
      std::vector<std::uint32_t> w(2500);
      random_words(key, first, w.size(), w.data());
      for (std::size_t i = 0; i < w.size(); ++i) {
        ASSERT_EQ(w[i], random_word(key, first + i, 0)) << to_string(level) << " first " << first << " i " << i;
      }
    }
  }
}

// Stochastic rounding reads a second random word only when the first equals the leading 32
// bits of the discarded fraction and the fraction has more bits: construct such inputs from
// the words themselves, so the rare path (probability 2^-32 on random data) is exercised.
TEST(QuantizeArray, StochasticTiesOnTheFirstWordGoToTheExactPath) {
  const RandomKey key{777, 1};
  const Format f = Format::parse("e4m3fn@sr");
  // fp64: in the binade [1, 2) e4m3fn keeps 3 fraction bits; the other 49 bits are the fraction,
  // the first 32 of them set equal to word 0, the rest nonzero.
  std::vector<double> in;
  for (std::uint64_t i = 0; i < 64; ++i) {
    const std::uint64_t w0 = random_word(key, i, 0);
    const std::uint64_t frac = (w0 << 17) | ((i % 2) ? 1 : 0x1ffff);  // 49 bits
    const std::uint64_t kept = i % 8;
    const double x = std::ldexp(static_cast<double>((std::uint64_t{1} << 52) | (kept << 49) | frac), -52);
    in.push_back(i % 3 ? x : -x);
  }
  std::vector<double> got(in.size());
  QuantizeOptions o;
  o.key = key;
  for (SimdLevel level : available_simd_levels()) {
    LevelGuard guard(level);
    quantize_array(in.data(), got.data(), in.size(), f, o);
    for (std::size_t i = 0; i < in.size(); ++i) {
      EXPECT_EQ(bits_of(got[i]), bits_of(quantize(in[i], f, i, key))) << to_string(level) << " i " << i;
    }
  }
  // fp32: the fraction exceeds 32 bits only far below the smallest subnormal (quantum 2^-9):
  // x = s * 2^-(9+d) with d > 32. Find elements whose word 0 is small enough to be such a
  // fraction's leading bits, and build x from it.
  std::vector<float> in32;
  std::vector<std::uint64_t> idx;
  for (std::uint64_t i = 0; in32.size() < 16 && i < 100000; ++i) {
    const std::uint32_t w0 = random_word(key, i, 0);
    if (w0 >= (1u << 23) || w0 < (1u << 20)) continue;
    // sig (24 bits) = (w0 << 1) | 1 at d = 33: leading 32 bits of sig / 2^33 are w0.
    const float x = std::ldexp(static_cast<float>((w0 << 1) | 1u), -9 - 33);
    in32.push_back(x);
    idx.push_back(i);
  }
  ASSERT_GE(in32.size(), 8u);
  for (SimdLevel level : available_simd_levels()) {
    LevelGuard guard(level);
    for (std::size_t j = 0; j < in32.size(); ++j) {
      float out = 0;
      QuantizeOptions oj;
      oj.key = key;
      oj.first_index = idx[j];
      quantize_array(&in32[j], &out, 1, f, oj);
      EXPECT_EQ(bits_of(out), bits_of(quantize(in32[j], f, idx[j], key))) << to_string(level) << " j " << j;
    }
  }
}

// fp32 results of scaled integers are (z - zp) * scale rounded once. Scales built so that the
// fp64 product k * scale lands exactly on an fp32 midpoint from above: rounding it twice (to
// fp64, then to fp32) gives the even neighbour k, rounding once the upper one.
TEST(QuantizeArray, ScaledIntegerValuesRoundOnceToFp32) {
  int cases = 0;
  for (int k = 3; k < 120; k += 2) {
    const double mid = k + std::ldexp(1.0, std::ilogb(k) - 24);  // between k and its fp32 successor
    double scale = mid / k;
    for (int j = 0; j < 4 && !(k * scale == mid && std::fma(k, scale, -mid) > 0); ++j) scale = std::nextafter(scale, 2.0);
    const double p = k * scale;
    if (p != mid || !(std::fma(k, scale, -p) > 0)) continue;  // no such scale next to mid / k
    ++cases;
    const float want = std::nextafter(static_cast<float>(k), INFINITY);
    ASSERT_NE(static_cast<float>(p), want);  // the double rounding this guards against
    char spec[64];
    std::snprintf(spec, sizeof spec, "int8:scale=%.17g", scale);
    const Format f = Format::parse(spec);
    ASSERT_EQ(f.int_spec().scale, scale);
    std::vector<float> x(64, static_cast<float>(k)), y(64);  // vectors, not only the tail
    for (SimdLevel level : available_simd_levels()) {
      LevelGuard guard(level);
      quantize_array(x.data(), y.data(), x.size(), f);
      for (float v : y) ASSERT_EQ(bits_of(v), bits_of(want)) << spec << " k=" << k << " at " << to_string(level);
    }
  }
  EXPECT_GE(cases, 10);
}

TEST(QuantizeArray, CoverageIsReported) {
  EXPECT_TRUE(quantize_array_is_vectorized(Format::parse("e4m3fn"), Carrier::fp32));
  EXPECT_TRUE(quantize_array_is_vectorized(Format::parse("e8m0fnu@sr"), Carrier::fp32));
  EXPECT_TRUE(quantize_array_is_vectorized(Format::parse("q8.8"), Carrier::fp64));
  EXPECT_TRUE(quantize_array_is_vectorized(Format::parse("int8"), Carrier::fp32));
  EXPECT_FALSE(quantize_array_is_vectorized(Format::parse("fp4r4"), Carrier::fp32));
  // Scales that are not powers of two and zero points: the scaled-integer kernel.
  EXPECT_TRUE(quantize_array_is_vectorized(Format::parse("int8:scale=0.1"), Carrier::fp32));
  EXPECT_TRUE(quantize_array_is_vectorized(Format::parse("int8:zp=3@sr"), Carrier::fp64));
  // Outside its error bounds: the reference.
  EXPECT_FALSE(quantize_array_is_vectorized(Format::parse("int8:scale=1e-300"), Carrier::fp64));
  EXPECT_FALSE(quantize_array_is_vectorized(Format::parse("int8:scale=1e300"), Carrier::fp64));
}

TEST(QuantizeArray, BadRequestsAreRefused) {
  std::vector<float> v(8, 1.0f);
  EXPECT_THROW(quantize_array(v.data(), v.data(), v.size(), Format::parse("e5m2@hyst")), FormatError);
  EXPECT_THROW(quantize_array(v.data(), v.data(), v.size(), Format::parse("fp64")), FormatError);
  EXPECT_NO_THROW(quantize_array(v.data(), v.data(), 0, Format::parse("e5m2")));
}

}  // namespace
}  // namespace mpsim::test
