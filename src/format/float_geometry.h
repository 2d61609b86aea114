// Where the codes of a float format sit: the few derived numbers that decoding, rounding and
// the property report all need, computed in one place (internal).
#pragma once

#include <cmath>
#include <cstdint>

#include "mpsim/format.h"

namespace mpsim::detail {

struct FloatGeometry {
  int E, M, bias, r;          // exponent bits, mantissa bits, bias, log2 of the radix
  std::uint64_t mag_codes;    // 2^(E+M): codes of one sign
  std::uint64_t max_code = 0; // magnitude code of the largest finite value
  int top_field;              // exponent field of max_code
  bool has_inf, has_nan;

  explicit FloatGeometry(const FloatSpec& s)
      : E(s.exp_bits), M(s.man_bits), bias(s.bias), r(s.radix_log2),
        mag_codes(std::uint64_t{1} << (s.exp_bits + s.man_bits)) {
    const std::uint64_t all_ones = mag_codes - 1;
    switch (s.sp) {
      case Specials::ieee: max_code = ((std::uint64_t{1} << E) - 1) * (std::uint64_t{1} << M) - 1; break;
      case Specials::fn:
      case Specials::ext: max_code = all_ones - 1; break;
      case Specials::fnuz:
      case Specials::none: max_code = all_ones; break;
    }
    top_field = static_cast<int>(max_code >> M);
    has_inf = s.sp == Specials::ieee || s.sp == Specials::ext;
    has_nan = (s.sp == Specials::ieee && s.man_bits > 0) || s.sp == Specials::fn || s.sp == Specials::fnuz || s.inf_is_nan;
  }

  // A zero exponent field is read as a normal exponent (CFG-5 style, or e8m0fnu's code 0).
  static bool zero_field_is_normal(const FloatSpec& s) {
    return !s.has_zero || (s.sub == Subnormals::asnormal && s.man_bits > 0);
  }

  // The value of a finite magnitude code (c <= max_code), exact in fp64.
  double magnitude(const FloatSpec& s, std::uint64_t c) const {
    const int e = static_cast<int>(c >> M);
    const std::uint64_t m = c & ((std::uint64_t{1} << M) - 1);
    const std::uint64_t hidden = std::uint64_t{1} << M;
    if (e == 0) {
      if (!s.has_zero) return std::ldexp(static_cast<double>(hidden + m), -r * bias - M);
      switch (s.sub) {
        case Subnormals::ieee:
        case Subnormals::flushout:
          return std::ldexp(static_cast<double>(m), r * (1 - bias) - M);
        case Subnormals::asnormal:
          return m == 0 ? 0.0 : std::ldexp(static_cast<double>(hidden + m), -r * bias - M);
        case Subnormals::flushin: return 0.0;
      }
    }
    return std::ldexp(static_cast<double>(hidden + m), r * (e - bias) - M);
  }

  // Exponent of the smallest step between values (the lowest binade's quantum).
  int lowest_step_exp(const FloatSpec& s) const {
    if (zero_field_is_normal(s)) return -r * bias - M;
    return r * (1 - bias) - M;
  }

  bool is_subnormal_code(const FloatSpec& s, std::uint64_t c) const {
    return (c >> M) == 0 && (c & ((std::uint64_t{1} << M) - 1)) != 0 &&
           (s.sub == Subnormals::ieee || s.sub == Subnormals::flushout) && s.has_zero;
  }

  double max_finite(const FloatSpec& s) const { return magnitude(s, max_code); }
};

}  // namespace mpsim::detail
