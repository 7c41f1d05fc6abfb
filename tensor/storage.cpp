// tensor/storage.cpp - where memory comes from. CPU: 64-byte aligned host
// memory from a small caching pool. CUDA: kernels/cuda/memory.cu provides
// cuda_alloc/cuda_free (a caching allocator) when built with CUDA=1; without
// it, asking for device memory fails loudly.
//
// Why a host pool: a training step allocates the same activation sizes every
// step, and fresh large allocations cost page faults that dwarf the
// arithmetic of an elementwise op. Freed blocks are kept per exact (64-byte
// rounded) size and reused; the pool holds at most kHostCacheBytes of free
// blocks and returns the rest to the system.
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "tensor/device.h"
#include "tensor/tensor.h"

namespace nala {

namespace {
#ifdef __SANITIZE_ADDRESS__
constexpr size_t kHostCacheBytes = 0;  // let ASan see every use after free
#else
constexpr size_t kHostCacheBytes = size_t(1) << 30;
#endif
struct HostPool {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;
  size_t cached = 0;
};
HostPool& host_pool() {
  static HostPool* p = new HostPool();  // never destroyed: tensors may die during static destruction
  return *p;
}
size_t host_round(size_t n) { return n == 0 ? 64 : ((n + 63) / 64) * 64; }

void* host_alloc(size_t n) {
  size_t sz = host_round(n);
  HostPool& P = host_pool();
  {
    std::lock_guard<std::mutex> lock(P.mu);
    auto it = P.free_blocks.find(sz);
    if (it != P.free_blocks.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      P.cached -= sz;
      return p;
    }
  }
  void* p = std::aligned_alloc(64, sz);
  NALA_CHECK(p != nullptr, "out of host memory: could not allocate ", n, " bytes");
  return p;
}

void host_free(void* p, size_t n) {
  size_t sz = host_round(n);
  HostPool& P = host_pool();
  std::lock_guard<std::mutex> lock(P.mu);
  if (P.cached + sz > kHostCacheBytes) {
    std::free(p);
    return;
  }
  P.free_blocks[sz].push_back(p);
  P.cached += sz;
}
}  // namespace

#ifdef NALA_CUDA
void* cuda_alloc(size_t nbytes);
void cuda_free(void* p, size_t nbytes);
#endif

Storage::Storage(size_t n, Device d, bool pin) : nbytes(n), device(d), pinned(pin) {
  if (d == Device::CPU && pinned) {
    data = device::alloc_pinned(n == 0 ? 64 : n);
    return;
  }
  if (d == Device::CPU) {
    data = host_alloc(n);
    return;
  }
#ifdef NALA_CUDA
  data = cuda_alloc(n);
#else
  NALA_FAIL("this build has no CUDA support (rebuild with CUDA=1) - cannot allocate ", n, " bytes on cuda");
#endif
}

Storage::~Storage() {
  if (device == Device::CPU && pinned) {
    device::free_pinned(data);
    return;
  }
  if (device == Device::CPU) {
    host_free(data, nbytes);
    return;
  }
#ifdef NALA_CUDA
  cuda_free(data, nbytes);
#endif
}

}  // namespace nala
