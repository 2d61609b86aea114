// `mpsim bench train`: time of one training step's forward and backward (batch 128 by default)
// for LeNet-5 and ResNet-20, in plain FP32 (OpenBLAS) and under an emulated MAC, measured in the
// same run, with the peak memory of each.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "mpsim/init.h"
#include "mpsim/layers.h"
#include "mpsim/model.h"

namespace mpsim::cli {

namespace {

struct BenchTrainOptions {
  std::vector<std::string> models = {"lenet5", "resnet20"};
  std::string mac = "in=e5m2:cfg5 prod=exact acc=e6m5 order=seq";
  std::size_t batch = 128;
  std::size_t channels = 1, size = 28;
  std::vector<int> threads = {1, 2};
  std::vector<std::string> modes = {"fp32", "emulated"};
  int reps = 3;
  bool json = false;
};

// The process's peak resident set (VmHWM, KiB) since the last reset_peak_memory().
long peak_memory_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// Writing 5 to clear_refs resets the peak to the current resident set (Linux >= 4.0).
void reset_peak_memory() { std::ofstream("/proc/self/clear_refs") << "5"; }

int run_bench_train(const BenchTrainOptions& o) {
  if (o.batch == 0 || o.reps < 1) throw UsageError("--batch and --reps must be positive");
  const MacSpec spec = MacSpec::parse(o.mac);
  bool want_fp32 = false, want_emulated = false;
  for (const std::string& m : o.modes) {
    if (m == "fp32") want_fp32 = true;
    else if (m == "emulated") want_emulated = true;
    else throw UsageError("--modes: unknown mode '" + m + "' (expected fp32 or emulated)");
  }
  if (!want_fp32 && !want_emulated) throw UsageError("--modes: name fp32, emulated or both");
  nlohmann::json rows = nlohmann::json::array();
  if (!o.json) {
    fmt::print("Forward + backward of one training batch of {} ({}x{}x{}), median of {} runs\n", o.batch, o.channels, o.size,
               o.size, o.reps);
    fmt::print("{:<10}{:>8}  {:<44}{:>12}{:>12}{:>10}{:>12}\n", "model", "threads", "precision", "s/batch", "images/s",
               "vs fp32", "peak MiB");
  }
  for (const std::string& arch : o.models) {
    ModelConfig mc;
    mc.arch = arch;
    mc.channels = o.channels;
    mc.height = mc.width = o.size;
    Tensor x({o.batch, o.channels, o.size, o.size});
    init_normal(x, 0.0, 1.0, RandomKey{1, 0});
    std::vector<std::uint32_t> labels(o.batch);
    for (std::size_t i = 0; i < o.batch; ++i) labels[i] = static_cast<std::uint32_t>(i % 10);
    for (const int t : o.threads) {
      double fp32_seconds = 0;  // 0: not measured in this run (no ratio printed)
      for (const bool emulated : {false, true}) {
        if (emulated ? !want_emulated : !want_fp32) continue;
        auto model = make_model(mc, 1);
        model->set_precision(emulated ? GemmPrecision::all(spec) : GemmPrecision::fp32());
        StepContext ctx;
        ctx.threads = t;
        const auto step = [&] {
          const LossResult r = softmax_cross_entropy(model->forward(x, ctx), labels);
          model->backward(r.grad, ctx);
          ++ctx.step;
        };
        reset_peak_memory();
        step();  // warm-up: allocations, thread pools
        std::vector<double> times;
        for (int r = 0; r < o.reps; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          step();
          times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2), times.end());
        const double s = times[times.size() / 2];
        if (!emulated) fp32_seconds = s;
        const double peak = static_cast<double>(peak_memory_kib()) / 1024.0;
        const std::string label = emulated ? o.mac : "fp32 (OpenBLAS)";
        rows.push_back({{"model", arch},
                        {"threads", t},
                        {"precision", label},
                        {"seconds_per_batch", s},
                        {"images_per_second", static_cast<double>(o.batch) / s},
                        {"slowdown_vs_fp32", fp32_seconds > 0 ? nlohmann::json(s / fp32_seconds) : nlohmann::json()},
                        {"peak_mib", peak}});
        if (!o.json) {
          const std::string ratio = fp32_seconds > 0 ? fmt::format("{:.1f}x", s / fp32_seconds) : "-";
          fmt::print("{:<10}{:>8}  {:<44}{:>12.4f}{:>12.1f}{:>10}{:>12.0f}\n", arch, t, label, s,
                     static_cast<double>(o.batch) / s, ratio, peak);
        }
      }
    }
  }
  if (o.json) std::cout << rows.dump(2) << "\n";
  return kOk;
}

}  // namespace

CLI::App* add_bench_train_command(CLI::App& bench, Runner& run) {
  auto o = std::make_shared<BenchTrainOptions>();
  CLI::App* cmd = bench.add_subcommand(
      "train", "Time one training step (forward + backward) of LeNet-5 and ResNet-20 in FP32 and under an emulated MAC.");
  cmd->add_option("--models", o->models, "architectures")->delimiter(',')->capture_default_str();
  cmd->add_option("--mac", o->mac, "MAC spec of the emulated runs")->capture_default_str();
  cmd->add_option("--batch", o->batch, "batch size")->capture_default_str();
  cmd->add_option("--channels", o->channels, "input channels")->capture_default_str();
  cmd->add_option("--size", o->size, "input height and width")->capture_default_str();
  cmd->add_option("--threads", o->threads, "thread counts")->delimiter(',')->capture_default_str();
  cmd->add_option("--reps", o->reps, "timed repetitions (the median is reported)")->capture_default_str();
  cmd->add_option("--modes", o->modes,
                  "which steps to time: fp32 (OpenBLAS), emulated (--mac), or both (e.g. fp32 alone to profile it)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "machine-readable output");
  run = [o] { return run_bench_train(*o); };
  return cmd;
}

}  // namespace mpsim::cli
