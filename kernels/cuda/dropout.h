// kernels/cuda/dropout.h - apply a dropout or drop-path mask on contiguous
// f32 device arrays. Same names and signatures as kernels/cpu/dropout.h
// (letters and rules there); x, y and mask are device pointers (the op draws
// the mask on the host and copies it over).
#pragma once
#include <cstdint>

namespace nala {
namespace cuda {

// y[j] = x[j] * mask[j]
void dropout_apply(float* y, const float* x, const float* mask, int64_t n);
// y[b, j] = x[b, j] * mask[b]
void drop_path_apply(float* y, const float* x, const float* mask, int64_t B, int64_t D);

}  // namespace cuda
}  // namespace nala
