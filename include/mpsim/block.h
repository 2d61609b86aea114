// Block formats: block floating point (HBFP), OCP microscaling (MX) and NVFP4. A block of
// values shares one scale; each element is a small number relative to it. The descriptor is
// parsed from a short string ("hbfp6/64", "mxfp4:rule=ceil", "nvfp4@sr"), printed back
// canonically, and quantizes tensors block by block. docs/formats.md §11 is the full spec.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mpsim/format.h"
#include "mpsim/round.h"

namespace mpsim {

enum class BlockFamily : std::uint8_t { hbfp, mx, nvfp4 };

// How a block's scale exponent X follows from its largest magnitude amax.
//   floor: X = floor(log2 amax) - emax_elem (OCP MX; may clip the block maximum). For HBFP,
//          whose elements 0.m have emax_elem = -1, this is the shared exponent
//          e = floor(log2 amax) + 1 that the HBFP papers call `max`: the two names are one rule.
//   ceil:  the smallest X with amax <= max_elem * 2^X (never clips before rounding).
enum class ScaleRule : std::uint8_t { floor, ceil };

class BlockFormat {
 public:
  // Parses "hbfpK/N", the six mx names and "nvfp4", with :exp=W, :rule=max|floor|ceil, :tile and
  // @rounding (case-insensitive). Throws FormatError naming the problem.
  static BlockFormat parse(std::string_view text);
  // Whether a string is meant as a block format (it contains '/' or starts with hbfp, mx or
  // nvfp4), so that callers can dispatch between Format::parse and BlockFormat::parse.
  static bool is_block_format(std::string_view text);

  // The canonical lowercase string; parse(to_string()) == *this.
  std::string to_string() const;

  BlockFamily family() const { return family_; }
  // "hbfp", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8", "nvfp4".
  const std::string& family_name() const { return name_; }
  int element_bits() const { return element_bits_; }
  int block_size() const { return block_size_; }  // elements per block (T*T for tiles)
  int tile() const { return tile_; }              // T of a T x T tile, 0 for 1-D blocks
  int scale_bits() const { return scale_bits_; }  // width of the shared exponent / scale code
  ScaleRule rule() const { return rule_; }
  const Rounding& rounding() const { return rounding_; }
  BlockFormat with_rounding(Rounding r) const;

  // The element format at scale exponent 0, with the block's rounding: the values an element
  // takes relative to its block scale 2^X (hbfpK: e1m(K-2):sp=none:bias=2:sat, the grid
  // k * 2^-(K-1), k < 2^(K-1), with a sign; mxfp8_e4m3: e4m3fn:sat; mxint8: q2.6:sat;
  // nvfp4: e2m1fn:sat, relative to the product of its two scales).
  const Format& element_format() const { return element_; }
  // The element grid scaled by 2^X, exactly (the reference rounds into this format directly).
  // hbfp/mx only.
  Format element_format_at(int X) const;
  // Largest exponent of the element format (floor(log2 max_elem)) and its largest value.
  int element_emax() const { return element_emax_; }
  double element_max() const { return element_max_; }
  // Range of the scale exponent X (hbfp/mx): a W-bit code with bias 2^(W-1) - 1, the all-ones
  // code meaning NaN (E8M0 for W = 8), so X in [-(2^(W-1) - 1), 2^(W-1) - 1].
  int scale_min() const;
  int scale_max() const;

  // Storage per element, the amortized scale included: element bits + scale bits / block size
  // (nvfp4: 4 + 8/16; its one fp32 tensor scale is not counted per element).
  double bits_per_element() const;

  // Whether results are exactly representable in the carrier; require_fits throws FormatError
  // naming the problem (an HBFP element wider than fp32's 24-bit significand).
  bool fits(Carrier c) const;
  void require_fits(Carrier c) const;

  bool operator==(const BlockFormat&) const = default;

 private:
  BlockFamily family_ = BlockFamily::hbfp;
  std::string name_ = "hbfp";
  int element_bits_ = 8;
  int block_size_ = 16;
  int tile_ = 0;
  int scale_bits_ = 10;
  ScaleRule rule_ = ScaleRule::floor;
  Rounding rounding_;
  // Derived from the fields above once (finish()), so that hot paths do not re-derive them.
  Format element_;
  double element_max_ = 0;
  int element_emax_ = 0;
  void finish();
};

// ---- tensors -------------------------------------------------------------------------------

// Where the blocks of a tensor lie. A tensor of shape (d0, ..., dn-1), row-major:
//  - 1-D blocks run along `axis` (the reduction axis of the GEMM that consumes the tensor):
//    for every index of the other axes, elements 0..N-1, N..2N-1, ... of that axis form a block;
//    the last block of a run is padded with zeros if the axis length is not a multiple of N.
//  - Tiles (a format with :tile) are T x T squares over the last two axes, padded with zeros at
//    the right and bottom edges; leading axes index separate matrices.
struct BlockLayout {
  std::vector<std::size_t> shape;
  int axis = -1;  // negative counts from the end (-1: the last axis); ignored for tiles
};

struct BlockQuantizeOptions {
  RandomKey key;                 // stochastic rounding: element i draws (key, first_index + i)
  std::uint64_t first_index = 0; // i is the element's row-major position in the tensor
  int threads = 0;               // 0: OpenMP's default
};

// What happened, counted over the tensor (identical from the reference and the fast path).
struct BlockStats {
  std::uint64_t blocks = 0;
  std::uint64_t zero_blocks = 0;  // every element zero: scale code 0, the block stays zero
  std::uint64_t nan_blocks = 0;   // a NaN or infinity inside: scale NaN, every element NaN
  std::uint64_t clipped = 0;      // finite elements whose magnitude exceeded the largest
                                  // element value at the block's scale (saturated)
  std::uint64_t flushed = 0;      // nonzero finite elements that became zero
  std::uint64_t scale_clamped = 0;  // blocks whose scale exponent hit the end of its range
};

// One block's scale. hbfp/mx: the value is 2^exponent and code = exponent + bias. nvfp4: code
// is the e4m3fn code of the block scale and value = tensor scale * block scale.
struct BlockScale {
  int exponent = 0;
  std::uint32_t code = 0;
  double value = 1.0;
  bool nan = false;
};

// The scalar reference (the spec): plain loops, one block at a time, every element rounded by
// quantize_ref into element_format_at(X). `scales`, if given, receives one entry per block in
// the order blocks are numbered (row-major over the block grid).
BlockStats quantize_blocks_ref(const BlockFormat& f, const double* in, double* out, const BlockLayout& layout,
                               const BlockQuantizeOptions& o = {}, std::vector<BlockScale>* scales = nullptr);
BlockStats quantize_blocks_ref(const BlockFormat& f, const float* in, float* out, const BlockLayout& layout,
                               const BlockQuantizeOptions& o = {}, std::vector<BlockScale>* scales = nullptr);

// The fast path: SIMD element rounding (quantize_array's kernels) and OpenMP over blocks,
// bit-identical to the reference for every format, layout, mode, thread count and SIMD level,
// the `scales` included. In place (in == out) is allowed.
BlockStats quantize_blocks(const BlockFormat& f, const float* in, float* out, const BlockLayout& layout,
                           const BlockQuantizeOptions& o = {}, std::vector<BlockScale>* scales = nullptr);
BlockStats quantize_blocks(const BlockFormat& f, const double* in, double* out, const BlockLayout& layout,
                           const BlockQuantizeOptions& o = {}, std::vector<BlockScale>* scales = nullptr);

// Whether quantize_blocks rounds the elements of this format in SIMD (nvfp4, whose element
// grid is scaled by a 28-bit significand, rounds each element through the exact reference).
bool quantize_blocks_is_vectorized(const BlockFormat& f);

}  // namespace mpsim
