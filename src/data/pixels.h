// Bytes to pixel values, shared by the IDX and CIFAR loaders.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpsim::detail {

// out[i] = float(in[i]) / 255 in float32, torchvision's ToTensor (a correctly rounded float
// division, so every loader gives the same value for the same byte).
inline void bytes_to_unit(const std::uint8_t* in, float* out, std::size_t n) {
  float table[256];
  for (int b = 0; b < 256; ++b) table[b] = static_cast<float>(b) / 255.0f;
  const auto count = static_cast<std::ptrdiff_t>(n);
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < count; ++i) out[i] = table[in[i]];
}

}  // namespace mpsim::detail
