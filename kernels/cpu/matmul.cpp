// kernels/cpu/matmul.cpp - GEMM. (The blocked, packed version replaces the
// placeholder body of gemm() below.)
#include "kernels/cpu/matmul.h"

namespace nala {
namespace cpu {

void gemm_naive(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double acc = 0;
      for (int64_t k = 0; k < K; k++) {
        float a = ta ? A[k * lda + i] : A[i * lda + k];
        float b = tb ? B[j * ldb + k] : B[k * ldb + j];
        acc += (double)a * b;
      }
      float c = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
      C[i * ldc + j] = c + alpha * (float)acc;
    }
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < M; i++) {
    for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    for (int64_t k = 0; k < K; k++) {
      float a = alpha * (ta ? A[k * lda + i] : A[i * lda + k]);
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] += a * (tb ? B[j * ldb + k] : B[k * ldb + j]);
    }
  }
}

}  // namespace cpu
}  // namespace nala
