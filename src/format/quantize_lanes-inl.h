// The per-lane rounding kernels of the SIMD quantizer (internal): RoundUp (the decision),
// FloatVector, SatVector and FixedVector round one vector of carrier values into a format
// described by a QuantPlan, bit-identical to the scalar reference (quantize_simd.cpp explains
// how a lane rounds and why it is exact). Written once, compiled for every Highway target by
// each translation unit that includes it after hwy/foreach_target.h: the array kernels
// (quantize_simd.cpp) and the GEMM kernels (src/mac/gemm_simd.cpp).

// Per-target include guard (Highway's -inl.h convention): the header is re-read once per target.
#if defined(MPSIM_QUANTIZE_LANES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef MPSIM_QUANTIZE_LANES_INL_H_
#undef MPSIM_QUANTIZE_LANES_INL_H_
#else
#define MPSIM_QUANTIZE_LANES_INL_H_
#endif

#include <hwy/highway.h>

#include <cstdint>
#include <cstring>
#include <limits>

#include "mpsim/quantize.h"
#include "mpsim/rng.h"
#include "src/format/quantize_plan.h"

HWY_BEFORE_NAMESPACE();
namespace mpsim::detail::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// ---- the rounding decision -----------------------------------------------------------------

// Lanes that take the upper neighbour, from the exact split sig = (K << dc) + rem with the true
// shift dsh (dc = min(dsh, P + 1); `tiny` lanes have dsh > P + 1, so their fraction rem / 2^dsh
// is below one half). `odd`: the lower neighbour's code is odd. `w0`: random word 0 of each
// lane. Adds to `fallback` the lanes whose decision needs more random words.
template <RoundMode MODE, class DU, class DI, class VU = hn::Vec<DU>, class VI = hn::Vec<DI>,
          class MU = hn::Mask<DU>>
HWY_INLINE MU RoundUp(DU du, DI di, const QuantPlan& p, VU rem, VI dsh, VU dc, MU odd, MU tiny,
                      MU neg, VU w0, MU& fallback) {
  using TU = hn::TFromD<DU>;
  using TI = hn::TFromD<DI>;
  constexpr int W = static_cast<int>(sizeof(TU) * 8);
  const VU zero = hn::Zero(du);
  const auto clamp_shift = [&](VI s) {
    return hn::BitCast(du, hn::Min(hn::Max(s, hn::Zero(di)), hn::Set(di, TI{W - 1})));
  };
  if constexpr (MODE == RoundMode::rne || MODE == RoundMode::rna) {
    const VU rem2 = hn::Add(rem, rem);
    const VU pw = hn::Shl(hn::Set(du, TU{1}), dc);
    const MU gt = hn::AndNot(tiny, hn::Gt(rem2, pw));
    const MU eq = hn::AndNot(tiny, hn::Eq(rem2, pw));
    if constexpr (MODE == RoundMode::rne) return hn::Or(gt, hn::And(eq, odd));
    else return hn::Or(gt, eq);
  } else if constexpr (MODE == RoundMode::rz) {
    return hn::Ne(zero, zero);
  } else if constexpr (MODE == RoundMode::ru) {
    return hn::AndNot(neg, hn::Ne(rem, zero));
  } else if constexpr (MODE == RoundMode::rd) {
    return hn::And(neg, hn::Ne(rem, zero));
  } else if constexpr (MODE == RoundMode::ro) {
    return hn::AndNot(odd, hn::Ne(rem, zero));
  } else if constexpr (MODE == RoundMode::sr) {
    // F0 = floor(rem * 2^(32 - dsh)): U < rem / 2^dsh iff w0 < F0, except when w0 == F0 and
    // the fraction has bits below the first word.
    const VU sl = clamp_shift(hn::Sub(hn::Set(di, TI{32}), dsh));
    const VU sr = clamp_shift(hn::Sub(dsh, hn::Set(di, TI{32})));
    const VU f0 = hn::Shr(hn::Shl(rem, sl), sr);
    const MU sticky = hn::And(hn::RebindMask(du, hn::Gt(dsh, hn::Set(di, TI{32}))),
                              hn::Ne(hn::Shl(f0, sr), rem));
    fallback = hn::Or(fallback, hn::And(sticky, hn::Eq(w0, f0)));
    return hn::Lt(w0, f0);
  } else {
    static_assert(MODE == RoundMode::srn);
    // Hardware style: floor(fraction * 2^N) + top N bits of the word reaches 2^N.
    const int n = p.rounding.param;
    const VI nv = hn::Set(di, static_cast<TI>(n));
    const VU kept = hn::Shr(hn::Shl(rem, clamp_shift(hn::Sub(nv, dsh))), clamp_shift(hn::Sub(dsh, nv)));
    const VU rnd = hn::ShiftRightSame(w0, 32 - n);
    // 2^N - kept, wrapping at 2^32 for N = 32 in 32-bit lanes (kept != 0 there).
    const TU one_n = (n == 32 && W == 32) ? TU{0} : static_cast<TU>(TU{1} << (n % W));
    const VU threshold = hn::Sub(hn::Set(du, one_n), kept);
    return hn::And(hn::Ne(kept, zero), hn::Not(hn::Lt(rnd, threshold)));
  }
}

// ---- one vector of a float format ------------------------------------------------------

template <class D>
struct Lanes {
  using T = hn::TFromD<D>;
  using DU = hn::RebindToUnsigned<D>;
  using DI = hn::RebindToSigned<D>;
  using TU = hn::TFromD<DU>;
  using TI = hn::TFromD<DI>;
  static constexpr int P = sizeof(T) == 4 ? 23 : 52;
  static constexpr TU kSign = TU{1} << (sizeof(T) * 8 - 1);
  static constexpr TU kInfBits = sizeof(T) == 4 ? TU(0x7F800000u) : TU(0x7FF0000000000000ull);
};

// Random word 0 of each lane, widened to the lane size.
template <class D>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<D>> LoadWords(D /*d*/, const std::uint32_t* w) {
  const hn::RebindToUnsigned<D> du;
  if constexpr (sizeof(hn::TFromD<D>) == 4) {
    return hn::LoadU(du, w);
  } else {
    const hn::Rebind<std::uint32_t, decltype(du)> d32;
    return hn::PromoteTo(du, hn::LoadU(d32, w));
  }
}

// What every kernel starts with: sign, magnitude bits, exact significand and binade.
template <class D>
struct Split {
  hn::Vec<hn::RebindToUnsigned<D>> sign, u, sig, eeff;
};

template <class D>
HWY_INLINE Split<D> SplitInput(D /*d*/, hn::Vec<D> x) {
  using L = Lanes<D>;
  const typename L::DU du;
  const auto bits = hn::BitCast(du, x);
  const auto sign_mask = hn::Set(du, L::kSign);
  Split<D> s;
  s.sign = hn::And(bits, sign_mask);
  s.u = hn::AndNot(sign_mask, bits);
  const auto e = hn::ShiftRight<L::P>(s.u);
  const auto one = hn::Set(du, typename L::TU{1});
  const auto hidden = hn::Set(du, typename L::TU{1} << L::P);
  s.sig = hn::Or(hn::And(s.u, hn::Sub(hidden, one)), hn::IfThenElseZero(hn::Ne(e, hn::Zero(du)), hidden));
  s.eeff = hn::Max(e, one);
  return s;
}

// Lanes of the magnitude bits u that are zero or at least lo (carrier bit patterns), and that
// are zero or in [lo, hi]. Magnitudes are below 2^(W-1), so signed compares are unsigned ones.
template <class DU>
HWY_INLINE hn::Mask<DU> ZeroOrAtLeast(DU du, hn::Vec<DU> u, std::uint64_t lo) {
  const hn::RebindToSigned<DU> di;
  using TI = hn::TFromD<decltype(di)>;
  const auto ui = hn::BitCast(di, u);
  return hn::RebindMask(du, hn::Or(hn::Eq(ui, hn::Zero(di)), hn::Not(hn::Lt(ui, hn::Set(di, static_cast<TI>(lo))))));
}
template <class DU>
HWY_INLINE hn::Mask<DU> ZeroOrWithin(DU du, hn::Vec<DU> u, std::uint64_t lo, std::uint64_t hi) {
  const hn::RebindToSigned<DU> di;
  using TI = hn::TFromD<decltype(di)>;
  return hn::AndNot(hn::RebindMask(du, hn::Gt(hn::BitCast(di, u), hn::Set(di, static_cast<TI>(hi)))), ZeroOrAtLeast(du, u, lo));
}

// The sign put back on a magnitude (fnuz formats have no -0).
template <class VU>
HWY_INLINE VU WithSign(const QuantPlan& p, VU mag, VU sign) {
  if (p.fnuz) sign = hn::IfThenZeroElse(hn::Eq(mag, hn::Zero(hn::DFromV<VU>())), sign);
  return hn::Or(mag, sign);
}

// Round to nearest-even by the carrier's own addition. A lane of binade e rounds at the quantum
// 2^q, q = max(e, emin) - M (below the normal range the quantum stays that of the lowest normal
// binade). With C = 2^(q + P), |x| + C lies in [2^(q+P), 2^(q+P+1)) whenever |x| < 2^(q+P),
// which holds for M < P, and the ulp there is 2^q: the sum is |x| rounded to a multiple of 2^q,
// ties to an even multiple (C is one), and subtracting C is exact. Callers guarantee |x| <= max
// (max is a value, so nothing rounds past it) and the plan's rne_add conditions (C finite; an
// even multiple is an even code, M >= 1); below the normal range also rne_add_low's.
// u: magnitude bits; returns the rounded magnitude bits.
template <class D>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<D>> RneByAddition(D d, const QuantPlan& p, hn::Vec<hn::RebindToUnsigned<D>> u) {
  using L = Lanes<D>;
  using TU = typename L::TU;
  const typename L::DU du;
  const auto e = hn::ShiftRight<L::P>(u);
  const auto qe = hn::Add(hn::Max(e, hn::Set(du, static_cast<TU>(p.Tn))), hn::Set(du, static_cast<TU>(L::P - p.M)));
  const auto C = hn::BitCast(d, hn::ShiftLeft<L::P>(qe));
  return hn::BitCast(du, hn::Sub(hn::Add(hn::BitCast(d, u), C), C));
}

// Nearest-even on the bits u, discarding the low dbits (1 <= dbits < lane width): adding
// 2^(dbits-1) - 1 plus the kept part's lowest bit carries into bit dbits exactly when the
// discarded part is above one half, or equal to it with an odd kept part; then the discarded
// bits are cleared. A carry out of the mantissa is the next binade's first value.
template <class VU>
HWY_INLINE VU RneOnBits(VU u, int dbits) {
  const hn::DFromV<VU> du;
  using TU = hn::TFromV<VU>;
  const auto mask = hn::Set(du, static_cast<TU>((TU{1} << dbits) - 1));
  const auto odd_bit = hn::And(hn::ShiftRightSame(u, dbits), hn::Set(du, TU{1}));
  const auto bias = hn::Add(hn::Set(du, static_cast<TU>((TU{1} << (dbits - 1)) - 1)), odd_bit);
  return hn::AndNot(mask, hn::Add(u, bias));
}

// A mask's lanes as the bits of an integer (lane j: bit j).
template <class D>
HWY_INLINE std::uint64_t MaskBits(D d, hn::Mask<D> m) {
  std::uint8_t bytes[8] = {};
  hn::StoreMaskBits(d, m, bytes);
  std::uint64_t bits = 0;
  std::memcpy(&bits, bytes, sizeof bits);
  return bits;
}

// Stochastic rounding by the carrier's integer addition, for fp32 carriers (d <= P = 23 < 32
// discarded bits per lane). sr rounds up when w0 < F = rem * 2^(32 - d) (§5.6 of
// docs/formats.md; F has no bits below the first word, so no tie needs a second word), and
// since F is a multiple of 2^(32 - d) that is R < rem with R = w0 >> (32 - d), the top d bits
// of the word. Adding mask - R = mask ^ R (mask = 2^d - 1, R <= mask) to the bits carries into
// bit d exactly when rem + mask - R >= 2^d, i.e. R < rem; clearing the low d bits then leaves
// the kept part, plus one quantum where the lane rounds up (a carry out of the mantissa is the
// next binade's first value). u: magnitude bits; r: R; mask: 2^d - 1, all per lane.
template <class VU>
HWY_INLINE VU SrByAddition(VU u, VU r, VU mask) {
  return hn::AndNot(mask, hn::Add(u, hn::Xor(r, mask)));
}

// sr for fp32 carriers where every lane is zero or lies in [sr_lo, fast_hi] (plan.sr_low):
// the lane's d = P - M + max(0, Tn - e) is at most P, so SrByAddition rounds it. (Zero lanes
// stay zero whatever their d, which is clamped to P to keep the shifts in range.)
template <class D>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<D>> SrBelowNormal(D d, const QuantPlan& p, hn::Vec<hn::RebindToUnsigned<D>> u,
                                                          const std::uint32_t* w) {
  using L = Lanes<D>;
  using TU = typename L::TU;
  using TI = typename L::TI;
  static_assert(sizeof(TU) == 4);
  const typename L::DU du;
  const typename L::DI di;
  const int dbits = L::P - p.M;
  const auto e = hn::BitCast(di, hn::ShiftRight<L::P>(u));
  const auto dl = hn::Min(hn::Max(hn::Sub(hn::Set(di, static_cast<TI>(dbits + p.Tn)), e), hn::Set(di, static_cast<TI>(dbits))),
                          hn::Set(di, TI{L::P}));
  const auto s = hn::BitCast(du, hn::Sub(hn::Set(di, TI{32}), dl));
  return SrByAddition(u, hn::Shr(LoadWords(d, w), s), hn::Shr(hn::Set(du, ~TU{0}), s));
}

// Rounding where every lane is in a normal binade of the format (or zero): the quantum is
// 2^(P - M) carrier ulps for all of them, so the kept part is u with its low P - M bits cleared
// and rounding up adds 2^(P - M) (a carry out of the mantissa moves into the exponent: the next
// binade's first value). u: magnitude bits at most max; returns the rounded magnitude bits.
template <RoundMode MODE, class D>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<D>> RoundAtOneShift(D d, const QuantPlan& p, hn::Vec<hn::RebindToUnsigned<D>> u,
                                                            hn::Mask<hn::RebindToUnsigned<D>> neg, const std::uint32_t* w,
                                                            hn::Mask<hn::RebindToUnsigned<D>>& fallback) {
  using L = Lanes<D>;
  using TU = typename L::TU;
  using TI = typename L::TI;
  const typename L::DU du;
  const typename L::DI di;
  const auto one = hn::Set(du, TU{1});
  const int dbits = L::P - p.M;
  const auto mask = hn::Set(du, static_cast<TU>((TU{1} << dbits) - 1));
  if constexpr (MODE == RoundMode::sr && sizeof(TU) == 4) {
    if (dbits > 0) return SrByAddition(u, hn::ShiftRightSame(LoadWords(d, w), 32 - dbits), mask);
  }
  const auto rem = hn::And(u, mask);
  const auto lo = hn::AndNot(mask, u);
  const auto odd = hn::Ne(hn::And(hn::ShiftRightSame(u, dbits), one), hn::Zero(du));
  hn::Vec<hn::RebindToUnsigned<D>> w0 = hn::Zero(du);
  if constexpr (MODE == RoundMode::sr || MODE == RoundMode::srn) w0 = LoadWords(d, w);
  const auto none = hn::Ne(one, one);
  const auto up = RoundUp<MODE>(du, di, p, rem, hn::Set(di, static_cast<TI>(dbits)), hn::Set(du, static_cast<TU>(dbits)),
                                odd, none, neg, w0, fallback);
  return hn::Add(lo, hn::And(hn::VecFromMask(du, up), hn::Set(du, TU{1} << dbits)));
}

template <RoundMode MODE, class D>
HWY_INLINE hn::Vec<D> FloatVector(D d, const QuantPlan& p, hn::Vec<D> x, const std::uint32_t* w,
                                  hn::Mask<hn::RebindToUnsigned<D>>& fallback) {
  using L = Lanes<D>;
  using TU = typename L::TU;
  using TI = typename L::TI;
  const typename L::DU du;
  const typename L::DI di;
  const auto one = hn::Set(du, TU{1});
  const Split<D> s = SplitInput(d, x);
  const auto neg = hn::Ne(s.sign, hn::Zero(du));

  if constexpr (MODE == RoundMode::rne) {
    // Gradual underflow: every magnitude up to max, subnormal lanes included, by addition.
    if (p.rne_add_low &&
        hn::AllTrue(di, hn::Not(hn::Gt(hn::BitCast(di, s.u), hn::Set(di, static_cast<TI>(p.fast_hi)))))) {
      return hn::BitCast(d, WithSign(p, RneByAddition(d, p, s.u), s.sign));
    }
  }
  if (p.fast) {
    if (hn::AllTrue(du, ZeroOrWithin(du, s.u, p.fast_lo, p.fast_hi))) {
      const int dbits = L::P - p.M;
      if constexpr (MODE == RoundMode::rne) {
        // Lanes here are normal and at most max: by addition where the plan allows it.
        if (p.rne_add) return hn::BitCast(d, WithSign(p, RneByAddition(d, p, s.u), s.sign));
        // Lanes here are normal and at most max, which is a value, so nothing rounds past it.
        if (dbits > 0) return hn::BitCast(d, WithSign(p, RneOnBits(s.u, dbits), s.sign));
      }
      return hn::BitCast(d, WithSign(p, RoundAtOneShift<MODE>(d, p, s.u, neg, w, fallback), s.sign));
    }
  }
  if constexpr (MODE == RoundMode::sr && sizeof(TU) == 4) {
    if (p.sr_low && hn::AllTrue(du, ZeroOrWithin(du, s.u, p.sr_lo, p.fast_hi))) {
      return hn::BitCast(d, WithSign(p, SrBelowNormal(d, p, s.u, w), s.sign));
    }
  }

  const auto t = hn::Sub(hn::BitCast(di, s.eeff), hn::Set(di, static_cast<TI>(p.Tn)));
  const auto normal = hn::RebindMask(du, hn::Not(hn::Lt(t, hn::Zero(di))));
  const auto dsh = hn::IfThenElse(hn::RebindMask(di, normal), hn::Set(di, static_cast<TI>(L::P - p.M)),
                                  hn::Sub(hn::Set(di, static_cast<TI>(L::P - p.M + p.sub_shift)), t));
  const auto tiny = hn::RebindMask(du, hn::Gt(dsh, hn::Set(di, static_cast<TI>(L::P + 1))));
  const auto dc = hn::BitCast(du, hn::Min(dsh, hn::Set(di, static_cast<TI>(L::P + 1))));
  const auto K = hn::Shr(s.sig, dc);
  const auto rem = hn::Sub(s.sig, hn::Shl(K, dc));
  const auto tc = hn::BitCast(du, hn::Min(hn::Max(t, hn::Zero(di)), hn::Set(di, static_cast<TI>(p.t_clamp))));
  const auto code_lo =
      hn::IfThenElse(normal, hn::Sub(hn::Add(hn::ShiftLeftSame(tc, p.M), K), hn::Set(du, static_cast<TU>(p.code_offset))),
                     hn::ShiftLeftSame(K, p.sub_shift));
  const auto odd = hn::Ne(hn::And(code_lo, one), hn::Zero(du));
  hn::Vec<hn::RebindToUnsigned<D>> w0 = hn::Zero(du);
  if constexpr (MODE == RoundMode::sr || MODE == RoundMode::srn) w0 = LoadWords(d, w);
  const auto up = RoundUp<MODE>(du, di, p, rem, dsh, dc, odd, tiny, neg, w0, fallback);
  // Round K, then form the code: a carry out of the mantissa is the next binade's first code;
  // below the normal range the step between neighbours is 2^sub_shift codes.
  const auto Kr = hn::Sub(K, hn::VecFromMask(du, up));  // + 1 where up
  auto code = hn::IfThenElse(
      normal, hn::Sub(hn::Add(hn::ShiftLeftSame(tc, p.M), Kr), hn::Set(du, static_cast<TU>(p.code_offset))),
      hn::ShiftLeftSame(Kr, p.sub_shift));

  const auto first_normal = hn::Set(du, TU{1} << p.M);
  if (p.flushout) code = hn::IfThenZeroElse(hn::Lt(code, first_normal), code);
  if (p.low_clamp) code = hn::IfThenZeroElse(hn::RebindMask(du, hn::Lt(t, hn::Zero(di))), code);
  const auto over = hn::Or(hn::RebindMask(du, hn::Gt(hn::BitCast(di, s.eeff), hn::Set(di, static_cast<TI>(p.top_biased)))),
                           hn::Gt(code, hn::Set(du, static_cast<TU>(p.max_code))));

  // Code -> carrier value.
  auto mag = hn::BitCast(d, hn::Add(hn::ShiftLeftSame(code, L::P - p.M), hn::Set(du, static_cast<TU>(p.normal_offset))));
  const auto small = hn::Lt(code, first_normal);
  if (!hn::AllFalse(du, small)) {
    auto add = hn::Set(du, static_cast<TU>(p.code_offset));  // the hidden bit where field 0 is normal
    if (p.zero_code_is_zero) add = hn::IfThenZeroElse(hn::Eq(code, hn::Zero(du)), add);
    const auto v = hn::Mul(hn::ConvertTo(d, hn::BitCast(di, hn::Add(code, add))), hn::Set(d, static_cast<hn::TFromD<D>>(p.small_scale)));
    mag = hn::IfThenElse(hn::RebindMask(d, small), v, mag);
  }
  // Overflow: the toward-zero modes stop at the largest finite value.
  const auto vmax = hn::Set(d, static_cast<hn::TFromD<D>>(p.max_value));
  const auto vover = hn::Set(d, static_cast<hn::TFromD<D>>(p.overflow_value));
  hn::Vec<D> over_value;
  if constexpr (MODE == RoundMode::rz || MODE == RoundMode::ro) over_value = vmax;
  else if constexpr (MODE == RoundMode::ru) over_value = hn::IfThenElse(hn::RebindMask(d, neg), vmax, vover);
  else if constexpr (MODE == RoundMode::rd) over_value = hn::IfThenElse(hn::RebindMask(d, neg), vover, vmax);
  else over_value = vover;
  mag = hn::IfThenElse(hn::RebindMask(d, over), over_value, mag);
  const auto inf_bits = hn::Set(du, L::kInfBits);
  mag = hn::IfThenElse(hn::RebindMask(d, hn::Eq(s.u, inf_bits)), hn::Set(d, static_cast<hn::TFromD<D>>(p.inf_value)), mag);

  auto sign = s.sign;
  if (p.fnuz) sign = hn::IfThenZeroElse(hn::Eq(hn::BitCast(du, mag), hn::Zero(du)), sign);
  auto result = hn::BitCast(d, hn::Or(hn::BitCast(du, mag), sign));
  auto nan_out = hn::Gt(s.u, inf_bits);
  if (p.unsigned_nan) nan_out = hn::Or(nan_out, hn::Or(neg, hn::Eq(s.u, hn::Zero(du))));
  nan_out = hn::Or(nan_out, hn::RebindMask(du, hn::IsNaN(result)));
  result = hn::IfThenElse(hn::RebindMask(d, nan_out), hn::Set(d, std::numeric_limits<hn::TFromD<D>>::quiet_NaN()), result);
  if (p.Tn < 1 || (p.Tn == 1 && p.sub_shift > 0)) {
    // The format's lowest binade lies among the carrier's subnormals (e8m0fnu in fp32), where
    // the significand has no hidden bit to locate the binade by; or it is the carrier's lowest
    // normal binade and the format has no subnormals (bf16:sub=flushin in fp32), where the
    // carrier's subnormals -- below the format's normal range, t = 0 above -- would be read as
    // normal. Such inputs go to the reference.
    const auto sub_in = hn::And(hn::Lt(s.u, hn::Set(du, TU{1} << L::P)), hn::Ne(s.u, hn::Zero(du)));
    fallback = hn::Or(fallback, sub_in);
  }
  if (p.asnormal_gap) {
    // CFG-5's gap (0, s1): the neighbours are 0 (code 0, even) and s1 (code 1, odd), with s1/2
    // a float of the carrier between them, so the deterministic modes decide by comparisons:
    // rne up above s1/2 (a tie goes to the even 0), rna from s1/2 on, ru and rd by the sign,
    // ro always (inexact: the odd code), rz never. The stochastic modes need the exact fraction
    // |x| / s1, which is not dyadic: those lanes go to the scalar reference.
    using T = hn::TFromD<D>;
    const auto ax = hn::BitCast(d, s.u);
    const auto gap = hn::RebindMask(du, hn::And(hn::Lt(ax, hn::Set(d, static_cast<T>(p.s1))), hn::Ne(ax, hn::Zero(d))));
    if constexpr (MODE == RoundMode::sr || MODE == RoundMode::srn) {
      fallback = hn::Or(fallback, gap);
    } else {
      const auto half = hn::Set(d, static_cast<T>(p.s1 / 2));  // exact: s1 is a normal carrier value
      auto gap_up = hn::Ne(hn::Zero(du), hn::Zero(du));
      if constexpr (MODE == RoundMode::rne) gap_up = hn::RebindMask(du, hn::Gt(ax, half));
      else if constexpr (MODE == RoundMode::rna) gap_up = hn::RebindMask(du, hn::Ge(ax, half));
      else if constexpr (MODE == RoundMode::ru) gap_up = hn::Not(neg);
      else if constexpr (MODE == RoundMode::rd) gap_up = neg;
      else if constexpr (MODE == RoundMode::ro) gap_up = hn::Eq(hn::Zero(du), hn::Zero(du));
      else static_assert(MODE == RoundMode::rz);
      const auto mag_gap = hn::IfThenElseZero(gap_up, hn::BitCast(du, hn::Set(d, static_cast<T>(p.s1))));
      result = hn::IfThenElse(hn::RebindMask(d, gap), hn::BitCast(d, WithSign(p, mag_gap, s.sign)), result);
    }
  }
  return result;
}

// ---- one vector of a saturating float format with gradual underflow ----------------------

// Every finite magnitude above the largest value max rounds to max in every mode, and so does
// infinity, so the magnitude bits are clamped to max's first (max is a value: exact, nothing
// to round). Then the quantum depends on the binade alone: 2^(e - M) in a normal binade e, and
// 2^(emin - M) below it. With d the number of significand bits below the quantum:
//   d <= P: the kept part is the input with its low d bits cleared, and rounding up adds
//           2^d to the bits (a carry into the exponent is the next binade's first value);
//   d > P:  the input is below one quantum (its multiple K is 0), so the result is 0 or the
//           quantum itself.
// The parity of the lower neighbour's code is the parity of its multiple of the quantum (M > 0).
template <RoundMode MODE, class D>
HWY_INLINE hn::Vec<D> SatVector(D d, const QuantPlan& p, hn::Vec<D> x, const std::uint32_t* w,
                                hn::Mask<hn::RebindToUnsigned<D>>& fallback) {
  using L = Lanes<D>;
  using TU = typename L::TU;
  using TI = typename L::TI;
  const typename L::DU du;
  const typename L::DI di;
  const auto one = hn::Set(du, TU{1});
  const auto bits = hn::BitCast(du, x);
  const auto sign_mask = hn::Set(du, L::kSign);
  const auto sign = hn::And(bits, sign_mask);
  const auto u0 = hn::AndNot(sign_mask, bits);
  const auto neg = hn::Ne(sign, hn::Zero(du));
  const auto inf_bits = hn::Set(du, L::kInfBits);
  const auto nan = hn::Gt(u0, inf_bits);
  const auto u = hn::Min(u0, hn::Set(du, static_cast<TU>(p.fast_hi)));
  hn::Vec<hn::RebindToUnsigned<D>> mag;
  if (MODE == RoundMode::rne && p.rne_add_low) {
    mag = RneByAddition(d, p, u);  // every lane, subnormal ones included
  } else if (hn::AllTrue(du, ZeroOrAtLeast(du, u, p.fast_lo))) {
    // Lanes at or above the lowest normal binade (or zero): one quantum position for all.
    mag = RoundAtOneShift<MODE>(d, p, u, neg, w, fallback);
  } else if (MODE == RoundMode::sr && sizeof(TU) == 4 && p.sr_low && hn::AllTrue(du, ZeroOrAtLeast(du, u, p.sr_lo))) {
    if constexpr (MODE == RoundMode::sr && sizeof(TU) == 4) mag = SrBelowNormal(d, p, u, w);  // (u is at most max)
  } else {
    hn::Vec<hn::RebindToUnsigned<D>> w0 = hn::Zero(du);
    if constexpr (MODE == RoundMode::sr || MODE == RoundMode::srn) w0 = LoadWords(d, w);
    const auto e = hn::ShiftRight<L::P>(u);
    const auto hidden = hn::Set(du, TU{1} << L::P);
    const auto sig = hn::Or(hn::And(u, hn::Sub(hidden, one)), hn::IfThenElseZero(hn::Ne(e, hn::Zero(du)), hidden));
    const auto eeff = hn::BitCast(di, hn::Max(e, one));
    const auto below = hn::Max(hn::Sub(hn::Set(di, static_cast<TI>(p.Tn)), eeff), hn::Zero(di));
    const auto dsh = hn::Add(hn::Set(di, static_cast<TI>(L::P - p.M)), below);
    const auto tiny = hn::RebindMask(du, hn::Gt(dsh, hn::Set(di, static_cast<TI>(L::P + 1))));
    const auto dc = hn::BitCast(du, hn::Min(dsh, hn::Set(di, static_cast<TI>(L::P + 1))));
    const auto K = hn::Shr(sig, dc);
    const auto rem = hn::Sub(sig, hn::Shl(K, dc));
    const auto odd = hn::Ne(hn::And(K, one), hn::Zero(du));
    const auto up = hn::VecFromMask(du, RoundUp<MODE>(du, di, p, rem, dsh, dc, odd, tiny, neg, w0, fallback));
    const auto within = hn::RebindMask(du, hn::Not(hn::Gt(dsh, hn::Set(di, static_cast<TI>(L::P)))));
    const auto step = hn::Shl(one, hn::Min(dc, hn::Set(du, static_cast<TU>(L::P))));
    const auto kept = hn::Add(hn::AndNot(hn::Sub(step, one), u), hn::And(up, step));
    mag = hn::IfThenElse(within, kept, hn::And(up, hn::Set(du, static_cast<TU>(p.quantum_bits))));
  }
  auto result = hn::BitCast(d, hn::Or(mag, sign));
  return hn::IfThenElse(hn::RebindMask(d, nan), hn::Set(d, std::numeric_limits<hn::TFromD<D>>::quiet_NaN()), result);
}

// ---- one vector of fixed point (and power-of-two integers) -------------------------------

template <RoundMode MODE, class D>
HWY_INLINE hn::Vec<D> FixedVector(D d, const QuantPlan& p, hn::Vec<D> x, const std::uint32_t* w,
                                  hn::Mask<hn::RebindToUnsigned<D>>& fallback) {
  using L = Lanes<D>;
  using TU = typename L::TU;
  using TI = typename L::TI;
  const typename L::DU du;
  const typename L::DI di;
  const auto one = hn::Set(du, TU{1});
  const Split<D> s = SplitInput(d, x);
  const auto neg = hn::Ne(s.sign, hn::Zero(du));
  const auto inf_bits = hn::Set(du, L::kInfBits);
  const auto special = hn::Not(hn::Lt(s.u, inf_bits));

  // |x| / 2^-F = sig * 2^(Eeff - Tq - P): dsh = P - (Eeff - Tq) bits of sig lie below the point.
  const auto dsh = hn::Sub(hn::Set(di, static_cast<TI>(L::P + p.Tq)), hn::BitCast(di, s.eeff));
  const auto big = hn::AndNot(special, hn::RebindMask(du, hn::Lt(dsh, hn::Zero(di))));
  const auto tiny = hn::RebindMask(du, hn::Gt(dsh, hn::Set(di, static_cast<TI>(L::P + 1))));
  const auto dc = hn::BitCast(du, hn::Min(hn::Max(dsh, hn::Zero(di)), hn::Set(di, static_cast<TI>(L::P + 1))));
  const auto K = hn::Shr(s.sig, dc);
  const auto rem = hn::Sub(s.sig, hn::Shl(K, dc));
  const auto odd = hn::Ne(hn::And(K, one), hn::Zero(du));
  hn::Vec<hn::RebindToUnsigned<D>> w0 = hn::Zero(du);
  if constexpr (MODE == RoundMode::sr || MODE == RoundMode::srn) w0 = LoadWords(d, w);
  auto round_fb = hn::Ne(hn::Zero(du), hn::Zero(du));
  const auto up = RoundUp<MODE>(du, di, p, rem, dsh, dc, odd, tiny, neg, w0, round_fb);
  auto k = hn::Sub(K, hn::VecFromMask(du, up));
  const auto limit = hn::IfThenElse(neg, hn::Set(du, static_cast<TU>(p.k_neg)), hn::Set(du, static_cast<TU>(p.k_pos)));
  const auto over = hn::Gt(k, limit);
  // To the reference: more random words, |x| 2^F >= 2^(P+1), and wrapping overflow. Infinity
  // and NaN stay here (they saturate, or stay NaN).
  auto fb = hn::Or(round_fb, big);
  if (p.wrap) fb = hn::Or(fb, over);
  fallback = hn::Or(fallback, hn::AndNot(special, fb));
  k = hn::IfThenElse(hn::Or(over, special), limit, k);
  const auto value = hn::Mul(hn::ConvertTo(d, hn::BitCast(di, k)), hn::Set(d, static_cast<hn::TFromD<D>>(p.quantum)));
  // Fixed point has no negative zero.
  const auto sign = hn::IfThenZeroElse(hn::Eq(k, hn::Zero(du)), s.sign);
  auto result = hn::BitCast(d, hn::Or(hn::BitCast(du, value), sign));
  result = hn::IfThenElse(hn::RebindMask(d, hn::Gt(s.u, inf_bits)), hn::Set(d, std::numeric_limits<hn::TFromD<D>>::quiet_NaN()), result);
  return result;
}

// ---- one vector, with the lanes the kernels leave to the reference ------------------------

// Lanes flagged in `bits`, rounded by the scalar reference (quantize) with element indices
// index, index + 1, ...
template <typename T>
HWY_NOINLINE void FixLanes(const Format& f, const T* x, T* out, std::uint64_t bits, std::size_t lanes,
                           std::uint64_t index, const RandomKey& key) {
  for (std::size_t j = 0; j < lanes; ++j) {
    if ((bits >> j) & 1) out[j] = quantize(x[j], f, index + j, key);
  }
}

// rne for a plan with rne_bits_all (bf16, tf32 in fp32): on the bits, with no range check, NaN
// lanes selected apart (quantize_plan.h says why this is exact). A kernel kind of its own, so
// that the other formats' loops carry neither its test nor its constants.
template <class D>
HWY_INLINE hn::Vec<D> RneBitsVector(D d, const QuantPlan& p, hn::Vec<D> x) {
  using L = Lanes<D>;
  const typename L::DU du;
  const Split<D> s = SplitInput(d, x);
  const auto r = hn::BitCast(d, hn::Or(RneOnBits(s.u, L::P - p.M), s.sign));
  return hn::IfThenElse(hn::RebindMask(d, hn::Gt(s.u, hn::Set(du, L::kInfBits))),
                        hn::Set(d, std::numeric_limits<hn::TFromD<D>>::quiet_NaN()), r);
}

// Kernel kinds: 0 FloatVector, 1 FixedVector, 2 SatVector, 3 RneBitsVector (rne only).
// x rounded into f (whose plan is p): the vector kernel of that kind, and the scalar reference
// for the lanes it cannot decide (lane j is element index + j; w: its random words).
template <RoundMode MODE, int kKind, class D, typename T = hn::TFromD<D>>
HWY_INLINE hn::Vec<D> RoundVector(D d, const QuantPlan& p, const Format& f, hn::Vec<D> x, const std::uint32_t* w,
                                  std::uint64_t index, const RandomKey& key) {
  const hn::RebindToUnsigned<D> du;
  auto fallback = hn::Ne(hn::Zero(du), hn::Zero(du));
  hn::Vec<D> y;
  if constexpr (kKind == 3) {
    (void)w;
    y = RneBitsVector(d, p, x);
  } else if constexpr (kKind == 1) y = FixedVector<MODE>(d, p, x, w, fallback);
  else if constexpr (kKind == 2) y = SatVector<MODE>(d, p, x, w, fallback);
  else y = FloatVector<MODE>(d, p, x, w, fallback);
  if (HWY_UNLIKELY(!hn::AllFalse(du, fallback))) {
    constexpr std::size_t kMax = HWY_MAX_BYTES / sizeof(T);
    alignas(64) T xs[kMax], ys[kMax];
    hn::Store(x, d, xs);
    hn::Store(y, d, ys);
    FixLanes(f, xs, ys, MaskBits(du, fallback), hn::Lanes(d), index, key);
    y = hn::Load(d, ys);
  }
  return y;
}

}  // namespace mpsim::detail::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
