// Philox4x32-10 against the reference known answers, and the properties random_word promises:
// a pure function of (seed, stream, index, word) whose bits look uniform.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <set>
#include <tuple>

#include "mpsim/rng.h"

namespace {

using Block = std::array<std::uint32_t, 4>;
using Key = std::array<std::uint32_t, 2>;

struct Kat {
  Block counter;
  Key key;
  Block expected;
};

// Known-answer vectors of the Random123 distribution (D. E. Shaw Research), lines
// "philox4x32 10 CTR[4] KEY[2] EXPECTED[4]" of its kat_vectors file. The first three (zero,
// all-ones and pi-digit inputs) are those quoted in DEShawResearch/Random123-Boost,
// libs/random/test/test_philox.cpp ("cut-and-pasted from the kat_vectors file in the original
// Random123 distribution"); the last three are from the longer generated list in
// girving/random123-manual, examples/kat_vectors. They pin the multipliers, the key schedule
// and the word order, none of which a self-consistency test can see.
const Kat kKats[] = {
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000},
     {0x00000000, 0x00000000},
     {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    {{0x00000001, 0x00000000, 0x00000000, 0x00000000},
     {0x00000001, 0x00000000},
     {0xac08141b, 0xdfc5ccbe, 0x79c07a47, 0xa7f66093}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0x00000000, 0xffffffff},
     {0x08f7720c, 0x845ee9e0, 0x502ccd3d, 0xa9a00e27}},
    {{0x452821e6, 0x38d01377, 0xbe5466cf, 0x34e90c6c},
     {0x00000000, 0x80000000},
     {0x94ca5566, 0x14924b2f, 0x28214292, 0x59faeaee}},
};

TEST(Philox, KnownAnswerVectors) {
  for (const Kat& kat : kKats) {
    EXPECT_EQ(mpsim::philox4x32_10(kat.counter, kat.key), kat.expected)
        << std::hex << "counter " << kat.counter[0] << ' ' << kat.counter[1] << ' '
        << kat.counter[2] << ' ' << kat.counter[3] << " key " << kat.key[0] << ' ' << kat.key[1];
  }
}

// random_word is defined as a view of Philox blocks; check the mapping word by word so that a
// change of layout (which would silently change every stochastic rounding) fails here.
TEST(Philox, RandomWordIsTheDocumentedBlockLayout) {
  const mpsim::RandomKey key{0x0123456789abcdefULL, 0xfeedbeefu};
  const std::uint64_t indices[] = {0, 1, 3, 4, 0xffffffffULL, 0x100000000ULL, 0x3fffffffcULL,
                                   0xfedcba9876543210ULL, ~0ULL};
  for (const std::uint64_t index : indices) {
    const std::uint64_t group = index / 4;
    for (std::uint32_t word = 0; word < 5; ++word) {
      const Block block = mpsim::philox4x32_10(
          {static_cast<std::uint32_t>(group), static_cast<std::uint32_t>(group >> 32), key.stream,
           word},
          {0x89abcdefu, 0x01234567u});
      EXPECT_EQ(mpsim::random_word(key, index, word), block[index % 4])
          << "index " << index << " word " << word;
    }
  }
}

TEST(Philox, RandomWordIsPure) {
  const mpsim::RandomKey key{42, 7};
  for (std::uint64_t i = 0; i < 1000; ++i) {
    for (std::uint32_t w = 0; w < 6; ++w) {
      // Interleave calls for other arguments between the two evaluations: a function with
      // hidden state would drift.
      const std::uint32_t first = mpsim::random_word(key, i, w);
      (void)mpsim::random_word({43, 7}, i + 1, w + 1);
      EXPECT_EQ(mpsim::random_word(key, i, w), first);
    }
  }
  // A copy of the key, made later, gives the same bits: nothing depends on call history.
  const mpsim::RandomKey copy = key;
  EXPECT_EQ(mpsim::random_word(copy, 123, 2), mpsim::random_word(key, 123, 2));
}

TEST(Philox, EveryArgumentChangesTheWord) {
  const mpsim::RandomKey base{0x5eed, 3};
  const std::uint64_t index = 1000;
  const std::uint32_t word = 1;
  const std::uint32_t x = mpsim::random_word(base, index, word);
  // Neighbouring values of each argument, including the high halves of the 64-bit ones that a
  // truncation to 32 bits would lose.
  EXPECT_NE(mpsim::random_word(base, index + 1, word), x);
  EXPECT_NE(mpsim::random_word(base, index + (1ULL << 32), word), x);
  EXPECT_NE(mpsim::random_word(base, index, word + 1), x);
  EXPECT_NE(mpsim::random_word(base, index, word + 4), x);
  EXPECT_NE(mpsim::random_word({base.seed + 1, base.stream}, index, word), x);
  EXPECT_NE(mpsim::random_word({base.seed + (1ULL << 32), base.stream}, index, word), x);
  EXPECT_NE(mpsim::random_word({base.seed, base.stream + 1}, index, word), x);
}

TEST(Philox, NoCollisionsOverAGridOfArguments) {
  // 4 seeds x 4 streams x 256 indices x 8 words = 32768 words. Among that many uniform 32-bit
  // words the chance of any collision is about 2^-18, and the set is fixed, so the check is
  // deterministic: a real collision here means arguments alias one another.
  std::set<std::uint32_t> seen;
  std::size_t count = 0;
  for (std::uint64_t seed : {0ULL, 1ULL, 1ULL << 32, ~0ULL}) {
    for (std::uint32_t stream : {0u, 1u, 2u, 0xffffffffu}) {
      for (std::uint64_t index = 0; index < 256; ++index) {
        for (std::uint32_t w = 0; w < 8; ++w) {
          seen.insert(mpsim::random_word({seed, stream}, index, w));
          ++count;
        }
      }
    }
  }
  EXPECT_EQ(seen.size(), count);
}

// Pearson's chi-square over the top 4 bits (16 equiprobable buckets, 15 degrees of freedom).
// Stochastic rounding reads the words from the top, so the top bits matter most. The inputs
// are fixed, so the statistic is a fixed number; the bound is the 0.1% critical value, which
// a good generator clears with room to spare and a biased one (a stuck bit, a counter leaking
// through) misses by orders of magnitude.
double chi_square_top4(const mpsim::RandomKey& key, std::uint32_t word, std::uint64_t n) {
  std::array<std::uint64_t, 16> counts{};
  for (std::uint64_t i = 0; i < n; ++i) {
    ++counts[mpsim::random_word(key, i, word) >> 28];
  }
  const double expected = static_cast<double>(n) / 16.0;
  double chi2 = 0.0;
  for (const std::uint64_t c : counts) {
    const double d = static_cast<double>(c) - expected;
    chi2 += d * d / expected;
  }
  return chi2;
}

TEST(Philox, TopBitsAreUniform) {
  constexpr double kChi2Df15P001 = 37.697;
  // Consecutive indices are the least random-looking inputs a counter-based generator gets.
  const double chi2 = chi_square_top4({20240601, 0}, 0, 1'000'000);
  EXPECT_LT(chi2, kChi2Df15P001);
  // A later word of the block and another stream, for the other output lanes.
  EXPECT_LT(chi_square_top4({7, 5}, 3, 250'000), kChi2Df15P001);
}

}  // namespace
