// kernels/cuda/attention_softmax_tc.h - softmax attention with 2-D RoPE on
// tensor cores: bf16 mma.sync with float32 accumulation (FlashAttention-2's
// forward and backward). The `--precision bf16` path of
// cuda::softmax_attention_forward / _backward (kernels/cuda/attention.h),
// which take it for head dims 16, 32 and 64 when bf16 products are on
// (device::set_gemm_bf16); the float32 kernels stay the reference.
//
// Numerics, as autocast's bf16 attention: rope(q), rope(k), v and the output
// gradient are rounded to bf16 (to nearest even) once, in a first pass; the
// softmax weights P and the score gradients dS are rounded to bf16 on their
// way into the second products; scores, the running max and sum, lse, Dl =
// rowsum(bf16(dO) o) and every accumulator stay float32. lse has the float32
// kernels' meaning (log sum_j exp(s_ij) of this path's scores), so either
// backward can follow either forward.
//
// The pieces are exposed for the kernel lab (kernels/lab/softmax_attention_cuda.cu).
// Shape letters: G problems of N = H W tokens, head dim D; arrays (G, N, D).
#pragma once
#include <cstdint>

#include <cuda_bf16.h>

namespace nala {
namespace cuda {

// Head dims with a tensor-core kernel (forward and backward).
bool softmax_attention_tc_supported(int64_t D);

// Forward: o (G, N, D) and lse (G, N), overwritten. Device pointers.
void softmax_attention_forward_tc(const float* q, const float* k, const float* v, float* o, float* lse, int64_t G,
                                  int64_t H, int64_t W, int64_t D);
// Backward: dq, dk, dv overwritten, from the forward's o and lse.
void softmax_attention_backward_tc(const float* q, const float* k, const float* v, const float* o, const float* lse,
                                   const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H,
                                   int64_t W, int64_t D);

// The first pass: rq = bf16(rope(q)), rk = bf16(rope(k)), bv = bf16(v).
void softmax_rope_bf16(const float* q, const float* k, const float* v, __nv_bfloat16* rq, __nv_bfloat16* rk,
                       __nv_bfloat16* bv, int64_t G, int64_t H, int64_t W, int64_t D);
// The forward kernel on those operands (D = 16, 32, 64 or 128).
void softmax_flash_forward_bf16(const __nv_bfloat16* rq, const __nv_bfloat16* rk, const __nv_bfloat16* bv, float* o,
                                float* lse, int64_t G, int64_t N, int64_t D);

}  // namespace cuda
}  // namespace nala
