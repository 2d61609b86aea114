// The pieces of the bit-accurate block dot product (internal; docs/mac.md section 7): the
// integer view of a block format's elements, the integer block accumulator, and the operands
// quantized block by block along the reduction. The reference (dot_ref.cpp:
// block_dot_quantized) and the fast path (gemm_block.cpp) are both built from them.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mpsim/block.h"
#include "mpsim/mac.h"

namespace mpsim::detail {

__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;

// Elements of one block along the reduction: the block size, or T for T x T tiles.
std::size_t block_extent(const BlockFormat& f);

// Every element value of a block with scale value S is n * S * quantum for an integer n with
// |n| <= max_int: the element format's values are integer multiples of its smallest positive
// value (its quantum). hbfpK: quantum 2^-(K-1), max_int 2^(K-1) - 1; mxfp8_e4m3: 2^-9, 229376;
// mxint8: 2^-6, 128; nvfp4: 1/2, 12.
struct BlockElementGrid {
  double quantum = 1;
  std::uint64_t max_int = 0;
};
BlockElementGrid block_element_grid(const BlockFormat& f);

// The value of one integer step of a block's elements: scale value * quantum (a power of two
// for hbfp and mx; for nvfp4 the product of the two scales, 28 significant bits, / 2). NaN for
// a NaN block. Exact.
inline double block_unit(const BlockScale& s, const BlockElementGrid& g) { return s.value * g.quantum; }

// The element's integer n = value / unit, exact; value must be an element of the block.
// Throws std::logic_error for a value off the grid (an operand that was not quantized).
std::int64_t block_element_int(double value, double unit, const BlockElementGrid& g);

// The signed integer block accumulator of `bits` bits: each product is added exactly; a sum
// outside [-2^(bits-1), 2^(bits-1) - 1] saturates to the nearer end, or with `wrap` is reduced
// modulo 2^bits into that range (two's complement).
struct BlockAccumulator {
  int bits = 64;
  bool wrap = false;
  i128 value = 0;
  bool saturated = false;  // some step saturated
  bool wrapped = false;    // some step wrapped around

  void add(i128 product);
};

// A quantized operand along the reduction: k values at values[p * inc] and the scale of the
// block holding p = t * extent ... at scales[t].
struct BlockVector {
  const double* values = nullptr;
  std::ptrdiff_t inc = 1;
  const BlockScale* scales = nullptr;
};

// Quantizes a rows x k row-major matrix (each row one operand vector: a row of op(A), or a
// column of op(B) transposed) in place, blocks along k, and returns the scale of every
// (row, block along k) at [row * ceil(k / extent) + t]. A tile's scale is repeated for each of
// its rows. NVFP4's tensor scale is that of the whole matrix. The reference quantizer.
std::vector<BlockScale> quantize_block_rows_ref(const BlockFormat& f, std::size_t rows, std::size_t k, double* values);
// The same through the fast quantizer (bit-identical), OpenMP over blocks.
template <typename T>
std::vector<BlockScale> quantize_block_rows(const BlockFormat& f, std::size_t rows, std::size_t k, T* values, int threads);

// The fast path's additions into outer (gemm_block.cpp): each returns the exact sum rounded to
// odd in fp64, whose rounding into any outer of at most 51 bits is the one rounding of the
// exact sum (docs/mac.md section 7.3).
// Knuth's TwoSum: a + b rounded to nearest, and its exact error in *err (no overflow).
inline double two_sum(double a, double b, double* err) {
  const double sum = a + b, bb = sum - a;
  *err = (a - (sum - bb)) + (b - bb);
  return sum;
}

// A value whose rounding into outer is the rounding of the exact total + s (both doubles; s
// an exact block sum): the two-sum, rounded to odd in fp64. An exact zero takes its sign as
// IEEE 754 says; infinities and NaN follow IEEE arithmetic, as the exact reference does.
inline double sum_to_odd(double total, double s, bool round_down) {
  if (!std::isfinite(total) || !std::isfinite(s)) return total + s;
  double err;
  double sum = two_sum(total, s, &err);
  if (sum == 0) {
    // x + (-x) and -0 + +0 are +0, except toward -infinity (-0); +0 + +0 is +0 always.
    const bool both_plus = !std::signbit(total) && !std::signbit(s);
    return round_down && !both_plus ? -0.0 : 0.0;
  }
  std::uint64_t bits = std::bit_cast<std::uint64_t>(sum);
  if (err != 0 && (bits & 1) == 0) {
    // The odd neighbour on err's side: one code up in magnitude if err has sum's sign, else
    // down (sum is nonzero and even, so not the smallest magnitude; carries cross binades).
    bits = std::signbit(err) == std::signbit(sum) ? bits + 1 : bits - 1;
    sum = std::bit_cast<double>(bits);
  }
  return sum;
}

// A value whose rounding into outer is the rounding of the exact total + hi + lo (hi + lo an
// exact block sum as an unevaluated pair, |lo| <= ulp(hi) / 2 and lo != 0; no overflow), as
// sum_to_odd for two terms. (s, e) = TwoSum(total, hi), (u, f) = TwoSum(e, lo), (w, g) =
// TwoSum(s, u): the exact sum is w + g + f, and g, where nonzero, outweighs f (g is a multiple
// of u's last place, |f| at most half of it), so the sum lies strictly between w and its
// neighbour on the side of g (of f where g = 0), within one place of w: the odd one of the two
// is the sum rounded to odd. It is never zero (w = 0 would need s = 0, so e = 0 and u = lo).
inline double sum3_to_odd(double total, double hi, double lo) {
  if (!std::isfinite(total)) return total + hi;
  double e, f, g;
  const double s = two_sum(total, hi, &e);
  const double u = two_sum(e, lo, &f);
  const double w = two_sum(s, u, &g);
  const double d = g != 0 ? g : f;
  std::uint64_t bits = std::bit_cast<std::uint64_t>(w);
  if (d != 0 && (bits & 1) == 0) bits = std::signbit(d) == std::signbit(w) ? bits + 1 : bits - 1;
  return std::bit_cast<double>(bits);
}

// The reference block dot product of two quantized vectors under a block spec (spec.block):
// the spec of docs/mac.md section 7, also the fast path's fallback for single outputs.
MacResult block_dot_quantized(const MacSpec& spec, std::size_t k, const BlockVector& a, const BlockVector& b,
                              double bias, const MacRandom& rnd, std::uint64_t out_index);

}  // namespace mpsim::detail
