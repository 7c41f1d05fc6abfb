// kernels/conv_gather.h - the unfolding (im2col) of a channels-last image
// batch, read in place by the implicit-GEMM convolutions: the bf16 one
// (kernels/cuda/gemm_bf16_mma.cuh, fetch_gather) 8 consecutive columns of
// one row at a time, the FP32 one (kernels/cuda/gemm_fp32.cuh) 4. Plain C++ on the host (tested there against
// a written-out unfolding: tests/test_conv.cpp), the same code in the kernel.
//
// x is (B, H, W, Ci); a k x k convolution with stride s and padding pad has
// rows r = (b, ho, wo) (rows = B Ho Wo) and columns q = t Ci + ci, tap
// t = ky k + kx major and the channel ci fastest (cols = k k Ci):
//
//   unfold(r, q) = x[b, ho s - pad + ky, wo s - pad + kx, ci], 0 in the padding.
//
// Channel-fastest columns make 8 (4) consecutive ones 8 (4) consecutive floats
// of x when Ci % 8 (4) == 0 (16-byte loads), and neighbours in memory otherwise.
// The weights must be in the same order, (Co, k, k, Ci): conv.cu permutes
// them from the (Co, Ci, k, k) of the model, and permutes dw back.
#pragma once
#include <cstdint>

#include "kernels/fastdiv.h"

namespace nala {

struct ConvGather {
  int H, W, Ci, Ho, Wo, k, stride, pad, rows, cols;  // rows = B Ho Wo, cols = k k Ci
  bool vec;  // x 16-byte aligned: with Ci % 4 (or 8) == 0, a piece is one (or two) 16-byte loads
  FastDiv by_per, by_Wo, by_Ci, by_k;  // division by Ho Wo, Wo, Ci, k: the index math is most of a chunk's work
  ConvGather() = default;
  ConvGather(int H_, int W_, int Ci_, int Ho_, int Wo_, int k_, int stride_, int pad_, int rows_, int cols_, bool vec_)
      : H(H_), W(W_), Ci(Ci_), Ho(Ho_), Wo(Wo_), k(k_), stride(stride_), pad(pad_), rows(rows_), cols(cols_),
        vec(vec_), by_per((int64_t)Ho_ * Wo_), by_Wo(Wo_), by_Ci(Ci_), by_k(k_) {}
};

// v[j] = unfold(r, q0 + j) for j < N (4 or 8), 0 at columns >= qmax; r < rows,
// q0 a multiple of N. With Ci % N == 0 and all N columns inside, they are N
// channels of one tap (one pixel): N / 4 16-byte loads when x is aligned.
template <int N>
NALA_HOST_DEVICE inline void gather_cols(const float* x, const ConvGather& g, int r, int q0, int qmax, float (&v)[N]) {
  static_assert(N == 4 || N == 8, "gather_cols: 4 or 8 columns");
  const int b = g.by_per(r), rem = r - b * g.Ho * g.Wo, ho = g.by_Wo(rem), wo = rem - ho * g.Wo;
  const int h0 = ho * g.stride - g.pad, w0 = wo * g.stride - g.pad;
  const float* xb = x + (int64_t)b * g.H * g.W * g.Ci;
  const int t = g.by_Ci(q0);
  int ci = q0 - t * g.Ci, ky = g.by_k(t), kx = t - ky * g.k;
  if (g.Ci % N == 0 && q0 + N <= qmax) {  // one tap, channels ci .. ci + N - 1 of one pixel
    const int h = h0 + ky, w = w0 + kx;
    if (h < 0 || h >= g.H || w < 0 || w >= g.W) {
      for (int j = 0; j < N; j++) v[j] = 0.0f;
      return;
    }
    const float* p = xb + ((int64_t)h * g.W + w) * g.Ci + ci;
#ifdef __CUDA_ARCH__
    if (g.vec) {
#pragma unroll
      for (int j = 0; j < N; j += 4) {
        const float4 a = __ldg(reinterpret_cast<const float4*>(p + j));
        v[j] = a.x, v[j + 1] = a.y, v[j + 2] = a.z, v[j + 3] = a.w;
      }
      return;
    }
#endif
    for (int j = 0; j < N; j++) v[j] = p[j];
    return;
  }
  for (int j = 0; j < N; j++) {  // column by column: ci, then kx, then ky
    const int h = h0 + ky, w = w0 + kx;
    float val = 0.0f;
    if (q0 + j < qmax && h >= 0 && h < g.H && w >= 0 && w < g.W) {
      const float* p = xb + ((int64_t)h * g.W + w) * g.Ci + ci;
#ifdef __CUDA_ARCH__
      val = __ldg(p);
#else
      val = *p;
#endif
    }
    v[j] = val;
    if (++ci == g.Ci) {
      ci = 0;
      if (++kx == g.k) kx = 0, ky++;
    }
  }
}

}  // namespace nala
