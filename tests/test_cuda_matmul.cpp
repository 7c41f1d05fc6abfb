// tests/test_cuda_matmul.cpp - the GPU matrix products against the CPU:
// cuda::gemm / gemm_batched against cpu::gemm (every transpose, alpha and
// beta, beta = 0 over NaN, odd sizes, padded and misaligned operands, K = 0,
// each of the six tiles and the choice among them, split-K), the linear bias kernels, and the
// matmul and linear ops forward and backward (plus run-to-run determinism).
//
// Letters: M, N, K as in kernels/cpu/matmul.h; R rows of a linear layer's
// input, I in features, O out features; B a batch size.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "tests/cuda_harness.h"
#ifdef NALA_CUDA
#include "kernels/cuda/matmul.h"
#endif

using namespace nala;
using namespace nala::test;

namespace {

[[maybe_unused]] std::vector<float> rand_vec(int64_t n, Rng& rng) {
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform(-1.0f, 1.0f);
  return v;
}

#ifdef NALA_CUDA
// cuda::gemm_batched vs cpu::gemm_batched on one geometry. Leading dims are
// padded by `pad`; `off` shifts every base pointer by that many floats (off =
// 1 breaks 16-byte alignment: the scalar load path); C's padding holds a
// sentinel that must survive; nan_c fills C with NaN (for beta = 0).
void check_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta, int64_t pad, Rng& rng,
                bool nan_c = false, int64_t off = 0, int64_t batch = 1, bool share_b = false) {
  int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
  int64_t sa = (ta ? K : M) * lda, sb = share_b ? 0 : (tb ? N : K) * ldb, sc = M * ldc;
  std::vector<float> A = rand_vec(off + batch * sa, rng), B = rand_vec(off + (share_b ? 1 : batch) * (tb ? N : K) * ldb, rng);
  std::vector<float> C = rand_vec(off + batch * sc, rng);
  if (nan_c)
    for (auto& x : C) x = std::numeric_limits<float>::quiet_NaN();
  for (int64_t b = 0; b < batch; b++)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = N; j < ldc; j++) C[off + b * sc + i * ldc + j] = 777.0f;  // sentinel in C's padding
  Tensor dA = cuda_vec(A), dB = cuda_vec(B), dC = cuda_vec(C);
  cpu::gemm_batched(ta, tb, M, N, K, alpha, A.data() + off, lda, sa, B.data() + off, ldb, sb, beta, C.data() + off,
                    ldc, sc, batch);
  if (batch == 1 && !share_b)
    cuda::gemm(ta, tb, M, N, K, alpha, dA.f32() + off, lda, dB.f32() + off, ldb, beta, dC.f32() + off, ldc);
  else
    cuda::gemm_batched(ta, tb, M, N, K, alpha, dA.f32() + off, lda, sa, dB.f32() + off, ldb, sb, beta,
                       dC.f32() + off, ldc, sc, batch);
  INFO("ta " << ta << " tb " << tb << " M " << M << " N " << N << " K " << K << " alpha " << alpha << " beta "
             << beta << " pad " << pad << " off " << off << " batch " << batch << " share_b " << share_b
             << " nan_c " << nan_c);
  std::vector<float> got = host(dC).to_vector();
  // Compare the whole buffer: C's padding (and the shifted-off head) must match too.
  if (nan_c) {  // NaN never passes REQUIRE_CLOSE: compare only the products, the padding by value
    std::vector<float> g2, r2;
    for (int64_t b = 0; b < batch; b++)
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
          g2.push_back(got[off + b * sc + i * ldc + j]);
          r2.push_back(C[off + b * sc + i * ldc + j]);
        }
    REQUIRE_CLOSE(g2, r2, 2e-5 * std::sqrt((double)K + 1), 1e-5);
    for (int64_t b = 0; b < batch; b++)
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = N; j < ldc; j++) REQUIRE(got[off + b * sc + i * ldc + j] == 777.0f);
  } else {
    REQUIRE_CLOSE(got, C, 2e-5 * std::sqrt((double)K + 1), 1e-5);
  }
}
#endif

}  // namespace

TEST_CASE("cuda: gemm matches cpu::gemm for every transpose, odd sizes and padded leading dims", "[cuda][matmul]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(101);
  const int64_t sizes[][3] = {{1, 1, 1},     {7, 7, 7},     {33, 33, 33},  {129, 129, 129}, {257, 257, 257},
                              {1000, 3, 17}, {3, 1000, 17}, {1, 257, 33},  {257, 1, 7},     {5, 33, 1},
                              {13, 300, 65}, {31, 17, 129}, {64, 64, 16},  {128, 128, 8},   {130, 66, 9}};
  for (auto& s : sizes)
    for (int t = 0; t < 4; t++) {
      check_gemm(t & 1, t & 2, s[0], s[1], s[2], 1.0f, 0.0f, 0, rng);
      check_gemm(t & 1, t & 2, s[0], s[1], s[2], 1.0f, 0.0f, 3, rng);            // lda > width, no float4
      check_gemm(t & 1, t & 2, s[0], s[1], s[2], 1.0f, 0.0f, 4, rng, false, 1);  // misaligned base pointers
    }
#endif
}

TEST_CASE("cuda: gemm alpha and beta, beta = 0 over NaN, K = 0", "[cuda][matmul]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(102);
  const float ab[][2] = {{1.0f, 1.0f}, {0.5f, -2.0f}, {-1.5f, 0.0f}, {0.0f, 0.5f}, {0.0f, 0.0f}, {2.0f, 1.0f}};
  for (auto& p : ab)
    for (int t = 0; t < 4; t++) {
      check_gemm(t & 1, t & 2, 37, 45, 70, p[0], p[1], 2, rng);
      check_gemm(t & 1, t & 2, 3, 5, 4, p[0], p[1], 0, rng);
      check_gemm(t & 1, t & 2, 40, 36, 3000, p[0], p[1], 4, rng);  // split-K applies alpha, beta once
    }
  for (int t = 0; t < 4; t++) {
    check_gemm(t & 1, t & 2, 50, 70, 40, 1.0f, 0.0f, 3, rng, true);
    check_gemm(t & 1, t & 2, 64, 128, 32, 1.0f, 0.0f, 0, rng, true);    // float4 epilogue
    check_gemm(t & 1, t & 2, 40, 36, 3000, 1.0f, 0.0f, 0, rng, true);   // split-K
    check_gemm(t & 1, t & 2, 6, 7, 0, 1.0f, 0.0f, 1, rng, true);        // K = 0: C = 0
    check_gemm(t & 1, t & 2, 6, 7, 0, 1.0f, 0.5f, 1, rng);              // K = 0: C = beta C
    check_gemm(t & 1, t & 2, 6, 7, 5, 0.0f, 0.0f, 1, rng, true);        // alpha = 0: C = 0
  }
  // M or N = 0: nothing to do, nothing launched.
  check_gemm(false, false, 0, 5, 3, 1.0f, 0.0f, 0, rng, false, 1);
  check_gemm(false, false, 5, 0, 3, 1.0f, 0.0f, 1, rng, false, 1);
#endif
}

TEST_CASE("cuda: gemm large tiles and split-K", "[cuda][matmul]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(103);
  for (int t = 0; t < 4; t++) {
    // Enough 128 x 128 tiles to fill an H200 (132 SMs): the big-tile kernel, with ragged edges.
    check_gemm(t & 1, t & 2, 2050, 1100, 37, 1.0f, 0.0f, 0, rng);
    check_gemm(t & 1, t & 2, 2050, 1100, 37, 0.5f, 1.0f, 1, rng);
    // A linear layer's weight gradient: small M, N, long K (split-K), K not a multiple of the slice.
    check_gemm(t & 1, t & 2, 256, 64, 20011, 1.0f, 0.0f, 0, rng);
    check_gemm(t & 1, t & 2, 33, 17, 5003, -1.0f, 0.5f, 3, rng);
  }
#endif
}

TEST_CASE("cuda: gemm's six FP32 tiles: the choice, and each against the CPU on ragged shapes", "[cuda][matmul]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  // The choice (the cases that do not depend on the GPU's SM count): the
  // small tile that pads least, big tiles for a long split K.
  CHECK(std::string(cuda::gemm_fp32_tile(4096, 4096, 4096, 1)) == "128x128");
  CHECK(std::string(cuda::gemm_fp32_tile(50176, 32, 128, 1)) == "128x32");
  CHECK(std::string(cuda::gemm_fp32_tile(50176, 96, 32, 1)) == "128x32");   // 64 x 64 would pad N by a third
  CHECK(std::string(cuda::gemm_fp32_tile(32, 96, 50176, 1)) == "32x128");   // a weight gradient, split-K
  CHECK(std::string(cuda::gemm_fp32_tile(49, 49, 32, 64)) == "64x64");
  CHECK(std::string(cuda::gemm_fp32_tile(128, 512, 100352, 1)) == "128x128");  // split-K over a long K
  CHECK(std::string(cuda::gemm_fp32_tile(50176, 16, 144, 1)) == "256x16");      // a 16-channel stem conv
  CHECK(std::string(cuda::gemm_fp32_tile(16, 144, 50176, 1)) == "16x256");      // and its weight gradient
  Rng rng(104);
  const char* tiles[] = {"128x128", "64x64", "128x32", "32x128", "256x16", "16x256"};
  // Every tile on every shape (forced): ragged edges on both sides, K not a
  // multiple of BK, a long K for split-K, padded and misaligned operands.
  const int64_t sizes[][3] = {{300, 33, 37}, {33, 300, 37}, {129, 97, 96}, {31, 130, 17}, {128, 32, 3001}, {1, 5, 2}};
  for (const char* tile : tiles) {
    cuda::gemm_fp32_force_tile(tile);
    for (auto& s : sizes)
      for (int t = 0; t < 4; t++) {
        INFO("tile " << tile);
        check_gemm(t & 1, t & 2, s[0], s[1], s[2], 1.0f, 0.0f, 0, rng);
        check_gemm(t & 1, t & 2, s[0], s[1], s[2], 0.5f, 1.0f, 3, rng);              // no float4, beta
        check_gemm(t & 1, t & 2, s[0], s[1], s[2], 1.0f, 0.0f, 4, rng, true, 1);     // misaligned, NaN C
      }
    check_gemm(false, false, 70, 40, 33, 1.0f, 0.0f, 0, rng, false, 0, 5);        // batched
  }
  cuda::gemm_fp32_force_tile(nullptr);
  CHECK(std::string(cuda::gemm_fp32_tile(4096, 4096, 4096, 1)) == "128x128");
  REQUIRE_THROWS_WITH(cuda::gemm_fp32_force_tile("64x32"), Catch::Matchers::Contains("no tile"));
#endif
}

TEST_CASE("cuda: a linear layer's weight and bias gradients from one product with a column of ones", "[cuda][matmul]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(105);
  // (R, O, I): one tile, split-K over long R (ones column in the workspace),
  // I + 1 a multiple of 4 and not, I = 1, R = 0 (zeros), pico's shapes.
  const int64_t shapes[][3] = {{37, 5, 7},     {300, 33, 31},  {5000, 40, 3},  {20011, 64, 63},
                               {7, 3, 1},      {0, 6, 5},      {50176, 32, 32}, {12544, 192, 64},
                               {9, 4, 0}};  // I = 0: no product, db still the sums
  const char* tiles[] = {nullptr, "128x128", "64x64", "128x32", "32x128", "256x16", "16x256"};
  for (const char* tile : tiles)
    for (auto& sh : shapes)
      for (int64_t off : {0, 1}) {  // off = 1: misaligned operands (scalar loads)
        const int64_t R = sh[0], O = sh[1], I = sh[2];
        INFO("tile " << (tile ? tile : "auto") << " R " << R << " O " << O << " I " << I << " off " << off);
        cuda::gemm_fp32_force_tile(tile);
        std::vector<float> dY = rand_vec(off + R * O, rng), X = rand_vec(off + R * I, rng);
        std::vector<float> dW(O * I), db(O);
        cpu::gemm(true, false, O, I, R, 1.0f, dY.data() + off, O, X.data() + off, I, 0.0f, dW.data(), I);
        cpu::linear_bias_backward(db.data(), dY.data() + off, R, O);
        Tensor ddY = cuda_vec(dY), dX = cuda_vec(X), ddW = cuda_vec(std::vector<float>(off + O * I, NAN)),
               ddb = cuda_vec(std::vector<float>(off + O, NAN));
        cuda::linear_backward_weight_bias(ddW.f32() + off, ddb.f32() + off, ddY.f32() + off, dX.f32() + off, R, O, I);
        std::vector<float> gw = host(ddW).to_vector(), gb = host(ddb).to_vector();
        const double tol = 2e-5 * std::sqrt((double)R + 1);
        REQUIRE_CLOSE(std::vector<float>(gw.begin() + off, gw.end()), dW, tol, 1e-5);
        REQUIRE_CLOSE(std::vector<float>(gb.begin() + off, gb.end()), db, tol, 1e-5);
      }
  cuda::gemm_fp32_force_tile(nullptr);
  // In bf16 mode the products round to bf16 and the sums are a second pass: db exactly as linear_bias_backward.
  {
    const int64_t R = 1000, O = 24, I = 40;
    std::vector<float> dY = rand_vec(R * O, rng), X = rand_vec(R * I, rng);
    Tensor ddY = cuda_vec(dY), dX = cuda_vec(X), ddW = cuda_vec(std::vector<float>(O * I)),
           ddb = cuda_vec(std::vector<float>(O)), ref = cuda_vec(std::vector<float>(O));
    cuda::set_gemm_bf16(true);
    cuda::linear_backward_weight_bias(ddW.f32(), ddb.f32(), ddY.f32(), dX.f32(), R, O, I);
    cuda::set_gemm_bf16(false);
    cuda::linear_bias_backward(ref.f32(), ddY.f32(), R, O);
    REQUIRE(host(ddb).to_vector() == host(ref).to_vector());
    std::vector<float> dW(O * I);
    cpu::gemm(true, false, O, I, R, 1.0f, dY.data(), O, X.data(), I, 0.0f, dW.data(), I);
    REQUIRE_CLOSE(host(ddW).to_vector(), dW, 0.05 * std::sqrt((double)R), 2e-2);  // bf16 operands
  }
#endif
}

TEST_CASE("cuda: gemm_batched matches the CPU loop (strided, shared B, many batches)", "[cuda][matmul]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(104);
  for (int t = 0; t < 4; t++) {
    check_gemm(t & 1, t & 2, 49, 49, 32, 1.0f, 0.0f, 0, rng, false, 0, 7);
    check_gemm(t & 1, t & 2, 33, 20, 9, 1.0f, 1.0f, 3, rng, false, 1, 5);
    check_gemm(t & 1, t & 2, 33, 20, 9, 1.0f, 0.0f, 0, rng, true, 0, 5, true);  // B shared (stride 0)
    check_gemm(t & 1, t & 2, 30, 20, 2100, 1.0f, 0.5f, 0, rng, false, 0, 3);    // batched split-K
  }
  // More batches than one launch's grid.z (65535).
  check_gemm(false, true, 3, 2, 5, 1.0f, 0.0f, 0, rng, false, 0, 70000);
#endif
}

TEST_CASE("cuda: linear bias kernels match the CPU", "[cuda][matmul]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(105);
  for (int64_t R : {0, 1, 7, 300, 1000, 100003})
    for (int64_t N : {1, 5, 64, 130}) {
      INFO("R " << R << " N " << N);
      std::vector<float> y = rand_vec(R * N, rng), bias = rand_vec(N, rng);
      Tensor dy = cuda_vec(R > 0 ? y : std::vector<float>{0.0f}), db = cuda_vec(bias);
      cpu::linear_bias_forward(y.data(), bias.data(), R, N);
      if (R > 0) cuda::linear_bias_forward(dy.f32(), db.f32(), R, N);
      if (R > 0) REQUIRE_CLOSE(host(dy).to_vector(), y, 1e-6, 1e-6);
      // Column sums (dbias filled with NaN first: it must be overwritten).
      std::vector<float> ref(N), nan(N, std::numeric_limits<float>::quiet_NaN());
      cpu::linear_bias_backward(ref.data(), y.data(), R, N);
      Tensor d1 = cuda_vec(nan), d2 = cuda_vec(nan);
      cuda::linear_bias_backward(d1.f32(), dy.f32(), R, N);
      cuda::linear_bias_backward(d2.f32(), dy.f32(), R, N);
      std::vector<float> got = host(d1).to_vector();
      REQUIRE_CLOSE(got, ref, 1e-5 * std::sqrt((double)R + 1), 1e-5);
      REQUIRE(got == host(d2).to_vector());  // the same bits every run
    }
#endif
}

TEST_CASE("cuda: linear_forward with its bias in the GEMM store is the product then the bias, bit for bit", "[cuda][matmul]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(106);
  // 64 tiles, 128 tiles, split-K (few tiles, long I), odd O (scalar stores), I = 0.
  const int64_t shapes[][3] = {{7, 5, 3}, {300, 64, 96}, {2048, 256, 64}, {64, 64, 4096}, {33, 130, 1030}, {17, 9, 0}};
  for (const auto& s : shapes) {
    const int64_t R = s[0], O = s[1], I = s[2];
    INFO("R " << R << " O " << O << " I " << I);
    std::vector<float> x = rand_vec(std::max<int64_t>(R * I, 1), rng), w = rand_vec(std::max<int64_t>(O * I, 1), rng);
    std::vector<float> bias = rand_vec(O, rng), nan(R * O, std::numeric_limits<float>::quiet_NaN());
    Tensor X = cuda_vec(x), W = cuda_vec(w), B = cuda_vec(bias), Y1 = cuda_vec(nan), Y2 = cuda_vec(nan);
    cuda::linear_forward(Y1.f32(), X.f32(), W.f32(), B.f32(), R, O, I);
    cuda::gemm(false, true, R, O, I, 1.0f, X.f32(), I, W.f32(), I, 0.0f, Y2.f32(), O);
    cuda::linear_bias_forward(Y2.f32(), B.f32(), R, O);
    const std::vector<float> got = host(Y1).to_vector();
    REQUIRE(got == host(Y2).to_vector());
    std::vector<float> ref(R * O);  // and the CPU's linear layer
    cpu::linear_forward(ref.data(), x.data(), w.data(), bias.data(), R, O, I);
    REQUIRE_CLOSE(got, ref, 1e-5 * std::sqrt((double)I + 1), 1e-5);
  }
#endif
}

TEST_CASE("cuda: matmul batched, broadcast batch and every transpose", "[cuda][matmul]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(106);
  const int64_t M = 37, K = 19, N = 45;
  for (int t = 0; t < 4; t++) {
    bool ta = t & 1, tb = t & 2;
    auto f = [ta, tb](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); };
    auto sa = [&](Shape batch) { batch.push_back(ta ? K : M), batch.push_back(ta ? M : K); return batch; };
    auto sb = [&](Shape batch) { batch.push_back(tb ? N : K), batch.push_back(tb ? K : N); return batch; };
    // Same batch on both sides (one strided-batched launch per product).
    {
      INFO("trans_a " << ta << " trans_b " << tb << " a " << shape_str(sa({3, 2})) << " b " << shape_str(sb({3, 2})));
      compare_devices(f, {randn(sa({3, 2}), rng), randn(sb({3, 2}), rng)}, rng, {1e-4, 1e-4}, {true, true});
    }
    // Broadcast batch: a [2, 1], b [3]; and a [2, 3], b [2, 1] (gradients summed over the broadcast).
    {
      INFO("trans_a " << ta << " trans_b " << tb << " a " << shape_str(sa({2, 1})) << " b " << shape_str(sb({3})));
      compare_devices(f, {randn(sa({2, 1}), rng), randn(sb({3}), rng)}, rng, {1e-4, 1e-4}, {true, true});
    }
    {
      INFO("trans_a " << ta << " trans_b " << tb << " a " << shape_str(sa({2, 3})) << " b " << shape_str(sb({2, 1})));
      compare_devices(f, {randn(sa({2, 3}), rng), randn(sb({2, 1}), rng)}, rng, {1e-4, 1e-4}, {true, true});
    }
    // a 2-D and b batched: a's gradient summed over b's batch.
    {
      INFO("trans_a " << ta << " trans_b " << tb << " a " << shape_str(sa({})) << " b " << shape_str(sb({4})));
      compare_devices(f, {randn(sa({}), rng), randn(sb({4}), rng)}, rng, {1e-4, 1e-4}, {true, true});
    }
    // Shared 2-D b (folded into one GEMM when a is not transposed), and b with batch dims of 1.
    {
      INFO("trans_a " << ta << " trans_b " << tb << " a " << shape_str(sa({2, 3})) << " b " << shape_str(sb({})));
      compare_devices(f, {randn(sa({2, 3}), rng), randn(sb({}), rng)}, rng, {1e-4, 1e-4}, {true, true});
    }
    {
      INFO("trans_a " << ta << " trans_b " << tb << " a " << shape_str(sa({5})) << " b " << shape_str(sb({1, 1})));
      compare_devices(f, {randn(sa({5}), rng), randn(sb({1, 1}), rng)}, rng, {1e-4, 1e-4}, {true, true});
    }
    // Only one input wanting a gradient.
    {
      INFO("trans_a " << ta << " trans_b " << tb << " only a / only b");
      compare_devices(f, {randn(sa({3}), rng), randn(sb({3}), rng)}, rng, {1e-4, 1e-4}, {true, false});
      compare_devices(f, {randn(sa({3}), rng), randn(sb({3}), rng)}, rng, {1e-4, 1e-4}, {false, true});
    }
  }
  // Attention-like: many heads of small products; a long folded product whose b gradient splits K.
  auto f = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1], false, true); };
  compare_devices(f, {randn({2, 4, 49, 32}, rng), randn({2, 4, 49, 32}, rng)}, rng, {1e-4, 1e-4}, {true, true});
  auto g = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  compare_devices(g, {randn({8, 1000, 24}, rng), randn({24, 40}, rng)}, rng, {2e-3, 1e-4}, {true, true});
  // A non-contiguous input on the device.
  Tensor xt = transpose(randn({K, M}, rng), 0, 1);
  Tensor w = randn({K, N}, rng);
  REQUIRE_CLOSE(host(matmul(xt.to(Device::CUDA), w.to(Device::CUDA))), matmul(xt, w), 1e-4, 1e-4);
}

TEST_CASE("cuda: linear with and without bias, 2-D and 3-D input", "[cuda][matmul]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(107);
  auto fb = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
  auto fn = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], Tensor()); };
  struct Case {
    Shape x;
    int64_t O;
  };
  const Case cases[] = {{{2, 3, 5}, 7}, {{4, 3}, 2}, {{3, 37, 65}, 33}, {{1, 1}, 1}, {{2, 98, 64}, 256}};
  for (const Case& c : cases) {
    int64_t I = c.x.back();
    INFO("x " << shape_str(c.x) << " O " << c.O);
    compare_devices(fb, {randn(c.x, rng), randn({c.O, I}, rng), randn({c.O}, rng)}, rng, {2e-4, 1e-4},
                    {true, true, true});
    compare_devices(fn, {randn(c.x, rng), randn({c.O, I}, rng)}, rng, {2e-4, 1e-4}, {true, true});
    compare_devices(fb, {randn(c.x, rng), randn({c.O, I}, rng), randn({c.O}, rng)}, rng, {2e-4, 1e-4},
                    {false, true, true});
    compare_devices(fb, {randn(c.x, rng), randn({c.O, I}, rng), randn({c.O}, rng)}, rng, {2e-4, 1e-4},
                    {true, false, false});
  }
  // Many rows: dW and dbias are long reductions (split-K, chunked column sums).
  INFO("x [6000, 48] O 40");
  compare_devices(fb, {randn({6000, 48}, rng), randn({40, 48}, rng), randn({40}, rng)}, rng, {3e-3, 1e-4},
                  {true, true, true});
}

TEST_CASE("cuda: linear backward gives the same bits every run", "[cuda][matmul]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(108);
  Tensor x = randn({20000, 64}, rng), w = randn({96, 64}, rng), b = randn({96}, rng);
  Tensor g = randn({20000, 96}, rng).to(Device::CUDA);
  std::vector<std::vector<float>> dw, db;
  for (int run = 0; run < 2; run++) {
    Tensor xd = on_cuda(x, false), wd = on_cuda(w, true), bd = on_cuda(b, true);
    backward(linear(xd, wd, bd), g);
    dw.push_back(host(wd.grad()).to_vector());
    db.push_back(host(bd.grad()).to_vector());
  }
  REQUIRE(dw[0] == dw[1]);
  REQUIRE(db[0] == db[1]);
}
