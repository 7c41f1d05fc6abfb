// kernels/cpu/reduce.h - reductions over one block of dimensions, and the
// softmax family, on contiguous f32 arrays. Same names and signatures as
// kernels/cuda/reduce.h.
//
// Shape letters: every kernel sees its input as a contiguous (O, R, I) array:
//   O  outer: the kept dimensions before the reduced block (product)
//   R  reduced: the dimensions reduced over (product)
//   I  inner: the kept dimensions after the reduced block (product)
// and writes (O, I) for reductions or (O, R, I) for the softmax family.
// The op (autograd/ops_reduce.cpp) permutes the reduced dimensions into one
// block first when they are not adjacent.
//
// Saved for backward: nothing for sum/mean (only the shape); l2norm saves x
// and its output y; softmax and log_softmax save their output y.
// Every kernel, forward and backward, overwrites (=) its output.
//
// Determinism: the fast kernels split the work into pieces whose size does
// not depend on the thread count, use static schedules and no atomics, and
// combine partial sums in a fixed order: the same input gives bit-identical
// results for any thread count.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace nala {
namespace cpu {

// y[o, i] = alpha * sum_r x[o, r, i]   (alpha = 1 for sum, 1/R for mean)
void reduce_sum(float* y, const float* x, int64_t O, int64_t R, int64_t I, float alpha);
void reduce_sum_naive(float* y, const float* x, int64_t O, int64_t R, int64_t I, float alpha);
// dx[o, r, i] = alpha * dy[o, i]
void reduce_sum_backward(float* dx, const float* dy, int64_t O, int64_t R, int64_t I, float alpha);

// y[o, i] = max(sqrt(sum_r x[o, r, i]^2), floor)
void l2norm_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I, float floor);
void l2norm_forward_naive(float* y, const float* x, int64_t O, int64_t R, int64_t I, float floor);
// dx = dy * x / y where y > floor, else 0 (the floored branch is constant,
// so an all-zero row gets a zero gradient instead of 0/0).
void l2norm_backward(float* dx, const float* dy, const float* x, const float* y, int64_t O, int64_t R, int64_t I,
                     float floor);

// y = softmax over r (max subtracted first). Fast path when I == 1.
void softmax_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I);
void softmax_forward_naive(float* y, const float* x, int64_t O, int64_t R, int64_t I);
// y = x - max - log(sum exp(x - max))
void log_softmax_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I);
void log_softmax_forward_naive(float* y, const float* x, int64_t O, int64_t R, int64_t I);
// softmax:     dx = y * (dy - sum_r dy * y)
void softmax_backward(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I);
void softmax_backward_naive(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I);
// log_softmax: dx = dy - exp(y) * sum_r dy
void log_softmax_backward(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I);
void log_softmax_backward_naive(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I);

}  // namespace cpu
}  // namespace nala
