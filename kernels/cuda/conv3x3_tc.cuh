// kernels/cuda/conv3x3_tc.cuh - the 3 x 3, stride 1, padding 1 convolution of
// C channels to C channels (the stem's middle convolutions, and their dx, which
// is the same convolution of dout with the taps reversed and the channels
// swapped) on bf16 tensor cores, from shared-memory tiles: the products of
// bf16 mode (each operand rounded to bf16, float32 sums). Used by conv.cu in
// bf16 mode where C is 16, 32, 48 or 64; the implicit GEMM (gemm_bf16_mma.cuh,
// GATHER) stays the general path and the reference in the tests.
//
// Why: the implicit GEMM gathers each unfolded row of 9 C values from global
// memory, through registers (float32 operands cannot go by cp.async), with the
// index arithmetic of a general k, stride and padding for every 8 columns; at
// t's 112 x 112 stem (C = 32, 1.6M rows, K = 288, N = 32) that took 1 ms a
// call (Nsight Compute), about ten times its memory time.
//
// Here a block owns an output tile of 8 rows x 16 columns (128 pixels) of one
// image. Its input tile with the halo, 10 x 18 pixels of C channels, is read
// from global memory once (float4, rounded to bf16 into shared memory) and
// all 9 taps read it from there: tap (ky, kx) of output row r is the 16
// consecutive input pixels of tile row r + ky starting at column kx, so a
// 16 x 16 A fragment (16 pixels x 16 channels) is one ldmatrix.x4 of 16
// pixel rows. The weights, (9, C, C) bf16 ([tap][out channel][in channel],
// made once per call by conv3x3_weights), sit in shared memory for the
// block's whole life: blocks are persistent, each looping over tiles. Four
// warps, each two output rows (two m16 fragments) by all C output channels:
// 9 * C / 16 k steps of C / 8 mma.m16n8k16 per fragment. Pixel rows in
// shared memory are C + 8 bf16 apart (16 bytes of padding): the 8 row
// addresses of an ldmatrix fall in distinct banks. The epilogue adds the
// bias and stores pairs of float32 (or bf16) outputs; pixels past the image
// edge are read as zeros and not stored.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/vec_io.cuh"

namespace nala {
namespace cuda {
namespace conv3x3 {

using bf16 = __nv_bfloat16;

constexpr int TH = 8, TW = 16;                // output tile
constexpr int PH = TH + 2, PW = TW + 2;       // input tile with the halo
constexpr int kThreads = 128;                 // 4 warps, 2 output rows each

template <int C>
constexpr int smem_bytes() {
  return (PH * PW + 9 * C) * (C + 8) * (int)sizeof(bf16);
}

__device__ __forceinline__ void st4_bf16(bf16* p, float4 v) { vio::st4(p, v); }

// out (B, H, W, C) = conv3x3(x (B, H, W, C), wt) + bias, wt (9, C, C) bf16
// [tap][out][in]; bias nullable. Grid: persistent blocks over B * tiles_h * tiles_w tiles.
template <int C, class TI, class TO>
__global__ void __launch_bounds__(kThreads) conv3x3_kernel(TO* out, const TI* x, const bf16* wt, const float* bias,
                                                           int B, int H, int W, int tiles_h, int tiles_w) {
  static_assert(C % 16 == 0 && C <= 64, "conv3x3: C of 16, 32, 48 or 64");
  constexpr int CS = C + 8;  // a pixel's row in shared memory, in bf16
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sx = reinterpret_cast<bf16*>(smem);  // (PH * PW, CS)
  bf16* sw = sx + PH * PW * CS;              // (9 * C, CS)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;

  // the weights, once: 9 * C rows of C bf16, 16 bytes at a time
  for (int i = tid; i < 9 * C * (C / 8); i += kThreads) {
    const int row = i / (C / 8), ch = i % (C / 8);
    *reinterpret_cast<uint4*>(sw + row * CS + ch * 8) = reinterpret_cast<const uint4*>(wt)[i];
  }

  const uint32_t sx_a = mma::smem_addr(sx), sw_a = mma::smem_addr(sw);
  const int ntiles = B * tiles_h * tiles_w;
  for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
    const int tw = tile % tiles_w, th = (tile / tiles_w) % tiles_h, b = tile / (tiles_w * tiles_h);
    const int oy0 = th * TH, ox0 = tw * TW;
    __syncthreads();  // the previous tile's reads of sx are done (and, the first time, sw is written)
    // the input tile: PH * PW pixels of C values, 4 at a time, zeros outside the image
    for (int i = tid; i < PH * PW * (C / 4); i += kThreads) {
      const int p = i / (C / 4), c4 = i % (C / 4);
      const int iy = oy0 - 1 + p / PW, ix = ox0 - 1 + p % PW;
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = vio::ld4(x + (((int64_t)b * H + iy) * W + ix) * C + 4 * c4);
      st4_bf16(sx + p * CS + 4 * c4, v);
    }
    __syncthreads();

    float acc[2][C / 8][4];
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
      for (int n = 0; n < C / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[m][n][e] = 0.0f;

#pragma unroll
    for (int tap = 0; tap < 9; tap++) {
      const int ky = tap / 3, kx = tap % 3;
#pragma unroll
      for (int kc = 0; kc < C / 16; kc++) {
        uint32_t a[2][4];
#pragma unroll
        for (int m = 0; m < 2; m++) {  // pixels kx .. kx + 15 of tile row 2 warp + m + ky
          const int pix = (2 * warp + m + ky) * PW + kx + (lane & 15);
          mma::ldsm_x4(a[m], sx_a + (uint32_t)(pix * CS + kc * 16 + (lane >> 4) * 8) * 2);
        }
#pragma unroll
        for (int np = 0; np < C / 16; np++) {  // output channels 16 np .. 16 np + 15
          uint32_t bq[4];
          const int row = tap * C + np * 16 + (lane & 7) + (lane >> 4) * 8;
          mma::ldsm_x4(bq, sw_a + (uint32_t)(row * CS + kc * 16 + ((lane >> 3) & 1) * 8) * 2);
#pragma unroll
          for (int m = 0; m < 2; m++) {
            mma::bf16_16816(acc[m][2 * np], a[m], bq[0], bq[1]);
            mma::bf16_16816(acc[m][2 * np + 1], a[m], bq[2], bq[3]);
          }
        }
      }
    }

#pragma unroll
    for (int m = 0; m < 2; m++) {
      const int oy = oy0 + 2 * warp + m;
      if (oy >= H) continue;
#pragma unroll
      for (int half = 0; half < 2; half++) {
        const int ox = ox0 + g + 8 * half;
        if (ox >= W) continue;
        TO* o = out + (((int64_t)b * H + oy) * W + ox) * C;
#pragma unroll
        for (int n = 0; n < C / 8; n++) {
          const int co = n * 8 + 2 * t;
          float v0 = acc[m][n][2 * half], v1 = acc[m][n][2 * half + 1];
          if (bias) v0 += bias[co], v1 += bias[co + 1];
          if constexpr (sizeof(TO) == 4) {
            *reinterpret_cast<float2*>(o + co) = make_float2(v0, v1);
          } else {
            *reinterpret_cast<__nv_bfloat162*>(o + co) = __floats2bfloat162_rn(v0, v1);
          }
        }
      }
    }
  }
}

// ---- the weight gradient ----------------------------------------------------------
// dw[tap][o][i] = sum over pixels of dout[p][o] x[p + tap][i]: per tap a
// product of dout^T (C x pixels) and the shifted input (pixels x C), K the
// pixels. A block of 9 warps, one a tap, loops over the same 8 x 16 output
// tiles as the forward kernel: the tile's dout (128 pixels) and input with
// its halo go to shared memory in bf16, and each warp runs its tap's product
// over the tile's 8 rows of 16 pixels (one k16 step a row: dout rows by
// ldmatrix.trans as the A fragment, the input pixels kx .. kx + 15 of row r +
// ky as B, also .trans), accumulating in registers across all its tiles.
// Each block then writes its (9, C, C) partial sums; conv3x3_dw_finish adds
// the blocks' partials in a fixed order (the grid depends on the device only).
constexpr int kDwThreads = 9 * 32;

template <int C>
constexpr int dw_smem_bytes() {
  return (TH * TW + PH * PW) * (C + 8) * (int)sizeof(bf16);
}

template <int C, class TI>
__global__ void __launch_bounds__(kDwThreads) conv3x3_dw_kernel(float* part, const TI* dout, const TI* x, int B, int H,
                                                                int W, int tiles_h, int tiles_w) {
  static_assert(C % 16 == 0 && C <= 64, "conv3x3: C of 16, 32, 48 or 64");
  constexpr int CS = C + 8;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sd = reinterpret_cast<bf16*>(smem);  // (TH * TW, CS): dout of the tile
  bf16* sx = sd + TH * TW * CS;              // (PH * PW, CS): the input tile with its halo
  const int tid = threadIdx.x, lane = tid & 31, tap = tid >> 5;  // warp = tap
  const int ky = tap / 3, kx = tap % 3, g = lane >> 2, t = lane & 3;
  const uint32_t sd_a = mma::smem_addr(sd), sx_a = mma::smem_addr(sx);

  float acc[C / 16][C / 8][4];
#pragma unroll
  for (int m = 0; m < C / 16; m++)
#pragma unroll
    for (int n = 0; n < C / 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[m][n][e] = 0.0f;

  const int ntiles = B * tiles_h * tiles_w;
  for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
    const int tw = tile % tiles_w, th = (tile / tiles_w) % tiles_h, b = tile / (tiles_w * tiles_h);
    const int oy0 = th * TH, ox0 = tw * TW;
    __syncthreads();
    for (int i = tid; i < TH * TW * (C / 4); i += kDwThreads) {
      const int p = i / (C / 4), c4 = i % (C / 4);
      const int oy = oy0 + p / TW, ox = ox0 + p % TW;
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (oy < H && ox < W) v = vio::ld4(dout + (((int64_t)b * H + oy) * W + ox) * C + 4 * c4);
      st4_bf16(sd + p * CS + 4 * c4, v);
    }
    for (int i = tid; i < PH * PW * (C / 4); i += kDwThreads) {
      const int p = i / (C / 4), c4 = i % (C / 4);
      const int iy = oy0 - 1 + p / PW, ix = ox0 - 1 + p % PW;
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = vio::ld4(x + (((int64_t)b * H + iy) * W + ix) * C + 4 * c4);
      st4_bf16(sx + p * CS + 4 * c4, v);
    }
    __syncthreads();
#pragma unroll 1
    for (int r = 0; r < TH; r++) {  // k16 step: the 16 pixels of output row r
      // A (o x pixel) from dout stored (pixel, o): matrices (o 0-7 | 8-15) x (pixels 0-7 | 8-15)
      const int pa = r * TW + (lane & 7) + (lane >> 4) * 8, oa = ((lane >> 3) & 1) * 8;
      // B (pixel x i) from the input stored (pixel, i): pixels kx .. kx + 15 of tile row r + ky
      const int pb = (r + ky) * PW + kx + (lane & 7) + ((lane >> 3) & 1) * 8, ib = (lane >> 4) * 8;
      uint32_t a[C / 16][4];
#pragma unroll
      for (int m = 0; m < C / 16; m++) mma::ldsm_x4_trans(a[m], sd_a + (uint32_t)(pa * CS + m * 16 + oa) * 2);
#pragma unroll
      for (int np = 0; np < C / 16; np++) {
        uint32_t bq[4];
        mma::ldsm_x4_trans(bq, sx_a + (uint32_t)(pb * CS + np * 16 + ib) * 2);
#pragma unroll
        for (int m = 0; m < C / 16; m++) {
          mma::bf16_16816(acc[m][2 * np], a[m], bq[0], bq[1]);
          mma::bf16_16816(acc[m][2 * np + 1], a[m], bq[2], bq[3]);
        }
      }
    }
  }
  float* out = part + ((int64_t)blockIdx.x * 9 + tap) * C * C;
#pragma unroll
  for (int m = 0; m < C / 16; m++)
#pragma unroll
    for (int n = 0; n < C / 8; n++) {
      const int o = m * 16 + g, i = n * 8 + 2 * t;
      *reinterpret_cast<float2*>(out + o * C + i) = make_float2(acc[m][n][0], acc[m][n][1]);
      *reinterpret_cast<float2*>(out + (o + 8) * C + i) = make_float2(acc[m][n][2], acc[m][n][3]);
    }
}

// wt (9, C, C) bf16 from the model's w (C, C, 3, 3) float32: for the
// convolution itself wt[tap][o][i] = w[o][i][tap]; for its dx (flip) the taps
// reversed and the channels swapped, wt[tap][i][o] = w[o][i][8 - tap].
__global__ void conv3x3_weights(bf16* wt, const float* w, int C, bool flip) {
  const int n = 9 * C * C;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
    const int tap = j / (C * C), r = (j / C) % C, c = j % C;  // wt[tap][r][c]
    const float v = flip ? w[((int64_t)c * C + r) * 9 + (8 - tap)] : w[((int64_t)r * C + c) * 9 + tap];
    wt[j] = __float2bfloat16_rn(v);
  }
}

}  // namespace conv3x3
}  // namespace cuda
}  // namespace nala
