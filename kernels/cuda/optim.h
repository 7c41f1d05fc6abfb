// kernels/cuda/optim.h - optimiser arithmetic on contiguous f32 device
// arrays. Same names and signatures as the fast kernels of kernels/cpu/optim.h
// (formulas and the in-place rule there); p, g, m, v, buf and x are device
// pointers. grad_sum_squares returns a host double, so it waits for the GPU
// (one small copy per call); grad_norm over many tensors uses the two
// CUDA-only functions at the end to read the device once.
#pragma once
#include <cstdint>

#include "kernels/cpu/optim.h"  // AdamWCoefs, kSumSquaresChunk

namespace nala {
namespace cuda {

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWCoefs& c);
void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
              float weight_decay, bool nesterov, bool first);
// sum x^2 in double: chunk sums of cpu::kSumSquaresChunk elements, then the
// chunk sums in a fixed order (deterministic).
double grad_sum_squares(const float* x, int64_t n);
// x *= s.
void grad_scale(float* x, int64_t n, float s);

// CUDA only (no CPU twin): sgd_step and adamw_step with their per-step
// scalars read from device memory, so that a step captured in a CUDA graph
// replays with the values copied in before each launch. s points at {lr,
// first (1.0 on a parameter's first step, else 0.0)}; each AdamWDevTensor's c
// at one AdamWCoefs. Same arithmetic as the by-value versions, bit for bit.
void sgd_step_dev(float* p, const float* g, float* buf, int64_t n, const float* s, float momentum, float dampening,
                  float weight_decay, bool nesterov);
// AdamW over many tensors in a few launches (kAdamWMultiMax tensors each):
// a small model's step has a hundred or more parameter tensors.
struct AdamWDevTensor {
  float* p;
  const float* g;
  float *m, *v;
  int64_t n;
  const AdamWCoefs* c;
};
constexpr int kAdamWMultiMax = 64;  // 64 x 48 bytes of kernel parameters
void adamw_step_dev_multi(const AdamWDevTensor* list, int64_t count);

// CUDA only (no CPU twin): the pieces of grad_sum_squares, so that a caller
// with many tensors synchronises once.
// part[c] = sum of x^2 over chunk c, c < ceil(n / cpu::kSumSquaresChunk); part on the device.
void grad_sum_squares_chunks(double* part, const float* x, int64_t n);
// sum_{j < n} part[j] in a fixed order, read back to the host (waits for the GPU).
double sum_f64(const double* part, int64_t n);

}  // namespace cuda
}  // namespace nala
