// kernels/cuda/shape.h - the strided copy on the GPU. Same names and
// signatures as kernels/cpu/shape.h (device pointers; the Layout is passed by
// value straight into the kernel launch).
#pragma once
#include <cstdint>

#include "kernels/cpu/shape.h"

namespace nala {
namespace cuda {

// out[so . i] = x[sa . i] for every index i of L (sb unused). Overwrites.
void copy_strided(float* out, const float* x, Layout L);

}  // namespace cuda
}  // namespace nala
