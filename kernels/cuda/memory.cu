// kernels/cuda/memory.cu - device memory: a caching allocator.
//
// Freed blocks are kept in per-size free lists (sizes rounded up to 512 B
// below 1 MiB and to 2 MiB above) and handed out again, so a training loop
// calls cudaMalloc only while the pool grows during its first steps. When
// cudaMalloc fails, the cache is released and the call retried once; if it
// still fails the error says how much was asked for and how much is free.
#include <cuda_runtime.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "tensor/tensor.h"

namespace nala {

namespace {
struct Pool {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;  // rounded size -> blocks
  size_t cached = 0, in_use = 0, peak = 0;
};
Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: storage may be freed during static destruction
  return *p;
}
size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n < (1u << 20)) return (n + 511) & ~size_t(511);
  return (n + (2u << 20) - 1) & ~(size_t(2u << 20) - 1);
}
}  // namespace

void* cuda_alloc(size_t nbytes) {
  Pool& P = pool();
  size_t sz = round_size(nbytes);
  std::lock_guard<std::mutex> lock(P.mu);
  auto it = P.free_blocks.find(sz);
  if (it != P.free_blocks.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    P.cached -= sz;
    P.in_use += sz;
    P.peak = std::max(P.peak, P.in_use);
    return p;
  }
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, sz);
  if (err != cudaSuccess) {
    cudaGetLastError();
    for (auto& kv : P.free_blocks)
      for (void* q : kv.second) cudaFree(q);
    P.free_blocks.clear();
    P.cached = 0;
    err = cudaMalloc(&p, sz);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    NALA_FAIL("CUDA out of memory: asked for ", nbytes, " bytes (", sz >> 20, " MiB); ", free_b >> 20,
              " MiB free of ", total_b >> 20, " MiB; nala holds ", P.in_use >> 20, " MiB in tensors");
  }
  P.in_use += sz;
  P.peak = std::max(P.peak, P.in_use);
  return p;
}

void cuda_free(void* p, size_t nbytes) {
  if (!p) return;
  Pool& P = pool();
  size_t sz = round_size(nbytes);
  std::lock_guard<std::mutex> lock(P.mu);
  P.free_blocks[sz].push_back(p);
  P.in_use -= sz;
  P.cached += sz;
}

size_t cuda_peak_bytes() { return pool().peak; }
void cuda_reset_peak() { pool().peak = pool().in_use; }

}  // namespace nala
