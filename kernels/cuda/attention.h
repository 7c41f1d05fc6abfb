// kernels/cuda/attention.h - NaLa attention and softmax attention on the GPU.
// Same names and signatures as kernels/cpu/attention.h (device pointers);
// see that header for the math, the shape letters (G problems of N = H * W
// tokens, head dim D), what forward saves for backward, and the rule that
// every kernel overwrites (=) its outputs. D % 4 == 0 and D <= 128 here.
//
// NaLa: kernels/cuda/attention_nala.cu (tensor cores, d = 16, 32, 64) and
// kernels/cuda/attention_nala_v1.cu (float32 FMA, any d; the first version,
// the production path for the other head dims and the kernel lab's "fused"
// step before the tensor cores: kernels/lab/nala_attention_cuda.cu).
// Softmax: kernels/cuda/attention_softmax.cu (the lab's online version:
// kernels/lab/softmax_attention_cuda.cu); with bf16 products on
// (--precision bf16) and d = 16, 32, 64, the tensor-core kernels of
// kernels/cuda/attention_softmax_tc.cu.
#pragma once
#include <cstdint>

#include "tensor/bf16.h"

namespace nala {
namespace cuda {

void nala_attention_forward(const float* q, const float* k, const float* v, float* o, float* S, float* kmean,
                            int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor);
void nala_attention_backward(const float* q, const float* k, const float* v, const float* S, const float* kmean,
                             const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H, int64_t W,
                             int64_t D, float norm_floor);

// bf16 q, k, v, o (gout, dq, dk, dv): the same kernels reading and writing
// bf16 (half the traffic and memory of those eight arrays), float32 inside,
// each output rounded once; S and kmean float32. Equal to kernels/cpu/attention.h's
// bf16 overloads within the kernels' float32 tolerance and that one rounding.
// Head dims other than 16, 32, 64 run the first version on float32 copies.
// one_pass (autograd's nala_attention on bf16 tensors takes it): each of the six products in
// one tensor-core pass, tf32 for dO S^T, bf16 for the other five, the
// operands rounded once (a third of the tensor work and none of the hi/lo
// splits). Its error is normwise, about 4e-3 of each output, twice that of
// storing the exact output in bf16 (docs/kernels.md, "How much precision
// the products may lose"), not the element-wise contract above.
void nala_attention_forward(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* o, float* S, float* kmean,
                            int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor, bool one_pass = false);
void nala_attention_backward(const bf16_t* q, const bf16_t* k, const bf16_t* v, const float* S, const float* kmean,
                             const bf16_t* gout, bf16_t* dq, bf16_t* dk, bf16_t* dv, int64_t G, int64_t H, int64_t W,
                             int64_t D, float norm_floor, bool one_pass = false);

// The first version (any d % 4 == 0 up to 128), same contract; the tests
// and bench/bench_nala_cuda compare the two.
void nala_attention_forward_v1(const float* q, const float* k, const float* v, float* o, float* S, float* kmean,
                               int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor);
void nala_attention_backward_v1(const float* q, const float* k, const float* v, const float* S, const float* kmean,
                                const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H, int64_t W,
                                int64_t D, float norm_floor);
// Whether nala_attention_forward/backward take the tensor-core path for head dim D.
bool nala_attention_tensor_cores(int64_t D);

void softmax_attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, int64_t G,
                               int64_t H, int64_t W, int64_t D);
void softmax_attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                                const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H, int64_t W,
                                int64_t D);

}  // namespace cuda
}  // namespace nala
