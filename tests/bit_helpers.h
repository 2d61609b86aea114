// Small helpers shared by the tests that compare results bit for bit and pin SIMD levels.
#pragma once

#include <cstdint>
#include <cstring>

#include "mpsim/quantize_array.h"

namespace mpsim::test {

// The bits of a float or double (NaN payloads and signed zeros included).
template <typename T>
auto bits_of(T x) {
  if constexpr (sizeof(T) == 4) {
    std::uint32_t b;
    std::memcpy(&b, &x, sizeof b);
    return b;
  } else {
    std::uint64_t b;
    std::memcpy(&b, &x, sizeof b);
    return b;
  }
}

// Forces a SIMD level for a scope, and resets it even when an assertion returns early.
struct LevelGuard {
  explicit LevelGuard(SimdLevel l) { force_simd_level(l); }
  ~LevelGuard() { reset_simd_level(); }
};

}  // namespace mpsim::test
