// The multiply-accumulate model: a MAC spec parsed from a short string, and the exact scalar
// reference dot product and GEMM that define what every faster kernel must compute, bit for
// bit. docs/mac.md is the full description of every option, with worked examples.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mpsim/block.h"
#include "mpsim/format.h"
#include "mpsim/quantize.h"
#include "mpsim/round.h"

namespace mpsim {

// A malformed or unsupported MAC spec. The message names the offending item. Derived from
// FormatError so that callers (the CLI: exit status 2) treat both alike.
struct MacSpecError : FormatError {
  using FormatError::FormatError;
};

// How the products of one dot product are summed (the `order=` item).
enum class MacOrderKind : std::uint8_t {
  seq,    // one product after the other into the accumulator
  chunk,  // chunks of n products summed in acc from zero, chunk sums added into outer
  tree,   // groups of n products summed by a pairwise adder tree rounding to acc; group sums into outer
  ftree,  // groups of n products summed exactly and rounded once to acc; group sums into outer
  kahan,  // sequential with a compensation term kept in the accumulator format
};

struct MacOrder {
  MacOrderKind kind = MacOrderKind::seq;
  std::uint32_t n = 0;  // group size for chunk/tree/ftree (>= 1), 0 otherwise

  bool operator==(const MacOrder&) const = default;
  bool grouped() const { return kind == MacOrderKind::chunk || kind == MacOrderKind::tree || kind == MacOrderKind::ftree; }
};

// "seq", "chunk64", "tree8", "ftree16", "kahan" (case-insensitive); throws MacSpecError.
MacOrder parse_mac_order(std::string_view text);
std::string to_string(const MacOrder& o);

// Block-format multiplier inputs (`in=hbfp8/64`, `a=mxfp8_e4m3 b=mxfp8_e5m2`, `in=nvfp4`): the
// bit-accurate block dot product of docs/mac.md section 7. Within a block the element products
// are integers on the product grid, summed exactly in a signed integer block accumulator of
// `acc_bits` bits (`bacc=`); each block's sum, scaled by the two block scales, is then added
// into the outer accumulator (MacSpec::outer_format(), `outer=`, default fp32).
struct BlockMac {
  BlockFormat a = BlockFormat::parse("hbfp8/64");
  BlockFormat b = BlockFormat::parse("hbfp8/64");
  int acc_bits = 0;   // width of the block accumulator, sign included; 0: just wide enough (`bacc=auto`)
  bool wrap = false;  // two's-complement wrap-around instead of saturation (`bacc=W:wrap`)
  // Widest block accumulator (the reference holds it, and a product, in 128-bit integers).
  static constexpr int kMaxBits = 126;

  // Elements of one block along the reduction: the block size, or T for T x T tiles.
  std::size_t extent() const;
  // The narrowest accumulator that no block sum can overflow (what `bacc=auto` means).
  int bits_needed() const;
  // The width in effect: acc_bits, or bits_needed() for auto.
  int bits() const { return acc_bits ? acc_bits : bits_needed(); }

  bool operator==(const BlockMac&) const = default;
};

// One MAC unit: `in= a= b= prod= fused acc= order= outer= out=` (DESIGN.md, docs/mac.md).
// A format that is absent (std::nullopt) means "exact" for prod and acc, "same as acc" for
// outer and "no conversion" for out.
struct MacSpec {
  Format a = Format::parse("fp32");       // multiplier input formats
  Format b = Format::parse("fp32");
  std::optional<Format> prod;             // product rounding; nullopt = exact product
  bool fused = false;                     // a*b + c rounded once (needs the exact product)
  std::optional<Format> acc = Format::parse("fp32");  // accumulator; nullopt = exact
  MacOrder order;
  std::optional<Format> outer;            // group-sum accumulator of chunk/tree/ftree; nullopt = acc
  std::optional<Format> out;              // final conversion; nullopt = none
  // The named fast mode "qfp32" (QPyTorch's semantics, not a MAC model): the operands are
  // rounded into a= and b=, then multiplied and accumulated in FP32 by OpenBLAS sgemm in its own
  // order, and the results rounded into out= if given. Only in=/a=/b=/out= go with it; it has no
  // bit-accurate reference (gemm_ref and dot_ref refuse it), and like plain FP32 its results
  // depend on OpenBLAS's kernels and thread count. Written "qfp32 in=e5m2 [out=bf16]". With
  // block formats ("qfp32 in=mxfp8_e4m3") the operands are quantized block by block along the
  // reduction first (the usual MX emulation: quantize, then an FP32 GEMM).
  bool qfp32 = false;
  // Block-format inputs (BlockMac). Then a= and b= hold the element formats (at block scale 1,
  // for information only), prod=, fused, acc= and order= do not apply, and `outer=` (default
  // fp32) is where block sums are combined. Written "in=F bacc=W[:wrap]|auto outer=G [out=H]",
  // or with qfp32 "qfp32 in=F [out=H]".
  std::optional<BlockMac> block;

  // Parses the grammar of docs/mac.md; the result is validated. Throws MacSpecError.
  static MacSpec parse(std::string_view text);
  // Canonical string: "in=F" (or "a=F b=G"), "prod=...", ["fused"], "acc=...", "order=...",
  // ["outer=F" when it differs from acc], ["out=F"], separated by single spaces; for the fast
  // mode "qfp32 in=F" (or "qfp32 a=F b=G") [" out=F"].
  // parse(to_string(s)) == s for every valid spec.
  std::string to_string() const;
  // Throws MacSpecError if the combination is not allowed (docs/mac.md, "Combinations").
  void validate() const;

  // The format group sums (or block sums) are accumulated in (nullopt = exact).
  const std::optional<Format>& outer_format() const { return outer ? outer : acc; }

  // Equality of meaning: an outer equal to acc is the same as no outer.
  bool operator==(const MacSpec& o) const;

 private:
  void validate_block() const;
};

// Where the stochastic roundings of one GEMM draw their random bits.
struct MacRandom {
  std::uint64_t seed = 0;
  std::uint32_t gemm_id = 0;  // distinguishes the GEMMs of a training step (FWD, BWD, GRAD, layers)
};

// The rounding sites of a dot product; with the output index and the step k they select the
// random word of every stochastic rounding (docs/mac.md, "Stochastic rounding").
enum class MacSite : std::uint32_t {
  bias = 0,           // bias rounded into the accumulator that receives it (step 0)
  product = 1,        // product k rounded to prod=
  convert = 2,        // product k converted into a fixed/integer accumulator (split MAC)
  add = 3,            // the rounding of the accumulator after adding product k (kahan: t = sum + y)
  kahan_y = 4,        // kahan: y = p_k - c
  kahan_t_minus = 5,  // kahan: t - sum
  kahan_c = 6,        // kahan: c = (t - sum) - y
  tree = 7,           // tree adder whose right operand starts at product k
  group = 8,          // ftree: group starting at product k rounded once to acc
  outer_convert = 9,  // group (or block) sum starting at k converted into a fixed/integer outer
  outer_add = 10,     // group (or block) sum starting at k added into outer
  out = 11,           // final conversion to out= (step 0)
};

// The key and element index of the rounding at (output index, step, site):
//   key = {seed, stream = gemm_id},  index = out_index * 2^32 + step * 16 + site.
// Requires out_index < 2^32 and step < 2^28 (checked by the GEMM before any work).
std::uint64_t mac_random_index(std::uint64_t out_index, std::uint64_t step, MacSite site);
RandomKey mac_random_key(const MacRandom& r);

// Result of one reference dot product.
struct MacResult {
  double value = 0;  // in the out= format, else in acc (acc=exact: the exact sum rounded to fp64, rne)
  QuantFlags flags;  // OR of the flags of every rounding the MAC performed (inputs excluded)
};

// c = bias + sum_k a[k] * b[k] under the MAC spec, computed exactly as docs/mac.md specifies.
// Inputs are quantized to a= / b= first with their (deterministic) rounding modes, so inputs
// that already are values of those formats pass unchanged. x[k] is read at x[k * inc].
// `out_index` selects the random bits (the GEMM passes i * n + j). Throws MacSpecError for an
// invalid spec.
MacResult dot_ref(const MacSpec& spec, std::size_t k, const double* a, std::ptrdiff_t inc_a, const double* b,
                  std::ptrdiff_t inc_b, double bias = 0.0, const MacRandom& rnd = {}, std::uint64_t out_index = 0);

// The three GEMMs of training, all row-major: C (m x n) = bias + op(A) op(B) with
//   nn: A is m x k (lda >= k), B is k x n (ldb >= n)           -- FWD  y = x w
//   nt: A is m x k (lda >= k), B is n x k (ldb >= k), op(B) = B^T   -- BWD  dx = dy w^T
//   tn: A is k x m (lda >= m), op(A) = A^T, B is k x n (ldb >= n)   -- GRAD dw = x^T dy
// Output (i, j) reduces over p = 0 .. k-1 in that order, with out_index i * n + j.
enum class GemmOp : std::uint8_t { nn, nt, tn };

// Bias element (i, j) is data[i * row_stride + j * col_stride]; data == nullptr means +0.
// (row_stride 0: one bias per column, col_stride 0: one per row.)
struct BiasView {
  const double* data = nullptr;
  std::ptrdiff_t row_stride = 0;
  std::ptrdiff_t col_stride = 0;

  double at(std::size_t i, std::size_t j) const {
    return data ? data[static_cast<std::ptrdiff_t>(i) * row_stride + static_cast<std::ptrdiff_t>(j) * col_stride] : 0.0;
  }
};

// Throws MacSpecError for an invalid spec and std::invalid_argument for bad shapes
// (leading dimensions too small, m * n > 2^32 or k >= 2^28).
void gemm_ref(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const double* A,
              std::size_t lda, const double* B, std::size_t ldb, double* C, std::size_t ldc, BiasView bias = {},
              const MacRandom& rnd = {});

}  // namespace mpsim
