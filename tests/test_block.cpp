// Block formats (HBFP, MX, NVFP4): the grammar, hand-checked vectors, properties every block
// quantization must have (idempotence, representable outputs, the flush-to-zero that the
// spacing predicts, unbiased stochastic rounding), MXINT8 against HBFP8 with every difference
// explained, the layouts (axis, tiles, padding), and the fast path against the reference, bit
// for bit, over formats, modes, layouts, threads and SIMD levels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mpsim/block.h"
#include "mpsim/quantize.h"
#include "mpsim/quantize_array.h"
#include "bit_helpers.h"
#include "../src/format/block_scale.h"

namespace mpsim::test {
namespace {

std::vector<double> ref1d(const std::string& fmt, std::vector<double> x, BlockStats* st = nullptr,
                          std::vector<BlockScale>* scales = nullptr, std::uint64_t seed = 0) {
  const BlockFormat f = BlockFormat::parse(fmt);
  std::vector<double> out(x.size());
  BlockQuantizeOptions o;
  o.key.seed = seed;
  const BlockStats s = quantize_blocks_ref(f, x.data(), out.data(), BlockLayout{{x.size()}, -1}, o, scales);
  if (st) *st = s;
  return out;
}

// ---- grammar ----------------------------------------------------------------------------

TEST(BlockFormat, CanonicalStringsRoundTrip) {
  const std::pair<const char*, const char*> cases[] = {
      {"hbfp6/64", "hbfp6/64"},
      {"HBFP4/16", "hbfp4/16"},
      {"hbfp4/16:rule=max", "hbfp4/16"},
      {"hbfp4/16:rule=floor", "hbfp4/16"},  // one rule: floor(log2 amax) - emax_elem, emax_elem = -1
      {"hbfp8/576:exp=10", "hbfp8/576"},
      {"hbfp8/576:exp=8:rule=ceil", "hbfp8/576:exp=8:rule=ceil"},
      {"hbfp4/64:tile@sr", "hbfp4/64:tile@sr"},
      {"hbfp4/64:tile:rule=ceil:exp=6@rz", "hbfp4/64:exp=6:rule=ceil:tile@rz"},
      {"mxfp4", "mxfp4"},
      {"mxfp4:rule=max", "mxfp4"},
      {"mxfp8_e4m3:rule=ceil", "mxfp8_e4m3:rule=ceil"},
      {"MXFP8_E5M2@sr8", "mxfp8_e5m2@sr8"},
      {"mxfp6_e3m2:exp=8", "mxfp6_e3m2"},
      {"mxfp6_e2m3:exp=6", "mxfp6_e2m3:exp=6"},
      {"mxint8@rne", "mxint8"},
      {"nvfp4", "nvfp4"},
      {"nvfp4@sr", "nvfp4@sr"},
  };
  for (const auto& [in, canon] : cases) {
    const BlockFormat f = BlockFormat::parse(in);
    EXPECT_EQ(f.to_string(), canon) << in;
    EXPECT_EQ(BlockFormat::parse(f.to_string()), f) << in;
    EXPECT_TRUE(BlockFormat::is_block_format(in)) << in;
  }
  EXPECT_FALSE(BlockFormat::is_block_format("e4m3fn"));
  EXPECT_FALSE(BlockFormat::is_block_format("q8.13"));
}

TEST(BlockFormat, Properties) {
  const BlockFormat h = BlockFormat::parse("hbfp6/64");
  EXPECT_EQ(h.element_bits(), 6);
  EXPECT_EQ(h.block_size(), 64);
  EXPECT_EQ(h.scale_bits(), 10);
  EXPECT_EQ(h.scale_min(), -511);
  EXPECT_EQ(h.scale_max(), 511);
  EXPECT_EQ(h.element_emax(), -1);
  EXPECT_EQ(h.element_max(), 31.0 / 32);
  EXPECT_DOUBLE_EQ(h.bits_per_element(), 6 + 10.0 / 64);
  const BlockFormat t = BlockFormat::parse("hbfp4/64:tile");
  EXPECT_EQ(t.tile(), 8);
  const BlockFormat m = BlockFormat::parse("mxfp8_e4m3");
  EXPECT_EQ(m.block_size(), 32);
  EXPECT_EQ(m.element_emax(), 8);
  EXPECT_EQ(m.element_max(), 448.0);
  EXPECT_EQ(m.scale_min(), -127);
  EXPECT_EQ(m.scale_max(), 127);
  EXPECT_DOUBLE_EQ(m.bits_per_element(), 8.25);
  EXPECT_EQ(BlockFormat::parse("mxfp4").element_emax(), 2);
  EXPECT_EQ(BlockFormat::parse("mxfp6_e3m2").element_emax(), 4);
  EXPECT_EQ(BlockFormat::parse("mxfp6_e2m3").element_emax(), 2);
  EXPECT_EQ(BlockFormat::parse("mxfp8_e5m2").element_emax(), 15);
  EXPECT_EQ(BlockFormat::parse("mxint8").element_emax(), 0);
  EXPECT_EQ(BlockFormat::parse("mxint8").element_max(), 127.0 / 64);
  EXPECT_DOUBLE_EQ(BlockFormat::parse("nvfp4").bits_per_element(), 4.5);
  // The HBFP element grid: k * 2^-(K-1), k < 2^(K-1), signed; step and max checked via describe.
  const FormatInfo e = describe(BlockFormat::parse("hbfp4/16").element_format());
  EXPECT_EQ(e.max_finite, 0.875);
  EXPECT_EQ(e.min_subnormal, 0.125);
  EXPECT_TRUE(BlockFormat::parse("hbfp25/16").fits(Carrier::fp32));
  EXPECT_FALSE(BlockFormat::parse("hbfp26/16").fits(Carrier::fp32));
  EXPECT_TRUE(BlockFormat::parse("hbfp26/16").fits(Carrier::fp64));
}

TEST(BlockFormat, ImpossibleCombinationsAreErrors) {
  const std::pair<const char*, const char*> bad[] = {
      {"hbfp4/0", "block size 0"},
      {"hbfp4/12:tile", "not a square"},
      {"mxfp4:tile", "not a square"},
      {"hbfp1/16", "2..54 bits"},
      {"hbfp60/16", "2..54 bits"},
      {"hbfp4", "hbfpK/N"},
      {"hbfp4/x", "not a block size"},
      {"hbfp4/16:exp=0", "1..10 bits"},
      {"hbfp4/16:exp=11", "1..10 bits"},
      {"hbfp4/16:rule=odd", "rule=max"},
      {"hbfp4/16:rule=max:rule=ceil", "twice"},
      {"hbfp4/16:tile:tile", "twice"},
      {"hbfp4/16:foo", "unknown option"},
      {"hbfp4/16:", "empty option"},
      {"hbfp4/16@hyst", "hyst"},
      {"hbfp4/16@sr0", "hbfp4/16@sr0"},
      {"hbfp4/16@rne@rz", "more than one"},
      {"mxfp9", "unknown block format"},
      {"mxfp4/64", "only hbfp"},
      {"nvfp4:exp=8", "no options"},
      {"hbfp4/16 ", "whitespace"},
  };
  for (const auto& [text, what] : bad) {
    try {
      (void)BlockFormat::parse(text);
      ADD_FAILURE() << text << " parsed";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << text << ": " << e.what();
    }
  }
  // Elements wider than the carrier.
  const BlockFormat wide = BlockFormat::parse("hbfp30/16");
  std::vector<float> x(16, 0.5f), y(16);
  EXPECT_THROW(quantize_blocks(wide, x.data(), y.data(), BlockLayout{{16}, -1}), FormatError);
  EXPECT_THROW(quantize_blocks_ref(wide, x.data(), y.data(), BlockLayout{{16}, -1}), FormatError);
  // Layouts that do not fit the tensor.
  const BlockFormat h = BlockFormat::parse("hbfp4/4");
  EXPECT_THROW(quantize_blocks(h, x.data(), y.data(), BlockLayout{{4, 4}, 2}), std::invalid_argument);
  EXPECT_THROW(quantize_blocks(h, x.data(), y.data(), BlockLayout{{4, 4}, -3}), std::invalid_argument);
  EXPECT_THROW(quantize_blocks(h, x.data(), y.data(), BlockLayout{{}, -1}), std::invalid_argument);
  EXPECT_THROW(quantize_blocks_ref(BlockFormat::parse("hbfp4/4:tile"), x.data(), y.data(), BlockLayout{{16}, -1}),
               std::invalid_argument);
  // Element formats refuse block strings with a pointer to the right parser.
  EXPECT_THROW((void)Format::parse("hbfp4/16"), FormatError);
}

// ---- hand-checked vectors ---------------------------------------------------------------

TEST(BlockHand, HbfpSharedExponentZero) {
  // amax 0.85: e = floor(log2 0.85) + 1 = 0; spacing 2^-(K-1).
  const std::vector<double> x = {0.3, -0.7, 0.85, 0.05};
  EXPECT_EQ(ref1d("hbfp4/4", x), (std::vector<double>{0.25, -0.75, 0.875, 0}));
  // HBFP6, spacing 2^-5: 9.6 -> 10, -22.4 -> -22, 27.2 -> 27, 1.6 -> 2.
  EXPECT_EQ(ref1d("hbfp6/4", x), (std::vector<double>{10 / 32.0, -22 / 32.0, 27 / 32.0, 2 / 32.0}));
  // HBFP8, spacing 2^-7: 38.4 -> 38, -89.6 -> -90, 108.8 -> 109, 6.4 -> 6.
  EXPECT_EQ(ref1d("hbfp8/4", x), (std::vector<double>{38 / 128.0, -90 / 128.0, 109 / 128.0, 6 / 128.0}));
  std::vector<BlockScale> sc;
  ref1d("hbfp4/4", x, nullptr, &sc);
  ASSERT_EQ(sc.size(), 1u);
  EXPECT_EQ(sc[0].exponent, 0);
  EXPECT_EQ(sc[0].code, 511u);  // bias 2^9 - 1
}

TEST(BlockHand, MxSaturation) {
  const std::vector<double> x = {1.9, 0.1, -0.33, 0};
  // MXFP8 E4M3: X = floor(log2 1.9) - 8 = -8; 486.4 clips to 448; 25.6 -> 26; -84.48 -> -88.
  std::vector<BlockScale> sc;
  BlockStats st;
  EXPECT_EQ(ref1d("mxfp8_e4m3", x, &st, &sc), (std::vector<double>{1.75, 0.1015625, -0.34375, 0}));
  EXPECT_EQ(sc[0].exponent, -8);
  EXPECT_EQ(sc[0].code, 119u);  // E8M0: X + 127
  EXPECT_EQ(st.clipped, 1u);
  // MXFP4 E2M1: X = -2; 7.6 clips to 6; 0.4 -> 0.5; -1.32 -> -1.5.
  EXPECT_EQ(ref1d("mxfp4", x, &st, &sc), (std::vector<double>{1.5, 0.125, -0.375, 0}));
  EXPECT_EQ(sc[0].exponent, -2);
  EXPECT_EQ(st.clipped, 1u);
  // rule=ceil picks the smallest scale that does not clip: 1.9 <= 448 * 2^-7 and 6 * 2^-1.
  EXPECT_EQ(ref1d("mxfp8_e4m3:rule=ceil", x, nullptr, &sc)[0], 1.875);  // 243.2 -> 240 (step 16)
  EXPECT_EQ(sc[0].exponent, -7);
  EXPECT_EQ(ref1d("mxfp4:rule=ceil", x, nullptr, &sc)[0], 2.0);  // 3.8 -> 4
  EXPECT_EQ(sc[0].exponent, -1);
}

TEST(BlockHand, ZeroNanPaddingAndClamping) {
  BlockStats st;
  std::vector<BlockScale> sc;
  // A zero block keeps its zeros (signs too) and gets scale code 0.
  auto z = ref1d("mxfp4", std::vector<double>(32, 0.0), &st, &sc);
  EXPECT_EQ(st.zero_blocks, 1u);
  EXPECT_EQ(sc[0].code, 0u);
  EXPECT_EQ(ref1d("hbfp4/2", {-0.0, 0.0})[0], 0.0);
  EXPECT_TRUE(std::signbit(ref1d("hbfp4/2", {-0.0, 0.0})[0]));
  // NaN or infinity inside a block: the scale is NaN and the whole block decodes as NaN;
  // the next block is untouched.
  auto n = ref1d("hbfp4/2", {1.0, NAN, 0.5, 0.25}, &st, &sc);
  EXPECT_TRUE(std::isnan(n[0]) && std::isnan(n[1]));
  EXPECT_EQ(n[2], 0.5);
  EXPECT_EQ(st.nan_blocks, 1u);
  EXPECT_TRUE(sc[0].nan);
  EXPECT_EQ(sc[0].code, 1023u);
  auto inf = ref1d("mxfp8_e5m2", {INFINITY, 1.0}, &st, &sc);
  EXPECT_TRUE(std::isnan(inf[0]) && std::isnan(inf[1]));
  EXPECT_EQ(sc[0].code, 255u);
  // Padding: 5 values in blocks of 4: the second block holds one value (and three zeros).
  auto p = ref1d("hbfp4/4", {0.3, -0.7, 0.85, 0.05, 0.3}, &st, &sc);
  EXPECT_EQ(st.blocks, 2u);
  EXPECT_EQ(p[4], 0.3125);  // e = floor(log2 0.3) + 1 = -1, step 2^-4: 4.8 -> 5
  EXPECT_EQ(sc[1].exponent, -1);
  // A shared exponent clamped to its range: exp=4 holds -7..7, so 1000 saturates to
  // 0.875 * 2^7 = 112 and 0.001 (e = -9) is rounded with the step of e = -7, 2^-10:
  // 1.024 steps -> 1.
  auto c = ref1d("hbfp4/1:exp=4", {1000.0, 0.001}, &st, &sc);
  EXPECT_EQ(c[0], 112.0);
  EXPECT_EQ(c[1], std::ldexp(1.0, -10));
  EXPECT_EQ(st.scale_clamped, 2u);
  EXPECT_EQ(sc[0].exponent, 7);
  EXPECT_EQ(sc[1].exponent, -7);
}

TEST(BlockHand, Tiles) {
  // hbfp4/4:tile: 2 x 2 tiles over a 3 x 3 matrix (padded to 4 x 4).
  const BlockFormat f = BlockFormat::parse("hbfp4/4:tile");
  const std::vector<double> x = {0.9, 0.1, 8.0,  //
                                 0.2, 0.3, 0.05,  //
                                 0.04, 0.02, 0.6};
  std::vector<double> y(9);
  std::vector<BlockScale> sc;
  quantize_blocks_ref(f, x.data(), y.data(), BlockLayout{{3, 3}, -1}, {}, &sc);
  ASSERT_EQ(sc.size(), 4u);
  EXPECT_EQ(sc[0].exponent, 0);   // {0.9, 0.1, 0.2, 0.3}
  EXPECT_EQ(sc[1].exponent, 4);   // {8, 0.05}
  EXPECT_EQ(sc[2].exponent, -4);  // {0.04, 0.02}: step 2^-7, 5.12 -> 5, 2.56 -> 3
  EXPECT_EQ(sc[3].exponent, 0);   // {0.6}
  EXPECT_EQ(y, (std::vector<double>{0.875, 0.125, 8.0, 0.25, 0.25, 0.0, 0.0390625, 0.0234375, 0.625}));
}

TEST(BlockHand, Nvfp4) {
  // Tensor scale s = 6 / 2688 (amax 6) in fp32; block scale e4m3fn(amax_b / 6 / s).
  std::vector<double> x(48, 0.0);
  x[0] = 6.0;
  x[1] = 1.1;
  x[2] = -0.2;
  x[16] = 0.3;
  x[17] = -0.05;
  x[32] = -1e-9;  // third block: 1e-9 / 6 / s is far below e4m3fn's smallest value, bs = 0
  x[33] = 1e-9;
  std::vector<BlockScale> sc;
  BlockStats st;
  const auto y = ref1d("nvfp4", x, &st, &sc);
  const double s = static_cast<double>(static_cast<float>(6.0 / 2688.0));
  ASSERT_EQ(sc.size(), 3u);
  EXPECT_EQ(sc[0].value, s * 448);
  EXPECT_EQ(y[0], 6 * s * 448);  // within one fp32 rounding of 6
  EXPECT_EQ(y[1], 1.0 * s * 448);  // 1.1 / (s 448) = 1.1000..: e2m1 1
  EXPECT_EQ(y[2], -0.0);            // 0.2 / (s 448) < 0.25: flushed
  EXPECT_TRUE(std::signbit(y[2]));
  // Second block: amax 0.3 -> 0.3 / 6 / s = 22.4 -> e4m3fn 22 (step 2 in [16, 32)).
  EXPECT_EQ(sc[1].value, s * 22);
  EXPECT_EQ(y[16], quantize(0.3 / (s * 22), Format::parse("e2m1fn:sat")) * s * 22);
  // A block scale that underflows: the block becomes zeros with their signs, counted as a
  // clamped scale and as flushed elements.
  EXPECT_EQ(sc[2].value, 0.0);
  EXPECT_EQ(y[32], 0.0);
  EXPECT_TRUE(std::signbit(y[32]));
  EXPECT_FALSE(std::signbit(y[33]));
  EXPECT_EQ(st.scale_clamped, 1u);
  EXPECT_EQ(st.flushed, 3u);
}

// ---- properties -------------------------------------------------------------------------

const char* const kAll[] = {"hbfp4/16",   "hbfp6/64",   "hbfp8/32:rule=ceil", "hbfp3/8:exp=5", "hbfp12/16",
                            "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2",         "mxfp6_e2m3",    "mxfp4",
                            "mxint8",     "mxfp4:rule=ceil", "mxfp8_e4m3:exp=6"};

std::vector<double> random_tensor(std::size_t n, std::uint64_t seed, int spread = 12) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  std::uniform_int_distribution<int> e(-spread, spread);
  std::vector<double> x(n);
  for (auto& v : x) v = std::ldexp(u(g), e(g));
  return x;
}

TEST(BlockProperty, IdempotentAndRepresentable) {
  for (const char* name : kAll) {
    for (const char* mode : {"rne", "rz", "ru", "sr"}) {
      const BlockFormat f = BlockFormat::parse(std::string(name) + "@" + mode);
      const auto x = random_tensor(1000, 7);
      std::vector<double> q(x.size()), qq(x.size());
      std::vector<BlockScale> sc;
      quantize_blocks_ref(f, x.data(), q.data(), BlockLayout{{x.size()}, -1}, {}, &sc);
      quantize_blocks_ref(f, q.data(), qq.data(), BlockLayout{{x.size()}, -1});
      EXPECT_EQ(q, qq) << f.to_string() << ": q(q(x)) != q(x)";
      // Every output is scale * (a value of the element format).
      const Format elem = f.element_format();
      for (std::size_t i = 0; i < q.size(); ++i) {
        const BlockScale& s = sc[i / static_cast<std::size_t>(f.block_size())];
        const double e = std::ldexp(q[i], -s.exponent);
        EXPECT_NO_THROW((void)encode(elem, e)) << f.to_string() << " element " << e;
        EXPECT_LE(std::fabs(e), f.element_max()) << f.to_string();
      }
    }
  }
}

TEST(BlockProperty, SmallElementsFlushAsTheSpacingPredicts) {
  // One large element sets e = 0 (amax 0.9); HBFP-K's spacing is 2^-(K-1), so under rne a
  // magnitude below half of it becomes zero and one above half does not.
  for (int K : {4, 6, 8}) {
    const double step = std::ldexp(1.0, -(K - 1));
    std::vector<double> x = {0.9};
    std::size_t expect_flushed = 0;
    for (double frac : {0.1, 0.3, 0.49, 0.51, 0.8, 1.3, 2.2}) {
      x.push_back(frac * step);
      x.push_back(-frac * step);
      if (frac < 0.5) expect_flushed += 2;
    }
    BlockStats st;
    const auto y = ref1d("hbfp" + std::to_string(K) + "/64", x, &st);
    EXPECT_EQ(st.flushed, expect_flushed) << K;
    for (std::size_t i = 1; i < x.size(); ++i) {
      EXPECT_EQ(y[i] == 0, std::fabs(x[i]) < step / 2) << K << " " << x[i];
    }
    // The same small values alone form a block with its own, smaller exponent: the step
    // shrinks with it and fewer of them flush, exactly those below half the new step.
    std::vector<double> small(x.begin() + 1, x.end());
    const double step2 = std::ldexp(1.0, std::ilogb(2.2 * step) + 1 - (K - 1));
    std::size_t expect2 = 0;
    for (double v : small) expect2 += std::fabs(v) < step2 / 2;
    BlockStats st2;
    ref1d("hbfp" + std::to_string(K) + "/64", small, &st2);
    EXPECT_EQ(st2.flushed, expect2) << K;
    EXPECT_LT(st2.flushed, expect_flushed) << K;
  }
  // MX: E2M1 elements at X = floor(log2 amax) - 2 hold magnitudes down to 0.5 * 2^X; below a
  // quarter of 2^X they flush.
  std::vector<double> x = {6.0, 0.24, 0.26, -0.24};
  BlockStats st;
  const auto y = ref1d("mxfp4", x, &st);  // X = 0
  EXPECT_EQ(y, (std::vector<double>{6.0, 0.0, 0.5, -0.0}));
  EXPECT_EQ(st.flushed, 2u);
}

TEST(BlockProperty, StochasticRoundingIsUnbiased) {
  // Each element's mean over many seeds converges to the element itself (sr rounds up with
  // probability equal to the discarded fraction); 6 standard errors of slack.
  for (const char* name : {"hbfp4/16@sr", "mxfp4@sr", "mxint8@sr", "nvfp4@sr"}) {
    const auto x = random_tensor(32, 3, 3);
    const int trials = 4000;
    std::vector<double> sum(x.size(), 0.0), step(x.size(), 0.0);
    for (int t = 0; t < trials; ++t) {
      const auto q = ref1d(name, x, nullptr, nullptr, static_cast<std::uint64_t>(t) + 1);
      for (std::size_t i = 0; i < x.size(); ++i) sum[i] += q[i];
    }
    // The two neighbours around each element, from the directed modes of the same format.
    const std::string base = std::string(name).substr(0, std::string(name).find('@'));
    const auto lo = ref1d(base + "@rd", x), hi = ref1d(base + "@ru", x);
    std::size_t checked = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (lo[i] == hi[i] && lo[i] != x[i]) continue;  // clipped at the block maximum: biased by design
      ++checked;
      const double mean = sum[i] / trials;
      const double p = hi[i] == lo[i] ? 0 : (x[i] - lo[i]) / (hi[i] - lo[i]);
      const double se = (hi[i] - lo[i]) * std::sqrt(p * (1 - p) / trials);
      EXPECT_LE(std::fabs(mean - x[i]), 6 * se + 1e-15) << name << " element " << i << " x=" << x[i];
    }
    EXPECT_GE(checked, x.size() - 2) << name;
  }
}

TEST(BlockProperty, MxInt8AgainstHbfp8) {
  // Same spacing per block: HBFP8's e = floor(log2 amax) + 1 with 7 magnitude bits gives step
  // 2^(e-7); MXINT8's X = floor(log2 amax) with elements k * 2^-6 gives 2^(X-6): equal. The
  // results agree except (1) two's complement reaches -128 * step where sign-magnitude stops at
  // -127 * step, and (2) the scale ranges differ (E8M0: X >= -127; HBFP's 10-bit exponent
  // reaches -511), which matters for blocks below 2^-127.
  auto x = random_tensor(32 * 400, 11, 30);
  // Blocks whose largest element is negative and just below a power of two in magnitude.
  for (std::size_t b = 0; b < 400; b += 7) x[b * 32] = -std::ldexp(2 - std::ldexp(1.0, -9), 31 + static_cast<int>(b % 5));  // above every random magnitude (< 2^31)
  std::vector<BlockScale> sm, sh;
  const auto m = ref1d("mxint8", x, nullptr, &sm);
  const auto h = ref1d("hbfp8/32", x, nullptr, &sh);
  std::size_t diff_neg = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::size_t b = i / 32;
    EXPECT_EQ(sm[b].exponent - 6, sh[b].exponent - 7);
    if (m[i] == h[i]) continue;
    const double step = std::ldexp(1.0, sm[b].exponent - 6);
    EXPECT_EQ(m[i], -128 * step) << i;
    EXPECT_EQ(h[i], -127 * step) << i;
    ++diff_neg;
  }
  EXPECT_GT(diff_neg, 0u) << "the sample should reach the -128 code";
  // (2): a block of tiny values.
  const std::vector<double> tiny = {std::ldexp(0.75, -135), std::ldexp(0.3125, -135)};
  BlockStats st;
  const auto ht = ref1d("hbfp8/32", tiny);
  EXPECT_EQ(ht, tiny);  // e = -135, step 2^-142: both exact
  const auto mt = ref1d("mxint8", tiny, &st);
  EXPECT_EQ(mt, (std::vector<double>{0.0, 0.0}));  // X = -136 clamps to -127: step 2^-133
  EXPECT_EQ(st.scale_clamped, 1u);
}

// ---- layouts ----------------------------------------------------------------------------

TEST(BlockLayoutTest, AxisBlocksEqualTransposedRows) {
  // Blocks along axis 0 of an R x C matrix are the blocks along the last axis of its transpose.
  const BlockFormat f = BlockFormat::parse("hbfp4/8");
  const std::size_t R = 21, C = 5;
  const auto x = random_tensor(R * C, 5);
  std::vector<double> xt(R * C), y(R * C), yt(R * C);
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t c = 0; c < C; ++c) xt[c * R + r] = x[r * C + c];
  quantize_blocks_ref(f, x.data(), y.data(), BlockLayout{{R, C}, 0});
  quantize_blocks_ref(f, xt.data(), yt.data(), BlockLayout{{C, R}, 1});
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t c = 0; c < C; ++c) EXPECT_EQ(y[r * C + c], yt[c * R + r]);
}

// ---- fast == reference ------------------------------------------------------------------

template <typename T>
void expect_fast_equals_ref(const BlockFormat& f, const std::vector<double>& x64, const BlockLayout& layout,
                            std::uint64_t seed, int threads, bool in_place) {
  std::vector<T> x(x64.begin(), x64.end());
  std::vector<T> want(x.size()), got(x.size());
  BlockQuantizeOptions o;
  o.key = {seed, 3};
  o.first_index = seed * 1000;
  o.threads = threads;
  std::vector<BlockScale> scales_want, scales_got;
  const BlockStats sw = quantize_blocks_ref(f, x.data(), want.data(), layout, o, &scales_want);
  BlockStats sg;
  if (in_place) {
    got = x;
    sg = quantize_blocks(f, got.data(), got.data(), layout, o, &scales_got);
  } else {
    sg = quantize_blocks(f, x.data(), got.data(), layout, o, &scales_got);
  }
  // The scales the fast path reports (the block GEMM reads them) are the reference's.
  ASSERT_EQ(scales_got.size(), scales_want.size()) << f.to_string();
  for (std::size_t b = 0; b < scales_want.size(); ++b) {
    const BlockScale &w = scales_want[b], &h = scales_got[b];
    const bool same = w.nan == h.nan && w.code == h.code && w.exponent == h.exponent &&
                      (w.nan ? std::isnan(h.value) : bits_of(w.value) == bits_of(h.value));
    EXPECT_TRUE(same) << f.to_string() << " block " << b << ": fast scale code " << h.code << " exponent " << h.exponent
                      << " value " << h.value << ", reference code " << w.code << " exponent " << w.exponent << " value " << w.value;
    if (!same) break;
  }
  std::size_t bad = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (bits_of(got[i]) != bits_of(want[i]) && bad++ < 3) {
      ADD_FAILURE() << f.to_string() << (sizeof(T) == 4 ? " fp32" : " fp64") << " element " << i << " x=" << x[i]
                    << " fast=" << got[i] << " ref=" << want[i] << " threads=" << threads;
    }
  }
  EXPECT_EQ(sg.blocks, sw.blocks) << f.to_string();
  EXPECT_EQ(sg.zero_blocks, sw.zero_blocks) << f.to_string();
  EXPECT_EQ(sg.nan_blocks, sw.nan_blocks) << f.to_string();
  EXPECT_EQ(sg.clipped, sw.clipped) << f.to_string();
  EXPECT_EQ(sg.flushed, sw.flushed) << f.to_string();
  EXPECT_EQ(sg.scale_clamped, sw.scale_clamped) << f.to_string();
}

// A tensor with everything the fast path must get right: wide magnitudes, zero blocks,
// NaN/inf, exact ties of the element grid, tiny values.
std::vector<double> hard_tensor(std::size_t n, std::uint64_t seed, bool fp64_extremes) {
  std::mt19937_64 g(seed);
  auto x = random_tensor(n, seed, 40);
  std::uniform_int_distribution<std::size_t> pos(0, n - 1);
  std::uniform_int_distribution<int> kind(0, 9);
  for (std::size_t k = 0; k < n / 16 + 1; ++k) {
    const std::size_t i = pos(g);
    switch (kind(g)) {
      case 0: x[i] = NAN; break;
      case 1: x[i] = (k & 1) ? INFINITY : -INFINITY; break;
      case 2: x[i] = 0.0; break;
      case 3: x[i] = -0.0; break;
      case 4: x[i] = std::ldexp(1.0, -130); break;  // fp32 subnormal range
      case 5: x[i] = std::ldexp(3.0, -8) * ((k & 1) ? 1 : -1); break;  // ties of small grids
      case 6: x[i] = 1e30; break;
      case 7: x[i] = fp64_extremes ? 1e300 : 3e38; break;
      case 8: x[i] = fp64_extremes ? 1e-300 : 1e-44; break;
      default: x[i] = 0.5 + std::ldexp(1.0, -4); break;
    }
  }
  // A run of zeros long enough to make zero blocks.
  for (std::size_t i = n / 3; i < std::min(n, n / 3 + 80); ++i) x[i] = 0.0;
  return x;
}

const char* const kFastFormats[] = {"hbfp4/16", "hbfp6/64", "hbfp8/32:rule=ceil", "hbfp3/8:exp=5", "hbfp16/16",
                                    "hbfp4/16:tile", "hbfp6/64:tile", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2",
                                    "mxfp6_e2m3", "mxfp4", "mxint8", "mxfp4:rule=ceil", "mxfp8_e4m3:exp=6",
                                    "nvfp4"};
const char* const kFastModes[] = {"rne", "rna", "rz", "ru", "rd", "ro", "sr", "sr8"};

// NVFP4's element rounding for the deterministic modes (block_scale.h,
// nvfp4_element_deterministic) against the reference's integer quantizer, bit for bit: scales
// with 28 significant bits (an fp32 tensor scale times an e4m3fn block scale), every grid
// point of e2m1 times the scale and its two fp64 neighbours, every midpoint (the ties), the
// binade edges 2S, 4S, 6S, 8S, values between, beyond the top, far below the smallest step,
// zeros, infinities and NaN, of both signs.
TEST(BlockFast, Nvfp4DeterministicElementsEqualTheReference) {
  std::mt19937_64 g(4);
  std::uniform_int_distribution<std::uint32_t> mant(0, (1u << 23) - 1);
  std::uniform_int_distribution<int> ex(-30, 30), bs_code(1, 0x7E);
  std::uniform_real_distribution<double> u(0.0, 10.0);
  const Format e4m3fn = Format::parse("e4m3fn");
  std::size_t checked = 0;
  for (int c = 0; c < 300; ++c) {
    const double ts = std::ldexp(1.0 + mant(g) * 0x1p-23, ex(g));  // an fp32 tensor scale
    const double S = c == 0 ? 0.0 : ts * decode(e4m3fn, bs_code(g)).value;
    std::vector<double> xs;
    for (int z = 0; z <= 16; ++z) {
      const double v = z * 0.5 * S;  // multiples of the smallest step, every grid point and tie
      xs.insert(xs.end(), {v, std::nextafter(v, 0.0), std::nextafter(v, INFINITY)});
    }
    for (int i = 0; i < 40; ++i) xs.push_back(u(g) * S);
    xs.insert(xs.end(), {1e-300, S * 1e-20, 1e300, INFINITY, NAN, 0.0});
    for (const double x0 : xs) {
      for (const double x : {x0, -x0}) {
        for (const RoundMode mode : {RoundMode::rne, RoundMode::rna, RoundMode::rz, RoundMode::ru, RoundMode::rd,
                                     RoundMode::ro}) {
          Rounding r;
          r.mode = mode;
          const double want = detail::nvfp4_element(x, S, r, 0, RandomKey{});
          const double got = detail::nvfp4_element_deterministic(x, S, mode);
          ASSERT_TRUE(bits_of(got) == bits_of(want) || (std::isnan(got) && std::isnan(want)))
              << std::hexfloat << "x " << x << " S " << S << " mode " << static_cast<int>(mode) << ": got " << got
              << " want " << want;
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 100000u);
}

TEST(BlockFast, EqualsReferenceEverywhere) {
  std::mt19937_64 g(99);
  std::uniform_int_distribution<std::size_t> dim(1, 70);
  int cases = 0;
  for (const char* name : kFastFormats) {
    for (const char* mode : kFastModes) {
      const BlockFormat f = BlockFormat::parse(std::string(name) + "@" + mode);
      for (int rep = 0; rep < 3; ++rep) {
        // 1-D, 2-D along either axis, 3-D along the middle axis; tiles on 2-D and 3-D.
        BlockLayout layout;
        switch (rep) {
          case 0:
            layout = f.tile() ? BlockLayout{{dim(g), dim(g) * 3}, -1} : BlockLayout{{dim(g) * 13}, -1};
            break;
          case 1: layout = {{dim(g), dim(g)}, f.tile() ? -1 : static_cast<int>(g() % 2)}; break;
          default: layout = {{1 + g() % 3, dim(g), 1 + g() % 9}, f.tile() ? -1 : 1}; break;
        }
        std::size_t n = 1;
        for (auto d : layout.shape) n *= d;
        const auto x = hard_tensor(n, g(), false);
        const std::uint64_t seed = g() % 1000;
        expect_fast_equals_ref<float>(f, x, layout, seed, 1, rep == 2);
        expect_fast_equals_ref<double>(f, hard_tensor(n, seed, true), layout, seed, 1, rep == 1);
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 16 * 8 * 3);
}

TEST(BlockFast, ThreadsAndLevelsGiveTheSameBits) {
  // Tensors large enough for several bands per thread.
  for (const char* name : {"hbfp4/64@sr", "mxfp8_e4m3@rne", "mxfp4@sr", "hbfp6/16:tile@sr", "nvfp4@sr"}) {
    const BlockFormat f = BlockFormat::parse(name);
    for (const BlockLayout& layout : {BlockLayout{{64, 1000}, -1}, BlockLayout{{300, 96}, 0}, BlockLayout{{200, 200}, -1}}) {
      std::size_t n = 1;
      for (auto d : layout.shape) n *= d;
      const auto x = hard_tensor(n, 17, false);
      for (SimdLevel level : available_simd_levels()) {
        LevelGuard guard(level);
        for (int threads : {1, 2}) expect_fast_equals_ref<float>(f, x, layout, 5, threads, threads == 2);
      }
    }
  }
}

TEST(BlockFast, ElementIndicesWrappingPast2To64) {
  // Random bits keyed by first_index + i modulo 2^64, also where that wraps inside a chunk.
  for (const char* name : {"hbfp4/64@sr", "mxfp4@sr8", "nvfp4@sr"}) {
    const BlockFormat f = BlockFormat::parse(name);
    const auto x64 = random_tensor(4096, 9);
    std::vector<float> x(x64.begin(), x64.end()), want(x.size()), got(x.size());
    BlockQuantizeOptions o;
    o.key = {3, 4};
    o.first_index = ~std::uint64_t{0} - 1000;
    quantize_blocks_ref(f, x.data(), want.data(), BlockLayout{{x.size()}, -1}, o);
    quantize_blocks(f, x.data(), got.data(), BlockLayout{{x.size()}, -1}, o);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < x.size(); ++i) bad += bits_of(got[i]) != bits_of(want[i]);
    EXPECT_EQ(bad, 0u) << name;
  }
}

TEST(BlockFast, VectorizedReport) {
  EXPECT_TRUE(quantize_blocks_is_vectorized(BlockFormat::parse("hbfp4/64")));
  EXPECT_TRUE(quantize_blocks_is_vectorized(BlockFormat::parse("mxfp4")));
  EXPECT_TRUE(quantize_blocks_is_vectorized(BlockFormat::parse("mxint8")));
  EXPECT_FALSE(quantize_blocks_is_vectorized(BlockFormat::parse("nvfp4")));
}

}  // namespace
}  // namespace mpsim::test
