// kernels/cuda/loss.h - the fused, label-smoothed cross-entropy on
// contiguous device arrays. Same names and signatures as the fast kernels of
// kernels/cpu/loss.h (letters B, K, the formula and the overwrite rule are
// stated there). logits, labels, lse, loss, dloss and dlogits are device
// pointers; bad is host memory, as on the CPU.
#pragma once
#include <cstdint>

namespace nala {
namespace cuda {

// Writes *loss (device, one element) and lse[B]. Bad labels are recorded on
// the device and read back after the kernels (one small synchronous copy per
// call): bad[0] = first bad position (or -1), bad[1] = its value.
void cross_entropy_forward(float* loss, float* lse, const float* logits, const int64_t* labels, int64_t B,
                           int64_t K, float smoothing, int64_t* bad);
void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits, const int64_t* labels,
                            const float* lse, int64_t B, int64_t K, float smoothing);

}  // namespace cuda
}  // namespace nala
