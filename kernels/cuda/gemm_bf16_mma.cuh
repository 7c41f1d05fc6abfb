// kernels/cuda/gemm_bf16_mma.cuh - the bf16 tensor-core GEMM with warp-level
// mma.sync (sm_80 and later), and the epilogue every bf16 GEMM kernel shares.
// Included by kernels/cuda/gemm_bf16.cu (the production entry point, API in
// kernels/cuda/gemm_bf16.h); the lab's version 6 (kernels/lab/gemm_cuda.cu)
// runs it through cuda::gemm_bf16 with this kernel forced.
//
// gemm_mma<MmaBig, TA, TB>: a block of 256 threads (8 warps, 2 x 4) computes
//   a 128 x 128 tile of C; each warp a 64 x 32 piece of it as 4 x 4 m16n8k16
//   products per 16-deep k step (64 float accumulators a thread). MmaSmall:
//   64 x 64 tiles of 4 warps, for thin products. K is
//   staged in slices of 32 through a 4-deep ring of shared buffers filled
//   by cp.async (16 bytes a copy, no registers on the way): while the warps
//   compute on slice t, slices t+1 .. t+3 are in flight. Shared tiles keep
//   the operand's own layout (rows padded by 16 bytes: ldmatrix's 8 row
//   addresses fall in distinct banks), and ldmatrix, with .trans where the
//   stored layout is the other one, builds the fragments: the four
//   transposes differ only in the load and in one ldmatrix flag.
//   Edges: a 16-byte chunk wholly inside the matrix and 16-byte aligned goes
//   by cp.async; one past the edge is zero-filled; others (odd leading dims,
//   the last chunk of an odd K) are loaded element by element.
// gemm_mma<Cfg, TA, TB, true>: the same product of float32 operands, each value
//   rounded to bf16 (to nearest even) on its way into shared memory, so that
//   a float32 model multiplies on tensor cores without a separate cast pass
//   (autocast's numerics). cp.async cannot convert, so the slices go through
//   registers: each thread issues the global loads of slice t+3 before the
//   warps compute on slice t, and converts and stores them after, when they
//   have arrived.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/conv_gather.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/mma.cuh"

namespace nala {
namespace cuda {
namespace bf16gemm {

using bf16 = __nv_bfloat16;

struct Params {
  const bf16* A;
  const bf16* B;
  const float* A32;      // gemm_mma<.., .., true>: float32 operands instead of A, B
  const float* B32;
  float alpha;           // scales the product, before the bias
  ConvGather conv;       // gemm_mma<.., GATHER 1 or 2>: A32 or B32 is the image batch it unfolds
  void* C;
  int64_t lda, ldb, ldc;
  int M, N, K;
  const float* bias;     // [N] or null
  const void* res;       // C's type, [M, ldr], or null
  int64_t ldr;
  bool gelu, c_bf16;
  bool vecA, vecB;       // rows 16-byte aligned: cp.async
  bool pairC, pairR;     // two consecutive columns of C / residual in one access
  bool tmaC;             // wgmma: C (bf16, 16-byte aligned rows) written by TMA stores from shared memory
  int splits, kchunk;    // split-K: block z sums k in [z kchunk, (z + 1) kchunk) (a multiple of 64) ...
  float* ws;             // ... into ws[z][M][N], raw (no epilogue); null: one slice, the epilogue into C
};

// ---- the epilogue: C[m, n..n+1] = act(v + bias) + residual, guarded ------------------


// z: the split-K slice (p.ws), else unused.
__device__ __forceinline__ void epilogue2(const Params& p, int z, int m, int n, float v0, float v1) {
  if (m >= p.M || n >= p.N) return;
  const bool two = n + 1 < p.N;
  if (p.ws) {  // a split-K slice: its partial sums, added up by splitk_epilogue
    float* w = p.ws + ((int64_t)z * p.M + m) * p.N + n;
    w[0] = v0;
    if (two) w[1] = v1;
    return;
  }
  v0 *= p.alpha, v1 *= p.alpha;
  if (p.bias) {
    v0 += __ldg(p.bias + n);
    if (two) v1 += __ldg(p.bias + n + 1);
  }
  if (p.gelu) v0 = act::gelu(v0), v1 = act::gelu(v1);
  if (p.c_bf16) {
    bf16* c = static_cast<bf16*>(p.C) + (int64_t)m * p.ldc + n;
    if (p.res) {
      const bf16* r = static_cast<const bf16*>(p.res) + (int64_t)m * p.ldr + n;
      if (two && p.pairR) {
        const float2 rv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(r));
        v0 += rv.x, v1 += rv.y;
      } else {
        v0 += __bfloat162float(r[0]);
        if (two) v1 += __bfloat162float(r[1]);
      }
    }
    if (two && p.pairC) {
      *reinterpret_cast<__nv_bfloat162*>(c) = __floats2bfloat162_rn(v0, v1);
    } else {
      c[0] = __float2bfloat16_rn(v0);
      if (two) c[1] = __float2bfloat16_rn(v1);
    }
  } else {
    float* c = static_cast<float*>(p.C) + (int64_t)m * p.ldc + n;
    if (p.res) {
      const float* r = static_cast<const float*>(p.res) + (int64_t)m * p.ldr + n;
      if (two && p.pairR) {
        const float2 rv = *reinterpret_cast<const float2*>(r);
        v0 += rv.x, v1 += rv.y;
      } else {
        v0 += r[0];
        if (two) v1 += r[1];
      }
    }
    if (two && p.pairC) {
      *reinterpret_cast<float2*>(c) = make_float2(v0, v1);
    } else {
      c[0] = v0;
      if (two) c[1] = v1;
    }
  }
}

// ---- the mma.sync kernel ---------------------------------------------------------

// A block's shape: WM x WN warps, each computing (16 MI) x (16 NJ) of C as
// MI x 2NJ m16n8k16 products per 16-deep k step. MmaBig is the 128 x 128 tile
// of 8 warps (64 x 32 each); MmaSmall a 64 x 64 tile of 4 warps (32 x 32
// each) for thin products (a few columns, or few tiles: more blocks per SM).
template <int MI_, int NJ_, int WM_, int WN_>
struct MmaCfg {
  static constexpr int MI = MI_, NJ = NJ_, WM = WM_, WN = WN_;
  static constexpr int BM = WM * 16 * MI, BN = WN * 16 * NJ, BK = 32, STAGES = 4, THREADS = 32 * WM * WN;
  // One operand's tile in shared memory, either layout: [X][BK + 8] (k
  // contiguous) or [BK][X + 8] (x contiguous), the larger of the two.
  static constexpr int tile(int X) { return X * (BK + 8) > BK * (X + 8) ? X * (BK + 8) : BK * (X + 8); }
  static constexpr int TILE_A = tile(BM), TILE_B = tile(BN);
  static constexpr int SMEM = STAGES * (TILE_A + TILE_B) * 2;  // bytes
  static constexpr int CHUNKS_A = BM * BK / 8 / THREADS, CHUNKS_B = BN * BK / 8 / THREADS;  // 8-value chunks a thread
  static_assert(CHUNKS_A * THREADS * 8 == BM * BK && CHUNKS_B * THREADS * 8 == BN * BK, "whole chunks");
};
using MmaBig = MmaCfg<4, 2, 2, 4>;
using MmaSmall = MmaCfg<2, 2, 2, 2>;

// Chunk i (of 8 consecutive elements) of this thread in one operand's BX x BK
// slice at (x0, k0). KC: k is the contiguous index in memory (X[x * ld + k])
// and the shared tile is [BX][BK + 8]; otherwise X[k * ld + x] and the tile
// is [BK][BX + 8]. (outer, inner) is the chunk's place in the operand's
// storage (outer = x or k, inner = k or x), omax and imax their bounds, at
// the tile's offset.
template <int BX, int BK, int THREADS, bool KC>
struct Chunk {
  int outer, inner, omax, imax, at;
  __device__ __forceinline__ Chunk(int i, int x0, int xmax, int k0, int K) {
    constexpr int CPR = KC ? BK / 8 : BX / 8;  // chunks per stored row
    const int c = threadIdx.x + i * THREADS, row = c / CPR, col = (c % CPR) * 8;
    outer = KC ? x0 + row : k0 + row, inner = KC ? k0 + col : x0 + col;
    omax = KC ? xmax : K, imax = KC ? K : xmax;
    at = row * (KC ? BK + 8 : BX + 8) + col;
  }
};

// One operand's slice into shared memory S, 16-byte chunks.
template <int BX, int BK, int THREADS, bool KC>
__device__ __forceinline__ void load_slice(const bf16* X, int64_t ld, int x0, int xmax, int k0, int K, bool vec,
                                           bf16* S) {
#pragma unroll
  for (int i = 0; i < BX * BK / 8 / THREADS; i++) {
    const Chunk<BX, BK, THREADS, KC> ch(i, x0, xmax, k0, K);
    bf16* dst = S + ch.at;
    const bf16* src = X + (int64_t)ch.outer * ld + ch.inner;
    if (ch.outer >= ch.omax || ch.inner >= ch.imax) {
      mma::cp_async16(dst, X, false);  // zero fill
    } else if (vec && ch.inner + 8 <= ch.imax) {
      mma::cp_async16(dst, src, true);
    } else {
      alignas(16) bf16 v[8];
#pragma unroll
      for (int j = 0; j < 8; j++) v[j] = ch.inner + j < ch.imax ? src[j] : __float2bfloat16_rn(0.0f);
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(v);
    }
  }
}

// The float32 form of load_slice, in two halves: fetch_slice issues the
// global loads of a thread's chunks into registers (zeros outside the
// operand), and store_slice rounds them to bf16 and writes each chunk with
// one 16-byte store. load8(outer, inner, imax, v) reads one chunk inside the
// operand's rows: a matrix (load8_rows) or an unfolded image batch
// (gather_cols<8>, kernels/conv_gather.h).
template <int BX, int BK, int THREADS, bool KC, int CH, class Load8>
__device__ __forceinline__ void fetch_slice(Load8 load8, int x0, int xmax, int k0, int K, float (&v)[CH][8]) {
#pragma unroll
  for (int i = 0; i < CH; i++) {
    const Chunk<BX, BK, THREADS, KC> ch(i, x0, xmax, k0, K);
    if (ch.outer < ch.omax) {
      load8(ch.outer, ch.inner, ch.imax, v[i]);
    } else {
#pragma unroll
      for (int j = 0; j < 8; j++) v[i][j] = 0.0f;
    }
  }
}

// A chunk of a row-major float matrix: float4 pairs when rows are 16-byte
// aligned (vec) and the chunk is whole, else element by element, zeros past imax.
__device__ __forceinline__ void load8_rows(const float* X, int64_t ld, bool vec, int outer, int inner, int imax,
                                           float (&v)[8]) {
  const float* src = X + (int64_t)outer * ld + inner;
  if (vec && inner + 8 <= imax) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(src)), b = __ldg(reinterpret_cast<const float4*>(src) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] = inner + j < imax ? __ldg(src + j) : 0.0f;
  }
}

template <int BX, int BK, int THREADS, bool KC, int CH>
__device__ __forceinline__ void store_slice(const float (&v)[CH][8], bf16* S) {
#pragma unroll
  for (int i = 0; i < CH; i++) {
    const Chunk<BX, BK, THREADS, KC> ch(i, 0, 0, 0, 0);
    uint4 u;
    u.x = mma::bits(__floats2bfloat162_rn(v[i][0], v[i][1]));
    u.y = mma::bits(__floats2bfloat162_rn(v[i][2], v[i][3]));
    u.z = mma::bits(__floats2bfloat162_rn(v[i][4], v[i][5]));
    u.w = mma::bits(__floats2bfloat162_rn(v[i][6], v[i][7]));
    *reinterpret_cast<uint4*>(S + ch.at) = u;
  }
}

// Blocks an SM: two 128 x 128 blocks; four 64 x 64 ones (their registers and
// shared memory allow it).
// GATHER (float32 operands only): 1, A is p.conv's unfolding of the images at
// A32 (not TA); 2, B is (not TB).
template <class Cfg, bool TA, bool TB, bool F32 = false, int GATHER = 0>
__global__ void __launch_bounds__(Cfg::THREADS, Cfg::THREADS == 256 ? 2 : 4) gemm_mma(Params p) {
  static_assert(GATHER == 0 || (F32 && (GATHER == 1 ? !TA : !TB)), "a gathered operand: float32, rows of the unfolding");
  extern __shared__ __align__(16) unsigned char mma_smem[];
  bf16* sm = reinterpret_cast<bf16*>(mma_smem);
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, S = Cfg::STAGES, T = Cfg::THREADS;
  constexpr int MI = Cfg::MI, NJ = Cfg::NJ;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp % Cfg::WM, wn = warp / Cfg::WM;  // the warp's (16 MI) x (16 NJ) piece
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;  // M tiles on x: up to 2^31 - 1 of them
  const int kbeg = blockIdx.z * p.kchunk, kend = min(p.K, kbeg + p.kchunk);
  const int nk = (kend - kbeg + BK - 1) / BK;
  auto sA = [&](int s) { return sm + s * (Cfg::TILE_A + Cfg::TILE_B); };
  auto sB = [&](int s) { return sm + s * (Cfg::TILE_A + Cfg::TILE_B) + Cfg::TILE_A; };
  // op(A) = A stores k contiguously unless TA; op(B) = B stores k contiguously only if TB.
  auto load = [&](int s, int kt) {
    load_slice<BM, BK, T, !TA>(p.A, p.lda, m0, p.M, kbeg + kt * BK, kend, p.vecA, sA(s));
    load_slice<BN, BK, T, TB>(p.B, p.ldb, n0, p.N, kbeg + kt * BK, kend, p.vecB, sB(s));
  };

  float acc[MI][2 * NJ][4];
#pragma unroll
  for (int i = 0; i < MI; i++)
#pragma unroll
    for (int j = 0; j < 2 * NJ; j++) mma::zero_acc<1>(*reinterpret_cast<float(*)[1][4]>(acc[i][j]));

  constexpr int CA = F32 ? Cfg::CHUNKS_A : 1, CB = F32 ? Cfg::CHUNKS_B : 1;
  float va[CA][8], vb[CB][8];  // F32: slices on their way
  auto fetch = [&](int kt) {
    if constexpr (F32) {
      const int k0 = kbeg + kt * BK;
      const auto rowsA = [&](int o, int i, int im, float(&v)[8]) { load8_rows(p.A32, p.lda, p.vecA, o, i, im, v); };
      const auto rowsB = [&](int o, int i, int im, float(&v)[8]) { load8_rows(p.B32, p.ldb, p.vecB, o, i, im, v); };
      const auto unfoldA = [&](int o, int i, int im, float(&v)[8]) { gather_cols<8>(p.A32, p.conv, o, i, im, v); };
      const auto unfoldB = [&](int o, int i, int im, float(&v)[8]) { gather_cols<8>(p.B32, p.conv, o, i, im, v); };
      if constexpr (GATHER == 1)
        fetch_slice<BM, BK, T, !TA>(unfoldA, m0, p.M, k0, kend, va);
      else
        fetch_slice<BM, BK, T, !TA>(rowsA, m0, p.M, k0, kend, va);
      if constexpr (GATHER == 2)
        fetch_slice<BN, BK, T, TB>(unfoldB, n0, p.N, k0, kend, vb);
      else
        fetch_slice<BN, BK, T, TB>(rowsB, n0, p.N, k0, kend, vb);
    }
  };
  auto store = [&](int s) {
    if constexpr (F32) {
      store_slice<BM, BK, T, !TA>(va, sA(s));
      store_slice<BN, BK, T, TB>(vb, sB(s));
    }
  };

#pragma unroll
  for (int s = 0; s < S - 1; s++) {
    if constexpr (F32) {
      if (s < nk) fetch(s), store(s);
    } else {
      if (s < nk) load(s, s);
      mma::cp_async_commit();
    }
  }
  const int li = lane % 8, lm = lane / 8;  // ldmatrix: row li of matrix lm
  for (int kt = 0; kt < nk; kt++) {
    const bool more = kt + S - 1 < nk;
    if constexpr (F32) {
      __syncthreads();  // slice kt is stored; every warp is done with slice kt - 1
      if (more) fetch(kt + S - 1);  // in flight while the warps compute
    } else {
      mma::cp_async_wait<S - 2>();
      __syncthreads();  // slice kt is in; every warp is done with slice kt - 1
      if (more) load((kt + S - 1) % S, kt + S - 1);
      mma::cp_async_commit();
    }
    const bf16 *a = sA(kt % S), *b = sB(kt % S);
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t af[MI][4], bfr[NJ][4];
#pragma unroll
      for (int i = 0; i < MI; i++) {
        const int mb = wm * 16 * MI + i * 16;
        if (!TA)  // a[m][k]: matrices (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15)
          mma::ldsm_x4(af[i], a + (mb + (lm % 2) * 8 + li) * (BK + 8) + kk + (lm / 2) * 8);
        else  // a[k][m], transposed by ldmatrix
          mma::ldsm_x4_trans(af[i], a + (kk + (lm / 2) * 8 + li) * (BM + 8) + mb + (lm % 2) * 8);
      }
#pragma unroll
      for (int j = 0; j < NJ; j++) {
        const int nb = wn * 16 * NJ + j * 16;  // two n8 tiles: (b0, b1) of each
        if (TB)  // b[n][k]
          mma::ldsm_x4(bfr[j], b + (nb + (lm / 2) * 8 + li) * (BK + 8) + kk + (lm % 2) * 8);
        else  // b[k][n]
          mma::ldsm_x4_trans(bfr[j], b + (kk + (lm % 2) * 8 + li) * (BN + 8) + nb + (lm / 2) * 8);
      }
#pragma unroll
      for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < 2 * NJ; j++)
          mma::bf16_16816(acc[i][j], af[i], bfr[j / 2][(j % 2) * 2], bfr[j / 2][(j % 2) * 2 + 1]);
    }
    if (F32 && more) store((kt + S - 1) % S);  // the buffer of slice kt - 1, free since the barrier
  }
  if constexpr (!F32) mma::cp_async_wait<0>();

  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < MI; i++)
#pragma unroll
    for (int j = 0; j < 2 * NJ; j++) {
      const int m = m0 + wm * 16 * MI + i * 16 + g, n = n0 + wn * 16 * NJ + j * 8 + 2 * t;
      epilogue2(p, blockIdx.z, m, n, acc[i][j][0], acc[i][j][1]);
      epilogue2(p, blockIdx.z, m + 8, n, acc[i][j][2], acc[i][j][3]);
    }
}

// Split-K's second pass: C = epi(sum of the slices, in order), two columns a thread.
__global__ void splitk_epilogue(Params p, int splits) {
  const int64_t half = (p.N + 1) / 2, total = (int64_t)p.M * half;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int m = (int)(i / half), n = (int)(i % half) * 2;
    const float* w = p.ws + (int64_t)m * p.N + n;
    const bool two = n + 1 < p.N;
    float v0 = 0.0f, v1 = 0.0f;
    for (int s = 0; s < splits; s++, w += (int64_t)p.M * p.N) {
      v0 += w[0];
      if (two) v1 += w[1];
    }
    Params q = p;
    q.ws = nullptr;
    epilogue2(q, 0, m, n, v0, v1);
  }
}

}  // namespace bf16gemm
}  // namespace cuda
}  // namespace nala
