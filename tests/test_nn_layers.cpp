// The non-GEMM layers (BatchNorm2d, ReLU, Dropout, the pools, Flatten, ZeroPad2d) and the
// softmax cross-entropy: central finite differences for every input and parameter gradient,
// hand-computed examples, PyTorch's edge-case rules (ties, NaN, eval mode), the dropout mask rule
// against random_word, and bitwise-identical results for 1 and 2 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include "mpsim/layers.h"
#include "mpsim/rng.h"

namespace mpsim {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

StepContext train_ctx(int threads = 0) {
  StepContext c;
  c.training = true;
  c.seed = 12345;
  c.step = 7;
  c.threads = threads;
  return c;
}

StepContext eval_ctx() {
  StepContext c = train_ctx();
  c.training = false;
  return c;
}

// Uniform values in [lo, hi) from Philox: a fixed, reproducible test input.
Tensor random_tensor(const Shape& s, std::uint64_t seed, float lo, float hi) {
  Tensor t(s);
  for (std::size_t i = 0; i < t.size(); ++i) {
    const double u = random_word(RandomKey{seed, 3}, i, 0) * 0x1p-32;
    t[i] = static_cast<float>(lo + (hi - lo) * u);
  }
  return t;
}

// Values whose gaps are all at least `gap` (a scrambled ramp): no window maximum and no sign
// changes under a perturbation smaller than gap / 2, so finite differences stay valid.
Tensor separated_tensor(const Shape& s, float gap, float offset) {
  Tensor t(s);
  const std::size_t n = t.size();
  // i -> (i * 7919) mod n is a permutation when n is not a multiple of 7919.
  for (std::size_t i = 0; i < n; ++i) t[i] = offset + gap * static_cast<float>((i * 7919) % n);
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double weighted_sum(const Tensor& y, const Tensor& r) {
  double s = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) s += static_cast<double>(y[i]) * r[i];
  return s;
}

// Compares `analytic` with central differences of `loss` over every entry of `values`:
// (L(v + h) - L(v - h)) / (v+ - v-), the denominator being the float step actually taken.
// Passes when |fd - analytic| <= atol + rtol * |analytic| everywhere.
void expect_fd(const std::string& what, Tensor& values, const Tensor& analytic, float h,
               const std::function<double()>& loss, double atol, double rtol) {
  ASSERT_EQ(values.size(), analytic.size()) << what;
  double worst = 0.0;
  std::size_t bad = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const float v = values[i];
    values[i] = v + h;
    const float vp = values[i];
    const double lp = loss();
    values[i] = v - h;
    const float vm = values[i];
    const double lm = loss();
    values[i] = v;
    const double fd = (lp - lm) / (static_cast<double>(vp) - vm);
    const double err = std::fabs(fd - analytic[i]);
    worst = std::max(worst, err);
    if (err > atol + rtol * std::fabs(analytic[i])) {
      if (++bad <= 5) {
        ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << ", finite difference " << fd;
      }
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": worst absolute error " << worst;
}

// Input and parameter gradients of a layer in training mode, L = sum(y * R).
void check_layer(Layer& layer, Tensor x, float h, double atol, double rtol) {
  const StepContext ctx = train_ctx();
  const Tensor y = layer.forward(x, ctx);
  const Tensor r = random_tensor(y.shape(), 99, -1.0f, 1.0f);
  const Tensor dx = layer.backward(r, ctx);
  ASSERT_EQ(dx.shape(), x.shape());
  std::vector<Parameter*> params;
  layer.collect_parameters(params);
  std::vector<Tensor> grads;
  for (const Parameter* p : params) grads.push_back(p->grad);
  const auto loss = [&] { return weighted_sum(layer.forward(x, ctx), r); };
  expect_fd(layer.name() + " dx", x, dx, h, loss, atol, rtol);
  for (std::size_t k = 0; k < params.size(); ++k) {
    expect_fd(params[k]->name + " grad", params[k]->value, grads[k], h, loss, atol, rtol);
  }
}

template <class F>
void expect_invalid(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no std::invalid_argument (expected one mentioning '" << needle << "')";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// ---- finite-difference gradient checks -----------------------------------------------------

TEST(LayerGradients, BatchNormTrainingFullGradient) {
  BatchNorm2d bn("bn", 3);
  bn.weight.value = random_tensor({3}, 5, 0.5f, 1.5f);
  bn.bias.value = random_tensor({3}, 6, -0.5f, 0.5f);
  // Channels with different means and scales, so every term of the gradient matters.
  Tensor x = random_tensor({3, 3, 3, 2}, 7, -2.0f, 2.0f);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = x[i] * (1.0f + static_cast<float>((i / 6) % 3)) + 0.5f;
  check_layer(bn, x, 1e-2f, 1e-4, 1e-3);
}

TEST(LayerGradients, ReLU) {
  ReLU relu("relu");
  // |x| >= 0.025 everywhere, so no perturbation (h = 0.01) crosses zero.
  Tensor x = separated_tensor({2, 3, 4, 5}, 0.05f, -2.975f);
  for (std::size_t i = 0; i < x.size(); ++i) ASSERT_GE(std::fabs(x[i]), 0.02f);
  check_layer(relu, x, 1e-2f, 2e-5, 1e-4);
}

TEST(LayerGradients, MaxPoolDisjointAndOverlappingWindows) {
  MaxPool2d disjoint("pool", 2, 2);
  check_layer(disjoint, separated_tensor({2, 2, 6, 5}, 0.1f, -5.0f), 1e-2f, 2e-5, 1e-4);
  MaxPool2d overlapping("pool_overlap", 3, 2);  // neighbouring windows share a row and column
  check_layer(overlapping, separated_tensor({2, 2, 7, 7}, 0.1f, -5.0f), 1e-2f, 2e-5, 1e-4);
}

TEST(LayerGradients, AvgPoolAndGlobalAvgPool) {
  AvgPool2d avg("avg", 2, 2);
  check_layer(avg, random_tensor({2, 3, 5, 4}, 8, -1.0f, 1.0f), 1e-2f, 2e-5, 1e-4);
  AvgPool2d avg_overlap("avg_overlap", 3, 1);
  check_layer(avg_overlap, random_tensor({1, 2, 5, 5}, 9, -1.0f, 1.0f), 1e-2f, 2e-5, 1e-4);
  GlobalAvgPool gap("gap");
  check_layer(gap, random_tensor({2, 3, 3, 5}, 10, -1.0f, 1.0f), 1e-2f, 2e-5, 1e-4);
}

TEST(LayerGradients, FlattenZeroPadDropout) {
  Flatten flatten("flatten");
  check_layer(flatten, random_tensor({2, 3, 2, 2}, 11, -1.0f, 1.0f), 1e-2f, 2e-5, 1e-4);
  ZeroPad2d pad("pad", 2);
  check_layer(pad, random_tensor({2, 2, 3, 4}, 12, -1.0f, 1.0f), 1e-2f, 2e-5, 1e-4);
  // The mask is a pure function of (seed, step, id, i): every forward of the check draws the
  // same one, so the layer is linear in x and the finite difference is valid.
  Dropout drop("drop", 0.4f);
  drop.id = 3;
  check_layer(drop, random_tensor({4, 50}, 13, -1.0f, 1.0f), 1e-2f, 2e-5, 1e-4);
}

TEST(LayerGradients, SoftmaxCrossEntropyWithAndWithoutSmoothing) {
  Tensor logits = random_tensor({5, 7}, 14, -3.0f, 3.0f);
  const std::vector<std::uint32_t> labels = {0, 6, 3, 3, 1};
  for (const float eps : {0.0f, 0.1f, 1.0f}) {
    const LossResult r = softmax_cross_entropy(logits, labels, eps);
    const auto loss = [&] { return softmax_cross_entropy(logits, labels, eps).loss; };
    // The loss is computed in double, so the only errors are truncation (h^2) and the float
    // rounding of the gradient itself.
    expect_fd("cross-entropy eps=" + std::to_string(eps), logits, r.grad, 1e-3f, loss, 1e-7, 1e-6);
  }
}

// ---- BatchNorm2d by hand -----------------------------------------------------------------

// [N=2, C=2, H=2, W=2]: channel 0 holds 1..8 (mean 4.5, biased variance 5.25, unbiased 6),
// channel 1 holds +-1 (mean 0, biased variance 1, unbiased 8/7).
Tensor bn_example() {
  return Tensor({2, 2, 2, 2}, {1, 2, 3, 4, -1, 1, -1, 1, 5, 6, 7, 8, 1, -1, 1, -1});
}

TEST(BatchNorm, TrainingForwardAndRunningStatisticsByHand) {
  BatchNorm2d bn("bn", 2);  // eps 1e-5, momentum 0.1
  EXPECT_EQ(bn.weight.name, "bn.weight");
  EXPECT_EQ(bn.bias.name, "bn.bias");
  EXPECT_EQ(bn.running_mean.name, "bn.running_mean");
  EXPECT_EQ(bn.running_var.name, "bn.running_var");
  EXPECT_EQ(bn.num_batches_tracked.name, "bn.num_batches_tracked");
  EXPECT_EQ(bn.num_batches_tracked.value.rank(), 0u);  // PyTorch's shape []
  for (std::size_t c = 0; c < 2; ++c) {
    EXPECT_EQ(bn.weight.value[c], 1.0f);
    EXPECT_EQ(bn.bias.value[c], 0.0f);
    EXPECT_EQ(bn.running_mean.value[c], 0.0f);
    EXPECT_EQ(bn.running_var.value[c], 1.0f);
  }
  bn.weight.value = Tensor({2}, {1.0f, 2.0f});
  bn.bias.value = Tensor({2}, {0.0f, 0.5f});
  const Tensor x = bn_example();
  const Tensor y = bn.forward(x, train_ctx());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const bool ch0 = (i / 4) % 2 == 0;
    const double expected = ch0 ? (x[i] - 4.5) / std::sqrt(5.25 + 1e-5) : 2.0 * x[i] / std::sqrt(1.0 + 1e-5) + 0.5;
    EXPECT_NEAR(y[i], expected, 5e-7) << i;
  }
  // running = 0.9 * running + 0.1 * batch, with the unbiased variance.
  EXPECT_NEAR(bn.running_mean.value[0], 0.45, 1e-7);
  EXPECT_NEAR(bn.running_mean.value[1], 0.0, 1e-7);
  EXPECT_NEAR(bn.running_var.value[0], 0.9 + 0.6, 1e-7);
  EXPECT_NEAR(bn.running_var.value[1], 0.9 + 0.1 * 8.0 / 7.0, 1e-7);
  EXPECT_EQ(bn.num_batches_tracked.value[0], 1.0f);

  bn.forward(x, train_ctx());
  EXPECT_NEAR(bn.running_mean.value[0], 0.9 * 0.45 + 0.45, 1e-7);
  EXPECT_NEAR(bn.running_var.value[0], 0.9 * 1.5 + 0.6, 1e-7);
  EXPECT_NEAR(bn.running_var.value[1], 0.9 * (0.9 + 0.8 / 7.0) + 0.8 / 7.0, 1e-7);
  EXPECT_EQ(bn.num_batches_tracked.value[0], 2.0f);

  // Eval uses the running statistics and leaves them (and the count) alone.
  const Tensor ye = bn.forward(x, eval_ctx());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const bool ch0 = (i / 4) % 2 == 0;
    const double expected = ch0 ? (x[i] - 0.855) / std::sqrt(1.95 + 1e-5)
                                : 2.0 * x[i] / std::sqrt(0.9 * (0.9 + 0.8 / 7.0) + 0.8 / 7.0 + 1e-5) + 0.5;
    EXPECT_NEAR(ye[i], expected, 5e-7) << i;
  }
  EXPECT_EQ(bn.num_batches_tracked.value[0], 2.0f);
  EXPECT_NEAR(bn.running_mean.value[0], 0.855, 1e-7);
}

TEST(BatchNorm, BackwardByHand) {
  BatchNorm2d bn("bn", 2);
  bn.weight.value = Tensor({2}, {1.5f, -0.5f});
  const Tensor x = bn_example();
  const Tensor y = bn.forward(x, train_ctx());
  // A constant upstream gradient: normalized values sum to zero whatever x is, so dx = 0,
  // dbeta = count = 8 and dgamma = sum(xhat) = 0.
  const Tensor dx = bn.backward(Tensor(x.shape(), 1.0f), train_ctx());
  for (std::size_t i = 0; i < dx.size(); ++i) EXPECT_NEAR(dx[i], 0.0f, 1e-6) << i;
  EXPECT_EQ(bn.bias.grad[0], 8.0f);
  EXPECT_EQ(bn.bias.grad[1], 8.0f);
  EXPECT_NEAR(bn.weight.grad[0], 0.0f, 1e-6);
  // dy = xhat: dgamma = sum(xhat^2) = count (biased variance, up to eps), and
  // dx = gamma * inv_std * (xhat - 0 - xhat * 1) ~ 0 (eps makes it slightly positive).
  Tensor xhat(x.shape());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const bool ch0 = (i / 4) % 2 == 0;
    xhat[i] = static_cast<float>(ch0 ? (x[i] - 4.5) / std::sqrt(5.25 + 1e-5) : x[i] / std::sqrt(1.0 + 1e-5));
  }
  bn.forward(x, train_ctx());
  bn.backward(xhat, train_ctx());
  EXPECT_NEAR(bn.weight.grad[0], 8.0 * 5.25 / (5.25 + 1e-5), 1e-5);
  EXPECT_NEAR(bn.weight.grad[1], 8.0 * 1.0 / (1.0 + 1e-5), 1e-5);
}

TEST(BatchNorm, ErrorsAndStateRules) {
  BatchNorm2d bn("block.bn", 3);
  expect_invalid([&] { (void)bn.output_shape({2, 3, 4}); }, "block.bn");
  expect_invalid([&] { (void)bn.output_shape({2, 4, 4, 4}); }, "[2, 4, 4, 4]");
  // One value per channel has no unbiased variance (PyTorch refuses it too).
  expect_invalid([&] { bn.forward(Tensor({1, 3, 1, 1}), train_ctx()); }, "more than one value");
  EXPECT_NO_THROW(bn.forward(Tensor({1, 3, 1, 1}), eval_ctx()));
  EXPECT_THROW(bn.backward(Tensor({1, 3, 1, 1}), train_ctx()), std::logic_error);
  bn.forward(Tensor({2, 3, 1, 1}), train_ctx());
  expect_invalid([&] { bn.backward(Tensor({2, 3, 1, 2}), train_ctx()); }, "[2, 3, 1, 2]");
  EXPECT_THROW(BatchNorm2d("b", 0), std::invalid_argument);
  EXPECT_THROW(BatchNorm2d("b", 2, -1.0f), std::invalid_argument);
  EXPECT_THROW(BatchNorm2d("b", 2, 1e-5f, 1.5f), std::invalid_argument);
  std::vector<Parameter*> params;
  std::vector<Buffer*> buffers;
  bn.collect_parameters(params);
  bn.collect_buffers(buffers);
  ASSERT_EQ(params.size(), 2u);
  ASSERT_EQ(buffers.size(), 3u);
  EXPECT_EQ(buffers[2]->name, "block.bn.num_batches_tracked");
}

// ---- pooling, ReLU, reshapes by hand ----------------------------------------------------

TEST(Pooling, MaxPoolTiesNaNAndOverlap) {
  MaxPool2d pool("pool", 2, 2);
  // Two equal maxima: the first in row-major order takes the whole gradient.
  const Tensor y = pool.forward(Tensor({1, 1, 2, 2}, {1, 3, 3, 2}), train_ctx());
  EXPECT_EQ(y[0], 3.0f);
  const Tensor dx = pool.backward(Tensor({1, 1, 1, 1}, {5.0f}), train_ctx());
  EXPECT_EQ(dx.values(), (std::vector<float>{0, 5, 0, 0}));

  // A NaN anywhere in a window makes that output NaN; other windows are unaffected.
  const Tensor yn = pool.forward(Tensor({1, 1, 2, 4}, {1, kNaN, 9, 2, 4, 3, 0, 1}), train_ctx());
  EXPECT_TRUE(std::isnan(yn[0]));
  EXPECT_EQ(yn[1], 9.0f);
  const Tensor dn = pool.backward(Tensor({1, 1, 1, 2}, {1.0f, 2.0f}), train_ctx());
  EXPECT_EQ(dn.values(), (std::vector<float>{0, 1, 2, 0, 0, 0, 0, 0}));

  // A window of -inf: the output is -inf and the gradient goes to its first element.
  pool.forward(Tensor({1, 1, 2, 2}, -kInf), train_ctx());
  EXPECT_EQ(pool.backward(Tensor({1, 1, 1, 1}, 1.0f), train_ctx()).values(), (std::vector<float>{1, 0, 0, 0}));

  // Overlapping 2x2 windows, stride 1, all sharing the centre maximum: it collects all four.
  MaxPool2d overlap("overlap", 2, 1);
  overlap.forward(Tensor({1, 1, 3, 3}, {0, 1, 0, 1, 9, 1, 0, 1, 0}), train_ctx());
  const Tensor dov = overlap.backward(Tensor({1, 1, 2, 2}, {1, 2, 3, 4}), train_ctx());
  EXPECT_EQ(dov.values(), (std::vector<float>{0, 0, 0, 0, 10, 0, 0, 0, 0}));
}

TEST(Pooling, AvgPoolAndGlobalAvgPoolByHand) {
  std::vector<float> ramp(16);
  for (std::size_t i = 0; i < 16; ++i) ramp[i] = static_cast<float>(i);
  AvgPool2d avg("avg", 2, 2);
  const Tensor y = avg.forward(Tensor({1, 1, 4, 4}, ramp), train_ctx());
  EXPECT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(y.values(), (std::vector<float>{2.5f, 4.5f, 10.5f, 12.5f}));
  const Tensor dx = avg.backward(Tensor({1, 1, 2, 2}, {4, 8, 12, 16}), train_ctx());
  EXPECT_EQ(dx.values(), (std::vector<float>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}));
  // Floor mode: a 5x5 input with 2x2 windows and stride 2 drops the last row and column.
  EXPECT_EQ(avg.output_shape({3, 4, 5, 5}), (Shape{3, 4, 2, 2}));

  GlobalAvgPool gap("gap");
  const Tensor g = gap.forward(Tensor({2, 2, 2, 2}, {1, 2, 3, 4, 0, 0, 0, 1, -1, -1, -1, -1, 8, 0, 0, 0}), train_ctx());
  EXPECT_EQ(g.shape(), (Shape{2, 2}));
  EXPECT_EQ(g.values(), (std::vector<float>{2.5f, 0.25f, -1.0f, 2.0f}));
  const Tensor dg = gap.backward(Tensor({2, 2}, {4, 8, -4, 2}), train_ctx());
  EXPECT_EQ(dg.values(), (std::vector<float>{1, 1, 1, 1, 2, 2, 2, 2, -1, -1, -1, -1, 0.5f, 0.5f, 0.5f, 0.5f}));
  // The mean of 0.1f repeated 3x3 times, rounded once from the exact value.
  const Tensor tenths = gap.forward(Tensor({1, 1, 3, 3}, 0.1f), train_ctx());
  EXPECT_EQ(tenths[0], 0.1f);
}

TEST(Pooling, ShapeErrorsNameTheLayer) {
  MaxPool2d pool("features.3", 3, 2);
  expect_invalid([&] { (void)pool.output_shape({1, 1, 2, 5}); }, "features.3");
  expect_invalid([&] { (void)pool.output_shape({1, 2, 2}); }, "[1, 2, 2]");
  EXPECT_EQ(pool.output_shape({1, 1, 3, 8}), (Shape{1, 1, 1, 3}));
  AvgPool2d avg("avgpool", 2, 2);
  expect_invalid([&] { (void)avg.output_shape({1, 1, 1, 4}); }, "avgpool");
  EXPECT_THROW(MaxPool2d("p", 0, 1), std::invalid_argument);
  EXPECT_THROW(AvgPool2d("p", 2, 0), std::invalid_argument);
  GlobalAvgPool gap("gap");
  expect_invalid([&] { (void)gap.output_shape({4, 10}); }, "gap");
  // A backward needs a training forward; an eval forward leaves nothing behind.
  pool.forward(Tensor({1, 1, 3, 3}), eval_ctx());
  EXPECT_THROW(pool.backward(Tensor({1, 1, 1, 1}), train_ctx()), std::logic_error);
  pool.forward(Tensor({1, 1, 3, 3}), train_ctx());
  expect_invalid([&] { pool.backward(Tensor({1, 1, 2, 1}), train_ctx()); }, "[1, 1, 2, 1]");
}

TEST(Activation, ReLUValuesAndGradientAtZero) {
  ReLU relu("relu");
  const Tensor y = relu.forward(Tensor({6}, {-2.0f, -0.0f, 0.0f, 0.5f, kNaN, kInf}), train_ctx());
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_FALSE(std::signbit(y[1]));
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[3], 0.5f);
  EXPECT_TRUE(std::isnan(y[4]));  // torch.relu propagates NaN
  EXPECT_EQ(y[5], kInf);
  const Tensor dx = relu.backward(Tensor({6}, 3.0f), train_ctx());
  // No gradient at x <= 0; PyTorch's threshold_backward (output <= 0 ? 0 : dy) passes it at NaN.
  EXPECT_EQ(dx.values(), (std::vector<float>{0, 0, 0, 3, 3, 3}));
  relu.forward(Tensor({6}), eval_ctx());
  EXPECT_THROW(relu.backward(Tensor({6}), train_ctx()), std::logic_error);
  relu.forward(Tensor({6}), train_ctx());
  expect_invalid([&] { relu.backward(Tensor({5}), train_ctx()); }, "relu");
}

TEST(Reshape, FlattenAndZeroPad) {
  Flatten flatten("flatten");
  const Tensor x = random_tensor({2, 3, 2, 2}, 20, -1.0f, 1.0f);
  const Tensor y = flatten.forward(x, train_ctx());
  EXPECT_EQ(y.shape(), (Shape{2, 12}));
  EXPECT_EQ(y.values(), x.values());
  const Tensor dx = flatten.backward(y, train_ctx());
  EXPECT_TRUE(same_bits(dx, x));
  expect_invalid([&] { (void)flatten.output_shape({5}); }, "flatten");

  ZeroPad2d pad("pad", 1);
  const Tensor p = pad.forward(Tensor({1, 1, 2, 3}, {1, 2, 3, 4, 5, 6}), train_ctx());
  EXPECT_EQ(p.shape(), (Shape{1, 1, 4, 5}));
  EXPECT_EQ(p.values(), (std::vector<float>{0, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 4, 5, 6, 0, 0, 0, 0, 0, 0}));
  // The gradient of the border is dropped; the interior comes back in place.
  Tensor dp({1, 1, 4, 5});
  for (std::size_t i = 0; i < dp.size(); ++i) dp[i] = static_cast<float>(i);
  EXPECT_EQ(pad.backward(dp, train_ctx()).values(), (std::vector<float>{6, 7, 8, 11, 12, 13}));
  expect_invalid([&] { (void)pad.output_shape({1, 28, 28}); }, "pad");
  expect_invalid([&] { pad.backward(Tensor({1, 1, 1, 5}), train_ctx()); }, "[1, 1, 1, 5]");
  ZeroPad2d none("none", 0);
  EXPECT_TRUE(same_bits(none.forward(x, train_ctx()), x));
}

// ---- Dropout -----------------------------------------------------------------------------

TEST(DropoutLayer, MaskFollowsTheDocumentedRule) {
  const float p = 0.3f;
  Dropout drop("drop", p);
  drop.id = 5;
  const StepContext ctx = train_ctx();
  const std::size_t n = 200003;  // not a multiple of any chunk or block size
  const Tensor x = random_tensor({n}, 21, 0.5f, 1.5f);  // no zeros: a zero output means dropped
  const Tensor y = drop.forward(x, ctx);
  const RandomKey key = layer_random_key(ctx, 5);
  const auto threshold = static_cast<std::uint64_t>(std::ceil(static_cast<double>(p) * 4294967296.0));
  const auto scale = static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
  std::size_t dropped = 0, mismatches = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const bool drop_i = random_word(key, i, 0) < threshold;
    dropped += drop_i ? 1 : 0;
    const float expected = drop_i ? 0.0f : x[i] * scale;
    if (std::memcmp(&expected, &y[i], sizeof(float)) != 0 && ++mismatches <= 5) {
      ADD_FAILURE() << "element " << i << ": " << y[i] << ", expected " << expected;
    }
  }
  EXPECT_EQ(mismatches, 0u);
  // The fraction dropped is Binomial(n, p) / n: standard deviation sqrt(p(1-p)/n) = 0.001; six of
  // them (a chance of about 2e-9 for an ideal generator) bound it.
  const double fraction = static_cast<double>(dropped) / static_cast<double>(n);
  EXPECT_NEAR(fraction, p, 6.0 * std::sqrt(p * (1.0 - p) / static_cast<double>(n)));
  // The backward applies the same mask and scale.
  const Tensor dy = random_tensor({n}, 22, -1.0f, 1.0f);
  const Tensor dx = drop.backward(dy, ctx);
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_EQ(dx[i], y[i] == 0.0f ? 0.0f : dy[i] * scale) << i;
  }
}

TEST(DropoutLayer, AWordEqualToTheThresholdIsKept) {
  // Element i is dropped iff word < p * 2^32: find an element whose word w is a multiple of
  // 256 in [2^31, 2^32) (a float p holds w / 2^32 exactly there) and set p = w / 2^32.
  const StepContext ctx = train_ctx();
  const RandomKey key = layer_random_key(ctx, 2);
  std::size_t i = 0;
  while ((random_word(key, i, 0) & 0x800000FFu) != 0x80000000u) ++i;
  const std::uint32_t w = random_word(key, i, 0);
  const auto p = static_cast<float>(w * 0x1p-32);
  ASSERT_EQ(static_cast<double>(p) * 0x1p32, static_cast<double>(w));
  Dropout drop("drop", p);
  drop.id = 2;
  const Tensor y = drop.forward(Tensor({i + 1}, 1.0f), ctx);
  EXPECT_NE(y[i], 0.0f) << "element " << i << " with word " << w;
}

TEST(DropoutLayer, DeterministicPerSeedStepAndLayer) {
  const Tensor x(Shape{64, 1000}, 1.0f);
  const auto run = [&](std::uint64_t seed, std::uint64_t step, std::uint32_t id, int threads) {
    Dropout drop("drop", 0.5f);
    drop.id = id;
    StepContext ctx = train_ctx(threads);
    ctx.seed = seed;
    ctx.step = step;
    return drop.forward(x, ctx);
  };
  const Tensor base = run(1, 2, 3, 1);
  EXPECT_TRUE(same_bits(base, run(1, 2, 3, 1)));
  EXPECT_TRUE(same_bits(base, run(1, 2, 3, 2)));
  EXPECT_TRUE(same_bits(base, run(1, 2, 3, 0)));
  // Another seed, step or layer gives an unrelated mask: about half the elements differ.
  for (const Tensor& other : {run(9, 2, 3, 1), run(1, 3, 3, 1), run(1, 2, 4, 1)}) {
    std::size_t differ = 0;
    for (std::size_t i = 0; i < x.size(); ++i) differ += base[i] != other[i] ? 1 : 0;
    EXPECT_NEAR(static_cast<double>(differ) / static_cast<double>(x.size()), 0.5, 0.02);
  }
}

TEST(DropoutLayer, EvalAndZeroRateAreTheIdentityAndBadRatesThrow) {
  const Tensor x = random_tensor({3, 7}, 23, -1.0f, 1.0f);
  Dropout drop("drop", 0.5f);
  EXPECT_TRUE(same_bits(drop.forward(x, eval_ctx()), x));
  EXPECT_THROW(drop.backward(x, train_ctx()), std::logic_error);
  Dropout zero("zero", 0.0f);
  EXPECT_TRUE(same_bits(zero.forward(x, train_ctx()), x));
  EXPECT_TRUE(same_bits(zero.backward(x, train_ctx()), x));
  for (const float p : {1.0f, -0.1f, 1.5f, kNaN}) expect_invalid([&] { Dropout("bad_dropout", p); }, "bad_dropout");
}

// ---- softmax cross-entropy by hand --------------------------------------------------------

TEST(CrossEntropy, KnownValues) {
  // softmax([0, ln 3]) = [1/4, 3/4]: loss -ln(3/4) = ln(4/3), gradient [1/4, -1/4].
  const float ln3 = static_cast<float>(std::log(3.0));
  const LossResult r = softmax_cross_entropy(Tensor({1, 2}, {0.0f, ln3}), {1});
  EXPECT_NEAR(r.loss, std::log(4.0 / 3.0), 1e-7);
  EXPECT_NEAR(r.grad[0], 0.25f, 1e-7);
  EXPECT_NEAR(r.grad[1], -0.25f, 1e-7);
  EXPECT_EQ(r.correct, 1u);

  // Two rows, the mean over the batch, label smoothing 0.1: targets [0.05, 0.95] on label 1.
  const Tensor logits({2, 2}, {0.0f, ln3, 2.0f, 0.0f});
  const LossResult s = softmax_cross_entropy(logits, {1, 1}, 0.1f);
  const double row0 = -(0.05 * std::log(0.25) + 0.95 * std::log(0.75));
  const double p1 = 1.0 / (1.0 + std::exp(2.0));  // softmax of the second row at class 1
  const double row1 = -(0.05 * std::log(1.0 - p1) + 0.95 * std::log(p1));
  EXPECT_NEAR(s.loss, (row0 + row1) / 2.0, 1e-7);
  EXPECT_NEAR(s.grad[0], (0.25 - 0.05) / 2.0, 1e-7);
  EXPECT_NEAR(s.grad[3], (p1 - 0.95) / 2.0, 1e-7);
  EXPECT_EQ(s.correct, 1u);  // the second row predicts class 0

  // Huge logits stay finite (the row maximum is subtracted first).
  const LossResult big = softmax_cross_entropy(Tensor({1, 2}, {1000.0f, 0.0f}), {1});
  EXPECT_NEAR(big.loss, 1000.0, 1e-9);
  EXPECT_NEAR(big.grad[0], 1.0f, 1e-7);
}

TEST(CrossEntropy, TiesCountTheFirstMaximum) {
  const Tensor tie({1, 3}, {2.0f, 2.0f, 1.0f});
  EXPECT_EQ(softmax_cross_entropy(tie, {0}).correct, 1u);
  EXPECT_EQ(softmax_cross_entropy(tie, {1}).correct, 0u);
}

TEST(CrossEntropy, BadInputThrowsAndNonFiniteGivesNaN) {
  const Tensor logits({2, 3});
  expect_invalid([&] { softmax_cross_entropy(logits, {0, 3}); }, "label 3");
  expect_invalid([&] { softmax_cross_entropy(logits, {0}); }, "[2, 3]");
  expect_invalid([&] { softmax_cross_entropy(Tensor({6}), {0}); }, "[6]");
  expect_invalid([&] { softmax_cross_entropy(logits, {0, 1}, 1.5f); }, "smoothing");
  for (const float bad : {kNaN, kInf, -kInf}) {
    const LossResult r = softmax_cross_entropy(Tensor({2, 3}, {0, 1, 2, 0, bad, 1}), {2, 1});
    EXPECT_TRUE(std::isnan(r.loss)) << bad;
  }
}

// ---- thread-count independence ------------------------------------------------------------

TEST(Determinism, BatchNormAndPoolsAreBitwiseIdenticalFor1And2Threads) {
  const Tensor x = random_tensor({6, 8, 9, 9}, 30, -3.0f, 3.0f);
  const Tensor r = random_tensor({6, 8, 9, 9}, 31, -1.0f, 1.0f);
  std::vector<std::vector<Tensor>> results;
  for (const int threads : {1, 2}) {
    const StepContext ctx = train_ctx(threads);
    std::vector<Tensor> out;
    BatchNorm2d bn("bn", 8);
    bn.weight.value = random_tensor({8}, 32, 0.5f, 1.5f);
    out.push_back(bn.forward(x, ctx));
    out.push_back(bn.backward(r, ctx));
    out.push_back(bn.weight.grad);
    out.push_back(bn.bias.grad);
    out.push_back(bn.running_mean.value);
    out.push_back(bn.running_var.value);
    out.push_back(bn.forward(x, eval_ctx()));
    MaxPool2d maxpool("max", 3, 2);
    out.push_back(maxpool.forward(x, ctx));
    out.push_back(maxpool.backward(random_tensor(maxpool.output_shape(x.shape()), 33, -1.0f, 1.0f), ctx));
    AvgPool2d avgpool("avg", 3, 2);
    out.push_back(avgpool.forward(x, ctx));
    out.push_back(avgpool.backward(random_tensor(avgpool.output_shape(x.shape()), 34, -1.0f, 1.0f), ctx));
    GlobalAvgPool gap("gap");
    out.push_back(gap.forward(x, ctx));
    out.push_back(gap.backward(random_tensor({6, 8}, 35, -1.0f, 1.0f), ctx));
    results.push_back(std::move(out));
  }
  for (std::size_t k = 0; k < results[0].size(); ++k) EXPECT_TRUE(same_bits(results[0][k], results[1][k])) << k;
}

// Tensor::uninitialized reuses the storage of the most recently dropped large tensor of its size
// (destroyed or moved over); a small one, or one with no storage to reuse, starts at zero, and a
// copy never shares storage.
TEST(TensorStorage, UninitializedReusesDroppedLargeTensors) {
  const Shape large{3, 1 << 16};
  const float* first = nullptr;
  {
    Tensor t(large, 2.0f);
    first = t.data();
  }
  Tensor a = Tensor::uninitialized(large);
  EXPECT_EQ(a.data(), first);
  EXPECT_EQ(a.shape(), large);
  EXPECT_EQ(a[0], 2.0f);  // the old values: unspecified in general

  const float* second = a.data();
  a = Tensor({2, 2});  // a move assignment hands a's large storage back
  Tensor b = Tensor::uninitialized(large);
  EXPECT_EQ(b.data(), second);
  const Tensor copy = b;
  EXPECT_NE(copy.data(), b.data());

  EXPECT_EQ(Tensor::uninitialized({5, 7}).values(), std::vector<float>(35, 0.0f));  // small: never reused
  EXPECT_EQ(Tensor::uninitialized({7, 1 << 16}).values(), std::vector<float>(7 << 16, 0.0f));  // a fresh size
}

}  // namespace
}  // namespace mpsim
