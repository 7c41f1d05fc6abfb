// kernels/cuda/dropout.cu - dropout and drop-path mask multiplication on the
// GPU (letters n, B, D and the rules in kernels/cpu/dropout.h: the mask holds
// 0 or 1/(1-p); forward and backward are the same product, both overwrite =).
// Grid-stride loops with consecutive threads on consecutive elements; each
// is one multiplication, so the kernel is its own naive reference.
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/dropout.h"

namespace nala {
namespace cuda {

namespace {

constexpr int kThreads = 256;

int grid_for(int64_t n) { return (int)std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20)); }

__global__ void dropout_kernel(float* y, const float* x, const float* mask, int64_t n) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n; j += (int64_t)gridDim.x * blockDim.x)
    y[j] = x[j] * mask[j];
}

__global__ void drop_path_kernel(float* y, const float* x, const float* mask, int64_t D, int64_t n) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n; j += (int64_t)gridDim.x * blockDim.x)
    y[j] = x[j] * mask[j / D];
}

}  // namespace

void dropout_apply(float* y, const float* x, const float* mask, int64_t n) {
  if (n == 0) return;
  dropout_kernel<<<grid_for(n), kThreads>>>(y, x, mask, n);
  CUDA_CHECK_LAUNCH("dropout_apply");
}

void drop_path_apply(float* y, const float* x, const float* mask, int64_t B, int64_t D) {
  const int64_t n = B * D;
  if (n == 0) return;
  drop_path_kernel<<<grid_for(n), kThreads>>>(y, x, mask, D, n);
  CUDA_CHECK_LAUNCH("drop_path_apply");
}

}  // namespace cuda
}  // namespace nala
