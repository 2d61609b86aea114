// The GEMM entry point (include/mpsim/gemm.h) against the reference gemm_ref, bit for bit:
// every transpose, bias layouts, stochastic rounding, 1 and 2 threads, the fp32 overload, and
// shape errors before any work.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "mpsim/gemm.h"
#include "mpsim/mac.h"
#include "mpsim/quantize.h"
#include "mpsim/quantize_array.h"
#include "../src/mac/gemm_fast.h"
#include "bit_helpers.h"

namespace mpsim::test {
namespace {

std::vector<double> operand(std::size_t count, const Format& f, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d(0.0, 2.0);
  std::vector<double> v(count);
  for (auto& x : v) x = quantize(d(g), f.with_rounding({}));
  return v;
}

TEST(Gemm, EqualsReferenceForEveryOpThreadCountAndBias) {
  const char* specs[] = {"in=e5m2:cfg5 prod=exact acc=e6m5 order=seq", "in=e4m3fn acc=fp32 order=chunk8",
                         "in=bf16 acc=q8.13 order=seq", "in=e5m2 acc=e5m5@sr order=tree4 outer=fp16",
                         "in=fp16 prod=bf16 acc=fp32 order=kahan"};
  const std::size_t m = 7, n = 5, k = 19;
  for (const char* text : specs) {
    const MacSpec spec = MacSpec::parse(text);
    const auto A = operand(m * k, spec.a, 1), B = operand(k * n, spec.b, 2);
    std::vector<double> At(k * m), Bt(n * k);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t p = 0; p < k; ++p) At[p * m + i] = A[i * k + p];
    for (std::size_t p = 0; p < k; ++p)
      for (std::size_t j = 0; j < n; ++j) Bt[j * k + p] = B[p * n + j];
    const auto bias = operand(n, Format::parse("fp16"), 3);
    GemmOptions o;
    o.bias = {bias.data(), 0, 1};
    o.random = {42, 7};
    std::vector<double> want(m * n);
    gemm_ref(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, want.data(), n, o.bias, o.random);
    for (int threads : {1, 2}) {
      o.threads = threads;
      std::vector<double> nn(m * n), nt(m * n), tn(m * n);
      gemm(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, nn.data(), n, o);
      gemm(spec, GemmOp::nt, m, n, k, A.data(), k, Bt.data(), k, nt.data(), n, o);
      gemm(spec, GemmOp::tn, m, n, k, At.data(), m, B.data(), n, tn.data(), n, o);
      for (std::size_t i = 0; i < m * n; ++i) {
        EXPECT_TRUE(bits_of(nn[i]) == bits_of(want[i])) << text << " nn " << i << " threads " << threads;
        EXPECT_TRUE(bits_of(nt[i]) == bits_of(want[i])) << text << " nt " << i;
        EXPECT_TRUE(bits_of(tn[i]) == bits_of(want[i])) << text << " tn " << i;
      }
    }
    // The fp32 overload, with padded leading dimensions: the fp64 results converted.
    std::vector<float> Af(m * (k + 3)), Bf(k * (n + 2)), Cf(m * (n + 1), -1.0f);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t p = 0; p < k; ++p) Af[i * (k + 3) + p] = static_cast<float>(A[i * k + p]);
    for (std::size_t p = 0; p < k; ++p)
      for (std::size_t j = 0; j < n; ++j) Bf[p * (n + 2) + j] = static_cast<float>(B[p * n + j]);
    gemm(spec, GemmOp::nn, m, n, k, Af.data(), k + 3, Bf.data(), n + 2, Cf.data(), n + 1, o);
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < n; ++j) EXPECT_EQ(Cf[i * (n + 1) + j], static_cast<float>(want[i * n + j])) << text;
      EXPECT_EQ(Cf[i * (n + 1) + n], -1.0f) << "the padding column is not written";
    }
  }
}

// Operands with everything the kernels must get right: magnitudes that overflow and underflow
// small accumulators, exact zeros of both signs, infinities and NaN.
std::vector<double> hard_operand(std::size_t count, double scale, std::mt19937_64& g, bool specials) {
  std::normal_distribution<double> d(0.0, scale);
  std::uniform_int_distribution<int> kind(0, 199);
  std::vector<double> v(count);
  for (auto& x : v) {
    x = d(g);
    if (!specials) continue;
    switch (kind(g)) {
      case 0: x = 0.0; break;
      case 1: x = -0.0; break;
      case 2: x = INFINITY; break;
      case 3: x = -INFINITY; break;
      case 4: x = NAN; break;
      case 5: x *= 1e6; break;
      case 6: x *= 1e-6; break;
      default: break;
    }
  }
  return v;
}

// got == want bit for bit (any NaN equal to any NaN); the first three differences are reported
// with `context`.
void expect_same_bits(const std::vector<double>& got, const std::vector<double>& want, const std::string& context) {
  std::size_t bad = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (bits_of(got[i]) != bits_of(want[i]) && !(std::isnan(got[i]) && std::isnan(want[i])) && bad++ < 3) {
      ADD_FAILURE() << context << ": output " << i << " got " << got[i] << " want " << want[i];
    }
  }
}

TEST(Gemm, SimdKernelsEqualTheReference) {
  const char* specs[] = {"in=e5m2:cfg5 prod=exact acc=e6m5 order=seq", "in=e5m2:cfg5 acc=fp32", "in=e5m2:cfg5 acc=q8.13",
                         "in=e5m2 acc=e5m5", "in=e5m2 acc=bf16", "in=e4m3 acc=fp16",
                         "in=fp16 acc=fp32 out=bf16", "in=bf16 acc=q8.13", "in=e5m2 acc=q11.13", "in=int8 acc=int32",
                         "in=e5m2:cfg5 acc=e6m5 out=e5m2@sr", "a=e4m3 b=e5m2 acc=fp16:sat", "in=e5m2:cfg4 acc=e6m5:cfg4",
                         // sums rounded to odd, then in the accumulator's mode (directed modes, and
                         // to nearest-even where the product is wider than the accumulator)
                         "in=e5m2 acc=e6m5@rz", "in=e5m2:cfg5 acc=fp16@ru", "in=e4m3 acc=bf16@rd", "in=e5m2 acc=e5m2@ro",
                         "in=e5m2 acc=e6m5:sat@rna", "in=e4m3fnuz acc=e5m2fnuz@rd", "in=e4m3fn acc=e6m5",
                         "in=bf16 acc=fp32", "in=fp32 acc=fp32@rz", "in=e5m2:cfg5 acc=e6m5:cfg5@ru",
                         // a fixed-point accumulator converting the products in a directed mode
                         "in=e5m2 acc=q8.13@rz", "in=int8 acc=int16@rd", "in=e4m3 acc=q4.3@ro",
                         // rounded products (prod=): every deterministic mode, CFG-2's flushing
                         // multiplier, a saturating product, products into fixed point
                         "in=e5m2 prod=e6m5 acc=e6m5", "in=e4m3 prod=e5m2 acc=fp16", "in=e5m2:cfg5 prod=e5m2:cfg2 acc=e6m5",
                         "in=fp16 prod=bf16@rz acc=fp32", "in=e4m3 prod=e4m3@ru acc=q8.13", "in=e5m2 prod=e5m2:sat@rd acc=e6m5@rz",
                         "in=bf16 prod=bf16@ro acc=bf16@rna", "in=e4m3fn prod=e3m2fn acc=fp16", "in=int8 prod=q4.4 acc=q8.8",
                         // Kahan's compensated summation, every operation rounded into acc
                         "in=e5m2 acc=e6m5 order=kahan", "in=e4m3 acc=bf16@rz order=kahan", "in=e5m2:cfg5 acc=fp16@rd order=kahan",
                         "in=fp16 prod=bf16 acc=fp32 order=kahan", "in=e5m2 acc=e5m2:sat@ru order=kahan",
                         // exact accumulation, rounded once at the end (to fp64, or into out=)
                         "in=e5m2 acc=exact", "in=e5m2:cfg5 acc=exact out=fp32", "in=e4m3 acc=exact out=bf16@rd",
                         "in=fp16 acc=exact out=e5m2@ro", "in=fp32 acc=exact", "in=e5m2:cfg2 acc=exact out=fp16@ru"};
  std::mt19937_64 g(2024);
  std::uniform_int_distribution<std::size_t> dim(1, 40), kdim(1, 200);
  for (const char* text : specs) {
    const MacSpec spec = MacSpec::parse(text);
    ASSERT_TRUE(gemm_is_vectorized(spec)) << text;
    for (int rep = 0; rep < 6; ++rep) {
      const std::size_t m = dim(g), n = dim(g) * (rep % 2 ? 3 : 1), k = kdim(g);
      const double scale = rep == 2 ? 300.0 : (rep == 3 ? 1e-4 : 1.0);
      const auto A = hard_operand(m * k, scale, g, rep >= 4), B = hard_operand(k * n, scale, g, rep >= 4);
      const auto bias = hard_operand(m, 1.0, g, false);
      GemmOptions o;
      o.bias = {bias.data(), 1, 0};
      o.random = {7, static_cast<std::uint32_t>(rep)};
      std::vector<double> want(m * n);
      gemm_ref(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, want.data(), n, o.bias, o.random);
      for (SimdLevel level : available_simd_levels()) {
        LevelGuard guard(level);
        for (int threads : {1, 2}) {
          o.threads = threads;
          std::vector<double> got(m * n);
          gemm(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, got.data(), n, o);
          expect_same_bits(got, want,
                           std::string(text) + " " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                               " scale " + std::to_string(scale) + " level " + to_string(level) + " threads " +
                               std::to_string(threads));
        }
      }
    }
  }
}

// order=chunkN in the kernels: chunk sums from +0 in acc, folded into outer at every chunk end,
// with chunks that span several depth blocks or share one (block_bytes forces both), chunk
// sizes from 1 to beyond k, every SIMD level, 1 and 2 threads, the fp32 overload.
TEST(Gemm, ChunkedOrderEqualsTheReference) {
  const char* specs[] = {"in=e5m2:cfg5 acc=e6m5 order=chunk8", "in=e5m2:cfg5 acc=e6m5 order=chunk64 outer=fp32",
                         "in=e5m2 acc=bf16 order=chunk3 outer=fp32", "in=e4m3 acc=fp16 order=chunk1 outer=fp32",
                         "in=e5m2 acc=q8.13 order=chunk16 outer=fp32", "in=e5m2:cfg5 acc=fp32 order=chunk50",
                         "in=e5m2 acc=e6m5 order=chunk784 outer=fp32 out=bf16", "in=e5m2 acc=e5m5 order=chunk5 outer=fp16",
                         "in=e5m2 acc=e6m5@rz order=chunk8 outer=fp32", "in=e4m3fn acc=e6m5@rd order=chunk6 outer=fp16",
                         "in=e5m2 acc=q8.13@ru order=chunk4 outer=fp32",
                         // not chunked: Kahan's compensation carried across depth blocks
                         "in=e5m2 acc=e6m5 order=kahan", "in=e4m3 acc=fp16@rd order=kahan",
                         // adder trees per group (groups of one pass the product; groups larger than a block)
                         "in=e5m2 acc=e6m5 order=tree4 outer=fp32", "in=e4m3 acc=fp16@rz order=tree8 outer=fp32",
                         "in=e5m2 acc=e6m5 order=tree3", "in=e5m2 prod=e6m5 acc=e6m5@rd order=tree16 outer=fp32",
                         "in=e5m2 acc=bf16 order=tree1 outer=fp32", "in=e5m2 acc=e5m5@ru order=tree300 outer=fp32",
                         // outers narrower than the chunk sums, or in another mode: the fold rounds to odd first
                         "in=e5m2 acc=fp16 order=chunk8 outer=e6m5", "in=e5m2 acc=e6m5 order=chunk4 outer=fp32@rz",
                         "in=e4m3 acc=bf16 order=tree4 outer=e5m2@rd", "in=e5m2 acc=q8.13 order=chunk6 outer=bf16@ru",
                         // fused adder trees: each group summed exactly, rounded once (fp32 and fp64 lanes)
                         "in=e5m2 acc=e6m5 order=ftree8", "in=e4m3 acc=fp16@rz order=ftree4 outer=fp32",
                         "in=e5m2 acc=bf16 order=ftree1 outer=fp32", "in=e5m2 prod=e6m5 acc=e5m5@rd order=ftree16 outer=fp32",
                         "in=e5m2 acc=e6m5@ru order=ftree300 outer=fp32", "in=fp16 acc=fp32 order=ftree32",
                         "in=e4m3fn acc=e5m2@rna order=ftree6 outer=bf16@ro", "in=e5m2 acc=q8.13 order=ftree8 outer=fp32",
                         "in=e4m3 acc=q4.11@rz order=ftree4 outer=fp32", "in=int8 acc=int16@rd order=ftree16 outer=fp32",
                         // adder trees in fixed point: leaves converted, every adder saturating
                         "in=e5m2 acc=q8.13 order=tree4 outer=fp32", "in=int8 acc=int16@rd order=tree8 outer=fp32",
                         "in=e4m3 acc=q4.11@rz order=tree3 outer=fp32", "in=e5m2 prod=e5m2@ru acc=q8.13 order=tree1 outer=fp32",
                         // fixed-point and integer outers: chunk sums converted, totals saturating
                         "in=e5m2 acc=e6m5 order=chunk8 outer=q8.13", "in=e4m3 acc=fp16@rz order=tree4 outer=q4.11@rd",
                         "in=int8 acc=int16 order=ftree4 outer=int32", "in=e5m2 acc=q8.13 order=chunk6 outer=q4.9@rna"};
  std::mt19937_64 g(77);
  std::uniform_int_distribution<std::size_t> dim(1, 12), kdim(1, 300);
  int cases = 0;
  for (const char* text : specs) {
    const MacSpec spec = MacSpec::parse(text);
    ASSERT_TRUE(gemm_is_vectorized(spec)) << text;
    for (int rep = 0; rep < 4; ++rep) {
      const bool long_chunks = spec.order.n > 300;  // k beyond a chunk of 784, on fewer outputs
      const std::size_t m = long_chunks ? 3 : dim(g), n = dim(g) * (rep % 2 ? 3 : 1), k = kdim(g) * (long_chunks ? 4 : 1);
      const double scale = rep == 2 ? 100.0 : 1.0;
      const auto A = hard_operand(m * k, scale, g, rep == 3), B = hard_operand(k * n, scale, g, rep == 3);
      const auto bias = hard_operand(n, 1.0, g, false);
      GemmOptions o;
      o.bias = {bias.data(), 0, 1};
      std::vector<double> want(m * n);
      gemm_ref(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, want.data(), n, o.bias, o.random);
      for (SimdLevel level : available_simd_levels()) {
        LevelGuard guard(level);
        for (int threads : {1, 2}) {
          o.threads = threads;
          o.block_bytes = threads == 1 ? 0 : 2048;  // tiny depth blocks: chunks cross and share them
          std::vector<double> got(m * n);
          gemm(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, got.data(), n, o);
          expect_same_bits(got, want,
                           std::string(text) + " " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                               " level " + to_string(level) + " threads " + std::to_string(threads));
        }
      }
      // The fp32 overload (fp32 lanes where the formats allow).
      std::vector<float> Af(A.begin(), A.end()), Bf(B.begin(), B.end()), Cf(m * n);
      o.threads = 2;
      o.block_bytes = 0;
      gemm(spec, GemmOp::nn, m, n, k, Af.data(), k, Bf.data(), n, Cf.data(), n, o);
      std::vector<double> Ad(Af.begin(), Af.end()), Bd(Bf.begin(), Bf.end());
      gemm_ref(spec, GemmOp::nn, m, n, k, Ad.data(), k, Bd.data(), n, want.data(), n, o.bias, o.random);
      for (std::size_t i = 0; i < m * n; ++i) {
        const float w = static_cast<float>(want[i]);
        EXPECT_TRUE(bits_of(Cf[i]) == bits_of(w) || (std::isnan(Cf[i]) && std::isnan(w))) << text << " fp32 output " << i;
      }
      ++cases;
    }
  }
  EXPECT_EQ(cases, static_cast<int>(std::size(specs)) * 4);
}

// Operands for the packing tests: normal values mixed with values in and around the CFG-5 gap
// (0, s1) below e5m2:cfg5's smallest value s1 = 1.25 2^-15, including its exact midpoint
// s1 / 2 (a tie) and both signs, which the packing decides in the vector lanes.
std::vector<double> gap_operand(std::size_t count, std::mt19937_64& g) {
  const double s1 = 1.25 * std::ldexp(1.0, -15);
  const double special[] = {s1 / 2, -s1 / 2, s1, -s1, 0.3 * s1, -0.7 * s1, 0.5000001 * s1, 0.4999999 * s1, 1e-30, -0.0};
  std::normal_distribution<double> d(0.0, 1.0);
  std::uniform_int_distribution<int> kind(0, 9);
  std::uniform_int_distribution<std::size_t> pick(0, std::size(special) - 1);
  std::vector<double> v(count);
  for (auto& x : v) {
    const int c = kind(g);
    x = c < 4 ? d(g) : (c < 7 ? d(g) * s1 : special[pick(g)]);
  }
  return v;
}

// op(A) = M (m x k) and op(B) = N (k x n) stored as each op reads them.
struct Stored {
  std::vector<double> A, B;
  std::size_t lda, ldb;
};
Stored store(GemmOp op, const std::vector<double>& M, const std::vector<double>& Nm, std::size_t m, std::size_t n,
             std::size_t k) {
  Stored s;
  // Padded leading dimensions: the kernels must read only the elements op(A) and op(B) use.
  s.lda = (op == GemmOp::tn ? m : k) + 3;
  s.ldb = (op == GemmOp::nt ? k : n) + 2;
  s.A.assign((op == GemmOp::tn ? k : m) * s.lda, NAN);
  s.B.assign((op == GemmOp::nt ? n : k) * s.ldb, NAN);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t p = 0; p < k; ++p) (op == GemmOp::tn ? s.A[p * s.lda + i] : s.A[i * s.lda + p]) = M[i * k + p];
  for (std::size_t p = 0; p < k; ++p)
    for (std::size_t j = 0; j < n; ++j) (op == GemmOp::nt ? s.B[j * s.ldb + p] : s.B[p * s.ldb + j]) = Nm[p * n + j];
  return s;
}

// The SIMD path on the shapes layers use, shrunk: wide n (FWD), narrow n with the reduction
// long (GRAD, cut into several blocks of p), n = 1 (bias gradient: computed transposed), m = 1,
// a Linear layer's few classes, every transpose, every bias layout, the fp64 and the fp32
// overloads (the fp32 one quantizes and packs straight from fp32), 1 and 2 threads and every
// SIMD level: all equal to gemm_ref bit for bit.
TEST(Gemm, SimdShapesBiasesAndOverloadsEqualTheReference) {
  struct Shape {
    std::size_t m, n, k;
  };
  // (GEMMs below about 10^5 MACs run on one thread whatever the option says; {8, 8, 2100} splits
  // rows between two threads, {64, 1, 2100} splits one transposed row's columns.)
  const Shape shapes[] = {{6, 300, 25}, {6, 25, 700}, {16, 1, 1100}, {40, 1, 9}, {1, 300, 40}, {20, 10, 30},
                          {10, 17, 20}, {3, 2, 5}, {9, 70, 3}, {8, 8, 2100}, {64, 1, 2100}};
  const char* specs[] = {"in=e5m2:cfg5 prod=exact acc=e6m5 order=seq", "in=e5m2:cfg5 acc=fp32", "in=e5m2:cfg5 acc=q8.13",
                         "a=e4m3 b=e5m2:cfg5 acc=fp16 out=e5m2@sr"};
  std::mt19937_64 g(99);
  int spec_index = 0;
  for (const char* text : specs) {
    const MacSpec spec = MacSpec::parse(text);
    ASSERT_TRUE(gemm_is_vectorized(spec)) << text;
    for (const Shape& sh : shapes) {
      const std::size_t m = sh.m, n = sh.n, k = sh.k;
      // Exactly fp32 values, so that both overloads see the same operands.
      auto M = gap_operand(m * k, g), Nm = gap_operand(k * n, g);
      for (auto& x : M) x = static_cast<float>(x);
      for (auto& x : Nm) x = static_cast<float>(x);
      const auto bias_values = hard_operand(m * n, 1.0, g, false);
      std::vector<double> bias(bias_values.size());
      for (std::size_t i = 0; i < bias.size(); ++i) bias[i] = static_cast<float>(bias_values[i]);
      const BiasView biases[] = {{}, {bias.data(), 1, 0}, {bias.data(), 0, 1}, {bias.data(), static_cast<std::ptrdiff_t>(n), 1},
                                 {bias.data(), 0, 0}};
      // One bias layout and one op per shape and spec (all of them over the loop).
      const int variant = spec_index + static_cast<int>(&sh - shapes);
      const BiasView bias_view = biases[variant % 5];
      const GemmOp op = std::array{GemmOp::nn, GemmOp::nt, GemmOp::tn}[static_cast<std::size_t>(variant % 3)];
      const MacRandom rnd{5, static_cast<std::uint32_t>(variant)};
      std::vector<double> want(m * n);
      gemm_ref(spec, GemmOp::nn, m, n, k, M.data(), k, Nm.data(), n, want.data(), n, bias_view, rnd);
      const Stored st = store(op, M, Nm, m, n, k);
      const std::vector<float> Af(st.A.begin(), st.A.end()), Bf(st.B.begin(), st.B.end());
      for (SimdLevel level : available_simd_levels()) {
        LevelGuard guard(level);
        for (int threads : {1, 2}) {
          GemmOptions o;
          o.bias = bias_view;
          o.random = rnd;
          o.threads = threads;
          const std::size_t ldc = n + 1;
          std::vector<double> got(m * ldc, -7.0);
          std::vector<float> gotf(m * ldc, -7.0f);
          gemm(spec, op, m, n, k, st.A.data(), st.lda, st.B.data(), st.ldb, got.data(), ldc, o);
          gemm(spec, op, m, n, k, Af.data(), st.lda, Bf.data(), st.ldb, gotf.data(), ldc, o);
          std::size_t bad = 0;
          for (std::size_t i = 0; i < m; ++i) {
            for (std::size_t j = 0; j < n; ++j) {
              const double w = want[i * n + j];
              const bool same = bits_of(got[i * ldc + j]) == bits_of(w) && bits_of(gotf[i * ldc + j]) == bits_of(static_cast<float>(w));
              if (!same && bad++ < 3) {
                ADD_FAILURE() << text << " " << m << "x" << n << "x" << k << " op " << static_cast<int>(op) << " bias "
                              << variant % 5 << " level " << to_string(level) << " threads " << threads << ": (" << i << ", "
                              << j << ") got " << got[i * ldc + j] << " / " << gotf[i * ldc + j] << " want " << w;
              }
            }
            EXPECT_EQ(got[i * ldc + n], -7.0) << "column n of row " << i << " is outside C";
            EXPECT_EQ(gotf[i * ldc + n], -7.0f) << "column n of row " << i << " is outside C";
          }
        }
      }
    }
    ++spec_index;
  }
}

// Each input read alone: k = 1, B = 1 and a bias of -0 make the n = 3 outputs of row i the
// input A[i] as the MAC reads it (an fp32 value in these tests), with its sign even where it
// rounds to zero (-0 + -0 = -0). The reference must give read(A[i]), and gemm() the
// reference's bits at every SIMD level.
template <class Read>
void expect_each_input_read_alone(const MacSpec& spec, const std::vector<double>& A, const std::string& text, Read read) {
  const std::size_t m = A.size(), n = 3, k = 1;
  const std::vector<double> B(n, 1.0);
  const double minus_zero = -0.0;
  GemmOptions o;
  o.bias = {&minus_zero, 0, 0};
  std::vector<double> want(m * n), got(m * n);
  gemm_ref(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, want.data(), n, o.bias);
  for (std::size_t i = 0; i < m; ++i) EXPECT_EQ(bits_of(want[i * n]), bits_of(read(A[i]))) << text << " " << A[i];
  for (SimdLevel level : available_simd_levels()) {
    LevelGuard guard(level);
    gemm(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, got.data(), n, o);
    for (std::size_t i = 0; i < m * n; ++i) {
      EXPECT_EQ(bits_of(got[i]), bits_of(want[i])) << text << " " << to_string(level) << " input " << A[i / n];
    }
  }
}

// Inputs rounded in every deterministic mode: the CFG-5 gap decided in the vector lanes (a
// midpoint s1 / 2 is a tie between the codes 0 and 1) agrees with the reference.
TEST(Gemm, InputRoundingModesInTheCfg5Gap) {
  std::mt19937_64 g(7);
  for (const char* mode : {"rne", "rna", "rz", "ru", "rd", "ro"}) {
    const std::string text = std::string("a=e5m2:cfg5@") + mode + " b=e5m2:cfg5@" + mode + " acc=fp32";
    const MacSpec spec = MacSpec::parse(text);
    ASSERT_TRUE(gemm_is_vectorized(spec)) << text;
    expect_each_input_read_alone(spec, gap_operand(37, g), text, [&](double x) { return quantize(x, spec.a); });
  }
}

// Operands around a float format's subnormal range, all exactly fp32: its subnormal codes (the
// step q times 1, 2, ... below the smallest normal), values between them (midpoints included,
// where each mode decides differently) and below the smallest step, the smallest normal, normal
// values, zeros of both signs.
std::vector<double> subnormal_operand(std::size_t count, const Format& f, std::mt19937_64& g) {
  const double min_normal = describe(f).min_normal;
  const double q = std::ldexp(min_normal, -f.float_spec().man_bits);
  const auto codes = static_cast<int>(std::lround(min_normal / q)) - 1;
  std::uniform_int_distribution<int> kind(0, 9), code(1, codes), sign(0, 1);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<double> v(count);
  for (auto& x : v) {
    switch (kind(g)) {
      case 0: case 1: case 2: x = code(g) * q; break;
      case 3: x = (code(g) - 0.5) * q; break;
      case 4: x = u(g) * min_normal; break;
      case 5: x = u(g) * q; break;
      case 6: x = min_normal; break;
      case 7: x = 0.0; break;
      default: x = d(g); break;
    }
    x = static_cast<float>(sign(g) ? -x : x);
  }
  return v;
}

// CFG-2 inputs (sub=flushout): the multiplier reads subnormal codes as their values, while
// rounding into the format flushes subnormal results. The kernels' packing (gemm_fast.h,
// input_packing) must keep every code and round everything else as the format does, in every
// deterministic mode, in both overloads, both packing directions (nt and tn transpose), every
// SIMD level and accumulator kind — as gemm_ref.
TEST(Gemm, Cfg2InputsKeepTheirSubnormalCodes) {
  std::mt19937_64 g(2);
  // One input per output (k = 1, B = 1, bias -0): the output is the input as read. The oracle:
  // a subnormal code of e5m2 is j 2^-16, j = 1, 2, 3; anything else is rounded into the format.
  for (const char* mode : {"rne", "rna", "rz", "ru", "rd", "ro"}) {
    const std::string text = std::string("a=e5m2:cfg2@") + mode + " b=e5m2:cfg2@" + mode + " acc=fp32";
    const MacSpec spec = MacSpec::parse(text);
    ASSERT_TRUE(gemm_is_vectorized(spec)) << text;
    expect_each_input_read_alone(spec, subnormal_operand(64, spec.a, g), text, [&](double x) {
      const double j = std::ldexp(std::fabs(x), 16);
      const bool code = j >= 1 && j <= 3 && j == std::trunc(j);
      return code ? x : quantize(x, spec.a);
    });
  }
  // Whole GEMMs: the CFG-2 multiplier of the FPGA study and other accumulators.
  const char* specs[] = {"in=e5m2:cfg2 prod=e5m2:cfg2 acc=fp32", "in=e5m2:cfg2 acc=e6m5", "in=e5m2:cfg2 acc=q8.13",
                         "a=e4m3:sub=flushout@rz b=e5m2:cfg2@ru acc=fp16@rd", "in=fp16:sub=flushout acc=fp32",
                         "in=e5m2:cfg2 acc=e6m5@sr", "in=e5m2:cfg2 acc=e6m5 order=ftree8 outer=fp32"};
  std::uniform_int_distribution<std::size_t> dim(1, 24), kdim(1, 90);
  int variant = 0;
  for (const char* text : specs) {
    const MacSpec spec = MacSpec::parse(text);
    ASSERT_TRUE(gemm_is_vectorized(spec)) << text;
    for (const GemmOp op : {GemmOp::nn, GemmOp::nt, GemmOp::tn}) {
      const std::size_t m = dim(g), n = dim(g) * 3, k = kdim(g);
      const auto M = subnormal_operand(m * k, spec.a, g), Nm = subnormal_operand(k * n, spec.b, g);
      const MacRandom rnd{3, static_cast<std::uint32_t>(variant++)};
      std::vector<double> want(m * n);
      gemm_ref(spec, GemmOp::nn, m, n, k, M.data(), k, Nm.data(), n, want.data(), n, {}, rnd);
      const Stored st = store(op, M, Nm, m, n, k);
      const std::vector<float> Af(st.A.begin(), st.A.end()), Bf(st.B.begin(), st.B.end());
      for (SimdLevel level : available_simd_levels()) {
        LevelGuard guard(level);
        for (int threads : {1, 2}) {
          GemmOptions o;
          o.random = rnd;
          o.threads = threads;
          std::vector<double> got(m * n);
          std::vector<float> gotf(m * n);
          gemm(spec, op, m, n, k, st.A.data(), st.lda, st.B.data(), st.ldb, got.data(), n, o);
          gemm(spec, op, m, n, k, Af.data(), st.lda, Bf.data(), st.ldb, gotf.data(), n, o);
          const std::string context = std::string(text) + " op " + std::to_string(static_cast<int>(op)) + " " +
                                      std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) + " level " +
                                      to_string(level) + " threads " + std::to_string(threads);
          expect_same_bits(got, want, context);
          std::vector<double> wantf(want.size()), gotf64(gotf.begin(), gotf.end());
          for (std::size_t i = 0; i < want.size(); ++i) wantf[i] = static_cast<float>(want[i]);
          expect_same_bits(gotf64, wantf, context + " (fp32 overload)");
        }
      }
    }
  }
}

// Many panels (several to a task's slab) and blocks of p of every size down to the smallest
// (the accumulators carried from one block of p to the next), for every transpose, orientation
// and thread count: the block size changes no bit.
TEST(Gemm, BlocksOfColumnsAndDepthChangeNothing) {
  const MacSpec spec = MacSpec::parse("in=e5m2:cfg5 prod=exact acc=e6m5 order=seq");
  struct Shape {
    std::size_t m, n, k;
  };
  std::mt19937_64 g(3);
  for (const Shape sh : {Shape{1, 2100, 150}, Shape{2, 700, 300}, Shape{70, 3, 400}}) {
    const std::size_t m = sh.m, n = sh.n, k = sh.k;
    auto M = gap_operand(m * k, g), Nm = gap_operand(k * n, g);
    for (auto& x : M) x = static_cast<float>(x);
    for (auto& x : Nm) x = static_cast<float>(x * 0.01);
    const auto bias = hard_operand(n, 1.0, g, false);
    const BiasView bv{bias.data(), 0, 1};
    std::vector<double> want(m * n);
    gemm_ref(spec, GemmOp::nn, m, n, k, M.data(), k, Nm.data(), n, want.data(), n, bv);
    for (GemmOp op : {GemmOp::nn, GemmOp::nt, GemmOp::tn}) {
      const Stored st = store(op, M, Nm, m, n, k);
      const std::vector<float> Af(st.A.begin(), st.A.end()), Bf(st.B.begin(), st.B.end());
      for (std::size_t block : {std::size_t{0}, std::size_t{1}, std::size_t{5000}}) {
        for (int threads : {1, 2}) {
          GemmOptions o;
          o.bias = bv;
          o.threads = threads;
          o.block_bytes = block;
          std::vector<float> got(m * n);
          gemm(spec, op, m, n, k, Af.data(), st.lda, Bf.data(), st.ldb, got.data(), n, o);
          std::size_t bad = 0;
          for (std::size_t i = 0; i < m * n; ++i) {
            if (bits_of(got[i]) != bits_of(static_cast<float>(want[i])) && bad++ < 3) {
              ADD_FAILURE() << m << "x" << n << "x" << k << " op " << static_cast<int>(op) << " block " << block
                            << " threads " << threads << ": output " << i << " got " << got[i] << " want " << want[i];
            }
          }
        }
      }
    }
  }
}

// Stochastic rounding in the accumulator (sr) on the SIMD path: every step's random word keyed
// by (seed, GEMM id, output, step, site) as the reference keys it, so the results are the
// reference's bit for bit in both orientations (normal and transposed: other output indices per
// lane), across blocks of p (other steps per block), with per-output bias roundings, sums that
// are inexact in the fp64 lane (a large bias swamping tiny products: those steps go to the
// reference rounding), overflow, infinities and NaN, every SIMD level and 1 and 2 threads.
TEST(Gemm, StochasticAccumulatorEqualsTheReference) {
  const char* specs[] = {"in=e5m2:cfg5 prod=exact acc=e6m5@sr order=seq", "in=e4m3 acc=fp16@sr", "in=e5m2 acc=fp32@sr",
                         "in=bf16 acc=bf16@sr out=e5m2@sr", "in=e5m2 acc=e6m5@sr8", "in=e4m3 acc=fp16@sr13",
                         "in=e5m2:cfg5 acc=bf16@sr1", "in=e5m2 acc=e5m5@sr32",
                         // chunks summed stochastically, chunk sums into a round-to-nearest outer
                         "in=e5m2 acc=e6m5@sr order=chunk8 outer=fp32", "in=e4m3 acc=fp16@sr4 order=chunk5 outer=fp32",
                         "in=e5m2 acc=e6m5@sr order=chunk3 outer=bf16@rd", "in=e5m2 acc=e6m5@sr order=chunk16 outer=q11.13@rz",
                         // fused adder trees rounding each exact group sum stochastically (group's random word)
                         "in=e5m2 acc=e6m5@sr order=ftree8 outer=fp32", "in=e4m3 acc=fp16@sr4 order=ftree16 outer=fp32",
                         "in=e5m2 acc=bf16@sr order=ftree5 outer=q8.13",
                         // adder trees whose every adder rounds stochastically
                         "in=e5m2 acc=e6m5@sr order=tree8 outer=fp32", "in=e4m3 acc=fp16@sr8 order=tree3 outer=fp32",
                         "in=e5m2 acc=e5m5@sr order=tree4 outer=fp16",
                         // stochastic outers (chunk sums or group values rounded with the outer_add word)
                         "in=e5m2 acc=e6m5 order=chunk8 outer=fp16@sr", "in=e5m2 acc=e6m5@sr order=chunk8",
                         "in=e4m3 acc=fp16 order=tree4 outer=bf16@sr4", "in=e5m2 acc=bf16@sr order=ftree16 outer=e6m5@sr8",
                         // products rounded (deterministically) before a stochastic accumulator
                         "in=e5m2 prod=e5m2 acc=e6m5@sr", "in=fp16 prod=bf16@rz acc=fp32@sr8 order=chunk16 outer=fp32",
                         "in=e4m3 prod=e4m3:sat@ru acc=fp16@sr order=ftree8 outer=fp32", "in=e5m2 prod=q4.9 acc=e6m5@sr order=tree4 outer=fp32"};
  struct Case {
    std::size_t m, n, k;
    double scale, bias;
    bool specials;
  };
  const Case cases[] = {{5, 37, 60, 1.0, 1.0, false}, {23, 2, 40, 1.0, 1.0, false}, {3, 19, 50, 3e-5, 1e6, false},
                        {4, 21, 30, 300.0, 1.0, true}, {2, 9, 600, 0.1, 1.0, false}};
  std::mt19937_64 g(11);
  for (const char* text : specs) {
    const MacSpec spec = MacSpec::parse(text);
    ASSERT_TRUE(gemm_is_vectorized(spec)) << text;
    int index = 0;
    for (const Case& c : cases) {
      const std::size_t m = c.m, n = c.n, k = c.k;
      const auto A = hard_operand(m * k, c.scale, g, c.specials), B = hard_operand(k * n, c.scale, g, c.specials);
      auto bias = hard_operand(m * n, c.bias, g, false);
      const BiasView bv = index % 2 ? BiasView{bias.data(), static_cast<std::ptrdiff_t>(n), 1} : BiasView{bias.data(), 1, 0};
      const MacRandom rnd{1234, static_cast<std::uint32_t>(index)};
      const GemmOp op = std::array{GemmOp::nn, GemmOp::nt, GemmOp::tn}[static_cast<std::size_t>(index % 3)];
      std::vector<double> want(m * n);
      gemm_ref(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, want.data(), n, bv, rnd);
      const Stored st = store(op, A, B, m, n, k);
      for (SimdLevel level : available_simd_levels()) {
        LevelGuard guard(level);
        for (int threads : {1, 2}) {
          GemmOptions o;
          o.bias = bv;
          o.random = rnd;
          o.threads = threads;
          o.block_bytes = threads == 2 ? 1 : 0;  // blocks of p as short as they go, or one block
          std::vector<double> got(m * n);
          gemm(spec, op, m, n, k, st.A.data(), st.lda, st.B.data(), st.ldb, got.data(), n, o);
          expect_same_bits(got, want,
                           std::string(text) + " case " + std::to_string(index) + " " + std::to_string(m) + "x" +
                               std::to_string(n) + "x" + std::to_string(k) + " level " + to_string(level) + " threads " +
                               std::to_string(threads));
        }
      }
      ++index;
    }
  }
}

// Fixed-point accumulators that saturate through their sums (every product well inside the
// range, the running sums far beyond it, at both ends), and products that fall exactly
// halfway between grid points of the accumulator.
// Exact cancellation: x + (-x) is -0 when the accumulator rounds toward negative and +0
// otherwise (IEEE 754, as the reference adds), in every kernel kind that takes directed modes.
TEST(Gemm, ExactlyCancellingSumsTakeTheModesZeroSign) {
  // The m x 1 result A (m x k) * B (k x 1) at every SIMD level, bit for bit against the
  // reference, which it returns.
  const auto kernels_equal_reference = [](const char* text, std::size_t m, std::size_t k, const std::vector<double>& A,
                                          const std::vector<double>& B) {
    const MacSpec spec = MacSpec::parse(text);
    std::vector<double> want(m), got(m);
    gemm_ref(spec, GemmOp::nn, m, 1, k, A.data(), k, B.data(), 1, want.data(), 1);
    for (SimdLevel level : available_simd_levels()) {
      LevelGuard guard(level);
      gemm(spec, GemmOp::nn, m, 1, k, A.data(), k, B.data(), 1, got.data(), 1);
      expect_same_bits(got, want, std::string(text) + " level " + to_string(level));
    }
    return want;
  };
  // Row 0 cancels to zero at step 1 and stays there; row 1 ends on -x + x; row 2 sums +0s.
  const std::vector<double> A = {1.5, -1.5, 0.0, 0.0, -0.75, 0.75, 0.0, 0.0, 0.0};
  const std::vector<double> B = {1.0, 1.0, 1.0};  // k = 3, n = 1
  for (const char* text : {"in=e5m2 acc=e6m5@rd", "in=e5m2 acc=e6m5@ru", "in=e5m2 acc=e6m5@rz", "in=e4m3fn acc=e6m5",
                           "in=e5m2 acc=q8.13@rd", "in=e5m2 prod=e6m5@rd acc=fp16@rd", "in=e5m2 acc=e6m5@rd order=chunk2 outer=fp32",
                           "in=e5m2 acc=e6m5@rd order=kahan"}) {
    const MacSpec spec = MacSpec::parse(text);
    ASSERT_TRUE(gemm_is_vectorized(spec)) << text;
    const std::vector<double> want = kernels_equal_reference(text, 3, 3, A, B);
    if (spec.acc->kind() == FormatKind::floating && spec.acc->rounding().mode == RoundMode::rd && !spec.outer) {
      EXPECT_TRUE(std::signbit(want[0]) && want[0] == 0) << text;  // the reference's sign, checked too
    }
  }
  // Block sums that cancel in outer (blocks of 64 along k = 128).
  std::vector<double> Ab(128, 0.0), Bb(128, 1.0);
  Ab[0] = 1.5;
  Ab[64] = -1.5;
  for (const char* text : {"in=hbfp8/64 outer=fp32@rd", "in=hbfp8/64 outer=fp32@ru", "in=mxfp8_e4m3 outer=bf16@rd"}) {
    const MacSpec spec = MacSpec::parse(text);
    const std::vector<double> want = kernels_equal_reference(text, 1, 128, Ab, Bb);
    EXPECT_EQ(std::signbit(want[0]), spec.outer_format()->rounding().mode == RoundMode::rd) << text;
  }
}

TEST(Gemm, FixedPointAccumulatorsSaturateAndRoundTies) {
  struct Case {
    const char* spec;
    double a;  // rows of A are about +-a, B about +1.3: sums drift by about 1.3 a per step
  };
  std::mt19937_64 g(5);
  for (const Case c : {Case{"in=e5m2 acc=q8.13", 6.0}, Case{"in=e4m3 acc=q4.3", 1.5}, Case{"in=int8 acc=int14", 100.0}}) {
    const MacSpec spec = MacSpec::parse(c.spec);
    ASSERT_TRUE(gemm_is_vectorized(spec)) << c.spec;
    const std::size_t m = 9, n = 40, k = 300;
    std::normal_distribution<double> d(0.0, 1.0);
    std::vector<double> A(m * k), B(k * n);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t p = 0; p < k; ++p) A[i * k + p] = quantize((i % 2 ? c.a : -c.a) * (1 + 0.2 * d(g)), spec.a);
    // Powers of two (products on half steps of the grid) and other values, all positive.
    for (auto& x : B) x = quantize(d(g) < 0 ? std::ldexp(1.0, -static_cast<int>(std::fabs(d(g)) * 6)) : std::fabs(d(g)) + 0.5, spec.b);
    std::vector<double> want(m * n), got(m * n);
    gemm_ref(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, want.data(), n);
    const FormatInfo info = describe(*spec.acc);
    std::size_t at_max = 0, at_min = 0;
    for (double w : want) {
      at_max += w == info.max_finite;
      at_min += w == info.min_finite;
    }
    EXPECT_GT(at_max, 0u) << c.spec << ": no output saturates high";
    EXPECT_GT(at_min, 0u) << c.spec << ": no output saturates low";
    for (SimdLevel level : available_simd_levels()) {
      LevelGuard guard(level);
      gemm(spec, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, got.data(), n);
      std::size_t bad = 0;
      for (std::size_t i = 0; i < m * n; ++i) {
        if (bits_of(got[i]) != bits_of(want[i]) && bad++ < 3) {
          ADD_FAILURE() << c.spec << " " << to_string(level) << ": output " << i << " got " << got[i] << " want " << want[i];
        }
      }
    }
  }
}

// A product beyond a fixed-point accumulator's range (but within the kernels' clamp of twice
// it) is converted first, saturating, and then added: -100 + q(150) = -100 + (128 - 2^-13) in
// q8.13, not the saturation of -100 + 150 = 50. (Found by the randomized sweep,
// tests/test_gemm_sweep.cpp.) Also in q11.13 (fp64 lanes), and with 1000 columns of it so that
// whole vectors take the fast block.
TEST(Gemm, FixedPointProductsSaturateBeforeTheAdd) {
  // Unsigned accumulators: a negative product converts to 0 before the add (1 + 0 = 1, not
  // max(1 - 1, 0) = 0), in fp32 and fp64 lanes, over whole vectors.
  for (const char* text : {"in=e5m2 acc=uq8.8", "in=fp32 acc=uint16", "in=fp32 acc=uq16.20"}) {
    const MacSpec spec = MacSpec::parse(text);
    ASSERT_TRUE(gemm_is_vectorized(spec)) << text;
    const std::size_t n = 300;
    const double a[] = {1.0, -1.0};
    const std::vector<double> B(2 * n, 1.0);
    for (SimdLevel level : available_simd_levels()) {
      LevelGuard guard(level);
      std::vector<double> c(n, 7.0);
      gemm(spec, GemmOp::nn, 1, n, 2, a, 2, B.data(), n, c.data(), n);
      for (std::size_t j = 0; j < n; j += 37) EXPECT_EQ(c[j], 1.0) << text << " " << to_string(level) << " column " << j;
    }
  }
  for (const auto& [text, lo, big] : {std::tuple{"in=fp32 acc=q8.13", -100.0, 150.0}, std::tuple{"in=fp32 acc=q11.13", -1000.0, 1528.0}}) {
    const MacSpec spec = MacSpec::parse(text);
    ASSERT_TRUE(gemm_is_vectorized(spec)) << text;
    const double max = describe(*spec.acc).max_finite;
    const std::size_t n = 1000;
    const double a[] = {lo, big};
    const std::vector<double> B(2 * n, 1.0);
    for (SimdLevel level : available_simd_levels()) {
      LevelGuard guard(level);
      std::vector<double> c(n, 7.0);
      gemm(spec, GemmOp::nn, 1, n, 2, a, 2, B.data(), n, c.data(), n);
      for (std::size_t j = 0; j < n; j += 97) EXPECT_EQ(c[j], lo + max) << text << " " << to_string(level) << " column " << j;
    }
  }
}

// order=ftreeN where a lane's pair hi + lo cannot hold the group's exact sum: with e5m2 inputs
// and an e6m5 accumulator the kernel runs in fp32 lanes, and the group 2^30, 2^-30, 64, -64,
// 2^24 loses 2^-30 from lo (lo = 2^-30 + 64 needs 37 bits). The exact sum 2^30 + 2^24 + 2^-30
// lies just above the midpoint of e6m5's neighbours 2^30 and 2^30 + 2^25, so it rounds up;
// without the 2^-30 it would be a tie, rounding to even (down). Also an exact zero sum under
// rd, which IEEE 754 makes -0.
TEST(Gemm, FusedTreeSumsEachGroupExactly) {
  const double a[] = {0x1p15, 0x1p-15, 8, 8, 0x1p12}, b[] = {0x1p15, 0x1p-15, 8, -8, 0x1p12};
  const MacSpec spec = MacSpec::parse("in=e5m2 acc=e6m5 order=ftree8");
  ASSERT_TRUE(detail::plan_gemm_fast(spec).ok);
  ASSERT_TRUE(detail::plan_gemm_fast(spec).f32);  // fp32 lanes: hi + lo hold 48 bits
  const std::size_t n = 19;  // every column the same dot product: full vectors and a partial one
  std::vector<double> B(5 * n);
  for (std::size_t p = 0; p < 5; ++p) std::fill_n(B.begin() + static_cast<std::ptrdiff_t>(p * n), n, b[p]);
  const double want = 0x1p30 + 0x1p25;
  std::vector<double> ref(n);
  gemm_ref(spec, GemmOp::nn, 1, n, 5, a, 5, B.data(), n, ref.data(), n);
  for (SimdLevel level : available_simd_levels()) {
    LevelGuard guard(level);
    std::vector<double> got(n);
    gemm(spec, GemmOp::nn, 1, n, 5, a, 5, B.data(), n, got.data(), n);
    std::vector<float> af(a, a + 5), Bf(B.begin(), B.end()), gotf(n);
    gemm(spec, GemmOp::nn, 1, n, 5, af.data(), 5, Bf.data(), n, gotf.data(), n);
    for (std::size_t j = 0; j < n; ++j) {
      EXPECT_EQ(got[j], want) << to_string(level) << " column " << j;
      EXPECT_EQ(static_cast<double>(gotf[j]), want) << to_string(level) << " fp32 column " << j;
      EXPECT_EQ(ref[j], want) << "reference, column " << j;
    }
  }
  const MacSpec down = MacSpec::parse("in=e5m2 acc=e6m5@rd order=ftree2");
  ASSERT_TRUE(gemm_is_vectorized(down));
  const double x[] = {1.5, -1.5}, y[] = {2, 2};
  for (SimdLevel level : available_simd_levels()) {
    LevelGuard guard(level);
    double c = 1;
    gemm(down, GemmOp::nn, 1, 1, 2, x, 2, y, 1, &c, 1);
    EXPECT_EQ(bits_of(c), bits_of(-0.0)) << to_string(level);
  }
}

// acc=exact: the pair hi + lo is the exact sum until its second error is nonzero; then the
// output is the reference's. 1 + 2^-53 + 2^-120 rounds to 1 + 2^-52 in fp64 (above the
// midpoint), but a pair that dropped 2^-120 would give the tie 1 + 2^-53 and round to 1. Exact
// zeros: -0 only where the bias and every product are -0.
TEST(Gemm, ExactAccumulationKeepsEveryBitAndTheZeroSign) {
  const MacSpec spec = MacSpec::parse("in=fp32 acc=exact");
  ASSERT_TRUE(gemm_is_vectorized(spec));
  const double a[] = {1.0, std::ldexp(1.0, -27), std::ldexp(1.0, -60)};
  const double b[] = {1.0, std::ldexp(1.0, -26), std::ldexp(1.0, -60)};
  const double mz = -0.0, pz = 0.0;
  const double az[] = {-0.0, 2.0, -0.0}, bz[] = {1.0, -0.0, 5.0};  // products -0, -0, -0
  for (SimdLevel level : available_simd_levels()) {
    LevelGuard guard(level);
    double c = 7;
    gemm(spec, GemmOp::nn, 1, 1, 3, a, 3, b, 1, &c, 1);
    EXPECT_EQ(c, 1.0 + std::ldexp(1.0, -52)) << to_string(level);
    GemmOptions o;
    o.bias = {&mz, 0, 0};
    gemm(spec, GemmOp::nn, 1, 1, 3, az, 3, bz, 1, &c, 1, o);
    EXPECT_EQ(bits_of(c), bits_of(-0.0)) << to_string(level);
    o.bias = {&pz, 0, 0};
    gemm(spec, GemmOp::nn, 1, 1, 3, az, 3, bz, 1, &c, 1, o);
    EXPECT_EQ(bits_of(c), bits_of(0.0)) << to_string(level);
    const double ac[] = {3.0, -3.0}, bc[] = {1.0, 1.0};  // 3 + (-3): +0 even from a bias of -0
    o.bias = {&mz, 0, 0};
    gemm(spec, GemmOp::nn, 1, 1, 2, ac, 2, bc, 1, &c, 1, o);
    EXPECT_EQ(bits_of(c), bits_of(0.0)) << to_string(level);
  }
}

TEST(Gemm, SpecsOutsideTheKernelsRunThroughTheReference) {
  for (const char* text : {"in=e5m2 acc=fp16 order=chunk8 outer=fp64@sr", "in=e5m2 acc=e6m5@sr order=chunk8 outer=e5m2fnuz@sr", "in=e5m2 acc=q8.13 order=kahan", "in=e5m2 acc=e6m5@sr order=kahan", "in=fp64 acc=fp64", "in=fp32 acc=fp64@rz",
                           "in=e5m2 prod=e6m5@sr acc=e6m5", "in=e5m2 acc=exact order=chunk8 outer=fp32", "in=e5m2 prod=e6m5 acc=exact",
                           "in=e5m2 acc=exact out=bf16@sr", "in=fp64 acc=exact", "in=bf16 acc=exact out=fp64",
                           "in=e5m2 acc=exact out=q30.23", "in=e5m2 acc=q8.13:wrap"}) {
    EXPECT_FALSE(gemm_is_vectorized(MacSpec::parse(text))) << text;
  }
}

TEST(Gemm, BadCallsFailBeforeAnyWork) {
  const MacSpec spec = MacSpec::parse("in=e5m2 acc=e6m5");
  std::vector<double> A(4, 1.0), B(4, 1.0), C(4, 7.0);
  EXPECT_THROW(gemm(spec, GemmOp::nn, 2, 2, 2, A.data(), 1, B.data(), 2, C.data(), 2), std::invalid_argument);
  EXPECT_THROW(gemm(spec, GemmOp::nn, 2, 2, 2, A.data(), 2, B.data(), 2, C.data(), 1), std::invalid_argument);
  EXPECT_EQ(C, std::vector<double>(4, 7.0));
  EXPECT_THROW((void)MacSpec::parse("in=e5m2 acc=e6m5 order=chunk0"), MacSpecError);
}

}  // namespace
}  // namespace mpsim::test
