// kernels/cpu/optim.cpp - see kernels/cpu/optim.h. The naive versions are
// the textbook formulas, serial; the fast ones follow PyTorch's operation
// order in f32 and run in parallel over elements.
#include "kernels/cpu/optim.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace nala {

AdamWCoefs adamw_coefs(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  AdamWCoefs c;
  c.decay = (float)(1.0 - lr * weight_decay);
  c.beta1 = (float)beta1;
  c.one_minus_beta1 = (float)(1.0 - beta1);
  c.beta2 = (float)beta2;
  c.one_minus_beta2 = (float)(1.0 - beta2);
  c.step_size = (float)(lr / (1.0 - std::pow(beta1, (double)step)));
  c.bc2_sqrt = (float)std::sqrt(1.0 - std::pow(beta2, (double)step));
  c.eps = (float)eps;
  return c;
}

namespace cpu {

void adamw_step_naive(float* p, const float* g, float* m, float* v, int64_t n, const AdamWCoefs& c) {
  for (int64_t i = 0; i < n; i++) {
    p[i] *= c.decay;
    m[i] = c.beta1 * m[i] + c.one_minus_beta1 * g[i];
    v[i] = c.beta2 * v[i] + c.one_minus_beta2 * g[i] * g[i];
    p[i] -= c.step_size * m[i] / (std::sqrt(v[i]) / c.bc2_sqrt + c.eps);
  }
}

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWCoefs& c) {
  // torch.lerp(m, g, w): m + w (g - m) for w < 0.5, else g - (g - m)(1 - w).
  const bool low = c.one_minus_beta1 < 0.5f;
  const float w = c.one_minus_beta1, wc = 1.0f - c.one_minus_beta1;
  const float neg_step = -c.step_size;
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i];
    float pi = p[i] * c.decay;
    float mi = low ? m[i] + w * (gi - m[i]) : gi - (gi - m[i]) * wc;
    float vi = v[i] * c.beta2 + c.one_minus_beta2 * gi * gi;
    float denom = std::sqrt(vi) / c.bc2_sqrt + c.eps;
    p[i] = pi + neg_step * (mi / denom);
    m[i] = mi;
    v[i] = vi;
  }
}

void sgd_step_naive(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
                    float weight_decay, bool nesterov, bool first) {
  for (int64_t i = 0; i < n; i++) {
    float d = g[i] + weight_decay * p[i];
    if (momentum != 0.0f) {
      buf[i] = first ? d : momentum * buf[i] + (1.0f - dampening) * d;
      d = nesterov ? d + momentum * buf[i] : buf[i];
    }
    p[i] -= lr * d;
  }
}

void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
              float weight_decay, bool nesterov, bool first) {
  const float neg_lr = -lr, keep = 1.0f - dampening;
  if (momentum == 0.0f) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++) {
      float d = weight_decay != 0.0f ? g[i] + weight_decay * p[i] : g[i];
      p[i] = p[i] + neg_lr * d;
    }
    return;
  }
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; i++) {
    float d = weight_decay != 0.0f ? g[i] + weight_decay * p[i] : g[i];
    float b = first ? d : buf[i] * momentum + keep * d;
    buf[i] = b;
    d = nesterov ? d + momentum * b : b;
    p[i] = p[i] + neg_lr * d;
  }
}

double grad_sum_squares_naive(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
  return s;
}

double grad_sum_squares(const float* x, int64_t n) {
  const int64_t chunks = (n + kSumSquaresChunk - 1) / kSumSquaresChunk;
  std::vector<double> part(chunks);
#pragma omp parallel for schedule(static) if (chunks > 8)
  for (int64_t c = 0; c < chunks; c++) {
    const float* xc = x + c * kSumSquaresChunk;
    int64_t len = std::min(kSumSquaresChunk, n - c * kSumSquaresChunk);
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < len; i++) s += (double)xc[i] * xc[i];
    part[c] = s;
  }
  double total = 0;
  for (int64_t c = 0; c < chunks; c++) total += part[c];
  return total;
}

void grad_scale(float* x, int64_t n, float s) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; i++) x[i] *= s;
}

}  // namespace cpu
}  // namespace nala
