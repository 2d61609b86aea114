// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel Random Numbers: As Easy as 1, 2, 3",
// SC'11). Written from the paper's description; tests/test_philox.cpp checks it against the
// known-answer vectors of the Random123 distribution.
#include "mpsim/rng.h"

namespace mpsim {
namespace {

// The round multipliers and the Weyl-sequence key increments (golden ratio and sqrt(3) - 1
// as 32-bit fractions) are the published constants; any other choice is a different
// generator, and the known-answer vectors would catch it.
constexpr std::uint32_t kMul0 = 0xD2511F53u;
constexpr std::uint32_t kMul1 = 0xCD9E8D57u;
constexpr std::uint32_t kWeyl0 = 0x9E3779B9u;
constexpr std::uint32_t kWeyl1 = 0xBB67AE85u;
constexpr int kRounds = 10;

struct HiLo {
  std::uint32_t hi;
  std::uint32_t lo;
};

// The full 64-bit product of two 32-bit words, split in halves. A 64-bit multiply is exact
// and the compiler maps it to a single widening multiply (and vectorises it).
constexpr HiLo mulhilo(std::uint32_t a, std::uint32_t b) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  return {static_cast<std::uint32_t>(p >> 32), static_cast<std::uint32_t>(p)};
}

constexpr std::array<std::uint32_t, 4> philox_round(const std::array<std::uint32_t, 4>& x,
                                                    const std::array<std::uint32_t, 2>& k) {
  const HiLo p0 = mulhilo(kMul0, x[0]);
  const HiLo p1 = mulhilo(kMul1, x[2]);
  return {p1.hi ^ x[1] ^ k[0], p1.lo, p0.hi ^ x[3] ^ k[1], p0.lo};
}

constexpr std::array<std::uint32_t, 4> philox(std::array<std::uint32_t, 4> x,
                                              std::array<std::uint32_t, 2> k) {
  // The key is bumped between rounds, not before the first or after the last: round r uses
  // key + r * W (mod 2^32).
  x = philox_round(x, k);
  for (int r = 1; r < kRounds; ++r) {
    k[0] += kWeyl0;
    k[1] += kWeyl1;
    x = philox_round(x, k);
  }
  return x;
}

// A compile-time known answer (all-zero counter and key, from the Random123 kat_vectors), so
// a broken edit fails the build and not only the tests.
static_assert(philox({0, 0, 0, 0}, {0, 0}) ==
              std::array<std::uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});

}  // namespace

std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> counter,
                                           std::array<std::uint32_t, 2> key) {
  return philox(counter, key);
}

std::uint32_t random_word(const RandomKey& key, std::uint64_t index, std::uint32_t word) {
  // Four consecutive elements share one block per word number: a SIMD kernel that needs only
  // word 0 (nearly always) runs one Philox block per four elements, not per element.
  const std::uint64_t group = index >> 2;
  const std::array<std::uint32_t, 4> counter = {
      static_cast<std::uint32_t>(group), static_cast<std::uint32_t>(group >> 32), key.stream, word};
  const std::array<std::uint32_t, 2> k = {static_cast<std::uint32_t>(key.seed),
                                          static_cast<std::uint32_t>(key.seed >> 32)};
  return philox(counter, k)[index & 3];
}

}  // namespace mpsim
