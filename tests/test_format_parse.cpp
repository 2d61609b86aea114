// The format grammar: canonical round trips, case-insensitivity, derived properties checked
// against the published values of each standard, and clear errors for bad strings.
#include <gtest/gtest.h>

#include <cmath>

#include "mpsim/format.h"

namespace mpsim {
namespace {

TEST(FormatParse, CanonicalRoundTrip) {
  const char* canon[] = {"fp64", "fp32", "tf32", "bf16", "fp16", "dlfloat16", "e5m2", "e4m3", "e4m3fn", "e4m3fnuz",
                         "e5m2fnuz", "e3m2fn", "e2m3fn", "e2m1fn", "e8m0fnu", "fp4r4", "e5m2:cfg2", "e5m2:cfg4",
                         "e5m2:cfg5", "e5m2:cfg6", "e6m5", "e4m3:sp=none:sub=flushin", "e5m2:sat@sr8", "e4m3fn:sat",
                         "e4m3:bias=9", "fp4r4:bias=5", "q8.13", "uq4.4:wrap@rz", "int8:scale=0.1:zp=3", "uint4:perchannel",
                         "fp16@hyst", "fp16@hyst3", "e5m2@ro"};
  for (const char* s : canon) {
    const Format f = Format::parse(s);
    EXPECT_EQ(f.to_string(), s);
    EXPECT_EQ(Format::parse(f.to_string()), f) << s;
  }
}

TEST(FormatParse, SameFormatSameString) {
  // Different spellings of one format print the same canonical string.
  const std::pair<const char*, const char*> pairs[] = {
      {"E5M2", "e5m2"},           {"e8m23", "fp32"},         {"e8m7", "bf16"},          {"e5m10", "fp16"},
      {"e4m3:sp=fn", "e4m3fn"},   {"e4m3:sp=fnuz", "e4m3fnuz"}, {"e5m2:cfg1", "e5m2"},  {"e5m2:cfg3", "e5m2"},
      {"e5m2:sp=ext:sub=asnormal", "e5m2:cfg5"}, {"e5m2:bias=15", "e5m2"}, {"e5m2@rne", "e5m2"},
      {"Q8.13:SAT", "q8.13"},     {"int8:scale=1:zp=0", "int8"}, {"e2m1:sp=none", "e2m1fn"}, {"E4M3FN@SR", "e4m3fn@sr"},
      {"e4m3fn:cfg5", "e4m3:cfg5"}, {"fp32:bias=127", "fp32"},
  };
  for (const auto& [in, out] : pairs) EXPECT_EQ(Format::parse(in).to_string(), out) << in;
}

struct Expected {
  const char* name;
  int bits;
  double max, min_normal, min_sub;
  bool inf, nan, neg_zero;
};

TEST(FormatProperties, PresetsMatchTheirStandards) {
  const Expected ex[] = {
      {"fp32", 32, 3.4028234663852886e38, std::ldexp(1.0, -126), std::ldexp(1.0, -149), true, true, true},
      {"fp16", 16, 65504, std::ldexp(1.0, -14), std::ldexp(1.0, -24), true, true, true},
      {"bf16", 16, 3.3895313892515355e38, std::ldexp(1.0, -126), std::ldexp(1.0, -133), true, true, true},
      {"tf32", 19, 3.4011621342146535e38, std::ldexp(1.0, -126), std::ldexp(1.0, -136), true, true, true},
      // OCP OFP8: E5M2 max 57344, E4M3 max 448 (no inf, NaN S.1111.111), subnormals 2^-16 / 2^-9
      {"e5m2", 8, 57344, std::ldexp(1.0, -14), std::ldexp(1.0, -16), true, true, true},
      {"e4m3fn", 8, 448, std::ldexp(1.0, -6), std::ldexp(1.0, -9), false, true, true},
      {"e4m3", 8, 240, std::ldexp(1.0, -6), std::ldexp(1.0, -9), true, true, true},
      // fnuz: bias one larger, no -0, NaN = 0x80
      {"e4m3fnuz", 8, 240, std::ldexp(1.0, -7), std::ldexp(1.0, -10), false, true, false},
      {"e5m2fnuz", 8, 57344, std::ldexp(1.0, -15), std::ldexp(1.0, -17), false, true, false},
      // OCP MX element formats: no inf, no NaN
      {"e3m2fn", 6, 28, 0.25, 0.0625, false, false, true},
      {"e2m3fn", 6, 7.5, 1.0, 0.125, false, false, true},
      {"e2m1fn", 4, 6, 1.0, 0.5, false, false, true},
      {"e8m0fnu", 8, std::ldexp(1.0, 127), std::ldexp(1.0, -127), std::ldexp(1.0, -127), false, true, false},
      // DLFloat16: 1-6-9, bias 31, no subnormals, one inf/NaN code
      {"dlfloat16", 16, std::ldexp(1.0 + 510.0 / 512, 32), std::ldexp(1.0, -30), std::ldexp(1.0, -30), true, true, true},
      // radix 4: +-4^(e-3), e = 1..7
      {"fp4r4", 4, 256, 1.0 / 16, 1.0 / 16, false, false, true},
      // CFG-5 of E5M2: all-ones exponent finite (max 1.5 * 2^16), zero field read as normal
      {"e5m2:cfg5", 8, 98304, 1.25 * std::ldexp(1.0, -15), 1.25 * std::ldexp(1.0, -15), true, false, true},
      {"e5m2:cfg4", 8, 98304, std::ldexp(1.0, -14), std::ldexp(1.0, -16), true, false, true},
  };
  for (const auto& e : ex) {
    SCOPED_TRACE(e.name);
    const FormatInfo info = describe(Format::parse(e.name));
    EXPECT_EQ(info.bits, e.bits);
    EXPECT_EQ(info.max_finite, e.max);
    EXPECT_EQ(info.min_normal, e.min_normal);
    EXPECT_EQ(info.min_subnormal, e.min_sub);
    EXPECT_EQ(info.has_inf, e.inf);
    EXPECT_EQ(info.has_nan, e.nan);
    EXPECT_EQ(info.has_neg_zero, e.neg_zero);
  }
}

TEST(FormatProperties, SpecialCodes) {
  EXPECT_EQ(describe(Format::parse("e4m3fn")).nan_codes, (std::vector<std::uint64_t>{0x7f, 0xff}));
  EXPECT_TRUE(describe(Format::parse("e4m3fn")).inf_codes.empty());
  EXPECT_EQ(describe(Format::parse("e5m2")).inf_codes, (std::vector<std::uint64_t>{0x7c, 0xfc}));
  EXPECT_EQ(describe(Format::parse("e5m2")).nan_codes.size(), 6u);
  EXPECT_EQ(describe(Format::parse("e4m3fnuz")).nan_codes, (std::vector<std::uint64_t>{0x80}));
  EXPECT_EQ(describe(Format::parse("e8m0fnu")).nan_codes, (std::vector<std::uint64_t>{0xff}));
  EXPECT_EQ(describe(Format::parse("e5m2:cfg5")).inf_codes, (std::vector<std::uint64_t>{0x7f, 0xff}));
  EXPECT_TRUE(describe(Format::parse("e2m1fn")).nan_codes.empty());
}

TEST(FormatProperties, UnitRoundoffAndRange) {
  const FormatInfo h = describe(Format::parse("fp16"));
  EXPECT_EQ(h.unit_roundoff, std::ldexp(1.0, -11));
  EXPECT_NEAR(h.dynamic_range_decades, std::log10(65504.0 / std::ldexp(1.0, -24)), 1e-12);
  EXPECT_EQ(h.emin, -14);
  EXPECT_EQ(h.emax, 15);
  const FormatInfo q = describe(Format::parse("q8.13"));
  EXPECT_EQ(q.step, std::ldexp(1.0, -13));
  EXPECT_EQ(q.max_finite, 128.0 - std::ldexp(1.0, -13));
  EXPECT_EQ(q.min_finite, -128.0);
  const FormatInfo i = describe(Format::parse("uint8:scale=0.5:zp=10"));
  EXPECT_EQ(i.max_finite, (255 - 10) * 0.5);
  EXPECT_EQ(i.min_finite, -5.0);
}

TEST(FormatCodec, EveryCodeDecodesAndEncodesBack) {
  for (const char* name : {"e5m2", "e4m3fn", "e4m3fnuz", "e5m2fnuz", "e3m2fn", "e2m1fn", "e8m0fnu", "fp4r4", "e5m2:cfg5",
                           "e4m3:cfg6", "fp16", "bf16", "dlfloat16", "q4.4", "uq3.5", "int4", "uint8:scale=0.25:zp=7"}) {
    const Format f = Format::parse(name);
    for (std::uint64_t c = 0; c < code_count(f); ++c) {
      const CodeValue v = decode(f, c);
      if (v.klass == CodeClass::nan) continue;
      // Codes that read as zero without being the zero code (flushed inputs) encode to zero.
      const std::uint64_t back = encode(f, v.value);
      EXPECT_EQ(decode(f, back).value, v.value) << name << " code " << c;
      if (v.klass != CodeClass::zero) {
        EXPECT_EQ(back, c) << name;
      }
    }
  }
}

TEST(FormatErrors, NameTheOffendingToken) {
  const std::pair<const char*, const char*> bad[] = {
      {"e4m3x", "unknown format 'e4m3x'"},
      {"e12m2", "exponent bits must be 1..11"},
      {"e5m53", "mantissa bits must be 0..52"},
      {"e5m2:cfg9", "'cfg9'"},
      {"e5m2:cfg5:sub=ieee", "'sub=ieee'"},
      {"e5m2:sub=half", "'sub=half'"},
      {"e5m2:sp=weird", "'sp=weird'"},
      {"e5m2:bias=x", "'bias=x'"},
      {"e5m2:foo", "unknown option 'foo'"},
      {"e5m2@rnx", "unknown rounding mode 'rnx'"},
      {"e5m2@sr0", "srN takes N random bits from 1 to 32"},
      {"e5m2@", "unknown rounding mode ''"},
      {"e5m2::sat", "empty option"},
      {"e5m2,e4m3", "character ','"},
      {"e5m2 ", "whitespace"},
      {"e8m0fnu:cfg5", "does not apply to e8m0fnu"},
      {"e11m52:bias=2000", "below fp64"},
      {"e11m52:bias=900", "beyond fp64"},
      {"e1m0", "no finite nonzero value"},
      {"q40.20", "magnitude bits"},
      {"q0.8", "counts the sign bit"},
      {"q8", "expected qI.F"},
      {"q8.13:round", "unknown option 'round'"},
      {"int64", "expected intN or uintN"},
      {"int8:scale=-1", "'scale=-1'"},
      {"int8:scale=abc", "'scale=abc'"},
      {"int8:zp=1.5", "'zp=1.5'"},
      {"uint8:zp=-1", "zero point"},
      {"hbfp4/16", "block formats"},
      {"mxfp4", "block formats"},
      {"", "empty format string"},
  };
  for (const auto& [in, msg] : bad) {
    try {
      (void)Format::parse(in);
      ADD_FAILURE() << "accepted '" << in << "'";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(msg), std::string::npos) << in << " -> " << e.what();
    }
  }
}

TEST(FormatCarrier, Fp32CarrierRejectsWhatItCannotHold) {
  EXPECT_TRUE(Format::parse("bf16").fits(Carrier::fp32));
  EXPECT_TRUE(Format::parse("fp32").fits(Carrier::fp32));
  EXPECT_TRUE(Format::parse("e4m3fn").fits(Carrier::fp32));
  EXPECT_FALSE(Format::parse("fp64").fits(Carrier::fp32));
  EXPECT_FALSE(Format::parse("e8m24").fits(Carrier::fp32));   // 25 significant bits
  EXPECT_FALSE(Format::parse("e9m10").fits(Carrier::fp32));   // range beyond fp32
  EXPECT_FALSE(Format::parse("e8m23:sp=fn").fits(Carrier::fp32));  // all-ones exponent finite: > FLT_MAX
  EXPECT_FALSE(Format::parse("q1.30").fits(Carrier::fp32));   // 30 magnitude bits
  EXPECT_TRUE(Format::parse("q8.13").fits(Carrier::fp32));
  EXPECT_THROW(Format::parse("fp64").require_fits(Carrier::fp32), FormatError);
}

}  // namespace
}  // namespace mpsim
