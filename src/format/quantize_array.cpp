// quantize_array: splits an array into tasks for OpenMP, sends each task to the SIMD kernels or,
// for the formats they do not cover, to the scalar reference; and the choice of instruction set.
#include "mpsim/quantize_array.h"

#include <hwy/targets.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "mpsim/quantize.h"
#include "quantize_plan.h"
#include "quantize_simd.h"
#include "scaled_integer.h"

namespace mpsim {

namespace {

// Elements per OpenMP task: large enough to amortize the scheduling, small enough to share a
// few hundred thousand elements between threads. Results never depend on it.
constexpr std::size_t kTask = std::size_t{1} << 14;

template <typename T>
void run(const detail::QuantPlan& plan, const Format& f, const T* in, T* out, std::size_t n,
         const QuantizeOptions& o) {
  if (n == 0) return;
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  const std::int64_t tasks = static_cast<std::int64_t>((n + kTask - 1) / kTask);
  const bool parallel = threads > 1 && tasks > 1;
  // kernel(begin, len) on consecutive tasks of kTask elements, spread over the threads.
  const auto over_tasks = [&](auto kernel) {
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (std::int64_t t = 0; t < tasks; ++t) {
      const std::size_t begin = static_cast<std::size_t>(t) * kTask;
      kernel(begin, std::min(kTask, n - begin));
    }
  };
  if (plan.kind != detail::PlanKind::scalar) {
    over_tasks([&](std::size_t begin, std::size_t len) {
      detail::simd_quantize(plan, f, in + begin, out + begin, len, o.first_index + begin, o.key);
    });
    return;
  }
  const Carrier carrier = std::is_same_v<T, float> ? Carrier::fp32 : Carrier::fp64;
  if (const auto scaled = detail::make_scaled_int_plan(f, carrier)) {
    over_tasks([&](std::size_t begin, std::size_t len) {
      detail::simd_quantize_scaled(*scaled, f, in + begin, out + begin, len, o.first_index + begin, o.key);
    });
    return;
  }
  const auto count = static_cast<std::int64_t>(n);
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (std::int64_t i = 0; i < count; ++i) {
    out[i] = quantize(in[i], f, o.first_index + static_cast<std::uint64_t>(i), o.key);
  }
}

std::int64_t target_of(SimdLevel level) {
  switch (level) {
    case SimdLevel::scalar: return HWY_SCALAR;
    case SimdLevel::avx2: return HWY_AVX2;
    case SimdLevel::avx512: return HWY_AVX3;
  }
  return HWY_SCALAR;
}

// What the CPU supports, read once before any level is forced (forcing changes what Highway
// reports as supported).
std::int64_t cpu_targets() {
  static const std::int64_t targets = hwy::SupportedTargets();
  return targets;
}

}  // namespace

void quantize_array(const float* in, float* out, std::size_t n, const Format& f, const QuantizeOptions& o) {
  if (f.kind() != FormatKind::integer) f.require_fits(Carrier::fp32);
  run(detail::make_plan(f, Carrier::fp32), f, in, out, n, o);
}

void quantize_array(const double* in, double* out, std::size_t n, const Format& f, const QuantizeOptions& o) {
  run(detail::make_plan(f, Carrier::fp64), f, in, out, n, o);
}

void random_words(const RandomKey& key, std::uint64_t first_index, std::size_t n, std::uint32_t* out) {
  detail::simd_random_words(key, first_index, n, out);
}

bool quantize_array_is_vectorized(const Format& f, Carrier carrier) {
  return detail::make_plan(f, carrier).kind != detail::PlanKind::scalar ||
         detail::make_scaled_int_plan(f, carrier).has_value();
}

std::string to_string(SimdLevel level) {
  switch (level) {
    case SimdLevel::scalar: return "scalar";
    case SimdLevel::avx2: return "avx2";
    case SimdLevel::avx512: return "avx512";
  }
  return "?";
}

std::vector<SimdLevel> available_simd_levels() {
  std::vector<SimdLevel> levels;
  for (SimdLevel l : {SimdLevel::scalar, SimdLevel::avx2, SimdLevel::avx512}) {
    if (cpu_targets() & target_of(l)) levels.push_back(l);
  }
  return levels;
}

SimdLevel active_simd_level() {
  const std::int64_t t = detail::simd_target();
  if (t == HWY_AVX3) return SimdLevel::avx512;
  if (t == HWY_AVX2) return SimdLevel::avx2;
  return SimdLevel::scalar;
}

void force_simd_level(SimdLevel level) {
  const std::int64_t t = target_of(level);
  if ((cpu_targets() & t) == 0) throw FormatError("this CPU cannot run the " + to_string(level) + " kernels");
  hwy::SetSupportedTargetsForTest(t);
}

void reset_simd_level() {
  (void)cpu_targets();
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace mpsim
