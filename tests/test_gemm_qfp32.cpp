// The named fast mode qfp32 (QPyTorch's semantics): its grammar, and its results against two
// oracles -- OpenBLAS sgemm called here on operands rounded by the scalar quantizer (the same
// bits), and an fp64 GEMM of those operands (within the FP32 error bound) -- for every
// transpose, with a bias, padded leading dimensions and out= rounding; the exact engine refuses
// it, and a layer runs it through its ordinary GEMM dispatch.
#include <cblas.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mpsim/gemm.h"
#include "mpsim/layers.h"
#include "mpsim/mac.h"
#include "mpsim/quantize.h"

namespace mpsim {
namespace {

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::string parse_error(const std::string& text) {
  try {
    (void)MacSpec::parse(text);
  } catch (const MacSpecError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Qfp32Spec, ParsesPrintsAndCompares) {
  const MacSpec s = MacSpec::parse("qfp32 in=e5m2:cfg5");
  EXPECT_TRUE(s.qfp32);
  EXPECT_EQ(s.to_string(), "qfp32 in=e5m2:cfg5");
  EXPECT_EQ(MacSpec::parse(s.to_string()), s);
  const MacSpec t = MacSpec::parse("a=e4m3fn out=bf16 QFP32 b=e5m2");
  EXPECT_EQ(t.to_string(), "qfp32 a=e4m3fn b=e5m2 out=bf16");
  EXPECT_EQ(MacSpec::parse(t.to_string()), t);
  // The same formats without qfp32 are a bit-accurate MAC, a different spec.
  EXPECT_FALSE(MacSpec::parse("in=e5m2:cfg5") == s);
  EXPECT_FALSE(gemm_is_vectorized(s));
}

TEST(Qfp32Spec, RefusesMacItemsAndWideFormatsNamingTheItem) {
  EXPECT_NE(parse_error("qfp32 in=e5m2 acc=e6m5").find("'acc=e6m5'"), std::string::npos);
  EXPECT_NE(parse_error("qfp32 in=e5m2 acc=fp32").find("only in=, a=, b= and out="), std::string::npos);
  EXPECT_NE(parse_error("in=e5m2 order=chunk4 qfp32").find("'order=chunk4'"), std::string::npos);
  EXPECT_NE(parse_error("qfp32 in=e5m2 prod=exact").find("'prod=exact'"), std::string::npos);
  EXPECT_NE(parse_error("qfp32 fused in=e5m2").find("'fused'"), std::string::npos);
  EXPECT_NE(parse_error("qfp32 in=fp64").find("fp32 cannot hold"), std::string::npos);
  EXPECT_NE(parse_error("qfp32 in=e5m2 out=fp64").find("'out=fp64'"), std::string::npos);
  EXPECT_NE(parse_error("qfp32 qfp32 in=e5m2").find("more than once"), std::string::npos);
  EXPECT_NE(parse_error("qfp32=1 in=e5m2").find("takes no value"), std::string::npos);
  EXPECT_NE(parse_error("qfp32 in=e5m2@sr").find("stochastic"), std::string::npos);
  // A spec built by hand is checked too.
  MacSpec bad = MacSpec::parse("qfp32 in=e5m2");
  bad.acc = Format::parse("fp16");
  EXPECT_THROW(bad.validate(), MacSpecError);
}

TEST(Qfp32Spec, TheExactReferenceRefusesIt) {
  const MacSpec s = MacSpec::parse("qfp32 in=e5m2");
  const double a[2] = {1, 2}, b[2] = {3, 4};
  double c[1];
  EXPECT_THROW(gemm_ref(s, GemmOp::nn, 1, 1, 2, a, 2, b, 1, c, 1), MacSpecError);
  EXPECT_THROW((void)dot_ref(s, 2, a, 1, b, 1), MacSpecError);
}

struct Case {
  GemmOp op;
  std::size_t m, n, k, pad;  // pad: extra row length of every stored operand and of C
  bool bias;
  const char* spec;
};

// The stored rows x cols of A and B for an op.
std::size_t a_rows(const Case& c) { return c.op == GemmOp::tn ? c.k : c.m; }
std::size_t a_cols(const Case& c) { return c.op == GemmOp::tn ? c.m : c.k; }
std::size_t b_rows(const Case& c) { return c.op == GemmOp::nt ? c.n : c.k; }
std::size_t b_cols(const Case& c) { return c.op == GemmOp::nt ? c.k : c.n; }

TEST(Qfp32Gemm, EqualsSgemmOnOperandsRoundedByTheScalarQuantizerAndMeetsTheFp32Bound) {
  const Case cases[] = {
      {GemmOp::nn, 7, 33, 45, 0, false, "qfp32 in=e5m2:cfg5"},  {GemmOp::nt, 16, 70, 144, 3, true, "qfp32 in=e4m3fn"},
      {GemmOp::tn, 9, 12, 130, 1, true, "qfp32 a=e5m2 b=bf16"},  {GemmOp::nn, 1, 5, 0, 2, true, "qfp32 in=e5m2"},
      {GemmOp::nn, 64, 300, 64, 0, false, "qfp32 in=fp16 out=bf16"}, {GemmOp::tn, 5, 8, 17, 0, true, "qfp32 in=e3m2fn out=e4m3fn"},
  };
  std::mt19937 gen(3);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (const Case& c : cases) {
    const MacSpec spec = MacSpec::parse(c.spec);
    const std::size_t lda = a_cols(c) + c.pad, ldb = b_cols(c) + c.pad, ldc = c.n + c.pad;
    std::vector<float> A(a_rows(c) * lda), B(b_rows(c) * ldb), bias(c.m);
    for (float& x : A) x = dist(gen);
    for (float& x : B) x = dist(gen);
    for (float& x : bias) x = dist(gen);
    // The oracle's operands: each element rounded by the scalar quantizer (dense copies).
    std::vector<float> qa(a_rows(c) * a_cols(c)), qb(b_rows(c) * b_cols(c));
    for (std::size_t r = 0; r < a_rows(c); ++r)
      for (std::size_t q = 0; q < a_cols(c); ++q) qa[r * a_cols(c) + q] = quantize(A[r * lda + q], spec.a);
    for (std::size_t r = 0; r < b_rows(c); ++r)
      for (std::size_t q = 0; q < b_cols(c); ++q) qb[r * b_cols(c) + q] = quantize(B[r * ldb + q], spec.b);
    const std::vector<double> bias64(bias.begin(), bias.end());
    GemmOptions o;
    o.threads = 1;
    if (c.bias) o.bias = BiasView{bias64.data(), 1, 0};
    std::vector<float> C(c.m * ldc, -7.0f);
    gemm(spec, c.op, c.m, c.n, c.k, A.data(), lda, B.data(), ldb, C.data(), ldc, o);

    // Oracle 1: sgemm on the rounded operands (OpenBLAS is now on one thread), then out=.
    std::vector<float> E(c.m * c.n);
    for (std::size_t i = 0; i < c.m; ++i)
      for (std::size_t j = 0; j < c.n; ++j) E[i * c.n + j] = c.bias ? bias[i] : 0.0f;
    if (c.k > 0) {
      cblas_sgemm(CblasRowMajor, c.op == GemmOp::tn ? CblasTrans : CblasNoTrans, c.op == GemmOp::nt ? CblasTrans : CblasNoTrans,
                  int(c.m), int(c.n), int(c.k), 1.0f, qa.data(), int(a_cols(c)), qb.data(), int(b_cols(c)), 1.0f, E.data(),
                  int(c.n));
    }
    // Oracle 2: the fp64 sum of the same products and the rigorous bound of any FP32 order,
    // gamma_(k+1) * (|bias| + sum |a b|), with gamma_j = j u / (1 - j u), u = 2^-24.
    for (std::size_t i = 0; i < c.m; ++i) {
      for (std::size_t j = 0; j < c.n; ++j) {
        double exact = c.bias ? bias[i] : 0.0, mag = std::fabs(exact);
        for (std::size_t p = 0; p < c.k; ++p) {
          const float a = c.op == GemmOp::tn ? qa[p * a_cols(c) + i] : qa[i * a_cols(c) + p];
          const float b = c.op == GemmOp::nt ? qb[j * b_cols(c) + p] : qb[p * b_cols(c) + j];
          exact += double(a) * double(b);
          mag += std::fabs(double(a) * double(b));
        }
        const double ku = double(c.k + 1) * 0x1p-24, bound = ku / (1 - ku) * mag;
        float expect = E[i * c.n + j];
        EXPECT_LE(std::fabs(double(expect) - exact), bound) << c.spec << " at " << i << "," << j;
        if (spec.out) expect = quantize(expect, *spec.out);
        EXPECT_EQ(bits(C[i * ldc + j]), bits(expect)) << c.spec << " at " << i << "," << j;
      }
      for (std::size_t j = c.n; j < ldc; ++j) EXPECT_EQ(C[i * ldc + j], -7.0f) << "padding written";
    }
    // The fp64 overload: the same results, widened.
    const std::vector<double> A64(A.begin(), A.end()), B64(B.begin(), B.end());
    std::vector<double> C64(c.m * ldc);
    gemm(spec, c.op, c.m, c.n, c.k, A64.data(), lda, B64.data(), ldb, C64.data(), ldc, o);
    for (std::size_t i = 0; i < c.m; ++i)
      for (std::size_t j = 0; j < c.n; ++j) EXPECT_EQ(C64[i * ldc + j], double(C[i * ldc + j])) << c.spec;
  }
}

TEST(Qfp32Gemm, StochasticOutRoundingIsKeyedAndLandsOnANeighbour) {
  const MacSpec spec = MacSpec::parse("qfp32 in=e5m2 out=bf16@sr");
  const MacSpec plain = MacSpec::parse("qfp32 in=e5m2");
  const std::size_t m = 8, n = 64, k = 40;
  std::mt19937 gen(5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> A(m * k), B(k * n);
  for (float& x : A) x = dist(gen);
  for (float& x : B) x = dist(gen);
  auto run = [&](const MacSpec& s, std::uint64_t seed, int threads) {
    GemmOptions o;
    o.threads = threads;
    o.random = {seed, 3};
    std::vector<float> C(m * n);
    gemm(s, GemmOp::nn, m, n, k, A.data(), k, B.data(), n, C.data(), n, o);
    return C;
  };
  const std::vector<float> fp = run(plain, 1, 1), c1 = run(spec, 1, 1), c1b = run(spec, 1, 1), c2 = run(spec, 2, 1);
  EXPECT_EQ(c1, c1b);
  EXPECT_NE(c1, c2);
  const Format down = Format::parse("bf16@rd"), up = Format::parse("bf16@ru");
  for (std::size_t i = 0; i < m * n; ++i) {
    EXPECT_TRUE(c1[i] == quantize(fp[i], down) || c1[i] == quantize(fp[i], up)) << i;
    // The random word is the one the MAC's out= site uses for output i.
    EXPECT_EQ(c1[i], quantize(fp[i], *spec.out, mac_random_index(i, 0, MacSite::out), mac_random_key({1, 3}))) << i;
  }
}

TEST(Qfp32Gemm, ALayerRunsItThroughItsGemmDispatch) {
  // Linear's forward under qfp32 = plain-FP32 Linear on operands rounded beforehand.
  const MacSpec spec = MacSpec::parse("qfp32 in=e4m3fn");
  Linear fast("fc", 20, 6), ref("fc", 20, 6);
  std::mt19937 gen(9);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Tensor x({4, 20}), xq({4, 20});
  for (std::size_t i = 0; i < x.size(); ++i) xq[i] = quantize(x[i] = dist(gen), spec.a);
  for (std::size_t i = 0; i < fast.weight.value.size(); ++i) {
    fast.weight.value[i] = dist(gen);
    ref.weight.value[i] = quantize(fast.weight.value[i], spec.b);
  }
  for (std::size_t i = 0; i < 6; ++i) fast.bias->value[i] = ref.bias->value[i] = dist(gen);
  *fast.precision() = GemmPrecision::all(spec);
  StepContext ctx;
  ctx.threads = 1;
  const Tensor y = fast.forward(x, ctx), yr = ref.forward(xq, ctx);
  for (std::size_t i = 0; i < y.size(); ++i) EXPECT_EQ(bits(y[i]), bits(yr[i])) << i;
}

}  // namespace
}  // namespace mpsim
