// Fixed point and scaled integers against MPFR: the quotient x/scale + zp is formed with 256
// bits (exact for every tie, so the rounding decision of the oracle is exact) and rounded with
// MPFR's own modes; saturation and wrap-around are checked by hand-computed cases.
#include <gtest/gtest.h>
#include <mpfr.h>

#include <cmath>
#include <random>

#include "mpsim/quantize.h"

namespace mpsim {
namespace {

// round(x / scale + zp) to an integer with MPFR, then clamp; value (z - zp) * scale in fp64.
double mpfr_integer(double x, double scale, long zp, long zmin, long zmax, RoundMode m) {
  mpfr_t q;
  mpfr_init2(q, 256);
  mpfr_set_d(q, x, MPFR_RNDN);
  mpfr_div_d(q, q, scale, MPFR_RNDN);
  mpfr_add_si(q, q, zp, MPFR_RNDN);
  mpfr_rnd_t r = MPFR_RNDN;
  switch (m) {
    case RoundMode::rne: r = MPFR_RNDN; break;
    case RoundMode::rz: r = MPFR_RNDZ; break;
    case RoundMode::ru: r = MPFR_RNDU; break;
    case RoundMode::rd: r = MPFR_RNDD; break;
    case RoundMode::rna: r = MPFR_RNDNA; break;
    default: break;
  }
  long z;
  if (m == RoundMode::rna) {
    // MPFR_RNDNA is only partially supported by mpfr_rint; do it by hand: floor(q + 1/2) for q >= 0.
    mpfr_t h;
    mpfr_init2(h, 256);
    mpfr_abs(h, q, MPFR_RNDN);
    mpfr_add_d(h, h, 0.5, MPFR_RNDN);
    mpfr_floor(h, h);
    z = mpfr_get_si(h, MPFR_RNDN) * (mpfr_sgn(q) < 0 ? -1 : 1);
    mpfr_clear(h);
  } else {
    mpfr_rint(q, q, r);
    z = mpfr_get_si(q, MPFR_RNDN);
  }
  mpfr_clear(q);
  z = std::min(std::max(z, zmin), zmax);
  return static_cast<double>(z - zp) * scale;
}

TEST(ScaledInteger, MatchesMpfrForRandomInputsScalesAndZeroPoints) {
  std::mt19937_64 gen(2024);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  const RoundMode modes[] = {RoundMode::rne, RoundMode::rna, RoundMode::rz, RoundMode::ru, RoundMode::rd};
  int checked = 0;
  for (const double scale : {0.1, 0.0173, 1.0 / 3.0, 0.5, 2.5e-3, 7.0}) {
    for (const long zp : {0L, 3L, -17L, 100L}) {
      for (const bool is_signed : {true, false}) {
        const int bits = 8;
        const long zmin = is_signed ? -128 : 0, zmax = is_signed ? 127 : 255;
        if (zp < zmin || zp > zmax) continue;
        IntSpec s{bits, is_signed, scale, zp, false};
        for (RoundMode m : modes) {
          const Format f = Format::from_integer(s, {m, 0});
          for (int i = 0; i < 3000; ++i) {
            double x = u(gen) * 150 * scale;
            // Every third input is an exact tie (k + 1/2) * scale as fp64 allows.
            if (i % 3 == 0) x = (std::floor(x / scale) + 0.5) * scale;
            const double want = mpfr_integer(x, scale, zp, zmin, zmax, m);
            ASSERT_EQ(quantize(x, f), want) << f.to_string() << " x=" << std::hexfloat << x;
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 100000);
}

TEST(ScaledInteger, TiesFollowTheParityOfTheCode) {
  // x/scale = 2.5 exactly: with zp = 0 the even code is 2, with zp = 1 it is 4 (3.5 -> 4).
  EXPECT_EQ(quantize(2.5, Format::parse("int8")), 2.0);
  EXPECT_EQ(quantize(2.5, Format::parse("int8:zp=1")), 3.0);  // z = 4, value (4 - 1) * 1
  EXPECT_EQ(quantize(-2.5, Format::parse("int8")), -2.0);
  EXPECT_EQ(quantize(300.0, Format::parse("int8")), 127.0);
  EXPECT_EQ(quantize(-300.0, Format::parse("int8")), -128.0);
  EXPECT_EQ(quantize(-0.4, Format::parse("uint8:zp=0")), 0.0);
  EXPECT_EQ(quantize(INFINITY, Format::parse("uint4:scale=0.5")), 7.5);
  EXPECT_TRUE(std::isnan(quantize(NAN, Format::parse("int8"))));
}

TEST(ScaledInteger, Fp32CarrierRoundsTheGridPointOnce) {
  // (z - zp) * 0.1 rounded once to fp32 equals the fp32 rounding of the MPFR product.
  const Format f = Format::parse("int8:scale=0.1");
  for (int k = -128; k <= 127; ++k) {
    mpfr_t p;
    mpfr_init2(p, 200);
    mpfr_set_d(p, 0.1, MPFR_RNDN);
    mpfr_mul_si(p, p, k, MPFR_RNDN);
    const float want = mpfr_get_flt(p, MPFR_RNDN);
    mpfr_clear(p);
    EXPECT_EQ(quantize(static_cast<float>(k * 0.1), f), want) << k;
  }
}

TEST(FixedPoint, MatchesMpfrRounding) {
  std::mt19937_64 gen(7);
  std::uniform_real_distribution<double> u(-140.0, 140.0);
  const RoundMode modes[] = {RoundMode::rne, RoundMode::rna, RoundMode::rz, RoundMode::ru, RoundMode::rd};
  for (RoundMode m : modes) {
    const Format f = Format::from_fixed(FixedSpec{8, 13, true, false}, {m, 0});  // q8.13
    for (int i = 0; i < 20000; ++i) {
      double x = u(gen);
      if (i % 4 == 0) x = (std::floor(std::ldexp(x, 13)) + 0.5) / 8192.0;  // ties
      const double want = mpfr_integer(x, std::ldexp(1.0, -13), 0, -(1L << 20), (1L << 20) - 1, m);
      ASSERT_EQ(quantize(x, f), want) << std::hexfloat << x;
    }
  }
}

TEST(FixedPoint, SaturationAndWrapAround) {
  const Format sat = Format::parse("q4.4");   // range [-8, 7.9375], step 1/16
  const Format wrap = Format::parse("q4.4:wrap");
  EXPECT_EQ(quantize(7.97, sat), 7.9375);     // rounds to 8.0, saturates
  EXPECT_EQ(quantize(-9.0, sat), -8.0);
  EXPECT_EQ(quantize(8.0, wrap), -8.0);       // 128 mod 256 -> -128 -> -8
  EXPECT_EQ(quantize(9.5, wrap), -6.5);       // 152 -> -104
  EXPECT_EQ(quantize(-8.0625, wrap), 7.9375); // -129 -> 127
  EXPECT_EQ(quantize(1e30, wrap), 0.0);       // a multiple of 2^8 steps
  EXPECT_EQ(quantize(INFINITY, wrap), 7.9375);  // infinity has no residue: saturates
  EXPECT_EQ(quantize(-0.01, sat), 0.0);
  EXPECT_FALSE(std::signbit(quantize(-0.01, sat)));  // fixed point has no -0
  const Format u = Format::parse("uq2.2:wrap");       // [0, 3.75]
  EXPECT_EQ(quantize(-0.25, u), 3.75);
  EXPECT_EQ(quantize(-0.25, Format::parse("uq2.2")), 0.0);
  // Q8.13 accumulator saturation (the MAC study's fixed-point accumulator).
  EXPECT_EQ(quantize(200.0, Format::parse("q8.13")), 128.0 - std::ldexp(1.0, -13));
  const QuantResult r = quantize_ref(200.0, Format::parse("q8.13"));
  EXPECT_TRUE(r.flags.overflow && r.flags.saturated);
}

}  // namespace
}  // namespace mpsim
