// Shared plumbing of the mpsim subcommands: registration, exit codes, number printing.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mpsim::cli {

// Exit codes of every subcommand.
constexpr int kOk = 0;
constexpr int kRuntimeError = 1;
constexpr int kUsageError = 2;

// A usage error found after argument parsing (bad value, bad combination): exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Each subcommand registers itself on the app and returns the function that runs it.
using Runner = std::function<int()>;
Runner add_format_command(CLI::App& app);
Runner add_quantize_command(CLI::App& app);
Runner add_demo_command(CLI::App& app);
Runner add_bench_command(CLI::App& app);
Runner add_gemm_command(CLI::App& app);
Runner add_train_command(CLI::App& app);
Runner add_eval_command(CLI::App& app);

// The numbers of `mpsim quantize`: each of `values`, then FILE's lines (one number per line,
// blank lines and '#' comments skipped), as (text, fp64 value). Throws UsageError naming the
// bad token (with FILE:LINE) and std::runtime_error for an unreadable file.
std::vector<std::pair<std::string, double>> read_values(const std::vector<std::string>& values, const std::string& file);

// The options of `mpsim quantize` (element and block formats alike).
struct QuantizeArgs {
  std::string format;
  std::vector<std::string> values;
  std::string file;
  bool json = false;
  std::uint64_t seed = 0;
  std::uint32_t stream = 0;
  std::string carrier = "fp64";
  std::vector<std::size_t> shape;
  int axis = -1;
};
// `mpsim format` and `mpsim quantize` for block formats (cmd_block.cpp).
int run_block_format(const std::string& format, bool table, bool json);
int run_block_quantize(const QuantizeArgs& a);

// `mpsim bench gemm` (bench_gemm.cpp).
struct BenchGemmOptions {
  std::vector<std::string> specs = {"in=e5m2:cfg5 prod=exact acc=e6m5 order=seq", "in=e5m2:cfg5 prod=exact acc=fp32 order=seq",
                                    "in=e5m2:cfg5 prod=exact acc=q8.13 order=seq", "qfp32 in=e5m2:cfg5"};
  int batch = 128;
  std::vector<int> threads = {1, 2};
  int reps = 3;
  std::string operands = "fp32";  // the overload timed: fp32 (what the layers pass) or fp64
  bool json = false;
};
int run_bench_gemm(const BenchGemmOptions& o);

// `mpsim bench train` (bench_train.cpp): registers the subcommand on `bench`, sets `run`.
CLI::App* add_bench_train_command(CLI::App& bench, Runner& run);

// Shortest decimal that reads back to the same double; inf, -inf, nan spelled out.
std::string num(double v);
// A JSON number, or the string "inf", "-inf" or "nan" (JSON has no non-finite numbers).
nlohmann::json jnum(double v);
// "0x7e" with enough hex digits for a code of `bits` bits.
std::string hex_code(std::uint64_t code, int bits);

}  // namespace mpsim::cli
