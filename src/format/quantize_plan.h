// What the SIMD quantizer needs to know about a format, for one carrier (fp32 or fp64): a few
// integers and values derived once per call from the format, so the kernel's inner loop is
// branch-free arithmetic on the carrier's bits (internal; see quantize_simd.cpp).
#pragma once

#include <cstdint>

#include "mpsim/format.h"

namespace mpsim::detail {

enum class PlanKind : std::uint8_t {
  floating,  // radix-2 floats: round the significand at the format's quantum
  fixed,     // fixed point and power-of-two integers: round x / 2^-F to an integer
  scalar,    // no SIMD kernel: element by element through the scalar reference
};

struct QuantPlan {
  PlanKind kind = PlanKind::scalar;
  Rounding rounding;

  // The carrier: P significand bits after the point, exponent bias EB.
  int P = 23, EB = 127;

  // ---- floats ----
  int M = 0;            // mantissa bits
  int sub_shift = 0;    // below the lowest normal binade the quantum is 2^(emin - (M - sub_shift)):
                        // 0 for gradual underflow, M where there are no subnormal values
  int Tn = 0;           // carrier-biased exponent of the lowest normal binade
  int t_clamp = 0;      // clamp of (exponent - Tn) that keeps code arithmetic in range
  int top_biased = 0;   // carrier-biased exponent of the top binade (above it: overflow)
  std::uint64_t code_offset = 0;  // 2^M where a zero exponent field is a normal binade
  std::uint64_t max_code = 0;     // magnitude code of the largest finite value
  bool flushout = false;          // CFG-2: subnormal results become zero
  bool low_clamp = false;         // no zero (e8m0fnu): below the lowest binade -> code 0
  bool unsigned_nan = false;      // unsigned: negative and zero inputs give NaN
  bool fnuz = false;              // no negative zero
  bool asnormal_gap = false;      // CFG-5: (0, s1) goes to the scalar reference
  double s1 = 0;                  // smallest positive value of a CFG-5 format
  // Decoding a magnitude code: field 0 is value (c + code_offset) * small_scale (code_offset is
  // 2^M where field 0 is normal, and 0 for code 0 of formats with zero); other codes are the
  // carrier bits (c << (P - M)) + normal_offset.
  bool zero_code_is_zero = true;
  double small_scale = 0;
  std::uint64_t normal_offset = 0;
  double max_value = 0;      // largest finite value
  double overflow_value = 0; // what rounding away from zero past the top becomes (inf, NaN, max)
  double inf_value = 0;      // what an infinite input becomes
  // The fast path: where every lane of a vector is zero or lies in [fast_lo, fast_hi] (normal
  // binades up to the largest finite value), rounding is one operation on the carrier bits at
  // the fixed position P - M: no subnormals, no overflow, no specials to consider.
  bool fast = false;
  std::uint64_t fast_lo = 0, fast_hi = 0;  // carrier bit patterns of the magnitudes
  // rne on the fast path by the carrier's own addition (x + C - C): needs C = 2^(e - M + P) to
  // be a finite carrier number for every binade e up to the top one (not bf16 in fp32), and
  // 1 <= M < P.
  bool rne_add = false;
  // rne_add below the normal range too (gradual underflow, quantum 2^(emin - M) a normal
  // carrier number): every lane up to max, zeros and subnormals included.
  bool rne_add_low = false;
  // rne on the bits for every input: the format's binades are the carrier's from the lowest
  // normal one to the top one, with gradual underflow and overflow to infinity (bf16 and tf32
  // in fp32), so adding 2^(d-1) - 1 plus the kept part's lowest bit and clearing the d = P - M
  // low bits rounds every finite input, subnormal and overflowing ones included (a carry out
  // of the top binade is the infinity's bit pattern); NaN lanes are selected apart.
  bool rne_bits_all = false;
  // sr on the fast path below the normal range too (fp32 carriers; gradual underflow with
  // 1 <= M < P, no CFG-5 gap, the smallest subnormal 2^(emin - M) a normal carrier number):
  // where every lane is zero or lies in [sr_lo, fast_hi], the discarded part of a lane is its
  // low d bits, d = P - M + max(0, Tn - e) <= P, and rounding is again an add and a mask.
  bool sr_low = false;
  std::uint64_t sr_lo = 0;  // carrier bits of the smallest subnormal value
  // Saturating formats with gradual underflow (e4m3fn:sat, e2m1fn, the block formats' elements):
  // every finite magnitude above the largest value becomes it, so the kernel clamps the
  // magnitude bits to fast_hi first and then rounds at a quantum that depends on the binade
  // alone, with no codes, overflow or specials to form (SatVector in quantize_simd.cpp).
  bool sat_ieee = false;
  std::uint64_t quantum_bits = 0;  // carrier bits of the quantum below the normal range

  // ---- fixed point ----
  int Tq = 0;                // carrier-biased exponent of the quantum 2^-F
  double quantum = 0;        // 2^-F
  std::uint64_t k_pos = 0;   // largest integer for positive inputs
  std::uint64_t k_neg = 0;   // largest magnitude for negative inputs
  bool wrap = false;         // overflow wraps (these lanes go to the scalar reference)

  // ---- read by the GEMM's input packing only (mac/gemm_fast.h, input_packing) ----
  // A CFG-2 input (sub=flushout) is rounded with gradual underflow, then a lane whose rounded
  // value is not the input itself and lies below input_min_normal becomes a zero of its sign.
  bool input_flush = false;
  double input_min_normal = 0;
};

// Throws FormatError for the hysteresis mode.
QuantPlan make_plan(const Format& f, Carrier carrier);

}  // namespace mpsim::detail
