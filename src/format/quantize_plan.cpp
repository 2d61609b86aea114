// Deriving the SIMD quantizer's constants from a format (see quantize_plan.h). Every condition
// under which the kernel's bit arithmetic would not be exact sends the format to the scalar
// reference instead (PlanKind::scalar), so the plan never trades exactness for coverage.
#include "quantize_plan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "float_geometry.h"

namespace mpsim::detail {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void plan_float(QuantPlan& p, const FloatSpec& s, const Format& f, Carrier carrier) {
  const FloatGeometry g(s);
  const int W = carrier == Carrier::fp32 ? 32 : 64;
  const int M = s.man_bits;
  // Radix 4 has no power-of-two quantum; formats whose codes, lowest binade or values the
  // carrier's integer lanes cannot hold go to the reference.
  if (s.radix_log2 != 1 || !f.fits(carrier) || s.exp_bits + M > W - 1 || M > p.P || s.bias > p.EB) return;
  const bool zero_normal = FloatGeometry::zero_field_is_normal(s);
  const int emin_n = zero_normal ? -s.bias : 1 - s.bias;
  const int emin_small = emin_n - M;  // exponent of the quantum of field-0 codes
  if (emin_small < 1 - p.EB - p.P) return;

  p.kind = PlanKind::floating;
  p.M = M;
  const bool gradual = (s.sub == Subnormals::ieee || s.sub == Subnormals::flushout) && M > 0;
  p.sub_shift = gradual ? 0 : M;
  p.Tn = emin_n + p.EB;
  p.top_biased = g.top_field - s.bias + p.EB;
  p.t_clamp = p.top_biased - p.Tn + 1;
  p.code_offset = zero_normal ? (std::uint64_t{1} << M) : 0;
  p.max_code = g.max_code;
  p.flushout = s.sub == Subnormals::flushout && M > 0;
  p.low_clamp = !s.has_zero;
  p.unsigned_nan = !s.is_signed;
  p.fnuz = s.sp == Specials::fnuz;
  p.asnormal_gap = zero_normal && s.has_zero;
  p.s1 = std::ldexp(static_cast<double>((std::uint64_t{1} << M) + 1), -s.bias - M);
  p.zero_code_is_zero = s.has_zero;
  p.small_scale = std::ldexp(1.0, emin_small);
  p.normal_offset = static_cast<std::uint64_t>(static_cast<std::int64_t>(p.EB - s.bias)) << p.P;
  p.max_value = g.max_finite(s);
  if (s.sat || (!g.has_inf && !g.has_nan)) p.overflow_value = p.max_value;
  else if (g.has_inf) p.overflow_value = kInf;
  else p.overflow_value = kNaN;
  p.inf_value = p.overflow_value;
  // The fast path needs the lowest normal binade to be carrier-normal, a sign and a zero (not
  // e8m0fnu), and the code parity of a tie to be bit P - M of the carrier (with M = 0 that bit
  // is the exponent's lowest bit, which is the code's only if EB - bias is even).
  const auto carrier_bits = [&](double v) {
    if (carrier == Carrier::fp32) {
      const float x = static_cast<float>(v);
      std::uint32_t b;
      std::memcpy(&b, &x, sizeof b);
      return std::uint64_t{b};
    }
    std::uint64_t b;
    std::memcpy(&b, &v, sizeof b);
    return b;
  };
  if (p.Tn >= 1 && s.is_signed && s.has_zero && (M > 0 || (p.EB - s.bias) % 2 == 0)) {
    p.fast = true;
    p.fast_lo = carrier_bits(p.asnormal_gap ? p.s1 : std::ldexp(1.0, emin_n));
    p.fast_hi = carrier_bits(p.max_value);
    // M >= 1: a tie's even neighbour is the one with the even code (with M = 0 the code's
    // parity is the exponent's). M < P: |x| < C, so the sum's ulp is the quantum.
    p.rne_add = M >= 1 && M < p.P && p.top_biased + (p.P - M) <= 2 * p.EB;
    p.rne_add_low = p.rne_add && s.sub == Subnormals::ieee && p.Tn - M >= 1;
    p.rne_bits_all = M >= 1 && M < p.P && s.sub == Subnormals::ieee && p.Tn == 1 && p.top_biased == 2 * p.EB &&
                     s.sp == Specials::ieee && !s.sat && !p.asnormal_gap && p.overflow_value == kInf;
    if (carrier == Carrier::fp32 && s.sub == Subnormals::ieee && M >= 1 && M < p.P && !p.asnormal_gap &&
        p.Tn - M >= 1) {
      p.sr_low = true;
      p.sr_lo = carrier_bits(p.small_scale);
    }
    // The quantum 2^(emin - M) must be a normal carrier number (it is the result's bits), and
    // M > 0 makes a value's code parity the parity of its multiple of the quantum.
    if (s.sub == Subnormals::ieee && M > 0 && !p.fnuz && p.overflow_value == p.max_value && p.Tn - M >= 1) {
      p.sat_ieee = true;
      p.quantum_bits = carrier_bits(p.small_scale);
    }
  }
}

// Rounds to integers k with value k * 2^-F, k_neg <= k <= k_pos (saturating, or wrapping).
void plan_integer_grid(QuantPlan& p, int F, long long k_min, long long k_max, bool wrap) {
  const double quantum = std::ldexp(1.0, -F);
  const double top = std::ldexp(static_cast<double>(std::max(k_max, -k_min)) + 1, -F);
  const double carrier_max = p.EB == 127 ? static_cast<double>(std::numeric_limits<float>::max())
                                         : std::numeric_limits<double>::max();
  // The quantum must be a normal carrier number and every integer of the range (which the
  // kernel only forms below 2^(P+1)) times it must be exact and finite.
  if (p.EB - F < 1 || top > carrier_max) return;
  p.kind = PlanKind::fixed;
  p.Tq = p.EB - F;
  p.quantum = quantum;
  p.k_pos = static_cast<std::uint64_t>(k_max);
  p.k_neg = static_cast<std::uint64_t>(-k_min);
  p.wrap = wrap;
}

}  // namespace

QuantPlan make_plan(const Format& f, Carrier carrier) {
  QuantPlan p;
  p.rounding = f.rounding();
  if (p.rounding.mode == RoundMode::hyst) {
    throw FormatError("rounding mode 'hyst' needs the previous value of the quantity it rounds; it applies to weight updates in the optimizer, not to plain quantization");
  }
  if (carrier == Carrier::fp64) {
    p.P = 52;
    p.EB = 1023;
  }
  switch (f.kind()) {
    case FormatKind::floating: plan_float(p, f.float_spec(), f, carrier); break;
    case FormatKind::fixed: {
      const FixedSpec& s = f.fixed_spec();
      if (f.fits(carrier)) plan_integer_grid(p, s.frac_bits, s.k_min(), s.k_max(), s.wrap);
      break;
    }
    case FormatKind::integer: {
      // Without a zero point and with a power-of-two scale, an integer format is fixed point
      // (saturating) and its values (z * scale) are exact; otherwise x / scale is not.
      const IntSpec& s = f.int_spec();
      int e = 0;
      const double m = std::frexp(s.scale, &e);
      if (s.zp == 0 && m == 0.5 && s.bits <= p.P + 1) plan_integer_grid(p, 1 - e, s.z_min(), s.z_max(), false);
      break;
    }
  }
  return p;
}

}  // namespace mpsim::detail
