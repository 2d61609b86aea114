// Linear and Conv2d (src/nn/linear.cpp, src/nn/conv2d.cpp) against independent oracles:
//  - central finite differences of L = sum(y * R) (in double) under a nearly exact MAC;
//  - plain sequential loops in the documented reduction orders, bit for bit, for a float MAC
//    with rounded products (acc += a*b) and with exact products (std::fma);
//  - the same loops in double within a rigorous error bound for the OpenBLAS FP32 mode;
//  - the same bits for 1, 2 and 3 threads under E5M2/E6M5, with and without stochastic rounding;
//  - operand roles (the data is the MAC's a input), parameter names, GEMM counts, shape errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bit_helpers.h"
#include "mpsim/layers.h"
#include "mpsim/mac.h"
#include "mpsim/quantize.h"

namespace mpsim::test {
namespace {

// ---------------------------------------------------------------- data

// Floats uniform on a 2^-20 grid in [-1, 1), from SplitMix64 (portable, unlike std::
// distributions), nonzero so that no sum is trivially zero.
std::vector<float> random_values(std::size_t count, std::uint64_t seed) {
  std::vector<float> v(count);
  std::uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (auto& x : v) {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    const auto k = static_cast<std::int32_t>(z >> 43) - (1 << 20);  // -2^20 .. 2^20 - 1
    x = static_cast<float>(k == 0 ? 1 : k) * 0x1p-20f;
  }
  return v;
}

void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  if (std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0) return;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (bits_of(got[i]) != bits_of(want[i])) {
      ADD_FAILURE() << what << ": first difference at " << i << ": got " << got[i] << " (0x" << std::hex << bits_of(got[i])
                    << "), want " << want[i] << " (0x" << bits_of(want[i]) << ")" << std::dec;
      return;
    }
  }
}

// Everything one training step of a layer produces.
struct StepResult {
  std::vector<float> y, dx, dw, db;
};

void expect_same_bits(const StepResult& got, const StepResult& want, const std::string& what) {
  expect_same_bits(got.y, want.y, what + " y");
  expect_same_bits(got.dx, want.dx, what + " dx");
  expect_same_bits(got.dw, want.dw, what + " dW");
  expect_same_bits(got.db, want.db, what + " db");
}

// ---------------------------------------------------------------- problems

struct ConvCase {
  std::size_t n, c, h, w, k, r, stride, pad;
  bool bias;
  std::size_t ho() const { return (h + 2 * pad - r) / stride + 1; }
  std::size_t wo() const { return (w + 2 * pad - r) / stride + 1; }
  std::string str() const {
    return "conv n" + std::to_string(n) + " c" + std::to_string(c) + " " + std::to_string(h) + "x" + std::to_string(w) +
           " k" + std::to_string(k) + " r" + std::to_string(r) + " s" + std::to_string(stride) + " p" +
           std::to_string(pad) + (bias ? " bias" : " nobias");
  }
};

// Strides 1, 2, 3; padding 0, 1, 2; kernels 1, 2, 3, 5; H != W; with and without bias. Some
// input pixels receive no tap at all (kernel 1 or 2 with stride 2 or 3), some outputs see only
// padding rows, and padding 2 makes the output larger than the input.
const std::vector<ConvCase> kConvCases = {
    {2, 2, 6, 7, 3, 3, 1, 1, true},  {2, 2, 8, 6, 3, 3, 2, 1, false}, {1, 2, 9, 7, 2, 5, 2, 2, true},
    {2, 2, 6, 5, 3, 1, 2, 0, true},  {2, 2, 5, 8, 2, 5, 1, 0, false}, {2, 2, 7, 6, 3, 3, 2, 0, true},
    {1, 1, 4, 3, 2, 3, 1, 2, true},  {1, 2, 8, 7, 2, 2, 3, 0, true},
};

struct LinearCase {
  std::size_t n, in, out;
  bool bias;
  std::string str() const {
    return "linear n" + std::to_string(n) + " " + std::to_string(in) + "->" + std::to_string(out) +
           (bias ? " bias" : " nobias");
  }
};

const std::vector<LinearCase> kLinearCases = {{3, 7, 5, true}, {1, 4, 6, false}, {5, 9, 1, true}};

// The tensors of one step: input, parameters and the output gradient.
struct ConvData {
  std::vector<float> x, w, b, dy;
};

ConvData conv_data(const ConvCase& p, std::uint64_t seed) {
  return {random_values(p.n * p.c * p.h * p.w, seed), random_values(p.k * p.c * p.r * p.r, seed + 1),
          p.bias ? random_values(p.k, seed + 2) : std::vector<float>{},
          random_values(p.n * p.k * p.ho() * p.wo(), seed + 3)};
}

ConvData linear_data(const LinearCase& p, std::uint64_t seed) {
  return {random_values(p.n * p.in, seed), random_values(p.out * p.in, seed + 1),
          p.bias ? random_values(p.out, seed + 2) : std::vector<float>{}, random_values(p.n * p.out, seed + 3)};
}

StepContext context(int threads = 1, std::uint64_t step = 3) {
  StepContext ctx;
  ctx.training = true;
  ctx.seed = 42;
  ctx.step = step;
  ctx.threads = threads;
  return ctx;
}

// One forward and backward of a layer holding the given parameters.
template <typename LayerT>
StepResult run_step(LayerT& layer, const Shape& xshape, const ConvData& d, const StepContext& ctx) {
  layer.weight.value = Tensor(layer.weight.value.shape(), d.w);
  if (layer.bias) layer.bias->value = Tensor(layer.bias->value.shape(), d.b);
  const Tensor y = layer.forward(Tensor(xshape, d.x), ctx);
  const Tensor dx = layer.backward(Tensor(y.shape(), d.dy), ctx);
  StepResult r{y.values(), dx.values(), layer.weight.grad.values(), {}};
  if (layer.bias) r.db = layer.bias->grad.values();
  return r;
}

StepResult run_conv(const ConvCase& p, const GemmPrecision& prec, const ConvData& d, const StepContext& ctx) {
  Conv2d conv("features.0", p.c, p.k, p.r, p.stride, p.pad, p.bias);
  *conv.precision() = prec;
  return run_step(conv, {p.n, p.c, p.h, p.w}, d, ctx);
}

StepResult run_linear(const LinearCase& p, const GemmPrecision& prec, const ConvData& d, const StepContext& ctx) {
  Linear fc("classifier.1", p.in, p.out, p.bias);
  *fc.precision() = prec;
  return run_step(fc, {p.n, p.in}, d, ctx);
}

// ---------------------------------------------------------------- the naive oracle
//
// Direct loops over the documented reductions. `Mac` is one accumulation step acc <- acc (+) a*b
// with a the data operand (x in FWD, dy in BWD, GRAD and the bias gradient) and b the other;
// `qa` maps a data value to what the MAC's a input holds. Every tap of every reduction is
// visited, including the zero ones (padding in FWD and GRAD, taps outside dy in BWD), exactly
// as the layers' GEMMs do: adding an exact zero product leaves a float sum unchanged except
// possibly the sign of a zero sum, so visiting them keeps even that comparable bit for bit.

template <typename T>
struct NaiveOps {
  std::function<T(T, T, T)> mac;              // (acc, a, b) -> acc
  std::function<T(T)> qa = [](T v) { return v; };
};

template <typename T>
std::vector<std::vector<T>> naive_conv(const ConvCase& p, const ConvData& d, const NaiveOps<T>& ops, bool skip_zero_taps = false) {
  const std::size_t Ho = p.ho(), Wo = p.wo(), R = p.r;
  const auto X = [&](std::size_t n, std::size_t c, std::ptrdiff_t h, std::ptrdiff_t w) -> T {
    if (h < 0 || w < 0 || h >= static_cast<std::ptrdiff_t>(p.h) || w >= static_cast<std::ptrdiff_t>(p.w)) return T(0);
    return static_cast<T>(d.x[((n * p.c + c) * p.h + static_cast<std::size_t>(h)) * p.w + static_cast<std::size_t>(w)]);
  };
  const auto Wt = [&](std::size_t k, std::size_t c, std::size_t r, std::size_t s) -> T {
    return static_cast<T>(d.w[((k * p.c + c) * R + r) * R + s]);
  };
  const auto DY = [&](std::size_t n, std::size_t k, std::size_t i, std::size_t j) -> T {
    return static_cast<T>(d.dy[((n * p.k + k) * Ho + i) * Wo + j]);
  };
  const auto pos = [&](std::size_t o, std::size_t q) {
    return static_cast<std::ptrdiff_t>(o * p.stride + q) - static_cast<std::ptrdiff_t>(p.pad);
  };
  std::vector<T> y(p.n * p.k * Ho * Wo), dx(p.n * p.c * p.h * p.w), dw(d.w.size()), db(p.bias ? p.k : 0);
  for (std::size_t n = 0; n < p.n; ++n)
    for (std::size_t k = 0; k < p.k; ++k)
      for (std::size_t i = 0; i < Ho; ++i)
        for (std::size_t j = 0; j < Wo; ++j) {
          T acc = p.bias ? static_cast<T>(d.b[k]) : T(0);
          for (std::size_t c = 0; c < p.c; ++c)
            for (std::size_t r = 0; r < R; ++r)
              for (std::size_t s = 0; s < R; ++s) acc = ops.mac(acc, ops.qa(X(n, c, pos(i, r), pos(j, s))), Wt(k, c, r, s));
          y[((n * p.k + k) * Ho + i) * Wo + j] = acc;
        }
  // dx[n,c,h,w] over (k, r, s): the tap (r, s) reads dy at (h + pad - r)/stride when that is an
  // integer inside dy -- a true convolution of dy with the kernel.
  const auto tap = [&](std::size_t hw, std::size_t q, std::size_t out, std::size_t& o) {
    const auto u = static_cast<std::ptrdiff_t>(hw + p.pad) - static_cast<std::ptrdiff_t>(q);
    const auto st = static_cast<std::ptrdiff_t>(p.stride);
    if (u < 0 || u % st != 0 || u / st >= static_cast<std::ptrdiff_t>(out)) return false;
    o = static_cast<std::size_t>(u / st);
    return true;
  };
  for (std::size_t n = 0; n < p.n; ++n)
    for (std::size_t c = 0; c < p.c; ++c)
      for (std::size_t h = 0; h < p.h; ++h)
        for (std::size_t w = 0; w < p.w; ++w) {
          T acc = T(0);
          for (std::size_t k = 0; k < p.k; ++k)
            for (std::size_t r = 0; r < R; ++r)
              for (std::size_t s = 0; s < R; ++s) {
                std::size_t i = 0, j = 0;
                const bool inside = tap(h, r, Ho, i) && tap(w, s, Wo, j);
                if (!inside && skip_zero_taps) continue;
                acc = ops.mac(acc, ops.qa(inside ? DY(n, k, i, j) : T(0)), Wt(k, c, r, s));
              }
          dx[((n * p.c + c) * p.h + h) * p.w + w] = acc;
        }
  for (std::size_t k = 0; k < p.k; ++k)
    for (std::size_t c = 0; c < p.c; ++c)
      for (std::size_t r = 0; r < R; ++r)
        for (std::size_t s = 0; s < R; ++s) {
          T acc = T(0);
          for (std::size_t n = 0; n < p.n; ++n)
            for (std::size_t i = 0; i < Ho; ++i)
              for (std::size_t j = 0; j < Wo; ++j) acc = ops.mac(acc, ops.qa(DY(n, k, i, j)), X(n, c, pos(i, r), pos(j, s)));
          dw[((k * p.c + c) * R + r) * R + s] = acc;
        }
  for (std::size_t k = 0; k < db.size(); ++k) {
    T acc = T(0);
    for (std::size_t n = 0; n < p.n; ++n)
      for (std::size_t i = 0; i < Ho; ++i)
        for (std::size_t j = 0; j < Wo; ++j) acc = ops.mac(acc, ops.qa(DY(n, k, i, j)), T(1));
    db[k] = acc;
  }
  return {y, dx, dw, db};
}

template <typename T>
std::vector<std::vector<T>> naive_linear(const LinearCase& p, const ConvData& d, const NaiveOps<T>& ops) {
  const auto X = [&](std::size_t n, std::size_t i) { return static_cast<T>(d.x[n * p.in + i]); };
  const auto W = [&](std::size_t o, std::size_t i) { return static_cast<T>(d.w[o * p.in + i]); };
  const auto DY = [&](std::size_t n, std::size_t o) { return static_cast<T>(d.dy[n * p.out + o]); };
  std::vector<T> y(p.n * p.out), dx(p.n * p.in), dw(p.out * p.in), db(p.bias ? p.out : 0);
  for (std::size_t n = 0; n < p.n; ++n)
    for (std::size_t o = 0; o < p.out; ++o) {
      T acc = p.bias ? static_cast<T>(d.b[o]) : T(0);
      for (std::size_t i = 0; i < p.in; ++i) acc = ops.mac(acc, ops.qa(X(n, i)), W(o, i));
      y[n * p.out + o] = acc;
    }
  for (std::size_t n = 0; n < p.n; ++n)
    for (std::size_t i = 0; i < p.in; ++i) {
      T acc = T(0);
      for (std::size_t o = 0; o < p.out; ++o) acc = ops.mac(acc, ops.qa(DY(n, o)), W(o, i));
      dx[n * p.in + i] = acc;
    }
  for (std::size_t o = 0; o < p.out; ++o)
    for (std::size_t i = 0; i < p.in; ++i) {
      T acc = T(0);
      for (std::size_t n = 0; n < p.n; ++n) acc = ops.mac(acc, ops.qa(DY(n, o)), X(n, i));
      dw[o * p.in + i] = acc;
    }
  for (std::size_t o = 0; o < db.size(); ++o) {
    T acc = T(0);
    for (std::size_t n = 0; n < p.n; ++n) acc = ops.mac(acc, ops.qa(DY(n, o)), T(1));
    db[o] = acc;
  }
  return {y, dx, dw, db};
}

StepResult to_step(const std::vector<std::vector<float>>& v) { return {v[0], v[1], v[2], v[3]}; }

// acc + a*b with the product rounded to float, then the sum (the build has -ffp-contract=off).
float mac_rounded(float acc, float a, float b) { return acc + a * b; }
// acc + a*b rounded once.
float mac_fused(float acc, float a, float b) { return std::fma(a, b, acc); }

// ---------------------------------------------------------------- 2: bit-exact vs loops

struct BitCase {
  const char* spec;
  bool fused;  // exact product: one rounding of acc + a*b
};

// The second spec of each pair has different (but, for fp32 data, equivalent) a= and b=
// formats, which makes Conv2d use its other operand layout (src/nn/conv2d.cpp).
const BitCase kBitCases[] = {
    {"in=fp32 prod=fp32 acc=fp32 order=seq", false},
    {"a=fp32 b=fp32@rz prod=fp32 acc=fp32 order=seq", false},
    {"in=fp32 prod=exact acc=fp32 order=seq", true},
    {"a=fp32 b=fp32@rz prod=exact acc=fp32 order=seq", true},
};

TEST(LinearConv, ConvEqualsSequentialLoopsBitForBit) {
  for (const BitCase& bc : kBitCases) {
    const MacSpec spec = MacSpec::parse(bc.spec);
    NaiveOps<float> ops{bc.fused ? mac_fused : mac_rounded};
    for (const ConvCase& p : kConvCases) {
      const ConvData d = conv_data(p, 11);
      expect_same_bits(run_conv(p, GemmPrecision::all(spec), d, context()), to_step(naive_conv(p, d, ops)),
                       std::string(bc.spec) + ", " + p.str());
    }
  }
}

TEST(LinearConv, LinearEqualsSequentialLoopsBitForBit) {
  for (const BitCase& bc : kBitCases) {
    const MacSpec spec = MacSpec::parse(bc.spec);
    NaiveOps<float> ops{bc.fused ? mac_fused : mac_rounded};
    for (const LinearCase& p : kLinearCases) {
      const ConvData d = linear_data(p, 21);
      expect_same_bits(run_linear(p, GemmPrecision::all(spec), d, context()), to_step(naive_linear(p, d, ops)),
                       std::string(bc.spec) + ", " + p.str());
    }
  }
}

// The rounded-product loop and the fused one really differ on these data, so the two
// comparisons above pin down which MAC ran.
TEST(LinearConv, RoundedAndFusedLoopsDiffer) {
  const ConvData d = conv_data(kConvCases[0], 11);
  const auto a = naive_conv(kConvCases[0], d, NaiveOps<float>{mac_rounded});
  const auto b = naive_conv(kConvCases[0], d, NaiveOps<float>{mac_fused});
  EXPECT_NE(a[0], b[0]);
  EXPECT_NE(a[1], b[1]);
  EXPECT_NE(a[2], b[2]);
}

// Skipping the zero taps of the data gradient gives the same values (equal as numbers: +0
// and -0 compare equal), so "every tap in the sum" costs nothing in accuracy; the layer must
// match the skipping loop in value too.
TEST(LinearConv, ConvDataGradientEqualsLoopWithoutZeroTaps) {
  const MacSpec spec = MacSpec::parse("in=fp32 prod=fp32 acc=fp32 order=seq");
  for (const ConvCase& p : kConvCases) {
    const ConvData d = conv_data(p, 12);
    const auto skip = naive_conv(p, d, NaiveOps<float>{mac_rounded}, true);
    const StepResult got = run_conv(p, GemmPrecision::all(spec), d, context());
    ASSERT_EQ(got.dx.size(), skip[1].size());
    for (std::size_t i = 0; i < got.dx.size(); ++i) ASSERT_EQ(got.dx[i], skip[1][i]) << p.str() << " dx " << i;
  }
}

// The data (x in FWD, dy elsewhere) is the MAC's a input and the weight (or x in GRAD, the
// ones in the bias gradient) its b input, in both layers and both conv layouts.
TEST(LinearConv, DataIsOperandA) {
  const MacSpec spec = MacSpec::parse("a=bf16 b=fp32 prod=fp32 acc=fp32 order=seq");
  const Format bf16 = Format::parse("bf16");
  NaiveOps<float> ops{mac_rounded, [&](float v) { return quantize(v, bf16); }};
  for (const ConvCase& p : {kConvCases[0], kConvCases[2]}) {
    const ConvData d = conv_data(p, 13);
    expect_same_bits(run_conv(p, GemmPrecision::all(spec), d, context()), to_step(naive_conv(p, d, ops)), p.str());
  }
  const ConvData d = linear_data(kLinearCases[0], 14);
  expect_same_bits(run_linear(kLinearCases[0], GemmPrecision::all(spec), d, context()),
                   to_step(naive_linear(kLinearCases[0], d, ops)), kLinearCases[0].str());
}

// Block-format specs whose two operands differ only in their block options (rounding rule,
// exponent width, tiling): the convolution must keep the data as operand a, like Linear, so a
// 1x1 convolution of a [N, C, 1, 1] input is that Linear, bit for bit, forward and backward.
// (Conv2d once compared only the element formats and swapped such operands.)
TEST(LinearConv, BlockOperandRolesMatchLinear) {
  const std::size_t n = 4, c = 64, k = 8;
  for (const char* text : {"a=hbfp8/64 b=hbfp8/64:rule=ceil", "a=mxfp8_e4m3 b=mxfp8_e4m3:rule=ceil",
                           "a=hbfp8/16:tile b=hbfp8/4", "in=hbfp8/64"}) {
    SCOPED_TRACE(text);
    const MacSpec spec = MacSpec::parse(text);
    Linear fc("fc", c, k, false);
    Conv2d conv("conv", c, k, 1, 1, 0, false);
    *fc.precision() = GemmPrecision::all(spec);
    *conv.precision() = GemmPrecision::all(spec);
    Tensor x({n, c}), dy({n, k});
    const auto d = [](std::size_t i) { return static_cast<double>(i); };
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::sin(0.7 * d(i) + 0.3) * d(1 + i % 7));
    for (std::size_t i = 0; i < dy.size(); ++i) dy[i] = static_cast<float>(std::cos(0.9 * d(i)) * d(1 + i % 3));
    for (std::size_t i = 0; i < fc.weight.value.size(); ++i) {
      fc.weight.value[i] = conv.weight.value[i] = static_cast<float>(std::cos(1.3 * d(i)) * 0.1 * d(1 + i % 5));
    }
    const StepContext ctx = context();
    Tensor x4 = x, dy4 = dy;
    x4.reshape({n, c, 1, 1});
    dy4.reshape({n, k, 1, 1});
    const Tensor y_fc = fc.forward(x, ctx), y_conv = conv.forward(x4, ctx);
    const Tensor dx_fc = fc.backward(dy, ctx), dx_conv = conv.backward(dy4, ctx);
    expect_same_bits(y_conv.values(), y_fc.values(), "forward");
    expect_same_bits(dx_conv.values(), dx_fc.values(), "data gradient");
    expect_same_bits(conv.weight.grad.values(), fc.weight.grad.values(), "weight gradient");
  }
}

// ---------------------------------------------------------------- 3: FP32 through OpenBLAS

// Any order of summation, with or without FMA, of k products plus a start value stays within
// (k + 2) u sum |terms| of the exact result (u = 2^-24): a rigorous bound, computed per output.
void expect_within_bound(const std::vector<float>& got, const std::vector<double>& exact, const std::vector<double>& abs_sum,
                         std::size_t k, const std::string& what) {
  ASSERT_EQ(got.size(), exact.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double bound = static_cast<double>(k + 2) * 0x1p-24 * abs_sum[i];
    ASSERT_LE(std::fabs(static_cast<double>(got[i]) - exact[i]), bound) << what << " element " << i;
  }
}

TEST(LinearConv, Fp32ModeAgreesWithLoops) {
  const NaiveOps<double> exact{[](double acc, double a, double b) { return acc + a * b; }};
  const NaiveOps<double> magnitude{[](double acc, double a, double b) { return acc + std::fabs(a * b); }};
  for (const ConvCase& p : kConvCases) {
    const ConvData d = conv_data(p, 15);
    ConvData dabs = d;
    for (auto& v : dabs.b) v = std::fabs(v);
    const StepResult got = run_conv(p, GemmPrecision::fp32(), d, StepContext{});
    const auto e = naive_conv(p, d, exact), m = naive_conv(p, dabs, magnitude);
    const std::size_t rr = p.r * p.r, nl = p.n * p.ho() * p.wo();
    expect_within_bound(got.y, e[0], m[0], p.c * rr, p.str() + " y");
    expect_within_bound(got.dx, e[1], m[1], p.k * rr, p.str() + " dx");
    expect_within_bound(got.dw, e[2], m[2], nl, p.str() + " dW");
    expect_within_bound(got.db, e[3], m[3], nl, p.str() + " db");
  }
  for (const LinearCase& p : kLinearCases) {
    const ConvData d = linear_data(p, 16);
    ConvData dabs = d;
    for (auto& v : dabs.b) v = std::fabs(v);
    const StepResult got = run_linear(p, GemmPrecision::fp32(), d, StepContext{});
    const auto e = naive_linear(p, d, exact), m = naive_linear(p, dabs, magnitude);
    expect_within_bound(got.y, e[0], m[0], p.in, p.str() + " y");
    expect_within_bound(got.dx, e[1], m[1], p.out, p.str() + " dx");
    expect_within_bound(got.dw, e[2], m[2], p.n, p.str() + " dW");
    expect_within_bound(got.db, e[3], m[3], p.n, p.str() + " db");
  }
}

// ---------------------------------------------------------------- 1: finite differences

// L = sum(y * R) in double, y from an eval-mode forward of the layer as it is set up.
template <typename LayerT>
double loss(LayerT& layer, const Shape& xshape, const std::vector<float>& x, const std::vector<float>& R) {
  StepContext ctx = context();
  ctx.training = false;
  const Tensor y = layer.forward(Tensor(xshape, x), ctx);
  double s = 0;
  for (std::size_t i = 0; i < y.size(); ++i) s += static_cast<double>(y[i]) * static_cast<double>(R[i]);
  return s;
}

// The layers are linear in x and in each parameter, so central differences carry no
// truncation error whatever eps: the only error is y's rounding to float (relative 2^-24 per
// element, the MAC being exact up to fp64), bounded by `noise` below. A large eps keeps that
// error small against the gradients (of order 1), while any wrong gradient (a flipped kernel,
// a transposed weight, a missing tap) is off by order 1.
template <typename LayerT>
void check_gradients(LayerT& layer, const Shape& xshape, const ConvData& d, const std::string& what) {
  const StepResult an = run_step(layer, xshape, d, context());
  const std::vector<float>& R = d.dy;
  const float eps = 0.25f;
  // |L_computed - L_exact| <= sum |y_i R_i| 2^-24 per evaluation; twice that here, as the
  // perturbed y may be a little larger than the unperturbed one used for the bound.
  double noise = 0;
  for (std::size_t i = 0; i < an.y.size(); ++i) noise += std::fabs(an.y[i] * R[i]) * 0x1p-23;
  std::size_t checked = 0;
  const auto fd = [&](std::vector<float>& v, std::size_t i, const std::function<double()>& eval) {
    const float v0 = v[i];
    v[i] = v0 + eps;
    const double up = eval(), xu = v[i];
    v[i] = v0 - eps;
    const double down = eval(), xd = v[i];
    v[i] = v0;
    ++checked;
    // Two evaluations' noise (doubled once more for margin) over the step actually taken, plus
    // the analytic gradient's own rounding to float.
    return std::pair{(up - down) / (xu - xd), 4 * noise / (xu - xd) + 1e-6};
  };
  std::vector<float> x = d.x, w = d.w, b = d.b;
  const auto set_params = [&] {
    layer.weight.value = Tensor(layer.weight.value.shape(), w);
    if (layer.bias) layer.bias->value = Tensor(layer.bias->value.shape(), b);
  };
  const auto Lx = [&] { return loss(layer, xshape, x, R); };
  const auto Lp = [&] {
    set_params();
    return loss(layer, xshape, x, R);
  };
  for (std::size_t i = 0; i < x.size(); ++i) {
    const auto [g, tol] = fd(x, i, Lx);
    ASSERT_NEAR(an.dx[i], g, tol) << what << " dx[" << i << "]";
  }
  for (std::size_t i = 0; i < w.size(); ++i) {
    const auto [g, tol] = fd(w, i, Lp);
    ASSERT_NEAR(an.dw[i], g, tol) << what << " dW[" << i << "]";
  }
  for (std::size_t i = 0; i < b.size(); ++i) {
    const auto [g, tol] = fd(b, i, Lp);
    ASSERT_NEAR(an.db[i], g, tol) << what << " db[" << i << "]";
  }
  EXPECT_EQ(checked, x.size() + w.size() + b.size());
}

const char* const kNearlyExact = "in=fp32 prod=exact acc=fp64 order=seq";

TEST(LinearConv, NearlyExactSpecParses) {
  const MacSpec spec = MacSpec::parse(kNearlyExact);
  EXPECT_FALSE(spec.prod.has_value());
  ASSERT_TRUE(spec.acc.has_value());
  EXPECT_EQ(spec.acc->to_string(), "fp64");
  EXPECT_EQ(spec.to_string(), kNearlyExact);
}

TEST(LinearConv, ConvFiniteDifferences) {
  const GemmPrecision prec = GemmPrecision::all(MacSpec::parse(kNearlyExact));
  for (const ConvCase& p : kConvCases) {
    Conv2d conv("conv", p.c, p.k, p.r, p.stride, p.pad, p.bias);
    *conv.precision() = prec;
    check_gradients(conv, {p.n, p.c, p.h, p.w}, conv_data(p, 17), p.str());
  }
}

TEST(LinearConv, LinearFiniteDifferences) {
  const GemmPrecision prec = GemmPrecision::all(MacSpec::parse(kNearlyExact));
  for (const LinearCase& p : kLinearCases) {
    Linear fc("fc", p.in, p.out, p.bias);
    *fc.precision() = prec;
    check_gradients(fc, {p.n, p.in}, linear_data(p, 18), p.str());
  }
}

// ---------------------------------------------------------------- 4: threads

const ConvCase kThreadConv[] = {{4, 4, 10, 9, 6, 3, 1, 1, true}, {3, 5, 9, 10, 4, 3, 2, 1, true}};
const LinearCase kThreadLinear{9, 33, 17, true};

TEST(LinearConv, SameBitsForAnyThreadCount) {
  for (const char* text : {"in=e5m2:cfg5 prod=exact acc=e6m5 order=seq", "in=e5m2:cfg5 prod=exact acc=e6m5@sr order=seq",
                           "a=e5m2:cfg5 b=e4m3 prod=exact acc=e6m5@sr order=seq"}) {
    const GemmPrecision prec = GemmPrecision::all(MacSpec::parse(text));
    const Format e6m5 = Format::parse("e6m5");
    for (const ConvCase& p : kThreadConv) {
      const ConvData d = conv_data(p, 19);
      const StepResult one = run_conv(p, prec, d, context(1));
      for (int t : {2, 3}) expect_same_bits(run_conv(p, prec, d, context(t)), one, std::string(text) + ", " + p.str());
      // Every result is an accumulator value (the MAC really ran).
      for (const auto* v : {&one.y, &one.dx, &one.dw, &one.db})
        for (float f : *v) ASSERT_EQ(bits_of(quantize(f, e6m5)), bits_of(f)) << text;
    }
    const ConvData d = linear_data(kThreadLinear, 20);
    const StepResult one = run_linear(kThreadLinear, prec, d, context(1));
    for (int t : {2, 3}) expect_same_bits(run_linear(kThreadLinear, prec, d, context(t)), one, text);
  }
}

// Stochastic rounding is keyed by the step: the same step repeats its bits, another step draws
// others; round-to-nearest does not depend on the step.
TEST(LinearConv, StochasticRoundingFollowsTheStep) {
  const ConvCase& p = kThreadConv[0];
  const ConvData d = conv_data(p, 21);
  const GemmPrecision sr = GemmPrecision::all(MacSpec::parse("in=e5m2:cfg5 prod=exact acc=e6m5@sr order=seq"));
  const GemmPrecision rn = GemmPrecision::all(MacSpec::parse("in=e5m2:cfg5 prod=exact acc=e6m5 order=seq"));
  const StepResult a = run_conv(p, sr, d, context(2, 5)), b = run_conv(p, sr, d, context(2, 5));
  const StepResult c = run_conv(p, sr, d, context(2, 6));
  expect_same_bits(a, b, "same step");
  EXPECT_NE(a.y, c.y);
  EXPECT_NE(a.dx, c.dx);
  EXPECT_NE(a.dw, c.dw);
  expect_same_bits(run_conv(p, rn, d, context(2, 5)), run_conv(p, rn, d, context(2, 6)), "rne");
}

// ---------------------------------------------------------------- structure and errors

TEST(LinearConv, ParametersAreNamedZeroAndCollected) {
  Conv2d conv("layer1.0.conv1", 3, 4, 3, 1, 1, true);
  EXPECT_STREQ(conv.type(), "Conv2d");
  EXPECT_EQ(conv.weight.name, "layer1.0.conv1.weight");
  EXPECT_EQ(conv.weight.value.shape(), (Shape{4, 3, 3, 3}));
  EXPECT_EQ(conv.weight.grad.shape(), (Shape{4, 3, 3, 3}));
  ASSERT_TRUE(conv.bias.has_value());
  EXPECT_EQ(conv.bias->name, "layer1.0.conv1.bias");
  for (float v : conv.weight.value.values()) EXPECT_EQ(v, 0.0f);
  std::vector<Parameter*> ps;
  conv.collect_parameters(ps);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0], &conv.weight);
  EXPECT_EQ(ps[1], &*conv.bias);

  Linear fc("fc", 5, 2, false);
  EXPECT_STREQ(fc.type(), "Linear");
  EXPECT_EQ(fc.weight.name, "fc.weight");
  EXPECT_EQ(fc.weight.value.shape(), (Shape{2, 5}));
  EXPECT_FALSE(fc.bias.has_value());
  ps.clear();
  fc.collect_parameters(ps);
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NE(fc.precision(), nullptr);
}

TEST(LinearConv, GemmCounts) {
  Conv2d conv("c", 3, 8, 3, 2, 1, true);
  std::vector<GemmCount> g;
  conv.collect_gemms({5, 3, 9, 7}, g);  // output 5 x 8 x 5 x 4
  ASSERT_EQ(g.size(), 4u);
  const std::size_t nl = 5 * 5 * 4;
  EXPECT_EQ(g[0].role, GemmRole::fwd);
  EXPECT_EQ(g[0].macs(), nl * 8 * 27);
  EXPECT_EQ(g[1].role, GemmRole::bwd);
  EXPECT_EQ(g[1].macs(), std::size_t{5} * 9 * 7 * 3 * 8 * 9);  // every tap of every input pixel
  EXPECT_EQ(g[2].role, GemmRole::grad);
  EXPECT_EQ(g[2].k, nl);
  EXPECT_EQ(g[2].m * g[2].n, std::size_t{8} * 27);
  EXPECT_EQ(g[3].role, GemmRole::bias_grad);
  EXPECT_EQ(g[3].macs(), 8 * nl);
  for (const auto& c : g) EXPECT_EQ(c.layer, "c");

  Linear fc("fc", 10, 4, false);
  g.clear();
  fc.collect_gemms({6, 10}, g);
  ASSERT_EQ(g.size(), 3u);
  EXPECT_EQ(g[0].m, 6u);
  EXPECT_EQ(g[0].n, 4u);
  EXPECT_EQ(g[0].k, 10u);
  EXPECT_EQ(g[1].k, 4u);
  EXPECT_EQ(g[2].k, 6u);
  EXPECT_THROW(fc.collect_gemms({6, 11}, g), std::invalid_argument);
}

// Throws std::invalid_argument whose message names the layer.
template <typename F>
void expect_invalid(F&& f, const std::string& layer, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << ": no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(layer), std::string::npos) << what << ": " << e.what();
  }
}

TEST(LinearConv, ShapeErrorsThrow) {
  Conv2d conv("net.conv7", 3, 4, 3, 2, 1, true);
  const StepContext ctx = context();
  expect_invalid([&] { (void)conv.output_shape({2, 3, 8}); }, "net.conv7", "rank 3");
  expect_invalid([&] { (void)conv.output_shape({2, 4, 8, 8}); }, "net.conv7", "channels");
  expect_invalid([&] { (void)conv.output_shape({2, 3, 0, 8}); }, "net.conv7", "too small");
  EXPECT_EQ(conv.output_shape({2, 3, 1, 1}), (Shape{2, 4, 1, 1}));  // 1 + 2*1 >= 3
  EXPECT_EQ(conv.output_shape({2, 3, 8, 7}), (Shape{2, 4, 4, 4}));
  expect_invalid([&] { (void)conv.forward(Tensor({2, 2, 8, 8}), ctx); }, "net.conv7", "forward");
  (void)conv.forward(Tensor({2, 3, 8, 8}), ctx);
  expect_invalid([&] { (void)conv.backward(Tensor({2, 4, 5, 4}), ctx); }, "net.conv7", "dy");
  expect_invalid([] { Conv2d bad("bad.conv", 3, 4, 0); }, "bad.conv", "kernel 0");
  expect_invalid([] { Conv2d bad("bad.conv", 3, 4, 3, 0); }, "bad.conv", "stride 0");

  Linear fc("head.fc", 6, 3);
  expect_invalid([&] { (void)fc.output_shape({2, 5}); }, "head.fc", "features");
  expect_invalid([&] { (void)fc.output_shape({2, 6, 1}); }, "head.fc", "rank 3");
  expect_invalid([&] { (void)fc.forward(Tensor({4, 3}), ctx); }, "head.fc", "forward");
  (void)fc.forward(Tensor({4, 6}), ctx);
  expect_invalid([&] { (void)fc.backward(Tensor({4, 6}), ctx); }, "head.fc", "dy");
  expect_invalid([] { Linear bad("bad.fc", 0, 3); }, "bad.fc", "in 0");
}

// Backward needs the input a training-mode forward keeps; an eval forward keeps nothing.
TEST(LinearConv, BackwardNeedsTrainingForward) {
  Conv2d conv("conv", 1, 1, 1);
  StepContext eval = context();
  eval.training = false;
  (void)conv.forward(Tensor({1, 1, 2, 2}), eval);
  EXPECT_THROW((void)conv.backward(Tensor({1, 1, 2, 2}), eval), std::logic_error);
  Linear fc("fc", 2, 2);
  EXPECT_THROW((void)fc.backward(Tensor({1, 2}), context()), std::logic_error);
}

// The bias gradient multiplies by 1; an input format without 1 is refused before any work.
TEST(LinearConv, BiasGradientNeedsOneInInputFormats) {
  const GemmPrecision q = GemmPrecision::all(MacSpec::parse("in=q1.7 acc=fp32"));
  for (bool with_bias : {true, false}) {
    Conv2d conv("conv.q", 1, 1, 1, 1, 0, with_bias);
    *conv.precision() = q;
    (void)conv.forward(Tensor({1, 1, 2, 2}, 0.25f), context());
    conv.weight.grad.fill(7.0f);
    if (with_bias) {
      EXPECT_THROW((void)conv.backward(Tensor({1, 1, 2, 2}, 0.5f), context()), MacSpecError);
      EXPECT_EQ(conv.weight.grad[0], 7.0f);
    } else {
      (void)conv.backward(Tensor({1, 1, 2, 2}, 0.5f), context());
      EXPECT_EQ(conv.weight.grad[0], 4 * 0.25f * 0.5f);
    }
    Linear fc("fc.q", 1, 1, with_bias);
    *fc.precision() = q;
    (void)fc.forward(Tensor({1, 1}, 0.25f), context());
    if (with_bias) EXPECT_THROW((void)fc.backward(Tensor({1, 1}, 0.5f), context()), MacSpecError);
    else EXPECT_NO_THROW((void)fc.backward(Tensor({1, 1}, 0.5f), context()));
  }
}

}  // namespace
}  // namespace mpsim::test
