// The full sweep: all 2^32 fp32 bit patterns, every 8-bit preset, every deterministic rounding
// mode, against the table oracle. Long (hours on 2 cores): runs under the ctest label
// "exhaustive" (ctest -L exhaustive), not in CI.
#include <gtest/gtest.h>

#include "sweep.h"

namespace mpsim::test {
namespace {

class AllPatterns : public ::testing::TestWithParam<const char*> {};

TEST_P(AllPatterns, EveryFp32PatternMatchesOracle) {
  expect_matches_oracle(GetParam(), std::uint64_t{1} << 32, [](std::uint64_t i) {
    return static_cast<double>(float_from_bits(static_cast<std::uint32_t>(i)));
  });
}

INSTANTIATE_TEST_SUITE_P(Presets, AllPatterns,
                         ::testing::Values("e5m2", "e4m3", "e4m3fn", "e4m3fnuz", "e5m2fnuz", "e8m0fnu", "e3m2fn", "e2m3fn",
                                           "e2m1fn", "fp4r4", "e5m2:cfg5", "fp16", "bf16"),
                         [](const auto& p) {
                           std::string s = p.param;
                           for (char& c : s) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return s;
                         });

}  // namespace
}  // namespace mpsim::test
