// kernels/cuda/elementwise.h - elementwise arithmetic on f32 device arrays.
// Same names and signatures as kernels/cpu/elementwise.h (which documents
// each kernel, what backward reads and the overwrite rule); the pointers here
// are device pointers and the Layout is passed by value to the launch.
#pragma once
#include <cstdint>

#include "kernels/cpu/elementwise.h"  // BinaryOp, Layout

namespace nala {
namespace cuda {

void axpy(float* y, const float* x, float a, int64_t n);  // y += a * x
void fill(float* out, float v, int64_t n);
void copy(float* out, const float* x, int64_t n);
void cast_f32_bf16(bf16_t* out, const float* x, int64_t n);
void cast_bf16_f32(float* out, const bf16_t* x, int64_t n);
void add_bf16(bf16_t* out, const bf16_t* a, const bf16_t* b, int64_t n);

void scale_forward(float* out, const float* x, float s, int64_t n);
void add_scalar_forward(float* out, const float* x, float s, int64_t n);
void scale_add_forward(float* out, const float* x, const float* y, const float* gamma, int64_t R, int64_t C,
                       const float* row_scale = nullptr, int64_t rows_per_scale = 1);
// The same with y in bf16 (a bf16 product's result), widened as it is read.
void scale_add_forward_bf16(float* out, const float* x, const bf16_t* y, const float* gamma, int64_t R, int64_t C,
                            const float* row_scale = nullptr, int64_t rows_per_scale = 1);

// gelu on bf16 arrays (the FFN's hidden activations in bf16 mode): computed in
// float32, each output rounded once; dout, x and dx all bf16.
void gelu_forward_bf16(bf16_t* out, const bf16_t* x, int64_t n);
void gelu_backward_bf16(bf16_t* dx, const bf16_t* dout, const bf16_t* x, int64_t n);

void relu_forward(float* out, const float* x, int64_t n);
void relu_backward(float* dx, const float* dout, const float* x, int64_t n);
void gelu_forward(float* out, const float* x, int64_t n);
void gelu_backward(float* dx, const float* dout, const float* x, int64_t n);
void silu_forward(float* out, const float* x, int64_t n);
void silu_backward(float* dx, const float* dout, const float* x, int64_t n);
void tanh_forward(float* out, const float* x, int64_t n);
void tanh_backward(float* dx, const float* dout, const float* y, int64_t n);
void sigmoid_forward(float* out, const float* x, int64_t n);
void sigmoid_backward(float* dx, const float* dout, const float* y, int64_t n);
void exp_forward(float* out, const float* x, int64_t n);
void exp_backward(float* dx, const float* dout, const float* y, int64_t n);
void log_forward(float* out, const float* x, int64_t n);
void log_backward(float* dx, const float* dout, const float* x, int64_t n);
void sqrt_forward(float* out, const float* x, int64_t n);
void sqrt_backward(float* dx, const float* dout, const float* y, int64_t n);
void cube_forward(float* out, const float* x, int64_t n);
void cube_backward(float* dx, const float* dout, const float* x, int64_t n);
void sin_forward(float* out, const float* x, int64_t n);
void sin_backward(float* dx, const float* dout, const float* x, int64_t n);
void cos_forward(float* out, const float* x, int64_t n);
void cos_backward(float* dx, const float* dout, const float* x, int64_t n);
void elu_forward(float* out, const float* x, int64_t n);
void elu_backward(float* dx, const float* dout, const float* y, int64_t n);

void binary_forward(BinaryOp op, float* out, const float* a, const float* b, Layout L);
void binary_forward_strided(BinaryOp op, float* out, const float* a, const float* b, Layout L);
void binary_backward(BinaryOp op, float* da, float* db, const float* dout, const float* a, const float* b, Layout L);

void sum_to(float* out, const float* x, Layout L);

}  // namespace cuda
}  // namespace nala
