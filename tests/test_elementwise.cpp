// tests/test_elementwise.cpp - elementwise ops: gradchecks (same shape and
// broadcast), hand-computed values, pow and relu at 0, fast kernels against
// their naive references, shape errors, deep chains and shared inputs.
#include <cmath>

#include "kernels/cpu/elementwise.h"
#include "tests/helpers.h"

using namespace nala;
using test::randn;
using test::randu;

namespace {
using Fn = std::function<Tensor(const Tensor&, const Tensor&)>;

// Gradcheck a binary op on same-shape inputs and on several broadcasts.
void check_binary(const Fn& f, float lo_b = -2.0f, float hi_b = 2.0f, float lo_a = -2.0f, float hi_a = 2.0f) {
  Rng rng(11);
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 5, 7}, {3, 5, 7}},  // same shape
      {{2, 5, 7}, {7}},        // per-channel row (bias, scale)
      {{7}, {2, 5, 7}},        // the other side broadcast
      {{4, 1, 3}, {1, 5, 1}},  // both broadcast
      {{3, 6, 1}, {3, 6, 5}},  // per-row column
      {{2, 3}, {}},            // a scalar
  };
  for (auto& c : cases) {
    INFO("a " << shape_str(c.first) << " b " << shape_str(c.second));
    Tensor a = randu(c.first, rng, lo_a, hi_a, true);
    Tensor b = randu(c.second, rng, lo_b, hi_b, true);
    REQUIRE_GRADCHECK([&f](const std::vector<Tensor>& in) { return f(in[0], in[1]); }, std::vector<Tensor>({a, b}));
  }
}

using UFn = std::function<Tensor(const Tensor&)>;
void check_unary(const UFn& f, float lo, float hi) {
  Rng rng(12);
  Tensor x = randu({3, 7, 5}, rng, lo, hi, true);
  REQUIRE_GRADCHECK([&f](const std::vector<Tensor>& in) { return f(in[0]); }, std::vector<Tensor>({x}));
  // Through a non-contiguous input.
  REQUIRE_GRADCHECK([&f](const std::vector<Tensor>& in) { return f(transpose(in[0], 0, 2)); }, std::vector<Tensor>({x}));
}
}  // namespace

TEST_CASE("gradcheck: add", "[gradcheck][elementwise]") { check_binary([](auto& a, auto& b) { return add(a, b); }); }
TEST_CASE("gradcheck: sub", "[gradcheck][elementwise]") { check_binary([](auto& a, auto& b) { return sub(a, b); }); }
TEST_CASE("gradcheck: mul", "[gradcheck][elementwise]") { check_binary([](auto& a, auto& b) { return mul(a, b); }); }
TEST_CASE("gradcheck: div", "[gradcheck][elementwise]") {
  check_binary([](auto& a, auto& b) { return nala::div(a, b); }, 0.5f, 2.0f);
}
TEST_CASE("gradcheck: pow", "[gradcheck][elementwise]") {
  check_binary([](auto& x, auto& p) { return nala::pow(x, p); }, 0.5f, 3.0f, 0.3f, 2.0f);
}

TEST_CASE("gradcheck: scale_add", "[gradcheck][elementwise]") {
  Rng rng(13);
  for (const Shape& s : {Shape{3, 5, 7}, Shape{2, 4}, Shape{6}}) {
    INFO("x and y " << shape_str(s));
    Tensor x = randu(s, rng, -2, 2, true), y = randu(s, rng, -2, 2, true), g = randu({s.back()}, rng, -2, 2, true);
    REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return scale_add(in[0], in[1], in[2]); },
                      std::vector<Tensor>({x, y, g}));
  }
  // Through a non-contiguous y, and with only some inputs wanting a gradient.
  Tensor x = randu({4, 3, 5}, rng, -2, 2, true), y = randu({5, 3, 4}, rng, -2, 2, true),
         g = randu({5}, rng, -2, 2, false);
  REQUIRE_GRADCHECK([&g](const std::vector<Tensor>& in) { return scale_add(in[0], transpose(in[1], 0, 2), g); },
                    std::vector<Tensor>({x, y}));
}

TEST_CASE("scale_add: bit for bit add(x, mul(y, gamma)), forward and gradients", "[elementwise]") {
  Rng rng(14);
  for (const Shape& s : {Shape{2, 7, 13}, Shape{5, 32}, Shape{1, 1}}) {
    INFO("shape " << shape_str(s));
    Tensor x = randn(s, rng, 1.0f, true), y = randn(s, rng, 1.0f, true), g = randn({s.back()}, rng, 1.0f, true);
    Tensor up = randn(s, rng);
    Tensor fused = scale_add(x, y, g);
    backward(fused, up);
    std::vector<float> gx = x.grad().to_vector(), gy = y.grad().to_vector(), gg = g.grad().to_vector();
    x.set_grad(Tensor()), y.set_grad(Tensor()), g.set_grad(Tensor());
    Tensor composed = add(x, mul(y, g));
    backward(composed, up);
    REQUIRE(fused.to_vector() == composed.to_vector());
    REQUIRE(gx == x.grad().to_vector());
    REQUIRE(gy == y.grad().to_vector());
    REQUIRE(gg == g.grad().to_vector());
  }
  Tensor x = Tensor::zeros({2, 3});
  REQUIRE_THROWS_WITH(scale_add(x, Tensor::zeros({2, 3}), Tensor::zeros({2})),
                      Catch::Contains("scale_add") && Catch::Contains("[2]"));
  REQUIRE_THROWS_WITH(scale_add(x, Tensor::zeros({3, 2}), Tensor::zeros({3})), Catch::Contains("scale_add"));
}

TEST_CASE("gradcheck: scale", "[gradcheck][elementwise]") {
  check_unary([](const Tensor& x) { return scale(x, -1.7f); }, -2, 2);
}
TEST_CASE("gradcheck: add_scalar", "[gradcheck][elementwise]") {
  check_unary([](const Tensor& x) { return add_scalar(x, 0.3f); }, -2, 2);
}
TEST_CASE("gradcheck: sqrt", "[gradcheck][elementwise]") { check_unary([](auto& x) { return nala::sqrt(x); }, 0.3f, 2); }
TEST_CASE("gradcheck: cube", "[gradcheck][elementwise]") { check_unary([](auto& x) { return cube(x); }, -1.5f, 1.5f); }
TEST_CASE("gradcheck: relu", "[gradcheck][elementwise]") {
  Rng rng(13);
  Tensor x = randu({3, 7, 5}, rng, 0.05f, 2.0f);
  float* p = x.f32();
  for (int64_t i = 0; i < x.numel(); i += 2) p[i] = -p[i];  // both signs, away from the kink
  x.set_requires_grad(true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return relu(in[0]); }, std::vector<Tensor>({x}));
}
TEST_CASE("gradcheck: gelu", "[gradcheck][elementwise]") { check_unary([](auto& x) { return gelu(x); }, -3, 3); }
TEST_CASE("gradcheck: silu", "[gradcheck][elementwise]") { check_unary([](auto& x) { return silu(x); }, -3, 3); }
TEST_CASE("gradcheck: tanh", "[gradcheck][elementwise]") { check_unary([](auto& x) { return nala::tanh(x); }, -2, 2); }
TEST_CASE("gradcheck: sigmoid", "[gradcheck][elementwise]") { check_unary([](auto& x) { return sigmoid(x); }, -3, 3); }
TEST_CASE("gradcheck: exp", "[gradcheck][elementwise]") { check_unary([](auto& x) { return nala::exp(x); }, -2, 1.5f); }
TEST_CASE("gradcheck: log", "[gradcheck][elementwise]") { check_unary([](auto& x) { return nala::log(x); }, 0.3f, 3); }
TEST_CASE("gradcheck: sin", "[gradcheck][elementwise]") { check_unary([](auto& x) { return nala::sin(x); }, -4, 4); }
TEST_CASE("gradcheck: cos", "[gradcheck][elementwise]") { check_unary([](auto& x) { return nala::cos(x); }, -4, 4); }
TEST_CASE("gradcheck: elu", "[gradcheck][elementwise]") {
  Rng rng(14);
  Tensor x = randu({3, 7, 5}, rng, 0.05f, 2.0f);
  float* p = x.f32();
  for (int64_t i = 0; i < x.numel(); i += 2) p[i] = -p[i];  // both branches, away from 0
  x.set_requires_grad(true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return elu(in[0]); }, std::vector<Tensor>({x}));
}

TEST_CASE("elementwise: forward values", "[elementwise]") {
  Tensor x = Tensor::from_vector({3}, {1.0f, -1.0f, 0.5f});
  REQUIRE_CLOSE(gelu(x), Tensor::from_vector({3}, {0.8413447f, -0.1586553f, 0.3457312f}), 1e-6, 1e-6);
  REQUIRE_CLOSE(silu(x), Tensor::from_vector({3}, {0.7310586f, -0.2689414f, 0.3112297f}), 1e-6, 1e-6);
  REQUIRE_CLOSE(sigmoid(x), Tensor::from_vector({3}, {0.7310586f, 0.2689414f, 0.6224593f}), 1e-6, 1e-6);
  REQUIRE_CLOSE(nala::tanh(x), Tensor::from_vector({3}, {0.7615942f, -0.7615942f, 0.4621172f}), 1e-6, 1e-6);
  REQUIRE_CLOSE(nala::exp(x), Tensor::from_vector({3}, {2.7182818f, 0.3678794f, 1.6487213f}), 1e-6, 1e-6);
  REQUIRE_CLOSE(relu(x), Tensor::from_vector({3}, {1, 0, 0.5f}), 0, 0);
  REQUIRE_CLOSE(cube(x), Tensor::from_vector({3}, {1, -1, 0.125f}), 0, 0);
  REQUIRE_CLOSE(nala::sin(x), Tensor::from_vector({3}, {0.8414710f, -0.8414710f, 0.4794255f}), 1e-6, 1e-6);
  REQUIRE_CLOSE(nala::cos(x), Tensor::from_vector({3}, {0.5403023f, 0.5403023f, 0.8775826f}), 1e-6, 1e-6);
  REQUIRE_CLOSE(elu(x), Tensor::from_vector({3}, {1.0f, -0.6321206f, 0.5f}), 1e-6, 1e-6);
  REQUIRE_CLOSE(scale(x, 2), Tensor::from_vector({3}, {2, -2, 1}), 0, 0);
  REQUIRE_CLOSE(add_scalar(x, 2), Tensor::from_vector({3}, {3, 1, 2.5f}), 0, 0);
  Tensor y = Tensor::from_vector({3}, {2.0f, 4.0f, 0.25f});
  REQUIRE_CLOSE(nala::log(y), Tensor::from_vector({3}, {0.6931472f, 1.3862944f, -1.3862944f}), 1e-6, 1e-6);
  REQUIRE_CLOSE(nala::sqrt(y), Tensor::from_vector({3}, {1.4142136f, 2.0f, 0.5f}), 1e-6, 1e-6);
  // Broadcasting: (2, 3) op (3) and (2, 1) op (3).
  Tensor a = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = Tensor::from_vector({3}, {10, 20, 30});
  REQUIRE(add(a, b).to_vector() == std::vector<float>{11, 22, 33, 14, 25, 36});
  REQUIRE(sub(b, a).to_vector() == std::vector<float>{9, 18, 27, 6, 15, 24});
  REQUIRE(mul(Tensor::from_vector({2, 1}, {2, 3}), b).to_vector() == std::vector<float>{20, 40, 60, 30, 60, 90});
  REQUIRE(nala::div(a, Tensor::scalar(2)).to_vector() == std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3});
  REQUIRE_CLOSE(nala::pow(Tensor::from_vector({3}, {4, 2, 9}), Tensor::from_vector({3}, {0.5f, 3, 1.5f})),
                Tensor::from_vector({3}, {2, 8, 27}), 1e-5, 1e-6);
}

TEST_CASE("elementwise: gradients by hand", "[elementwise]") {
  // relu at exactly 0 has gradient 0; cube's is 3x^2.
  Tensor x = Tensor::from_vector({3}, {0.0f, -1.0f, 2.0f}).set_requires_grad(true);
  backward(relu(x), Tensor::ones({3}));
  REQUIRE(x.grad().to_vector() == std::vector<float>{0, 0, 1});
  x.set_grad(Tensor());
  backward(cube(x), Tensor::ones({3}));
  REQUIRE(x.grad().to_vector() == std::vector<float>{0, 3, 12});
  // gelu'(1) = Phi(1) + phi(1) = 0.8413447 + 0.2419707
  Tensor one = Tensor::from_vector({1}, {1.0f}).set_requires_grad(true);
  backward(gelu(one), Tensor::ones({1}));
  REQUIRE(one.grad().item() == Approx(1.0833155f).epsilon(1e-6));
}

TEST_CASE("elementwise: pow at x = 0 has finite zero gradients", "[elementwise]") {
  Tensor x = Tensor::from_vector({6}, {0, 0, 0, 0, 0, 1}).set_requires_grad(true);
  Tensor p = Tensor::from_vector({6}, {1.5f, 2.0f, 3.0f, 4.4f, 0.5f, 2.0f}).set_requires_grad(true);
  Tensor y = nala::pow(x, p);
  REQUIRE(y.to_vector() == std::vector<float>{0, 0, 0, 0, 0, 1});
  backward(y, Tensor::ones({6}));
  std::vector<float> gx = x.grad().to_vector(), gp = p.grad().to_vector();
  for (int i = 0; i < 5; i++) {
    REQUIRE(gx[i] == 0.0f);
    REQUIRE(gp[i] == 0.0f);
  }
  REQUIRE(gx[5] == 2.0f);  // p x^(p-1) at x = 1
  REQUIRE(gp[5] == 0.0f);  // x^p ln x at x = 1
  // Broadcast exponent (per channel), with zeros in x: still finite.
  Rng rng(14);
  Tensor xb = randu({4, 6}, rng, 0.0f, 1.0f);
  xb.f32()[3] = 0.0f, xb.f32()[10] = 0.0f;
  xb.set_requires_grad(true);
  Tensor pb = randu({6}, rng, 1.5f, 4.5f, true);
  backward(nala::pow(xb, pb), Tensor::ones({4, 6}));
  for (float v : xb.grad().to_vector()) REQUIRE(std::isfinite(v));
  for (float v : pb.grad().to_vector()) REQUIRE(std::isfinite(v));
  REQUIRE(xb.grad().to_vector()[3] == 0.0f);
}

TEST_CASE("elementwise: binary kernels, fast vs strided vs naive", "[elementwise]") {
  Rng rng(15);
  // (a shape, b shape); odd sizes, some large enough for the parallel path.
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{301, 129}, {301, 129}}, {{257, 131}, {131}}, {{131}, {257, 131}}, {{97, 201, 1}, {97, 201, 3}},
      {{3, 1, 41, 5}, {7, 1, 5}}, {{1001, 37}, {}},   {{6, 5, 4, 3, 2, 7}, {5, 1, 3, 1, 7}},
  };
  const BinaryOp ops[] = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow};
  for (auto& c : cases) {
    for (bool transposed : {false, true}) {
      Tensor a = randu(c.first, rng, 0.5f, 2.0f), b = randu(c.second, rng, 0.5f, 2.0f);
      if (transposed && a.dim() >= 2) a = transpose(view::contiguous(transpose(a, 0, -1)), 0, -1);
      Shape os = broadcast_shapes(a.shape(), b.shape(), "test");
      Layout L = make_layout(os, contiguous_strides(os), broadcast_strides(os, a.shape(), a.strides()),
                             broadcast_strides(os, b.shape(), b.strides()), "test");
      Tensor g = randn(os, rng);
      for (BinaryOp op : ops) {
        INFO(binary_op_name(op) << " a " << a.desc() << " b " << b.desc() << " transposed " << transposed);
        Tensor f = Tensor::empty(os), s = Tensor::empty(os), r = Tensor::empty(os);
        cpu::binary_forward(op, f.f32(), a.f32(), b.f32(), L);
        cpu::binary_forward_strided(op, s.f32(), a.f32(), b.f32(), L);
        cpu::binary_forward_naive(op, r.f32(), a.f32(), b.f32(), L);
        REQUIRE_CLOSE(f, r, 1e-6, 1e-6);
        REQUIRE_CLOSE(s, r, 1e-6, 1e-6);
        Tensor da = Tensor::empty(os), db = Tensor::empty(os), ra = Tensor::empty(os), rb = Tensor::empty(os);
        cpu::binary_backward(op, da.f32(), db.f32(), g.f32(), a.f32(), b.f32(), L);
        cpu::binary_backward_naive(op, ra.f32(), rb.f32(), g.f32(), a.f32(), b.f32(), L);
        REQUIRE_CLOSE(da, ra, 1e-6, 1e-6);
        REQUIRE_CLOSE(db, rb, 1e-6, 1e-6);
      }
    }
  }
}

TEST_CASE("elementwise: sum_to matches its naive reference", "[elementwise]") {
  Rng rng(16);
  // (full shape, target shape): per-channel (small output), per-row, scalar,
  // a kept middle dim, large outputs, and nothing summed.
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{513, 67}, {67}},         {{513, 67}, {513, 1}},     {{70001}, {}},          {{33, 257, 9}, {33, 1, 9}},
      {{9, 257, 33}, {1, 257, 1}}, {{2, 20001}, {1, 20001}}, {{41, 3, 7}, {41, 3, 7}}, {{5, 7}, {1}},
      {{3, 4, 5, 6, 7, 8}, {4, 1, 6, 1, 8}},
  };
  for (auto& c : cases) {
    INFO("sum " << shape_str(c.first) << " to " << shape_str(c.second));
    Tensor x = randn(c.first, rng);
    Layout L = make_layout(c.first, broadcast_strides(c.first, c.second, contiguous_strides(c.second)),
                           contiguous_strides(c.first), {}, "test");
    Tensor f = Tensor::empty(c.second), r = Tensor::empty(c.second);
    cpu::sum_to(f.f32(), x.f32(), L);
    cpu::sum_to_naive(r.f32(), x.f32(), L);
    REQUIRE_CLOSE(f, r, 1e-3, 1e-4);
  }
}

TEST_CASE("elementwise: shape errors name the op and both shapes", "[elementwise]") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4});
  REQUIRE_THROWS_WITH(add(a, b), Catch::Contains("add") && Catch::Contains("[2, 3]") && Catch::Contains("[4]"));
  REQUIRE_THROWS_WITH(mul(a, b), Catch::Contains("mul") && Catch::Contains("[2, 3]") && Catch::Contains("[4]"));
  REQUIRE_THROWS_WITH(nala::pow(a, b), Catch::Contains("pow"));
  Tensor labels = Tensor::from_vector_i64({3}, {0, 1, 2});
  REQUIRE_THROWS_WITH(sub(labels, Tensor::zeros({3})), Catch::Contains("sub") && Catch::Contains("i64[3]"));
  REQUIRE_THROWS_WITH(relu(labels), Catch::Contains("relu") && Catch::Contains("i64[3]"));
}

TEST_CASE("elementwise: deep chain of 10000 ops runs backward", "[elementwise]") {
  Tensor x = Tensor::from_vector({2}, {1.0f, -2.0f}).set_requires_grad(true);
  Tensor y = x;
  for (int i = 0; i < 10000; i++) y = add_scalar(y, 0.001f);
  y = mul(y, y);  // d/dx (x + 10)^2 = 2 (x + 10)
  backward(y, Tensor::ones({2}));
  REQUIRE_CLOSE(x.grad(), Tensor::from_vector({2}, {22.0f, 16.0f}), 1e-3, 1e-4);
  // Dropping a deep graph without backward must not overflow either.
  Tensor z = x;
  for (int i = 0; i < 10000; i++) z = add(z, x);
  z = Tensor();
}

TEST_CASE("elementwise: shared subexpression accumulates", "[elementwise]") {
  Rng rng(17);
  Tensor x = randn({5, 3}, rng, 1.0f, true);
  Tensor y = add(mul(x, x), x);  // dy/dx = 2x + 1
  backward(y, Tensor::ones({5, 3}));
  std::vector<float> xv = x.to_vector(), ref;
  for (float v : xv) ref.push_back(2 * v + 1);
  REQUIRE_CLOSE(x.grad().to_vector(), ref, 1e-6, 1e-6);
}

TEST_CASE("autograd: a node keeps an interior input's history, not its data", "[elementwise][autograd]") {
  Rng rng(18);
  Tensor x = randn({5, 3}, rng, 1.0f, true);
  // add's backward reads neither input: once the caller drops a = x * x, its
  // buffer goes, while the graph through it still reaches x.
  Tensor a = mul(x, x);
  std::weak_ptr<Storage> wa = a.storage();
  Tensor c = add(a, x);
  a = Tensor();
  REQUIRE(wa.expired());
  REQUIRE(c.grad_fn()->inputs[0].grad_fn() != nullptr);
  REQUIRE(c.grad_fn()->inputs[0].shape() == Shape{5, 3});
  REQUIRE(c.grad_fn()->inputs[0].desc().find("f32[5, 3]") == 0);  // error messages still name it
  REQUIRE(c.grad_fn()->inputs[1].same(x));                         // a leaf stays whole
  // mul's backward reads both inputs: b = x * x stays alive through what it saved.
  Tensor b = mul(x, x);
  std::weak_ptr<Storage> wb = b.storage();
  Tensor d = mul(b, b);
  b = Tensor();
  REQUIRE(!wb.expired());
  backward(add(c, d), Tensor::ones({5, 3}));  // d/dx (x^2 + x + x^4) = 2x + 1 + 4x^3
  std::vector<float> ref;
  for (float v : x.to_vector()) ref.push_back(2 * v + 1 + 4 * v * v * v);
  REQUIRE_CLOSE(x.grad().to_vector(), ref, 1e-5, 1e-5);
  REQUIRE(wb.expired());  // released with the graph
}

TEST_CASE("elementwise: gradients handed on without a copy are never written through", "[elementwise][autograd]") {
  Rng rng(19);
  auto vals = [](const Tensor& t) { return t.to_vector(); };
  auto times = [](std::vector<float> v, float s) {
    for (float& x : v) x *= s;
    return v;
  };
  Tensor a = randn({4, 3}, rng, 1.0f, true), b = randn({4, 3}, rng, 1.0f, true), g = randn({4, 3}, rng);
  const std::vector<float> g0 = vals(g);
  // add hands g to both leaves: each .grad its own buffer, g itself untouched
  backward(add(a, b), g);
  REQUIRE(vals(a.grad()) == g0);
  REQUIRE(vals(b.grad()) == g0);
  a.grad().f32()[0] += 100.0f;  // what clipping or an optimiser may do
  REQUIRE(vals(b.grad()) == g0);
  REQUIRE(vals(g) == g0);
  // a second pass accumulates into a.grad, not into g or b.grad
  a.set_grad(Tensor()), b.set_grad(Tensor());
  backward(add(a, b), g);
  backward(sub(a, b), g);
  REQUIRE(vals(a.grad()) == times(g0, 2.0f));
  REQUIRE(vals(b.grad()) == std::vector<float>(12, 0.0f));
  REQUIRE(vals(g) == g0);
  // an interior node reached twice through one add (h + h), through a
  // reshape and a residual: 4 g for x, the incoming g untouched
  Tensor x = randn({4, 3}, rng, 1.0f, true);
  Tensor h = scale(x, 2.0f);
  Tensor r = reshape(reshape(scale(x, 0.0f), {12}), {4, 3});
  Tensor y = reshape(reshape(add(add(h, h), r), {12}), {4, 3});
  backward(y, g);
  REQUIRE(vals(x.grad()) == times(g0, 4.0f));
  REQUIRE(vals(g) == g0);
}

TEST_CASE("elementwise: vectorised gelu, silu, exp match the library's", "[elementwise]") {
  Rng rng(18);
  const int64_t n = 100003;
  Tensor x = randu({n}, rng, -12.0f, 12.0f), g = randn({n}, rng);
  float* xp = x.f32();
  const float special[] = {0.0f, -0.0f, 1e-30f, -1e-6f, 3.0f, -3.0f, 80.0f, -80.0f, 88.5f, -100.0f, 200.0f};
  for (size_t i = 0; i < sizeof(special) / sizeof(float); i++) xp[i] = special[i];
  Tensor f = Tensor::empty({n}), r = Tensor::empty({n});
  cpu::gelu_forward(f.f32(), x.f32(), n);
  cpu::gelu_forward_naive(r.f32(), x.f32(), n);
  REQUIRE_CLOSE(f, r, 2e-6, 1e-6);
  cpu::gelu_backward(f.f32(), g.f32(), x.f32(), n);
  cpu::gelu_backward_naive(r.f32(), g.f32(), x.f32(), n);
  REQUIRE_CLOSE(f, r, 2e-6, 1e-6);
  cpu::silu_forward(f.f32(), x.f32(), n);
  cpu::silu_forward_naive(r.f32(), x.f32(), n);
  REQUIRE_CLOSE(f, r, 1e-6, 1e-6);
  Tensor xs = randu({n}, rng, -80.0f, 80.0f);
  cpu::exp_forward(f.f32(), xs.f32(), n);
  std::vector<float> xv = xs.to_vector(), ev;
  for (float v : xv) ev.push_back(std::exp(v));
  REQUIRE_CLOSE(f.to_vector(), ev, 1e-30, 3e-7);
}
