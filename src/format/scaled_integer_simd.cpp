// The SIMD kernel of integer formats with a scale that is not a power of two or a zero point
// (scaled_integer.h), compiled by Highway's foreach_target for AVX-512, AVX2 and one lane like
// quantize_simd.cpp, and bit-identical to the scalar reference (quantize_ref.cpp,
// integer_code), which defines the result: the exact v = x / scale + zp rounded to an integer
// z in the format's mode, saturated to [zmin, zmax]; an input equal to the value of z - 1, z or
// z + 1 is that code; the result is (z - zp) * scale rounded once to the carrier.
//
// How a lane decides, in fp64 (fp32 inputs are widened exactly): t = x / scale and v = t + zp
// are each rounded once, so |v~ - v| <= 2^-53 (|t| + |v|) < err = 2^-50 (|t| + |zp| + 1).
// Where v~ is farther than err from every point at which the mode's decision changes (the
// integers for the directed modes, the half-integers for rne/rna), the decision taken on v~ is
// the decision on v. Closer than that, the side of v is read exactly: with m the boundary minus
// zp (an integer or a half-integer, below 2^42), m * scale = P + E exactly (one product and
// its error by FMA), x - P is exact (Sterbenz: x and P are within a factor of two, since
// x / scale lies within err of m and |m| >= 1/2; m = 0 gives P = E = 0) and (x - P) - E has
// the sign of x / scale - m, zero only when they are equal. Stochastic lanes compare the
// random word with the fraction's interval [f - err, f + err]; the few where the word falls
// inside it (or srN's kept bits straddle it) go to the scalar reference. Lanes with
// |t| >= 2^40 (infinities included) lie outside the range of every code of at most 32 bits
// with a zero point below 2^32, and saturate by the sign of x, as in the reference.
//
// fp32 results: (z - zp) * scale is formed exactly as P + E, rounded to odd in fp64 (53 >= 24
// + 2 bits: the second rounding to fp32 is then correct, Boldo and Melquiond) and converted,
// as integer_value32 does.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/format/scaled_integer_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include "mpsim/quantize.h"
#include "mpsim/rng.h"
#include "quantize_plan.h"
#include "quantize_simd.h"
#include "scaled_integer.h"
// FixLanes and MaskBits, for this target (re-included by foreach_target).
#include "src/format/quantize_lanes-inl.h"

HWY_BEFORE_NAMESPACE();
namespace mpsim::detail::HWY_NAMESPACE {
namespace {

// a * b - p exactly (p = a * b rounded): a fused multiply-subtract. The one-lane target's
// MulSub is a plain multiply and subtract, so it calls std::fma.
template <class D>
HWY_INLINE hn::Vec<D> ProductError(D d, hn::Vec<D> a, hn::Vec<D> b, hn::Vec<D> p) {
#if HWY_TARGET == HWY_SCALAR
  return hn::Set(d, std::fma(hn::GetLane(a), hn::GetLane(b), -hn::GetLane(p)));
#else
  (void)d;
  return hn::MulSub(a, b, p);
#endif
}

// The exact sign of x / scale - m (see the top of the file; needs x / scale within 2^-10 |m|
// of m, or m = 0): negative, zero or positive like the result.
template <class D>
HWY_INLINE hn::Vec<D> ExactSide(D d, hn::Vec<D> x, hn::Vec<D> scale, hn::Vec<D> m) {
  const auto p = hn::Mul(m, scale);
  return hn::Sub(hn::Sub(x, p), ProductError(d, m, scale, p));
}

// sel ? yes : no, lane by lane, for masks.
template <class M>
HWY_INLINE M Select(M sel, M yes, M no) {
  return hn::Or(hn::And(sel, yes), hn::AndNot(sel, no));
}

template <class D>
HWY_INLINE hn::Mask<D> IsEven(D d, hn::Vec<D> k) {  // k a non-negative integer below 2^52
  const auto h = hn::Mul(k, hn::Set(d, 0.5));
  return hn::Eq(hn::Floor(h), h);
}

// The code z (as an fp64 integer) of each lane; lanes that need the reference are set in
// `fallback`. w: the lane's first random word (stochastic modes), as an fp64 integer.
template <RoundMode MODE, class D>
HWY_INLINE hn::Vec<D> ScaledCodes(D d, const ScaledIntPlan& p, hn::Vec<D> x, hn::Vec<D> w, hn::Mask<D>& fallback) {
  const auto zero = hn::Zero(d), one = hn::Set(d, 1.0), half = hn::Set(d, 0.5);
  const auto s = hn::Set(d, p.scale), zp = hn::Set(d, p.zp);
  const auto zmin = hn::Set(d, p.zmin), zmax = hn::Set(d, p.zmax);
  const auto t = hn::Div(x, s);
  const auto v = hn::Add(t, zp);
  const auto err = hn::Mul(hn::Add(hn::Add(hn::Abs(t), hn::Abs(zp)), one), hn::Set(d, 0x1p-50));
  // |v| = Kv + f with Kv an integer and 0 < f < 1 (inexact lanes), the reference's view: the
  // modes act on the magnitude, with the sign of v.
  const auto a = hn::Abs(v);
  auto vneg = hn::Lt(v, zero);
  auto Kv = hn::Floor(a);
  auto exact = hn::Lt(one, zero);  // none yet
  const auto c = hn::Round(a);
  const auto near = hn::Le(hn::Abs(hn::Sub(a, c)), err);
  if (HWY_UNLIKELY(!hn::AllFalse(d, near))) {
    // Near an integer: which side of it v lies, exactly. Where c = 0 that also gives v's sign.
    const auto r = ExactSide(d, x, s, hn::Sub(hn::IfThenElse(vneg, hn::Neg(c), c), zp));
    const auto c0 = hn::And(near, hn::Eq(c, zero));
    vneg = Select(c0, hn::Lt(r, zero), vneg);
    exact = hn::And(near, hn::Eq(r, zero));
    // Away from zero past c (r has the sign of v - (+-c)); every nonzero v is past 0.
    const auto beyond = hn::Or(c0, hn::Xor(hn::Gt(r, zero), hn::Lt(v, zero)));
    Kv = hn::IfThenElse(near, hn::IfThenElse(beyond, c, hn::Sub(c, one)), Kv);
  }
  const auto f = hn::Sub(a, Kv);  // within err of the exact fraction
  hn::Mask<D> up;
  if constexpr (MODE == RoundMode::rne || MODE == RoundMode::rna) {
    up = hn::Gt(f, half);
    const auto mid = hn::AndNot(exact, hn::Le(hn::Abs(hn::Sub(f, half)), err));
    if (HWY_UNLIKELY(!hn::AllFalse(d, mid))) {
      const auto b = hn::Add(Kv, half);
      const auto r = ExactSide(d, x, s, hn::Sub(hn::IfThenElse(vneg, hn::Neg(b), b), zp));
      const auto past = Select(vneg, hn::Lt(r, zero), hn::Gt(r, zero));  // |v| > Kv + 1/2
      auto tie_up = hn::Eq(r, zero);                                          // rna: away from zero
      if constexpr (MODE == RoundMode::rne) tie_up = hn::AndNot(IsEven(d, Kv), tie_up);
      up = Select(mid, hn::Or(past, tie_up), up);
    }
  } else if constexpr (MODE == RoundMode::rz) {
    up = hn::Lt(one, zero);
  } else if constexpr (MODE == RoundMode::ru) {
    up = hn::Not(vneg);
  } else if constexpr (MODE == RoundMode::rd) {
    up = vneg;
  } else if constexpr (MODE == RoundMode::ro) {
    up = IsEven(d, Kv);
  } else {
    // The exact fraction lies in [lo, hi] (and in (0, 1)).
    const auto lo = hn::Max(hn::Sub(f, err), zero);
    const auto hi = hn::Min(hn::Add(f, err), hn::Set(d, 1.0 - 0x1p-53));
    if constexpr (MODE == RoundMode::sr) {
      // Up when the uniform U = 0.w... is below the fraction: surely where (w + 1) 2^-32 <= lo,
      // surely not where w 2^-32 >= hi.
      const auto k32 = hn::Set(d, 0x1p-32);
      up = hn::Le(hn::Mul(hn::Add(w, one), k32), lo);
      const auto down = hn::Ge(hn::Mul(w, k32), hi);
      fallback = hn::Or(fallback, hn::AndNot(exact, hn::Not(hn::Or(up, down))));
    } else {
      // srN: the fraction's top N bits, plus the word's top N bits, carry past 2^N.
      const int n = p.rounding.param;
      const auto scale_n = hn::Set(d, std::ldexp(1.0, n));
      const auto kept = hn::Floor(hn::Mul(lo, scale_n));
      fallback = hn::Or(fallback, hn::AndNot(exact, hn::Ne(kept, hn::Floor(hn::Mul(hi, scale_n)))));
      const auto rnd = hn::Floor(hn::Mul(w, hn::Set(d, std::ldexp(1.0, n - 32))));
      up = hn::Ge(hn::Add(kept, rnd), scale_n);
    }
  }
  auto mag = hn::IfThenElse(exact, c, hn::Add(Kv, hn::IfThenElseZero(up, one)));
  // + 0: an integer z, never -0 (the reference's z is a long long).
  auto z = hn::Add(hn::IfThenElse(vneg, hn::Neg(mag), mag), zero);
  // Saturation; then, inside the range, an input that is the value of a neighbouring code is
  // that code (the reference tries z - 1, z, z + 1 in turn).
  const auto inside = hn::And(hn::Ge(z, zmin), hn::Le(z, zmax));
  const auto value_is = [&](hn::Vec<D> code) { return hn::Eq(hn::Mul(hn::Sub(code, zp), s), x); };
  const auto zm = hn::Sub(z, one), zq = hn::Add(z, one);
  const auto is_m = hn::And(hn::Ge(zm, zmin), value_is(zm));
  const auto is_z = value_is(z);
  const auto is_q = hn::And(hn::Le(zq, zmax), value_is(zq));
  auto snapped = hn::IfThenElse(is_m, zm, hn::IfThenElse(is_z, z, hn::IfThenElse(is_q, zq, z)));
  z = hn::IfThenElse(inside, snapped, hn::Min(hn::Max(z, zmin), zmax));
  // Past 2^40 (and infinities): saturation by the sign of x; zero inputs are the zero point.
  const auto big = hn::Not(hn::Lt(hn::Abs(t), hn::Set(d, 0x1p40)));
  z = hn::IfThenElse(big, hn::IfThenElse(hn::Lt(x, zero), zmin, zmax), z);
  z = hn::IfThenElse(hn::Eq(x, zero), zp, z);
  fallback = hn::AndNot(big, fallback);  // decided already (and f is meaningless there)
  return z;
}

// (z - zp) * scale in fp64.
template <class D>
HWY_INLINE hn::Vec<D> Value64(D d, const ScaledIntPlan& p, hn::Vec<D> z, hn::Vec<D> x) {
  const auto y = hn::Mul(hn::Sub(z, hn::Set(d, p.zp)), hn::Set(d, p.scale));
  return hn::IfThenElse(hn::IsNaN(x), hn::Set(d, std::numeric_limits<double>::quiet_NaN()), y);
}

// (z - zp) * scale rounded to odd in fp64, for the one rounding to fp32 that follows.
template <class D>
HWY_INLINE hn::Vec<D> ValueToOdd(D d, const ScaledIntPlan& p, hn::Vec<D> z, hn::Vec<D> x) {
  const hn::RebindToSigned<D> di;
  const auto k = hn::Sub(z, hn::Set(d, p.zp));
  const auto s = hn::Set(d, p.scale);
  const auto prod = hn::Mul(k, s);
  const auto e = ProductError(d, k, s, prod);
  const auto zero = hn::Zero(d);
  // Inexact and even: step to the odd neighbour on the exact value's side (bits are sign and
  // magnitude, so -1 on the bits is one step toward zero for either sign).
  const auto bits = hn::BitCast(di, prod);
  const auto even = hn::Eq(hn::And(bits, hn::Set(di, 1)), hn::Zero(di));
  const auto above = hn::Xor(hn::Lt(prod, zero), hn::Lt(e, zero));  // |prod| > |exact|
  const auto step = hn::IfThenElse(hn::RebindMask(di, above), hn::Set(di, -1), hn::Set(di, 1));
  const auto fix = hn::RebindMask(di, hn::And(hn::Ne(e, zero), hn::RebindMask(d, even)));
  const auto y = hn::BitCast(d, hn::Add(bits, hn::IfThenElseZero(fix, step)));
  return hn::IfThenElse(hn::IsNaN(x), hn::Set(d, std::numeric_limits<double>::quiet_NaN()), y);
}

// fp64 lanes to fp32, rounding to nearest (as static_cast<float>: overflow becomes infinity).
// The one-lane target's DemoteTo saturates at the largest float instead.
template <class DF, class V>
HWY_INLINE hn::Vec<DF> ToFloat(DF df, V v) {
#if HWY_TARGET == HWY_SCALAR
  return hn::Set(df, static_cast<float>(hn::GetLane(v)));
#else
  return hn::DemoteTo(df, v);
#endif
}

template <RoundMode MODE, typename T>
void ScaledRange(const ScaledIntPlan& p, const Format& f, const T* in, T* out, std::size_t n, std::uint64_t first,
                 const RandomKey& key) {
  constexpr bool kRandom = MODE == RoundMode::sr || MODE == RoundMode::srn;
  const hn::ScalableTag<double> d;
  const hn::Rebind<T, decltype(d)> dt;  // the carrier's lanes, as many as d has
  const hn::Rebind<std::uint32_t, decltype(d)> dw;
  const hn::RebindToUnsigned<decltype(d)> du;
  const hn::RebindToSigned<decltype(d)> di;
  const std::size_t N = hn::Lanes(d);
  constexpr std::size_t kMaxLanes = HWY_MAX_BYTES / sizeof(double);
  constexpr std::size_t kChunk = 1024;
  alignas(64) std::uint32_t words[kChunk];
  for (std::size_t c = 0; c < n; c += kChunk) {
    const std::size_t len = std::min(kChunk, n - c);
    if constexpr (kRandom) simd_random_words(key, first + c, len, words);
    std::size_t i = 0;
    for (; i + N <= len; i += N) {
      const T* src = in + c + i;
      T* dst = out + c + i;
      hn::Vec<decltype(d)> x, w = hn::Zero(d);
      if constexpr (sizeof(T) == 4) x = hn::PromoteTo(d, hn::LoadU(dt, src));
      else x = hn::LoadU(d, src);
      if constexpr (kRandom) w = hn::ConvertTo(d, hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(dw, words + i))));
      auto fallback = hn::Lt(hn::Set(d, 1.0), hn::Zero(d));
      const auto z = ScaledCodes<MODE>(d, p, x, w, fallback);
      hn::Vec<decltype(dt)> y;
      if constexpr (sizeof(T) == 4) y = ToFloat(dt, ValueToOdd(d, p, z, x));
      else y = Value64(d, p, z, x);
      if (HWY_UNLIKELY(!hn::AllFalse(d, fallback))) {
        // The reference reads the inputs, which an in-place call's store would overwrite.
        alignas(64) T xs[kMaxLanes], ys[kMaxLanes];
        std::memcpy(xs, src, N * sizeof(T));
        hn::Store(y, dt, ys);
        FixLanes(f, xs, ys, MaskBits(d, fallback), N, first + c + i, key);
        y = hn::Load(dt, ys);
      }
      hn::StoreU(y, dt, dst);
    }
    for (; i < len; ++i) out[c + i] = quantize(in[c + i], f, first + c + i, key);
  }
}

template <typename T>
void ScaledAny(const ScaledIntPlan& p, const Format& f, const T* in, T* out, std::size_t n, std::uint64_t first,
               const RandomKey& key) {
  switch (p.rounding.mode) {
    case RoundMode::rne: return ScaledRange<RoundMode::rne>(p, f, in, out, n, first, key);
    case RoundMode::rna: return ScaledRange<RoundMode::rna>(p, f, in, out, n, first, key);
    case RoundMode::rz: return ScaledRange<RoundMode::rz>(p, f, in, out, n, first, key);
    case RoundMode::ru: return ScaledRange<RoundMode::ru>(p, f, in, out, n, first, key);
    case RoundMode::rd: return ScaledRange<RoundMode::rd>(p, f, in, out, n, first, key);
    case RoundMode::ro: return ScaledRange<RoundMode::ro>(p, f, in, out, n, first, key);
    case RoundMode::sr: return ScaledRange<RoundMode::sr>(p, f, in, out, n, first, key);
    case RoundMode::srn: return ScaledRange<RoundMode::srn>(p, f, in, out, n, first, key);
    case RoundMode::hyst: break;  // refused by make_scaled_int_plan
  }
}

}  // namespace

void ScaledF32(const ScaledIntPlan& p, const Format& f, const float* in, float* out, std::size_t n, std::uint64_t first,
               const RandomKey& key) {
  ScaledAny(p, f, in, out, n, first, key);
}

void ScaledF64(const ScaledIntPlan& p, const Format& f, const double* in, double* out, std::size_t n,
               std::uint64_t first, const RandomKey& key) {
  ScaledAny(p, f, in, out, n, first, key);
}

}  // namespace mpsim::detail::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace mpsim::detail {

HWY_EXPORT(ScaledF32);
HWY_EXPORT(ScaledF64);

std::optional<ScaledIntPlan> make_scaled_int_plan(const Format& f, Carrier carrier) {
  if (f.kind() != FormatKind::integer || f.rounding().mode == RoundMode::hyst) return std::nullopt;
  if (make_plan(f, carrier).kind != PlanKind::scalar) return std::nullopt;  // fixed point: that kernel
  const IntSpec& s = f.int_spec();
  const double scale = s.scale;
  const bool srn_ok = f.rounding().mode != RoundMode::srn || (f.rounding().param >= 1 && f.rounding().param <= 32);
  if (!(scale >= 0x1p-900 && scale <= 0x1p900) || s.bits > 32 || s.zp > (std::int64_t{1} << 32) ||
      s.zp < -(std::int64_t{1} << 32) || !srn_ok) {
    return std::nullopt;
  }
  ScaledIntPlan p;
  p.rounding = f.rounding();
  p.scale = scale;
  p.zp = static_cast<double>(s.zp);
  p.zmin = static_cast<double>(s.z_min());
  p.zmax = static_cast<double>(s.z_max());
  return p;
}

void simd_quantize_scaled(const ScaledIntPlan& p, const Format& f, const float* in, float* out, std::size_t n,
                          std::uint64_t first, const RandomKey& key) {
  HWY_DYNAMIC_DISPATCH(ScaledF32)(p, f, in, out, n, first, key);
}

void simd_quantize_scaled(const ScaledIntPlan& p, const Format& f, const double* in, double* out, std::size_t n,
                          std::uint64_t first, const RandomKey& key) {
  HWY_DYNAMIC_DISPATCH(ScaledF64)(p, f, in, out, n, first, key);
}

}  // namespace mpsim::detail
#endif  // HWY_ONCE
