// Stochastic rounding: sr always returns one of the two neighbours, is unbiased within binomial
// bounds, and is reproducible for a fixed (seed, stream, index); srN has a bias of at most
// 2^-N ulp, always toward zero, as its definition (truncate after adding N random bits) implies.
#include <gtest/gtest.h>

#include <cmath>

#include "mpsim/quantize.h"
#include "oracle.h"

namespace mpsim {
namespace {

struct Case {
  const char* fmt;
  double x;
};

// Neighbours of x in the format, from the round-toward-zero/away oracle results.
std::pair<double, double> neighbours(const Format& f, double x) {
  return {quantize(x, f.with_rounding({RoundMode::rd, 0})), quantize(x, f.with_rounding({RoundMode::ru, 0}))};
}

TEST(StochasticRounding, AlwaysANeighbourAndUnbiased) {
  const Case cases[] = {{"e4m3fn", 0.3},         {"e5m2", -1.0e-5},   {"bf16", 3.14159},      {"fp16", 1e-7},
                        {"e2m1fn", 2.6},         {"e5m2:cfg5", 2e-5}, {"e3m2fn", -0.0301},     {"fp4r4", 0.3},
                        {"q4.4", 0.3},           {"uq2.3", 1.01},     {"int8:scale=0.1:zp=3", 0.234}, {"int8:scale=0.1:zp=3", -0.234}, {"e8m0fnu", 3.0},
                        {"e4m3:cfg6", 0.005}};
  constexpr int kTrials = 200000;
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.fmt) + " x=" + std::to_string(c.x));
    const Format f = Format::parse(c.fmt).with_rounding({RoundMode::sr, 0});
    const auto [lo, hi] = neighbours(Format::parse(c.fmt), c.x);
    ASSERT_LT(lo, hi);
    const double p = (c.x - lo) / (hi - lo);  // probability of rounding to hi
    long ups = 0;
    for (int i = 0; i < kTrials; ++i) {
      const double q = quantize(c.x, f, static_cast<std::uint64_t>(i), RandomKey{42, 1});
      ASSERT_TRUE(q == lo || q == hi) << q;
      ups += q == hi;
    }
    // 5 standard deviations of the binomial count.
    const double sd = std::sqrt(kTrials * p * (1 - p));
    EXPECT_NEAR(static_cast<double>(ups), kTrials * p, 5 * sd + 1);
  }
}

TEST(StochasticRounding, SrNBiasIsAtMostTwoToMinusNUlp) {
  // x = 1 + 0.3 ulp of e4m3fn (ulp 1/8): with N bits the probability of rounding up is
  // floor(0.3 * 2^N) / 2^N exactly.
  const double ulp = 0.125;
  for (int n : {1, 2, 3, 4, 8}) {
    const Format f = Format::parse("e4m3fn").with_rounding({RoundMode::srn, n});
    const double x = 1.0 + 0.3 * ulp;
    constexpr int kTrials = 200000;
    long ups = 0;
    for (int i = 0; i < kTrials; ++i) ups += quantize(x, f, static_cast<std::uint64_t>(i), RandomKey{7, 0}) > 1.0;
    const double p = std::floor(0.3 * std::ldexp(1.0, n)) / std::ldexp(1.0, n);
    const double sd = std::sqrt(kTrials * p * (1 - p));
    EXPECT_NEAR(static_cast<double>(ups), kTrials * p, 5 * sd + 1) << "N=" << n;
    EXPECT_LE(0.3 - p, std::ldexp(1.0, -n));  // the bias bound itself
  }
}

TEST(StochasticRounding, ReproducibleAndKeyed) {
  const Format f = Format::parse("e5m2@sr");
  const Format f8 = Format::parse("e5m2@sr8");
  int differ_seed = 0, differ_stream = 0;
  for (std::uint64_t i = 0; i < 1000; ++i) {
    const double x = 0.1 + static_cast<double>(i) * 1e-3;
    EXPECT_EQ(quantize(x, f, i, {1, 0}), quantize(x, f, i, {1, 0}));
    EXPECT_EQ(quantize(x, f8, i, {1, 0}), quantize(x, f8, i, {1, 0}));
    differ_seed += quantize(x, f, i, {1, 0}) != quantize(x, f, i, {2, 0});
    differ_stream += quantize(x, f, i, {1, 0}) != quantize(x, f, i, {1, 5});
  }
  EXPECT_GT(differ_seed, 100);
  EXPECT_GT(differ_stream, 100);
}

TEST(StochasticRounding, ExactValuesAreNeverMoved) {
  const Format f = Format::parse("e4m3fn@sr");
  const test::TableOracle oracle(Format::parse("e4m3fn"));
  for (double v : oracle.values()) {
    for (std::uint64_t i = 0; i < 50; ++i) EXPECT_EQ(quantize(v, f, i, {3, 3}), v);
  }
}

TEST(StochasticRounding, TinyFractionsAreStillUnbiased) {
  // f = 2^-40 of an ulp: exact sr rounds up with probability 2^-40, so never in 10^5 tries;
  // sr with 8 bits never rounds up; both must stay on the lower neighbour.
  const double x = 1.0 + std::ldexp(0.125, -40);
  for (const char* m : {"e4m3fn@sr", "e4m3fn@sr8"}) {
    const Format f = Format::parse(m);
    for (std::uint64_t i = 0; i < 100000; ++i) ASSERT_EQ(quantize(x, f, i, {9, 0}), 1.0) << m;
  }
}

}  // namespace
}  // namespace mpsim
