// kernels/cuda/reduce_sum_rows.cuh - the sums over contiguous rows (I = 1 in
// reduce.h's (O, R, I) view) of reduce_sum and l2norm, CUDA, and the pass
// that adds chunk sums: used by reduce.cu (which picks the chunks, the
// grids and the column kernel for I > 1) and, as its last version, by the
// kernel lab (kernels/lab/reduce_sum_cuda.cu; docs/kernels.md).
//
// A task is (row o, chunk c of R); TPR threads take it (a warp for chunks
// of at most 1024, else the whole 256-thread block). The threads stride
// over the chunk with float4 loads when it starts 16-byte aligned (scalar
// loads otherwise, and for the last R % 4), accumulate in double, and a
// butterfly of warp shuffles (+ a pass over the warps in shared memory)
// combines them in a fixed order: the result is the same every run.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/reduce_util.cuh"

namespace nala {
namespace cuda {
namespace reduce_sum_rows {

constexpr int kSumThreads = 256;  // threads per block of sum_rows_kernel and sum_chunks_kernel

// Where a sum ends up: chunk sums into part (double), or the final value
// alpha * s (sum) or max(sqrt(s), floor) (l2norm) into y.
struct SumOut {
  float* y;
  double* part;  // null when R is one chunk
  float alpha, floor;
  bool l2;
  __device__ void put(int64_t idx, double s) const {
    if (part) part[idx] = s;
    else if (l2) y[idx] = fmaxf(sqrtf((float)s), floor);
    else y[idx] = alpha * (float)s;
  }
};

template <bool Square>
__device__ __forceinline__ double term(float v) {
  return Square ? (double)(v * v) : (double)v;  // the square in f32, as the CPU kernel
}

// I == 1, TPR threads per task (a warp for short rows, else the block).
// Task t = (o, c): part index o * nc + c. Block: kSumThreads threads.
template <int TPR, bool Square>
static __global__ void sum_rows_kernel(SumOut out, const float* x, int64_t O, int64_t R, int64_t Rc, int64_t nc) {
  __shared__ double sh[kSumThreads / 32];
  constexpr int TPB = kSumThreads / TPR;  // tasks per block
  const int lane = threadIdx.x % TPR;
  for (int64_t t = (int64_t)blockIdx.x * TPB + threadIdx.x / TPR; t < O * nc; t += (int64_t)gridDim.x * TPB) {
    const int64_t o = t / nc, c = t % nc;
    const int64_t r0 = c * Rc, len = min(R, r0 + Rc) - r0;
    const float* p = x + o * R + r0;
    double s = 0.0;
    int64_t done = 0;
    if ((reinterpret_cast<uintptr_t>(p) & 15) == 0) {  // the same for the whole group
      const float4* p4 = reinterpret_cast<const float4*>(p);
      const int64_t n4 = len / 4;
      for (int64_t k = lane; k < n4; k += TPR) {
        const float4 v = p4[k];
        s += (term<Square>(v.x) + term<Square>(v.y)) + (term<Square>(v.z) + term<Square>(v.w));
      }
      done = 4 * n4;
    }
    for (int64_t r = done + lane; r < len; r += TPR) s += term<Square>(p[r]);
    s = reduce_util::group_reduce<TPR>(s, reduce_util::SumOp(), sh);
    if (lane == 0) out.put(t, s);
  }
}

// y[o, i] from the chunk sums part[o, c, i]: a warp per output, the lanes
// striding over the chunks, then a butterfly (a fixed order). Block:
// kSumThreads threads.
static __global__ void sum_chunks_kernel(SumOut out, const double* part, int64_t O, int64_t I, int64_t nc) {
  constexpr int kWarps = kSumThreads / 32;
  const int lane = threadIdx.x & 31;
  for (int64_t j = (int64_t)blockIdx.x * kWarps + threadIdx.x / 32; j < O * I; j += (int64_t)gridDim.x * kWarps) {
    const int64_t o = j / I, i = j % I;
    double s = 0.0;
    for (int64_t c = lane; c < nc; c += 32) s += part[(o * nc + c) * I + i];
    s = reduce_util::group_reduce<32>(s, reduce_util::SumOp(), (double*)nullptr);
    if (lane == 0) out.put(j, s);
  }
}

}  // namespace reduce_sum_rows
}  // namespace cuda
}  // namespace nala
