// Exact decisions on a fraction with a numerator of any width. See wide_fraction.h.
#include "wide_fraction.h"

#include "mpsim/rng.h"

namespace mpsim::detail {

BigUint WideFraction::denominator() const { return BigUint(B).shl(shift); }

int WideFraction::compare_half() const {
  const auto c = A.shl(1) <=> denominator();
  const int s = c < 0 ? -1 : (c > 0 ? 1 : 0);
  return complement ? -s : s;
}

std::uint64_t WideFraction::floor_scaled(int n) const {
  if (complement) {
    // floor((1 - g) 2^n) = 2^n - ceil(g 2^n) for g = A / (B 2^shift) > 0.
    WideFraction g = *this;
    g.complement = false;
    const std::uint64_t fl = g.floor_scaled(n);
    return (std::uint64_t{1} << n) - fl - (g.times_pow2_is_integer(n, fl) ? 0 : 1);
  }
  // floor(A 2^n / (B 2^shift)); nested floor divisions by positive integers are exact.
  std::uint64_t rem = 0;
  const BigUint scaled = shift >= n ? A.shr(shift - n) : A.shl(n - shift);
  return scaled.divmod(B, rem).to_u64();  // < 2^n because f < 1
}

bool WideFraction::times_pow2_is_integer(int n, std::uint64_t fl) const {
  // A 2^n == fl B 2^shift
  return A.shl(n) == BigUint(fl).mul(BigUint(B)).shl(shift);
}

bool WideFraction::uniform_below(const RandomKey& key, std::uint64_t index) const {
  if (!complement) return words_below(key, index, 0u);
  // U < 1 - g  <=>  not (~U < g), with probability one (as in exact_fraction.h).
  WideFraction g = *this;
  g.complement = false;
  return !g.words_below(key, index, 0xFFFFFFFFu);
}

bool WideFraction::words_below(const RandomKey& key, std::uint64_t index, std::uint32_t invert) const {
  WideFraction r = *this;
  for (std::uint32_t w = 0; w < 4096; ++w) {
    // r <- r * 2^32, q = floor(r), r <- r - q: the next 32 bits of f's expansion.
    if (r.shift >= 32) {
      r.shift -= 32;
    } else {
      r.A = r.A.shl(32 - r.shift);
      r.shift = 0;
    }
    std::uint64_t rem = 0;
    const std::uint64_t q = r.A.shr(r.shift).divmod(r.B, rem).to_u64();
    r.A = r.A.sub(BigUint(q).mul(BigUint(r.B)).shl(r.shift));
    const std::uint32_t word = random_word(key, index, w) ^ invert;
    if (word != q) return word < q;
    if (r.A.is_zero()) return false;  // U >= f: the rest of U is >= 0 = the rest of f
  }
  return false;  // 4096 equal words (probability 2^-131072): U >= f, as the scalar reference
}

}  // namespace mpsim::detail
