// Layers that only move values: Flatten and ZeroPad2d (docs/nn.md). No arithmetic, so the
// results are exact and trivially the same for any thread count.
#include <omp.h>

#include <algorithm>
#include <stdexcept>

#include "mpsim/layers.h"

namespace mpsim {

namespace {

int team_size(const StepContext& ctx) { return ctx.threads > 0 ? ctx.threads : omp_get_max_threads(); }

std::string describe(const Layer& l) { return std::string(l.type()) + " '" + l.name() + "'"; }

void check_gradient_shape(const Layer& l, const Shape& dy, const Shape& expected) {
  if (dy != expected) {
    throw std::invalid_argument(describe(l) + ": gradient of shape " + to_string(dy) + " for an output of shape " +
                                to_string(expected));
  }
}

}  // namespace

// ---- Flatten ------------------------------------------------------------------------------

Shape Flatten::output_shape(const Shape& in) const {
  // torch.nn.Flatten() (start_dim 1) needs a batch dimension and at least one more.
  if (in.size() < 2) {
    throw std::invalid_argument(describe(*this) + ": expects [N, ...] of rank >= 2, got " + to_string(in));
  }
  std::size_t features = 1;
  for (std::size_t i = 1; i < in.size(); ++i) features *= in[i];
  return {in[0], features};
}

Tensor Flatten::forward(const Tensor& x, const StepContext& ctx) {
  Tensor y = x;
  y.reshape(output_shape(x.shape()));
  if (ctx.training) {
    in_shape_ = x.shape();
  } else {
    in_shape_.clear();
  }
  return y;
}

Tensor Flatten::backward(const Tensor& dy, const StepContext& ctx) {
  (void)ctx;
  if (in_shape_.empty()) throw std::logic_error(describe(*this) + ": backward needs a forward in training mode first");
  check_gradient_shape(*this, dy.shape(), output_shape(in_shape_));
  Tensor dx = dy;
  dx.reshape(in_shape_);
  return dx;
}

// ---- ZeroPad2d ----------------------------------------------------------------------------

ZeroPad2d::ZeroPad2d(std::string name, std::size_t pad) : Layer(std::move(name)), pad_(pad) {}

Shape ZeroPad2d::output_shape(const Shape& in) const {
  if (in.size() != 4) throw std::invalid_argument(describe(*this) + ": expects [N, C, H, W], got " + to_string(in));
  return {in[0], in[1], in[2] + 2 * pad_, in[3] + 2 * pad_};
}

Tensor ZeroPad2d::forward(const Tensor& x, const StepContext& ctx) {
  const Shape out = output_shape(x.shape());
  const std::size_t H = x.dim(2), W = x.dim(3), OW = out[3], p = pad_;
  Tensor y(out);  // zero-filled
  const float* xs = x.data();
  float* ys = y.data();
  const auto planes = static_cast<long long>(out[0] * out[1]);
#pragma omp parallel for num_threads(team_size(ctx)) schedule(static)
  for (long long pl = 0; pl < planes; ++pl) {
    const float* src = xs + static_cast<std::size_t>(pl) * H * W;
    float* dst = ys + static_cast<std::size_t>(pl) * out[2] * OW;
    for (std::size_t h = 0; h < H; ++h) std::copy(src + h * W, src + (h + 1) * W, dst + (h + p) * OW + p);
  }
  return y;
}

Tensor ZeroPad2d::backward(const Tensor& dy, const StepContext& ctx) {
  // Stateless: the input shape follows from the gradient's.
  const Shape& g = dy.shape();
  if (g.size() != 4 || g[2] < 2 * pad_ || g[3] < 2 * pad_) {
    throw std::invalid_argument(describe(*this) + ": gradient of shape " + to_string(g) +
                                " cannot come from padding by " + std::to_string(pad_));
  }
  const std::size_t H = g[2] - 2 * pad_, W = g[3] - 2 * pad_, OW = g[3], p = pad_;
  Tensor dx({g[0], g[1], H, W});
  const float* d = dy.data();
  float* out = dx.data();
  const auto planes = static_cast<long long>(g[0] * g[1]);
#pragma omp parallel for num_threads(team_size(ctx)) schedule(static)
  for (long long pl = 0; pl < planes; ++pl) {
    const float* src = d + static_cast<std::size_t>(pl) * g[2] * OW;
    float* dst = out + static_cast<std::size_t>(pl) * H * W;
    for (std::size_t h = 0; h < H; ++h) std::copy(src + (h + p) * OW + p, src + (h + p) * OW + p + W, dst + h * W);
  }
  return dx;
}

}  // namespace mpsim
