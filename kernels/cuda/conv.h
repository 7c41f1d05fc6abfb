// kernels/cuda/conv.h - 2-D convolutions on channels-last activations, CUDA.
// Same names and signatures as kernels/cpu/conv.h (the shape letters, layouts
// and the save / overwrite rules are stated there); pointers are device
// pointers. Kernels run on the default stream and do not synchronise.
#pragma once
#include <cstdint>

#include "tensor/bf16.h"

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

// Inference: out = act((conv2d(x) + bias) scale + shift) (scale, shift: (Co);
// act GELU or none), a BatchNorm in eval mode and its activation in the
// convolution's store. Only where the direct 3x3 kernels take the conv (bf16
// mode, their channel counts); false, with nothing written, elsewhere.
bool conv2d_affine_forward(float* out, const float* x, const float* w, const float* bias, const float* scale,
                           const float* shift, bool gelu, int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co,
                           int64_t k, int64_t stride, int64_t pad);

// The depthwise convolution on bf16 activations (x, add, out, dout, dx, dx_add;
// add and dx_add nullable): float32 taps, bias and gradients of taps and bias,
// every sum in float32, each output rounded once. No CPU twin: the op
// (autograd/ops_conv.cpp) runs the float32 kernels on the CPU.
void dwconv2d_add_forward_bf16(bf16_t* out, const bf16_t* x, const float* w, const float* bias, const bf16_t* add,
                               int64_t B, int64_t H, int64_t W, int64_t C, int64_t k);
void dwconv2d_backward_bf16(bf16_t* dx, float* dw, float* dbias, const bf16_t* dout, const bf16_t* x, const float* w,
                            int64_t B, int64_t H, int64_t W, int64_t C, int64_t k, const bf16_t* dx_add = nullptr);

// The backward of the FFN's h + dwconv(h), h = gelu(pre): dpre = gelu'(pre)
// (dout + flipped stencil(dout)), multiplied in the stencil's store; dw and
// dbias from dout and h (dpre, dw, dbias nullable; h nullable too: then
// made from pre, bit for bit as the forward pass's gelu, inside the pass
// that makes dpre and the taps' gradient together where it applies). As
// kernels/cpu/conv.h's float32 one; the bf16 one has no CPU twin (the op
// runs the float32 kernel on the CPU).
void dwconv2d_gelu_backward(float* dpre, float* dw, float* dbias, const float* dout, const float* h, const float* pre,
                            const float* w, int64_t B, int64_t H, int64_t W, int64_t C, int64_t k);
void dwconv2d_gelu_backward_bf16(bf16_t* dpre, float* dw, float* dbias, const bf16_t* dout, const bf16_t* h,
                                 const bf16_t* pre, const float* w, int64_t B, int64_t H, int64_t W, int64_t C,
                                 int64_t k);

// Tests: on, conv2d unfolds into memory (im2col, chunked) even where the
// implicit GEMM would take it (kernels/cuda/conv.cu), so both paths are checked.
void conv2d_force_unfold(bool on);
// Tests and benchmarks: on, the depthwise stencil takes its tiled kernel even
// where the float4 one applies (kernels/cuda/dwconv_stencil.cuh), so both are checked.
void dwconv_force_tiled(bool on);

}  // namespace cuda
}  // namespace nala
