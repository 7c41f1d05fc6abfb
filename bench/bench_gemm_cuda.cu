// bench/bench_gemm_cuda.cu - TFLOP/s of nala's GEMMs against cuBLAS (the
// yardstick; cuBLAS is linked here only): cuda::gemm (FP32 FFMA) against
// cublasSgemm (FP32, no TF32), and cuda::gemm_bf16 (tensor cores, bf16 in,
// float32 accumulate, bf16 out) against cublasLtMatmul in the same types with
// the algorithm its heuristic ranks first (printed: id, tile, stages, split-K).
//
//   make CUDA=1 build/release/bench/bench_gemm_cuda     (rule in bench/cuda.mk)
//   ./build/release/bench/bench_gemm_cuda [reps] [fp32|bf16|all] [PATH] [FILTER] [BN] [TILE]
//     PATH: cuda::gemm_bf16's kernel: 0 automatic, 6 mma.sync, 7 wgmma;
//     FILTER: only the shapes whose name holds it; BN: the wgmma tile width;
//     TILE: the FP32 kernel's tile (128x128, 64x64, 128x32, 32x128; default:
//     cuda::gemm's choice, printed beside each shape)
//
// bf16 shapes: 4096^3 (NN, NT, TN) and every linear layer of NaLaFormer xt
// and t at batch 128, 224 px (tokens per stage 56^2, 28^2, 14^2, 7^2 times
// 128; qkvg C -> 4C, proj C -> C, fc1 C -> Hd, fc2 Hd -> C), each as its
// three products: forward X W^T (NT), dX = dY W (NN), dW = dY^T X (TN); the
// FP32 table adds pico's at batch 256 (28 x 28 inputs), summed likewise. Per
// model the sum of the times gives the ratio a training step would see.
// Inputs are made on the GPU; ours is checked against cuBLAS on the whole
// result (max |diff| over the largest |C|).
//
// For each shape: check ours against cuBLAS on the whole result and against
// cpu::gemm_naive (double accumulation) on a few rows, then time both (CUDA
// events, a warm-up call first, `reps` samples of >= ~20 ms each) and print
// the median TFLOP/s of each, the ratio, and the FP32 FFMA peak of the GPU
// (SMs x 128 lanes x 2 flops x clock). Shapes: squares, and the products of a
// NaLaFormer linear layer (forward, dX, dW) at batch 128.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cuda/gemm_bf16.h"
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


// ---- bf16 ---------------------------------------------------------------------

using bf16 = __nv_bfloat16;

__global__ void fill_bf16(bf16* x, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed * 2246822519u;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    x[i] = __float2bfloat16((h & 0xffffff) / 8388608.0f - 1.0f);  // uniform in [-1, 1)
  }
}

// max |a - b| and max |b| over n bf16 (as float bits: both non-negative).
__global__ void max_diff(const bf16* a, const bf16* b, int64_t n, unsigned* out) {
  float d = 0, m = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float x = __bfloat162float(a[i]), y = __bfloat162float(b[i]);
    d = fmaxf(d, x == x ? fabsf(x - y) : INFINITY);
    m = fmaxf(m, fabsf(y));
  }
  atomicMax(out, __float_as_uint(d));
  atomicMax(out + 1, __float_as_uint(m));
}

struct Lt {
  cublasLtHandle_t h;
  void* ws;
  size_t ws_bytes = 64 << 20;
};

// Row-major C = op(A) op(B) as cuBLASLt's column-major C^T = op(B)^T op(A)^T:
// the heuristic's first algorithm, described in `algo`.
struct LtPlan {
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t a, b, c;
  cublasLtMatmulAlgo_t algo;
  std::string desc;
};
LtPlan lt_plan(Lt& lt, const Shape3& s, int64_t lda, int64_t ldb, int64_t ldc) {
  LtPlan p;
  CKB(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t ta = s.tb ? CUBLAS_OP_T : CUBLAS_OP_N, tb = s.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  CKB(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CKB(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  CKB(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, s.tb ? s.K : s.N, s.tb ? s.N : s.K, ldb));
  CKB(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, s.ta ? s.M : s.K, s.ta ? s.K : s.M, lda));
  CKB(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_16BF, s.N, s.M, ldc));
  cublasLtMatmulPreference_t pref;
  CKB(cublasLtMatmulPreferenceCreate(&pref));
  CKB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &lt.ws_bytes,
                                           sizeof lt.ws_bytes));
  cublasLtMatmulHeuristicResult_t r[8];
  int n = 0;
  CKB(cublasLtMatmulAlgoGetHeuristic(lt.h, p.op, p.a, p.b, p.c, p.c, pref, 8, r, &n));
  if (n == 0) {
    std::fprintf(stderr, "cublasLt: no algorithm for %s\n", s.name);
    std::exit(1);
  }
  p.algo = r[0].algo;
  int id = 0, tile = 0, stages = 0, splitk = 0;
  size_t w;
  cublasLtMatmulAlgoConfigGetAttribute(&p.algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&p.algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&p.algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&p.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w);
  char buf[96];
  std::snprintf(buf, sizeof buf, "algo %d tile %d stages %d splitK %d", id, tile, stages, splitk);
  p.desc = buf;
  cublasLtMatmulPreferenceDestroy(pref);
  return p;
}
void lt_run(Lt& lt, const LtPlan& p, const bf16* A, const bf16* B, bf16* C) {
  const float one = 1.0f, zero = 0.0f;
  CKB(cublasLtMatmul(lt.h, p.op, &one, B, p.a, A, p.b, &zero, C, p.c, C, p.c, &p.algo, lt.ws, lt.ws_bytes, 0));
}
void lt_free(LtPlan& p) {
  cublasLtMatrixLayoutDestroy(p.a);
  cublasLtMatrixLayoutDestroy(p.b);
  cublasLtMatrixLayoutDestroy(p.c);
  cublasLtMatmulDescDestroy(p.op);
}

struct Sum {
  double ours = 0, blas = 0, worst = 1e9;
};

// One shape: check, time both, print a line; adds the times to `sum`.
bool bench_bf16(Lt& lt, const Shape3& s, int reps, Sum& sum) {
  const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N, ldc = s.N;
  const int64_t na = s.M * s.K, nb = s.K * s.N, nc = s.M * s.N;
  bf16 *A, *B, *C, *R;
  unsigned* d;
  CK(cudaMalloc(&A, na * 2));
  CK(cudaMalloc(&B, nb * 2));
  CK(cudaMalloc(&C, nc * 2));
  CK(cudaMalloc(&R, nc * 2));
  CK(cudaMalloc(&d, 8));
  fill_bf16<<<1024, 256>>>(A, na, 1);
  fill_bf16<<<1024, 256>>>(B, nb, 2);
  CK(cudaMemset(C, 0xff, nc * 2));
  CK(cudaMemset(d, 0, 8));
  LtPlan plan = lt_plan(lt, s, lda, ldb, ldc);
  cuda::gemm_bf16(s.ta, s.tb, s.M, s.N, s.K, A, lda, B, ldb, C, ldc, true);
  lt_run(lt, plan, A, B, R);
  max_diff<<<1024, 256>>>(C, R, nc, d);
  unsigned h[2];
  CK(cudaMemcpy(h, d, 8, cudaMemcpyDeviceToHost));
  float diff, mx;
  std::memcpy(&diff, &h[0], 4), std::memcpy(&mx, &h[1], 4);
  const double err = diff / std::max(mx, 1e-30f);
  const bool good = err < 2e-2;  // both round to bf16 (2^-9 relative): a wrong element is far off
  const double t_ours = time_ms([&] { cuda::gemm_bf16(s.ta, s.tb, s.M, s.N, s.K, A, lda, B, ldb, C, ldc, true); }, reps);
  const double t_blas = time_ms([&] { lt_run(lt, plan, A, B, R); }, reps);
  const double flop = 2.0 * s.M * s.N * s.K;
  std::printf("%-30s %7lld %6lld %7lld  %6.1f TF %6.1f TF  %5.2fx  %.1e  %s%s\n", s.name, (long long)s.M,
              (long long)s.N, (long long)s.K, flop / t_ours / 1e9, flop / t_blas / 1e9, t_blas / t_ours, err,
              plan.desc.c_str(), good ? "" : "  WRONG");
  sum.ours += t_ours, sum.blas += t_blas, sum.worst = std::min(sum.worst, t_blas / t_ours);
  lt_free(plan);
  CK(cudaFree(A));
  CK(cudaFree(B));
  CK(cudaFree(C));
  CK(cudaFree(R));
  CK(cudaFree(d));
  return good;
}

// The linear layers of one NaLaFormer config: `stages` stages of C[st]
// channels over batch x tokens[st] rows.
std::vector<Shape3> model_shapes(const char* model, int64_t batch, const int64_t* tokens, const int* C, int stages,
                                 double mlp, std::vector<std::string>& names) {
  std::vector<Shape3> v;
  for (int st = 0; st < stages; st++) {
    const int64_t R = batch * tokens[st], c = C[st], hd = (int64_t)(mlp * c);
    const struct {
      const char* n;
      int64_t in, out;
    } layers[] = {{"qkvg", c, 4 * c}, {"proj", c, c}, {"fc1", c, hd}, {"fc2", hd, c}};
    for (auto& l : layers) {
      const char* pass[] = {"fwd", "dX", "dW"};
      for (int p = 0; p < 3; p++) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s s%d %s %s", model, st, l.n, pass[p]);
        names.push_back(buf);
        if (p == 0) v.push_back({nullptr, R, l.out, l.in, false, true});       // X W^T
        else if (p == 1) v.push_back({nullptr, R, l.in, l.out, false, false});  // dY W
        else v.push_back({nullptr, l.out, l.in, R, true, false});               // dY^T X
      }
    }
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = argc > 1 ? std::atoi(argv[1]) : 5;
  const std::string mode = argc > 2 ? argv[2] : "all";
  const int path = argc > 3 ? std::atoi(argv[3]) : 0;
  const std::string filter = argc > 4 ? argv[4] : "";
  const int bn = argc > 5 ? std::atoi(argv[5]) : 0;
  const char* tile = argc > 6 && std::strcmp(argv[6], "auto") != 0 ? argv[6] : nullptr;
  if (reps < 1 || (mode != "all" && mode != "fp32" && mode != "bf16") || (path != 0 && path != 6 && path != 7)) {
    std::fprintf(stderr, "usage: bench_gemm_cuda [reps] [fp32|bf16|all] [0|6|7] [FILTER] [0|64|128|256] [TILE]\n");
    return 2;
  }
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

  auto chosen = [&](const Shape3& s) { return filter.empty() || std::strstr(s.name, filter.c_str()); };
  const int64_t R1 = 128 * 3136, R2 = 128 * 784;
  std::vector<Shape3> shapes = {
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
  // pico's linear layers at batch 256 (28 x 28 inputs: 14^2, 7^2, 4^2 tokens a stage).
  const int64_t pico_tokens[3] = {196, 49, 16};
  const int pico_c[3] = {32, 64, 128};
  std::vector<std::string> pico_names;
  const size_t first_pico = shapes.size();
  for (const Shape3& s : model_shapes("pico", 256, pico_tokens, pico_c, 3, 3.0, pico_names)) shapes.push_back(s);
  for (size_t i = first_pico; i < shapes.size(); i++) shapes[i].name = pico_names[i - first_pico].c_str();
  bool ok = true;
  Sum pico;
  cuda::gemm_fp32_force_tile(tile);
  if (mode != "bf16")
    std::printf("%-28s %8s %8s %8s %8s  %9s %9s  %6s  %8s %8s  %s\n", "shape", "M", "N", "K", "tile", "nala", "cuBLAS",
                "ratio", "nala us", "cuBLAS", "max err vs cuBLAS / vs naive rows");
  for (size_t si = 0; si < shapes.size(); si++) {
    const Shape3& s = shapes[si];
    if (mode == "bf16") break;
    if (!chosen(s)) continue;
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
    std::printf("%-28s %8lld %8lld %8lld %8s  %6.2f TF %6.2f TF  %5.2fx  %8.1f %8.1f  %.1e / %.1e%s\n", s.name,
                (long long)s.M, (long long)s.N, (long long)s.K, cuda::gemm_fp32_tile(s.M, s.N, s.K, 1), tf_nala,
                tf_blas, tf_nala / tf_blas, t_nala * 1e3, t_blas * 1e3, e_blas, e_naive, good ? "" : "  WRONG");
    if (si >= first_pico)
      pico.ours += t_nala, pico.blas += t_blas, pico.worst = std::min(pico.worst, t_blas / t_nala);
    CK(cudaFree(dA));
    CK(cudaFree(dB));
    CK(cudaFree(dC));
    CK(cudaFree(dR));
  }
  CKB(cublasDestroy(h));
  if (mode != "bf16") {
    std::printf("TF = TFLOP/s (median); ratio = nala / cuBLAS; errors relative to sqrt(K)/3\n");
    if (pico.ours > 0)
      std::printf("pico linear layers, batch 256 (18 products a block, one block a stage): nala %.3f ms, cuBLAS %.3f ms: "
                  "%.2fx, worst %.2fx\n",
                  pico.ours, pico.blas, pico.blas / pico.ours, pico.worst);
  }

  if (mode != "fp32") {
    // bf16 tensor peak: 4096 dense bf16 FLOP per clock per SM on sm_90 (sm_80: 2048).
    const double tpeak = (double)sms * (prop.major >= 9 ? 4096 : 2048) * clock_khz * 1e3 / 1e12;
    std::printf("\nbf16 in, float32 accumulate, bf16 out: cuda::gemm_bf16 against cublasLtMatmul (tensor peak ~%.0f "
                "TFLOP/s)\n",
                tpeak);
    std::printf("%-30s %7s %6s %7s  %9s %9s  %6s  %7s  %s\n", "shape", "M", "N", "K", "nala", "cuBLASLt", "ratio",
                "err", "cuBLASLt's algorithm");
    Lt lt;
    CKB(cublasLtCreate(&lt.h));
    CK(cudaMalloc(&lt.ws, lt.ws_bytes));
    cuda::gemm_bf16_force_path(path, bn);
    Sum sq;
    const Shape3 squares[] = {{"square 4096 NN", 4096, 4096, 4096, false, false},
                              {"square 4096 NT", 4096, 4096, 4096, false, true},
                              {"square 4096 TN", 4096, 4096, 4096, true, false}};
    for (const Shape3& s : squares)
      if (chosen(s)) ok = bench_bf16(lt, s, reps, sq) && ok;
    const int xt[4] = {32, 64, 128, 384}, t[4] = {64, 128, 256, 512};
    const int64_t tokens224[4] = {56 * 56, 28 * 28, 14 * 14, 7 * 7};
    const struct {
      const char* name;
      const int (&C)[4];
      double mlp;
    } models[] = {{"xt", xt, 3.5}, {"t", t, 4.0}};
    std::vector<std::pair<std::string, Sum>> sums;
    for (auto& m : models) {
      std::vector<std::string> names;
      std::vector<Shape3> v = model_shapes(m.name, 128, tokens224, m.C, 4, m.mlp, names);
      Sum sum;
      for (size_t i = 0; i < v.size(); i++) {
        v[i].name = names[i].c_str();
        if (chosen(v[i])) ok = bench_bf16(lt, v[i], reps, sum) && ok;
      }
      sums.push_back({m.name, sum});
    }
    std::printf("ratio = cuBLASLt time / nala time (>= 1: nala faster); err: max |diff| / max |C|\n");
    std::printf("4096^3: nala / cuBLASLt %.2fx (sum of the 3 times), worst %.2fx\n", sq.blas / sq.ours, sq.worst);
    for (auto& s : sums)
      std::printf("%s linear layers, batch 128, 224 px (48 products): nala %.2f ms, cuBLASLt %.2f ms: %.2fx, worst "
                  "%.2fx\n",
                  s.first.c_str(), s.second.ours, s.second.blas, s.second.blas / s.second.ours, s.second.worst);
    CK(cudaFree(lt.ws));
    cublasLtDestroy(lt.h);
  }
  if (!ok) {
    std::printf("FAILED: results differ from the reference\n");
    return 1;
  }
  return 0;
}
