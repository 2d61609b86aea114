// `mpsim bench gemm`: GMAC/s of the emulated GEMM on ResNet-20's convolution shapes, with 1 and 2
// threads, next to OpenBLAS sgemm on the same shapes in the same run.
#include <cblas.h>
#include <fmt/core.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli.h"
#include "mpsim/gemm.h"
#include "mpsim/mac.h"

namespace mpsim::cli {

namespace {

struct Shape {
  const char* layer;
  std::size_t m, k, n;  // C_out, 9 C_in, batch H W
};

template <class Op>
double median_seconds(int reps, Op op) {
  op();  // warm caches, page in the output, start the thread pools
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    op();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(t.size() / 2), t.end());
  return t[t.size() / 2];
}

}  // namespace

int run_bench_gemm(const BenchGemmOptions& o) {
  if (o.batch < 1) throw UsageError("--batch must be positive");
  if (o.reps < 1) throw UsageError("--reps must be at least 1");
  std::vector<MacSpec> specs;
  for (const auto& s : o.specs) specs.push_back(MacSpec::parse(s));
  for (int t : o.threads) {
    if (t < 1) throw UsageError("--threads takes positive counts");
  }
  const std::size_t b = static_cast<std::size_t>(o.batch);
  // ResNet-20 on 32 x 32 images: the 3 x 3 convolutions of its three stages as GEMMs
  // (output channels x 9 input channels x batch * H * W).
  const Shape shapes[] = {{"stage1 16->16 32x32", 16, 144, b * 32 * 32},
                          {"stage2 32->32 16x16", 32, 288, b * 16 * 16},
                          {"stage3 64->64 8x8", 64, 576, b * 8 * 8}};
  nlohmann::json rows = nlohmann::json::array();
  if (!o.json) {
    fmt::print("GEMM on ResNet-20's 3x3 convolutions (batch {}, {} operands), median of {} runs; GMAC/s, and OpenBLAS\n"
               "sgemm's GMAC/s divided by it (how many times slower than fp32)\n", o.batch, o.operands, o.reps);
  }
  for (const Shape& sh : shapes) {
    std::mt19937_64 gen(1);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> Af(sh.m * sh.k), Bf(sh.k * sh.n), Cf(sh.m * sh.n);
    for (auto& x : Af) x = dist(gen);
    for (auto& x : Bf) x = dist(gen);
    std::vector<double> A, B, C;
    if (o.operands == "fp64") {
      A.assign(Af.begin(), Af.end());
      B.assign(Bf.begin(), Bf.end());
      C.resize(sh.m * sh.n);
    }
    const double macs = static_cast<double>(sh.m) * static_cast<double>(sh.k) * static_cast<double>(sh.n);
    if (!o.json) fmt::print("\n{} (m {} k {} n {}):\n", sh.layer, sh.m, sh.k, sh.n);
    for (int t : o.threads) {
      openblas_set_num_threads(t);
      const double s_blas = median_seconds(o.reps, [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(sh.m), static_cast<int>(sh.n),
                    static_cast<int>(sh.k), 1.0f, Af.data(), static_cast<int>(sh.k), Bf.data(), static_cast<int>(sh.n), 0.0f,
                    Cf.data(), static_cast<int>(sh.n));
      });
      const double g_blas = macs / s_blas / 1e9;
      rows.push_back({{"shape", sh.layer}, {"m", sh.m}, {"k", sh.k}, {"n", sh.n}, {"threads", t}, {"gemm", "openblas sgemm"},
                      {"gmac_per_s", g_blas}});
      if (!o.json) fmt::print("  {} thread{}: {:<50} {:8.3f} GMAC/s\n", t, t > 1 ? "s" : " ", "OpenBLAS sgemm (fp32)", g_blas);
      for (const MacSpec& spec : specs) {
        GemmOptions go;
        go.threads = t;
        // The fp32 overload by default: what the layers pass, and what sgemm gets. (qfp32 always
        // on fp32: its fp64 overload adds conversions that training never pays.)
        const bool f32 = spec.qfp32 || o.operands == "fp32";
        const double s = median_seconds(o.reps, [&] {
          if (f32) gemm(spec, GemmOp::nn, sh.m, sh.n, sh.k, Af.data(), sh.k, Bf.data(), sh.n, Cf.data(), sh.n, go);
          else gemm(spec, GemmOp::nn, sh.m, sh.n, sh.k, A.data(), sh.k, B.data(), sh.n, C.data(), sh.n, go);
        });
        const double g = macs / s / 1e9;
        rows.push_back({{"shape", sh.layer}, {"m", sh.m}, {"k", sh.k}, {"n", sh.n}, {"threads", t}, {"gemm", spec.to_string()},
                        {"gmac_per_s", g}, {"sgemm_ratio", g_blas / g}, {"vectorized", gemm_is_vectorized(spec)}});
        if (!o.json) {
          fmt::print("  {} thread{}: {:<50} {:8.3f} GMAC/s  {:7.1f}x slower than sgemm{}\n", t, t > 1 ? "s" : " ",
                     spec.to_string(), g, g_blas / g,
                     spec.qfp32 ? "  (OpenBLAS)" : gemm_is_vectorized(spec) ? "" : "  (reference engine)");
        }
      }
    }
  }
  if (o.json) {
    nlohmann::json j{{"benchmark", "gemm"}, {"batch", o.batch}, {"operands", o.operands}, {"repetitions", o.reps}, {"statistic", "median"}, {"results", rows}};
    std::cout << j.dump(2) << "\n";
  }
  return kOk;
}

}  // namespace mpsim::cli
