// Shared plumbing of the mpsim subcommands: registration, exit codes, number printing.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <functional>
#include <stdexcept>
#include <string>

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

// Shortest decimal that reads back to the same double; inf, -inf, nan spelled out.
std::string num(double v);
// A JSON number, or the string "inf", "-inf" or "nan" (JSON has no non-finite numbers).
nlohmann::json jnum(double v);
// "0x7e" with enough hex digits for a code of `bits` bits.
std::string hex_code(std::uint64_t code, int bits);

}  // namespace mpsim::cli
