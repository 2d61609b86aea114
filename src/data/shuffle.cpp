// Deterministic shuffling: bounded integers and epoch permutations from Philox words.
#include <numeric>
#include <stdexcept>

#include "mpsim/data.h"
#include "mpsim/rng.h"

namespace mpsim {

std::uint64_t data_random_index(std::uint64_t epoch, std::uint64_t i) {
  constexpr std::uint64_t kLimit = std::uint64_t{1} << 32;
  if (i >= kLimit || epoch >= kLimit) {
    throw std::out_of_range("data random index: sample " + std::to_string(i) + " at epoch " + std::to_string(epoch) +
                            " does not fit the 32-bit fields (epoch * 2^32 + sample)");
  }
  return (epoch << 32) | i;
}

std::uint64_t uniform_below(const RandomKey& key, std::uint64_t index, std::uint64_t n) {
  constexpr std::uint64_t kWords = std::uint64_t{1} << 32;
  if (n == 0 || n > kWords) {
    throw std::invalid_argument("uniform_below: range " + std::to_string(n) + " is not in [1, 2^32]");
  }
  // Lemire (2019), "Fast random integer generation in an interval": x * n / 2^32 maps the
  // 2^32 words onto [0, n); the low half of the product tells which words belong to an
  // over-represented value, and rejecting those (2^32 mod n of them) makes the result exactly
  // uniform. The threshold is computed only when the cheap test cannot accept.
  std::uint32_t word = 0;
  for (;;) {
    const std::uint64_t m = std::uint64_t{random_word(key, index, word)} * n;
    const std::uint64_t low = m & (kWords - 1);
    if (low >= n || low >= (kWords - n) % n) return m >> 32;
    ++word;
  }
}

std::vector<std::size_t> shuffled_order(std::size_t n, std::uint64_t seed, std::uint64_t epoch) {
  std::vector<std::size_t> p(n);
  std::iota(p.begin(), p.end(), std::size_t{0});
  const RandomKey key{seed, data_stream::shuffle};
  // Fisher-Yates from the top: position i takes a uniformly chosen element of [0, i]. Each
  // draw depends only on (seed, epoch, i), so the permutation is fixed by them alone.
  for (std::size_t i = n; i-- > 1;) {
    const std::uint64_t j = uniform_below(key, data_random_index(epoch, i), std::uint64_t{i} + 1);
    std::swap(p[i], p[j]);
  }
  return p;
}

}  // namespace mpsim
