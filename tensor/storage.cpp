// tensor/storage.cpp - where memory comes from. CPU: 64-byte aligned host
// memory. CUDA: kernels/cuda/ provides nala_cuda_alloc/free (a caching
// allocator) when built with CUDA=1; without it, asking for device memory
// fails loudly.
#include <cstdlib>
#include <cstring>

#include "tensor/tensor.h"

namespace nala {

#ifdef NALA_CUDA
void* cuda_alloc(size_t nbytes);
void cuda_free(void* p, size_t nbytes);
#endif

Storage::Storage(size_t n, Device d) : nbytes(n), device(d) {
  if (d == Device::CPU) {
    size_t rounded = ((n + 63) / 64) * 64;
    if (rounded == 0) rounded = 64;
    data = std::aligned_alloc(64, rounded);
    NALA_CHECK(data != nullptr, "out of host memory: could not allocate ", n, " bytes");
    return;
  }
#ifdef NALA_CUDA
  data = cuda_alloc(n);
#else
  NALA_FAIL("this build has no CUDA support (rebuild with CUDA=1) - cannot allocate ", n, " bytes on cuda");
#endif
}

Storage::~Storage() {
  if (device == Device::CPU) {
    std::free(data);
    return;
  }
#ifdef NALA_CUDA
  cuda_free(data, nbytes);
#endif
}

}  // namespace nala
