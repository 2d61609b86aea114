// The SIMD GEMM path (internal): which MAC specs it computes, and its kernels.
//
// It covers `order=seq prod=exact` (and `order=chunkN`, below) with
//   - a float accumulator rounding to nearest-even: each step forms the product exactly and the
//     sum acc + product correctly rounded in the lane type (fp32 or fp64), then rounds that into
//     the accumulator. Rounding twice gives the same result as rounding the exact sum once
//     because the lane has at least 2p + 2 bits for an accumulator of p bits and both addends
//     are p-bit numbers (the product has at most p bits: that is a condition), the classic
//     result on innocuous double rounding for addition (Figueroa 1995). Below the
//     accumulator's normal range, where its grid is coarser, every sum is exact in the lane (a
//     condition: sums are multiples of the smaller quantum). The lane never overflows or
//     underflows for these formats (checked from their ranges);
//   - a saturating fixed-point (or power-of-two integer) accumulator: the exact product is
//     converted into the accumulator with its rounding mode, then added and saturated, all
//     exact in the lane (the accumulator has at most the lane's significand bits).
//   - a float accumulator rounding stochastically (sr), in fp64 lanes: each step forms the sum
//     acc + product in the lane and its exact rounding error (TwoSum); where the error is zero
//     (the sum is exact: nearly always) the lane splits the sum at the accumulator's grid into
//     its lower neighbour and the exact fraction above it, and compares that fraction with the
//     step's random word (counter-based Philox, keyed per output and step as docs/mac.md
//     section 5 says), exactly as the reference's sr does; lanes with a nonzero error, beyond
//     the largest value, non-finite, or whose decision needs more random words go to the exact
//     reference rounding (round_exact) for that step. srN takes the same path: the fraction's
//     top N bits are floor(2^32 f) >> (32 - N), added to the word's top N bits (no ties).
//   - a float accumulator with any deterministic rounding mode (rne rna rz ru rd ro), where the
//     conditions of the first kind do not hold or the mode is not rne: each step forms the sum
//     acc + product and its exact error (TwoSum) in the lane and rounds the sum to odd (one
//     bit operation), then rounds that into the accumulator. The lane keeps at least two bits
//     more than the accumulator, so the second rounding equals rounding the exact sum once, in
//     every deterministic mode (Boldo and Melquiond, "Emulation of FMA and correctly rounded
//     sums: proved algorithms using rounding to odd", IEEE TC 2008). The product need not fit
//     the accumulator's precision, only the lane's. The fixed-point accumulator takes every
//     deterministic mode too (its conversion of the exact product is one rounding).
// With `prod=<fmt>` (deterministic modes) the exact product (it must be exact in the lane) is
// rounded into the product format by the array quantizer's vector rounding, and the kinds above
// take the rounded product as their addend (its range and width in place of the product's).
// With `order=chunkN` the kinds above (kahan aside) run per chunk from zero, and each chunk sum (a value
// of the accumulator) is added into a float outer accumulator rounding to nearest-even, under
// the same conditions as a product added into a float accumulator: the lane holds the outer
// sum with at least 2p + 2 bits and the chunk sum has at most p bits (innocuous double
// rounding again); otherwise (a narrower outer, or any other deterministic mode of outer) the
// exact lane sum is rounded to odd and then into outer, as a product into a float accumulator.
// A stochastic float outer (sr, srN; fp64 lanes) takes each chunk sum by the sr step of the
// stochastic accumulator below, with the word of (output, chunk start, outer_add).
// A saturating fixed-point or integer outer (deterministic modes) takes each chunk sum converted
// into it by the array quantizer's rounding, adds it exactly and saturates the total.
// `order=kahan` runs with a float accumulator in any deterministic mode: each of the four
// operations of a step is an exact sum of two lane values rounded to odd and then into the
// accumulator (the lane keeps two more bits, and sums of up to twice the largest value plus
// a product never overflow it).
// `order=treeN` with a float accumulator in any deterministic mode: each adder of a group's
// tree is such a rounded exact sum, and the group values go into outer as chunk sums do (the
// conditions of chunkN, with a group of one product passing the product itself).
// `order=ftreeN` (also with a stochastic accumulator, the exact group sum then rounded as sr
// rounds a sum, with the group's random word; and treeN so, each adder an sr step) likewise, each group's products summed exactly in a pair of lanes (TwoSum
// into hi, its error into lo, a lane whose second error is nonzero going to the reference) and
// the exact sum rounded to odd, then once into acc.
// Inputs are packed rounded into their formats (CFG-2 ones keeping their subnormal codes:
// input_packing below).
// `acc=exact` (order=seq, prod=exact, fp64 lanes with exact products, no stochastic out=):
// each output's running sum, bias first, is kept as an unevaluated pair hi + lo (TwoSum into
// hi, its error into lo by a second TwoSum); while the second error is zero and the lane stays
// finite the pair is the exact sum, which is then rounded once (fp64 to nearest: hi + lo; out=:
// rounded to odd, then into out). A lane where either fails marks its output (lo becomes NaN),
// and gemm.cpp computes that output again by the reference.
// Everything else goes through the exact reference (gemm.cpp decides).
#pragma once

#include <cstddef>
#include <cstdint>

#include "mpsim/mac.h"
#include "src/format/quantize_plan.h"

namespace mpsim::detail {

struct GemmFastPlan {
  bool ok = false;       // the SIMD path computes this spec exactly
  bool f32 = false;      // in fp32 lanes (else fp64)
  bool fixed = false;    // fixed-point accumulator (else float)
  bool sr = false;       // float accumulator rounding stochastically (sr, srN), in fp64 lanes: gemm_tile_sr
  bool to_odd = false;   // float accumulator: each sum formed rounded to odd, then rounded (any deterministic mode)
  bool kahan = false;    // order=kahan: float accumulator, to_odd, gemm_tile_kahan
  bool tree = false;     // order=treeN or ftreeN (chunk = N): float accumulator, to_odd, gemm_tile_tree per group
  bool ftree = false;    // order=ftreeN: gemm_tile_tree sums each group exactly and rounds it once
  bool exact = false;    // acc=exact (seq): each output's exact sum as a pair hi + lo, gemm_tile_exact
  QuantPlan acc;         // the accumulator's rounding plan in the lane type
  // prod=<fmt> (deterministic modes): each exact product is rounded into it first (a vector
  // pass per row of a tile), and the rounded products are what the accumulator takes.
  bool prod_round = false;
  QuantPlan prod;                     // the product format's plan in the lane type
  int prod_kind = 0;                  // RoundVector's kind: 0 float, 1 fixed, 2 saturating float
  const Format* prod_format = nullptr;  // the spec's (for lanes the vector rounding leaves to quantize)
  std::size_t chunk = 0; // order=chunkN: N (chunks of N steps summed in acc, then added into outer)
  QuantPlan outer;       // chunk: the outer accumulator's rounding plan in the lane type
  bool outer_odd = false; // chunk/tree: the fold rounds each exact sum to odd, then into outer (gemm_fold)
  bool outer_fixed = false; // chunk/tree: a fixed-point outer; the fold converts, adds and saturates (gemm.cpp)
  bool outer_sr = false;  // chunk/tree: a stochastic float outer (fp64 lanes), gemm_fold_sr
  double fixed_lo = 0, fixed_hi = 0;  // fixed: the accumulator's range (saturation)
  double prod_clamp = 0;              // fixed: products beyond +-this are clamped first (they saturate anyway)
  const char* why = "";  // when !ok: the first condition that failed (for tests and docs)
};

GemmFastPlan plan_gemm_fast(const MacSpec& spec);

// How the GEMM packs a MAC input of format f: the format and plan its packing rounds with.
// Every format but one kind packs as itself. A flushout (CFG-2) format reads its subnormal
// codes as their values (its multiplier reads subnormal inputs; the reference keeps such inputs,
// dot_ref.cpp), yet rounding into it flushes them: it packs as its gradual-underflow twin with
// plan.input_flush set, which flushes a lane whose rounded value is not the input itself and
// is subnormal — the format's own rounding (round, then flush a subnormal result) for every
// input that is not one of its codes, and the code itself for every one that is.
struct InputPacking {
  Format format;
  QuantPlan plan;
};
InputPacking input_packing(const Format& f, Carrier carrier);

// out[i * dstride] = quantize(src[i], f) converted to the lane type, for i < len: the packing
// of a MAC input (deterministic rounding modes; f's value then fits the lane type). p is f's
// plan for the fp32 carrier when source and destination are both fp32, else for fp64 (a value
// of a format that fits fp32 is the same in both carriers). Bit-identical to quantize(),
// including the CFG-5 gap below the smallest value, which is decided here in the vector lanes.
void gemm_pack(const QuantPlan& p, const Format& f, const float* src, std::size_t len, float* dst, std::size_t dstride);
void gemm_pack(const QuantPlan& p, const Format& f, const float* src, std::size_t len, double* dst, std::size_t dstride);
void gemm_pack(const QuantPlan& p, const Format& f, const double* src, std::size_t len, float* dst, std::size_t dstride);
void gemm_pack(const QuantPlan& p, const Format& f, const double* src, std::size_t len, double* dst, std::size_t dstride);

// dst[p * dstride + c] = quantize(src[c * ld + p], f) converted to the lane type, for c < ncols,
// p < len: contiguous columns of the source packed as rows (a transpose), with gemm_pack's plan.
void gemm_pack_cols(const QuantPlan& p, const Format& f, const float* src, std::size_t ld, std::size_t ncols, std::size_t len,
                    float* dst, std::size_t dstride);
void gemm_pack_cols(const QuantPlan& p, const Format& f, const float* src, std::size_t ld, std::size_t ncols, std::size_t len,
                    double* dst, std::size_t dstride);
void gemm_pack_cols(const QuantPlan& p, const Format& f, const double* src, std::size_t ld, std::size_t ncols, std::size_t len,
                    float* dst, std::size_t dstride);
void gemm_pack_cols(const QuantPlan& p, const Format& f, const double* src, std::size_t ld, std::size_t ncols, std::size_t len,
                    double* dst, std::size_t dstride);

// The register-block kernel: for r < rows, c < vecs * lanes,
//   C[r * cs + c] = C[r * cs + c] (+) X[r * xs + p] * Y[p * vecs * lanes + c],  p = 0 .. kc-1,
// every step one MAC of the plan (the product exact, the sum rounded into the accumulator), in
// order p. C holds the accumulators (the rounded bias, or the result of an earlier block of p),
// Y is a panel of vecs * lanes columns (zero-padded past the matrix). vecs is 1, 2, 4 or 8 and
// rows at most 8 / vecs.
void gemm_tile(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const float* X,
               std::size_t xs, const float* Y, std::size_t kc, float* C, std::size_t cs);
void gemm_tile(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const double* X,
               std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs);
// Where the random bits of a tile's stochastic roundings come from: output (r, c) of the tile
// is output out0 + r * out_rs + c * out_cs of the GEMM, and its step p is step p0 + p.
struct GemmSrTile {
  RandomKey key;
  std::uint64_t out0 = 0, out_rs = 0, out_cs = 0, p0 = 0;
};

// gemm_tile for plans with sr (fp64 lanes): each step rounds the exact sum acc + x y into the
// accumulator stochastically with the random word of (output, step, MacSite::add)
// (docs/mac.md section 5), as the reference does.
void gemm_tile_sr(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const double* X,
                  std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs, const GemmSrTile& t);

// order=treeN or ftreeN with a stochastic accumulator (plan.sr and plan.tree): C[r][c] = the
// group value of the kc products X[r][p] * Y[p][c] of one whole group starting at step t.p0 --
// ftreeN: their exact sum rounded once into acc with the random word of (output, t.p0,
// MacSite::group); treeN: the adder tree, each adder with the word of (output, first product of
// its right operand, MacSite::tree). C's contents are ignored.
void gemm_tile_group_sr(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs,
                        const double* X, std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs,
                        const GemmSrTile& t);

// chunkN / treeN with plan.outer_odd: t[i] = outer(t[i] + c[i]) rounded once in outer's mode
// (the exact lane sum rounded to odd, then into outer), c[i] = +0, for i < len (len a multiple
// of the lane count).
void gemm_fold(const GemmFastPlan& plan, const Format& outer, float* c, float* t, std::size_t len);
void gemm_fold(const GemmFastPlan& plan, const Format& outer, double* c, double* t, std::size_t len);

// chunkN / treeN / ftreeN with plan.outer_sr: t[i] = outer(t[i] + c[i]) rounded stochastically
// with the random word of (output tile.out0 + i * tile.out_cs, chunk start tile.p0,
// MacSite::outer_add), c[i] = +0, for i < len (a multiple of the lane count, at most 64).
void gemm_fold_sr(const GemmFastPlan& plan, const Format& outer, double* c, double* t, std::size_t len,
                  const GemmSrTile& tile);

// acc=exact (plan.exact), fp64 lanes: C (hi) and Cc (lo) carry each output's exact sum as a
// pair from block to block of p (start: hi the bias, lo -0); a lane that cannot keep the pair
// exact gets lo = NaN, for good.
void gemm_tile_exact(std::size_t rows, std::size_t vecs, const double* X, std::size_t xs, const double* Y,
                     std::size_t kc, double* C, double* Cc, std::size_t cs);

// order=kahan (plan.kahan): gemm_tile's contract, with Kahan's compensated summation (every
// operation rounded into the accumulator, docs/mac.md section 3); C holds the sums and Cc the
// compensations (row stride cs both), carried from one block of p to the next.
void gemm_tile_kahan(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const float* X,
                     std::size_t xs, const float* Y, std::size_t kc, float* C, float* Cc, std::size_t cs);
void gemm_tile_kahan(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const double* X,
                     std::size_t xs, const double* Y, std::size_t kc, double* C, double* Cc, std::size_t cs);

// order=treeN (plan.tree): C[r][c] = the pairwise adder tree (every adder rounding into acc,
// docs/mac.md section 3) over the kc products X[r][p] * Y[p][c] of one whole group; C's
// previous contents are ignored. With plan.ftree: their exact sum rounded once into acc.
void gemm_tile_tree(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const float* X,
                    std::size_t xs, const float* Y, std::size_t kc, float* C, std::size_t cs);
void gemm_tile_tree(const GemmFastPlan& plan, const Format& acc, std::size_t rows, std::size_t vecs, const double* X,
                    std::size_t xs, const double* Y, std::size_t kc, double* C, std::size_t cs);

// Lanes of a vector of the dispatched target.
std::size_t gemm_lanes_f32();
std::size_t gemm_lanes_f64();

}  // namespace mpsim::detail
