// kernels/lab/gemm_cuda.cu - the GEMM lab, CUDA: from one thread per output
// to the tensor cores, one step at a time. Walkthrough: docs/kernels.md;
// harness: kernels/lab/lab_cuda.cuh.
//
//   C[M, N] = A[M, K] B[K, N]      row-major, here M = N = K = size
//
//   build/release/lab/gemm_cuda [VERSION] [--size N] [--check] [--csv]
//     default size 199 (odd: every edge path runs); docs/kernels.md times 4096
//
// Versions (each a short kernel below, or in the production header it names;
// the comment above it says what it changes and why):
//   1  naive                     one thread per C element, threads along m
//   2  coalesced                 threads along n: a warp reads one row of B
//   3  shared-memory tiles       32 x 32 tiles of A and B staged in shared memory
//   4  2-D register tiles        each thread computes 4 x 4 outputs of a 64 x 64 tile
//   5  float4 + double buffer    the production FP32 kernel (kernels/cuda/gemm_fp32.cuh,
//                                cuda::gemm's gemm_tiled 128 x 128 x 8)
//   6  tensor cores, mma.sync    bf16 in, float32 accumulate (kernels/cuda/gemm_bf16_mma.cuh)
//   7  wgmma + TMA, sm_90        warpgroup products fed by the copy engine through
//                                an mbarrier ring (kernels/cuda/gemm_bf16_wgmma.cuh)
// Versions 6 and 7 are cuda::gemm_bf16 (kernels/cuda/gemm_bf16.h) with its
// path forced; their operands are the float inputs rounded to bf16, and so
// is their reference's. They write float32 C. Their leading dims are padded
// to a multiple of 8 (16-byte rows: what TMA needs; the sizes stay odd).
// References: cpu::gemm_naive (double accumulation) up to size 1024, the
// (float) production CPU kernel cpu::gemm above.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cuda/gemm_bf16.h"
#include "kernels/cuda/gemm_fp32.cuh"
#include "kernels/lab/lab_cuda.cuh"

using namespace nala;

namespace {

struct Dev {
  int n;
  const float *A, *B;
  float* C;
};

// ---- 1. naive: thread (i, j) computes C[i][j] = sum_k A[i][k] B[k][j], with
// threadIdx.x along i. The 32 threads of a warp then read 32 different rows
// of A (K floats apart: 32 memory transactions for one instruction) and
// write a column of C; each B element they read is the same (a broadcast).
// Every operand comes from L2 or memory, n times over.
__global__ void v1_naive(Dev d) {
  const int i = blockIdx.x * 32 + threadIdx.x, j = blockIdx.y * 32 + threadIdx.y;
  if (i >= d.n || j >= d.n) return;
  float acc = 0.0f;
  for (int k = 0; k < d.n; k++) acc += d.A[(int64_t)i * d.n + k] * d.B[(int64_t)k * d.n + j];
  d.C[(int64_t)i * d.n + j] = acc;
}

// ---- 2. coalesced: the same arithmetic with threadIdx.x along j. A warp
// now reads 32 consecutive floats of a row of B (one 128-byte transaction)
// and one broadcast element of A, and writes 32 consecutive floats of C.
// The only change is which index the fast thread dimension walks.
__global__ void v2_coalesced(Dev d) {
  const int j = blockIdx.x * 32 + threadIdx.x, i = blockIdx.y * 32 + threadIdx.y;
  if (i >= d.n || j >= d.n) return;
  float acc = 0.0f;
  for (int k = 0; k < d.n; k++) acc += d.A[(int64_t)i * d.n + k] * d.B[(int64_t)k * d.n + j];
  d.C[(int64_t)i * d.n + j] = acc;
}

// ---- 3. shared-memory tiles: a 32 x 32 block of threads computes a 32 x 32
// tile of C. Per step it copies a 32 x 32 tile of A and one of B into shared
// memory (each thread one element of each, coalesced), synchronises, and
// every thread reads 32 pairs from shared memory. Each global element is now
// read by one thread instead of 32: global traffic drops 32 times, and the
// bound becomes shared-memory bandwidth (2 loads per FMA).
constexpr int T3 = 32;
__global__ void v3_smem(Dev d) {
  __shared__ float As[T3][T3], Bs[T3][T3 + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int j = blockIdx.x * T3 + tx, i = blockIdx.y * T3 + ty;
  float acc = 0.0f;
  for (int k0 = 0; k0 < d.n; k0 += T3) {
    As[ty][tx] = i < d.n && k0 + tx < d.n ? d.A[(int64_t)i * d.n + k0 + tx] : 0.0f;
    Bs[ty][tx] = k0 + ty < d.n && j < d.n ? d.B[(int64_t)(k0 + ty) * d.n + j] : 0.0f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < T3; k++) acc += As[ty][k] * Bs[k][tx];
    __syncthreads();
  }
  if (i < d.n && j < d.n) d.C[(int64_t)i * d.n + j] = acc;
}

// ---- 4. 2-D register tiles: 256 threads compute a 64 x 64 tile, each
// thread a 4 x 4 block of it in registers. Per k it loads 4 values of A and
// 4 of B from shared memory and does 16 FMAs: 0.5 loads per FMA instead of 2,
// so the FMA units, not shared memory, set the pace. Tiles of 64 x 8 (A) and
// 8 x 64 (B) per step; scalar loads, one shared buffer (load, sync, compute, sync).
constexpr int B4 = 64, K4 = 8;
__global__ void __launch_bounds__(256) v4_regtile(Dev d) {
  __shared__ float As[K4][B4], Bs[K4][B4];
  const int t = threadIdx.x, tx = t % 16, ty = t / 16;
  const int m0 = blockIdx.y * B4, n0 = blockIdx.x * B4;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < d.n; k0 += K4) {
    for (int e = t; e < B4 * K4; e += 256) {  // As[k][m] = A[m0 + m][k0 + k]; Bs[k][n] = B[k0 + k][n0 + n]
      const int am = e / K4, ak = e % K4, bk = e / B4, bn = e % B4;
      As[ak][am] = m0 + am < d.n && k0 + ak < d.n ? d.A[(int64_t)(m0 + am) * d.n + k0 + ak] : 0.0f;
      Bs[bk][bn] = k0 + bk < d.n && n0 + bn < d.n ? d.B[(int64_t)(k0 + bk) * d.n + n0 + bn] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < K4; k++) {
      float a[4], b[4];
#pragma unroll
      for (int r = 0; r < 4; r++) a[r] = As[k][ty * 4 + r], b[r] = Bs[k][tx * 4 + r];
#pragma unroll
      for (int r = 0; r < 4; r++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[r][c] += a[r] * b[c];
    }
    __syncthreads();
  }
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < 4; c++) {
      const int i = m0 + ty * 4 + r, j = n0 + tx * 4 + c;
      if (i < d.n && j < d.n) d.C[(int64_t)i * d.n + j] = acc[r][c];
    }
}

// ---- 5. float4 loads + double buffering: cuda::gemm's kernel itself
// (kernels/cuda/gemm_fp32.cuh), 128 x 128 x 8 tiles. Three changes: each
// thread owns 8 x 8 outputs (4 x 4 pieces spaced 64 apart: 64 accumulators,
// 1 shared load per 4 FMAs), every load is a float4 (global and shared), and
// two shared buffers let the next slice's global loads (into registers) fly
// while the current one is computed: one barrier per step, memory latency
// hidden behind FMAs.
void v5_production(const Dev& d) {
  cuda::fp32gemm::GemmParams p{};
  p.A = d.A, p.B = d.B, p.C = d.C;
  p.lda = p.ldb = p.ldc = d.n;
  p.M = p.N = p.K = d.n;
  p.splits = 1, p.kchunk = d.n, p.z0 = 0;
  p.alpha = 1.0f, p.beta = 0.0f;
  p.vecA = p.vecB = p.vecC = d.n % 4 == 0;  // cudaMalloc'd: aligned
  dim3 grid(lab::blocks_for(d.n, 128), lab::blocks_for(d.n, 128), 1);
  cuda::fp32gemm::gemm_tiled<128, 128, 8, false, false><<<grid, cuda::fp32gemm::THREADS>>>(p);
}

// ---- 6. tensor cores, mma.sync (bf16 in, float32 accumulate): one warp
// instruction multiplies a 16 x 16 by a 16 x 8 block of bf16, 4096 FLOP in a
// few cycles, against 64 for an FFMA instruction. The kernel
// (kernels/cuda/gemm_bf16_mma.cuh): 128 x 128 block tiles, each warp 64 x 32;
// fragments loaded by ldmatrix (8 rows of 16 bytes per lane group), slices
// of 32 k brought in by cp.async four deep (copies straight into shared
// memory, no registers, no waiting until they are needed).
// ---- 7. wgmma + TMA (sm_90): a warpgroup of 128 threads multiplies 64 x BN
// by BN x 16 in one asynchronous instruction, reading both operands from
// shared memory (no ldmatrix, no registers for B); the copy engine (TMA)
// moves whole 2-D boxes, swizzled, on the word of one thread, and counts
// the bytes on an mbarrier; a producer warpgroup keeps 4-8 stages in
// flight while two consumer warpgroups compute. Kernel:
// kernels/cuda/gemm_bf16_wgmma.cuh.
struct Bf16Problem {
  int n, ld;
  const __nv_bfloat16 *A, *B;
  float* C;
};
void v_bf16(const Bf16Problem& q, int path) {
  cuda::gemm_bf16_force_path(path);
  cuda::gemm_bf16(false, false, q.n, q.n, q.n, q.A, q.ld, q.B, q.ld, q.C, q.ld, false);
}

// C = A B on the host: double accumulation where cheap, else the CPU production kernel.
void reference(int n, int ld, const std::vector<float>& A, const std::vector<float>& B, std::vector<float>& C) {
  C.assign((size_t)n * ld, 0.0f);
  if (n <= 1024)
    cpu::gemm_naive(false, false, n, n, n, 1.0f, A.data(), ld, B.data(), ld, 0.0f, C.data(), ld);
  else
    cpu::gemm(false, false, n, n, n, 1.0f, A.data(), ld, B.data(), ld, 0.0f, C.data(), ld);
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: gemm_cuda [VERSION] [--size N] [--check] [--csv] [--min-time S]\n"
      "  C = A B with M = N = K = size (default 199; docs/kernels.md times 4096)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  const int n = (int)(opt.size ? opt.size : 199);
  const int ld = (n + 7) / 8 * 8;  // the bf16 versions' leading dim
  std::vector<float> A((size_t)n * n), B((size_t)n * n), ref;
  lab::fill_uniform(A, 1, -1.0f, 1.0f);
  lab::fill_uniform(B, 2, -1.0f, 1.0f);
  reference(n, n, A, B, ref);
  // The bf16 operands (padded rows, pads zero) and their float image for the reference.
  std::vector<__nv_bfloat16> Ah((size_t)n * ld, __float2bfloat16(0.0f)), Bh((size_t)n * ld, __float2bfloat16(0.0f));
  std::vector<float> Ar((size_t)n * ld, 0.0f), Br((size_t)n * ld, 0.0f), ref16;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < n; k++) {
      Ah[(size_t)i * ld + k] = __float2bfloat16(A[(size_t)i * n + k]);
      Bh[(size_t)i * ld + k] = __float2bfloat16(B[(size_t)i * n + k]);
      Ar[(size_t)i * ld + k] = __bfloat162float(Ah[(size_t)i * ld + k]);
      Br[(size_t)i * ld + k] = __bfloat162float(Bh[(size_t)i * ld + k]);
    }
  reference(n, ld, Ar, Br, ref16);

  lab::DeviceArray<float> dA(A), dB(B), dC((int64_t)n * n), dC16((int64_t)n * ld);
  lab::DeviceArray<__nv_bfloat16> hA(Ah), hB(Bh);
  const Dev d{n, dA, dB, dC};
  const Bf16Problem q{n, ld, hA, hB, dC16};

  const double flops = 2.0 * n * n * n;
  lab::Task t32, t16;
  t32.name = "fp32";
  t32.flops = flops;
  t32.bytes = 4.0 * 3 * n * n;  // A and B read, C written
  t32.clear = [&] { dC.poison(); };
  // Float sums of n products in [-1, 1]: rounding grows ~ sqrt(n) eps; a lost
  // or doubled term is ~0.3 off. (At 4096 the reference is itself float.)
  t32.check = [&] {
    std::vector<float> c = dC.download();
    return lab::compare("C", c.data(), ref.data(), (int64_t)n * n, 1e-5 + 4e-7 * n, 1e-4);
  };
  t16.name = "bf16";
  t16.flops = flops;
  t16.bytes = 2.0 * 2 * n * n + 4.0 * n * n;
  t16.clear = [&] { dC16.poison(); };
  // Exact bf16 products summed in float (tensor-core accumulation order and
  // rounding differ from the CPU's): the float tolerance, a little wider.
  t16.check = [&] {
    std::vector<float> c = dC16.download();
    lab::Check all;
    for (int i = 0; i < n && all.ok; i++)
      all = lab::both(all, lab::compare("C", c.data() + (size_t)i * ld, ref16.data() + (size_t)i * ld, n,
                                        1e-4 + 1e-6 * n, 1e-3));
    return all;
  };

  using lab::Unit;
  const dim3 b32(32, 32), g32(lab::blocks_for(n, 32), lab::blocks_for(n, 32));
  const dim3 g64(lab::blocks_for(n, B4), lab::blocks_for(n, B4));
  std::vector<lab::GpuVersion> v = {
      {"naive (threads along m)", 0, Unit::fp32, 0, [&] { v1_naive<<<g32, b32>>>(d); }},
      {"coalesced (threads along n)", 0, Unit::fp32, 0, [&] { v2_coalesced<<<g32, b32>>>(d); }},
      {"shared-memory tiles 32x32", 0, Unit::fp32, 0, [&] { v3_smem<<<g32, b32>>>(d); }},
      {"2-D register tiles 4x4", 0, Unit::fp32, 0, [&] { v4_regtile<<<g64, 256>>>(d); }},
      {"float4 + double buffer (cuda::gemm)", 0, Unit::fp32, 0, [&] { v5_production(d); }},
      {"tensor cores mma.sync bf16", 1, Unit::bf16, 80, [&] { v_bf16(q, 6); }},
      {"wgmma + TMA, sm_90 (gemm_bf16)", 1, Unit::bf16, 90, [&] { v_bf16(q, 7); }},
  };
  char desc[160];
  std::snprintf(desc, sizeof desc, "C[%d, %d] = A[%d, %d] B[%d, %d]; versions 1-5 float, 6-7 bf16 in, float out", n,
                n, n, n, n, n);
  const int rc = lab::run_gpu("gemm", desc, {t32, t16}, v, opt);
  cuda::gemm_bf16_force_path(0);
  return rc;
}
