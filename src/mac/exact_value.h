// An exact binary number of any width, with IEEE-style signed zero, infinity and NaN
// (internal to the exact MAC reference).
//
// Finite values are (-1)^neg * mag * 2^exp with an integer mag of any width. Products of two
// doubles and sums of such values over the whole fp64 range (2^-2148 ... 2^2048 for products)
// are held without rounding; the reference rounds only where the MAC model says a rounding
// happens (round_exact.h), and then exactly once.
#pragma once

#include <cstdint>

#include "big_uint.h"

namespace mpsim::detail {

struct ExactValue {
  enum class Kind : std::uint8_t { finite, inf, nan };
  Kind kind = Kind::finite;
  bool neg = false;        // sign; meaningful for zero and infinity too
  BigUint mag;             // finite: odd or zero (normalized so that equal values compare equal)
  std::int64_t exp = 0;    // finite nonzero: value = mag * 2^exp; zero: 0

  static ExactValue from_double(double x);
  static ExactValue zero(bool negative = false);
  static ExactValue nan();
  static ExactValue infinity(bool negative);
  // mag * 2^exp with the given sign (normalizes).
  static ExactValue make(bool negative, BigUint m, std::int64_t e);

  bool is_nan() const { return kind == Kind::nan; }
  bool is_inf() const { return kind == Kind::inf; }
  bool is_finite() const { return kind == Kind::finite; }
  bool is_zero() const { return kind == Kind::finite && mag.is_zero(); }

  // floor(log2 |x|) of a finite nonzero value.
  std::int64_t ilogb() const { return exp + mag.bit_length() - 1; }

  // Whether the value is exactly this double (NaN equals NaN here; +0 and -0 are different).
  bool same_as(double x) const;
  // The double with exactly this value, when there is one (otherwise false).
  bool to_double_exact(double& out) const;

  ExactValue negated() const;
  // Exact product with IEEE special cases (0 * inf = NaN, sign of zero = xor of signs).
  static ExactValue mul(const ExactValue& a, const ExactValue& b);
  // Exact sum with IEEE special cases: inf + -inf = NaN; an exact zero sum of nonzero terms, or
  // of zeros of opposite signs, is +0, except under round-toward-minus-infinity (-0), as
  // IEEE 754 section 6.3 prescribes; -0 + -0 = -0.
  static ExactValue add(const ExactValue& a, const ExactValue& b, bool round_down = false);

  // Exact comparison of magnitudes of two finite values: <0, 0, >0.
  static int compare_magnitude(const ExactValue& a, const ExactValue& b);
};

}  // namespace mpsim::detail
