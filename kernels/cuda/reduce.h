// kernels/cuda/reduce.h - reductions over one block of dimensions and the
// softmax family on contiguous f32 device arrays. Same names and signatures
// as the fast kernels of kernels/cpu/reduce.h (letters O, R, I and the
// saved-for-backward and overwrite rules are stated there); every pointer is
// a device pointer. Kernels run on the default stream and do not synchronise.
#pragma once
#include <cstdint>

namespace nala {
namespace cuda {

// y[o, i] = alpha * sum_r x[o, r, i]
void reduce_sum(float* y, const float* x, int64_t O, int64_t R, int64_t I, float alpha);
// dx[o, r, i] = alpha * dy[o, i]
void reduce_sum_backward(float* dx, const float* dy, int64_t O, int64_t R, int64_t I, float alpha);

// y[o, i] = max(sqrt(sum_r x[o, r, i]^2), floor)
void l2norm_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I, float floor);
// dx = dy * x / y where y > floor, else 0
void l2norm_backward(float* dx, const float* dy, const float* x, const float* y, int64_t O, int64_t R, int64_t I,
                     float floor);

void softmax_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I);
void log_softmax_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I);
void softmax_backward(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I);
void log_softmax_backward(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I);

}  // namespace cuda
}  // namespace nala
