// kernels/cuda/gemm_bf16.h - tensor-core GEMM on row-major device matrices:
// bf16 inputs, float32 accumulation, a fused epilogue, bf16 or float32 out.
// The operands of mixed-precision training: a linear layer's forward
// (X W^T: NT), its input gradient (dY W: NN) and its weight gradient
// (dY^T X: TN); TT works too.
//
//   C[M, N] = epi( op(A)[M, K] op(B)[K, N] )
//   epi(x)  = act(x + bias[n]) + residual[m, n]        (each part optional)
//
// op(A) is A [M, K] (lda >= K), or A^T with A stored [K, M] (lda >= M);
// op(B) is B [K, N] (ldb >= N), or B^T with B stored [N, K] (ldb >= K).
// Any sizes (odd ones too) and leading dims; pointers need only the 2-byte
// alignment of their type. Fast paths need 16-byte aligned rows (ld a
// multiple of 8 elements, 16-byte aligned pointers); other operands take a
// slower, guarded load path. residual has C's type and may be C itself
// (C += A B in float32: the weight-gradient accumulation). K = 0 gives
// epi(0). Kernels run asynchronously on the default stream.
//
// Paths (kernels/cuda/gemm_bf16.cu; each is a step of the GEMM lab,
// kernels/lab/gemm_cuda.cu): on sm_90 builds, wgmma fed by TMA (lab version
// 7) when both operands allow a tensor map; otherwise warp-level mma.sync
// with cp.async (lab version 6), sm_80 and later.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/conv_gather.h"

namespace nala {
namespace cuda {

enum class GemmAct : uint8_t { none, gelu };  // gelu: x Phi(x) (erf), as the engine's gelu

struct GemmEpilogue {
  const float* bias = nullptr;     // [N], added before the activation
  GemmAct act = GemmAct::none;
  const void* residual = nullptr;  // C's type, [M, ldr], added last
  int64_t ldr = 0;
};

// C is __nv_bfloat16 when c_bf16, else float.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const __nv_bfloat16* A, int64_t lda,
               const __nv_bfloat16* B, int64_t ldb, void* C, int64_t ldc, bool c_bf16,
               const GemmEpilogue& epi = GemmEpilogue());

// The same product of float32 operands, C (float32) = epi(alpha op(A) op(B)),
// each operand value rounded to bf16 (to nearest even) as it is staged on
// chip: what a bf16 cast of A and B followed by gemm_bf16 computes, without
// the cast's pass over memory. The mma.sync kernel only; fast loads need
// 16-byte aligned rows (leading dims multiples of 4).
void gemm_bf16_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                   const GemmEpilogue& epi = GemmEpilogue());

// One operand of gemm_bf16_mixed: float32 or bf16 values, leading dim ld.
struct GemmOperand {
  const void* p;
  bool bf16;
  int64_t ld;
};

// C (bf16 when c_bf16, else float32) = epi(op(A) op(B)) with each operand
// float32 or bf16, every operand value rounded to bf16 (as gemm_bf16_f32):
// both float32, gemm_bf16_f32's kernel (which may also store bf16); both
// bf16, gemm_bf16; one of each, the float32 one is first rounded into a bf16
// copy, then gemm_bf16 (in the engine's uses that one is a weight or the
// narrower activation of a layer).
void gemm_bf16_mixed(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const GemmOperand& A,
                     const GemmOperand& B, void* C, int64_t ldc, bool c_bf16, const GemmEpilogue& epi = GemmEpilogue());

// A k x k convolution (stride, padding) of channels-last images x (B, H, W,
// Ci) as an implicit GEMM with the same bf16 products of float32 operands:
// the unfolding (im2col) is read from x in place, never stored, its columns
// channel-fastest (kernels/conv_gather.h), so the weights are in (Co, k, k,
// Ci) order here (conv.cu permutes the model's (Co, Ci, k, k)). forward:
// out (B, Ho, Wo, Co) = unfold(x) w^T + bias (bias nullable); dw: dw (Co, k,
// k, Ci) = dout^T unfold(x) (overwritten).
void conv_bf16_f32_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                           int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad);
// Whether a conv's sizes fit the implicit GEMM's int indices (else use im2col).
bool conv_fits_int(int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t k, int64_t stride, int64_t pad);
// The unfolding of images x for the implicit GEMMs (checks the sizes fit, naming op).
ConvGather conv_gather(const float* x, int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t k, int64_t stride,
                       int64_t pad, const char* op);
void conv_bf16_f32_dw(float* dw, const float* dout, const float* x, int64_t B, int64_t H, int64_t W, int64_t Ci,
                      int64_t Co, int64_t k, int64_t stride, int64_t pad);

// Which path gemm_bf16 takes (for tests and benchmarks): 0 automatic, 6 the
// mma.sync kernel only, 7 the wgmma kernel (an error where the operands or
// the build do not allow it); bn: the wgmma tile width, 64, 128 or 256 (0: chosen
// by shape).
void gemm_bf16_force_path(int path, int bn = 0);

}  // namespace cuda
}  // namespace nala
