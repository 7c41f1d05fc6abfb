// kernels/cuda/optim.cu - AdamW and SGD updates, the gradient sum of squares
// and an in-place scale on the GPU (formulas and rules in kernels/cpu/optim.h:
// n elements per parameter tensor; p and the state are updated in place, g
// is read only).
//
// The updates are elementwise grid-stride loops written in the CPU kernel's
// operation order (PyTorch's order), so CUDA and CPU agree to an ulp or two
// (the compilers may fuse multiply-adds differently).
// The sum of squares is deterministic: one 256-thread block per chunk of
// cpu::kSumSquaresChunk elements accumulates in double and combines its
// threads by a fixed tree; a single block then adds the chunk sums in a fixed
// order. No float atomics.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/optim.h"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {

constexpr int kThreads = 256;

int grid_for(int64_t tasks, int64_t per_block = 1) {
  const int64_t b = (tasks + per_block - 1) / per_block;
  return (int)std::max<int64_t>(1, std::min<int64_t>(b, 1 << 20));
}

// Sum over the 256-thread block in a fixed order; every thread gets it.
__device__ double block_sum(double v, double* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  double s = sh[0];
  for (int k = 1; k < kThreads / 32; k++) s += sh[k];
  return s;
}

__device__ __forceinline__ void adamw_loop(float* p, const float* g, float* m, float* v, int64_t n,
                                           const AdamWCoefs& c, bool low, float w, float wc, float neg_step) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float gi = g[i], m0 = m[i];
    const float pi = p[i] * c.decay;
    const float mi = low ? m0 + w * (gi - m0) : gi - (gi - m0) * wc;  // torch.lerp
    const float vi = v[i] * c.beta2 + c.one_minus_beta2 * gi * gi;
    const float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
    p[i] = pi + neg_step * (mi / denom);
    m[i] = mi;
    v[i] = vi;
  }
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, AdamWCoefs c, bool low,
                             float w, float wc, float neg_step) {
  adamw_loop(p, g, m, v, n, c, low, w, wc, neg_step);
}

// Many tensors in one launch: blockIdx.y picks the tensor, the x blocks
// stride over it. The coefficients come from device memory; low, w, wc and
// neg_step are derived from them as adamw_step does on the host.
struct AdamWDevBatch {
  AdamWDevTensor t[kAdamWMultiMax];
};

__global__ void adamw_multi_kernel(AdamWDevBatch b) {
  const AdamWDevTensor& t = b.t[blockIdx.y];
  const AdamWCoefs c = *t.c;
  adamw_loop(t.p, t.g, t.m, t.v, t.n, c, c.one_minus_beta1 < 0.5f, c.one_minus_beta1, 1.0f - c.one_minus_beta1,
             -c.step_size);
}

template <bool Momentum>
__device__ __forceinline__ void sgd_loop(float* p, const float* g, float* buf, int64_t n, float neg_lr,
                                         float momentum, float keep, float weight_decay, bool nesterov, bool first) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float d = weight_decay != 0.0f ? g[i] + weight_decay * p[i] : g[i];
    if (Momentum) {
      const float b = first ? d : buf[i] * momentum + keep * d;
      buf[i] = b;
      d = nesterov ? d + momentum * b : b;
    }
    p[i] = p[i] + neg_lr * d;
  }
}

template <bool Momentum>
__global__ void sgd_kernel(float* p, const float* g, float* buf, int64_t n, float neg_lr, float momentum,
                           float keep, float weight_decay, bool nesterov, bool first) {
  sgd_loop<Momentum>(p, g, buf, n, neg_lr, momentum, keep, weight_decay, nesterov, first);
}

// s = {lr, first (1 or 0)} in device memory.
template <bool Momentum>
__global__ void sgd_dev_kernel(float* p, const float* g, float* buf, int64_t n, const float* s, float momentum,
                               float keep, float weight_decay, bool nesterov) {
  sgd_loop<Momentum>(p, g, buf, n, -s[0], momentum, keep, weight_decay, nesterov, s[1] != 0.0f);
}

__global__ void sumsq_chunks_kernel(double* part, const float* x, int64_t n, int64_t chunks) {
  __shared__ double sh[kThreads / 32];
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const float* xc = x + c * cpu::kSumSquaresChunk;
    const int64_t len = min(cpu::kSumSquaresChunk, n - c * cpu::kSumSquaresChunk);
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) s += (double)xc[i] * xc[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) part[c] = s;
  }
}

// out[0] = sum part[0..n) with one block: fixed strides, then a fixed tree.
__global__ void sum_f64_kernel(double* out, const double* part, int64_t n) {
  __shared__ double sh[kThreads / 32];
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += part[j];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) out[0] = s;
}

__global__ void scale_kernel(float* x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] *= s;
}

int64_t chunks_of(int64_t n) { return (n + cpu::kSumSquaresChunk - 1) / cpu::kSumSquaresChunk; }

}  // namespace

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWCoefs& c) {
  if (n == 0) return;
  const bool low = c.one_minus_beta1 < 0.5f;
  const float w = c.one_minus_beta1, wc = 1.0f - c.one_minus_beta1;
  adamw_kernel<<<grid_for(n, kThreads), kThreads>>>(p, g, m, v, n, c, low, w, wc, -c.step_size);
  CUDA_CHECK_LAUNCH("adamw_step");
}

void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
              float weight_decay, bool nesterov, bool first) {
  if (n == 0) return;
  const float keep = 1.0f - dampening;
  if (momentum == 0.0f)
    sgd_kernel<false><<<grid_for(n, kThreads), kThreads>>>(p, g, buf, n, -lr, momentum, keep, weight_decay,
                                                            nesterov, first);
  else
    sgd_kernel<true><<<grid_for(n, kThreads), kThreads>>>(p, g, buf, n, -lr, momentum, keep, weight_decay,
                                                           nesterov, first);
  CUDA_CHECK_LAUNCH("sgd_step");
}

void adamw_step_dev_multi(const AdamWDevTensor* list, int64_t count) {
  for (int64_t at = 0; at < count; at += kAdamWMultiMax) {
    AdamWDevBatch b{};
    const int k = (int)std::min<int64_t>(kAdamWMultiMax, count - at);
    int64_t most = 1;
    for (int j = 0; j < k; j++) b.t[j] = list[at + j], most = std::max(most, list[at + j].n);
    const dim3 grid((unsigned)std::min<int64_t>((most + kThreads - 1) / kThreads, 1024), (unsigned)k);
    adamw_multi_kernel<<<grid, kThreads>>>(b);
    CUDA_CHECK_LAUNCH("adamw_step");
  }
}

void sgd_step_dev(float* p, const float* g, float* buf, int64_t n, const float* s, float momentum, float dampening,
                  float weight_decay, bool nesterov) {
  if (n == 0) return;
  const float keep = 1.0f - dampening;
  if (momentum == 0.0f)
    sgd_dev_kernel<false><<<grid_for(n, kThreads), kThreads>>>(p, g, buf, n, s, momentum, keep, weight_decay,
                                                                nesterov);
  else
    sgd_dev_kernel<true><<<grid_for(n, kThreads), kThreads>>>(p, g, buf, n, s, momentum, keep, weight_decay,
                                                               nesterov);
  CUDA_CHECK_LAUNCH("sgd_step");
}

void grad_sum_squares_chunks(double* part, const float* x, int64_t n) {
  const int64_t chunks = chunks_of(n);
  if (chunks == 0) return;
  sumsq_chunks_kernel<<<grid_for(chunks), kThreads>>>(part, x, n, chunks);
  CUDA_CHECK_LAUNCH("grad_sum_squares");
}

double sum_f64(const double* part, int64_t n) {
  if (n == 0) return 0.0;
  Tensor out = Tensor::empty({1}, DType::I64, Device::CUDA);  // one 8-byte slot
  double* d = reinterpret_cast<double*>(out.raw());
  sum_f64_kernel<<<1, kThreads>>>(d, part, n);
  CUDA_CHECK_LAUNCH("grad_sum_squares");
  double h = 0.0;
  CUDA_CHECK(cudaMemcpy(&h, d, sizeof(double), cudaMemcpyDeviceToHost), "grad_sum_squares");
  return h;
}

double grad_sum_squares(const float* x, int64_t n) {
  const int64_t chunks = chunks_of(n);
  if (chunks == 0) return 0.0;
  Tensor part = Tensor::empty({chunks}, DType::I64, Device::CUDA);  // doubles in 8-byte slots
  double* q = reinterpret_cast<double*>(part.raw());
  grad_sum_squares_chunks(q, x, n);
  return sum_f64(q, chunks);
}

void grad_scale(float* x, int64_t n, float s) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n, kThreads), kThreads>>>(x, n, s);
  CUDA_CHECK_LAUNCH("grad_scale");
}

}  // namespace cuda
}  // namespace nala
