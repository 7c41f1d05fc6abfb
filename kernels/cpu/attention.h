// kernels/cpu/attention.h - NaLa attention (docs/SPEC.md §2) and softmax
// attention with 2-D RoPE (docs/SPEC.md §3). Same names and signatures as
// kernels/cuda/attention.h.
//
// Shape letters: G = B * heads independent problems, each with N = H * W
// tokens (row-major, token n = r * W + c) of head dim D (D % 4 == 0).
// q, k, v, o and their gradients are (G, N, D) contiguous.
//
// NaLa (released-code form), per problem, with F = 2D features:
//   kc = k^3,  fk_j = [relu(kc_j), relu(-kc_j)]                         (F)
//   n_i = max(||q_i||, norm_floor),  p_i = 3 (0.5 + tanh(n_i))
//   fq_i = [(relu(q_i)/n_i)^p_i, (relu(-q_i)/n_i)^p_i]                 (F)
//   rq, rk = rope of each D-half of fq, fk at the token's (row, col)
//   kmean = mean_j fk_j,  z_i = 1 / (fq_i . kmean + 1e-6)   (un-rotated)
//   S = (1/N) sum_j rk_j^T v_j                                          (F, D)
//   o_i = z_i (rq_i S)
// x^p at x = 0 is 0 with zero derivatives (docs/SPEC.md §7); relu'(0) = 0; a query
// row whose norm is below norm_floor gets n = norm_floor and no gradient
// through n. Time O(G N D^2), extra memory O(N D): nothing N x N is formed.
// Forward writes S (G, F, D) and kmean (G, F), which backward takes back;
// backward recomputes the feature maps from q and k.
//
// Softmax: o = softmax(rope(q) rope(k)^T / sqrt(D)) v, row-wise, stable.
// Forward writes lse (G, N), the log-sum-exp of each score row; backward
// takes q, k, v, o, lse and recomputes the scores row by row (no N x N
// buffer in the fast version).
//
// NaLa also takes bf16 q, k, v (and output gradient) and writes bf16 o, dq,
// dk, dv (overloads below); S and kmean are float32 either way.
//
// Every kernel here overwrites (=) its outputs.
#pragma once
#include <cstdint>

#include "tensor/bf16.h"

namespace nala {
namespace cpu {

void nala_attention_forward(const float* q, const float* k, const float* v, float* o, float* S, float* kmean,
                            int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor);
void nala_attention_backward(const float* q, const float* k, const float* v, const float* S, const float* kmean,
                             const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H, int64_t W,
                             int64_t D, float norm_floor);
// bf16 q, k, v, o (and gout, dq, dk, dv): the float32 kernels above on the
// inputs' values, each output rounded once to bf16 (tensor/bf16.h); S and
// kmean stay float32. one_pass is the GPU's choice of tensor-core products
// (kernels/cuda/attention.h), here only so that both devices' kernels have one
// signature (autograd/dispatch.h): the CPU's products are float32 either way,
// the reference the GPU's one-pass products are held to.
void nala_attention_forward(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* o, float* S, float* kmean,
                            int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor, bool one_pass = false);
void nala_attention_backward(const bf16_t* q, const bf16_t* k, const bf16_t* v, const float* S, const float* kmean,
                             const bf16_t* gout, bf16_t* dq, bf16_t* dk, bf16_t* dv, int64_t G, int64_t H, int64_t W,
                             int64_t D, float norm_floor, bool one_pass = false);
// References: one problem at a time, whole (N, F) feature arrays, double.
void nala_attention_forward_naive(const float* q, const float* k, const float* v, float* o, float* S, float* kmean,
                                  int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor);
void nala_attention_backward_naive(const float* q, const float* k, const float* v, const float* S,
                                   const float* kmean, const float* gout, float* dq, float* dk, float* dv, int64_t G,
                                   int64_t H, int64_t W, int64_t D, float norm_floor);

void softmax_attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, int64_t G,
                               int64_t H, int64_t W, int64_t D);
void softmax_attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                                const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H, int64_t W,
                                int64_t D);
// References: the (N, N) probability matrix of one problem, double.
void softmax_attention_forward_naive(const float* q, const float* k, const float* v, float* o, float* lse, int64_t G,
                                     int64_t H, int64_t W, int64_t D);
void softmax_attention_backward_naive(const float* q, const float* k, const float* v, const float* o,
                                      const float* lse, const float* gout, float* dq, float* dk, float* dv, int64_t G,
                                      int64_t H, int64_t W, int64_t D);

}  // namespace cpu
}  // namespace nala
