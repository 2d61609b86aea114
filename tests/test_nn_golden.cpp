// The FP32 layers and models against PyTorch: tests/golden/*.safetensors hold inputs,
// parameters, outputs and gradients that torch computed on the CPU in float32
// (scripts/golden/make_golden.py; the files are committed, CI has no torch). Each test loads a
// file, sets the C++ layer's or model's parameters and buffers from it by name, runs forward
// and backward, and compares every output, gradient and updated buffer.
//
// Tolerance, per tensor: max|got - want| <= 1e-4 * max|want| + 1e-7. Why 1e-4: both sides are
// float32 with different summation orders (OpenBLAS and mpsim's loops here, oneDNN/ATen
// there), so each is off from the exact value by its own rounding error. make_golden.py
// measures PyTorch's against a float64 rerun and stores it in each file's metadata
// ("fp32_error"): at most 2.2e-7 of max|want| for the single layers and 2.2e-6 for the models
// (ResNet-20's batch-norm gradients). Our side is of the same order, so a correct
// implementation stays 20x or more below 1e-4, while the faults worth catching (a wrong eps or
// momentum, biased vs unbiased running variance, a missing term, a wrong index) move results by
// 1e-3 or more -- the NegativeControls tests below check that the tolerance does reject such
// faults. The 1e-7 term only matters for an all-zero reference (none of the current ones: the
// smallest max|want| is 2.8e-3).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "mpsim/layers.h"
#include "mpsim/model.h"
#include "mpsim/safetensors.h"

namespace fs = std::filesystem;
using namespace mpsim;

namespace {

constexpr double kRtol = 1e-4;
constexpr double kAtol = 1e-7;

// tests/golden, found from this source file's path (relative to the build directory when
// ccache's base-dir rewriting handed the compiler a relative path) or by walking up from the
// test executable and from the working directory.
fs::path golden_dir() {
  std::vector<fs::path> starts = {fs::path(__FILE__).parent_path() / "golden"};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  for (const fs::path& from : {ec ? fs::path() : exe.parent_path(), fs::current_path(ec)}) {
    for (fs::path p = from; !p.empty() && p != p.root_path(); p = p.parent_path()) {
      starts.push_back(p / "tests" / "golden");
    }
  }
  for (const fs::path& p : starts) {
    if (fs::exists(p / "linear.safetensors")) return p;
  }
  return {};
}

TensorFile load(const std::string& name) {
  static const fs::path dir = golden_dir();
  if (dir.empty()) throw std::runtime_error("tests/golden not found (from " + std::string(__FILE__) + ")");
  return read_safetensors((dir / (name + ".safetensors")).string());
}

const Tensor& get(const TensorFile& f, const std::string& key) {
  const auto it = f.tensors.find(key);
  if (it == f.tensors.end()) throw std::runtime_error("golden file has no tensor '" + key + "'");
  return it->second;
}

// max|got - want| / max|want| (the normwise relative error), +inf for a shape mismatch or a
// NaN in `got`.
double rel_error(const Tensor& got, const Tensor& want) {
  if (got.shape() != want.shape()) return INFINITY;
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (std::isnan(d)) return INFINITY;
    err = std::max(err, d);
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return scale > 0 ? err / scale : (err > 0 ? INFINITY : 0);
}

// EXPECT that got matches want within the tolerance; the message names the tensor, the worst
// element and the error relative to max|want|. Returns the relative error.
double expect_close(const Tensor& got, const Tensor& want, const std::string& what) {
  if (got.shape() != want.shape()) {
    ADD_FAILURE() << what << ": shape " << to_string(got.shape()) << ", PyTorch's is " << to_string(want.shape());
    return INFINITY;
  }
  double scale = 0, err = 0;
  std::size_t worst = 0;
  bool nan = false;
  for (std::size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
    const double d = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (std::isnan(d)) nan = true;
    if (std::isnan(d) || d > err) {
      err = std::isnan(d) ? INFINITY : d;
      worst = i;
    }
  }
  const double tol = kRtol * scale + kAtol;
  EXPECT_TRUE(!nan && err <= tol) << what << ": max |got - want| = " << err << " > " << tol << " (max|want| = " << scale
                                  << "); worst element " << worst << ": got " << got[worst] << ", PyTorch "
                                  << want[worst];
  return scale > 0 ? err / scale : err;
}

void expect_close(double got, double want, const std::string& what) {
  EXPECT_LE(std::fabs(got - want), kRtol * std::fabs(want) + kAtol) << what << ": got " << got << ", PyTorch " << want;
}

// Sets every parameter and buffer of `params`/`buffers` from the file entry named by the part
// of its name after `prefix`; fails for a name the file lacks or a shape that differs.
void load_state(const std::vector<Parameter*>& params, const std::vector<Buffer*>& buffers, const TensorFile& f,
                const std::string& prefix, const TensorFile* fallback = nullptr) {
  const auto key_of = [&](const std::string& name) {
    EXPECT_EQ(name.rfind(prefix, 0), 0u) << name;
    return name.substr(prefix.size());
  };
  const auto find = [&](const std::string& key) -> const Tensor* {
    if (auto it = f.tensors.find(key); it != f.tensors.end()) return &it->second;
    if (fallback) {
      if (auto it = fallback->tensors.find(key); it != fallback->tensors.end()) return &it->second;
    }
    return nullptr;
  };
  const auto set = [&](const std::string& name, Tensor& value) {
    const Tensor* t = find(key_of(name));
    if (!t) {
      ADD_FAILURE() << "'" << key_of(name) << "' (mpsim's " << name << ") is not in the golden file";
      return;
    }
    if (t->shape() != value.shape()) {
      ADD_FAILURE() << name << ": shape " << to_string(value.shape()) << ", PyTorch's is " << to_string(t->shape());
      return;
    }
    value = *t;
  };
  for (Parameter* p : params) set(p->name, p->value);
  for (Buffer* b : buffers) set(b->name, b->value);
}

std::vector<std::uint32_t> labels_of(const Tensor& t, std::size_t classes) {
  std::vector<std::uint32_t> out;
  for (const float v : t.values()) {
    if (!(v >= 0 && v < static_cast<float>(classes) && v == std::floor(v))) throw std::runtime_error("bad label");
    out.push_back(static_cast<std::uint32_t>(v));
  }
  return out;
}

// --- single layers -------------------------------------------------------------------------

// Runs one golden layer case: parameters and buffers from the file ("weight", ...), forward on
// "x" (training or eval as the file says), backward of "dy" in training mode, and compares y,
// dL/dx, every parameter gradient and, after the step, every buffer.
void check_layer(Layer& layer, const std::string& file, const GemmPrecision& precision = GemmPrecision::fp32()) {
  SCOPED_TRACE(file);
  const TensorFile f = load(file);
  std::vector<Parameter*> params;
  std::vector<Buffer*> buffers;
  layer.collect_parameters(params);
  layer.collect_buffers(buffers);
  const std::string prefix = layer.name() + ".";
  load_state(params, buffers, f, prefix);
  // Nothing in the file that the layer lacks: every state entry must have been used.
  std::set<std::string> used;
  for (const Parameter* p : params) used.insert(p->name.substr(prefix.size()));
  for (const Buffer* b : buffers) used.insert(b->name.substr(prefix.size()));
  for (const auto& [key, t] : f.tensors) {
    (void)t;
    const bool data = key == "x" || key == "y" || key == "dy" || key.rfind("grad/", 0) == 0 || key.rfind("after/", 0) == 0;
    EXPECT_TRUE(data || used.count(key)) << "the golden file's '" << key << "' has no counterpart in " << layer.name();
  }
  if (GemmPrecision* p = layer.precision()) *p = precision;

  const bool training = f.metadata.at("mode") == "train";
  StepContext ctx;
  ctx.training = training;
  const Tensor y = layer.forward(get(f, "x"), ctx);
  expect_close(y, get(f, "y"), "y");
  if (training) {
    const Tensor dx = layer.backward(get(f, "dy"), ctx);
    expect_close(dx, get(f, "grad/x"), "grad/x");
    for (const Parameter* p : params) {
      const std::string key = p->name.substr(prefix.size());
      expect_close(p->grad, get(f, "grad/" + key), "grad/" + key);
    }
  }
  // mpsim's backward needs a training forward (the eval file's gradients are not checked).
  for (const Buffer* b : buffers) {
    const std::string key = b->name.substr(prefix.size());
    expect_close(b->value, get(f, "after/" + key), "after/" + key);
  }
}

TEST(GoldenLayers, Linear) {
  Linear l("layer", 5, 3, true);
  check_layer(l, "linear");
}

TEST(GoldenLayers, Conv2dKernel3Stride1Pad1) {
  Conv2d c("layer", 3, 4, 3, 1, 1, true);
  check_layer(c, "conv2d_k3_s1_p1");
}

TEST(GoldenLayers, Conv2dKernel5Stride2Pad2NoBias) {
  Conv2d c("layer", 2, 3, 5, 2, 2, false);
  check_layer(c, "conv2d_k5_s2_p2_nobias");
}

TEST(GoldenLayers, Conv2dKernel1Stride2) {
  Conv2d c("layer", 4, 2, 1, 2, 0, true);
  check_layer(c, "conv2d_k1_s2");
}

// The default MAC (fp32 inputs, exact products, fp32 sequential accumulation) through the
// emulation engine must agree with PyTorch as closely as the OpenBLAS path.
TEST(GoldenLayers, EmulatedFp32MacMatchesToo) {
  const GemmPrecision emulated = GemmPrecision::all(MacSpec{});
  Linear l("layer", 5, 3, true);
  check_layer(l, "linear", emulated);
  Conv2d a("layer", 3, 4, 3, 1, 1, true);
  check_layer(a, "conv2d_k3_s1_p1", emulated);
  Conv2d b("layer", 2, 3, 5, 2, 2, false);
  check_layer(b, "conv2d_k5_s2_p2_nobias", emulated);
  Conv2d c("layer", 4, 2, 1, 2, 0, true);
  check_layer(c, "conv2d_k1_s2", emulated);
}

TEST(GoldenLayers, BatchNorm2dTrain) {
  BatchNorm2d bn("layer", 3);
  check_layer(bn, "batchnorm2d_train");
}

TEST(GoldenLayers, BatchNorm2dEval) {
  BatchNorm2d bn("layer", 3);
  check_layer(bn, "batchnorm2d_eval");
}

TEST(GoldenLayers, ReLU) {
  ReLU r("layer");
  check_layer(r, "relu");
}

TEST(GoldenLayers, MaxPool2dKernel2Stride2) {
  MaxPool2d p("layer", 2, 2);
  check_layer(p, "maxpool2d_k2_s2");
}

// Overlapping windows over small integers: ties everywhere, so the gradient's placement (the
// first maximum in row-major order) is what is tested.
TEST(GoldenLayers, MaxPool2dKernel3Stride2WithTies) {
  MaxPool2d p("layer", 3, 2);
  check_layer(p, "maxpool2d_k3_s2");
}

TEST(GoldenLayers, AvgPool2dKernel2Stride2) {
  AvgPool2d p("layer", 2, 2);
  check_layer(p, "avgpool2d_k2_s2");
}

TEST(GoldenLayers, GlobalAvgPoolIsAdaptiveAvgPoolPlusFlatten) {
  GlobalAvgPool p("layer");
  check_layer(p, "global_avgpool");
}

TEST(GoldenLayers, Flatten) {
  Flatten p("layer");
  check_layer(p, "flatten");
}

TEST(GoldenLayers, ZeroPad2d) {
  ZeroPad2d p("layer", 2);
  check_layer(p, "zeropad2d_2");
}

TEST(GoldenLayers, CrossEntropy) {
  for (const auto& [file, eps] : {std::pair{"cross_entropy", 0.0f}, std::pair{"cross_entropy_ls01", 0.1f}}) {
    SCOPED_TRACE(file);
    const TensorFile f = load(file);
    const Tensor& logits = get(f, "logits");
    const LossResult r = softmax_cross_entropy(logits, labels_of(get(f, "labels"), logits.dim(1)), eps);
    ASSERT_EQ(get(f, "loss").size(), 1u);
    expect_close(r.loss, static_cast<double>(get(f, "loss")[0]), "loss");
    expect_close(r.grad, get(f, "grad/logits"), "grad/logits");
  }
}

// The tolerance is tight enough to see small faults: the same cases with a wrong epsilon or
// momentum must fail it.
TEST(GoldenLayers, NegativeControls) {
  const TensorFile f = load("batchnorm2d_train");
  const auto run = [&](float eps, float momentum, std::string* worst) {
    BatchNorm2d bn("layer", 3, eps, momentum);
    std::vector<Parameter*> params;
    std::vector<Buffer*> buffers;
    bn.collect_parameters(params);
    bn.collect_buffers(buffers);
    load_state(params, buffers, f, "layer.");
    StepContext ctx;
    const double ey = rel_error(bn.forward(get(f, "x"), ctx), get(f, "y"));
    const double ev = rel_error(bn.running_var.value, get(f, "after/running_var"));
    *worst = "y " + std::to_string(ey) + ", running_var " + std::to_string(ev);
    return std::pair{ey, ev};
  };
  std::string msg;
  const auto [ey, ev] = run(1e-5f, 0.1f, &msg);
  EXPECT_LE(ey, kRtol) << msg;
  EXPECT_LE(ev, kRtol) << msg;
  EXPECT_GT(run(1e-3f, 0.1f, &msg).first, kRtol) << "eps 1e-3 instead of 1e-5 went unnoticed: " << msg;
  EXPECT_GT(run(1e-5f, 0.11f, &msg).second, kRtol) << "momentum 0.11 instead of 0.1 went unnoticed: " << msg;

  // Label smoothing 0.1 vs 0.09.
  const TensorFile ce = load("cross_entropy_ls01");
  const Tensor& logits = get(ce, "logits");
  const LossResult r = softmax_cross_entropy(logits, labels_of(get(ce, "labels"), 10), 0.09f);
  EXPECT_GT(rel_error(r.grad, get(ce, "grad/logits")), kRtol);
}

// --- models --------------------------------------------------------------------------------

// One training step of a model against PyTorch: every parameter and buffer set from the file
// by its state_dict name (a name missing on either side fails), forward in training mode, mean
// softmax cross-entropy, backward; then logits, loss, every gradient and every buffer.
void check_model(const ModelConfig& config, const std::string& file, const GemmPrecision& precision) {
  SCOPED_TRACE(file);
  const TensorFile f = load(file);
  // A file may take its initial parameters from another (ResNet-20 B shares A's).
  TensorFile base;
  if (auto it = f.metadata.find("params_from"); it != f.metadata.end()) {
    base = load(fs::path(it->second).stem().string());
  }
  std::unique_ptr<Model> model = make_model(config, 12345);
  model->set_precision(precision);
  const std::vector<Parameter*> params = model->parameters();
  const std::vector<Buffer*> buffers = model->buffers();
  load_state(params, buffers, f, "", base.tensors.empty() ? nullptr : &base);

  // The reverse direction: every state entry, gradient and updated buffer of the file names a
  // parameter or buffer of the model.
  std::set<std::string> param_names, buffer_names;
  for (const Parameter* p : params) param_names.insert(p->name);
  for (const Buffer* b : buffers) buffer_names.insert(b->name);
  EXPECT_EQ(param_names.size(), params.size()) << "duplicate parameter names";
  std::size_t grads = 0, afters = 0;
  for (const TensorFile* src : std::vector<const TensorFile*>{&f, &base}) {
    for (const auto& [key, t] : src->tensors) {
      (void)t;
      if (key == "x" || key == "labels" || key == "logits" || key == "loss") continue;
      if (key.rfind("grad/", 0) == 0) {
        if (src == &f) ++grads;
        EXPECT_TRUE(param_names.count(key.substr(5))) << "'" << key << "' names no parameter of the model";
      } else if (key.rfind("after/", 0) == 0) {
        if (src == &f) ++afters;
        EXPECT_TRUE(buffer_names.count(key.substr(6))) << "'" << key << "' names no buffer of the model";
      } else {
        EXPECT_TRUE(param_names.count(key) || buffer_names.count(key))
            << "the golden state entry '" << key << "' has no counterpart in mpsim's " << config.arch;
      }
    }
  }
  EXPECT_EQ(grads, params.size());
  EXPECT_EQ(afters, buffers.size());

  const Tensor& x = get(f, "x");
  const std::vector<std::uint32_t> labels = labels_of(get(f, "labels"), config.classes);
  StepContext ctx;
  ctx.training = true;
  const Tensor logits = model->forward(x, ctx);
  double worst = expect_close(logits, get(f, "logits"), "logits");
  const LossResult loss = softmax_cross_entropy(logits, labels);
  expect_close(loss.loss, static_cast<double>(get(f, "loss")[0]), "loss");
  model->backward(loss.grad, ctx);
  std::string worst_name = "logits";
  for (const Parameter* p : params) {
    const double e = expect_close(p->grad, get(f, "grad/" + p->name), "grad/" + p->name);
    if (e > worst) {
      worst = e;
      worst_name = "grad/" + p->name;
    }
  }
  for (const Buffer* b : buffers) {
    const double e = expect_close(b->value, get(f, "after/" + b->name), "after/" + b->name);
    if (e > worst) {
      worst = e;
      worst_name = "after/" + b->name;
    }
  }
  // For the record (the margin below kRtol): the largest error relative to max|want|.
  std::printf("%s: %zu parameters, %zu buffers; largest relative error %.3g (%s); PyTorch's own float32 error %s\n",
              file.c_str(), params.size(), buffers.size(), worst, worst_name.c_str(),
              f.metadata.count("fp32_error_max") ? f.metadata.at("fp32_error_max").c_str() : "?");
}

ModelConfig config_for(const std::string& arch, char shortcut = 'A') {
  ModelConfig c;
  c.arch = arch;
  c.channels = 1;
  c.height = 28;
  c.width = 28;
  c.classes = 10;
  c.shortcut = shortcut;
  return c;
}

TEST(GoldenModels, LeNet5) { check_model(config_for("lenet5"), "lenet5", GemmPrecision::fp32()); }

TEST(GoldenModels, ResNet20ShortcutA) { check_model(config_for("resnet20", 'A'), "resnet20_a", GemmPrecision::fp32()); }

TEST(GoldenModels, ResNet20ShortcutB) { check_model(config_for("resnet20", 'B'), "resnet20_b", GemmPrecision::fp32()); }

// LeNet-5 through the emulation engine with the default MAC (fp32, exact products, sequential
// fp32 sums): small enough to run every GEMM of the step through the MAC model.
TEST(GoldenModels, LeNet5EmulatedFp32Mac) {
  check_model(config_for("lenet5"), "lenet5", GemmPrecision::all(MacSpec{}));
}

}  // namespace
