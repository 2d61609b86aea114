#include "mpsim/init.h"

#include <cmath>
#include <numbers>
#include <stdexcept>

#include "mpsim/rng.h"

namespace mpsim {

namespace {

// Uniform in [0, 1) with 53 random bits: words (2w, 2w+1) of element i.
double uniform01(const RandomKey& key, std::uint64_t i, std::uint32_t w) {
  const std::uint64_t hi = random_word(key, i, 2 * w), lo = random_word(key, i, 2 * w + 1);
  return static_cast<double>(((hi << 32) | lo) >> 11) * 0x1p-53;
}

}  // namespace

std::pair<std::size_t, std::size_t> fans(const Shape& s) {
  if (s.size() < 2) throw std::invalid_argument("fan-in/fan-out need a weight of rank >= 2, got " + to_string(s));
  std::size_t field = 1;
  for (std::size_t i = 2; i < s.size(); ++i) field *= s[i];
  return {s[1] * field, s[0] * field};
}

void init_uniform(Tensor& t, double lo, double hi, const RandomKey& key) {
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(lo + (hi - lo) * uniform01(key, i, 0));
}

void init_normal(Tensor& t, double mean, double std, const RandomKey& key) {
  for (std::size_t i = 0; i < t.size(); ++i) {
    const double u1 = 1.0 - uniform01(key, i, 0);  // (0, 1]: log stays finite
    const double u2 = uniform01(key, i, 1);
    const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
    t[i] = static_cast<float>(mean + std * z);
  }
}

void init_kaiming_normal(Tensor& w, FanMode mode, const RandomKey& key) {
  const auto [in, out] = fans(w.shape());
  const double fan = static_cast<double>(mode == FanMode::fan_in ? in : out);
  init_normal(w, 0.0, std::sqrt(2.0 / fan), key);
}

void init_kaiming_uniform(Tensor& w, double a, const RandomKey& key) {
  const double fan_in = static_cast<double>(fans(w.shape()).first);
  const double bound = std::sqrt(6.0 / ((1.0 + a * a) * fan_in));
  init_uniform(w, -bound, bound, key);
}

void init_xavier_uniform(Tensor& w, const RandomKey& key) {
  const auto [in, out] = fans(w.shape());
  const double bound = std::sqrt(6.0 / static_cast<double>(in + out));
  init_uniform(w, -bound, bound, key);
}

}  // namespace mpsim
