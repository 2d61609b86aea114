// The discarded part of a rounding of an exact value of any width (internal).
//
// The same idea as src/format/exact_fraction.h, which the scalar quantizer uses for doubles:
// between the two neighbours lo < hi of a format, every rounding mode needs only the exact
// fraction f = (x - lo) / (hi - lo). Here x may have thousands of bits, so the numerator is a
// BigUint: f = A / (B * 2^shift) with a small odd-ish factor B (1 for binary grids, 2^M + 1 for
// the CFG-5 gap, 3 for radix 4, the odd significand of an integer format's scale). Every
// operation below depends only on the value of f, never on how it is written, which is what
// makes round_exact bit-identical to quantize_ref on doubles (same decisions, same random words).
#pragma once

#include <cstdint>

#include "big_uint.h"
#include "mpsim/round.h"

namespace mpsim::detail {

struct WideFraction {
  BigUint A;               // numerator, A < B * 2^shift
  std::uint64_t B = 1;     // denominator factor, > 0
  std::int64_t shift = 0;  // power of two of the denominator, >= 0
  bool complement = false; // the value is 1 - A / (B 2^shift) instead

  bool is_zero() const { return A.is_zero(); }
  WideFraction complemented() const {
    WideFraction c = *this;
    c.complement = !complement;
    return c;
  }

  // Sign of f - 1/2.
  int compare_half() const;
  // floor(f * 2^n) for 0 <= n <= 32.
  std::uint64_t floor_scaled(int n) const;
  // U < f, U in [0, 1) being the expansion 0.w0 w1 w2 ... of the element's random words
  // (the comparison of src/format/exact_fraction.h, on a numerator of any width).
  bool uniform_below(const RandomKey& key, std::uint64_t index) const;

 private:
  BigUint denominator() const;
  bool times_pow2_is_integer(int n, std::uint64_t fl) const;
  bool words_below(const RandomKey& key, std::uint64_t index, std::uint32_t invert) const;
};

}  // namespace mpsim::detail
