// kernels/cpu/gemm_kernels.h - the register-tile micro-kernels of
// kernels/cpu/matmul.cpp (included there only).
//
// Each computes C[MR x NR] = alpha * A * Bp + beta * C, where Bp holds kc
// groups of NR floats (64-byte aligned, packed by matmul.cpp) and A is read
// in one of two ways: packed (micro: kc groups of MR floats) or in place
// (micro_direct: MR rows of a row-major A, lda apart, each row kc floats
// long: no copy of A at all, which pays when K is short and the copy would
// cost as much as the products). beta == 0 does not read C. A bias (NR
// values, one per column; nullable) is added in the same store.
//
//   Avx512Kernel   8 x 32: 16 zmm accumulators, 2 loads of B and 8
//                  broadcasts of A per 16 FMAs
//   Avx2Kernel     6 x 16: 12 ymm accumulators, 2 loads of B and 6
//                  broadcasts of A per 12 FMAs (the BLIS/OpenBLAS Haswell
//                  shape: 15 of the 16 ymm registers)
//   PortableKernel 4 x 16: plain loops that the compiler vectorises as it can
//
// On x86-64 (GCC or Clang) the AVX-512 and AVX2 kernels are compiled into
// every build through target attributes, whatever -march says, and
// matmul.cpp picks one at run time from the CPU's flags; elsewhere only the
// portable one exists. Each kernel also names its cache blocking: KC (the
// depth of a packed panel: MR*KC*4 bytes of A stay in L1), MC (rows of A
// packed per block) and NC_MAX (the most columns of B packed per block;
// matmul.cpp lowers it to fit the CPU's L2).
#pragma once
#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NALA_GEMM_X86 1
#include <immintrin.h>
#endif

namespace nala {
namespace cpu {
namespace gemm_detail {

struct PortableKernel {
  static constexpr int MR = 4, NR = 16;
  static constexpr int64_t KC = 256, MC = 64, NC_MAX = 768;
  // A(r, k) = Ap[r * ars + k * aks]: packed (1, MR) or in place (lda, 1).
  static void micro_any(int64_t kc, const float* __restrict Ap, int64_t ars, int64_t aks,
                        const float* __restrict Bp, float* __restrict C, int64_t ldc, float alpha, float beta,
                        const float* bias) {
    float acc[MR][NR] = {};
    for (int64_t k = 0; k < kc; k++) {
      for (int r = 0; r < MR; r++)
        for (int c = 0; c < NR; c++) acc[r][c] += Ap[r * ars] * Bp[c];
      Ap += aks;
      Bp += NR;
    }
    for (int r = 0; r < MR; r++)
      for (int c = 0; c < NR; c++)
        C[r * ldc + c] = (alpha * acc[r][c] + (beta == 0.0f ? 0.0f : beta * C[r * ldc + c])) + (bias ? bias[c] : 0.0f);
  }
  static void micro(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha, float beta,
                    const float* bias = nullptr) {
    micro_any(kc, Ap, 1, MR, Bp, C, ldc, alpha, beta, bias);
  }
  static void micro_direct(int64_t kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                           float alpha, float beta, const float* bias = nullptr) {
    micro_any(kc, A, lda, 1, Bp, C, ldc, alpha, beta, bias);
  }
};

#ifdef NALA_GEMM_X86

// Chosen by measurement on Zen 4 (32 KiB L1d, 1 MiB L2 per core).
struct Avx512Kernel {
  static constexpr int MR = 8, NR = 32;
  static constexpr int64_t KC = 256, MC = 64, NC_MAX = 768;
  // Direct: A's MR rows read in place (row r at A + r * lda, k-th value at
  // + k); otherwise packed (MR values per k).
  template <bool Direct>
  __attribute__((target("avx512f"))) static void micro_t(int64_t kc, const float* __restrict A, int64_t lda,
                                                          const float* __restrict Bp, float* __restrict C,
                                                          int64_t ldc, float alpha, float beta,
                                                          const float* bias) {
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) c0[r] = _mm512_setzero_ps(), c1[r] = _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {  // C rows are often 4 KiB apart: fetch them early
      _mm_prefetch((const char*)(C + r * ldc), _MM_HINT_T0);
      _mm_prefetch((const char*)(C + r * ldc + 16), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
      __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);
      _mm_prefetch((const char*)(Bp + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 16
      for (int r = 0; r < MR; r++) {
        __m512 a = _mm512_set1_ps(Direct ? A[r * lda + k] : A[r]);
        c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
        c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
      }
      if (!Direct) A += MR;
      Bp += NR;
    }
    __m512 va = _mm512_set1_ps(alpha);
    // C = alpha acc (+ beta C) (+ bias[column]): each added after, rounded as
    // the separate operations would be.
    const __m512 vb = _mm512_set1_ps(beta);
    const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
    const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      float* c = C + r * ldc;
      __m512 t0 = _mm512_mul_ps(va, c0[r]), t1 = _mm512_mul_ps(va, c1[r]);
      if (beta != 0.0f)
        t0 = _mm512_fmadd_ps(va, c0[r], _mm512_mul_ps(vb, _mm512_loadu_ps(c))),
        t1 = _mm512_fmadd_ps(va, c1[r], _mm512_mul_ps(vb, _mm512_loadu_ps(c + 16)));
      if (bias) t0 = _mm512_add_ps(t0, b0), t1 = _mm512_add_ps(t1, b1);
      _mm512_storeu_ps(c, t0);
      _mm512_storeu_ps(c + 16, t1);
    }
  }
  static void micro(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha, float beta,
                    const float* bias = nullptr) {
    micro_t<false>(kc, Ap, 0, Bp, C, ldc, alpha, beta, bias);
  }
  static void micro_direct(int64_t kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                           float alpha, float beta, const float* bias = nullptr) {
    micro_t<true>(kc, A, lda, Bp, C, ldc, alpha, beta, bias);
  }
};

// The same structure in 256-bit registers. The k loop is unrolled by 4 (the
// loop counter and pointer updates then cost little beside 48 FMAs), the
// next B groups are prefetched, and C's rows are fetched before the loop so
// the stores at the end do not wait for memory. KC 256 keeps the A panel
// (6 KiB) and one B panel (16 KiB) in a 32 KiB L1.
struct Avx2Kernel {
  static constexpr int MR = 6, NR = 16;
  static constexpr int64_t KC = 256, MC = 72, NC_MAX = 768;
  template <bool Direct>
  __attribute__((target("avx2,fma"))) static void micro_t(int64_t kc, const float* __restrict A, int64_t lda,
                                                           const float* __restrict Bp, float* __restrict C,
                                                           int64_t ldc, float alpha, float beta,
                                                          const float* bias) {
    __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) c0[r] = _mm256_setzero_ps(), c1[r] = _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) _mm_prefetch((const char*)(C + r * ldc), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
      __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);
      _mm_prefetch((const char*)(Bp + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 6
      for (int r = 0; r < MR; r++) {
        __m256 a = _mm256_broadcast_ss(Direct ? A + r * lda + k : A + r);
        c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
        c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
      }
      if (!Direct) A += MR;
      Bp += NR;
    }
    __m256 va = _mm256_set1_ps(alpha);
    // C = alpha acc (+ beta C) (+ bias[column]): each added after, rounded as
    // the separate operations would be.
    const __m256 vb = _mm256_set1_ps(beta);
    const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
      float* c = C + r * ldc;
      __m256 t0 = _mm256_mul_ps(va, c0[r]), t1 = _mm256_mul_ps(va, c1[r]);
      if (beta != 0.0f)
        t0 = _mm256_fmadd_ps(va, c0[r], _mm256_mul_ps(vb, _mm256_loadu_ps(c))),
        t1 = _mm256_fmadd_ps(va, c1[r], _mm256_mul_ps(vb, _mm256_loadu_ps(c + 8)));
      if (bias) t0 = _mm256_add_ps(t0, b0), t1 = _mm256_add_ps(t1, b1);
      _mm256_storeu_ps(c, t0);
      _mm256_storeu_ps(c + 8, t1);
    }
  }
  static void micro(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha, float beta,
                    const float* bias = nullptr) {
    micro_t<false>(kc, Ap, 0, Bp, C, ldc, alpha, beta, bias);
  }
  static void micro_direct(int64_t kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                           float alpha, float beta, const float* bias = nullptr) {
    micro_t<true>(kc, A, lda, Bp, C, ldc, alpha, beta, bias);
  }
};

#endif  // NALA_GEMM_X86

}  // namespace gemm_detail
}  // namespace cpu
}  // namespace nala
