// CIFAR-style ResNet (He et al. 2016, section 4.2): a 3x3 convolution with 16 filters, three
// stages of n basic blocks with 16, 32 and 64 filters (depth = 6n + 2; the first block of
// stages 2 and 3 halves the spatial size), global average pooling and a linear classifier.
// Shortcut option A (identity, subsampled and zero-padded in channels where the shape changes:
// no parameters) or B (a 1x1 convolution with batch norm where the shape changes). Names follow
// the widely used PyTorch port: conv1, bn1, layer1.0.conv1, ..., layer3.2.shortcut.0, linear.
#include <stdexcept>

#include "src/nn/models/architectures.h"

namespace mpsim::detail {

namespace {

// Option A: y[n, c + pad, h, w] = x[n, c, s*h, s*w], other channels zero (pad = planes / 4 on
// each side, as the reference implementation pads).
class ShortcutA : public Layer {
 public:
  ShortcutA(std::string name, std::size_t in, std::size_t out, std::size_t stride)
      : Layer(std::move(name)), in_(in), out_(out), stride_(stride), pad_((out - in) / 2) {
    if (out < in || (out - in) % 2 != 0) {
      throw std::invalid_argument(this->name() + ": option A pads channels symmetrically; cannot go from " +
                                  std::to_string(in) + " to " + std::to_string(out));
    }
  }
  const char* type() const override { return "ShortcutA"; }

  Shape output_shape(const Shape& x) const override {
    if (x.size() != 4 || x[1] != in_) {
      throw std::invalid_argument(name() + ": expected [N, " + std::to_string(in_) + ", H, W], got " + to_string(x));
    }
    return {x[0], out_, (x[2] + stride_ - 1) / stride_, (x[3] + stride_ - 1) / stride_};
  }

  Tensor forward(const Tensor& x, const StepContext& ctx) override {
    (void)ctx;
    in_shape_ = x.shape();
    Tensor y(output_shape(x.shape()));
    const std::size_t N = x.dim(0), H = x.dim(2), W = x.dim(3), Ho = y.dim(2), Wo = y.dim(3);
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t c = 0; c < in_; ++c)
        for (std::size_t h = 0; h < Ho; ++h)
          for (std::size_t w = 0; w < Wo; ++w)
            y[((n * out_ + c + pad_) * Ho + h) * Wo + w] = x[((n * in_ + c) * H + h * stride_) * W + w * stride_];
    return y;
  }

  Tensor backward(const Tensor& dy, const StepContext& ctx) override {
    (void)ctx;
    Tensor dx(in_shape_);
    const std::size_t N = dx.dim(0), H = dx.dim(2), W = dx.dim(3), Ho = dy.dim(2), Wo = dy.dim(3);
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t c = 0; c < in_; ++c)
        for (std::size_t h = 0; h < Ho; ++h)
          for (std::size_t w = 0; w < Wo; ++w)
            dx[((n * in_ + c) * H + h * stride_) * W + w * stride_] = dy[((n * out_ + c + pad_) * Ho + h) * Wo + w];
    return dx;
  }

 private:
  std::size_t in_, out_, stride_, pad_;
  Shape in_shape_;
};

// relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
class BasicBlock : public Layer {
 public:
  BasicBlock(const std::string& name, std::size_t in, std::size_t planes, std::size_t stride, char option)
      : Layer(name),
        conv1_(name + ".conv1", in, planes, 3, stride, 1, false),
        bn1_(name + ".bn1", planes),
        relu1_(name + ".relu1"),
        conv2_(name + ".conv2", planes, planes, 3, 1, 1, false),
        bn2_(name + ".bn2", planes),
        relu2_(name + ".relu2") {
    if (stride != 1 || in != planes) {
      if (option == 'A') {
        shortcut_ = std::make_unique<ShortcutA>(name + ".shortcut", in, planes, stride);
      } else {
        auto s = std::make_unique<Sequential>(name + ".shortcut");
        s->add(std::make_unique<Conv2d>(name + ".shortcut.0", in, planes, 1, stride, 0, false));
        s->add(std::make_unique<BatchNorm2d>(name + ".shortcut.1", planes));
        shortcut_ = std::move(s);
      }
    }
  }
  const char* type() const override { return "BasicBlock"; }

  Shape output_shape(const Shape& x) const override {
    const Shape main = bn2_.output_shape(conv2_.output_shape(conv1_.output_shape(x)));
    const Shape side = shortcut_ ? shortcut_->output_shape(x) : x;
    if (main != side) {
      throw std::invalid_argument(name() + ": residual branches of shapes " + to_string(main) + " and " + to_string(side));
    }
    return main;
  }

  Tensor forward(const Tensor& x, const StepContext& ctx) override {
    Tensor a = relu1_.forward(bn1_.forward(conv1_.forward(x, ctx), ctx), ctx);
    Tensor b = bn2_.forward(conv2_.forward(a, ctx), ctx);
    // Two calls, not one with a conditional operand: that would copy the identity branch's x.
    const Tensor sum =
        shortcut_ ? residual_add(b, shortcut_->forward(x, ctx), ctx.threads) : residual_add(b, x, ctx.threads);
    return relu2_.forward(sum, ctx);
  }

  Tensor backward(const Tensor& dy, const StepContext& ctx) override {
    const Tensor d = relu2_.backward(dy, ctx);  // reaches both branches of the add unchanged
    Tensor dx = conv1_.backward(bn1_.backward(relu1_.backward(conv2_.backward(bn2_.backward(d, ctx), ctx), ctx), ctx), ctx);
    // As in forward.
    return shortcut_ ? residual_add(dx, shortcut_->backward(d, ctx), ctx.threads) : residual_add(dx, d, ctx.threads);
  }

  void collect_parameters(std::vector<Parameter*>& out) override {
    for (Layer* l : children()) l->collect_parameters(out);
  }
  void collect_buffers(std::vector<Buffer*>& out) override {
    for (Layer* l : children()) l->collect_buffers(out);
  }
  void collect_layers(std::vector<Layer*>& out) override {
    out.push_back(this);
    for (Layer* l : children()) l->collect_layers(out);
  }
  void collect_gemms(const Shape& in, std::vector<GemmCount>& out) const override {
    conv1_.collect_gemms(in, out);
    conv2_.collect_gemms(conv1_.output_shape(in), out);
    if (shortcut_) shortcut_->collect_gemms(in, out);
  }

 private:
  std::vector<Layer*> children() {
    std::vector<Layer*> c = {&conv1_, &bn1_, &relu1_, &conv2_, &bn2_};
    if (shortcut_) c.push_back(shortcut_.get());
    c.push_back(&relu2_);
    return c;
  }

  Conv2d conv1_;
  BatchNorm2d bn1_;
  ReLU relu1_;
  Conv2d conv2_;
  BatchNorm2d bn2_;
  ReLU relu2_;
  std::unique_ptr<Layer> shortcut_;
};

}  // namespace

std::unique_ptr<Layer> build_resnet(const ModelConfig& c, std::size_t depth) {
  if ((depth - 2) % 6 != 0) throw std::invalid_argument("resnet depth must be 6n + 2, got " + std::to_string(depth));
  if (c.shortcut != 'A' && c.shortcut != 'B') {
    throw std::invalid_argument(std::string("resnet shortcut must be A or B, got '") + c.shortcut + "'");
  }
  const std::size_t blocks = (depth - 2) / 6;
  auto net = std::make_unique<Sequential>("");
  net->add(std::make_unique<Conv2d>("conv1", c.channels, 16, 3, 1, 1, false));
  net->add(std::make_unique<BatchNorm2d>("bn1", 16));
  net->add(std::make_unique<ReLU>("relu"));
  std::size_t in = 16;
  for (std::size_t stage = 0; stage < 3; ++stage) {
    const std::size_t planes = 16u << stage;
    const std::string name = "layer" + std::to_string(stage + 1);
    auto layer = std::make_unique<Sequential>(name);
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::size_t stride = (stage > 0 && b == 0) ? 2 : 1;
      layer->add(std::make_unique<BasicBlock>(name + "." + std::to_string(b), in, planes, stride, c.shortcut));
      in = planes;
    }
    net->add(std::move(layer));
  }
  net->add(std::make_unique<GlobalAvgPool>("avgpool"));
  net->add(std::make_unique<Linear>("linear", 64, c.classes));
  return net;
}

}  // namespace mpsim::detail
