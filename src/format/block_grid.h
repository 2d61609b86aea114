// Where the blocks of a tensor lie (internal): the layout of block.h normalized to a grid of
// "bands". A band is a contiguous run of `rows` memory rows of `width` elements; every block
// lies inside one band, and element (row j, column c) of a band belongs to block
//   base + (shared ? 0 : j * per_row) + c / seg,   per_row = ceil(width / seg).
// That covers the three layouts:
//   - 1-D blocks along the last axis: rows of the tensor, seg = N, blocks not shared by rows
//     (several tensor rows may form one band);
//   - 1-D blocks along an inner axis of stride `inner`: the N rows (o, l) of one block-row,
//     width = inner, seg = 1, every row shares the same `inner` blocks;
//   - T x T tiles: the T rows of one tile-row, width = C, seg = T, shared.
// Block numbers are row-major over the block grid, which is the order of the bands.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mpsim/block.h"

namespace mpsim::detail {

struct BandGrid {
  std::size_t total = 0;     // elements in the tensor
  std::size_t width = 0;     // elements per memory row
  std::size_t seg = 1;       // consecutive columns of one block within a row
  bool shared = false;       // all rows of a band share its blocks
  std::size_t per_row = 0;   // blocks per row: ceil(width / seg)
  // Band b covers rows [row_begin(b), row_begin(b) + rows(b)) of the tensor viewed as
  // (total / width) x width.
  std::size_t band_rows = 1;   // rows per band (the last band of a group may have fewer)
  std::size_t group_rows = 0;  // rows after which the band pattern restarts (a matrix / axis run)
  std::size_t bands = 0;

  std::size_t rows_total() const { return width == 0 ? 0 : total / width; }
  std::size_t bands_per_group() const { return (group_rows + band_rows - 1) / band_rows; }
  // First row and row count of band b.
  std::size_t row_begin(std::size_t b) const {
    return (b / bands_per_group()) * group_rows + (b % bands_per_group()) * band_rows;
  }
  std::size_t rows(std::size_t b) const {
    const std::size_t in_group = (b % bands_per_group()) * band_rows;
    return group_rows - in_group < band_rows ? group_rows - in_group : band_rows;
  }
  // Blocks in band b and the number of its first block.
  std::size_t blocks_in(std::size_t b) const { return shared ? per_row : rows(b) * per_row; }
  std::size_t first_block(std::size_t b) const {
    if (shared) return b * per_row;
    return row_begin(b) * per_row;
  }
  std::size_t blocks() const { return shared ? bands * per_row : rows_total() * per_row; }
  // Block of element (j, c) of a band, relative to the band's first block.
  std::size_t block_of(std::size_t j, std::size_t c) const { return (shared ? 0 : j * per_row) + c / seg; }
};

// The layout's axis, normalized to [0, ndim) (the last axis for tiles). Throws
// std::invalid_argument for an empty shape, an axis out of range, or tiles on a 1-D tensor.
int checked_axis(const BlockFormat& f, const BlockLayout& layout);

// Validates the layout against the format (axis in range, tiles need two dimensions) and
// builds the grid; `rows_per_band_hint` groups unshared rows into bands of about that many
// elements. Throws std::invalid_argument naming the problem.
BandGrid make_band_grid(const BlockFormat& f, const BlockLayout& layout, std::size_t elements_per_band_hint = 1);

}  // namespace mpsim::detail
