// kernels/lab/reduce_sum_cuda.cu - the reduction lab, CUDA: the sum of a
// large float array, from one atomic per element to memory bandwidth.
// Walkthrough: docs/kernels.md; harness: kernels/lab/lab_cuda.cuh.
//
//   s = sum_i x[i]        x: n floats, uniform in [0, 1)
//
//   build/release/lab/reduce_sum_cuda [VERSION] [--size n] [--check] [--csv]
//     default n = 1,000,003 (odd: every tail path runs); docs/kernels.md
//     times n = 16,777,216 (64 MiB, beyond the H200's 50 MiB L2; the CPU
//     lab's size) and versions 2-5 at n = 67,108,864 (256 MiB): there
//     version 1 fails its check, its running float sum stuck at 2^24 where
//     adding a number below 1 no longer changes it
//
// Versions:
//   1  naive atomics           every thread atomicAdds its element into one float
//   2  shared-memory tree      a block sums 256 elements in shared memory; one atomic per block
//   3  warp shuffles           the tree inside a warp through registers (__shfl_down_sync)
//   4  grid-stride, float4     few blocks, each thread sums many float4 loads; a
//                              second tiny kernel adds the block sums in order
//   5  cuda::reduce_sum        the production kernels (kernels/cuda/reduce_sum_rows.cuh):
//                              version 4's plan with double accumulators and
//                              chunks fixed by the shape (bit-identical run to run)
// The reference is the sum in double.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cuda/reduce.h"
#include "kernels/lab/lab_cuda.cuh"

using namespace nala;

namespace {

constexpr int kBlock = 256;

// ---- 1. naive atomics: one thread per element, each adding into the same
// float in global memory. The atomics on one address serialise in the L2
// (one at a time, a few ns each), so n adds take n x that no matter how many
// threads there are; the order of the adds changes from run to run, and so
// does the result's last bits.
__global__ void v1_atomic(float* out, const float* x, int64_t n) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) atomicAdd(out, x[i]);
}
void v1(float* out, const float* x, int64_t n) {
  LAB_CUDA(cudaMemsetAsync(out, 0, sizeof(float)));
  v1_atomic<<<lab::blocks_for(n, kBlock), kBlock>>>(out, x, n);
}

// ---- 2. shared-memory tree: the block's 256 threads put their elements in
// shared memory and halve the active threads each step (128 add the upper
// half onto the lower, then 64, ...), a __syncthreads between steps. Only
// thread 0 touches global memory: one atomic per 256 elements, so the
// serialised part shrinks 256 times. The last 5 steps run with fewer threads
// than a warp, and every step pays a barrier.
__global__ void v2_tree(float* out, const float* x, int64_t n) {
  __shared__ float sh[kBlock];
  const int64_t i = (int64_t)blockIdx.x * kBlock + threadIdx.x;
  sh[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(out, sh[0]);
}
void v2(float* out, const float* x, int64_t n) {
  LAB_CUDA(cudaMemsetAsync(out, 0, sizeof(float)));
  v2_tree<<<lab::blocks_for(n, kBlock), kBlock>>>(out, x, n);
}

// ---- 3. warp shuffles: the 32 threads of a warp exchange registers
// directly (__shfl_down_sync), so the tree inside a warp needs neither
// shared memory nor barriers; only the 8 warp sums go through shared
// memory, and warp 0 adds them the same way. Still one element per thread,
// so every block spends most of its life starting up and finishing.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;  // lane 0 holds the warp's sum
}
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float sh[kBlock / 32];
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  v = threadIdx.x < kBlock / 32 ? sh[threadIdx.x] : 0.0f;
  return threadIdx.x < 32 ? warp_sum(v) : 0.0f;  // thread 0 holds the block's sum
}
__global__ void v3_shuffle(float* out, const float* x, int64_t n) {
  const int64_t i = (int64_t)blockIdx.x * kBlock + threadIdx.x;
  const float s = block_sum(i < n ? x[i] : 0.0f);
  if (threadIdx.x == 0) atomicAdd(out, s);
}
void v3(float* out, const float* x, int64_t n) {
  LAB_CUDA(cudaMemsetAsync(out, 0, sizeof(float)));
  v3_shuffle<<<lab::blocks_for(n, kBlock), kBlock>>>(out, x, n);
}

// ---- 4. grid-stride loop with float4 loads: a fixed grid of a few blocks
// per SM, each thread walking the array with a stride of the whole grid and
// summing in a register. One 16-byte load per thread per step moves four
// times the bytes of a float load for the same instruction count, and keeps
// more bytes in flight per thread, which is what a memory-bound kernel
// needs. The block sums go to an array and a one-block kernel adds them in
// block order: no atomics, the same result every run.
constexpr int kBlocks4 = 1024;
__global__ void v4_grid_stride(float* part, const float* x, int64_t n) {
  const int64_t n4 = n / 4, stride = (int64_t)gridDim.x * kBlock;
  const float4* x4 = reinterpret_cast<const float4*>(x);  // cudaMalloc'd: 256-byte aligned
  float s = 0.0f;
  for (int64_t i = (int64_t)blockIdx.x * kBlock + threadIdx.x; i < n4; i += stride) {
    const float4 v = x4[i];
    s += (v.x + v.y) + (v.z + v.w);
  }
  if (blockIdx.x == 0 && threadIdx.x < n - 4 * n4) s += x[4 * n4 + threadIdx.x];  // the last n % 4
  s = block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}
__global__ void v4_finish(float* out, const float* part, int nparts) {
  float s = 0.0f;
  for (int i = threadIdx.x; i < nparts; i += kBlock) s += part[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}
void v4(float* out, float* part, const float* x, int64_t n) {
  v4_grid_stride<<<kBlocks4, kBlock>>>(part, x, n);
  v4_finish<<<1, kBlock>>>(out, part, kBlocks4);
}

// ---- 5. production: cuda::reduce_sum on the (O, R, I) = (1, n, 1) view
// (kernels/cuda/reduce.cu picks the plan; the kernels, sum_rows_kernel and
// sum_chunks_kernel, are in kernels/cuda/reduce_sum_rows.cuh). Version 4's
// float4 grid over the data, with what a library needs: double accumulators
// (the error no longer grows with n), chunks of R fixed by the shape alone
// (1024 chunks of a block each here; the result is the same on every GPU),
// the chunk sums added by one warp in a fixed order, and any (O, R, I).
void v5(float* out, const float* x, int64_t n) { cuda::reduce_sum(out, x, 1, n, 1, 1.0f); }

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: reduce_sum_cuda [VERSION] [--size n] [--check] [--csv] [--min-time S]\n"
      "  the sum of n floats (default 1000003; docs/kernels.md times 16777216 and 67108864)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  const int64_t n = opt.size ? opt.size : 1000003;
  std::vector<float> xh(n);
  lab::fill_uniform(xh, 1, 0.0f, 1.0f);
  double ref_d = 0;
  for (float e : xh) ref_d += e;
  const float ref = (float)ref_d;

  lab::DeviceArray<float> x(xh), out(1), part(kBlocks4);
  lab::Task t;
  t.name = "forward";
  t.flops = (double)n;
  t.bytes = 4.0 * n;
  t.clear = [&] { out.poison(); };
  // As on the CPU: 1e-3 relative catches a lost block or a doubled element;
  // the float versions' rounding error is well inside it.
  t.check = [&] {
    const float got = out.download()[0];
    return lab::compare("sum", &got, &ref, 1, 1e-6, 1e-3);
  };
  std::vector<lab::GpuVersion> v = {
      {"naive atomics", 0, lab::Unit::fp32, 0, [&] { v1(out, x, n); }},
      {"shared-memory tree", 0, lab::Unit::fp32, 0, [&] { v2(out, x, n); }},
      {"warp shuffles", 0, lab::Unit::fp32, 0, [&] { v3(out, x, n); }},
      {"grid-stride, float4 loads", 0, lab::Unit::fp32, 0, [&] { v4(out, part, x, n); }},
      {"cuda::reduce_sum (production)", 0, lab::Unit::fp32, 0, [&] { v5(out, x, n); }},
  };
  char desc[128];
  std::snprintf(desc, sizeof desc, "sum of %lld floats (%.1f MiB), reference %.3f (double)", (long long)n,
                4.0 * n / (1 << 20), ref_d);
  return lab::run_gpu("reduce_sum", desc, {t}, v, opt);
}
