// kernels/cpu/elementwise.h - elementwise arithmetic on f32 arrays.
// Same names and signatures as kernels/cuda/elementwise.h.
//
// n: element count. Unary kernels take contiguous arrays. Broadcasting binary
// kernels take a Layout (kernels/cpu/shape.h) whose so is the contiguous
// output (or gradient of the output), sa / sb the strides of a and b in the
// output's index space (0 on broadcast dims; any strides, so non-contiguous
// inputs are read in place).
//
// Saved for backward: relu, gelu, silu, log, cube, sin, cos read the input x;
// tanh, sigmoid, exp, sqrt, elu read the output y; binary ops read a and b.
// Every kernel here overwrites (=) its output, except axpy (+=).
#pragma once
#include <cstdint>

#include "kernels/cpu/shape.h"
#include "tensor/bf16.h"

namespace nala {

enum class BinaryOp : int { Add, Sub, Mul, Div, Pow };
const char* binary_op_name(BinaryOp op);

namespace cpu {

// y += a * x, n elements.
void axpy(float* y, const float* x, float a, int64_t n);
void fill(float* out, float v, int64_t n);
void copy(float* out, const float* x, int64_t n);

// ---- dtype casts: float32 to bf16 (to nearest even, tensor/bf16.h) and back (exact)
void cast_f32_bf16(bf16_t* out, const float* x, int64_t n);
void cast_bf16_f32(float* out, const bf16_t* x, int64_t n);
// out = a + b on bf16 arrays, in float32, rounded once (the sum of two bf16
// gradients of one tensor); out may be a or b.
void add_bf16(bf16_t* out, const bf16_t* a, const bf16_t* b, int64_t n);

// ---- scalar-parameter ops: out = x * s, out = x + s -----------------------
// (backward of scale is scale_forward of the gradient; of add_scalar, copy)
void scale_forward(float* out, const float* x, float s, int64_t n);
void add_scalar_forward(float* out, const float* x, float s, int64_t n);

// ---- scale_add: out[r, c] = x[r, c] + y[r, c] * gamma[c], R rows of C -----
// (LayerScale and the residual add in one pass; the product is rounded before
// the sum, so the bits are those of mul, then add. With row_scale, a sample's
// drop-path factor row_scale[r / rows_per_scale] multiplies the product before
// the sum: mul's, drop_path's and add's bits. out may be y, not x.)
void scale_add_forward(float* out, const float* x, const float* y, const float* gamma, int64_t R, int64_t C,
                       const float* row_scale = nullptr, int64_t rows_per_scale = 1);

// ---- unary ops: forward(out, x, n); backward(dx, dout, saved, n) ----------
// gelu, silu, sigmoid and exp use a vectorisable exp (relative error < 1e-7)
// and erf (absolute error < 1.5e-7); the _naive versions use the library's.
void relu_forward(float* out, const float* x, int64_t n);
void relu_backward(float* dx, const float* dout, const float* x, int64_t n);  // 0 where x <= 0
void gelu_forward(float* out, const float* x, int64_t n);                      // 0.5 x (1 + erf(x / sqrt 2))
void gelu_backward(float* dx, const float* dout, const float* x, int64_t n);
void gelu_forward_naive(float* out, const float* x, int64_t n);  // with std::erf
void gelu_backward_naive(float* dx, const float* dout, const float* x, int64_t n);
void silu_forward(float* out, const float* x, int64_t n);  // x sigmoid(x)
void silu_backward(float* dx, const float* dout, const float* x, int64_t n);
void silu_forward_naive(float* out, const float* x, int64_t n);  // with std::exp
void tanh_forward(float* out, const float* x, int64_t n);
void tanh_backward(float* dx, const float* dout, const float* y, int64_t n);
void sigmoid_forward(float* out, const float* x, int64_t n);
void sigmoid_backward(float* dx, const float* dout, const float* y, int64_t n);
void exp_forward(float* out, const float* x, int64_t n);
void exp_backward(float* dx, const float* dout, const float* y, int64_t n);
void log_forward(float* out, const float* x, int64_t n);
void log_backward(float* dx, const float* dout, const float* x, int64_t n);
void sqrt_forward(float* out, const float* x, int64_t n);
void sqrt_backward(float* dx, const float* dout, const float* y, int64_t n);  // 0.5 / y (inf at y = 0)
void cube_forward(float* out, const float* x, int64_t n);
void cube_backward(float* dx, const float* dout, const float* x, int64_t n);  // 3 x^2
void sin_forward(float* out, const float* x, int64_t n);
void sin_backward(float* dx, const float* dout, const float* x, int64_t n);  // cos x
void cos_forward(float* out, const float* x, int64_t n);
void cos_backward(float* dx, const float* dout, const float* x, int64_t n);  // -sin x
// elu (alpha 1): y = x (x > 0), exp(x) - 1 (x <= 0); dy/dx = 1 (y > 0), y + 1 (y <= 0).
void elu_forward(float* out, const float* x, int64_t n);
void elu_backward(float* dx, const float* dout, const float* y, int64_t n);

// ---- broadcasting binary ops ----------------------------------------------
// out[i] = a[i] op b[i]. Pow: x^p for x >= 0 (0^p = 0 for p > 0, 1 for p = 0).
// binary_forward picks a fast inner loop for the collapsed patterns (same
// shape; a row, a column or a scalar broadcast); _strided is the general
// path with runtime strides; _naive is the one-element-at-a-time reference.
void binary_forward(BinaryOp op, float* out, const float* a, const float* b, Layout L);
void binary_forward_strided(BinaryOp op, float* out, const float* a, const float* b, Layout L);
void binary_forward_naive(BinaryOp op, float* out, const float* a, const float* b, Layout L);

// Gradient contributions in the output's shape (contiguous, like dout):
// da[i] = dout[i] * d(a op b)/da, db[i] = dout[i] * d(a op b)/db; either
// may be null. Pow: da = p x^(p-1), db = x^p ln x, both exactly 0 where
// x == 0 (docs/SPEC.md §7). A broadcast input then needs sum_to.
void binary_backward(BinaryOp op, float* da, float* db, const float* dout, const float* a, const float* b, Layout L);
void binary_backward_naive(BinaryOp op, float* da, float* db, const float* dout, const float* a, const float* b,
                           Layout L);

// ---- reduction to a broadcast shape ----------------------------------------
// x is contiguous with shape L.size (L.sa = its contiguous strides); out is
// contiguous and L.so holds its strides in x's index space (0 on the dims
// summed over). out[j] = sum of x over the elements that map to j.
void sum_to(float* out, const float* x, Layout L);
void sum_to_naive(float* out, const float* x, Layout L);

}  // namespace cpu
}  // namespace nala
