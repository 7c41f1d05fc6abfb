// kernels/cuda/gemm_fp32.cuh - the FP32 (FFMA) GEMM kernel of cuda::gemm
// (kernels/cuda/matmul.cu) and the last FP32 step of the GEMM lab
// (kernels/lab/gemm_cuda.cu, version 5): one kernel, included by both.
//
// gemm_tiled: 256 threads per block, a TX x TY grid of threads over the
//   BM x BN tile (16 x 16 unless a side is under 64: ThreadGrid); each thread owns 4 x 4 pieces spaced
//   4 TY rows and 4 TX columns apart (rows (g TY + ty) 4 + i, columns
//   (g TX + tx) 4 + j), so its shared-memory reads and its stores of C are
//   float4s consecutive across the warp. Per step the threads load the
//   BM x BK and BK x BN tiles as float4s (global -> registers) while the block
//   computes on the other shared buffer (double buffering, one barrier per
//   step). Tiles are kept k-major in shared memory (As[k][m], Bs[k][n])
//   whatever the transposes: the four cases differ only in how the tiles are
//   loaded. Rows/columns/k outside the matrices load zeros and are not
//   stored; float4 global loads only where the pointer, leading dim and batch
//   stride allow it (else scalar). Split-K slices (p.splits > 1) write their
//   partial products to separate z planes of C. Optionally one operand is a
//   convolution's unfolding gathered from the image (GATHER), and the blocks
//   add up op(A)'s rows on the way (GemmParams::dsum), or the store applies
//   a linear layer's epilogue (EPI: GELU, LayerScale and the residual add).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/conv_gather.h"
#include "kernels/cuda/activation.cuh"

namespace nala {
namespace cuda {
namespace fp32gemm {

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
  const float* bias;      // null, or added to every row of C after alpha and beta (a linear layer's bias)
  bool vecA, vecB, vecC;  // float4 global access allowed
  ConvGather conv;        // gemm_tiled<..., GATHER = 1 or 2>: A or B is the unfolding of the image batch A or B
  // dsum: also the row sums of op(A) over the block's k range, sum_k op(A)[m, k]
  // (a linear layer's bias gradient beside its weight gradient, dW = dY^T X:
  // the sums of dY's columns). The blocks of the first column tile add them
  // from the shared A tiles they load anyway; with splits == 1 they write
  // dsum[m] = alpha * sum, else the slice's sum to dsum[z * M + m] (split-K:
  // the partials, added by the second pass).
  float* dsum = nullptr;
  // The store of gemm_tiled<..., EPI = true> (cuda::linear_forward_epilogue;
  // LinearEpilogue in kernels/cpu/matmul.h): y = the value above (bias
  // included); pre[m, n] = y when pre; y = gelu(y) when gelu; C = res[m, n] +
  // (y * gamma[n]) * f when res (act::scale_add: scale_add's bits), f =
  // row_scale[m / rows_per_scale] when row_scale (a sample's drop-path factor). pre and res have rows of ldc; vecC covers
  // their alignment too.
  bool gelu = false;
  const float* res = nullptr;
  const float* gamma = nullptr;
  const float* row_scale = nullptr;
  int rows_per_scale = 1;
  float* pre = nullptr;
};

// Row m's drop-path factor (1 without one: the product by 1 is exact).
__device__ __forceinline__ float row_factor(const GemmParams& p, int m) {
  return p.row_scale ? p.row_scale[m / p.rows_per_scale] : 1.0f;
}

// One value of the EPI store, at offset off of C (row m, column n).
__device__ __forceinline__ float epilogue(const GemmParams& p, int64_t off, int m, int n, float y) {
  if (p.pre) p.pre[off] = y;
  if (p.gelu) y = act::gelu(y);
  if (p.res) y = act::scale_add(p.res[off], y, p.gamma[n], row_factor(p, m));
  return y;
}

// A BX x BK tile of an operand holds BX * BK / 4 float4s; thread t loads
// those numbered t, t + THREADS, ... (LOADS of them; the last round may leave
// threads idle when the tile is smaller than THREADS float4s).
template <int BX, int BK>
struct TileLoads {
  static constexpr int F4 = BX * BK / 4, LOADS = (F4 + THREADS - 1) / THREADS;
};

// The float4s of load_tile's thread into registers: tile rows x in
// [x0, x0 + BX), k in [kt, kt + BK); zeros where x >= xmax or k >= kend.
// KC: the operand stores k contiguously (X[x * ld + k]); otherwise x is
// contiguous (X[k * ld + x]).
// G: X is an image batch and the operand its unfolding (kernels/conv_gather.h),
// rows x (KC) or k (not KC) of the unfolding, its columns k or x.
template <int BX, int BK, bool KC, bool G = false>
__device__ __forceinline__ void load_tile(const float* X, int64_t ld, int x0, int xmax, int kt, int kend, bool vec,
                                          float (&r)[TileLoads<BX, BK>::LOADS * 4], const ConvGather* conv = nullptr) {
  using L = TileLoads<BX, BK>;
#pragma unroll
  for (int l = 0; l < L::LOADS; l++) {
    const int f = threadIdx.x + l * THREADS;
    float* o = r + 4 * l;
    if (L::F4 % THREADS != 0 && f >= L::F4) break;
    const int x = KC ? x0 + f / (BK / 4) : x0 + (f % (BX / 4)) * 4;
    const int k = KC ? kt + (f % (BK / 4)) * 4 : kt + f / (BX / 4);
    // The 4 values run along the stored rows: row x, columns k.. (KC), or row k, columns x..
    const int row = KC ? x : k, col = KC ? k : x, rows = KC ? xmax : kend, cols = KC ? kend : xmax;
    if (G) {  // 4 consecutive columns of one row of the unfolding
      float(&v)[4] = *reinterpret_cast<float(*)[4]>(o);
      if (row < rows)
        gather_cols<4>(X, *conv, row, col, cols, v);
      else
        v[0] = v[1] = v[2] = v[3] = 0.0f;
      continue;
    }
    const float* src = X + (int64_t)row * ld + col;
    if (vec && row < rows && col + 3 < cols) {
      float4 v = __ldg(reinterpret_cast<const float4*>(src));
      o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; i++) o[i] = (row < rows && col + i < cols) ? __ldg(src + i) : 0.0f;
    }
  }
}

// The registers of load_tile into the k-major shared tile S[k][x].
template <int BX, int BK, bool KC>
__device__ __forceinline__ void store_tile(float (*S)[BX + PAD], const float (&r)[TileLoads<BX, BK>::LOADS * 4]) {
  using L = TileLoads<BX, BK>;
#pragma unroll
  for (int l = 0; l < L::LOADS; l++) {
    const int f = threadIdx.x + l * THREADS;
    const float* o = r + 4 * l;
    if (L::F4 % THREADS != 0 && f >= L::F4) break;
    if (KC) {
      const int x = f / (BK / 4), k = (f % (BK / 4)) * 4;
#pragma unroll
      for (int i = 0; i < 4; i++) S[k + i][x] = o[i];
    } else {
      const int k = f / (BX / 4), x = (f % (BX / 4)) * 4;
      *reinterpret_cast<float4*>(&S[k][x]) = make_float4(o[0], o[1], o[2], o[3]);
    }
  }
}

// Threads of a BM x BN tile: TX across its columns, TY down its rows (16 x 16
// unless the tile is narrower than 64 on a side); each
// owns GM x GN pieces of 4 x 4 outputs, spaced 4 TY rows and 4 TX columns apart.
template <int BM, int BN>
struct ThreadGrid {
  static constexpr int TX = BN / 4 < 16 ? BN / 4 : BM / 4 < 16 ? THREADS / (BM / 4) : 16, TY = THREADS / TX;
  static constexpr int GM = BM / (4 * TY), GN = BN / (4 * TX);
  static_assert(GM >= 1 && GN >= 1 && GM * 4 * TY == BM && GN * 4 * TX == BN, "tile does not fit the threads");
};

// Blocks per SM the kernel is compiled for: two for the big tiles (64
// outputs a thread); for the small ones (16 a thread) as many as fit in
// registers without spilling (ptxas -v: 64 x 64 in 64 registers, the
// 128 x 32 and 32 x 128 tiles, with their two float4 loads of one operand,
// in 80): more warps in flight hide the loads of these short products.
template <int BM, int BN>
constexpr int min_blocks() {
  return BM * BN >= 128 * 128 ? 2 : BM == BN ? 4 : 3;
}

// GATHER: 0, or 1 (A, not transposed) or 2 (B, not transposed) is the
// unfolding of the image batch p.A or p.B (p.conv; the implicit-GEMM
// convolution: its forward X W^T, its weight gradient dY^T X).
// EPI: the store applies the linear epilogue (GemmParams::gelu, res, pre).
template <int BM, int BN, int BK, bool TA, bool TB, int GATHER = 0, bool EPI = false>
__global__ void __launch_bounds__(THREADS, min_blocks<BM, BN>()) gemm_tiled(GemmParams p) {
  static_assert(GATHER == 0 || (GATHER == 1 && !TA) || (GATHER == 2 && !TB), "a gathered operand is not transposed");
  using G = ThreadGrid<BM, BN>;
  constexpr int GM = G::GM, GN = G::GN, TX = G::TX;
  __shared__ __align__(16) float As[2][BK][BM + PAD];
  __shared__ __align__(16) float Bs[2][BK][BN + PAD];

  const int t = threadIdx.x, tx = t % TX, ty = t / TX;
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
  float ra[TileLoads<BM, BK>::LOADS * 4], rb[TileLoads<BN, BK>::LOADS * 4];
  load_tile<BM, BK, !TA, GATHER == 1>(A, p.lda, m0, p.M, kbeg, kend, p.vecA, ra, &p.conv);
  load_tile<BN, BK, TB, GATHER == 2>(B, p.ldb, n0, p.N, kbeg, kend, p.vecB, rb, &p.conv);
  store_tile<BM, BK, !TA>(As[0], ra);
  store_tile<BN, BK, TB>(Bs[0], rb);
  __syncthreads();

  const bool sums = p.dsum && blockIdx.y == 0 && t < BM;  // this thread adds up row m0 + t of op(A)
  float rsum = 0.0f;
  int buf = 0;
  for (int kt = kbeg; kt < kend; kt += BK) {
    const bool next = kt + BK < kend;
    if (next) {  // the next step's loads are in flight while this one computes
      load_tile<BM, BK, !TA, GATHER == 1>(A, p.lda, m0, p.M, kt + BK, kend, p.vecA, ra, &p.conv);
      load_tile<BN, BK, TB, GATHER == 2>(B, p.ldb, n0, p.N, kt + BK, kend, p.vecB, rb, &p.conv);
    }
#pragma unroll
    for (int k = 0; k < BK; k++) {
      float a[GM * 4], bv[GN * 4];
#pragma unroll
      for (int g = 0; g < GM; g++) {
        float4 v = *reinterpret_cast<const float4*>(&As[buf][k][(g * G::TY + ty) * 4]);
        a[g * 4 + 0] = v.x, a[g * 4 + 1] = v.y, a[g * 4 + 2] = v.z, a[g * 4 + 3] = v.w;
      }
#pragma unroll
      for (int g = 0; g < GN; g++) {
        float4 v = *reinterpret_cast<const float4*>(&Bs[buf][k][(g * TX + tx) * 4]);
        bv[g * 4 + 0] = v.x, bv[g * 4 + 1] = v.y, bv[g * 4 + 2] = v.z, bv[g * 4 + 3] = v.w;
      }
#pragma unroll
      for (int i = 0; i < GM * 4; i++)
#pragma unroll
        for (int j = 0; j < GN * 4; j++) acc[i][j] = fmaf(a[i], bv[j], acc[i][j]);
    }
    if (sums)  // k past the range loaded zeros
#pragma unroll
      for (int k = 0; k < BK; k++) rsum += As[buf][k][t];
    if (next) {  // the other buffer: its last readers passed the previous barrier
      store_tile<BM, BK, !TA>(As[buf ^ 1], ra);
      store_tile<BN, BK, TB>(Bs[buf ^ 1], rb);
    }
    __syncthreads();
    buf ^= 1;
  }

  const float alpha = p.alpha, beta = p.beta;
  if (sums && m0 + t < p.M) {
    if (p.splits == 1) p.dsum[m0 + t] = alpha * rsum;
    else p.dsum[(int64_t)z * p.M + m0 + t] = rsum;
  }
#pragma unroll
  for (int gi = 0; gi < GM; gi++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int m = m0 + (gi * G::TY + ty) * 4 + i;
      if (m >= p.M) continue;
      float* crow = C + (int64_t)m * p.ldc;
#pragma unroll
      for (int gj = 0; gj < GN; gj++) {
        const int n = n0 + (gj * TX + tx) * 4;
        const float* v = &acc[gi * 4 + i][gj * 4];
        if (p.vecC && n + 3 < p.N) {
          float4 c = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          if (beta != 0.0f) {
            c = *reinterpret_cast<const float4*>(crow + n);
            c.x *= beta, c.y *= beta, c.z *= beta, c.w *= beta;
          }
          c.x += alpha * v[0], c.y += alpha * v[1], c.z += alpha * v[2], c.w += alpha * v[3];
          if (p.bias) c.x += p.bias[n], c.y += p.bias[n + 1], c.z += p.bias[n + 2], c.w += p.bias[n + 3];
          if (EPI) {
            const int64_t off = (int64_t)m * p.ldc + n;
            if (p.pre) *reinterpret_cast<float4*>(p.pre + off) = c;
            if (p.gelu) c.x = act::gelu(c.x), c.y = act::gelu(c.y), c.z = act::gelu(c.z), c.w = act::gelu(c.w);
            if (p.res) {
              const float4 r = *reinterpret_cast<const float4*>(p.res + off);
              const float f = row_factor(p, m);
              c.x = act::scale_add(r.x, c.x, p.gamma[n], f), c.y = act::scale_add(r.y, c.y, p.gamma[n + 1], f);
              c.z = act::scale_add(r.z, c.z, p.gamma[n + 2], f), c.w = act::scale_add(r.w, c.w, p.gamma[n + 3], f);
            }
          }
          *reinterpret_cast<float4*>(crow + n) = c;
        } else {
#pragma unroll
          for (int j = 0; j < 4; j++)
            if (n + j < p.N) {
              const float c = (beta == 0.0f ? 0.0f : beta * crow[n + j]) + alpha * v[j];
              const float y = p.bias ? c + p.bias[n + j] : c;
              crow[n + j] = EPI ? epilogue(p, (int64_t)m * p.ldc + n + j, m, n + j, y) : y;
            }
        }
      }
    }
}

}  // namespace fp32gemm
}  // namespace cuda
}  // namespace nala
