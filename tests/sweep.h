// Comparing the reference quantizer with the table oracle over many fp32 bit patterns.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mpsim/quantize.h"
#include "oracle.h"

namespace mpsim::test {

inline constexpr RoundMode kDeterministicModes[] = {RoundMode::rne, RoundMode::rna, RoundMode::rz,
                                                     RoundMode::ru,  RoundMode::rd,  RoundMode::ro};

inline float float_from_bits(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// Runs pattern(i) for i in [0, count) through every deterministic mode; reports the first
// mismatches with enough detail to reproduce them.
template <class Pattern>
void expect_matches_oracle(const std::string& fmt, std::uint64_t count, Pattern pattern) {
  for (RoundMode mode : kDeterministicModes) {
    const Format f = Format::parse(fmt).with_rounding({mode, 0});
    const TableOracle oracle(f);
    std::uint64_t bad = 0;
    std::vector<std::string> examples;
#pragma omp parallel for schedule(static) reduction(+ : bad)
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(count); ++i) {
      const double x = pattern(static_cast<std::uint64_t>(i));
      const double got = quantize(x, f);
      const double want = oracle.round(x, mode);
      if (!same(got, want)) {
        ++bad;
#pragma omp critical
        if (examples.size() < 5) {
          char buf[160];
          std::snprintf(buf, sizeof buf, "x=%a got=%a want=%a", x, got, want);
          examples.emplace_back(buf);
        }
      }
    }
    EXPECT_EQ(bad, 0u) << f.to_string() << ": " << (examples.empty() ? "" : examples.front())
                       << (examples.size() > 1 ? " | " + examples[1] : "");
  }
}

// A fixed, well spread sample of n fp32 patterns: stride 2^32/n with a hashed offset.
inline std::uint32_t sample_pattern(std::uint64_t i, std::uint64_t n) {
  const std::uint64_t stride = (std::uint64_t{1} << 32) / n;
  std::uint64_t h = i * 0x9E3779B97F4A7C15ull;
  h ^= h >> 29;
  return static_cast<std::uint32_t>(i * stride + (h % stride));
}

}  // namespace mpsim::test
