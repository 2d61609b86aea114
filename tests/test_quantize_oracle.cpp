// The reference quantizer against the independent table oracle (oracle.h): a fixed sample of
// 2^24 fp32 bit patterns for every 8-bit preset and every deterministic rounding mode, and a
// stratified sample (every value, every tie, their fp32 neighbours, random patterns) for the
// wider formats and the option variants. The full 2^32 sweep is test_quantize_exhaustive.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "mpsim/quantize.h"
#include "oracle.h"
#include "sweep.h"

namespace mpsim::test {
namespace {

constexpr std::uint64_t kSample = std::uint64_t{1} << 24;

class EightBitPreset : public ::testing::TestWithParam<const char*> {};

TEST_P(EightBitPreset, SampleOfFp32PatternsMatchesOracle) {
  expect_matches_oracle(GetParam(), kSample, [](std::uint64_t i) {
    return static_cast<double>(float_from_bits(sample_pattern(i, kSample)));
  });
}

INSTANTIATE_TEST_SUITE_P(Presets, EightBitPreset,
                         ::testing::Values("e5m2", "e4m3", "e4m3fn", "e4m3fnuz", "e5m2fnuz", "e8m0fnu"),
                         [](const auto& p) { return std::string(p.param); });

// Every value of the format, every midpoint between neighbours, and the fp32 numbers right
// next to each of them, both signs; then random fp32 patterns. Ties and boundaries included.
std::vector<double> stratified_inputs(const std::string& fmt, std::uint64_t random_count) {
  const TableOracle oracle(Format::parse(fmt));
  const auto& v = oracle.values();
  std::vector<double> in;
  auto around = [&](double x) {
    const float f = static_cast<float>(x);
    if (static_cast<double>(f) != x) {  // not an fp32 number: keep the fp64 value only
      in.push_back(x);
      return;
    }
    in.push_back(x);
    in.push_back(std::nextafter(f, INFINITY));
    in.push_back(std::nextafter(f, -INFINITY));
  };
  for (std::size_t i = 0; i < v.size(); ++i) {
    around(v[i]);
    if (i + 1 < v.size()) around((v[i] + v[i + 1]) / 2);
  }
  const double max = v.back(), prev = v[v.size() - 2];
  around(max + (max - prev) / 2);  // the overflow tie
  around(max + (max - prev));
  around(v[1] / 2);  // half the smallest positive value
  around(v[1] / 4);
  around(std::ldexp(1.0, -149));  // fp32 subnormals
  around(std::ldexp(1.0, -130));
  around(std::ldexp(1.0, -126));
  in.push_back(INFINITY);
  in.push_back(NAN);
  in.push_back(0.0);
  std::mt19937_64 gen(12345);
  for (std::uint64_t i = 0; i < random_count; ++i) in.push_back(static_cast<double>(float_from_bits(static_cast<std::uint32_t>(gen()))));
  // Random fp64 values around the format's range (exact fp64 inputs, not fp32).
  std::uniform_real_distribution<double> mant(1.0, 2.0);
  std::uniform_int_distribution<int> ex(std::ilogb(v[1]) - 4, std::ilogb(max) + 2);
  for (std::uint64_t i = 0; i < random_count / 4; ++i) in.push_back(std::ldexp(mant(gen), ex(gen)));
  const std::size_t n = in.size();
  for (std::size_t i = 0; i < n; ++i) in.push_back(-in[i]);
  return in;
}

class WideOrVariant : public ::testing::TestWithParam<const char*> {};

TEST_P(WideOrVariant, StratifiedSampleMatchesOracle) {
  const std::vector<double> in = stratified_inputs(GetParam(), 1 << 18);
  expect_matches_oracle(GetParam(), in.size(), [&](std::uint64_t i) { return in[i]; });
}

INSTANTIATE_TEST_SUITE_P(
    Formats, WideOrVariant,
    ::testing::Values("e5m2", "e4m3", "e4m3fn", "e4m3fnuz", "e5m2fnuz", "e8m0fnu",  // ties and boundaries too
                      "fp16", "bf16", "tf32", "dlfloat16", "e3m2fn", "e2m3fn", "e2m1fn", "fp4r4",
                      // the FPGA multiplier-input variants and option combinations
                      "e5m2:cfg2", "e5m2:cfg4", "e5m2:cfg5", "e5m2:cfg6", "e4m3:cfg2", "e4m3:cfg4", "e4m3:cfg5",
                      "e4m3:cfg6", "e4m3fn:sat", "e5m2:sat", "e4m3fnuz:sat", "e2m1fn:sat", "e6m5", "e6m5:cfg5",
                      "e5m10:cfg5", "e8m7:cfg6", "e3m4", "e4m3:bias=4", "e5m2:sp=fn", "e5m2:sp=none",
                      "e4m0", "e5m0:sp=fn", "e3m1:sub=flushin", "fp4r4:sat", "e8m0fnu:sat"),
    [](const auto& p) {
      std::string s = p.param;
      for (char& c : s) {
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      }
      return s;
    });

}  // namespace
}  // namespace mpsim::test
