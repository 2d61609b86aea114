#include "block_grid.h"

#include <stdexcept>
#include <string>

namespace mpsim::detail {

namespace {

std::size_t product(const std::vector<std::size_t>& v, std::size_t from, std::size_t to) {
  std::size_t p = 1;
  for (std::size_t i = from; i < to; ++i) p *= v[i];
  return p;
}

}  // namespace

int checked_axis(const BlockFormat& f, const BlockLayout& layout) {
  const auto nd = static_cast<int>(layout.shape.size());
  if (nd == 0) throw std::invalid_argument("block layout: the tensor shape is empty (give at least one dimension)");
  if (f.tile() != 0) {
    if (nd < 2) {
      throw std::invalid_argument("block format '" + f.to_string() +
                                  "' has T x T tiles, which need a tensor of at least 2 dimensions (got 1)");
    }
    return nd - 1;
  }
  const int a = layout.axis < 0 ? layout.axis + nd : layout.axis;
  if (a < 0 || a >= nd) {
    throw std::invalid_argument("block layout: axis " + std::to_string(layout.axis) + " is out of range for a " +
                                std::to_string(nd) + "-dimensional tensor");
  }
  return a;
}

BandGrid make_band_grid(const BlockFormat& f, const BlockLayout& layout, std::size_t elements_per_band_hint) {
  const int a = checked_axis(f, layout);
  const auto& s = layout.shape;
  BandGrid g;
  g.total = product(s, 0, s.size());
  if (g.total == 0) return g;
  if (f.tile() != 0) {
    const std::size_t T = static_cast<std::size_t>(f.tile());
    const std::size_t R = s[s.size() - 2];
    g.width = s.back();
    g.seg = T;
    g.shared = true;
    g.band_rows = T;
    g.group_rows = R;
  } else {
    const std::size_t L = s[static_cast<std::size_t>(a)];
    const std::size_t inner = product(s, static_cast<std::size_t>(a) + 1, s.size());
    const std::size_t N = static_cast<std::size_t>(f.block_size());
    if (inner == 1) {
      g.width = L;
      g.seg = N;
      g.shared = false;
      g.group_rows = g.total / L;
      const std::size_t want = elements_per_band_hint / L;
      g.band_rows = want < 1 ? 1 : want;
    } else {
      g.width = inner;
      g.seg = 1;
      g.shared = true;
      g.band_rows = N;
      g.group_rows = L;
    }
  }
  g.per_row = (g.width + g.seg - 1) / g.seg;
  g.bands = (g.rows_total() / g.group_rows) * g.bands_per_group();
  return g;
}

}  // namespace mpsim::detail
