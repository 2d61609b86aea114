// mpsim: emulated custom-precision arithmetic for DNN training (command-line entry point).
#include <cstdio>
#include <exception>
#include <iostream>
#include <map>

#include "cli.h"
#include "mpsim/format.h"

int main(int argc, char** argv) {
  using namespace mpsim::cli;
  CLI::App app{
      "mpsim: bit-accurate emulation of custom-precision number formats and multiply-accumulate\n"
      "units for training deep neural networks.\n\n"
      "Exit codes: 0 success, 1 runtime error, 2 usage error (bad arguments, format strings, values)."};
  app.require_subcommand(1);
  app.fallthrough(false);
  std::map<CLI::App*, Runner> runners;
  auto add = [&](Runner (*adder)(CLI::App&), const char* name) {
    Runner r = adder(app);
    runners[app.get_subcommand(name)] = std::move(r);
  };
  add(&add_format_command, "format");
  add(&add_quantize_command, "quantize");
  add(&add_demo_command, "demo");
  add(&add_gemm_command, "gemm");
  add(&add_bench_command, "bench");
  add(&add_train_command, "train");
  add(&add_eval_command, "eval");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "mpsim: " << e.what() << "\nRun 'mpsim --help' (or 'mpsim COMMAND --help') for usage.\n";
    return kUsageError;
  }
  try {
    for (auto* sub : app.get_subcommands()) return runners.at(sub)();
  } catch (const mpsim::FormatError& e) {
    std::cerr << "mpsim: " << e.what() << "\n";
    return kUsageError;
  } catch (const UsageError& e) {
    std::cerr << "mpsim: " << e.what() << "\n";
    return kUsageError;
  } catch (const std::exception& e) {
    std::cerr << "mpsim: error: " << e.what() << "\n";
    return kRuntimeError;
  }
  return kUsageError;
}
