// The fully connected layer: three GEMMs and the bias gradient, every one through
// detail::layer_gemm, so FP32 (OpenBLAS) and every emulated mode share this code.
//
// Operand roles (the MAC's a= and b= inputs): the activation or gradient that flows through the
// network is operand a and the weight operand b in FWD and BWD; GRAD has dy as a and x as b;
// the bias gradient has dy as a and the ones as b. Conv2d uses the same roles, so a spec with
// different a= and b= formats means the same for both layer types.
#include <stdexcept>
#include <string>
#include <vector>

#include "mpsim/layers.h"
#include "src/nn/im2col.h"
#include "src/nn/layer_gemm.h"

namespace mpsim {

Linear::Linear(std::string name, std::size_t in, std::size_t out, bool with_bias)
    : Layer(std::move(name)), in_(in), out_(out) {
  if (in == 0 || out == 0) {
    throw std::invalid_argument("Linear " + this->name() + ": in and out features must be positive (got " +
                                std::to_string(in) + ", " + std::to_string(out) + ")");
  }
  // Zeros: the model initializes parameters (it owns the random keys).
  weight = Parameter{this->name() + ".weight", Tensor({out, in}), Tensor({out, in})};
  if (with_bias) bias = Parameter{this->name() + ".bias", Tensor({out}), Tensor({out})};
}

Shape Linear::output_shape(const Shape& in) const {
  if (in.size() != 2 || in[1] != in_) {
    throw std::invalid_argument("Linear " + name() + " expects input [N, " + std::to_string(in_) + "], got " +
                                to_string(in));
  }
  return {in[0], out_};
}

Tensor Linear::forward(const Tensor& x, const StepContext& ctx) {
  Tensor y(output_shape(x.shape()));
  detail::check_parameter(weight, {out_, in_}, name());
  if (bias) detail::check_parameter(*bias, {out_}, name());
  const std::size_t n = x.dim(0);
  // y (N x out) = b + x W^T: nt with W stored [out, in]; the bias is each output's start value.
  detail::layer_gemm(precision_.fwd, GemmOp::nt, n, out_, in_, x.data(), in_, weight.value.data(), in_, y.data(), out_,
                     bias ? bias->value.data() : nullptr, detail::BiasAxis::col, gemm_random(ctx, id, GemmRole::fwd),
                     ctx.threads);
  if (ctx.training) {
    detail::copy_tensor(x_, x, ctx.threads);  // into last step's buffer
  } else {
    x_ = Tensor();
  }
  return y;
}

Tensor Linear::backward(const Tensor& dy, const StepContext& ctx) {
  if (x_.rank() != 2) {
    throw std::logic_error("Linear " + name() + ": backward without a training-mode forward");
  }
  const std::size_t n = x_.dim(0);
  if (dy.shape() != Shape{n, out_}) {
    throw std::invalid_argument("Linear " + name() + ": output gradient of shape " + to_string(dy.shape()) +
                                ", expected " + to_string(Shape{n, out_}));
  }
  detail::check_parameter(weight, {out_, in_}, name());
  if (bias) {
    detail::check_parameter(*bias, {out_}, name());
    detail::check_ones_operand(precision_.grad, name());  // before any work
  }
  // BWD: dx (N x in) = dy W, reduction over the out features (unless the model wants no dL/dx).
  Tensor dx;
  if (input_gradient_) {
    dx = Tensor({n, in_});
    detail::layer_gemm(precision_.bwd, GemmOp::nn, n, in_, out_, dy.data(), out_, weight.value.data(), in_, dx.data(),
                       in_, nullptr, detail::BiasAxis::none, gemm_random(ctx, id, GemmRole::bwd), ctx.threads);
  }
  // GRAD: dW (out x in) = dy^T x, reduction over the batch in sample order.
  detail::layer_gemm(precision_.grad, GemmOp::tn, out_, in_, n, dy.data(), out_, x_.data(), in_, weight.grad.data(), in_,
                     nullptr, detail::BiasAxis::none, gemm_random(ctx, id, GemmRole::grad), ctx.threads);
  if (bias) {
    // db (out x 1) = dy^T 1 (the same sums as 1^T dy), dy staying operand a as in GRAD.
    detail::bias_gradient(precision_.grad, true, out_, n, dy.data(), out_, bias->grad.data(),
                          gemm_random(ctx, id, GemmRole::bias_grad), ctx.threads);
  }
  return dx;
}

void Linear::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&weight);
  if (bias) out.push_back(&*bias);
}

void Linear::collect_gemms(const Shape& in, std::vector<GemmCount>& out) const {
  (void)output_shape(in);
  const std::size_t n = in[0];
  out.push_back({name(), GemmRole::fwd, n, out_, in_});
  if (input_gradient_) out.push_back({name(), GemmRole::bwd, n, in_, out_});
  out.push_back({name(), GemmRole::grad, out_, in_, n});
  if (bias) out.push_back({name(), GemmRole::bias_grad, out_, 1, n});
}

}  // namespace mpsim
