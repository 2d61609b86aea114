// The large randomized sweep of the GEMM engine (ctest label "sweep", outside CI): MAC specs
// drawn at random from the grammar's parts (input, product, accumulator, order, outer and out
// formats, every rounding mode; one in six a block-format spec), random shapes (k not a multiple of any tile), operands with
// overflow, underflow, zeros, infinities and NaN, every transpose, both overloads, 1 and 2
// threads and every SIMD level the CPU runs: gemm() equal to gemm_ref() bit for bit. Whatever
// the kernels cover goes through them, the rest through the reference path, and the sweep
// checks that both kinds were drawn. MPSIM_SWEEP_CASES sets the number of specs (default 1500).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bit_helpers.h"
#include "mpsim/gemm.h"
#include "mpsim/mac.h"
#include "mpsim/quantize_array.h"

namespace mpsim::test {
namespace {

template <std::size_t N>
const char* pick(std::mt19937_64& g, const char* const (&items)[N]) {
  return items[std::uniform_int_distribution<std::size_t>(0, N - 1)(g)];
}

// A MAC spec from random parts; some combinations are invalid (the caller skips those).
std::string random_spec(std::mt19937_64& g) {
  static const char* const inputs[] = {"e5m2", "e4m3", "e4m3fn", "e5m2:cfg5", "e5m2:cfg4", "e5m2:cfg2", "e3m2fn", "e2m3fn",
                                       "fp16", "bf16", "int8", "fp32", "e4m3fnuz", "e4m3:sub=flushout"};
  static const char* const accs[] = {"e6m5", "e5m5", "fp16", "bf16", "fp32", "q8.13", "q11.13", "int16", "int32",
                                     "e5m2", "exact", "e6m5:sat", "e6m5:cfg5", "e5m2fnuz", "q4.11", "uq8.8", "uint16"};
  static const char* const modes[] = {"", "", "@rna", "@rz", "@ru", "@rd", "@ro", "@sr", "@sr8"};
  static const char* const prods[] = {"", "", "", " prod=e6m5", " prod=e5m2:cfg2", " prod=bf16@rz", " prod=e4m3@ru", " prod=q4.4"};
  static const char* const orders[] = {"", "", " order=chunk8", " order=chunk37", " order=tree4", " order=tree3",
                                       " order=ftree8", " order=ftree5", " order=kahan"};
  static const char* const outers[] = {"", " outer=fp32", " outer=bf16", " outer=fp16@rz", " outer=q8.13", " outer=e6m5@sr"};
  static const char* const outs[] = {"", "", "", " out=bf16", " out=e5m2@ro", " out=fp16@sr", " out=fp64@rz", " out=q30.23"};
  std::string s;
  if (g() % 4 == 0) s = std::string("a=") + pick(g, inputs) + " b=" + pick(g, inputs);
  else s = std::string("in=") + pick(g, inputs);
  s += pick(g, prods);
  const std::string acc = pick(g, accs);
  s += " acc=" + acc + (acc == "exact" ? "" : pick(g, modes));
  const std::string order = pick(g, orders);
  s += order;
  if (order.find("chunk") != std::string::npos || order.find("tree") != std::string::npos) s += pick(g, outers);
  s += pick(g, outs);
  return s;
}

// A block-format spec (docs/mac.md section 7): both operands' blocks cover the same run of the
// reduction (mixes of extent 16 or 32), with an outer accumulator, a block accumulator, out=.
std::string random_block_spec(std::mt19937_64& g) {
  static const char* const ins[] = {"in=hbfp4/16", "in=hbfp8/64", "in=hbfp6/16:tile", "in=mxfp8_e4m3", "in=mxfp8_e5m2",
                                    "in=mxfp6_e3m2", "in=mxfp6_e2m3", "in=mxfp4", "in=mxint8", "in=nvfp4",
                                    "a=nvfp4 b=hbfp8/16", "a=mxfp8_e4m3 b=mxfp4", "a=hbfp6/32 b=mxint8", "in=nvfp4@rz",
                                    "a=hbfp54/16 b=nvfp4", "in=hbfp54/32"};
  static const char* const tails[] = {"", "", " outer=bf16", " outer=e6m5@rz", " outer=fp32@rd out=fp16", " bacc=9:wrap",
                                      " bacc=9", " outer=q8.13", " outer=fp32@sr", " outer=fp16@ru", " outer=bf16@ro"};
  return std::string(pick(g, ins)) + pick(g, tails);
}

std::vector<double> random_operand(std::size_t count, std::mt19937_64& g) {
  const double scales[] = {1.0, 300.0, 1e-4, 1.0};
  const double scale = scales[g() % 4];
  std::normal_distribution<double> d(0.0, scale);
  std::uniform_int_distribution<int> kind(0, 99);
  std::vector<double> v(count);
  for (auto& x : v) {
    x = d(g);
    switch (kind(g)) {
      case 0: x = 0.0; break;
      case 1: x = -0.0; break;
      case 2: x = INFINITY; break;
      case 3: x = NAN; break;
      case 4: x *= 1e6; break;
      case 5: x *= 1e-6; break;
      default: break;
    }
    x = static_cast<float>(x);  // exactly fp32, so that both overloads see the same operands
  }
  return v;
}

TEST(GemmSweep, RandomSpecsShapesAndOperandsEqualTheReference) {
  const char* env = std::getenv("MPSIM_SWEEP_CASES");
  const int cases = env ? std::atoi(env) : 1500;
  std::mt19937_64 g(20261207);
  int vectorized = 0, reference = 0, failures = 0;
  for (int c = 0; c < cases && failures < 10; ++c) {
    std::string text;
    MacSpec spec;
    for (;;) {
      text = g() % 6 == 0 ? random_block_spec(g) : random_spec(g);
      try {
        spec = MacSpec::parse(text);
        break;
      } catch (const MacSpecError&) {
      }
    }
    (gemm_is_vectorized(spec) ? vectorized : reference)++;
    const std::size_t m = 1 + g() % 24, n = 1 + g() % 40, k = 1 + g() % 300;
    const GemmOp op = static_cast<GemmOp>(g() % 3);
    const auto M = random_operand(m * k, g), Nm = random_operand(k * n, g), bias = random_operand(m * n, g);
    // op(A) = M and op(B) = Nm, stored as op reads them.
    std::vector<double> A(m * k), B(k * n);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t p = 0; p < k; ++p) (op == GemmOp::tn ? A[p * m + i] : A[i * k + p]) = M[i * k + p];
    for (std::size_t p = 0; p < k; ++p)
      for (std::size_t j = 0; j < n; ++j) (op == GemmOp::nt ? B[j * k + p] : B[p * n + j]) = Nm[p * n + j];
    const std::size_t lda = op == GemmOp::tn ? m : k, ldb = op == GemmOp::nt ? k : n;
    GemmOptions o;
    const BiasView layouts[] = {{}, {bias.data(), 1, 0}, {bias.data(), 0, 1}, {bias.data(), static_cast<std::ptrdiff_t>(n), 1}};
    o.bias = layouts[g() % 4];
    o.random = {g() % 1000, static_cast<std::uint32_t>(c)};
    std::vector<double> want(m * n);
    gemm_ref(spec, GemmOp::nn, m, n, k, M.data(), k, Nm.data(), n, want.data(), n, o.bias, o.random);
    const std::vector<float> Af(A.begin(), A.end()), Bf(B.begin(), B.end());
    // The fp32 overload refuses formats whose values fp32 cannot hold (hbfp54: "use fp64 data").
    bool fp32_ok = true;
    try {
      const float one = 1.0f;
      float out = 0;
      gemm(spec, GemmOp::nn, 1, 1, 1, &one, 1, &one, 1, &out, 1);
    } catch (const std::exception& e) {
      fp32_ok = false;
      EXPECT_NE(std::string(e.what()).find("fp32"), std::string::npos) << text << ": " << e.what();
    }
    for (SimdLevel level : available_simd_levels()) {
      LevelGuard guard(level);
      for (int threads : {1, 2}) {
        o.threads = threads;
        std::vector<double> got(m * n);
        std::vector<float> gotf(m * n);
        gemm(spec, op, m, n, k, A.data(), lda, B.data(), ldb, got.data(), n, o);
        if (fp32_ok) gemm(spec, op, m, n, k, Af.data(), lda, Bf.data(), ldb, gotf.data(), n, o);
        for (std::size_t i = 0; i < m * n; ++i) {
          const bool same = bits_of(got[i]) == bits_of(want[i]) || (std::isnan(got[i]) && std::isnan(want[i]));
          const auto wf = static_cast<float>(want[i]);
          const bool same_f = !fp32_ok || bits_of(gotf[i]) == bits_of(wf) || (std::isnan(gotf[i]) && std::isnan(wf));
          if ((!same || !same_f) && failures++ < 10) {
            ADD_FAILURE() << text << " op " << static_cast<int>(op) << " " << m << "x" << n << "x" << k << " level "
                          << to_string(level) << " threads " << threads << ": output " << i << " got " << got[i] << " / "
                          << gotf[i] << " want " << want[i];
          }
        }
      }
    }
  }
  std::printf("%d specs through the kernels, %d through the reference path\n", vectorized, reference);
  EXPECT_GT(vectorized, cases / 4) << "the sweep drew too few specs the kernels cover";
  EXPECT_GT(reference, 0);
}

}  // namespace
}  // namespace mpsim::test
