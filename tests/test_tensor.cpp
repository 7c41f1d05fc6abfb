// tests/test_tensor.cpp - storage, views, bounds, rng.
#include <cstdint>

#include "tests/helpers.h"

using namespace nala;

TEST_CASE("tensor: contiguous factories and element access", "[tensor]") {
  Tensor t = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  REQUIRE(t.numel() == 6);
  REQUIRE(t.is_contiguous());
  REQUIRE(t.at({1, 2}) == 6.0f);
  REQUIRE(((uintptr_t)t.raw() % 64) == 0);
  REQUIRE(Tensor::zeros({3}).to_vector() == std::vector<float>{0, 0, 0});
  REQUIRE_THROWS_WITH(t.at({2, 0}), Catch::Contains("out of range"));
  REQUIRE_THROWS_WITH(t.i64(), Catch::Contains("expected an i64 tensor"));
}

TEST_CASE("tensor: views share storage and index correctly", "[tensor]") {
  Tensor t = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor tt = view::permute(t, {1, 0});
  REQUIRE(tt.shape() == Shape{3, 2});
  REQUIRE(!tt.is_contiguous());
  REQUIRE(tt.to_vector() == std::vector<float>{1, 4, 2, 5, 3, 6});
  REQUIRE(view::contiguous(tt).to_vector() == std::vector<float>{1, 4, 2, 5, 3, 6});
  Tensor n = view::narrow(t, 1, 1, 2);
  REQUIRE(n.to_vector() == std::vector<float>{2, 3, 5, 6});
  n.fill_(0);
  REQUIRE(t.to_vector() == std::vector<float>{1, 0, 0, 4, 0, 0});
  Tensor e = view::expand(Tensor::from_vector({3, 1}, {1, 2, 3}), {2, 3, 4});
  REQUIRE(e.shape() == Shape{2, 3, 4});
  REQUIRE(e.at({1, 2, 3}) == 3.0f);
  Tensor r = view::reshape(tt, {-1});
  REQUIRE(r.to_vector() == std::vector<float>{1, 4, 0, 0, 0, 0});
}

TEST_CASE("tensor: bad views are refused", "[tensor]") {
  Tensor t = Tensor::zeros({2, 3});
  REQUIRE_THROWS_WITH(view::reshape(t, {4, 2}), Catch::Contains("cannot reshape"));
  REQUIRE_THROWS_WITH(view::narrow(t, 1, 2, 2), Catch::Contains("out of range"));
  REQUIRE_THROWS_WITH(view::expand(t, {3, 3}), Catch::Contains("cannot expand"));
  REQUIRE_THROWS_WITH(view::as_strided(t, {3, 3}, {3, 1}, 0), Catch::Contains("outside a storage"));
  REQUIRE_THROWS_WITH(view::permute(t, {0, 0}), Catch::Contains("repeated"));
  REQUIRE_THROWS_WITH(broadcast_shapes({2, 3}, {4}, "add"), Catch::Contains("[2, 3] and [4]"));
}

TEST_CASE("rng: reproducible streams and distributions", "[tensor]") {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 10; i++) {
    uint64_t x = a.next_u64();
    REQUIRE(x == b.next_u64());
    REQUIRE(x != c.next_u64());
  }
  Rng r(7);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; i++) {
    double v = r.normal();
    s += v;
    s2 += v * v;
  }
  REQUIRE(std::fabs(s / n) < 0.01);
  REQUIRE(std::fabs(s2 / n - 1.0) < 0.02);
  Tensor t = Tensor::empty({10000});
  r.fill_trunc_normal(t, 0.0f, 0.02f, -2.0f, 2.0f);
  for (float v : t.to_vector()) REQUIRE(std::fabs(v) <= 2.0f);
  Tensor u = Tensor::empty({5000});
  r.fill_trunc_normal(u, 0.0f, 1.0f, -0.5f, 0.5f);
  for (float v : u.to_vector()) REQUIRE(std::fabs(v) <= 0.5f);
  auto p = r.permutation(100);
  std::vector<bool> seen(100, false);
  for (auto i : p) seen[i] = true;
  for (bool q : seen) REQUIRE(q);
  auto st = r.state();
  float x1 = r.uniform();
  r.set_state(st);
  REQUIRE(r.uniform() == x1);
}

TEST_CASE("tensor: page-locked staging tensors behave as host tensors", "[tensor]") {
  Tensor p = Tensor::empty_pinned({3, 5});
  REQUIRE(p.device() == Device::CPU);
  REQUIRE(p.is_contiguous());
  std::vector<float> v(15);
  for (int i = 0; i < 15; i++) v[i] = 0.5f * i;
  p.copy_(Tensor::from_vector({3, 5}, v));
  REQUIRE(p.to_vector() == v);
  Tensor l = Tensor::empty_pinned({4}, DType::I64);
  l.copy_(Tensor::from_vector_i64({4}, {1, 2, 3, 4}));
  REQUIRE(l.to_vector_i64() == std::vector<int64_t>{1, 2, 3, 4});
}
