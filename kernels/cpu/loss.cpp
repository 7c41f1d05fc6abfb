// kernels/cpu/loss.cpp - fused cross-entropy (letters and rules in loss.h).
//
// One pass per row finds the max and sum_k z_k, a second the sum of
// exp(z - max); rows run in parallel, each writing its own loss, and the
// row losses are added in row order afterwards (deterministic for any
// thread count).
#include "kernels/cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/exp_fast.h"

namespace nala {
namespace cpu {

static constexpr int64_t kParallelMin = 16384;

// First label outside [0, K), in row order.
static void find_bad_label(const int64_t* labels, int64_t B, int64_t K, int64_t* bad) {
  bad[0] = -1;
  bad[1] = 0;
  for (int64_t b = 0; b < B; b++)
    if (labels[b] < 0 || labels[b] >= K) {
      bad[0] = b;
      bad[1] = labels[b];
      return;
    }
}

void cross_entropy_forward_naive(float* loss, float* lse, const float* logits, const int64_t* labels, int64_t B,
                                 int64_t K, float smoothing, int64_t* bad) {
  find_bad_label(labels, B, K, bad);
  if (bad[0] >= 0) return;
  double total = 0;
  for (int64_t b = 0; b < B; b++) {
    const float* z = logits + b * K;
    double m = -INFINITY, s = 0;
    for (int64_t k = 0; k < K; k++) m = std::max(m, (double)z[k]);
    for (int64_t k = 0; k < K; k++) s += std::exp(z[k] - m);
    const double l = m + std::log(s);
    lse[b] = (float)l;
    for (int64_t k = 0; k < K; k++) {
      const double t = (k == labels[b] ? 1.0 - smoothing : 0.0) + (double)smoothing / K;
      total -= t * (z[k] - l);
    }
  }
  *loss = (float)(total / B);
}

void cross_entropy_forward(float* loss, float* lse, const float* logits, const int64_t* labels, int64_t B,
                           int64_t K, float smoothing, int64_t* bad) {
  find_bad_label(labels, B, K, bad);
  if (bad[0] >= 0) return;
  std::vector<double> row(B);
#pragma omp parallel for schedule(static) if (B * K > kParallelMin)
  for (int64_t b = 0; b < B; b++) {
    const float* z = logits + b * K;
    float m = -INFINITY;
    double zsum = 0;
#pragma omp simd reduction(max : m) reduction(+ : zsum)
    for (int64_t k = 0; k < K; k++) {
      m = std::max(m, z[k]);
      zsum += z[k];
    }
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < K; k++) s += exp_fast(z[k] - m);
    const double l = (double)m + std::log((double)s);
    lse[b] = (float)l;
    row[b] = l - (1.0 - smoothing) * z[labels[b]] - (double)smoothing / K * zsum;
  }
  double total = 0;
  for (int64_t b = 0; b < B; b++) total += row[b];
  *loss = (float)(total / B);
}

void cross_entropy_backward_naive(float* dlogits, const float* dloss, const float* logits, const int64_t* labels,
                                  const float* lse, int64_t B, int64_t K, float smoothing) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t k = 0; k < K; k++) {
      const double p = std::exp((double)logits[b * K + k] - lse[b]);
      const double t = (k == labels[b] ? 1.0 - smoothing : 0.0) + (double)smoothing / K;
      dlogits[b * K + k] = (float)(*dloss * (p - t) / B);
    }
}

void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits, const int64_t* labels,
                            const float* lse, int64_t B, int64_t K, float smoothing) {
  const float g = *dloss / (float)B;
  const float off = smoothing / (float)K;  // target of every class
  const float on = 1.0f - smoothing;       // added for the label
#pragma omp parallel for schedule(static) if (B * K > kParallelMin)
  for (int64_t b = 0; b < B; b++) {
    const float* z = logits + b * K;
    float* d = dlogits + b * K;
    const float l = lse[b];
#pragma omp simd
    for (int64_t k = 0; k < K; k++) d[k] = g * (exp_fast(z[k] - l) - off);
    d[labels[b]] -= g * on;
  }
}

}  // namespace cpu
}  // namespace nala
