// kernels/cuda/matmul.h - single-precision GEMM on row-major device matrices.
// Same names and signatures as kernels/cpu/matmul.h (the contract is stated there).
#pragma once
#include <cstdint>

namespace nala {
namespace cuda {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace cuda
}  // namespace nala
