// The named architectures: their shapes, parameter names and counts against the published
// figures, MAC counts against hand-derived ones, deterministic initialization, and one emulated
// training step that must give the same bits with 1 and 2 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <set>

#include "mpsim/init.h"
#include "mpsim/layers.h"
#include "mpsim/model.h"
#include "src/nn/models/architectures.h"

namespace mpsim {
namespace {

ModelConfig config(const std::string& arch, std::size_t channels = 1, std::size_t size = 28) {
  ModelConfig c;
  c.arch = arch;
  c.channels = channels;
  c.height = c.width = size;
  return c;
}

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(Models, ParameterCountsMatchThePublishedArchitectures) {
  // LeNet-5 (ReLU/max-pool form, 28x28): 156 + 2416 + 48120 + 10164 + 850.
  EXPECT_EQ(make_model(config("lenet5"))->parameter_count(), 61706u);
  // ResNet-20 for CIFAR-10 (He et al.: 0.27M): 269,722 parameters with 3 input channels.
  EXPECT_EQ(make_model(config("resnet20", 3, 32))->parameter_count(), 269722u);
  // One input channel removes 2 x 16 x 9 weights of conv1.
  EXPECT_EQ(make_model(config("resnet20"))->parameter_count(), 269722u - 288u);
  // ResNet-56 and -110 (0.85M and 1.7M in the paper).
  EXPECT_EQ(make_model(config("resnet56", 3, 32))->parameter_count(), 853018u);
  EXPECT_EQ(make_model(config("resnet110", 3, 32))->parameter_count(), 1727962u);
  // VGG-16 with batch norm and one linear classifier on CIFAR: 14,728,266.
  EXPECT_EQ(make_model(config("vgg16", 3, 32))->parameter_count(), 14728266u);
  // MLP 784-256-128-10.
  EXPECT_EQ(make_model(config("mlp"))->parameter_count(), 784u * 256 + 256 + 256 * 128 + 128 + 1290);
}

TEST(Models, ParameterNamesArePyTorchStateDictKeys) {
  auto m = make_model(config("resnet20", 3, 32));
  std::set<std::string> names;
  for (const Parameter* p : m->parameters()) EXPECT_TRUE(names.insert(p->name).second) << p->name;
  for (const Buffer* b : m->buffers()) EXPECT_TRUE(names.insert(b->name).second) << b->name;
  for (const char* n : {"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "bn1.num_batches_tracked", "layer1.0.conv1.weight", "layer2.0.bn2.running_var",
                        "layer3.2.conv2.weight", "linear.weight", "linear.bias"}) {
    EXPECT_TRUE(names.count(n)) << n;
  }
  EXPECT_FALSE(names.count("layer2.0.shortcut.0.weight"));  // option A has no parameters
  ModelConfig b = config("resnet20", 3, 32);
  b.shortcut = 'B';
  names.clear();
  auto mb = make_model(b);  // (a temporary model would die before the loop reads the names)
  for (const Parameter* p : mb->parameters()) names.insert(p->name);
  EXPECT_TRUE(names.count("layer2.0.shortcut.0.weight"));
  EXPECT_TRUE(names.count("layer3.0.shortcut.1.bias"));
  names.clear();
  auto vgg = make_model(config("vgg11", 3, 32));
  for (const Parameter* p : vgg->parameters()) names.insert(p->name);
  EXPECT_TRUE(names.count("features.0.weight"));
  EXPECT_TRUE(names.count("features.1.weight"));  // its batch norm
  EXPECT_TRUE(names.count("classifier.weight"));
}

TEST(Models, OutputShapesAndPadding) {
  for (const std::string& arch : model_names()) {
    for (const std::size_t ch : {1u, 3u}) {
      for (const std::size_t size : {28u, 32u}) {
        auto m = make_model(config(arch, ch, size));
        EXPECT_EQ(m->root().output_shape({2, ch, size, size}), (Shape{2, 10})) << arch;
      }
    }
  }
  EXPECT_THROW(make_model(config("vgg11", 3, 27)), std::invalid_argument);
  EXPECT_THROW(make_model(config("resnet21")), std::invalid_argument);
  EXPECT_THROW(make_model(config("lenet5", 1, 8)), std::invalid_argument);
  auto m = make_model(config("lenet5"));
  EXPECT_THROW(m->forward(Tensor({2, 3, 28, 28}), {}), std::invalid_argument);
}

TEST(Models, MacCountsOfLeNet5) {
  auto m = make_model(config("lenet5"));
  std::size_t fwd = 0, all = 0;
  for (const GemmCount& g : m->gemms(1)) {
    all += g.macs();
    if (g.role == GemmRole::fwd) fwd += g.macs();
  }
  // Forward MACs per image: conv1 6*28*28*25, conv2 16*10*10*150, fc 400*120 + 120*84 + 84*10.
  EXPECT_EQ(fwd, 117600u + 240000u + 48000u + 10080u + 840u);
  // GRAD repeats the forward counts; BWD is a true convolution over all K*R*S taps for every
  // input pixel (conv2: 14*14 * 6 * 16*25) and the fc layers' dy W, but conv1 has none (the
  // model computes no dL/dx of its input); the bias gradients reduce each output plane.
  const std::size_t bwd = 14 * 14 * 6 * 400 + 48000 + 10080 + 840;
  const std::size_t bias = 6 * 784 + 16 * 100 + 120 + 84 + 10;
  EXPECT_EQ(all, 2 * fwd + bwd + bias);
}

// The model skips the data gradient of its first learning layer; the parameter gradients are
// those of the full backward, bit for bit, and a root asked for dL/dx gives it again.
TEST(Models, SkippingTheInputGradientLeavesParameterGradientsUnchanged) {
  for (const std::string arch : {"lenet5", "resnet20", "mlp"}) {
    const std::size_t N = 2;
    Tensor x({N, 1, 28, 28});
    init_uniform(x, 0.0, 1.0, RandomKey{4, 0});
    const std::vector<std::uint32_t> labels = {3, 7};
    auto m = make_model(config(arch), 5);
    m->set_precision(GemmPrecision::all(MacSpec::parse("in=e5m2:cfg5 prod=exact acc=e6m5@sr order=seq")));
    StepContext ctx;
    ctx.threads = 1;
    auto grads = [&](bool input_gradient) {
      m->root().set_input_gradient(input_gradient);
      const LossResult loss = softmax_cross_entropy(m->forward(x, ctx), labels);
      const Tensor dx = m->root().backward(loss.grad, ctx);
      EXPECT_EQ(dx.shape(), input_gradient ? x.shape() : Shape{}) << arch;
      std::vector<std::uint32_t> out;
      for (const Parameter* p : m->parameters())
        for (const float v : p->grad.values()) out.push_back(bits(v));
      return out;
    };
    const auto skipped = grads(false), full = grads(true);
    EXPECT_EQ(skipped, full) << arch;
    std::vector<GemmCount> g;
    m->root().collect_gemms({1, 1, 28, 28}, g);
    const std::size_t with_first_bwd = g.size();
    m->root().set_input_gradient(false);
    EXPECT_EQ(m->gemms(1).size() + 1, with_first_bwd) << arch;
  }
}

TEST(Models, InitializationIsDeterministicAndFollowsTheScheme) {
  auto a = make_model(config("resnet20"), 7), b = make_model(config("resnet20"), 7), c = make_model(config("resnet20"), 8);
  const auto pa = a->parameters(), pb = b->parameters(), pc = c->parameters();
  bool differs = false;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i]->value.values(), pb[i]->value.values()) << pa[i]->name;
    differs = differs || pa[i]->value.values() != pc[i]->value.values();
  }
  EXPECT_TRUE(differs);
  // layer3.0.conv2: kaiming normal, std sqrt(2 / (64 * 9)).
  for (const Parameter* p : pa) {
    if (p->name != "layer3.0.conv2.weight") continue;
    double s = 0, s2 = 0;
    for (const float v : p->value.values()) s += v, s2 += double(v) * v;
    const double n = double(p->value.size()), mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
    EXPECT_NEAR(sd, std::sqrt(2.0 / 576.0), 0.02 * std::sqrt(2.0 / 576.0) * 3);
    EXPECT_NEAR(mean, 0.0, 4 * sd / std::sqrt(n));
  }
}

// One training step of LeNet-5 (forward, loss, backward, SGD) under the seeds' E5M2(CFG5)/E6M5
// MAC with stochastic rounding in the accumulator too, with 1 and 2 threads: same bits.
// Finite differences through residual blocks: a ResNet-8 (one BasicBlock per stage, so an
// identity block and two downsampling blocks with their shortcut) on 8x8 inputs, shortcuts A and
// B, in the FP32 mode. The loss is summed in double; a central difference of step 2e-4 on
// sampled entries of every parameter (float rounding of the loss contributes about 5e-4) must
// match the analytic gradient within 5% + 1e-3. A step that moves some ReLU input across zero
// spoils its entry's difference, and with thousands of units a few entries do that, so at most
// one in twenty may miss; a wrong shortcut or residual gradient misses on most entries of every
// layer before it.
TEST(Models, ResNetBlocksPassFiniteDifferenceChecks) {
  for (const char shortcut : {'A', 'B'}) {
    SCOPED_TRACE(std::string("shortcut ") + shortcut);
    ModelConfig c;
    c.arch = "resnet8";
    c.channels = 1;
    c.height = c.width = 8;
    c.shortcut = shortcut;
    Model m("resnet8", detail::build_resnet(c, 8), Shape{1, 8, 8}, 10);
    m.init(4);
    const std::size_t n = 8;
    Tensor x({n, 1, 8, 8});
    init_uniform(x, -1, 1, RandomKey{5, 0});
    std::vector<std::uint32_t> labels;
    for (std::size_t i = 0; i < n; ++i) labels.push_back(static_cast<std::uint32_t>((i * 3) % 10));
    StepContext ctx;
    ctx.threads = 1;
    const auto loss = [&] { return softmax_cross_entropy(m.forward(x, ctx), labels).loss; };
    const LossResult l = softmax_cross_entropy(m.forward(x, ctx), labels);
    m.backward(l.grad, ctx);
    std::size_t checked = 0, missed = 0;
    for (Parameter* p : m.parameters()) {
      const Tensor g = p->grad;
      for (std::size_t i = 0; i < p->value.size(); i += std::max<std::size_t>(1, p->value.size() / 6)) {
        const float v = p->value[i];
        p->value[i] = v + 2e-4f;
        const double up = loss();
        const float vu = p->value[i];
        p->value[i] = v - 2e-4f;
        const double down = loss();
        const float vd = p->value[i];
        p->value[i] = v;
        const double fd = (up - down) / (static_cast<double>(vu) - vd);
        if (std::fabs(fd - g[i]) > 0.05 * std::fabs(g[i]) + 1e-3) {
          ++missed;
          std::cout << "  " << shortcut << " " << p->name << "[" << i << "]: analytic " << g[i] << ", difference " << fd << "\n";
        }
        ++checked;
      }
    }
    EXPECT_GT(checked, 150u);
    EXPECT_LE(missed * 20, checked);
  }
}

TEST(Models, EmulatedLeNet5StepIsIdenticalWith1And2Threads) {
  const std::size_t N = 8;
  Tensor x({N, 1, 28, 28});
  init_uniform(x, 0.0, 1.0, RandomKey{3, 0});
  std::vector<std::uint32_t> labels(N);
  for (std::size_t i = 0; i < N; ++i) labels[i] = static_cast<std::uint32_t>(i % 10);
  std::vector<std::vector<std::uint32_t>> results;
  for (const std::string spec : {"in=e5m2:cfg5 prod=exact acc=e6m5 order=seq", "in=e5m2:cfg5 prod=exact acc=e6m5@sr order=seq"}) {
    for (const int threads : {1, 2}) {
      auto m = make_model(config("lenet5"), 11);
      m->set_precision(GemmPrecision::all(MacSpec::parse(spec)));
      StepContext ctx;
      ctx.seed = 5;
      ctx.step = 1;
      ctx.threads = threads;
      for (int step = 0; step < 2; ++step, ++ctx.step) {
        const Tensor logits = m->forward(x, ctx);
        const LossResult loss = softmax_cross_entropy(logits, labels);
        ASSERT_TRUE(std::isfinite(loss.loss));
        m->backward(loss.grad, ctx);
        for (Parameter* p : m->parameters())
          for (std::size_t i = 0; i < p->value.size(); ++i) p->value[i] -= 0.05f * p->grad[i];
      }
      std::vector<std::uint32_t> out;
      for (const Parameter* p : m->parameters())
        for (const float v : p->value.values()) out.push_back(bits(v));
      results.push_back(std::move(out));
    }
  }
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[2], results[3]);
  EXPECT_NE(results[0], results[2]);  // sr changes something
}

}  // namespace
}  // namespace mpsim
