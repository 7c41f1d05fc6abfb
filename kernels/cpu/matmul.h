// kernels/cpu/matmul.h - single-precision GEMM on row-major matrices.
// Same names and signatures as kernels/cuda/matmul.h.
//
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C
//
// op(A) = A (M x K, leading dim lda) or, with trans_a, A^T where A is K x M.
// op(B) = B (K x N, leading dim ldb) or, with trans_b, B^T where B is N x K.
// beta = 0 overwrites C (C may hold garbage, even NaN); beta = 1 accumulates.
//
// Also the bias of a linear layer, on Y[R, N] (R rows of N features):
//   linear_bias_forward:  Y[r, :] += bias             (accumulates into Y)
//   linear_bias_backward: dbias = sum_r dY[r, :]       (overwrites dbias)
//
// gemm_batched: `batch` independent products, matrix b of each operand at
// X + b * stride_x (A's or B's stride may be 0 to share it; C's must not).
// On the CPU a plain loop over gemm (autograd/ops_matmul.cpp threads batches
// itself); on CUDA one launch for the whole batch.
#pragma once
#include <cstdint>

namespace nala {

// What a fused linear layer does with y = X W^T + bias before it stores it
// (linear_forward_epilogue): pre (nullable) keeps y (backward reads it), then
// y = gelu(y) when gelu, then out = res + y * gamma[col] when res is set
// (LayerScale and the residual add, each product rounded before the sum),
// with row_scale: out = res + (y * gamma[col]) * row_scale[row / rows_per_scale]
// (a sample's drop-path factor). The bits are those of linear, then gelu,
// then mul, drop_path and add. res and pre are rows of O floats; out must
// not alias X, W, res or pre.
struct LinearEpilogue {
  bool gelu = false;
  const float* res = nullptr;
  const float* gamma = nullptr;      // [O], with res
  const float* row_scale = nullptr;  // [R / rows_per_scale], with res
  int64_t rows_per_scale = 1;
  float* pre = nullptr;
};

// The epilogue as elementwise passes over the product y (rows of O; Y may be
// y): gelu, then scale_add (with the drop-path factors), else a copy. One
// definition for both devices' linear_epilogue_apply, each passing its own
// gelu_forward, scale_add_forward and copy kernels (so the bits are theirs).
template <class Gelu, class ScaleAdd, class Copy>
void linear_epilogue_passes(float* Y, const float* y, const LinearEpilogue& e, int64_t R, int64_t O, Gelu gelu,
                            ScaleAdd scale_add, Copy copy) {
  const float* src = y;
  if (e.gelu) {
    gelu(Y, src, R * O);  // elementwise: in place when y is Y
    src = Y;
  }
  if (e.res) scale_add(Y, e.res, src, e.gamma, R, O, e.row_scale, e.rows_per_scale);
  else if (src != Y) copy(Y, src, R * O);
}

namespace cpu {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                  int64_t ldc, int64_t stride_c, int64_t batch);

// The micro-kernel gemm uses (kernels/cpu/gemm_kernels.h). The first call
// picks the best this CPU runs, from its flags: AVX-512F, else AVX2 and FMA,
// else portable; the environment variable NALA_GEMM_KERNEL=avx512|avx2|
// portable asks for another (a kernel the CPU cannot run is an error).
// set_gemm_kernel switches for the whole process (tests, benchmarks; not
// while another thread is inside gemm).
enum class GemmKernel { Portable, Avx2, Avx512 };
const char* gemm_kernel_name(GemmKernel k);  // "avx512", "avx2", "portable"
bool gemm_kernel_supported(GemmKernel k);    // this CPU runs it, and this build has it
GemmKernel gemm_kernel();
void set_gemm_kernel(GemmKernel k);          // throws nala::Error when not supported

// The readable reference: three loops, double accumulation.
void gemm_naive(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

void linear_bias_forward(float* Y, const float* bias, int64_t R, int64_t N);
// A linear layer's forward, Y[R, O] = X[R, I] W[O, I]^T + bias (bias nullable): on the CPU
// the bias joins the GEMM's store; on CUDA the product, then linear_bias_forward.
void linear_forward(float* Y, const float* X, const float* W, const float* bias, int64_t R, int64_t O, int64_t I);
// The same product, then the epilogue e (LinearEpilogue above): on the CPU the
// product, then linear_epilogue_apply; on CUDA in the FP32 GEMM's store.
void linear_forward_epilogue(float* Y, const float* X, const float* W, const float* bias, int64_t R, int64_t O,
                             int64_t I, const LinearEpilogue& e);
// The epilogue alone, on the product y: linear_epilogue_passes (above) with
// this device's elementwise kernels. Both devices have it.
void linear_epilogue_apply(float* Y, const float* y, const LinearEpilogue& e, int64_t R, int64_t O);
void linear_bias_backward(float* dbias, const float* dY, int64_t R, int64_t N);
void linear_bias_backward_naive(float* dbias, const float* dY, int64_t R, int64_t N);
// A linear layer's weight and bias gradients (overwritten): dW[O, I] = dY^T X,
// db = linear_bias_backward of dY. On the CPU the two calls; on CUDA one FP32
// product (kernels/cuda/matmul.h).
void linear_backward_weight_bias(float* dW, float* db, const float* dY, const float* X, int64_t R, int64_t O,
                                 int64_t I);

}  // namespace cpu
}  // namespace nala
