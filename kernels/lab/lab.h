// kernels/lab/lab.h - the harness every kernel-lab program shares: the
// command line, the machine's peaks (measured on the CPU it runs on), timing,
// the check against the reference, and the results table.
//
// The kernel lab: one program per op (kernels/lab/<op>.cpp for the CPU;
// the CUDA versions go in kernels/lab/<op>_cuda.cu beside it, with this same
// command line and table), holding versions 1..N of that op, each a short
// function whose comment says what it changes and why. The last version is
// the production kernel of kernels/cpu, called, not copied. Every run checks
// each version against the reference before and after timing it and exits
// non-zero on a mismatch. Built apart from the library (never in libnala.a):
//
//   make lab                                  -> build/<variant>/lab/<op>
//   build/release-nocuda/lab/gemm             every version, one table
//   build/release-nocuda/lab/gemm 5           version 5 only
//   build/release-nocuda/lab/gemm --size 1024 a larger problem (each program says what N means)
//   ... --check                               run and check each version once: no timing (make lab-check)
//   ... --csv                                 also one CSV line per version (kernels/lab/measure.sh):
//         csv,op,size,version,name,task,threads,seconds,GFLOP/s,GB/s,FLOP/byte,peak GFLOP/s,peak GB/s,max err
//   ... --threaded                            only the versions that use threads
//   ... --min-time S                          time each version for at least S seconds (default 0.3)
//   OMP_NUM_THREADS=T                         threads of the threaded versions and of the peak
//
// Numbers. "GFLOP/s" and "GB/s" count the op's useful work and its
// compulsory memory traffic (each input read once, each output written
// once), the same for every version of a task: they are speeds, not
// operation counts of a particular version. The peaks are measured at start:
// FP32 FMA throughput with an FMA-bound loop on the widest vector unit the
// CPU has (AVX-512F, else AVX2+FMA, else scalar; found at run time), and
// memory bandwidth with a triad (a = b + s c over 64 MiB arrays, counted as
// the 16 bytes per element memory moves, write-allocate included; lab.cpp).
// A kernel's own GB/s counts only compulsory traffic, so one that writes as
// much as it reads pays its stores' write-allocate and tops out below 100%.
// A single-threaded version is compared with one core's peaks, a threaded
// one with the peaks at OMP_NUM_THREADS threads.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/closeness.h"

#if defined(__x86_64__) || defined(__i386__)
#define NALA_LAB_X86 1
#endif

namespace nala {
namespace lab {

// What a version needs from the CPU; checked at run time (__builtin_cpu_supports).
enum class Isa { any, avx2, avx512 };
bool cpu_has(Isa isa);
const char* isa_name(Isa isa);

struct Peak {
  double gflops = 0, gbs = 0;  // FP32 FMA peak and triad bandwidth
  int threads = 1;
  Isa isa = Isa::any;  // the vector unit the FMA loop used
};
// Measures both peaks on `threads` threads (about 0.1-0.3 s).
Peak measure_peak(int threads);

// The outcome of comparing one version's outputs with the reference.
struct Check {
  bool ok = true;
  double max_err = 0;  // largest |got - ref| over every compared array
  std::string what;    // the first mismatch, in words
};
// Every element within atol + rtol * |ref| (NaN never is). `name` labels the array.
Check compare(const char* name, const float* got, const float* ref, int64_t n, double atol, double rtol);
// Normwise, for outputs of lower precision (kernels/closeness.h): ||got - ref|| <=
// bound.norm ||ref|| and every |got - ref| <= bound.max_rel max |ref| (NaN never passes).
Check compare_normwise(const char* name, const float* got, const float* ref, int64_t n, NormBound bound);
Check both(const Check& a, const Check& b);

// One kernel call being studied at one size: the forward or the backward of
// the op. clear() poisons the outputs (NaN) so a version that skips an
// element fails; check() compares the outputs with the reference.
struct Task {
  std::string name;     // "forward", "backward"
  double flops = 0;     // useful work per call
  double bytes = 0;     // compulsory traffic per call
  std::function<void()> clear;
  std::function<Check()> check;
};

struct Version {
  std::string name;    // a few words: "loop order i-k-j"
  int task = 0;        // index into the tasks
  bool threaded = false;
  Isa needs = Isa::any;
  std::function<void()> run;
};

struct Options {
  int version = 0;      // 0: all
  int64_t size = 0;     // 0: the program's small default
  bool check_only = false, csv = false, threaded_only = false;
  double min_time = 0.3;
};
// Parses [VERSION] [--size N] [--check] [--csv] [--threaded] [--min-time S]; prints
// `usage` and exits 2 on anything else.
Options parse(int argc, char** argv, const char* usage);

// Runs the chosen versions, prints the table, returns the exit status
// (1 when any version mismatched its reference, 2 for a bad version number).
int run(const std::string& op, const std::string& problem, const std::vector<Task>& tasks,
        const std::vector<Version>& versions, const Options& opt);

// Deterministic inputs (tensor/rng.h's generator).
void fill_uniform(std::vector<float>& x, uint64_t seed, float lo, float hi);
void fill_normal(std::vector<float>& x, uint64_t seed, float std);
// The worker threads of the threaded versions (OMP_NUM_THREADS).
int threads();

}  // namespace lab
}  // namespace nala
