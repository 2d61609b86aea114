// Exact arithmetic on ExactValue: nothing here rounds.
#include "exact_value.h"

#include <algorithm>
#include <cmath>

namespace mpsim::detail {

ExactValue ExactValue::zero(bool negative) {
  ExactValue v;
  v.neg = negative;
  return v;
}

ExactValue ExactValue::nan() {
  ExactValue v;
  v.kind = Kind::nan;
  return v;
}

ExactValue ExactValue::infinity(bool negative) {
  ExactValue v;
  v.kind = Kind::inf;
  v.neg = negative;
  return v;
}

ExactValue ExactValue::make(bool negative, BigUint m, std::int64_t e) {
  ExactValue v;
  v.neg = negative;
  if (m.is_zero()) return v;
  // Strip trailing zeros so that every value has one representation (cheap equality, and
  // shifts stay as short as the value allows).
  const std::int64_t tz = m.trailing_zeros();
  v.mag = m.shr(tz);
  v.exp = e + tz;
  return v;
}

ExactValue ExactValue::from_double(double x) {
  if (std::isnan(x)) return nan();
  const bool negative = std::signbit(x);
  if (std::isinf(x)) return infinity(negative);
  if (x == 0) return zero(negative);
  // |x| = N * 2^(e - 53) with N an integer below 2^53: frexp and ldexp are exact.
  int e = 0;
  const double f = std::frexp(std::fabs(x), &e);
  const auto n = static_cast<std::uint64_t>(std::ldexp(f, 53));
  return make(negative, BigUint(n), static_cast<std::int64_t>(e) - 53);
}

bool ExactValue::same_as(double x) const {
  if (std::isnan(x)) return is_nan();
  if (is_nan()) return false;
  if (neg != static_cast<bool>(std::signbit(x))) return false;
  if (std::isinf(x)) return is_inf();
  if (is_inf()) return false;
  const ExactValue o = from_double(x);
  return mag == o.mag && exp == o.exp;
}

bool ExactValue::to_double_exact(double& out) const {
  if (is_nan()) {
    out = std::nan("");
    return true;
  }
  if (is_inf()) {
    out = neg ? -HUGE_VAL : HUGE_VAL;
    return true;
  }
  if (is_zero()) {
    out = neg ? -0.0 : 0.0;
    return true;
  }
  // mag is odd: the value is a double iff mag < 2^53 and the exponent range allows it
  // (smallest step 2^-1074, largest value below 2^1024).
  if (mag.bit_length() > 53 || exp < -1074 || ilogb() > 1023) return false;
  out = std::ldexp(static_cast<double>(mag.to_u64()), static_cast<int>(exp));  // exact
  if (neg) out = -out;
  return true;
}

ExactValue ExactValue::negated() const {
  ExactValue v = *this;
  if (!is_nan()) v.neg = !v.neg;
  return v;
}

ExactValue ExactValue::mul(const ExactValue& a, const ExactValue& b) {
  if (a.is_nan() || b.is_nan()) return nan();
  const bool negative = a.neg != b.neg;
  if (a.is_inf() || b.is_inf()) {
    if (a.is_zero() || b.is_zero()) return nan();  // 0 * inf
    return infinity(negative);
  }
  if (a.is_zero() || b.is_zero()) return zero(negative);
  return make(negative, a.mag.mul(b.mag), a.exp + b.exp);
}

int ExactValue::compare_magnitude(const ExactValue& a, const ExactValue& b) {
  if (a.is_zero() || b.is_zero()) return (a.is_zero() ? 0 : 1) - (b.is_zero() ? 0 : 1);
  const std::int64_t la = a.ilogb(), lb = b.ilogb();
  if (la != lb) return la < lb ? -1 : 1;
  // Same binade: align to the smaller exponent and compare the integers.
  const std::int64_t e = std::min(a.exp, b.exp);
  const BigUint ma = a.mag.shl(a.exp - e), mb = b.mag.shl(b.exp - e);
  const auto c = ma <=> mb;
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

ExactValue ExactValue::add(const ExactValue& a, const ExactValue& b, bool round_down) {
  if (a.is_nan() || b.is_nan()) return nan();
  if (a.is_inf() || b.is_inf()) {
    if (a.is_inf() && b.is_inf() && a.neg != b.neg) return nan();  // inf - inf
    return a.is_inf() ? a : b;
  }
  if (a.is_zero() && b.is_zero()) {
    // Zeros of the same sign keep it; opposite signs give +0 (-0 when rounding down).
    return zero(a.neg == b.neg ? a.neg : round_down);
  }
  if (a.is_zero()) return b;
  if (b.is_zero()) return a;
  const std::int64_t e = std::min(a.exp, b.exp);
  const BigUint ma = a.mag.shl(a.exp - e), mb = b.mag.shl(b.exp - e);
  if (a.neg == b.neg) return make(a.neg, ma.add(mb), e);
  const auto c = ma <=> mb;
  if (c == 0) return zero(round_down);  // x + (-x)
  return c > 0 ? make(a.neg, ma.sub(mb), e) : make(b.neg, mb.sub(ma), e);
}

}  // namespace mpsim::detail
