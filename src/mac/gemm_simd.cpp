// The SIMD GEMM kernels (see gemm_fast.h for what they compute and why it is exact) and the
// operand packing: one source, compiled by Highway for AVX-512, AVX2 and one lane like the
// array quantizer, whose per-lane rounding kernels (quantize_lanes-inl.h) quantize the
// operands and round the accumulator wherever the kernels' fast blocks below do not decide.
//
// Lanes hold outputs: a vector is N consecutive columns of one row, and a register block is
// R rows x V such vectors, so every lane runs its own dot product in order p = 0 .. k-1 and a
// reduction is never split or reordered.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/mac/gemm_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "mpsim/mac.h"
#include "mpsim/quantize.h"
#include "mpsim/rng.h"
#include "src/format/quantize_lanes-inl.h"
#include "src/mac/exact_value.h"
#include "src/mac/gemm_fast.h"
#include "src/mac/round_exact.h"

HWY_BEFORE_NAMESPACE();
namespace mpsim::detail::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// ---- packing: operands quantized into their input formats, converted to the lane type ------

// The CFG-5 gap (0, s1) of an input format, decided here instead of by the scalar reference
// (quantize_lanes-inl.h sends those lanes to it; small gradients make them common). A lane
// in the gap lies strictly between the codes 0 (even) and 1 (value s1), at the exact fraction
// |x| / s1 of the step, so each mode's decision is one comparison (quantize_ref.cpp, take_hi):
// rne: |x| > s1 / 2; rna: |x| >= s1 / 2; rz: never; ru: x positive; rd: x negative; ro: always
// (code 0 is even). The lanes that stay at code 0 are rounded as a zero of the same sign by the
// vector kernel, which applies the format's zero rules (fnuz).
template <RoundMode MODE, class D>
HWY_INLINE hn::Mask<D> GemmGapUp(D d, hn::Vec<D> x, hn::Vec<D> ax, hn::Vec<D> half_s1) {
  if constexpr (MODE == RoundMode::rne) return hn::Gt(ax, half_s1);
  else if constexpr (MODE == RoundMode::rna) return hn::Ge(ax, half_s1);
  else if constexpr (MODE == RoundMode::rz) return hn::Lt(ax, hn::Zero(d)) /* never */;
  else if constexpr (MODE == RoundMode::ru) return hn::Gt(x, hn::Zero(d));
  else if constexpr (MODE == RoundMode::rd) return hn::Lt(x, hn::Zero(d));
  else return hn::Eq(ax, ax);  // ro (NaN lanes are never in the gap)
}

// One vector of inputs rounded into the input format (deterministic modes only: MAC inputs
// never round stochastically). kKind as in RoundVector: 0 float, 1 fixed, 2 saturating float.
template <RoundMode MODE, int kKind, class D>
HWY_INLINE hn::Vec<D> GemmRoundInput(D d, const QuantPlan& p, const Format& f, hn::Vec<D> x) {
  using T = hn::TFromD<D>;
  if constexpr (kKind == 0) {
    if (p.asnormal_gap) {
      const auto ax = hn::Abs(x);
      const auto s1 = hn::Set(d, static_cast<T>(p.s1));
      const auto gap = hn::And(hn::Lt(ax, s1), hn::Ne(ax, hn::Zero(d)));
      if (!hn::AllFalse(d, gap)) {
        const auto sign = hn::Xor(x, ax);  // the sign bit alone
        const auto y = RoundVector<MODE, 0>(d, p, f, hn::IfThenElse(gap, sign, x), nullptr, 0, RandomKey{});
        const auto up = hn::And(gap, GemmGapUp<MODE>(d, x, ax, hn::Set(d, static_cast<T>(p.s1 / 2))));
        return hn::IfThenElse(up, hn::Or(s1, sign), y);
      }
    }
  }
  return RoundVector<MODE, kKind>(d, p, f, x, nullptr, 0, RandomKey{});
}

// A CFG-2 input's reading (gemm_fast.h, input_packing): a rounded value y that is not the input
// x itself and lies below the format's smallest normal becomes a zero of its sign.
template <class D>
HWY_INLINE hn::Vec<D> GemmFlushInput(D d, const QuantPlan& p, hn::Vec<D> x, hn::Vec<D> y) {
  using T = hn::TFromD<D>;
  const auto flush = hn::And(hn::Lt(hn::Abs(y), hn::Set(d, static_cast<T>(p.input_min_normal))), hn::Ne(y, x));
  return hn::IfThenElse(flush, hn::And(y, hn::SignBit(d)), y);
}

// One vector of MAC inputs as the packing reads them: rounded into the input format.
template <RoundMode MODE, int kKind, class D>
HWY_INLINE hn::Vec<D> GemmQuantInput(D d, const QuantPlan& p, const Format& f, hn::Vec<D> x) {
  const auto y = GemmRoundInput<MODE, kKind>(d, p, f, x);
  if constexpr (kKind != 1) {
    if (HWY_UNLIKELY(p.input_flush)) return GemmFlushInput(d, p, x, y);
  }
  return y;
}

// dst[i * dstride] = lane(quantize(src[i])) for i < len: loaded as T, quantized in the carrier
// Q of plan p (fp32 only when both T and the lane type L are fp32; the value of a format that
// fits fp32 is the same in both carriers), stored as L (exact: the format fits L).
template <RoundMode MODE, int kKind, typename T, typename L>
HWY_INLINE void GemmPackRange(const QuantPlan& plan, const Format& f, const T* HWY_RESTRICT src, std::size_t len,
                          L* HWY_RESTRICT dst, std::size_t dstride) {
  using Q = std::conditional_t<sizeof(T) == 4 && sizeof(L) == 4, float, double>;
  const QuantPlan p = plan;  // a local copy: its fields can stay in registers
  const hn::ScalableTag<Q> dq;
  const hn::Rebind<T, decltype(dq)> dt;
  const hn::Rebind<L, decltype(dq)> dl;
  const std::size_t N = hn::Lanes(dq);
  constexpr std::size_t kMax = HWY_MAX_BYTES / sizeof(Q);
  alignas(64) T in_buf[kMax] = {};
  alignas(64) L out_buf[kMax] = {};
  const auto load = [&](const T* s) {
    if constexpr (std::is_same_v<T, Q>) return hn::LoadU(dq, s);
    else return hn::PromoteTo(dq, hn::LoadU(dt, s));
  };
  const auto store = [&](hn::Vec<decltype(dq)> v, L* o) {
    if constexpr (std::is_same_v<L, Q>) {
      hn::StoreU(v, dq, o);
    } else {
#if HWY_TARGET == HWY_SCALAR
      // The one-lane DemoteTo clamps infinities to the largest float; a cast keeps them.
      (void)dl;
      *o = static_cast<L>(hn::GetLane(v));
#else
      hn::StoreU(hn::DemoteTo(dl, v), dl, o);
#endif
    }
  };
  std::size_t i = 0;
  if (dstride == 1) {
    for (; i + N <= len; i += N) store(GemmQuantInput<MODE, kKind>(dq, p, f, load(src + i)), dst + i);
  } else {
    for (; i + N <= len; i += N) {
      store(GemmQuantInput<MODE, kKind>(dq, p, f, load(src + i)), out_buf);
      for (std::size_t j = 0; j < N; ++j) dst[(i + j) * dstride] = out_buf[j];
    }
  }
  if (i < len) {
    const std::size_t rest = len - i;
    std::fill(in_buf, in_buf + kMax, T{0});
    std::memcpy(in_buf, src + i, rest * sizeof(T));
    store(GemmQuantInput<MODE, kKind>(dq, p, f, load(in_buf)), out_buf);
    for (std::size_t j = 0; j < rest; ++j) dst[(i + j) * dstride] = out_buf[j];
  }
}

template <typename T, typename L>
void GemmPackAny(const QuantPlan& p, const Format& f, const T* src, std::size_t len, L* dst, std::size_t dstride) {
#define MPSIM_PACK_MODE(m)                                                                  \
  case RoundMode::m:                                                                        \
    if (p.kind == PlanKind::fixed) return GemmPackRange<RoundMode::m, 1>(p, f, src, len, dst, dstride); \
    if (p.sat_ieee) return GemmPackRange<RoundMode::m, 2>(p, f, src, len, dst, dstride);              \
    return GemmPackRange<RoundMode::m, 0>(p, f, src, len, dst, dstride);
  if (p.kind != PlanKind::scalar) {
    switch (p.rounding.mode) {
      MPSIM_PACK_MODE(rne)
      MPSIM_PACK_MODE(rna)
      MPSIM_PACK_MODE(rz)
      MPSIM_PACK_MODE(ru)
      MPSIM_PACK_MODE(rd)
      MPSIM_PACK_MODE(ro)
      default: break;
    }
  }
#undef MPSIM_PACK_MODE
  // No vector kernel for this format or mode: the scalar reference, element by element (a
  // CFG-2 input read as GemmFlushInput reads it).
  for (std::size_t i = 0; i < len; ++i) {
    const double x = static_cast<double>(src[i]);
    double y = quantize(x, f);
    if (p.input_flush && std::fabs(y) < p.input_min_normal && y != x) y = std::copysign(0.0, y);
    dst[i * dstride] = static_cast<L>(y);
  }
}

// dst[p * dstride + c] = lane(quantize(src[c * ld + p])) for c < ncols, p < len: columns of the
// source, each contiguous, packed as rows (a transpose). Four columns at a time are quantized
// as vectors along p and interleaved, so each destination row gets four lanes per store.
template <RoundMode MODE, int kKind, typename T, typename L>
HWY_INLINE void GemmPackColsRange(const QuantPlan& plan, const Format& f, const T* HWY_RESTRICT src, std::size_t ld,
                                  std::size_t ncols, std::size_t len, L* HWY_RESTRICT dst, std::size_t dstride) {
  std::size_t c = 0;
#if HWY_TARGET != HWY_SCALAR
  using Q = std::conditional_t<sizeof(T) == 4 && sizeof(L) == 4, float, double>;
  const QuantPlan p = plan;
  const hn::ScalableTag<Q> dq;
  const hn::Rebind<T, decltype(dq)> dt;
  const hn::Rebind<L, decltype(dq)> dl;
  const std::size_t N = hn::Lanes(dq);
  constexpr std::size_t kMax = HWY_MAX_BYTES / sizeof(Q);
  alignas(64) L buf[4 * kMax];
  const auto quant = [&](const T* s) {
    hn::Vec<decltype(dq)> x;
    if constexpr (std::is_same_v<T, Q>) x = hn::LoadU(dq, s);
    else x = hn::PromoteTo(dq, hn::LoadU(dt, s));
    const auto y = GemmQuantInput<MODE, kKind>(dq, p, f, x);
    if constexpr (std::is_same_v<L, Q>) return y;
    else return hn::DemoteTo(dl, y);
  };
  const std::size_t full = len - len % N;
  for (; c + 4 <= ncols; c += 4) {
    const T* const s0 = src + c * ld;
    for (std::size_t i = 0; i < full; i += N) {
      hn::StoreInterleaved4(quant(s0 + i), quant(s0 + ld + i), quant(s0 + 2 * ld + i), quant(s0 + 3 * ld + i), dl, buf);
      for (std::size_t j = 0; j < N; ++j) std::memcpy(dst + (i + j) * dstride + c, buf + 4 * j, 4 * sizeof(L));
    }
    if (full < len) {
      for (std::size_t c2 = c; c2 < c + 4; ++c2) {
        GemmPackRange<MODE, kKind>(p, f, src + c2 * ld + full, len - full, dst + full * dstride + c2, dstride);
      }
    }
  }
#endif
  for (; c < ncols; ++c) GemmPackRange<MODE, kKind>(plan, f, src + c * ld, len, dst + c, dstride);
}

template <typename T, typename L>
void GemmPackColsAny(const QuantPlan& p, const Format& f, const T* src, std::size_t ld, std::size_t ncols, std::size_t len,
                     L* dst, std::size_t dstride) {
#define MPSIM_PACK_MODE(m)                                                                                         \
  case RoundMode::m:                                                                                               \
    if (p.kind == PlanKind::fixed) return GemmPackColsRange<RoundMode::m, 1>(p, f, src, ld, ncols, len, dst, dstride); \
    if (p.sat_ieee) return GemmPackColsRange<RoundMode::m, 2>(p, f, src, ld, ncols, len, dst, dstride);              \
    return GemmPackColsRange<RoundMode::m, 0>(p, f, src, ld, ncols, len, dst, dstride);
  if (p.kind != PlanKind::scalar) {
    switch (p.rounding.mode) {
      MPSIM_PACK_MODE(rne)
      MPSIM_PACK_MODE(rna)
      MPSIM_PACK_MODE(rz)
      MPSIM_PACK_MODE(ru)
      MPSIM_PACK_MODE(rd)
      MPSIM_PACK_MODE(ro)
      default: break;
    }
  }
#undef MPSIM_PACK_MODE
  for (std::size_t c = 0; c < ncols; ++c) GemmPackAny(p, f, src + c * ld, len, dst + c, dstride);
}

void GemmPackColsF32F32(const QuantPlan& p, const Format& f, const float* s, std::size_t ld, std::size_t nc, std::size_t n,
                        float* d, std::size_t ds) {
  GemmPackColsAny(p, f, s, ld, nc, n, d, ds);
}
void GemmPackColsF32F64(const QuantPlan& p, const Format& f, const float* s, std::size_t ld, std::size_t nc, std::size_t n,
                        double* d, std::size_t ds) {
  GemmPackColsAny(p, f, s, ld, nc, n, d, ds);
}
void GemmPackColsF64F32(const QuantPlan& p, const Format& f, const double* s, std::size_t ld, std::size_t nc, std::size_t n,
                        float* d, std::size_t ds) {
  GemmPackColsAny(p, f, s, ld, nc, n, d, ds);
}
void GemmPackColsF64F64(const QuantPlan& p, const Format& f, const double* s, std::size_t ld, std::size_t nc, std::size_t n,
                        double* d, std::size_t ds) {
  GemmPackColsAny(p, f, s, ld, nc, n, d, ds);
}

void GemmPackF32F32(const QuantPlan& p, const Format& f, const float* s, std::size_t n, float* d, std::size_t ds) {
  GemmPackAny(p, f, s, n, d, ds);
}
void GemmPackF32F64(const QuantPlan& p, const Format& f, const float* s, std::size_t n, double* d, std::size_t ds) {
  GemmPackAny(p, f, s, n, d, ds);
}
void GemmPackF64F32(const QuantPlan& p, const Format& f, const double* s, std::size_t n, float* d, std::size_t ds) {
  GemmPackAny(p, f, s, n, d, ds);
}
void GemmPackF64F64(const QuantPlan& p, const Format& f, const double* s, std::size_t n, double* d, std::size_t ds) {
  GemmPackAny(p, f, s, n, d, ds);
}

// ---- the kernels -----------------------------------------------------------------------

// Knuth's TwoSum: s = a + b rounded in the lane and e = (a + b) - s exactly (no overflow).
template <class V>
HWY_INLINE V TwoSum(V a, V b, V* e) {
  const auto s = hn::Add(a, b);
  const auto z = hn::Sub(s, a);
  *e = hn::Add(hn::Sub(a, hn::Sub(s, z)), hn::Sub(b, z));
  return s;
}

// The exact sum a + b of two lane values, rounded to odd in the lane: the lane's sum s where it
// is exact, else whichever of s and its neighbour toward the exact sum has an odd last bit
// (TwoSum gives the exact error e = (a + b) - s; s's magnitude moves up one ulp where e has
// s's sign, down where it has the other). Rounding the result once more into a format with at
// least two bits fewer than the lane, in any deterministic mode, gives the correctly rounded
// exact sum (round to odd, Boldo and Melquiond 2008): the odd lane value lies strictly between
// the same two neighbours of the format as the exact sum, and is never their midpoint.
// Conditions (gemm_fast.cpp): no lane overflow, and no lane-subnormal sums (TwoSum is exact).
template <class D>
HWY_INLINE hn::Vec<D> SumToOdd(D d, hn::Vec<D> a, hn::Vec<D> b) {
  using TU = hn::TFromD<hn::RebindToUnsigned<D>>;
  const hn::RebindToUnsigned<D> du;
  hn::Vec<D> e;
  const auto s = TwoSum(a, b, &e);
  const auto sb = hn::BitCast(du, s);
  const auto one = hn::Set(du, TU{1});
  const auto inexact_even = hn::And(hn::RebindMask(du, hn::And(hn::Ne(e, hn::Zero(d)), hn::IsFinite(s))),
                                    hn::Eq(hn::And(sb, one), hn::Zero(du)));
  // +1 on the magnitude bits where e and s share a sign, -1 (all ones) where they do not.
  const auto other_sign = hn::BroadcastSignBit(hn::BitCast(hn::RebindToSigned<D>(), hn::Xor(hn::BitCast(du, e), sb)));
  const auto delta = hn::Or(hn::BitCast(du, other_sign), one);
  return hn::BitCast(d, hn::IfThenElse(inexact_even, hn::Add(sb, delta), sb));
}

// A fixed-point accumulator's conversion of a lane value x (a product, or an exact sum rounded
// to odd) with the accumulator's MODE: clamped first to plan.prod_clamp, a power of two at
// least twice the range (beyond the range it saturates either way, and the clamp keeps the
// conversion among the lane's exact integers); NaN compares false and stays NaN.
template <RoundMode MODE, class D>
HWY_INLINE hn::Vec<D> FixedConvert(D d, const GemmFastPlan& plan, const Format& acc, hn::Vec<D> x) {
  using T = hn::TFromD<D>;
  const auto clampv = hn::Set(d, static_cast<T>(plan.prod_clamp));
  const auto xc = hn::IfThenElse(hn::Gt(x, clampv), clampv, hn::IfThenElse(hn::Lt(x, hn::Neg(clampv)), hn::Neg(clampv), x));
  return RoundVector<MODE, 1>(d, plan.acc, acc, xc, nullptr, 0, RandomKey{});
}

// A value of the fixed-point accumulator's grid saturated to its range.
template <class D>
HWY_INLINE hn::Vec<D> FixedSaturate(D d, const GemmFastPlan& plan, hn::Vec<D> x) {
  using T = hn::TFromD<D>;
  const auto lo = hn::Set(d, static_cast<T>(plan.fixed_lo));
  const auto hi = hn::Set(d, static_cast<T>(plan.fixed_hi));
  return hn::IfThenElse(hn::Gt(x, hi), hi, hn::IfThenElse(hn::Lt(x, lo), lo, x));
}

// One step of one accumulator vector: acc + x * y with the accumulator's rounding MODE (a
// deterministic mode: the random key plays no part). kOdd: the float sum is formed rounded to
// odd (SumToOdd) and then rounded into the accumulator; else (to nearest-even only) it is the
// lane's own rounded sum, which Figueroa's condition makes innocuous (gemm_fast.h). Lanes the
// vector kernel leaves to the scalar reference go through quantize() (of the same lane value).
template <bool kFixed, RoundMode MODE, bool kOdd, class D>
HWY_INLINE hn::Vec<D> GemmStep(D d, const GemmFastPlan& plan, const Format& acc, hn::Vec<D> a, hn::Vec<D> prod) {
  if constexpr (kFixed) {
    // Convert the product into the accumulator, then add (exact: both on the accumulator's
    // grid, within the lane's integers) and saturate.
    return FixedSaturate(d, plan, hn::Add(a, FixedConvert<MODE>(d, plan, acc, prod)));
  } else if constexpr (kOdd) {
    auto s = SumToOdd(d, a, prod);
    if constexpr (MODE == RoundMode::rd) {
      // An exact zero sum is -0 when rounding toward negative (IEEE 754; the reference's add),
      // unless both addends are +0; the lane added to nearest (+0 for x + (-x)).
      const hn::RebindToUnsigned<D> du;
      const auto sign = hn::And(hn::Or(hn::BitCast(du, a), hn::BitCast(du, prod)), hn::BitCast(du, hn::Set(d, -0.0)));
      s = hn::IfThenElse(hn::Eq(s, hn::Zero(d)), hn::BitCast(d, sign), s);
    }
    return RoundVector<MODE, 0>(d, plan.acc, acc, s, nullptr, 0, RandomKey{});
  } else {
    static_assert(MODE == RoundMode::rne);
    return RoundVector<RoundMode::rne, 0>(d, plan.acc, acc, hn::Add(a, prod), nullptr, 0, RandomKey{});
  }
}

// The float accumulator's fast block: for plans that round to nearest-even by addition all the
// way down (QuantPlan::rne_add_low; not fnuz), each step is
//   s = acc + x y          one FMA: the product is exact (gemm_fast.h), so this is the lane's
//                          sum of acc and the product, rounded once;
//   r = (|s| + C) - C      C = 2^(q + P) for the quantum 2^q of s's binade (of the lowest
//                          normal binade below it): |s| rounded to nearest-even on the
//                          accumulator's grid, exactly quantize_lanes-inl.h's RneByAddition,
//                          which equals the scalar reference for every |s| up to the largest
//                          value max (and for |s| within half a step above it, which rounds to
//                          max); acc = r with s's sign.
// Beyond that (overflow, infinity, NaN) r exceeds max, so instead of a test per step the
// largest r of the block is kept, and a block where it exceeds max is computed again from its
// starting accumulators with the full rounding (RoundVector), which handles every case.
// Returns false in that case (a is then unchanged).
template <typename T, int R, int V, class D>
HWY_INLINE bool FloatBlockFast(D d, const QuantPlan& q, const T* HWY_RESTRICT X, std::size_t xs, const T* HWY_RESTRICT Y,
                               std::size_t kc, hn::Vec<D>* a) {
  using TU = hn::TFromD<hn::RebindToUnsigned<D>>;
  const hn::RebindToUnsigned<D> du;
  constexpr int P = sizeof(T) == 4 ? 23 : 52;
  const std::size_t N = hn::Lanes(d);
  const auto sign = hn::Set(du, static_cast<TU>(TU{1} << (sizeof(T) * 8 - 1)));
  const auto expmask = hn::Set(du, static_cast<TU>(sizeof(T) == 4 ? TU(0x7F800000u) : TU(0x7FF0000000000000ull)));
  const auto cmin = hn::Set(du, static_cast<TU>(static_cast<TU>(q.Tn) << P));
  const auto cadd = hn::Set(du, static_cast<TU>(static_cast<TU>(P - q.M) << P));
  auto seen = hn::Zero(du);
  hn::Vec<D> b[R * V];
  for (int i = 0; i < R * V; ++i) b[i] = a[i];
  for (std::size_t p = 0; p < kc; ++p) {
    const T* y = Y + p * static_cast<std::size_t>(V) * N;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const auto xv = hn::Set(d, X[static_cast<std::size_t>(r) * xs + p]);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) {
        const auto sv = hn::MulAdd(xv, hn::LoadU(d, y + static_cast<std::size_t>(v) * N), b[r * V + v]);
        const auto sb = hn::BitCast(du, sv);
        const auto C = hn::BitCast(d, hn::Add(hn::Max(hn::And(sb, expmask), cmin), cadd));
        const auto mag = hn::BitCast(du, hn::Sub(hn::Add(hn::BitCast(d, hn::AndNot(sign, sb)), C), C));
        seen = hn::Max(seen, mag);
        b[r * V + v] = hn::BitCast(d, hn::OrAnd(mag, sb, sign));
      }
    }
  }
  if (!hn::AllFalse(du, hn::Gt(seen, hn::Set(du, static_cast<TU>(q.fast_hi))))) return false;
  for (int i = 0; i < R * V; ++i) a[i] = b[i];
  return true;
}

// The fixed-point accumulator's fast block (saturating, to nearest-even; gemm_fast.h): each
// step converts the exact product x y into the accumulator's grid by the lane's own addition,
// (x y + C) - C with C = 1.5 2^P quantum (whose ulp is the quantum: nearest-even on the grid
// while |x y| < 2^(P-1) quantum), adds it (exact) and saturates, as the full rounding does for
// products within the accumulator's range (the conversion cannot leave it: its ends are on the
// grid). Products beyond the range (whose conversion saturates first: acc + q then differs
// from acc + x y saturated), beyond 2^(P-2) quantum, infinite or NaN are not decided here:
// their largest magnitude is kept, and a block that had one (or starts from a NaN) is computed
// again with the full rounding. Returns false in that case (a is then unchanged).
template <typename T, int R, int V, class D>
HWY_INLINE bool FixedBlockFast(D d, const GemmFastPlan& plan, const T* HWY_RESTRICT X, std::size_t xs,
                               const T* HWY_RESTRICT Y, std::size_t kc, hn::Vec<D>* a) {
  using TU = hn::TFromD<hn::RebindToUnsigned<D>>;
  const hn::RebindToUnsigned<D> du;
  constexpr int P = sizeof(T) == 4 ? 23 : 52;
  const std::size_t N = hn::Lanes(d);
  const double quantum = plan.acc.quantum;
  for (int i = 0; i < R * V; ++i) {
    if (!hn::AllFalse(d, hn::IsNaN(a[i]))) return false;
  }
  const auto magic = hn::Set(d, static_cast<T>(1.5 * std::ldexp(quantum, P)));
  const auto lo = hn::Set(d, static_cast<T>(plan.fixed_lo));
  const auto hi = hn::Set(d, static_cast<T>(plan.fixed_hi));
  const auto sign = hn::Set(du, static_cast<TU>(TU{1} << (sizeof(T) * 8 - 1)));
  // (An unsigned accumulator, fixed_lo = 0: every nonzero product is left to the full rounding,
  // which saturates a negative one to 0 before the add.)
  T clamp = static_cast<T>(std::min({plan.prod_clamp, std::ldexp(quantum, P - 2), plan.fixed_hi, std::fabs(plan.fixed_lo)}));
  TU clamp_bits;
  std::memcpy(&clamp_bits, &clamp, sizeof clamp);
  auto seen = hn::Zero(du);
  hn::Vec<D> b[R * V];
  for (int i = 0; i < R * V; ++i) b[i] = a[i];
  for (std::size_t p = 0; p < kc; ++p) {
    const T* y = Y + p * static_cast<std::size_t>(V) * N;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const auto xv = hn::Set(d, X[static_cast<std::size_t>(r) * xs + p]);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) {
        const auto prod = hn::Mul(xv, hn::LoadU(d, y + static_cast<std::size_t>(v) * N));
        seen = hn::Max(seen, hn::AndNot(sign, hn::BitCast(du, prod)));
        const auto q = hn::Sub(hn::Add(prod, magic), magic);
        b[r * V + v] = hn::Min(hn::Max(hn::Add(b[r * V + v], q), lo), hi);
      }
    }
  }
  if (!hn::AllFalse(du, hn::Gt(seen, hn::Set(du, clamp_bits)))) return false;
  for (int i = 0; i < R * V; ++i) a[i] = b[i];
  return true;
}

// C[r][c] (R rows, row stride cs; c < V * N) = C[r][c] + sum over p < kc of X[r][p] * Y[p][c],
// each step rounded into the accumulator; X has row stride xs, Y is a panel of V * N columns.
template <bool kFixed, RoundMode MODE, bool kOdd, typename T, int R, int V>
HWY_NOINLINE void GemmTileRV(const GemmFastPlan& plan_in, const Format& acc, const T* HWY_RESTRICT X, std::size_t xs,
                             const T* HWY_RESTRICT Y, std::size_t kc, T* HWY_RESTRICT C, std::size_t cs) {
  const GemmFastPlan plan = plan_in;  // a local copy: its fields can stay in registers
  const hn::ScalableTag<T> d;
  const std::size_t N = hn::Lanes(d);
  const std::size_t W = V * N;
  hn::Vec<decltype(d)> a[R * V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) a[r * V + v] = hn::LoadU(d, C + static_cast<std::size_t>(r) * cs + static_cast<std::size_t>(v) * N);
  bool done = false;
  if constexpr (MODE == RoundMode::rne && !kOdd) {
    if constexpr (!kFixed) {
      if (plan.acc.rne_add_low && !plan.acc.fnuz) done = FloatBlockFast<T, R, V>(d, plan.acc, X, xs, Y, kc, a);
    } else {
      done = FixedBlockFast<T, R, V>(d, plan, X, xs, Y, kc, a);
    }
  }
  if (!done) {
    for (std::size_t p = 0; p < kc; ++p) {
      const T* y = Y + p * W;
      for (int r = 0; r < R; ++r) {
        const auto xv = hn::Set(d, X[static_cast<std::size_t>(r) * xs + p]);
        for (int v = 0; v < V; ++v) {
          // The product is exact (gemm_fast.h).
          a[r * V + v] = GemmStep<kFixed, MODE, kOdd>(d, plan, acc, a[r * V + v],
                                                      hn::Mul(xv, hn::LoadU(d, y + static_cast<std::size_t>(v) * N)));
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) hn::StoreU(a[r * V + v], d, C + static_cast<std::size_t>(r) * cs + static_cast<std::size_t>(v) * N);
}

// f(std::integral_constant<RoundMode, m>{}) for a deterministic mode m: the kernels take the
// mode as a template parameter; gemm_fast admits no other mode where this is called.
template <class F>
HWY_INLINE void WithDeterministicMode(RoundMode m, F&& f) {
  switch (m) {
    case RoundMode::rne: return f(std::integral_constant<RoundMode, RoundMode::rne>{});
    case RoundMode::rna: return f(std::integral_constant<RoundMode, RoundMode::rna>{});
    case RoundMode::rz: return f(std::integral_constant<RoundMode, RoundMode::rz>{});
    case RoundMode::ru: return f(std::integral_constant<RoundMode, RoundMode::ru>{});
    case RoundMode::rd: return f(std::integral_constant<RoundMode, RoundMode::rd>{});
    case RoundMode::ro: return f(std::integral_constant<RoundMode, RoundMode::ro>{});
    default: HWY_ASSERT(false);
  }
}

// f(std::integral_constant<int, V>{}) for a panel of vecs = 8, 4, 2 or 1 vectors.
template <class F>
HWY_INLINE void WithVecs(std::size_t vecs, F&& f) {
  switch (vecs) {
    case 8: return f(std::integral_constant<int, 8>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 2: return f(std::integral_constant<int, 2>{});
    default: return f(std::integral_constant<int, 1>{});
  }
}

// ---- groups of products (treeN, ftreeN) ---------------------------------------------------

// The lanes an ftreeN kernel could not sum exactly, by the reference: the exact sum of the
// group's products (those of column c are nd[p * W + c]), rounded once into acc; a stochastic
// acc with the random bits of (outs[j], step, MacSite::group).
template <typename T>
HWY_NOINLINE void FtreeFixLanes(const Format& acc, const T* nd, std::size_t W, std::size_t kc, std::size_t c0,
                                std::uint64_t bits, std::size_t lanes, T* out, const std::uint64_t* outs = nullptr,
                                std::uint64_t step = 0, const RandomKey& key = {}) {
  const bool round_down = acc.rounding().mode == RoundMode::rd;
  for (std::size_t j = 0; j < lanes; ++j) {
    if ((bits >> j) & 1) {
      ExactValue sum = ExactValue::from_double(static_cast<double>(nd[c0 + j]));
      for (std::size_t p = 1; p < kc; ++p) {
        sum = ExactValue::add(sum, ExactValue::from_double(static_cast<double>(nd[p * W + c0 + j])), round_down);
      }
      const std::uint64_t index = outs ? mac_random_index(outs[j], step, MacSite::group) : 0;
      out[j] = static_cast<T>(round_exact(sum, acc, index, key).value);
    }
  }
}

// The kc x W exact products X[p] * Y[p * W + c] of one row's group (gemm_fast.h: exact in
// the lane), in a grow-only per-thread buffer that the group's reduction then works in.
template <class D, typename T = hn::TFromD<D>>
HWY_INLINE T* GroupProducts(D d, const T* HWY_RESTRICT X, const T* HWY_RESTRICT Y, std::size_t kc, std::size_t W) {
  thread_local std::vector<T> nodes;
  if (nodes.size() < kc * W) nodes.resize(kc * W);
  T* const nd = nodes.data();
  const std::size_t N = hn::Lanes(d);
  for (std::size_t p = 0; p < kc; ++p) {
    const auto xv = hn::Set(d, X[p]);
    for (std::size_t c = 0; c < W; c += N) hn::StoreU(hn::Mul(xv, hn::LoadU(d, Y + p * W + c)), d, nd + p * W + c);
  }
  return nd;
}

// The exact sum of one vector of a group's products (column c of nd, kc rows of W), formed as
// GemmTileFtreeV explains: hi + lo is the exact sum in every lane where bad is false; the masks
// say where every product is -0, or +0 (the sign of an exact zero sum).
template <class D>
struct GroupPair {
  hn::Vec<D> hi, lo;
  hn::Mask<D> bad, all_neg_zero, all_pos_zero;
};

template <class D, typename T = hn::TFromD<D>>
HWY_INLINE GroupPair<D> SumGroupExactly(D d, const T* HWY_RESTRICT nd, std::size_t W, std::size_t kc, std::size_t c) {
  const hn::RebindToUnsigned<D> du;
  using TU = hn::TFromD<decltype(du)>;
  const auto neg_zero = hn::Set(du, TU{1} << (sizeof(T) * 8 - 1));
  auto hi = hn::LoadU(d, nd + c);
  auto lo = hn::BitCast(d, neg_zero);  // x + (-0) = x for every x, +0 included
  auto all_neg_zero = hn::Eq(hn::BitCast(du, hi), neg_zero);
  auto all_pos_zero = hn::Eq(hn::BitCast(du, hi), hn::Zero(du));
  auto bad = hn::Not(hn::IsFinite(hi));
  for (std::size_t p = 1; p < kc; ++p) {
    const auto v = hn::LoadU(d, nd + p * W + c);
    all_neg_zero = hn::And(all_neg_zero, hn::Eq(hn::BitCast(du, v), neg_zero));
    all_pos_zero = hn::And(all_pos_zero, hn::Eq(hn::BitCast(du, v), hn::Zero(du)));
    hn::Vec<D> e, e2;
    hi = TwoSum(hi, v, &e);  // hi' + e = hi + v exactly
    lo = TwoSum(lo, e, &e2);  // lo' + e2 = lo + e exactly
    bad = hn::Or(bad, hn::Or(hn::Ne(e2, hn::Zero(d)), hn::Not(hn::IsFinite(hi))));
  }
  return {hi, lo, hn::RebindMask(d, bad), hn::RebindMask(d, all_neg_zero), hn::RebindMask(d, all_pos_zero)};
}

// ---- the stochastic accumulator (sr), fp64 lanes --------------------------------------------

// Word `word` of the Philox4x32-10 blocks whose counters are (c0, c1, stream, 0) in the low
// halves of 64-bit lanes (rng.h: random_word), as PhiloxBlocks in quantize_simd.cpp computes
// them: one block per lane, the 32 x 32 -> 64 products by MulEven, junk in the high halves.
template <class DU>
HWY_INLINE hn::Vec<DU> PhiloxLanes(DU du, hn::Vec<DU> c0, hn::Vec<DU> c1, const RandomKey& key, int word) {
  const hn::Repartition<std::uint32_t, DU> d32;
  const auto mul0 = hn::Set(d32, 0xD2511F53u);
  const auto mul1 = hn::Set(d32, 0xCD9E8D57u);
  auto c2 = hn::Set(du, std::uint64_t{key.stream});
  auto c3 = hn::Zero(du);
  std::uint32_t k0 = static_cast<std::uint32_t>(key.seed), k1 = static_cast<std::uint32_t>(key.seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const auto p0 = hn::MulEven(hn::BitCast(d32, c0), mul0);
    const auto p1 = hn::MulEven(hn::BitCast(d32, c2), mul1);
    c0 = hn::Xor3(hn::ShiftRight<32>(p1), c1, hn::Set(du, std::uint64_t{k0}));
    c1 = p1;
    c2 = hn::Xor3(hn::ShiftRight<32>(p0), c3, hn::Set(du, std::uint64_t{k1}));
    c3 = p0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const auto low32 = hn::Set(du, std::uint64_t{0xFFFFFFFFu});
  return hn::And(word == 0 ? c0 : word == 1 ? c1 : word == 2 ? c2 : c3, low32);
}

// The lanes a vector step could not decide, by the reference: the exact sum of the
// accumulator and the (exact) product, rounded once with the random bits of (output, step,
// site), as dot_ref does.
HWY_NOINLINE void SrFixLanes(const Format& acc, const double* a, const double* prod, double* out, std::uint64_t bits,
                             std::size_t lanes, const std::uint64_t* outs, std::uint64_t step, const RandomKey& key,
                             MacSite site) {
  for (std::size_t j = 0; j < lanes; ++j) {
    if ((bits >> j) & 1) {
      const ExactValue v = ExactValue::add(ExactValue::from_double(a[j]), ExactValue::from_double(prod[j]));
      out[j] = round_exact(v, acc, mac_random_index(outs[j], step, site), key).value;
    }
  }
}

// One step of one vector: acc + x y rounded into the accumulator stochastically. The sum s and
// its rounding error e (TwoSum: exact) are formed in the lane; where e = 0 the exact sum is s,
// and with the quantum q of s's binade in the accumulator (of its lowest normal binade below
// it), |s| / q = K + f splits it exactly into the lower neighbour K q and the fraction f of
// the step above (both exact in fp64: the accumulator has at most 24 bits, s at most 53).
// The reference rounds up iff U < f for the uniform U whose first 32 bits are the random
// word w: up if w < floor(2^32 f), down if w > it, and where they are equal and f has bits
// below 2^-32 the next words decide (the reference, probability 2^-32). The result keeps s's
// sign (a zero sum of opposite terms is +0, as in the reference: s carries it).
//
// kSrn: the accumulator rounds with srN instead (hardware style: the top N bits of the same
// word added to the fraction's top N bits, floor(2^N f) = floor(2^32 f) >> (32 - N)), up iff
// floor(2^N f) + (w >> (32 - N)) >= 2^N, as the reference's take_hi; no tie needs more words.
template <bool kSrn, class D>
HWY_INLINE hn::Vec<D> SrStep(D d, const QuantPlan& q, const Format& acc, hn::Vec<D> a, hn::Vec<D> prod,
                             hn::Vec<hn::RebindToUnsigned<D>> w, const std::uint64_t* outs, std::uint64_t step,
                             const RandomKey& key, MacSite site = MacSite::add) {
  const hn::RebindToUnsigned<D> du;
  const hn::RebindToSigned<D> di;
  hn::Vec<D> e;
  const auto s = TwoSum(a, prod, &e);
  const auto as = hn::Abs(s);
  const auto eb = hn::ShiftRight<52>(hn::BitCast(du, as));
  const auto qb = hn::Sub(hn::Max(eb, hn::Set(du, static_cast<std::uint64_t>(q.Tn))), hn::Set(du, static_cast<std::uint64_t>(q.M)));
  const auto quantum = hn::BitCast(d, hn::ShiftLeft<52>(qb));
  const auto inv = hn::BitCast(d, hn::ShiftLeft<52>(hn::Sub(hn::Set(du, std::uint64_t{2046}), qb)));
  const auto r = hn::Mul(as, inv);
  const auto K = hn::Floor(r);
  const auto F = hn::Mul(hn::Sub(r, K), hn::Set(d, 4294967296.0));
  const auto F0 = hn::Floor(F);
  const auto wd = hn::ConvertTo(d, hn::BitCast(di, w));
  hn::Mask<D> up;
  if constexpr (kSrn) {
    const int n = q.rounding.param;
    const auto kept = hn::ShiftRightSame(hn::BitCast(du, hn::ConvertTo(di, F0)), 32 - n);
    const auto rnd = hn::ShiftRightSame(w, 32 - n);
    up = hn::RebindMask(d, hn::Not(hn::Lt(hn::Add(kept, rnd), hn::Set(du, std::uint64_t{1} << n))));
  } else {
    up = hn::Lt(wd, F0);
  }
  const auto mag = hn::Mul(hn::Add(K, hn::IfThenElseZero(up, hn::Set(d, 1.0))), quantum);
  auto y = hn::BitCast(d, hn::OrAnd(hn::BitCast(du, mag), hn::BitCast(du, s), hn::Set(du, std::uint64_t{1} << 63)));
  // To the reference: an inexact lane sum, |s| beyond the largest value (or not finite, or
  // NaN: the comparison is false), and ties of the first random word.
  auto fb = hn::Or(hn::Ne(e, hn::Zero(d)), hn::Not(hn::Le(as, hn::Set(d, q.max_value))));
  if constexpr (!kSrn) fb = hn::Or(fb, hn::And(hn::Eq(wd, F0), hn::Ne(F, F0)));
  if (HWY_UNLIKELY(!hn::AllFalse(d, fb))) {
    constexpr std::size_t kMax = HWY_MAX_BYTES / sizeof(double);
    alignas(64) double av[kMax], pv[kMax], yv[kMax];
    hn::Store(a, d, av);
    hn::Store(prod, d, pv);
    hn::Store(y, d, yv);
    SrFixLanes(acc, av, pv, yv, MaskBits(d, fb), hn::Lanes(d), outs, step, key, site);
    y = hn::Load(d, yv);
  }
  return y;
}

template <bool kSrn, int R, int V>
HWY_NOINLINE void GemmTileSrRV(const GemmFastPlan& plan_in, const Format& acc, const double* HWY_RESTRICT X, std::size_t xs,
                               const double* HWY_RESTRICT Y, std::size_t kc, double* HWY_RESTRICT C, std::size_t cs,
                               const GemmSrTile& t) {
  const QuantPlan q = plan_in.acc;
  const hn::ScalableTag<double> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const std::size_t N = hn::Lanes(d);
  const std::size_t W = V * N;
  constexpr std::size_t kMax = HWY_MAX_BYTES / sizeof(double);
  // Every lane's output index, and the parts of its Philox counter that do not depend on the
  // step: the element index is out 2^32 + 16 step + 3 (MacSite::add), so the block is
  // out 2^30 + 4 step, with low word ((out mod 4) << 30) + 4 step and high word out / 4, and
  // the word is the block's word 3.
  alignas(64) std::uint64_t outs[R * V * kMax], c0b[R * V * kMax], c1b[R * V * kMax];
  for (int r = 0; r < R; ++r) {
    for (std::size_t c = 0; c < W; ++c) {
      const std::size_t i = static_cast<std::size_t>(r) * W + c;
      outs[i] = t.out0 + static_cast<std::uint64_t>(r) * t.out_rs + c * t.out_cs;
      c0b[i] = (outs[i] & 3) << 30;
      c1b[i] = outs[i] >> 2;
    }
  }
  hn::Vec<decltype(d)> a[R * V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) a[r * V + v] = hn::LoadU(d, C + static_cast<std::size_t>(r) * cs + static_cast<std::size_t>(v) * N);
  for (std::size_t p = 0; p < kc; ++p) {
    const double* y = Y + p * W;
    const std::uint64_t step = t.p0 + p;
    const auto c0step = hn::Set(du, 4 * step);
    for (int r = 0; r < R; ++r) {
      const auto xv = hn::Set(d, X[static_cast<std::size_t>(r) * xs + p]);
      for (int v = 0; v < V; ++v) {
        const std::size_t i = (static_cast<std::size_t>(r) * V + static_cast<std::size_t>(v)) * N;
        hn::Vec<decltype(du)> w;
#if HWY_TARGET == HWY_SCALAR
        (void)c0step;
        (void)c0b;
        (void)c1b;
        w = hn::Set(du, std::uint64_t{random_word(t.key, mac_random_index(outs[i], step, MacSite::add), 0)});
#else
        w = PhiloxLanes(du, hn::Add(hn::Load(du, c0b + i), c0step), hn::Load(du, c1b + i), t.key, 3);
#endif
        // The product is exact (gemm_fast.h).
        const auto prod = hn::Mul(xv, hn::LoadU(d, y + static_cast<std::size_t>(v) * N));
        a[r * V + v] = SrStep<kSrn>(d, q, acc, a[r * V + v], prod, w, outs + i, step, t.key);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) hn::StoreU(a[r * V + v], d, C + static_cast<std::size_t>(r) * cs + static_cast<std::size_t>(v) * N);
}

void GemmTileSrExact(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const double* X,
                     std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs, const GemmSrTile& t) {
  if (plan.acc.rounding.mode == RoundMode::srn) {
    // srN: one row at a time (the one-row tiles only), each row its own outputs' keys.
    for (std::size_t r = 0; r < R; ++r) {
      GemmSrTile tr = t;
      tr.out0 = t.out0 + r * t.out_rs;
      WithVecs(V, [&](auto v) {
        GemmTileSrRV<true, 1, decltype(v)::value>(plan, acc, X + r * xs, xs, Y, kc, C + r * cs, cs, tr);
      });
    }
    return;
  }
#define MPSIM_TILE(r, v) return GemmTileSrRV<false, r, v>(plan, acc, X, xs, Y, kc, C, cs, t)
  switch (V) {
    case 8: MPSIM_TILE(1, 8);
    case 4:
      if (R >= 2) MPSIM_TILE(2, 4);
      MPSIM_TILE(1, 4);
    case 2:
      switch (R) {
        case 1: MPSIM_TILE(1, 2);
        case 2: MPSIM_TILE(2, 2);
        case 3: MPSIM_TILE(3, 2);
        default: MPSIM_TILE(4, 2);
      }
    default:
      switch (R) {
        case 1: MPSIM_TILE(1, 1);
        case 2: MPSIM_TILE(2, 1);
        case 3: MPSIM_TILE(3, 1);
        case 4: MPSIM_TILE(4, 1);
        case 5: MPSIM_TILE(5, 1);
        case 6: MPSIM_TILE(6, 1);
        case 7: MPSIM_TILE(7, 1);
        default: MPSIM_TILE(8, 1);
      }
  }
#undef MPSIM_TILE
}

// The random words of one site for a row of W output lanes t.out0 + c * t.out_cs: element
// index out 2^32 + 16 step + site, i.e. Philox block out 2^30 + 4 step + site / 4 and output
// word site mod 4 (rng.h); the parts that do not depend on the step are kept per lane.
struct SiteWords {
  static constexpr std::size_t kMaxLanes = 8 * HWY_MAX_BYTES / sizeof(double);
  alignas(64) std::uint64_t outs[kMaxLanes], c0[kMaxLanes], c1[kMaxLanes];
  MacSite site;

  SiteWords(const GemmSrTile& t, std::size_t W, MacSite s) : site(s) {
    for (std::size_t c = 0; c < W; ++c) {
      outs[c] = t.out0 + c * t.out_cs;
      c0[c] = ((outs[c] & 3) << 30) + static_cast<std::uint64_t>(s) / 4;
      c1[c] = outs[c] >> 2;
    }
  }
  // The words of lanes c .. c + lanes - 1 at this step.
  template <class DU>
  hn::Vec<DU> at(DU du, std::size_t c, std::uint64_t step, const RandomKey& key) const {
#if HWY_TARGET == HWY_SCALAR
    return hn::Set(du, std::uint64_t{random_word(key, mac_random_index(outs[c], step, site), 0)});
#else
    return PhiloxLanes(du, hn::Add(hn::Load(du, c0 + c), hn::Set(du, 4 * step)), hn::Load(du, c1 + c), key,
                       static_cast<int>(static_cast<std::uint64_t>(site) % 4));
#endif
  }
};

// A group of a treeN or ftreeN dot product with a stochastic accumulator (fp64 lanes), one
// row of V vectors whose outputs are t.out0 + c * t.out_cs, the group starting at step t.p0.
// kFused (ftreeN): the exact sum as GemmTileFtreeV forms it (hi + lo), rounded once by SrStep
// with the random word of (output, group start, MacSite::group), as the reference's ftree_sum
// does; lanes whose pair lost a bit, overflowed or met inf/NaN are summed and rounded again by
// the reference, and an exact zero sum is -0 only when every product is -0 (no stochastic mode
// rounds down). Else (treeN): the adder tree of GemmTileTreeV, each adder SrStep on its two
// operands with the word of (output, the first product of its right operand, MacSite::tree),
// as the reference's tree_sum keys it: at level L (leaves at 0) node i covers the products
// from t.p0 + i 2^L on. Leaves are the exact products (a float accumulator converts none).
template <bool kFused, bool kSrn, int V>
HWY_NOINLINE void GemmTileGroupSrV(const GemmFastPlan& plan_in, const Format& acc, const double* HWY_RESTRICT X,
                                   const double* HWY_RESTRICT Y, std::size_t kc, double* HWY_RESTRICT C,
                                   const GemmSrTile& t) {
  const QuantPlan q = plan_in.acc;
  const hn::ScalableTag<double> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const std::size_t N = hn::Lanes(d);
  const std::size_t W = static_cast<std::size_t>(V) * N;
  double* const nd = GroupProducts(d, X, Y, kc, W);
  if constexpr (kFused) {
    const SiteWords words(t, W, MacSite::group);
    const auto neg_zero = hn::Set(du, std::uint64_t{1} << 63);
    alignas(64) double fixed[HWY_MAX_BYTES / sizeof(double)];
    for (std::size_t c = 0; c < W; c += N) {
      const auto w = words.at(du, c, t.p0, t.key);
      const auto g = SumGroupExactly(d, nd, W, kc, c);
      // SrStep rounds the exact hi + lo (the reference for lanes where that sum is inexact in fp64).
      auto r = SrStep<kSrn>(d, q, acc, g.hi, g.lo, w, words.outs + c, t.p0, t.key, MacSite::group);
      const auto zero = hn::Eq(hn::Add(g.hi, g.lo), hn::Zero(d));
      r = hn::IfThenElse(zero, hn::BitCast(d, hn::IfThenElseZero(hn::RebindMask(du, g.all_neg_zero), neg_zero)), r);
      if (HWY_UNLIKELY(!hn::AllFalse(d, g.bad))) {
        hn::Store(r, d, fixed);
        FtreeFixLanes(acc, nd, W, kc, c, MaskBits(d, g.bad), N, fixed, words.outs + c, t.p0, t.key);
        r = hn::Load(d, fixed);
      }
      hn::StoreU(r, d, C + c);
    }
  } else {
    const SiteWords words(t, W, MacSite::tree);
    for (std::size_t len = kc, level = 0; len > 1; len = (len + 1) / 2, ++level) {
      for (std::size_t i = 0; i < len; i += 2) {
        const std::uint64_t step = t.p0 + ((i + 1) << level);
        for (std::size_t c = 0; c < W; c += N) {
          auto v = hn::LoadU(d, nd + i * W + c);
          if (i + 1 < len) {
            v = SrStep<kSrn>(d, q, acc, v, hn::LoadU(d, nd + (i + 1) * W + c), words.at(du, c, step, t.key),
                             words.outs + c, step, t.key, MacSite::tree);
          }
          hn::StoreU(v, d, nd + (i / 2) * W + c);
        }
      }
    }
    for (std::size_t c = 0; c < W; c += N) hn::StoreU(hn::LoadU(d, nd + c), d, C + c);
  }
}

void GemmTileGroupSrExact(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const double* X,
                          std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs, const GemmSrTile& t) {
  const bool srn = plan.acc.rounding.mode == RoundMode::srn;
  for (std::size_t r = 0; r < R; ++r) {
    GemmSrTile tr = t;
    tr.out0 = t.out0 + r * t.out_rs;
    WithVecs(V, [&](auto v) {
      constexpr int kV = decltype(v)::value;
      const double* const x = X + r * xs;
      double* const out = C + r * cs;
      if (plan.ftree) {
        if (srn) GemmTileGroupSrV<true, true, kV>(plan, acc, x, Y, kc, out, tr);
        else GemmTileGroupSrV<true, false, kV>(plan, acc, x, Y, kc, out, tr);
      } else {
        if (srn) GemmTileGroupSrV<false, true, kV>(plan, acc, x, Y, kc, out, tr);
        else GemmTileGroupSrV<false, false, kV>(plan, acc, x, Y, kc, out, tr);
      }
    });
  }
}

// The other deterministic modes (and to nearest-even through SumToOdd): one row at a time (rows
// are independent outputs), so that only the four one-row tiles are compiled per mode.
template <bool kFixed, RoundMode MODE, bool kOdd, typename T>
void GemmTileRows(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const T* X, std::size_t xs,
                  const T* Y, std::size_t kc, T* C, std::size_t cs) {
  for (std::size_t r = 0; r < R; ++r) {
    WithVecs(V, [&](auto v) {
      GemmTileRV<kFixed, MODE, kOdd, T, 1, decltype(v)::value>(plan, acc, X + r * xs, xs, Y, kc, C + r * cs, cs);
    });
  }
}

// prod=<fmt>: out[p * W + c] = round_prod(x[p] * Y[p * W + c]) for p < kc, c < W (the exact
// product rounded into the product format, lanes the vector rounding cannot decide by quantize).
template <RoundMode PMODE, int kKind, typename T>
HWY_NOINLINE void RoundProductsRow(const QuantPlan& plan, const Format& f, const T* HWY_RESTRICT x,
                                   const T* HWY_RESTRICT Y, std::size_t kc, std::size_t W, T* HWY_RESTRICT out) {
  const QuantPlan p = plan;  // a local copy: its fields can stay in registers
  const hn::ScalableTag<T> d;
  const std::size_t N = hn::Lanes(d);
  for (std::size_t k = 0; k < kc; ++k) {
    const auto xv = hn::Set(d, x[k]);
    for (std::size_t c = 0; c < W; c += N) {
      // The product is exact in the lane (gemm_fast.h).
      const auto prod = hn::Mul(xv, hn::LoadU(d, Y + k * W + c));
      hn::StoreU(RoundVector<PMODE, kKind>(d, p, f, prod, nullptr, 0, RandomKey{}), d, out + k * W + c);
    }
  }
}

template <typename T>
void RoundProducts(const GemmFastPlan& plan, const T* x, const T* Y, std::size_t kc, std::size_t W, T* out) {
  WithDeterministicMode(plan.prod.rounding.mode, [&](auto mode) {
    constexpr RoundMode m = decltype(mode)::value;
    if (plan.prod_kind == 1) return RoundProductsRow<m, 1>(plan.prod, *plan.prod_format, x, Y, kc, W, out);
    if (plan.prod_kind == 2) return RoundProductsRow<m, 2>(plan.prod, *plan.prod_format, x, Y, kc, W, out);
    return RoundProductsRow<m, 0>(plan.prod, *plan.prod_format, x, Y, kc, W, out);
  });
}

// prod=<fmt>, for every kernel kind: row by row, the row's products rounded into a per-thread
// buffer, which the kernel then takes as its panel with a row of ones (1 * v = v exactly), so
// each step adds the rounded product, as the reference does: row(inner, r, ones, products),
// with inner the plan without the product rounding.
template <typename T, class Row>
void ForRowsOfRoundedProducts(const GemmFastPlan& plan, std::size_t R, std::size_t V, const T* X, std::size_t xs,
                              const T* Y, std::size_t kc, Row&& row) {
  const std::size_t W = V * hn::Lanes(hn::ScalableTag<T>());
  thread_local std::vector<T> products, ones;  // grow-only, per thread
  if (products.size() < kc * W) products.resize(kc * W);
  if (ones.size() < kc) ones.assign(kc, T(1));
  GemmFastPlan inner = plan;
  inner.prod_round = false;
  for (std::size_t r = 0; r < R; ++r) {
    RoundProducts(plan, X + r * xs, Y, kc, W, products.data());
    row(inner, r, ones.data(), products.data());
  }
}

// The stochastic accumulator's tiles (seq and chunk; tree and ftree groups), with prod=<fmt>
// (deterministic modes) rounding each exact product first: row by row, the rounded products as
// the operand of a ones row, each row with its own outputs' random words.
template <class Tile>
void WithSrProducts(const GemmFastPlan& plan, std::size_t R, std::size_t V, const double* X, std::size_t xs,
                    const double* Y, std::size_t kc, double* C, std::size_t cs, const GemmSrTile& t, Tile&& tile) {
  if (!plan.prod_round) return tile(plan, R, X, xs, Y, C, t);
  ForRowsOfRoundedProducts(plan, R, V, X, xs, Y, kc,
                           [&](const GemmFastPlan& inner, std::size_t r, const double* ones, const double* products) {
    GemmSrTile tr = t;
    tr.out0 = t.out0 + r * t.out_rs;
    tile(inner, 1, ones, 0, products, C + r * cs, tr);
  });
}

void GemmTileSrF64(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const double* X,
                   std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs, const GemmSrTile& t) {
  WithSrProducts(plan, R, V, X, xs, Y, kc, C, cs, t,
                 [&](const GemmFastPlan& p, std::size_t rows, const double* x, std::size_t xstride, const double* y,
                     double* c, const GemmSrTile& tile) { GemmTileSrExact(p, acc, rows, V, x, xstride, y, kc, c, cs, tile); });
}

void GemmTileGroupSrF64(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const double* X,
                        std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs, const GemmSrTile& t) {
  WithSrProducts(plan, R, V, X, xs, Y, kc, C, cs, t,
                 [&](const GemmFastPlan& p, std::size_t rows, const double* x, std::size_t xstride, const double* y,
                     double* c, const GemmSrTile& tile) {
    GemmTileGroupSrExact(p, acc, rows, V, x, xstride, y, kc, c, cs, tile);
  });
}

template <bool kFixed, typename T>
void GemmTileAny(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const T* X, std::size_t xs,
             const T* Y, std::size_t kc, T* C, std::size_t cs) {
  if (plan.prod_round) {
    return ForRowsOfRoundedProducts(plan, R, V, X, xs, Y, kc,
                                    [&](const GemmFastPlan& inner, std::size_t r, const T* ones, const T* products) {
      GemmTileAny<kFixed, T>(inner, acc, 1, V, ones, 0, products, kc, C + r * cs, cs);
    });
  }
  if (plan.acc.rounding.mode != RoundMode::rne || plan.to_odd) {
    return WithDeterministicMode(plan.acc.rounding.mode, [&](auto mode) {
      GemmTileRows<kFixed, decltype(mode)::value, !kFixed>(plan, acc, R, V, X, xs, Y, kc, C, cs);
    });
  }
#define MPSIM_TILE(r, v) return GemmTileRV<kFixed, RoundMode::rne, false, T, r, v>(plan, acc, X, xs, Y, kc, C, cs)
  switch (V) {
    case 8: MPSIM_TILE(1, 8);
    case 4:
      if (R >= 2) MPSIM_TILE(2, 4);
      MPSIM_TILE(1, 4);
    case 2:
      switch (R) {
        case 1: MPSIM_TILE(1, 2);
        case 2: MPSIM_TILE(2, 2);
        case 3: MPSIM_TILE(3, 2);
        default: MPSIM_TILE(4, 2);
      }
    default:
      switch (R) {
        case 1: MPSIM_TILE(1, 1);
        case 2: MPSIM_TILE(2, 1);
        case 3: MPSIM_TILE(3, 1);
        case 4: MPSIM_TILE(4, 1);
        case 5: MPSIM_TILE(5, 1);
        case 6: MPSIM_TILE(6, 1);
        case 7: MPSIM_TILE(7, 1);
        default: MPSIM_TILE(8, 1);
      }
  }
#undef MPSIM_TILE
}

// ---- order=kahan (float accumulators, deterministic modes) ----------------------------------

// Kahan's compensated summation with every operation rounded into the accumulator (docs/mac.md
// section 3): y = p - c, t = sum + y, d = t - sum, c = d - y, sum = t. Each operation is an
// exact sum of two lane values, rounded to odd in the lane and then into the accumulator
// (GemmStep's kOdd path: exact in every deterministic mode, -0 for exact zeros under rd), as
// the reference rounds each exact result once. sum lives in C and the compensation c in Cc,
// both carried from block to block of p. One row of V vectors.
template <RoundMode MODE, typename T, int V>
HWY_NOINLINE void GemmTileKahanV(const GemmFastPlan& plan_in, const Format& acc, const T* HWY_RESTRICT X,
                                 const T* HWY_RESTRICT Y, std::size_t kc, T* HWY_RESTRICT C, T* HWY_RESTRICT Cc) {
  const GemmFastPlan plan = plan_in;
  const hn::ScalableTag<T> d;
  const std::size_t N = hn::Lanes(d);
  hn::Vec<decltype(d)> sum[V], c[V];
  for (int v = 0; v < V; ++v) {
    sum[v] = hn::LoadU(d, C + static_cast<std::size_t>(v) * N);
    c[v] = hn::LoadU(d, Cc + static_cast<std::size_t>(v) * N);
  }
  const auto round_sum = [&](hn::Vec<decltype(d)> a, hn::Vec<decltype(d)> b) {
    return GemmStep<false, MODE, true>(d, plan, acc, a, b);
  };
  for (std::size_t p = 0; p < kc; ++p) {
    const auto xv = hn::Set(d, X[p]);
    const T* y_row = Y + p * static_cast<std::size_t>(V) * N;
    for (int v = 0; v < V; ++v) {
      const auto prod = hn::Mul(xv, hn::LoadU(d, y_row + static_cast<std::size_t>(v) * N));  // exact (gemm_fast.h)
      const auto y = round_sum(prod, hn::Neg(c[v]));
      const auto t = round_sum(sum[v], y);
      const auto dd = round_sum(t, hn::Neg(sum[v]));
      c[v] = round_sum(dd, hn::Neg(y));
      sum[v] = t;
    }
  }
  for (int v = 0; v < V; ++v) {
    hn::StoreU(sum[v], d, C + static_cast<std::size_t>(v) * N);
    hn::StoreU(c[v], d, Cc + static_cast<std::size_t>(v) * N);
  }
}

template <typename T>
void GemmTileKahanAny(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const T* X,
                      std::size_t xs, const T* Y, std::size_t kc, T* C, T* Cc, std::size_t cs) {
  if (plan.prod_round) {
    return ForRowsOfRoundedProducts(plan, R, V, X, xs, Y, kc,
                                    [&](const GemmFastPlan& inner, std::size_t r, const T* ones, const T* products) {
      GemmTileKahanAny<T>(inner, acc, 1, V, ones, 0, products, kc, C + r * cs, Cc + r * cs, cs);
    });
  }
  WithDeterministicMode(plan.acc.rounding.mode, [&](auto mode) {
    for (std::size_t r = 0; r < R; ++r) {
      WithVecs(V, [&](auto v) {
        GemmTileKahanV<decltype(mode)::value, T, decltype(v)::value>(plan, acc, X + r * xs, Y, kc, C + r * cs, Cc + r * cs);
      });
    }
  });
}

void GemmTileKahanF32(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const float* X,
                      std::size_t xs, const float* Y, std::size_t kc, float* C, float* Cc, std::size_t cs) {
  GemmTileKahanAny(plan, acc, R, V, X, xs, Y, kc, C, Cc, cs);
}
void GemmTileKahanF64(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const double* X,
                      std::size_t xs, const double* Y, std::size_t kc, double* C, double* Cc, std::size_t cs) {
  GemmTileKahanAny(plan, acc, R, V, X, xs, Y, kc, C, Cc, cs);
}

// ---- acc=exact (fp64 lanes) ------------------------------------------------------------

// One row of V vectors of exact accumulators: hi takes each product (exact: gemm_fast.h) by
// TwoSum, its exact error goes into lo by a second TwoSum, and any nonzero second error (the
// pair no longer holds the exact sum) or non-finite lane is remembered; at the end such lanes'
// lo becomes NaN, which no later block clears (NaN absorbs), and gemm.cpp sends their outputs
// to the reference. lo starts at -0 (x + (-0) = x for every x, so an exact zero keeps the sign
// the reference's sequence of exact additions gives it).
template <int V>
HWY_NOINLINE void GemmTileExactV(const double* HWY_RESTRICT X, const double* HWY_RESTRICT Y, std::size_t kc,
                                 double* HWY_RESTRICT C, double* HWY_RESTRICT Cc) {
  const hn::ScalableTag<double> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const std::size_t N = hn::Lanes(d);
  const auto sign = hn::Set(du, std::uint64_t{1} << 63);
  hn::Vec<decltype(d)> hi[V], lo[V];
  hn::Vec<decltype(du)> lost[V];
  for (int v = 0; v < V; ++v) {
    hi[v] = hn::LoadU(d, C + static_cast<std::size_t>(v) * N);
    lo[v] = hn::LoadU(d, Cc + static_cast<std::size_t>(v) * N);
    lost[v] = hn::Zero(du);
  }
  for (std::size_t p = 0; p < kc; ++p) {
    const auto xv = hn::Set(d, X[p]);
    const double* y_row = Y + p * static_cast<std::size_t>(V) * N;
    for (int v = 0; v < V; ++v) {
      hn::Vec<decltype(d)> e, e2;
      hi[v] = TwoSum(hi[v], hn::Mul(xv, hn::LoadU(d, y_row + static_cast<std::size_t>(v) * N)), &e);
      lo[v] = TwoSum(lo[v], e, &e2);
      lost[v] = hn::Or(lost[v], hn::AndNot(sign, hn::BitCast(du, e2)));  // nonzero (or NaN) errors
    }
  }
  const auto nan = hn::Set(d, std::numeric_limits<double>::quiet_NaN());
  for (int v = 0; v < V; ++v) {
    const auto bad = hn::Or(hn::RebindMask(d, hn::Ne(lost[v], hn::Zero(du))), hn::Not(hn::IsFinite(hi[v])));
    hn::StoreU(hi[v], d, C + static_cast<std::size_t>(v) * N);
    hn::StoreU(hn::IfThenElse(bad, nan, lo[v]), d, Cc + static_cast<std::size_t>(v) * N);
  }
}

void GemmTileExactF64(std::size_t R, std::size_t V, const double* X, std::size_t xs, const double* Y, std::size_t kc,
                      double* C, double* Cc, std::size_t cs) {
  for (std::size_t r = 0; r < R; ++r) {
    WithVecs(V, [&](auto v) { GemmTileExactV<decltype(v)::value>(X + r * xs, Y, kc, C + r * cs, Cc + r * cs); });
  }
}

// ---- order=treeN and ftreeN (float and fixed-point accumulators, deterministic modes) ---

// One row of V vectors: the group's kc products are the leaves; level by level adjacent nodes
// are added, each adder an exact lane sum rounded to odd and then into acc (GemmStep's kOdd
// path), an odd node at the end of a level passing up unchanged; the root goes to C. kFixed: a
// fixed-point or integer accumulator converts every leaf first, and each adder's exact sum
// (two values of its grid; the lane holds it exactly) saturates, as the reference's tree does.
template <bool kFixed, RoundMode MODE, typename T, int V>
HWY_NOINLINE void GemmTileTreeV(const GemmFastPlan& plan_in, const Format& acc, const T* HWY_RESTRICT X,
                                const T* HWY_RESTRICT Y, std::size_t kc, T* HWY_RESTRICT C) {
  const GemmFastPlan plan = plan_in;
  const hn::ScalableTag<T> d;
  const std::size_t N = hn::Lanes(d);
  const std::size_t W = static_cast<std::size_t>(V) * N;
  T* const nd = GroupProducts(d, X, Y, kc, W);
  if constexpr (kFixed) {
    // The converter after each multiplier: every leaf into the accumulator (saturating).
    for (std::size_t i = 0; i < kc * W; i += N) {
      hn::StoreU(FixedSaturate(d, plan, FixedConvert<MODE>(d, plan, acc, hn::LoadU(d, nd + i))), d, nd + i);
    }
  }
  for (std::size_t len = kc; len > 1; len = (len + 1) / 2) {
    for (std::size_t i = 0; i < len; i += 2) {
      for (std::size_t c = 0; c < W; c += N) {
        auto v = hn::LoadU(d, nd + i * W + c);
        if (i + 1 < len) {
          const auto w = hn::LoadU(d, nd + (i + 1) * W + c);
          // A fixed-point adder: the exact sum of two values of the grid, saturated.
          v = kFixed ? FixedSaturate(d, plan, hn::Add(v, w)) : GemmStep<false, MODE, true>(d, plan, acc, v, w);
        }
        hn::StoreU(v, d, nd + (i / 2) * W + c);
      }
    }
  }
  for (std::size_t c = 0; c < W; c += N) hn::StoreU(hn::LoadU(d, nd + c), d, C + c);
}

// order=ftreeN, one row of V vectors: the group's kc products summed exactly and rounded once
// into acc. Each lane keeps the running sum as an unevaluated pair hi + lo: hi takes each
// product with TwoSum, whose exact error goes into lo by a second TwoSum. While that second
// error is zero (it is unless the group's values span about twice the lane's precision) and
// the lane stays finite, hi + lo is the exact sum, which SumToOdd rounds to odd and
// RoundVector then into acc: one correct rounding, as for the other kinds (the plan keeps two
// more bits in the lane than in acc, and every nonzero sum, a multiple of the products'
// quantum, at least the lane's smallest normal). A lane where either fails is summed again by
// the reference (FtreeFixLanes). An exact zero sum takes IEEE 754's sign, as the reference's
// sequence of exact additions gives it: -0 only if every product is -0, except under rd,
// where +0 only if every product is +0. kFixed: a fixed-point or integer accumulator, which the
// odd sum reaches through the clamp and conversion of GemmStep's fixed path (the plan keeps
// three bits more in the lane than the accumulator's range).
template <bool kFixed, RoundMode MODE, typename T, int V>
HWY_NOINLINE void GemmTileFtreeV(const GemmFastPlan& plan_in, const Format& acc, const T* HWY_RESTRICT X,
                                 const T* HWY_RESTRICT Y, std::size_t kc, T* HWY_RESTRICT C) {
  const GemmFastPlan plan = plan_in;
  const hn::ScalableTag<T> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  using TU = hn::TFromD<decltype(du)>;
  const std::size_t N = hn::Lanes(d);
  const std::size_t W = static_cast<std::size_t>(V) * N;
  T* const nd = GroupProducts(d, X, Y, kc, W);  // kept for lanes the reference sums again
  const auto neg_zero = hn::Set(du, TU{1} << (sizeof(T) * 8 - 1));
  alignas(64) T fixed[HWY_MAX_BYTES / sizeof(T)];
  for (std::size_t c = 0; c < W; c += N) {
    const auto g = SumGroupExactly(d, nd, W, kc, c);
    auto r = SumToOdd(d, g.hi, g.lo);
    const auto zero_sign = MODE == RoundMode::rd ? hn::IfThenZeroElse(hn::RebindMask(du, g.all_pos_zero), neg_zero)
                                                 : hn::IfThenElseZero(hn::RebindMask(du, g.all_neg_zero), neg_zero);
    r = hn::IfThenElse(hn::Eq(r, hn::Zero(d)), hn::BitCast(d, zero_sign), r);
    if constexpr (kFixed) {
      r = FixedSaturate(d, plan, FixedConvert<MODE>(d, plan, acc, r));
    } else {
      r = RoundVector<MODE, 0>(d, plan.acc, acc, r, nullptr, 0, RandomKey{});
    }
    if (HWY_UNLIKELY(!hn::AllFalse(d, g.bad))) {
      hn::Store(r, d, fixed);
      FtreeFixLanes(acc, nd, W, kc, c, MaskBits(d, g.bad), N, fixed);
      r = hn::Load(d, fixed);
    }
    hn::StoreU(r, d, C + c);
  }
}

template <typename T>
void GemmTileTreeAny(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const T* X,
                     std::size_t xs, const T* Y, std::size_t kc, T* C, std::size_t cs) {
  if (plan.prod_round) {
    return ForRowsOfRoundedProducts(plan, R, V, X, xs, Y, kc,
                                    [&](const GemmFastPlan& inner, std::size_t r, const T* ones, const T* products) {
      GemmTileTreeAny<T>(inner, acc, 1, V, ones, 0, products, kc, C + r * cs, cs);
    });
  }
  WithDeterministicMode(plan.acc.rounding.mode, [&](auto mode) {
    for (std::size_t r = 0; r < R; ++r) {
      WithVecs(V, [&](auto v) {
        if (plan.ftree && plan.fixed) {
          GemmTileFtreeV<true, decltype(mode)::value, T, decltype(v)::value>(plan, acc, X + r * xs, Y, kc, C + r * cs);
        } else if (plan.ftree) {
          GemmTileFtreeV<false, decltype(mode)::value, T, decltype(v)::value>(plan, acc, X + r * xs, Y, kc, C + r * cs);
        } else if (plan.fixed) {
          GemmTileTreeV<true, decltype(mode)::value, T, decltype(v)::value>(plan, acc, X + r * xs, Y, kc, C + r * cs);
        } else {
          GemmTileTreeV<false, decltype(mode)::value, T, decltype(v)::value>(plan, acc, X + r * xs, Y, kc, C + r * cs);
        }
      });
    }
  });
}

void GemmTileTreeF32(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const float* X,
                     std::size_t xs, const float* Y, std::size_t kc, float* C, std::size_t cs) {
  GemmTileTreeAny(plan, acc, R, V, X, xs, Y, kc, C, cs);
}
void GemmTileTreeF64(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const double* X,
                     std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs) {
  GemmTileTreeAny(plan, acc, R, V, X, xs, Y, kc, C, cs);
}

// ---- the fold of chunk sums into outer: rounded to odd first, or stochastically -----------

template <RoundMode MODE, typename T>
HWY_NOINLINE void GemmFoldMode(const GemmFastPlan& plan, const Format& outer, T* HWY_RESTRICT c, T* HWY_RESTRICT t,
                               std::size_t len) {
  GemmFastPlan op = plan;
  op.acc = plan.outer;  // GemmStep rounds into plan.acc
  const hn::ScalableTag<T> d;
  const std::size_t N = hn::Lanes(d);
  for (std::size_t i = 0; i < len; i += N) {
    hn::StoreU(GemmStep<false, MODE, true>(d, op, outer, hn::LoadU(d, t + i), hn::LoadU(d, c + i)), d, t + i);
    hn::StoreU(hn::Zero(d), d, c + i);
  }
}

template <typename T>
void GemmFoldAny(const GemmFastPlan& plan, const Format& outer, T* c, T* t, std::size_t len) {
  WithDeterministicMode(plan.outer.rounding.mode,
                        [&](auto mode) { GemmFoldMode<decltype(mode)::value>(plan, outer, c, t, len); });
}

// A stochastic outer (plan.outer_sr; fp64 lanes): t[i] = outer(t[i] + c[i]) rounded by the sr
// step of the seq kernels with the random word of (output, chunk start, MacSite::outer_add), as
// the reference's accumulate into a float outer; c[i] = +0.
template <bool kSrn>
HWY_NOINLINE void GemmFoldSrMode(const GemmFastPlan& plan, const Format& outer, double* HWY_RESTRICT c,
                                 double* HWY_RESTRICT t, std::size_t len, const GemmSrTile& tile) {
  const QuantPlan q = plan.outer;
  const hn::ScalableTag<double> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const std::size_t N = hn::Lanes(d);
  const SiteWords words(tile, len, MacSite::outer_add);
  for (std::size_t i = 0; i < len; i += N) {
    const auto y = SrStep<kSrn>(d, q, outer, hn::LoadU(d, t + i), hn::LoadU(d, c + i), words.at(du, i, tile.p0, tile.key),
                                words.outs + i, tile.p0, tile.key, MacSite::outer_add);
    hn::StoreU(y, d, t + i);
    hn::StoreU(hn::Zero(d), d, c + i);
  }
}

void GemmFoldSrF64(const GemmFastPlan& plan, const Format& outer, double* c, double* t, std::size_t len,
                   const GemmSrTile& tile) {
  if (plan.outer.rounding.mode == RoundMode::srn) return GemmFoldSrMode<true>(plan, outer, c, t, len, tile);
  GemmFoldSrMode<false>(plan, outer, c, t, len, tile);
}

void GemmFoldF32(const GemmFastPlan& plan, const Format& outer, float* c, float* t, std::size_t len) {
  GemmFoldAny(plan, outer, c, t, len);
}
void GemmFoldF64(const GemmFastPlan& plan, const Format& outer, double* c, double* t, std::size_t len) {
  GemmFoldAny(plan, outer, c, t, len);
}

void GemmTileF32(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const float* X, std::size_t xs,
             const float* Y, std::size_t kc, float* C, std::size_t cs) {
  if (plan.fixed) GemmTileAny<true>(plan, acc, R, V, X, xs, Y, kc, C, cs);
  else GemmTileAny<false>(plan, acc, R, V, X, xs, Y, kc, C, cs);
}

void GemmTileF64(const GemmFastPlan& plan, const Format& acc, std::size_t R, std::size_t V, const double* X, std::size_t xs,
             const double* Y, std::size_t kc, double* C, std::size_t cs) {
  if (plan.fixed) GemmTileAny<true>(plan, acc, R, V, X, xs, Y, kc, C, cs);
  else GemmTileAny<false>(plan, acc, R, V, X, xs, Y, kc, C, cs);
}

std::size_t GemmLanesF32() { return hn::Lanes(hn::ScalableTag<float>()); }
std::size_t GemmLanesF64() { return hn::Lanes(hn::ScalableTag<double>()); }

}  // namespace mpsim::detail::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace mpsim::detail {

HWY_EXPORT(GemmPackF32F32);
HWY_EXPORT(GemmPackF32F64);
HWY_EXPORT(GemmPackF64F32);
HWY_EXPORT(GemmPackF64F64);
HWY_EXPORT(GemmPackColsF32F32);
HWY_EXPORT(GemmPackColsF32F64);
HWY_EXPORT(GemmPackColsF64F32);
HWY_EXPORT(GemmPackColsF64F64);
HWY_EXPORT(GemmTileF32);
HWY_EXPORT(GemmTileF64);
HWY_EXPORT(GemmTileSrF64);
HWY_EXPORT(GemmTileGroupSrF64);
HWY_EXPORT(GemmTileKahanF32);
HWY_EXPORT(GemmTileKahanF64);
HWY_EXPORT(GemmTileExactF64);
HWY_EXPORT(GemmTileTreeF32);
HWY_EXPORT(GemmTileTreeF64);
HWY_EXPORT(GemmFoldF32);
HWY_EXPORT(GemmFoldF64);
HWY_EXPORT(GemmFoldSrF64);
HWY_EXPORT(GemmLanesF32);
HWY_EXPORT(GemmLanesF64);

void gemm_pack(const QuantPlan& p, const Format& f, const float* src, std::size_t len, float* dst, std::size_t dstride) {
  HWY_DYNAMIC_DISPATCH(GemmPackF32F32)(p, f, src, len, dst, dstride);
}
void gemm_pack(const QuantPlan& p, const Format& f, const float* src, std::size_t len, double* dst, std::size_t dstride) {
  HWY_DYNAMIC_DISPATCH(GemmPackF32F64)(p, f, src, len, dst, dstride);
}
void gemm_pack(const QuantPlan& p, const Format& f, const double* src, std::size_t len, float* dst, std::size_t dstride) {
  HWY_DYNAMIC_DISPATCH(GemmPackF64F32)(p, f, src, len, dst, dstride);
}
void gemm_pack(const QuantPlan& p, const Format& f, const double* src, std::size_t len, double* dst, std::size_t dstride) {
  HWY_DYNAMIC_DISPATCH(GemmPackF64F64)(p, f, src, len, dst, dstride);
}
void gemm_pack_cols(const QuantPlan& p, const Format& f, const float* src, std::size_t ld, std::size_t ncols, std::size_t len,
                    float* dst, std::size_t dstride) {
  HWY_DYNAMIC_DISPATCH(GemmPackColsF32F32)(p, f, src, ld, ncols, len, dst, dstride);
}
void gemm_pack_cols(const QuantPlan& p, const Format& f, const float* src, std::size_t ld, std::size_t ncols, std::size_t len,
                    double* dst, std::size_t dstride) {
  HWY_DYNAMIC_DISPATCH(GemmPackColsF32F64)(p, f, src, ld, ncols, len, dst, dstride);
}
void gemm_pack_cols(const QuantPlan& p, const Format& f, const double* src, std::size_t ld, std::size_t ncols, std::size_t len,
                    float* dst, std::size_t dstride) {
  HWY_DYNAMIC_DISPATCH(GemmPackColsF64F32)(p, f, src, ld, ncols, len, dst, dstride);
}
void gemm_pack_cols(const QuantPlan& p, const Format& f, const double* src, std::size_t ld, std::size_t ncols, std::size_t len,
                    double* dst, std::size_t dstride) {
  HWY_DYNAMIC_DISPATCH(GemmPackColsF64F64)(p, f, src, ld, ncols, len, dst, dstride);
}
void gemm_tile(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const float* X,
               std::size_t xs, const float* Y, std::size_t kc, float* C, std::size_t cs) {
  HWY_DYNAMIC_DISPATCH(GemmTileF32)(plan, acc, rows, vecs, X, xs, Y, kc, C, cs);
}
void gemm_tile(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const double* X,
               std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs) {
  HWY_DYNAMIC_DISPATCH(GemmTileF64)(plan, acc, rows, vecs, X, xs, Y, kc, C, cs);
}
void gemm_tile_group_sr(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs,
                        const double* X, std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs,
                        const GemmSrTile& t) {
  HWY_DYNAMIC_DISPATCH(GemmTileGroupSrF64)(plan, acc, rows, vecs, X, xs, Y, kc, C, cs, t);
}
void gemm_tile_sr(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const double* X,
                  std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs, const GemmSrTile& t) {
  HWY_DYNAMIC_DISPATCH(GemmTileSrF64)(plan, acc, rows, vecs, X, xs, Y, kc, C, cs, t);
}
void gemm_tile_exact(std::size_t rows, std::size_t vecs, const double* X, std::size_t xs, const double* Y,
                     std::size_t kc, double* C, double* Cc, std::size_t cs) {
  HWY_DYNAMIC_DISPATCH(GemmTileExactF64)(rows, vecs, X, xs, Y, kc, C, Cc, cs);
}
void gemm_tile_kahan(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const float* X,
                     std::size_t xs, const float* Y, std::size_t kc, float* C, float* Cc, std::size_t cs) {
  HWY_DYNAMIC_DISPATCH(GemmTileKahanF32)(plan, acc, rows, vecs, X, xs, Y, kc, C, Cc, cs);
}
void gemm_tile_kahan(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const double* X,
                     std::size_t xs, const double* Y, std::size_t kc, double* C, double* Cc, std::size_t cs) {
  HWY_DYNAMIC_DISPATCH(GemmTileKahanF64)(plan, acc, rows, vecs, X, xs, Y, kc, C, Cc, cs);
}
void gemm_tile_tree(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const float* X,
                    std::size_t xs, const float* Y, std::size_t kc, float* C, std::size_t cs) {
  HWY_DYNAMIC_DISPATCH(GemmTileTreeF32)(plan, acc, rows, vecs, X, xs, Y, kc, C, cs);
}
void gemm_tile_tree(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const double* X,
                    std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs) {
  HWY_DYNAMIC_DISPATCH(GemmTileTreeF64)(plan, acc, rows, vecs, X, xs, Y, kc, C, cs);
}
void gemm_fold(const GemmFastPlan& plan, const Format& outer, float* c, float* t, std::size_t len) {
  HWY_DYNAMIC_DISPATCH(GemmFoldF32)(plan, outer, c, t, len);
}
void gemm_fold_sr(const GemmFastPlan& plan, const Format& outer, double* c, double* t, std::size_t len,
                  const GemmSrTile& tile) {
  HWY_DYNAMIC_DISPATCH(GemmFoldSrF64)(plan, outer, c, t, len, tile);
}
void gemm_fold(const GemmFastPlan& plan, const Format& outer, double* c, double* t, std::size_t len) {
  HWY_DYNAMIC_DISPATCH(GemmFoldF64)(plan, outer, c, t, len);
}
std::size_t gemm_lanes_f32() { return HWY_DYNAMIC_DISPATCH(GemmLanesF32)(); }
std::size_t gemm_lanes_f64() { return HWY_DYNAMIC_DISPATCH(GemmLanesF64)(); }

}  // namespace mpsim::detail
#endif  // HWY_ONCE
