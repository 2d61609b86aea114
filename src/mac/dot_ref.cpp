// The exact reference dot product: the specification of every MAC of docs/mac.md.
//
// Every intermediate value is an ExactValue (products and sums of any width, never rounded by
// accident); a rounding happens only where the MAC model puts one, through round_exact, which
// rounds once and exactly. So each step is "the exact result of the operation, rounded once
// into the format the hardware holds it in" and there is no double rounding anywhere.
#include <algorithm>
#include <vector>

#include "exact_value.h"
#include "mpsim/mac.h"
#include "round_exact.h"
#include "src/mac/block_dot.h"
#include "src/mac/gemm_qfp32.h"

namespace mpsim {

using detail::BigUint;
using detail::ExactValue;

std::uint64_t mac_random_index(std::uint64_t out_index, std::uint64_t step, MacSite site) {
  return (out_index << 32) + step * 16 + static_cast<std::uint64_t>(site);
}

RandomKey mac_random_key(const MacRandom& r) { return RandomKey{r.seed, r.gemm_id}; }

namespace {

using Fmt = std::optional<Format>;  // nullopt: exact (no rounding)

class Dot {
 public:
  Dot(const MacSpec& spec, const MacRandom& rnd, std::uint64_t out_index)
      : spec_(spec), key_(mac_random_key(rnd)), out_index_(out_index), read_a_(code_reader(spec.a)),
        read_b_(code_reader(spec.b)) {}

  // The block dot product (docs/mac.md section 7) of two quantized vectors: each block's
  // integer products summed in the block accumulator, the block sum scaled exactly by the two
  // block units, and the block sums added one after the other into outer from the bias, like
  // the group sums of chunkN (the random bits of block t are those of its first step).
  MacResult run_blocks(std::size_t k, const detail::BlockVector& a, const detail::BlockVector& b, double bias) {
    const BlockMac& bm = *spec_.block;
    const detail::BlockElementGrid ga = detail::block_element_grid(bm.a), gb = detail::block_element_grid(bm.b);
    const std::size_t L = bm.extent();
    const Fmt& outer = spec_.outer_format();
    ExactValue total = round(ExactValue::from_double(bias), outer, 0, MacSite::bias);
    for (std::size_t s = 0, t = 0; s < k; s += L, ++t) {
      const std::size_t e = std::min(k, s + L);
      const double ua = detail::block_unit(a.scales[t], ga), ub = detail::block_unit(b.scales[t], gb);
      ExactValue sum;
      if (a.scales[t].nan || b.scales[t].nan) {
        sum = ExactValue::nan();
        flags_.nan_input = true;
      } else {
        detail::BlockAccumulator acc{bm.bits(), bm.wrap};
        for (std::size_t p = s; p < e; ++p) {
          const std::int64_t na = detail::block_element_int(a.values[static_cast<std::ptrdiff_t>(p) * a.inc], ua, ga);
          const std::int64_t nb = detail::block_element_int(b.values[static_cast<std::ptrdiff_t>(p) * b.inc], ub, gb);
          acc.add(static_cast<detail::i128>(na) * nb);
        }
        flags_.saturated |= acc.saturated;
        flags_.overflow |= acc.wrapped;
        const bool neg = acc.value < 0;
        const auto mag = static_cast<detail::u128>(neg ? -acc.value : acc.value);
        sum = ExactValue::mul(ExactValue::mul(ExactValue::make(neg, BigUint::from_u128(mag), 0), ExactValue::from_double(ua)),
                              ExactValue::from_double(ub));
        if (sum.is_zero()) sum = ExactValue::zero();  // an integer sum of zero is +0
      }
      total = accumulate(total, sum, outer, false, s, MacSite::outer_convert, MacSite::outer_add);
    }
    return result(total);
  }

  MacResult run(std::size_t k, const double* a, std::ptrdiff_t inc_a, const double* b, std::ptrdiff_t inc_b,
                double bias) {
    products_.clear();
    products_.reserve(k);
    for (std::size_t i = 0; i < k; ++i) {
      const auto off_a = static_cast<std::ptrdiff_t>(i) * inc_a, off_b = static_cast<std::ptrdiff_t>(i) * inc_b;
      products_.push_back(product(i, a[off_a], b[off_b]));
    }
    const ExactValue b0 = ExactValue::from_double(bias);
    ExactValue r;
    switch (spec_.order.kind) {
      case MacOrderKind::seq: r = seq(b0); break;
      case MacOrderKind::kahan: r = kahan(b0); break;
      case MacOrderKind::chunk:
      case MacOrderKind::tree:
      case MacOrderKind::ftree: r = grouped(b0); break;
    }
    return result(r);
  }

 private:
  // The final content r, rounded into out= if given.
  MacResult result(ExactValue r) {
    if (spec_.out) r = round(r, spec_.out, 0, MacSite::out);
    MacResult res;
    res.flags = flags_;
    if (!r.to_double_exact(res.value)) {
      // Only acc=exact without out= gets here: the exact sum is reported rounded once to fp64.
      res.value = detail::round_exact(r, Format::parse("fp64")).value;
    }
    return res;
  }

  // x rounded once into f (nullopt: kept exact); the random bits are those of (step, site).
  ExactValue round(const ExactValue& x, const Fmt& f, std::uint64_t step, MacSite site) {
    if (!f) return x;
    const QuantResult q = detail::round_exact(x, *f, mac_random_index(out_index_, step, site), key_);
    flags_.inexact |= q.flags.inexact;
    flags_.overflow |= q.flags.overflow;
    flags_.saturated |= q.flags.saturated;
    flags_.underflow |= q.flags.underflow;
    flags_.nan_input |= q.flags.nan_input;
    flags_.nan_result |= q.flags.nan_result;
    return ExactValue::from_double(q.value);
  }

  // The exact sum; an exact zero result takes its sign as in IEEE 754 under f's mode.
  static ExactValue add(const ExactValue& x, const ExactValue& y, const Fmt& f) {
    return ExactValue::add(x, y, f && f->rounding().mode == RoundMode::rd);
  }

  // round_f(x - y): the subtractions of Kahan's algorithm.
  ExactValue sub_round(const ExactValue& x, const ExactValue& y, const Fmt& f, std::uint64_t step, MacSite site) {
    return round(add(x, y.negated(), f), f, step, site);
  }

  // Quantizing is idempotent on the values of every format but one kind: with sub=flushout
  // (CFG-2) subnormal codes are read as their values, yet rounding into the format flushes
  // them. A multiplier input that is such a code must reach the multiplier unchanged, so these
  // formats get a "reader": the same format with gradual underflow, whose values are exactly
  // the values of the codes.
  static std::optional<Format> code_reader(const Format& f) {
    if (f.kind() != FormatKind::floating || f.float_spec().sub != Subnormals::flushout) return std::nullopt;
    FloatSpec s = f.float_spec();
    s.sub = Subnormals::ieee;
    return Format::from_float(s, f.rounding());
  }
  static double quantize_input(double x, const Format& f, const std::optional<Format>& reader) {
    const double q = quantize(x, f);
    if (reader && q != x && quantize(x, *reader) == x) return x;
    return q;
  }

  // The multiplier: inputs quantized to a= / b= (deterministic modes, validated; values of the
  // formats pass unchanged), exact product, then prod= rounding if any.
  ExactValue product(std::size_t step, double x, double y) {
    const ExactValue qa = ExactValue::from_double(quantize_input(x, spec_.a, read_a_));
    const ExactValue qb = ExactValue::from_double(quantize_input(y, spec_.b, read_b_));
    return round(ExactValue::mul(qa, qb), spec_.prod, step, MacSite::product);
  }

  // acc <- acc + x held in f. A floating-point (or exact) accumulator adds and rounds once.
  // A fixed-point or integer accumulator is an integer adder: the addend is first converted
  // into the accumulator's format with its rounding mode, then added on the grid, where only
  // saturation or wrap-around can happen; with `fused` the exact acc + x is rounded once.
  ExactValue accumulate(const ExactValue& acc, const ExactValue& x, const Fmt& f, bool fused, std::uint64_t step,
                        MacSite convert_site, MacSite add_site) {
    if (f && f->kind() != FormatKind::floating && !fused) {
      const ExactValue q = round(x, f, step, convert_site);
      return round(add(acc, q, f), f, step, add_site);
    }
    return round(add(acc, x, f), f, step, add_site);
  }

  ExactValue seq(const ExactValue& bias) {
    ExactValue acc = round(bias, spec_.acc, 0, MacSite::bias);
    for (std::size_t i = 0; i < products_.size(); ++i) {
      acc = accumulate(acc, products_[i], spec_.acc, spec_.fused, i, MacSite::convert, MacSite::add);
    }
    return acc;
  }

  // Kahan's compensated summation with every operation rounded to acc:
  //   y = p - c;  t = sum + y;  c = (t - sum) - y;  sum = t.
  ExactValue kahan(const ExactValue& bias) {
    const Fmt& f = spec_.acc;
    ExactValue sum = round(bias, f, 0, MacSite::bias);
    ExactValue c = ExactValue::zero();
    for (std::size_t i = 0; i < products_.size(); ++i) {
      const ExactValue y = sub_round(products_[i], c, f, i, MacSite::kahan_y);
      const ExactValue t = round(add(sum, y, f), f, i, MacSite::add);
      const ExactValue d = sub_round(t, sum, f, i, MacSite::kahan_t_minus);
      c = sub_round(d, y, f, i, MacSite::kahan_c);
      sum = t;
    }
    return sum;
  }

  // chunkN / treeN / ftreeN: groups of n consecutive products, each reduced to one group sum
  // in acc, and the group sums added one after the other into outer (starting from the bias).
  ExactValue grouped(const ExactValue& bias) {
    const Fmt& outer = spec_.outer_format();
    ExactValue total = round(bias, outer, 0, MacSite::bias);
    const std::size_t n = spec_.order.n;
    for (std::size_t s = 0; s < products_.size(); s += n) {
      const std::size_t e = std::min(products_.size(), s + n);
      ExactValue g;
      switch (spec_.order.kind) {
        case MacOrderKind::chunk: g = chunk_sum(s, e); break;
        case MacOrderKind::tree: g = tree_sum(s, e); break;
        default: g = ftree_sum(s, e); break;
      }
      total = accumulate(total, g, outer, false, s, MacSite::outer_convert, MacSite::outer_add);
    }
    return total;
  }

  // A chunk: sequential accumulation in acc starting from (exact) +0.
  ExactValue chunk_sum(std::size_t s, std::size_t e) {
    ExactValue acc = ExactValue::zero();
    for (std::size_t i = s; i < e; ++i) {
      acc = accumulate(acc, products_[i], spec_.acc, spec_.fused, i, MacSite::convert, MacSite::add);
    }
    return acc;
  }

  // A pairwise adder tree, level by level: adjacent nodes are added (each adder rounds to acc);
  // an odd node at the end of a level passes up unchanged. A fixed-point or integer acc first
  // converts every product into its format (the converter after the multiplier). The random
  // bits of an adder are those of the first product of its right operand, which is unique.
  ExactValue tree_sum(std::size_t s, std::size_t e) {
    const Fmt& f = spec_.acc;
    struct Node {
      ExactValue v;
      std::size_t first;
    };
    std::vector<Node> level;
    for (std::size_t i = s; i < e; ++i) {
      const bool convert = f && f->kind() != FormatKind::floating;
      level.push_back({convert ? round(products_[i], f, i, MacSite::convert) : products_[i], i});
    }
    while (level.size() > 1) {
      std::vector<Node> next;
      for (std::size_t i = 0; i < level.size(); i += 2) {
        if (i + 1 == level.size()) {
          next.push_back(level[i]);
        } else {
          next.push_back({round(add(level[i].v, level[i + 1].v, f), f, level[i + 1].first, MacSite::tree), level[i].first});
        }
      }
      level = std::move(next);
    }
    return level.front().v;
  }

  // A multi-operand fused adder: the exact group sum, rounded once to acc.
  ExactValue ftree_sum(std::size_t s, std::size_t e) {
    const Fmt& f = spec_.acc;
    ExactValue sum = products_[s];
    for (std::size_t i = s + 1; i < e; ++i) sum = add(sum, products_[i], f);
    return round(sum, f, s, MacSite::group);
  }

  const MacSpec& spec_;
  RandomKey key_;
  std::uint64_t out_index_;
  std::optional<Format> read_a_, read_b_;
  QuantFlags flags_;
  std::vector<ExactValue> products_;
};

}  // namespace

MacResult dot_ref(const MacSpec& spec, std::size_t k, const double* a, std::ptrdiff_t inc_a, const double* b,
                  std::ptrdiff_t inc_b, double bias, const MacRandom& rnd, std::uint64_t out_index) {
  spec.validate();
  detail::refuse_qfp32(spec);
  if (spec.block) {
    // Each vector quantized block by block as a 1 x k matrix (a tile then spans one row).
    std::vector<double> qa(k), qb(k);
    for (std::size_t p = 0; p < k; ++p) {
      qa[p] = a[static_cast<std::ptrdiff_t>(p) * inc_a];
      qb[p] = b[static_cast<std::ptrdiff_t>(p) * inc_b];
    }
    const std::vector<BlockScale> sa = detail::quantize_block_rows_ref(spec.block->a, 1, k, qa.data());
    const std::vector<BlockScale> sb = detail::quantize_block_rows_ref(spec.block->b, 1, k, qb.data());
    return detail::block_dot_quantized(spec, k, {qa.data(), 1, sa.data()}, {qb.data(), 1, sb.data()}, bias, rnd, out_index);
  }
  return Dot(spec, rnd, out_index).run(k, a, inc_a, b, inc_b, bias);
}

namespace detail {

MacResult block_dot_quantized(const MacSpec& spec, std::size_t k, const BlockVector& a, const BlockVector& b,
                              double bias, const MacRandom& rnd, std::uint64_t out_index) {
  return Dot(spec, rnd, out_index).run_blocks(k, a, b, bias);
}

}  // namespace detail

}  // namespace mpsim
