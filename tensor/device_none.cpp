// tensor/device_none.cpp - the device hooks of tensor/device.h in a build
// without CUDA: there is no device memory, so every call fails by name.
#ifndef NALA_CUDA
#include "tensor/device.h"

namespace nala {
namespace device {

static void no_cuda(const char* what) { NALA_FAIL(what, ": this build has no CUDA support (rebuild with CUDA=1)"); }

bool cuda_built() { return false; }
bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
void set_cuda_device(int) { no_cuda("set_cuda_device"); }
void copy_bytes(void*, Device, const void*, Device, size_t) { no_cuda("copy to/from cuda"); }
void fill(void*, DType, float, int64_t) { no_cuda("fill on cuda"); }
void strided_copy(void*, const int64_t*, const void*, const int64_t*, const int64_t*, int, size_t) {
  no_cuda("strided copy on cuda");
}
void increment_i64(int64_t*) { no_cuda("increment on cuda"); }
void synchronize() {}
void* alloc_pinned(size_t) {
  no_cuda("pinned host memory");
  return nullptr;
}
void free_pinned(void*) {}
size_t in_use_bytes() { return 0; }
size_t peak_bytes() { return 0; }
void reset_peak() {}

}  // namespace device
}  // namespace nala
#endif
