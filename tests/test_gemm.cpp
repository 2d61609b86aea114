// The GEMM entry point (include/mpsim/gemm.h) against the reference gemm_ref, bit for bit:
// every transpose, bias layouts, stochastic rounding, 1 and 2 threads, the fp32 overload, and
// shape errors before any work.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "mpsim/gemm.h"
#include "mpsim/mac.h"
#include "mpsim/quantize.h"
#include "mpsim/quantize_array.h"
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

TEST(Gemm, SimdKernelsEqualTheReference) {
  const char* specs[] = {"in=e5m2:cfg5 prod=exact acc=e6m5 order=seq", "in=e5m2:cfg5 acc=fp32", "in=e5m2:cfg5 acc=q8.13",
                         "in=e5m2 acc=e5m5", "in=e5m2 acc=bf16", "in=e4m3 acc=fp16",
                         "in=fp16 acc=fp32 out=bf16", "in=bf16 acc=q8.13", "in=e5m2 acc=q11.13", "in=int8 acc=int32",
                         "in=e5m2:cfg5 acc=e6m5 out=e5m2@sr", "a=e4m3 b=e5m2 acc=fp16:sat", "in=e5m2:cfg4 acc=e6m5:cfg4"};
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
          std::size_t bad = 0;
          for (std::size_t i = 0; i < m * n; ++i) {
            if (bits_of(got[i]) != bits_of(want[i]) && !(std::isnan(got[i]) && std::isnan(want[i])) && bad++ < 3) {
              ADD_FAILURE() << text << " " << m << "x" << n << "x" << k << " scale " << scale << " level "
                            << to_string(level) << " threads " << threads << ": output " << i << " got " << got[i]
                            << " want " << want[i];
            }
          }
        }
      }
    }
  }
}

TEST(Gemm, SpecsOutsideTheKernelsRunThroughTheReference) {
  for (const char* text : {"in=fp32 acc=fp32", "in=bf16 acc=fp32", "in=e4m3fn acc=e6m5", "in=e5m2 acc=e6m5@sr", "in=e5m2 acc=e6m5 order=chunk8",
                           "in=e5m2 prod=e6m5 acc=e6m5", "in=e5m2 acc=exact", "in=e5m2:cfg2 acc=e6m5", "in=e5m2 acc=q8.13:wrap"}) {
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
