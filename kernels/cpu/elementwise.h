// kernels/cpu/elementwise.h - elementwise arithmetic on contiguous f32 arrays.
// Same names and signatures as kernels/cuda/elementwise.h.
#pragma once
#include <cstdint>

namespace nala {
namespace cpu {

// y += a * x, n elements.
void axpy(float* y, const float* x, float a, int64_t n);

}  // namespace cpu
}  // namespace nala
