// kernels/conv_gather.h - the unfolding (im2col) of a channels-last image
// batch, read in place by the implicit-GEMM convolution of `--precision
// bf16` (kernels/cuda/gemm_bf16_mma.cuh, fetch_gather): 8 consecutive
// columns of one row at a time. Plain C++ on the host (tested there against
// a written-out unfolding: tests/test_conv.cpp), the same code in the kernel.
//
// x is (B, H, W, Ci); a k x k convolution with stride s and padding pad has
// rows r = (b, ho, wo) (rows = B Ho Wo) and columns q = t Ci + ci, tap
// t = ky k + kx major and the channel ci fastest (cols = k k Ci):
//
//   unfold(r, q) = x[b, ho s - pad + ky, wo s - pad + kx, ci], 0 in the padding.
//
// Channel-fastest columns make 8 consecutive ones 8 consecutive floats of x
// when Ci % 8 == 0 (two 16-byte loads), and neighbours in memory otherwise.
// The weights must be in the same order, (Co, k, k, Ci): conv.cu permutes
// them from the (Co, Ci, k, k) of the model, and permutes dw back.
#pragma once
#include <cstdint>

#include "kernels/fastdiv.h"  // NALA_HOST_DEVICE

namespace nala {

struct ConvGather {
  int H, W, Ci, Ho, Wo, k, stride, pad, rows, cols;  // rows = B Ho Wo, cols = k k Ci
  bool vec;  // x 16-byte aligned: with Ci % 8 == 0, a chunk is two 16-byte loads
};

// v[j] = unfold(r, q0 + j) for j < 8, 0 at columns >= qmax; r < rows, q0 a
// multiple of 8.
NALA_HOST_DEVICE inline void gather_chunk(const float* x, const ConvGather& g, int r, int q0, int qmax,
                                          float (&v)[8]) {
  const int per = g.Ho * g.Wo, b = r / per, rem = r - b * per, ho = rem / g.Wo, wo = rem - ho * g.Wo;
  const int h0 = ho * g.stride - g.pad, w0 = wo * g.stride - g.pad;
  const float* xb = x + (int64_t)b * g.H * g.W * g.Ci;
  const int t = q0 / g.Ci;
  int ci = q0 - t * g.Ci, ky = t / g.k, kx = t - ky * g.k;
  if (g.Ci % 8 == 0 && q0 + 8 <= qmax) {  // one tap, channels ci .. ci + 7 of one pixel
    const int h = h0 + ky, w = w0 + kx;
    if (h < 0 || h >= g.H || w < 0 || w >= g.W) {
      for (int j = 0; j < 8; j++) v[j] = 0.0f;
      return;
    }
    const float* p = xb + ((int64_t)h * g.W + w) * g.Ci + ci;
#ifdef __CUDA_ARCH__
    if (g.vec) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(p)), c = __ldg(reinterpret_cast<const float4*>(p) + 1);
      v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = c.x, v[5] = c.y, v[6] = c.z, v[7] = c.w;
      return;
    }
#endif
    for (int j = 0; j < 8; j++) v[j] = p[j];
    return;
  }
  for (int j = 0; j < 8; j++) {  // column by column: ci, then kx, then ky
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
