// kernels/cuda/matmul.cu - single-precision GEMM on row-major device matrices
// (FP32 FFMA, no tensor cores) and the bias of a linear layer. The CPU
// kernels in kernels/cpu/matmul.cpp are the reference; the contract is in
// kernels/cpu/matmul.h.
//
// Letters: M, N the rows and columns of C, K the summed size; BM x BN the
// tile of C one block computes, BK the slice of K staged per step; R the rows
// of a linear layer's output Y[R, N].
//
//   C[M, N] = alpha * op(A) op(B) + beta * C   (beta = 0 overwrites, even NaN)
//
// gemm_tiled: 256 threads per block, a 16 x 16 grid of threads; each thread
//   owns (BM/16) x (BN/16) outputs in 4 x 4 pieces spaced 64 apart (rows
//   g*64 + ty*4 + i, columns g*64 + tx*4 + j), so its shared-memory reads and
//   its stores of C are float4s consecutive across the warp. Per step every
//   thread loads one float4 of A and one of B (global -> registers) while the
//   block computes on the other shared buffer (double buffering, one barrier
//   per step). Tiles are kept k-major in shared memory (As[k][m], Bs[k][n])
//   whatever the transposes: the four cases differ only in how the tiles are
//   loaded. Shapes: 128 x 128 x 8 when there are enough tiles to fill the
//   GPU and they do not pad much more than small ones, else 64 x 64 x 16. Rows/columns/k outside the matrices load zeros
//   and are not stored; float4 global loads only where the pointer, leading
//   dim and batch stride allow it (else scalar).
// Split-K: when even the small tiles leave SMs idle and K is long (the weight
//   gradient of a linear layer: M, N small, K = all rows), K is cut into
//   slices whose partial products go to a workspace [batch, splits, M, N];
//   a second kernel adds the slices in order (deterministic) and applies
//   alpha and beta.
//
// linear_bias_forward: Y[r, :] += bias (accumulates, like the CPU kernel).
// linear_bias_backward: dbias = column sums of dY (overwrites): partial sums
//   over fixed chunks of rows, then the chunk sums added in a fixed order -
//   two passes, no atomics, the same bits every run.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/matmul.h"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {

constexpr int THREADS = 256;
constexpr int PAD = 4;  // shared rows padded by a float4: fewer bank conflicts, float4 alignment kept

struct GemmParams {
  const float* A;
  const float* B;
  float* C;
  int64_t lda, ldb, ldc;
  int64_t sA, sB, sC;  // A, B per batch; C per z = batch * splits + slice
  int M, N, K;
  int splits, kchunk;  // slice s covers k in [s * kchunk, min(K, (s + 1) * kchunk))
  int z0;              // first z of this launch (grid.z is at most 65535)
  float alpha, beta;
  bool vecA, vecB, vecC;  // float4 global access allowed
};

// One float4's worth (per thread) of a BX x BK tile of an operand into
// registers: tile rows x in [x0, x0 + BX), k in [kt, kt + BK); zeros where
// x >= xmax or k >= kend. KC: the operand stores k contiguously (X[x * ld + k]);
// otherwise x is contiguous (X[k * ld + x]).
template <int BX, int BK, bool KC>
__device__ __forceinline__ void load_tile(const float* X, int64_t ld, int x0, int xmax, int kt, int kend, bool vec,
                                          float (&r)[4]) {
  const int t = threadIdx.x;
  if (KC) {
    const int x = x0 + t / (BK / 4), k = kt + (t % (BK / 4)) * 4;
    const float* src = X + (int64_t)x * ld + k;
    if (vec && x < xmax && k + 3 < kend) {
      float4 v = __ldg(reinterpret_cast<const float4*>(src));
      r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; i++) r[i] = (x < xmax && k + i < kend) ? __ldg(src + i) : 0.0f;
    }
  } else {
    const int k = kt + t / (BX / 4), x = x0 + (t % (BX / 4)) * 4;
    const float* src = X + (int64_t)k * ld + x;
    if (vec && k < kend && x + 3 < xmax) {
      float4 v = __ldg(reinterpret_cast<const float4*>(src));
      r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; i++) r[i] = (k < kend && x + i < xmax) ? __ldg(src + i) : 0.0f;
    }
  }
}

// The registers of load_tile into the k-major shared tile S[k][x].
template <int BX, int BK, bool KC>
__device__ __forceinline__ void store_tile(float (*S)[BX + PAD], const float (&r)[4]) {
  const int t = threadIdx.x;
  if (KC) {
    const int x = t / (BK / 4), k = (t % (BK / 4)) * 4;
#pragma unroll
    for (int i = 0; i < 4; i++) S[k + i][x] = r[i];
  } else {
    const int k = t / (BX / 4), x = (t % (BX / 4)) * 4;
    *reinterpret_cast<float4*>(&S[k][x]) = make_float4(r[0], r[1], r[2], r[3]);
  }
}

template <int BM, int BN, int BK, bool TA, bool TB>
__global__ void __launch_bounds__(THREADS, BM >= 128 ? 2 : 1) gemm_tiled(GemmParams p) {
  static_assert(BM * BK == 4 * THREADS && BN * BK == 4 * THREADS, "one float4 of A and of B per thread per step");
  static_assert(BM % 64 == 0 && BN % 64 == 0, "thread tiles are 4 x 4 pieces spaced 64 apart");
  constexpr int GM = BM / 64, GN = BN / 64;
  __shared__ __align__(16) float As[2][BK][BM + PAD];
  __shared__ __align__(16) float Bs[2][BK][BN + PAD];

  const int t = threadIdx.x, tx = t % 16, ty = t / 16;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int z = blockIdx.z + p.z0, b = z / p.splits, s = z % p.splits;
  const float* A = p.A + b * p.sA;
  const float* B = p.B + b * p.sB;
  float* C = p.C + z * p.sC;
  const int kbeg = s * p.kchunk, kend = min(p.K, kbeg + p.kchunk);

  float acc[GM * 4][GN * 4];
#pragma unroll
  for (int i = 0; i < GM * 4; i++)
#pragma unroll
    for (int j = 0; j < GN * 4; j++) acc[i][j] = 0.0f;

  // op(A) is M x K: A stores k contiguously unless transposed. op(B) is K x N:
  // B stores k contiguously only when transposed.
  float ra[4], rb[4];
  load_tile<BM, BK, !TA>(A, p.lda, m0, p.M, kbeg, kend, p.vecA, ra);
  load_tile<BN, BK, TB>(B, p.ldb, n0, p.N, kbeg, kend, p.vecB, rb);
  store_tile<BM, BK, !TA>(As[0], ra);
  store_tile<BN, BK, TB>(Bs[0], rb);
  __syncthreads();

  int buf = 0;
  for (int kt = kbeg; kt < kend; kt += BK) {
    const bool next = kt + BK < kend;
    if (next) {  // the next step's loads are in flight while this one computes
      load_tile<BM, BK, !TA>(A, p.lda, m0, p.M, kt + BK, kend, p.vecA, ra);
      load_tile<BN, BK, TB>(B, p.ldb, n0, p.N, kt + BK, kend, p.vecB, rb);
    }
#pragma unroll
    for (int k = 0; k < BK; k++) {
      float a[GM * 4], bv[GN * 4];
#pragma unroll
      for (int g = 0; g < GM; g++) {
        float4 v = *reinterpret_cast<const float4*>(&As[buf][k][g * 64 + ty * 4]);
        a[g * 4 + 0] = v.x, a[g * 4 + 1] = v.y, a[g * 4 + 2] = v.z, a[g * 4 + 3] = v.w;
      }
#pragma unroll
      for (int g = 0; g < GN; g++) {
        float4 v = *reinterpret_cast<const float4*>(&Bs[buf][k][g * 64 + tx * 4]);
        bv[g * 4 + 0] = v.x, bv[g * 4 + 1] = v.y, bv[g * 4 + 2] = v.z, bv[g * 4 + 3] = v.w;
      }
#pragma unroll
      for (int i = 0; i < GM * 4; i++)
#pragma unroll
        for (int j = 0; j < GN * 4; j++) acc[i][j] = fmaf(a[i], bv[j], acc[i][j]);
    }
    if (next) {  // the other buffer: its last readers passed the previous barrier
      store_tile<BM, BK, !TA>(As[buf ^ 1], ra);
      store_tile<BN, BK, TB>(Bs[buf ^ 1], rb);
    }
    __syncthreads();
    buf ^= 1;
  }

  const float alpha = p.alpha, beta = p.beta;
#pragma unroll
  for (int gi = 0; gi < GM; gi++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int m = m0 + gi * 64 + ty * 4 + i;
      if (m >= p.M) continue;
      float* crow = C + (int64_t)m * p.ldc;
#pragma unroll
      for (int gj = 0; gj < GN; gj++) {
        const int n = n0 + gj * 64 + tx * 4;
        const float* v = &acc[gi * 4 + i][gj * 4];
        if (p.vecC && n + 3 < p.N) {
          float4 c = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          if (beta != 0.0f) {
            c = *reinterpret_cast<const float4*>(crow + n);
            c.x *= beta, c.y *= beta, c.z *= beta, c.w *= beta;
          }
          c.x += alpha * v[0], c.y += alpha * v[1], c.z += alpha * v[2], c.w += alpha * v[3];
          *reinterpret_cast<float4*>(crow + n) = c;
        } else {
#pragma unroll
          for (int j = 0; j < 4; j++)
            if (n + j < p.N) crow[n + j] = (beta == 0.0f ? 0.0f : beta * crow[n + j]) + alpha * v[j];
        }
      }
    }
}

// C = alpha * (sum of the slices of ws, in order) + beta * C.
__global__ void splitk_reduce(const float* ws, int splits, int64_t M, int64_t N, float alpha, float beta, float* C,
                              int64_t ldc, int64_t sC, int64_t total) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = idx % N, r = idx / N, m = r % M, b = r / M;
    const float* w = ws + b * splits * M * N + m * N + n;
    float acc = 0.0f;
    for (int s = 0; s < splits; s++) acc += w[s * M * N];
    float* c = C + b * sC + m * ldc + n;
    *c = (beta == 0.0f ? 0.0f : beta * *c) + alpha * acc;
  }
}

// C = beta * C (K = 0 or alpha = 0); beta = 0 writes zeros over anything.
__global__ void scale_c(float* C, int64_t M, int64_t N, int64_t ldc, int64_t sC, float beta, int64_t total) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = idx % N, r = idx / N, m = r % M, b = r / M;
    float* c = C + b * sC + m * ldc + n;
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

int grid_for(int64_t n, int threads) { return (int)std::min<int64_t>((n + threads - 1) / threads, 1 << 20); }

int sm_count() {
  static int n = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || v <= 0)
      v = 100;
    cudaGetLastError();
    return v;
  }();
  return n;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

template <int BM, int BN, int BK>
void launch_tiled(bool ta, bool tb, GemmParams p, int64_t nz) {
  dim3 grid((unsigned)((p.M + BM - 1) / BM), (unsigned)((p.N + BN - 1) / BN), 1);
  NALA_CHECK(grid.y <= 65535, "gemm: N = ", p.N, " is too large");
  for (int64_t z0 = 0; z0 < nz; z0 += 65535) {
    p.z0 = (int)z0;
    grid.z = (unsigned)std::min<int64_t>(65535, nz - z0);
    if (!ta && !tb)
      gemm_tiled<BM, BN, BK, false, false><<<grid, THREADS>>>(p);
    else if (ta && !tb)
      gemm_tiled<BM, BN, BK, true, false><<<grid, THREADS>>>(p);
    else if (!ta && tb)
      gemm_tiled<BM, BN, BK, false, true><<<grid, THREADS>>>(p);
    else
      gemm_tiled<BM, BN, BK, true, true><<<grid, THREADS>>>(p);
    CUDA_CHECK_LAUNCH("gemm");
  }
}

}  // namespace

void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                  int64_t ldc, int64_t stride_c, int64_t batch) {
  if (M <= 0 || N <= 0 || batch <= 0) return;
  NALA_CHECK(M < INT_MAX && N < INT_MAX && K < INT_MAX && batch < INT_MAX, "gemm: sizes too large (M ", M, ", N ",
             N, ", K ", K, ", batch ", batch, ")");
  if (K <= 0 || alpha == 0.0f) {
    int64_t total = batch * M * N;
    scale_c<<<grid_for(total, 256), 256>>>(C, M, N, ldc, stride_c, beta, total);
    CUDA_CHECK_LAUNCH("gemm");
    return;
  }
  const int sms = sm_count();
  // Big tiles when they fill the GPU without much more padding than the small
  // ones (a batch of 49 x 49 attention products wastes 85% of a 128 x 128 tile).
  auto tiles = [&](int64_t bt) { return ((M + bt - 1) / bt) * ((N + bt - 1) / bt) * batch; };
  auto used = [&](int64_t bt) { return (double)M * N * batch / ((double)tiles(bt) * bt * bt); };
  const bool big = tiles(128) >= sms && used(128) >= 0.8 * used(64);
  const int64_t ntiles = big ? tiles(128) : tiles(64);

  GemmParams p;
  p.A = A, p.B = B, p.C = C;
  p.lda = lda, p.ldb = ldb, p.ldc = ldc;
  p.sA = stride_a, p.sB = stride_b, p.sC = stride_c;
  p.M = (int)M, p.N = (int)N, p.K = (int)K;
  p.splits = 1, p.kchunk = (int)K, p.z0 = 0;
  p.alpha = alpha, p.beta = beta;
  p.vecA = aligned16(A) && lda % 4 == 0 && stride_a % 4 == 0;
  p.vecB = aligned16(B) && ldb % 4 == 0 && stride_b % 4 == 0;
  p.vecC = aligned16(C) && ldc % 4 == 0 && stride_c % 4 == 0;

  // Split-K: aim for two blocks per SM, slices of at least 512, a bounded workspace.
  int64_t splits = 1;
  if (ntiles < sms && K >= 1024) {
    splits = std::min<int64_t>((2 * sms + ntiles - 1) / ntiles, K / 512);
    splits = std::min<int64_t>(splits, std::max<int64_t>(1, ((int64_t)1 << 26) / (batch * M * N)));
  }
  Tensor ws;
  if (splits > 1) {
    int64_t kchunk = ((K + splits - 1) / splits + 15) / 16 * 16;  // a multiple of BK keeps float4 alignment
    splits = (K + kchunk - 1) / kchunk;
    ws = Tensor::empty({batch * splits * M * N}, DType::F32, Device::CUDA);
    p.C = ws.f32(), p.ldc = N, p.sC = M * N;
    p.alpha = 1.0f, p.beta = 0.0f;
    p.vecC = aligned16(p.C) && N % 4 == 0;
    p.splits = (int)splits, p.kchunk = (int)kchunk;
  }
  if (big)
    launch_tiled<128, 128, 8>(trans_a, trans_b, p, batch * splits);
  else
    launch_tiled<64, 64, 16>(trans_a, trans_b, p, batch * splits);
  if (splits > 1) {
    int64_t total = batch * M * N;
    splitk_reduce<<<grid_for(total, 256), 256>>>(ws.f32(), (int)splits, M, N, alpha, beta, C, ldc, stride_c, total);
    CUDA_CHECK_LAUNCH("gemm");
  }
  // ws goes back to the caching allocator here; later kernels on the same
  // stream that reuse it run after splitk_reduce.
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_batched(trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

// ---- linear bias --------------------------------------------------------------

namespace {

__global__ void bias_add(float* Y, const float* bias, int64_t N, int64_t total) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x)
    Y[idx] += bias[idx % N];
}

// out[c, n] = sum of X[r, n] over the rows r of chunk c (chunk rows each), in
// a fixed order: 8 row lanes stride through the chunk, then lane sums are
// added 0..7. Blocks of 32 x 8 threads: a warp reads 32 consecutive columns.
__global__ void col_sums(const float* X, float* out, int64_t R, int64_t N, int64_t chunk, int64_t nchunks) {
  __shared__ float part[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t n = blockIdx.x * 32 + tx;
  for (int64_t c = blockIdx.y; c < nchunks; c += gridDim.y) {
    float acc = 0.0f;
    if (n < N) {
      const int64_t r1 = (c + 1) * chunk < R ? (c + 1) * chunk : R;
      for (int64_t r = c * chunk + ty; r < r1; r += 8) acc += X[r * N + n];
    }
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && n < N) {
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < 8; i++) s += part[i][tx];
      out[c * N + n] = s;
    }
    __syncthreads();
  }
}

void launch_col_sums(const float* X, float* out, int64_t R, int64_t N, int64_t chunk, int64_t nchunks) {
  dim3 block(32, 8), grid((unsigned)((N + 31) / 32), (unsigned)std::min<int64_t>(nchunks, 65535));
  col_sums<<<grid, block>>>(X, out, R, N, chunk, nchunks);
  CUDA_CHECK_LAUNCH("linear_bias_backward");
}

}  // namespace

void linear_bias_forward(float* Y, const float* bias, int64_t R, int64_t N) {
  int64_t total = R * N;
  if (total <= 0) return;
  bias_add<<<grid_for(total, 256), 256>>>(Y, bias, N, total);
  CUDA_CHECK_LAUNCH("linear_bias_forward");
}

void linear_bias_backward(float* dbias, const float* dY, int64_t R, int64_t N) {
  if (N <= 0) return;
  NALA_CHECK((N + 31) / 32 <= INT_MAX, "linear_bias_backward: N = ", N, " is too large");
  // Chunks of at least 256 rows, at most ~1024 of them; the cut depends on R only.
  const int64_t chunk = std::max<int64_t>(256, ((R + 1023) / 1024 + 7) / 8 * 8);
  const int64_t nchunks = std::max<int64_t>(1, (R + chunk - 1) / chunk);
  if (nchunks == 1) {
    launch_col_sums(dY, dbias, R, N, chunk, 1);  // R = 0 writes zeros
    return;
  }
  Tensor part = Tensor::empty({nchunks * N}, DType::F32, Device::CUDA);
  launch_col_sums(dY, part.f32(), R, N, chunk, nchunks);
  launch_col_sums(part.f32(), dbias, nchunks, N, nchunks, 1);
}

}  // namespace cuda
}  // namespace nala
