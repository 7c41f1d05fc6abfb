// tests/test_loss.cpp - cross_entropy: gradchecks with and without label
// smoothing, values against direct formulas in double, fast kernels against
// the naive ones, and bad labels.
#include <cmath>

#include "kernels/cpu/loss.h"
#include "tests/helpers.h"

using namespace nala;
using namespace nala::test;

namespace {

// B, K as in kernels/cpu/loss.h. Direct formula in double.
double reference_ce(const std::vector<float>& z, const std::vector<int64_t>& y, int64_t B, int64_t K, double s) {
  double total = 0;
  for (int64_t b = 0; b < B; b++) {
    double m = -INFINITY, se = 0;
    for (int64_t k = 0; k < K; k++) m = std::max(m, (double)z[b * K + k]);
    for (int64_t k = 0; k < K; k++) se += std::exp(z[b * K + k] - m);
    for (int64_t k = 0; k < K; k++) {
      double t = (k == y[b] ? 1.0 - s : 0.0) + s / K;
      total -= t * (z[b * K + k] - m - std::log(se));
    }
  }
  return total / B;
}

std::vector<int64_t> random_labels(Rng& rng, int64_t B, int64_t K) {
  std::vector<int64_t> y(B);
  for (auto& v : y) v = (int64_t)rng.below(K);
  return y;
}

}  // namespace

TEST_CASE("gradcheck: cross_entropy", "[loss][gradcheck]") {
  Rng rng(1);
  const int64_t B = 5, K = 7;
  Tensor labels = Tensor::from_vector_i64({B}, random_labels(rng, B, K));
  Tensor z = randn({B, K}, rng, 2.0f, true);
  REQUIRE_GRADCHECK([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], labels, 0.0f); },
                    std::vector<Tensor>{z});
}

TEST_CASE("gradcheck: cross_entropy with label smoothing", "[loss][gradcheck]") {
  Rng rng(2);
  const int64_t B = 4, K = 9;
  Tensor labels = Tensor::from_vector_i64({B}, random_labels(rng, B, K));
  Tensor z = randn({B, K}, rng, 2.0f, true);
  REQUIRE_GRADCHECK([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], labels, 0.1f); },
                    std::vector<Tensor>{z});
  // Labels passed through the gradcheck inputs too (they need no gradient).
  std::vector<Tensor> both = {z, labels};
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], 0.3f); }, both);
}

TEST_CASE("loss: cross_entropy values by hand", "[loss]") {
  Tensor l = cross_entropy(Tensor::from_vector({1, 2}, {0, 0}), Tensor::from_vector_i64({1}, {0}));
  REQUIRE(l.shape() == Shape{});
  REQUIRE(std::fabs(l.item() - std::log(2.0)) < 1e-6);
  // Smoothing on a random batch against the direct formula.
  Rng rng(3);
  const int64_t B = 6, K = 11;
  Tensor z = randn({B, K}, rng, 3.0f);
  std::vector<int64_t> y = random_labels(rng, B, K);
  Tensor lab = Tensor::from_vector_i64({B}, y);
  for (float s : {0.0f, 0.1f, 0.5f, 1.0f}) {
    double ref = reference_ce(z.to_vector(), y, B, K, s);
    REQUIRE(std::fabs(cross_entropy(z, lab, s).item() - ref) < 1e-5 * (1 + std::fabs(ref)));
  }
  // Large logits stay finite: [1000, 0] with label 1 loses 1000.
  Tensor big = Tensor::from_vector({2, 2}, {1000, 0, 0, 1000});
  Tensor lb = cross_entropy(big, Tensor::from_vector_i64({2}, {1, 1}));
  REQUIRE(std::fabs(lb.item() - 500.0f) < 1e-3);
}

TEST_CASE("loss: cross_entropy gradient is (softmax - target) / B", "[loss]") {
  Tensor z = Tensor::from_vector({2, 3}, {1, 2, 3, 0, 0, 0}).set_requires_grad(true);
  Tensor lab = Tensor::from_vector_i64({2}, {2, 0});
  const float s = 0.3f;
  backward(cross_entropy(z, lab, s));
  const double e = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  const double p0[3] = {std::exp(1.0) / e, std::exp(2.0) / e, std::exp(3.0) / e};
  std::vector<float> ref(6);
  for (int k = 0; k < 3; k++) {
    ref[k] = (float)((p0[k] - ((k == 2 ? 1 - s : 0) + s / 3)) / 2);
    ref[3 + k] = (float)((1.0 / 3 - ((k == 0 ? 1 - s : 0) + s / 3)) / 2);
  }
  REQUIRE_CLOSE(z.grad().to_vector(), ref, 1e-6, 1e-5);
}

TEST_CASE("loss: fast cross_entropy kernels match the naive ones", "[loss]") {
  Rng rng(4);
  for (auto bk : std::vector<std::pair<int64_t, int64_t>>{{37, 1001}, {1, 3}, {129, 17}}) {
    const int64_t B = bk.first, K = bk.second;
    Tensor z = randn({B, K}, rng, 4.0f);
    std::vector<int64_t> y = random_labels(rng, B, K);
    for (float s : {0.0f, 0.1f}) {
      float la, lb;
      std::vector<float> lsea(B), lseb(B), ga(B * K), gb(B * K);
      int64_t bad[2];
      cpu::cross_entropy_forward(&la, lsea.data(), z.f32(), y.data(), B, K, s, bad);
      REQUIRE(bad[0] == -1);
      cpu::cross_entropy_forward_naive(&lb, lseb.data(), z.f32(), y.data(), B, K, s, bad);
      REQUIRE(bad[0] == -1);
      REQUIRE(std::fabs(la - lb) < 1e-5 * (1 + std::fabs(lb)));
      REQUIRE_CLOSE(lsea, lseb, 1e-5, 1e-6);
      const float g = 0.7f;
      cpu::cross_entropy_backward(ga.data(), &g, z.f32(), y.data(), lseb.data(), B, K, s);
      cpu::cross_entropy_backward_naive(gb.data(), &g, z.f32(), y.data(), lseb.data(), B, K, s);
      REQUIRE_CLOSE(ga, gb, 1e-7, 1e-5);
    }
  }
}

TEST_CASE("loss: bad labels and dtypes are refused", "[loss]") {
  Tensor z = Tensor::zeros({3, 4});
  REQUIRE_THROWS_WITH(cross_entropy(z, Tensor::from_vector_i64({3}, {0, 1, 4})),
                      Catch::Contains("cross_entropy") && Catch::Contains("label 4") &&
                          Catch::Contains("position 2"));
  REQUIRE_THROWS_WITH(cross_entropy(z, Tensor::from_vector_i64({3}, {0, -1, 2})),
                      Catch::Contains("cross_entropy") && Catch::Contains("label -1") &&
                          Catch::Contains("position 1"));
  REQUIRE_THROWS_WITH(cross_entropy(z, Tensor::from_vector_i64({3}, {0, 1000000000000, 2})),
                      Catch::Contains("label 1000000000000"));
  REQUIRE_THROWS_WITH(cross_entropy(z, Tensor::from_vector({3}, {0, 1, 2})),
                      Catch::Contains("cross_entropy") && Catch::Contains("i64") && Catch::Contains("f32[3]"));
  REQUIRE_THROWS_WITH(cross_entropy(z, Tensor::from_vector_i64({2}, {0, 1})),
                      Catch::Contains("cross_entropy") && Catch::Contains("[2]") && Catch::Contains("[3, 4]"));
  REQUIRE_THROWS_WITH(cross_entropy(Tensor::zeros({3}), Tensor::from_vector_i64({3}, {0, 0, 0})),
                      Catch::Contains("cross_entropy") && Catch::Contains("(B, K)"));
  REQUIRE_THROWS_WITH(cross_entropy(z, Tensor::from_vector_i64({3}, {0, 0, 0}), 1.5f),
                      Catch::Contains("cross_entropy") && Catch::Contains("smoothing"));
}
