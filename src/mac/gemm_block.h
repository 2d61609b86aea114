// The GEMM of block-format inputs (internal; gemm.cpp sends every spec with MacSpec::block
// here): the operands quantized block by block along the reduction, then the block dot
// product of every output, bit-identical to gemm_ref (docs/mac.md section 7).
#pragma once

#include <cstddef>

#include "mpsim/gemm.h"
#include "mpsim/mac.h"

namespace mpsim::detail {

// Whether gemm_block computes this block spec with its integer kernels (else with the
// reference block dot per output; docs/mac.md section 7.3 lists what the kernels cover).
bool gemm_block_is_fast(const MacSpec& spec);

// T: the operand and result type (double or float). The spec and shapes are validated by the
// caller.
template <typename T, typename Out>
void gemm_block(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const T* A, std::size_t lda,
                const T* B, std::size_t ldb, Out* C, std::size_t ldc, const GemmOptions& options);

}  // namespace mpsim::detail
