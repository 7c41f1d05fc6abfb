// tests/test_cuda_elementwise.cpp - the shape and elementwise ops on CUDA
// against the same ops on the CPU: forward values and every input gradient
// (same random upstream gradient on both sides), broadcasting patterns, pow
// at 0, awkward sizes (odd, not multiples of 4/32, misaligned views), the
// kernels that the op wrappers hide (the general strided binary path, sum_to
// with long reductions, copy_strided), gradient accumulation on the device
// and a 1000-op chain. Every test skips with a warning when no GPU is present.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/shape.h"
#include "tests/cuda_harness.h"
#ifdef NALA_CUDA
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/shape.h"
#endif

using namespace nala;
using namespace nala::test;

namespace {
// This file's comparison: every input requires grad, the upstream gradient
// comes from Rng(7), atol 1e-5 and rtol 1e-4 unless a case says otherwise.
void compare(const OpFn& f, const std::vector<Tensor>& inputs, double atol = 1e-5, double rtol = 1e-4) {
  compare_devices(f, inputs, 7, {atol, rtol});
}

OpFn unary_fn(Tensor (*op)(const Tensor&)) {
  return [op](const std::vector<Tensor>& in) { return op(in[0]); };
}
OpFn binary_fn(Tensor (*op)(const Tensor&, const Tensor&)) {
  return [op](const std::vector<Tensor>& in) { return op(in[0], in[1]); };
}

// The broadcasting patterns every binary op is checked on.
const std::vector<std::pair<Shape, Shape>>& binary_cases() {
  static const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 37, 5}, {3, 37, 5}},  // same shape
      {{1001}, {1001}},          // same shape, a float4 tail
      {{2, 37, 13}, {13}},       // (M, C) op (C)
      {{13}, {2, 37, 13}},       // the other side broadcast
      {{3, 1, 5}, {1, 37, 1}},   // (B, 1, C) op (1, N, 1)
      {{3, 37, 1}, {3, 37, 5}},  // a column
      {{3, 37, 5}, {}},          // a scalar
      {{}, {3, 37, 5}},          // a scalar on the left
      {{2, 3, 1, 5, 2, 3}, {3, 4, 1, 2, 1}},  // many dims, the general path
  };
  return cases;
}

void check_binary(Tensor (*op)(const Tensor&, const Tensor&), float lo_a, float hi_a, float lo_b, float hi_b) {
  Rng rng(21);
  for (auto& c : binary_cases()) {
    Tensor a = randu(c.first, rng, lo_a, hi_a), b = randu(c.second, rng, lo_b, hi_b);
    compare(binary_fn(op), {a, b});
  }
  // Non-contiguous inputs (read in place through their strides).
  Tensor a = randu({5, 37, 3}, rng, lo_a, hi_a), b = randu({3, 37, 5}, rng, lo_b, hi_b);
  compare([op](const std::vector<Tensor>& in) { return op(transpose(in[0], 0, 2), in[1]); }, {a, b});
  compare([op](const std::vector<Tensor>& in) { return op(in[1], transpose(in[0], 0, 2)); }, {a, b});
  // Views at an odd element offset: the float4 path must not be taken.
  Tensor p = randu({1002}, rng, lo_a, hi_a), q = randu({1002}, rng, lo_b, hi_b);
  compare([op](const std::vector<Tensor>& in) { return op(narrow(in[0], 0, 1, 1001), narrow(in[1], 0, 1, 1001)); },
          {p, q});
}

void check_unary(Tensor (*op)(const Tensor&), float lo, float hi) {
  Rng rng(22);
  for (Shape s : {Shape{3, 37, 5}, Shape{1001}, Shape{2, 3, 4}}) {
    Tensor x = randu(s, rng, lo, hi);
    compare(unary_fn(op), {x});
  }
  Tensor x = randu({5, 37, 3}, rng, lo, hi);
  compare([op](const std::vector<Tensor>& in) { return op(transpose(in[0], 0, 2)); }, {x});  // non-contiguous
  Tensor y = randu({1002}, rng, lo, hi);
  compare([op](const std::vector<Tensor>& in) { return op(narrow(in[0], 0, 1, 1001)); }, {y});  // misaligned
}
}  // namespace

// ---- shape ops -------------------------------------------------------------

TEST_CASE("cuda: reshape", "[cuda][shape]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(1);
  Tensor x = randn({3, 37, 5}, rng);
  compare([](const std::vector<Tensor>& in) { return reshape(in[0], {37, -1}); }, {x});
  // A non-contiguous input is copied first.
  compare([](const std::vector<Tensor>& in) { return reshape(transpose(in[0], 0, 2), {-1, 3}); }, {x});
}

TEST_CASE("cuda: permute and transpose", "[cuda][shape]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(2);
  Tensor x = randn({3, 37, 5, 2}, rng);
  compare([](const std::vector<Tensor>& in) { return permute(in[0], {2, 0, 3, 1}); }, {x});
  compare([](const std::vector<Tensor>& in) { return transpose(in[0], 1, -1); }, {x});
  // Two permutes in a row, then a contiguous copy.
  compare([](const std::vector<Tensor>& in) { return contiguous(permute(permute(in[0], {3, 1, 0, 2}), {1, 3, 2, 0})); },
          {x});
  // Head splits and merges, rows of 4k floats moved whole (the float4 strided
  // copy), and near misses: rows of 6, a row start 8 bytes off alignment.
  for (const Shape& s : {Shape{3, 7, 4, 8}, Shape{2, 49, 2, 32}, Shape{3, 7, 4, 6}}) {
    INFO("shape " << shape_str(s));
    Tensor h = randn(s, rng);
    compare([](const std::vector<Tensor>& in) { return contiguous(permute(in[0], {0, 2, 1, 3})); }, {h});
    compare([](const std::vector<Tensor>& in) { return contiguous(permute(narrow(in[0], 3, 2, 4), {0, 2, 1, 3})); },
            {h});
  }
}

TEST_CASE("cuda: narrow", "[cuda][shape]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(3);
  Tensor x = randn({3, 37, 5}, rng);
  compare([](const std::vector<Tensor>& in) { return narrow(in[0], 1, 4, 20); }, {x});
  compare([](const std::vector<Tensor>& in) { return narrow(in[0], -1, 1, 3); }, {x});
  compare([](const std::vector<Tensor>& in) { return narrow(in[0], 0, 2, 1); }, {x});
  // A narrow of a transposed view.
  compare([](const std::vector<Tensor>& in) { return narrow(transpose(in[0], 0, 1), 0, 5, 31); }, {x});
  // Several narrows of one tensor (overlapping, along a strided dim too): their
  // gradients add into one buffer in place (the engine's scatter).
  compare(
      [](const std::vector<Tensor>& in) {
        Tensor y = mul(in[0], in[0]);  // an interior tensor
        return concat({narrow(in[0], 1, 0, 20), narrow(in[0], 1, 10, 20), narrow(y, 1, 17, 20),
                       transpose(narrow(transpose(y, 1, 2), 2, 1, 20), 1, 2)},
                      0);
      },
      {x});
}

TEST_CASE("cuda: expand", "[cuda][shape]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(4);
  compare([](const std::vector<Tensor>& in) { return expand(in[0], {3, 37, 5}); }, {randn({3, 1, 5}, rng)});
  compare([](const std::vector<Tensor>& in) { return expand(in[0], {2, 37, 13}); }, {randn({13}, rng)});
  compare([](const std::vector<Tensor>& in) { return expand(in[0], {1001}); }, {randn({1}, rng)}, 1e-4, 1e-4);
  compare([](const std::vector<Tensor>& in) { return expand(in[0], {3, 37, 5}); }, {randn({1, 37, 1}, rng)});
  compare([](const std::vector<Tensor>& in) { return expand(in[0], {3, 37, 5}); }, {randn({3, 37, 1}, rng)});
}

TEST_CASE("cuda: contiguous", "[cuda][shape]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(5);
  Tensor x = randn({3, 37, 5}, rng);
  compare([](const std::vector<Tensor>& in) { return contiguous(transpose(in[0], 0, 2)); }, {x});
  compare([](const std::vector<Tensor>& in) { return contiguous(narrow(in[0], 1, 3, 29)); }, {x});
  compare([](const std::vector<Tensor>& in) { return contiguous(in[0]); }, {x});  // already contiguous
}

TEST_CASE("cuda: concat", "[cuda][shape]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(6);
  for (int d = 0; d < 3; d++) {
    INFO("dim " << d);
    Shape s0{3, 37, 5}, s1{3, 37, 5}, s2{3, 37, 5};
    s1[d] = 7, s2[d] = 1;
    Tensor a = randn(s0, rng), b = randn(s1, rng), c = randn(s2, rng);
    compare([d](const std::vector<Tensor>& in) { return concat(in, d); }, {a, b, c});
  }
  // Non-contiguous parts.
  Tensor a = randn({5, 37, 3}, rng), b = randn({3, 11, 5}, rng);
  compare([](const std::vector<Tensor>& in) { return concat({transpose(in[0], 0, 2), in[1]}, 1); }, {a, b});
}

TEST_CASE("cuda: split and chunk", "[cuda][shape]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(7);
  Tensor x = randn({3, 37, 5}, rng);
  // The parts put back in another order: split's narrows and concat's slices.
  compare(
      [](const std::vector<Tensor>& in) {
        auto p = split(in[0], {10, 1, 26}, 1);
        return concat({p[2], p[0], p[1]}, 1);
      },
      {x});
  // Only one part used: the others get zero gradient.
  compare([](const std::vector<Tensor>& in) { return split(in[0], {2, 3}, -1)[1]; }, {x});
  compare(
      [](const std::vector<Tensor>& in) {
        auto p = chunk(in[0], 3, 0);
        return add(p[2], mul(p[0], p[1]));
      },
      {x});
}

// ---- elementwise ops -------------------------------------------------------

TEST_CASE("cuda: add", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_binary(add, -2, 2, -2, 2);
}
TEST_CASE("cuda: sub", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_binary(sub, -2, 2, -2, 2);
}
TEST_CASE("cuda: mul", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_binary(mul, -2, 2, -2, 2);
}
TEST_CASE("cuda: scale_add against the CPU, and bit for bit add(x, mul(y, gamma)) on the GPU", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(21);
  // C % 4 == 0 (the float4 path) and not; a non-contiguous y (a copy first)
  for (const Shape& s : {Shape{3, 9, 32}, Shape{2, 5, 7}, Shape{4, 1}}) {
    INFO("shape " << shape_str(s));
    Tensor x = randn(s, rng), y = randn(s, rng), g = randn({s.back()}, rng);
    compare([](const std::vector<Tensor>& in) { return scale_add(in[0], in[1], in[2]); }, {x, y, g});
    Tensor xc = x.to(Device::CUDA), yc = y.to(Device::CUDA), gc = g.to(Device::CUDA);
    REQUIRE(host(scale_add(xc, yc, gc)).to_vector() == host(add(xc, mul(yc, gc))).to_vector());
  }
  Tensor y = randn({7, 3, 8}, rng);
  compare([](const std::vector<Tensor>& in) { return scale_add(in[0], transpose(in[1], 0, 2), in[2]); },
          {randn({8, 3, 7}, rng), y, randn({7}, rng)});
}
TEST_CASE("cuda: div", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_binary(nala::div, -2, 2, 0.5f, 2);
}
TEST_CASE("cuda: pow", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_binary(nala::pow, 0.3f, 2, 0.5f, 3);
}

TEST_CASE("cuda: pow at x == 0", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  // x has exact zeros; p > 0 (value 0) and p == 0 (value 1); both partials 0 at x == 0.
  Tensor x = Tensor::from_vector({2, 4}, {0.0f, 0.5f, 0.0f, 2.0f, 0.0f, 1.5f, 0.0f, 0.0f});
  Tensor p = Tensor::from_vector({2, 4}, {3.0f, 2.0f, 0.5f, 1.5f, 1.0f, 0.0f, 2.5f, 0.0f});
  compare(binary_fn(nala::pow), {x, p});
  Tensor xg = x.to(Device::CUDA), pg = p.to(Device::CUDA);
  xg.set_requires_grad(true), pg.set_requires_grad(true);
  Tensor y = nala::pow(xg, pg);
  backward(y, Tensor::ones({2, 4}, Device::CUDA));
  std::vector<float> v = y.to_vector(), gx = xg.grad().to_vector(), gp = pg.grad().to_vector();
  std::vector<float> xs = x.to_vector(), ps = p.to_vector();
  for (size_t i = 0; i < xs.size(); i++) {
    INFO("element " << i << ": x " << xs[i] << ", p " << ps[i]);
    REQUIRE(std::isfinite(gx[i]));
    REQUIRE(std::isfinite(gp[i]));
    if (xs[i] == 0.0f) {
      REQUIRE(v[i] == (ps[i] == 0.0f ? 1.0f : 0.0f));
      REQUIRE(gx[i] == 0.0f);
      REQUIRE(gp[i] == 0.0f);
    }
  }
  // A scalar exponent broadcast over a base with zeros: the exponent's
  // gradient is a sum that must skip the x == 0 terms.
  Tensor e = Tensor::scalar(2.5f);
  compare(binary_fn(nala::pow), {x, e});
}

TEST_CASE("cuda: scale and add_scalar", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_unary([](const Tensor& x) { return scale(x, -1.7f); }, -2, 2);
  check_unary([](const Tensor& x) { return add_scalar(x, 0.3f); }, -2, 2);
  check_unary([](const Tensor& x) { return neg(x); }, -2, 2);
}

TEST_CASE("cuda: relu", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_unary(relu, -2, 2);
  compare(unary_fn(relu), {Tensor::from_vector({4}, {-1.0f, 0.0f, 0.0f, 2.0f})});  // 0 at 0
}
TEST_CASE("cuda: gelu", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_unary(gelu, -4, 4);
}
TEST_CASE("cuda: silu", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_unary(silu, -6, 6);
}
TEST_CASE("cuda: tanh", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_unary(nala::tanh, -3, 3);
}
TEST_CASE("cuda: sigmoid", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_unary(sigmoid, -6, 6);
}
TEST_CASE("cuda: exp", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_unary(nala::exp, -5, 5);
}
TEST_CASE("cuda: sin, cos, elu", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_unary(nala::sin, -4, 4);
  check_unary(nala::cos, -4, 4);
  check_unary(elu, -3, 3);
}
TEST_CASE("cuda: log", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_unary(nala::log, 0.1f, 5);
}
TEST_CASE("cuda: sqrt", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_unary(nala::sqrt, 0.1f, 5);
}
TEST_CASE("cuda: cube", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  check_unary(cube, -2, 2);
}

// ---- gradient accumulation and deep graphs --------------------------------

TEST_CASE("cuda: accumulate_into (a tensor used twice)", "[cuda][elementwise][autograd]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(8);
  Tensor x = randn({3, 37, 5}, rng), w = randn({5}, rng);
  // x reaches the output along three paths, w along two: their gradients are sums.
  OpFn f = [](const std::vector<Tensor>& in) {
    Tensor y = mul(in[0], in[0]);
    return add(add(y, mul(in[0], in[1])), scale(in[1], 2.0f));
  };
  compare(f, {x, w});
  // Against the formula: d/dx = g (2x + w), with g = 1.
  Tensor xg = x.to(Device::CUDA), wg = w.to(Device::CUDA);
  xg.set_requires_grad(true), wg.set_requires_grad(true);
  Tensor out = f({xg, wg});
  backward(out, Tensor::ones(out.shape(), Device::CUDA), /*retain_graph=*/true);
  Tensor want = add(scale(x, 2.0f), w);
  REQUIRE_CLOSE(xg.grad().to(Device::CPU), want, 1e-5, 1e-5);
  // A second backward accumulates into the leaf's gradient on the device.
  backward(out, Tensor::ones(out.shape(), Device::CUDA));
  REQUIRE(xg.grad().device() == Device::CUDA);
  REQUIRE_CLOSE(xg.grad().to(Device::CPU), scale(want, 2.0f), 1e-5, 1e-5);
}

TEST_CASE("cuda: a 1000-op chain", "[cuda][elementwise][autograd]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(9);
  Tensor x = randn({7, 33}, rng), b = randn({33}, rng, 0.01f);
  // b joins the chain 333 times (its gradient is accumulated that often).
  OpFn f = [](const std::vector<Tensor>& in) {
    Tensor y = in[0];
    for (int i = 0; i < 1000; i++) {
      if (i % 3 == 0) y = scale(y, 0.999f);
      else if (i % 3 == 1) y = add(y, in[1]);
      else y = tanh(y);
    }
    return y;
  };
  compare(f, {x, b}, 1e-4, 1e-3);
}

// ---- kernels the op wrappers hide -------------------------------------------
#ifdef NALA_CUDA
TEST_CASE("cuda: binary_forward_strided and binary_backward kernels", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(10);
  for (auto& c : binary_cases()) {
    Shape os = broadcast_shapes(c.first, c.second, "test");
    INFO("a " << shape_str(c.first) << " b " << shape_str(c.second));
    Tensor a = randu(c.first, rng, 0.3f, 2.0f), b = randu(c.second, rng, 0.5f, 2.0f), g = randn(os, rng);
    Layout L = make_layout(os, contiguous_strides(os), broadcast_strides(os, a.shape(), a.strides()),
                           broadcast_strides(os, b.shape(), b.strides()), "test");
    for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow}) {
      INFO("op " << binary_op_name(op));
      Tensor ref = Tensor::empty(os), got = cuda_empty(os), got_s = cuda_empty(os);
      cpu::binary_forward_naive(op, ref.f32(), a.f32(), b.f32(), L);
      Tensor ad = on_cuda(a), bd = on_cuda(b), gd = on_cuda(g);
      cuda::binary_forward(op, got.f32(), ad.f32(), bd.f32(), L);
      cuda::binary_forward_strided(op, got_s.f32(), ad.f32(), bd.f32(), L);
      REQUIRE_CLOSE(got.to(Device::CPU), ref, 1e-6, 1e-5);
      REQUIRE_CLOSE(got_s.to(Device::CPU), ref, 1e-6, 1e-5);
      Tensor ra = Tensor::empty(os), rb = Tensor::empty(os), da = cuda_empty(os), db = cuda_empty(os);
      cpu::binary_backward_naive(op, ra.f32(), rb.f32(), g.f32(), a.f32(), b.f32(), L);
      cuda::binary_backward(op, da.f32(), db.f32(), gd.f32(), ad.f32(), bd.f32(), L);
      REQUIRE_CLOSE(da.to(Device::CPU), ra, 1e-6, 1e-5);
      REQUIRE_CLOSE(db.to(Device::CPU), rb, 1e-6, 1e-5);
      // Only one of the two gradients asked for.
      Tensor db2 = cuda_empty(os);
      cuda::binary_backward(op, nullptr, db2.f32(), gd.f32(), ad.f32(), bd.f32(), L);
      REQUIRE_CLOSE(db2.to(Device::CPU), rb, 1e-6, 1e-5);
    }
  }
}

TEST_CASE("cuda: sum_to kernel, long reductions, deterministic", "[cuda][elementwise]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(11);
  // (x shape, target shape): per-channel, per-row, scalar, middle dim kept,
  // outer and inner kept, long reductions that take the two-pass paths.
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 37, 5}, {5}},         {{3, 37, 5}, {3, 37, 1}},    {{1001}, {}},
      {{3, 37, 5}, {1, 37, 1}},  {{3, 37, 5}, {3, 1, 5}},     {{100003, 7}, {7}},
      {{7, 100003}, {7, 1}},     {{1 << 20}, {1}},             {{64, 1000, 3}, {1000, 1}},
      {{5, 4099, 13}, {5, 1, 13}}, {{2, 3, 4, 5, 6}, {3, 1, 5, 1}},
  };
  for (auto& c : cases) {
    INFO("x " << shape_str(c.first) << " -> " << shape_str(c.second));
    const Shape& xs = c.first;
    Shape ts = c.second;
    Tensor x = randn(xs, rng);
    Layout L = make_layout(xs, broadcast_strides(xs, ts, contiguous_strides(ts)), contiguous_strides(xs), {}, "test");
    Tensor ref = Tensor::empty(ts), got = cuda_empty(ts), again = cuda_empty(ts), xd = on_cuda(x);
    cpu::sum_to_naive(ref.f32(), x.f32(), L);
    cuda::sum_to(got.f32(), xd.f32(), L);
    cuda::sum_to(again.f32(), xd.f32(), L);
    double n = (double)x.numel() / (double)std::max<int64_t>(ref.numel(), 1);
    REQUIRE_CLOSE(got.to(Device::CPU), ref, 1e-6 * n + 1e-5, 1e-4);
    std::vector<float> g1 = got.to_vector(), g2 = again.to_vector();
    REQUIRE(g1 == g2);  // bitwise the same run to run
  }
}

TEST_CASE("cuda: copy_strided, fill, copy, axpy kernels", "[cuda][shape]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(12);
  Tensor x = randn({3, 37, 5, 2}, rng);
  // A transposing copy and a copy into a slice of a larger tensor.
  Tensor xt = view::permute(x, {3, 1, 0, 2});
  Layout L = make_layout(xt.shape(), contiguous_strides(xt.shape()), xt.strides(), {}, "test");
  Tensor ref = Tensor::empty(xt.shape()), got = cuda_empty(xt.shape()), xd = on_cuda(x);
  cpu::copy_strided_naive(ref.f32(), x.f32(), L);
  cuda::copy_strided(got.f32(), xd.f32(), L);
  REQUIRE_CLOSE(got.to(Device::CPU), ref, 0, 0);

  Tensor big = Tensor::zeros({3, 50, 5, 2}), bigd = on_cuda(big);
  Tensor slice = view::narrow(big, 1, 6, 37), sliced = view::narrow(bigd, 1, 6, 37);
  Layout S = make_layout(x.shape(), slice.strides(), x.strides(), {}, "test");
  cpu::copy_strided(slice.f32(), x.f32(), S);
  cuda::copy_strided(sliced.f32(), xd.f32(), S);
  REQUIRE_CLOSE(bigd.to(Device::CPU), big, 0, 0);

  for (int64_t n : {int64_t(1), int64_t(3), int64_t(1001), int64_t(4096), int64_t(100003)}) {
    INFO("n " << n);
    Tensor a = randn({n + 1}, rng), b = randn({n + 1}, rng);
    Tensor ad = on_cuda(a), bd = on_cuda(b);
    for (int64_t off : {int64_t(0), int64_t(1)}) {  // aligned and misaligned
      INFO("offset " << off);
      Tensor y = randn({n}, rng), yd = on_cuda(y);
      cpu::axpy(y.f32(), a.f32() + off, 0.7f, n);
      cuda::axpy(yd.f32(), ad.f32() + off, 0.7f, n);
      REQUIRE_CLOSE(yd.to(Device::CPU), y, 1e-6, 1e-6);
      Tensor c = cuda_empty({n + 1});
      cuda::fill(c.f32(), 3.0f, n + 1);
      cuda::copy(c.f32() + off, bd.f32() + off, n);
      std::vector<float> cv = c.to_vector(), bv = b.to_vector();
      for (int64_t i = 0; i < n; i++) REQUIRE(cv[i + off] == bv[i + off]);
      if (off == 1) REQUIRE(cv[0] == 3.0f);
    }
  }
}
#endif
