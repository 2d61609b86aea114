// The scalar reference quantizer: the specification of every element format and rounding mode.
//
// Written for clarity, not speed. Every input is taken apart into an exact integer significand
// and a power of two (a = N * 2^X, N < 2^53), the two neighbouring values of the format are
// found as codes, and the part that rounding discards is kept as an exact fraction (see
// exact_fraction.h). No step rounds anything except the final choice between the neighbours,
// so there is no double rounding anywhere, whatever the magnitude of the input.
#include <algorithm>
#include <cmath>
#include <limits>

#include "exact_fraction.h"
#include "float_geometry.h"
#include "integer_grid.h"
#include "mpsim/quantize.h"
#include "mpsim/rng.h"

namespace mpsim {

namespace {

using detail::ExactFraction;
using detail::FloatGeometry;
using detail::u128;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// a = N * 2^X with N in [2^52, 2^53): exact for every positive finite double (subnormals too).
struct Significand {
  std::uint64_t N;
  int X;
  int exponent() const { return X + 52; }  // floor(log2 a)
};

Significand decompose(double a) {
  int e = 0;
  const double f = std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1): exact
  return {static_cast<std::uint64_t>(std::ldexp(f, 53)), e - 53};
}

// Splits N * 2^X at the binary point of 2^q: returns floor(a / 2^q) and sets the exact rest.
std::uint64_t split_at(const Significand& s, int q, ExactFraction& rest) {
  const int sh = q - s.X;
  rest = ExactFraction{};
  if (sh <= 0) return s.N << -sh;  // callers guarantee the result fits (a < 2^(q+64))
  rest.shift = sh;
  if (sh >= 64) {
    rest.A = s.N;
    return 0;
  }
  rest.A = s.N & ((std::uint64_t{1} << sh) - 1);
  return s.N >> sh;
}

// Whether the mode rounds a value of this sign toward zero (chooses the smaller magnitude).
// Such modes turn an overflow into the largest finite value instead of infinity.
bool toward_zero(const Rounding& r, bool negative) {
  return r.mode == RoundMode::rz || r.mode == RoundMode::ro || (r.mode == RoundMode::ru && negative) ||
         (r.mode == RoundMode::rd && !negative);
}

// The one decision of every rounding: given a magnitude strictly between the neighbours lo and
// hi, at the exact fraction f of the way from lo to hi, take hi?
// lo_even: the code (or integer) of lo is even. Where both neighbours are even (0 and the
// smallest normal in a format without subnormals), ties go to lo (zero) and "odd" means hi.
bool take_hi(const Rounding& r, bool negative, const ExactFraction& f, bool lo_even, std::uint64_t index,
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
      // Hardware style: add N random bits below the last kept bit, then truncate.
      const int n = r.param;
      const std::uint64_t kept = f.floor_scaled(n);
      const std::uint64_t rnd = random_word(key, index, 0) >> (32 - n);
      return kept + rnd >= (std::uint64_t{1} << n);
    }
    case RoundMode::hyst: break;
  }
  throw FormatError("rounding mode 'hyst' needs the previous value of the quantity it rounds; it applies to weight updates in the optimizer, not to plain quantization");
}

QuantResult nan_result(bool input_was_nan) {
  QuantResult r;
  r.value = kNaN;
  r.flags.nan_input = input_was_nan;
  r.flags.nan_result = true;
  r.flags.inexact = !input_was_nan;
  return r;
}

// ---- floats ------------------------------------------------------------------------------

QuantResult quantize_float(double x, const FloatSpec& s, const Rounding& rnd, std::uint64_t index,
                           const RandomKey& key) {
  const FloatGeometry g(s);
  if (std::isnan(x)) return nan_result(true);
  const bool neg = std::signbit(x);
  // Unsigned formats without zero (e8m0fnu) have no value for zero or negative inputs.
  if (!s.is_signed && (neg || x == 0)) return nan_result(false);
  const auto with_sign = [&](double mag) {
    // fnuz formats have no -0.
    if (mag == 0 && s.sp == Specials::fnuz) return 0.0;
    return neg ? -mag : mag;
  };
  QuantResult res;
  if (x == 0) {
    res.value = with_sign(0.0);
    return res;
  }
  const double a = std::fabs(x);

  // What an overflow becomes: infinity if the format has it, else NaN if it has that, else the
  // largest finite value; `sat` and the toward-zero modes always give the largest finite value.
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
  if (std::isinf(a)) {
    QuantResult o = overflow(false);
    o.flags.inexact = o.flags.overflow = !(g.has_inf && !s.sat);  // inf -> inf is exact
    return o;
  }

  const Significand sig = decompose(a);
  const int ea = sig.exponent();
  const int M = s.man_bits;
  const int r = s.radix_log2;
  std::uint64_t c_lo = 0, c_hi = 0;
  ExactFraction f;

  if (r == 1) {
    const bool zero_normal = FloatGeometry::zero_field_is_normal(s);
    const int emin_n = zero_normal ? -s.bias : 1 - s.bias;  // exponent of the lowest normal binade
    if (ea > g.top_field - s.bias) return overflow(toward_zero(rnd, neg));
    if (!s.has_zero && ea < emin_n) {
      // e8m0fnu: nothing lies below 2^-bias, not even zero, so every smaller value becomes it.
      res.value = with_sign(g.magnitude(s, 0));
      res.flags.inexact = res.flags.underflow = true;
      return res;
    }
    // CFG-5 (asnormal, with zero kept): the code of 2^-bias is zero, so the smallest positive
    // value is s1 = (1 + 2^-M) 2^-bias and the gap (0, s1) is not a power of two wide.
    const double s1 = std::ldexp(static_cast<double>((std::uint64_t{1} << M) + 1), -s.bias - M);
    if (zero_normal && s.has_zero && a < s1) {
      c_lo = 0;
      c_hi = 1;
      // f = a / s1 = N 2^(X + bias + M) / (2^M + 1), exact.
      const int t = sig.X + s.bias + M;
      f.B = (std::uint64_t{1} << M) + 1;
      if (t >= 0) {
        f.A = static_cast<u128>(sig.N) << t;  // < 2^M + 1 because a < s1
      } else {
        f.A = sig.N;
        f.shift = -t;
      }
    } else if (ea >= emin_n) {
      // A normal binade [2^ea, 2^(ea+1)): M fraction bits are kept.
      const std::uint64_t K = split_at(sig, ea - M, f);  // K in [2^M, 2^(M+1))
      c_lo = (static_cast<std::uint64_t>(ea + s.bias) << M) + K - (std::uint64_t{1} << M);
      c_hi = c_lo + 1;  // may be the code after the largest finite one: overflow, handled below
    } else if (s.sub == Subnormals::flushin || M == 0 || s.sub == Subnormals::asnormal) {
      // No values between 0 and the smallest normal 2^emin_n (CFG-6 rounds "as if there were
      // no subnormals"; M = 0 formats have none either).
      c_lo = 0;
      c_hi = std::uint64_t{1} << M;
      split_at(sig, emin_n, f);
    } else {
      // Gradual underflow: the step of the lowest binade continues down to zero.
      c_lo = split_at(sig, emin_n - M, f);
      c_hi = c_lo + 1;
    }
  } else {
    // Radix 4 (fp4r4): values 4^(e - bias), zero at code 0, no mantissa.
    const int emin_bin = r * (1 - s.bias);
    if (ea < emin_bin) {
      c_lo = 0;
      c_hi = 1;
      split_at(sig, emin_bin, f);
    } else {
      const int k = (ea >= 0 ? ea : ea - 1) / 2;  // floor(ea / 2): a in [4^k, 4^(k+1))
      const int field = k + s.bias;
      if (field > g.top_field) return overflow(toward_zero(rnd, neg));
      c_lo = static_cast<std::uint64_t>(field);
      c_hi = c_lo + 1;
      // f = (a - 4^k) / (3 * 4^k) = (N - 2^(2k - X)) / (3 * 2^(2k - X)), exact.
      const int sh = 2 * k - sig.X;
      f.A = sig.N - (std::uint64_t{1} << sh);
      f.B = 3;
      f.shift = sh;
    }
  }

  std::uint64_t c = c_lo;
  if (!f.is_zero()) {
    res.flags.inexact = true;
    if (take_hi(rnd, neg, f, (c_lo & 1) == 0, index, key)) c = c_hi;
  }
  if (c > g.max_code) return overflow(toward_zero(rnd, neg));
  if (s.sub == Subnormals::flushout && g.is_subnormal_code(s, c)) {
    c = 0;  // CFG-2: a subnormal result is flushed after rounding
    res.flags.inexact = true;
  }
  res.value = with_sign(g.magnitude(s, c));
  if (res.flags.inexact && (c == 0 || g.is_subnormal_code(s, c))) res.flags.underflow = true;
  return res;
}

// ---- fixed point -------------------------------------------------------------------------

QuantResult quantize_fixed(double x, const FixedSpec& s, const Rounding& rnd, std::uint64_t index,
                           const RandomKey& key) {
  if (std::isnan(x)) return nan_result(true);
  const int n = s.bits();
  const long long kmax = s.k_max(), kmin = s.k_min();
  const auto value_of = [&](long long k) { return k == 0 ? 0.0 : std::ldexp(static_cast<double>(k), -s.frac_bits); };
  QuantResult res;
  const bool neg = std::signbit(x);
  if (x == 0) return res;  // fixed point has no -0
  if (std::isinf(x)) {
    // Infinity has no residue modulo 2^n, so it saturates even in wrap mode.
    res.value = value_of(neg ? kmin : kmax);
    res.flags.overflow = res.flags.saturated = res.flags.inexact = true;
    return res;
  }
  const Significand sig = decompose(std::fabs(x));
  // |x| * 2^F = K + f: K the integer part, f the exact rest.
  ExactFraction f;
  u128 K;
  const int t = sig.X + s.frac_bits;
  bool beyond = false;  // |x| 2^F >= 2^127: far outside every range
  if (t > 74) {
    beyond = true;
    K = 0;  // a multiple of 2^75: its residue modulo 2^n (n <= 54) is 0, which is what wrap keeps
  } else if (t >= 0) {
    K = static_cast<u128>(sig.N) << t;  // an integer already
  } else {
    K = split_at(sig, -s.frac_bits, f);
    if (!f.is_zero()) {
      res.flags.inexact = true;
      if (take_hi(rnd, neg, f, (K & 1) == 0, index, key)) K += 1;
    }
  }
  // Signed result and range.
  const u128 limit = neg ? static_cast<u128>(-kmin) : static_cast<u128>(kmax);
  long long k;
  if (!beyond && K <= limit) {
    k = neg ? -static_cast<long long>(K) : static_cast<long long>(K);
  } else {
    res.flags.overflow = res.flags.inexact = true;
    if (s.wrap) {
      // Two's complement: keep the low n bits of the signed integer.
      const u128 mask = (static_cast<u128>(1) << n) - 1;
      u128 low = K & mask;
      if (neg) low = (static_cast<u128>(1) << n) - low;
      low &= mask;
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

QuantResult quantize_integer(double x, const IntSpec& s, const Rounding& rnd, std::uint64_t index,
                             const RandomKey& key) {
  if (std::isnan(x)) return nan_result(true);
  QuantResult res;
  const long long z = detail::integer_code(x, s, rnd, index, key, res.flags);
  res.value = detail::integer_value(s, z);
  res.flags.inexact = res.value != x;
  return res;
}

}  // namespace

namespace detail {

long long integer_code(double x, const IntSpec& s, const Rounding& rnd, std::uint64_t index, const RandomKey& key,
                       QuantFlags& flags) {
  const long long zmin = s.z_min(), zmax = s.z_max();
  const bool neg = std::signbit(x);
  if (x == 0) return s.zp;
  const auto clamp_to = [&](bool low) {
    flags.overflow = flags.saturated = true;
    return low ? zmin : zmax;
  };
  if (std::isinf(x)) return clamp_to(neg);
  // q = |x| / scale = N 2^X / (Ns 2^Xs), kept as K + f with f exact.
  const Significand a = decompose(std::fabs(x));
  Significand sc = decompose(s.scale);
  while ((sc.N & 1) == 0) {
    sc.N >>= 1;
    ++sc.X;
  }
  const int d = a.X - sc.X;
  // |q| >= 2^(exponent difference - 1); past 2^40 it is outside every range (N <= 32 bits).
  if (a.exponent() - std::ilogb(s.scale) > 40) return clamp_to(neg);
  ExactFraction f;
  f.B = sc.N;
  std::uint64_t K;
  if (d >= 0) {
    const u128 num = static_cast<u128>(a.N) << d;  // < 2^(53 + 41 + 53): fits, see the bound above
    K = static_cast<std::uint64_t>(num / sc.N);
    f.A = num % sc.N;
  } else {
    const u128 den = ExactFraction::denominator(sc.N, -d);
    f.shift = -d;
    if (den == 0) {
      K = 0;
      f.A = a.N;
    } else {
      K = static_cast<std::uint64_t>(a.N / den);
      f.A = a.N % den;
    }
  }
  // v = +-(K + f) + zp. Rounding acts on v itself (ties away from zero, toward zero, parity
  // are properties of v, not of x / scale), so write |v| = Kv + fv with fv exact.
  const long long zp = s.zp;
  const long long base = neg ? zp - static_cast<long long>(K) : zp + static_cast<long long>(K);
  // v = base + f (positive x) or base - f (negative x).
  bool v_neg;
  long long Kv;
  ExactFraction fv = f;
  if (f.is_zero()) {
    v_neg = base < 0;
    Kv = base < 0 ? -base : base;
  } else if (!neg) {
    v_neg = base < 0;  // base + f with 0 < f < 1
    if (v_neg) {
      Kv = -base - 1;  // |v| = -base - f = (-base - 1) + (1 - f)
      fv = f.complemented();
    } else {
      Kv = base;
    }
  } else {
    v_neg = base <= 0;  // base - f
    if (v_neg) {
      Kv = -base;  // |v| = -base + f
    } else {
      Kv = base - 1;  // v = (base - 1) + (1 - f)
      fv = f.complemented();
    }
  }
  long long mag = Kv;
  if (!fv.is_zero() && take_hi(rnd, v_neg, fv, (Kv & 1) == 0, index, key)) mag += 1;
  const long long z = v_neg ? -mag : mag;
  if (z < zmin) return clamp_to(true);
  if (z > zmax) return clamp_to(false);
  // With a scale that is not a power of two, the value of a code is (z - zp) * scale rounded to
  // the carrier and may lie a hair off the exact grid point; an input equal to a code's value
  // is that code, whatever the mode (so quantization is idempotent).
  for (long long c = std::max(zmin, z - 1); c <= std::min(zmax, z + 1); ++c) {
    if (integer_value(s, c) == x) return c;
  }
  return z;
}

double integer_value(const IntSpec& s, long long z) {
  // One rounding of the exact product to fp64 (the product of a <= 33-bit integer and a double).
  return static_cast<double>(z - s.zp) * s.scale;
}

float integer_value32(const IntSpec& s, long long z) {
  // One rounding of the exact product to fp32: form the exact product as p + e (TwoProduct with
  // fma), turn it into fp64 round-to-odd, then round once to fp32. Round-to-odd into a format with
  // at least p + 2 bits (53 >= 24 + 2) makes the second rounding correct (Boldo & Melquiond).
  const double k = static_cast<double>(z - s.zp);
  const double p = k * s.scale;
  const double e = std::fma(k, s.scale, -p);
  double ro = p;
  if (e != 0) {
    // Truncate toward zero, then make the last bit odd.
    const bool p_above = (p > 0) == (e < 0);  // |p| > |exact|
    double t = p_above ? std::nextafter(p, 0.0) : p;
    std::uint64_t bits;
    static_assert(sizeof bits == sizeof t);
    __builtin_memcpy(&bits, &t, sizeof bits);
    if ((bits & 1) == 0) t = std::nextafter(t, p > 0 ? kInf : -kInf);
    ro = t;
  }
  return static_cast<float>(ro);
}

}  // namespace detail

QuantResult quantize_ref(double x, const Format& f, std::uint64_t index, const RandomKey& key) {
  if (f.rounding().mode == RoundMode::hyst) {
    throw FormatError("rounding mode 'hyst' needs the previous value of the quantity it rounds; it applies to weight updates in the optimizer, not to plain quantization");
  }
  switch (f.kind()) {
    case FormatKind::floating: return quantize_float(x, f.float_spec(), f.rounding(), index, key);
    case FormatKind::fixed: return quantize_fixed(x, f.fixed_spec(), f.rounding(), index, key);
    case FormatKind::integer: return quantize_integer(x, f.int_spec(), f.rounding(), index, key);
  }
  return {};
}

double quantize(double x, const Format& f, std::uint64_t index, const RandomKey& key) {
  return quantize_ref(x, f, index, key).value;
}

float quantize(float x, const Format& f, std::uint64_t index, const RandomKey& key) {
  if (f.kind() == FormatKind::integer) {
    if (std::isnan(x)) return std::numeric_limits<float>::quiet_NaN();  // as for every format
    QuantFlags flags;
    return detail::integer_value32(f.int_spec(), detail::integer_code(x, f.int_spec(), f.rounding(), index, key, flags));
  }
  f.require_fits(Carrier::fp32);
  return static_cast<float>(quantize_ref(x, f, index, key).value);  // exact: the value fits fp32
}

}  // namespace mpsim
