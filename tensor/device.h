// tensor/device.h - the data movement the tensor layer needs from a device
// backend. kernels/cuda/memory.cu implements these for CUDA when built with
// CUDA=1; without it, calling them fails naming the operation.
#pragma once
#include <cstddef>
#include <cstdint>

#include "tensor/tensor.h"

namespace nala {
namespace device {

bool cuda_built();      // compiled with CUDA=1
bool cuda_available();  // ... and a GPU is present
int cuda_device_count();
// The GPU this process (thread) uses from now on; before any allocation.
void set_cuda_device(int index);
// n bytes between any two devices (host pinned or pageable on the CPU side).
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n);
// Fill n elements of a CUDA array with v (f32 or i64).
void fill(void* p, DType dtype, float v, int64_t n);
// Copy a strided view into another strided view of the same shape on the GPU.
void strided_copy(void* dst, const int64_t* dst_strides, const void* src, const int64_t* src_strides,
                  const int64_t* shape, int ndim, size_t elem_size);
// *p += 1 for one int64 in CUDA memory (BatchNorm's num_batches_tracked).
void increment_i64(int64_t* p);
void synchronize();
// Host memory that the GPU can copy from asynchronously (page-locked).
void* alloc_pinned(size_t n);
void free_pinned(void* p);
// The device allocator's counters (kernels/cuda/memory.cu), in bytes as the
// pool hands them out (rounded up to 512 B, above 1 MiB to 2 MiB): what
// tensors hold now, and the most they held since reset_peak(), which sets
// the peak to what they hold now. Cached free blocks are not counted.
size_t in_use_bytes();
size_t peak_bytes();
void reset_peak();

// The precision of the GPU's matrix products, process-wide: false (the
// default) float32; true: bf16 operands on tensor cores with float32
// accumulation (`--precision bf16`; kernels/cuda/matmul.h says which
// products). Everything else stays float32. Without CUDA, setting it fails.
void set_gemm_bf16(bool on);
bool gemm_bf16();

// ---- CUDA graphs (kernels/cuda/graph.cu) -----------------------------------
// The engine queues its GPU work on the calling thread's default stream
// (nvcc --default-stream per-thread), which can be captured into a graph and
// replayed with one launch. Replays read and write the addresses of the
// capture: the inputs are copied into the same device buffers before every
// launch, and the memory the capture allocated stays the graph's own.
struct Graph;
// Starts capturing this thread's GPU work; until graph_capture_end nothing
// runs, and allocations come from a memory pool private to the new graph.
void graph_capture_begin();
// Ends the capture: the graph, ready to launch, or null when the capture
// failed (an operation that cannot be captured, such as a synchronous copy);
// *why then says which. Call it even when the captured code threw.
Graph* graph_capture_end(std::string* why);
bool graph_capturing();  // between begin and end on this thread
void graph_launch(Graph* g);
void graph_free(Graph* g);  // the graph and its memory pool
size_t graph_nodes(const Graph* g);  // the operations it holds (kernels, copies, memsets)
// n bytes from page-locked host memory to the device (or back), queued on the
// stream; returns at once. The host buffer must stay untouched until an
// event recorded after the copy has passed.
void copy_async(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n);
void zero_async(void* dst, size_t n);  // n bytes of device memory set to 0, queued
// A marker in the stream: event_record puts it after the work queued so far,
// event_wait blocks the host until that work is done.
struct Event;
Event* event_new();
void event_record(Event* e);
void event_wait(Event* e);
void event_free(Event* e);

}  // namespace device
}  // namespace nala
