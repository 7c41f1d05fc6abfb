// kernels/lab/gemm.cpp - the GEMM lab, CPU: from three loops to the
// production kernel, one step at a time. Walkthrough: docs/kernels.md.
//
//   C[M, N] = A[M, K] B[K, N]      row-major, float, here M = N = K = size
//
//   build/release-nocuda/lab/gemm [VERSION] [--size N] [--check] [--csv]
//     default size 199 (odd: every edge path runs); timing size 1024
//
// Versions (each a short function below; the comment above it says what it
// changes and why):
//   1  naive i-j-k             the definition
//   2  loop order i-k-j        stride-1 inner loop: whole cache lines, SIMD
//   3  cache blocking          blocks of B that stay in L2 while used
//   4  packing                 A and B copied into the order the kernel reads them
//   5  register tile, AVX2     a 6x16 tile of C held in 12 ymm registers
//   6  register tile, AVX-512  an 8x32 tile of C held in 16 zmm registers
//   7  threads: cpu::gemm      the production kernel (kernels/cpu/matmul.cpp):
//                              version 6's algorithm, C cut in a 2-D grid over
//                              the threads, edge tiles and small products handled
// Versions 5 and 6 run only where the CPU has AVX2+FMA / AVX-512F (checked at
// run time). The reference is cpu::gemm_naive (double accumulation).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/lab/lab.h"

#ifdef NALA_LAB_X86
#include <immintrin.h>
#endif

using namespace nala;

namespace {

struct Problem {
  int64_t M, N, K;
  std::vector<float> A, B, C, ref;
};

// ---- 1. naive: C[i][j] = sum_k A[i][k] B[k][j]. The inner loop walks B down
// a column, N floats apart: each step loads a new cache line to use 4 bytes
// of it, and the sum is one chain of dependent adds (no SIMD: float addition
// is not associative, so the compiler keeps the order).
void v1_naive(Problem& p) {
  const int64_t M = p.M, N = p.N, K = p.K;
  const float *A = p.A.data(), *B = p.B.data();
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; k++) acc += A[i * K + k] * B[k * N + j];
      p.C[i * N + j] = acc;
    }
}

// ---- 2. loop order i-k-j: swap the two inner loops. Now the inner loop walks
// a row of B and a row of C with stride 1 (whole cache lines) and its
// iterations are independent, so the compiler vectorises it:
// C[i][j..j+15] += A[i][k] * B[k][j..j+15]. But each FMA loads B and loads and
// stores C: memory operations, not FMAs, set the pace, and when B is larger
// than the caches it streams from memory once per row of C.
void v2_ikj(Problem& p) {
  const int64_t M = p.M, N = p.N, K = p.K;
  const float *A = p.A.data(), *B = p.B.data();
  float* C = p.C.data();
  for (int64_t i = 0; i < M; i++) {
    float* c = C + i * N;
    std::fill(c, c + N, 0.0f);
    for (int64_t k = 0; k < K; k++) {
      const float a = A[i * K + k];
      const float* b = B + k * N;
      for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
    }
  }
}

// Blocking sizes shared by versions 3-6 (the production kernel's, chosen there
// by measurement): a KC x NC block of B is 256 x 768 floats = 768 KiB (L2),
// an MC x KC block of A about 64 KiB, a KC-long micro-panel of A 8 KiB (L1).
constexpr int64_t KC = 256, NC = 768, MC = 96;

// ---- 3. cache blocking: the i-k-j loops of version 2, but on blocks. A
// KC x NC block of B is loaded from memory once and then used by every row of
// A while it sits in L2; the NC floats of a C row stay in L1 across the KC
// steps. Same arithmetic, far less memory traffic at large sizes.
void v3_blocked(Problem& p) {
  const int64_t M = p.M, N = p.N, K = p.K;
  const float *A = p.A.data(), *B = p.B.data();
  float* C = p.C.data();
  std::fill(C, C + M * N, 0.0f);
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t j1 = std::min(N, jc + NC);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t k1 = std::min(K, pc + KC);
      for (int64_t i = 0; i < M; i++) {
        float* c = C + i * N;
        for (int64_t k = pc; k < k1; k++) {
          const float a = A[i * K + k];
          const float* b = B + k * N;
          for (int64_t j = jc; j < j1; j++) c[j] += a * b[j];
        }
      }
    }
  }
}

// ---- the packed driver of versions 4-6 ---------------------------------------
// A micro-kernel computes one MR x NR tile of C from a packed MR x kc panel of
// A (Ap[k][r]) and a packed kc x NR panel of B (Bp[k][c]): C += Ap Bp.
using Kernel = void (*)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc);

// A[i0 : i0+mc, k0 : k0+kc] -> panels of MR rows, k-major; rows past M are 0.
template <int MR>
void pack_a(const Problem& p, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float* Ap) {
  for (int64_t r0 = 0; r0 < mc; r0 += MR)
    for (int64_t k = 0; k < kc; k++)
      for (int r = 0; r < MR; r++)
        Ap[r0 * kc + k * MR + r] = r0 + r < mc ? p.A[(i0 + r0 + r) * p.K + k0 + k] : 0.0f;
}

// B[k0 : k0+kc, j0 : j0+nc] -> panels of NR columns, k-major; columns past N are 0.
template <int NR>
void pack_b(const Problem& p, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* Bp) {
  for (int64_t c0 = 0; c0 < nc; c0 += NR)
    for (int64_t k = 0; k < kc; k++)
      for (int c = 0; c < NR; c++)
        Bp[c0 * kc + k * NR + c] = c0 + c < nc ? p.B[(k0 + k) * p.N + j0 + c0 + c] : 0.0f;
}

struct AlignedBuffer {
  float* p;
  explicit AlignedBuffer(int64_t n) : p((float*)std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64)) {}
  ~AlignedBuffer() { std::free(p); }
  float* data() { return p; }
};

// Loops of the Goto/BLIS algorithm (the production kernel's, see
// kernels/cpu/matmul.cpp): pack a block of B, then blocks of A, and sweep the
// micro-kernel over the tiles. An edge tile is computed into a scratch tile.
template <int MR, int NR, Kernel kernel>
void packed_gemm(Problem& p) {
  const int64_t M = p.M, N = p.N, K = p.K;
  float* C = p.C.data();
  std::fill(C, C + M * N, 0.0f);
  constexpr int64_t mcb = (MC + MR - 1) / MR * MR, ncb = (NC + NR - 1) / NR * NR;
  // 64-byte aligned: a vector load that straddles two cache lines costs two
  // (with std::vector's 16-byte alignment this step loses a third of its speed).
  AlignedBuffer Ap(mcb * KC), Bp(ncb * KC);
  alignas(64) float tile[MR * NR];
  for (int64_t jc = 0; jc < N; jc += ncb) {
    const int64_t nc = std::min(ncb, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      pack_b<NR>(p, pc, kc, jc, nc, Bp.data());
      for (int64_t ic = 0; ic < M; ic += mcb) {
        const int64_t mc = std::min(mcb, M - ic);
        pack_a<MR>(p, ic, mc, pc, kc, Ap.data());
        for (int64_t ir = 0; ir < mc; ir += MR)
          for (int64_t jr = 0; jr < nc; jr += NR) {
            const float *ap = Ap.data() + ir * kc, *bp = Bp.data() + jr * kc;
            float* c = C + (ic + ir) * N + jc + jr;
            const int64_t mr = std::min<int64_t>(MR, mc - ir), nr = std::min<int64_t>(NR, nc - jr);
            if (mr == MR && nr == NR) {
              kernel(kc, ap, bp, c, N);
            } else {
              std::fill(tile, tile + MR * NR, 0.0f);
              kernel(kc, ap, bp, tile, NR);
              for (int64_t r = 0; r < mr; r++)
                for (int64_t q = 0; q < nr; q++) c[r * N + q] += tile[r * NR + q];
            }
          }
      }
    }
  }
}

// ---- 4. packing: copy the block of B into KC x NR panels and the block of A
// into MR x KC panels, in exactly the order the inner loops read them. Every
// load is now sequential from a small contiguous buffer (no TLB misses, no
// cache-set conflicts from rows N floats apart), and each packed value is
// used many times. The kernel is plain C++: a local MR x NR tile of C that
// the compiler vectorises as it sees fit (here: 4 vector accumulators, which
// cover only half of FMA latency x pipes, so this step tops out near 50%).
template <int MR, int NR>
void kernel_plain(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc) {
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; k++, Ap += MR, Bp += NR)
    for (int r = 0; r < MR; r++)
#pragma omp simd
      for (int c = 0; c < NR; c++) acc[r][c] += Ap[r] * Bp[c];
  for (int r = 0; r < MR; r++)
    for (int c = 0; c < NR; c++) C[r * ldc + c] += acc[r][c];
}
void v4_packed(Problem& p) { packed_gemm<4, 16, kernel_plain<4, 16>>(p); }

#ifdef NALA_LAB_X86
// ---- 5. register tile, AVX2+FMA: the 6 x 16 tile of C lives in 12 ymm
// registers for all kc steps. Per k: 2 loads of B, 6 broadcasts of A, 12
// FMAs; C is read and written once per kc steps instead of once per k. 12
// independent accumulators also cover the FMA latency (~4 cycles x 2 pipes).
__attribute__((target("avx2,fma"))) void kernel_avx2(int64_t kc, const float* Ap, const float* Bp, float* C,
                                                      int64_t ldc) {
  __m256 c0[6], c1[6];
#pragma GCC unroll 6
  for (int r = 0; r < 6; r++) c0[r] = _mm256_loadu_ps(C + r * ldc), c1[r] = _mm256_loadu_ps(C + r * ldc + 8);
  for (int64_t k = 0; k < kc; k++, Ap += 6, Bp += 16) {
    const __m256 b0 = _mm256_loadu_ps(Bp), b1 = _mm256_loadu_ps(Bp + 8);
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++) {
      const __m256 a = _mm256_broadcast_ss(Ap + r);
      c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < 6; r++) _mm256_storeu_ps(C + r * ldc, c0[r]), _mm256_storeu_ps(C + r * ldc + 8, c1[r]);
}
void v5_avx2(Problem& p) { packed_gemm<6, 16, kernel_avx2>(p); }

// ---- 6. register tile, AVX-512: twice the vector width and twice the
// registers (32 zmm): an 8 x 32 tile in 16 accumulators, 16 FMAs per k for 2
// loads of B and 8 broadcasts. The production micro-kernel.
__attribute__((target("avx512f"))) void kernel_avx512(int64_t kc, const float* Ap, const float* Bp, float* C,
                                                       int64_t ldc) {
  __m512 c0[8], c1[8];
#pragma GCC unroll 8
  for (int r = 0; r < 8; r++) c0[r] = _mm512_loadu_ps(C + r * ldc), c1[r] = _mm512_loadu_ps(C + r * ldc + 16);
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; k++, Ap += 8, Bp += 32) {
    const __m512 b0 = _mm512_loadu_ps(Bp), b1 = _mm512_loadu_ps(Bp + 16);
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) {
      const __m512 a = _mm512_set1_ps(Ap[r]);
      c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < 8; r++) _mm512_storeu_ps(C + r * ldc, c0[r]), _mm512_storeu_ps(C + r * ldc + 16, c1[r]);
}
void v6_avx512(Problem& p) { packed_gemm<8, 32, kernel_avx512>(p); }
#else
void v5_avx2(Problem& p) { v4_packed(p); }  // never run: cpu_has says no
void v6_avx512(Problem& p) { v4_packed(p); }
#endif

// ---- 7. threads: the production kernel, cpu::gemm. Version 6's loops and
// micro-kernel (chosen at compile time for the build's -march), with C cut
// into a 2-D grid of rectangles, one per thread (each packs its own panels),
// the rows of each C tile prefetched before its k loop (they are N floats
// apart, often in the same cache set), and what a library needs: transposes,
// alpha and beta, edge tiles, a no-packing path for tiny products.
void v7_production(Problem& p) {
  cpu::gemm(false, false, p.M, p.N, p.K, 1.0f, p.A.data(), p.K, p.B.data(), p.N, 0.0f, p.C.data(), p.N);
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: gemm [VERSION] [--size N] [--check] [--csv] [--threaded] [--min-time S]\n"
      "  C = A B with M = N = K = size (default 199; docs/kernels.md times 1024)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  const int64_t n = opt.size ? opt.size : 199;
  Problem p{n, n, n, {}, {}, {}, {}};
  p.A.resize(n * n), p.B.resize(n * n), p.C.resize(n * n), p.ref.resize(n * n);
  lab::fill_uniform(p.A, 1, -1.0f, 1.0f);
  lab::fill_uniform(p.B, 2, -1.0f, 1.0f);
  cpu::gemm_naive(false, false, n, n, n, 1.0f, p.A.data(), n, p.B.data(), n, 0.0f, p.ref.data(), n);

  lab::Task t;
  t.name = "forward";
  t.flops = 2.0 * n * n * n;
  t.bytes = 4.0 * 3 * n * n;  // A and B read, C written
  t.clear = [&] { std::fill(p.C.begin(), p.C.end(), NAN); };
  // float sums of K products in [-1, 1]: rounding grows ~ sqrt(K) eps; a lost
  // or doubled term is ~0.3 off.
  t.check = [&] { return lab::compare("C", p.C.data(), p.ref.data(), n * n, 1e-5 + 2e-7 * n, 1e-4); };

  using lab::Isa;
  std::vector<lab::Version> v = {
      {"naive i-j-k", 0, false, Isa::any, [&] { v1_naive(p); }},
      {"loop order i-k-j", 0, false, Isa::any, [&] { v2_ikj(p); }},
      {"cache blocking", 0, false, Isa::any, [&] { v3_blocked(p); }},
      {"packing (4x16 plain C++ tile)", 0, false, Isa::any, [&] { v4_packed(p); }},
      {"register tile 6x16, AVX2", 0, false, Isa::avx2, [&] { v5_avx2(p); }},
      {"register tile 8x32, AVX-512", 0, false, Isa::avx512, [&] { v6_avx512(p); }},
      {"threads: cpu::gemm (production)", 0, true, Isa::any, [&] { v7_production(p); }},
  };
  char desc[128];
  std::snprintf(desc, sizeof desc, "C[%lld, %lld] = A[%lld, %lld] B[%lld, %lld], float", (long long)n, (long long)n,
                (long long)n, (long long)n, (long long)n, (long long)n);
  return lab::run("gemm", desc, {t}, v, opt);
}
