// kernels/cpu/conv.cpp - conv2d (im2col + gemm) and depthwise conv, CPU.
// Shape letters and the save/overwrite rules: see conv.h.
//
// conv2d: the input is unfolded chunk by chunk (whole images, a buffer of
// 512 KiB that stays in L2 while the gemm reads it and col2im adds it up:
// for pico's 16-channel stem convolutions the backward pass takes a quarter
// of the CPU time it took with one 16 MB buffer for the whole batch) into cols (rows = images*Ho*Wo, K = Ci*k*k) in column order
// (ky*k + kx)*Ci + ci, so that each kernel row's taps are one contiguous copy
// of the channels-last input; the weight (Co, Ci, k, k) is permuted to
// (Co, k, k, Ci) to match (and dw permuted back). Then
//   forward   out   = cols @ w^T (+ bias)          one gemm per chunk
//   backward  dw   += dout^T @ cols                one gemm per chunk (beta 1)
//             dcols = dout @ w, then col2im        one gemm per chunk
//             dbias = column sums of dout
// gemm is OpenMP-parallel itself, so it is never called inside a parallel
// region here. col2im is written in gather form (each input pixel sums the
// columns that read it), parallel over input rows, so it has no races.
// A 1x1 stride-1 unpadded conv skips the unfolding: cols is x itself.
//
// dwconv2d: vectorised over the contiguous channel dimension, parallel over
// (b, y) output rows; each output pixel keeps a block of kDwBlock channel
// accumulators in registers across all k*k taps (1.2-1.6x over updating the
// output row in memory tap by tap). dx is the same stencil with the kernel flipped (gather
// form); dw and dbias are summed per fixed block of rows and the block
// partials reduced in order (deterministic for any thread count).
#include "kernels/cpu/conv.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/shape.h"
#include "kernels/conv_geometry.h"

namespace nala {
namespace cpu {

namespace {

constexpr int64_t kChunkFloats = int64_t(1) << 17;  // im2col buffer budget: 512 KiB, stays in L2
constexpr int64_t kReduceBlocks = 64;               // fixed partial-sum blocks
constexpr int64_t kParallelWork = 1 << 15;  // below this many flops a parallel region costs more than it saves

std::unique_ptr<float[]> scratch(int64_t n) { return std::unique_ptr<float[]>(new float[std::max<int64_t>(n, 1)]); }

// cols (nb*Ho*Wo, k*k*Ci) for images [b0, b0+nb), column (ky*k + kx)*Ci + ci.
// The input is channels-last, so the taps of one kernel row that fall inside
// the image are one contiguous run of x: one copy per (output pixel, ky).
void im2col(float* cols, const float* x, int64_t b0, int64_t nb, int64_t H, int64_t W, int64_t Ci, int64_t Ho,
            int64_t Wo, int64_t k, int64_t stride, int64_t pad) {
  const int64_t K = Ci * k * k, kC = k * Ci;
#pragma omp parallel for collapse(2) schedule(static) if (nb * Ho * Wo * K > kParallelWork)
  for (int64_t b = 0; b < nb; b++)
    for (int64_t oy = 0; oy < Ho; oy++) {
      const float* xb = x + (b0 + b) * H * W * Ci;
      for (int64_t ox = 0; ox < Wo; ox++) {
        float* row = cols + ((b * Ho + oy) * Wo + ox) * K;
        const int64_t ix0 = ox * stride - pad;
        const int64_t kx0 = std::max<int64_t>(0, -ix0), kx1 = std::min<int64_t>(k, W - ix0);  // taps inside
        for (int64_t ky = 0; ky < k; ky++) {
          const int64_t iy = oy * stride - pad + ky;
          float* dst = row + ky * kC;
          if (iy < 0 || iy >= H || kx1 <= kx0) {
            std::memset(dst, 0, kC * sizeof(float));
            continue;
          }
          if (kx0 > 0) std::memset(dst, 0, kx0 * Ci * sizeof(float));
          std::memcpy(dst + kx0 * Ci, xb + (iy * W + ix0 + kx0) * Ci, (kx1 - kx0) * Ci * sizeof(float));
          if (kx1 < k) std::memset(dst + kx1 * Ci, 0, (k - kx1) * Ci * sizeof(float));
        }
      }
    }
}

// dx for images [b0, b0+nb) (overwritten) from dcols (nb*Ho*Wo, k*k*Ci),
// gather form: each input pixel adds the Ci-runs of the columns that read it.
void col2im(float* dx, const float* dcols, int64_t b0, int64_t nb, int64_t H, int64_t W, int64_t Ci, int64_t Ho,
            int64_t Wo, int64_t k, int64_t stride, int64_t pad) {
  const int64_t K = Ci * k * k;
#pragma omp parallel for collapse(2) schedule(static) if (nb * H * W * K > kParallelWork)
  for (int64_t b = 0; b < nb; b++)
    for (int64_t iy = 0; iy < H; iy++) {
      float* dxrow = dx + ((b0 + b) * H + iy) * W * Ci;
      for (int64_t ix = 0; ix < W; ix++) {
        float* __restrict d = dxrow + ix * Ci;
        for (int64_t ci = 0; ci < Ci; ci++) d[ci] = 0.0f;
        for (int64_t ky = 0; ky < k; ky++) {
          const int64_t ty = iy + pad - ky;
          if (ty < 0 || ty % stride) continue;
          const int64_t oy = ty / stride;
          if (oy >= Ho) continue;
          for (int64_t kx = 0; kx < k; kx++) {
            const int64_t tx = ix + pad - kx;
            if (tx < 0 || tx % stride) continue;
            const int64_t ox = tx / stride;
            if (ox >= Wo) continue;
            const float* __restrict src = dcols + ((b * Ho + oy) * Wo + ox) * K + (ky * k + kx) * Ci;
#pragma omp simd
            for (int64_t ci = 0; ci < Ci; ci++) d[ci] += src[ci];
          }
        }
      }
    }
}

// The weight (Co, Ci, k, k) in the columns' order (Co, k, k, Ci), and back.
void weight_to_cols(float* wc, const float* w, int64_t Co, int64_t Ci, int64_t k) {
  const int64_t kk = k * k;
  for (int64_t co = 0; co < Co; co++)
    for (int64_t ci = 0; ci < Ci; ci++)
      for (int64_t t = 0; t < kk; t++) wc[(co * kk + t) * Ci + ci] = w[(co * Ci + ci) * kk + t];
}
void weight_from_cols(float* w, const float* wc, int64_t Co, int64_t Ci, int64_t k) {
  const int64_t kk = k * k;
  for (int64_t co = 0; co < Co; co++)
    for (int64_t ci = 0; ci < Ci; ci++)
      for (int64_t t = 0; t < kk; t++) w[(co * Ci + ci) * kk + t] = wc[(co * kk + t) * Ci + ci];
}

// out[c] = sum over rows of a (rows, C), in fixed blocks reduced in order.
void column_sums(float* out, const float* a, int64_t rows, int64_t C) {
  const int64_t nblk = std::max<int64_t>(1, std::min(rows, kReduceBlocks));
  std::vector<float> part(nblk * C, 0.0f);
#pragma omp parallel for schedule(static) if (rows * C > kParallelWork)
  for (int64_t blk = 0; blk < nblk; blk++) {
    float* p = part.data() + blk * C;
    for (int64_t r = blk * rows / nblk; r < (blk + 1) * rows / nblk; r++) {
      const float* ar = a + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) p[c] += ar[c];
    }
  }
  for (int64_t c = 0; c < C; c++) {
    double s = 0;
    for (int64_t blk = 0; blk < nblk; blk++) s += part[blk * C + c];
    out[c] = (float)s;
  }
}


}  // namespace

// ---- conv2d -----------------------------------------------------------------

void conv2d_forward_naive(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                          int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad) {
  const int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  for (int64_t b = 0; b < B; b++)
    for (int64_t oy = 0; oy < Ho; oy++)
      for (int64_t ox = 0; ox < Wo; ox++)
        for (int64_t co = 0; co < Co; co++) {
          double acc = bias ? bias[co] : 0.0;
          for (int64_t ci = 0; ci < Ci; ci++)
            for (int64_t ky = 0; ky < k; ky++)
              for (int64_t kx = 0; kx < k; kx++) {
                int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                acc += (double)x[((b * H + iy) * W + ix) * Ci + ci] * w[((co * Ci + ci) * k + ky) * k + kx];
              }
          out[((b * Ho + oy) * Wo + ox) * Co + co] = (float)acc;
        }
}

void conv2d_backward_naive(float* dx, float* dw, float* dbias, const float* dout, const float* x,
                           const float* w, int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co, int64_t k,
                           int64_t stride, int64_t pad) {
  const int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  if (dx) std::fill(dx, dx + B * H * W * Ci, 0.0f);
  if (dw) std::fill(dw, dw + Co * Ci * k * k, 0.0f);
  if (dbias) std::fill(dbias, dbias + Co, 0.0f);
  for (int64_t b = 0; b < B; b++)
    for (int64_t oy = 0; oy < Ho; oy++)
      for (int64_t ox = 0; ox < Wo; ox++)
        for (int64_t co = 0; co < Co; co++) {
          float g = dout[((b * Ho + oy) * Wo + ox) * Co + co];
          if (dbias) dbias[co] += g;
          for (int64_t ci = 0; ci < Ci; ci++)
            for (int64_t ky = 0; ky < k; ky++)
              for (int64_t kx = 0; kx < k; kx++) {
                int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                int64_t xi = ((b * H + iy) * W + ix) * Ci + ci, wi = ((co * Ci + ci) * k + ky) * k + kx;
                if (dx) dx[xi] += g * w[wi];
                if (dw) dw[wi] += g * x[xi];
              }
        }
}

void conv2d_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                    int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad) {
  const ConvGeom g = conv_geometry(H, W, Ci, k, stride, pad, kChunkFloats);
  std::unique_ptr<float[]> cols, wcols;
  if (!g.direct) cols = scratch(std::min(B, g.chunk) * g.per_image * g.K);
  if (k > 1) {  // the weight in the columns' order
    wcols = scratch(Co * g.K);
    weight_to_cols(wcols.get(), w, Co, Ci, k);
    w = wcols.get();
  }
  for (int64_t b0 = 0; b0 < B; b0 += g.chunk) {
    const int64_t nb = std::min(g.chunk, B - b0), rows = nb * g.per_image;
    const float* A = g.direct ? x + b0 * g.per_image * Ci : cols.get();
    if (!g.direct) im2col(cols.get(), x, b0, nb, H, W, Ci, g.Ho, g.Wo, k, stride, pad);
    float* o = out + b0 * g.per_image * Co;
    if (bias) {
#pragma omp parallel for schedule(static) if (rows * Co > kParallelWork)
      for (int64_t r = 0; r < rows; r++) std::memcpy(o + r * Co, bias, Co * sizeof(float));
    }
    gemm(false, true, rows, Co, g.K, 1.0f, A, g.K, w, g.K, bias ? 1.0f : 0.0f, o, Co);
  }
}

void conv2d_backward(float* dx, float* dw, float* dbias, const float* dout, const float* x, const float* w,
                     int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride,
                     int64_t pad) {
  const ConvGeom g = conv_geometry(H, W, Ci, k, stride, pad, kChunkFloats);
  if (dbias) column_sums(dbias, dout, B * g.per_image, Co);
  if (!dx && !dw) return;
  const int64_t buf = std::min(B, g.chunk) * g.per_image * g.K;
  std::unique_ptr<float[]> cols, dcols, wcols, dwcols;
  if (dw && !g.direct) cols = scratch(buf);
  if (dx && !g.direct) dcols = scratch(buf);
  float* dwc = dw;  // dw in the columns' order
  if (k > 1) {
    if (dx) {
      wcols = scratch(Co * g.K);
      weight_to_cols(wcols.get(), w, Co, Ci, k);
      w = wcols.get();
    }
    if (dw) dwcols = scratch(Co * g.K), dwc = dwcols.get();
  }
  for (int64_t b0 = 0; b0 < B; b0 += g.chunk) {
    const int64_t nb = std::min(g.chunk, B - b0), rows = nb * g.per_image;
    const float* dO = dout + b0 * g.per_image * Co;
    if (dw) {
      const float* A = g.direct ? x + b0 * g.per_image * Ci : cols.get();
      if (!g.direct) im2col(cols.get(), x, b0, nb, H, W, Ci, g.Ho, g.Wo, k, stride, pad);
      gemm(true, false, Co, g.K, rows, 1.0f, dO, Co, A, g.K, b0 == 0 ? 0.0f : 1.0f, dwc, g.K);
    }
    if (dx) {
      float* D = g.direct ? dx + b0 * g.per_image * Ci : dcols.get();
      gemm(false, false, rows, g.K, Co, 1.0f, dO, Co, w, g.K, 0.0f, D, g.K);
      if (!g.direct) col2im(dx, dcols.get(), b0, nb, H, W, Ci, g.Ho, g.Wo, k, stride, pad);
    }
  }
  if (dw && dwc != dw) weight_from_cols(dw, dwc, Co, Ci, k);
}

// ---- depthwise conv2d ---------------------------------------------------------

void dwconv2d_forward_naive(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                            int64_t W, int64_t C, int64_t k) {
  const int64_t p = k / 2;
  for (int64_t b = 0; b < B; b++)
    for (int64_t y = 0; y < H; y++)
      for (int64_t xx = 0; xx < W; xx++)
        for (int64_t c = 0; c < C; c++) {
          double acc = bias ? bias[c] : 0.0;
          for (int64_t ky = 0; ky < k; ky++)
            for (int64_t kx = 0; kx < k; kx++) {
              int64_t iy = y + ky - p, ix = xx + kx - p;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              acc += (double)w[(c * k + ky) * k + kx] * x[((b * H + iy) * W + ix) * C + c];
            }
          out[((b * H + y) * W + xx) * C + c] = (float)acc;
        }
}

void dwconv2d_backward_naive(float* dx, float* dw, float* dbias, const float* dout, const float* x,
                             const float* w, int64_t B, int64_t H, int64_t W, int64_t C, int64_t k) {
  const int64_t p = k / 2;
  if (dx) std::fill(dx, dx + B * H * W * C, 0.0f);
  if (dw) std::fill(dw, dw + C * k * k, 0.0f);
  if (dbias) std::fill(dbias, dbias + C, 0.0f);
  for (int64_t b = 0; b < B; b++)
    for (int64_t y = 0; y < H; y++)
      for (int64_t xx = 0; xx < W; xx++)
        for (int64_t c = 0; c < C; c++) {
          float g = dout[((b * H + y) * W + xx) * C + c];
          if (dbias) dbias[c] += g;
          for (int64_t ky = 0; ky < k; ky++)
            for (int64_t kx = 0; kx < k; kx++) {
              int64_t iy = y + ky - p, ix = xx + kx - p;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              int64_t xi = ((b * H + iy) * W + ix) * C + c, wi = (c * k + ky) * k + kx;
              if (dx) dx[xi] += g * w[wi];
              if (dw) dw[wi] += g * x[xi];
            }
        }
}

namespace {

constexpr int64_t kDwBlock = 32;  // channels held in registers per output pixel

// One output pixel, channels [0, n) of the block starting at xc / wc / bc: the
// accumulators stay in registers across all taps (n = kDwBlock: compile-time size).
template <int64_t N>
inline void dw_pixel(float* dst, const float* xc, const float* wc, const float* bc, const float* ac, int64_t n,
                     int64_t y, int64_t xx, int64_t H, int64_t W, int64_t C, int64_t k) {
  const int64_t p = k / 2, len = N > 0 ? N : n;
  float acc[N > 0 ? N : kDwBlock];
#pragma omp simd
  for (int64_t c = 0; c < len; c++) acc[c] = bc ? bc[c] : 0.0f;
  for (int64_t ky = std::max<int64_t>(0, p - y); ky < std::min<int64_t>(k, H + p - y); ky++) {
    const float* xr = xc + (y + ky - p) * W * C;
    for (int64_t kx = std::max<int64_t>(0, p - xx); kx < std::min<int64_t>(k, W + p - xx); kx++) {
      const float* xs = xr + (xx + kx - p) * C;
      const float* wv = wc + (ky * k + kx) * C;
#pragma omp simd
      for (int64_t c = 0; c < len; c++) acc[c] += wv[c] * xs[c];
    }
  }
  if (ac) {  // the addend joins at the store: (bias + taps) + add, as a separate add would round it
#pragma omp simd
    for (int64_t c = 0; c < len; c++) dst[c] = acc[c] + ac[c];
  } else {
#pragma omp simd
    for (int64_t c = 0; c < len; c++) dst[c] = acc[c];
  }
}

// kDwPixels output pixels xx, xx+1, ... of row y, every one with all k
// horizontal taps inside the image, kDwBlock channels from c0: each tap's
// weights are loaded once for all the pixels (one load of w and kDwPixels of
// x per kDwPixels FMAs, against two loads per FMA pixel by pixel).
constexpr int kDwPixels = 4;
inline void dw_pixels(float* dst, const float* xc, const float* wc, const float* bc, const float* ac, int64_t y,
                      int64_t xx, int64_t H, int64_t W, int64_t C, int64_t k) {
  constexpr int64_t N = kDwBlock;
  const int64_t p = k / 2;
  float acc[kDwPixels][N];
#pragma GCC unroll 4
  for (int q = 0; q < kDwPixels; q++)
#pragma omp simd
    for (int64_t c = 0; c < N; c++) acc[q][c] = bc ? bc[c] : 0.0f;
  for (int64_t ky = std::max<int64_t>(0, p - y); ky < std::min<int64_t>(k, H + p - y); ky++) {
    const float* xr = xc + ((y + ky - p) * W + xx - p) * C;
    for (int64_t kx = 0; kx < k; kx++) {
      const float* wv = wc + (ky * k + kx) * C;
      const float* xs = xr + kx * C;
#pragma GCC unroll 4
      for (int q = 0; q < kDwPixels; q++)
#pragma omp simd
        for (int64_t c = 0; c < N; c++) acc[q][c] += wv[c] * xs[q * C + c];
    }
  }
  if (ac) {
#pragma GCC unroll 4
    for (int q = 0; q < kDwPixels; q++)
#pragma omp simd
      for (int64_t c = 0; c < N; c++) dst[q * C + c] = acc[q][c] + ac[q * C + c];
  } else {
#pragma GCC unroll 4
    for (int q = 0; q < kDwPixels; q++)
#pragma omp simd
      for (int64_t c = 0; c < N; c++) dst[q * C + c] = acc[q][c];
  }
}

// acc[c] += sum_{j < m} g[j*C + c] * xs[j*C + c], c < n, accumulators in registers.
template <int64_t N>
inline void dw_tap(float* acc, const float* g, const float* xs, int64_t n, int64_t m, int64_t C) {
  const int64_t len = N > 0 ? N : n;
  float a[N > 0 ? N : kDwBlock];
#pragma omp simd
  for (int64_t c = 0; c < len; c++) a[c] = acc[c];
  for (int64_t j = 0; j < m; j++) {
    const float* gd = g + j * C;
    const float* xd = xs + j * C;
#pragma omp simd
    for (int64_t c = 0; c < len; c++) a[c] += gd[c] * xd[c];
  }
#pragma omp simd
  for (int64_t c = 0; c < len; c++) acc[c] = a[c];
}

// out = stencil(x) (+ add, when given: the same (B, H, W, C) layout) with taps
// wt laid out (k*k, C) (tap-major, channel contiguous).
void dw_stencil(float* out, const float* x, const float* wt, const float* bias, const float* add, int64_t B,
                int64_t H, int64_t W, int64_t C, int64_t k) {
#pragma omp parallel for collapse(2) schedule(static) if (B * H * W * C * k * k > kParallelWork)
  for (int64_t b = 0; b < B; b++)
    for (int64_t y = 0; y < H; y++) {
      float* o = out + (b * H + y) * W * C;
      const float* a = add ? add + (b * H + y) * W * C : nullptr;
      const float* xb = x + b * H * W * C;
      const int64_t p = k / 2;
      int64_t xx = 0;
      for (; xx < W; xx++) {
        if (xx >= p && xx + kDwPixels + p <= W && C % kDwBlock == 0) {  // an interior run: several pixels at once
          for (int64_t c0 = 0; c0 < C; c0 += kDwBlock)
            dw_pixels(o + xx * C + c0, xb + c0, wt + c0, bias ? bias + c0 : nullptr, a ? a + xx * C + c0 : nullptr, y,
                      xx, H, W, C, k);
          xx += kDwPixels - 1;
          continue;
        }
        int64_t c0 = 0;
        for (; c0 + kDwBlock <= C; c0 += kDwBlock)
          dw_pixel<kDwBlock>(o + xx * C + c0, xb + c0, wt + c0, bias ? bias + c0 : nullptr,
                             a ? a + xx * C + c0 : nullptr, kDwBlock, y, xx, H, W, C, k);
        if (c0 < C)
          dw_pixel<0>(o + xx * C + c0, xb + c0, wt + c0, bias ? bias + c0 : nullptr, a ? a + xx * C + c0 : nullptr,
                      C - c0, y, xx, H, W, C, k);
      }
    }
}

}  // namespace

void dwconv2d_add_forward(float* out, const float* x, const float* w, const float* bias, const float* add, int64_t B,
                          int64_t H, int64_t W, int64_t C, int64_t k) {
  const int64_t kk = k * k;
  std::vector<float> wt(kk * C);  // taps major: (kk, C)
  transpose_2d(wt.data(), w, C, kk);
  dw_stencil(out, x, wt.data(), bias, add, B, H, W, C, k);
}

void dwconv2d_gelu_backward(float* dpre, float* dw, float* dbias, const float* dout, const float* h, const float* pre,
                            const float* w, int64_t B, int64_t H, int64_t W, int64_t C, int64_t k) {
  const int64_t n = B * H * W * C;
  std::vector<float> dh(dpre ? n : 0);
  dwconv2d_backward(dpre ? dh.data() : nullptr, dw, dbias, dout, h, w, B, H, W, C, k, dout);
  if (dpre) gelu_backward(dpre, dh.data(), pre, n);
}

void dwconv2d_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                      int64_t W, int64_t C, int64_t k) {
  dwconv2d_add_forward(out, x, w, bias, nullptr, B, H, W, C, k);
}

void dwconv2d_backward(float* dx, float* dw, float* dbias, const float* dout, const float* x, const float* w,
                       int64_t B, int64_t H, int64_t W, int64_t C, int64_t k, const float* dx_add) {
  const int64_t kk = k * k, p = k / 2;
  if (dx) {  // dx = dout stencilled with the flipped kernel (k - 1 - t reverses both ky and kx)
    std::vector<float> wt(kk * C);
    for (int64_t c = 0; c < C; c++)
      for (int64_t t = 0; t < kk; t++) wt[t * C + c] = w[c * kk + (kk - 1 - t)];
    dw_stencil(dx, dout, wt.data(), nullptr, dx_add, B, H, W, C, k);
  }
  if (!dw && !dbias) return;
  const int64_t R = B * H, nblk = std::max<int64_t>(1, std::min(R, kReduceBlocks)), stride = (kk + 1) * C;
  std::vector<float> part(nblk * stride, 0.0f);  // per block: taps (kk, C) then bias (C)
#pragma omp parallel for schedule(static) if (B * H * W * C * (k * k + 1) > kParallelWork)
  for (int64_t blk = 0; blk < nblk; blk++) {
    float* pw = part.data() + blk * stride;
    float* pb = pw + kk * C;
    for (int64_t r = blk * R / nblk; r < (blk + 1) * R / nblk; r++) {
      const int64_t b = r / H, y = r % H;
      const float* g = dout + r * W * C;
      for (int64_t xx = 0; xx < W; xx++)
#pragma omp simd
        for (int64_t c = 0; c < C; c++) pb[c] += g[xx * C + c];
      if (!dw) continue;
      for (int64_t ky = 0; ky < k; ky++) {
        const int64_t iy = y + ky - p;
        if (iy < 0 || iy >= H) continue;
        const float* xr = x + (b * H + iy) * W * C;
        for (int64_t kx = 0; kx < k; kx++) {
          float* acc = pw + (ky * k + kx) * C;
          const int64_t x0 = std::max<int64_t>(0, p - kx), x1 = std::min<int64_t>(W, W + p - kx);
          const float* xs = xr + (x0 + kx - p) * C;
          const float* gs = g + x0 * C;
          int64_t c0 = 0;
          for (; c0 + kDwBlock <= C; c0 += kDwBlock)
            dw_tap<kDwBlock>(acc + c0, gs + c0, xs + c0, kDwBlock, x1 - x0, C);
          if (c0 < C) dw_tap<0>(acc + c0, gs + c0, xs + c0, C - c0, x1 - x0, C);
        }
      }
    }
  }
  for (int64_t c = 0; c < C; c++) {
    if (dw)
      for (int64_t t = 0; t < kk; t++) {
        double s = 0;
        for (int64_t blk = 0; blk < nblk; blk++) s += part[blk * stride + t * C + c];
        dw[c * kk + t] = (float)s;
      }
    if (dbias) {
      double s = 0;
      for (int64_t blk = 0; blk < nblk; blk++) s += part[blk * stride + kk * C + c];
      dbias[c] = (float)s;
    }
  }
}

}  // namespace cpu
}  // namespace nala
