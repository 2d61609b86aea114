// An unsigned integer of any width (internal to the exact MAC reference).
//
// The reference dot product keeps sums exact across the whole fp64 exponent range, so its
// significands need up to a few thousand bits. This is deliberately the plainest possible
// implementation (little-endian 64-bit limbs, schoolbook algorithms): it is the spec, not a fast
// path, and every operation is exact.
#pragma once

#include <compare>
#include <cstdint>
#include <vector>

namespace mpsim::detail {

__extension__ typedef unsigned __int128 u128;

class BigUint {
 public:
  BigUint() = default;
  explicit BigUint(std::uint64_t v) {
    if (v) limbs_.push_back(v);
  }
  static BigUint from_u128(u128 v);

  bool is_zero() const { return limbs_.empty(); }
  // Number of significant bits (0 for zero).
  std::int64_t bit_length() const;
  bool bit(std::int64_t i) const;
  // Number of trailing zero bits (0 for zero).
  std::int64_t trailing_zeros() const;
  bool is_odd() const { return !limbs_.empty() && (limbs_[0] & 1); }

  // Whether the value is below 2^64 / 2^128, and the value then.
  bool fits_u64() const { return limbs_.size() <= 1; }
  std::uint64_t to_u64() const { return limbs_.empty() ? 0 : limbs_[0]; }  // low 64 bits
  bool fits_u128() const { return limbs_.size() <= 2; }
  u128 to_u128() const;  // low 128 bits

  BigUint shl(std::int64_t n) const;
  BigUint shr(std::int64_t n) const;       // floor(this / 2^n)
  BigUint low_bits(std::int64_t n) const;  // this mod 2^n

  BigUint add(const BigUint& o) const;
  BigUint sub(const BigUint& o) const;  // requires this >= o
  BigUint mul(const BigUint& o) const;
  // floor(this / d) and this mod d, d > 0.
  BigUint divmod(std::uint64_t d, std::uint64_t& rem) const;

  std::strong_ordering operator<=>(const BigUint& o) const;
  bool operator==(const BigUint& o) const { return limbs_ == o.limbs_; }

 private:
  void trim();
  std::vector<std::uint64_t> limbs_;  // little endian, no leading zero limbs
};

}  // namespace mpsim::detail
