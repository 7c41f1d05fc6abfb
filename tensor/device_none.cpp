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
void set_gemm_bf16(bool on) {
  if (on) no_cuda("bf16 matrix products");
}
bool gemm_bf16() { return false; }
void graph_capture_begin() { no_cuda("CUDA graph capture"); }
Graph* graph_capture_end(std::string* why) {
  if (why) *why = "this build has no CUDA support";
  return nullptr;
}
bool graph_capturing() { return false; }
void graph_launch(Graph*) { no_cuda("CUDA graph launch"); }
void graph_free(Graph*) {}
size_t graph_nodes(const Graph*) { return 0; }
void copy_async(void*, Device, const void*, Device, size_t) { no_cuda("asynchronous copy to/from cuda"); }
void zero_async(void*, size_t) { no_cuda("zero on cuda"); }
Event* event_new() { return nullptr; }
void event_record(Event*) {}
void event_wait(Event*) {}
void event_free(Event*) {}

}  // namespace device
}  // namespace nala
#endif
