// kernels/cpu/dropout.h - apply a dropout or drop-path mask on contiguous f32
// arrays. Same names and signatures as kernels/cuda/dropout.h.
//
// Shape letters: n elements; B samples of D elements each (x is (B, ...)).
// The mask is drawn by the op on the host (tensor/rng.h, deterministic for a
// seed) and already holds 0 or 1/(1-p); forward and backward are the same
// multiplication (backward: dx = dy * mask), and both overwrite (=).
// Saved for backward: the mask.
#pragma once
#include <cstdint>

namespace nala {
namespace cpu {

// y[j] = x[j] * mask[j]
void dropout_apply(float* y, const float* x, const float* mask, int64_t n);
// y[b, j] = x[b, j] * mask[b]
void drop_path_apply(float* y, const float* x, const float* mask, int64_t B, int64_t D);

}  // namespace cpu
}  // namespace nala
