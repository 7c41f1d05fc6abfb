// tests/test_cuda_reduce.cpp - the reduction, softmax, cross-entropy and
// dropout ops on CUDA against the same ops on the CPU: forward values and
// input gradients for one random upstream gradient, on awkward sizes (odd,
// not multiples of 32, long rows that take the chunked and block paths), and
// the CUDA kernels called directly against the CPU kernels where the op hides
// a path. Every test is skipped (with a warning) when no GPU is present.
#include <string>

#include "kernels/cpu/loss.h"
#include "kernels/cpu/reduce.h"
#include "tests/cuda_harness.h"
#ifdef NALA_CUDA
#include "kernels/cuda/loss.h"
#include "kernels/cuda/reduce.h"
#endif

using namespace nala;
using namespace nala::test;

namespace {

std::string shape_of(const Tensor& t) { return shape_str(t.shape()); }

// This file's comparison: f of one input x on both devices, the upstream
// gradient from Rng(seed).
template <class F>
void compare_op(const std::string& what, F f, const Tensor& x, double atol, double rtol, uint64_t seed = 99) {
  INFO(what << " on x " << shape_of(x));
  compare_devices([&f](const std::vector<Tensor>& in) { return f(in[0]); }, {x}, seed, {atol, rtol});
}

}  // namespace

// ---- sum, mean -------------------------------------------------------------

TEST_CASE("cuda: sum and mean over one or several dims, keepdim", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(1);
  Tensor x = randn({3, 37, 5, 19}, rng);
  // adjacent blocks (I == 1 rows and I > 1 columns) and non-adjacent sets (permuted first)
  const std::vector<std::vector<int64_t>> dim_sets = {{-1},   {1},    {0},          {1, 2}, {2, 3},
                                                        {0, 2}, {1, 3}, {0, 1, 2, 3}, {3, 0}};
  for (bool keepdim : {false, true})
    for (const auto& dims : dim_sets) {
      std::string ds;
      for (int64_t d : dims) ds += std::to_string(d) + " ";
      compare_op("sum dims " + ds + (keepdim ? "keepdim" : ""),
                 [&](const Tensor& t) { return sum(t, dims, keepdim); }, x, 1e-4, 1e-5);
      compare_op("mean dims " + ds + (keepdim ? "keepdim" : ""),
                 [&](const Tensor& t) { return mean(t, dims, keepdim); }, x, 1e-5, 1e-5);
    }
  compare_op("sum of every element", [](const Tensor& t) { return sum(t); }, x, 1e-3, 1e-5);
  compare_op("mean of every element", [](const Tensor& t) { return mean(t); }, x, 1e-5, 1e-5);
}

TEST_CASE("cuda: sum and mean over long dims (chunked reductions)", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(2);
  compare_op("sum rows of 70001", [](const Tensor& t) { return sum(t, {1}); }, randn({2, 70001}, rng), 1e-3, 1e-5);
  compare_op("mean of 100003", [](const Tensor& t) { return mean(t); }, randn({100003}, rng), 1e-5, 1e-5);
  compare_op("sum of a middle dim of 5000", [](const Tensor& t) { return sum(t, {1}); }, randn({3, 5000, 7}, rng),
             1e-3, 1e-5);
  compare_op("mean of dim 0 of 5001 x 3", [](const Tensor& t) { return mean(t, {0}, true); },
             randn({5001, 3}, rng), 1e-5, 1e-5);
  compare_op("sum of dim 0 of 4099 x 45", [](const Tensor& t) { return sum(t, {0}); }, randn({4099, 45}, rng), 1e-3,
             1e-5);
}

#ifdef NALA_CUDA
TEST_CASE("cuda: reduce_sum and l2norm kernels against the CPU kernels", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(3);
  struct Case { int64_t O, R, I; };
  const std::vector<Case> cases = {{1, 1, 1},    {7, 0, 3},     {5, 0, 1},    {1, 1, 33},    {13, 17, 1},
                                   {3, 33, 31},  {2, 9000, 1},  {1, 3001, 5}, {4, 300, 65},  {1000, 3, 1},
                                   {257, 129, 2}, {1, 100003, 1}, {2, 1, 70001}};
  for (const Case& c : cases) {
    INFO("O " << c.O << " R " << c.R << " I " << c.I);
    Tensor x = randn({c.O * c.R * c.I}, rng);
    Tensor xd = x.to(Device::CUDA);
    Tensor yc = Tensor::empty({c.O * c.I}), yd = cuda_empty({c.O * c.I});
    cpu::reduce_sum(yc.f32(), x.f32(), c.O, c.R, c.I, 0.5f);
    cuda::reduce_sum(yd.f32(), xd.f32(), c.O, c.R, c.I, 0.5f);
    INFO("reduce_sum");
    REQUIRE_CLOSE(yd.to(Device::CPU), yc, 1e-3, 1e-5);
    cpu::l2norm_forward(yc.f32(), x.f32(), c.O, c.R, c.I, 0.25f);
    cuda::l2norm_forward(yd.f32(), xd.f32(), c.O, c.R, c.I, 0.25f);
    INFO("l2norm_forward, floor 0.25");
    REQUIRE_CLOSE(yd.to(Device::CPU), yc, 1e-4, 1e-5);
  }
}
#endif

TEST_CASE("cuda: reductions are bit-identical run to run", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(4);
  Tensor x = randn({3, 20001, 5}, rng).to(Device::CUDA);
  Tensor z = randn({1, 300001}, rng).to(Device::CUDA);
  std::vector<float> a = sum(x, {1}).to_vector(), b = sum(x, {1}).to_vector();
  REQUIRE(bit_equal(a, b));
  a = l2norm(z, 1).to_vector(), b = l2norm(z, 1).to_vector();
  REQUIRE(bit_equal(a, b));
}

// ---- l2norm, global_avg_pool ----------------------------------------------

TEST_CASE("cuda: l2norm over last, middle and first dims, with zero rows", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(5);
  Tensor x = randn({6, 37, 9}, rng);
  // zero rows along every dim: x[1, :, :] and x[:, 4, :] and x[:, :, 7]
  std::vector<float> v = x.to_vector();
  for (int64_t a = 0; a < 6; a++)
    for (int64_t b = 0; b < 37; b++)
      for (int64_t c = 0; c < 9; c++)
        if (a == 1 || b == 4 || c == 7) v[(a * 37 + b) * 9 + c] = 0.0f;
  x = Tensor::from_vector({6, 37, 9}, v);
  for (float floor : {0.0f, 1e-6f, 0.5f})
    for (int64_t dim : {-1, 1, 0})
      for (bool keepdim : {false, true})
        compare_op("l2norm dim " + std::to_string(dim) + " floor " + std::to_string(floor) +
                       (keepdim ? " keepdim" : ""),
                   [&](const Tensor& t) { return l2norm(t, dim, keepdim, floor); }, x, 1e-5, 1e-5);
  compare_op("l2norm of rows of 5000", [](const Tensor& t) { return l2norm(t, -1, false, 1e-6f); },
             randn({3, 5000}, rng), 1e-5, 1e-5);
}

TEST_CASE("cuda: global_avg_pool on (B, H, W, C) and (B, N, C)", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(6);
  compare_op("global_avg_pool 4-D", [](const Tensor& t) { return global_avg_pool(t); }, randn({3, 7, 5, 19}, rng),
             1e-5, 1e-5);
  compare_op("global_avg_pool 3-D", [](const Tensor& t) { return global_avg_pool(t); }, randn({2, 49, 33}, rng),
             1e-5, 1e-5);
  compare_op("global_avg_pool many tokens", [](const Tensor& t) { return global_avg_pool(t); },
             randn({2, 3000, 40}, rng), 1e-5, 1e-5);
}

// ---- softmax, log_softmax --------------------------------------------------

TEST_CASE("cuda: softmax and log_softmax over last, middle and first dims", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(7);
  const std::vector<Shape> shapes = {{5, 7, 37}, {3, 1500}, {2, 3, 1}, {33, 2049}};
  for (const Shape& s : shapes)
    for (float scale : {1.0f, 30.0f}) {  // 30: large logits, the max subtraction matters
      Tensor x = randn(s, rng, scale);
      for (int64_t dim = -1; dim >= -(int64_t)s.size(); dim--) {
        const std::string d = " dim " + std::to_string(dim) + " scale " + std::to_string(scale);
        compare_op("softmax" + d, [&](const Tensor& t) { return softmax(t, dim); }, x, 1e-6, 1e-4);
        compare_op("log_softmax" + d, [&](const Tensor& t) { return log_softmax(t, dim); }, x, 1e-5, 1e-4);
      }
    }
}

// ---- cross_entropy ---------------------------------------------------------

TEST_CASE("cuda: cross_entropy with and without label smoothing", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(8);
  struct Case { int64_t B, K; };
  for (Case c : {Case{37, 11}, Case{5, 1500}, Case{3000, 10}, Case{1, 1}, Case{2, 33}})
    for (float s : {0.0f, 0.1f}) {
      std::vector<int64_t> lab(c.B);
      for (auto& l : lab) l = (int64_t)rng.below((uint64_t)c.K);
      Tensor labels = Tensor::from_vector_i64({c.B}, lab);
      Tensor labels_d = labels.to(Device::CUDA);
      compare_op("cross_entropy B " + std::to_string(c.B) + " K " + std::to_string(c.K) + " smoothing " +
                     std::to_string(s),
                 [&](const Tensor& z) { return cross_entropy(z, z.device() == Device::CPU ? labels : labels_d, s); },
                 randn({c.B, c.K}, rng, 3.0f), 1e-5, 1e-4);
    }
}

#ifdef NALA_CUDA
TEST_CASE("cuda: cross_entropy kernels against the CPU kernels (lse and the bad label)", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(9);
  const int64_t B = 77, K = 1111;
  Tensor z = randn({B, K}, rng, 4.0f);
  std::vector<int64_t> lab(B);
  for (auto& l : lab) l = (int64_t)rng.below(K);
  Tensor labels = Tensor::from_vector_i64({B}, lab);
  Tensor zd = z.to(Device::CUDA), labd = labels.to(Device::CUDA);
  Tensor loss = Tensor::empty({}), lse = Tensor::empty({B});
  Tensor lossd = cuda_empty({}), lsed = cuda_empty({B});
  int64_t bad_c[2] = {7, 7}, bad_d[2] = {7, 7};
  cpu::cross_entropy_forward(loss.f32(), lse.f32(), z.f32(), labels.i64(), B, K, 0.2f, bad_c);
  cuda::cross_entropy_forward(lossd.f32(), lsed.f32(), zd.f32(), labd.i64(), B, K, 0.2f, bad_d);
  REQUIRE(bad_d[0] == -1);
  REQUIRE(bad_d[0] == bad_c[0]);
  REQUIRE_CLOSE(lsed.to(Device::CPU), lse, 1e-5, 1e-6);
  REQUIRE_CLOSE(lossd.to(Device::CPU), loss, 1e-6, 1e-5);
  // two bad labels: the first position is reported, with its value
  lab[40] = K;
  lab[13] = -5;
  labd = Tensor::from_vector_i64({B}, lab).to(Device::CUDA);
  cuda::cross_entropy_forward(lossd.f32(), lsed.f32(), zd.f32(), labd.i64(), B, K, 0.2f, bad_d);
  REQUIRE(bad_d[0] == 13);
  REQUIRE(bad_d[1] == -5);
}
#endif

TEST_CASE("cuda: cross_entropy with a bad label fails as on the CPU", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Tensor z = Tensor::zeros({5, 4});
  for (const std::vector<int64_t>& lab :
       {std::vector<int64_t>{0, 1, 4, 2, 9}, std::vector<int64_t>{0, -1, 2, 3, 3},
        std::vector<int64_t>{0, 1, 2, 3, 1000000000000}}) {
    Tensor labels = Tensor::from_vector_i64({5}, lab);
    std::string msg_c, msg_d;
    try {
      cross_entropy(z, labels);
    } catch (const Error& e) {
      msg_c = e.what();
    }
    try {
      cross_entropy(z.to(Device::CUDA), labels.to(Device::CUDA));
    } catch (const Error& e) {
      msg_d = e.what();
    }
    INFO("CPU: " << msg_c);
    INFO("CUDA: " << msg_d);
    REQUIRE(!msg_c.empty());
    REQUIRE(!msg_d.empty());
    // identical up to the logits' description (the CUDA one says @cuda)
    const size_t cut = msg_c.find(" for logits");
    REQUIRE(cut != std::string::npos);
    REQUIRE(msg_d.compare(0, cut, msg_c, 0, cut) == 0);
    REQUIRE(msg_d.find("@cuda") != std::string::npos);
  }
}

// ---- dropout, drop_path ----------------------------------------------------

TEST_CASE("cuda: dropout and drop_path with the same seed match the CPU exactly", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Rng data(10);
  Tensor x = randn({33, 17, 5}, data);
  for (bool path : {false, true})
    for (float p : {0.1f, 0.5f}) {
      INFO((path ? "drop_path" : "dropout") << " p " << p << " x " << shape_of(x));
      Rng rc(11), rd(11);
      Tensor xc = x.clone(), xd = x.to(Device::CUDA);
      xc.set_requires_grad(true);
      xd.set_requires_grad(true);
      Tensor yc = path ? drop_path(xc, p, rc, true) : dropout(xc, p, rc, true);
      Tensor yd = path ? drop_path(xd, p, rd, true) : dropout(xd, p, rd, true);
      REQUIRE(yd.device() == Device::CUDA);
      REQUIRE(rc.state() == rd.state());  // the same number of host draws
      REQUIRE(bit_equal(yd.to_vector(), yc.to_vector()));
      Tensor g = randn(x.shape(), data);
      backward(yc, g);
      backward(yd, g.to(Device::CUDA));
      REQUIRE(bit_equal(xd.grad().to_vector(), xc.grad().to_vector()));
    }
}
