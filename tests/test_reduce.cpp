// tests/test_reduce.cpp - sum, mean, l2norm, global_avg_pool, softmax and
// log_softmax: gradchecks, hand-computed values, fast kernels against the
// naive ones, determinism and errors.
#include <cmath>
#include <cstring>

#include "kernels/cpu/exp_fast.h"
#include "kernels/cpu/reduce.h"
#include "tests/helpers.h"
#ifdef _OPENMP
#include <omp.h>
#endif

using namespace nala;
using namespace nala::test;

namespace {

std::vector<float> arange(int64_t n) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; i++) v[i] = (float)i;
  return v;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void set_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n);
#else
  (void)n;
#endif
}

int get_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

// ---- gradchecks -----------------------------------------------------------

TEST_CASE("gradcheck: sum", "[reduce][gradcheck]") {
  Rng rng(1);
  const std::vector<std::vector<int64_t>> dim_sets = {{1}, {-1}, {0, 2}, {0, 1}, {2, 0, 1}, {-3}};
  for (bool keepdim : {false, true})
    for (const auto& dims : dim_sets) {
      INFO("dims size " << dims.size() << " first " << dims[0] << " keepdim " << keepdim);
      Tensor x = randn({3, 5, 4}, rng, 1.0f, true);
      REQUIRE_GRADCHECK([&](const std::vector<Tensor>& in) { return sum(in[0], dims, keepdim); },
                        std::vector<Tensor>{x});
    }
  Tensor x = randn({2, 3, 5, 2}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return sum(in[0], {1, 3}, true); }, std::vector<Tensor>{x});
}

TEST_CASE("gradcheck: sum all elements", "[reduce][gradcheck]") {
  Rng rng(2);
  Tensor x = randn({4, 7}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return sum(in[0]); }, std::vector<Tensor>{x});
}

TEST_CASE("gradcheck: mean", "[reduce][gradcheck]") {
  Rng rng(3);
  const std::vector<std::vector<int64_t>> dim_sets = {{0}, {-1}, {0, 2}, {1, 2}, {0, 1, 2}};
  for (bool keepdim : {false, true})
    for (const auto& dims : dim_sets) {
      Tensor x = randn({3, 5, 4}, rng, 1.0f, true);
      REQUIRE_GRADCHECK([&](const std::vector<Tensor>& in) { return mean(in[0], dims, keepdim); },
                        std::vector<Tensor>{x});
    }
  Tensor x = randn({5, 3}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return mean(in[0]); }, std::vector<Tensor>{x});
}

TEST_CASE("gradcheck: l2norm", "[reduce][gradcheck]") {
  Rng rng(4);
  for (int64_t dim : {0, 1, -1})
    for (bool keepdim : {false, true}) {
      Tensor x = randn({4, 7, 5}, rng, 1.0f, true);
      REQUIRE_GRADCHECK([&](const std::vector<Tensor>& in) { return l2norm(in[0], dim, keepdim, 1e-6f); },
                        std::vector<Tensor>{x});
    }
}

TEST_CASE("gradcheck: global_avg_pool", "[reduce][gradcheck]") {
  Rng rng(5);
  Tensor x4 = randn({2, 3, 5, 7}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return global_avg_pool(in[0]); }, std::vector<Tensor>{x4});
  Tensor x3 = randn({3, 9, 4}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return global_avg_pool(in[0]); }, std::vector<Tensor>{x3});
}

TEST_CASE("gradcheck: softmax", "[reduce][gradcheck]") {
  Rng rng(6);
  for (int64_t dim : {-1, 1, 0}) {
    Tensor x = randn({3, 5, 6}, rng, 1.0f, true);
    REQUIRE_GRADCHECK([&](const std::vector<Tensor>& in) { return softmax(in[0], dim); }, std::vector<Tensor>{x});
  }
}

TEST_CASE("gradcheck: log_softmax", "[reduce][gradcheck]") {
  Rng rng(7);
  for (int64_t dim : {-1, 1, 0}) {
    Tensor x = randn({3, 5, 6}, rng, 1.0f, true);
    REQUIRE_GRADCHECK([&](const std::vector<Tensor>& in) { return log_softmax(in[0], dim); },
                      std::vector<Tensor>{x});
  }
}

// ---- forward values ---------------------------------------------------------

TEST_CASE("reduce: sum and mean by hand", "[reduce]") {
  Tensor x = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  REQUIRE(sum(x, {0}).to_vector() == std::vector<float>{5, 7, 9});
  Tensor s1 = sum(x, {1}, true);
  REQUIRE(s1.shape() == Shape{2, 1});
  REQUIRE(s1.to_vector() == std::vector<float>{6, 15});
  REQUIRE(sum(x).shape() == Shape{});
  REQUIRE(sum(x).item() == 21.0f);
  REQUIRE(mean(x).item() == 3.5f);
  REQUIRE(mean(x, {-2}).to_vector() == std::vector<float>{2.5f, 3.5f, 4.5f});
  // Non-adjacent dims of a (2, 3, 4) arange: out[j] = sum_{i,k} x[i, j, k].
  Tensor y = Tensor::from_vector({2, 3, 4}, arange(24));
  Tensor s = sum(y, {0, 2});
  REQUIRE(s.shape() == Shape{3});
  for (int j = 0; j < 3; j++) {
    float ref = 0;
    for (int i = 0; i < 2; i++)
      for (int k = 0; k < 4; k++) ref += (float)(i * 12 + j * 4 + k);
    REQUIRE(s.to_vector()[j] == ref);
  }
  REQUIRE(sum(y, {2, 0}, true).shape() == Shape{1, 3, 1});
  // A non-contiguous input.
  Tensor t = transpose(x, 0, 1);  // (3, 2)
  REQUIRE(sum(t, {1}).to_vector() == std::vector<float>{5, 7, 9});
  // A 0-d tensor.
  REQUIRE(sum(Tensor::scalar(4.5f)).item() == 4.5f);
}

TEST_CASE("reduce: sum backward broadcasts the gradient", "[reduce]") {
  Tensor x = Tensor::from_vector({2, 3, 4}, arange(24)).set_requires_grad(true);
  Tensor m = mean(x, {0, 2});  // (3), R = 8
  backward(m, Tensor::from_vector({3}, {8, 16, 24}));
  std::vector<float> g = x.grad().to_vector();
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 4; k++) REQUIRE(g[i * 12 + j * 4 + k] == (float)(j + 1));
}

TEST_CASE("reduce: l2norm values and the floor", "[reduce]") {
  Tensor x = Tensor::from_vector({2, 2}, {3, 4, 0, 0}).set_requires_grad(true);
  Tensor n = l2norm(x, 1, false, 1e-12f);
  REQUIRE_CLOSE(n, Tensor::from_vector({2}, {5, 1e-12f}), 1e-6, 1e-6);
  backward(n, Tensor::ones({2}));
  std::vector<float> g = x.grad().to_vector();
  for (float v : g) REQUIRE(std::isfinite(v));
  REQUIRE_CLOSE(x.grad(), Tensor::from_vector({2, 2}, {0.6f, 0.8f, 0, 0}), 1e-6, 1e-6);
  // floor 0: an all-zero row gives 0 and a zero gradient, never NaN.
  Tensor z = Tensor::zeros({3, 4}).set_requires_grad(true);
  Tensor nz = l2norm(z, -1, true);
  REQUIRE(nz.shape() == Shape{3, 1});
  REQUIRE(nz.to_vector() == std::vector<float>{0, 0, 0});
  backward(nz, Tensor::ones({3, 1}));
  for (float v : z.grad().to_vector()) REQUIRE(v == 0.0f);
}

TEST_CASE("reduce: global_avg_pool by hand", "[reduce]") {
  Tensor x = Tensor::from_vector({1, 2, 2, 2}, {1, 10, 2, 20, 3, 30, 4, 40});
  Tensor y = global_avg_pool(x);
  REQUIRE(y.shape() == Shape{1, 2});
  REQUIRE_CLOSE(y, Tensor::from_vector({1, 2}, {2.5f, 25.0f}), 1e-6, 1e-6);
}

TEST_CASE("reduce: softmax rows sum to one and large logits are stable", "[reduce]") {
  Rng rng(8);
  Tensor x = randn({6, 33}, rng, 3.0f);
  Tensor p = softmax(x, -1);
  std::vector<float> v = p.to_vector();
  for (int r = 0; r < 6; r++) {
    double s = 0;
    for (int k = 0; k < 33; k++) s += v[r * 33 + k];
    REQUIRE(std::fabs(s - 1.0) < 1e-5);
  }
  Tensor p0 = softmax(x, 0);  // strided path: columns sum to one
  std::vector<float> w = p0.to_vector();
  for (int k = 0; k < 33; k++) {
    double s = 0;
    for (int r = 0; r < 6; r++) s += w[r * 33 + k];
    REQUIRE(std::fabs(s - 1.0) < 1e-5);
  }
  Tensor big = Tensor::from_vector({2, 3}, {1000, 1000, 1000, 1000, 1001, 1002});
  REQUIRE_CLOSE(softmax(big), Tensor::from_vector({2, 3}, {1.f / 3, 1.f / 3, 1.f / 3, 0.09003057f, 0.24472847f,
                                                          0.66524096f}),
                1e-6, 1e-5);
  Tensor ls = log_softmax(Tensor::from_vector({1, 2}, {1000, 0}));
  REQUIRE_CLOSE(ls, Tensor::from_vector({1, 2}, {0, -1000}), 1e-4, 1e-6);
  Tensor bigcol = Tensor::from_vector({2, 1}, {1000, -1000});
  REQUIRE_CLOSE(log_softmax(bigcol, 0), Tensor::from_vector({2, 1}, {0, -2000}), 1e-3, 1e-6);
  REQUIRE_CLOSE(softmax(Tensor::from_vector({2, 1}, {0, 0}), 0), Tensor::from_vector({2, 1}, {0.5f, 0.5f}), 1e-7,
                0);
}

// ---- fast kernels against the naive ones --------------------------------------

TEST_CASE("reduce: fast kernels match the naive ones on odd sizes", "[reduce]") {
  Rng rng(9);
  struct ORI { int64_t O, R, I; };
  // I == 1 rows, I > kBlock (several pieces), R chunked (few pieces, long R:
  // {1, 100003, 1}, {2, 20011, 3}, {1, 3001, 65}).
  const std::vector<ORI> cases = {{7, 13, 1},  {1, 100003, 1}, {3, 1001, 7}, {2, 5003, 3}, {5, 9, 300},
                                  {1, 2, 1},   {65, 17, 1},    {1, 37, 513}, {2, 20011, 3}, {1, 3001, 65}};
  for (const ORI& c : cases) {
    INFO("O " << c.O << " R " << c.R << " I " << c.I);
    const int64_t n = c.O * c.R * c.I, m = c.O * c.I;
    Tensor x = randn({n}, rng), dyr = randn({n}, rng);
    std::vector<float> a(m), b(m), ya(n), yb(n), da(n), db(n);
    cpu::reduce_sum(a.data(), x.f32(), c.O, c.R, c.I, 0.5f);
    cpu::reduce_sum_naive(b.data(), x.f32(), c.O, c.R, c.I, 0.5f);
    REQUIRE_CLOSE(a, b, 1e-4, 1e-5);
    cpu::l2norm_forward(a.data(), x.f32(), c.O, c.R, c.I, 0.1f);
    cpu::l2norm_forward_naive(b.data(), x.f32(), c.O, c.R, c.I, 0.1f);
    REQUIRE_CLOSE(a, b, 1e-5, 1e-5);
    cpu::softmax_forward(ya.data(), x.f32(), c.O, c.R, c.I);
    cpu::softmax_forward_naive(yb.data(), x.f32(), c.O, c.R, c.I);
    REQUIRE_CLOSE(ya, yb, 1e-6, 1e-5);
    cpu::softmax_backward(da.data(), dyr.f32(), yb.data(), c.O, c.R, c.I);
    cpu::softmax_backward_naive(db.data(), dyr.f32(), yb.data(), c.O, c.R, c.I);
    REQUIRE_CLOSE(da, db, 1e-5, 1e-4);
    cpu::log_softmax_forward(ya.data(), x.f32(), c.O, c.R, c.I);
    cpu::log_softmax_forward_naive(yb.data(), x.f32(), c.O, c.R, c.I);
    REQUIRE_CLOSE(ya, yb, 1e-5, 1e-5);
    cpu::log_softmax_backward(da.data(), dyr.f32(), yb.data(), c.O, c.R, c.I);
    cpu::log_softmax_backward_naive(db.data(), dyr.f32(), yb.data(), c.O, c.R, c.I);
    REQUIRE_CLOSE(da, db, 1e-4, 1e-4);
  }
}

TEST_CASE("reduce: results are bit-identical across runs and thread counts", "[reduce]") {
  Rng rng(10);
  Tensor x = randn({1, 200001}, rng);
  Tensor y = randn({64, 129, 33}, rng);
  Tensor z = randn({4001, 3}, rng);
  const int saved = get_threads();
  auto run = [&]() {
    std::vector<float> out = sum(x).to_vector();
    for (float v : mean(y, {0, 2}).to_vector()) out.push_back(v);
    for (float v : sum(y, {1}).to_vector()) out.push_back(v);
    for (float v : softmax(y, 1).to_vector()) out.push_back(v);
    for (float v : l2norm(y, 0).to_vector()) out.push_back(v);
    for (float v : sum(z, {0}).to_vector()) out.push_back(v);  // chunked along R
    return out;
  };
  set_threads(2);
  std::vector<float> a = run(), b = run();
  set_threads(1);
  std::vector<float> c = run();
  set_threads(saved);
  REQUIRE(bit_equal(a, b));
  REQUIRE(bit_equal(a, c));
}

// ---- errors ------------------------------------------------------------------

TEST_CASE("reduce: bad dims and dtypes are refused", "[reduce]") {
  Tensor x = Tensor::zeros({2, 3});
  REQUIRE_THROWS_WITH(sum(x, {2}), Catch::Contains("sum") && Catch::Contains("dim 2"));
  REQUIRE_THROWS_WITH(sum(x, {1, -1}), Catch::Contains("sum") && Catch::Contains("repeated"));
  REQUIRE_THROWS_WITH(sum(x, std::vector<int64_t>{}), Catch::Contains("sum"));
  REQUIRE_THROWS_WITH(mean(x, {-3}), Catch::Contains("mean"));
  REQUIRE_THROWS_WITH(l2norm(x, 5), Catch::Contains("l2norm"));
  REQUIRE_THROWS_WITH(l2norm(x, 0, false, -1.0f), Catch::Contains("l2norm"));
  REQUIRE_THROWS_WITH(softmax(x, 2), Catch::Contains("softmax"));
  REQUIRE_THROWS_WITH(log_softmax(x, -3), Catch::Contains("log_softmax"));
  REQUIRE_THROWS_WITH(global_avg_pool(x), Catch::Contains("global_avg_pool") && Catch::Contains("[2, 3]"));
  Tensor li = Tensor::from_vector_i64({2}, {1, 2});
  REQUIRE_THROWS_WITH(sum(li, {0}), Catch::Contains("sum") && Catch::Contains("i64"));
  REQUIRE_THROWS_WITH(softmax(li), Catch::Contains("softmax"));
}

// ---- exp_fast (kernels/cpu/exp_fast.h), the exp of softmax, log_softmax,
// cross-entropy and the NaLa query features, against std::exp in double.
// Its max relative error over every float of [-87, 88] is 8.53e-8 (about one
// float ulp, measured by the [slow] test); 1e-7 is that with a little room:
// the polynomial one degree shorter (2.4e-7 on this sweep) fails it, and so
// does the range reduction with ln 2 as one float (3.0e-7).
namespace {
constexpr double kExpFastMaxRelErr = 1e-7;

float float_of_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t bits_of_float(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// The worst relative error seen, and where.
struct ExpErr {
  double worst = 0;
  float at = 0;
  void visit(float x) {
    const double ref = std::exp((double)x);
    const double e = std::fabs((double)cpu::exp_fast(x) - ref) / ref;
    if (!(e <= worst)) worst = e, at = x;  // a NaN result counts as the worst
  }
};
}  // namespace

TEST_CASE("reduce: exp_fast is within 1e-7 relative of std::exp on a dense sweep of [-87, 88]", "[reduce]") {
  ExpErr err;
  // Every 251st float of [0, 88] and of [-87, 0] (8.9 million points, every
  // binade), stepping the bit pattern: positive floats grow with it, and so
  // do the magnitudes of negative ones.
  for (uint32_t u = 0; u <= bits_of_float(88.0f); u += 251) err.visit(float_of_bits(u));
  for (uint32_t u = 0; u <= bits_of_float(87.0f); u += 251) err.visit(-float_of_bits(u));
  // Every float of two whole reduction intervals [(n - 1/2) ln 2, (n + 1/2) ln 2]:
  // each r the polynomial sees, at a small and a large |n|.
  for (int n : {10, -90}) {
    const float lo = (float)((n - 0.5) * 0.6931471805599453), hi = (float)((n + 0.5) * 0.6931471805599453);
    for (float x = lo; x <= hi; x = std::nextafter(x, INFINITY)) err.visit(x);
  }
  INFO("worst relative error " << err.worst << " at x = " << err.at);
  REQUIRE(err.worst < kExpFastMaxRelErr);
  REQUIRE(err.worst > 0);  // the sweep did run against a real reference
  REQUIRE(cpu::exp_fast(0.0f) == 1.0f);
  REQUIRE(cpu::exp_fast(-INFINITY) == 0.0f);
  REQUIRE(cpu::exp_fast(-1000.0f) == 0.0f);
  REQUIRE(std::isnan(cpu::exp_fast(NAN)));
}

TEST_CASE("reduce: exp_fast is within 1e-7 relative of std::exp on every float of [-87, 88]", "[reduce][slow]") {
  // 2.2e9 floats: about 25 s of one core.
  double worst = 0;
  const int64_t lo = -(int64_t)bits_of_float(87.0f), hi = bits_of_float(88.0f);
#pragma omp parallel for schedule(static) reduction(max : worst)
  for (int64_t i = lo; i <= hi; i++) {
    const float x = i < 0 ? -float_of_bits((uint32_t)-i) : float_of_bits((uint32_t)i);
    const double ref = std::exp((double)x);
    const double e = std::fabs((double)cpu::exp_fast(x) - ref) / ref;
    worst = std::max(worst, e != e ? INFINITY : e);
  }
  INFO("worst relative error " << worst);
  REQUIRE(worst < kExpFastMaxRelErr);
}
