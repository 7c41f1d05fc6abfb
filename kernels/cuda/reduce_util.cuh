// kernels/cuda/reduce_util.cuh - building blocks shared by the CUDA
// reduction kernels (reduce.cu, loss.cu, norm.cu, conv.cu, matmul.cu,
// elementwise.cu): the grid size for a number of tasks, sum/max operators, a
// fixed-order group reduction, and the second pass of the two-pass column
// sums (column_sum).
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

// ---- the second pass of a two-pass column sum ------------------------------------
// A first pass leaves n rows of partial sums, one row per block of that pass:
// column j's partials are col[0], col[ld], ..., col[(n - 1) ld]. column_sum()
// adds them in double, in blocks of col_block(n) threads: 32 consecutive
// columns a block (threadIdx.x; the loads are coalesced) and blockDim.y
// lanes (a power of two, at least n / 4 up to 32) striding over the rows;
// then the lanes' sums are added in lane order through shared memory. The
// order depends on n only: the same bits every run. The sum reaches the
// threads with threadIdx.y == 0 (the others get 0). Every thread of the
// block must call it (it synchronises); in == false for a thread past the
// last column. One thread adding the n partials in a row instead is a chain
// of n dependent L2 round trips: 50-90 us for 512 partials on an H200, longer
// than the first pass; 32 lanes for a handful of partials only add blocks.
constexpr int kColLanes = 32;
inline dim3 col_block(int64_t n) {
  int lanes = 1;
  while (lanes < kColLanes && lanes * 4 < n) lanes *= 2;
  return dim3(32, lanes);
}
inline unsigned col_blocks(int64_t ncols) { return (unsigned)std::max<int64_t>(1, (ncols + 31) / 32); }
__device__ inline int64_t col_index() { return (int64_t)blockIdx.x * 32 + threadIdx.x; }

__device__ inline double column_sum(const float* col, int64_t n, int64_t ld, bool in) {
  __shared__ double sh[kColLanes][33];
  double s = 0.0;
  if (in) {
#pragma unroll 4
    for (int64_t i = threadIdx.y; i < n; i += blockDim.y) s += col[i * ld];
  }
  if (blockDim.y == 1) return s;
  __syncthreads();  // sh may still be read from a previous call
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0) return 0.0;
  double t = sh[0][threadIdx.x];
  for (int k = 1; k < (int)blockDim.y; k++) t += sh[k][threadIdx.x];
  return t;
}

}  // namespace reduce_util
}  // namespace cuda
}  // namespace nala
