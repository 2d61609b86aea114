// mpsim: emulated custom-precision arithmetic for DNN training (command-line entry point).
#include <cblas.h>
#include <malloc.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <string>

#include "cli.h"
#include "mpsim/format.h"

namespace {

// --- OpenBLAS kernels ---------------------------------------------------------------------
// A DYNAMIC_ARCH OpenBLAS picks its kernels for the CPU once, when the library loads. Releases
// that predate a CPU model do not recognize it and fall back to their oldest x86-64 kernels:
// OpenBLAS 0.3.21 (Debian 12) takes a Sapphire Rapids Xeon for a "Prescott" and runs SSE3
// kernels there, several times slower than its AVX-512 ones (and the plain-FP32 training mode
// and every FP32 baseline with it). OPENBLAS_CORETYPE overrides the choice, but only if it is in
// the environment when the library loads, i.e. before main. So when the user has not set it and
// OpenBLAS chose kernels older than what the CPU supports, mpsim sets it (SkylakeX: the
// AVX-512 kernels; Haswell: AVX2 + FMA) and executes itself again, once: MPSIM_OPENBLAS_REEXEC
// marks the second run, so a failed override can never loop. The override changes FP32
// results only within OpenBLAS's own rounding freedom (another kernel, another summation
// order); no emulated result involves OpenBLAS.
constexpr const char* kReexecMarker = "MPSIM_OPENBLAS_REEXEC";

std::string lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The OpenBLAS core type this CPU deserves, or nullptr if the generic choice is as good.
const char* best_openblas_core() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

// Whether OpenBLAS's core `chosen` has older kernels than `best`: the pre-AVX2 x86-64 cores,
// and for an AVX-512 CPU also the AVX2 ones. Names OpenBLAS may add later count as new enough.
bool older_kernels(const std::string& chosen, const std::string& best) {
  static const char* const kPreAvx2[] = {"unknown", "katmai", "coppermine", "northwood", "prescott", "banias",
                                         "atom", "core2", "penryn", "dunnington", "nehalem", "athlon",
                                         "opteron", "opteron_sse3", "barcelona", "nano", "sandybridge", "bobcat",
                                         "bulldozer", "piledriver", "steamroller", "excavator"};
  const std::string c = lowercase(chosen);
  for (const char* old : kPreAvx2) {
    if (c == old) return true;
  }
  return lowercase(best) == "skylakex" && (c == "haswell" || c == "zen");
}

void select_openblas_kernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || std::getenv(kReexecMarker) != nullptr) return;
  const char* best = best_openblas_core();
  const char* chosen = openblas_get_corename();
  if (best == nullptr || chosen == nullptr || !older_kernels(chosen, best)) return;
  if (setenv("OPENBLAS_CORETYPE", best, 1) != 0 || setenv(kReexecMarker, "1", 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Still here: exec failed (no /proc?). Carry on with the kernels OpenBLAS chose; the marker
  // stays, so child processes do not try again.
  unsetenv("OPENBLAS_CORETYPE");
}

// --- memory -------------------------------------------------------------------------------
// A training step allocates and frees the same multi-megabyte tensors every step. By default
// glibc hands blocks above its (adaptive) mmap threshold, and heap tops above its trim
// threshold, back to the kernel, which then faults them in and zeroes them page by page on the
// next step: several percent of a plain-FP32 step. Keeping blocks up to 32 MiB in the heap, and
// the heap from shrinking by less than 256 MiB, avoids that without raising the peak much.
void tune_malloc() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  select_openblas_kernels(argv);
  tune_malloc();
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
