// bench/bench_gemm.cpp - GFLOP/s of nala's cpu::gemm against OpenBLAS sgemm.
//
//   make CUDA=0 build/release-nocuda/bench/bench_gemm
//   OMP_NUM_THREADS=2 ./build/release-nocuda/bench/bench_gemm [reps] [--coretype NAME] [--kernel NAME]
//
// --kernel avx512|avx2|portable runs nala's GEMM with that micro-kernel
// (default: the one chosen from the CPU's flags; NALA_GEMM_KERNEL does the
// same). `--coretype Haswell --kernel avx2` compares both libraries' AVX2
// kernels on an AVX-512 machine; a build with ARCH=x86-64-v3 is what an
// AVX2-only machine runs, to the instruction.
//
// OpenBLAS is the yardstick, never a build dependency: it is loaded at run
// time (dlopen of libopenblas.so.0, Debian's libopenblas0-pthread; install
// with `tools/deps.sh bench`). Without it the comparison is skipped with a
// one-line note and ours is checked against gemm_naive instead.
//
// A yardstick must run at its best. OpenBLAS 0.3.21 does not recognise
// recent CPUs (Zen 4, Sapphire Rapids) and falls back to its slowest kernel
// ("Prescott"), and some machines set OPENBLAS_CORETYPE=Haswell (and
// OPENBLAS_L2_SIZE) in their environment for older builds. Before loading it
// we set OPENBLAS_CORETYPE from the CPU's own flags (SkylakeX where
// AVX-512F/BW/DQ/VL are present, Haswell where AVX2 and FMA are), replacing
// what the environment says (and dropping OPENBLAS_L2_SIZE, so OpenBLAS reads
// the cache size itself), unless --coretype NAME asks for another kernel, and
// print the kernel it then reports (openblas_get_corename()); the check
// against ours catches a kernel that computes wrong results.
// OPENBLAS_THREAD_TIMEOUT=4 (also set unless given)
// makes its idle worker threads sleep at once: without it they spin after
// each call and take the cores from our threads.
//
// For each shape: check ours against the reference (OpenBLAS, else
// gemm_naive on a few rows), then time both, one call of each in turn
// (interleaved, so a busy machine hurts both alike), and print the median
// (and best) GFLOP/s and the ratio of the medians. Both use the same thread
// count. Each sample runs >= ~20 ms of work, and there is a short pause when
// switching library, so neither pays for the other's threads still spinning.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "tensor/rng.h"

#include <dlfcn.h>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace nala;

namespace {

struct Shape3 {
  const char* name;
  int64_t M, N, K;
  bool ta, tb;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double best(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

void fill(std::vector<float>& v, uint64_t seed) {
  Rng r(seed);
  for (auto& x : v) x = r.uniform(-1.0f, 1.0f);
}

// max |x - ref| / max(1, |ref|)
double max_rel_err(const std::vector<float>& x, const std::vector<float>& ref, int64_t rows, int64_t N) {
  double e = 0;
  for (int64_t i = 0; i < rows * N; i++)
    e = std::max(e, std::fabs((double)x[i] - ref[i]) / std::max(1.0, std::fabs((double)ref[i])));
  return e;
}

// The few OpenBLAS entry points we use, resolved at run time. The enum
// values are CBLAS's (row-major 101, no-trans 111, trans 112).
struct OpenBlas {
  void (*sgemm)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int) =
      nullptr;
  char* (*corename)() = nullptr;
  void (*set_num_threads)(int) = nullptr;
  bool ok() const { return sgemm && corename && set_num_threads; }
};

// SkylakeX where the AVX-512 subsets OpenBLAS's SkylakeX kernels use are
// present, Haswell where AVX2 + FMA are, else let OpenBLAS decide.
const char* coretype_for_this_cpu() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

// coretype: the kernel asked for with --coretype, or nullptr (choose from the CPU's flags).
OpenBlas load_openblas(const char* coretype) {
  OpenBlas ob;
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  std::string was = env ? env : "";
  const char* core = coretype ? coretype : coretype_for_this_cpu();
  // Read by OpenBLAS when it loads, so set before dlopen.
  if (core) {
    setenv("OPENBLAS_CORETYPE", core, 1);
    unsetenv("OPENBLAS_L2_SIZE");
  }
  if (!std::getenv("OPENBLAS_THREAD_TIMEOUT")) setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
  void* h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    std::printf("OpenBLAS not found (libopenblas.so.0; `tools/deps.sh bench` installs it): comparison skipped\n");
    return ob;
  }
  ob.sgemm = reinterpret_cast<decltype(ob.sgemm)>(dlsym(h, "cblas_sgemm"));
  ob.corename = reinterpret_cast<decltype(ob.corename)>(dlsym(h, "openblas_get_corename"));
  ob.set_num_threads = reinterpret_cast<decltype(ob.set_num_threads)>(dlsym(h, "openblas_set_num_threads"));
  if (!ob.ok()) {
    std::printf("libopenblas.so.0 lacks cblas_sgemm / openblas_get_corename: comparison skipped\n");
    return OpenBlas{};
  }
  std::string why = coretype ? "asked for with --coretype"
                    : core   ? "chosen from this CPU's flags"
                             : "no AVX2 here: OpenBLAS's own choice";
  if (core && !was.empty() && was != core) why += ", replacing OPENBLAS_CORETYPE=" + was + " from the environment";
  std::printf("OpenBLAS kernel: %s (OPENBLAS_CORETYPE=%s, %s)\n", ob.corename(), core ? core : "unset", why.c_str());
  return ob;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 7;
  const char* coretype = nullptr;
  for (int i = 1; i < argc; i++) {
    if (std::string(argv[i]) == "--coretype" && i + 1 < argc) {
      coretype = argv[++i];
    } else if (std::string(argv[i]) == "--kernel" && i + 1 < argc) {
      const std::string want = argv[++i];
      bool found = false;
      for (cpu::GemmKernel k : {cpu::GemmKernel::Avx512, cpu::GemmKernel::Avx2, cpu::GemmKernel::Portable})
        if (want == cpu::gemm_kernel_name(k)) {
          if (!cpu::gemm_kernel_supported(k)) {
            std::fprintf(stderr, "bench_gemm: this CPU cannot run the %s kernel\n", want.c_str());
            return 2;
          }
          cpu::set_gemm_kernel(k);
          found = true;
        }
      if (!found) {
        std::fprintf(stderr, "bench_gemm: --kernel %s: unknown (avx512, avx2 or portable)\n", want.c_str());
        return 2;
      }
    } else if (std::atoi(argv[i]) > 0) {
      reps = std::atoi(argv[i]);
    } else {
      std::fprintf(stderr, "usage: bench_gemm [reps] [--coretype NAME] [--kernel avx512|avx2|portable]\n");
      return 2;
    }
  }
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  const OpenBlas ob = load_openblas(coretype);
  const bool have_blas = ob.ok();
  if (have_blas) ob.set_num_threads(threads);
  std::printf("nala kernel: %s%s\n", cpu::gemm_kernel_name(cpu::gemm_kernel()),
              std::getenv("NALA_GEMM_KERNEL") ? " (NALA_GEMM_KERNEL)" : "");
  std::printf("threads %d (ours: OpenMP%s), median of %d\n", threads,
              have_blas ? ", OpenBLAS: openblas_set_num_threads" : "", reps);
  const Shape3 shapes[] = {
      {"square 256", 256, 256, 256, false, false},
      {"square 512", 512, 512, 512, false, false},
      {"square 1024", 1024, 1024, 1024, false, false},
      {"square 2048", 2048, 2048, 2048, false, false},
      {"square 1024 A^T", 1024, 1024, 1024, true, false},
      {"square 1024 B^T", 1024, 1024, 1024, false, true},
      {"qkv 6272x512x128 B^T", 128 * 49, 512, 128, false, true},
      {"25088x128x32 B^T", 128 * 196, 128, 32, false, true},
      {"6272x256x64 B^T", 128 * 49, 256, 64, false, true},
      {"dW 128x32x25088 A^T", 128, 32, 128 * 196, true, false},
      {"odd 333x517x129", 333, 517, 129, false, false},
  };
  std::printf("%-24s %17s %17s %7s %10s\n", "shape (MxNxK)", "nala GF/s (best)", "BLAS GF/s (best)", "ratio",
              "max err");
  for (const Shape3& s : shapes) {
    int64_t M = s.M, N = s.N, K = s.K;
    int64_t lda = s.ta ? M : K, ldb = s.tb ? K : N;
    std::vector<float> A(M * K), B(K * N), C(M * N), R(M * N);
    fill(A, 1);
    fill(B, 2);
    double flops = 2.0 * M * N * K;
    // Correctness first.
    cpu::gemm(s.ta, s.tb, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), N);
    auto blas = [&](float* out) {
      ob.sgemm(101, s.ta ? 112 : 111, s.tb ? 112 : 111, (int)M, (int)N, (int)K, 1.0f, A.data(), (int)lda, B.data(),
               (int)ldb, 0.0f, out, (int)N);
    };
    double err;
    if (have_blas) {
      blas(R.data());
      err = max_rel_err(C, R, M, N);
    } else {
      int64_t rows = std::min<int64_t>(M, 16);
      cpu::gemm_naive(s.ta, s.tb, rows, N, K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, R.data(), N);
      err = max_rel_err(C, R, rows, N);
    }
    // Warm up, then interleave.
    int inner = std::max<int64_t>(1, (int64_t)(4e9 / flops));  // ~>= 20 ms per sample
    auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); };
    std::vector<double> ours, theirs;
    for (int r = -1; r < reps; r++) {
      pause();
      double t0 = now_s();
      for (int i = 0; i < inner; i++)
        cpu::gemm(s.ta, s.tb, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), N);
      double t1 = now_s();
      if (r >= 0) ours.push_back(flops * inner / (t1 - t0) * 1e-9);
      if (!have_blas) continue;
      pause();
      double t2 = now_s();
      for (int i = 0; i < inner; i++) blas(R.data());
      double t3 = now_s();
      if (r >= 0) theirs.push_back(flops * inner / (t3 - t2) * 1e-9);
    }
    char name[64];
    std::snprintf(name, sizeof name, "%s", s.name);
    if (have_blas) {
      double a = median(ours), b = median(theirs);
      std::printf("%-24s %8.1f (%6.1f) %8.1f (%6.1f) %7.2f %10.2e\n", name, a, best(ours), b, best(theirs), a / b,
                  err);
    } else {
      std::printf("%-24s %8.1f (%6.1f) %17s %7s %10.2e\n", name, median(ours), best(ours), "-", "-", err);
    }
    if (!(err < 1e-3)) {
      std::printf("FAILED: %s differs from the reference (max rel err %.3g)\n", s.name, err);
      return 1;
    }
  }
  return 0;
}
