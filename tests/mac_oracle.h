// An independent oracle for the MAC reference, built on MPFR: exact arithmetic in a very wide
// MPFR precision (every operation is checked to be exact) and a rounding into formats written
// from the definitions of docs/formats.md (the grid of a binade, the overflow rules), sharing
// no code with src/mac or src/format. It covers binary IEEE-like floats with gradual underflow
// (any sp=, sat) and fixed point (sat and wrap), in every rounding mode but hyst; the stochastic
// modes read the same random words (mpsim::random_word) and compare them with the exact
// fraction by MPFR arithmetic.
#pragma once

#include <gmp.h>
#include <mpfr.h>

#include <cmath>
#include <cstdint>
#include <deque>
#include <optional>
#include <stdexcept>
#include <vector>

#include "mpsim/format.h"
#include "mpsim/mac.h"
#include "mpsim/quantize.h"
#include "mpsim/rng.h"

namespace mpsim::test {

// An exact number in MPFR. The precision is far more than any sum of fp64 products needs
// (2^-2200 ... 2^2100 spans about 4300 bits); every operation asserts that it was exact.
class Mp {
 public:
  static constexpr mpfr_prec_t kPrec = 4600;
  Mp() {
    mpfr_init2(v_, kPrec);
    mpfr_set_zero(v_, 1);
  }
  explicit Mp(double d) {
    mpfr_init2(v_, kPrec);
    mpfr_set_d(v_, d, MPFR_RNDN);  // exact
  }
  Mp(const Mp& o) {
    mpfr_init2(v_, kPrec);
    mpfr_set(v_, o.v_, MPFR_RNDN);
  }
  Mp& operator=(const Mp& o) {
    if (this != &o) mpfr_set(v_, o.v_, MPFR_RNDN);
    return *this;
  }
  ~Mp() { mpfr_clear(v_); }
  mpfr_ptr get() { return v_; }
  mpfr_srcptr get() const { return v_; }

  // Exact sum; `round_down` picks IEEE's sign of an exact zero sum (-0 under roundTowardNegative).
  static Mp add(const Mp& a, const Mp& b, bool round_down) {
    Mp r;
    const int t = mpfr_add(r.v_, a.v_, b.v_, round_down ? MPFR_RNDD : MPFR_RNDN);
    if (t != 0) throw std::logic_error("oracle: inexact add");
    return r;
  }
  static Mp mul(const Mp& a, const Mp& b) {
    Mp r;
    const int t = mpfr_mul(r.v_, a.v_, b.v_, MPFR_RNDN);
    if (t != 0) throw std::logic_error("oracle: inexact mul");
    return r;
  }
  Mp neg() const {
    Mp r;
    mpfr_neg(r.v_, v_, MPFR_RNDN);
    return r;
  }

 private:
  mpfr_t v_;
};

inline bool oracle_supports(const Format& f) {
  if (f.kind() == FormatKind::fixed) return true;
  if (f.kind() != FormatKind::floating) return false;
  const FloatSpec& s = f.float_spec();
  return s.radix_log2 == 1 && s.sub == Subnormals::ieee && s.man_bits >= 1 && s.is_signed && s.has_zero && !s.inf_is_nan;
}

// The decision between lo and hi given the exact fraction f in (0, 1) (an MPFR number).
inline bool oracle_take_hi(const Rounding& r, bool neg, mpfr_srcptr frac, bool lo_even, std::uint64_t index,
                           const RandomKey& key) {
  switch (r.mode) {
    case RoundMode::rne: {
      const int c = mpfr_cmp_d(frac, 0.5);
      return c > 0 || (c == 0 && !lo_even);
    }
    case RoundMode::rna: return mpfr_cmp_d(frac, 0.5) >= 0;
    case RoundMode::rz: return false;
    case RoundMode::ru: return !neg;
    case RoundMode::rd: return neg;
    case RoundMode::ro: return lo_even;
    case RoundMode::srn: {
      // floor(f 2^N) + (top N bits of word 0) >= 2^N
      Mp t;
      mpfr_mul_2si(t.get(), frac, r.param, MPFR_RNDN);
      mpfr_floor(t.get(), t.get());
      const double kept = mpfr_get_d(t.get(), MPFR_RNDN);
      const double rnd = static_cast<double>(random_word(key, index, 0) >> (32 - r.param));
      return kept + rnd >= std::ldexp(1.0, r.param);
    }
    case RoundMode::sr: {
      // U = 0.w0 w1 w2 ... (32 bits a word) < f ?
      Mp t;
      mpfr_set(t.get(), frac, MPFR_RNDN);
      for (std::uint32_t w = 0; w < 64; ++w) {
        mpfr_mul_2si(t.get(), t.get(), 32, MPFR_RNDN);
        Mp q;
        mpfr_floor(q.get(), t.get());
        mpfr_sub(t.get(), t.get(), q.get(), MPFR_RNDN);
        const double qd = mpfr_get_d(q.get(), MPFR_RNDN);
        const double word = random_word(key, index, w);
        if (word != qd) return word < qd;
        if (mpfr_zero_p(t.get())) return false;
      }
      return false;
    }
    case RoundMode::hyst: break;
  }
  throw std::logic_error("oracle: unsupported mode");
}

// describe() enumerates codes; the oracle needs only a few numbers from it, many times.
inline const FormatInfo& cached_info(const Format& f) {
  static thread_local std::deque<std::pair<Format, FormatInfo>> cache;  // deque: stable references
  for (const auto& e : cache) {
    if (e.first == f) return e.second;
  }
  cache.emplace_back(f, describe(f));
  return cache.back().second;
}

// x rounded once into f (a format the oracle supports) as docs/formats.md defines it.
inline double oracle_round(const Mp& xm, const Format& f, std::uint64_t index = 0, const RandomKey& key = {}) {
  if (!oracle_supports(f)) throw std::logic_error("oracle: unsupported format " + f.to_string());
  mpfr_srcptr x = xm.get();
  const Rounding& rnd = f.rounding();
  const bool fixed = f.kind() == FormatKind::fixed;
  const FormatInfo& info = cached_info(f);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (mpfr_nan_p(x)) return nan;
  const bool neg = mpfr_signbit(x) != 0;
  const bool fnuz = !fixed && f.float_spec().sp == Specials::fnuz;
  const bool sat = !fixed && f.float_spec().sat;
  const auto sign = [&](double m) { return (m == 0 && (fnuz || fixed)) ? 0.0 : (neg ? -m : m); };
  const bool tz = rnd.mode == RoundMode::rz || rnd.mode == RoundMode::ro || (rnd.mode == RoundMode::ru && neg) ||
                  (rnd.mode == RoundMode::rd && !neg);
  const auto overflow = [&](bool toward_zero) {
    if (toward_zero || sat || (!info.has_inf && !info.has_nan)) return sign(info.max_finite);
    if (info.has_inf) return neg ? -HUGE_VAL : HUGE_VAL;
    return nan;
  };
  if (mpfr_inf_p(x)) {
    if (fixed) return neg ? info.min_finite : info.max_finite;
    if (info.has_inf && !sat) return neg ? -HUGE_VAL : HUGE_VAL;
    return overflow(false);
  }
  if (mpfr_zero_p(x)) return sign(0.0);
  Mp a;
  mpfr_abs(a.get(), x, MPFR_RNDN);
  // The quantum 2^q of the grid around |x|.
  long q;
  if (fixed) {
    q = -f.fixed_spec().frac_bits;
  } else {
    const long e = static_cast<long>(mpfr_get_exp(a.get())) - 1;  // floor(log2 |x|)
    q = std::max<long>(e, info.emin) - f.float_spec().man_bits;
  }
  Mp scaled, K, frac;
  mpfr_mul_2si(scaled.get(), a.get(), -q, MPFR_RNDN);
  mpfr_floor(K.get(), scaled.get());
  mpfr_sub(frac.get(), scaled.get(), K.get(), MPFR_RNDN);
  mpz_t k;
  mpz_init(k);
  mpfr_get_z(k, K.get(), MPFR_RNDN);  // exact: K is an integer
  const bool lo_even = mpz_even_p(k) != 0;
  if (!mpfr_zero_p(frac.get()) && oracle_take_hi(rnd, neg, frac.get(), lo_even, index, key)) mpz_add_ui(k, k, 1);
  double result;
  if (fixed) {
    const FixedSpec& s = f.fixed_spec();
    if (neg) mpz_neg(k, k);
    mpz_t lo, hi;
    mpz_init_set_si(lo, s.k_min());
    mpz_init_set_si(hi, s.k_max());
    if (mpz_cmp(k, lo) < 0 || mpz_cmp(k, hi) > 0) {
      if (s.wrap) {
        // Two's complement wrap: k mod 2^n, into [k_min, k_max].
        mpz_t m;
        mpz_init(m);
        mpz_fdiv_r_2exp(m, k, static_cast<mp_bitcnt_t>(s.bits()));
        if (s.is_signed && mpz_cmp(m, hi) > 0) {
          mpz_t two_n;
          mpz_init(two_n);
          mpz_ui_pow_ui(two_n, 2, static_cast<unsigned long>(s.bits()));
          mpz_sub(m, m, two_n);
          mpz_clear(two_n);
        }
        mpz_set(k, m);
        mpz_clear(m);
      } else {
        mpz_set(k, neg ? lo : hi);
      }
    }
    result = std::ldexp(mpz_get_d(k), -s.frac_bits);  // |k| < 2^54: exact
    if (result == 0) result = 0.0;
    mpz_clears(lo, hi, nullptr);
  } else {
    Mp v;
    mpfr_set_z(v.get(), k, MPFR_RNDN);
    mpfr_mul_2si(v.get(), v.get(), q, MPFR_RNDN);
    if (mpfr_cmp_d(v.get(), info.max_finite) > 0) {
      result = overflow(tz);
    } else {
      result = sign(mpfr_get_d(v.get(), MPFR_RNDN));  // a value of the format: exact
    }
  }
  mpz_clear(k);
  return result;
}

// The MAC semantics of docs/mac.md, written a second time on MPFR numbers. Trees are built by
// the recursive description (the left operand of every adder covers the largest power of two
// of leaves below the group size), the reference builds them level by level.
class OracleDot {
 public:
  using Fmt = std::optional<Format>;
  OracleDot(const MacSpec& s, const MacRandom& r, std::uint64_t out) : s_(s), key_(mac_random_key(r)), out_(out) {}

  double run(const std::vector<double>& a, const std::vector<double>& b, double bias) {
    p_.clear();
    for (std::size_t i = 0; i < a.size(); ++i) {
      const Mp x(input(a[i], s_.a)), y(input(b[i], s_.b));
      p_.push_back(rnd(Mp::mul(x, y), s_.prod, i, MacSite::product));
    }
    const Mp b0(bias);
    Mp r;
    const std::size_t k = a.size();
    switch (s_.order.kind) {
      case MacOrderKind::seq: {
        r = rnd(b0, s_.acc, 0, MacSite::bias);
        for (std::size_t i = 0; i < k; ++i) r = acc(r, p_[i], s_.acc, s_.fused, i, MacSite::convert, MacSite::add);
        break;
      }
      case MacOrderKind::kahan: {
        const Fmt& f = s_.acc;
        r = rnd(b0, f, 0, MacSite::bias);
        Mp c;
        for (std::size_t i = 0; i < k; ++i) {
          const Mp y = rnd(add(p_[i], c.neg(), f), f, i, MacSite::kahan_y);
          const Mp t = rnd(add(r, y, f), f, i, MacSite::add);
          const Mp d = rnd(add(t, r.neg(), f), f, i, MacSite::kahan_t_minus);
          c = rnd(add(d, y.neg(), f), f, i, MacSite::kahan_c);
          r = t;
        }
        break;
      }
      default: {
        const Fmt& outer = s_.outer ? s_.outer : s_.acc;
        r = rnd(b0, outer, 0, MacSite::bias);
        const std::size_t n = s_.order.n;
        for (std::size_t g = 0; g < k; g += n) {
          const std::size_t e = std::min(k, g + n);
          Mp sum;
          if (s_.order.kind == MacOrderKind::chunk) {
            for (std::size_t i = g; i < e; ++i) sum = acc(sum, p_[i], s_.acc, s_.fused, i, MacSite::convert, MacSite::add);
          } else if (s_.order.kind == MacOrderKind::ftree) {
            sum = p_[g];
            for (std::size_t i = g + 1; i < e; ++i) sum = add(sum, p_[i], s_.acc);
            sum = rnd(sum, s_.acc, g, MacSite::group);
          } else {
            sum = tree(g, e);
          }
          r = acc(r, sum, outer, false, g, MacSite::outer_convert, MacSite::outer_add);
        }
      }
    }
    if (s_.out) return rnd_d(r, *s_.out, 0, MacSite::out);
    if (s_.acc && !s_.order.grouped()) return mpfr_get_d(r.get(), MPFR_RNDN);  // already a value of acc
    return mpfr_get_d(r.get(), MPFR_RNDN);  // exact sums: rounded once to fp64
  }

 private:
  // A value some code of the format stands for is taken as it is; anything else is quantized.
  static double input(double x, const Format& f) {
    if (std::isnan(x)) return x;
    try {
      (void)encode(f, x);
      return x;
    } catch (const FormatError&) {
      return quantize(x, f);
    }
  }
  static bool is_float(const Fmt& f) { return !f || f->kind() == FormatKind::floating; }
  static Mp add(const Mp& x, const Mp& y, const Fmt& f) {
    return Mp::add(x, y, f && f->rounding().mode == RoundMode::rd);
  }
  double rnd_d(const Mp& x, const Format& f, std::uint64_t step, MacSite site) const {
    return oracle_round(x, f, mac_random_index(out_, step, site), key_);
  }
  Mp rnd(const Mp& x, const Fmt& f, std::uint64_t step, MacSite site) const {
    if (!f) return x;
    return Mp(rnd_d(x, *f, step, site));
  }
  Mp acc(const Mp& cur, const Mp& x, const Fmt& f, bool fused, std::uint64_t step, MacSite conv, MacSite addsite) const {
    if (!is_float(f) && !fused) return rnd(add(cur, rnd(x, f, step, conv), f), f, step, addsite);
    return rnd(add(cur, x, f), f, step, addsite);
  }
  Mp leaf(std::size_t i) const { return is_float(s_.acc) ? p_[i] : rnd(p_[i], s_.acc, i, MacSite::convert); }
  Mp tree(std::size_t l, std::size_t r) const {
    if (r - l == 1) return leaf(l);
    std::size_t h = 1;
    while (2 * h < r - l) h *= 2;
    return rnd(add(tree(l, l + h), tree(l + h, r), s_.acc), s_.acc, l + h, MacSite::tree);
  }

  const MacSpec& s_;
  RandomKey key_;
  std::uint64_t out_;
  std::vector<Mp> p_;
};

}  // namespace mpsim::test
