// The GEMM entry point. Specs that gemm_fast.h admits run through the SIMD kernels, tested
// bit-identical to the reference gemm_ref; every other spec runs the reference dot product
// (dot_ref) for each output, with OpenMP sharing whole rows of outputs between threads; block-
// format inputs go to gemm_block.cpp. Either
// way a reduction is never split or reordered, and the random bits of each rounding depend
// only on its output index and step, so the thread count changes nothing. The named fast mode
// qfp32 (src/mac/gemm_qfp32.h) is the one exception: OpenBLAS accumulates in FP32.
#include "mpsim/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "gemm_shape.h"
#include "mpsim/quantize.h"
#include "mpsim/quantize_array.h"
#include "src/format/quantize_plan.h"
#include "src/mac/block_dot.h"
#include "src/mac/gemm_block.h"
#include "src/mac/gemm_fast.h"
#include "src/mac/gemm_qfp32.h"

namespace mpsim {

namespace {

// ---- the SIMD path ------------------------------------------------------------------------
//
// The kernel (gemm_fast.h: gemm_tile) computes C' = X Y with lanes along the columns of Y, so
// the GEMM is laid out as that product in one of two orientations:
//   normal      X = op(A) (m x k), Y = op(B) (k x n), C' = C;
//   transposed  X = op(B)^T (n x k), Y = op(A)^T (k x m), C' = C^T,
// whichever wastes fewer lanes: a narrow C (n = 1 for a bias gradient, or n = 10 classes)
// puts its long side along the lanes. Each output is still the same dot product in the same
// order p = 0 .. k-1 (a product is the same exact value either way round, each operand
// quantized into its own format), so the orientation changes no bit.
//
// Work: Y's columns are cut into panels of V vectors (V = 8, fewer where that would leave too
// few panels to share), panels into slabs of consecutive panels, and p into blocks that keep a
// packed slab in the core's cache. X is quantized and packed once, shared. Each task is one
// slab (and, only where slabs are fewer than threads, one group of rows): it quantizes and
// packs its slab of Y block by block into its thread's buffer and runs the kernel over it,
// carrying the accumulators from block to block. Tasks own disjoint outputs, need nothing from
// each other (no barrier but the one after packing X), and every output's reduction runs
// whole, in order, in one task, so no thread count or schedule changes any bit.

constexpr std::size_t kBlock = 8;               // vectors of a full panel (gemm_tile's widest)
constexpr std::size_t kSlabPanels = 8;          // panels of a slab, at most
constexpr std::size_t kSlabBytes = 1u << 20;    // a packed block of a slab, about (cache-sized; GemmOptions)
constexpr std::size_t kAccBytes = 1u << 20;     // accumulators of a task, about
constexpr std::size_t kSharedXBytes = 64u << 20;  // X larger than this is packed per task instead
constexpr std::size_t kItem = 4096;             // elements per item of X's packing, about
// Rows of Y a slab's packing asks for ahead of the one it reads: each row's run is a separate
// stream (a few KiB, rows far apart), which the hardware prefetcher meets cold every time; two
// rows ahead hides that (ResNet-20 stage 1, m 16 k 144, AVX2 Zen 3: +5%; docs/mac.md).
constexpr std::size_t kPrefetchRows = 2;

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }
std::size_t pow2_ceil(std::size_t a) {
  std::size_t p = 1;
  while (p < a) p *= 2;
  return p;
}

// Grow-only scratch memory of one thread, reused by later calls (OpenMP keeps its threads):
// no allocation, page faults or zero-filling per GEMM once it has grown; every element a GEMM
// reads it wrote first.
class Scratch {
 public:
  template <typename L>
  L* get(std::size_t count) {
    const std::size_t bytes = count * sizeof(L) + 64;
    if (bytes > cap_) {
      mem_.reset(new std::byte[bytes]);
      cap_ = bytes;
    }
    const auto addr = reinterpret_cast<std::uintptr_t>(mem_.get());
    return reinterpret_cast<L*>((addr + 63) & ~std::uintptr_t{63});
  }

 private:
  std::unique_ptr<std::byte[]> mem_;
  std::size_t cap_ = 0;
};

// Shared buffers (of the calling thread) and each task's own (of the thread running it).
struct Workspace {
  Scratch x, bias, slab, acc, outer, own_x;
};

Workspace& workspace() {
  thread_local Workspace w;
  return w;
}

// Element (r, s) of a matrix at base[r * rs + s * ss].
template <typename T>
struct View {
  const T* base;
  std::size_t rs, ss;
  const T* at(std::size_t r, std::size_t s) const { return base + r * rs + s * ss; }
};

// The bias of every output, rounded into the accumulator (to nearest-even: its random key
// plays no part) and held in the lane type, which holds the accumulator's values exactly.
template <typename L>
class RoundedBias {
 public:
  RoundedBias(const BiasView& b, const Format& acc, std::size_t m, std::size_t n, int threads) {
    std::size_t count = 1;
    if (b.data && b.row_stride != 0 && b.col_stride != 0) {
      kind_ = Kind::full;
      count = m * n;
    } else if (b.data && b.row_stride != 0) {
      kind_ = Kind::row;
      count = m;
    } else if (b.data && b.col_stride != 0) {
      kind_ = Kind::col;
      count = n;
    }
    std::vector<double> v(count, 0.0);
    if (b.data) {
      for (std::size_t t = 0; t < count; ++t) {
        const std::size_t i = kind_ == Kind::full ? t / n : (kind_ == Kind::row ? t : 0);
        const std::size_t j = kind_ == Kind::full ? t % n : (kind_ == Kind::col ? t : 0);
        v[t] = b.at(i, j);
      }
    }
    QuantizeOptions qo;
    qo.threads = threads;
    quantize_array(v.data(), v.data(), v.size(), acc, qo);
    values_ = workspace().bias.get<L>(count);
    for (std::size_t t = 0; t < count; ++t) values_[t] = static_cast<L>(v[t]);  // exact (the plan)
    n_ = n;
  }
  bool uniform() const { return kind_ == Kind::one; }  // one value for every output (no bias: +0)
  L at(std::size_t i, std::size_t j) const {
    switch (kind_) {
      case Kind::one: return values_[0];
      case Kind::row: return values_[i];
      case Kind::col: return values_[j];
      case Kind::full: return values_[i * n_ + j];
    }
    return values_[0];
  }

 private:
  enum class Kind { one, row, col, full };
  Kind kind_ = Kind::one;
  L* values_ = nullptr;
  std::size_t n_ = 0;
};

template <typename T, typename L, typename Out>
void gemm_simd(const MacSpec& spec, const detail::GemmFastPlan& plan, GemmOp op, std::size_t m, std::size_t n,
               std::size_t k, const T* A, std::size_t lda, const T* B, std::size_t ldb, Out* C, std::size_t ldc,
               const GemmOptions& o) {
  // acc=exact (plan.exact) keeps its bias and sums as fp64 pairs: fp64 stands in for acc where
  // the bias is loaded (rounding a double into fp64 changes nothing).
  static const Format kFp64 = Format::parse("fp64");
  const Format& acc = spec.acc ? *spec.acc : kFp64;
  const std::size_t N = std::is_same_v<L, float> ? detail::gemm_lanes_f32() : detail::gemm_lanes_f64();
  // A small GEMM runs on one thread: waking another costs more than it saves (and the thread
  // count changes no result).
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) * (plan.sr ? 16 : 1) +
                      4.0 * static_cast<double>(m * k + k * n);
  const int threads = work < 131072.0 ? 1 : std::max(1, o.threads > 0 ? o.threads : omp_get_max_threads());
  const auto nthreads = static_cast<std::size_t>(threads);

  // op(A)(i, p) and op(B)(p, j), then X(r, p) and Y(p, c) of the chosen orientation.
  const View<T> opA{A, op == GemmOp::tn ? 1 : lda, op == GemmOp::tn ? lda : 1};
  const View<T> opB{B, op == GemmOp::nt ? 1 : ldb, op == GemmOp::nt ? ldb : 1};
  const bool trans = n * ceil_div(m, N) < m * ceil_div(n, N);
  const std::size_t rows = trans ? n : m, cols = trans ? m : n;
  const View<T> X = trans ? View<T>{opB.base, opB.ss, opB.rs} : opA;
  const View<T> Y = trans ? View<T>{opA.base, opA.ss, opA.rs} : opB;
  const Carrier qc = std::is_same_v<T, float> && std::is_same_v<L, float> ? Carrier::fp32 : Carrier::fp64;
  // The input formats as the packing rounds into them (CFG-2 inputs keep their subnormal codes).
  const detail::InputPacking in_x = detail::input_packing(trans ? spec.b : spec.a, qc);
  const detail::InputPacking in_y = detail::input_packing(trans ? spec.a : spec.b, qc);
  const Format &fx = in_x.format, &fy = in_y.format;
  const detail::QuantPlan &px = in_x.plan, &py = in_y.plan;

  // Panels of V vectors: 8, or fewer until there are enough panels for every thread to get
  // several (equal tasks balance); the last panel as narrow as its columns allow.
  const std::size_t want_tasks = threads == 1 ? 1 : 8 * nthreads;
  std::size_t V = kBlock;
  while (V > 1 && ceil_div(ceil_div(cols, N), V) < want_tasks) V /= 2;
  const std::size_t W = V * N;
  const std::size_t panels = ceil_div(cols, W);
  const std::size_t last_w = std::min(W, pow2_ceil(ceil_div(cols - (panels - 1) * W, N)) * N);
  const auto width = [&](std::size_t q) { return q + 1 == panels ? last_w : W; };
  // Rows split into groups only where the panels alone leave threads idle, and not below a
  // register block's rows unless that is what it takes.
  std::size_t groups = 1;
  if (panels < nthreads) {
    const std::size_t rg_min = std::min(kBlock / V, ceil_div(rows, nthreads));
    groups = std::min(ceil_div(rows, rg_min), ceil_div(nthreads, panels));
  }
  const std::size_t rg = ceil_div(rows, groups);
  const std::size_t ngroups = ceil_div(rows, rg);
  // Slabs: several panels where there are many (the slab's rows of Y are read from memory in
  // longer runs), within the accumulator budget.
  const std::size_t spp = std::clamp<std::size_t>(
      std::min(panels / want_tasks, kAccBytes / std::max<std::size_t>(1, rg * W * sizeof(L))), 1, kSlabPanels);
  const std::size_t slabs = ceil_div(panels, spp);
  const std::size_t slab_w = spp * W;
  // Blocks of p: a packed block of a slab about kSlabBytes.
  // With order=chunkN, blocks end where chunks end (several whole chunks, or a chunk in pieces).
  const std::size_t block_bytes = o.block_bytes ? o.block_bytes : kSlabBytes;
  const std::size_t kc_want = std::max<std::size_t>(16, block_bytes / (slab_w * sizeof(L)));
  std::vector<std::pair<std::size_t, std::size_t>> kblocks;  // (first p, length)
  const std::size_t G = plan.chunk;  // chunk size, 0: seq
  if (G == 0) {
    const std::size_t nkb = ceil_div(k, kc_want), len = ceil_div(k, nkb);
    for (std::size_t p = 0; p < k; p += len) kblocks.emplace_back(p, std::min(len, k - p));
  } else if (G <= kc_want || plan.tree) {
    // (A tree needs a whole group at once: its blocks hold whole groups, one at least.)
    const std::size_t len = std::max<std::size_t>(1, kc_want / G) * G;
    for (std::size_t p = 0; p < k; p += len) kblocks.emplace_back(p, std::min(len, k - p));
  } else {
    for (std::size_t c0 = 0; c0 < k; c0 += G) {
      const std::size_t cl = std::min(G, k - c0), pieces = ceil_div(cl, kc_want), len = ceil_div(cl, pieces);
      for (std::size_t p = c0; p < c0 + cl; p += len) kblocks.emplace_back(p, std::min(len, c0 + cl - p));
    }
  }
  std::size_t kc = 0;
  for (const auto& blk : kblocks) kc = std::max(kc, blk.second);
  // X shared, packed once, unless it is very large.
  const bool shared_x = rows * k * sizeof(L) <= kSharedXBytes;

  L* const xbuf = shared_x ? workspace().x.get<L>(rows * k) : nullptr;
  // The bias rounded into the accumulator: once per distinct value (to nearest-even), or per
  // output with its own random bits (sr, docs/mac.md section 5: MacSite::bias).
  // (Grouped orders load the bias into outer and start each chunk from +0.)
  const Format& first = G ? *spec.outer_format() : acc;
  std::optional<RoundedBias<L>> bias;
  // (A stochastic accumulator, or outer with chunkN, rounds each output's bias with its own
  // random bits: init_acc.)
  if (!first.rounding().stochastic()) bias.emplace(o.bias, first, m, n, threads);
  const L zero_acc = static_cast<L>(quantize(0.0, acc));
  const std::optional<detail::QuantPlan> pout =
      spec.out && !spec.out->rounding().stochastic() ? std::optional(detail::make_plan(*spec.out, Carrier::fp64))
                                                    : std::nullopt;
  const RandomKey key = mac_random_key(o.random);

  // X's rows [r0, r1) at p in [p0, p0 + kb) into dst (row stride ld).
  const auto pack_x = [&](std::size_t r0, std::size_t r1, std::size_t p0, std::size_t kb, L* dst, std::size_t ld) {
    if (X.ss == 1) {
      for (std::size_t r = r0; r < r1; ++r) detail::gemm_pack(px, fx, X.at(r, p0), kb, dst + (r - r0) * ld, 1);
    } else if (r1 - r0 == 1) {
      // One row with a stride along p (a ones vector of a bias gradient, say): gathered first.
      T tmp[kItem];
      for (std::size_t pa = 0; pa < kb; pa += kItem) {
        const std::size_t len = std::min(kItem, kb - pa);
        for (std::size_t p = 0; p < len; ++p) tmp[p] = *X.at(r0, p0 + pa + p);
        detail::gemm_pack(px, fx, tmp, len, dst + pa, 1);
      }
    } else {
      detail::gemm_pack_cols(px, fx, X.at(r0, p0), X.ss, kb, r1 - r0, dst, ld);
    }
  };
  // The slab's panels at p in [p0, p0 + kb): panel q (width wq) at dst + (q - q_first) * kb * W,
  // row p at + p * wq; zero past the matrix.
  const auto pack_slab = [&](std::size_t qa, std::size_t qb, std::size_t p0, std::size_t kb, L* dst) {
    for (std::size_t q = qa; q < qb; ++q) {
      const std::size_t wq = width(q), c0 = q * W, real = std::min(wq, cols - c0);
      L* const panel = dst + (q - qa) * kb * W;
      if (Y.ss == 1) {
        if (q == qa) {
          // Row by row across the slab's panels: long runs of Y.
          const std::size_t run_bytes = (std::min(cols, qb * W) - qa * W) * sizeof(T);
          for (std::size_t p = 0; p < kb; ++p) {
            if (p + kPrefetchRows < kb) {
              const char* const ahead = reinterpret_cast<const char*>(Y.at(p0 + p + kPrefetchRows, qa * W));
              for (std::size_t b = 0; b < run_bytes; b += 64) __builtin_prefetch(ahead + b);
            }
            for (std::size_t q2 = qa; q2 < qb; ++q2) {
              const std::size_t w2 = width(q2), r2 = std::min(w2, cols - q2 * W);
              detail::gemm_pack(py, fy, Y.at(p0 + p, q2 * W), r2, dst + (q2 - qa) * kb * W + p * w2, 1);
            }
          }
        }
      } else {
        detail::gemm_pack_cols(py, fy, Y.at(p0, c0), Y.ss, real, kb, panel, wq);
      }
      if (real < wq) {
        for (std::size_t p = 0; p < kb; ++p) std::fill(panel + p * wq + real, panel + (p + 1) * wq, L(0));
      }
    }
  };

  // Output (r, c) of C' is C's (i, j).
  const auto out_index = [&](std::size_t r, std::size_t c) { return trans ? std::pair{c, r} : std::pair{r, c}; };
  // Row r of the task's accumulators: abuf + (r - r0) * slab_w, panel q at + (q - qa) * W
  // (chunkN: the running chunk sums there, and the outer totals at the same place in tbuf).
  const auto init_acc = [&](std::size_t qa, std::size_t qb, std::size_t r0, std::size_t r1, L* abuf, L* tbuf) {
    if (G) std::fill(abuf, abuf + (r1 - r0) * slab_w, L(0));
    if (plan.kahan) std::fill(tbuf, tbuf + (r1 - r0) * slab_w, L(0));  // the compensations start at +0
    if (plan.exact) std::fill(tbuf, tbuf + (r1 - r0) * slab_w, L(-0.0));  // lo: x + (-0) = x
    for (std::size_t r = r0; r < r1; ++r) {
      for (std::size_t q = qa; q < qb; ++q) {
        const std::size_t wq = width(q), c0 = q * W, real = std::min(wq, cols - c0);
        L* const c = (G ? tbuf : abuf) + (r - r0) * slab_w + (q - qa) * W;
        if (bias && bias->uniform()) {
          std::fill(c, c + real, bias->at(0, 0));
          std::fill(c + real, c + wq, L(0));
          continue;
        }
        for (std::size_t t = 0; t < real; ++t) {
          const auto [i, j] = out_index(r, c0 + t);
          if (bias) c[t] = bias->at(i, j);
          else c[t] = o.bias.data ? static_cast<L>(quantize(o.bias.at(i, j), first, mac_random_index(i * n + j, 0, MacSite::bias), key)) : zero_acc;
        }
        std::fill(c + real, c + wq, L(0));
      }
    }
  };
  // chunkN: the chunk sums of rows x wq accumulators at c added into the totals at t (row
  // stride slab_w), rounded into outer, and the chunk sums reset to +0. The tile's first row is
  // r0 and its first column c0, and the chunk ends at step s1 (a stochastic outer's words).
  const auto fold = [&](std::size_t nrows, std::size_t wq, L* c, L* t, std::size_t r0, std::size_t c0, std::size_t s1) {
    const std::size_t s = (s1 - 1) / G * G;  // the chunk's first step
    for (std::size_t r = 0; r < nrows; ++r) {
      L* const cr = c + r * slab_w;
      L* const tr = t + r * slab_w;
      if constexpr (std::is_same_v<L, double>) {  // (a stochastic outer only has fp64 plans)
        if (plan.outer_sr) {
          // Output (r, c) of C' is C's (i, j), index i n + j (as the stochastic tiles).
          detail::GemmSrTile st;
          st.key = key;
          st.p0 = s;
          st.out0 = trans ? c0 * n + r0 + r : (r0 + r) * n + c0;
          st.out_cs = trans ? n : 1;
          detail::gemm_fold_sr(plan, *spec.outer_format(), cr, tr, wq, st);
          continue;
        }
      }
      if (plan.outer_odd) {
        detail::gemm_fold(plan, *spec.outer_format(), cr, tr, wq);
        continue;
      }
      if (plan.outer_fixed) {
        // Each chunk sum converted into outer, added to the total (exact: two values of its
        // grid within the lane's integers), the total saturated.
        detail::gemm_pack(plan.outer, *spec.outer_format(), cr, wq, cr, 1);
        for (std::size_t u = 0; u < wq; ++u) tr[u] += cr[u];
        detail::gemm_pack(plan.outer, *spec.outer_format(), tr, wq, tr, 1);
        std::fill(cr, cr + wq, L(0));
        continue;
      }
      for (std::size_t u = 0; u < wq; ++u) tr[u] += cr[u];  // correctly rounded in the lane
      detail::gemm_pack(plan.outer, *spec.outer_format(), tr, wq, tr, 1);
      std::fill(cr, cr + wq, L(0));
    }
  };
  // acc=exact: each output's pair hi + lo (abuf, tbuf) becomes the value finish() takes, the
  // exact sum rounded once: to odd where out= rounds it next (into a format of at most 51 bits
  // that is the one rounding of the exact sum; the plan excludes a stochastic out=), else to
  // fp64 (hi + lo, to nearest). An output whose pair was lost (lo NaN, or hi not finite) is the
  // reference's dot product of its row and column, rounded into fp64 when there is no out=
  // (finish rounds it into out=, which leaves a value of out unchanged).
  const auto exact_result = [&](std::size_t qa, std::size_t qb, std::size_t r0, std::size_t r1, L* hi, const L* lo) {
    std::vector<double> a(k), b(k);
    for (std::size_t r = r0; r < r1; ++r) {
      for (std::size_t q = qa; q < qb; ++q) {
        const std::size_t wq = width(q), c0 = q * W, real = std::min(wq, cols - c0);
        const std::size_t at = (r - r0) * slab_w + (q - qa) * W;
        for (std::size_t t = 0; t < real; ++t) {
          const double h = static_cast<double>(hi[at + t]), l = static_cast<double>(lo[at + t]);
          if (!std::isnan(l) && std::isfinite(h)) {
            // An exact zero is -0 only where every term was -0, which is where hi's own sequence
            // of additions ended at -0 (lo's errors are +0 then, so hi alone says).
            const double v = h == 0 && l == 0 ? h : (spec.out ? detail::sum_to_odd(h, l, false) : h + l);
            hi[at + t] = static_cast<L>(v);
            continue;
          }
          const auto [i, j] = out_index(r, c0 + t);
          for (std::size_t p = 0; p < k; ++p) {
            a[p] = static_cast<double>(*opA.at(i, p));
            b[p] = static_cast<double>(*opB.at(p, j));
          }
          const double b0 = o.bias.data ? o.bias.at(i, j) : 0.0;
          hi[at + t] = static_cast<L>(dot_ref(spec, k, a.data(), 1, b.data(), 1, b0, o.random, i * n + j).value);
        }
      }
    }
  };
  const auto finish = [&](std::size_t qa, std::size_t qb, std::size_t r0, std::size_t r1, const L* abuf) {
    double tmp[kBlock * 64], res[kBlock * 64];  // a panel is at most kBlock * 64 lanes wide
    for (std::size_t r = r0; r < r1; ++r) {
      for (std::size_t q = qa; q < qb; ++q) {
        const std::size_t wq = width(q), c0 = q * W, real = std::min(wq, cols - c0);
        const L* const c = abuf + (r - r0) * slab_w + (q - qa) * W;
        if (!spec.out) {
          if (!trans) {
            std::copy(c, c + real, C + r * ldc + c0);  // (C's row r: one contiguous run)
            continue;
          }
          for (std::size_t t = 0; t < real; ++t) C[(c0 + t) * ldc + r] = static_cast<Out>(c[t]);
          continue;
        }
        // out=: one rounding per output, with its own random key (vectorized unless stochastic).
        for (std::size_t t = 0; t < real; ++t) tmp[t] = static_cast<double>(c[t]);
        if (pout) detail::gemm_pack(*pout, *spec.out, tmp, real, res, 1);
        for (std::size_t t = 0; t < real; ++t) {
          const auto [i, j] = out_index(r, c0 + t);
          const double v = pout ? res[t] : quantize(tmp[t], *spec.out, mac_random_index(i * n + j, 0, MacSite::out), key);
          C[i * ldc + j] = static_cast<Out>(v);
        }
      }
    }
  };

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    if (shared_x) {
      const std::size_t per = std::max<std::size_t>(1, kItem / k);
      const auto items = static_cast<std::int64_t>(X.ss == 1 ? ceil_div(rows, per) : ceil_div(rows, std::size_t{16}));
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t it = 0; it < items; ++it) {
        // Rows (or, where X is contiguous along its rows, groups of 16 columns of X^T).
        const std::size_t step = X.ss == 1 ? per : 16;
        const std::size_t r0 = static_cast<std::size_t>(it) * step, r1 = std::min(rows, r0 + step);
        pack_x(r0, r1, 0, k, xbuf + r0 * k, k);
      }
    }
    Workspace& own = workspace();
    L* const sbuf = own.slab.get<L>(kc * slab_w);
    L* const abuf = own.acc.get<L>(rg * slab_w);
    // chunkN: the outer totals; kahan: the compensations.
    L* const tbuf = G || plan.kahan || plan.exact ? own.outer.get<L>(rg * slab_w) : nullptr;
    L* const obuf = shared_x ? nullptr : own.own_x.get<L>(rg * kc);
    const auto tasks = static_cast<std::int64_t>(slabs * ngroups);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t t = 0; t < tasks; ++t) {
      const std::size_t s = static_cast<std::size_t>(t) / ngroups, g = static_cast<std::size_t>(t) % ngroups;
      const std::size_t qa = s * spp, qb = std::min(panels, qa + spp);
      const std::size_t r0 = g * rg, r1 = std::min(rows, r0 + rg);
      init_acc(qa, qb, r0, r1, abuf, tbuf);
      for (const auto& [p0, kb] : kblocks) {
        pack_slab(qa, qb, p0, kb, sbuf);
        if (!shared_x) pack_x(r0, r1, p0, kb, obuf, kb);
        for (std::size_t q = qa; q < qb; ++q) {
          const std::size_t vq = width(q) / N, rmax = kBlock / vq;
          const L* const panel = sbuf + (q - qa) * kb * W;
          for (std::size_t r = r0; r < r1; r += rmax) {
            const L* const x = shared_x ? xbuf + r * k + p0 : obuf + (r - r0) * kb;
            L* const c = abuf + (r - r0) * slab_w + (q - qa) * W;
            if constexpr (std::is_same_v<L, double>) {
              if (plan.sr) {
                // Random bits per (output, step): output (r, c) of C' is C's (i, j), index i n + j.
                detail::GemmSrTile st;
                st.key = key;
                st.p0 = p0;
                st.out0 = trans ? q * W * n + r : r * n + q * W;
                st.out_rs = trans ? 1 : n;
                st.out_cs = trans ? n : 1;
                if (G == 0) {
                  detail::gemm_tile_sr(plan, acc, std::min(rmax, r1 - r), vq, x, shared_x ? k : kb, panel, kb, c, slab_w, st);
                  continue;
                }
                // Chunk by chunk (treeN, ftreeN: group by group), each step keyed by its place in the whole
                // dot product.
                for (std::size_t s0 = p0; s0 < p0 + kb;) {
                  const std::size_t s1 = std::min(p0 + kb, (s0 / G + 1) * G);
                  st.p0 = s0;
                  if (plan.tree) {
                    detail::gemm_tile_group_sr(plan, acc, std::min(rmax, r1 - r), vq, x + (s0 - p0), shared_x ? k : kb,
                                               panel + (s0 - p0) * width(q), s1 - s0, c, slab_w, st);
                  } else {
                    detail::gemm_tile_sr(plan, acc, std::min(rmax, r1 - r), vq, x + (s0 - p0), shared_x ? k : kb,
                                         panel + (s0 - p0) * width(q), s1 - s0, c, slab_w, st);
                  }
                  if (s1 % G == 0 || s1 == k) fold(std::min(rmax, r1 - r), width(q), c, tbuf + (c - abuf), r, q * W, s1);
                  s0 = s1;
                }
                continue;
              }
            }
            if constexpr (std::is_same_v<L, double>) {
              if (plan.exact) {
                detail::gemm_tile_exact(std::min(rmax, r1 - r), vq, x, shared_x ? k : kb, panel, kb, c, tbuf + (c - abuf),
                                        slab_w);
                continue;
              }
            }
            if (plan.kahan) {
              detail::gemm_tile_kahan(plan, acc, std::min(rmax, r1 - r), vq, x, shared_x ? k : kb, panel, kb, c,
                                      tbuf + (c - abuf), slab_w);
              continue;
            }
            if (G == 0) {
              detail::gemm_tile(plan, acc, std::min(rmax, r1 - r), vq, x, shared_x ? k : kb, panel, kb, c, slab_w);
              continue;
            }
            // Chunk by chunk: the steps up to the next chunk end, then the fold at that end.
            for (std::size_t s0 = p0; s0 < p0 + kb;) {
              const std::size_t s1 = std::min(p0 + kb, (s0 / G + 1) * G);
              if (plan.tree) {
                detail::gemm_tile_tree(plan, acc, std::min(rmax, r1 - r), vq, x + (s0 - p0), shared_x ? k : kb,
                                       panel + (s0 - p0) * width(q), s1 - s0, c, slab_w);
              } else {
                detail::gemm_tile(plan, acc, std::min(rmax, r1 - r), vq, x + (s0 - p0), shared_x ? k : kb,
                                  panel + (s0 - p0) * width(q), s1 - s0, c, slab_w);
              }
              if (s1 % G == 0 || s1 == k) fold(std::min(rmax, r1 - r), width(q), c, tbuf + (c - abuf), r, q * W, s1);
              s0 = s1;
            }
          }
        }
      }
      if (plan.exact) exact_result(qa, qb, r0, r1, abuf, tbuf);
      finish(qa, qb, r0, r1, G ? tbuf : abuf);
    }
  }
}

// The reference path: one dot_ref per output, rows of outputs shared between threads.
void gemm_reference(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const double* A,
                    std::size_t lda, const double* B, std::size_t ldb, double* C, std::size_t ldc, const GemmOptions& o) {
  const detail::GemmOperands<double> ops{op, A, lda, B, ldb};
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  const auto rows = static_cast<std::int64_t>(m);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && m > 1)
  for (std::int64_t si = 0; si < rows; ++si) {
    const auto i = static_cast<std::size_t>(si);
    for (std::size_t j = 0; j < n; ++j) {
      C[i * ldc + j] =
          dot_ref(spec, k, ops.a_row(i), ops.a_step(), ops.b_col(j), ops.b_step(), o.bias.at(i, j), o.random, i * n + j).value;
    }
  }
}

}  // namespace

bool gemm_is_vectorized(const MacSpec& spec) {
  if (spec.qfp32) return false;
  if (spec.block) return detail::gemm_block_is_fast(spec);
  return detail::plan_gemm_fast(spec).ok;
}

void gemm(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const double* A, std::size_t lda,
          const double* B, std::size_t ldb, double* C, std::size_t ldc, const GemmOptions& o) {
  spec.validate();
  detail::check_gemm_shape(op, m, n, k, lda, ldb, ldc);
  if (spec.qfp32) {  // named by the spec, never chosen in place of an exact mode
    detail::gemm_qfp32(spec, op, m, n, k, A, lda, B, ldb, C, ldc, o);
    return;
  }
  if (spec.block) {
    if (m * n != 0) detail::gemm_block<double, double>(spec, op, m, n, k, A, lda, B, ldb, C, ldc, o);
    return;
  }
  if (const detail::GemmFastPlan plan = detail::plan_gemm_fast(spec); plan.ok && m * n * k != 0) {
    if (plan.f32) gemm_simd<double, float, double>(spec, plan, op, m, n, k, A, lda, B, ldb, C, ldc, o);
    else gemm_simd<double, double, double>(spec, plan, op, m, n, k, A, lda, B, ldb, C, ldc, o);
    return;
  }
  gemm_reference(spec, op, m, n, k, A, lda, B, ldb, C, ldc, o);
}

void gemm(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const float* A, std::size_t lda,
          const float* B, std::size_t ldb, float* C, std::size_t ldc, const GemmOptions& o) {
  spec.validate();
  detail::check_gemm_shape(op, m, n, k, lda, ldb, ldc);
  if (spec.qfp32) {  // named by the spec, never chosen in place of an exact mode
    detail::gemm_qfp32(spec, op, m, n, k, A, lda, B, ldb, C, ldc, o);
    return;
  }
  if (spec.block) {
    if (m * n != 0) detail::gemm_block<float, float>(spec, op, m, n, k, A, lda, B, ldb, C, ldc, o);
    return;
  }
  if (const detail::GemmFastPlan plan = detail::plan_gemm_fast(spec); plan.ok && m * n * k != 0) {
    // Quantized and packed straight from the fp32 operands (fp32 inputs are exact in fp64, and
    // a value of a format that fits fp32 is the same in either carrier).
    if (plan.f32) gemm_simd<float, float, float>(spec, plan, op, m, n, k, A, lda, B, ldb, C, ldc, o);
    else gemm_simd<float, double, float>(spec, plan, op, m, n, k, A, lda, B, ldb, C, ldc, o);
    return;
  }
  // The reference: A and B as stored (op decides how they are read), widened exactly to fp64
  // (only the columns a row uses are read: the last row may end right after them).
  const std::size_t a_rows = op == GemmOp::tn ? k : m, a_cols = op == GemmOp::tn ? m : k;
  const std::size_t b_rows = op == GemmOp::nt ? n : k, b_cols = op == GemmOp::nt ? k : n;
  std::vector<double> a(a_rows * a_cols), b(b_rows * b_cols), c(m * n);
  for (std::size_t r = 0; r < a_rows; ++r)
    for (std::size_t q = 0; q < a_cols; ++q) a[r * a_cols + q] = A[r * lda + q];
  for (std::size_t r = 0; r < b_rows; ++r)
    for (std::size_t q = 0; q < b_cols; ++q) b[r * b_cols + q] = B[r * ldb + q];
  gemm_reference(spec, op, m, n, k, a.data(), a_cols, b.data(), b_cols, c.data(), n, o);
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) C[i * ldc + j] = static_cast<float>(c[i * n + j]);
  }
}

}  // namespace mpsim
