// VGG-11 / VGG-16 with batch norm (Simonyan & Zisserman, configurations A and D) in the CIFAR
// form: the convolutional stages of torchvision's vgg*_bn ("features.0" conv, "features.1"
// batch norm, ...) and one linear classifier on the 512 x (H/32) x (W/32) features. The five
// poolings need inputs of at least 32x32; smaller square inputs (28x28) are zero-padded to
// 32x32 by a first ZeroPad2d layer.
#include <stdexcept>

#include "src/nn/models/architectures.h"

namespace mpsim::detail {

std::unique_ptr<Layer> build_vgg(const ModelConfig& c, std::size_t depth) {
  // 0 stands for a 2x2 max pooling.
  static const std::vector<std::size_t> vgg11 = {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};
  static const std::vector<std::size_t> vgg16 = {64,  64,  0,   128, 128, 0,   256, 256, 256,
                                                 0,   512, 512, 512, 0,   512, 512, 512, 0};
  const std::vector<std::size_t>& cfg = depth == 11 ? vgg11 : vgg16;
  std::size_t h = c.height, w = c.width;
  auto net = std::make_unique<Sequential>("");
  if (h < 32 || w < 32) {
    if (h != w || (32 - h) % 2 != 0) {
      throw std::invalid_argument("vgg" + std::to_string(depth) + " needs inputs of at least 32x32; " +
                                  std::to_string(h) + "x" + std::to_string(w) + " cannot be zero-padded evenly to 32x32");
    }
    net->add(std::make_unique<ZeroPad2d>("pad", (32 - h) / 2));
    h = w = 32;
  }
  auto features = std::make_unique<Sequential>("features");
  std::size_t in = c.channels, index = 0;
  for (const std::size_t v : cfg) {
    const std::string prefix = "features.";
    if (v == 0) {
      features->add(std::make_unique<MaxPool2d>(prefix + std::to_string(index++), 2, 2));
      h /= 2;
      w /= 2;
      continue;
    }
    features->add(std::make_unique<Conv2d>(prefix + std::to_string(index++), in, v, 3, 1, 1));
    features->add(std::make_unique<BatchNorm2d>(prefix + std::to_string(index++), v));
    features->add(std::make_unique<ReLU>(prefix + std::to_string(index++)));
    in = v;
  }
  net->add(std::move(features));
  net->add(std::make_unique<Flatten>("flatten"));
  if (c.dropout > 0) net->add(std::make_unique<Dropout>("dropout", c.dropout));
  net->add(std::make_unique<Linear>("classifier", 512 * h * w, c.classes));
  return net;
}

}  // namespace mpsim::detail
