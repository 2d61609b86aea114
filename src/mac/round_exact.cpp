// One rounding of an exact value of any width into an element format.
//
// This is src/format/quantize_ref.cpp with the input's 53-bit significand replaced by a BigUint
// and ExactFraction by WideFraction; the structure (and the order of every test) is kept the
// same on purpose so that the two can be read side by side. Only the decomposition differs:
// here |v| = mag * 2^exp with mag odd, there N * 2^X with N in [2^52, 2^53); every quantity the
// decisions use (the binade, the neighbours' codes, the value of the fraction) is the same.
#include "round_exact.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "../format/float_geometry.h"
#include "../format/integer_grid.h"
#include "mpsim/rng.h"
#include "wide_fraction.h"

namespace mpsim::detail {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::int64_t floor_div2(std::int64_t a) { return a >= 0 ? a / 2 : -((1 - a) / 2); }

// Splits |v| at the binary point of 2^q: returns floor(|v| / 2^q) and sets the exact rest.
BigUint split_at(const ExactValue& v, std::int64_t q, WideFraction& rest) {
  const std::int64_t sh = q - v.exp;
  rest = WideFraction{};
  if (sh <= 0) return v.mag.shl(-sh);
  rest.A = v.mag.low_bits(sh);
  rest.shift = sh;
  return v.mag.shr(sh);
}

bool toward_zero(const Rounding& r, bool negative) {
  return r.mode == RoundMode::rz || r.mode == RoundMode::ro || (r.mode == RoundMode::ru && negative) ||
         (r.mode == RoundMode::rd && !negative);
}

[[noreturn]] void hyst_error() {
  throw FormatError("rounding mode 'hyst' needs the previous value of the quantity it rounds; it applies to weight updates in the optimizer, not to plain quantization");
}

// The one decision (quantize_ref.cpp's take_hi, on a WideFraction).
bool take_hi(const Rounding& r, bool negative, const WideFraction& f, bool lo_even, std::uint64_t index,
             const RandomKey& key) {
  switch (r.mode) {
    case RoundMode::rne: {
      const int c = f.compare_half();
      return c > 0 || (c == 0 && !lo_even);
    }
    case RoundMode::rna: return f.compare_half() >= 0;
    case RoundMode::rz: return false;
    case RoundMode::ru: return !negative;
    case RoundMode::rd: return negative;
    case RoundMode::ro: return lo_even;
    case RoundMode::sr: return f.uniform_below(key, index);
    case RoundMode::srn: {
      const int n = r.param;
      const std::uint64_t kept = f.floor_scaled(n);
      const std::uint64_t rnd = random_word(key, index, 0) >> (32 - n);
      return kept + rnd >= (std::uint64_t{1} << n);
    }
    case RoundMode::hyst: break;
  }
  hyst_error();
}

QuantResult nan_result(bool input_was_nan) {
  QuantResult r;
  r.value = kNaN;
  r.flags.nan_input = input_was_nan;
  r.flags.nan_result = true;
  r.flags.inexact = !input_was_nan;
  return r;
}

// Value equality with a double, +0 == -0 (as the double comparison in quantize_ref).
bool equals(const ExactValue& v, double d) {
  if (v.is_zero() && d == 0) return true;
  return !v.is_nan() && v.same_as(d);
}

// ---- floats ------------------------------------------------------------------------------

QuantResult round_float(const ExactValue& v, const FloatSpec& s, const Rounding& rnd, std::uint64_t index,
                        const RandomKey& key) {
  const FloatGeometry g(s);
  if (v.is_nan()) return nan_result(true);
  const bool neg = v.neg;
  if (!s.is_signed && (neg || v.is_zero())) return nan_result(false);
  const auto with_sign = [&](double mag) {
    if (mag == 0 && s.sp == Specials::fnuz) return 0.0;
    return neg ? -mag : mag;
  };
  QuantResult res;
  if (v.is_zero()) {
    res.value = with_sign(0.0);
    return res;
  }
  const auto overflow = [&](bool tz) {
    QuantResult o;
    o.flags.overflow = true;
    o.flags.inexact = true;
    if (tz || s.sat || (!g.has_inf && !g.has_nan)) {
      o.value = with_sign(g.max_finite(s));
      o.flags.saturated = !tz;
    } else if (g.has_inf) {
      o.value = neg ? -kInf : kInf;
    } else {
      o.value = kNaN;
      o.flags.nan_result = true;
    }
    return o;
  };
  if (v.is_inf()) {
    QuantResult o = overflow(false);
    o.flags.inexact = o.flags.overflow = !(g.has_inf && !s.sat);
    return o;
  }

  const std::int64_t ea = v.ilogb();
  const int M = s.man_bits;
  const int r = s.radix_log2;
  std::uint64_t c_lo = 0, c_hi = 0;
  WideFraction f;

  if (r == 1) {
    const bool zero_normal = FloatGeometry::zero_field_is_normal(s);
    const int emin_n = zero_normal ? -s.bias : 1 - s.bias;
    if (ea > g.top_field - s.bias) return overflow(toward_zero(rnd, neg));
    if (!s.has_zero && ea < emin_n) {
      res.value = with_sign(g.magnitude(s, 0));
      res.flags.inexact = res.flags.underflow = true;
      return res;
    }
    // CFG-5 gap (0, s1), s1 = (2^M + 1) 2^(-bias-M): |v| < s1 <=> mag 2^t < 2^M + 1.
    const std::uint64_t gap_den = (std::uint64_t{1} << M) + 1;
    const std::int64_t t = v.exp + s.bias + M;
    bool in_gap = false;
    if (zero_normal && s.has_zero && ea <= emin_n) {  // s1 < 2^(emin_n + 1)
      in_gap = t >= 0 ? v.mag.shl(t) < BigUint(gap_den) : v.mag < BigUint(gap_den).shl(-t);
    }
    if (in_gap) {
      c_lo = 0;
      c_hi = 1;
      f.B = gap_den;
      if (t >= 0) {
        f.A = v.mag.shl(t);
      } else {
        f.A = v.mag;
        f.shift = -t;
      }
    } else if (ea >= emin_n) {
      const std::uint64_t K = split_at(v, ea - M, f).to_u64();  // in [2^M, 2^(M+1))
      c_lo = (static_cast<std::uint64_t>(ea + s.bias) << M) + K - (std::uint64_t{1} << M);
      c_hi = c_lo + 1;
    } else if (s.sub == Subnormals::flushin || M == 0 || s.sub == Subnormals::asnormal) {
      c_lo = 0;
      c_hi = std::uint64_t{1} << M;
      split_at(v, emin_n, f);
    } else {
      c_lo = split_at(v, emin_n - M, f).to_u64();
      c_hi = c_lo + 1;
    }
  } else {
    const int emin_bin = r * (1 - s.bias);
    if (ea < emin_bin) {
      c_lo = 0;
      c_hi = 1;
      split_at(v, emin_bin, f);
    } else {
      const std::int64_t k = floor_div2(ea);  // |v| in [4^k, 4^(k+1))
      const std::int64_t field = k + s.bias;
      if (field > g.top_field) return overflow(toward_zero(rnd, neg));
      c_lo = static_cast<std::uint64_t>(field);
      c_hi = c_lo + 1;
      // f = (|v| - 4^k) / (3 * 4^k), exact.
      const std::int64_t sh = 2 * k - v.exp;
      f.B = 3;
      if (sh >= 0) {
        f.A = v.mag.sub(BigUint(1).shl(sh));
        f.shift = sh;
      } else {
        f.A = v.mag.shl(-sh).sub(BigUint(1));
      }
    }
  }

  std::uint64_t c = c_lo;
  if (!f.is_zero()) {
    res.flags.inexact = true;
    if (take_hi(rnd, neg, f, (c_lo & 1) == 0, index, key)) c = c_hi;
  }
  if (c > g.max_code) return overflow(toward_zero(rnd, neg));
  if (s.sub == Subnormals::flushout && g.is_subnormal_code(s, c)) {
    c = 0;
    res.flags.inexact = true;
  }
  res.value = with_sign(g.magnitude(s, c));
  if (res.flags.inexact && (c == 0 || g.is_subnormal_code(s, c))) res.flags.underflow = true;
  return res;
}

// ---- fixed point -------------------------------------------------------------------------

QuantResult round_fixed(const ExactValue& v, const FixedSpec& s, const Rounding& rnd, std::uint64_t index,
                        const RandomKey& key) {
  if (v.is_nan()) return nan_result(true);
  const int n = s.bits();
  const long long kmax = s.k_max(), kmin = s.k_min();
  const auto value_of = [&](long long k) { return k == 0 ? 0.0 : std::ldexp(static_cast<double>(k), -s.frac_bits); };
  QuantResult res;
  const bool neg = v.neg;
  if (v.is_zero()) return res;
  if (v.is_inf()) {
    res.value = value_of(neg ? kmin : kmax);
    res.flags.overflow = res.flags.saturated = res.flags.inexact = true;
    return res;
  }
  // |v| 2^F = K + f.
  WideFraction f;
  BigUint K = split_at(v, -static_cast<std::int64_t>(s.frac_bits), f);
  if (!f.is_zero()) {
    res.flags.inexact = true;
    if (take_hi(rnd, neg, f, !K.bit(0), index, key)) K = K.add(BigUint(1));
  }
  const BigUint limit(neg ? static_cast<std::uint64_t>(-kmin) : static_cast<std::uint64_t>(kmax));
  long long k;
  if (K <= limit) {
    const auto kk = static_cast<long long>(K.to_u64());
    k = neg ? -kk : kk;
  } else {
    res.flags.overflow = res.flags.inexact = true;
    if (s.wrap) {
      // Two's complement: keep the low n bits of the signed integer (n <= 54).
      const std::uint64_t mask = (std::uint64_t{1} << n) - 1;
      std::uint64_t low = K.low_bits(n).to_u64();
      if (neg) low = ((std::uint64_t{1} << n) - low) & mask;
      k = static_cast<long long>(low);
      if (s.is_signed && k > kmax) k -= 1LL << n;
    } else {
      res.flags.saturated = true;
      k = neg ? kmin : kmax;
    }
  }
  res.value = value_of(k);
  if (res.flags.inexact && k == 0 && !res.flags.overflow) res.flags.underflow = true;
  return res;
}

// ---- integers with scale and zero point --------------------------------------------------

long long integer_code_exact(const ExactValue& v, const IntSpec& s, const Rounding& rnd, std::uint64_t index,
                             const RandomKey& key, QuantFlags& flags) {
  const long long zmin = s.z_min(), zmax = s.z_max();
  const bool neg = v.neg;
  if (v.is_zero()) return s.zp;
  const auto clamp_to = [&](bool low) {
    flags.overflow = flags.saturated = true;
    return low ? zmin : zmax;
  };
  if (v.is_inf()) return clamp_to(neg);
  // q = |v| / scale = mag 2^exp / (Ns 2^Xs), Ns odd.
  int se = 0;
  const double sf = std::frexp(s.scale, &se);
  std::uint64_t Ns = static_cast<std::uint64_t>(std::ldexp(sf, 53));
  std::int64_t Xs = se - 53;
  while ((Ns & 1) == 0) {
    Ns >>= 1;
    ++Xs;
  }
  if (v.ilogb() - std::ilogb(s.scale) > 40) return clamp_to(neg);
  WideFraction f;
  f.B = Ns;
  std::uint64_t K;
  std::uint64_t rem = 0;
  const std::int64_t d = v.exp - Xs;
  if (d >= 0) {
    K = v.mag.shl(d).divmod(Ns, rem).to_u64();
    f.A = BigUint(rem);
  } else {
    // floor(mag / (Ns 2^-d)) = floor(floor(mag / 2^-d) / Ns).
    f.shift = -d;
    const BigUint q = v.mag.shr(-d).divmod(Ns, rem);
    K = q.to_u64();
    f.A = v.mag.sub(q.mul(BigUint(Ns)).shl(-d));
  }
  const long long zp = s.zp;
  const long long base = neg ? zp - static_cast<long long>(K) : zp + static_cast<long long>(K);
  bool v_neg;
  long long Kv;
  WideFraction fv = f;
  if (f.is_zero()) {
    v_neg = base < 0;
    Kv = base < 0 ? -base : base;
  } else if (!neg) {
    v_neg = base < 0;
    if (v_neg) {
      Kv = -base - 1;
      fv = f.complemented();
    } else {
      Kv = base;
    }
  } else {
    v_neg = base <= 0;
    if (v_neg) {
      Kv = -base;
    } else {
      Kv = base - 1;
      fv = f.complemented();
    }
  }
  long long mag = Kv;
  if (!fv.is_zero() && take_hi(rnd, v_neg, fv, (Kv & 1) == 0, index, key)) mag += 1;
  const long long z = v_neg ? -mag : mag;
  if (z < zmin) return clamp_to(true);
  if (z > zmax) return clamp_to(false);
  for (long long c = std::max(zmin, z - 1); c <= std::min(zmax, z + 1); ++c) {
    if (equals(v, integer_value(s, c))) return c;
  }
  return z;
}

QuantResult round_integer(const ExactValue& v, const IntSpec& s, const Rounding& rnd, std::uint64_t index,
                          const RandomKey& key) {
  if (v.is_nan()) return nan_result(true);
  QuantResult res;
  const long long z = integer_code_exact(v, s, rnd, index, key, res.flags);
  res.value = integer_value(s, z);
  res.flags.inexact = !equals(v, res.value);
  return res;
}

}  // namespace

QuantResult round_exact(const ExactValue& v, const Format& f, std::uint64_t index, const RandomKey& key) {
  if (f.rounding().mode == RoundMode::hyst) hyst_error();
  switch (f.kind()) {
    case FormatKind::floating: return round_float(v, f.float_spec(), f.rounding(), index, key);
    case FormatKind::fixed: return round_fixed(v, f.fixed_spec(), f.rounding(), index, key);
    case FormatKind::integer: return round_integer(v, f.int_spec(), f.rounding(), index, key);
  }
  return {};
}

}  // namespace mpsim::detail
