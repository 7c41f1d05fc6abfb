// kernels/cpu/conv.h - 2-D convolutions on channels-last activations.
// Same names and signatures as kernels/cuda/conv.h.
//
// Shape letters: B batch, H W input height/width, Ho Wo output height/width,
// Ci Co input/output channels, C channels of a depthwise conv, k kernel size.
// Activations are (B, H, W, C) contiguous; weights keep the PyTorch layout
// (Co, Ci, k, k) for conv2d and (C, 1, k, k) for dwconv2d; bias is (Co) / (C)
// or nullptr.
//
// conv2d: any k, stride >= 1, pad >= 0, Ho = (H + 2 pad - k) / stride + 1.
// dwconv2d: groups = C, odd k, stride 1, padding k/2, output (B, H, W, C).
//
// Saved for backward: the inputs x and w only (the im2col buffer is rebuilt).
// Backward kernels OVERWRITE (=) dx, dw, dbias; any of them may be nullptr
// when that gradient is not wanted. All reductions (dw, dbias) have a fixed
// order that does not depend on the number of threads.
#pragma once
#include <cstdint>

namespace nala {
namespace cpu {

// out (B, Ho, Wo, Co) = im2col(x) @ w^T + bias, through one gemm per chunk of images.
void conv2d_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                    int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad);
void conv2d_backward(float* dx, float* dw, float* dbias, const float* dout, const float* x, const float* w,
                     int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride,
                     int64_t pad);
// The readable references: the seven loops.
void conv2d_forward_naive(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                          int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad);
void conv2d_backward_naive(float* dx, float* dw, float* dbias, const float* dout, const float* x,
                           const float* w, int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co, int64_t k,
                           int64_t stride, int64_t pad);

// Depthwise: out[b,y,x,c] = bias[c] + sum_{ky,kx} w[c,ky,kx] x[b, y+ky-k/2, x+kx-k/2, c].
void dwconv2d_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                      int64_t W, int64_t C, int64_t k);
// dx_add (nullable, dx's shape): added to dx in the same pass (the residual x + dwconv(x):
// x's two gradients at once).
void dwconv2d_backward(float* dx, float* dw, float* dbias, const float* dout, const float* x, const float* w,
                       int64_t B, int64_t H, int64_t W, int64_t C, int64_t k, const float* dx_add = nullptr);
// out = add + dwconv(x) (add: (B, H, W, C), e.g. the block's residual x + dwconv(x)).
void dwconv2d_add_forward(float* out, const float* x, const float* w, const float* bias, const float* add, int64_t B,
                          int64_t H, int64_t W, int64_t C, int64_t k);
// The backward of the FFN's h + dwconv(h), h = gelu(pre): dpre = gelu'(pre)
// (dout + flipped stencil(dout)), dw and dbias from dout and h (dpre, dw,
// dbias nullable). Here the backward with dx_add, then gelu's; the CUDA
// kernel multiplies by gelu' in the stencil's store (kernels/cuda/conv.h).
void dwconv2d_gelu_backward(float* dpre, float* dw, float* dbias, const float* dout, const float* h, const float* pre,
                            const float* w, int64_t B, int64_t H, int64_t W, int64_t C, int64_t k);
void dwconv2d_forward_naive(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                            int64_t W, int64_t C, int64_t k);
void dwconv2d_backward_naive(float* dx, float* dw, float* dbias, const float* dout, const float* x,
                             const float* w, int64_t B, int64_t H, int64_t W, int64_t C, int64_t k);

}  // namespace cpu
}  // namespace nala
