// The exact reference dot product and GEMM (src/mac/dot_ref.cpp, gemm_ref.cpp): against the
// independent MPFR oracle on random cases (swamping, overflow, underflow, subnormals, ties,
// NaN and infinity), every input pair of the 8-bit multiplier formats for one MAC step,
// hand-computed examples, the stochastic-rounding key, and the three GEMM transposes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "mac_oracle.h"
#include "mpsim/mac.h"
#include "mpsim/quantize.h"
#include "oracle.h"
#include "sample_inputs.h"

namespace mpsim {
namespace {

using test::same;

double dot(const MacSpec& s, const std::vector<double>& a, const std::vector<double>& b, double bias = 0.0,
           const MacRandom& r = {}, std::uint64_t out = 0) {
  return dot_ref(s, a.size(), a.data(), 1, b.data(), 1, bias, r, out).value;
}

double dot(const char* spec, const std::vector<double>& a, const std::vector<double>& b, double bias = 0.0) {
  return dot(MacSpec::parse(spec), a, b, bias);
}

// ---- hand-computed examples ----------------------------------------------------------------

// Swamping: e6m5 keeps 6 significant bits, so next to 1.0 its step is 2^-5. Adding 2^-7
// (a quarter step) to 1.0 rounds back to 1.0 every time: 64 such products vanish, although
// their exact sum is 0.5. Summing them in chunks of 8 first (exact: 8 * 2^-7 = 2^-4 is an
// e6m5 value) and adding the chunk sums keeps every bit: 1.5.
TEST(MacRefExamples, SwampingAndChunkRescue) {
  const std::vector<double> a(64, 0x1p-7), b(64, 1.0);
  EXPECT_EQ(dot("in=fp32 acc=e6m5 order=seq", a, b, 1.0), 1.0);
  EXPECT_EQ(dot("in=fp32 acc=e6m5 order=chunk8", a, b, 1.0), 1.5);
  EXPECT_EQ(dot("in=fp32 acc=e6m5 order=tree8", a, b, 1.0), 1.5);
  EXPECT_EQ(dot("in=fp32 acc=e6m5 order=ftree64", a, b, 1.0), 1.5);
  EXPECT_EQ(dot("in=fp32 acc=fp32 order=seq", a, b, 1.0), 1.5);
  EXPECT_EQ(dot("in=fp32 acc=exact", a, b, 1.0), 1.5);
  // The chunk rescue needs the chunk sums to fit: chunks of 64 swamp nothing, but the 1.0 is
  // then added to 0.5 at the end, exactly.
  EXPECT_EQ(dot("in=fp32 acc=e6m5 order=chunk64", a, b, 1.0), 1.5);
  // Kahan recovers the lost low part through the compensation term: the compensation c
  // collects -2^-7, -2^-6, ... until y = p - c is large enough to move the sum (here the
  // result is exact; in general it is within a few units of the 6-bit accumulator).
  EXPECT_EQ(dot("in=fp32 acc=e6m5 order=kahan", a, b, 1.0), 1.5);
  EXPECT_EQ(dot("in=fp32 acc=e6m5@rz order=seq", a, b, 1.0), 1.0);
  // Round-up accumulation overshoots instead: every add goes to the next value up (32 steps
  // of 2^-5 from 1 to 2, then 32 steps of 2^-4 from 2 to 4).
  EXPECT_EQ(dot("in=fp32 acc=e6m5@ru order=seq", a, b, 1.0), 4.0);
}

// A Q8.13 accumulator covers [-128, 128 - 2^-13]. 100 + 100 saturates at the top, and the
// following -100 leaves 28 - 2^-13 instead of 100. With :wrap the sum runs modulo 256 and the
// final result is the exact one whenever it lies in range.
TEST(MacRefExamples, FixedPointSaturationAndWrap) {
  const std::vector<double> a = {100, 100, -100}, b = {1, 1, 1};
  EXPECT_EQ(dot("acc=q8.13", a, b), 28 - 0x1p-13);
  EXPECT_EQ(dot("acc=q8.13:wrap", a, b), 100);
  const std::vector<double> a2 = {100, 100};
  EXPECT_EQ(dot("acc=q8.13:wrap", a2, {1, 1}), -56);
  const MacResult r = dot_ref(MacSpec::parse("acc=q8.13"), 2, a2.data(), 1, std::vector<double>{1, 1}.data(), 1);
  EXPECT_EQ(r.value, 128 - 0x1p-13);
  EXPECT_TRUE(r.flags.saturated);
  EXPECT_TRUE(r.flags.overflow);
  // Infinity saturates even with wrap.
  EXPECT_EQ(dot("acc=q8.13:wrap", {INFINITY}, {1}), 128 - 0x1p-13);
}

// Converting a product into a fixed-point accumulator uses the accumulator's rounding mode.
// 3 * 2^-15 is 0.75 of a Q8.13 step: rne converts it to one step, rz to nothing. Split (the
// default) converts the product first and then adds on the grid; fused rounds acc + p once,
// which differs for directed modes when the accumulator is negative.
TEST(MacRefExamples, FixedPointConversionAndFused) {
  const std::vector<double> a(10, 3 * 0x1p-15), b(10, 1.0);
  EXPECT_EQ(dot("acc=q8.13", a, b), 10 * 0x1p-13);
  EXPECT_EQ(dot("acc=q8.13@rz", a, b), 0.0);
  EXPECT_EQ(dot("acc=q8.13@rz", {3 * 0x1p-15}, {1.0}, -1.0), -1.0);  // q = rz(p) = 0
  EXPECT_EQ(dot("acc=q8.13@rz fused", {3 * 0x1p-15}, {1.0}, -1.0), -1.0 + 0x1p-13);  // rz(-1 + p)
  // With a float accumulator and the exact product, split and fused are the same rounding.
  EXPECT_EQ(dot("acc=e6m5@rz", {3 * 0x1p-9}, {1.0}, -1.0), dot("acc=e6m5@rz fused", {3 * 0x1p-9}, {1.0}, -1.0));
}

// The cfg variants of an E5M2 multiplier (docs/mac.md section 6).
TEST(MacRefExamples, E5M2MultiplierVariants) {
  // CFG-1: product rounded to e5m2 with gradual underflow: 2^-8 * 2^-8 = 2^-16 (a subnormal).
  EXPECT_EQ(dot("in=e5m2 prod=e5m2 acc=fp32", {0x1p-8}, {0x1p-8}), 0x1p-16);
  // CFG-2: the same product, flushed after rounding.
  EXPECT_EQ(dot("in=e5m2:cfg2 prod=e5m2:cfg2 acc=fp32", {0x1p-8}, {0x1p-8}), 0.0);
  // CFG-3: exact product into a wide accumulator: 2^-14 * 2^-14 = 2^-28 is below e5m2's range
  // but an e6m5 value (its smallest subnormal is 2^-35).
  EXPECT_EQ(dot("in=e5m2 prod=exact acc=e6m5", {0x1p-14}, {0x1p-14}), 0x1p-28);
  EXPECT_EQ(dot("in=e5m2 prod=e5m2 acc=e6m5", {0x1p-14}, {0x1p-14}), 0.0);
  // CFG-4: the all-ones exponent holds finite values: 98304 is an input (in e5m2 it is inf).
  EXPECT_EQ(dot("in=e5m2:cfg4 prod=exact acc=fp32", {98304}, {0.5}), 49152);
  EXPECT_EQ(dot("in=e5m2 prod=exact acc=fp32", {98304}, {0.5}), INFINITY);
  // CFG-5: a zero exponent field is a normal binade: 1.25 * 2^-15 is the smallest input, and
  // 2^-16 (an IEEE e5m2 subnormal) is not an input: it lies 0.4 of the way from 0 to s1 and
  // becomes 0; CFG-6 flushes subnormal inputs.
  EXPECT_EQ(dot("in=e5m2:cfg5 acc=fp32", {1.25 * 0x1p-15}, {1.0}), 1.25 * 0x1p-15);
  EXPECT_EQ(dot("in=e5m2:cfg5 acc=fp32", {0x1p-16}, {1.0}), 0.0);
  EXPECT_EQ(dot("in=e5m2 acc=fp32", {0x1p-16}, {1.0}), 0x1p-16);
  EXPECT_EQ(dot("in=e5m2:cfg6 acc=fp32", {0x1p-16}, {1.0}), 0.0);
  // The seeds' MAC: E5M2(CFG-5) inputs, exact product, E6M5 accumulator.
  EXPECT_EQ(dot("in=e5m2:cfg5 prod=exact acc=e6m5 order=seq", {1.5, 1.75, -3}, {1.25, 1.5, 0.5}, 0.0),
            quantize(quantize(1.875 + 2.625, Format::parse("e6m5")) - 1.5, Format::parse("e6m5")));
}

TEST(MacRefExamples, SpecialValues) {
  // fp16 accumulator: 60000 + 60000 overflows to inf, and inf - inf is NaN.
  EXPECT_EQ(dot("acc=fp16", {60000, 60000}, {1, 1}), INFINITY);
  EXPECT_TRUE(std::isnan(dot("acc=fp16", {60000, 60000, -INFINITY}, {1, 1, 1})));
  EXPECT_TRUE(std::isnan(dot("acc=fp32", {0.0}, {INFINITY})));  // 0 * inf
  EXPECT_TRUE(std::isnan(dot("acc=fp32", {1.0, NAN}, {1.0, 1.0})));
  // e4m3fn has no infinity: an overflowing sum becomes NaN and stays NaN.
  EXPECT_TRUE(std::isnan(dot("acc=e4m3fn", {300, 300, -500}, {1, 1, 1})));
  // With :sat: 300 -> 288, 288 + 300 -> 448 (saturated), 448 - 500 = -52.
  EXPECT_EQ(dot("acc=e4m3fn:sat", {300, 300, -500}, {1, 1, 1}), -52);
  // Signed zeros: -0 bias plus products -0 stays -0; x - x is +0, or -0 when rounding down.
  EXPECT_TRUE(same(dot("acc=fp32", {-1.0}, {0.0}, -0.0), -0.0));
  EXPECT_TRUE(same(dot("acc=fp32", {1.5}, {-1.0}, 1.5), 0.0));
  EXPECT_TRUE(same(dot("acc=fp32@rd", {1.5}, {-1.0}, 1.5), -0.0));
  // An exact accumulator reports its sum rounded once to fp64.
  EXPECT_EQ(dot("acc=exact", {1.0, 0x1p-60, -1.0}, {1.0, 1.0, 1.0}), 0x1p-60);
  EXPECT_EQ(dot("in=fp64 acc=exact", {1.0, 0x1p-60}, {1.0, 1.0}), 1.0);
  EXPECT_EQ(dot("in=fp64 acc=exact out=fp64@ru", {1.0, 0x1p-60}, {1.0, 1.0}), 1.0 + 0x1p-52);
  // Empty dot product: the bias rounded into the accumulator.
  EXPECT_EQ(dot("acc=e6m5", {}, {}, 1.0 + 0x1p-7), 1.0);
}

// ---- the stochastic-rounding key -------------------------------------------------------------

// seq with acc=e6m5@sr computed by hand with quantize_ref and the documented key mapping
// (all intermediate sums are doubles here, so quantize_ref applies directly).
TEST(MacRefRandom, KeyMappingAsDocumented) {
  const MacSpec spec = MacSpec::parse("in=fp16 prod=e5m2@sr8 acc=e6m5@sr order=seq");
  const MacRandom rnd{1234, 7};
  const RandomKey key{1234, 7};
  std::mt19937_64 gen(1);
  std::uniform_real_distribution<double> u(-2, 2);
  for (int rep = 0; rep < 200; ++rep) {
    std::vector<double> a(20), b(20);
    for (auto& x : a) x = quantize(u(gen), spec.a);
    for (auto& x : b) x = quantize(u(gen), spec.b);
    const double bias = u(gen);
    const std::uint64_t out = gen() % 100000;
    double acc = quantize(bias, *spec.acc, (out << 32) + 0 * 16 + 0, key);
    for (std::uint64_t k = 0; k < a.size(); ++k) {
      const double p = quantize(a[k] * b[k], *spec.prod, (out << 32) + k * 16 + 1, key);  // fp16*fp16 is exact in fp64
      acc = quantize(acc + p, *spec.acc, (out << 32) + k * 16 + 3, key);  // e6m5 + e5m2: exact in fp64
    }
    EXPECT_EQ(dot(spec, a, b, bias, rnd, out), acc);
    EXPECT_EQ(mac_random_index(out, 5, MacSite::add), (out << 32) + 5 * 16 + 3);
  }
  EXPECT_EQ(mac_random_key(rnd).seed, 1234u);
  EXPECT_EQ(mac_random_key(rnd).stream, 7u);
}

// Stochastic rounding inside the dot product is reproducible, depends on (seed, gemm id, output
// index), and is unbiased: the mean of many sr dot products approaches the exact sum where
// round-to-nearest stays stuck by swamping.
TEST(MacRefRandom, ReproducibleKeyedAndUnbiased) {
  const MacSpec sr = MacSpec::parse("acc=e6m5@sr");
  const std::vector<double> a(64, 0x1p-7), b(64, 1.0);
  double mean = 0;
  int differ_seed = 0, differ_id = 0;
  constexpr int kOut = 2000;
  for (std::uint64_t out = 0; out < kOut; ++out) {
    const double r = dot(sr, a, b, 1.0, {42, 3}, out);
    EXPECT_EQ(r, dot(sr, a, b, 1.0, {42, 3}, out));
    differ_seed += r != dot(sr, a, b, 1.0, {43, 3}, out);
    differ_id += r != dot(sr, a, b, 1.0, {42, 4}, out);
    mean += r / kOut;
  }
  EXPECT_GT(differ_seed, kOut / 4);
  EXPECT_GT(differ_id, kOut / 4);
  EXPECT_NEAR(mean, 1.5, 0.015);  // the exact sum; rne gives 1.0
}

// ---- against the MPFR oracle -----------------------------------------------------------------

struct Gen {
  std::mt19937_64 g;
  explicit Gen(std::uint64_t seed) : g(seed) {}
  std::uint64_t below(std::uint64_t n) { return g() % n; }
  double unit() { return std::uniform_real_distribution<double>(1.0, 2.0)(g); }
  double sign(double x) { return (g() & 1) ? -x : x; }
};

// One operand for scenario `sc`, already a value of the input format.
double draw(Gen& gen, const Format& f, const std::vector<double>& table, int sc) {
  double x;
  switch (sc) {
    case 0:  // any finite code (overflow, underflow and subnormals for narrow formats)
      x = !table.empty() ? table[gen.below(table.size())] : std::ldexp(gen.unit(), static_cast<int>(gen.below(60)) - 30);
      break;
    case 1:  // moderate magnitudes: many exact ties in narrow accumulators
      x = std::ldexp(gen.unit(), static_cast<int>(gen.below(9)) - 4);
      break;
    case 2:  // tiny: subnormal products and accumulators
      x = std::ldexp(gen.unit(), -static_cast<int>(gen.below(30)) - 5);
      break;
    case 3:  // large: overflow of narrow accumulators
      x = std::ldexp(gen.unit(), static_cast<int>(gen.below(12)) + 6);
      break;
    default:  // specials now and then
      x = gen.below(8) == 0 ? (gen.below(3) == 0 ? NAN : INFINITY) : std::ldexp(gen.unit(), static_cast<int>(gen.below(9)) - 4);
      break;
  }
  return quantize(gen.sign(x), f);
}

TEST(MacRefOracle, RandomDotProducts) {
  const char* accs[] = {"fp32", "e6m5", "e5m5", "bf16", "fp16", "q8.13", "q8.13:wrap", "exact"};
  const char* modes[] = {"rne", "rz", "ru", "rd", "rna", "ro", "sr", "sr4"};
  const char* orders[] = {"seq", "chunk3", "chunk8", "tree4", "tree5", "ftree3", "ftree8", "kahan"};
  const char* ins[] = {"e5m2", "e4m3fn", "e5m2:cfg5", "fp16", "bf16", "fp32"};
  const char* prods[] = {"exact", "exact", "e6m5", "bf16@rz", "e5m5@sr", "fp16@ru"};
  const char* outers[] = {"", "fp32", "e6m5@rz", "q11.13", "bf16@sr"};
  const char* outs[] = {"", "", "bf16", "fp16@rz"};
  Gen gen(77);
  long cases = 0, swamped = 0;
  for (const char* acc : accs) {
    for (const char* mode : modes) {
      for (const char* order : orders) {
        for (int rep = 0; rep < 6; ++rep) {
          std::string text = std::string("acc=") + acc + (std::string(acc) == "exact" ? "" : std::string("@") + mode) +
                             " order=" + order;
          const char* in_a = ins[gen.below(6)];
          const char* in_b = gen.below(2) ? in_a : ins[gen.below(6)];
          text += std::string(" a=") + in_a + " b=" + in_b;
          const char* prod = prods[gen.below(6)];
          text += std::string(" prod=") + prod;
          const std::string ord = order;
          const bool can_fuse = std::string(prod) == "exact" && std::string(acc) != "exact" && (ord == "seq" || ord.rfind("chunk", 0) == 0);
          if (can_fuse && gen.below(2)) text += " fused";
          if (ord != "seq" && ord != "kahan") {
            const char* outer = outers[gen.below(5)];
            if (*outer) text += std::string(" outer=") + outer;
          }
          const char* out = outs[gen.below(4)];
          if (*out) text += std::string(" out=") + out;
          const MacSpec spec = MacSpec::parse(text);
          const std::vector<double> ta = spec.a.bits() <= 16 ? test::format_values(spec.a) : std::vector<double>{};
          const std::vector<double> tb = spec.b.bits() <= 16 ? test::format_values(spec.b) : std::vector<double>{};
          const std::size_t k = gen.below(41);
          const int sc = static_cast<int>(gen.below(6));  // 5: swamping
          std::vector<double> a(k), b(k);
          for (std::size_t i = 0; i < k; ++i) {
            const int s = sc == 5 ? (i == 0 ? 3 : 2) : sc;
            a[i] = draw(gen, spec.a, ta, sc == 5 ? 1 : s);
            b[i] = draw(gen, spec.b, tb, sc == 5 ? (i == 0 ? 1 : 2) : s);
          }
          double bias = 0;
          switch (gen.below(4)) {
            case 0: bias = 0; break;
            case 1: bias = gen.sign(std::ldexp(gen.unit(), static_cast<int>(gen.below(12)) - 4)); break;
            case 2: bias = gen.sign(std::ldexp(gen.unit(), -static_cast<int>(gen.below(40)))); break;
            default: bias = -0.0; break;
          }
          const MacRandom rnd{gen.g(), static_cast<std::uint32_t>(gen.g())};
          const std::uint64_t out_index = gen.below(1u << 20);
          SCOPED_TRACE(text + " k=" + std::to_string(k) + " scenario=" + std::to_string(sc));
          const double want = test::OracleDot(spec, rnd, out_index).run(a, b, bias);
          const double got = dot(spec, a, b, bias, rnd, out_index);
          ASSERT_TRUE(same(got, want)) << "got " << std::hexfloat << got << " want " << want;
          ++cases;
          swamped += sc == 5;
        }
      }
    }
  }
  EXPECT_EQ(cases, 8L * 8 * 8 * 6);
  EXPECT_GT(swamped, 300);
}

// Every input pair of every 8-bit multiplier format (NaN and infinity codes included), one
// MAC step onto a bias: the exact product into an e6m5 accumulator (the seeds' CFG-3 style);
// the product rounded in the input format itself (CFG-1/2/4/5/6 multipliers; the oracle is the
// value table of the format, tests/oracle.h) then added in fp32; and the exact product into a
// Q8.13 accumulator with truncation.
TEST(MacRefOracle, AllPairsOf8BitMultiplierFormats) {
  const char* fmts[] = {"e5m2", "e4m3", "e4m3fn", "e4m3fnuz", "e5m2fnuz", "e5m2:cfg2", "e5m2:cfg4", "e5m2:cfg5",
                        "e5m2:cfg6", "e4m3:cfg5"};
  const double biases[] = {0.0, -0.0, 1.0, -1.5, 0x1.8p-30, 1000.0, -60000.0, 0x1p-14, 3.0};
  long checked = 0;
  for (const char* name : fmts) {
    const Format f = Format::parse(name);
    std::vector<double> codes;
    for (std::uint64_t c = 0; c < 256; ++c) codes.push_back(decode(f, c).value);
    const test::TableOracle table(f);
    const MacSpec exact_e6m5 = MacSpec::parse(std::string("in=") + name + " prod=exact acc=e6m5");
    const MacSpec rounded = MacSpec::parse(std::string("in=") + name + " prod=" + name + " acc=fp32");
    const MacSpec fixed = MacSpec::parse(std::string("in=") + name + " prod=exact acc=q8.13@rz");
    const Format e6m5 = Format::parse("e6m5"), fp32 = Format::parse("fp32"), q = Format::parse("q8.13@rz");
    for (std::size_t i = 0; i < 256; ++i) {
      for (std::size_t j = 0; j < 256; ++j) {
        const double x = codes[i], y = codes[j];
        const double bias = biases[(i * 7 + j) % 9];
        SCOPED_TRACE(std::string(name) + " " + std::to_string(x) + " * " + std::to_string(y) + " + " + std::to_string(bias));
        const test::Mp p = test::Mp::mul(test::Mp(x), test::Mp(y));
        {
          const double want = test::oracle_round(test::Mp::add(test::Mp(test::oracle_round(test::Mp(bias), e6m5)), p, false), e6m5);
          ASSERT_TRUE(same(dot(exact_e6m5, {x}, {y}, bias), want));
        }
        {
          const double pr = table.round(x * y, RoundMode::rne);  // x * y is exact in fp64
          const double want = test::oracle_round(test::Mp::add(test::Mp(bias), test::Mp(pr), false), fp32);
          ASSERT_TRUE(same(dot(rounded, {x}, {y}, bias), want));
        }
        {
          // Split fixed-point MAC: bias and product converted with rz, then added on the grid.
          const double qb = test::oracle_round(test::Mp(bias), q), qp = test::oracle_round(p, q);
          const double want = test::oracle_round(test::Mp::add(test::Mp(qb), test::Mp(qp), false), q);
          ASSERT_TRUE(same(dot(fixed, {x}, {y}, bias), want));
        }
        checked += 3;
      }
    }
  }
  EXPECT_EQ(checked, 10L * 65536 * 3);
}

// ---- GEMM --------------------------------------------------------------------------------

// The three training GEMMs compute the same dot products: with op(A) and op(B) stored
// transposed they give the same bits, stochastic rounding included (the key depends only on
// (i, j, p)), and every output equals dot_ref on its row and column.
TEST(MacRefGemm, TransposesAgree) {
  const char* specs[] = {"in=e5m2:cfg5 prod=exact acc=e6m5 order=seq", "in=bf16 acc=bf16@sr order=chunk4 outer=fp32",
                         "in=e4m3fn prod=e6m5@sr8 acc=q8.13:wrap@rz order=tree3", "acc=e5m5@ro order=kahan",
                         "acc=exact order=ftree5 out=bf16@sr"};
  Gen gen(5);
  for (const char* s : specs) {
    const MacSpec spec = MacSpec::parse(s);
    const std::size_t m = 3 + gen.below(5), n = 2 + gen.below(6), k = 1 + gen.below(23);
    const std::size_t lda = k + gen.below(3), ldb = n + gen.below(3), ldc = n + gen.below(2);
    std::vector<double> A(m * lda), B(k * ldb), bias(m * n);
    for (auto& x : A) x = draw(gen, spec.a, {}, 1);
    for (auto& x : B) x = draw(gen, spec.b, {}, 1);
    for (auto& x : bias) x = draw(gen, spec.b, {}, 2);
    // A^T stored k x m, B^T stored n x k.
    std::vector<double> At(k * m), Bt(n * k);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t p = 0; p < k; ++p) At[p * m + i] = A[i * lda + p];
    for (std::size_t p = 0; p < k; ++p)
      for (std::size_t j = 0; j < n; ++j) Bt[j * k + p] = B[p * ldb + j];
    const MacRandom rnd{99, 2};
    const BiasView bv{bias.data(), static_cast<std::ptrdiff_t>(n), 1};
    std::vector<double> Cnn(m * ldc, -7), Cnt(m * ldc, -7), Ctn(m * ldc, -7);
    gemm_ref(spec, GemmOp::nn, m, n, k, A.data(), lda, B.data(), ldb, Cnn.data(), ldc, bv, rnd);
    gemm_ref(spec, GemmOp::nt, m, n, k, A.data(), lda, Bt.data(), k, Cnt.data(), ldc, bv, rnd);
    gemm_ref(spec, GemmOp::tn, m, n, k, At.data(), m, B.data(), ldb, Ctn.data(), ldc, bv, rnd);
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < ldc; ++j) {
        SCOPED_TRACE(std::string(s) + " i=" + std::to_string(i) + " j=" + std::to_string(j));
        ASSERT_TRUE(same(Cnn[i * ldc + j], Cnt[i * ldc + j]));
        ASSERT_TRUE(same(Cnn[i * ldc + j], Ctn[i * ldc + j]));
        if (j >= n) {
          EXPECT_EQ(Cnn[i * ldc + j], -7);  // padding untouched
          continue;
        }
        const double d = dot_ref(spec, k, &A[i * lda], 1, &B[j], static_cast<std::ptrdiff_t>(ldb), bias[i * n + j], rnd, i * n + j).value;
        ASSERT_TRUE(same(Cnn[i * ldc + j], d));
      }
    }
  }
}

TEST(MacRefGemm, BiasBroadcastAndBadShapes) {
  const MacSpec spec = MacSpec::parse("acc=fp32");
  const std::vector<double> A = {1, 2, 3, 4}, B = {1, 0, 0, 1};  // 2 x 2
  const std::vector<double> col_bias = {10, 20};
  std::vector<double> C(4);
  gemm_ref(spec, GemmOp::nn, 2, 2, 2, A.data(), 2, B.data(), 2, C.data(), 2, {col_bias.data(), 0, 1});
  EXPECT_EQ(C, (std::vector<double>{11, 22, 13, 24}));
  gemm_ref(spec, GemmOp::nn, 2, 2, 2, A.data(), 2, B.data(), 2, C.data(), 2, {col_bias.data(), 1, 0});
  EXPECT_EQ(C, (std::vector<double>{11, 12, 23, 24}));
  EXPECT_THROW(gemm_ref(spec, GemmOp::nn, 2, 2, 2, A.data(), 1, B.data(), 2, C.data(), 2), std::invalid_argument);
  EXPECT_THROW(gemm_ref(spec, GemmOp::tn, 2, 2, 2, A.data(), 2, B.data(), 1, C.data(), 2), std::invalid_argument);
  EXPECT_THROW(gemm_ref(spec, GemmOp::nn, 2, 2, 2, A.data(), 2, B.data(), 2, C.data(), 1), std::invalid_argument);
  MacSpec bad = spec;
  bad.fused = true;
  bad.prod = Format::parse("fp16");
  EXPECT_THROW(gemm_ref(bad, GemmOp::nn, 2, 2, 2, A.data(), 2, B.data(), 2, C.data(), 2), MacSpecError);
}

}  // namespace
}  // namespace mpsim
