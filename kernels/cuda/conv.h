// kernels/cuda/conv.h - 2-D convolutions on channels-last activations, CUDA.
// Same names and signatures as kernels/cpu/conv.h (the shape letters, layouts
// and the save / overwrite rules are stated there); pointers are device
// pointers. Kernels run on the default stream and do not synchronise.
#pragma once
#include <cstdint>

namespace nala {
namespace cuda {

void conv2d_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                    int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad);
void conv2d_backward(float* dx, float* dw, float* dbias, const float* dout, const float* x, const float* w,
                     int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride,
                     int64_t pad);

void dwconv2d_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                      int64_t W, int64_t C, int64_t k);
void dwconv2d_backward(float* dx, float* dw, float* dbias, const float* dout, const float* x, const float* w,
                       int64_t B, int64_t H, int64_t W, int64_t C, int64_t k, const float* dx_add = nullptr);
// out = add + dwconv(x) (add: (B, H, W, C), e.g. the block's residual x + dwconv(x)).
void dwconv2d_add_forward(float* out, const float* x, const float* w, const float* bias, const float* add, int64_t B,
                          int64_t H, int64_t W, int64_t C, int64_t k);

// Tests: on, conv2d unfolds into memory (im2col, chunked) even where the
// implicit GEMM would take it (kernels/cuda/conv.cu), so both paths are checked.
void conv2d_force_unfold(bool on);
// Tests and benchmarks: on, the depthwise stencil takes its tiled kernel even
// where the float4 one applies (kernels/cuda/dwconv_stencil.cuh), so both are checked.
void dwconv_force_tiled(bool on);

}  // namespace cuda
}  // namespace nala
