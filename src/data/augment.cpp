// Random crop with zero padding and random horizontal flip, with the random choices of each
// sample a pure function of (seed, epoch, sample index).
#include <cmath>
#include <stdexcept>

#include "mpsim/data.h"
#include "mpsim/rng.h"

namespace mpsim {

AugmentDraw augment_draw(const Augment& aug, std::uint64_t seed, std::uint64_t epoch, std::uint64_t index) {
  if (!(aug.flip_probability >= 0 && aug.flip_probability <= 1)) {
    throw std::invalid_argument("augmentation: flip probability " + std::to_string(aug.flip_probability) +
                                " is not in [0, 1]");
  }
  const std::uint64_t r = data_random_index(epoch, index);
  AugmentDraw d;
  if (aug.crop_padding > 0) {
    const std::uint64_t range = 2 * std::uint64_t{aug.crop_padding} + 1;
    d.dy = static_cast<std::size_t>(uniform_below(RandomKey{seed, data_stream::crop_y}, r, range));
    d.dx = static_cast<std::size_t>(uniform_below(RandomKey{seed, data_stream::crop_x}, r, range));
  }
  if (aug.flip_probability > 0) {
    // A 32-bit word below p * 2^32: probability ceil(p * 2^32) / 2^32, exactly p for p = 0.5
    // and for p = 1 (every word is below 2^32).
    const double threshold = aug.flip_probability * 4294967296.0;
    d.flip = static_cast<double>(random_word(RandomKey{seed, data_stream::flip}, r, 0)) < threshold;
  }
  return d;
}

void augment_image(const float* src, float* dst, std::size_t channels, std::size_t height, std::size_t width,
                   std::size_t padding, const AugmentDraw& draw) {
  if (draw.dy > 2 * padding || draw.dx > 2 * padding) {
    throw std::invalid_argument("augment_image: crop offset (" + std::to_string(draw.dy) + ", " +
                                std::to_string(draw.dx) + ") outside [0, " + std::to_string(2 * padding) + "]");
  }
  // Signed source coordinates: the window may start above/left of the image (in the padding).
  const auto h = static_cast<std::ptrdiff_t>(height), w = static_cast<std::ptrdiff_t>(width);
  const std::ptrdiff_t oy = static_cast<std::ptrdiff_t>(draw.dy) - static_cast<std::ptrdiff_t>(padding);
  const std::ptrdiff_t ox = static_cast<std::ptrdiff_t>(draw.dx) - static_cast<std::ptrdiff_t>(padding);
  for (std::size_t c = 0; c < channels; ++c) {
    const float* s = src + c * height * width;
    float* d = dst + c * height * width;
    for (std::ptrdiff_t y = 0; y < h; ++y) {
      const std::ptrdiff_t sy = y + oy;
      float* row = d + y * w;
      if (sy < 0 || sy >= h) {
        std::fill(row, row + w, 0.0f);
        continue;
      }
      for (std::ptrdiff_t x = 0; x < w; ++x) {
        const std::ptrdiff_t xx = draw.flip ? w - 1 - x : x;
        const std::ptrdiff_t sx = xx + ox;
        row[x] = sx >= 0 && sx < w ? s[sy * w + sx] : 0.0f;
      }
    }
  }
}

}  // namespace mpsim
