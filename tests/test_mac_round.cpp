// Rounding exact values of any width (src/mac/round_exact): bit-identical to the scalar
// reference quantizer on every double, and equal to the independent MPFR oracle on values
// that no double can hold (wide sums and products, sticky bits thousands of places down).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "../src/mac/big_uint.h"
#include "../src/mac/exact_value.h"
#include "../src/mac/round_exact.h"
#include "mac_oracle.h"
#include "mpsim/quantize.h"
#include "oracle.h"
#include "sample_inputs.h"

namespace mpsim {
namespace {

using detail::BigUint;
using detail::ExactValue;
using detail::round_exact;
using test::same;

const char* const kFormats[] = {
    "fp64", "fp32", "tf32", "bf16", "fp16", "dlfloat16", "e5m2", "e4m3", "e4m3fn", "e4m3fnuz", "e5m2fnuz", "e3m2fn",
    "e2m3fn", "e2m1fn", "e8m0fnu", "fp4r4", "e5m2:cfg2", "e5m2:cfg4", "e5m2:cfg5", "e5m2:cfg6", "e4m3:cfg5",
    "e4m3fn:sat", "e6m5", "e5m5", "e6m5:cfg5", "e5m10:cfg5", "e8m7:cfg6", "e4m0", "e3m1:sub=flushin", "e8m3:bias=120",
    "e11m52:cfg2", "e10m40:cfg5", "q8.13", "q8.13:wrap", "q4.4", "uq4.4", "q3.5:wrap", "uq8.8:wrap", "q1.7", "q30.23", "q11.13",
    "int8", "uint8", "int4", "int8:scale=0.25", "int8:scale=0.1", "int8:scale=0.5:zp=3", "uint4:scale=2",
    "int32:scale=0x1p-13"};
const char* const kModes[] = {"rne", "rna", "rz", "ru", "rd", "ro", "sr", "sr1", "sr8", "sr13", "sr32"};

bool same_flags(const QuantFlags& a, const QuantFlags& b) {
  return a.inexact == b.inexact && a.overflow == b.overflow && a.saturated == b.saturated && a.underflow == b.underflow &&
         a.nan_input == b.nan_input && a.nan_result == b.nan_result;
}

TEST(BigUint, Arithmetic) {
  const BigUint one(1);
  const BigUint big = one.shl(300).sub(one);  // 2^300 - 1
  EXPECT_EQ(big.bit_length(), 300);
  EXPECT_EQ(big.add(one), one.shl(300));
  EXPECT_EQ(big.shr(299), one);
  EXPECT_EQ(big.low_bits(64).to_u64(), ~std::uint64_t{0});
  EXPECT_EQ(one.shl(300).trailing_zeros(), 300);
  // (2^150 + 3)^2 = 2^300 + 6 * 2^150 + 9
  const BigUint x = one.shl(150).add(BigUint(3));
  EXPECT_EQ(x.mul(x), one.shl(300).add(BigUint(6).shl(150)).add(BigUint(9)));
  std::uint64_t rem = 0;
  const BigUint q = x.mul(x).divmod(7, rem);
  EXPECT_EQ(q.mul(BigUint(7)).add(BigUint(rem)), x.mul(x));
  EXPECT_LT(rem, 7u);
  EXPECT_TRUE(BigUint(5) < BigUint(6));
  EXPECT_TRUE(one.shl(64) > BigUint(~std::uint64_t{0}));
}

TEST(ExactValue, ArithmeticAndSpecials) {
  const auto E = ExactValue::from_double;
  double d = 0;
  ASSERT_TRUE(ExactValue::add(E(1.0), E(0x1p-60)).to_double_exact(d) == false);  // needs 61 bits
  ASSERT_TRUE(ExactValue::add(E(0.5), E(0.25)).to_double_exact(d));
  EXPECT_EQ(d, 0.75);
  ASSERT_TRUE(ExactValue::mul(E(-3.0), E(0x1p-1074)).to_double_exact(d));
  EXPECT_EQ(d, -3 * 0x1p-1074);
  EXPECT_TRUE(ExactValue::mul(E(0.0), E(INFINITY)).is_nan());
  EXPECT_TRUE(ExactValue::add(E(INFINITY), E(-INFINITY)).is_nan());
  EXPECT_TRUE(ExactValue::add(E(INFINITY), E(-1e308)).same_as(INFINITY));
  // IEEE signs of exact zeros.
  EXPECT_TRUE(ExactValue::add(E(-0.0), E(-0.0)).same_as(-0.0));
  EXPECT_TRUE(ExactValue::add(E(-0.0), E(0.0)).same_as(0.0));
  EXPECT_TRUE(ExactValue::add(E(-0.0), E(0.0), true).same_as(-0.0));
  EXPECT_TRUE(ExactValue::add(E(1.5), E(-1.5)).same_as(0.0));
  EXPECT_TRUE(ExactValue::add(E(1.5), E(-1.5), true).same_as(-0.0));
  EXPECT_TRUE(ExactValue::mul(E(-0.0), E(2.0)).same_as(-0.0));
  EXPECT_TRUE(ExactValue::mul(E(-0.0), E(-2.0)).same_as(0.0));
  // The whole fp64 range in one exact sum, and back.
  const ExactValue s = ExactValue::add(ExactValue::mul(E(0x1p1023), E(0x1p1023)), ExactValue::mul(E(0x1p-1074), E(0x1p-1074)));
  EXPECT_EQ(s.ilogb(), 2046);
  EXPECT_EQ(s.mag.bit_length(), 2046 + 2148 + 1);
  const ExactValue back = ExactValue::add(s, ExactValue::mul(E(0x1p1023), E(-0x1p1023)));
  EXPECT_EQ(back.ilogb(), -2148);
}

// round_exact of a double equals quantize_ref (value bits and flags) for every format and
// mode, the random words of sr/srN included.
TEST(RoundExact, BitIdenticalToQuantizeRefOnDoubles) {
  std::mt19937_64 gen(99);
  long checked = 0;
  for (const char* name : kFormats) {
    const Format base = Format::parse(name);
    // Every value, midpoint and neighbour of the narrow formats; a fixed sample of the wide ones.
    std::vector<double> inputs = test::sample_inputs(base, 150);
    if (inputs.size() > 6000) {
      std::vector<double> sub;
      const std::size_t step = inputs.size() / 6000 + 1;
      for (std::size_t i = gen() % step; i < inputs.size(); i += step) sub.push_back(inputs[i]);
      inputs = std::move(sub);
    }
    for (const char* mode : kModes) {
      const Format f = base.with_rounding(parse_rounding(mode));
      const RandomKey key{gen(), static_cast<std::uint32_t>(gen())};
      for (std::size_t i = 0; i < inputs.size(); ++i) {
        const double x = inputs[i];
        const std::uint64_t index = gen();
        const QuantResult want = quantize_ref(x, f, index, key);
        const QuantResult got = round_exact(ExactValue::from_double(x), f, index, key);
        ASSERT_TRUE(same(got.value, want.value) && same_flags(got.flags, want.flags))
            << f.to_string() << " x=" << x << " (" << std::hexfloat << x << ") got " << got.value << " want " << want.value;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 500000);
}

// Values built so that the first random word equals the first 32 bits of the fraction: sr must
// then read the following words, exactly as the scalar reference does.
TEST(RoundExact, StochasticTieOnFirstWordReadsFurtherWords) {
  const Format f = Format::parse("bf16@sr");
  const RandomKey key{5, 9};
  int done = 0;
  for (std::uint64_t index = 0; index < 64; ++index) {
    const std::uint32_t w0 = random_word(key, index, 0);
    // x = 1 + (w0 / 2^32 + t) * 2^-7, a fraction whose first word is w0 followed by t's bits.
    for (double t : {0x1p-40, 0x1p-33, 0x1.8p-33}) {
      const double frac = std::ldexp(static_cast<double>(w0), -32) + t;
      if (frac >= 1) continue;
      const double x = 1 + frac * 0x1p-7;  // exact: 7 + 33 + ... bits fit 53
      const QuantResult want = quantize_ref(x, f, index, key);
      const QuantResult got = round_exact(ExactValue::from_double(x), f, index, key);
      ASSERT_TRUE(same(got.value, want.value)) << x;
      ++done;
    }
  }
  EXPECT_GT(done, 100);
}

const char* const kOracleFormats[] = {"fp64", "fp32", "bf16", "fp16", "e6m5", "e5m5", "e5m2", "e4m3fn", "e4m3fnuz",
                                      "e3m2fn", "e5m2:cfg4", "e4m3fn:sat", "q8.13", "q8.13:wrap", "q11.13", "uq4.4",
                                      "q30.23:wrap", "q1.52"};

// Exact values no double can hold: sums of two or three doubles with exponents far apart
// (sticky bits far below the rounding position, ties broken by a bit 2^-1000 down), and exact
// products of two doubles, against the MPFR oracle in every mode.
TEST(RoundExact, MatchesMpfrOracleOnWideValues) {
  std::mt19937_64 gen(2024);
  std::uniform_real_distribution<double> unit(1.0, 2.0);
  long checked = 0;
  for (const char* name : kOracleFormats) {
    const Format base = Format::parse(name);
    const FormatInfo info = describe(base);
    const int top = std::ilogb(info.max_finite);
    const int bottom = std::ilogb(info.min_subnormal > 0 ? info.min_subnormal : info.step);
    const std::vector<double> values = [&] {
      std::vector<double> v;
      if (base.bits() <= 16) v = test::format_values(base);
      return v;
    }();
    for (const char* mode : kModes) {
      const Format f = base.with_rounding(parse_rounding(mode));
      const RandomKey key{gen(), 3};
      for (int rep = 0; rep < 400; ++rep) {
        // A main term: a value of the format, a midpoint, or a random number near its range.
        double x;
        const int kind = static_cast<int>(gen() % 4);
        if (!values.empty() && kind == 0) {
          x = values[gen() % values.size()];
        } else if (!values.empty() && kind == 1) {
          const std::size_t i = gen() % (values.size() - 1);
          x = (values[i] + values[i + 1]) / 2;
        } else {
          const int e = bottom - 3 + static_cast<int>(gen() % static_cast<std::uint64_t>(top - bottom + 6));
          x = std::ldexp(unit(gen), e);
        }
        if (gen() & 1) x = -x;
        // A tiny second (and third) term, far below, of either sign; or a product.
        ExactValue v = ExactValue::from_double(x);
        test::Mp m(x);
        const int variant = static_cast<int>(gen() % 3);
        if (variant == 0 || variant == 1) {
          const int terms = variant + 1;
          for (int t = 0; t < terms; ++t) {
            const int drop = 1 + static_cast<int>(gen() % 1100);
            double y = std::ldexp(unit(gen), std::max(std::ilogb(x == 0 ? 1.0 : x) - drop, -1074));
            if (gen() & 1) y = -y;
            v = ExactValue::add(v, ExactValue::from_double(y));
            m = test::Mp::add(m, test::Mp(y), false);
          }
        } else {
          const double y = std::ldexp(unit(gen), static_cast<int>(gen() % 40) - 20);
          v = ExactValue::mul(v, ExactValue::from_double(y));
          m = test::Mp::mul(m, test::Mp(y));
        }
        const std::uint64_t index = gen();
        const double want = test::oracle_round(m, f, index, key);
        const double got = round_exact(v, f, index, key).value;
        ASSERT_TRUE(same(got, want)) << f.to_string() << " x=" << std::hexfloat << x << " got " << got << " want " << want;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 70000);
}

// The double-rounding trap: a value just above a midpoint of the target by far less than
// any carrier's ulp must round up in rne, and just below must round down.
TEST(RoundExact, NoDoubleRoundingNearMidpoints) {
  const Format e6m5 = Format::parse("e6m5");
  const double lo = 1.0, hi = 1.0 + 0x1p-5, mid = 1.0 + 0x1p-6;
  const ExactValue m = ExactValue::from_double(mid);
  const ExactValue up = ExactValue::add(m, ExactValue::from_double(0x1p-1000));
  const ExactValue down = ExactValue::add(m, ExactValue::from_double(-0x1p-1000));
  EXPECT_EQ(round_exact(m, e6m5).value, lo);  // tie to even
  EXPECT_EQ(round_exact(up, e6m5).value, hi);
  EXPECT_EQ(round_exact(down, e6m5).value, lo);
  // fp64 target: 1 + 2^-53 + 2^-1074 must round up (an fp64 RNE carrier would give 1).
  const Format fp64 = Format::parse("fp64");
  const ExactValue t = ExactValue::add(ExactValue::add(ExactValue::from_double(1.0), ExactValue::from_double(0x1p-53)),
                                       ExactValue::from_double(0x1p-1074));
  EXPECT_EQ(round_exact(t, fp64).value, 1.0 + 0x1p-52);
  // Fixed point wraps from a value far beyond the range: 2^200 + 3 * 2^-13 in q8.13:wrap is
  // 3 * 2^-13 (2^200 is a multiple of 2^21 steps).
  const ExactValue w = ExactValue::add(ExactValue::from_double(0x1p200), ExactValue::from_double(3 * 0x1p-13));
  EXPECT_EQ(round_exact(w, Format::parse("q8.13:wrap")).value, 3 * 0x1p-13);
  EXPECT_EQ(round_exact(w, Format::parse("q8.13")).value, 128 - 0x1p-13);
}

}  // namespace
}  // namespace mpsim
