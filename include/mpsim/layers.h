// Layers with an explicit forward and backward over plain tensors (docs/nn.md). Every GEMM of
// a layer -- forward (FWD), data gradient (BWD), weight gradient (GRAD) and the bias gradient --
// runs either in plain FP32 through OpenBLAS or, when its precision names a MAC spec, through
// the bit-accurate MAC engine (include/mpsim/gemm.h); non-GEMM operations run in FP32 in a fixed
// order, so that every emulated mode gives the same bits whatever the thread count
// (DESIGN.md principles 2 and 3).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mpsim/mac.h"
#include "mpsim/tensor.h"

namespace mpsim {

// The MAC specs of a GEMM-based layer's three training GEMMs. nullopt: plain FP32 through
// OpenBLAS (fast, reproducible only for a fixed thread count). The bias gradient is a
// reduction through the `grad` MAC (a GEMM with a vector of ones). A per-layer value that may
// change between steps.
struct GemmPrecision {
  std::optional<MacSpec> fwd;
  std::optional<MacSpec> bwd;
  std::optional<MacSpec> grad;

  static GemmPrecision fp32() { return {}; }
  static GemmPrecision all(const MacSpec& spec) { return {spec, spec, spec}; }
  bool emulated() const { return fwd || bwd || grad; }
};

// What one forward or backward call needs to know about the step it belongs to.
struct StepContext {
  bool training = true;    // batch statistics and dropout on; forward keeps what backward needs
  std::uint64_t seed = 0;  // the run's seed
  std::uint64_t step = 0;  // the training step: keys stochastic roundings and dropout masks
  int threads = 0;         // 0: OpenMP's default
};

// The role of a GEMM inside a layer's training step.
enum class GemmRole : std::uint8_t { fwd = 0, bwd = 1, grad = 2, bias_grad = 3 };
const char* to_string(GemmRole role);

// The random key of a layer's GEMM at a step: the seed mixes (run seed, step), the GEMM id is
// layer id * 4 + role, so no two roundings of a run share random bits.
MacRandom gemm_random(const StepContext& ctx, std::uint32_t layer_id, GemmRole role);
// The key of a layer's other random draws (dropout masks) at a step.
RandomKey layer_random_key(const StepContext& ctx, std::uint32_t layer_id);

// Shape of one GEMM of a layer for a given input batch, for MAC counts and cost reports.
struct GemmCount {
  std::string layer;  // the layer's full name
  GemmRole role = GemmRole::fwd;
  std::size_t m = 0, n = 0, k = 0;
  std::size_t macs() const { return m * n * k; }
};

class Layer {
 public:
  // `name` is the layer's full dotted name ("layer1.0.conv1"); parameters append ".weight" etc.
  explicit Layer(std::string name) : name_(std::move(name)) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  const std::string& name() const { return name_; }
  // The type's name as PyTorch spells it: "Conv2d", "BatchNorm2d", "Sequential", ...
  virtual const char* type() const = 0;

  // Output shape for an input shape (batch dimension included); throws std::invalid_argument
  // for an input this layer cannot take, naming the layer and the shapes.
  virtual Shape output_shape(const Shape& in) const = 0;
  // y = f(x). In training mode the layer keeps what backward needs.
  virtual Tensor forward(const Tensor& x, const StepContext& ctx) = 0;
  // Given dL/dy of the last forward, overwrites the parameters' gradients and returns dL/dx.
  virtual Tensor backward(const Tensor& dy, const StepContext& ctx) = 0;

  // This layer's and its children's parameters, buffers and layers (pre-order, self first).
  virtual void collect_parameters(std::vector<Parameter*>& out) { (void)out; }
  virtual void collect_buffers(std::vector<Buffer*>& out) { (void)out; }
  virtual void collect_layers(std::vector<Layer*>& out) { out.push_back(this); }
  // The GEMMs one training step of this layer performs for input shape `in`.
  virtual void collect_gemms(const Shape& in, std::vector<GemmCount>& out) const { (void)in, (void)out; }
  // GEMM-based layers return their precision record; others nullptr.
  virtual GemmPrecision* precision() { return nullptr; }

  // Whether backward computes dL/dx (on by default). A model's first layer with parameters has
  // no use for it -- nothing before it learns -- so the model turns it off there: Linear and
  // Conv2d then skip their data-gradient GEMM (and leave it out of collect_gemms) and backward
  // returns an empty tensor. A container passes the setting on to its first child with
  // parameters and, when off, runs no backward of the children before that one.
  virtual void set_input_gradient(bool on) { input_gradient_ = on; }
  bool input_gradient() const { return input_gradient_; }

  // The layer's ordinal in its model; keys its random streams. Set by the model.
  std::uint32_t id = 0;

 protected:
  bool input_gradient_ = true;

 private:
  std::string name_;
};

// y = x W^T + b, x: [N, in], W: [out, in] (PyTorch's layout), b: [out].
// FWD: y = x W^T (nt, k = in); BWD: dx = dy W (nn, k = out); GRAD: dW = dy^T x (tn, k = N);
// bias gradient: db = 1^T dy (k = N). Every reduction runs in increasing index order.
class Linear : public Layer {
 public:
  Linear(std::string name, std::size_t in, std::size_t out, bool bias = true);
  const char* type() const override { return "Linear"; }
  Shape output_shape(const Shape& in) const override;
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  Tensor backward(const Tensor& dy, const StepContext& ctx) override;
  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_gemms(const Shape& in, std::vector<GemmCount>& out) const override;
  GemmPrecision* precision() override { return &precision_; }

  Parameter weight;
  std::optional<Parameter> bias;

 private:
  std::size_t in_, out_;
  GemmPrecision precision_;
  Tensor x_;  // saved input
};

// 2-D convolution, x: [N, C, H, W], W: [K, C, R, S] (square R = S), b: [K], stride and zero
// padding equal in both directions. The reductions (docs/nn.md):
//   FWD  y[n,k,ho,wo]  over (c, r, s);
//   BWD  dx[n,c,h,w]   over (k, r, s): a true convolution of dy with the flipped kernel, every
//                      tap in the sum (taps that fall outside dy, into padding or stride gaps,
//                      contribute an exact zero product), not a GEMM plus an FP32 col2im sum;
//   GRAD dW[k,c,r,s]   over (n, ho, wo) in that order -- one GEMM over the whole batch;
//   bias db[k]         over (n, ho, wo), through the GRAD MAC.
class Conv2d : public Layer {
 public:
  Conv2d(std::string name, std::size_t in_channels, std::size_t out_channels, std::size_t kernel,
         std::size_t stride = 1, std::size_t padding = 0, bool bias = true);
  const char* type() const override { return "Conv2d"; }
  Shape output_shape(const Shape& in) const override;
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  Tensor backward(const Tensor& dy, const StepContext& ctx) override;
  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_gemms(const Shape& in, std::vector<GemmCount>& out) const override;
  GemmPrecision* precision() override { return &precision_; }

  Parameter weight;
  std::optional<Parameter> bias;

 private:
  std::size_t in_, out_, kernel_, stride_, padding_;
  GemmPrecision precision_;
  Tensor x_;        // saved input, as it is or (stride-1 shifted route) its padded planes: src/nn/conv2d.cpp
  Shape x_shape_;   // the input's shape (empty: no training-mode forward)
};

// Batch normalization over (N, H, W) per channel of [N, C, H, W]. Training: batch statistics
// (biased variance for normalizing, unbiased for the running variance, as PyTorch), running
// statistics updated with `momentum`; eval: running statistics. FP32 throughout, each
// channel's sums in a fixed order.
class BatchNorm2d : public Layer {
 public:
  BatchNorm2d(std::string name, std::size_t channels, float eps = 1e-5f, float momentum = 0.1f);
  const char* type() const override { return "BatchNorm2d"; }
  Shape output_shape(const Shape& in) const override;
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  Tensor backward(const Tensor& dy, const StepContext& ctx) override;
  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_buffers(std::vector<Buffer*>& out) override;

  Parameter weight, bias;            // gamma, beta
  Buffer running_mean, running_var;  // PyTorch's names; num_batches_tracked is kept too
  Buffer num_batches_tracked;

 private:
  std::size_t channels_;
  float eps_, momentum_;
  Tensor xhat_, inv_std_;  // saved normalized input and 1/sqrt(var + eps) per channel
};

class ReLU : public Layer {
 public:
  explicit ReLU(std::string name) : Layer(std::move(name)) {}
  const char* type() const override { return "ReLU"; }
  Shape output_shape(const Shape& in) const override { return in; }
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  Tensor backward(const Tensor& dy, const StepContext& ctx) override;

 private:
  // Of the last training forward: 1 where the output is the input (x > 0 or NaN), 0 where it
  // is +0 (no gradient there); a byte per element, a quarter of a saved output.
  std::vector<std::uint8_t> keep_;
  Shape shape_;
  bool saved_ = false;  // whether keep_ belongs to a training forward (backward needs one)
};

// Max pooling over kernel x kernel windows with a stride (no padding); the gradient goes to
// the first maximum of each window in row-major order (as PyTorch's CPU kernel).
class MaxPool2d : public Layer {
 public:
  MaxPool2d(std::string name, std::size_t kernel, std::size_t stride);
  const char* type() const override { return "MaxPool2d"; }
  Shape output_shape(const Shape& in) const override;
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  Tensor backward(const Tensor& dy, const StepContext& ctx) override;

 private:
  std::size_t kernel_, stride_;
  Shape in_shape_;
  std::vector<std::uint32_t> argmax_;
};

// Average pooling over kernel x kernel windows with a stride (no padding).
class AvgPool2d : public Layer {
 public:
  AvgPool2d(std::string name, std::size_t kernel, std::size_t stride);
  const char* type() const override { return "AvgPool2d"; }
  Shape output_shape(const Shape& in) const override;
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  Tensor backward(const Tensor& dy, const StepContext& ctx) override;

 private:
  std::size_t kernel_, stride_;
  Shape in_shape_;
};

// [N, C, H, W] -> [N, C]: the mean over each channel's H x W values.
class GlobalAvgPool : public Layer {
 public:
  explicit GlobalAvgPool(std::string name) : Layer(std::move(name)) {}
  const char* type() const override { return "AdaptiveAvgPool2d"; }
  Shape output_shape(const Shape& in) const override;
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  Tensor backward(const Tensor& dy, const StepContext& ctx) override;

 private:
  Shape in_shape_;
};

// [N, ...] -> [N, prod(...)].
class Flatten : public Layer {
 public:
  explicit Flatten(std::string name) : Layer(std::move(name)) {}
  const char* type() const override { return "Flatten"; }
  Shape output_shape(const Shape& in) const override;
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  Tensor backward(const Tensor& dy, const StepContext& ctx) override;

 private:
  Shape in_shape_;
};

// Zeroes each element with probability p in training (inverted dropout: survivors scaled by
// 1/(1-p)); the identity in eval. The mask of element i at a step is a pure function of
// (seed, step, layer id, i): element i is dropped iff random_word(layer_random_key(ctx, id), i, 0)
// < p * 2^32 (docs/nn.md). p outside [0, 1) throws std::invalid_argument.
class Dropout : public Layer {
 public:
  Dropout(std::string name, float p);
  const char* type() const override { return "Dropout"; }
  Shape output_shape(const Shape& in) const override { return in; }
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  Tensor backward(const Tensor& dy, const StepContext& ctx) override;

 private:
  float p_;
  float scale_;  // 1 / (1 - p) rounded once to float, as PyTorch's scale
  // What the last forward left for backward: nothing (eval or no forward), the identity
  // (training with p == 0), or the keep mask (1 = kept) of shape shape_.
  enum class Saved : std::uint8_t { none, identity, mask } saved_ = Saved::none;
  Shape shape_;
  std::vector<std::uint8_t> mask_;
};

// Zero padding of the two spatial dimensions by `pad` on every side (28x28 inputs for VGG).
class ZeroPad2d : public Layer {
 public:
  ZeroPad2d(std::string name, std::size_t pad);
  const char* type() const override { return "ZeroPad2d"; }
  Shape output_shape(const Shape& in) const override;
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  Tensor backward(const Tensor& dy, const StepContext& ctx) override;

 private:
  std::size_t pad_;
};

// Children applied in order; child i is named "<name>.<i>" unless given a name.
class Sequential : public Layer {
 public:
  explicit Sequential(std::string name) : Layer(std::move(name)) {}
  const char* type() const override { return "Sequential"; }
  Layer& add(std::unique_ptr<Layer> layer);
  std::size_t size() const { return children_.size(); }
  Layer& at(std::size_t i) { return *children_.at(i); }

  Shape output_shape(const Shape& in) const override;
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  Tensor backward(const Tensor& dy, const StepContext& ctx) override;
  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_buffers(std::vector<Buffer*>& out) override;
  void collect_layers(std::vector<Layer*>& out) override;
  void collect_gemms(const Shape& in, std::vector<GemmCount>& out) const override;
  void set_input_gradient(bool on) override;

 private:
  // The index of the first child with parameters (size() if none).
  std::size_t first_learning_child() const;
  std::vector<std::unique_ptr<Layer>> children_;
};

// The residual add y = a + b and its backward (both inputs receive dy), used by residual blocks;
// `threads` as StepContext::threads (0: OpenMP's default).
Tensor residual_add(const Tensor& a, const Tensor& b, int threads = 0);

// Mean softmax cross-entropy over a batch of logits [N, classes] with integer labels, with
// optional label smoothing eps (target 1 - eps + eps/classes on the label, eps/classes
// elsewhere, as torch.nn.CrossEntropyLoss(label_smoothing=eps)). Throws std::invalid_argument
// for a label out of range or a shape mismatch; the loss is NaN if a logit is not finite.
struct LossResult {
  double loss = 0;           // mean over the batch
  Tensor grad;               // dL/dlogits
  std::size_t correct = 0;   // rows whose first maximal logit is the label
};
LossResult softmax_cross_entropy(const Tensor& logits, const std::vector<std::uint32_t>& labels,
                                 float label_smoothing = 0.0f);

}  // namespace mpsim
