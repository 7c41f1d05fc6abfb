// tests/test_matmul.cpp - the GEMM kernel against its reference, matmul and
// linear forward values, gradients and shape errors.
//
// Letters: M, N, K as in kernels/cpu/matmul.h; B a batch size.
#include <cmath>
#include <limits>
#include <cstdlib>
#include <string>

#include "kernels/cpu/matmul.h"
#include "tests/helpers.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace nala;
using namespace nala::test;

namespace {

std::vector<float> rand_vec(int64_t n, Rng& rng) {
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform(-1.0f, 1.0f);
  return v;
}

// gemm vs gemm_naive on one geometry; leading dims padded by `pad`, and the
// padding of C must be left untouched.
void check_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta, int64_t pad, Rng& rng,
                bool nan_c = false) {
  int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
  std::vector<float> A = rand_vec((ta ? K : M) * lda, rng), B = rand_vec((tb ? N : K) * ldb, rng);
  std::vector<float> C = rand_vec(M * ldc, rng);
  if (nan_c)
    for (auto& x : C) x = std::numeric_limits<float>::quiet_NaN();
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = N; j < ldc; j++) C[i * ldc + j] = 777.0f;  // sentinel in C's padding
  std::vector<float> R = C;
  cpu::gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
  cpu::gemm_naive(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, R.data(), ldc);
  INFO("ta " << ta << " tb " << tb << " M " << M << " N " << N << " K " << K << " alpha " << alpha << " beta "
             << beta << " pad " << pad);
  REQUIRE_CLOSE(C, R, 2e-5 * std::sqrt((double)K + 1), 1e-5);
}

}  // namespace

TEST_CASE("gemm: fast matches naive for every transpose, odd sizes and padded leading dims", "[matmul]") {
  Rng rng(1);
  const int64_t sizes[][3] = {{1, 1, 1},    {7, 7, 7},     {33, 33, 33},  {129, 129, 129}, {1, 257, 33},
                              {257, 1, 7},  {5, 33, 1},    {13, 300, 65}, {31, 17, 129},   {45, 61, 3}};
  for (auto& s : sizes)
    for (int t = 0; t < 4; t++) check_gemm(t & 1, t & 2, s[0], s[1], s[2], 1.0f, 0.0f, t == 3 ? 5 : 0, rng);
  for (int t = 0; t < 4; t++) check_gemm(t & 1, t & 2, 257, 257, 257, 1.0f, 0.0f, 3, rng);
}

TEST_CASE("gemm: alpha and beta, and beta = 0 over NaN", "[matmul]") {
  Rng rng(2);
  const float ab[][2] = {{1.0f, 1.0f}, {0.5f, -2.0f}, {-1.5f, 0.0f}, {0.0f, 0.5f}, {0.0f, 0.0f}, {2.0f, 1.0f}};
  for (auto& p : ab)
    for (int t = 0; t < 4; t++) {
      check_gemm(t & 1, t & 2, 37, 45, 70, p[0], p[1], 2, rng);  // packed path
      check_gemm(t & 1, t & 2, 3, 5, 4, p[0], p[1], 1, rng);     // small path
    }
  for (int t = 0; t < 4; t++) {
    check_gemm(t & 1, t & 2, 50, 70, 40, 1.0f, 0.0f, 3, rng, true);
    check_gemm(t & 1, t & 2, 2, 3, 4, 1.0f, 0.0f, 1, rng, true);
    check_gemm(t & 1, t & 2, 6, 7, 0, 1.0f, 0.0f, 1, rng, true);  // K = 0: C = 0
  }
}

TEST_CASE("gemm: sizes crossing the cache blocks", "[matmul]") {
  Rng rng(3);
  // M > MC (144), K > KC (256) with beta applied once, N > NC (512).
  check_gemm(false, false, 150, 530, 270, 0.75f, 0.5f, 0, rng);
  check_gemm(true, true, 290, 40, 520, 1.0f, 0.0f, 1, rng, true);
  check_gemm(true, false, 20, 600, 300, 1.0f, 1.0f, 0, rng);
}

TEST_CASE("gemm: inside a parallel region and on one thread", "[matmul]") {
  Rng rng(4);
  int64_t M = 70, N = 90, K = 50;
  std::vector<float> A = rand_vec(M * K, rng), B = rand_vec(K * N, rng), R(M * N);
  cpu::gemm_naive(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, R.data(), N);
  std::vector<std::vector<float>> Cs(4, std::vector<float>(M * N));
#pragma omp parallel for num_threads(2)
  for (int i = 0; i < 4; i++) cpu::gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, Cs[i].data(), N);
  for (auto& C : Cs) REQUIRE_CLOSE(C, R, 1e-4, 1e-5);
#ifdef _OPENMP
  int prev = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<float> C(M * N);
  cpu::gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  omp_set_num_threads(prev);
  REQUIRE_CLOSE(C, R, 1e-4, 1e-5);
#endif
}

TEST_CASE("linear bias kernels: column sums match the reference", "[matmul]") {
  Rng rng(5);
  for (int64_t R : {1, 7, 300, 1000})
    for (int64_t N : {1, 5, 130}) {
      std::vector<float> g = rand_vec(R * N, rng), a(N), b(N);
      cpu::linear_bias_backward(a.data(), g.data(), R, N);
      cpu::linear_bias_backward_naive(b.data(), g.data(), R, N);
      REQUIRE_CLOSE(a, b, 1e-4, 1e-5);
    }
}

TEST_CASE("matmul: hand-computed values, transposes and broadcasting", "[matmul]") {
  Tensor a = Tensor::from_vector({2, 2}, {1, 2, 3, 4}), b = Tensor::from_vector({2, 2}, {5, 6, 7, 8});
  REQUIRE(matmul(a, b).to_vector() == std::vector<float>{19, 22, 43, 50});
  REQUIRE(matmul(a, b, true, false).to_vector() == std::vector<float>{26, 30, 38, 44});
  REQUIRE(matmul(a, b, false, true).to_vector() == std::vector<float>{17, 23, 39, 53});
  REQUIRE(matmul(a, b, true, true).to_vector() == std::vector<float>{23, 31, 34, 46});

  Rng rng(6);
  Tensor x = randn({2, 3, 5, 4}, rng), y = randn({3, 4, 6}, rng), w = randn({4, 6}, rng);
  Tensor z = matmul(x, y);
  REQUIRE(z.shape() == Shape{2, 3, 5, 6});
  Tensor zw = matmul(x, w);  // folded path
  REQUIRE(zw.shape() == Shape{2, 3, 5, 6});
  for (int64_t i = 0; i < 2; i++)
    for (int64_t h = 0; h < 3; h++) {
      Tensor xs = view::contiguous(view::narrow(view::narrow(x, 0, i, 1), 1, h, 1));
      Tensor ys = view::contiguous(view::narrow(y, 0, h, 1));
      std::vector<float> ref(5 * 6), ref2(5 * 6);
      cpu::gemm_naive(false, false, 5, 6, 4, 1.0f, xs.f32(), 4, ys.f32(), 6, 0.0f, ref.data(), 6);
      cpu::gemm_naive(false, false, 5, 6, 4, 1.0f, xs.f32(), 4, w.f32(), 6, 0.0f, ref2.data(), 6);
      REQUIRE_CLOSE(view::narrow(view::narrow(z, 0, i, 1), 1, h, 1).to_vector(), ref, 1e-5, 1e-5);
      REQUIRE_CLOSE(view::narrow(view::narrow(zw, 0, i, 1), 1, h, 1).to_vector(), ref2, 1e-5, 1e-5);
    }
  // A non-contiguous input gives the same as its contiguous copy.
  Tensor xt = transpose(randn({4, 5}, rng), 0, 1);
  REQUIRE_CLOSE(matmul(xt, w), matmul(view::contiguous(xt), w), 1e-6, 1e-6);
}

TEST_CASE("linear: hand-computed values", "[matmul]") {
  Tensor x = Tensor::from_vector({1, 2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor w = Tensor::from_vector({2, 3}, {1, 0, -1, 0.5f, 0.5f, 0.5f});
  Tensor b = Tensor::from_vector({2}, {10, 20});
  Tensor y = linear(x, w, b);
  REQUIRE(y.shape() == Shape{1, 2, 2});
  REQUIRE(y.to_vector() == std::vector<float>{8, 23, 8, 27.5f});
  REQUIRE(linear(x, w, Tensor()).to_vector() == std::vector<float>{-2, 3, -2, 7.5f});
}

TEST_CASE("gradcheck: matmul batched", "[matmul][gradcheck]") {
  Rng rng(7);
  auto f = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  REQUIRE_GRADCHECK(f, (std::vector<Tensor>{randn({2, 3, 4}, rng, 1, true), randn({2, 4, 5}, rng, 1, true)}));
}

TEST_CASE("gradcheck: matmul broadcast batch and every transpose", "[matmul][gradcheck]") {
  Rng rng(8);
  const int64_t M = 3, K = 4, N = 5;
  for (int t = 0; t < 4; t++) {
    bool ta = t & 1, tb = t & 2;
    INFO("trans_a " << ta << " trans_b " << tb);
    auto f = [ta, tb](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); };
    Shape as = ta ? Shape{2, 1, K, M} : Shape{2, 1, M, K};
    Shape bs = tb ? Shape{3, N, K} : Shape{3, K, N};
    REQUIRE_GRADCHECK(f, (std::vector<Tensor>{randn(as, rng, 1, true), randn(bs, rng, 1, true)}));
    // b broadcast along the inner batch dim too: a [2, 3, ..], b [2, 1, ..]
    Shape as2 = ta ? Shape{2, 3, K, M} : Shape{2, 3, M, K};
    Shape bs2 = tb ? Shape{2, 1, N, K} : Shape{2, 1, K, N};
    REQUIRE_GRADCHECK(f, (std::vector<Tensor>{randn(as2, rng, 1, true), randn(bs2, rng, 1, true)}));
  }
}

TEST_CASE("gradcheck: matmul shared 2-D b", "[matmul][gradcheck]") {
  Rng rng(9);
  for (int t = 0; t < 4; t++) {
    bool ta = t & 1, tb = t & 2;
    INFO("trans_a " << ta << " trans_b " << tb);
    auto f = [ta, tb](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); };
    Shape as = ta ? Shape{2, 3, 4, 3} : Shape{2, 3, 3, 4};
    Shape bs = tb ? Shape{5, 4} : Shape{4, 5};
    REQUIRE_GRADCHECK(f, (std::vector<Tensor>{randn(as, rng, 1, true), randn(bs, rng, 1, true)}));
  }
  // b with batch dims of size 1 takes the same folded path.
  auto f3 = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1], false, true); };
  REQUIRE_GRADCHECK(f3, (std::vector<Tensor>{randn({2, 3, 4}, rng, 1, true), randn({1, 1, 5, 4}, rng, 1, true)}));
  REQUIRE(matmul(randn({2, 3, 4}, rng), randn({1, 1, 5, 4}, rng), false, true).shape() == Shape{1, 2, 3, 5});
  // Only one input requiring grad.
  auto f = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  REQUIRE_GRADCHECK(f, (std::vector<Tensor>{randn({3, 4}, rng, 1, true), randn({4, 2}, rng)}));
  REQUIRE_GRADCHECK(f, (std::vector<Tensor>{randn({2, 3, 4}, rng), randn({2, 4, 2}, rng, 1, true)}));
}

TEST_CASE("gradcheck: linear", "[matmul][gradcheck]") {
  Rng rng(10);
  auto fb = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
  auto fn = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], Tensor()); };
  REQUIRE_GRADCHECK(fb, (std::vector<Tensor>{randn({2, 3, 5}, rng, 1, true), randn({7, 5}, rng, 1, true),
                                             randn({7}, rng, 1, true)}));
  REQUIRE_GRADCHECK(fn, (std::vector<Tensor>{randn({2, 3, 5}, rng, 1, true), randn({7, 5}, rng, 1, true)}));
  REQUIRE_GRADCHECK(fb, (std::vector<Tensor>{randn({4, 3}, rng, 1, true), randn({2, 3}, rng, 1, true),
                                             randn({2}, rng, 1, true)}));
  // Many rows: the column sums of dbias go through the chunked path.
  REQUIRE_GRADCHECK(fb, (std::vector<Tensor>{randn({300, 2}, rng, 1, true), randn({3, 2}, rng, 1, true),
                                             randn({3}, rng, 1, true)}));
  // Over 32^3 multiply-adds: the blocked GEMM, the bias added in its store.
  REQUIRE_GRADCHECK(fb, (std::vector<Tensor>{randn({41, 33}, rng, 1, true), randn({35, 33}, rng, 1, true),
                                             randn({35}, rng, 1, true)}));
}

TEST_CASE("matmul and linear: shape errors name the op and both shapes", "[matmul]") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5});
  REQUIRE_THROWS_WITH(matmul(a, b), Catch::Contains("matmul") && Catch::Contains("[2, 3] and [4, 5]"));
  REQUIRE_THROWS_WITH(matmul(Tensor::zeros({2, 3, 4}), Tensor::zeros({3, 4, 5})),
                      Catch::Contains("matmul") && Catch::Contains("[2, 3, 4] and [3, 4, 5]"));
  REQUIRE_THROWS_WITH(matmul(Tensor::zeros({3}), b), Catch::Contains("matmul"));
  REQUIRE_THROWS_WITH(matmul(a, Tensor::zeros({2, 3}), false, false), Catch::Contains("matmul"));
  REQUIRE_NOTHROW(matmul(a, Tensor::zeros({2, 3}), true, false));
  REQUIRE_THROWS_WITH(matmul(a, Tensor::from_vector_i64({3, 1}, {1, 2, 3})), Catch::Contains("matmul"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}), Tensor()),
                      Catch::Contains("linear") && Catch::Contains("[2, 3] and weight [4, 5]"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 3}), Tensor::zeros({4, 3}), Tensor::zeros({5})),
                      Catch::Contains("linear") && Catch::Contains("bias [5]"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 3}), Tensor::zeros({3}), Tensor()), Catch::Contains("linear"));
}

// Every micro-kernel this CPU runs, forced in turn: the same geometries as
// above (edge tiles, transposes, padded leading dims, blocks crossed).
TEST_CASE("gemm: every micro-kernel this CPU runs matches naive", "[matmul]") {
  const cpu::GemmKernel was = cpu::gemm_kernel();
  int tried = 0;
  for (cpu::GemmKernel k : {cpu::GemmKernel::Avx512, cpu::GemmKernel::Avx2, cpu::GemmKernel::Portable}) {
    if (!cpu::gemm_kernel_supported(k)) continue;
    cpu::set_gemm_kernel(k);
    REQUIRE(cpu::gemm_kernel() == k);
    INFO("kernel " << cpu::gemm_kernel_name(k));
    Rng rng(10 + (int)k);
    const int64_t sizes[][3] = {{33, 33, 33}, {13, 300, 65}, {31, 17, 129}, {45, 61, 3}, {97, 40, 64}};
    for (auto& s : sizes)
      for (int t = 0; t < 4; t++) check_gemm(t & 1, t & 2, s[0], s[1], s[2], 1.0f, 0.0f, t == 3 ? 5 : 0, rng);
    check_gemm(false, false, 150, 800, 270, 0.75f, 0.5f, 0, rng);  // K > KC, N > NC
    check_gemm(true, true, 290, 40, 520, 1.0f, 0.0f, 1, rng, true);
    check_gemm(false, true, 200, 70, 90, -1.0f, 1.0f, 2, rng);
    // Narrow C (N <= NR / 2): computed as C^T and stored transposed.
    for (int t = 0; t < 4; t++) {
      check_gemm(t & 1, t & 2, 300, 16, 144, 1.0f, 0.0f, t == 3 ? 3 : 0, rng);
      check_gemm(t & 1, t & 2, 200, 5, 70, 0.5f, 1.0f, 1, rng);
      check_gemm(t & 1, t & 2, 513, 12, 300, 1.0f, 0.5f, 0, rng, false);  // K > KC: beta once
      check_gemm(t & 1, t & 2, 257, 8, 33, 1.0f, 0.0f, 2, rng, true);     // beta 0 over NaN
    }
    tried++;
  }
  cpu::set_gemm_kernel(was);
  REQUIRE(tried >= 1);
}

// The linear layer's forward with the bias in the GEMM's store, every
// micro-kernel: bit for bit the product followed by linear_bias_forward
// (one rounding either way), at edge tiles, a K over KC (bias once), narrow
// outputs (the transposed path, bias after), the small path and no bias.
TEST_CASE("linear_forward: bias in the GEMM store equals the product plus the bias", "[matmul]") {
  const cpu::GemmKernel was = cpu::gemm_kernel();
  for (cpu::GemmKernel k : {cpu::GemmKernel::Avx512, cpu::GemmKernel::Avx2, cpu::GemmKernel::Portable}) {
    if (!cpu::gemm_kernel_supported(k)) continue;
    cpu::set_gemm_kernel(k);
    INFO("kernel " << cpu::gemm_kernel_name(k));
    Rng rng(40 + (int)k);
    const int64_t sizes[][3] = {{300, 128, 32}, {97, 45, 64}, {61, 33, 300}, {25, 70, 17},
                                {600, 16, 48},  {5, 7, 3},    {257, 256, 129}};
    for (auto& sz : sizes)
      for (bool with_bias : {true, false}) {
        const int64_t R = sz[0], O = sz[1], I = sz[2];
        INFO("R " << R << " O " << O << " I " << I << " bias " << with_bias);
        std::vector<float> X = rand_vec(R * I, rng), W = rand_vec(O * I, rng), b = rand_vec(O, rng);
        std::vector<float> Y(R * O, NAN), ref(R * O, NAN), naive(R * O);
        cpu::linear_forward(Y.data(), X.data(), W.data(), with_bias ? b.data() : nullptr, R, O, I);
        cpu::gemm(false, true, R, O, I, 1.0f, X.data(), I, W.data(), I, 0.0f, ref.data(), O);
        if (with_bias) cpu::linear_bias_forward(ref.data(), b.data(), R, O);
        REQUIRE(Y == ref);
        cpu::gemm_naive(false, true, R, O, I, 1.0f, X.data(), I, W.data(), I, 0.0f, naive.data(), O);
        if (with_bias)
          for (int64_t r = 0; r < R; r++)
            for (int64_t o = 0; o < O; o++) naive[r * O + o] += b[o];
        REQUIRE_CLOSE(Y, naive, 2e-5 * std::sqrt((double)I + 1), 1e-5);
      }
  }
  cpu::set_gemm_kernel(was);
}

TEST_CASE("gemm: the kernel is chosen from the CPU's flags", "[matmul]") {
  REQUIRE(cpu::gemm_kernel_supported(cpu::GemmKernel::Portable));
  REQUIRE(cpu::gemm_kernel_supported(cpu::gemm_kernel()));
  const char* env = std::getenv("NALA_GEMM_KERNEL");
  if (env && *env) {
    REQUIRE(std::string(cpu::gemm_kernel_name(cpu::gemm_kernel())) == env);
  } else {  // the best this CPU runs
    const cpu::GemmKernel best = cpu::gemm_kernel_supported(cpu::GemmKernel::Avx512) ? cpu::GemmKernel::Avx512
                                 : cpu::gemm_kernel_supported(cpu::GemmKernel::Avx2) ? cpu::GemmKernel::Avx2
                                                                                      : cpu::GemmKernel::Portable;
    REQUIRE(cpu::gemm_kernel() == best);
  }
#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
  REQUIRE(cpu::gemm_kernel_supported(cpu::GemmKernel::Avx2));  // built for AVX2: the CPU has it
#endif
#if defined(__x86_64__) && defined(__AVX512F__)
  REQUIRE(cpu::gemm_kernel_supported(cpu::GemmKernel::Avx512));
#endif
}
