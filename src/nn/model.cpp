#include "mpsim/model.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "mpsim/init.h"
#include "src/nn/models/architectures.h"

namespace mpsim {

Model::Model(std::string arch, std::unique_ptr<Layer> root, Shape input_shape, std::size_t classes)
    : arch_(std::move(arch)), root_(std::move(root)), input_shape_(std::move(input_shape)), classes_(classes) {
  std::uint32_t id = 0;
  for (Layer* l : layers()) l->id = id++;
  root_->set_input_gradient(false);  // nothing before the first learning layer needs dL/dx
  Shape batch1 = {1};
  batch1.insert(batch1.end(), input_shape_.begin(), input_shape_.end());
  const Shape out = root_->output_shape(batch1);  // throws, naming the layer that rejects it
  if (out != Shape{1, classes_}) {
    throw std::invalid_argument(arch_ + ": the model maps " + to_string(batch1) + " to " + to_string(out) + ", not [1, " +
                                std::to_string(classes_) + "]");
  }
}

Tensor Model::forward(const Tensor& x, const StepContext& ctx) {
  if (x.rank() != input_shape_.size() + 1 || !std::equal(input_shape_.begin(), input_shape_.end(), x.shape().begin() + 1)) {
    throw std::invalid_argument(arch_ + ": input of shape " + to_string(x.shape()) + ", expected [N, " +
                                to_string(input_shape_).substr(1));
  }
  return root_->forward(x, ctx);
}

void Model::backward(const Tensor& dlogits, const StepContext& ctx) { (void)root_->backward(dlogits, ctx); }

std::vector<Layer*> Model::layers() {
  std::vector<Layer*> out;
  root_->collect_layers(out);
  return out;
}

std::vector<Parameter*> Model::parameters() {
  std::vector<Parameter*> out;
  root_->collect_parameters(out);
  return out;
}

std::vector<Buffer*> Model::buffers() {
  std::vector<Buffer*> out;
  root_->collect_buffers(out);
  return out;
}

std::size_t Model::parameter_count() {
  std::size_t n = 0;
  for (const Parameter* p : parameters()) n += p->value.size();
  return n;
}

void Model::init(std::uint64_t seed) {
  const detail::InitScheme scheme = detail::init_scheme(arch_);
  std::uint32_t stream = 0;
  for (Layer* l : layers()) {
    std::vector<Parameter*> params;
    l->collect_parameters(params);
    if (dynamic_cast<Sequential*>(l) != nullptr || params.empty()) {
      continue;  // containers: their children are visited themselves
    }
    // Parameter i of the model draws from stream i, in the order the layers list them.
    const auto key = [&](std::uint32_t s) { return RandomKey{seed, s}; };
    if (auto* bn = dynamic_cast<BatchNorm2d*>(l)) {
      bn->weight.value.fill(1.0f);
      bn->bias.value.fill(0.0f);
      bn->running_mean.value.fill(0.0f);
      bn->running_var.value.fill(1.0f);
      bn->num_batches_tracked.value.fill(0.0f);
      stream += 2;
      continue;
    }
    Parameter* weight = nullptr;
    Parameter* bias = nullptr;
    if (auto* c = dynamic_cast<Conv2d*>(l)) {
      weight = &c->weight;
      bias = c->bias ? &*c->bias : nullptr;
    } else if (auto* f = dynamic_cast<Linear*>(l)) {
      weight = &f->weight;
      bias = f->bias ? &*f->bias : nullptr;
    } else {
      // A composite layer with parameters of its own children (a residual block): its
      // children are visited on their own.
      continue;
    }
    const bool conv = dynamic_cast<Conv2d*>(l) != nullptr;
    const double bound = 1.0 / std::sqrt(static_cast<double>(fans(weight->value.shape()).first));
    switch (scheme) {
      case detail::InitScheme::pytorch_default:
        // torch.nn.Linear / Conv2d reset_parameters().
        init_kaiming_uniform(weight->value, std::sqrt(5.0), key(stream));
        if (bias) init_uniform(bias->value, -bound, bound, key(stream + 1));
        break;
      case detail::InitScheme::resnet:
        // He et al. / the reference CIFAR ResNet: kaiming_normal_ (fan_in) for conv and linear
        // weights; the linear bias keeps PyTorch's default.
        init_kaiming_normal(weight->value, FanMode::fan_in, key(stream));
        if (bias) init_uniform(bias->value, -bound, bound, key(stream + 1));
        break;
      case detail::InitScheme::vgg:
        // torchvision VGG: conv kaiming_normal_(fan_out) with zero bias, linear N(0, 0.01), zero bias.
        if (conv) init_kaiming_normal(weight->value, FanMode::fan_out, key(stream));
        else init_normal(weight->value, 0.0, 0.01, key(stream));
        if (bias) bias->value.fill(0.0f);
        break;
    }
    stream += bias ? 2 : 1;
  }
}

void Model::set_precision(const GemmPrecision& p) {
  for (Layer* l : layers()) {
    if (GemmPrecision* q = l->precision()) *q = p;
  }
}

std::vector<GemmCount> Model::gemms(std::size_t batch) const {
  Shape in = {batch};
  in.insert(in.end(), input_shape_.begin(), input_shape_.end());
  std::vector<GemmCount> out;
  root_->collect_gemms(in, out);
  return out;
}

std::unique_ptr<Model> make_model(const ModelConfig& c, std::uint64_t seed) {
  if (c.channels == 0 || c.height == 0 || c.width == 0 || c.classes == 0) {
    throw std::invalid_argument("model " + c.arch + ": channels, height, width and classes must be positive");
  }
  std::unique_ptr<Layer> root = detail::build_architecture(c);
  auto m = std::make_unique<Model>(c.arch, std::move(root), Shape{c.channels, c.height, c.width}, c.classes);
  m->init(seed);
  return m;
}

std::vector<std::string> model_names() {
  return {"mlp", "lenet5", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg11", "vgg16"};
}

}  // namespace mpsim
