// kernels/cuda/loss.cu - fused cross-entropy on the GPU (letters B, K and
// the formula in kernels/cpu/loss.h; both kernels overwrite (=)).
//
// Forward, three launches and one read-back:
//   1. one warp per row (K <= 1024) or one 256-thread block per row: max and
//      sum_k z_k, then sum_k exp(z_k - max); writes lse[b] and the row's loss
//      (double) to a scratch array. A label outside [0, K) is never used as
//      an index: the row records its position with an integer atomicMin
//      (order-independent) in a one-slot device buffer and contributes 0.
//   2. one block adds the B row losses in a fixed order (deterministic) and
//      writes loss = total / B.
//   3. the bad-label slot is copied back to the host (a synchronous copy, one
//      per call); if set, the label's value is copied too and bad[] is filled
//      as the CPU kernel fills it.
// Backward: one thread per logit, dlogits = dloss / B * (exp(z - lse) - t).
// Saved for backward (by the op): lse.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/reduce_util.cuh"
#include "kernels/cuda/loss.h"
#include "tensor/device.h"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kWarpRowMax = 1024;  // rows up to this long get one warp, longer ones a block
constexpr unsigned long long kNoBad = ~0ull;

using namespace reduce_util;

template <int TPR>
__global__ void ce_rows_kernel(double* row, float* lse, unsigned long long* bad, const float* logits,
                               const int64_t* labels, int64_t B, int64_t K, float smoothing) {
  __shared__ float shf[kThreads / 32];
  __shared__ double shd[kThreads / 32];
  constexpr int RPB = kThreads / TPR;
  const int lane = threadIdx.x % TPR;
  for (int64_t b = (int64_t)blockIdx.x * RPB + threadIdx.x / TPR; b < B; b += (int64_t)gridDim.x * RPB) {
    const float* z = logits + b * K;
    const int64_t lab = labels[b];
    const bool ok = lab >= 0 && lab < K;
    if (!ok && lane == 0) atomicMin(bad, (unsigned long long)b);
    float m = -INFINITY;
    double zsum = 0.0;
    for (int64_t k = lane; k < K; k += TPR) {
      m = fmaxf(m, z[k]);
      zsum += z[k];
    }
    m = group_reduce<TPR>(m, MaxOp(), shf);
    zsum = group_reduce<TPR>(zsum, SumOp(), shd);
    float s = 0.0f;
    for (int64_t k = lane; k < K; k += TPR) s += expf(z[k] - m);
    s = group_reduce<TPR>(s, SumOp(), shf);
    if (lane == 0) {
      const double l = (double)m + log((double)s);
      lse[b] = (float)l;
      row[b] = ok ? l - (1.0 - smoothing) * z[lab] - (double)smoothing / K * zsum : 0.0;
    }
  }
}

// loss = (sum_b row[b]) / B with one block: thread t adds rows t, t + 256,
// ..., then the per-thread sums are combined by a fixed tree.
__global__ void ce_total_kernel(float* loss, const double* row, int64_t B) {
  __shared__ double sh[kThreads / 32];
  double s = 0.0;
  for (int64_t b = threadIdx.x; b < B; b += blockDim.x) s += row[b];
  s = group_reduce<kThreads>(s, SumOp(), sh);
  if (threadIdx.x == 0) *loss = (float)(s / B);
}

__global__ void ce_backward_kernel(float* d, const float* dloss, const float* logits, const int64_t* labels,
                                   const float* lse, int64_t B, int64_t K, float off, float on) {
  const float g = *dloss / (float)B;
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < B * K; j += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = j / K, k = j % K;
    float v = g * (expf(logits[j] - lse[b]) - off);
    if (k == labels[b]) v -= g * on;
    d[j] = v;
  }
}

}  // namespace

void cross_entropy_forward(float* loss, float* lse, const float* logits, const int64_t* labels, int64_t B,
                           int64_t K, float smoothing, int64_t* bad) {
  bad[0] = -1;
  bad[1] = 0;
  if (B == 0) return;
  // Scratch in 8-byte slots: [0] the first bad position, [1, B] the row losses.
  Tensor scratch = Tensor::empty({B + 1}, DType::I64, Device::CUDA);
  unsigned long long* dbad = reinterpret_cast<unsigned long long*>(scratch.raw());
  double* row = reinterpret_cast<double*>(scratch.raw()) + 1;
  CUDA_CHECK(cudaMemsetAsync(dbad, 0xff, sizeof(unsigned long long)), "cross_entropy_forward");
  if (K <= kWarpRowMax)
    ce_rows_kernel<32><<<grid_for(B, kThreads / 32), kThreads>>>(row, lse, dbad, logits, labels, B, K, smoothing);
  else ce_rows_kernel<kThreads><<<grid_for(B), kThreads>>>(row, lse, dbad, logits, labels, B, K, smoothing);
  CUDA_CHECK_LAUNCH("cross_entropy_forward");
  ce_total_kernel<<<1, kThreads>>>(loss, row, B);
  CUDA_CHECK_LAUNCH("cross_entropy_forward");
  // Inside a CUDA graph capture nothing can be read back: the labels of a
  // replayed step are not checked (the step before the capture checked its own).
  if (device::graph_capturing()) return;
  unsigned long long first = kNoBad;
  CUDA_CHECK(cudaMemcpy(&first, dbad, sizeof(first), cudaMemcpyDeviceToHost), "cross_entropy_forward");
  if (first != kNoBad) {
    bad[0] = (int64_t)first;
    CUDA_CHECK(cudaMemcpy(&bad[1], labels + first, sizeof(int64_t), cudaMemcpyDeviceToHost),
               "cross_entropy_forward");
  }
}

void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits, const int64_t* labels,
                            const float* lse, int64_t B, int64_t K, float smoothing) {
  if (B * K == 0) return;
  const float off = smoothing / (float)K;  // target of every class
  const float on = 1.0f - smoothing;       // added for the label
  ce_backward_kernel<<<grid_for(B * K, kThreads), kThreads>>>(dlogits, dloss, logits, labels, lse, B, K, off, on);
  CUDA_CHECK_LAUNCH("cross_entropy_backward");
}

}  // namespace cuda
}  // namespace nala
