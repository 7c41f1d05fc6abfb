// tests/test_nala_oracle.cpp - the fused nala_attention op against the same
// function composed from primitive differentiable ops (docs/SPEC.md §2 written
// with cube, relu, l2norm, tanh, pow, concat, narrow, rope2d, mean, matmul,
// ...), forward and the gradients of q, k and v, on random inputs that
// include all-zero rows, negative-only rows and an all-zero k.
//
// Shape letters: B batch, h heads, N = H * W tokens, d head dim.
#include <cmath>
#include <vector>

#include "tests/helpers.h"

using namespace nala;
using namespace nala::test;

namespace {

// docs/SPEC.md §2.1, one primitive op at a time. q, k, v: (B, h, N, d).
Tensor nala_composed(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t W) {
  const int64_t N = q.size(2), d = q.size(3);
  const Shape full = q.shape();
  Tensor kc = cube(k);
  Tensor n = l2norm(q, 3, /*keepdim=*/true, kNalaNormFloor);  // (B, h, N, 1)
  Tensor p = scale(add_scalar(tanh(n), 0.5f), 3.0f);          // (B, h, N, 1)
  Tensor ne = expand(n, full), pe = expand(p, full);
  Tensor fq = concat({pow(div(relu(q), ne), pe), pow(div(relu(neg(q)), ne), pe)}, 3);  // (B, h, N, 2d)
  Tensor fk = concat({relu(kc), relu(neg(kc))}, 3);                                   // (B, h, N, 2d)
  auto rope_halves = [&](const Tensor& f) {
    return concat({rope2d(narrow(f, 3, 0, d), H, W), rope2d(narrow(f, 3, d, d), H, W)}, 3);
  };
  Tensor rq = rope_halves(fq), rk = rope_halves(fk);
  Tensor kmean = mean(fk, {2}, /*keepdim=*/true);                      // (B, h, 1, 2d)
  Tensor den = add_scalar(matmul(fq, kmean, false, true), 1e-6f);     // (B, h, N, 1), un-rotated
  Tensor S = scale(matmul(rk, v, /*trans_a=*/true, false), 1.0f / (float)N);  // (B, h, 2d, d)
  return div(matmul(rq, S), expand(den, full));
}

struct Result {
  Tensor o, dq, dk, dv;
};

Result run(bool fused, const Tensor& q0, const Tensor& k0, const Tensor& v0, int64_t H, int64_t W,
           const Tensor& gout) {
  Tensor q = q0.clone().set_requires_grad(true), k = k0.clone().set_requires_grad(true),
         v = v0.clone().set_requires_grad(true);
  Tensor o = fused ? nala_attention(q, k, v, H, W) : nala_composed(q, k, v, H, W);
  backward(o, gout);
  return {o.detach(), q.grad(), k.grad(), v.grad()};
}

void compare(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t W, Rng& rng) {
  Tensor gout = randn(q.shape(), rng);
  Result a = run(true, q, k, v, H, W, gout), b = run(false, q, k, v, H, W, gout);
  {
    INFO("output");
    REQUIRE_CLOSE(a.o, b.o, 1e-5, 1e-4);
  }
  {
    INFO("grad q");
    REQUIRE_CLOSE(a.dq, b.dq, 1e-4, 1e-3);
  }
  {
    INFO("grad k");
    REQUIRE_CLOSE(a.dk, b.dk, 1e-4, 1e-3);
  }
  {
    INFO("grad v");
    REQUIRE_CLOSE(a.dv, b.dv, 1e-5, 1e-4);
  }
}

void fill_row(Tensor& t, int64_t row, float value) {
  const int64_t d = t.size(-1);
  std::fill(t.f32() + row * d, t.f32() + (row + 1) * d, value);
}

}  // namespace

TEST_CASE("nala_attention oracle: fused op = composition of primitive ops", "[attention][oracle]") {
  Rng rng(41);
  SECTION("random inputs, several shapes") {
    for (auto s : {Shape{2, 2, 15, 8}, Shape{1, 3, 12, 4}, Shape{3, 1, 20, 12}}) {
      const int64_t H = s[2] == 15 ? 3 : 4, W = s[2] / H;
      INFO("shape " << shape_str(s));
      Tensor q = randn(s, rng, 0.7f), k = randn(s, rng), v = randn(s, rng);
      compare(q, k, v, H, W, rng);
    }
  }
  SECTION("all-zero and negative-only rows") {
    const Shape s = {2, 2, 15, 8};
    Tensor q = randn(s, rng), k = randn(s, rng), v = randn(s, rng);
    fill_row(q, 0, 0.0f), fill_row(q, 7, 0.0f), fill_row(q, 31, 0.0f);
    fill_row(k, 3, 0.0f), fill_row(k, 44, 0.0f);
    for (int64_t r : {1, 9, 50}) {  // negative-only rows
      for (int64_t e = 0; e < 8; e++) q.f32()[r * 8 + e] = -std::fabs(q.f32()[r * 8 + e]) - 0.05f;
      for (int64_t e = 0; e < 8; e++) k.f32()[(r + 1) * 8 + e] = -std::fabs(k.f32()[(r + 1) * 8 + e]) - 0.05f;
    }
    compare(q, k, v, 3, 5, rng);
  }
  SECTION("all-zero k") {
    const Shape s = {1, 2, 6, 4};
    Tensor q = randn(s, rng), k = Tensor::zeros(s), v = randn(s, rng);
    compare(q, k, v, 2, 3, rng);
  }
}
