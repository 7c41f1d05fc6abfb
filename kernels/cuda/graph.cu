// kernels/cuda/graph.cu - CUDA graphs and the stream-ordered copies around
// them: the CUDA side of the graph hooks of tensor/device.h.
//
// Every kernel of the engine is launched without a stream argument; nvcc's
// --default-stream per-thread (Makefile) puts those launches, and the
// runtime calls of the .cu files, on the calling thread's default stream.
// Unlike the legacy default stream, that stream can be captured. The capture
// runs in relaxed mode so that the caching allocator may still call
// cudaMalloc while it grows the graph's private pool (kernels/cuda/memory.cu).
// A synchronous copy or a read-back inside the capture fails it; the caller
// learns why from graph_capture_end and can run the step without a graph.
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/check.cuh"
#include "tensor/device.h"

#ifndef CUDA_API_PER_THREAD_DEFAULT_STREAM
#error "kernels/cuda/graph.cu needs nvcc --default-stream per-thread (see the Makefile's NVCCFLAGS)"
#endif

namespace nala {

int cuda_private_pool_new();           // kernels/cuda/memory.cu
void cuda_private_pool_use(int id);    // 0: the shared pool
void cuda_private_pool_release(int id);

namespace device {

struct Graph {
  cudaGraphExec_t exec = nullptr;
  int pool = 0;
  size_t nodes = 0;  // kernels, copies and memsets captured
};

struct Event {
  cudaEvent_t e = nullptr;
};

namespace {
thread_local int g_capture_pool = 0;  // the private pool of the capture in progress on this thread
}

void graph_capture_begin() {
  NALA_CHECK(!g_capture_pool, "CUDA graph capture: a capture is already in progress on this thread");
  const int pool = cuda_private_pool_new();
  cudaError_t e = cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeRelaxed);
  if (e != cudaSuccess) {
    cudaGetLastError();
    cuda_private_pool_release(pool);
    NALA_FAIL("CUDA graph capture: cannot begin (", cudaGetErrorString(e), ")");
  }
  g_capture_pool = pool;
  cuda_private_pool_use(pool);
}

bool graph_capturing() { return g_capture_pool != 0; }

Graph* graph_capture_end(std::string* why) {
  NALA_CHECK(g_capture_pool, "CUDA graph capture: no capture in progress on this thread");
  const int pool = g_capture_pool;
  g_capture_pool = 0;
  cuda_private_pool_use(0);
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(cudaStreamPerThread, &graph);
  cudaGraphExec_t exec = nullptr;
  size_t nodes = 0;
  if (e == cudaSuccess && graph) e = cudaGraphGetNodes(graph, nullptr, &nodes);
  if (e == cudaSuccess && graph) e = cudaGraphInstantiate(&exec, graph, 0);
  if (graph) cudaGraphDestroy(graph);
  if (e != cudaSuccess || !exec) {
    if (why) *why = cudaGetErrorString(e != cudaSuccess ? e : cudaErrorUnknown);
    cudaGetLastError();  // capture errors are not sticky: clear and go on
    cuda_private_pool_release(pool);
    return nullptr;
  }
  Graph* g = new Graph;
  g->exec = exec, g->pool = pool, g->nodes = nodes;
  return g;
}

void graph_launch(Graph* g) {
  NALA_CHECK(g, "CUDA graph launch: no graph");
  CUDA_CHECK(cudaGraphLaunch(g->exec, cudaStreamPerThread), "CUDA graph launch");
}

size_t graph_nodes(const Graph* g) { return g ? g->nodes : 0; }

void graph_free(Graph* g) {
  if (!g) return;
  cudaGraphExecDestroy(g->exec);
  cuda_private_pool_release(g->pool);
  delete g;
}

void copy_async(void* dst, Device dd, const void* src, Device sd, size_t n) {
  if (n == 0) return;
  cudaMemcpyKind kind = dd == Device::CPU ? (sd == Device::CPU ? cudaMemcpyHostToHost : cudaMemcpyDeviceToHost)
                                          : (sd == Device::CPU ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, n, kind, cudaStreamPerThread), "asynchronous copy");
}

void zero_async(void* dst, size_t n) {
  if (n) CUDA_CHECK(cudaMemsetAsync(dst, 0, n, cudaStreamPerThread), "zero on cuda");
}

Event* event_new() {
  Event* ev = new Event;
  CUDA_CHECK(cudaEventCreateWithFlags(&ev->e, cudaEventDisableTiming), "event");
  return ev;
}
void event_record(Event* ev) { CUDA_CHECK(cudaEventRecord(ev->e, cudaStreamPerThread), "event record"); }
void event_wait(Event* ev) { CUDA_CHECK(cudaEventSynchronize(ev->e), "event wait"); }
void event_free(Event* ev) {
  if (!ev) return;
  cudaEventDestroy(ev->e);
  delete ev;
}

}  // namespace device
}  // namespace nala
