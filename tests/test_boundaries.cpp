// Boundary values of each format with hand-derived expected results (from the standards'
// definitions, not from any code): zeros, the smallest subnormal and half of it, the subnormal /
// normal boundary, the largest finite value and the overflow tie just above it, infinities,
// NaN, and fp32 subnormal inputs.
#include <gtest/gtest.h>

#include <cmath>

#include "mpsim/quantize.h"
#include "oracle.h"

namespace mpsim {
namespace {

const double inf = INFINITY;
double p2(int e) { return std::ldexp(1.0, e); }

struct Row {
  const char* fmt;
  double x;
  double want;  // NAN means "NaN"
};

TEST(Boundaries, HandDerivedValues) {
  const Row rows[] = {
      // e4m3fn: subnormal step 2^-9, min normal 2^-6, max 448 = 1.75 * 2^8, next step 480 is NaN.
      {"e4m3fn", 0.0, 0.0}, {"e4m3fn", -0.0, -0.0}, {"e4m3fn", p2(-9), p2(-9)}, {"e4m3fn", p2(-10), 0.0},
      {"e4m3fn", p2(-10) * 1.0000001, p2(-9)}, {"e4m3fn", 7 * p2(-9), 7 * p2(-9)}, {"e4m3fn", p2(-6), p2(-6)},
      {"e4m3fn", 15 * p2(-10), p2(-6)},  // tie between 7 * 2^-9 (odd code) and 2^-6 (even)
      {"e4m3fn", 448, 448}, {"e4m3fn", 464, 448}, {"e4m3fn", 464.00001, NAN}, {"e4m3fn", inf, NAN}, {"e4m3fn", -inf, NAN},
      {"e4m3fn", NAN, NAN}, {"e4m3fn", p2(-149), 0.0}, {"e4m3fn@ru", p2(-149), p2(-9)}, {"e4m3fn@rz", 1e9, 448},
      {"e4m3fn@rd", -1e9, NAN}, {"e4m3fn@ru", -1e9, -448}, {"e4m3fn:sat", 1e9, 448}, {"e4m3fn:sat", -inf, -448},
      // e5m2: IEEE-like, max 57344 = 1.75 * 2^15, overflow tie 61440 goes to inf (max has an odd code).
      {"e5m2", 57344, 57344}, {"e5m2", 61439.99, 57344}, {"e5m2", 61440, inf}, {"e5m2", -61440, -inf}, {"e5m2", p2(-16), p2(-16)},
      {"e5m2", p2(-17), 0.0}, {"e5m2", 3 * p2(-18), p2(-16)}, {"e5m2", inf, inf}, {"e5m2", -inf, -inf}, {"e5m2", p2(-140), 0.0},
      {"e5m2@rna", p2(-17), p2(-16)},
      // e2m1fn: values 0, .5, 1, 1.5, 2, 3, 4, 6; no inf/NaN: overflow saturates.
      {"e2m1fn", 0.25, 0.0}, {"e2m1fn", 0.75, 1.0}, {"e2m1fn", 2.5, 2.0}, {"e2m1fn", 5.0, 4.0}, {"e2m1fn", 7.0, 6.0},
      {"e2m1fn", 100, 6.0}, {"e2m1fn", inf, 6.0}, {"e2m1fn", -inf, -6.0}, {"e2m1fn", NAN, NAN}, {"e2m1fn@ro", 2.5, 3.0},
      // e8m0fnu: powers of two 2^-127 .. 2^127, NaN 0xFF, no zero, no sign.
      {"e8m0fnu", 3.0, 2.0}, {"e8m0fnu", 6.0, 8.0}, {"e8m0fnu", 0.0, NAN}, {"e8m0fnu", -1.0, NAN}, {"e8m0fnu", p2(-130), p2(-127)},
      {"e8m0fnu", p2(127), p2(127)}, {"e8m0fnu", p2(128), NAN}, {"e8m0fnu", inf, NAN}, {"e8m0fnu@rz", p2(128), p2(127)},
      // e4m3fnuz: bias 8, max 240, no -0, NaN 0x80; 248 ties to the odd max code, so it overflows.
      {"e4m3fnuz", -0.0, 0.0}, {"e4m3fnuz", -1e-10, 0.0}, {"e4m3fnuz", 240, 240}, {"e4m3fnuz", 247.9, 240}, {"e4m3fnuz", 248, NAN},
      {"e4m3fnuz", p2(-10), p2(-10)}, {"e4m3fnuz", p2(-11), 0.0},
      // e5m2:cfg5: 2^-15 is zero; the smallest positive value is 1.25 * 2^-15, max 1.5 * 2^16.
      {"e5m2:cfg5", p2(-15), 1.25 * p2(-15)}, {"e5m2:cfg5", 0.625 * p2(-15), 0.0}, {"e5m2:cfg5", 0.6251 * p2(-15), 1.25 * p2(-15)},
      {"e5m2:cfg5", 98304, 98304}, {"e5m2:cfg5", 106496, 98304}, {"e5m2:cfg5", 106497, inf}, {"e5m2:cfg5", NAN, NAN},
      // e5m2:cfg2: subnormal results flush to zero after rounding.
      {"e5m2:cfg2", p2(-16), 0.0}, {"e5m2:cfg2", 0.9 * p2(-14), p2(-14)}, {"e5m2:cfg2", 0.8 * p2(-14), 0.0},
      {"e5m2:cfg2", -0.8 * p2(-14), -0.0},
      // e5m2:cfg6: no subnormals; the tie at 2^-15 goes to zero.
      {"e5m2:cfg6", p2(-15), 0.0}, {"e5m2:cfg6", 1.01 * p2(-15), p2(-14)}, {"e5m2:cfg6@ro", p2(-16), p2(-14)},
      // fp16 and bf16.
      {"fp16", 65504, 65504}, {"fp16", 65519.99, 65504}, {"fp16", 65520, inf}, {"fp16", p2(-25), 0.0}, {"fp16", p2(-24), p2(-24)},
      {"fp16", 1.5 * p2(-25), p2(-24)}, {"bf16", 1 + p2(-8), 1.0}, {"bf16", 1 + 3 * p2(-8), 1 + p2(-6)},
      {"bf16", p2(-133), p2(-133)}, {"bf16", p2(-134), 0.0},
      // fp4r4: +-4^(e-3): 1/16, 1/4, 1, 4, 16, 64, 256; tie 2.5 * 4^k goes to the even code.
      {"fp4r4", 2.5, 4.0}, {"fp4r4", 10.0, 4.0}, {"fp4r4", 40.0, 64.0}, {"fp4r4", 2.6, 4.0}, {"fp4r4", 1000, 256}, {"fp4r4", 1.0 / 32, 0.0},
      {"fp4r4", 0.04, 1.0 / 16},
  };
  for (const auto& r : rows) {
    const double got = quantize(r.x, Format::parse(r.fmt));
    EXPECT_TRUE(test::same(got, r.want)) << r.fmt << " x=" << std::hexfloat << r.x << " got " << got << " want " << r.want;
  }
}

TEST(Boundaries, Fp32CarrierAgreesWithFp64) {
  for (const char* name : {"e4m3fn", "e5m2", "bf16", "fp16", "e2m1fn", "e5m2:cfg5", "q8.13"}) {
    const Format f = Format::parse(name);
    for (float x : {0.3f, -1e-30f, 1e30f, 3.0e-40f, 448.5f, -65520.0f}) {
      EXPECT_TRUE(test::same(quantize(x, f), static_cast<float>(quantize(static_cast<double>(x), f)))) << name << " " << x;
    }
  }
}

}  // namespace
}  // namespace mpsim
