// tests/test_dropout.cpp - dropout and drop_path: gradchecks with a fixed
// seed, identity when off, keep rates, whole-sample drops, determinism and
// bad p.
#include <cmath>
#include <cstring>

#include "tests/helpers.h"

using namespace nala;
using namespace nala::test;

TEST_CASE("gradcheck: dropout", "[dropout][gradcheck]") {
  Rng rng(1);
  Tensor x = randn({3, 7, 5}, rng, 1.0f, true);
  // A fresh Rng with the same seed on every call: the same mask each time.
  REQUIRE_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        Rng r(42);
        return dropout(in[0], 0.3f, r, true);
      },
      std::vector<Tensor>{x});
}

TEST_CASE("gradcheck: drop_path", "[dropout][gradcheck]") {
  Rng rng(2);
  Tensor x = randn({9, 4, 3}, rng, 1.0f, true);
  REQUIRE_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        Rng r(43);
        return drop_path(in[0], 0.4f, r, true);
      },
      std::vector<Tensor>{x});
}

TEST_CASE("dropout: identity when not training or p == 0", "[dropout]") {
  Rng rng(3);
  Tensor x = randn({4, 5}, rng, 1.0f, true);
  auto before = rng.state();
  REQUIRE(dropout(x, 0.5f, rng, false).same(x));
  REQUIRE(dropout(x, 0.0f, rng, true).same(x));
  REQUIRE(drop_path(x, 0.5f, rng, false).same(x));
  REQUIRE(drop_path(x, 0.0f, rng, true).same(x));
  REQUIRE(rng.state() == before);  // nothing drawn
  REQUIRE(!x.grad_fn());
}

TEST_CASE("dropout: keeps about 1-p of the elements and preserves the mean", "[dropout]") {
  Rng rng(4);
  const int64_t n = 200000;
  for (float p : {0.1f, 0.5f, 0.8f}) {
    Tensor y = dropout(Tensor::ones({n}), p, rng, true);
    int64_t kept = 0, odd = 0;
    double s = 0;
    for (float v : y.to_vector()) {
      odd += !(v == 0.0f || std::fabs(v - 1.0f / (1.0f - p)) < 1e-6f);
      kept += v != 0.0f;
      s += v;
    }
    REQUIRE(odd == 0);
    // 5 standard deviations of a binomial.
    const double sd = std::sqrt(p * (1 - p) / n);
    REQUIRE(std::fabs((double)kept / n - (1 - p)) < 5 * sd);
    REQUIRE(std::fabs(s / n - 1.0) < 5 * sd / (1 - p));
  }
}

TEST_CASE("dropout: backward multiplies by the same mask", "[dropout]") {
  Rng rng(5);
  Tensor x = Tensor::ones({6, 11}).set_requires_grad(true);
  Tensor y = dropout(x, 0.5f, rng, true);
  Tensor g = randn({6, 11}, rng);
  backward(y, g);
  std::vector<float> yv = y.to_vector(), gv = g.to_vector(), gx = x.grad().to_vector();
  for (size_t i = 0; i < yv.size(); i++) REQUIRE(gx[i] == gv[i] * yv[i]);
}

TEST_CASE("drop_path: zeroes or scales whole samples", "[dropout]") {
  Rng rng(6);
  const int64_t B = 400, D = 30;
  const float p = 0.25f;
  Tensor x = randu({B, 5, 6}, rng, 0.5f, 1.5f);  // never zero
  Tensor y = drop_path(x, p, rng, true);
  std::vector<float> xv = x.to_vector(), yv = y.to_vector();
  int64_t kept = 0;
  for (int64_t b = 0; b < B; b++) {
    const bool keep = yv[b * D] != 0.0f;
    kept += keep;
    for (int64_t j = 0; j < D; j++) {
      const float ref = keep ? xv[b * D + j] / (1.0f - p) : 0.0f;
      REQUIRE(std::fabs(yv[b * D + j] - ref) <= 1e-6f * std::fabs(ref));
    }
  }
  const double sd = std::sqrt(p * (1 - p) / B);
  REQUIRE(std::fabs((double)kept / B - (1 - p)) < 5 * sd);
}

TEST_CASE("dropout: the same seed gives bit-identical masks", "[dropout]") {
  Rng data(7);
  Tensor x = randn({33, 17}, data);
  auto run = [&](uint64_t seed, bool path) {
    Rng r(seed);
    return (path ? drop_path(x, 0.5f, r, true) : dropout(x, 0.3f, r, true)).to_vector();
  };
  for (bool path : {false, true}) {
    std::vector<float> a = run(11, path), b = run(11, path), c = run(12, path);
    REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    REQUIRE(a != c);
  }
}

TEST_CASE("dropout: p outside [0, 1) is refused", "[dropout]") {
  Rng rng(8);
  Tensor x = Tensor::ones({2, 3});
  REQUIRE_THROWS_WITH(dropout(x, 1.0f, rng, true), Catch::Contains("dropout") && Catch::Contains("[0, 1)"));
  REQUIRE_THROWS_WITH(dropout(x, -0.1f, rng, false), Catch::Contains("dropout"));
  REQUIRE_THROWS_WITH(drop_path(x, 1.5f, rng, true), Catch::Contains("drop_path"));
  REQUIRE_THROWS_WITH(drop_path(x, NAN, rng, true), Catch::Contains("drop_path"));
  REQUIRE_THROWS_WITH(dropout(Tensor::from_vector_i64({2}, {1, 2}), 0.5f, rng, true),
                      Catch::Contains("dropout") && Catch::Contains("i64"));
}
