// `mpsim bench quantize` and `mpsim bench blocks`: the speed of the array quantizer and of the
// block formats, one thread, on an array that stays in L2, next to a plain copy of the same
// array measured in the same run (the ratio is what travels between machines; the absolute
// figures are this machine's).
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <random>
#include <vector>

#include <hwy/aligned_allocator.h>

#include "cli.h"
#include "mpsim/block.h"
#include "mpsim/format.h"
#include "mpsim/quantize_array.h"

namespace mpsim::cli {

namespace {

struct BenchOptions {
  std::vector<std::string> formats = {"e4m3fn", "e5m2", "fp16", "bf16"};
  std::vector<std::string> modes = {"rne", "sr"};
  std::size_t n = 16384;  // 64 KiB in + 64 KiB out: L2-resident, not L1
  int reps = 31;
  double min_rep_ms = 2.0;
  std::string level;  // empty: the best this CPU has
  bool json = false;
};

// Median over `reps` repetitions of the time per element of op(), each repetition long enough
// (at least min_rep_ms) for the clock to be accurate.
template <class Op>
double median_ns_per_element(const BenchOptions& o, Op op) {
  using clock = std::chrono::steady_clock;
  op();  // warm caches and dispatch
  std::size_t inner = 1;
  for (;;) {
    const auto t0 = clock::now();
    for (std::size_t k = 0; k < inner; ++k) op();
    const double ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    if (ms >= o.min_rep_ms || inner > (std::size_t{1} << 24)) break;
    inner *= 2;
  }
  std::vector<double> t;
  for (int r = 0; r < o.reps; ++r) {
    const auto t0 = clock::now();
    for (std::size_t k = 0; k < inner; ++k) op();
    const double ns = std::chrono::duration<double, std::nano>(clock::now() - t0).count();
    t.push_back(ns / static_cast<double>(inner * o.n));
  }
  std::nth_element(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(t.size() / 2), t.end());
  return t[t.size() / 2];
}

int run_bench_quantize(const BenchOptions& o) {
  if (o.n == 0) throw UsageError("--n must be positive");
  if (o.reps < 1) throw UsageError("--reps must be at least 1");
  if (!o.level.empty()) {
    bool found = false;
    for (SimdLevel l : {SimdLevel::scalar, SimdLevel::avx2, SimdLevel::avx512}) {
      if (to_string(l) == o.level) {
        force_simd_level(l);  // throws (exit 2) if the CPU lacks it
        found = true;
      }
    }
    if (!found) throw UsageError("--level must be scalar, avx2 or avx512, got '" + o.level + "'");
  }
  std::mt19937_64 gen(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  // Cache-line aligned: the copy is the ratio's baseline, and glibc's memcpy (rep movsb) runs
  // about 15x slower on some AMD hosts when the destination starts 16 bytes into a cache line,
  // which is where std::vector's large allocations start (docs/formats.md, section 10).
  const auto in_buf = hwy::AllocateAligned<float>(o.n), out_buf = hwy::AllocateAligned<float>(o.n);
  float* const in = in_buf.get();
  float* const out = out_buf.get();
  for (std::size_t i = 0; i < o.n; ++i) in[i] = dist(gen);
  volatile float sink = 0;

  const double copy = median_ns_per_element(o, [&] {
    std::memcpy(out, in, o.n * sizeof(float));
    sink = out[o.n / 2];
  });
  // What the stochastic modes spend on their random bits: word 0 of every element, generated
  // alone (Philox4x32-10, one block per four elements), in the same run.
  bool stochastic = false;
  for (const auto& ms : o.modes) {
    const RoundMode m = parse_rounding(ms).mode;
    stochastic = stochastic || m == RoundMode::sr || m == RoundMode::srn;
  }
  double words_ns = 0;
  if (stochastic) {
    std::vector<std::uint32_t> words(o.n);
    words_ns = median_ns_per_element(o, [&] {
      random_words({42, 0}, 0, o.n, words.data());
      sink = static_cast<float>(words[o.n / 2]);
    });
  }
  nlohmann::json rows = nlohmann::json::array();
  QuantizeOptions qo;
  qo.threads = 1;
  qo.key = {42, 0};
  BlockQuantizeOptions bo;
  bo.threads = 1;
  bo.key = {42, 0};
  for (const auto& fs : o.formats) {
    for (const auto& ms : o.modes) {
      const Rounding r = parse_rounding(ms);
      std::string name;
      bool vectorized = false;
      double ns = 0;
      if (BlockFormat::is_block_format(fs)) {
        // Blocks along the array (a 1-D tensor, like a row of a GEMM operand along its reduction axis).
        const BlockFormat f = BlockFormat::parse(fs).with_rounding(r);
        f.require_fits(Carrier::fp32);
        name = f.to_string();
        vectorized = quantize_blocks_is_vectorized(f);
        const BlockLayout layout{{o.n}, -1};
        ns = median_ns_per_element(o, [&] {
          quantize_blocks(f, in, out, layout, bo);
          sink = out[o.n / 2];
        });
      } else {
        const Format f = Format::parse(fs).with_rounding(r);
        f.require_fits(Carrier::fp32);
        name = f.to_string();
        vectorized = quantize_array_is_vectorized(f, Carrier::fp32);
        ns = median_ns_per_element(o, [&] {
          quantize_array(in, out, o.n, f, qo);
          sink = out[o.n / 2];
        });
      }
      rows.push_back({{"format", name},
                      {"ns_per_element", ns},
                      {"copy_ns_per_element", copy},
                      {"ratio_to_copy", ns / copy},
                      {"vectorized", vectorized}});
    }
  }
  const std::string level = to_string(active_simd_level());
  if (o.json) {
    nlohmann::json j = {{"benchmark", "quantize"},
                        {"carrier", "fp32"},
                        {"threads", 1},
                        {"elements", o.n},
                        {"repetitions", o.reps},
                        {"statistic", "median"},
                        {"simd_level", level},
                        {"copy_ns_per_element", copy},
                        {"results", rows}};
    if (stochastic) j["random_word_ns"] = words_ns;
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  fmt::print("quantize fp32 -> format, 1 thread, {} elements ({} KiB in + out), median of {} runs, SIMD level {}\n",
             o.n, 2 * o.n * sizeof(float) / 1024, o.reps, level);
  fmt::print("{:<22} {:>10} {:>12} {:>8}\n", "format", "ns/elem", "copy ns/elem", "ratio");
  for (const auto& r : rows) {
    fmt::print("{:<22} {:>10.3f} {:>12.3f} {:>8.2f}{}\n", r["format"].get<std::string>(), r["ns_per_element"].get<double>(),
               r["copy_ns_per_element"].get<double>(), r["ratio_to_copy"].get<double>(),
               r["vectorized"].get<bool>() ? "" : "  (scalar reference path)");
  }
  if (stochastic) fmt::print("random bits alone (Philox4x32-10, one 32-bit word per element): {:.3f} ns/elem\n", words_ns);
  return kOk;
}

}  // namespace

Runner add_bench_command(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Measure the speed of mpsim's kernels on this machine.");
  bench->require_subcommand(1);
  // `quantize` and `blocks` time the same way (run_bench_quantize); they differ in their defaults.
  const auto add_array_bench = [bench](const char* name, const char* description, BenchOptions& o,
                                       const char* formats_help, const char* modes_help, const char* footer) {
    auto* cmd = bench->add_subcommand(name, description);
    cmd->add_option("--formats", o.formats, formats_help);
    cmd->add_option("--modes", o.modes, modes_help);
    cmd->add_option("--n", o.n, "Elements in the array (default 16384: 64 KiB each way)");
    cmd->add_option("--reps", o.reps, "Repetitions; the median is reported (default 31)");
    cmd->add_option("--level", o.level, "Force an instruction set: scalar, avx2 or avx512 (default: the best available)");
    cmd->add_flag("--json", o.json, "Machine-readable output");
    cmd->footer(footer);
    return cmd;
  };
  auto o = std::make_shared<BenchOptions>();
  auto* q = add_array_bench(
      "quantize",
      "ns per element of quantize_array (fp32 in and out, one thread, an L2-resident array), next to a plain "
      "copy of the same array timed in the same run, and their ratio. Medians over repetitions.",
      *o, "Formats to time (default: e4m3fn e5m2 fp16 bf16)", "Rounding modes to time (default: rne sr)",
      "Example:\n  mpsim bench quantize\n  mpsim bench quantize --formats e4m3fn --modes rne sr sr8 --level avx2 --json\n"
      "Block formats may be listed too (blocks along the array).");
  auto ob = std::make_shared<BenchOptions>();
  ob->formats = {"hbfp4/64", "hbfp6/64", "mxfp8_e4m3", "mxfp4"};
  auto* b = add_array_bench(
      "blocks",
      "ns per element of quantize_blocks (fp32 in and out, blocks along a 1-D array, one thread, L2-resident), "
      "next to a plain copy of the same array timed in the same run, and their ratio. Medians over repetitions.",
      *ob, "Block formats to time (default: hbfp4/64 hbfp6/64 mxfp8_e4m3 mxfp4)",
      "Rounding modes of the elements (default: rne sr)",
      "Example:\n  mpsim bench blocks\n  mpsim bench blocks --formats hbfp4/64 nvfp4 --modes rne --json");
  auto og = std::make_shared<BenchGemmOptions>();
  auto* g = bench->add_subcommand(
      "gemm",
      "GMAC/s of the emulated GEMM on ResNet-20's 3x3 convolution shapes (m = 16..64 output channels, k = 9 C_in = "
      "144..576, n = batch H W), with 1 and 2 threads, next to OpenBLAS sgemm on the same shapes in the same run.");
  g->add_option("--mac", og->specs, "MAC specs to time (default: in=e5m2:cfg5 prod=exact with acc=e6m5, fp32, q8.13; qfp32 in=e5m2:cfg5)");
  g->add_option("--batch", og->batch, "Batch size, n = batch * H * W (default 128)");
  g->add_option("--threads", og->threads, "Thread counts (default: 1 2)");
  g->add_option("--reps", og->reps, "Repetitions; the median is reported (default 3)");
  g->add_option("--operands", og->operands,
                "Operand type of the gemm() overload timed: fp32 (default; what the layers pass, as sgemm gets) or fp64 "
                "(the reference's carrier: twice the bytes to read and convert)")
      ->check(CLI::IsMember({"fp32", "fp64"}));
  g->add_flag("--json", og->json, "Machine-readable output");
  g->footer("Example:\n  mpsim bench gemm\n  mpsim bench gemm --batch 16 --threads 1 --mac \"in=bf16 acc=fp32\" --json\n"
            "OpenBLAS (OpenMP build) runs with the same thread count; its results are reproducible only for a\n"
            "fixed thread count, the emulated GEMMs for any.");
  auto run_train = std::make_shared<Runner>();
  CLI::App* t = add_bench_train_command(*bench, *run_train);
  return [o, q, ob, b, og, g, t, run_train] {
    if (t->parsed()) return (*run_train)();
    if (q->parsed()) return run_bench_quantize(*o);
    if (b->parsed()) return run_bench_quantize(*ob);
    if (g->parsed()) return run_bench_gemm(*og);
    throw UsageError("bench: name what to measure, e.g. 'mpsim bench quantize', 'mpsim bench blocks', 'mpsim bench gemm' or 'mpsim bench train'");
  };
}

}  // namespace mpsim::cli
