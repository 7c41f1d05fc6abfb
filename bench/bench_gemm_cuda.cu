// bench/bench_gemm_cuda.cu - TFLOP/s of nala's cuda::gemm (FP32 FFMA) against
// cuBLAS sgemm (FP32, no TF32: the yardstick; cuBLAS is linked here only).
//
//   make CUDA=1 build/release/bench/bench_gemm_cuda     (rule in bench/cuda.mk)
//   ./build/release/bench/bench_gemm_cuda [reps]
//
// For each shape: check ours against cuBLAS on the whole result and against
// cpu::gemm_naive (double accumulation) on a few rows, then time both (CUDA
// events, a warm-up call first, `reps` samples of >= ~20 ms each) and print
// the median TFLOP/s of each, the ratio, and the FP32 FFMA peak of the GPU
// (SMs x 128 lanes x 2 flops x clock). Shapes: squares, and the products of a
// NaLaFormer linear layer (forward, dX, dW) at batch 128.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cuda/matmul.h"
#include "tensor/rng.h"

using namespace nala;

namespace {

#define CK(call)                                                                                       \
  do {                                                                                                 \
    cudaError_t e_ = (call);                                                                           \
    if (e_ != cudaSuccess) {                                                                           \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));      \
      std::exit(1);                                                                                    \
    }                                                                                                  \
  } while (0)
#define CKB(call)                                                                                      \
  do {                                                                                                 \
    cublasStatus_t s_ = (call);                                                                        \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                 \
      std::fprintf(stderr, "%s:%d: %s: cuBLAS status %d\n", __FILE__, __LINE__, #call, (int)s_);      \
      std::exit(1);                                                                                    \
    }                                                                                                  \
  } while (0)

struct Shape3 {
  const char* name;
  int64_t M, N, K;
  bool ta, tb;
};

void fill(std::vector<float>& v, uint64_t seed) {
  Rng r(seed);
  for (auto& x : v) x = r.uniform(-1.0f, 1.0f);
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
void cublas_gemm(cublasHandle_t h, const Shape3& s, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                 int64_t ldc) {
  const float one = 1.0f, zero = 0.0f;
  CKB(cublasSgemm(h, s.tb ? CUBLAS_OP_T : CUBLAS_OP_N, s.ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)s.N, (int)s.M, (int)s.K,
                  &one, B, (int)ldb, A, (int)lda, &zero, C, (int)ldc));
}

// Milliseconds per call: the median of `reps` samples, each >= ~20 ms.
template <class F>
double time_ms(F f, int reps) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  f();  // warm-up (and the caching allocator's first blocks)
  CK(cudaEventRecord(e0));
  f();
  CK(cudaEventRecord(e1));
  CK(cudaEventSynchronize(e1));
  float one = 0;
  CK(cudaEventElapsedTime(&one, e0, e1));
  int calls = std::max(1, (int)std::ceil(20.0 / std::max(one, 1e-3f)));
  std::vector<double> v;
  for (int r = 0; r < reps; r++) {
    CK(cudaEventRecord(e0));
    for (int i = 0; i < calls; i++) f();
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    v.push_back(ms / calls);
  }
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int reps = argc > 1 ? std::atoi(argv[1]) : 5;
  int dev = 0, sms = 0, clock_khz = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev));
  double peak = (double)sms * 128 * 2 * clock_khz * 1e3 / 1e12;  // 128 FP32 lanes per SM (sm_80+)
  std::printf("%s: %d SMs, %.0f MHz, FP32 FFMA peak ~%.1f TFLOP/s\n", prop.name, sms, clock_khz / 1e3, peak);

  cublasHandle_t h;
  CKB(cublasCreate(&h));
  CKB(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));  // plain FP32, no TF32 tensor cores

  const int64_t R1 = 128 * 3136, R2 = 128 * 784;
  const Shape3 shapes[] = {
      {"square 1024", 1024, 1024, 1024, false, false},
      {"square 2048", 2048, 2048, 2048, false, false},
      {"square 4096", 4096, 4096, 4096, false, false},
      {"square 4096 A^T B^T", 4096, 4096, 4096, true, true},
      {"stage1 linear fwd X W^T", R1, 256, 64, false, true},
      {"stage1 linear dX = dY W", R1, 64, 256, false, false},
      {"stage1 linear dW = dY^T X", 256, 64, R1, true, false},
      {"stage2 linear fwd X W^T", R2, 128, 512, false, true},
      {"stage2 linear dX = dY W", R2, 512, 128, false, false},
      {"stage2 linear dW = dY^T X", 128, 512, R2, true, false},
  };
  std::printf("%-28s %8s %8s %8s  %9s %9s  %6s  %s\n", "shape", "M", "N", "K", "nala", "cuBLAS", "ratio",
              "max err vs cuBLAS / vs naive rows");
  bool ok = true;
  for (const Shape3& s : shapes) {
    int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N, ldc = s.N;
    size_t na = (size_t)s.M * s.K, nb = (size_t)s.K * s.N, nc = (size_t)s.M * s.N;
    std::vector<float> A(na), B(nb);
    fill(A, 1), fill(B, 2);
    float *dA, *dB, *dC, *dR;
    CK(cudaMalloc(&dA, na * 4));
    CK(cudaMalloc(&dB, nb * 4));
    CK(cudaMalloc(&dC, nc * 4));
    CK(cudaMalloc(&dR, nc * 4));
    CK(cudaMemcpy(dA, A.data(), na * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dB, B.data(), nb * 4, cudaMemcpyHostToDevice));
    CK(cudaMemset(dC, 0xff, nc * 4));  // NaN: beta = 0 must overwrite

    // Correctness first.
    cuda::gemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, dA, lda, dB, ldb, 0.0f, dC, ldc);
    cublas_gemm(h, s, dA, lda, dB, ldb, dR, ldc);
    CK(cudaDeviceSynchronize());
    std::vector<float> C(nc), Rf(nc);
    CK(cudaMemcpy(C.data(), dC, nc * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(Rf.data(), dR, nc * 4, cudaMemcpyDeviceToHost));
    double scale = std::sqrt((double)s.K) / 3;  // typical |C| for uniform(-1, 1) inputs
    double e_blas = 0, e_naive = 0;
    for (size_t i = 0; i < nc; i++) {
      double e = std::fabs((double)C[i] - Rf[i]) / scale;
      e_blas = std::isnan(e) ? INFINITY : std::max(e_blas, e);
    }
    const int64_t rows[] = {0, s.M / 3, s.M - 1};
    for (int64_t r : rows) {
      std::vector<float> ref(s.N);
      const float* Ar = s.ta ? A.data() + r : A.data() + r * lda;  // one row of op(A) as a 1 x K product
      cpu::gemm_naive(s.ta, s.tb, 1, s.N, s.K, 1.0f, Ar, lda, B.data(), ldb, 0.0f, ref.data(), s.N);
      for (int64_t j = 0; j < s.N; j++) {
        double e = std::fabs((double)C[r * ldc + j] - ref[j]) / scale;
        e_naive = std::isnan(e) ? INFINITY : std::max(e_naive, e);
      }
    }
    bool good = e_blas < 1e-4 && e_naive < 1e-4;
    ok = ok && good;

    double t_nala = time_ms([&] { cuda::gemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, dA, lda, dB, ldb, 0.0f, dC, ldc); },
                            reps);
    double t_blas = time_ms([&] { cublas_gemm(h, s, dA, lda, dB, ldb, dR, ldc); }, reps);
    double flop = 2.0 * s.M * s.N * s.K;
    double tf_nala = flop / t_nala / 1e9, tf_blas = flop / t_blas / 1e9;
    std::printf("%-28s %8lld %8lld %8lld  %6.2f TF %6.2f TF  %5.2fx  %.1e / %.1e%s\n", s.name, (long long)s.M,
                (long long)s.N, (long long)s.K, tf_nala, tf_blas, tf_nala / tf_blas, e_blas, e_naive,
                good ? "" : "  WRONG");
    CK(cudaFree(dA));
    CK(cudaFree(dB));
    CK(cudaFree(dC));
    CK(cudaFree(dR));
  }
  CKB(cublasDestroy(h));
  std::printf("TF = TFLOP/s (median); ratio = nala / cuBLAS; errors relative to sqrt(K)/3\n");
  if (!ok) {
    std::printf("FAILED: results differ from the reference\n");
    return 1;
  }
  return 0;
}
