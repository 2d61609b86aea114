// The block dot product of block-format MAC inputs (docs/mac.md section 7): the spec grammar,
// hand-computed examples (exact block sums, a saturating and a wrapping block accumulator,
// NaN blocks, tiles), an MPFR oracle for the whole reduction, and the fast GEMM against the
// reference GEMM bit for bit over formats, outer formats, accumulator widths, transposes,
// threads and fp32/fp64 operands.
#include <gtest/gtest.h>
#include <mpfr.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "bit_helpers.h"
#include "mpsim/block.h"
#include "mpsim/gemm.h"
#include "mpsim/layers.h"
#include "mpsim/mac.h"
#include "mpsim/quantize.h"
#include "../src/mac/block_dot.h"

namespace mpsim {
namespace {

using test::bits_of;

double dot1(const std::string& mac, const std::vector<double>& a, const std::vector<double>& b, double bias = 0) {
  return dot_ref(MacSpec::parse(mac), a.size(), a.data(), 1, b.data(), 1, bias).value;
}

// ---- the grammar ----------------------------------------------------------------------------

TEST(BlockMacSpec, ParsesAndPrintsCanonically) {
  const MacSpec s = MacSpec::parse("in=hbfp8/64");
  ASSERT_TRUE(s.block.has_value());
  EXPECT_EQ(s.to_string(), "in=hbfp8/64 bacc=auto outer=fp32");
  EXPECT_EQ(s.block->extent(), 64u);
  const char* const specs[] = {"in=hbfp8/64 bacc=auto outer=fp32", "a=mxfp8_e4m3 b=mxfp8_e5m2 bacc=24:wrap outer=bf16 out=fp16",
                               "in=mxfp4 bacc=10 outer=e6m5@rz", "in=nvfp4 bacc=auto outer=q8.13",
                               "in=hbfp6/16:tile bacc=auto outer=fp32@sr"};
  for (const char* text : specs) {
    const MacSpec p = MacSpec::parse(text);
    EXPECT_EQ(MacSpec::parse(p.to_string()), p) << text;
    EXPECT_EQ(p.to_string(), text);
  }
  EXPECT_EQ(MacSpec::parse("in=mxfp4 outer=fp32"), MacSpec::parse("in=mxfp4"));
  EXPECT_FALSE(MacSpec::parse("in=mxfp4 bacc=14") == MacSpec::parse("in=mxfp4"));
}

TEST(BlockMacSpec, AccumulatorWidthJustWideEnough) {
  // |element integer| <= max_int; the widest block sum is extent * max_a * max_b, plus a sign bit.
  const auto bits = [](const char* mac) { return MacSpec::parse(mac).block->bits_needed(); };
  EXPECT_EQ(bits("in=hbfp8/64"), 21);    // 127 * 127 * 64 = 1032256 < 2^20
  EXPECT_EQ(bits("in=hbfp4/16"), 11);    // 7 * 7 * 16 = 784 < 2^10
  EXPECT_EQ(bits("in=mxfp4"), 14);       // 12 * 12 * 32 = 4608 < 2^13
  EXPECT_EQ(bits("in=mxint8"), 21);      // 128 * 128 * 32 = 2^19: 20 bits of magnitude
  EXPECT_EQ(bits("in=mxfp6_e2m3"), 18);  // 60 * 60 * 32 = 115200 < 2^17
  EXPECT_EQ(bits("in=mxfp8_e4m3"), 42);  // (448 * 2^9)^2 * 32 ~ 2^40.6
  EXPECT_EQ(bits("in=mxfp8_e5m2"), 70);  // (57344 * 2^16)^2 * 32 ~ 2^68.6
  EXPECT_EQ(bits("in=nvfp4"), 13);       // 12 * 12 * 16 = 2304 < 2^12
  EXPECT_EQ(bits("a=hbfp8/16:tile b=hbfp4/16:tile"), 13);  // 4 x 4 tiles: 127 * 7 * 4 = 3556 < 2^12
}

TEST(BlockMacSpec, BadSpecsNameTheProblem) {
  const auto error = [](const char* text) -> std::string {
    try {
      MacSpec::parse(text);
    } catch (const MacSpecError& e) {
      return e.what();
    }
    return "(accepted)";
  };
  EXPECT_NE(error("in=hbfp8/64 acc=fp16").find("acc=fp16"), std::string::npos);
  EXPECT_NE(error("in=hbfp8/64 order=chunk8").find("do not apply"), std::string::npos);
  EXPECT_NE(error("in=hbfp8/64 prod=bf16").find("do not apply"), std::string::npos);
  EXPECT_NE(error("in=hbfp8/64 fused").find("fused"), std::string::npos);
  EXPECT_NE(error("a=hbfp8/64 b=fp32").find("both operands"), std::string::npos);
  EXPECT_NE(error("a=hbfp8/64 b=hbfp8/32").find("same run"), std::string::npos);
  EXPECT_NE(error("in=mxfp4@sr").find("deterministically"), std::string::npos);
  EXPECT_NE(error("in=mxfp4 bacc=1").find("2 .. 126"), std::string::npos);
  EXPECT_NE(error("in=mxfp4 bacc=200").find("2 .. 126"), std::string::npos);
  EXPECT_NE(error("in=mxfp4 bacc=auto:wrap").find("no meaning"), std::string::npos);
  EXPECT_NE(error("in=mxfp4 bacc=12:saturate").find("wrap"), std::string::npos);
  EXPECT_NE(error("in=fp32 bacc=24").find("block-format inputs"), std::string::npos);
  EXPECT_NE(error("qfp32 in=mxfp4 bacc=12").find("only in=, a=, b= and out="), std::string::npos);
  EXPECT_NE(error("qfp32 in=mxfp4 outer=bf16").find("only in=, a=, b= and out="), std::string::npos);
  EXPECT_NE(error("qfp32 in=hbfp32/16").find("in=hbfp32/16"), std::string::npos);
  EXPECT_EQ(MacSpec::parse("qfp32 in=mxfp4 out=bf16").to_string(), "qfp32 in=mxfp4 out=bf16");
  EXPECT_NE(error("in=hbfp8/0").find("in=hbfp8/0"), std::string::npos);
  EXPECT_NE(error("in=mxfp4 outer=mxfp4").find("only be a multiplier input"), std::string::npos);
}

// ---- hand-computed examples ------------------------------------------------------------------

TEST(BlockDotHand, HbfpBlockSumIsExactThenRoundedOnce) {
  // HBFP4, blocks of 4: [0.3, -0.7, 0.85, 0.05] has shared exponent 0 and spacing 2^-3, so it
  // is [0.25, -0.75, 0.875, 0] = [2, -6, 7, 0] * 2^-3; [1, 1, 1, 1] has exponent 1, spacing
  // 2^-2: [4, 4, 4, 4] * 2^-2. Block sum (2 - 6 + 7) * 4 = 12, times 2^-5: 0.375.
  EXPECT_EQ(dot1("in=hbfp4/4", {0.3, -0.7, 0.85, 0.05}, {1, 1, 1, 1}), 0.375);
  // Two blocks; the second, [0.5, 0, 0, 0] x [2^-30, 0, 0, 0], adds 2^-31 exactly in the
  // integer accumulator but is then lost in the fp32 outer sum (swamping across blocks),
  // while an fp64 outer keeps it.
  const std::vector<double> a = {0.3, -0.7, 0.85, 0.05, 0.5, 0, 0, 0}, b = {1, 1, 1, 1, std::ldexp(1.0, -30), 0, 0, 0};
  EXPECT_EQ(dot1("in=hbfp4/4", a, b), 0.375);
  EXPECT_EQ(dot1("in=hbfp4/4 outer=fp64", a, b), 0.375 + std::ldexp(1.0, -31));
  // The bias is the outer accumulator's first content.
  EXPECT_EQ(dot1("in=hbfp4/4", {0.3, -0.7, 0.85, 0.05}, {1, 1, 1, 1}, 1.0), 1.375);
}

TEST(BlockDotHand, NarrowBlockAccumulatorSaturatesOrWraps) {
  // [0.875, 0.875, 0.875, 0] is 7 * 2^-3 three times: products 49 * 2^-6, exact sum 147 * 2^-6.
  const std::vector<double> x = {0.875, 0.875, 0.875, 0};
  EXPECT_EQ(dot1("in=hbfp4/4", x, x), 147.0 / 64);
  EXPECT_EQ(dot1("in=hbfp4/4 bacc=8", x, x), 127.0 / 64);        // saturates at 2^7 - 1
  EXPECT_EQ(dot1("in=hbfp4/4 bacc=8:wrap", x, x), -109.0 / 64);  // 147 - 256
  EXPECT_EQ(dot1("in=hbfp4/4 bacc=4", x, x), 7.0 / 64);          // saturates after the first product
  // Saturation at every step, not at the end: 49 - 49 ... with a negative product in between.
  const std::vector<double> y = {0.875, -0.875, 0.875, 0};
  EXPECT_EQ(dot1("in=hbfp4/4 bacc=7", x, y), 49.0 / 64);  // 49, 0, 49: no step overflows
  EXPECT_EQ(dot1("in=hbfp4/4 bacc=6", x, y), 31.0 / 64);  // 31, -18, 31
  const MacResult r = dot_ref(MacSpec::parse("in=hbfp4/4 bacc=6"), 4, x.data(), 1, y.data(), 1);
  EXPECT_TRUE(r.flags.saturated);
}

TEST(BlockDotHand, MxScalesAndElements) {
  // MXFP4 (E2M1, blocks of 32, floor rule): [1.9, 0.1, -0.33, 0, ...] has scale 2^-2 and
  // elements [1.5, 0.125, -0.375, 0] (issue 4's example); against all ones (scale 2^0, 1.0):
  // 1.5 + 0.125 - 0.375 = 1.25, exact.
  std::vector<double> a(32, 0.0), ones(32, 1.0);
  a[0] = 1.9, a[1] = 0.1, a[2] = -0.33;
  EXPECT_EQ(dot1("in=mxfp4", a, ones), 1.25);
  // MXFP8 E4M3 of the same block: scale 2^-8, [1.75, 0.1015625, -0.34375, 0].
  EXPECT_EQ(dot1("in=mxfp8_e4m3", a, ones), 1.75 + 0.1015625 - 0.34375);
  // Mixed element formats: a in E4M3, b in E2M1.
  EXPECT_EQ(dot1("a=mxfp8_e4m3 b=mxfp4", a, ones), 1.75 + 0.1015625 - 0.34375);
}

TEST(BlockDotHand, NanBlocksAndZeroBlocks) {
  std::vector<double> a = {1, 2, 3, 4, 0, 0, 0, 0}, b = {1, 1, 1, 1, 5, 6, 7, 8};
  EXPECT_EQ(dot1("in=hbfp8/4", a, b), 10.0);  // the zero block adds +0
  a[5] = NAN;
  const MacResult r = dot_ref(MacSpec::parse("in=hbfp8/4"), 8, a.data(), 1, b.data(), 1);
  EXPECT_TRUE(std::isnan(r.value));  // a NaN block's scale is NaN: the block sum is NaN
  EXPECT_TRUE(r.flags.nan_input);
  a[5] = INFINITY;  // infinity inside a block makes it a NaN block as well
  EXPECT_TRUE(std::isnan(dot1("in=hbfp8/4", a, b)));
  // A block sum of zero is the integer 0, +0. Block sums 1 and -1 cancel in the outer adder:
  // +0, or -0 rounding toward minus infinity (IEEE 754's exact zero sum).
  EXPECT_FALSE(std::signbit(dot1("in=hbfp8/4 outer=fp32@rd", {1, -1, 0, 0}, {1, 1, 0, 0})));
  EXPECT_TRUE(std::signbit(dot1("in=hbfp8/2 outer=fp32@rd", {1, 0, -1, 0}, {1, 0, 1, 0})));
  EXPECT_FALSE(std::signbit(dot1("in=hbfp8/2 outer=fp32", {1, 0, -1, 0}, {1, 0, 1, 0})));
}

TEST(BlockDotHand, TilesShareScalesAcrossRows) {
  // hbfp4/16:tile: 4 x 4 tiles. Row 0 of A is small, row 1 large: in one tile they share the
  // large row's exponent and row 0's elements flush; as 1-D blocks row 0 keeps its own.
  const std::size_t m = 2, n = 1, k = 4;
  const std::vector<double> A = {0.01, 0.02, 0.03, 0.04, 4, 4, 4, 4}, B = {1, 1, 1, 1};
  std::vector<double> tiled(2), rows(2);
  gemm_ref(MacSpec::parse("in=hbfp4/16:tile"), GemmOp::nn, m, n, k, A.data(), k, B.data(), n, tiled.data(), n);
  gemm_ref(MacSpec::parse("in=hbfp4/4"), GemmOp::nn, m, n, k, A.data(), k, B.data(), n, rows.data(), n);
  EXPECT_EQ(tiled[0], 0.0);   // spacing 2^(3-3) = 1 in the tile: 0.01 .. 0.04 round to 0
  EXPECT_EQ(tiled[1], 16.0);  // 4 = 4 * 2^0
  EXPECT_NE(rows[0], 0.0);    // its own exponent: -4, spacing 2^-7
  EXPECT_EQ(rows[1], 16.0);
}

// ---- MPFR oracle ----------------------------------------------------------------------------

// The block dot product from its definition, sharing no code with src/mac: operands quantized
// by the block quantizer (the spec of block formats, tested on its own), every block's sum of
// element products computed exactly by MPFR, then added into an fp32 (or bf16) accumulator by
// MPFR's correctly rounded addition at that precision and exponent range.
double oracle_block_dot(const BlockFormat& fa, const BlockFormat& fb, std::vector<double> a, std::vector<double> b,
                        std::size_t L, int prec, double bias) {
  quantize_blocks_ref(fa, a.data(), a.data(), BlockLayout{{1, a.size()}, -1});
  quantize_blocks_ref(fb, b.data(), b.data(), BlockLayout{{1, b.size()}, -1});
  const mpfr_exp_t old_min = mpfr_get_emin(), old_max = mpfr_get_emax();
  mpfr_t exact, prod, total, tmp;
  mpfr_inits2(3000, exact, prod, tmp, static_cast<mpfr_ptr>(nullptr));
  mpfr_init2(total, prec);
  // fp32 and bf16 share the exponent range: smallest subnormal 2^(-126 - (prec - 1)).
  mpfr_set_emin(-126 - (prec - 1) + 1);
  mpfr_set_emax(128);
  int t = mpfr_set_d(total, bias, MPFR_RNDN);
  t = mpfr_subnormalize(total, t, MPFR_RNDN);
  for (std::size_t s = 0; s < a.size(); s += L) {
    mpfr_set_zero(exact, 1);
    for (std::size_t p = s; p < std::min(a.size(), s + L); ++p) {
      mpfr_set_d(prod, a[p], MPFR_RNDN);
      mpfr_mul_d(prod, prod, b[p], MPFR_RNDN);  // exact at 3000 bits
      mpfr_add(exact, exact, prod, MPFR_RNDN);  // exact
    }
    mpfr_set(tmp, total, MPFR_RNDN);
    mpfr_add(tmp, tmp, exact, MPFR_RNDN);  // exact
    t = mpfr_set(total, tmp, MPFR_RNDN);
    t = mpfr_subnormalize(total, t, MPFR_RNDN);
  }
  const double r = mpfr_get_d(total, MPFR_RNDN);
  mpfr_clears(exact, prod, total, tmp, static_cast<mpfr_ptr>(nullptr));
  mpfr_set_emin(old_min);
  mpfr_set_emax(old_max);
  return r;
}

TEST(BlockDotOracle, MatchesMpfrOnRandomBlocks) {
  std::mt19937_64 g(2026);
  const char* const formats[] = {"hbfp4/16", "hbfp8/64", "hbfp6/8:rule=ceil", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2",
                                 "mxfp6_e2m3", "mxfp4", "mxint8", "nvfp4"};
  int checked = 0;
  for (const char* name : formats) {
    const BlockFormat f = BlockFormat::parse(name);
    const std::size_t L = static_cast<std::size_t>(f.block_size());
    for (int rep = 0; rep < 40; ++rep) {
      const std::size_t k = 1 + g() % (4 * L + 5);
      // Magnitudes spread over many binades inside a block (swamping within and across blocks).
      std::normal_distribution<double> nd(0, 1);
      std::uniform_int_distribution<int> ex(-12, 12);
      std::vector<double> a(k), b(k);
      for (std::size_t p = 0; p < k; ++p) {
        a[p] = std::ldexp(nd(g), ex(g));
        b[p] = std::ldexp(nd(g), ex(g) / 3);
      }
      const double bias = rep % 3 == 0 ? std::ldexp(nd(g), ex(g)) : 0.0;
      for (const auto& [outer, prec] : {std::pair{"fp32", 24}, std::pair{"bf16", 8}}) {
        const std::string mac = std::string("in=") + name + " outer=" + outer;
        const double got = dot1(mac, a, b, bias);
        const double want = oracle_block_dot(f, f, a, b, L, prec, static_cast<double>(quantize(bias, Format::parse(outer))));
        EXPECT_EQ(bits_of(got), bits_of(want)) << mac << " k=" << k << " rep=" << rep;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 10 * 40 * 2);
}

// ---- fast GEMM == reference GEMM ----------------------------------------------------------

// A and B as stored, with leading dimensions one and two wider than their rows.
std::size_t lda_of(GemmOp op, std::size_t m, std::size_t k) { return (op == GemmOp::tn ? m : k) + 1; }
std::size_t ldb_of(GemmOp op, std::size_t n, std::size_t k) { return (op == GemmOp::nt ? k : n) + 2; }

template <typename T>
void expect_gemm_equals_ref(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k,
                            const std::vector<double>& A64, const std::vector<double>& B64, const std::vector<double>& bias,
                            int threads) {
  const std::size_t lda = lda_of(op, m, k), ldb = ldb_of(op, n, k);
  // The operands as T (fp32 operands are what training passes).
  std::vector<T> A(A64.begin(), A64.end()), B(B64.begin(), B64.end());
  std::vector<double> Ad(A.begin(), A.end()), Bd(B.begin(), B.end());
  std::vector<double> want(m * n);
  const BiasView bv{bias.data(), static_cast<std::ptrdiff_t>(n), 1};
  gemm_ref(spec, op, m, n, k, Ad.data(), lda, Bd.data(), ldb, want.data(), n, bv, MacRandom{7, 3});
  std::vector<T> got(m * n);
  GemmOptions o;
  o.bias = bv;
  o.random = MacRandom{7, 3};
  o.threads = threads;
  gemm(spec, op, m, n, k, A.data(), lda, B.data(), ldb, got.data(), n, o);
  int bad = 0;
  for (std::size_t i = 0; i < m * n; ++i) {
    const T w = static_cast<T>(want[i]);
    if (bits_of(got[i]) != bits_of(w) && !(std::isnan(got[i]) && std::isnan(w)) && bad++ < 3) {
      ADD_FAILURE() << spec.to_string() << " op " << static_cast<int>(op) << " " << m << "x" << n << "x" << k << " threads "
                    << threads << (sizeof(T) == 4 ? " fp32" : " fp64") << ": output " << i << " fast " << got[i] << " ref " << w;
    }
  }
}

std::vector<double> operand(std::size_t rows, std::size_t cols, std::mt19937_64& g, bool specials) {
  std::normal_distribution<double> nd(0, 1);
  std::uniform_int_distribution<int> ex(-6, 6);
  std::vector<double> v(rows * cols + 64);
  for (auto& x : v) x = std::ldexp(nd(g), ex(g));
  if (specials) {
    v[g() % v.size()] = NAN;
    v[g() % v.size()] = -INFINITY;
    for (std::size_t i = 0; i < std::min<std::size_t>(40, v.size()); ++i) v[v.size() / 2 + i - 20] = 0.0;
  }
  return v;
}

TEST(BlockGemm, FastEqualsReference) {
  std::mt19937_64 g(11);
  const char* const inputs[] = {"in=hbfp4/16", "in=hbfp8/64", "in=hbfp6/16:tile", "in=mxfp8_e4m3", "in=mxfp8_e5m2",
                                "in=mxfp6_e3m2", "in=mxfp6_e2m3", "in=mxfp4", "in=mxint8", "in=nvfp4",
                                "a=mxfp8_e4m3 b=mxfp8_e5m2", "a=hbfp8/32 b=mxfp4", "in=hbfp12/16:exp=6", "a=nvfp4 b=hbfp8/16"};
  const char* const tails[] = {"", " outer=bf16", " outer=e6m5@rz", " outer=fp32@rd out=fp16", " bacc=9:wrap",
                               " bacc=9", " outer=q8.13", " outer=fp32@sr", " outer=fp64"};
  int cases = 0;
  for (const char* in : inputs) {
    for (const char* tail : tails) {
      const MacSpec spec = MacSpec::parse(std::string(in) + tail);
      const GemmOp op = static_cast<GemmOp>(cases % 3);
      const std::size_t m = 1 + g() % 9, n = 1 + g() % 11, k = 1 + g() % 150;
      const auto A = operand(op == GemmOp::tn ? k : m, lda_of(op, m, k), g, cases % 4 == 0);
      const auto B = operand(op == GemmOp::nt ? n : k, ldb_of(op, n, k), g, cases % 5 == 1);
      const auto bias = operand(m, n, g, false);
      expect_gemm_equals_ref<float>(spec, op, m, n, k, A, B, bias, 1 + cases % 2);
      expect_gemm_equals_ref<double>(spec, op, m, n, k, A, B, bias, 2 - cases % 2);
      ++cases;
    }
  }
  EXPECT_EQ(cases, 14 * 9);
}

// The exact total + hi + lo rounded to odd at 53 bits, in MPFR: truncated toward zero, and the
// last bit set where that was inexact.
double round_to_odd_mpfr(double total, double hi, double lo) {
  mpfr_t x, r;
  mpfr_init2(x, 2400);
  mpfr_init2(r, 53);
  mpfr_set_d(x, total, MPFR_RNDN);
  mpfr_add_d(x, x, hi, MPFR_RNDN);  // exact at 2400 bits
  mpfr_add_d(x, x, lo, MPFR_RNDN);
  const int inexact = mpfr_set(r, x, MPFR_RNDZ);
  double d = mpfr_get_d(r, MPFR_RNDN);
  if (inexact != 0) d = std::bit_cast<double>(std::bit_cast<std::uint64_t>(d) | 1u);
  mpfr_clear(x);
  mpfr_clear(r);
  return d;
}

// NVFP4's block sums reach the outer sum as an exact pair hi + lo (gemm_block.cpp); the fast
// path's sum3_to_odd must round total + hi + lo to odd exactly. The cases where lo decides are
// those where total + hi is exact and short (hi and total both fp32 values of nearby binades,
// or total cancelling most of hi), so that a rounding into fp32 would look at lo alone.
TEST(BlockGemm, ThreeTermSumRoundsToOdd) {
  std::mt19937_64 g(8);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::uniform_int_distribution<int> ex(-40, 40), near(-3, 3), kind(0, 3);
  int decided_by_lo = 0;
  for (int c = 0; c < 200000; ++c) {
    const double hi = std::ldexp(u(g), ex(g));
    double h = kind(g) < 2 ? static_cast<double>(static_cast<float>(hi)) : hi;  // short or full hi
    if (h == 0) h = 1.0;
    // |lo| <= ulp(h) / 2, nonzero.
    const double ulp = std::ldexp(1.0, std::ilogb(h) - 52);
    double lo = ulp * 0.5 * u(g);
    if (lo == 0) lo = ulp / 4;
    double total = 0;
    switch (kind(g)) {
      case 0: total = static_cast<float>(std::ldexp(u(g), std::ilogb(h) + near(g))); break;  // nearby binade
      case 1: total = static_cast<float>(-h) + static_cast<float>(std::ldexp(u(g), std::ilogb(h) - 20)); break;  // cancelling
      case 2: total = static_cast<float>(std::ldexp(u(g), ex(g))); break;  // anywhere
      default: total = -h; break;  // exactly cancelling: the sum is lo
    }
    const double want = round_to_odd_mpfr(total, h, lo);
    const double got = detail::sum3_to_odd(total, h, lo);
    ASSERT_EQ(std::bit_cast<std::uint64_t>(got), std::bit_cast<std::uint64_t>(want))
        << std::hexfloat << "total " << total << " hi " << h << " lo " << lo;
    if (round_to_odd_mpfr(total, h, 0.0) != want) ++decided_by_lo;
  }
  // The sample must contain sums that the pair's lo decides (else it tests nothing about lo).
  EXPECT_GT(decided_by_lo, 1000);
  // The rare shape where the last error f decides: h just above 2^0, a small negative total
  // with bits below h's last place pulls the sum into the binade below (so TwoSum(total, h)
  // has an error e), and lo brings e + lo to within a tie of that binade's place, so that the
  // sum of the first two pieces is exact (g = 0) and only f is left.
  std::uniform_int_distribution<int> j(1, 64), tiny(-3, 3);
  std::uniform_real_distribution<double> frac(0.0, 1.0);
  for (int c = 0; c < 20000; ++c) {
    const double h = 1.0 + j(g) * 0x1p-52;
    const double total = -static_cast<double>(static_cast<float>((h - 1.0) + frac(g) * 0x1p-34));
    const double sum = total + h, bb = sum - total, e = (total - (sum - bb)) + (h - bb);
    const double place = std::ldexp(1.0, std::ilogb(sum) - 52);
    double lo = (place - e) + tiny(g) * 0x1p-106;
    if (lo == 0 || std::fabs(lo) > 0x1p-53) continue;
    const double want = round_to_odd_mpfr(total, h, lo);
    const double got = detail::sum3_to_odd(total, h, lo);
    ASSERT_EQ(std::bit_cast<std::uint64_t>(got), std::bit_cast<std::uint64_t>(want))
        << std::hexfloat << "total " << total << " hi " << h << " lo " << lo;
  }
}

// NVFP4 beside a wide hbfp operand: the hbfp block sum v (53 bits) times NVFP4's block factor
// (448 / 2 = 7 2^5) needs 56 bits, so v F is not exact in fp64 and such a block must take the
// reference. A = [224, 2688]: tensor scale 1, block scale 448, elements 1/2 and 6 (n = 1, 12);
// B's block holds v 2^-60 alone (hbfp54 keeps its 53 bits), v = (Z - 1) / 7 with Z a 24-bit
// number times 2^32: the exact block value is (Z - 1) 2^-55, just below an fp32 value, so
// rounding down gives its predecessor, while a rounded v F (= Z) would give Z 2^-55 itself.
TEST(BlockGemm, Nvfp4BesideWideHbfpKeepsEveryBit) {
  std::uint64_t Z = 0;
  for (std::uint64_t c = 0; c < 64; ++c) {
    const std::uint64_t z = ((std::uint64_t{1} << 23) + c) << 32;
    if ((z - 1) % 7 == 0) {
      Z = z;
      break;
    }
  }
  ASSERT_NE(Z, 0u);
  const std::uint64_t v = (Z - 1) / 7;
  ASSERT_TRUE(v >= (std::uint64_t{1} << 52) && v < (std::uint64_t{1} << 53));
  const MacSpec spec = MacSpec::parse("a=nvfp4 b=hbfp54/16 outer=fp32@rd");
  std::vector<double> A(16, 0.0), B(16, 0.0);
  A[0] = 224.0;
  A[1] = 2688.0;
  B[0] = std::ldexp(static_cast<double>(v), -60);
  double want = 0, got = 0;
  gemm_ref(spec, GemmOp::nn, 1, 1, 16, A.data(), 16, B.data(), 1, &want, 1);
  const double exact_above = std::ldexp(static_cast<double>(Z), -60 + 5);  // Z 2^-55: an fp32 value
  EXPECT_EQ(want, static_cast<double>(std::nextafter(static_cast<float>(exact_above), 0.0f)));
  gemm(spec, GemmOp::nn, 1, 1, 16, A.data(), 16, B.data(), 1, &got, 1);
  EXPECT_EQ(got, want);
}

TEST(BlockGemm, TinyBlockSumsUnderDirectedRounding) {
  // Block sums far below the outer accumulator's last bit: their exact sum with the total needs
  // more than fp64's 53 bits, so only a correct single rounding (the fast path's round-to-odd
  // step) moves a directed rounding off the total. Hand check: 1 + 2^-60 rounds up to
  // 1 + 2^-23 in fp32@ru and stays 1 in fp32@rd.
  EXPECT_EQ(dot1("in=hbfp8/4 outer=fp32@ru", {std::ldexp(1.0, -30), 0, 0, 0}, {std::ldexp(1.0, -30), 0, 0, 0}, 1.0),
            1.0 + std::ldexp(1.0, -23));
  EXPECT_EQ(dot1("in=hbfp8/4 outer=fp32@rd", {std::ldexp(1.0, -30), 0, 0, 0}, {std::ldexp(1.0, -30), 0, 0, 0}, 1.0), 1.0);
  std::mt19937_64 g(21);
  int cases = 0;
  for (const char* mac : {"in=hbfp8/16 outer=fp32@ru", "in=mxfp8_e4m3 outer=fp32@rd", "in=mxfp4 outer=bf16@rz",
                          "in=hbfp6/8 outer=e6m5@ru", "in=mxint8 outer=fp32@rna", "in=mxfp8_e5m2 outer=fp32@ro",
                          // NVFP4: block sums times the product of two fp32 tensor scales (up to 68 bits,
                          // an exact pair hi + lo whose lo decides these roundings)
                          "in=nvfp4 outer=fp32@ru", "in=nvfp4 outer=fp32@rd", "a=nvfp4 b=hbfp8/16 outer=bf16@ro",
                          "a=hbfp6/16 b=nvfp4 outer=fp32@rz"}) {
    const MacSpec spec = MacSpec::parse(mac);
    for (int rep = 0; rep < 4; ++rep) {
      const GemmOp op = static_cast<GemmOp>(rep % 3);
      const std::size_t m = 1 + g() % 7, n = 1 + g() % 9, k = 1 + g() % 120;
      auto A = operand(op == GemmOp::tn ? k : m, lda_of(op, m, k), g, false);
      auto B = operand(op == GemmOp::nt ? n : k, ldb_of(op, n, k), g, false);
      for (auto& x : A) x = std::ldexp(x, -24);
      for (auto& x : B) x = std::ldexp(x, -24);
      auto bias = operand(m, n, g, false);
      for (auto& x : bias) x = std::ldexp(x, 6);
      expect_gemm_equals_ref<float>(spec, op, m, n, k, A, B, bias, 1);
      expect_gemm_equals_ref<double>(spec, op, m, n, k, A, B, bias, 2);
      ++cases;
    }
  }
  EXPECT_EQ(cases, 40);
}

TEST(BlockGemm, TransposesAgreeAndThreadsChangeNothing) {
  std::mt19937_64 g(5);
  const std::size_t m = 29, n = 61, k = 200;  // large enough for two threads to share
  const auto A = operand(m, k, g, false), B = operand(k, n, g, false);
  // A^T and B^T stored explicitly.
  std::vector<double> At(k * m), Bt(n * k);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t p = 0; p < k; ++p) At[p * m + i] = A[i * k + p];
  for (std::size_t p = 0; p < k; ++p)
    for (std::size_t j = 0; j < n; ++j) Bt[j * k + p] = B[p * n + j];
  for (const char* mac : {"in=mxfp8_e4m3", "in=hbfp6/16:tile bacc=12:wrap outer=bf16", "in=nvfp4"}) {
    const MacSpec spec = MacSpec::parse(mac);
    std::vector<double> nn(m * n), nt(m * n), tn(m * n), two(m * n);
    GemmOptions o;
    o.threads = 1;
    gemm(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, nn.data(), n, o);
    gemm(spec, GemmOp::nt, m, n, k, A.data(), k, Bt.data(), k, nt.data(), n, o);
    gemm(spec, GemmOp::tn, m, n, k, At.data(), m, B.data(), n, tn.data(), n, o);
    o.threads = 2;
    gemm(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, two.data(), n, o);
    for (std::size_t i = 0; i < m * n; ++i) {
      ASSERT_EQ(bits_of(nn[i]), bits_of(nt[i])) << mac << " output " << i;
      ASSERT_EQ(bits_of(nn[i]), bits_of(tn[i])) << mac << " output " << i;
      ASSERT_EQ(bits_of(nn[i]), bits_of(two[i])) << mac << " output " << i;
    }
  }
}

TEST(BlockGemm, DotRefIsTheOneRowGemm) {
  // For 1-D blocks a GEMM output is the dot product of its row and column as dot_ref computes it.
  std::mt19937_64 g(8);
  const std::size_t m = 3, n = 4, k = 100;
  const auto A = operand(m, k, g, false), B = operand(k, n, g, false);
  for (const char* mac : {"in=hbfp8/64", "in=mxfp6_e2m3 outer=bf16", "a=mxfp8_e5m2 b=mxint8 bacc=30:wrap"}) {
    const MacSpec spec = MacSpec::parse(mac);
    std::vector<double> C(m * n);
    gemm_ref(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, C.data(), n);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j)
        EXPECT_EQ(bits_of(C[i * n + j]), bits_of(dot_ref(spec, k, A.data() + i * k, 1, B.data() + j, static_cast<std::ptrdiff_t>(n), 0.0,
                                                       {}, i * n + j).value))
            << mac;
  }
}

// ---- the qfp32 fast mode with block formats -------------------------------------------------

TEST(BlockQfp32, QuantizesAlongTheReductionThenSumsInFp32) {
  // The hand example: exact in FP32 whatever the order of the sums.
  const std::vector<double> a = {0.3, -0.7, 0.85, 0.05}, b = {1, 1, 1, 1};
  double c = 0;
  gemm(MacSpec::parse("qfp32 in=hbfp4/4"), GemmOp::nn, 1, 1, 4, a.data(), 4, b.data(), 1, &c, 1);
  EXPECT_EQ(c, 0.375);
  // Random operands in every transpose: within the FP32 summation bound of the exact block
  // dot product (its blocks summed in fp64 here), |error| <= gamma_k sum |a_q b_q|.
  std::mt19937_64 g(4);
  const std::size_t m = 9, n = 13, k = 300;
  const auto A = operand(m, k, g, false), B = operand(k, n, g, false);
  std::vector<double> Aq(A.begin(), A.begin() + static_cast<std::ptrdiff_t>(m * k)), Bt(n * k);
  for (std::size_t p = 0; p < k; ++p)
    for (std::size_t j = 0; j < n; ++j) Bt[j * k + p] = B[p * n + j];
  for (const char* in : {"mxfp8_e4m3", "hbfp6/16", "mxfp4"}) {
    const BlockFormat f = BlockFormat::parse(in);
    std::vector<double> qa = Aq, qb = Bt;
    quantize_blocks_ref(f, qa.data(), qa.data(), BlockLayout{{m, k}, -1});
    quantize_blocks_ref(f, qb.data(), qb.data(), BlockLayout{{n, k}, -1});
    std::vector<double> fast(m * n), exact(m * n);
    gemm(MacSpec::parse(std::string("qfp32 in=") + in), GemmOp::nn, m, n, k, A.data(), k, B.data(), n, fast.data(), n);
    gemm(MacSpec::parse(std::string("in=") + in + " outer=fp64"), GemmOp::nn, m, n, k, A.data(), k, B.data(), n, exact.data(), n);
    const double gamma = k * 0x1p-24 / (1 - k * 0x1p-24);
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < n; ++j) {
        double mag = 0;
        for (std::size_t p = 0; p < k; ++p) mag += std::fabs(qa[i * k + p] * qb[j * k + p]);
        EXPECT_LE(std::fabs(fast[i * n + j] - exact[i * n + j]), gamma * mag) << in << " " << i << "," << j;
      }
    }
  }
}

// ---- in a layer ---------------------------------------------------------------------------

TEST(BlockMacLayer, LinearTrainsThroughTheBlockDotProduct) {
  // A Linear layer under in=mxfp8_e4m3: its weight gradient is the block GEMM dW = dY^T X and
  // its bias gradient the block dot of ones with dY (a block of ones is exact in mx), each as
  // gemm_ref computes it from the same operands.
  const std::size_t batch = 40, in = 3, out = 2;
  StepContext ctx;
  ctx.training = true;
  ctx.seed = 1;
  ctx.threads = 2;
  Linear fc("fc", in, out, true);
  *fc.precision() = GemmPrecision::all(MacSpec::parse("in=mxfp8_e4m3"));
  std::mt19937_64 g(3);
  std::normal_distribution<float> nd(0, 1);
  Tensor x({batch, in}), dy({batch, out});
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = nd(g);
  for (std::size_t i = 0; i < dy.size(); ++i) dy[i] = nd(g);
  (void)fc.forward(x, ctx);
  (void)fc.backward(dy, ctx);
  const MacSpec spec = MacSpec::parse("in=mxfp8_e4m3");
  std::vector<double> X(x.values().begin(), x.values().end()), D(dy.values().begin(), dy.values().end());
  std::vector<double> ones(batch, 1.0), db(out);
  gemm_ref(spec, GemmOp::tn, out, 1, batch, D.data(), out, ones.data(), 1, db.data(), 1);
  for (std::size_t o = 0; o < out; ++o) EXPECT_EQ(fc.bias->grad[o], static_cast<float>(db[o])) << o;
  // A Linear with bias under NVFP4 is refused: its scales make a block of ones inexact.
  Linear nv("nv", in, out, true);
  *nv.precision() = GemmPrecision::all(MacSpec::parse("in=nvfp4"));
  (void)nv.forward(x, ctx);
  EXPECT_THROW((void)nv.backward(dy, ctx), MacSpecError);
}

}  // namespace
}  // namespace mpsim
