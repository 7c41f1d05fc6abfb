// kernels/cuda/conv3x3_tc.cuh - the 3 x 3, padding 1 convolutions of the stem
// (stride 1: the middle ones, C to C channels, and their dx, which is the same
// convolution of dout with the taps reversed and the channels swapped; stride
// 2: the first, from the image's 1 or 3 channels, and the last) on bf16 tensor
// cores, from shared-memory tiles: the products of bf16 mode (each operand
// rounded to bf16, float32 sums). Used by conv.cu in bf16 mode for the channel
// counts conv3x3_supported lists; the implicit GEMM (gemm_bf16_mma.cuh,
// GATHER) stays the general path and the reference in the tests.
//
// Why: the implicit GEMM gathers each unfolded row of 9 C values from global
// memory, through registers (float32 operands cannot go by cp.async), with the
// index arithmetic of a general k, stride and padding for every 8 columns; at
// t's 112 x 112 stem (C = 32, 1.6M rows, K = 288, N = 32) that took 1 ms a
// call (Nsight Compute), about ten times its memory time.
//
// Here a block owns an output tile of 8 rows x 16 columns (128 pixels) of one
// image. Its input tile with the halo, (7 S + 3) x (15 S + 3) pixels of CI
// channels (S the stride), is read from global memory once (rounded to bf16
// into shared memory; an image of fewer channels, CIR < CI, is padded with
// zeros) and all 9 taps read it from there: tap (ky, kx) of output row r is
// the 16 input pixels of tile row S r + ky from column kx, S apart, so a
// 16 x 16 A fragment (16 pixels x 16 channels) is one ldmatrix.x4 of 16
// pixel rows. The weights, (9, CO, CI) bf16 ([tap][out channel][in channel],
// made once per call by conv3x3_weights), sit in shared memory for the
// block's whole life: blocks are persistent, each looping over tiles. Four
// warps, each two output rows (two m16 fragments) by all CO output channels:
// 9 * CI / 16 k steps of CO / 8 mma.m16n8k16 per fragment. Pixel rows in
// shared memory are CI + 8 bf16 apart (16 bytes of padding): the 8 row
// addresses of an ldmatrix fall in distinct banks. The epilogue adds the
// bias and stores pairs of float32 (or bf16) outputs; pixels past the image
// edge are read as zeros and not stored. For inference the epilogue can
// also apply a per-channel affine map and GELU: a BatchNorm in eval mode and
// the activation after it, out = gelu((conv + bias) scale + shift), with no
// pass of their own over the activations (conv2d_affine, autograd/ops.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/vec_io.cuh"

namespace nala {
namespace cuda {
namespace conv3x3 {

using bf16 = __nv_bfloat16;

constexpr int TH = 8, TW = 16;                // output tile
constexpr int kThreads = 128;                 // 4 warps, 2 output rows each

// The input tile (with the halo) of an output tile at stride S.
template <int S>
constexpr int tile_h() { return (TH - 1) * S + 3; }
template <int S>
constexpr int tile_w() { return (TW - 1) * S + 3; }

template <int CI, int CO, int S>
constexpr int smem_bytes() {
  return (tile_h<S>() * tile_w<S>() + 9 * CO) * (CI + 8) * (int)sizeof(bf16);
}

__device__ __forceinline__ void st4_bf16(bf16* p, float4 v) { vio::st4(p, v); }

// Zeros in the input tile's channels CIR .. CI - 1, once: load_tile leaves them alone.
template <int CI, int PTH, int PTW, int NT>
__device__ __forceinline__ void zero_tile(bf16* sx) {
  for (int i = threadIdx.x; i < PTH * PTW * (CI + 8); i += NT) sx[i] = __float2bfloat16_rn(0.0f);
}

// The input tile of (b, iy0, ix0): PTH x PTW pixels of CI bf16 (CS apart),
// rounded from x (B, H, W, CIR); zeros outside the image; channels CIR .. CI - 1
// (an image's padding, !vec) as zero_tile left them.
template <int CI, int PTH, int PTW, int NT, class TI>
__device__ __forceinline__ void load_tile(bf16* sx, const TI* x, int b, int iy0, int ix0, int H, int W, int CIR,
                                          bool vec) {
  constexpr int CS = CI + 8;
  const int tid = threadIdx.x;
  if (vec) {  // CIR == CI, rows 16 (8) bytes aligned: four channels a load
    for (int i = tid; i < PTH * PTW * (CI / 4); i += NT) {
      const int p = i / (CI / 4), c4 = i % (CI / 4);
      const int iy = iy0 + p / PTW, ix = ix0 + p % PTW;
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = vio::ld4(x + (((int64_t)b * H + iy) * W + ix) * CI + 4 * c4);
      st4_bf16(sx + p * CS + 4 * c4, v);
    }
    return;
  }
  for (int i = tid; i < PTH * PTW * CIR; i += NT) {  // one channel at a time (an image's 1 or 3)
    const int p = i / CIR, c = i - p * CIR;
    const int iy = iy0 + p / PTW, ix = ix0 + p % PTW;
    float v = 0.0f;
    if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = vio::ld1(x + (((int64_t)b * H + iy) * W + ix) * CIR + c);
    sx[p * CS + c] = __float2bfloat16_rn(v);
  }
}

// out (B, Ho, Wo, CO) = conv3x3(x (B, H, W, CIR), stride S, padding 1; wt) +
// bias, wt (9, CO, CI) bf16 [tap][out][in] (in channels past CIR zero); bias
// nullable. With scale and shift (CO each, both or neither) each output is
// then v scale + shift, and with gelu GELU of that.
// Grid: persistent blocks over B * tiles_h * tiles_w output tiles.
template <int CI, int CO, int S, class TI, class TO>
__global__ void __launch_bounds__(kThreads) conv3x3_kernel(TO* out, const TI* x, const bf16* wt, const float* bias,
                                                           int B, int H, int W, int Ho, int Wo, int CIR, bool vec,
                                                           int tiles_h, int tiles_w, const float* scale,
                                                           const float* shift, bool gelu) {
  static_assert(CI % 16 == 0 && CO % 16 == 0 && CO <= 64 && (S == 1 || S == 2), "conv3x3: channels, stride");
  constexpr int CS = CI + 8, PTH = tile_h<S>(), PTW = tile_w<S>();
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sx = reinterpret_cast<bf16*>(smem);  // (PTH * PTW, CS)
  bf16* sw = sx + PTH * PTW * CS;            // (9 * CO, CS)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;

  // the weights, once: 9 * CO rows of CI bf16, 16 bytes at a time
  for (int i = tid; i < 9 * CO * (CI / 8); i += kThreads) {
    const int row = i / (CI / 8), ch = i % (CI / 8);
    *reinterpret_cast<uint4*>(sw + row * CS + ch * 8) = reinterpret_cast<const uint4*>(wt)[i];
  }

  if (!vec) zero_tile<CI, PTH, PTW, kThreads>(sx);
  const uint32_t sx_a = mma::smem_addr(sx), sw_a = mma::smem_addr(sw);
  const int ntiles = B * tiles_h * tiles_w;
  for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
    const int tw = tile % tiles_w, th = (tile / tiles_w) % tiles_h, b = tile / (tiles_w * tiles_h);
    const int oy0 = th * TH, ox0 = tw * TW;
    __syncthreads();  // the previous tile's reads of sx are done (and, the first time, sw is written)
    load_tile<CI, PTH, PTW, kThreads>(sx, x, b, oy0 * S - 1, ox0 * S - 1, H, W, CIR, vec);
    __syncthreads();

    float acc[2][CO / 8][4];
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
      for (int n = 0; n < CO / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[m][n][e] = 0.0f;

#pragma unroll
    for (int tap = 0; tap < 9; tap++) {
      const int ky = tap / 3, kx = tap % 3;
#pragma unroll
      for (int kc = 0; kc < CI / 16; kc++) {
        uint32_t a[2][4];
#pragma unroll
        for (int m = 0; m < 2; m++) {  // output pixels 0 .. 15 of tile row 2 warp + m: input S j + kx of row S r + ky
          const int pix = ((2 * warp + m) * S + ky) * PTW + kx + S * (lane & 15);
          mma::ldsm_x4(a[m], sx_a + (uint32_t)(pix * CS + kc * 16 + (lane >> 4) * 8) * 2);
        }
#pragma unroll
        for (int np = 0; np < CO / 16; np++) {  // output channels 16 np .. 16 np + 15
          uint32_t bq[4];
          const int row = tap * CO + np * 16 + (lane & 7) + (lane >> 4) * 8;
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
      if (oy >= Ho) continue;
#pragma unroll
      for (int half = 0; half < 2; half++) {
        const int ox = ox0 + g + 8 * half;
        if (ox >= Wo) continue;
        TO* o = out + (((int64_t)b * Ho + oy) * Wo + ox) * CO;
#pragma unroll
        for (int n = 0; n < CO / 8; n++) {
          const int co = n * 8 + 2 * t;
          float v0 = acc[m][n][2 * half], v1 = acc[m][n][2 * half + 1];
          if (bias) v0 += bias[co], v1 += bias[co + 1];
          if (scale) v0 = v0 * scale[co] + shift[co], v1 = v1 * scale[co + 1] + shift[co + 1];
          if (gelu) v0 = act::gelu(v0), v1 = act::gelu(v1);
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
// dw[tap][o][i] = sum over output pixels p of dout[p][o] x[S p + tap][i]: per
// tap a product of dout^T (CO x pixels) and the shifted input (pixels x CI),
// K the pixels. A block of 9 warps, one a tap, loops over the same 8 x 16
// output tiles as the forward kernel: the tile's dout (128 pixels) and input
// with its halo go to shared memory in bf16, and each warp runs its tap's
// product over the tile's 8 rows of 16 pixels (one k16 step a row: dout rows
// by ldmatrix.trans as the A fragment, the input pixels kx, kx + S, ... of
// row S r + ky as B, also .trans), accumulating in registers across all its
// tiles. Each block then writes its (9, CO, CI) partial sums;
// conv3x3_dw_finish (conv.cu) adds the blocks' partials in a fixed order (the
// grid depends on the device only).
constexpr int kDwThreads = 9 * 32;

template <int CI, int CO, int S>
constexpr int dw_smem_bytes() {
  return TH * TW * (CO + 8) * (int)sizeof(bf16) + tile_h<S>() * tile_w<S>() * (CI + 8) * (int)sizeof(bf16);
}

template <int CI, int CO, int S, class TI>
__global__ void __launch_bounds__(kDwThreads) conv3x3_dw_kernel(float* part, const TI* dout, const TI* x, int B, int H,
                                                                int W, int Ho, int Wo, int CIR, bool vec, int tiles_h,
                                                                int tiles_w) {
  static_assert(CI % 16 == 0 && CO % 16 == 0 && CO <= 64 && CI <= 64 && (S == 1 || S == 2), "conv3x3: channels");
  constexpr int CSI = CI + 8, CSO = CO + 8, PTH = tile_h<S>(), PTW = tile_w<S>();
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sd = reinterpret_cast<bf16*>(smem);  // (TH * TW, CSO): dout of the tile
  bf16* sx = sd + TH * TW * CSO;             // (PTH * PTW, CSI): the input tile with its halo
  const int tid = threadIdx.x, lane = tid & 31, tap = tid >> 5;  // warp = tap
  const int ky = tap / 3, kx = tap % 3, g = lane >> 2, t = lane & 3;
  const uint32_t sd_a = mma::smem_addr(sd), sx_a = mma::smem_addr(sx);

  float acc[CO / 16][CI / 8][4];
#pragma unroll
  for (int m = 0; m < CO / 16; m++)
#pragma unroll
    for (int n = 0; n < CI / 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[m][n][e] = 0.0f;

  if (!vec) zero_tile<CI, PTH, PTW, kDwThreads>(sx);
  const int ntiles = B * tiles_h * tiles_w;
  for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
    const int tw = tile % tiles_w, th = (tile / tiles_w) % tiles_h, b = tile / (tiles_w * tiles_h);
    const int oy0 = th * TH, ox0 = tw * TW;
    __syncthreads();
    for (int i = tid; i < TH * TW * (CO / 4); i += kDwThreads) {
      const int p = i / (CO / 4), c4 = i % (CO / 4);
      const int oy = oy0 + p / TW, ox = ox0 + p % TW;
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (oy < Ho && ox < Wo) v = vio::ld4(dout + (((int64_t)b * Ho + oy) * Wo + ox) * CO + 4 * c4);
      st4_bf16(sd + p * CSO + 4 * c4, v);
    }
    load_tile<CI, PTH, PTW, kDwThreads>(sx, x, b, oy0 * S - 1, ox0 * S - 1, H, W, CIR, vec);
    __syncthreads();
#pragma unroll 1
    for (int r = 0; r < TH; r++) {  // k16 step: the 16 pixels of output row r
      // A (o x pixel) from dout stored (pixel, o): matrices (o 0-7 | 8-15) x (pixels 0-7 | 8-15)
      const int pa = r * TW + (lane & 7) + (lane >> 4) * 8, oa = ((lane >> 3) & 1) * 8;
      // B (pixel x i) from the input stored (pixel, i): output pixel j reads input column S j + kx of row S r + ky
      const int pb = (r * S + ky) * PTW + kx + S * ((lane & 7) + ((lane >> 3) & 1) * 8), ib = (lane >> 4) * 8;
      uint32_t a[CO / 16][4];
#pragma unroll
      for (int m = 0; m < CO / 16; m++) mma::ldsm_x4_trans(a[m], sd_a + (uint32_t)(pa * CSO + m * 16 + oa) * 2);
#pragma unroll
      for (int np = 0; np < CI / 16; np++) {
        uint32_t bq[4];
        mma::ldsm_x4_trans(bq, sx_a + (uint32_t)(pb * CSI + np * 16 + ib) * 2);
#pragma unroll
        for (int m = 0; m < CO / 16; m++) {
          mma::bf16_16816(acc[m][2 * np], a[m], bq[0], bq[1]);
          mma::bf16_16816(acc[m][2 * np + 1], a[m], bq[2], bq[3]);
        }
      }
    }
  }
  float* out = part + ((int64_t)blockIdx.x * 9 + tap) * CO * CI;
#pragma unroll
  for (int m = 0; m < CO / 16; m++)
#pragma unroll
    for (int n = 0; n < CI / 8; n++) {
      const int o = m * 16 + g, i = n * 8 + 2 * t;
      *reinterpret_cast<float2*>(out + o * CI + i) = make_float2(acc[m][n][0], acc[m][n][1]);
      *reinterpret_cast<float2*>(out + (o + 8) * CI + i) = make_float2(acc[m][n][2], acc[m][n][3]);
    }
}

// wt (9, CO, CI) bf16 from the model's w (Co, Ci, 3, 3) float32: for the
// convolution itself (CO = Co) wt[tap][o][i] = w[o][i][tap], zero for i >= Ci
// (CI >= Ci, the padded input channels); for its dx (flip: CO = Ci, CI = Co)
// the taps reversed and the channels swapped, wt[tap][i][o] = w[o][i][8 - tap].
__global__ void conv3x3_weights(bf16* wt, const float* w, int CO, int CI, int Co, int Ci, bool flip) {
  const int n = 9 * CO * CI;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
    const int tap = j / (CO * CI), r = (j / CI) % CO, c = j % CI;  // wt[tap][r][c]
    float v = 0.0f;
    if (flip) v = w[((int64_t)c * Ci + r) * 9 + (8 - tap)];
    else if (c < Ci) v = w[((int64_t)r * Ci + c) * 9 + tap];
    wt[j] = __float2bfloat16_rn(v);
  }
}

}  // namespace conv3x3
}  // namespace cuda
}  // namespace nala
