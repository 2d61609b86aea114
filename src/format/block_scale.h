// How a block's scale follows from its values (internal), shared by the reference and the fast
// path so that both decide scales with the same few exact operations.
#pragma once

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "mpsim/block.h"
#include "mpsim/quantize.h"

namespace mpsim::detail {

// 2^e from its bits (e within the type's normal exponents: -126..127 for fp32, -1022..1023).
inline float pow2f(int e) { return std::bit_cast<float>(static_cast<std::uint32_t>(e + 127) << 23); }
inline double pow2d(int e) { return std::bit_cast<double>(static_cast<std::uint64_t>(e + 1023) << 52); }

// The constants of a format's scale rule (hbfp/mx), computed once per call.
struct ScaleRuleParams {
  int emax = 0;          // floor(log2) of the largest element value
  double max_elem = 0;   // the largest element value at scale 2^0
  int smin = 0, smax = 0;
  ScaleRule rule = ScaleRule::floor;
  int bias = 0;          // scale code = X + bias; the all-ones code 2^W - 1 is NaN
  std::uint32_t nan_code = 0;

  explicit ScaleRuleParams(const BlockFormat& f)
      : emax(f.element_emax()), max_elem(f.element_max()), smin(f.scale_min()), smax(f.scale_max()), rule(f.rule()),
        bias(f.scale_max()), nan_code((std::uint32_t{1} << f.scale_bits()) - 1) {}

  struct Result {
    int X;
    bool clamped;
  };
  // The scale exponent of a block with largest magnitude amax (positive and finite). Exact:
  // ilogb is floor(log2) of any double, and max_elem * 2^X is an fp64 number.
  Result exponent(double amax) const { return exponent(amax, std::ilogb(amax)); }
  // The same, with floor(log2 amax) already known (the fast path reads it off the bits).
  Result exponent(double amax, int floor_log2) const {
    int X = floor_log2 - emax;  // floor: floor(log2 amax) - emax
    if (rule == ScaleRule::ceil) {
      // Smallest X not clipping: X or X + 1. max_elem * 2^X by a multiplication when 2^X is a
      // normal fp64 number (exact: max_elem has few bits), else by ldexp.
      const double top = (X >= -1022 && X <= 1023) ? max_elem * pow2d(X) : std::ldexp(max_elem, X);
      if (amax > top) ++X;
    }
    if (X < smin) return {smin, true};
    if (X > smax) return {smax, true};
    return {X, false};
  }
};

// NVFP4's fp32 tensor scale s = amax / (6 * 448), over the tensor's finite values. The quotient
// is rounded to nearest once into fp32: the fp64 quotient is correctly rounded and 53 >= 2*24+2,
// so rounding it again to fp32 gives the correctly rounded fp32 quotient. A quotient beyond
// fp32's range (fp64 data above about 9e41) saturates to the largest fp32 value.
inline float nvfp4_tensor_scale(double amax) {
  const double q = amax / 2688.0;
  if (q > static_cast<double>(FLT_MAX)) return FLT_MAX;
  return static_cast<float>(q);
}

// NVFP4's block scale: e4m3fn (round to nearest even, saturating) of amax_b / 6 / s, rounded once
// from the exact quotient (the fp64 quotient amax_b / (6 s) is correctly rounded, 6 s is exact,
// and 53 >= 2*4+2 makes the second rounding innocuous; quotients that underflow fp64 are far
// below e4m3fn's half-smallest value 2^-10 and give 0 either way). s = 0 gives 0.
inline double nvfp4_block_scale(double amax_b, float s, const Format& e4m3fn_sat) {
  if (s == 0.0f || amax_b == 0.0) return 0.0;
  return quantize(amax_b / (6.0 * static_cast<double>(s)), e4m3fn_sat);
}

// One NVFP4 block's scale: the e4m3fn block scale bs, the product S = s * bs (exact: 24 + 4
// significant bits), and whether bs saturated or underflowed (counted as a clamped scale; 448
// reached exactly is not clamping, only quotients that really exceed it).
struct Nvfp4Scale {
  double bs = 0;
  double S = 0;
  bool clamped = false;
};
inline Nvfp4Scale nvfp4_scale(double amax_b, float s, const Format& e4m3fn_sat) {
  Nvfp4Scale r;
  r.bs = nvfp4_block_scale(amax_b, s, e4m3fn_sat);
  r.S = static_cast<double>(s) * r.bs;
  r.clamped = amax_b > 0 && (r.bs == 0 || (r.bs == 448.0 && amax_b / (6.0 * static_cast<double>(s)) > 448.0));
  return r;
}

// One NVFP4 element: e2m1fn:sat of the exact quotient x / S (S = s * block scale >= 0, an fp64
// number of at most 28 significant bits), with rounding r, as a value (S * element).
// The quotient is never formed: in the binade k of |x| / S (k = 0 for |x| < 2S) the e2m1 grid is
// the integers z times S 2^(k-1), so the reference integer quantizer (which keeps the discarded
// part exactly, as a fraction over the scale's odd significand) rounds |x| onto it. The code of
// an e2m1 value in a binade has the parity of z, so rne, ro and the stochastic modes decide as
// e2m1fn would; the sign is taken off first, with ru and rd swapped for negative x. S = 0 (a
// zero tensor or block scale) gives zero with the sign of x.
double nvfp4_element(double x, double S, const Rounding& r, std::uint64_t index, const RandomKey& key);

// nvfp4_element for a deterministic mode (rne rna rz ru rd ro), without the integer quantizer:
// the binade's step u = S 2^(k-1) (S/2, S or 2S: exact), z = floor(|x| / u) (the quotient rounded, so z is at
// most one too large: the remainder's sign says), and the remainder r = |x| - z u from one FMA,
// exact in fp64 (0 <= r < u, and r is a multiple of 2^-52 of u's binade: |x| >= u where z >= 1,
// r = |x| where z = 0); the mode decides from r against u / 2 (exact) and z's parity, which is
// the code's. Bit-identical to nvfp4_element (tests/test_block.cpp); block_quantize.cpp's fast
// path uses it.
double nvfp4_element_deterministic(double x, double S, RoundMode mode);

}  // namespace mpsim::detail
