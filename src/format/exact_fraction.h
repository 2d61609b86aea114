// The discarded part of a rounding, held exactly (internal to the reference quantizer).
//
// When x lies strictly between two neighbouring values lo < hi of a format, every rounding
// mode only needs f = (x - lo) / (hi - lo) in (0, 1). The reference keeps f as the exact
// rational A / (B * 2^shift): for binary floats and fixed point B = 1 (f is the discarded bits),
// for the CFG-5 gap between 0 and (1 + 2^-M) 2^-bias B = 2^M + 1, for radix-4 floats B = 3, for
// scaled integers B is the scale's odd significand. No decision below ever rounds f.
#pragma once

#include <cstdint>

#include "mpsim/rng.h"
#include "mpsim/round.h"

namespace mpsim::detail {

__extension__ typedef unsigned __int128 u128;

struct ExactFraction {
  u128 A = 0;            // numerator, A < B * 2^shift
  std::uint64_t B = 1;   // odd-ish denominator factor, < 2^55
  int shift = 0;         // power-of-two part of the denominator, >= 0
  // The value is 1 - A / (B 2^shift) instead (scaled integers whose zero point moves the value
  // across zero need the complement of the discarded part; kept symbolic so it stays exact
  // even when B 2^shift has more bits than any integer type).
  bool complement = false;

  bool is_zero() const { return A == 0; }

  // 1 - f, for 0 < f < 1.
  ExactFraction complemented() const {
    ExactFraction c = *this;
    c.complement = !complement;
    return c;
  }

  // B * 2^s if it fits in 127 bits, else 0 (meaning "larger than any numerator we hold").
  static u128 denominator(std::uint64_t b, int s) {
    int bits = 0;
    for (std::uint64_t t = b; t; t >>= 1) ++bits;
    if (s < 0 || bits + s > 127) return 0;
    return static_cast<u128>(b) << s;
  }

  // Sign of f - 1/2.
  int compare_half() const {
    const u128 d = denominator(B, shift);
    int c;
    if (d == 0) {
      c = -1;  // A < 2^64 <= d / 2
    } else {
      const u128 twice = A << 1;
      c = twice < d ? -1 : (twice > d ? 1 : 0);
    }
    return complement ? -c : c;
  }

  // floor(f * 2^n) for 0 <= n <= 32.
  std::uint64_t floor_scaled(int n) const {
    if (complement) {
      // floor((1 - g) 2^n) = 2^n - ceil(g 2^n), g = A / (B 2^shift) > 0.
      ExactFraction g = *this;
      g.complement = false;
      const std::uint64_t fl = g.floor_scaled(n);
      const bool integral = g.times_pow2_is_integer(n, fl);
      return (std::uint64_t{1} << n) - fl - (integral ? 0 : 1);
    }
    if (shift >= n) {
      const u128 d = denominator(B, shift - n);
      return d == 0 ? 0 : static_cast<std::uint64_t>(A / d);
    }
    // A < B 2^shift < 2^(55+32), so A * 2^(n - shift) < 2^(55+32+32): fits.
    return static_cast<std::uint64_t>((A << (n - shift)) / B);
  }

  // Whether g * 2^n equals fl exactly (g = this fraction, fl = floor(g * 2^n)).
  bool times_pow2_is_integer(int n, std::uint64_t fl) const {
    if (shift > n) {
      const u128 d = denominator(B, shift - n);
      return d != 0 && A == static_cast<u128>(fl) * d;
    }
    return (A << (n - shift)) == static_cast<u128>(fl) * B;
  }

  // U < f, where U in [0, 1) has the binary expansion given by the element's random words.
  // Compares 32 bits at a time; each step continues only when the word equals the next 32
  // bits of f (probability 2^-32), so this is exact and almost always reads one word.
  // For f = 1 - g: U < 1 - g  <=>  g < 1 - U, and 1 - U is (with probability one) the bitwise
  // complement of U's expansion, so the same comparison runs on inverted words.
  bool uniform_below(const RandomKey& key, std::uint64_t index) const {
    if (!complement) return words_below(key, index, 0u);
    ExactFraction g = *this;
    g.complement = false;
    return !g.words_below(key, index, 0xFFFFFFFFu);  // U < 1 - g  <=>  not (~U < g), a.s.
  }

 private:
  // V < f for f = A / (B 2^shift), V the expansion of the element's words XOR `invert`.
  bool words_below(const RandomKey& key, std::uint64_t index, std::uint32_t invert) const {
    ExactFraction r = *this;
    for (std::uint32_t w = 0; w < 4096; ++w) {
      // q = floor(r * 2^32); r <- r * 2^32 - q.
      std::uint64_t q;
      if (r.shift >= 32) {
        r.shift -= 32;
        const u128 d = denominator(r.B, r.shift);
        q = d == 0 ? 0 : static_cast<std::uint64_t>(r.A / d);
        if (d != 0) r.A -= static_cast<u128>(q) * d;
      } else {
        const u128 t = r.A << (32 - r.shift);
        r.shift = 0;
        q = static_cast<std::uint64_t>(t / r.B);
        r.A = t % r.B;
      }
      const std::uint32_t word = random_word(key, index, w) ^ invert;
      if (word != q) return word < q;
      if (r.A == 0) return false;  // U >= f: the rest of U is >= 0 = the rest of f
    }
    return false;  // 4096 equal words: probability 2^-131072; treated as U >= f
  }
};

}  // namespace mpsim::detail
