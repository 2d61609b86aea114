#include "src/nn/models/architectures.h"

#include <stdexcept>

namespace mpsim::detail {

InitScheme init_scheme(const std::string& arch) {
  if (arch.rfind("resnet", 0) == 0) return InitScheme::resnet;
  if (arch.rfind("vgg", 0) == 0) return InitScheme::vgg;
  return InitScheme::pytorch_default;
}

std::unique_ptr<Layer> build_architecture(const ModelConfig& c) {
  const std::string& a = c.arch;
  if (a == "mlp") return build_mlp(c);
  if (a == "lenet5") return build_lenet5(c);
  for (const std::size_t depth : {20, 32, 44, 56, 110}) {
    if (a == "resnet" + std::to_string(depth)) return build_resnet(c, depth);
  }
  if (a == "vgg11") return build_vgg(c, 11);
  if (a == "vgg16") return build_vgg(c, 16);
  std::string names;
  for (const std::string& n : model_names()) names += (names.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown model '" + a + "' (known: " + names + ")");
}

}  // namespace mpsim::detail
