// kernels/cpu/elementwise.cpp
#include "kernels/cpu/elementwise.h"

namespace nala {
namespace cpu {

void axpy(float* y, const float* x, float a, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

}  // namespace cpu
}  // namespace nala
