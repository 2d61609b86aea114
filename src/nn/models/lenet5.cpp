// LeNet-5 in its modern form (ReLU and max pooling), as the low-precision training studies use
// it on MNIST-like data: conv1 5x5 (6, padding 2) - pool - conv2 5x5 (16) - pool - fc1 120 -
// fc2 84 - fc3. For 28x28 inputs the flattened features are 16x5x5 = 400.
#include <stdexcept>

#include "src/nn/models/architectures.h"

namespace mpsim::detail {

std::unique_ptr<Layer> build_lenet5(const ModelConfig& c) {
  // Spatial size after conv1 (same size), pool, conv2 (-4) and pool.
  if (c.height < 12 || c.width < 12) {
    throw std::invalid_argument("lenet5 needs inputs of at least 12x12, got " + std::to_string(c.height) + "x" +
                                std::to_string(c.width));
  }
  const std::size_t h = (c.height / 2 - 4) / 2, w = (c.width / 2 - 4) / 2;
  auto net = std::make_unique<Sequential>("");
  net->add(std::make_unique<Conv2d>("conv1", c.channels, 6, 5, 1, 2));
  net->add(std::make_unique<ReLU>("relu1"));
  net->add(std::make_unique<MaxPool2d>("pool1", 2, 2));
  net->add(std::make_unique<Conv2d>("conv2", 6, 16, 5));
  net->add(std::make_unique<ReLU>("relu2"));
  net->add(std::make_unique<MaxPool2d>("pool2", 2, 2));
  net->add(std::make_unique<Flatten>("flatten"));
  net->add(std::make_unique<Linear>("fc1", 16 * h * w, 120));
  net->add(std::make_unique<ReLU>("relu3"));
  if (c.dropout > 0) net->add(std::make_unique<Dropout>("dropout1", c.dropout));
  net->add(std::make_unique<Linear>("fc2", 120, 84));
  net->add(std::make_unique<ReLU>("relu4"));
  if (c.dropout > 0) net->add(std::make_unique<Dropout>("dropout2", c.dropout));
  net->add(std::make_unique<Linear>("fc3", 84, c.classes));
  return net;
}

}  // namespace mpsim::detail
