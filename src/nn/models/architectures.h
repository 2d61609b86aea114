// The builders of the named architectures (make_model), one file each.
#pragma once

#include <memory>
#include <string>

#include "mpsim/layers.h"
#include "mpsim/model.h"

namespace mpsim::detail {

// How an architecture's reference initializes its weights (Model::init).
enum class InitScheme { pytorch_default, resnet, vgg };
InitScheme init_scheme(const std::string& arch);

// The root layer of config.arch; throws std::invalid_argument for an unknown name or an input
// the architecture cannot take.
std::unique_ptr<Layer> build_architecture(const ModelConfig& config);

std::unique_ptr<Layer> build_mlp(const ModelConfig& config);
std::unique_ptr<Layer> build_lenet5(const ModelConfig& config);
std::unique_ptr<Layer> build_resnet(const ModelConfig& config, std::size_t depth);
std::unique_ptr<Layer> build_vgg(const ModelConfig& config, std::size_t depth);

}  // namespace mpsim::detail
