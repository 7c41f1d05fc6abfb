// bench/cuda_timing.cuh - the CUDA benchmarks' timer: `warmup` untimed calls,
// then the median over `reps` calls of the time between two CUDA events
// around one call (milliseconds).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "kernels/cuda/check.cuh"

namespace nala {

template <typename Fn>
float median_ms(Fn fn, int warmup, int reps) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a), "bench");
  CUDA_CHECK(cudaEventCreate(&b), "bench");
  for (int i = 0; i < warmup; i++) fn();
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; i++) {
    CUDA_CHECK(cudaEventRecord(a), "bench");
    fn();
    CUDA_CHECK(cudaEventRecord(b), "bench");
    CUDA_CHECK(cudaEventSynchronize(b), "bench");
    CUDA_CHECK(cudaEventElapsedTime(&ms[i], a, b), "bench");
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

}  // namespace nala
