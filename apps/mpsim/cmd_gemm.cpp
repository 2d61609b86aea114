// `mpsim gemm`: one GEMM under a MAC spec, on random operands drawn in the input formats (or
// read from files), with its error against an fp64 GEMM of the same operands.
#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "cli.h"
#include "mpsim/gemm.h"
#include "mpsim/mac.h"
#include "mpsim/quantize.h"

namespace mpsim::cli {

namespace {

struct GemmCliOptions {
  std::string mac;
  std::size_t m = 64, n = 64, k = 576;
  std::string op = "nn";
  std::uint64_t seed = 1;
  std::uint64_t rounding_seed = 0;
  double scale = 1.0;
  std::string a_file, b_file;
  int threads = 0;
  bool json = false;
};

// count numbers from FILE (whitespace-separated; '#' starts a comment to the end of the line).
std::vector<double> read_matrix(const std::string& file, std::size_t count, const char* what) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error(fmt::format("cannot open '{}' for reading", file));
  std::vector<double> v;
  std::string line;
  std::size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (const auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string w;
    while (words >> w) {
      char* end = nullptr;
      const double x = std::strtod(w.c_str(), &end);
      if (end != w.c_str() + w.size()) throw UsageError(fmt::format("{}:{}: '{}' is not a number", file, line_no, w));
      v.push_back(x);
    }
  }
  if (in.bad()) throw std::runtime_error(fmt::format("error while reading '{}'", file));
  if (v.size() != count) {
    throw UsageError(fmt::format("{} holds {} numbers, but {} as stored needs {}", file, v.size(), what, count));
  }
  return v;
}

int run_gemm(const GemmCliOptions& o) {
  const MacSpec spec = MacSpec::parse(o.mac);
  GemmOp op;
  if (o.op == "nn") op = GemmOp::nn;
  else if (o.op == "nt") op = GemmOp::nt;
  else if (o.op == "tn") op = GemmOp::tn;
  else throw UsageError("--op must be nn, nt or tn, got '" + o.op + "'");
  if (o.m == 0 || o.n == 0 || o.k == 0) throw UsageError("-m, -n and -k must be positive");
  if (!(o.scale > 0) || !std::isfinite(o.scale)) throw UsageError("--scale must be a positive number");
  if (o.a_file.empty() != o.b_file.empty()) throw UsageError("give both --a and --b, or neither");

  // Operands as stored: A is m x k (tn: k x m), B is k x n (nt: n x k), row-major.
  const std::size_t a_rows = op == GemmOp::tn ? o.k : o.m, a_cols = op == GemmOp::tn ? o.m : o.k;
  const std::size_t b_rows = op == GemmOp::nt ? o.n : o.k, b_cols = op == GemmOp::nt ? o.k : o.n;
  std::vector<double> A, B;
  if (!o.a_file.empty()) {
    A = read_matrix(o.a_file, a_rows * a_cols, fmt::format("A ({} x {})", a_rows, a_cols).c_str());
    B = read_matrix(o.b_file, b_rows * b_cols, fmt::format("B ({} x {})", b_rows, b_cols).c_str());
  } else {
    // Normal(0, scale) values, rounded (to nearest even) into the input formats.
    std::mt19937_64 gen(o.seed);
    std::normal_distribution<double> dist(0.0, o.scale);
    A.resize(a_rows * a_cols);
    B.resize(b_rows * b_cols);
    const Format fa = spec.a.with_rounding({}), fb = spec.b.with_rounding({});
    for (auto& x : A) x = spec.block ? dist(gen) : quantize(dist(gen), fa);
    for (auto& x : B) x = spec.block ? dist(gen) : quantize(dist(gen), fb);
  }
  // Block-format inputs: each operand quantized block by block along the reduction, as the
  // GEMM does (it then finds values of the formats, which pass unchanged).
  if (spec.block) {
    quantize_blocks(spec.block->a, A.data(), A.data(), BlockLayout{{a_rows, a_cols}, op == GemmOp::tn ? 0 : -1});
    quantize_blocks(spec.block->b, B.data(), B.data(), BlockLayout{{b_rows, b_cols}, op == GemmOp::nt ? -1 : 0});
  }
  std::vector<double> C(o.m * o.n);
  GemmOptions go;
  go.threads = o.threads;
  go.random.seed = o.rounding_seed;
  const auto t0 = std::chrono::steady_clock::now();
  gemm(spec, op, o.m, o.n, o.k, A.data(), a_cols, B.data(), b_cols, C.data(), o.n, go);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // fp64 GEMM of the operands as the MAC reads them (quantized to a= / b=, as dot_ref does).
  std::vector<double> Aq(A.size()), Bq(B.size());
  for (std::size_t i = 0; i < A.size(); ++i) Aq[i] = spec.block ? A[i] : quantize(A[i], spec.a);
  for (std::size_t i = 0; i < B.size(); ++i) Bq[i] = spec.block ? B[i] : quantize(B[i], spec.b);
  double max_abs = 0, sum_abs = 0, sum_sq_err = 0, sum_sq_ref = 0, max_rel = 0;
  std::size_t nonfinite = 0;
  for (std::size_t i = 0; i < o.m; ++i) {
    for (std::size_t j = 0; j < o.n; ++j) {
      double ref = 0;
      for (std::size_t p = 0; p < o.k; ++p) {
        const double a = op == GemmOp::tn ? Aq[p * a_cols + i] : Aq[i * a_cols + p];
        const double b = op == GemmOp::nt ? Bq[j * b_cols + p] : Bq[p * b_cols + j];
        ref += a * b;
      }
      const double c = C[i * o.n + j];
      if (!std::isfinite(c)) {
        ++nonfinite;
        continue;
      }
      const double err = std::fabs(c - ref);
      max_abs = std::max(max_abs, err);
      sum_abs += err;
      sum_sq_err += err * err;
      sum_sq_ref += ref * ref;
      if (ref != 0) max_rel = std::max(max_rel, err / std::fabs(ref));
    }
  }
  const double finite = static_cast<double>(o.m * o.n - nonfinite);
  const double mean_abs = finite > 0 ? sum_abs / finite : NAN;
  const double rms = finite > 0 ? std::sqrt(sum_sq_err / finite) : NAN;
  const double sqnr = sum_sq_err > 0 ? 10 * std::log10(sum_sq_ref / sum_sq_err) : INFINITY;
  const double macs = static_cast<double>(o.m) * static_cast<double>(o.n) * static_cast<double>(o.k);
  if (o.json) {
    nlohmann::json j{{"mac", spec.to_string()},
                     {"op", o.op},
                     {"m", o.m},
                     {"n", o.n},
                     {"k", o.k},
                     {"seed", o.seed},
                     {"operands", o.a_file.empty() ? "random" : "files"},
                     {"seconds", seconds},
                     {"gmac_per_s", macs / seconds / 1e9},
                     {"vectorized", gemm_is_vectorized(spec)},
                     {"error",
                      {{"max_abs", jnum(max_abs)},
                       {"mean_abs", jnum(mean_abs)},
                       {"rms", jnum(rms)},
                       {"max_rel", jnum(max_rel)},
                       {"sqnr_db", jnum(sqnr)},
                       {"nonfinite", nonfinite}}}};
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  fmt::print("mac        {}\n", spec.to_string());
  fmt::print("gemm       {}: {} x {} x {} ({} operands{})\n", o.op, o.m, o.n, o.k, o.a_file.empty() ? "random" : "file",
             o.a_file.empty() ? fmt::format(", normal(0, {}) rounded into a= and b={}, seed {}", num(o.scale),
                                            spec.block ? " block by block along k" : "", o.seed)
                              : "");
  const char* engine = spec.qfp32                ? "fast mode: operands rounded, then OpenBLAS sgemm in FP32"
                       : spec.block && gemm_is_vectorized(spec) ? "integer block kernels"
                       : spec.block              ? "reference block dot product, no fast kernel for this spec yet"
                       : gemm_is_vectorized(spec) ? "SIMD kernels"
                                                  : "exact reference engine, no SIMD kernel for this spec yet";
  fmt::print("time       {:.3f} s, {:.3f} GMAC/s ({})\n", seconds, macs / seconds / 1e9, engine);
  fmt::print("error vs an fp64 GEMM of the same operands:\n");
  fmt::print("  max abs  {:.6g}\n  mean abs {:.6g}\n  rms      {:.6g}\n  max rel  {:.6g}\n  sqnr     {:.2f} dB\n", max_abs, mean_abs,
             rms, max_rel, sqnr);
  if (nonfinite) fmt::print("  {} outputs are not finite (inf or NaN) and are left out above\n", nonfinite);
  return kOk;
}

}  // namespace

Runner add_gemm_command(CLI::App& app) {
  auto o = std::make_shared<GemmCliOptions>();
  auto* cmd = app.add_subcommand("gemm", "Run one GEMM under a MAC spec and report its error against fp64.");
  cmd->footer(
      "Examples:\n"
      "  mpsim gemm --mac \"in=e5m2:cfg5 prod=exact acc=e6m5 order=seq\" -m 64 -n 64 -k 576\n"
      "  mpsim gemm --mac \"in=e4m3fn acc=e6m5 order=chunk64 outer=fp32\" --json\n"
      "  mpsim gemm --mac \"in=bf16 acc=q8.13\" -m 2 -n 2 -k 3 --a a.txt --b b.txt\n"
      "  mpsim gemm --mac \"in=mxfp8_e4m3\" -m 64 -n 1024 -k 576        (block dot product, outer=fp32)\n"
      "  mpsim gemm --mac \"in=hbfp8/64 bacc=16:wrap outer=bf16\"\n"
      "The MAC spec grammar is in docs/mac.md. Random operands are normal(0, --scale) values rounded\n"
      "into the a= and b= formats (block formats: block by block along the reduction). The fp64\n"
      "reference sums the same operands' exact products in fp64.");
  cmd->add_option("--mac", o->mac, "MAC spec, e.g. \"in=e5m2:cfg5 prod=exact acc=e6m5 order=seq\", \"in=mxfp4 outer=fp32\" (block formats), or the fast mode \"qfp32 in=e5m2:cfg5\" (operands rounded, then OpenBLAS in FP32)")->required();
  cmd->add_option("-m", o->m, "Rows of the output (default 64)");
  cmd->add_option("-n", o->n, "Columns of the output (default 64)");
  cmd->add_option("-k", o->k, "Length of the reduction (default 576)");
  cmd->add_option("--op", o->op, "nn (A B), nt (A B^T, B stored n x k) or tn (A^T B, A stored k x m); default nn");
  cmd->add_option("--seed", o->seed, "Seed of the random operands (default 1)");
  cmd->add_option("--rounding-seed", o->rounding_seed, "Seed of stochastic rounding inside the MAC (default 0)");
  cmd->add_option("--scale", o->scale, "Standard deviation of the random operands (default 1)");
  cmd->add_option("--a", o->a_file, "Read A from FILE (numbers, row-major as stored)");
  cmd->add_option("--b", o->b_file, "Read B from FILE (numbers, row-major as stored)");
  cmd->add_option("--threads", o->threads, "Threads (default: OpenMP's); results do not depend on it");
  cmd->add_flag("--json", o->json, "Machine-readable output");
  return [o] { return run_gemm(*o); };
}

}  // namespace mpsim::cli
