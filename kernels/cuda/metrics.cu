// kernels/cuda/metrics.cu - see metrics.h. One thread per row; each is the
// host loop's body, so the kernel is its own naive reference.
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/metrics.h"

namespace nala {
namespace cuda {

namespace {

constexpr int kThreads = 128;

__global__ void metrics_kernel(double* acc, const float* loss, double w, const float* logits,
                               const int64_t* labels, int64_t B, int64_t K, double* confusion) {
  const int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (b == 0) acc[0] += (double)loss[0] * w;
  if (b >= B) return;
  const float* row = logits + b * K;
  const int64_t y = labels[b];
  int64_t pred = 0, above = 0;
  for (int64_t k = 1; k < K; k++)
    if (row[k] > row[pred]) pred = k;
  for (int64_t k = 0; k < K; k++) above += row[k] > row[y];
  if (pred == y) atomicAdd(&acc[1], 1.0);
  if (above < 5) atomicAdd(&acc[2], 1.0);
  if (confusion) atomicAdd(&confusion[y * K + pred], 1.0);
}

}  // namespace

void accumulate_metrics(double* acc, const float* loss, double w, const float* logits, const int64_t* labels,
                        int64_t B, int64_t K, double* confusion) {
  const int blocks = (int)std::max<int64_t>(1, (B + kThreads - 1) / kThreads);
  metrics_kernel<<<blocks, kThreads>>>(acc, loss, w, logits, labels, B, K, confusion);
  CUDA_CHECK_LAUNCH("accumulate_metrics");
}

}  // namespace cuda
}  // namespace nala
