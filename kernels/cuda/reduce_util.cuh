// kernels/cuda/reduce_util.cuh - building blocks shared by the CUDA
// reduction kernels (reduce.cu, loss.cu): the grid size for a number of
// tasks, sum/max operators, and a fixed-order group reduction.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace nala {
namespace cuda {
namespace reduce_util {

inline int grid_for(int64_t tasks, int64_t per_block = 1) {
  const int64_t b = (tasks + per_block - 1) / per_block;
  return (int)std::max<int64_t>(1, std::min<int64_t>(b, 1 << 20));
}

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Reduce over a group of TPR threads (32: one warp; the block size: the
// whole 1-D block); every thread of the group gets the result. The order is
// fixed: a butterfly inside each warp, then the warp results in warp order.
template <int TPR, typename T, typename Op>
__device__ T group_reduce(T v, Op op, T* sh) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (TPR == 32) return v;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  __syncthreads();  // sh may still be read from a previous call
  if (lane == 0) sh[w] = v;
  __syncthreads();
  T s = sh[0];
  for (int k = 1; k < TPR / 32; k++) s = op(s, sh[k]);
  return s;
}

}  // namespace reduce_util
}  // namespace cuda
}  // namespace nala
