// Which MAC specs the SIMD GEMM computes (gemm_fast.h states the conditions and why they make
// the kernels exact). Every condition is checked from the formats' value ranges, so a spec is
// either computed exactly here or sent to the reference.
#include <algorithm>
#include <cfloat>
#include <cmath>

#include "mpsim/format.h"
#include "src/mac/gemm_fast.h"

namespace mpsim::detail {

namespace {

struct Range {
  double min_pos = 0;   // smallest positive value
  double quantum = 0;   // every value is a multiple of it (a power of two)
  double max = 0;       // largest finite magnitude
  int bits = 0;         // significant bits of a value
};

Range range_of(const Format& f) {
  const FormatInfo info = describe(f);
  Range r;
  r.max = std::max(std::fabs(info.max_finite), std::fabs(info.min_finite));
  r.bits = info.precision;
  if (f.kind() == FormatKind::floating) {
    const FloatSpec& s = f.float_spec();
    r.min_pos = info.has_subnormals ? info.min_subnormal : info.min_normal;
    // The lowest binade's step (CFG-5's (1 + 2^-M) 2^-bias is a multiple of 2^(-bias-M)).
    r.quantum = std::ldexp(1.0, (s.sub == Subnormals::asnormal ? -s.bias : 1 - s.bias) - s.man_bits);
    if (s.radix_log2 != 1) r.bits = 64;  // radix 4: not handled
  } else {
    r.min_pos = info.step;
    r.quantum = info.step;
    int e = 0;
    if (std::frexp(info.step, &e) != 0.5) r.bits = 64;  // a scale that is not a power of two
  }
  return r;
}

struct Lane {
  int P;          // significand bits
  double min_normal, max;
  Carrier carrier;
};

// A float format the sr step (gemm_simd.cpp, SrStep) rounds into: radix 2 with gradual
// underflow, a zero and a sign (the lane splits values at its grid with one rule for every
// binade), at most 24 bits, its smallest step a normal fp64 number.
bool sr_float(const Format& f) {
  if (f.kind() != FormatKind::floating) return false;
  const FloatSpec& fs = f.float_spec();
  return fs.radix_log2 == 1 && fs.sub == Subnormals::ieee && fs.man_bits >= 1 && fs.has_zero && fs.is_signed &&
         fs.sp != Specials::fnuz && f.fits(Carrier::fp64) && range_of(f).bits <= 24 && range_of(f).quantum >= DBL_MIN;
}

// Grouped orders (chunkN, treeN, ftreeN): whether the kernels' fold takes the chunk sums (values
// of an accumulator of range rc) into outer exactly as the reference does in this lane
// (gemm_fast.h); sets plan.outer and the fold's kind. A float outer rounding to nearest-even
// takes them as a float accumulator takes products; where that innocuous double rounding does
// not hold (outer narrower than the chunk sums, or another mode), the fold rounds each exact sum
// to odd first (plan.outer_odd); a fixed-point outer converts, adds and saturates
// (plan.outer_fixed); a stochastic one rounds by the sr step (plan.outer_sr).
bool outer_fits(const Format& outer, const Range& rc, const Lane& lane, GemmFastPlan& plan) {
  plan.outer_sr = false;
  if (outer.rounding().stochastic()) {
    // A stochastic outer: the chunk sums (values of acc) into it by the sr step, in fp64 lanes.
    if (lane.carrier != Carrier::fp64 || !sr_float(outer)) return false;
    if (range_of(outer).max + rc.max > lane.max / 2 || rc.quantum < lane.min_normal) return false;
    plan.outer = make_plan(outer, lane.carrier);
    plan.outer_odd = plan.outer_fixed = false;
    plan.outer_sr = true;
    return plan.outer.kind == PlanKind::floating;
  }
  if (!outer.fits(lane.carrier)) return false;
  if (outer.kind() != FormatKind::floating) {
    // A saturating fixed-point or integer outer: the fold converts each chunk sum (a lane
    // value) into it with its mode and adds it to the total, exactly in the lane (two values
    // of its grid), then saturates; both are the array quantizer's rounding into outer.
    if (outer.kind() == FormatKind::fixed && outer.fixed_spec().wrap) return false;
    if (outer.kind() == FormatKind::integer && outer.int_spec().zp != 0) return false;
    const RoundMode m = outer.rounding().mode;
    if (m != RoundMode::rne && m != RoundMode::rna && m != RoundMode::rz && m != RoundMode::ru && m != RoundMode::rd &&
        m != RoundMode::ro) {
      return false;
    }
    if (range_of(outer).bits > lane.P - 1) return false;
    plan.outer = make_plan(outer, lane.carrier);
    plan.outer_odd = false;
    plan.outer_fixed = true;
    return plan.outer.kind == PlanKind::fixed;
  }
  plan.outer_fixed = false;
  const Range ro = range_of(outer);
  if (ro.bits >= 64) return false;
  if (std::min(ro.quantum, rc.quantum) < lane.min_normal || ro.max + rc.max > lane.max / 2) return false;
  const bool innocuous = outer.rounding().mode == RoundMode::rne && rc.bits <= ro.bits && 2 * ro.bits + 2 <= lane.P &&
                         std::min(ro.quantum, rc.quantum) * std::ldexp(1.0, lane.P) >= describe(outer).min_normal;
  if (!innocuous && ro.bits + 2 > lane.P) return false;  // round to odd: two bits more in the lane
  plan.outer_odd = !innocuous;
  plan.outer = make_plan(outer, lane.carrier);
  if (plan.outer.kind != PlanKind::floating) return false;
  return true;
}

// A plan in fp64 lanes (a stochastic or an exact accumulator), accepted.
GemmFastPlan accepted_in_fp64_lanes(GemmFastPlan plan) {
  plan.f32 = false;
  plan.fixed = false;
  plan.ok = true;
  plan.why = "";
  return plan;
}

// The stochastic float accumulator (sr or srN; gemm_fast.h): fp64 lanes in which every product is exact
// and no sum overflows; the accumulator a radix-2 float with gradual underflow, a zero and a
// sign (the lane splits values at its grid with one rule for every binade), whose smallest
// step is a normal fp64 number. Its precision only decides how often a sum is inexact in the
// lane (then that lane's step goes to the reference): up to 24 bits is allowed.
GemmFastPlan plan_sr(const MacSpec& spec, GemmFastPlan plan) {
  auto no = [&](const char* why) {
    plan.ok = false;
    plan.why = why;
    return plan;
  };
  const Format& acc = *spec.acc;
  const MacOrderKind order = spec.order.kind;
  if (order == MacOrderKind::kahan) return no("order=kahan");
  if (acc.kind() != FormatKind::floating) return no("a stochastic accumulator that is not a float");
  const FloatSpec& fs = acc.float_spec();
  if (fs.radix_log2 != 1 || fs.sub != Subnormals::ieee || fs.man_bits < 1 || !fs.has_zero || !fs.is_signed ||
      fs.sp == Specials::fnuz) {
    return no("a stochastic accumulator without gradual underflow, a zero or a sign");
  }
  const Range ra = range_of(spec.a), rb = range_of(spec.b), rc = range_of(acc);
  const double prod_quantum = ra.quantum * rb.quantum, prod_max = ra.max * rb.max;
  if (!spec.a.fits(Carrier::fp64) || !spec.b.fits(Carrier::fp64) || !acc.fits(Carrier::fp64)) return no("a format beyond fp64");
  if (ra.bits + rb.bits > 53 || prod_quantum < DBL_MIN || prod_max > DBL_MAX / 4) return no("products not exact in fp64");
  // What the accumulator adds: the exact product, or (prod=<fmt>, deterministic) the product
  // rounded into that format by the array quantizer's vector rounding (gemm_simd.cpp).
  double add_quantum = prod_quantum, add_max = prod_max;
  if (spec.prod) {
    const Range rp = range_of(*spec.prod);
    if (rp.bits >= 64 || !spec.prod->fits(Carrier::fp64)) return no("the product format does not fit fp64 lanes");
    plan.prod = make_plan(*spec.prod, Carrier::fp64);
    if (plan.prod.kind == PlanKind::scalar) return no("no vector plan for the product format");
    plan.prod_round = true;
    plan.prod_kind = plan.prod.kind == PlanKind::fixed ? 1 : (plan.prod.sat_ieee ? 2 : 0);
    plan.prod_format = &*spec.prod;
    add_quantum = rp.quantum;
    add_max = rp.max;
  }
  if (add_quantum < DBL_MIN) return no("products below the fp64 lane's normal range");
  if (rc.bits > 24 || rc.quantum < DBL_MIN || rc.max + add_max > DBL_MAX / 2) return no("the accumulator is too wide for fp64 lanes");
  plan.acc = make_plan(acc, Carrier::fp64);
  if (plan.acc.kind != PlanKind::floating) return no("no vector plan for the accumulator");
  if (spec.order.grouped()) {
    // Chunk or group sums (values of acc) into outer, as for the other chunk kernels; ftreeN's
    // exact group sums in a pair of fp64 lanes (a lane that loses a bit goes to the reference).
    // A tree's adders sum two values of acc (or products): the lane bounds above cover them.
    if (!outer_fits(*spec.outer_format(), rc, Lane{53, DBL_MIN, DBL_MAX, Carrier::fp64}, plan)) {
      return no("order=chunkN or ftreeN with an outer the kernels do not take");
    }
    plan.chunk = spec.order.n;
    plan.tree = order != MacOrderKind::chunk;
    plan.ftree = order == MacOrderKind::ftree;
  }
  plan.sr = true;
  return accepted_in_fp64_lanes(plan);
}

// acc=exact (gemm_fast.h): order=seq, the exact product (no prod=), both in fp64 lanes with
// every product exact; out= absent or deterministic and at most 51 bits wide (the pair is
// rounded to odd, then into out; a stochastic out= needs the exact sum itself).
GemmFastPlan plan_exact(const MacSpec& spec, GemmFastPlan plan) {
  auto no = [&](const char* why) {
    plan.ok = false;
    plan.why = why;
    return plan;
  };
  if (spec.order.kind != MacOrderKind::seq) return no("acc=exact with an order other than seq");
  if (spec.prod) return no("acc=exact with prod=<fmt>");
  if (spec.out && spec.out->rounding().stochastic()) return no("acc=exact with a stochastic out=");
  // The pair is rounded to odd in fp64, then into out=: one correct rounding for an out= of at
  // most 51 bits on a binary grid (53 >= p + 2).
  if (spec.out && range_of(*spec.out).bits + 2 > 53) return no("acc=exact with an out= wider than 51 bits");
  if (!spec.a.fits(Carrier::fp64) || !spec.b.fits(Carrier::fp64)) return no("a format beyond fp64");
  const Range ra = range_of(spec.a), rb = range_of(spec.b);
  if (ra.bits + rb.bits > 53 || ra.quantum * rb.quantum < DBL_MIN || ra.max * rb.max > DBL_MAX / 4) {
    return no("products not exact in fp64");
  }
  plan.exact = true;
  return accepted_in_fp64_lanes(plan);
}

}  // namespace

InputPacking input_packing(const Format& f, Carrier carrier) {
  if (f.kind() != FormatKind::floating || f.float_spec().sub != Subnormals::flushout) return {f, make_plan(f, carrier)};
  FloatSpec twin = f.float_spec();
  twin.sub = Subnormals::ieee;
  InputPacking in{Format::from_float(twin, f.rounding()), {}};
  in.plan = make_plan(in.format, carrier);
  in.plan.input_flush = true;
  in.plan.input_min_normal = describe(f).min_normal;
  return in;
}

GemmFastPlan plan_gemm_fast(const MacSpec& spec) {
  GemmFastPlan plan;
  auto no = [&](const char* why) {
    plan.ok = false;
    plan.why = why;
    return plan;
  };
  if (spec.block) return no("block-format inputs (gemm_block.cpp)");
  const bool kahan = spec.order.kind == MacOrderKind::kahan;
  // ftreeN runs on the tree kernels' driver (whole groups per call), its group summed exactly.
  const bool ftree = spec.order.kind == MacOrderKind::ftree;
  const bool tree = spec.order.kind == MacOrderKind::tree || ftree;
  if (kahan && (!spec.acc || spec.acc->kind() != FormatKind::floating)) return no("order=kahan without a float accumulator");
  if (spec.prod && spec.prod->rounding().stochastic()) return no("prod= rounds the product stochastically");
  if (!spec.acc) return plan_exact(spec, plan);
  const Format& acc = *spec.acc;
  if (acc.rounding().stochastic()) {
    if (kahan) return no("a stochastic accumulator with order=kahan");
    return plan_sr(spec, plan);
  }
  const RoundMode mode = acc.rounding().mode;
  if (mode != RoundMode::rne && mode != RoundMode::rna && mode != RoundMode::rz && mode != RoundMode::ru &&
      mode != RoundMode::rd && mode != RoundMode::ro) {
    return no("the accumulator's rounding mode has no kernel");
  }
  plan.fixed = acc.kind() != FormatKind::floating;
  if (plan.fixed && acc.kind() == FormatKind::fixed && acc.fixed_spec().wrap) return no("the fixed-point accumulator wraps");
  if (acc.kind() == FormatKind::integer && acc.int_spec().zp != 0) return no("the integer accumulator has a zero point");
  if (!plan.fixed && spec.fused) {
    // With an exact product a fused float MAC rounds exactly as the split one (docs/mac.md).
  } else if (plan.fixed && spec.fused) {
    return no("fused with a fixed-point accumulator");
  }
  const Range ra = range_of(spec.a), rb = range_of(spec.b), rc = range_of(acc);
  const int prod_bits = ra.bits + rb.bits;
  const double prod_quantum = ra.quantum * rb.quantum, prod_max = ra.max * rb.max;
  if (rc.bits >= 64) return no("the accumulator's grid is not binary");
  // What the accumulator adds: the exact product, or the product rounded into prod= (a value
  // of that format, or infinity / NaN, which the kernels' full rounding handles).
  int add_bits = prod_bits;
  double add_quantum = prod_quantum, add_max = prod_max;
  if (spec.prod) {
    const Range rp = range_of(*spec.prod);
    if (rp.bits >= 64) return no("the product format's grid is not binary");
    add_bits = rp.bits;
    add_quantum = rp.quantum;
    add_max = rp.max;
  }

  for (const Lane lane : {Lane{24, static_cast<double>(FLT_MIN), static_cast<double>(FLT_MAX), Carrier::fp32},
                          Lane{53, DBL_MIN, DBL_MAX, Carrier::fp64}}) {
    if (!spec.a.fits(lane.carrier) || !spec.b.fits(lane.carrier) || !acc.fits(lane.carrier)) continue;
    plan.prod_round = false;
    if (prod_bits > lane.P || prod_quantum < lane.min_normal || prod_max > lane.max / 4) continue;  // exact products
    if (spec.prod) {
      if (!spec.prod->fits(lane.carrier) || add_quantum < lane.min_normal || add_max > lane.max / 4) continue;
      plan.prod = make_plan(*spec.prod, lane.carrier);
      if (plan.prod.kind == PlanKind::scalar) continue;
      plan.prod_round = true;
      plan.prod_kind = plan.prod.kind == PlanKind::fixed ? 1 : (plan.prod.sat_ieee ? 2 : 0);
      plan.prod_format = &*spec.prod;
    }
    if (std::min(add_quantum, rc.quantum) < lane.min_normal) continue;  // sums never lane-subnormal
    if (rc.max + add_max > lane.max / 2) continue;                      // sums never overflow the lane
    plan.to_odd = false;
    if (plan.fixed) {
      if (rc.bits > lane.P - 1) continue;  // acc + converted product exact in the lane
      // ftreeN: a group's exact sum, clamped to twice the range, rounded to odd with two bits
      // more than the accumulator's grid, then into it.
      if (ftree && rc.bits + 3 > lane.P) continue;
    } else {
      // Innocuous double rounding (to nearest-even only): the product has at most the
      // accumulator's p bits and the lane 2p + 2. Below the accumulator's normal range its
      // grid is coarser than p bits; every sum there must be exact in the lane (sums are
      // multiples of the smaller quantum), so that only the one rounding into the accumulator
      // acts.
      const bool innocuous = mode == RoundMode::rne && add_bits <= rc.bits && 2 * rc.bits + 2 <= lane.P &&
                             std::min(add_quantum, rc.quantum) * std::ldexp(1.0, lane.P) >= describe(acc).min_normal;
      // Else round to odd: two bits more in the lane than in the accumulator (sums are never
      // lane-subnormal and never overflow: checked above).
      if (!innocuous || kahan || tree) {
        if (rc.bits + 2 > lane.P) continue;
        plan.to_odd = true;
      }
      // Kahan's t - sum reaches twice the largest value.
      if (kahan && 2 * rc.max + add_max > lane.max / 2) continue;
    }
    plan.acc = make_plan(acc, lane.carrier);
    if (plan.acc.kind == PlanKind::scalar || (plan.fixed && plan.acc.kind != PlanKind::fixed) ||
        (!plan.fixed && plan.acc.kind != PlanKind::floating)) {
      continue;
    }
    if (spec.order.kind == MacOrderKind::chunk && !outer_fits(*spec.outer_format(), rc, lane, plan)) continue;
    if (tree) {
      // A group's value is a value of acc, or (a group of one) the product itself.
      Range rg = rc;
      rg.bits = std::max(rc.bits, add_bits);
      rg.quantum = std::min(rc.quantum, add_quantum);
      rg.max = std::max(rc.max, add_max);
      if (2 * rg.max > lane.max / 2) continue;  // an adder's exact sum
      if (!outer_fits(*spec.outer_format(), rg, lane, plan)) continue;
    }
    if (plan.fixed) {
      const FormatInfo info = describe(acc);
      plan.fixed_lo = info.min_finite;
      plan.fixed_hi = info.max_finite;
      // A power of two at least twice the range: clamping there changes no result (beyond the
      // range a value saturates), and keeps the conversion inside the lane's exact integers.
      int e = 0;
      std::frexp(2 * rc.max, &e);
      plan.prod_clamp = std::ldexp(1.0, e);
    }
    plan.f32 = lane.carrier == Carrier::fp32;
    plan.chunk = spec.order.kind == MacOrderKind::chunk || tree ? spec.order.n : 0;
    plan.kahan = kahan;
    plan.tree = tree;
    plan.ftree = ftree;
    plan.ok = true;
    plan.why = "";
    return plan;
  }
  return no("the products or sums do not fit a lane exactly (see gemm_fast.h)");
}

}  // namespace mpsim::detail
