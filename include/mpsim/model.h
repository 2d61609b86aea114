// Models: a root layer with an input shape, named layers, parameters, buffers, the precision of
// every GEMM and the MAC count of a training step. The architectures of the reference
// experiments (MLP, LeNet-5, CIFAR ResNet-20...110 with shortcut A or B, VGG-11/16 with batch
// norm) are built by name (docs/nn.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mpsim/layers.h"
#include "mpsim/tensor.h"

namespace mpsim {

struct ModelConfig {
  std::string arch = "lenet5";  // mlp, lenet5, resnet20/32/44/56/110, vgg11, vgg16
  std::size_t channels = 1;     // input image channels (1 or 3)
  std::size_t height = 28, width = 28;
  std::size_t classes = 10;
  char shortcut = 'A';                        // ResNet: 'A' (subsample + zero channels) or 'B' (1x1 conv + BN)
  std::vector<std::size_t> hidden = {256, 128};  // MLP hidden widths
  float dropout = 0.0f;                       // MLP/VGG classifier dropout
};

class Model {
 public:
  // Takes the root layer; numbers every layer (Layer::id, pre-order) and checks that the input
  // shape passes through. Throws std::invalid_argument naming the layer that rejects it.
  Model(std::string arch, std::unique_ptr<Layer> root, Shape input_shape, std::size_t classes);

  const std::string& arch() const { return arch_; }
  // [C, H, W] of one sample.
  const Shape& input_shape() const { return input_shape_; }
  std::size_t classes() const { return classes_; }

  // logits [N, classes] for x [N, C, H, W]; throws std::invalid_argument for a wrong shape.
  Tensor forward(const Tensor& x, const StepContext& ctx);
  // Backward from dL/dlogits: every parameter's gradient is overwritten. dL/dx of the input is
  // not computed (nothing learns from it), nor the first learning layer's data-gradient GEMM.
  void backward(const Tensor& dlogits, const StepContext& ctx);

  Layer& root() { return *root_; }
  std::vector<Layer*> layers();
  std::vector<Parameter*> parameters();
  std::vector<Buffer*> buffers();
  std::size_t parameter_count();

  // Initializes every parameter and buffer deterministically from `seed` (the scheme of the
  // architecture's reference: docs/nn.md); parameter i draws from stream i.
  void init(std::uint64_t seed);
  // Sets the precision of every GEMM-based layer.
  void set_precision(const GemmPrecision& p);
  // The GEMMs of one training step at this batch size, in layer order.
  std::vector<GemmCount> gemms(std::size_t batch) const;

 private:
  std::string arch_;
  std::unique_ptr<Layer> root_;
  Shape input_shape_;
  std::size_t classes_;
};

// Builds the named architecture (ModelConfig::arch); throws std::invalid_argument for an
// unknown name or an input it cannot take. Parameters are initialized with init(seed).
std::unique_ptr<Model> make_model(const ModelConfig& config, std::uint64_t seed = 0);
// The architecture names make_model knows.
std::vector<std::string> model_names();

}  // namespace mpsim
