// tests/test_shape.cpp - shape ops: views, gradients, round trips, errors,
// and the strided copy kernel against its naive reference.
#include "kernels/cpu/shape.h"
#include "tests/helpers.h"

using namespace nala;
using test::randn;

namespace {
GradcheckOptions opts() {
  GradcheckOptions o;
  o.atol = 1e-3;
  o.rtol = 1e-3;
  return o;
}
}  // namespace

TEST_CASE("gradcheck: reshape", "[gradcheck][shape]") {
  Rng rng(1);
  Tensor x = randn({3, 5, 2}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return reshape(in[0], {5, -1}); }, std::vector<Tensor>({x}), opts());
  // A non-contiguous input is copied first.
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return reshape(transpose(in[0], 0, 2), {-1, 3}); }, std::vector<Tensor>({x}),
                    opts());
}

TEST_CASE("gradcheck: permute", "[gradcheck][shape]") {
  Rng rng(2);
  Tensor x = randn({2, 3, 5, 4}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return permute(in[0], {2, 0, 3, 1}); }, std::vector<Tensor>({x}), opts());
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return transpose(in[0], 1, -1); }, std::vector<Tensor>({x}), opts());
}

TEST_CASE("gradcheck: narrow", "[gradcheck][shape]") {
  Rng rng(3);
  Tensor x = randn({3, 7, 5}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return narrow(in[0], 1, 2, 3); }, std::vector<Tensor>({x}), opts());
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return narrow(in[0], -1, 0, 1); }, std::vector<Tensor>({x}), opts());
}

TEST_CASE("gradcheck: expand", "[gradcheck][shape]") {
  Rng rng(4);
  Tensor x = randn({3, 1, 5}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return expand(in[0], {2, 3, 4, 5}); }, std::vector<Tensor>({x}), opts());
  Tensor s = randn({1}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return expand(in[0], {3, 7}); }, std::vector<Tensor>({s}), opts());
}

TEST_CASE("gradcheck: contiguous", "[gradcheck][shape]") {
  Rng rng(5);
  Tensor x = randn({3, 4, 5}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return contiguous(permute(in[0], {2, 0, 1})); }, std::vector<Tensor>({x}),
                    opts());
  Tensor c = contiguous(x);  // already contiguous: the tensor itself
  REQUIRE(c.same(x));
}

TEST_CASE("gradcheck: concat", "[gradcheck][shape]") {
  Rng rng(6);
  Tensor a = randn({2, 3, 5}, rng, 1.0f, true);
  Tensor b = randn({2, 1, 5}, rng, 1.0f, true);
  Tensor c = randn({2, 4, 5}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return concat(in, 1); }, std::vector<Tensor>({a, b, c}), opts());
  Tensor d = randn({2, 3, 3}, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return concat({in[0], transpose(in[1], 1, 2)}, -1); },
                    std::vector<Tensor>({a, d}), opts());
}

TEST_CASE("gradcheck: narrow via split and chunk", "[gradcheck][shape]") {
  Rng rng(7);
  Tensor x = randn({3, 9, 2}, rng, 1.0f, true);
  // Reorder the parts of a split: a permutation of rows, checked through narrow.
  REQUIRE_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        auto p = split(in[0], {2, 4, 3}, 1);
        return concat({p[2], p[0], p[1]}, 1);
      },
      std::vector<Tensor>({x}), opts());
  REQUIRE_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        auto p = chunk(in[0], 3, 1);
        return concat({p[1], p[2]}, 0);
      },
      std::vector<Tensor>({x}), opts());
}

TEST_CASE("shape: views share storage, copies do not", "[shape]") {
  Rng rng(8);
  Tensor x = randn({4, 6}, rng);
  Tensor r = reshape(x, {2, 12});
  REQUIRE(r.storage() == x.storage());
  REQUIRE(r.at({1, 0}) == x.at({2, 0}));
  REQUIRE(permute(x, {1, 0}).storage() == x.storage());
  REQUIRE(narrow(x, 1, 2, 3).storage() == x.storage());
  REQUIRE(expand(reshape(x, {1, 4, 6}), {3, 4, 6}).storage() == x.storage());
  Tensor t = transpose(x, 0, 1);
  Tensor rt = reshape(t, {-1});  // not viewable: copied in logical order
  REQUIRE(rt.storage() != x.storage());
  REQUIRE(rt.to_vector() == t.to_vector());
  Tensor c = contiguous(t);
  REQUIRE(c.is_contiguous());
  REQUIRE(c.storage() != x.storage());
  REQUIRE(c.to_vector() == t.to_vector());
}

TEST_CASE("shape: transpose records permute", "[shape]") {
  Tensor x = Tensor::zeros({2, 3}).set_requires_grad(true);
  Tensor y = transpose(x, 0, 1);
  REQUIRE(graph_ops(y) == std::vector<OpId>{OpId::permute});
  REQUIRE(y.shape() == Shape{3, 2});
}

TEST_CASE("shape: narrow, concat and split round trips", "[shape]") {
  Tensor x = Tensor::from_vector({2, 5}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  auto parts = split(x, {1, 3, 1}, 1);
  REQUIRE(parts.size() == 3);
  REQUIRE(parts[1].to_vector() == std::vector<float>{1, 2, 3, 6, 7, 8});
  REQUIRE(concat(parts, 1).to_vector() == x.to_vector());
  auto rows = chunk(x, 2, 0);
  REQUIRE(rows[1].to_vector() == std::vector<float>{5, 6, 7, 8, 9});
  REQUIRE(concat({rows[1], rows[0]}, 0).to_vector() == std::vector<float>{5, 6, 7, 8, 9, 0, 1, 2, 3, 4});
  REQUIRE(narrow(x, 1, 3, 2).to_vector() == std::vector<float>{3, 4, 8, 9});

  // narrow's gradient: zeros with the gradient in the slice.
  Tensor w = Tensor::zeros({2, 4}).set_requires_grad(true);
  backward(narrow(w, 1, 1, 2), Tensor::from_vector({2, 2}, {1, 2, 3, 4}));
  REQUIRE(w.grad().to_vector() == std::vector<float>{0, 1, 2, 0, 0, 3, 4, 0});
  // expand's gradient sums the broadcast dims.
  Tensor e = Tensor::zeros({2, 1}).set_requires_grad(true);
  backward(expand(e, {3, 2, 2}), Tensor::ones({3, 2, 2}));
  REQUIRE(e.grad().to_vector() == std::vector<float>{6, 6});
}

TEST_CASE("shape: narrows of one tensor add their gradients into one buffer (scatter)", "[shape]") {
  Rng rng(11);
  // Parts of a leaf, overlapping and not, and the leaf itself: w.grad is the
  // sum of each part's gradient placed in its rows, plus the direct use.
  Tensor w = randn({5, 3}, rng).set_requires_grad(true);
  Tensor r0 = randn({2, 3}, rng), r1 = randn({3, 3}, rng), r2 = randn({2, 3}, rng), r3 = randn({5, 3}, rng);
  Tensor loss = add(add(sum(mul(narrow(w, 0, 0, 2), r0)), sum(mul(narrow(w, 0, 1, 3), r1))),
                    add(sum(mul(narrow(w, 0, 3, 2), r2)), sum(mul(w, r3))));
  backward(loss);
  std::vector<float> want = r3.to_vector();
  auto put = [&](const Tensor& r, int64_t row0) {
    std::vector<float> v = r.to_vector();
    for (size_t i = 0; i < v.size(); i++) want[row0 * 3 + i] += v[i];
  };
  put(r0, 0), put(r1, 1), put(r2, 3);
  REQUIRE_CLOSE(w.grad().to_vector(), want, 1e-6, 1e-6);
  // A second pass accumulates into the same .grad.
  backward(sum(mul(narrow(w, 1, 2, 1), Tensor::ones({5, 1}))));
  for (int64_t i = 0; i < 5; i++) want[i * 3 + 2] += 1.0f;
  REQUIRE_CLOSE(w.grad().to_vector(), want, 1e-6, 1e-6);

  // A .grad whose buffer something else also holds (here a view of it) is
  // copied before the part is added: the other holder keeps its values.
  Tensor buf = Tensor::full({5, 3}, 1.0f), alias = reshape(buf, {15});
  w.set_grad(buf);
  backward(sum(mul(narrow(w, 0, 2, 2), Tensor::ones({2, 3}))));
  REQUIRE(alias.to_vector() == std::vector<float>(15, 1.0f));
  std::vector<float> want2(15, 1.0f);
  for (int i = 6; i < 12; i++) want2[i] = 2.0f;
  REQUIRE(w.grad().to_vector() == want2);

  // An interior tensor used twice: its first use adds a part, the second the
  // whole gradient (both orders of the two uses).
  for (int order = 0; order < 2; order++) {
    Tensor x = randn({4, 3}, rng).set_requires_grad(true);
    Tensor a = randn({4, 3}, rng), b = randn({2, 3}, rng);
    Tensor y = mul(x, Tensor::full({1}, 2.0f));
    Tensor t = sum(mul(y, a)), u = sum(mul(narrow(y, 0, 1, 2), b));
    backward(order ? add(u, t) : add(t, u));
    std::vector<float> gx = a.to_vector(), bv = b.to_vector();
    for (size_t i = 0; i < bv.size(); i++) gx[3 + i] += bv[i];
    for (auto& e : gx) e *= 2.0f;
    INFO("order " << order);
    REQUIRE_CLOSE(x.grad().to_vector(), gx, 1e-6, 1e-6);
  }
}

TEST_CASE("shape: bad arguments name the op and the shapes", "[shape]") {
  Tensor x = Tensor::zeros({2, 5});
  REQUIRE_THROWS_WITH(chunk(x, 3, 1), Catch::Contains("chunk") && Catch::Contains("[2, 5]"));
  REQUIRE_THROWS_WITH(split(x, {2, 2}, 1), Catch::Contains("split") && Catch::Contains("[2, 5]"));
  REQUIRE_THROWS_WITH(concat({x, Tensor::zeros({3, 4})}, 1),
                      Catch::Contains("concat") && Catch::Contains("[2, 5]") && Catch::Contains("[3, 4]"));
  REQUIRE_THROWS_WITH(reshape(x, {3, 3}), Catch::Contains("reshape") && Catch::Contains("[2, 5]"));
  REQUIRE_THROWS_WITH(expand(x, {2, 4}), Catch::Contains("expand") && Catch::Contains("[2, 5]"));
  REQUIRE_THROWS_WITH(narrow(x, 1, 4, 2), Catch::Contains("narrow"));
  REQUIRE_THROWS_WITH(permute(x, {0}), Catch::Contains("permute"));
}

TEST_CASE("shape: strided copy matches its naive reference", "[shape]") {
  Rng rng(9);
  // Odd sizes, big enough for the parallel path; transposed, narrowed and
  // broadcast sources.
  Tensor x = randn({37, 29, 41}, rng);
  std::vector<Tensor> srcs = {permute(x, {2, 0, 1}), narrow(x, 1, 3, 20), transpose(x, 0, 2),
                              expand(narrow(x, 0, 1, 1), {5, 29, 41})};
  for (const Tensor& s : srcs) {
    Tensor fast = Tensor::empty(s.shape()), ref = Tensor::empty(s.shape());
    Layout L = make_layout(s.shape(), contiguous_strides(s.shape()), s.strides(), {}, "test");
    cpu::copy_strided(fast.f32(), s.f32(), L);
    cpu::copy_strided_naive(ref.f32(), s.f32(), L);
    REQUIRE(fast.to_vector() == ref.to_vector());
    REQUIRE(fast.to_vector() == s.to_vector());
  }
}
