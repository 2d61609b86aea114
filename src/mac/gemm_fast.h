// The SIMD GEMM path (internal): which MAC specs it computes, and its kernels.
//
// It covers `order=seq prod=exact` with
//   - a float accumulator rounding to nearest-even: each step forms the product exactly and the
//     sum acc + product correctly rounded in the lane type (fp32 or fp64), then rounds that into
//     the accumulator. Rounding twice gives the same result as rounding the exact sum once
//     because the lane has at least 2p + 2 bits for an accumulator of p bits and both addends
//     are p-bit numbers (the product has at most p bits: that is a condition), the classic
//     result on innocuous double rounding for addition (Figueroa 1995). Below the
//     accumulator's normal range, where its grid is coarser, every sum is exact in the lane (a
//     condition: sums are multiples of the smaller quantum). The lane never overflows or
//     underflows for these formats (checked from their ranges);
//   - a saturating fixed-point (or power-of-two integer) accumulator: the exact product is
//     converted into the accumulator with its rounding mode, then added and saturated, all
//     exact in the lane (the accumulator has at most the lane's significand bits).
// Everything else goes through the exact reference (gemm.cpp decides).
#pragma once

#include <cstddef>
#include <cstdint>

#include "mpsim/mac.h"
#include "src/format/quantize_plan.h"

namespace mpsim::detail {

struct GemmFastPlan {
  bool ok = false;       // the SIMD path computes this spec exactly
  bool f32 = false;      // in fp32 lanes (else fp64)
  bool fixed = false;    // fixed-point accumulator (else float)
  QuantPlan acc;         // the accumulator's rounding plan in the lane type
  double fixed_lo = 0, fixed_hi = 0;  // fixed: the accumulator's range (saturation)
  double prod_clamp = 0;              // fixed: products beyond +-this are clamped first (they saturate anyway)
  const char* why = "";  // when !ok: the first condition that failed (for tests and docs)
};

GemmFastPlan plan_gemm_fast(const MacSpec& spec);

// C[i][j] for i in rows, j < n: acc_init (the bias already rounded into the accumulator,
// row-major m x n, overwritten with the results) plus the products of the packed operands:
// A row-major m x k, B as panels of `width` columns (the SIMD width times the register block):
// panel q holds, for p = 0 .. k-1, columns q*width .. q*width + width - 1 (zero-padded).
// One call computes rows [i0, i1) of panels [q0, q1).
void gemm_fast_f32(const GemmFastPlan& plan, const Format& acc, const float* A, const float* Bpanels, std::size_t width,
                   std::size_t m, std::size_t n, std::size_t k, std::size_t i0, std::size_t i1, std::size_t q0, std::size_t q1,
                   float* C);
void gemm_fast_f64(const GemmFastPlan& plan, const Format& acc, const double* A, const double* Bpanels, std::size_t width,
                   std::size_t m, std::size_t n, std::size_t k, std::size_t i0, std::size_t i1, std::size_t q0, std::size_t q1,
                   double* C);
// Columns per panel that the kernels of the dispatched target use.
std::size_t gemm_fast_width_f32();
std::size_t gemm_fast_width_f64();

}  // namespace mpsim::detail
