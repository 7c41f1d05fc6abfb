// kernels/lab/lab_cuda.cuh - the harness of the CUDA kernel-lab programs
// (kernels/lab/<op>_cuda.cu): the GPU's peaks, timing with CUDA events, the
// check against the CPU reference, and the same table and command line as
// the CPU lab (kernels/lab/lab.h, whose Options, Task, Check, compare() and
// fill_*() it reuses: parse() and the checks are one code for both halves).
//
// Conventions of a CUDA lab program:
//   - one file kernels/lab/<op>_cuda.cu, built to build/<variant>/lab/<op>_cuda
//     by `make lab` when CUDA is on; it links lab.o, lab_cuda.cu.o and
//     libnala.a, whose kernels/cuda kernels are the programs' last versions
//     (shared code in a .cuh that both include, never a copy);
//   - versions 1..N, each a short __global__ kernel (or a few) whose comment
//     says what it changes and why, wrapped in a GpuVersion whose run()
//     only launches (on the default stream; no synchronisation, no copies:
//     the harness times exactly what run() enqueues);
//   - a Task per kernel call studied (forward, backward): clear() poisons the
//     device outputs (DeviceArray::poison: all bits set, a NaN in f32 and
//     bf16) so a version that skips an element fails, check() copies them
//     back and compares with the CPU reference (lab::compare);
//   - the default size is small and odd (not a multiple of any block or tile
//     size) so that --check exercises every edge; the sizes docs/kernels.md
//     times are given with --size;
//   - the CPU reference is computed once in main(), in double where it is
//     cheap, by the naive loop or by the CPU lab's version 1.
//
//   make lab                                    -> build/release/lab/<op>_cuda
//   build/release/lab/reduce_sum_cuda           every version, one table
//   build/release/lab/reduce_sum_cuda 3         version 3 only
//   ... --size N                                a larger problem (each program says what N means)
//   ... --check                                 run and check each version once, no timing (make lab-check-cuda)
//   ... --csv                                   also one CSV line per version (kernels/lab/measure_cuda.sh):
//         csv,op,size,version,name,task,gpu-UNIT,seconds,GFLOP/s,GB/s,FLOP/byte,peak GFLOP/s,peak GB/s,max err
//       the CPU lab's line with "gpu-fp32", "gpu-tf32" or "gpu-bf16" where the CPU's has its
//       thread count: the GPU ran it, and which compute peak the "peak GFLOP/s" field is
//   ... --min-time S                            time each version for about S seconds (default 0.3)
//   CUDA_VISIBLE_DEVICES                        which GPU (the harness uses device 0)
//
// Timing. Each version runs once (checked), then at least once more as a
// warm-up; then it is timed in batches of k back-to-back calls between two
// CUDA events, k chosen so a batch lasts at least ~0.5 ms (the events' own
// resolution and launch gaps then matter little), for at least 5 batches
// and about --min-time seconds; the time reported is the median batch's
// time per call. The outputs are checked again after the timing. Problems
// smaller than the L2 cache (50 MiB on the H200) are timed warm: repeated
// calls find their inputs in L2, so their GB/s can exceed the memory's.
//
// Peaks (printed at start, with where each comes from):
//   FP32 FMA peak   = SMs x FP32 lanes per SM x 2 x the maximum SM clock
//                     (cudaDevAttrClockRate; lanes per SM from the compute
//                     capability: 64 on sm_60/70/75/80, 128 on sm_61/86/89/90/100/120);
//   bf16 tensor peak = SMs x dense bf16 FLOP per clock per SM x that clock
//                     (2048 on sm_80, 4096 on sm_90, 8192 on sm_100; unknown
//                     elsewhere, shown as n/a); TF32 is half of it;
//   memory          = 2 (double data rate) x memory clock x bus width / 8
//                     (cudaDevAttrMemoryClockRate, cudaDevAttrGlobalMemoryBusWidth),
//                     the theoretical bandwidth; a measured device-to-device
//                     copy (256 MiB, counted as read + write) is printed
//                     beside it, and used instead when the attributes are 0.
// NVIDIA's datasheets state the tensor peak at a lower clock than the
// maximum (H100/H200 SXM: 989 TFLOPS dense bf16, here 1070), so the
// fractions of the tensor peak shown here are conservative.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "kernels/lab/lab.h"

// A CUDA call in a lab program: on failure, print the call, the file and
// line and the error, and exit 1 (a lab program has nothing to recover).
#define LAB_CUDA(call)                                                                                  \
  do {                                                                                                  \
    cudaError_t _e = (call);                                                                            \
    if (_e != cudaSuccess) ::nala::lab::cuda_fail(#call, __FILE__, __LINE__, cudaGetErrorString(_e));   \
  } while (0)

namespace nala {
namespace lab {

[[noreturn]] void cuda_fail(const char* call, const char* file, int line, const char* err);

// Which compute peak a version is compared with.
enum class Unit { fp32, tf32, bf16 };
const char* unit_name(Unit u);  // "fp32", "tf32", "bf16"

struct GpuPeak {
  std::string name;          // "NVIDIA H200"
  int cc = 0, sms = 0;       // compute capability x 10, SM count
  double clock_ghz = 0;      // maximum SM clock
  double fp32 = 0;           // GFLOP/s, FP32 FMA
  double tf32 = 0, bf16 = 0; // GFLOP/s, dense tensor cores; 0: unknown for this GPU
  double mem_clock_ghz = 0;  // memory clock and bus width, as the device reports them
  int bus_bits = 0;
  double gbs_spec = 0;       // GB/s from the memory clock and bus width; 0: not reported
  double gbs_copy = 0;       // GB/s of a measured device-to-device copy
  double gbs() const { return gbs_spec > 0 ? gbs_spec : gbs_copy; }
  double gflops(Unit u) const { return u == Unit::fp32 ? fp32 : u == Unit::tf32 ? tf32 : bf16; }
};
// Reads the attributes of the current device; measures the copy when asked.
GpuPeak gpu_peak(bool measure_copy);

struct GpuVersion {
  std::string name;  // a few words: "shared-memory tree"
  int task = 0;      // index into the tasks
  Unit unit = Unit::fp32;
  int min_cc = 0;    // skipped (and said so) on a GPU below this compute capability x 10, e.g. 90 for wgmma
  std::function<void()> run;  // launches the version's kernel(s) on the default stream
};

// Runs the chosen versions (opt.threaded_only is ignored), prints the table,
// returns the exit status: 1 when any version mismatched its reference or
// failed to launch, 2 for a bad version number.
int run_gpu(const std::string& op, const std::string& problem, const std::vector<Task>& tasks,
            const std::vector<GpuVersion>& versions, const Options& opt);

// A device array of n T, freed at scope exit.
template <class T>
struct DeviceArray {
  T* p = nullptr;
  int64_t n = 0;
  explicit DeviceArray(int64_t count) : n(count) { LAB_CUDA(cudaMalloc(&p, sizeof(T) * (size_t)(n > 0 ? n : 1))); }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray((int64_t)host.size()) { upload(host); }
  ~DeviceArray() { cudaFree(p); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void upload(const std::vector<T>& host) {
    if ((int64_t)host.size() != n) cuda_fail("DeviceArray::upload", __FILE__, __LINE__, "size differs");
    LAB_CUDA(cudaMemcpy(p, host.data(), sizeof(T) * (size_t)n, cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host((size_t)n);
    LAB_CUDA(cudaMemcpy(host.data(), p, sizeof(T) * (size_t)n, cudaMemcpyDeviceToHost));
    return host;
  }
  // Every byte 0xFF: NaN in f32 and bf16, so an element a version skips fails the check.
  void poison() { LAB_CUDA(cudaMemset(p, 0xFF, sizeof(T) * (size_t)n)); }
  void zero() { LAB_CUDA(cudaMemset(p, 0, sizeof(T) * (size_t)n)); }
  operator T*() const { return p; }
};

// Blocks needed to cover n items with `per` each.
inline unsigned blocks_for(int64_t n, int64_t per) { return (unsigned)((n + per - 1) / per); }

}  // namespace lab
}  // namespace nala
