// kernels/cuda/rope.h - 2-D rotary position embedding on the GPU
// (docs/SPEC.md §4). Same names and signatures as kernels/cpu/rope.h; the pointers
// are device pointers. See kernels/cpu/rope.h for the math and shape letters
// (R matrices of (N, D), N = H * W, D % 4 == 0). All kernels overwrite (=).
#pragma once
#include <cstdint>

namespace nala {
namespace cuda {

// y = rope(x); x and y may alias.
void rope2d_forward(const float* x, float* y, int64_t R, int64_t H, int64_t W, int64_t D);
// gx = rope^T(gy); gy and gx may alias.
void rope2d_backward(const float* gy, float* gx, int64_t R, int64_t H, int64_t W, int64_t D);

// Device copies of the (N, D) sin and cos tables of cpu::rope_tables (the
// same float values), built once per (H, W, D) and kept for the life of the
// process. The attention kernels read them too.
void rope_tables_device(int64_t H, int64_t W, int64_t D, const float** sin, const float** cos);

}  // namespace cuda
}  // namespace nala
