// kernels/cpu/matmul.cpp - single-precision GEMM, Goto/BLIS style.
//
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C      (row-major)
//
// Letters: M rows of C, N columns of C, K the summed dimension. MR x NR is the
// register tile, MC x KC the block of op(A) packed per step, KC x NC the block
// of op(B) packed per step.
//
// How the fast path works (gemm_serial):
//   for jc in N step NC:                 (columns of one thread's part of C)
//     for pc in K step KC:
//       pack op(B)[pc:, jc:] into KC x NR micro-panels   (Bp, stays in L2)
//       for ic in M step MC:
//         pack op(A)[ic:, pc:] into MR x KC micro-panels (Ap)
//         for each A micro-panel (MR x KC, stays in L1):
//           for each B micro-panel: micro-kernel: MR x NR tile of C in registers
// Packing reads op(A) and op(B) through their transposes, so the four
// transpose combinations share one micro-kernel; packing pads with zeros to
// whole tiles, and edge tiles are written through a small scratch tile.
// alpha is applied when a tile is stored; beta only on the first KC block
// (later blocks accumulate); beta == 0 never reads C, so NaN garbage in C
// is overwritten.
//
// Threads: C is cut into a grid of rectangles (along whichever of M or N is
// larger), one per thread, each running gemm_serial with its own packing
// buffers; a long cut is made into a few more pieces than threads, handed out
// dynamically. Inside an enclosing parallel region gemm runs on one thread (no
// nested parallelism). Tiny products skip packing altogether (gemm_small).
//
// Micro-kernels (kernels/cpu/gemm_kernels.h): AVX-512 (MR 8, NR 32: 16 zmm
// accumulators), AVX2+FMA (MR 6, NR 16: 12 ymm accumulators), and a portable
// one (MR 4, NR 16) that the compiler vectorises as it can. On x86-64 both
// vector kernels are in every build; the first call picks the best the CPU
// runs (AVX-512F, else AVX2 and FMA, else portable), NALA_GEMM_KERNEL=
// avx512|avx2|portable or set_gemm_kernel() asks for another (benchmarks,
// tests). Packing and the loops are templates on the kernel, so each runs
// with its own tile and cache blocking.
#include "kernels/cpu/matmul.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm_kernels.h"
#include "tensor/error.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace nala {
namespace cpu {

// ---- the reference --------------------------------------------------------

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

namespace {

using namespace gemm_detail;

// An edge tile (mr < MR or nr < NR), or any tile of a transposed C (cs !=
// 1): compute the whole tile into scratch, then merge the valid part into
// element (r, c) at C[r * rs + c * cs].
template <class Kern>
void edge_kernel(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t rs, int64_t cs, int64_t mr,
                 int64_t nr, float alpha, float beta, const float* bias = nullptr) {
  constexpr int MR = Kern::MR, NR = Kern::NR;
  alignas(64) float t[MR * NR];
  Kern::micro(kc, Ap, Bp, t, NR, alpha, 0.0f);
  if (cs != 1) {  // transposed: walk C's rows (the tile's columns) outermost
    for (int64_t c = 0; c < nr; c++)
      for (int64_t r = 0; r < mr; r++)
        C[r * rs + c * cs] = t[r * NR + c] + (beta == 0.0f ? 0.0f : beta * C[r * rs + c * cs]);
    return;
  }
  for (int64_t r = 0; r < mr; r++)
    for (int64_t c = 0; c < nr; c++)
      C[r * rs + c] = (t[r * NR + c] + (beta == 0.0f ? 0.0f : beta * C[r * rs + c])) + (bias ? bias[c] : 0.0f);
}

// ---- packing ----------------------------------------------------------------

// op(A)[i0 : i0+mc, k0 : k0+kc] -> micro-panels of MR rows: Ap[p][k][r].
template <int MR>
void pack_a(bool ta, const float* A, int64_t lda, int64_t i0, int64_t k0, int64_t mc, int64_t kc, float* Ap) {
  for (int64_t p = 0; p < mc; p += MR) {
    int64_t mr = std::min<int64_t>(MR, mc - p);
    float* dst = Ap + p * kc;
    if (ta) {  // op(A)[i][k] = A[k][i]: MR contiguous values per k
      for (int64_t k = 0; k < kc; k++) {
        const float* src = A + (k0 + k) * lda + i0 + p;
        float* d = dst + k * MR;
        for (int64_t r = 0; r < mr; r++) d[r] = src[r];
        for (int64_t r = mr; r < MR; r++) d[r] = 0.0f;
      }
    } else {  // a row of A per r, scattered with stride MR
      for (int64_t r = 0; r < mr; r++) {
        const float* src = A + (i0 + p + r) * lda + k0;
        for (int64_t k = 0; k < kc; k++) dst[k * MR + r] = src[k];
      }
      for (int64_t r = mr; r < MR; r++)
        for (int64_t k = 0; k < kc; k++) dst[k * MR + r] = 0.0f;
    }
  }
}

#ifdef NALA_GEMM_X86
// dst[i * ldd + j] = src[j * lds + i] for an 8 x 8 block, in registers: 8
// row loads, 24 shuffles, 8 stores, where the scalar scatter takes 64 loads
// and 64 stores to 64 different cache lines' worth of stride.
__attribute__((target("avx2"))) void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; i++) {
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}
bool have_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
#endif

// op(B)[k0 : k0+kc, j0 : j0+nc] -> micro-panels of NR columns: Bp[p][k][c].
template <int NR>
void pack_b(bool tb, const float* B, int64_t ldb, int64_t k0, int64_t j0, int64_t kc, int64_t nc, float* Bp) {
  for (int64_t p = 0; p < nc; p += NR) {
    int64_t nr = std::min<int64_t>(NR, nc - p);
    float* dst = Bp + p * kc;
    if (!tb) {  // NR contiguous values of a row of B per k
      for (int64_t k = 0; k < kc; k++) {
        const float* src = B + (k0 + k) * ldb + j0 + p;
        float* d = dst + k * NR;
        if (nr == NR) {
          std::memcpy(d, src, NR * sizeof(float));
        } else {
          for (int64_t c = 0; c < nr; c++) d[c] = src[c];
          for (int64_t c = nr; c < NR; c++) d[c] = 0.0f;
        }
      }
    } else {  // op(B)[k][j] = B[j][k]: a row of B per c, scattered with stride NR
      int64_t c0 = 0;
#ifdef NALA_GEMM_X86
      if (have_avx2() && NR % 8 == 0) {  // whole 8 x 8 blocks transposed in registers
        const int64_t k8 = kc / 8 * 8;
        for (; c0 + 8 <= nr; c0 += 8) {
          const float* src = B + (j0 + p + c0) * ldb + k0;
          for (int64_t k = 0; k < k8; k += 8) transpose8x8(src + k, ldb, dst + k * NR + c0, NR);
          for (int64_t c = c0; c < c0 + 8; c++)
            for (int64_t k = k8; k < kc; k++) dst[k * NR + c] = B[(j0 + p + c) * ldb + k0 + k];
        }
      }
#endif
      for (int64_t c = c0; c < nr; c++) {
        const float* src = B + (j0 + p + c) * ldb + k0;
        for (int64_t k = 0; k < kc; k++) dst[k * NR + c] = src[k];
      }
      for (int64_t c = nr; c < NR; c++)
        for (int64_t k = 0; k < kc; k++) dst[k * NR + c] = 0.0f;
    }
  }
}

// The packing buffers fit every kernel's blocks.
constexpr int64_t kPackA = 128 * 256, kPackB = 768 * 256;
static_assert(PortableKernel::MC * PortableKernel::KC <= kPackA && PortableKernel::NC_MAX * PortableKernel::KC <= kPackB,
              "pack buffers");
#ifdef NALA_GEMM_X86
static_assert(Avx512Kernel::MC * Avx512Kernel::KC <= kPackA && Avx512Kernel::NC_MAX * Avx512Kernel::KC <= kPackB,
              "pack buffers");
static_assert(Avx2Kernel::MC * Avx2Kernel::KC <= kPackA && Avx2Kernel::NC_MAX * Avx2Kernel::KC <= kPackB,
              "pack buffers");
#endif

// Per-thread packing buffers, allocated once per thread and reused.
struct PackBuffers {
  float* a = nullptr;
  float* b = nullptr;
  PackBuffers() {
    a = (float*)std::aligned_alloc(64, kPackA * sizeof(float));
    b = (float*)std::aligned_alloc(64, kPackB * sizeof(float));
  }
  ~PackBuffers() {
    std::free(a);
    std::free(b);
  }
  PackBuffers(const PackBuffers&) = delete;
  PackBuffers& operator=(const PackBuffers&) = delete;
};

PackBuffers& pack_buffers() {
  static thread_local PackBuffers buf;
  return buf;
}

// This CPU's L2 per core in bytes, 0 when the system does not say.
int64_t l2_bytes() {
  static const int64_t l2 = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE
    long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return v > 0 ? (int64_t)v : (int64_t)0;
#else
    return (int64_t)0;
#endif
  }();
  return l2;
}

// Columns of op(B) packed per block: Kern::NC_MAX, lowered so that the packed
// block (KC x NC floats) takes at most 3/4 of the L2 (a 256 KiB L2: 192
// columns), in whole tiles, at least 4 tiles. An L2 size the system does not
// report leaves NC_MAX.
template <class Kern>
int64_t nc_block() {
  const int64_t l2 = l2_bytes();
  if (l2 <= 0) return Kern::NC_MAX;
  int64_t nc = l2 * 3 / 4 / (Kern::KC * (int64_t)sizeof(float)) / Kern::NR * Kern::NR;
  return std::max<int64_t>(4 * Kern::NR, std::min<int64_t>(Kern::NC_MAX, nc));
}

// One thread's rectangle: C[i0 : i0+m, j0 : j0+n], element (i, j) at
// C[i * rs + j * cs] (cs 1: row-major with ldc rs; rs 1: C stored transposed).
template <class Kern>
void gemm_serial(bool ta, bool tb, int64_t i0, int64_t m, int64_t j0, int64_t n, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t rs,
                 int64_t cs, const float* bias = nullptr) {
  constexpr int MR = Kern::MR, NR = Kern::NR;
  constexpr int64_t KC = Kern::KC, MC = Kern::MC;
  const int64_t NC = nc_block<Kern>();
  PackBuffers& buf = pack_buffers();
  // A row-major A (not transposed) with a short K is read in place by the
  // micro-kernel instead of being packed: with K <= KC the copy is as long
  // as one pass of the products over a panel of B, and A's MR rows of kc
  // floats stay in L1 across the panel's column tiles anyway.
  const bool direct = !ta && K <= KC && cs == 1;
  for (int64_t jc = j0; jc < j0 + n; jc += NC) {
    int64_t nc = std::min(NC, j0 + n - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      int64_t kc = std::min(KC, K - pc);
      float bet = pc == 0 ? beta : 1.0f;
      pack_b<NR>(tb, B, ldb, pc, jc, kc, nc, buf.b);
      for (int64_t ic = i0; ic < i0 + m; ic += MC) {
        int64_t mc = std::min(MC, i0 + m - ic);
        if (!direct) pack_a<MR>(ta, A, lda, ic, pc, mc, kc, buf.a);
        for (int64_t ir = 0; ir < mc; ir += MR) {
          int64_t mr = std::min<int64_t>(MR, mc - ir);
          float* ap = buf.a + ir * kc;
          const float* arow = A + (ic + ir) * lda + pc;  // direct: the panel's first row, in place
          if (direct && mr < MR) pack_a<MR>(ta, A, lda, ic + ir, pc, mr, kc, ap);  // the last rows: packed
          for (int64_t jr = 0; jr < nc; jr += NR) {
            int64_t nr = std::min<int64_t>(NR, nc - jr);
            float* c = C + (ic + ir) * rs + (jc + jr) * cs;
            const float* bj = bias && pc + kc >= K ? bias + jc + jr : nullptr;  // once, with the last K block
            if (mr == MR && nr == NR && cs == 1) {
              if (direct)
                Kern::micro_direct(kc, arow, lda, buf.b + jr * kc, c, rs, alpha, bet, bj);
              else
                Kern::micro(kc, ap, buf.b + jr * kc, c, rs, alpha, bet, bj);
            } else if (direct && mr == MR) {  // a narrow last column tile: this panel packed once
              if (jr + NR >= nc) pack_a<MR>(ta, A, lda, ic + ir, pc, mr, kc, ap);
              edge_kernel<Kern>(kc, ap, buf.b + jr * kc, c, rs, cs, mr, nr, alpha, bet, bj);
            } else {
              edge_kernel<Kern>(kc, ap, buf.b + jr * kc, c, rs, cs, mr, nr, alpha, bet, bj);
            }
          }
        }
      }
    }
  }
}

// Small products: no packing. Scale C by beta, then add alpha * a_ik * row k
// of op(B) (or a dot product when B is transposed).
void gemm_small(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++) {
    float* c = C + i * ldc;
    if (tb) {
      for (int64_t j = 0; j < N; j++) {
        float acc = 0.0f;
        for (int64_t k = 0; k < K; k++) acc += (ta ? A[k * lda + i] : A[i * lda + k]) * B[j * ldb + k];
        c[j] = alpha * acc + (beta == 0.0f ? 0.0f : beta * c[j]);
      }
    } else {
      for (int64_t j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
      for (int64_t k = 0; k < K; k++) {
        float a = alpha * (ta ? A[k * lda + i] : A[i * lda + k]);
        const float* b = B + k * ldb;
        for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
      }
    }
  }
}

// ---- the kernel in use ----------------------------------------------------------

bool cpu_has(GemmKernel k) {
#ifdef NALA_GEMM_X86
  __builtin_cpu_init();
  if (k == GemmKernel::Avx512) return __builtin_cpu_supports("avx512f");
  if (k == GemmKernel::Avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  if (k != GemmKernel::Portable) return false;
#endif
  return true;
}

// The best this CPU runs, unless NALA_GEMM_KERNEL names another it can run.
GemmKernel initial_kernel() {
  GemmKernel best = cpu_has(GemmKernel::Avx512) ? GemmKernel::Avx512
                    : cpu_has(GemmKernel::Avx2) ? GemmKernel::Avx2
                                                : GemmKernel::Portable;
  const char* env = std::getenv("NALA_GEMM_KERNEL");
  if (!env || !*env) return best;
  for (GemmKernel k : {GemmKernel::Avx512, GemmKernel::Avx2, GemmKernel::Portable})
    if (std::strcmp(env, gemm_kernel_name(k)) == 0) {
      NALA_CHECK(gemm_kernel_supported(k), "NALA_GEMM_KERNEL=", env, ": this CPU or build cannot run that kernel "
                 "(it runs ", gemm_kernel_name(best), ")");
      return k;
    }
  NALA_FAIL("NALA_GEMM_KERNEL=", env, ": unknown kernel (avx512, avx2 or portable)");
}

std::atomic<int>& kernel_slot() {
  static std::atomic<int> k{(int)initial_kernel()};
  return k;
}

}  // namespace

const char* gemm_kernel_name(GemmKernel k) {
  switch (k) {
    case GemmKernel::Avx512: return "avx512";
    case GemmKernel::Avx2: return "avx2";
    default: return "portable";
  }
}

bool gemm_kernel_supported(GemmKernel k) { return cpu_has(k); }

GemmKernel gemm_kernel() { return (GemmKernel)kernel_slot().load(std::memory_order_relaxed); }

void set_gemm_kernel(GemmKernel k) {
  NALA_CHECK(gemm_kernel_supported(k), "set_gemm_kernel: this CPU or build cannot run the ", gemm_kernel_name(k),
             " kernel");
  kernel_slot().store((int)k, std::memory_order_relaxed);
}

namespace {

// The product with kernel Kern, cut across threads; C's element (i, j) at
// C[i * rs + j * cs] (see gemm_serial).
template <class Kern>
void gemm_cut(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t rs, int64_t cs, double work,
              const float* bias = nullptr) {
  int nt = 1;
#ifdef _OPENMP
  if (!omp_in_parallel()) nt = omp_get_max_threads();
#endif
  // Each thread should get at least a few register tiles worth of work.
  nt = (int)std::min<double>(nt, std::max(1.0, work / (64.0 * 64 * 64)));
  if (nt <= 1) {
    gemm_serial<Kern>(ta, tb, 0, M, 0, N, K, alpha, A, lda, B, ldb, beta, C, rs, cs, bias);
    return;
  }
#ifdef _OPENMP
  // A grid tm x tn = nt of rectangles, cutting the dimension with more tiles.
  constexpr int MR = Kern::MR, NR = Kern::NR;
  int64_t mt = (M + MR - 1) / MR, ntl = (N + NR - 1) / NR;
  int tm = 1, tn = nt;
  double best = -1;
  for (int d = 1; d <= nt; d++) {
    if (nt % d) continue;
    double q = std::min((double)mt / d, (double)ntl / (nt / d));  // tiles per thread, smaller side
    if (q > best) best = q, tm = d, tn = nt / d;
  }
  // A long single cut: more pieces than threads, handed out dynamically, so a
  // thread that the OS pauses (the cores may be shared) holds up less. Each
  // piece stays big enough that repacking the other operand costs little.
  // (Each piece repacks all of B: cheap for a plain B, a copy; a transposed
  // B goes 8 x 8 through registers, see pack_b.)
  int64_t pieces = 0;
  if (tn == 1 && M >= 2 * nt * 256) pieces = std::min<int64_t>(8 * nt, M / 256);
  if (tm == 1 && N >= 2 * nt * 512) pieces = std::min<int64_t>(8 * nt, N / 512);
  if (pieces > 0) {
    bool rows = tn == 1;
    int64_t tiles = rows ? mt : ntl, unit = rows ? MR : NR;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t p = 0; p < pieces; p++) {
      int64_t lo = tiles * p / pieces * unit, hi = std::min(rows ? M : N, tiles * (p + 1) / pieces * unit);
      if (hi <= lo) continue;
      if (rows)
        gemm_serial<Kern>(ta, tb, lo, hi - lo, 0, N, K, alpha, A, lda, B, ldb, beta, C, rs, cs, bias);
      else
        gemm_serial<Kern>(ta, tb, 0, M, lo, hi - lo, K, alpha, A, lda, B, ldb, beta, C, rs, cs, bias);
    }
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    int t = omp_get_thread_num();
    int ti = t / tn, tj = t % tn;
    int64_t ri0 = mt * ti / tm * MR, ri1 = std::min(M, mt * (ti + 1) / tm * MR);
    int64_t cj0 = ntl * tj / tn * NR, cj1 = std::min(N, ntl * (tj + 1) / tn * NR);
    if (ri1 > ri0 && cj1 > cj0)
      gemm_serial<Kern>(ta, tb, ri0, ri1 - ri0, cj0, cj1 - cj0, K, alpha, A, lda, B, ldb, beta, C, rs, cs, bias);
  }
#endif
}

// A C narrower than half a register tile (N <= NR / 2, e.g. a 16-channel
// convolution under the 32-wide AVX-512 tile) would waste half the FMAs or
// more: compute C^T = op(B)^T op(A)^T instead, whose rows (N) are cut in
// tiles of MR, and store each tile transposed. Otherwise the plain product.
template <class Kern>
bool transposed_c(int64_t M, int64_t N) {
  const int64_t pad_n = (N + Kern::NR - 1) / Kern::NR * Kern::NR, pad_t = (N + Kern::MR - 1) / Kern::MR * Kern::MR;
  return 2 * N <= Kern::NR && pad_t < pad_n && M >= 4 * Kern::NR;
}

// bias (nullable): added to every row of C, in the micro-kernels' store
// for the plain product, after it for the transposed one.
template <class Kern>
void gemm_threaded(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                   const float* B, int64_t ldb, float beta, float* C, int64_t ldc, double work, const float* bias) {
  if (transposed_c<Kern>(M, N)) {
    gemm_cut<Kern>(!tb, !ta, N, M, K, alpha, B, ldb, A, lda, beta, C, 1, ldc, work);
    if (bias) linear_bias_forward(C, bias, M, N);
  } else {
    gemm_cut<Kern>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 1, work, bias);
  }
}

// gemm, and linear_forward's C = op(A) op(B) + bias: the kernel of this CPU,
// the small and empty products apart (their bias added after).
void gemm_bias(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias) {
  if (M <= 0 || N <= 0) return;
  const double work = (double)M * N * K;
  if (K <= 0 || alpha == 0.0f) {  // C = beta * C
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
  } else if (work < 32.0 * 32 * 32) {
    gemm_small(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    switch (gemm_kernel()) {
#ifdef NALA_GEMM_X86
      case GemmKernel::Avx512:
        return gemm_threaded<Avx512Kernel>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, work, bias);
      case GemmKernel::Avx2:
        return gemm_threaded<Avx2Kernel>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, work, bias);
#endif
      default:
        return gemm_threaded<PortableKernel>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, work, bias);
    }
  }
  if (bias) linear_bias_forward(C, bias, M, N);  // ldc == N: linear_forward's Y
}

}  // namespace

// ---- the entry point --------------------------------------------------------

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_bias(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nullptr);
}

// Y = X W^T + bias: the bias in the same pass over Y where the plain product runs.
void linear_forward(float* Y, const float* X, const float* W, const float* bias, int64_t R, int64_t O, int64_t I) {
  gemm_bias(false, true, R, O, I, 1.0f, X, I, W, I, 0.0f, Y, O, bias);
}

void linear_forward_epilogue(float* Y, const float* X, const float* W, const float* bias, int64_t R, int64_t O,
                             int64_t I, const LinearEpilogue& e) {
  float* y = e.pre ? e.pre : Y;  // the product
  linear_forward(y, X, W, bias, R, O, I);
  linear_epilogue_apply(Y, y, e, R, O);
}

void linear_epilogue_apply(float* Y, const float* y, const LinearEpilogue& e, int64_t R, int64_t O) {
  linear_epilogue_passes(Y, y, e, R, O, gelu_forward, scale_add_forward, copy);
}

void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                  int64_t ldc, int64_t stride_c, int64_t batch) {
  for (int64_t b = 0; b < batch; b++)
    gemm(ta, tb, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b, ldb, beta, C + b * stride_c, ldc);
}

// ---- linear bias --------------------------------------------------------------

void linear_bias_forward(float* Y, const float* bias, int64_t R, int64_t N) {
#pragma omp parallel for schedule(static) if (R * N > 32768)
  for (int64_t r = 0; r < R; r++) {
    float* y = Y + r * N;
#pragma omp simd
    for (int64_t n = 0; n < N; n++) y[n] += bias[n];
  }
}

void linear_bias_backward_naive(float* dbias, const float* dY, int64_t R, int64_t N) {
  for (int64_t n = 0; n < N; n++) {
    double s = 0;
    for (int64_t r = 0; r < R; r++) s += dY[r * N + n];
    dbias[n] = (float)s;
  }
}

// Column sums in fixed chunks of rows (partial sums per chunk in parallel,
// then the chunks added in order): the result does not depend on the
// number of threads.
void linear_bias_backward(float* dbias, const float* dY, int64_t R, int64_t N) {
  constexpr int64_t CHUNK = 256;
  int64_t nchunks = (R + CHUNK - 1) / CHUNK;
  if (nchunks <= 1 || N == 0) {
    for (int64_t n = 0; n < N; n++) dbias[n] = 0.0f;
    for (int64_t r = 0; r < R; r++)
      for (int64_t n = 0; n < N; n++) dbias[n] += dY[r * N + n];
    return;
  }
  std::unique_ptr<float[]> part(new float[nchunks * N]);
#pragma omp parallel for schedule(static) if (R * N > 32768)
  for (int64_t c = 0; c < nchunks; c++) {
    float* p = part.get() + c * N;
    for (int64_t n = 0; n < N; n++) p[n] = 0.0f;
    for (int64_t r = c * CHUNK; r < std::min(R, (c + 1) * CHUNK); r++) {
      const float* g = dY + r * N;
#pragma omp simd
      for (int64_t n = 0; n < N; n++) p[n] += g[n];
    }
  }
  for (int64_t n = 0; n < N; n++) dbias[n] = 0.0f;
  for (int64_t c = 0; c < nchunks; c++) {
    const float* p = part.get() + c * N;
    for (int64_t n = 0; n < N; n++) dbias[n] += p[n];
  }
}

void linear_backward_weight_bias(float* dW, float* db, const float* dY, const float* X, int64_t R, int64_t O,
                                 int64_t I) {
  gemm(true, false, O, I, R, 1.0f, dY, O, X, I, 0.0f, dW, I);
  linear_bias_backward(db, dY, R, O);
}

}  // namespace cpu
}  // namespace nala
