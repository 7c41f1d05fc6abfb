// kernels/cuda/reduce.cu - sum/mean, l2norm and the softmax family on
// contiguous (O, R, I) f32 device arrays (letters and rules in
// kernels/cpu/reduce.h; every kernel overwrites (=) its output).
//
// Sums (reduce_sum, l2norm):
//   I == 1  one warp (rows of at most 1024) or one block of 256 threads
//           per (row, chunk of R): threads stride over r with float4 loads
//           where the chunk is 16-byte aligned (coalesced), accumulate in
//           double, and a warp shuffle (+ a shared-memory pass over the
//           warps) combines them in a fixed order. These kernels are in
//           reduce_sum_rows.cuh, the kernel lab's last version (reduce_sum_cuda).
//   I > 1   one 32 x 8 block per (o, tile of 32 inner columns, chunk of R):
//           the 32 lanes read 32 consecutive inner elements (coalesced), the
//           8 rows of threads stride over r, and a fixed-order pass over the
//           8 partial sums in shared memory finishes the tile.
//   When (O x tiles) alone gives too few blocks to fill the GPU, R is cut into
//   chunks whose length depends only on the shape; the chunk sums (double)
//   go to a scratch array and a second kernel adds them, a warp per output
//   (lanes stride over the chunks, then a butterfly: a fixed order).
//   No float atomics anywhere: the result is bit-identical run to run.
// Softmax family:
//   I == 1  one warp per row (R <= 1024) or one 256-thread block per row;
//           max, then sum of exp(x - max), then the write: three passes over
//           the row (it stays in L1/L2 between them).
//   I > 1   one thread per (o, i) column; consecutive threads take
//           consecutive i, so every pass over r reads contiguous memory.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/reduce_sum_rows.cuh"
#include "kernels/cuda/reduce_util.cuh"
#include "kernels/cuda/reduce.h"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {

constexpr int kThreads = 256;          // threads per block everywhere in this file
constexpr int64_t kTargetBlocks = 1024;  // chunk R until about this many blocks run
constexpr int kTile = 32, kTileRows = 8;   // column-sum block: 32 inner x 8 reduced
constexpr int64_t kWarpRowMax = 1024;  // rows (or row chunks) up to this long get a warp, longer ones a block

using namespace reduce_util;

using namespace reduce_sum_rows;  // SumOut, term, sum_rows_kernel, sum_chunks_kernel
static_assert(kSumThreads == kThreads, "the row-sum kernels are launched with kThreads threads");

// I > 1, blockDim (32, 8). Task t = (o, c, tile b): part index (o * nc + c) * I + i.
template <bool Square>
__global__ void sum_cols_kernel(SumOut out, const float* x, int64_t O, int64_t R, int64_t I, int64_t Rc,
                                int64_t nc, int64_t nt) {
  __shared__ double sh[kTileRows][kTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t t = blockIdx.x; t < O * nc * nt; t += gridDim.x) {
    const int64_t b = t % nt, c = (t / nt) % nc, o = t / (nt * nc);
    const int64_t i = b * kTile + tx;
    const int64_t r0 = c * Rc, r1 = min(R, r0 + Rc);
    double s = 0.0;
    if (i < I)
      for (int64_t r = r0 + ty; r < r1; r += kTileRows) s += term<Square>(x[(o * R + r) * I + i]);
    sh[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && i < I) {
      double a = sh[0][tx];
      for (int k = 1; k < kTileRows; k++) a += sh[k][tx];
      out.put((o * nc + c) * I + i, a);
    }
    __syncthreads();
  }
}

template <bool Square>
void sum_impl(const char* op, float* y, const float* x, int64_t O, int64_t R, int64_t I, float alpha, float floor,
              bool l2) {
  if (O * I == 0) return;
  const int64_t nt = (I + kTile - 1) / kTile;
  const int64_t pieces = I == 1 ? O : O * nt;
  // Chunks along R: a function of the shape only (never of the device).
  const int64_t min_chunk = I == 1 ? 2048 : 128;
  int64_t nc = 1;
  if (pieces < kTargetBlocks && R > 2 * min_chunk)
    nc = std::min((kTargetBlocks + pieces - 1) / pieces, (R + min_chunk - 1) / min_chunk);
  const int64_t Rc = std::max<int64_t>(1, (R + nc - 1) / nc);
  nc = std::max<int64_t>(1, (R + Rc - 1) / Rc);

  SumOut out{y, nullptr, alpha, floor, l2};
  Tensor part;  // scratch, (O, nc, I) doubles in 8-byte slots
  if (nc > 1) {
    part = Tensor::empty({O * nc * I}, DType::I64, Device::CUDA);
    out.part = reinterpret_cast<double*>(part.raw());
  }
  if (I == 1 && Rc <= kWarpRowMax) {
    sum_rows_kernel<32, Square><<<grid_for(O * nc, kThreads / 32), kThreads>>>(out, x, O, R, Rc, nc);
  } else if (I == 1) {
    sum_rows_kernel<kThreads, Square><<<grid_for(O * nc), kThreads>>>(out, x, O, R, Rc, nc);
  } else {
    sum_cols_kernel<Square><<<grid_for(O * nc * nt), dim3(kTile, kTileRows)>>>(out, x, O, R, I, Rc, nc, nt);
  }
  CUDA_CHECK_LAUNCH(op);
  if (nc > 1) {
    SumOut fin{y, nullptr, alpha, floor, l2};
    sum_chunks_kernel<<<grid_for(O * I, kSumThreads / 32), kSumThreads>>>(fin, out.part, O, I, nc);
    CUDA_CHECK_LAUNCH(op);
  }
}

// ---- elementwise backward of the sums --------------------------------------

__global__ void sum_backward_kernel(float* dx, const float* dy, int64_t R, int64_t I, float alpha, int64_t n) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n; j += (int64_t)gridDim.x * blockDim.x)
    dx[j] = alpha * dy[(j / (R * I)) * I + j % I];
}

__global__ void l2norm_backward_kernel(float* dx, const float* dy, const float* x, const float* y, int64_t R,
                                       int64_t I, float floor, int64_t n) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n; j += (int64_t)gridDim.x * blockDim.x) {
    const int64_t k = (j / (R * I)) * I + j % I;
    const float nrm = y[k];
    dx[j] = nrm > floor ? dy[k] * x[j] / nrm : 0.0f;
  }
}

// ---- softmax family --------------------------------------------------------

// I == 1: rows of R contiguous elements, TPR threads per row.
template <int TPR, bool Log>
__global__ void softmax_rows_kernel(float* y, const float* x, int64_t O, int64_t R) {
  __shared__ float sh[kThreads / 32];
  constexpr int RPB = kThreads / TPR;  // rows per block
  const int lane = threadIdx.x % TPR;
  for (int64_t o = (int64_t)blockIdx.x * RPB + threadIdx.x / TPR; o < O; o += (int64_t)gridDim.x * RPB) {
    const float* p = x + o * R;
    float* q = y + o * R;
    float m = -INFINITY;
    for (int64_t r = lane; r < R; r += TPR) m = fmaxf(m, p[r]);
    m = group_reduce<TPR>(m, MaxOp(), sh);
    float s = 0.0f;
    for (int64_t r = lane; r < R; r += TPR) {
      const float e = expf(p[r] - m);
      if (!Log) q[r] = e;
      s += e;
    }
    s = group_reduce<TPR>(s, SumOp(), sh);
    if (Log) {
      const float c = m + logf(s);
      for (int64_t r = lane; r < R; r += TPR) q[r] = p[r] - c;
    } else {
      const float inv = 1.0f / s;
      for (int64_t r = lane; r < R; r += TPR) q[r] *= inv;  // this thread's own writes
    }
  }
}

// I > 1: one thread per (o, i) column, rows r strided by I.
template <bool Log>
__global__ void softmax_cols_kernel(float* y, const float* x, int64_t O, int64_t R, int64_t I) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < O * I; j += (int64_t)gridDim.x * blockDim.x) {
    const int64_t off = (j / I) * R * I + j % I;
    const float* p = x + off;
    float* q = y + off;
    float m = -INFINITY;
    for (int64_t r = 0; r < R; r++) m = fmaxf(m, p[r * I]);
    float s = 0.0f;
    for (int64_t r = 0; r < R; r++) {
      const float e = expf(p[r * I] - m);
      if (!Log) q[r * I] = e;
      s += e;
    }
    if (Log) {
      const float c = m + logf(s);
      for (int64_t r = 0; r < R; r++) q[r * I] = p[r * I] - c;
    } else {
      const float inv = 1.0f / s;
      for (int64_t r = 0; r < R; r++) q[r * I] *= inv;
    }
  }
}

// softmax: dx = y (dy - sum dy y); log_softmax: dx = dy - exp(y) sum dy.
template <int TPR, bool Log>
__global__ void softmax_backward_rows_kernel(float* dx, const float* dy, const float* y, int64_t O, int64_t R) {
  __shared__ float sh[kThreads / 32];
  constexpr int RPB = kThreads / TPR;
  const int lane = threadIdx.x % TPR;
  for (int64_t o = (int64_t)blockIdx.x * RPB + threadIdx.x / TPR; o < O; o += (int64_t)gridDim.x * RPB) {
    const float *g = dy + o * R, *p = y + o * R;
    float* d = dx + o * R;
    float s = 0.0f;
    for (int64_t r = lane; r < R; r += TPR) s += Log ? g[r] : g[r] * p[r];
    s = group_reduce<TPR>(s, SumOp(), sh);
    for (int64_t r = lane; r < R; r += TPR) d[r] = Log ? g[r] - expf(p[r]) * s : p[r] * (g[r] - s);
  }
}

template <bool Log>
__global__ void softmax_backward_cols_kernel(float* dx, const float* dy, const float* y, int64_t O, int64_t R,
                                             int64_t I) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < O * I; j += (int64_t)gridDim.x * blockDim.x) {
    const int64_t off = (j / I) * R * I + j % I;
    const float *g = dy + off, *p = y + off;
    float* d = dx + off;
    float s = 0.0f;
    for (int64_t r = 0; r < R; r++) s += Log ? g[r * I] : g[r * I] * p[r * I];
    for (int64_t r = 0; r < R; r++) {
      const int64_t k = r * I;
      d[k] = Log ? g[k] - expf(p[k]) * s : p[k] * (g[k] - s);
    }
  }
}

template <bool Log>
void softmax_impl(const char* op, float* y, const float* x, int64_t O, int64_t R, int64_t I) {
  if (O * R * I == 0) return;
  if (I == 1) {
    if (R <= kWarpRowMax) softmax_rows_kernel<32, Log><<<grid_for(O, kThreads / 32), kThreads>>>(y, x, O, R);
    else softmax_rows_kernel<kThreads, Log><<<grid_for(O), kThreads>>>(y, x, O, R);
  } else {
    softmax_cols_kernel<Log><<<grid_for(O * I, kThreads), kThreads>>>(y, x, O, R, I);
  }
  CUDA_CHECK_LAUNCH(op);
}

template <bool Log>
void softmax_backward_impl(const char* op, float* dx, const float* dy, const float* y, int64_t O, int64_t R,
                           int64_t I) {
  if (O * R * I == 0) return;
  if (I == 1) {
    if (R <= kWarpRowMax)
      softmax_backward_rows_kernel<32, Log><<<grid_for(O, kThreads / 32), kThreads>>>(dx, dy, y, O, R);
    else softmax_backward_rows_kernel<kThreads, Log><<<grid_for(O), kThreads>>>(dx, dy, y, O, R);
  } else {
    softmax_backward_cols_kernel<Log><<<grid_for(O * I, kThreads), kThreads>>>(dx, dy, y, O, R, I);
  }
  CUDA_CHECK_LAUNCH(op);
}

}  // namespace

void reduce_sum(float* y, const float* x, int64_t O, int64_t R, int64_t I, float alpha) {
  sum_impl<false>("reduce_sum", y, x, O, R, I, alpha, 0.0f, false);
}

void reduce_sum_backward(float* dx, const float* dy, int64_t O, int64_t R, int64_t I, float alpha) {
  const int64_t n = O * R * I;
  if (n == 0) return;
  sum_backward_kernel<<<grid_for(n, kThreads), kThreads>>>(dx, dy, R, I, alpha, n);
  CUDA_CHECK_LAUNCH("reduce_sum_backward");
}

void l2norm_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I, float floor) {
  sum_impl<true>("l2norm_forward", y, x, O, R, I, 1.0f, floor, true);
}

void l2norm_backward(float* dx, const float* dy, const float* x, const float* y, int64_t O, int64_t R, int64_t I,
                     float floor) {
  const int64_t n = O * R * I;
  if (n == 0) return;
  l2norm_backward_kernel<<<grid_for(n, kThreads), kThreads>>>(dx, dy, x, y, R, I, floor, n);
  CUDA_CHECK_LAUNCH("l2norm_backward");
}

void softmax_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I) {
  softmax_impl<false>("softmax_forward", y, x, O, R, I);
}
void log_softmax_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I) {
  softmax_impl<true>("log_softmax_forward", y, x, O, R, I);
}
void softmax_backward(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I) {
  softmax_backward_impl<false>("softmax_backward", dx, dy, y, O, R, I);
}
void log_softmax_backward(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I) {
  softmax_backward_impl<true>("log_softmax_backward", dx, dy, y, O, R, I);
}

}  // namespace cuda
}  // namespace nala
