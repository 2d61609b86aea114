// Plain schoolbook arithmetic on 64-bit limbs; see big_uint.h for why nothing cleverer.
#include "big_uint.h"

#include <algorithm>
#include <stdexcept>

namespace mpsim::detail {

BigUint BigUint::from_u128(u128 v) {
  BigUint r;
  r.limbs_.push_back(static_cast<std::uint64_t>(v));
  r.limbs_.push_back(static_cast<std::uint64_t>(v >> 64));
  r.trim();
  return r;
}

void BigUint::trim() {
  while (!limbs_.empty() && limbs_.back() == 0) limbs_.pop_back();
}

std::int64_t BigUint::bit_length() const {
  if (limbs_.empty()) return 0;
  return static_cast<std::int64_t>(limbs_.size() - 1) * 64 + (64 - __builtin_clzll(limbs_.back()));
}

bool BigUint::bit(std::int64_t i) const {
  if (i < 0) return false;
  const auto w = static_cast<std::size_t>(i / 64);
  return w < limbs_.size() && ((limbs_[w] >> (i % 64)) & 1);
}

std::int64_t BigUint::trailing_zeros() const {
  for (std::size_t w = 0; w < limbs_.size(); ++w) {
    if (limbs_[w]) return static_cast<std::int64_t>(w) * 64 + __builtin_ctzll(limbs_[w]);
  }
  return 0;
}

u128 BigUint::to_u128() const {
  u128 r = 0;
  if (!limbs_.empty()) r = limbs_[0];
  if (limbs_.size() > 1) r |= static_cast<u128>(limbs_[1]) << 64;
  return r;
}

BigUint BigUint::shl(std::int64_t n) const {
  if (n < 0) throw std::logic_error("BigUint::shl: negative shift");
  if (limbs_.empty() || n == 0) return *this;
  const auto words = static_cast<std::size_t>(n / 64);
  const int bits = static_cast<int>(n % 64);
  BigUint r;
  r.limbs_.assign(limbs_.size() + words + 1, 0);
  for (std::size_t i = 0; i < limbs_.size(); ++i) {
    r.limbs_[i + words] |= limbs_[i] << bits;
    if (bits) r.limbs_[i + words + 1] |= limbs_[i] >> (64 - bits);
  }
  r.trim();
  return r;
}

BigUint BigUint::shr(std::int64_t n) const {
  if (n < 0) throw std::logic_error("BigUint::shr: negative shift");
  const auto words = static_cast<std::size_t>(n / 64);
  if (words >= limbs_.size()) return {};
  const int bits = static_cast<int>(n % 64);
  BigUint r;
  r.limbs_.assign(limbs_.size() - words, 0);
  for (std::size_t i = 0; i < r.limbs_.size(); ++i) {
    r.limbs_[i] = limbs_[i + words] >> bits;
    if (bits && i + words + 1 < limbs_.size()) r.limbs_[i] |= limbs_[i + words + 1] << (64 - bits);
  }
  r.trim();
  return r;
}

BigUint BigUint::low_bits(std::int64_t n) const {
  if (n <= 0) return {};
  const auto words = static_cast<std::size_t>(n / 64);
  if (words >= limbs_.size()) return *this;
  BigUint r;
  r.limbs_.assign(limbs_.begin(), limbs_.begin() + static_cast<std::ptrdiff_t>(words) + 1);
  const int bits = static_cast<int>(n % 64);
  r.limbs_[words] &= bits ? ((std::uint64_t{1} << bits) - 1) : 0;
  r.trim();
  return r;
}

BigUint BigUint::add(const BigUint& o) const {
  const BigUint& big = limbs_.size() >= o.limbs_.size() ? *this : o;
  const BigUint& small = limbs_.size() >= o.limbs_.size() ? o : *this;
  BigUint r;
  r.limbs_.resize(big.limbs_.size() + 1, 0);
  std::uint64_t carry = 0;
  for (std::size_t i = 0; i < big.limbs_.size(); ++i) {
    const u128 s = static_cast<u128>(big.limbs_[i]) + (i < small.limbs_.size() ? small.limbs_[i] : 0) + carry;
    r.limbs_[i] = static_cast<std::uint64_t>(s);
    carry = static_cast<std::uint64_t>(s >> 64);
  }
  r.limbs_.back() = carry;
  r.trim();
  return r;
}

BigUint BigUint::sub(const BigUint& o) const {
  if (*this < o) throw std::logic_error("BigUint::sub: negative result");
  BigUint r = *this;
  std::uint64_t borrow = 0;
  for (std::size_t i = 0; i < r.limbs_.size(); ++i) {
    const std::uint64_t b = (i < o.limbs_.size() ? o.limbs_[i] : 0);
    const std::uint64_t d1 = r.limbs_[i] - b;
    const std::uint64_t borrow1 = r.limbs_[i] < b;
    const std::uint64_t d2 = d1 - borrow;
    const std::uint64_t borrow2 = d1 < borrow;
    r.limbs_[i] = d2;
    borrow = borrow1 | borrow2;
  }
  r.trim();
  return r;
}

BigUint BigUint::mul(const BigUint& o) const {
  if (is_zero() || o.is_zero()) return {};
  BigUint r;
  r.limbs_.assign(limbs_.size() + o.limbs_.size(), 0);
  for (std::size_t i = 0; i < limbs_.size(); ++i) {
    std::uint64_t carry = 0;
    for (std::size_t j = 0; j < o.limbs_.size(); ++j) {
      const u128 t = static_cast<u128>(limbs_[i]) * o.limbs_[j] + r.limbs_[i + j] + carry;
      r.limbs_[i + j] = static_cast<std::uint64_t>(t);
      carry = static_cast<std::uint64_t>(t >> 64);
    }
    r.limbs_[i + o.limbs_.size()] = carry;
  }
  r.trim();
  return r;
}

BigUint BigUint::divmod(std::uint64_t d, std::uint64_t& rem) const {
  if (d == 0) throw std::logic_error("BigUint::divmod: division by zero");
  BigUint q;
  q.limbs_.assign(limbs_.size(), 0);
  u128 r = 0;
  for (std::size_t i = limbs_.size(); i-- > 0;) {
    const u128 cur = (r << 64) | limbs_[i];  // r < d < 2^64, so cur < 2^128
    q.limbs_[i] = static_cast<std::uint64_t>(cur / d);
    r = cur % d;
  }
  rem = static_cast<std::uint64_t>(r);
  q.trim();
  return q;
}

std::strong_ordering BigUint::operator<=>(const BigUint& o) const {
  if (limbs_.size() != o.limbs_.size()) return limbs_.size() <=> o.limbs_.size();
  for (std::size_t i = limbs_.size(); i-- > 0;) {
    if (limbs_[i] != o.limbs_[i]) return limbs_[i] <=> o.limbs_[i];
  }
  return std::strong_ordering::equal;
}

}  // namespace mpsim::detail
