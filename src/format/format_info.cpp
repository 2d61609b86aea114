// Derived properties of a format, for `mpsim format` and for reports.
#include <cmath>

#include "float_geometry.h"
#include "mpsim/format.h"

namespace mpsim {

namespace {

using detail::FloatGeometry;

void describe_float(const Format& f, FormatInfo& info) {
  const FloatSpec& s = f.float_spec();
  const FloatGeometry g(s);
  info.kind = "float";
  info.exp_bits = s.exp_bits;
  info.man_bits = s.man_bits;
  info.bias = s.bias;
  info.precision = s.man_bits + 1;
  info.max_finite = g.max_finite(s);
  // Smallest positive normal: the lowest binade read as normal. CFG-5 keeps 2^-bias as zero, so
  // its smallest normal is (1 + 2^-M) 2^-bias.
  if (!s.has_zero) info.min_normal = g.magnitude(s, 0);
  else if (FloatGeometry::zero_field_is_normal(s)) info.min_normal = g.magnitude(s, 1);
  else info.min_normal = g.magnitude(s, std::uint64_t{1} << s.man_bits);
  info.has_subnormals = s.has_zero && s.sub == Subnormals::ieee && s.man_bits > 0;
  info.min_subnormal = info.has_subnormals ? g.magnitude(s, 1) : info.min_normal;
  info.min_finite = s.is_signed ? -info.max_finite : info.min_normal;
  info.emin = std::ilogb(info.min_normal);
  info.emax = std::ilogb(info.max_finite);
  // u = beta^(1-p) / 2 for p base-beta digits: 2^-p for binary formats, 1/2 for radix 4.
  info.unit_roundoff = s.radix_log2 == 1 ? std::ldexp(1.0, -info.precision) : 0.5;
  info.dynamic_range_decades = std::log10(info.max_finite) - std::log10(info.min_subnormal);  // no overflow for fp64
  info.has_inf = g.has_inf;
  info.has_nan = g.has_nan;
  info.has_neg_zero = s.is_signed && s.has_zero && s.sp != Specials::fnuz;
  switch (s.sub) {
    case Subnormals::ieee: info.subnormals = info.has_subnormals ? "gradual underflow (ieee)" : "none (no mantissa bits)"; break;
    case Subnormals::flushout: info.subnormals = "read, but results that would be subnormal flush to zero (flushout, cfg2)"; break;
    case Subnormals::asnormal: info.subnormals = "zero exponent field read as a normal binade; 2^-bias itself is zero (asnormal, cfg5)"; break;
    case Subnormals::flushin: info.subnormals = "read as zero; rounding as if there were none (flushin, cfg6)"; break;
  }
  if (!s.has_zero) info.subnormals = "none; code 0 is 2^-bias (no zero)";
  if (s.sat) info.overflow = "saturates to the largest finite value (sat)";
  else if (g.has_inf) info.overflow = "to infinity (round-toward-zero modes give the largest finite value)";
  else if (g.has_nan) info.overflow = "to NaN (round-toward-zero modes give the largest finite value)";
  else info.overflow = "saturates (the format has neither infinity nor NaN)";
  switch (s.sp) {
    case Specials::ieee: info.specials = "ieee: all-ones exponent holds infinity (mantissa 0) and NaN"; break;
    case Specials::fn: info.specials = "fn: no infinity; NaN is the all-ones code"; break;
    case Specials::fnuz: info.specials = "fnuz: no infinity, no -0; NaN is the negative-zero code"; break;
    case Specials::ext: info.specials = s.inf_is_nan ? "the all-ones code stands for both infinity and NaN" : "ext: all-ones exponent is finite; the all-ones code is infinity; no NaN"; break;
    case Specials::none: info.specials = "none: every code is a finite number"; break;
  }
  if (f.bits() <= 16) {
    for (std::uint64_t c = 0; c < code_count(f); ++c) {
      const CodeValue v = decode(f, c);
      if (v.klass == CodeClass::infinite) info.inf_codes.push_back(c);
      if (v.klass == CodeClass::nan) info.nan_codes.push_back(c);
    }
  }
}

}  // namespace

FormatInfo describe(const Format& f) {
  FormatInfo info;
  info.name = f.to_string();
  info.bits = f.bits();
  switch (f.kind()) {
    case FormatKind::floating: describe_float(f, info); break;
    case FormatKind::fixed: {
      const auto& s = f.fixed_spec();
      info.kind = "fixed";
      const int mag = s.bits() - (s.is_signed ? 1 : 0);
      info.precision = mag;
      info.step = std::ldexp(1.0, -s.frac_bits);
      info.max_finite = std::ldexp(std::ldexp(1.0, mag) - 1.0, -s.frac_bits);
      info.min_finite = s.is_signed ? -std::ldexp(1.0, mag - s.frac_bits) : 0.0;
      info.min_normal = info.min_subnormal = info.step;
      info.unit_roundoff = info.step / 2;  // absolute, not relative: fixed point has a uniform grid
      info.dynamic_range_decades = std::log10(info.max_finite / info.step);
      info.overflow = s.wrap ? "wraps around (two's complement; infinity saturates)" : "saturates";
      info.specials = "none";
      info.subnormals = "not applicable";
      break;
    }
    case FormatKind::integer: {
      const auto& s = f.int_spec();
      info.kind = "integer";
      const long long zmin = s.z_min(), zmax = s.z_max();
      info.precision = s.bits - (s.is_signed ? 1 : 0);
      info.step = s.scale;
      info.max_finite = static_cast<double>(zmax - s.zp) * s.scale;
      info.min_finite = static_cast<double>(zmin - s.zp) * s.scale;
      info.min_normal = info.min_subnormal = s.scale;
      info.unit_roundoff = s.scale / 2;
      const double span = std::fmax(std::fabs(info.max_finite), std::fabs(info.min_finite));
      info.dynamic_range_decades = std::log10(span / s.scale);
      info.overflow = "clamps to the integer range";
      info.specials = "none";
      info.subnormals = "not applicable";
      break;
    }
  }
  return info;
}

}  // namespace mpsim
