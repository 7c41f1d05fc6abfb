// tests/test_norm.cpp - layernorm and batchnorm: gradchecks, fast kernels
// against the naive ones, hand-computed values, bad inputs.
// Shape letters: x viewed as (O, C, I) around the normalised dimension; B batch.
#include <cmath>
#include <vector>

#include "kernels/cpu/norm.h"
#include "tests/helpers.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace nala;
using namespace nala::test;

namespace {
Tensor shifted(Tensor t, float s) {  // t + s in place, without the elementwise ops
  for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] += s;
  return t;
}
}  // namespace

TEST_CASE("gradcheck: layernorm", "[norm][gradcheck]") {
  Rng rng(11);
  struct Case {
    Shape shape;
    int64_t dim;
    bool affine;
  };
  for (const Case& c : {Case{{3, 5, 7}, -1, true}, Case{{2, 6, 3, 5}, 1, true}, Case{{3, 5, 7}, -1, false},
                        Case{{2, 6, 3, 5}, 1, false}, Case{{4, 3, 5}, 1, true}}) {
    INFO("shape " << shape_str(c.shape) << " dim " << c.dim << " affine " << c.affine);
    int64_t C = c.shape[c.dim < 0 ? c.shape.size() - 1 : c.dim];
    std::vector<Tensor> in = {randn(c.shape, rng, 1.0f, true)};
    if (c.affine) in.push_back(randn({C}, rng, 1.0f, true)), in.push_back(randn({C}, rng, 1.0f, true));
    auto f = [&](const std::vector<Tensor>& t) {
      return layernorm(t[0], t.size() > 1 ? t[1] : Tensor(), t.size() > 2 ? t[2] : Tensor(), 1e-5f, c.dim);
    };
    REQUIRE_GRADCHECK(f, in);
  }
}

TEST_CASE("gradcheck: batchnorm", "[norm][gradcheck]") {
  Rng rng(12);
  struct Case {
    Shape shape;
    int64_t dim;
    bool training;
  };
  for (const Case& c : {Case{{5, 3, 4}, -1, true}, Case{{2, 4, 3, 5}, 1, true}, Case{{5, 3, 4}, -1, false},
                        Case{{2, 4, 3, 5}, 1, false}}) {
    INFO("shape " << shape_str(c.shape) << " dim " << c.dim << " training " << c.training);
    int64_t C = c.shape[c.dim < 0 ? c.shape.size() - 1 : c.dim];
    // The running statistics change at every training forward; the output does not depend on them then.
    Tensor rm = randn({C}, rng, 0.5f), rv = randu({C}, rng, 0.5f, 2.0f);
    std::vector<Tensor> in = {randn(c.shape, rng, 1.0f, true), randn({C}, rng, 1.0f, true),
                              randn({C}, rng, 1.0f, true)};
    auto f = [&](const std::vector<Tensor>& t) {
      return batchnorm(t[0], t[1], t[2], rm, rv, c.training, 0.1f, 1e-5f, c.dim);
    };
    REQUIRE_GRADCHECK(f, in);
  }
  // Without weight and bias.
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  auto f = [&](const std::vector<Tensor>& t) { return batchnorm(t[0], Tensor(), Tensor(), rm, rv, true, 0.1f, 1e-5f); };
  REQUIRE_GRADCHECK(f, std::vector<Tensor>{randn({7, 3}, rng, 1.0f, true)});
}

TEST_CASE("layernorm: fast kernels match the naive ones", "[norm]") {
  Rng rng(13);
  // (O, C, I): token rows (I = 1) and per-pixel tiles, I across several tiles with a ragged end.
  for (Shape s : {Shape{37, 29, 1}, Shape{3, 11, 1}, Shape{3, 13, 133}, Shape{2, 5, 7}, Shape{700, 67, 1},
                  Shape{3, 13, 1001}}) {
    const int64_t O = s[0], C = s[1], I = s[2];
    INFO("O " << O << " C " << C << " I " << I);
    Tensor x = randn(s, rng, 2.0f), w = randn({C}, rng), b = randn({C}, rng), g = randn(s, rng);
    for (int affine = 0; affine < 2; affine++) {
      const float* wp = affine ? w.f32() : nullptr;
      const float* bp = affine ? b.f32() : nullptr;
      Tensor y = Tensor::empty(s), yr = Tensor::empty(s);
      Tensor m = Tensor::empty({O * I}), r = Tensor::empty({O * I}), mr = Tensor::empty({O * I}),
             rr = Tensor::empty({O * I});
      cpu::layernorm_forward(y.f32(), m.f32(), r.f32(), x.f32(), wp, bp, O, C, I, 1e-5f);
      cpu::layernorm_forward_naive(yr.f32(), mr.f32(), rr.f32(), x.f32(), wp, bp, O, C, I, 1e-5f);
      REQUIRE_CLOSE(y, yr, 1e-5, 1e-5);
      REQUIRE_CLOSE(m, mr, 1e-5, 1e-5);
      REQUIRE_CLOSE(r, rr, 1e-5, 1e-5);
      Tensor dx = Tensor::full(s, 7.0f), dw = Tensor::full({C}, 7.0f), db = Tensor::full({C}, 7.0f);
      Tensor dxr = Tensor::empty(s), dwr = Tensor::empty({C}), dbr = Tensor::empty({C});
      cpu::layernorm_backward(dx.f32(), dw.f32(), db.f32(), g.f32(), x.f32(), m.f32(), r.f32(), wp, O, C, I);
      cpu::layernorm_backward_naive(dxr.f32(), dwr.f32(), dbr.f32(), g.f32(), x.f32(), m.f32(), r.f32(), wp, O, C,
                                    I);
      REQUIRE_CLOSE(dx, dxr, 1e-5, 1e-4);
      REQUIRE_CLOSE(dw, dwr, 1e-4, 1e-5);
      REQUIRE_CLOSE(db, dbr, 1e-4, 1e-5);
    }
  }
}

TEST_CASE("batchnorm: fast kernels match the naive ones", "[norm]") {
  Rng rng(14);
  // (O, C, I): channels-last rows (I = 1, O above the block count) and NCHW.
  for (Shape s : {Shape{131, 7, 1}, Shape{5, 3, 1}, Shape{3, 5, 37}, Shape{2, 9, 1}, Shape{1500, 29, 1},
                  Shape{3, 17, 777}}) {
    const int64_t O = s[0], C = s[1], I = s[2];
    INFO("O " << O << " C " << C << " I " << I);
    Tensor x = shifted(randn(s, rng, 2.0f), 3.0f), w = randn({C}, rng), b = randn({C}, rng), g = randn(s, rng);
    Tensor m = Tensor::empty({C}), r = Tensor::empty({C}), mr = Tensor::empty({C}), rr = Tensor::empty({C});
    Tensor rm = randn({C}, rng), rv = randu({C}, rng, 0.5f, 2.0f);
    Tensor rm2 = rm.clone(), rv2 = rv.clone();
    cpu::batchnorm_train_stats(m.f32(), r.f32(), rm.f32(), rv.f32(), x.f32(), O, C, I, 0.1f, 1e-5f);
    cpu::batchnorm_train_stats_naive(mr.f32(), rr.f32(), rm2.f32(), rv2.f32(), x.f32(), O, C, I, 0.1f, 1e-5f);
    REQUIRE_CLOSE(m, mr, 1e-5, 1e-5);
    REQUIRE_CLOSE(r, rr, 1e-5, 1e-5);
    REQUIRE_CLOSE(rm, rm2, 1e-5, 1e-5);
    REQUIRE_CLOSE(rv, rv2, 1e-5, 1e-5);
    for (int affine = 0; affine < 2; affine++) {
      const float* wp = affine ? w.f32() : nullptr;
      const float* bp = affine ? b.f32() : nullptr;
      Tensor y = Tensor::empty(s), yr = Tensor::empty(s);
      cpu::batchnorm_forward(y.f32(), x.f32(), m.f32(), r.f32(), wp, bp, O, C, I);
      cpu::batchnorm_forward_naive(yr.f32(), x.f32(), m.f32(), r.f32(), wp, bp, O, C, I);
      REQUIRE_CLOSE(y, yr, 1e-5, 1e-5);
      for (bool training : {true, false}) {
        Tensor dx = Tensor::full(s, 7.0f), dw = Tensor::full({C}, 7.0f), db = Tensor::full({C}, 7.0f);
        Tensor dxr = Tensor::empty(s), dwr = Tensor::empty({C}), dbr = Tensor::empty({C});
        cpu::batchnorm_backward(dx.f32(), dw.f32(), db.f32(), g.f32(), x.f32(), m.f32(), r.f32(), wp, O, C, I,
                                training);
        cpu::batchnorm_backward_naive(dxr.f32(), dwr.f32(), dbr.f32(), g.f32(), x.f32(), m.f32(), r.f32(), wp, O,
                                      C, I, training);
        REQUIRE_CLOSE(dx, dxr, 1e-5, 1e-4);
        REQUIRE_CLOSE(dw, dwr, 1e-4, 1e-5);
        REQUIRE_CLOSE(db, dbr, 1e-4, 1e-5);
      }
    }
  }
}

TEST_CASE("layernorm: rows have zero mean and unit variance", "[norm]") {
  Rng rng(15);
  // Token layout: each row of the last dim.
  Tensor x = shifted(randn({4, 6, 10}, rng, 3.0f), 5.0f);
  std::vector<float> y = layernorm(x, Tensor(), Tensor(), 1e-6f).to_vector();
  for (int64_t r = 0; r < 24; r++) {
    double m = 0, v = 0;
    for (int64_t c = 0; c < 10; c++) m += y[r * 10 + c];
    m /= 10;
    for (int64_t c = 0; c < 10; c++) v += (y[r * 10 + c] - m) * (y[r * 10 + c] - m);
    REQUIRE(std::fabs(m) < 1e-5);
    REQUIRE(std::fabs(v / 10 - 1.0) < 1e-4);
  }
  // Per-pixel layout (B, C, H, W), dim 1: each pixel over C.
  Tensor z = layernorm(shifted(randn({2, 5, 3, 7}, rng, 2.0f), -4.0f), Tensor(), Tensor(), 1e-6f, 1);
  for (int64_t b = 0; b < 2; b++)
    for (int64_t p = 0; p < 21; p++) {
      double m = 0, v = 0;
      for (int64_t c = 0; c < 5; c++) m += z.at({b, c, p / 7, p % 7});
      m /= 5;
      for (int64_t c = 0; c < 5; c++) v += std::pow(z.at({b, c, p / 7, p % 7}) - m, 2);
      REQUIRE(std::fabs(m) < 1e-5);
      REQUIRE(std::fabs(v / 5 - 1.0) < 1e-4);
    }
  // Affine: y = xhat * w + b on a row known by hand: x = (1, 2, 3), mean 2, var 2/3.
  Tensor h = layernorm(Tensor::from_vector({1, 3}, {1, 2, 3}), Tensor::from_vector({3}, {1, 2, 3}),
                       Tensor::from_vector({3}, {0, 1, 0}), 0.0f);
  const float s = std::sqrt(1.5f);
  REQUIRE_CLOSE(h.to_vector(), (std::vector<float>{-s, 1.0f, 3 * s}), 1e-6, 1e-6);
}

TEST_CASE("batchnorm: running statistics and eval by hand", "[norm]") {
  // x (M = 4, C = 2) channels-last. Channel 0: 1, 2, 3, 6 (mean 3, biased var 3.5,
  // unbiased 14/3). Channel 1: 0, 0, 4, 4 (mean 2, biased var 4, unbiased 16/3).
  Tensor x = Tensor::from_vector({4, 2}, {1, 0, 2, 0, 3, 4, 6, 4});
  Tensor rm = Tensor::from_vector({2}, {0.5f, -1.0f}), rv = Tensor::from_vector({2}, {1.0f, 2.0f});
  Tensor y = batchnorm(x, Tensor(), Tensor(), rm, rv, true, 0.1f, 0.0f);
  REQUIRE_CLOSE(rm.to_vector(), (std::vector<float>{0.9f * 0.5f + 0.1f * 3, 0.9f * -1.0f + 0.1f * 2}), 1e-6, 1e-6);
  REQUIRE_CLOSE(rv.to_vector(), (std::vector<float>{0.9f * 1 + 0.1f * 14.0f / 3, 0.9f * 2 + 0.1f * 16.0f / 3}), 1e-6,
                1e-6);
  // Normalised with the biased variance.
  const float a = 1.0f / std::sqrt(3.5f);
  REQUIRE_CLOSE(y.to_vector(), (std::vector<float>{-2 * a, -1, -1 * a, -1, 0, 1, 3 * a, 1}), 1e-6, 1e-6);

  // The same data in NCHW, (B = 2, C = 2, H = 1, W = 2), channel dim 1.
  Tensor xn = Tensor::from_vector({2, 2, 1, 2}, {1, 2, 0, 0, 3, 6, 4, 4});
  Tensor rm2 = Tensor::from_vector({2}, {0.5f, -1.0f}), rv2 = Tensor::from_vector({2}, {1.0f, 2.0f});
  batchnorm(xn, Tensor(), Tensor(), rm2, rv2, true, 0.1f, 0.0f, 1);
  REQUIRE_CLOSE(rm2, rm, 1e-6, 1e-6);
  REQUIRE_CLOSE(rv2, rv, 1e-6, 1e-6);

  // Eval: (x - running_mean) / sqrt(running_var + eps) * w + b; running stats unchanged.
  Tensor rme = Tensor::from_vector({2}, {1.0f, -2.0f}), rve = Tensor::from_vector({2}, {4.0f, 0.25f});
  Tensor ye = batchnorm(Tensor::from_vector({1, 2}, {3, 0}), Tensor::from_vector({2}, {2, 1}),
                        Tensor::from_vector({2}, {0.5f, 0}), rme, rve, false, 0.1f, 0.0f);
  REQUIRE_CLOSE(ye.to_vector(), (std::vector<float>{(3 - 1) / 2.0f * 2 + 0.5f, (0 + 2) / 0.5f}), 1e-6, 1e-6);
  REQUIRE(rme.to_vector() == std::vector<float>{1.0f, -2.0f});
  REQUIRE(rve.to_vector() == std::vector<float>{4.0f, 0.25f});
}

TEST_CASE("norm: bad inputs name the op and the shapes", "[norm]") {
  Tensor x = Tensor::zeros({2, 5, 4});
  REQUIRE_THROWS_WITH(layernorm(x, Tensor::ones({5}), Tensor(), 1e-5f),
                      Catch::Contains("layernorm") && Catch::Contains("[2, 5, 4]") && Catch::Contains("[5]"));
  REQUIRE_THROWS_WITH(layernorm(x, Tensor(), Tensor::zeros({4, 1}), 1e-5f),
                      Catch::Contains("layernorm") && Catch::Contains("[4, 1]"));
  REQUIRE_THROWS_WITH(layernorm(x, Tensor(), Tensor(), 1e-5f, 3), Catch::Contains("layernorm"));
  Tensor rm = Tensor::zeros({4}), rv = Tensor::ones({4});
  REQUIRE_THROWS_WITH(batchnorm(x, Tensor::ones({5}), Tensor(), rm, rv, true, 0.1f, 1e-5f),
                      Catch::Contains("batchnorm") && Catch::Contains("[2, 5, 4]") && Catch::Contains("[5]"));
  Tensor rm5 = Tensor::zeros({5});
  REQUIRE_THROWS_WITH(batchnorm(x, Tensor(), Tensor(), rm5, rv, true, 0.1f, 1e-5f),
                      Catch::Contains("batchnorm") && Catch::Contains("running_mean") && Catch::Contains("[5]"));
  Tensor none;
  REQUIRE_THROWS_WITH(batchnorm(x, Tensor(), Tensor(), none, none, false, 0.1f, 1e-5f),
                      Catch::Contains("batchnorm") && Catch::Contains("eval"));
  Tensor one = Tensor::zeros({1, 4});
  REQUIRE_THROWS_WITH(batchnorm(one, Tensor(), Tensor(), rm, rv, true, 0.1f, 1e-5f),
                      Catch::Contains("batchnorm") && Catch::Contains("more than one value"));
}

TEST_CASE("norm: reductions do not depend on the thread count", "[norm]") {
#ifdef _OPENMP
  Rng rng(16);
  std::vector<std::vector<float>> runs[2];
  for (int t = 0; t < 2; t++) {
    Rng r = rng;
    const int prev = omp_get_max_threads();
    omp_set_num_threads(t == 0 ? 1 : 3);
    std::vector<std::vector<float>> out;
    for (Shape s : {Shape{1500, 29, 1}, Shape{3, 17, 777}}) {
      const int64_t O = s[0], C = s[1], I = s[2];
      Tensor x = randn(s, r), g = randn(s, r), w = randn({C}, r);
      Tensor m = Tensor::empty({O * I}), rs = Tensor::empty({O * I}), y = Tensor::empty(s);
      Tensor dw = Tensor::empty({C}), db = Tensor::empty({C});
      cpu::layernorm_forward(y.f32(), m.f32(), rs.f32(), x.f32(), w.f32(), nullptr, O, C, I, 1e-5f);
      cpu::layernorm_backward(nullptr, dw.f32(), db.f32(), g.f32(), x.f32(), m.f32(), rs.f32(), w.f32(), O, C, I);
      out.push_back(dw.to_vector()), out.push_back(db.to_vector());
      Tensor bm = Tensor::empty({C}), br = Tensor::empty({C});
      cpu::batchnorm_train_stats(bm.f32(), br.f32(), nullptr, nullptr, x.f32(), O, C, I, 0.1f, 1e-5f);
      cpu::batchnorm_backward(nullptr, dw.f32(), db.f32(), g.f32(), x.f32(), bm.f32(), br.f32(), w.f32(), O, C, I,
                              true);
      out.push_back(bm.to_vector()), out.push_back(br.to_vector());
      out.push_back(dw.to_vector()), out.push_back(db.to_vector());
    }
    omp_set_num_threads(prev);
    runs[t] = out;
  }
  REQUIRE(runs[0] == runs[1]);
#endif
}
