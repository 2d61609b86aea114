// The 2-D convolution as GEMMs over the whole batch (docs/nn.md):
//   FWD  y  = W * im2col(x)               reduction over (c, r, s), the bias as start value;
//   BWD  dx = W' * taps(dy)               reduction over (k, r, s): a true convolution, the
//                                         zero taps (padding, stride gaps) included;
//   GRAD dW = dy * im2col(x)^T            reduction over (n, ho, wo);
//   db   = dy * 1                          reduction over (n, ho, wo), through the GRAD MAC.
// Every reduction is one GEMM through detail::layer_gemm, so no partial sum is ever added in
// FP32 outside the MAC model (DESIGN.md principle 2).
//
// Operand roles match Linear: the activation or gradient is the MAC's operand a, the weight
// operand b (FWD, BWD); GRAD and the bias gradient have dy as a. The MAC engine spreads its
// work over column panels, so FWD and BWD are fastest with the long pixel dimension as the
// GEMM's n, which puts the weight in A. When a= and b= are the same format (and in FP32) the
// two inputs are interchangeable -- a*b and b*a are the same exact product, and both are
// quantized alike -- and that layout is used; otherwise the data stays operand a and the
// pixels become the rows. The two layouts give the same values except for the random bits of
// stochastic roundings, which follow the output index of the GEMM (i*n + j): each layout is
// deterministic on its own.
#include <stdexcept>
#include <string>
#include <vector>

#include "mpsim/layers.h"
#include "src/nn/im2col.h"
#include "src/nn/layer_gemm.h"

namespace mpsim {

namespace {

bool inputs_interchangeable(const std::optional<MacSpec>& spec) { return !spec || spec->a == spec->b; }

}  // namespace

Conv2d::Conv2d(std::string name, std::size_t in_channels, std::size_t out_channels, std::size_t kernel,
               std::size_t stride, std::size_t padding, bool with_bias)
    : Layer(std::move(name)), in_(in_channels), out_(out_channels), kernel_(kernel), stride_(stride), padding_(padding) {
  if (in_channels == 0 || out_channels == 0 || kernel == 0 || stride == 0) {
    throw std::invalid_argument("Conv2d " + this->name() + ": channels, kernel and stride must be positive (got " +
                                std::to_string(in_channels) + ", " + std::to_string(out_channels) + ", " +
                                std::to_string(kernel) + ", " + std::to_string(stride) + ")");
  }
  // Zeros: the model initializes parameters (it owns the random keys).
  const Shape ws{out_channels, in_channels, kernel, kernel};
  weight = Parameter{this->name() + ".weight", Tensor(ws), Tensor(ws)};
  if (with_bias) bias = Parameter{this->name() + ".bias", Tensor({out_channels}), Tensor({out_channels})};
}

Shape Conv2d::output_shape(const Shape& in) const {
  const std::string expect = "[N, " + std::to_string(in_) + ", H, W] with H, W + 2*" + std::to_string(padding_) +
                             " >= " + std::to_string(kernel_);
  if (in.size() != 4 || in[1] != in_ || in[2] + 2 * padding_ < kernel_ || in[3] + 2 * padding_ < kernel_) {
    throw std::invalid_argument("Conv2d " + name() + " expects input " + expect + ", got " + to_string(in));
  }
  return {in[0], out_, (in[2] + 2 * padding_ - kernel_) / stride_ + 1, (in[3] + 2 * padding_ - kernel_) / stride_ + 1};
}

namespace {

detail::ConvGeometry geometry(const Shape& in, const Shape& out, std::size_t kernel, std::size_t stride,
                              std::size_t pad) {
  detail::ConvGeometry g;
  g.n = in[0], g.c = in[1], g.h = in[2], g.w = in[3];
  g.k = out[1], g.r = kernel, g.stride = stride, g.pad = pad;
  g.ho = out[2], g.wo = out[3];
  return g;
}

}  // namespace

Tensor Conv2d::forward(const Tensor& x, const StepContext& ctx) {
  Tensor y(output_shape(x.shape()));
  const detail::ConvGeometry g = geometry(x.shape(), y.shape(), kernel_, stride_, padding_);
  detail::check_parameter(weight, {out_, in_, kernel_, kernel_}, name());
  if (bias) detail::check_parameter(*bias, {out_}, name());
  const std::size_t crr = g.crr(), L = g.out_pixels(), nl = g.n * L;
  std::vector<float> cols(crr * nl);
  detail::im2col(g, x.data(), cols.data(), ctx.threads);
  const float* b = bias ? bias->value.data() : nullptr;
  const MacRandom rnd = gemm_random(ctx, id, GemmRole::fwd);
  if (inputs_interchangeable(precision_.fwd)) {
    // [K, N*L] = W [K, crr] * cols [crr, N*L]; W's memory order is already (k, (c, r, s)).
    std::vector<float> out(g.k * nl);
    detail::layer_gemm(precision_.fwd, GemmOp::nn, g.k, nl, crr, weight.value.data(), crr, cols.data(), nl, out.data(),
                       nl, b, detail::BiasAxis::row, rnd, ctx.threads);
    detail::channel_major_to_nchw(g.n, g.k, L, out.data(), y.data(), ctx.threads);
  } else {
    // [N*L, K] = cols^T * W^T (tn: A = cols as stored), with W^T [crr, K] copied.
    std::vector<float> wt(crr * g.k), out(nl * g.k);
    for (std::size_t k = 0; k < g.k; ++k)
      for (std::size_t q = 0; q < crr; ++q) wt[q * g.k + k] = weight.value[k * crr + q];
    detail::layer_gemm(precision_.fwd, GemmOp::tn, nl, g.k, crr, cols.data(), nl, wt.data(), g.k, out.data(), g.k, b,
                       detail::BiasAxis::col, rnd, ctx.threads);
    detail::pixel_major_to_nchw(g.n, g.k, L, out.data(), y.data(), ctx.threads);
  }
  // The input, not its im2col (r*r times larger), is what backward keeps; GRAD rebuilds cols.
  x_ = ctx.training ? x : Tensor();
  return y;
}

Tensor Conv2d::backward(const Tensor& dy, const StepContext& ctx) {
  if (x_.rank() != 4) {
    throw std::logic_error("Conv2d " + name() + ": backward without a training-mode forward");
  }
  const Shape ys = output_shape(x_.shape());
  if (dy.shape() != ys) {
    throw std::invalid_argument("Conv2d " + name() + ": output gradient of shape " + to_string(dy.shape()) +
                                ", expected " + to_string(ys));
  }
  detail::check_parameter(weight, {out_, in_, kernel_, kernel_}, name());
  if (bias) {
    detail::check_parameter(*bias, {out_}, name());
    detail::check_ones_operand(precision_.grad, name());  // before any work
  }
  const detail::ConvGeometry g = geometry(x_.shape(), ys, kernel_, stride_, padding_);
  const std::size_t rr = g.r * g.r, krr = g.krr(), crr = g.crr(), P = g.in_pixels(), L = g.out_pixels();
  const std::size_t nhw = g.n * P, nl = g.n * L;
  const float* w = weight.value.data();

  // BWD: dx[n, c, h, w] = sum over (k, r, s) of taps[(k, r, s), (n, h, w)] * W[k, c, r, s].
  Tensor dx(x_.shape());
  {
    std::vector<float> taps(krr * nhw);
    detail::gather_taps(g, dy.data(), taps.data(), ctx.threads);
    const MacRandom rnd = gemm_random(ctx, id, GemmRole::bwd);
    if (inputs_interchangeable(precision_.bwd)) {
      // [C, N*H*W] = W' [C, krr] * taps [krr, N*H*W], W'[c, (k, r, s)] = W[k, c, r, s].
      std::vector<float> wr(g.c * krr), out(g.c * nhw);
      for (std::size_t k = 0; k < g.k; ++k)
        for (std::size_t c = 0; c < g.c; ++c)
          for (std::size_t q = 0; q < rr; ++q) wr[c * krr + k * rr + q] = w[(k * g.c + c) * rr + q];
      detail::layer_gemm(precision_.bwd, GemmOp::nn, g.c, nhw, krr, wr.data(), krr, taps.data(), nhw, out.data(), nhw,
                         nullptr, detail::BiasAxis::none, rnd, ctx.threads);
      detail::channel_major_to_nchw(g.n, g.c, P, out.data(), dx.data(), ctx.threads);
    } else {
      // [N*H*W, C] = taps^T * W'' (tn: A = taps as stored), W''[(k, r, s), c] = W[k, c, r, s].
      std::vector<float> wr(krr * g.c), out(nhw * g.c);
      for (std::size_t k = 0; k < g.k; ++k)
        for (std::size_t c = 0; c < g.c; ++c)
          for (std::size_t q = 0; q < rr; ++q) wr[(k * rr + q) * g.c + c] = w[(k * g.c + c) * rr + q];
      detail::layer_gemm(precision_.bwd, GemmOp::tn, nhw, g.c, krr, taps.data(), nhw, wr.data(), g.c, out.data(), g.c,
                         nullptr, detail::BiasAxis::none, rnd, ctx.threads);
      detail::pixel_major_to_nchw(g.n, g.c, P, out.data(), dx.data(), ctx.threads);
    }
  }

  // GRAD: dW [K, crr] = dy' [K, N*L] * cols^T (nt, cols [crr, N*L] as stored), reducing over
  // (n, ho, wo) in that order; dy' is dy with its channel dimension first.
  std::vector<float> dyr(g.k * nl);
  detail::nchw_to_channel_major(g.n, g.k, L, dy.data(), dyr.data(), ctx.threads);
  {
    std::vector<float> cols(crr * nl);
    detail::im2col(g, x_.data(), cols.data(), ctx.threads);
    detail::layer_gemm(precision_.grad, GemmOp::nt, g.k, crr, nl, dyr.data(), nl, cols.data(), nl, weight.grad.data(),
                       crr, nullptr, detail::BiasAxis::none, gemm_random(ctx, id, GemmRole::grad), ctx.threads);
  }
  if (bias) {
    // db [K, 1] = dy' [K, N*L] * 1 [N*L, 1], the same reduction order as GRAD.
    const std::vector<float> ones(nl, 1.0f);
    detail::layer_gemm(precision_.grad, GemmOp::nn, g.k, 1, nl, dyr.data(), nl, ones.data(), 1, bias->grad.data(), 1,
                       nullptr, detail::BiasAxis::none, gemm_random(ctx, id, GemmRole::bias_grad), ctx.threads);
  }
  return dx;
}

void Conv2d::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&weight);
  if (bias) out.push_back(&*bias);
}

void Conv2d::collect_gemms(const Shape& in, std::vector<GemmCount>& out) const {
  const Shape ys = output_shape(in);
  const std::size_t rr = kernel_ * kernel_, nl = in[0] * ys[2] * ys[3], nhw = in[0] * in[2] * in[3];
  // Reported as (rows of data, channels, reduction), like Linear's; the BWD reduction counts
  // every tap, the zero ones included, as the MAC performs them.
  out.push_back({name(), GemmRole::fwd, nl, out_, in_ * rr});
  out.push_back({name(), GemmRole::bwd, nhw, in_, out_ * rr});
  out.push_back({name(), GemmRole::grad, out_, in_ * rr, nl});
  if (bias) out.push_back({name(), GemmRole::bias_grad, out_, 1, nl});
}

}  // namespace mpsim
