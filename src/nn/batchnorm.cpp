// BatchNorm2d with PyTorch's semantics (docs/nn.md). Not a GEMM, so never emulated: it runs in
// FP32 with each channel's statistics accumulated in double in a fixed order and rounded to
// float once. The order: element i of each (sample, channel) plane goes into lane i mod 8 of
// eight double accumulators, planes in sample order, and the lanes are added pairwise at the
// end -- independent lanes keep the adds in vector registers instead of one long dependency
// chain, and the pattern does not depend on the thread count or vector width. The double
// accumulator keeps the result nearly correctly rounded, so it differs from PyTorch's CPU kernel
// (whose float summation order we cannot reproduce anyway) by a few ulps at most. Threads split
// channels, never a channel's sum.
#include <omp.h>

#include <cmath>
#include <stdexcept>

#include "mpsim/layers.h"
#include "src/nn/im2col.h"  // MPSIM_VECTOR_CLONES

namespace mpsim {

namespace {

int team_size(const StepContext& ctx) { return ctx.threads > 0 ? ctx.threads : omp_get_max_threads(); }

std::string describe(const Layer& l) { return std::string(l.type()) + " '" + l.name() + "'"; }

}  // namespace

BatchNorm2d::BatchNorm2d(std::string name, std::size_t channels, float eps, float momentum)
    : Layer(std::move(name)),
      // PyTorch's fixed defaults: gamma 1, beta 0, running mean 0, running variance 1.
      weight{this->name() + ".weight", Tensor({channels}, 1.0f), Tensor({channels}, 0.0f)},
      bias{this->name() + ".bias", Tensor({channels}, 0.0f), Tensor({channels}, 0.0f)},
      running_mean{this->name() + ".running_mean", Tensor({channels}, 0.0f)},
      running_var{this->name() + ".running_var", Tensor({channels}, 1.0f)},
      // PyTorch keeps an int64 scalar (shape []); a float of shape [] holds the count exactly
      // up to 2^24 steps, enough for any run here, and keeps every tensor float32.
      num_batches_tracked{this->name() + ".num_batches_tracked", Tensor(Shape{}, 0.0f)},
      channels_(channels),
      eps_(eps),
      momentum_(momentum) {
  if (channels == 0) throw std::invalid_argument(describe(*this) + ": needs at least one channel");
  if (!(eps >= 0.0f) || !std::isfinite(eps)) {
    throw std::invalid_argument(describe(*this) + ": eps must be finite and >= 0, got " + std::to_string(eps));
  }
  if (!(momentum >= 0.0f && momentum <= 1.0f)) {
    throw std::invalid_argument(describe(*this) + ": momentum must lie in [0, 1], got " + std::to_string(momentum));
  }
}

Shape BatchNorm2d::output_shape(const Shape& in) const {
  if (in.size() != 4 || in[1] != channels_) {
    throw std::invalid_argument(describe(*this) + ": expects [N, " + std::to_string(channels_) + ", H, W], got " +
                                to_string(in));
  }
  return in;
}

namespace {

// Eight double accumulators, element i of a run into lane i mod 8 (see the top of the file).
struct Lanes {
  double v[8] = {};
  double total() const { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }
};

// Where channel c's values lie in an [N, C, HW] tensor: N planes of HW values, C*HW apart.
struct ChannelView {
  std::size_t N, C, HW, c;
  std::size_t plane(std::size_t n) const { return (n * C + c) * HW; }
};

// The sum of channel c of x.
MPSIM_VECTOR_CLONES
double channel_sum(const ChannelView& v, const float* x) {
  Lanes s;
  for (std::size_t n = 0; n < v.N; ++n) {
    const float* p = x + v.plane(n);
    std::size_t i = 0;
    for (; i + 8 <= v.HW; i += 8)
      for (std::size_t j = 0; j < 8; ++j) s.v[j] += static_cast<double>(p[i + j]);
    for (std::size_t j = 0; i + j < v.HW; ++j) s.v[j] += static_cast<double>(p[i + j]);
  }
  return s.total();
}

// The sum of (x - mean)^2 over channel c.
MPSIM_VECTOR_CLONES
double channel_squared_deviations(const ChannelView& v, const float* x, double mean) {
  Lanes s;
  for (std::size_t n = 0; n < v.N; ++n) {
    const float* p = x + v.plane(n);
    std::size_t i = 0;
    for (; i + 8 <= v.HW; i += 8) {
      for (std::size_t j = 0; j < 8; ++j) {
        const double d = static_cast<double>(p[i + j]) - mean;
        s.v[j] += d * d;
      }
    }
    for (std::size_t j = 0; i + j < v.HW; ++j) {
      const double d = static_cast<double>(p[i + j]) - mean;
      s.v[j] += d * d;
    }
  }
  return s.total();
}

// xhat = (x - mean) * inv_std rounded once to float (kept when xh is given), y = xhat * g + b in
// FP32 as PyTorch's affine step.
MPSIM_VECTOR_CLONES
void channel_normalize(const ChannelView& v, const float* x, double mean, double inv_std, float g, float b, float* xh,
                       float* y) {
  for (std::size_t n = 0; n < v.N; ++n) {
    const std::size_t base = v.plane(n);
    const float* p = x + base;
    float* q = y + base;
    if (xh) {
      float* h = xh + base;
      for (std::size_t i = 0; i < v.HW; ++i) {
        const auto t = static_cast<float>((static_cast<double>(p[i]) - mean) * inv_std);
        h[i] = t;
        q[i] = t * g + b;
      }
    } else {
      for (std::size_t i = 0; i < v.HW; ++i) {
        const auto t = static_cast<float>((static_cast<double>(p[i]) - mean) * inv_std);
        q[i] = t * g + b;
      }
    }
  }
}

// The sums of dy and of dy * xhat over channel c.
MPSIM_VECTOR_CLONES
void channel_gradient_sums(const ChannelView& v, const float* d, const float* xh, double* sum_dy, double* sum_dy_xhat) {
  Lanes s, t;
  for (std::size_t n = 0; n < v.N; ++n) {
    const float* dp = d + v.plane(n);
    const float* hp = xh + v.plane(n);
    std::size_t i = 0;
    for (; i + 8 <= v.HW; i += 8) {
      for (std::size_t j = 0; j < 8; ++j) {
        s.v[j] += static_cast<double>(dp[i + j]);
        t.v[j] += static_cast<double>(dp[i + j]) * static_cast<double>(hp[i + j]);
      }
    }
    for (std::size_t j = 0; i + j < v.HW; ++j) {
      s.v[j] += static_cast<double>(dp[i + j]);
      t.v[j] += static_cast<double>(dp[i + j]) * static_cast<double>(hp[i + j]);
    }
  }
  *sum_dy = s.total();
  *sum_dy_xhat = t.total();
}

// dx = k * ((dy - mean_dy) - xhat * mean_dy_xhat), in double, rounded once.
MPSIM_VECTOR_CLONES
void channel_input_gradient(const ChannelView& v, const float* d, const float* xh, double k, double mean_dy,
                            double mean_dy_xhat, float* dx) {
  for (std::size_t n = 0; n < v.N; ++n) {
    const std::size_t base = v.plane(n);
    const float* dp = d + base;
    const float* hp = xh + base;
    float* o = dx + base;
    for (std::size_t i = 0; i < v.HW; ++i) {
      const double centred = static_cast<double>(dp[i]) - mean_dy;
      o[i] = static_cast<float>(k * (centred - static_cast<double>(hp[i]) * mean_dy_xhat));
    }
  }
}

}  // namespace

Tensor BatchNorm2d::forward(const Tensor& x, const StepContext& ctx) {
  const Shape shape = output_shape(x.shape());
  const std::size_t N = shape[0], C = channels_, HW = shape[2] * shape[3], m = N * HW;
  Tensor y = Tensor::uninitialized(shape);  // every channel is normalized below
  const float* xs = x.data();
  float* ys = y.data();
  const float* g = weight.value.data();
  const float* b = bias.value.data();
  float* rm = running_mean.value.data();
  float* rv = running_var.value.data();
  const double eps = eps_;
  const int threads = team_size(ctx);
  const long long channels = static_cast<long long>(C);

  if (!ctx.training) {
    // Running statistics; nothing is kept, so a backward must follow a training forward.
    xhat_ = Tensor();
    inv_std_ = Tensor();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long long cc = 0; cc < channels; ++cc) {
      const auto c = static_cast<std::size_t>(cc);
      const double inv_std = 1.0 / std::sqrt(static_cast<double>(rv[c]) + eps);
      channel_normalize({N, C, HW, c}, xs, rm[c], inv_std, g[c], b[c], nullptr, ys);
    }
    return y;
  }

  if (m < 2) {
    // As PyTorch: the unbiased variance of one value is undefined.
    throw std::invalid_argument(describe(*this) + ": training needs more than one value per channel, got input " +
                                to_string(shape));
  }
  // Every element of xhat is written below: a tensor of the right shape is reused as it is.
  if (xhat_.shape() != shape) xhat_ = Tensor(shape);
  if (inv_std_.shape() != Shape{C}) inv_std_ = Tensor({C});
  float* xh = xhat_.data();
  float* is = inv_std_.data();
  const double mom = momentum_;
  const double count = static_cast<double>(m);

#pragma omp parallel for num_threads(threads) schedule(static)
  for (long long cc = 0; cc < channels; ++cc) {
    const auto c = static_cast<std::size_t>(cc);
    const ChannelView v{N, C, HW, c};
    // Two passes (mean, then squared deviations): no cancellation in the variance.
    const double mean = channel_sum(v, xs) / count;
    const double var_sum = channel_squared_deviations(v, xs, mean);
    const double inv_std = 1.0 / std::sqrt(var_sum / count + eps);  // biased variance normalizes
    is[c] = static_cast<float>(inv_std);
    channel_normalize(v, xs, mean, inv_std, g[c], b[c], xh, ys);
    // The running variance takes the unbiased estimate (n / (n - 1)), as PyTorch.
    rm[c] = static_cast<float>((1.0 - mom) * rm[c] + mom * mean);
    rv[c] = static_cast<float>((1.0 - mom) * rv[c] + mom * (var_sum / (count - 1.0)));
  }
  num_batches_tracked.value[0] += 1.0f;
  return y;
}

Tensor BatchNorm2d::backward(const Tensor& dy, const StepContext& ctx) {
  if (inv_std_.empty()) {  // the last forward was in eval mode, or there was none
    throw std::logic_error(describe(*this) + ": backward needs a forward in training mode first");
  }
  if (dy.shape() != xhat_.shape()) {
    throw std::invalid_argument(describe(*this) + ": gradient of shape " + to_string(dy.shape()) +
                                " for an output of shape " + to_string(xhat_.shape()));
  }
  const Shape& shape = xhat_.shape();
  const std::size_t N = shape[0], C = channels_, HW = shape[2] * shape[3];
  const double count = static_cast<double>(N * HW);
  Tensor dx = Tensor::uninitialized(shape);  // every channel's gradient is written below
  if (weight.grad.shape() != Shape{C}) weight.grad = Tensor({C});
  if (bias.grad.shape() != Shape{C}) bias.grad = Tensor({C});
  const float* d = dy.data();
  const float* xh = xhat_.data();
  float* out = dx.data();
  const long long channels = static_cast<long long>(C);

#pragma omp parallel for num_threads(team_size(ctx)) schedule(static)
  for (long long cc = 0; cc < channels; ++cc) {
    const auto c = static_cast<std::size_t>(cc);
    const ChannelView v{N, C, HW, c};
    double sum_dy = 0, sum_dy_xhat = 0;
    channel_gradient_sums(v, d, xh, &sum_dy, &sum_dy_xhat);
    bias.grad[c] = static_cast<float>(sum_dy);
    weight.grad[c] = static_cast<float>(sum_dy_xhat);
    // The full gradient through the batch mean and variance:
    // dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)).
    const double k = static_cast<double>(weight.value[c]) * inv_std_[c];
    channel_input_gradient(v, d, xh, k, sum_dy / count, sum_dy_xhat / count, out);
  }
  return dx;
}

void BatchNorm2d::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&weight);
  out.push_back(&bias);
}

void BatchNorm2d::collect_buffers(std::vector<Buffer*>& out) {
  out.push_back(&running_mean);
  out.push_back(&running_var);
  out.push_back(&num_batches_tracked);
}

}  // namespace mpsim
