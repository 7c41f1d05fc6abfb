// kernels/cpu/optim.h - optimiser arithmetic on contiguous f32 arrays: AdamW
// and SGD updates, the gradient sum of squares (for clip_grad_norm) and an
// in-place scale. Same names and signatures as kernels/cuda/optim.h will have.
//
// n is the element count of one parameter tensor; p (parameter), g (its
// gradient), m, v, buf (optimiser state) all have n elements. Every kernel
// updates p and the state in place (=, not +=); g is read only. All of them
// are elementwise or reduce in a fixed order, so results do not depend on
// the number of threads.
#pragma once
#include <cstdint>

namespace nala {

// Per-step scalars of PyTorch's AdamW (single-tensor path), computed in
// double by adamw_coefs and rounded to f32 once, as PyTorch does:
//   p = p * decay                               decay = 1 - lr * wd
//   m = lerp(m, g, 1 - beta1)
//   v = v * beta2 + (1 - beta2) g^2
//   p = p - step_size * m / (sqrt(v) / bc2_sqrt + eps)
//   step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t)
struct AdamWCoefs {
  float decay, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bc2_sqrt, eps;
};
AdamWCoefs adamw_coefs(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step);

namespace cpu {

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWCoefs& c);
void adamw_step_naive(float* p, const float* g, float* m, float* v, int64_t n, const AdamWCoefs& c);

// PyTorch SGD (dampening 0 when not given): d = g + wd p; first step buf = d,
// later buf = momentum buf + (1 - dampening) d; d = nesterov ? d + momentum
// buf : buf; p = p - lr d. buf may be null when momentum == 0.
void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
              float weight_decay, bool nesterov, bool first);
void sgd_step_naive(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
                    float weight_decay, bool nesterov, bool first);

// sum x^2 in double. The fast version sums fixed chunks of kSumSquaresChunk
// elements in parallel and adds the chunk sums in order: deterministic.
constexpr int64_t kSumSquaresChunk = 4096;
double grad_sum_squares(const float* x, int64_t n);
double grad_sum_squares_naive(const float* x, int64_t n);

// x *= s.
void grad_scale(float* x, int64_t n, float s);

}  // namespace cpu
}  // namespace nala
