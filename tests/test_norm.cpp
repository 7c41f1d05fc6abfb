// tests/test_norm.cpp - layernorm, batchnorm and batchnorm_sync: gradchecks,
// fast kernels against the naive ones, hand-computed values, bad inputs;
// synchronised BatchNorm over two simulated ranks (two threads) against
// BatchNorm on the whole batch.
// Shape letters: x viewed as (O, C, I) around the normalised dimension; B batch.
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/cpu/norm.h"
#include "nn/layers.h"
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

// ---- synchronised BatchNorm ------------------------------------------------------

namespace {

const RankSum kOneRank = [](float*, int64_t, Device) {};  // a run of one process: nothing to add

// Two ranks simulated by two threads: each call waits for the other rank's
// call, both compute buffer0 + buffer1 (the same order, so the same bits),
// wait again (no rank overwrites its buffer while the other still reads it),
// then write the sum into their own buffer.
class TwoRanks {
 public:
  RankSum rank(int r) {
    return [this, r](float* p, int64_t n, Device) { sum(r, p, n); };
  }
  int calls = 0;            // calls of rank 0
  bool mismatch = false;    // the ranks passed different lengths

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;
  int64_t generation_ = 0;
  float* buf_[2] = {nullptr, nullptr};
  int64_t n_[2] = {0, 0};

  void barrier() {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t g = generation_;
    if (++waiting_ == 2) {
      waiting_ = 0, generation_++;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != g; });
    }
  }
  void sum(int r, float* p, int64_t n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      buf_[r] = p, n_[r] = n;
      if (r == 0) calls++;
    }
    barrier();
    std::vector<float> s((size_t)n);
    if (n_[0] != n_[1]) mismatch = true;
    else
      for (int64_t i = 0; i < n; i++) s[i] = buf_[0][i] + buf_[1][i];
    barrier();
    std::copy(s.begin(), s.end(), p);
  }
};

Tensor rows(const Tensor& t, int64_t start, int64_t len) { return view::narrow(t, 0, start, len).clone(); }

}  // namespace

TEST_CASE("gradcheck: batchnorm_sync", "[norm][gradcheck]") {
  Rng rng(17);
  struct Case {
    Shape shape;
    int64_t dim;
    bool affine, running;
  };
  for (const Case& c : {Case{{5, 3, 4}, -1, true, true}, Case{{2, 4, 3, 5}, 1, true, false},
                        Case{{5, 3, 4}, -1, false, false}, Case{{2, 4, 3, 5}, 1, false, true},
                        Case{{7, 3}, -1, true, false}}) {
    INFO("shape " << shape_str(c.shape) << " dim " << c.dim << " affine " << c.affine << " running " << c.running);
    int64_t C = c.shape[c.dim < 0 ? c.shape.size() - 1 : c.dim];
    // The running mean (the shift of the sums) changes at every forward; the output does not depend on it.
    Tensor rm = c.running ? randn({C}, rng, 0.5f) : Tensor(), rv = c.running ? randu({C}, rng, 0.5f, 2.0f) : Tensor();
    std::vector<Tensor> in = {randn(c.shape, rng, 1.0f, true)};
    if (c.affine) in.push_back(randn({C}, rng, 1.0f, true)), in.push_back(randn({C}, rng, 1.0f, true));
    auto f = [&](const std::vector<Tensor>& t) {
      return batchnorm_sync(t[0], t.size() > 1 ? t[1] : Tensor(), t.size() > 2 ? t[2] : Tensor(), rm, rv, 0.1f,
                            1e-5f, c.dim, kOneRank);
    };
    REQUIRE_GRADCHECK(f, in);
  }
}

TEST_CASE("batchnorm_sync: with one rank it equals batchnorm in training", "[norm]") {
  Rng rng(18);
  struct Case {
    Shape shape;
    int64_t dim;
    bool affine, running;
  };
  for (const Case& c : {Case{{37, 5}, -1, true, true}, Case{{3, 7, 5, 4}, 1, true, true},
                        Case{{2, 5, 3, 6}, -1, false, true}, Case{{3, 7, 5, 4}, 1, false, false},
                        Case{{200, 33}, -1, true, false}}) {
    INFO("shape " << shape_str(c.shape) << " dim " << c.dim << " affine " << c.affine << " running " << c.running);
    const int64_t C = c.shape[c.dim < 0 ? c.shape.size() - 1 : c.dim];
    Tensor x = shifted(randn(c.shape, rng, 2.0f), 3.0f), g = randn(c.shape, rng);
    Tensor w = randn({C}, rng), b = randn({C}, rng);
    Tensor rm = c.running ? randn({C}, rng) : Tensor(), rv = c.running ? randu({C}, rng, 0.5f, 2.0f) : Tensor();
    Tensor rm2 = c.running ? rm.clone() : Tensor(), rv2 = c.running ? rv.clone() : Tensor();
    Tensor xa = x.clone(), xb = x.clone();
    xa.set_requires_grad(true), xb.set_requires_grad(true);
    Tensor wa, ba, wb, bb;
    if (c.affine) {
      wa = w.clone(), ba = b.clone(), wb = w.clone(), bb = b.clone();
      for (Tensor* t : {&wa, &ba, &wb, &bb}) t->set_requires_grad(true);
    }
    for (int step = 0; step < 2; step++) {  // the second step shifts the sums by the updated running mean
      INFO("step " << step);
      Tensor y = batchnorm(xa, wa, ba, rm, rv, true, 0.1f, 1e-5f, c.dim);
      Tensor ys = batchnorm_sync(xb, wb, bb, rm2, rv2, 0.1f, 1e-5f, c.dim, kOneRank);
      REQUIRE_CLOSE(ys, y, 1e-5, 1e-5);
      if (c.running) {
        REQUIRE_CLOSE(rm2, rm, 1e-5, 1e-5);
        REQUIRE_CLOSE(rv2, rv, 1e-5, 1e-5);
      }
      for (Tensor* t : {&xa, &xb, &wa, &ba, &wb, &bb})
        if (t->defined()) t->set_grad(Tensor());
      backward(y, g);
      backward(ys, g);
      REQUIRE_CLOSE(xb.grad(), xa.grad(), 1e-5, 1e-4);
      if (c.affine) {
        REQUIRE_CLOSE(wb.grad(), wa.grad(), 1e-4, 1e-5);
        REQUIRE_CLOSE(bb.grad(), ba.grad(), 1e-4, 1e-5);
      }
    }
  }
}

TEST_CASE("batchnorm_sync: two ranks with unequal shards equal batchnorm on the whole batch", "[norm]") {
  Rng rng(19);
  struct Case {
    Shape shape;  // the whole batch; split along dim 0 into B0 and B - B0 samples
    int64_t dim, B0;
    bool affine, running;
  };
  for (const Case& c : {Case{{7, 5, 6}, -1, 3, true, true}, Case{{9, 4, 3, 5}, 1, 2, true, true},
                        Case{{11, 13}, -1, 7, false, false}, Case{{5, 3, 6, 7}, 1, 4, false, true},
                        Case{{6, 2, 3, 29}, -1, 1, true, false}}) {
    const int64_t B = c.shape[0], B0 = c.B0, B1 = B - c.B0;
    const int64_t C = c.shape[c.dim < 0 ? c.shape.size() - 1 : c.dim];
    INFO("shape " << shape_str(c.shape) << " dim " << c.dim << " shards " << B0 << " + " << B1 << " affine "
                  << c.affine << " running " << c.running);
    Tensor w = randn({C}, rng), b = randn({C}, rng);
    Tensor rm = c.running ? randn({C}, rng) : Tensor(), rv = c.running ? randu({C}, rng, 0.5f, 2.0f) : Tensor();
    // The whole batch on one process.
    Tensor wa = c.affine ? w.clone() : Tensor(), ba = c.affine ? b.clone() : Tensor();
    if (c.affine) wa.set_requires_grad(true), ba.set_requires_grad(true);
    // Two replicas, each with its own parameters and running statistics.
    Tensor wr[2], br[2], rmr[2], rvr[2];
    for (int r = 0; r < 2; r++) {
      if (c.affine) {
        wr[r] = w.clone(), br[r] = b.clone();
        wr[r].set_requires_grad(true), br[r].set_requires_grad(true);
      }
      if (c.running) rmr[r] = rm.clone(), rvr[r] = rv.clone();
    }
    for (int step = 0; step < 2; step++) {  // the second step shifts the sums by the updated running mean
      INFO("step " << step);
      Tensor x = shifted(randn(c.shape, rng, 2.0f), -3.0f), g = randn(c.shape, rng);
      Tensor xa = x.clone();
      xa.set_requires_grad(true);
      Tensor y = batchnorm(xa, wa, ba, rm, rv, true, 0.1f, 1e-5f, c.dim);
      backward(y, g);

      TwoRanks ranks;
      Tensor xs[2] = {rows(x, 0, B0), rows(x, B0, B1)}, gs[2] = {rows(g, 0, B0), rows(g, B0, B1)}, ys[2];
      for (Tensor& t : xs) t.set_requires_grad(true);
      if (c.affine)
        for (int r = 0; r < 2; r++) wr[r].set_grad(Tensor()), br[r].set_grad(Tensor());
      std::string errors[2];
      auto run_rank = [&](int r) {
        try {
          ys[r] = batchnorm_sync(xs[r], wr[r], br[r], rmr[r], rvr[r], 0.1f, 1e-5f, c.dim, ranks.rank(r));
          backward(ys[r], gs[r]);
        } catch (const std::exception& e) {
          errors[r] = e.what();
        }
      };
      std::thread t1(run_rank, 1);
      run_rank(0);
      t1.join();
      REQUIRE(errors[0].empty());
      REQUIRE(errors[1].empty());
      REQUIRE(!ranks.mismatch);
      REQUIRE(ranks.calls == 2);  // one sum in forward, one in backward
      REQUIRE_CLOSE(ys[0], rows(y, 0, B0), 1e-5, 1e-5);
      REQUIRE_CLOSE(ys[1], rows(y, B0, B1), 1e-5, 1e-5);
      if (c.running)
        for (int r = 0; r < 2; r++) {
          INFO("running statistics of rank " << r);
          REQUIRE_CLOSE(rmr[r], rm, 1e-5, 1e-5);
          REQUIRE_CLOSE(rvr[r], rv, 1e-5, 1e-5);
        }
      INFO("dx");
      REQUIRE_CLOSE(xs[0].grad(), rows(xa.grad(), 0, B0), 1e-5, 1e-4);
      REQUIRE_CLOSE(xs[1].grad(), rows(xa.grad(), B0, B1), 1e-5, 1e-4);
      if (c.affine) {
        INFO("dweight0 + dweight1, dbias0 + dbias1");
        std::vector<float> dw0 = wr[0].grad().to_vector(), dw1 = wr[1].grad().to_vector();
        std::vector<float> db0 = br[0].grad().to_vector(), db1 = br[1].grad().to_vector(), dw(C), db(C);
        for (int64_t i = 0; i < C; i++) dw[i] = dw0[i] + dw1[i], db[i] = db0[i] + db1[i];
        REQUIRE_CLOSE(dw, wa.grad().to_vector(), 1e-4, 1e-5);
        REQUIRE_CLOSE(db, ba.grad().to_vector(), 1e-4, 1e-5);
        // dbias is the rank's own sum of its upstream gradient.
        const int64_t I = c.dim < 0 ? 1 : gs[0].numel() / (B0 * C);
        std::vector<float> g0 = gs[0].to_vector(), own(C, 0.0f);
        for (int64_t e = 0; e < (int64_t)g0.size(); e++) own[(e / I) % C] += g0[e];
        REQUIRE_CLOSE(db0, own, 1e-4, 1e-5);
        wa.set_grad(Tensor()), ba.set_grad(Tensor());
      }
    }
  }
}

TEST_CASE("batchnorm_sync: fast kernels match the naive ones and batchnorm_train_stats", "[norm]") {
  Rng rng(20);
  for (Shape s : {Shape{131, 7, 1}, Shape{5, 3, 1}, Shape{3, 5, 37}, Shape{1500, 29, 1}, Shape{3, 17, 777}}) {
    const int64_t O = s[0], C = s[1], I = s[2];
    INFO("O " << O << " C " << C << " I " << I);
    Tensor x = shifted(randn(s, rng, 2.0f), 3.0f), w = randn({C}, rng), g = randn(s, rng);
    Tensor shift = shifted(randn({C}, rng, 0.3f), 3.0f);
    for (int with_shift = 0; with_shift < 2; with_shift++) {
      INFO("shift " << with_shift);
      const float* sp = with_shift ? shift.f32() : nullptr;
      Tensor sums = Tensor::full({2 * C + 1}, 7.0f), sums_r = Tensor::full({2 * C + 1}, 7.0f);
      cpu::batchnorm_sums(sums.f32(), x.f32(), sp, O, C, I);
      cpu::batchnorm_sums_naive(sums_r.f32(), x.f32(), sp, O, C, I);
      REQUIRE_CLOSE(sums, sums_r, 1e-5, 1e-6);
      REQUIRE(sums.f32()[2 * C] == (float)(O * I));
      // One rank: the same statistics and running updates as batchnorm_train_stats.
      Tensor rm = with_shift ? shift.clone() : randn({C}, rng), rv = randu({C}, rng, 0.5f, 2.0f);
      Tensor rm2 = rm.clone(), rv2 = rv.clone();
      Tensor m = Tensor::empty({C}), r = Tensor::empty({C}), m2 = Tensor::empty({C}), r2 = Tensor::empty({C});
      cpu::batchnorm_sync_stats(m.f32(), r.f32(), rm.f32(), rv.f32(), sums.f32(), sp, C, 0.1f, 1e-5f);
      cpu::batchnorm_train_stats(m2.f32(), r2.f32(), rm2.f32(), rv2.f32(), x.f32(), O, C, I, 0.1f, 1e-5f);
      REQUIRE_CLOSE(m, m2, 1e-5, 1e-5);
      REQUIRE_CLOSE(r, r2, 1e-5, 1e-4);
      REQUIRE_CLOSE(rm, rm2, 1e-5, 1e-5);
      REQUIRE_CLOSE(rv, rv2, 1e-5, 1e-4);
    }
    // dx from global sums: against the naive kernel, and with this rank's sums equal to batchnorm_backward.
    Tensor m = Tensor::empty({C}), r = Tensor::empty({C});
    cpu::batchnorm_train_stats(m.f32(), r.f32(), nullptr, nullptr, x.f32(), O, C, I, 0.1f, 1e-5f);
    Tensor gsum = Tensor::empty({2 * C}), count = Tensor::from_vector({1}, {(float)(O * I)});
    cpu::batchnorm_backward(nullptr, gsum.f32(), gsum.f32() + C, g.f32(), x.f32(), m.f32(), r.f32(), w.f32(), O, C, I,
                            true);
    for (int affine = 0; affine < 2; affine++) {
      const float* wp = affine ? w.f32() : nullptr;
      Tensor dx = Tensor::full(s, 7.0f), dxr = Tensor::full(s, 7.0f), dxb = Tensor::empty(s);
      cpu::batchnorm_backward_dx_global(dx.f32(), g.f32(), x.f32(), m.f32(), r.f32(), wp, gsum.f32(), count.f32(), O,
                                        C, I);
      cpu::batchnorm_backward_dx_global_naive(dxr.f32(), g.f32(), x.f32(), m.f32(), r.f32(), wp, gsum.f32(),
                                              count.f32(), O, C, I);
      cpu::batchnorm_backward(dxb.f32(), nullptr, nullptr, g.f32(), x.f32(), m.f32(), r.f32(), wp, O, C, I, true);
      REQUIRE_CLOSE(dx, dxr, 1e-5, 1e-4);
      REQUIRE_CLOSE(dx, dxb, 1e-5, 1e-4);
    }
  }
}

TEST_CASE("batchnorm_sync: statistics from summed buffers by hand", "[norm]") {
  // Two ranks, C = 2. Channel 0 values: rank 0 {1, 2}, rank 1 {3, 6} (mean 3, biased var 3.5,
  // unbiased 14/3). Channel 1: rank 0 {0, 0}, rank 1 {4, 4} (mean 2, var 4, unbiased 16/3).
  // Shift (1, -1): S1 = sum (x - shift), S2 = sum (x - shift)^2 over both ranks, count 4.
  const float s1_0 = (0 + 1) + (2 + 5), s2_0 = (0 + 1) + (4 + 25);
  const float s1_1 = (1 + 1) + (5 + 5), s2_1 = (1 + 1) + (25 + 25);
  Tensor sums = Tensor::from_vector({5}, {s1_0, s1_1, s2_0, s2_1, 4});
  Tensor shift = Tensor::from_vector({2}, {1, -1});
  Tensor rm = shift.clone(), rv = Tensor::from_vector({2}, {1.0f, 2.0f});
  Tensor m = Tensor::empty({2}), r = Tensor::empty({2});
  cpu::batchnorm_sync_stats(m.f32(), r.f32(), rm.f32(), rv.f32(), sums.f32(), rm.f32(), 2, 0.1f, 0.0f);
  REQUIRE_CLOSE(m.to_vector(), (std::vector<float>{3, 2}), 1e-6, 1e-6);
  REQUIRE_CLOSE(r.to_vector(), (std::vector<float>{1 / std::sqrt(3.5f), 0.5f}), 1e-6, 1e-6);
  REQUIRE_CLOSE(rm.to_vector(), (std::vector<float>{0.9f * 1 + 0.1f * 3, 0.9f * -1 + 0.1f * 2}), 1e-6, 1e-6);
  REQUIRE_CLOSE(rv.to_vector(), (std::vector<float>{0.9f * 1 + 0.1f * 14.0f / 3, 0.9f * 2 + 0.1f * 16.0f / 3}), 1e-6,
                1e-6);
  // The same from the ops: rank 0 holds two rows, rank 1 two rows, channels-last.
  TwoRanks ranks;
  Tensor x[2] = {Tensor::from_vector({2, 2}, {1, 0, 2, 0}), Tensor::from_vector({2, 2}, {3, 4, 6, 4})};
  Tensor rms[2] = {shift.clone(), shift.clone()}, rvs[2] = {Tensor::from_vector({2}, {1.0f, 2.0f}), Tensor()};
  rvs[1] = rvs[0].clone();
  Tensor y[2];
  std::thread t1([&] { y[1] = batchnorm_sync(x[1], Tensor(), Tensor(), rms[1], rvs[1], 0.1f, 0.0f, -1, ranks.rank(1)); });
  y[0] = batchnorm_sync(x[0], Tensor(), Tensor(), rms[0], rvs[0], 0.1f, 0.0f, -1, ranks.rank(0));
  t1.join();
  const float a = 1.0f / std::sqrt(3.5f);
  REQUIRE_CLOSE(y[0].to_vector(), (std::vector<float>{-2 * a, -1, -1 * a, -1}), 1e-6, 1e-6);
  REQUIRE_CLOSE(y[1].to_vector(), (std::vector<float>{0, 1, 3 * a, 1}), 1e-6, 1e-6);
  for (int k = 0; k < 2; k++) {
    REQUIRE_CLOSE(rms[k], rm, 1e-6, 1e-6);
    REQUIRE_CLOSE(rvs[k], rv, 1e-6, 1e-6);
  }
}

TEST_CASE("batchnorm_sync: bad inputs name the op and the shapes", "[norm]") {
  Tensor x = Tensor::zeros({2, 5, 4}), rm = Tensor::zeros({4}), rv = Tensor::ones({4}), none;
  REQUIRE_THROWS_WITH(batchnorm_sync(x, Tensor::ones({5}), Tensor(), rm, rv, 0.1f, 1e-5f, -1, kOneRank),
                      Catch::Contains("batchnorm_sync") && Catch::Contains("[2, 5, 4]") && Catch::Contains("[5]"));
  REQUIRE_THROWS_WITH(batchnorm_sync(x, Tensor(), Tensor(), rm, none, 0.1f, 1e-5f, -1, kOneRank),
                      Catch::Contains("batchnorm_sync") && Catch::Contains("both"));
  REQUIRE_THROWS_WITH(batchnorm_sync(x, Tensor(), Tensor(), rm, rv, 0.1f, 1e-5f, -1, RankSum()),
                      Catch::Contains("batchnorm_sync") && Catch::Contains("sum_over_ranks"));
  // One value per channel over all ranks.
  REQUIRE_THROWS_WITH(batchnorm_sync(Tensor::zeros({1, 4}), Tensor(), Tensor(), rm, rv, 0.1f, 1e-5f, -1, kOneRank),
                      Catch::Contains("batchnorm_sync") && Catch::Contains("more than one value"));
  // ... but one value per rank is fine when the ranks together hold more.
  const RankSum doubled = [](float* p, int64_t n, Device) {
    for (int64_t i = 0; i < n; i++) p[i] *= 2;  // two ranks holding the same values
  };
  Tensor one = Tensor::from_vector({1, 2}, {3, -1});
  Tensor y = batchnorm_sync(one, Tensor(), Tensor(), none, none, 0.1f, 1e-5f, -1, doubled);
  REQUIRE_CLOSE(y.to_vector(), (std::vector<float>{0, 0}), 1e-6, 1e-6);
}

TEST_CASE("batchnorm_sync: the BatchNorm layer uses it in training when sync is set", "[norm]") {
  Rng rng(21);
  BatchNorm plain(6), synced(6);
  int calls = 0;
  synced.sync = [&calls](float*, int64_t, Device) { calls++; };
  Tensor x = randn({5, 3, 6}, rng, 1.5f);
  Tensor y = plain.forward(x), ys = synced.forward(x);
  REQUIRE(calls == 1);
  REQUIRE_CLOSE(ys, y, 1e-5, 1e-5);
  REQUIRE_CLOSE(synced.running_mean, plain.running_mean, 1e-6, 1e-5);
  REQUIRE_CLOSE(synced.running_var, plain.running_var, 1e-6, 1e-5);
  REQUIRE(synced.num_batches_tracked.i64()[0] == 1);
  REQUIRE(plain.num_batches_tracked.i64()[0] == 1);
  synced.eval(), plain.eval();
  REQUIRE_CLOSE(synced.forward(x), plain.forward(x), 1e-6, 1e-6);
  REQUIRE(calls == 1);  // eval uses the running statistics: no sum over the ranks
  REQUIRE(synced.num_batches_tracked.i64()[0] == 1);
}
