// Multi-layer perceptron: flatten, then Linear + ReLU (+ Dropout) per hidden width, then the
// classifier. Layers fc1 .. fc<L+1>.
#include <stdexcept>

#include "src/nn/models/architectures.h"

namespace mpsim::detail {

std::unique_ptr<Layer> build_mlp(const ModelConfig& c) {
  auto net = std::make_unique<Sequential>("");
  net->add(std::make_unique<Flatten>("flatten"));
  std::size_t width = c.channels * c.height * c.width;
  std::size_t i = 1;
  for (const std::size_t h : c.hidden) {
    if (h == 0) throw std::invalid_argument("mlp: a hidden width of 0");
    const std::string n = std::to_string(i);
    net->add(std::make_unique<Linear>("fc" + n, width, h));
    net->add(std::make_unique<ReLU>("relu" + n));
    if (c.dropout > 0) net->add(std::make_unique<Dropout>("dropout" + n, c.dropout));
    width = h;
    ++i;
  }
  net->add(std::make_unique<Linear>("fc" + std::to_string(i), width, c.classes));
  return net;
}

}  // namespace mpsim::detail
