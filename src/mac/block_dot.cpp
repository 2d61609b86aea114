// The integer view of block formats and the block accumulator (block_dot.h, docs/mac.md §7).
#include "src/mac/block_dot.h"

#include <bit>
#include <cmath>
#include <stdexcept>
#include <string>

namespace mpsim {

namespace detail {

std::size_t block_extent(const BlockFormat& f) {
  return static_cast<std::size_t>(f.tile() != 0 ? f.tile() : f.block_size());
}

BlockElementGrid block_element_grid(const BlockFormat& f) {
  const Format& e = f.element_format();
  BlockElementGrid g;
  // Code 1 is the smallest positive value of every element format (a subnormal, or one step
  // of a fixed-point grid); every other value is an integer multiple of it.
  g.quantum = decode(e, 1).value;
  // The largest magnitude: the largest value, or for a two's-complement grid (mxint8) its
  // most negative one.
  double max_abs = f.element_max();
  if (e.kind() == FormatKind::fixed) {
    max_abs = std::max(max_abs, -static_cast<double>(e.fixed_spec().k_min()) * g.quantum);
  } else if (e.kind() == FormatKind::integer) {
    max_abs = std::max(max_abs, -static_cast<double>(e.int_spec().z_min()) * g.quantum);
  }
  g.max_int = static_cast<std::uint64_t>(max_abs / g.quantum);
  return g;
}

std::int64_t block_element_int(double value, double unit, const BlockElementGrid& g) {
  if (value == 0) return 0;
  const double n = value / unit;  // exact when value is n * unit: the quotient is representable
  if (!(std::fabs(n) <= static_cast<double>(g.max_int)) || n != std::trunc(n) || n * unit != value) {
    throw std::logic_error("block dot product: " + std::to_string(value) + " is not an element of its block (unit " +
                           std::to_string(unit) + ")");
  }
  return static_cast<std::int64_t>(n);
}

void BlockAccumulator::add(i128 product) {
  // |value| < 2^125 and |product| <= 2^64: the sum fits.
  const i128 sum = value + product;
  const i128 hi = (i128{1} << (bits - 1)) - 1, lo = -hi - 1;
  if (sum >= lo && sum <= hi) {
    value = sum;
  } else if (wrap) {
    const u128 mask = (u128{1} << bits) - 1;
    const u128 u = static_cast<u128>(sum) & mask;
    value = u > static_cast<u128>(hi) ? static_cast<i128>(u) - (i128{1} << bits) : static_cast<i128>(u);
    wrapped = true;
  } else {
    value = sum > hi ? hi : lo;
    saturated = true;
  }
}

namespace {

// Scales per (row, block along k) from the quantizer's per-block scales (row-major over the
// block grid): 1-D blocks along k are already in that order; a tile's scale serves T rows.
std::vector<BlockScale> per_row(const BlockFormat& f, std::size_t rows, std::size_t k, std::vector<BlockScale> blocks) {
  if (f.tile() == 0) return blocks;
  const std::size_t T = block_extent(f), nkb = (k + T - 1) / T;
  std::vector<BlockScale> out(rows * nkb);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t t = 0; t < nkb; ++t) out[r * nkb + t] = blocks[(r / T) * nkb + t];
  return out;
}

BlockLayout rows_layout(std::size_t rows, std::size_t k) { return BlockLayout{{rows, k}, -1}; }

}  // namespace

std::vector<BlockScale> quantize_block_rows_ref(const BlockFormat& f, std::size_t rows, std::size_t k, double* values) {
  std::vector<BlockScale> blocks;
  if (rows * k == 0) return blocks;
  quantize_blocks_ref(f, values, values, rows_layout(rows, k), {}, &blocks);
  return per_row(f, rows, k, std::move(blocks));
}

template <typename T>
std::vector<BlockScale> quantize_block_rows(const BlockFormat& f, std::size_t rows, std::size_t k, T* values, int threads) {
  std::vector<BlockScale> blocks;
  if (rows * k == 0) return blocks;
  BlockQuantizeOptions o;
  o.threads = threads;
  quantize_blocks(f, values, values, rows_layout(rows, k), o, &blocks);
  return per_row(f, rows, k, std::move(blocks));
}

template std::vector<BlockScale> quantize_block_rows<float>(const BlockFormat&, std::size_t, std::size_t, float*, int);
template std::vector<BlockScale> quantize_block_rows<double>(const BlockFormat&, std::size_t, std::size_t, double*, int);

}  // namespace detail

std::size_t BlockMac::extent() const { return detail::block_extent(a); }

int BlockMac::bits_needed() const {
  // The largest |block sum|: extent products of the largest element integers. Below 2^(bits-1).
  const detail::u128 most = static_cast<detail::u128>(detail::block_element_grid(a).max_int) *
                            detail::block_element_grid(b).max_int * extent();
  int len = 0;
  for (detail::u128 v = most; v != 0; v >>= 1) ++len;
  return len + 1;
}

}  // namespace mpsim
