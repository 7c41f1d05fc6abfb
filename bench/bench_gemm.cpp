// bench/bench_gemm.cpp - GFLOP/s of nala's cpu::gemm against OpenBLAS sgemm.
//
//   make CUDA=0 build/release/bench/bench_gemm
//   OPENBLAS_THREAD_TIMEOUT=4 OMP_NUM_THREADS=2 ./build/release/bench/bench_gemm [reps]
//
// OPENBLAS_THREAD_TIMEOUT=4 makes OpenBLAS's idle worker threads sleep at
// once: without it they spin for a long while after each call and take the
// core from the next library's threads (ours then runs at one-thread speed).
//
// For each shape: check ours against the reference (OpenBLAS when built with
// -DHAVE_OPENBLAS, else gemm_naive on a few rows), then time both, one call
// of each in turn (interleaved, so a busy machine hurts both alike), and
// print the median (and best) GFLOP/s and the ratio of the medians. Both use
// the same thread count. Each sample runs >= ~20 ms of work, and there is a
// short pause when switching library, so neither pays for the other's
// worker threads still spinning.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "tensor/rng.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef HAVE_OPENBLAS
#include <cblas.h>
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

}  // namespace

int main(int argc, char** argv) {
  int reps = argc > 1 ? std::atoi(argv[1]) : 7;
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
#ifdef HAVE_OPENBLAS
  openblas_set_num_threads(threads);
  std::printf("threads %d (ours: OpenMP, OpenBLAS: openblas_set_num_threads), median of %d\n", threads, reps);
#else
  std::printf("threads %d, median of %d (built without OpenBLAS: no comparison)\n", threads, reps);
#endif
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
#ifdef HAVE_OPENBLAS
    auto blas = [&](float* out) {
      cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans, (int)M,
                  (int)N, (int)K, 1.0f, A.data(), (int)lda, B.data(), (int)ldb, 0.0f, out, (int)N);
    };
    blas(R.data());
    double err = max_rel_err(C, R, M, N);
#else
    int64_t rows = std::min<int64_t>(M, 16);
    cpu::gemm_naive(s.ta, s.tb, rows, N, K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, R.data(), N);
    double err = max_rel_err(C, R, rows, N);
#endif
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
#ifdef HAVE_OPENBLAS
      pause();
      double t2 = now_s();
      for (int i = 0; i < inner; i++) blas(R.data());
      double t3 = now_s();
      if (r >= 0) theirs.push_back(flops * inner / (t3 - t2) * 1e-9);
#endif
    }
    char name[64];
    std::snprintf(name, sizeof name, "%s", s.name);
#ifdef HAVE_OPENBLAS
    double a = median(ours), b = median(theirs);
    std::printf("%-24s %8.1f (%6.1f) %8.1f (%6.1f) %7.2f %10.2e\n", name, a, best(ours), b, best(theirs), a / b, err);
#else
    std::printf("%-24s %8.1f (%6.1f) %17s %7s %10.2e\n", name, median(ours), best(ours), "-", "-", err);
#endif
    if (!(err < 1e-3)) {
      std::printf("FAILED: %s differs from the reference (max rel err %.3g)\n", s.name, err);
      return 1;
    }
  }
  return 0;
}
