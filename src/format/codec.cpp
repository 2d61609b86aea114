// Codes <-> values: the bit layout of every element format. decode() is the definition of what
// each code means; the test oracle builds its value tables from it, independently of rounding.
#include <cmath>
#include <limits>

#include "float_geometry.h"
#include "integer_grid.h"
#include "mpsim/format.h"
#include "text.h"

namespace mpsim {

namespace {

using detail::FloatGeometry;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Two's complement n-bit code <-> signed integer.
long long sign_extend(std::uint64_t code, int n, bool is_signed) {
  if (!is_signed || n >= 64) return static_cast<long long>(code);
  const std::uint64_t sign = std::uint64_t{1} << (n - 1);
  return static_cast<long long>(code ^ sign) - static_cast<long long>(sign);
}

std::uint64_t to_code(long long v, int n) {
  return static_cast<std::uint64_t>(v) & ((n >= 64) ? ~std::uint64_t{0} : ((std::uint64_t{1} << n) - 1));
}

CodeValue decode_float(const FloatSpec& s, std::uint64_t code) {
  const FloatGeometry g(s);
  const int mag_bits = s.exp_bits + s.man_bits;
  const bool neg = s.is_signed && ((code >> mag_bits) & 1);
  const std::uint64_t c = code & (g.mag_codes - 1);
  const std::uint64_t all_ones = g.mag_codes - 1;
  const std::uint64_t field = c >> s.man_bits;
  const std::uint64_t mant = c & ((std::uint64_t{1} << s.man_bits) - 1);
  switch (s.sp) {
    case Specials::ieee:
      if (field == (std::uint64_t{1} << s.exp_bits) - 1) {
        if (mant == 0) return {neg ? -kInf : kInf, CodeClass::infinite};
        return {kNaN, CodeClass::nan};
      }
      break;
    case Specials::fn:
      if (c == all_ones) return {kNaN, CodeClass::nan};
      break;
    case Specials::fnuz:
      if (neg && c == 0) return {kNaN, CodeClass::nan};
      break;
    case Specials::ext:
      if (c == all_ones) return {neg ? -kInf : kInf, CodeClass::infinite};
      break;
    case Specials::none: break;
  }
  const double mag = g.magnitude(s, c);
  CodeClass k = CodeClass::normal;
  if (mag == 0) k = CodeClass::zero;
  else if (g.is_subnormal_code(s, c)) k = CodeClass::subnormal;
  return {neg ? -mag : mag, k};
}

std::uint64_t encode_float(const Format& f, const FloatSpec& s, double v) {
  const FloatGeometry g(s);
  const int mag_bits = s.exp_bits + s.man_bits;
  const std::uint64_t sign_bit = s.is_signed ? (std::uint64_t{1} << mag_bits) : 0;
  const std::uint64_t all_ones = g.mag_codes - 1;
  if (std::isnan(v)) {
    switch (s.sp) {
      case Specials::ieee:
        if (s.man_bits == 0) break;
        return (((std::uint64_t{1} << s.exp_bits) - 1) << s.man_bits) | (std::uint64_t{1} << (s.man_bits - 1));
      case Specials::fn: return all_ones;
      case Specials::fnuz: return sign_bit;
      case Specials::ext:
        if (s.inf_is_nan) return all_ones;
        break;
      case Specials::none: break;
    }
    throw FormatError("format '" + f.to_string() + "' has no NaN code; NaN cannot be packed");
  }
  const bool neg = std::signbit(v);
  if (neg && !s.is_signed) throw FormatError("format '" + f.to_string() + "' is unsigned; " + detail::shortest(v) + " cannot be packed");
  if (std::isinf(v)) {
    if (!g.has_inf) throw FormatError("format '" + f.to_string() + "' has no infinity; " + detail::shortest(v) + " cannot be packed");
    const std::uint64_t c = s.sp == Specials::ieee ? ((std::uint64_t{1} << s.exp_bits) - 1) << s.man_bits : all_ones;
    return (neg ? sign_bit : 0) | c;
  }
  const double a = std::fabs(v);
  // Magnitudes grow with the code: binary search for the first code whose value is >= a.
  std::uint64_t lo = 0, hi = g.max_code;
  while (lo < hi) {
    const std::uint64_t mid = lo + (hi - lo) / 2;
    if (g.magnitude(s, mid) < a) lo = mid + 1;
    else hi = mid;
  }
  if (g.magnitude(s, lo) != a) {
    throw FormatError("value " + detail::shortest(v) + " is not a value of format '" + f.to_string() + "'");
  }
  if (lo == 0 && a == 0 && s.sp == Specials::fnuz) return 0;  // fnuz: zero has no sign
  return (neg ? sign_bit : 0) | lo;
}

}  // namespace

std::uint64_t code_count(const Format& f) {
  const int b = f.bits();
  return b >= 64 ? 0 : (std::uint64_t{1} << b);
}

CodeValue decode(const Format& f, std::uint64_t code) {
  const int n = f.bits();
  if (n < 64 && code >= (std::uint64_t{1} << n)) {
    throw FormatError("code " + std::to_string(code) + " does not fit the " + std::to_string(n) + " bits of format '" + f.to_string() + "'");
  }
  switch (f.kind()) {
    case FormatKind::floating: return decode_float(f.float_spec(), code);
    case FormatKind::fixed: {
      const auto& s = f.fixed_spec();
      const long long k = sign_extend(code, n, s.is_signed);
      const double v = k == 0 ? 0.0 : std::ldexp(static_cast<double>(k), -s.frac_bits);
      return {v, k == 0 ? CodeClass::zero : CodeClass::normal};
    }
    case FormatKind::integer: {
      const auto& s = f.int_spec();
      const long long z = sign_extend(code, n, s.is_signed);
      const double v = detail::integer_value(s, z);
      return {v, v == 0 ? CodeClass::zero : CodeClass::normal};
    }
  }
  return {kNaN, CodeClass::nan};
}

std::uint64_t encode(const Format& f, double v) {
  switch (f.kind()) {
    case FormatKind::floating: return encode_float(f, f.float_spec(), v);
    case FormatKind::fixed: {
      const auto& s = f.fixed_spec();
      if (!std::isfinite(v)) throw FormatError("fixed-point format '" + f.to_string() + "' holds only finite values");
      const double k = std::ldexp(v, s.frac_bits);
      const long long lim_hi = s.k_max(), lim_lo = s.k_min();
      if (k != std::floor(k) || k > static_cast<double>(lim_hi) || k < static_cast<double>(lim_lo)) {
        throw FormatError("value " + detail::shortest(v) + " is not a value of format '" + f.to_string() + "'");
      }
      return to_code(static_cast<long long>(k), s.bits());
    }
    case FormatKind::integer: {
      const auto& s = f.int_spec();
      if (!std::isfinite(v)) throw FormatError("integer format '" + f.to_string() + "' holds only finite values");
      const double guess = std::nearbyint(v / s.scale) + static_cast<double>(s.zp);
      const long long zmin = s.z_min(), zmax = s.z_max();
      if (guess >= static_cast<double>(zmin) - 1 && guess <= static_cast<double>(zmax) + 1) {
        for (long long z = static_cast<long long>(guess) - 1; z <= static_cast<long long>(guess) + 1; ++z) {
          if (z >= zmin && z <= zmax && detail::integer_value(s, z) == v) return to_code(z, s.bits);
        }
      }
      throw FormatError("value " + detail::shortest(v) + " is not a value of format '" + f.to_string() + "'");
    }
  }
  return 0;
}

}  // namespace mpsim
