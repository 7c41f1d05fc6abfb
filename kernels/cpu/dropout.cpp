// kernels/cpu/dropout.cpp - mask multiplication (letters and rules in
// dropout.h). Each is one line of arithmetic, so the loop is its own naive
// reference.
#include "kernels/cpu/dropout.h"

namespace nala {
namespace cpu {

void dropout_apply(float* y, const float* x, const float* mask, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t j = 0; j < n; j++) y[j] = x[j] * mask[j];
}

void drop_path_apply(float* y, const float* x, const float* mask, int64_t B, int64_t D) {
#pragma omp parallel for schedule(static) if (B * D > 32768)
  for (int64_t b = 0; b < B; b++) {
    const float m = mask[b];
#pragma omp simd
    for (int64_t j = 0; j < D; j++) y[b * D + j] = x[b * D + j] * m;
  }
}

}  // namespace cpu
}  // namespace nala
