// BatchNorm2d with PyTorch's semantics (docs/nn.md). Not a GEMM, so never emulated: it runs in
// FP32 with each channel's statistics accumulated in double in a fixed order (n, then h*W + w)
// and rounded to float once. The double accumulator keeps the result independent of how the
// channel could be blocked and nearly correctly rounded, so it differs from PyTorch's CPU kernel
// (whose float summation order we cannot reproduce anyway) by a few ulps at most. Threads split
// channels, never a channel's sum.
#include <omp.h>

#include <cmath>
#include <stdexcept>

#include "mpsim/layers.h"

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

Tensor BatchNorm2d::forward(const Tensor& x, const StepContext& ctx) {
  const Shape shape = output_shape(x.shape());
  const std::size_t N = shape[0], C = channels_, HW = shape[2] * shape[3], m = N * HW;
  Tensor y(shape);
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
      const double mean = rm[c];
      const double inv_std = 1.0 / std::sqrt(static_cast<double>(rv[c]) + eps);
      for (std::size_t n = 0; n < N; ++n) {
        const std::size_t base = (n * C + c) * HW;
        for (std::size_t i = 0; i < HW; ++i) {
          const auto xh = static_cast<float>((xs[base + i] - mean) * inv_std);
          ys[base + i] = xh * g[c] + b[c];
        }
      }
    }
    return y;
  }

  if (m < 2) {
    // As PyTorch: the unbiased variance of one value is undefined.
    throw std::invalid_argument(describe(*this) + ": training needs more than one value per channel, got input " +
                                to_string(shape));
  }
  xhat_ = Tensor(shape);
  inv_std_ = Tensor({C});
  float* xh = xhat_.data();
  float* is = inv_std_.data();
  const double mom = momentum_;
  const double count = static_cast<double>(m);

#pragma omp parallel for num_threads(threads) schedule(static)
  for (long long cc = 0; cc < channels; ++cc) {
    const auto c = static_cast<std::size_t>(cc);
    // Two passes (mean, then squared deviations): no cancellation in the variance.
    double sum = 0.0;
    for (std::size_t n = 0; n < N; ++n) {
      const float* p = xs + (n * C + c) * HW;
      for (std::size_t i = 0; i < HW; ++i) sum += p[i];
    }
    const double mean = sum / count;
    double sq = 0.0;
    for (std::size_t n = 0; n < N; ++n) {
      const float* p = xs + (n * C + c) * HW;
      for (std::size_t i = 0; i < HW; ++i) {
        const double d = p[i] - mean;
        sq += d * d;
      }
    }
    const double inv_std = 1.0 / std::sqrt(sq / count + eps);  // biased variance normalizes
    is[c] = static_cast<float>(inv_std);
    for (std::size_t n = 0; n < N; ++n) {
      const std::size_t base = (n * C + c) * HW;
      for (std::size_t i = 0; i < HW; ++i) {
        // The normalized value is rounded once; the affine step is plain FP32 as in PyTorch.
        const auto v = static_cast<float>((xs[base + i] - mean) * inv_std);
        xh[base + i] = v;
        ys[base + i] = v * g[c] + b[c];
      }
    }
    // The running variance takes the unbiased estimate (n / (n - 1)), as PyTorch.
    rm[c] = static_cast<float>((1.0 - mom) * rm[c] + mom * mean);
    rv[c] = static_cast<float>((1.0 - mom) * rv[c] + mom * (sq / (count - 1.0)));
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
  Tensor dx(shape);
  weight.grad = Tensor({C});
  bias.grad = Tensor({C});
  const float* d = dy.data();
  const float* xh = xhat_.data();
  float* out = dx.data();
  const long long channels = static_cast<long long>(C);

#pragma omp parallel for num_threads(team_size(ctx)) schedule(static)
  for (long long cc = 0; cc < channels; ++cc) {
    const auto c = static_cast<std::size_t>(cc);
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (std::size_t n = 0; n < N; ++n) {
      const std::size_t base = (n * C + c) * HW;
      for (std::size_t i = 0; i < HW; ++i) {
        sum_dy += d[base + i];
        sum_dy_xhat += static_cast<double>(d[base + i]) * xh[base + i];
      }
    }
    bias.grad[c] = static_cast<float>(sum_dy);
    weight.grad[c] = static_cast<float>(sum_dy_xhat);
    // The full gradient through the batch mean and variance:
    // dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)).
    const double k = static_cast<double>(weight.value[c]) * inv_std_[c];
    const double mean_dy = sum_dy / count, mean_dy_xhat = sum_dy_xhat / count;
    for (std::size_t n = 0; n < N; ++n) {
      const std::size_t base = (n * C + c) * HW;
      for (std::size_t i = 0; i < HW; ++i) {
        out[base + i] = static_cast<float>(k * (d[base + i] - mean_dy - xh[base + i] * mean_dy_xhat));
      }
    }
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
