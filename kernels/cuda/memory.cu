// kernels/cuda/memory.cu - device memory: a caching allocator.
//
// Freed blocks are kept in per-size free lists (sizes rounded up to 512 B
// below 1 MiB and to 2 MiB above) and handed out again, so a training loop
// calls cudaMalloc only while the pool grows during its first steps. When
// cudaMalloc fails, the cache is released and the call retried once; if it
// still fails the error says how much was asked for and how much is free.
//
// Private pools (for CUDA graphs, kernels/cuda/graph.cu): while a graph is
// being captured, its allocations come from a pool of its own, and every
// block freed during the capture joins that pool too. The addresses baked
// into the graph then belong to it alone: blocks freed back into a private
// pool are handed out again only inside the same pool (a later capture of the
// same graph), never to other tensors, until the pool is released (the graph
// is destroyed) and its blocks return to the shared free lists.
#include <cuda_runtime.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/matmul.h"
#include "tensor/device.h"
#include "tensor/tensor.h"

namespace nala {

namespace {
using FreeLists = std::map<size_t, std::vector<void*>>;  // rounded size -> blocks
struct Pool {
  std::mutex mu;
  FreeLists free_blocks;
  size_t cached = 0, in_use = 0, peak = 0;
  int active = 0;                          // the private pool allocations come from (0: the shared one)
  int next_id = 1;
  std::map<int, FreeLists> privates;       // private pool id -> its free blocks
  std::unordered_map<void*, int> owner;    // block -> private pool id (blocks of the shared pool are absent)
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
  FreeLists& lists = P.active ? P.privates[P.active] : P.free_blocks;
  auto it = lists.find(sz);
  if (it != lists.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    P.cached -= sz;
    P.in_use += sz;
    P.peak = std::max(P.peak, P.in_use);
    return p;
  }
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, sz);
  if (err != cudaSuccess && !P.active) {  // (cudaFree would end a capture: only outside one)
    cudaGetLastError();
    for (auto& kv : P.free_blocks)
      for (void* q : kv.second) cudaFree(q), P.cached -= kv.first;
    P.free_blocks.clear();
    err = cudaMalloc(&p, sz);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    // Not every failure is a full GPU: under CUDA MPS, a server whose clients
    // were killed can refuse the next ones (seen as "0 MiB free of 0 MiB").
    if (err != cudaErrorMemoryAllocation) {
      const std::string name = cudaGetErrorName(err);
      NALA_FAIL("CUDA could not allocate ", nbytes, " bytes: ", name, " (", cudaGetErrorString(err), ")",
                name.find("Mps") != std::string::npos
                    ? ". The CUDA MPS server refused this process; one left behind by killed clients can: restart it "
                      "(echo quit | nvidia-cuda-mps-control; nvidia-cuda-mps-control -d)"
                    : "");
    }
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    NALA_FAIL("CUDA out of memory: asked for ", nbytes, " bytes (", sz >> 20, " MiB); ", free_b >> 20,
              " MiB free of ", total_b >> 20, " MiB; nala holds ", P.in_use >> 20, " MiB in tensors");
  }
  P.in_use += sz;
  P.peak = std::max(P.peak, P.in_use);
  if (P.active) P.owner[p] = P.active;
  return p;
}

void cuda_free(void* p, size_t nbytes) {
  if (!p) return;
  Pool& P = pool();
  size_t sz = round_size(nbytes);
  std::lock_guard<std::mutex> lock(P.mu);
  auto own = P.owner.find(p);
  int id = own != P.owner.end() ? own->second : 0;
  if (!id && P.active) id = P.owner[p] = P.active;  // freed during a capture: the graph may still use it
  (id ? P.privates[id] : P.free_blocks)[sz].push_back(p);
  P.in_use -= sz;
  P.cached += sz;
}

int cuda_private_pool_new() {
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mu);
  const int id = P.next_id++;
  P.privates[id];
  return id;
}

void cuda_private_pool_use(int id) {
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mu);
  NALA_CHECK(id == 0 || P.privates.count(id), "cuda memory: no private pool ", id);
  P.active = id;
}

void cuda_private_pool_release(int id) {
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mu);
  auto it = P.privates.find(id);
  if (it == P.privates.end()) return;
  for (auto& kv : it->second)
    for (void* q : kv.second) P.free_blocks[kv.first].push_back(q);
  P.privates.erase(it);
  for (auto o = P.owner.begin(); o != P.owner.end();)  // blocks still in use return to the shared pool when freed
    o = o->second == id ? P.owner.erase(o) : std::next(o);
  if (P.active == id) P.active = 0;
}

// ---- tensor/device.h hooks ------------------------------------------------

namespace device {

bool cuda_built() { return true; }

bool cuda_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void set_cuda_device(int index) {
  const int n = cuda_device_count();
  NALA_CHECK(index >= 0 && index < n, "set_cuda_device: GPU ", index, " requested, ", n, " visible");
  CUDA_CHECK(cudaSetDevice(index), "set_cuda_device");
}

void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t n) {
  cudaMemcpyKind kind = dd == Device::CPU ? (sd == Device::CPU ? cudaMemcpyHostToHost : cudaMemcpyDeviceToHost)
                                          : (sd == Device::CPU ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice);
  CUDA_CHECK(cudaMemcpy(dst, src, n, kind), "copy");
}

namespace {
template <typename T>
__global__ void fill_kernel(T* p, T v, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    p[i] = v;
}

constexpr int kMaxDims = 8;
struct StridedArgs {
  int64_t shape[kMaxDims], dst_strides[kMaxDims], src_strides[kMaxDims];
  int ndim;
};

template <typename T>
__global__ void strided_copy_kernel(T* dst, const T* src, StridedArgs a, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rem = i, so = 0, d_o = 0;
    for (int d = a.ndim - 1; d >= 0; d--) {
      int64_t idx = rem % a.shape[d];
      rem /= a.shape[d];
      so += idx * a.src_strides[d];
      d_o += idx * a.dst_strides[d];
    }
    dst[d_o] = src[so];
  }
}

int blocks_for(int64_t n) { return (int)std::min<int64_t>((n + 255) / 256, 65535); }
}  // namespace

void fill(void* p, DType dtype, float v, int64_t n) {
  if (n == 0) return;
  if (dtype == DType::I64) fill_kernel<<<blocks_for(n), 256>>>((int64_t*)p, (int64_t)v, n);
  else {
    NALA_CHECK(dtype == DType::F32, "fill on cuda: unsupported dtype ", dtype_name(dtype));
    fill_kernel<<<blocks_for(n), 256>>>((float*)p, v, n);
  }
  CUDA_CHECK_LAUNCH("fill");
}

void strided_copy(void* dst, const int64_t* ds, const void* src, const int64_t* ss, const int64_t* shape, int ndim,
                  size_t es) {
  NALA_CHECK(ndim <= kMaxDims, "strided copy on cuda: ", ndim, " dims (at most ", kMaxDims, ")");
  StridedArgs a{};
  a.ndim = ndim;
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) a.shape[d] = shape[d], a.dst_strides[d] = ds[d], a.src_strides[d] = ss[d], n *= shape[d];
  if (n == 0) return;
  if (es == 4) strided_copy_kernel<<<blocks_for(n), 256>>>((float*)dst, (const float*)src, a, n);
  else if (es == 8) strided_copy_kernel<<<blocks_for(n), 256>>>((int64_t*)dst, (const int64_t*)src, a, n);
  else if (es == 2) strided_copy_kernel<<<blocks_for(n), 256>>>((uint16_t*)dst, (const uint16_t*)src, a, n);
  else NALA_FAIL("strided copy on cuda: element size ", es);
  CUDA_CHECK_LAUNCH("strided copy");
}

namespace {
__global__ void increment_kernel(int64_t* p) { *p += 1; }
}  // namespace

void increment_i64(int64_t* p) {
  increment_kernel<<<1, 1>>>(p);
  CUDA_CHECK_LAUNCH("increment");
}

void synchronize() { CUDA_CHECK(cudaDeviceSynchronize(), "synchronize"); }

void* alloc_pinned(size_t n) {
  void* p = nullptr;
  CUDA_CHECK(cudaMallocHost(&p, n), "pinned host allocation");
  return p;
}
void free_pinned(void* p) { cudaFreeHost(p); }

void set_gemm_bf16(bool on) { cuda::set_gemm_bf16(on); }
bool gemm_bf16() { return cuda::gemm_bf16_mode(); }

size_t in_use_bytes() {
  std::lock_guard<std::mutex> lock(pool().mu);
  return pool().in_use;
}
size_t peak_bytes() {
  std::lock_guard<std::mutex> lock(pool().mu);
  return pool().peak;
}
void reset_peak() {
  std::lock_guard<std::mutex> lock(pool().mu);
  pool().peak = pool().in_use;
}

}  // namespace device
}  // namespace nala
