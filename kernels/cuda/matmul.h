// kernels/cuda/matmul.h - single-precision GEMM on row-major device matrices,
// and the bias of a linear layer. Same names and signatures as
// kernels/cpu/matmul.h (the contract is stated there); pointers are device
// pointers. Kernels run asynchronously on the default stream.
//
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C
//   beta = 0 overwrites C (even NaN); beta = 1 accumulates.
//
// gemm_batched: `batch` independent products, matrix b of each operand at
// X + b * stride_x (a stride may be 0 to share an operand; C's must not).
#pragma once
#include <cstdint>

#include "kernels/cpu/matmul.h"  // LinearEpilogue
#include "tensor/bf16.h"

namespace nala {
namespace cuda {

// The current device's multiprocessor count (read once; 100 if it cannot be read).
int sm_count();

// Precision of the products (process-wide; float32 by default): on, single
// products with beta 0 or 1 round their operands to bf16 and multiply on
// tensor cores with float32 accumulation (cuda::gemm_bf16_f32); batched ones
// and other betas stay float32.
void set_gemm_bf16(bool on);
bool gemm_bf16_mode();

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                  int64_t ldc, int64_t stride_c, int64_t batch);

// The FP32 kernel's tile for a product (gemm_batched's choice, see matmul.cu):
// 128 x 128, 64 x 64, 128 x 32, 32 x 128, 256 x 16 or 16 x 256, as "BMxBN". gemm_fp32_force_tile
// makes every later product take one of them (benchmarks; null: automatic).
const char* gemm_fp32_tile(int64_t M, int64_t N, int64_t K, int64_t batch);
void gemm_fp32_force_tile(const char* tile);

// A k x k convolution (stride, padding) of channels-last images x (B, H, W,
// Ci) as an implicit GEMM in FP32: the FP32 kernel reads the unfolding from x
// in place (kernels/conv_gather.h, columns channel-fastest), so w and dw are
// in (Co, k, k, Ci) order. forward: out (B, Ho, Wo, Co) = unfold(x) w^T +
// bias (bias nullable); dw: dw (Co, k, k, Ci) = dout^T unfold(x) (overwritten).
void conv_fp32_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                       int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad);
void conv_fp32_dw(float* dw, const float* dout, const float* x, int64_t B, int64_t H, int64_t W, int64_t Ci,
                  int64_t Co, int64_t k, int64_t stride, int64_t pad);

void linear_bias_forward(float* Y, const float* bias, int64_t R, int64_t N);
// A linear layer's forward, Y[R, O] = X[R, I] W[O, I]^T + bias (bias nullable): the bias
// joins the GEMM's store (as on the CPU), the same bits as the product, then linear_bias_forward.
void linear_forward(float* Y, const float* X, const float* W, const float* bias, int64_t R, int64_t O, int64_t I);
// The same with the epilogue e (LinearEpilogue, kernels/cpu/matmul.h) in the
// FP32 GEMM's store; in bf16 mode, or where the product is split over K, the
// product, then one elementwise pass.
void linear_forward_epilogue(float* Y, const float* X, const float* W, const float* bias, int64_t R, int64_t O,
                             int64_t I, const LinearEpilogue& e);
void linear_epilogue_apply(float* Y, const float* y, const LinearEpilogue& e, int64_t R, int64_t O);
void linear_bias_backward(float* dbias, const float* dY, int64_t R, int64_t N);
// The same column sums of a bf16 dY (a bf16 activation's gradient), in float32.
void linear_bias_backward_bf16(float* dbias, const bf16_t* dY, int64_t R, int64_t N);
// The backward of out = res + s_r gamma[n] y[r, n] (linear_scale_add's
// epilogue; s_r = row_scale[r / rows_per_scale], the drop-path factor, or 1
// when row_scale is null) for out's gradient g (R x N, f32), in one pass over
// g: dy = (g s_r) gamma (stored as f32 or bf16, dy_bf16; dy nullable) and
// dgamma[n] = the column sums of (g s_r) y (nullable), y f32 or bf16, in the
// fixed order of linear_bias_backward. The bits of drop_path_apply, mul's
// backward and its sum over rows, up to the order of that sum.
void scale_rows_backward(void* dy, bool dy_bf16, float* dgamma, const float* g, const void* y, bool y_bf16,
                         const float* gamma, const float* row_scale, int64_t rows_per_scale, int64_t R, int64_t N);
// A linear layer's weight and bias gradients, dW[O, I] = dY^T X and db[O] =
// column sums of dY (both overwritten), from one pass over dY: the FP32
// product's blocks also add up the dY tiles they load (GemmParams::dsum). In
// bf16 mode, the bf16 GEMM and linear_bias_backward.
void linear_backward_weight_bias(float* dW, float* db, const float* dY, const float* X, int64_t R, int64_t O,
                                 int64_t I);

}  // namespace cuda
}  // namespace nala
