// tests/test_cuda_gemm_bf16.cpp - the bf16 tensor-core GEMM (cuda::gemm_bf16)
// against a CPU reference in double on the same bf16-rounded inputs: every
// transpose, odd sizes, padded and unaligned leading dims, every epilogue
// (bias, GELU, residual add, C += A B in float32, bf16 and float32 out),
// K = 0, on both kernels (mma.sync everywhere; wgmma + TMA on an sm_90 GPU
// where the operands' rows are 16-byte aligned). A sentinel in C's padding
// must survive.
#include <cmath>
#include <vector>

#include "tests/cuda_harness.h"
#ifdef NALA_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/gemm_bf16.h"
#include "kernels/cuda/matmul.h"
#endif

using namespace nala;
using namespace nala::test;

namespace {

#ifdef NALA_CUDA
using bf16 = __nv_bfloat16;

template <class T>
struct Dev {
  T* p = nullptr;
  explicit Dev(const std::vector<T>& h) {
    REQUIRE(cudaMalloc(&p, sizeof(T) * (h.size() + 1)) == cudaSuccess);
    REQUIRE(cudaMemcpy(p, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  ~Dev() { cudaFree(p); }
  std::vector<T> get(size_t n) const {
    std::vector<T> h(n);
    REQUIRE(cudaMemcpy(h.data(), p, sizeof(T) * n, cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
};


int gpu_major() {
  int dev = 0, major = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  return major;
}

struct Case {
  bool ta, tb;
  int64_t M, N, K;
  int64_t pad = 0;      // added to every leading dim
  bool align16 = false; // leading dims rounded up to a multiple of 8 first (16-byte rows: wgmma's TMA)
  bool c_bf16 = false;
  bool bias = false, gelu = false;
  int residual = 0;     // 0 none, 1 a separate array, 2 C itself (C += A B, float only)
  int path = 0;         // 0 automatic, 6 mma.sync, 7 wgmma
  int bn = 0;           // wgmma tile width (0: by shape)
  bool f32in = false;   // float32 operands rounded on chip (gemm_bf16_f32), float32 C
  float alpha = 1.0f;   // f32in only
};

void check(const Case& c, Rng& rng) {
  auto ld = [&](int64_t w) { return (c.align16 ? (w + 7) / 8 * 8 : w) + c.pad; };
  const int64_t lda = ld(c.ta ? c.M : c.K), ldb = ld(c.tb ? c.K : c.N), ldc = ld(c.N);
  const int64_t na = (c.ta ? c.K : c.M) * lda, nb = (c.tb ? c.N : c.K) * ldb, nc = c.M * ldc;
  std::vector<bf16> A(na), B(nb);
  std::vector<float> Af(na), Bf(nb), A32(na), B32(nb), bias(c.N), R(nc);
  // f32in: the kernel gets A32, B32 (unrounded); bf16 operands are their rounding, Af, Bf as float.
  for (int64_t i = 0; i < na; i++)
    A32[i] = rng.uniform(-1.0f, 1.0f), A[i] = __float2bfloat16(A32[i]), Af[i] = __bfloat162float(A[i]);
  for (int64_t i = 0; i < nb; i++)
    B32[i] = rng.uniform(-1.0f, 1.0f), B[i] = __float2bfloat16(B32[i]), Bf[i] = __bfloat162float(B[i]);
  for (auto& x : bias) x = rng.uniform(-1.0f, 1.0f);
  for (auto& x : R) x = c.c_bf16 ? round_bf16(rng.uniform(-2.0f, 2.0f)) : rng.uniform(-2.0f, 2.0f);

  // The reference in double: epi(sum) = gelu?(sum + bias) + residual.
  std::vector<double> ref(c.M * c.N);
  for (int64_t i = 0; i < c.M; i++)
    for (int64_t j = 0; j < c.N; j++) {
      double s = 0;
      for (int64_t k = 0; k < c.K; k++)
        s += (double)Af[c.ta ? k * lda + i : i * lda + k] * Bf[c.tb ? j * ldb + k : k * ldb + j];
      s *= c.alpha;
      if (c.bias) s += bias[j];
      if (c.gelu) s = 0.5 * s * (1.0 + std::erf(s / std::sqrt(2.0)));
      if (c.residual) s += R[i * ldc + j];
      ref[i * c.N + j] = s;
    }

  Dev<bf16> dA(A), dB(B);
  Dev<float> dbias(bias);
  cuda::GemmEpilogue epi;
  epi.bias = c.bias ? dbias.p : nullptr;
  epi.act = c.gelu ? cuda::GemmAct::gelu : cuda::GemmAct::none;
  // C starts as R (the residual when it is C itself), its padding as the sentinel 640 (exact in bf16).
  std::vector<float> C0 = R;
  for (int64_t i = 0; i < c.M; i++)
    for (int64_t j = c.N; j < ldc; j++) C0[i * ldc + j] = 640.0f;
  std::vector<bf16> C0h(nc), Rh(nc);
  for (int64_t i = 0; i < nc; i++) C0h[i] = __float2bfloat16(C0[i]), Rh[i] = __float2bfloat16(R[i]);
  Dev<float> dC(C0), dR(R);
  Dev<bf16> dCh(C0h), dRh(Rh);
  if (c.residual == 1) epi.residual = c.c_bf16 ? (const void*)dRh.p : (const void*)dR.p, epi.ldr = ldc;
  if (c.residual == 2) epi.residual = dC.p, epi.ldr = ldc;
  if (c.f32in) {
    REQUIRE(!c.c_bf16);
    Dev<float> dA32(A32), dB32(B32);
    cuda::gemm_bf16_f32(c.ta, c.tb, c.M, c.N, c.K, c.alpha, dA32.p, lda, dB32.p, ldb, dC.p, ldc, epi);
  } else {
    cuda::gemm_bf16_force_path(c.path, c.bn);
    cuda::gemm_bf16(c.ta, c.tb, c.M, c.N, c.K, dA.p, lda, dB.p, ldb, c.c_bf16 ? (void*)dCh.p : (void*)dC.p, ldc,
                    c.c_bf16, epi);
    cuda::gemm_bf16_force_path(0);
  }
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);

  INFO("ta " << c.ta << " tb " << c.tb << " M " << c.M << " N " << c.N << " K " << c.K << " pad " << c.pad
             << " c_bf16 " << c.c_bf16 << " bias " << c.bias << " gelu " << c.gelu << " residual " << c.residual
             << " path " << c.path << " bn " << c.bn << " f32in " << c.f32in << " alpha " << c.alpha);
  std::vector<float> got(nc);
  if (c.c_bf16) {
    std::vector<bf16> h = dCh.get(nc);
    for (int64_t i = 0; i < nc; i++) got[i] = __bfloat162float(h[i]);
  } else {
    got = dC.get(nc);
  }
  // Exact bf16 products summed in float: the float tolerance; a bf16 C adds
  // its own rounding (2^-9 of |C|). A lost or doubled product is ~0.3 off.
  const double atol = 1e-4 * std::sqrt((double)c.K + 1), rtol = c.c_bf16 ? 6e-3 : 1e-5;
  std::vector<float> g2, r2;
  for (int64_t i = 0; i < c.M; i++) {
    for (int64_t j = 0; j < c.N; j++) g2.push_back(got[i * ldc + j]), r2.push_back((float)ref[i * c.N + j]);
    for (int64_t j = c.N; j < ldc; j++) REQUIRE(got[i * ldc + j] == 640.0f);
  }
  REQUIRE_CLOSE(g2, r2, atol, rtol);
}
#endif

}  // namespace

TEST_CASE("cuda: gemm_bf16 matches the CPU for every transpose and odd sizes, both kernels", "[cuda][matmul][bf16]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(201);
  const int64_t sizes[][3] = {{1, 1, 1},      {7, 9, 5},      {37, 53, 29},    {129, 255, 67}, {200, 136, 64},
                              {128, 128, 128}, {300, 260, 500}, {1000, 3, 17}, {3, 1000, 70},  {64, 64, 2000}};
  const bool wg = gpu_major() == 9;
  for (auto& s : sizes)
    for (int t = 0; t < 4; t++) {
      Case c{(t & 1) != 0, (t & 2) != 0, s[0], s[1], s[2]};
      for (int64_t pad : {0, 3, 8}) {
        c.pad = pad;
        c.path = 6;
        check(c, rng);
        c.path = 0;
        check(c, rng);
        if (wg && pad % 8 == 0) {  // wgmma: rows of 16 bytes, the sizes as odd as before
          c.path = 7;
          c.align16 = true;
          check(c, rng);
          c.align16 = false;
        }
      }
    }
#endif
}

TEST_CASE("cuda: gemm_bf16 epilogues: bias, GELU, residual, C += A B, bf16 out, K = 0", "[cuda][matmul][bf16]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(202);
  const bool wg = gpu_major() == 9;
  // (ta, tb) as a linear layer uses them: forward X W^T (NT), dX = dY W (NN), dW = dY^T X (TN).
  const bool tr[][2] = {{false, true}, {false, false}, {true, false}};
  const int64_t sizes[][3] = {{77, 45, 40}, {256, 200, 64}, {131, 96, 0}};
  for (auto& s : sizes)
    for (auto& t : tr)
      for (int e = 0; e < 8; e++)
        for (int path : {6, 7}) {
          if (path == 7 && (!wg || s[2] == 0)) continue;
          Case c{t[0], t[1], s[0], s[1], s[2]};
          c.c_bf16 = e & 1;
          c.bias = e & 2;
          c.gelu = e & 4;
          c.residual = (e % 3 == 0) ? 1 : (e == 4 || e == 2) ? 2 : 0;
          if (c.c_bf16 && c.residual == 2) c.residual = 1;
          c.align16 = path == 7;  // wgmma needs 16-byte rows
          c.path = path;
          check(c, rng);
        }
#endif
}

TEST_CASE("cuda: gemm_bf16 linear-layer shapes, wgmma tile widths and long K", "[cuda][matmul][bf16]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(203);
  // N = 64, 128 and wide (the three tile widths: 256 once the tiles fill the GPU), M past many
  // tiles, K past many pipeline stages, tiles of the persistent loop several per block.
  const int64_t sizes[][3] = {{1030, 64, 256}, {777, 128, 520}, {515, 768, 1032}, {64, 200, 4104}, {2100, 2052, 72}};
  const bool tr[][2] = {{false, true}, {false, false}, {true, false}};
  for (auto& s : sizes)
    for (auto& t : tr) {
      Case c{t[0], t[1], s[0], s[1], s[2]};
      c.bias = true;
      c.c_bf16 = true;
      check(c, rng);  // automatic path: wgmma on an sm_90 GPU where the rows allow
      c.path = 6;
      check(c, rng);
      if (gpu_major() == 9 && s[0] < 2000)  // every wgmma tile width, 16-byte rows
        for (int bn : {64, 128, 256}) {
          c.path = 7, c.bn = bn, c.align16 = true, c.gelu = bn == 128;
          check(c, rng);
          c.bn = 0, c.align16 = false, c.gelu = false;
        }
    }
  // A bf16 C by TMA stores (16-byte rows, no residual): several tiles a block
  // (the staging reused), a last 64-column box cut by N and a padded ldc
  // whose sentinel must survive, row tiles half and wholly past M.
  if (gpu_major() == 9)
    for (auto& t : tr)
      for (int bn : {0, 64, 128, 256}) {
        Case c{t[0], t[1], 8200, 328, 72};
        c.c_bf16 = true, c.align16 = true, c.pad = 8;
        c.bias = bn != 64, c.gelu = bn == 128 || bn == 0;
        c.path = 7, c.bn = bn;
        check(c, rng);
      }
  // More tiles than SMs (133 row tiles over 132 blocks: the second consumer
  // warpgroup's whole tiles where 64-wide short-K tiles alternate, the
  // 256-wide staging reused), each epilogue: TMA stores with bias and GELU,
  // float C with a residual (stores from registers), a box wider than N,
  // and M below one 64-row half.
  if (gpu_major() == 9) {
    struct More {
      int64_t M, N, K;
      int bn;
      bool c_bf16, bias, gelu;
      int residual;
    };
    const More more[] = {{17000, 64, 64, 0, true, true, true, 0},   {17000, 64, 64, 0, false, true, false, 1},
                         {17000, 32, 40, 0, true, false, false, 0}, {17000, 328, 72, 256, true, true, false, 0},
                         {40, 136, 64, 0, true, true, true, 0}};
    for (auto& m : more)
      for (auto& t : tr) {
        Case c{t[0], t[1], m.M, m.N, m.K};
        c.c_bf16 = m.c_bf16, c.bias = m.bias, c.gelu = m.gelu, c.residual = m.residual;
        c.align16 = true, c.pad = 8, c.path = 7, c.bn = m.bn;
        check(c, rng);
      }
  }
#endif
}

TEST_CASE("cuda: gemm_bf16_f32 rounds float32 operands to bf16 on chip: transposes, odd sizes, epilogues, split-K",
          "[cuda][matmul][bf16]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(204);
  // Odd sizes and leading dims (the guarded loads), K tails inside a 32-slice, long K (split-K,
  // several pipeline stages), and the thin shapes of a small model's layers.
  const int64_t sizes[][3] = {{1, 1, 1},     {7, 9, 5},       {37, 53, 29},   {129, 255, 67}, {300, 260, 500},
                              {1000, 3, 17}, {3, 1000, 70},   {64, 64, 5000}, {70, 33, 3001}, {4097, 32, 64},
                              {64, 96, 4100}};
  for (auto& s : sizes)
    for (int t = 0; t < 4; t++)
      for (int64_t pad : {0, 3}) {
        Case c{(t & 1) != 0, (t & 2) != 0, s[0], s[1], s[2]};
        c.f32in = true, c.pad = pad;
        c.alpha = t == 3 ? 0.5f : 1.0f;
        c.bias = (t & 1) != 0;
        c.residual = t == 2 ? 2 : t == 1 ? 1 : 0;  // 2: C += A B, the weight-gradient accumulation
        c.gelu = pad == 3 && t == 0;
        check(c, rng);
      }
#endif
}

TEST_CASE("cuda: bf16 mode sends single products to tensor cores, batched ones stay float32",
          "[cuda][matmul][bf16]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(205);
  const int64_t R = 300, O = 72, I = 136;
  std::vector<float> X(R * I), W(O * I), b(O), Y0(R * O);
  for (auto& v : X) v = rng.uniform(-1.0f, 1.0f);
  for (auto& v : W) v = rng.uniform(-1.0f, 1.0f);
  for (auto& v : b) v = rng.uniform(-1.0f, 1.0f);
  for (auto& v : Y0) v = rng.uniform(-1.0f, 1.0f);
  // References in double, on rounded (bf16) and on exact operands.
  auto ref = [&](bool round, double beta) {
    std::vector<float> out(R * O);
    for (int64_t r = 0; r < R; r++)
      for (int64_t o = 0; o < O; o++) {
        double s = 0;
        for (int64_t i = 0; i < I; i++)
          s += round ? (double)round_bf16(X[r * I + i]) * round_bf16(W[o * I + i])
                     : (double)X[r * I + i] * W[o * I + i];
        out[r * O + o] = (float)(s + b[o] + beta * Y0[r * O + o]);
      }
    return out;
  };
  Dev<float> dX(X), dW(W), db(b), dY(Y0), dY2(Y0), dY3(Y0);
  {
    Bf16Products bf16;
    REQUIRE(cuda::gemm_bf16_mode());
    cuda::linear_forward(dY.p, dX.p, dW.p, db.p, R, O, I);                      // Y = X W^T + b: Y0 overwritten
    cuda::gemm(false, true, R, O, I, 1.0f, dX.p, I, dW.p, I, 1.0f, dY2.p, O);  // Y0 + X W^T
    // batched (batch 2, the halves of X): float32
    cuda::gemm_batched(false, true, R / 2, O, I, 1.0f, dX.p, I, (R / 2) * I, dW.p, I, 0, 0.0f, dY3.p, O, (R / 2) * O,
                       2);
  }
  REQUIRE(!cuda::gemm_bf16_mode());
  const std::vector<float> lin = dY.get(R * O), acc = dY2.get(R * O), bat = dY3.get(R * O);
  const double atol = 1e-4 * std::sqrt((double)I);
  REQUIRE_CLOSE(lin, ref(true, 0.0), atol, 1e-5);
  std::vector<float> acc_ref = ref(true, 1.0);
  for (int64_t r = 0; r < R; r++)
    for (int64_t o = 0; o < O; o++) acc_ref[r * O + o] -= b[o];  // gemm has no bias
  REQUIRE_CLOSE(acc, acc_ref, atol, 1e-5);
  std::vector<float> bat_ref = ref(false, 0.0);
  for (int64_t r = 0; r < R; r++)
    for (int64_t o = 0; o < O; o++) bat_ref[r * O + o] -= b[o];
  REQUIRE_CLOSE(bat, bat_ref, atol, 1e-5);
  // and the rounding is real: the bf16 result differs from the float32 one by far more than float32 rounding
  std::vector<float> exact = ref(false, 0.0);
  double worst = 0;
  for (int64_t i = 0; i < R * O; i++) worst = std::max(worst, (double)std::fabs(lin[i] - exact[i]));
  REQUIRE(worst > 1e-3);
#endif
}

TEST_CASE("cuda: gemm_bf16_f32 past 65,535 row tiles (M on the grid's x)", "[cuda][matmul][bf16]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  // 4.3M rows: more 64-row tiles than a grid's y may hold (a stem convolution of a big batch).
  const int64_t M = 4300000, N = 8, K = 8;
  Rng rng(206);
  std::vector<float> A(M * K), B(K * N);
  for (auto& v : A) v = rng.uniform(-1.0f, 1.0f);
  for (auto& v : B) v = rng.uniform(-1.0f, 1.0f);
  Dev<float> dA(A), dB(B), dC(std::vector<float>(M * N, 0.0f));
  cuda::gemm_bf16_f32(false, false, M, N, K, 1.0f, dA.p, K, dB.p, N, dC.p, N);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const std::vector<float> C = dC.get(M * N);
  int64_t bad = 0;
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++) s += (double)round_bf16(A[m * K + k]) * round_bf16(B[k * N + n]);
      if (std::fabs(C[m * N + n] - s) > 1e-5 + 1e-5 * std::fabs(s)) bad++;
    }
  REQUIRE(bad == 0);
#endif
}
