// Pooling layers in FP32 with PyTorch's semantics (docs/nn.md). Every (sample, channel) plane is
// independent: threads split planes, and each plane's sums and gradient scatters run in a
// fixed order (output windows row-major, each window row-major).
#include <omp.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "mpsim/layers.h"
#include "src/nn/im2col.h"  // MPSIM_VECTOR_CLONES

namespace mpsim {

namespace {

int team_size(const StepContext& ctx) { return ctx.threads > 0 ? ctx.threads : omp_get_max_threads(); }

std::string describe(const Layer& l) { return std::string(l.type()) + " '" + l.name() + "'"; }

void check_window(const Layer& l, std::size_t kernel, std::size_t stride) {
  if (kernel == 0 || stride == 0) {
    throw std::invalid_argument(describe(l) + ": kernel and stride must be positive, got kernel " +
                                std::to_string(kernel) + ", stride " + std::to_string(stride));
  }
}

// [N, C, H, W] -> [N, C, (H - k) / s + 1, (W - k) / s + 1] (no padding, floor mode).
Shape pooled_shape(const Layer& l, const Shape& in, std::size_t k, std::size_t s) {
  if (in.size() != 4) throw std::invalid_argument(describe(l) + ": expects [N, C, H, W], got " + to_string(in));
  if (in[2] < k || in[3] < k) {
    throw std::invalid_argument(describe(l) + ": a " + std::to_string(k) + "x" + std::to_string(k) +
                                " window does not fit input " + to_string(in));
  }
  return {in[0], in[1], (in[2] - k) / s + 1, (in[3] - k) / s + 1};
}

void check_saved(const Layer& l, const Shape& in_shape) {
  if (in_shape.empty()) throw std::logic_error(describe(l) + ": backward needs a forward in training mode first");
}

void check_gradient_shape(const Layer& l, const Shape& dy, const Shape& expected) {
  if (dy != expected) {
    throw std::invalid_argument(describe(l) + ": gradient of shape " + to_string(dy) + " for an output of shape " +
                                to_string(expected));
  }
}

}  // namespace

// ---- MaxPool2d ----------------------------------------------------------------------------

MaxPool2d::MaxPool2d(std::string name, std::size_t kernel, std::size_t stride)
    : Layer(std::move(name)), kernel_(kernel), stride_(stride) {
  check_window(*this, kernel, stride);
}

Shape MaxPool2d::output_shape(const Shape& in) const {
  const Shape out = pooled_shape(*this, in, kernel_, stride_);
  if (in[2] * in[3] > std::numeric_limits<std::uint32_t>::max()) {
    throw std::invalid_argument(describe(*this) + ": plane of input " + to_string(in) + " too large");
  }
  return out;
}

namespace {

// One plane of max pooling (windows K x K when K > 0, else k x k), writing the maximum of each
// window and, when am is given, its index in the plane. PyTorch's CPU rule: start from -inf at
// the window's first element and take a value that is strictly greater or NaN. Ties go to the
// first maximum; a NaN makes the output NaN (and the last NaN of the window receives the
// gradient). The update is written as selects, which the compiler makes branch-free: a branch
// per element would be mispredicted about half of the time.
template <std::size_t K>
void maxpool_plane(const float* p, std::size_t IW, std::size_t H, std::size_t W, std::size_t k, std::size_t s,
                   float* q, std::uint32_t* am) {
  const std::size_t kk = K > 0 ? K : k;
  for (std::size_t oh = 0; oh < H; ++oh) {
    for (std::size_t ow = 0; ow < W; ++ow) {
      float best = -std::numeric_limits<float>::infinity();
      std::size_t arg = oh * s * IW + ow * s;
      for (std::size_t r = 0; r < kk; ++r) {
        for (std::size_t c = 0; c < kk; ++c) {
          const std::size_t idx = (oh * s + r) * IW + ow * s + c;
          const float v = p[idx];
          const bool take = v > best || v != v;
          best = take ? v : best;
          arg = take ? idx : arg;
        }
      }
      q[oh * W + ow] = best;
      if (am) am[oh * W + ow] = static_cast<std::uint32_t>(arg);
    }
  }
}

// The 2 x 2, stride 2 case (LeNet's), one output row from input rows r0 and r1 (r1 = r0 + IW):
// the same rule as maxpool_plane with the window unrolled, so that the compiler can vectorize
// across the row's outputs. base: the plane index of r0[0].
MPSIM_VECTOR_CLONES
void maxpool2x2_row(const float* r0, std::size_t IW, std::size_t W, std::uint32_t base, float* q, std::uint32_t* am) {
  const float* r1 = r0 + IW;
  const auto down = static_cast<std::uint32_t>(IW);
  for (std::size_t ow = 0; ow < W; ++ow) {
    const auto i0 = base + static_cast<std::uint32_t>(2 * ow);
    const float v0 = r0[2 * ow], v1 = r0[2 * ow + 1], v2 = r1[2 * ow], v3 = r1[2 * ow + 1];
    float best = -std::numeric_limits<float>::infinity();
    std::uint32_t arg = i0;
    bool take = v0 > best || v0 != v0;
    best = take ? v0 : best;
    arg = take ? i0 : arg;
    take = v1 > best || v1 != v1;
    best = take ? v1 : best;
    arg = take ? i0 + 1 : arg;
    take = v2 > best || v2 != v2;
    best = take ? v2 : best;
    arg = take ? i0 + down : arg;
    take = v3 > best || v3 != v3;
    best = take ? v3 : best;
    arg = take ? i0 + down + 1 : arg;
    q[ow] = best;
    if (am) am[ow] = arg;
  }
}

}  // namespace

Tensor MaxPool2d::forward(const Tensor& x, const StepContext& ctx) {
  const Shape out = output_shape(x.shape());
  const std::size_t H = out[2], W = out[3], IH = x.dim(2), IW = x.dim(3), k = kernel_, s = stride_;
  const std::size_t in_plane = IH * IW, out_plane = H * W;
  Tensor y(out);
  if (ctx.training) {
    in_shape_ = x.shape();
    argmax_.resize(y.size());  // every entry is written below
  } else {
    in_shape_.clear();
    argmax_.clear();
  }
  std::uint32_t* am = ctx.training ? argmax_.data() : nullptr;
  const float* xs = x.data();
  float* ys = y.data();
  const auto planes = static_cast<long long>(out[0] * out[1]);
#pragma omp parallel for num_threads(team_size(ctx)) schedule(static)
  for (long long pl = 0; pl < planes; ++pl) {
    const float* p = xs + static_cast<std::size_t>(pl) * in_plane;
    const std::size_t obase = static_cast<std::size_t>(pl) * out_plane;
    std::uint32_t* a = am ? am + obase : nullptr;
    if (k == 2 && s == 2) {
      for (std::size_t oh = 0; oh < H; ++oh) {
        maxpool2x2_row(p + 2 * oh * IW, IW, W, static_cast<std::uint32_t>(2 * oh * IW), ys + obase + oh * W,
                       a ? a + oh * W : nullptr);
      }
    } else if (k == 2) {
      maxpool_plane<2>(p, IW, H, W, k, s, ys + obase, a);
    } else {
      maxpool_plane<0>(p, IW, H, W, k, s, ys + obase, a);
    }
  }
  return y;
}

Tensor MaxPool2d::backward(const Tensor& dy, const StepContext& ctx) {
  check_saved(*this, in_shape_);
  const Shape out = output_shape(in_shape_);
  check_gradient_shape(*this, dy.shape(), out);
  Tensor dx(in_shape_);
  const std::size_t in_plane = in_shape_[2] * in_shape_[3], out_plane = out[2] * out[3];
  const float* d = dy.data();
  float* g = dx.data();
  const std::uint32_t* am = argmax_.data();
  const auto planes = static_cast<long long>(out[0] * out[1]);
#pragma omp parallel for num_threads(team_size(ctx)) schedule(static)
  for (long long pl = 0; pl < planes; ++pl) {
    const std::size_t ib = static_cast<std::size_t>(pl) * in_plane, ob = static_cast<std::size_t>(pl) * out_plane;
    // Overlapping windows (stride < kernel) may share a maximum: accumulated in output order.
    for (std::size_t o = 0; o < out_plane; ++o) g[ib + am[ob + o]] += d[ob + o];
  }
  return dx;
}

// ---- AvgPool2d ----------------------------------------------------------------------------

AvgPool2d::AvgPool2d(std::string name, std::size_t kernel, std::size_t stride)
    : Layer(std::move(name)), kernel_(kernel), stride_(stride) {
  check_window(*this, kernel, stride);
}

Shape AvgPool2d::output_shape(const Shape& in) const { return pooled_shape(*this, in, kernel_, stride_); }

Tensor AvgPool2d::forward(const Tensor& x, const StepContext& ctx) {
  const Shape out = output_shape(x.shape());
  const std::size_t H = out[2], W = out[3], IW = x.dim(3), k = kernel_, s = stride_;
  const std::size_t in_plane = x.dim(2) * IW, out_plane = H * W;
  // No padding, so every window counts kernel^2 elements.
  const auto divisor = static_cast<float>(k * k);
  Tensor y(out);
  const float* xs = x.data();
  float* ys = y.data();
  const auto planes = static_cast<long long>(out[0] * out[1]);
#pragma omp parallel for num_threads(team_size(ctx)) schedule(static)
  for (long long pl = 0; pl < planes; ++pl) {
    const float* p = xs + static_cast<std::size_t>(pl) * in_plane;
    float* q = ys + static_cast<std::size_t>(pl) * out_plane;
    for (std::size_t oh = 0; oh < H; ++oh) {
      for (std::size_t ow = 0; ow < W; ++ow) {
        // A float sum in row-major window order, then one division: PyTorch's CPU kernel.
        float sum = 0.0f;
        for (std::size_t r = 0; r < k; ++r) {
          for (std::size_t c = 0; c < k; ++c) sum += p[(oh * s + r) * IW + ow * s + c];
        }
        q[oh * W + ow] = sum / divisor;
      }
    }
  }
  if (ctx.training) {
    in_shape_ = x.shape();
  } else {
    in_shape_.clear();
  }
  return y;
}

Tensor AvgPool2d::backward(const Tensor& dy, const StepContext& ctx) {
  check_saved(*this, in_shape_);
  const Shape out = output_shape(in_shape_);
  check_gradient_shape(*this, dy.shape(), out);
  const std::size_t H = out[2], W = out[3], IW = in_shape_[3], k = kernel_, s = stride_;
  const std::size_t in_plane = in_shape_[2] * IW, out_plane = H * W;
  const auto divisor = static_cast<float>(k * k);
  Tensor dx(in_shape_);
  const float* d = dy.data();
  float* g = dx.data();
  const auto planes = static_cast<long long>(out[0] * out[1]);
#pragma omp parallel for num_threads(team_size(ctx)) schedule(static)
  for (long long pl = 0; pl < planes; ++pl) {
    const float* dp = d + static_cast<std::size_t>(pl) * out_plane;
    float* gp = g + static_cast<std::size_t>(pl) * in_plane;
    for (std::size_t oh = 0; oh < H; ++oh) {
      for (std::size_t ow = 0; ow < W; ++ow) {
        const float share = dp[oh * W + ow] / divisor;
        for (std::size_t r = 0; r < k; ++r) {
          for (std::size_t c = 0; c < k; ++c) gp[(oh * s + r) * IW + ow * s + c] += share;
        }
      }
    }
  }
  return dx;
}

// ---- GlobalAvgPool ------------------------------------------------------------------------

Shape GlobalAvgPool::output_shape(const Shape& in) const {
  if (in.size() != 4 || in[2] == 0 || in[3] == 0) {
    throw std::invalid_argument(describe(*this) + ": expects [N, C, H, W] with H, W > 0, got " + to_string(in));
  }
  return {in[0], in[1]};
}

Tensor GlobalAvgPool::forward(const Tensor& x, const StepContext& ctx) {
  const Shape out = output_shape(x.shape());
  const std::size_t HW = x.dim(2) * x.dim(3);
  const double count = static_cast<double>(HW);
  Tensor y(out);
  const float* xs = x.data();
  float* ys = y.data();
  const auto planes = static_cast<long long>(out[0] * out[1]);
#pragma omp parallel for num_threads(team_size(ctx)) schedule(static)
  for (long long pl = 0; pl < planes; ++pl) {
    // Summed in double in row-major order and rounded once: the correctly rounded mean for any
    // realistic plane, independent of blocking (PyTorch's float mean differs by an ulp or so).
    const float* p = xs + static_cast<std::size_t>(pl) * HW;
    double sum = 0.0;
    for (std::size_t i = 0; i < HW; ++i) sum += p[i];
    ys[pl] = static_cast<float>(sum / count);
  }
  if (ctx.training) {
    in_shape_ = x.shape();
  } else {
    in_shape_.clear();
  }
  return y;
}

Tensor GlobalAvgPool::backward(const Tensor& dy, const StepContext& ctx) {
  check_saved(*this, in_shape_);
  check_gradient_shape(*this, dy.shape(), output_shape(in_shape_));
  const std::size_t HW = in_shape_[2] * in_shape_[3];
  const auto count = static_cast<float>(HW);
  Tensor dx(in_shape_);
  const float* d = dy.data();
  float* g = dx.data();
  const auto planes = static_cast<long long>(dy.size());
#pragma omp parallel for num_threads(team_size(ctx)) schedule(static)
  for (long long pl = 0; pl < planes; ++pl) {
    const float share = d[pl] / count;
    float* gp = g + static_cast<std::size_t>(pl) * HW;
    for (std::size_t i = 0; i < HW; ++i) gp[i] = share;
  }
  return dx;
}

}  // namespace mpsim
