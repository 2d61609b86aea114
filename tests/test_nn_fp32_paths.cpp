// The plain-FP32 fast paths of the layers (src/nn/conv2d.cpp, src/nn/pooling.cpp) against
// independent oracles:
//  - Conv2d in FP32 (sample blocks, OpenBLAS sgemm, the shifted route, the transposed-convolution
//    and the col2im data gradients, per-block partial weight gradients) against plain loops in
//    double, within the rigorous bound (terms + 4) u sum |terms| per output, for geometries that
//    take every route: many and few input channels, strides 1 and 2, "same" and "valid"
//    padding, 1x1 kernels, feature maps small enough for multi-sample blocks and wide enough for
//    the shifted route, batches that do not split evenly over 1, 2 and 3 threads; and with the
//    roles mixed (FWD in FP32, BWD and GRAD through a nearly exact MAC and the other way round);
//  - the same bits for 1, 2 and 3 threads (the FP32 convolution's blocks and sums are fixed);
//  - the layers' reusable scratch memory: a step after steps of other shapes gives the same bits;
//  - MaxPool2d's 2x2 stride-2 kernel against a brute-force window scan with PyTorch's rule
//    (first maximum, NaN wins), with many ties and some NaNs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "mpsim/layers.h"
#include "mpsim/mac.h"

namespace mpsim::test {
namespace {

// Floats uniform on a 2^-12 grid in [-1, 1), nonzero, from SplitMix64.
std::vector<float> random_values(std::size_t count, std::uint64_t seed) {
  std::vector<float> v(count);
  std::uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 7;
  for (auto& x : v) {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    const auto k = static_cast<std::int32_t>(z >> 51) - (1 << 12);  // -2^12 .. 2^12 - 1
    x = static_cast<float>(k == 0 ? 1 : k) * 0x1p-12f;
  }
  return v;
}

struct Geometry {
  std::size_t n, c, h, w, k, r, stride, pad;
  bool bias;
  std::size_t ho() const { return (h + 2 * pad - r) / stride + 1; }
  std::size_t wo() const { return (w + 2 * pad - r) / stride + 1; }
  std::string str() const {
    std::string s = "conv n";  // built by appending: GCC 12 warns falsely about "literal" + string
    s += std::to_string(n) + " c" + std::to_string(c) + " " + std::to_string(h) + "x" + std::to_string(w);
    s += " k" + std::to_string(k) + " r" + std::to_string(r) + " s" + std::to_string(stride);
    s += " p" + std::to_string(pad);
    return s;
  }
};

// Routes (src/nn/conv2d.cpp): c >= 16 with stride 1 and "same" padding takes the transposed
// convolution for dx, the others col2im; 4x4 and 5x5 outputs make blocks of many samples,
// 12x12 of a few, 24x24 and larger of one; stride 1 with c >= 8 on wide maps takes the shifted
// route; batches of 5 and 7 split unevenly over threads.
const std::vector<Geometry> kCases = {
    {5, 16, 6, 6, 8, 3, 1, 1, true},    // transposed dx, blocks of many samples
    {7, 17, 12, 12, 5, 3, 1, 1, false},  // transposed dx, blocks of a few samples
    {3, 16, 24, 24, 4, 5, 1, 2, true},  // transposed dx, one sample per block
    {5, 16, 9, 9, 6, 3, 2, 1, true},    // stride 2: col2im
    {7, 3, 14, 14, 6, 5, 1, 0, true},   // "valid" 5x5 (LeNet's conv2 shape): col2im
    {5, 16, 10, 10, 8, 5, 1, 0, false},  // many channels but "valid": col2im
    {5, 2, 28, 28, 3, 5, 1, 2, true},   // few channels (LeNet's conv1 shape): col2im
    {6, 16, 8, 8, 8, 1, 1, 0, false},   // 1x1 convolution
    {5, 8, 9, 9, 16, 1, 2, 0, false},   // 1x1 stride 2 (ResNet's option-B shortcut)
    // Maps wide enough for the shifted route (padded rows at most 15% longer than the output's):
    {3, 16, 16, 15, 12, 3, 1, 1, true},  // FWD and (transposed) BWD shifted, H != W
    {2, 8, 30, 30, 8, 5, 1, 2, false},   // 5x5 "same"; BWD by col2im (8 channels)
    {2, 8, 32, 32, 4, 3, 1, 0, true},    // "valid" 3x3
};

double at(const std::vector<float>& v, std::size_t i) { return static_cast<double>(v[i]); }

// The exact results (in double: every product of two 12-bit values and every sum here is
// exact in double) and the sums of |terms| of y, dx, dW and db, by the definition of the
// convolution, with the number of terms of each output.
struct Oracle {
  std::vector<double> y, dx, dw, db, ay, adx, adw, adb;
  std::size_t ty = 0, tdx = 0, tdw = 0, tdb = 0;
};

Oracle oracle(const Geometry& p, const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
              const std::vector<float>& dy) {
  Oracle o;
  const std::size_t Ho = p.ho(), Wo = p.wo();
  o.y.assign(p.n * p.k * Ho * Wo, 0), o.ay = o.y;
  o.dx.assign(p.n * p.c * p.h * p.w, 0), o.adx = o.dx;
  o.dw.assign(p.k * p.c * p.r * p.r, 0), o.adw = o.dw;
  o.db.assign(p.k, 0), o.adb = o.db;
  o.ty = p.c * p.r * p.r + 1;
  o.tdx = p.k * p.r * p.r;
  o.tdw = p.n * Ho * Wo;
  o.tdb = p.n * Ho * Wo;
  for (std::size_t n = 0; n < p.n; ++n)
    for (std::size_t k = 0; k < p.k; ++k)
      for (std::size_t oi = 0; oi < Ho; ++oi)
        for (std::size_t oj = 0; oj < Wo; ++oj) {
          const std::size_t yi = ((n * p.k + k) * Ho + oi) * Wo + oj;
          if (p.bias) o.y[yi] = at(b, k), o.ay[yi] = std::fabs(at(b, k));
          o.db[k] += at(dy, yi), o.adb[k] += std::fabs(at(dy, yi));
          for (std::size_t c = 0; c < p.c; ++c)
            for (std::size_t ri = 0; ri < p.r; ++ri)
              for (std::size_t si = 0; si < p.r; ++si) {
                const auto hi = static_cast<std::ptrdiff_t>(oi * p.stride + ri) - static_cast<std::ptrdiff_t>(p.pad);
                const auto wi = static_cast<std::ptrdiff_t>(oj * p.stride + si) - static_cast<std::ptrdiff_t>(p.pad);
                const auto H = static_cast<std::ptrdiff_t>(p.h), Wd = static_cast<std::ptrdiff_t>(p.w);
                if (hi < 0 || wi < 0 || hi >= H || wi >= Wd) continue;
                const auto uh = static_cast<std::size_t>(hi), uw = static_cast<std::size_t>(wi);
                const std::size_t xi = ((n * p.c + c) * p.h + uh) * p.w + uw;
                const std::size_t wi_ = ((k * p.c + c) * p.r + ri) * p.r + si;
                o.y[yi] += at(x, xi) * at(w, wi_), o.ay[yi] += std::fabs(at(x, xi) * at(w, wi_));
                o.dx[xi] += at(dy, yi) * at(w, wi_), o.adx[xi] += std::fabs(at(dy, yi) * at(w, wi_));
                o.dw[wi_] += at(dy, yi) * at(x, xi), o.adw[wi_] += std::fabs(at(dy, yi) * at(x, xi));
              }
        }
  return o;
}

// |got - exact| <= (terms + 4) u sum|terms| (u = 2^-24): a float sum of `terms` values in any
// order and grouping (sequential, blocked, partial sums added afterwards) stays within
// (terms - 1) u sum|terms| to first order; the slack covers the second-order term and the
// final rounding.
void expect_within_bound(const Tensor& got, const std::vector<double>& exact, const std::vector<double>& abs_sum,
                         std::size_t terms, const std::string& what) {
  ASSERT_EQ(got.size(), exact.size()) << what;
  for (std::size_t i = 0; i < exact.size(); ++i) {
    const double bound = static_cast<double>(terms + 4) * 0x1p-24 * abs_sum[i];
    ASSERT_LE(std::fabs(static_cast<double>(got[i]) - exact[i]), bound)
        << what << " element " << i << ": got " << got[i] << ", exact " << exact[i];
  }
}

struct Step {
  Tensor y, dx, dw, db;
};

Step run(const Geometry& p, const GemmPrecision& prec, int threads, std::uint64_t seed) {
  Conv2d conv("conv", p.c, p.k, p.r, p.stride, p.pad, p.bias);
  *conv.precision() = prec;
  conv.weight.value = Tensor(conv.weight.value.shape(), random_values(conv.weight.value.size(), seed + 1));
  if (p.bias) conv.bias->value = Tensor({p.k}, random_values(p.k, seed + 2));
  StepContext ctx;
  ctx.threads = threads;
  Step s;
  s.y = conv.forward(Tensor({p.n, p.c, p.h, p.w}, random_values(p.n * p.c * p.h * p.w, seed)), ctx);
  s.dx = conv.backward(Tensor(s.y.shape(), random_values(s.y.size(), seed + 3)), ctx);
  s.dw = conv.weight.grad;
  if (p.bias) s.db = conv.bias->grad;
  return s;
}

void check(const Geometry& p, const GemmPrecision& prec, int threads, const std::string& what) {
  const std::uint64_t seed = 40;
  const Step s = run(p, prec, threads, seed);
  const Oracle o = oracle(p, random_values(p.n * p.c * p.h * p.w, seed), random_values(p.k * p.c * p.r * p.r, seed + 1),
                          p.bias ? random_values(p.k, seed + 2) : std::vector<float>{},
                          random_values(p.n * p.k * p.ho() * p.wo(), seed + 3));
  const std::string tag = what + ", " + p.str() + ", " + std::to_string(threads) + " threads";
  expect_within_bound(s.y, o.y, o.ay, o.ty, tag + " y");
  expect_within_bound(s.dx, o.dx, o.adx, o.tdx, tag + " dx");
  expect_within_bound(s.dw, o.dw, o.adw, o.tdw, tag + " dW");
  if (p.bias) expect_within_bound(s.db, o.db, o.adb, o.tdb, tag + " db");
}

TEST(Conv2dFp32, EveryRouteMatchesDoubleLoopsWithinTheErrorBound) {
  for (const Geometry& p : kCases)
    for (const int threads : {1, 2, 3}) check(p, GemmPrecision::fp32(), threads, "fp32");
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The sample blocks and the order of the blocks' partial sums depend on the geometry alone, and
// each block runs single-threaded sgemm calls, so the convolution's FP32 results do not depend on
// the thread count (nor on which thread took which block).
TEST(Conv2dFp32, SameBitsForAnyThreadCount) {
  for (const Geometry& p : kCases) {
    const Step one = run(p, GemmPrecision::fp32(), 1, 60);
    for (const int threads : {2, 3}) {
      const Step many = run(p, GemmPrecision::fp32(), threads, 60);
      EXPECT_TRUE(same_bits(one.y, many.y)) << p.str() << ", " << threads << " threads";
      EXPECT_TRUE(same_bits(one.dx, many.dx)) << p.str() << ", " << threads << " threads";
      EXPECT_TRUE(same_bits(one.dw, many.dw)) << p.str() << ", " << threads << " threads";
      EXPECT_TRUE(same_bits(one.db, many.db)) << p.str() << ", " << threads << " threads";
    }
  }
}

// FP32 and emulated roles in one layer: each GEMM takes its own route.
TEST(Conv2dFp32, MixedRolesMatchDoubleLoops) {
  const MacSpec exact = MacSpec::parse("in=fp32 prod=exact acc=fp64 order=seq");
  GemmPrecision fwd_only;  // FWD in FP32, BWD and GRAD through the MAC
  fwd_only.bwd = exact;
  fwd_only.grad = exact;
  GemmPrecision bwd_only;  // BWD in FP32 only
  bwd_only.fwd = exact;
  bwd_only.grad = exact;
  GemmPrecision grad_only;  // GRAD in FP32 only
  grad_only.fwd = exact;
  grad_only.bwd = exact;
  for (const Geometry& p : {kCases[0], kCases[3], kCases[4]}) {
    check(p, fwd_only, 2, "fwd fp32");
    check(p, bwd_only, 2, "bwd fp32");
    check(p, grad_only, 2, "grad fp32");
  }
}

// The scratch buffers outlive a call: larger and smaller problems in between, FP32 and
// emulated, must leave no trace in a later step.
TEST(Conv2dFp32, ScratchReuseLeavesNoTrace) {
  const MacSpec spec = MacSpec::parse("in=e5m2 prod=exact acc=e6m5 order=seq");
  for (const GemmPrecision& prec : {GemmPrecision::fp32(), GemmPrecision::all(spec)}) {
    const Step first = run(kCases[0], prec, 2, 50);
    run(kCases[2], GemmPrecision::fp32(), 2, 51);
    run(kCases[6], GemmPrecision::all(spec), 2, 52);
    run(kCases[7], prec, 1, 53);
    const Step again = run(kCases[0], prec, 2, 50);
    EXPECT_TRUE(same_bits(first.y, again.y));
    EXPECT_TRUE(same_bits(first.dx, again.dx));
    EXPECT_TRUE(same_bits(first.dw, again.dw));
    EXPECT_TRUE(same_bits(first.db, again.db));
  }
}

// ---- MaxPool2d 2x2 stride 2 -----------------------------------------------------------------

TEST(MaxPool2x2, MatchesABruteForceWindowScan) {
  const std::size_t N = 3, C = 4, H = 9, W = 12;  // odd height: the last input row is unused
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x(N * C * H * W);
  std::uint64_t s = 99;
  for (float& v : x) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    const auto r = static_cast<int>(s >> 59);  // 0 .. 31: few distinct values, many ties
    v = r == 0 ? nan : r == 1 ? -std::numeric_limits<float>::infinity() : static_cast<float>(r % 5) - 2.0f;
  }
  MaxPool2d pool("pool", 2, 2);
  StepContext ctx;
  ctx.threads = 2;
  const Tensor y = pool.forward(Tensor({N, C, H, W}, x), ctx);
  const std::size_t Ho = H / 2, Wo = W / 2;
  ASSERT_EQ(y.shape(), (Shape{N, C, Ho, Wo}));
  std::vector<float> g(N * C * Ho * Wo);
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = static_cast<float>(i + 1);
  const Tensor dx = pool.backward(Tensor(y.shape(), g), ctx);
  std::vector<float> want_dx(x.size(), 0.0f);
  for (std::size_t pl = 0; pl < N * C; ++pl)
    for (std::size_t oi = 0; oi < Ho; ++oi)
      for (std::size_t oj = 0; oj < Wo; ++oj) {
        // PyTorch's scan: the first strictly greater value, or any NaN, replaces the best.
        float best = -std::numeric_limits<float>::infinity();
        std::size_t arg = (2 * oi) * W + 2 * oj;
        for (std::size_t r = 0; r < 2; ++r)
          for (std::size_t c = 0; c < 2; ++c) {
            const std::size_t idx = (2 * oi + r) * W + 2 * oj + c;
            const float v = x[pl * H * W + idx];
            if (std::isnan(v) || v > best) best = v, arg = idx;
          }
        const std::size_t o = (pl * Ho + oi) * Wo + oj;
        if (std::isnan(best)) {
          EXPECT_TRUE(std::isnan(y[o])) << o;
        } else {
          EXPECT_EQ(y[o], best) << o;
        }
        want_dx[pl * H * W + arg] += g[o];
      }
  EXPECT_EQ(dx.values(), want_dx);
}

}  // namespace
}  // namespace mpsim::test
