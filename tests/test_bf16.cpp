// tests/test_bf16.cpp - bf16 tensors on the CPU: the rounding (tensor/bf16.h),
// the cast op and its gradient, where gradients of bf16 tensors may and may
// not go, and nala_attention on bf16 q, k, v (the float32 op on the rounded
// inputs, each output rounded once). The GPU's side: tests/test_cuda_bf16.cpp.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops.h"
#include "tests/helpers.h"

using namespace nala;
using namespace nala::test;

namespace {

uint16_t bits_of(float x) { return float_to_bf16(x).bits; }
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The values of t rounded to bf16 and back, as an f32 CPU tensor.
Tensor rounded(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  for (float& x : v) x = bf16_to_float(float_to_bf16(x));
  return Tensor::from_vector(t.shape(), v);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  std::vector<float> x = a.to_vector(), y = b.to_vector();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * 4) == 0;
}

}  // namespace

TEST_CASE("bf16: rounding to nearest even, and back exactly", "[bf16]") {
  CHECK(bits_of(1.0f) == 0x3f80);
  CHECK(bits_of(-2.0f) == 0xc000);
  CHECK(bits_of(-0.0f) == 0x8000);
  // 1 + 2^-8 lies halfway between 1 (even) and 1 + 2^-7 (odd): to 1.
  CHECK(bits_of(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);
  // 1 + 3 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
  CHECK(bits_of(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);
  // Just above the halfway point: up.
  CHECK(bits_of(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) == 0x3f81);
  CHECK(bits_of(std::numeric_limits<float>::infinity()) == 0x7f80);
  CHECK(bits_of(-std::numeric_limits<float>::infinity()) == 0xff80);
  CHECK(bits_of(std::numeric_limits<float>::max()) == 0x7f80);  // past the largest bf16: infinity
  CHECK(bits_of(std::nanf("")) == 0x7fff);
  CHECK(bits_of(-std::nanf("")) == 0x7fff);
  CHECK(bits_of(from_bits(0x00012345u)) == 0x0001);  // subnormals keep their top bits
  // Every bf16 that is not NaN comes back to the same bits through float32.
  int bad = 0;
  for (uint32_t b = 0; b < 65536; b++) {
    const bf16_t x{(uint16_t)b};
    const float f = bf16_to_float(x);
    if (std::isnan(f)) continue;
    if (float_to_bf16(f).bits != b) bad++;
  }
  CHECK(bad == 0);
}

TEST_CASE("gradcheck: cast", "[gradcheck][bf16]") {
  // Through bf16 and back: the values lie on a grid of 1/32 in [-3, 3], so x,
  // x +- eps and x +- 2 eps (eps = 1/32) are all exact in bf16 and the finite
  // differences see the identity; the analytic gradient is the weight cast to
  // bf16 (2^-9 relative), well inside the tolerance.
  Rng rng(31);
  Tensor x = randu({4, 9}, rng, -2.5f, 2.5f);
  float* p = x.f32();
  for (int64_t i = 0; i < x.numel(); i++) p[i] = std::round(p[i] * 32) / 32;
  x.set_requires_grad(true);
  GradcheckOptions opt;
  opt.eps = 1.0 / 32;
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return cast(cast(in[0], DType::BF16), DType::F32); },
                    std::vector<Tensor>({x}), opt);
  // cast alone (a bf16 output; the checker reads it through to_vector).
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return cast(in[0], DType::BF16); }, std::vector<Tensor>({x}),
                    opt);
}

TEST_CASE("cast: values, strides, the gradient's dtype, and what is refused", "[bf16]") {
  Rng rng(32);
  Tensor x = randn({5, 7}, rng, 3.0f);
  Tensor b = cast(x, DType::BF16);
  REQUIRE(b.dtype() == DType::BF16);
  REQUIRE(b.shape() == x.shape());
  REQUIRE(same_bits(b, rounded(x)));
  REQUIRE(cast(b, DType::F32).dtype() == DType::F32);
  REQUIRE(same_bits(cast(b, DType::F32), rounded(x)));
  REQUIRE(cast(x, DType::F32).same(x));  // already f32: x itself
  // A transposed (non-contiguous) input is read in its logical order.
  Tensor xt = transpose(x, 0, 1);
  REQUIRE(same_bits(cast(xt, DType::BF16), rounded(xt.clone())));
  // The gradient comes back in the input's dtype: f32 for an f32 x, bf16 for a
  // bf16 leaf. A gradient handed to backward takes its root's dtype first (an
  // f32 one for the bf16 output is rounded), also when the root is a leaf.
  Tensor xg = x.clone();
  xg.set_requires_grad(true);
  Tensor w = randn({5, 7}, rng);
  backward(cast(xg, DType::BF16), w);
  REQUIRE(xg.grad().dtype() == DType::F32);
  REQUIRE(same_bits(xg.grad(), rounded(w)));
  Tensor root_leaf = cast(x, DType::BF16).detach();
  root_leaf.set_requires_grad(true);
  backward(root_leaf, w);
  REQUIRE(root_leaf.grad().dtype() == DType::BF16);
  REQUIRE(same_bits(root_leaf.grad(), rounded(w)));
  Tensor leaf = cast(x, DType::BF16).detach();
  leaf.set_requires_grad(true);
  backward(cast(leaf, DType::F32), w);
  REQUIRE(leaf.grad().dtype() == DType::BF16);
  REQUIRE(same_bits(leaf.grad(), rounded(w)));
  // Gradients add up in their dtype: a bf16 tensor used twice gets the sum of
  // its two bf16 gradients, in f32, rounded once. Here 1.5 w and 0.75 w:
  // bf16(bf16(1.5 w) + bf16(0.75 w)). Interior (a bf16 view used twice) and leaf.
  Tensor twice = cast(x, DType::BF16).detach();
  twice.set_requires_grad(true);
  Tensor y = add(scale(cast(twice, DType::F32), 1.5f), scale(cast(reshape(twice, {5, 7}), DType::F32), 0.75f));
  backward(y, w);
  std::vector<float> a = rounded(scale(w, 1.5f)).to_vector(), c = rounded(scale(w, 0.75f)).to_vector();
  for (size_t i = 0; i < a.size(); i++) a[i] += c[i];
  REQUIRE(twice.grad().dtype() == DType::BF16);
  REQUIRE(same_bits(twice.grad(), rounded(Tensor::from_vector({5, 7}, a))));
  Tensor inner = reshape(twice, {7, 5});  // an interior bf16 node with two consumers
  twice.set_grad(Tensor());
  backward(add(cast(inner, DType::F32), cast(inner, DType::F32)), reshape(w, {7, 5}));
  REQUIRE(same_bits(twice.grad(), rounded(scale(rounded(w), 2.0f))));
  // A non-contiguous bf16 tensor made contiguous on the tape: its gradient comes back bf16.
  twice.set_grad(Tensor());
  backward(cast(contiguous(transpose(twice, 0, 1)), DType::F32), transpose(w, 0, 1).clone());
  REQUIRE(same_bits(twice.grad(), rounded(w)));
  // Views whose gradient is a sum (narrow, expand) refuse a bf16 input that
  // needs a gradient, at the op; reshape and transpose pass bf16 gradients on.
  REQUIRE_THROWS_WITH(narrow(twice, 0, 1, 2), Catch::Contains("narrow: the gradient of bf16[5, 7]"));
  REQUIRE_THROWS_WITH(expand(reshape(twice, {1, 5, 7}), {3, 5, 7}), Catch::Contains("expand: the gradient of bf16"));
  REQUIRE_NOTHROW(narrow(b, 0, 1, 2));  // no gradient wanted: a view
  twice.set_grad(Tensor());
  backward(cast(transpose(reshape(twice, {7, 5}), 0, 1), DType::F32), w);
  REQUIRE(twice.grad().dtype() == DType::BF16);
  REQUIRE(twice.grad().shape() == Shape({5, 7}));
  REQUIRE(same_bits(twice.grad(), rounded(reshape(transpose(w, 0, 1), {5, 7}))));
  // i64 is not a floating type.
  Tensor idx = Tensor::from_vector_i64({2}, {1, 2});
  REQUIRE_THROWS_WITH(cast(idx, DType::BF16), Catch::Contains("cast: casts between f32 and bf16 only"));
  REQUIRE_THROWS_WITH(relu(b), Catch::Contains("relu: expected an f32 tensor, got bf16[5, 7]"));  // by name
}

TEST_CASE("nala_attention on bf16 q, k, v: the float32 op on the rounded values, rounded once", "[bf16][attention]") {
  Rng rng(33);
  struct Case {
    int64_t B, h, H, W, d;
  };
  // Odd N, N smaller than a token block, several heads, head dims with and without
  // tensor-core kernels on the GPU.
  for (Case c : {Case{2, 3, 5, 7, 16}, Case{1, 1, 2, 3, 32}, Case{1, 2, 9, 9, 64}, Case{2, 1, 4, 5, 12}}) {
    INFO("B " << c.B << " h " << c.h << " H " << c.H << " W " << c.W << " d " << c.d);
    const Shape s = {c.B, c.h, c.H * c.W, c.d};
    Tensor q = randn(s, rng, 0.5f), k = randn(s, rng, 0.8f), v = randn(s, rng), go = randn(s, rng);
    // bf16 leaves.
    Tensor qb = cast(q, DType::BF16).detach(), kb = cast(k, DType::BF16).detach(), vb = cast(v, DType::BF16).detach();
    for (Tensor* t : {&qb, &kb, &vb}) t->set_requires_grad(true);
    Tensor ob = nala_attention(qb, kb, vb, c.H, c.W);
    REQUIRE(ob.dtype() == DType::BF16);
    backward(ob, cast(go, DType::BF16));
    // float32 on the rounded values.
    Tensor qf = rounded(q), kf = rounded(k), vf = rounded(v);
    for (Tensor* t : {&qf, &kf, &vf}) t->set_requires_grad(true);
    Tensor of = nala_attention(qf, kf, vf, c.H, c.W);
    backward(of, rounded(go));
    REQUIRE(same_bits(ob, rounded(of)));
    REQUIRE(qb.grad().dtype() == DType::BF16);
    REQUIRE(same_bits(qb.grad(), rounded(qf.grad())));
    REQUIRE(same_bits(kb.grad(), rounded(kf.grad())));
    REQUIRE(same_bits(vb.grad(), rounded(vf.grad())));
    // An f32 output gradient (not rounded) is rounded to bf16 first: the same gradients.
    for (Tensor* t : {&qb, &kb, &vb}) t->set_grad(Tensor());
    backward(nala_attention(qb, kb, vb, c.H, c.W), go);
    REQUIRE(same_bits(qb.grad(), rounded(qf.grad())));
    REQUIRE(same_bits(kb.grad(), rounded(kf.grad())));
  }
  // Mixed dtypes are refused by name.
  Tensor q = randn({1, 1, 4, 8}, rng), k = cast(randn({1, 1, 4, 8}, rng), DType::BF16);
  REQUIRE_THROWS_WITH(nala_attention(q, k, q, 2, 2), Catch::Contains("nala_attention: q, k, v dtypes differ"));
  REQUIRE_THROWS_WITH(softmax_attention(k, k, k, 2, 2), Catch::Contains("softmax_attention: expected f32, got bf16"));
}

// The FFN's hidden activations in bf16 mode: dwconv2d and the linear ops on
// bf16 activations. On the CPU each is the float32 op on the rounded values,
// each bf16 result rounded once; bf16 tensors get bf16 gradients, weights f32.
TEST_CASE("dwconv2d on bf16 activations: the float32 op on the rounded values, rounded once", "[bf16][conv]") {
  Rng rng(34);
  for (int64_t k : {3, 5}) {
    for (bool self_add : {false, true}) {
      INFO("k " << k << " self_add " << self_add);
      const int64_t B = 2, H = 5, W = 7, C = 6;
      Tensor x = randn({B, H, W, C}, rng), w = randn({C, 1, k, k}, rng, 0.3f), b = randn({C}, rng);
      Tensor go = randn({B, H, W, C}, rng);
      Tensor xb = cast(x, DType::BF16).detach(), wb = w.clone(), bb = b.clone();
      for (Tensor* t : {&xb, &wb, &bb}) t->set_requires_grad(true);
      Tensor ob = dwconv2d(xb, wb, bb, self_add ? xb : Tensor());
      REQUIRE(ob.dtype() == DType::BF16);
      backward(ob, cast(go, DType::BF16));
      Tensor xf = rounded(x), wf = w.clone(), bf = b.clone();
      for (Tensor* t : {&xf, &wf, &bf}) t->set_requires_grad(true);
      Tensor of = dwconv2d(xf, wf, bf, self_add ? xf : Tensor());
      backward(of, rounded(go));
      REQUIRE(same_bits(ob, rounded(of)));
      REQUIRE(xb.grad().dtype() == DType::BF16);
      REQUIRE(same_bits(xb.grad(), rounded(xf.grad())));
      REQUIRE(wb.grad().dtype() == DType::F32);
      REQUIRE(same_bits(wb.grad(), wf.grad()));
      REQUIRE(same_bits(bb.grad(), bf.grad()));
    }
  }
  Tensor x = cast(randn({1, 3, 3, 4}, rng), DType::BF16), w = randn({4, 1, 3, 3}, rng);
  REQUIRE_THROWS_WITH(dwconv2d(x, w, Tensor(), randn({1, 3, 3, 4}, rng)),
                      Catch::Contains("dwconv2d: addend f32[1, 3, 3, 4] must have the input's dtype"));
}

TEST_CASE("linear_gelu with a bf16 result, and linear, linear_scale_add on a bf16 x", "[bf16][matmul]") {
  Rng rng(35);
  const int64_t R = 13, I = 9, O = 11;
  Tensor x = randn({R, I}, rng), w = randn({O, I}, rng, 0.4f), b = randn({O}, rng), go = randn({R, O}, rng);
  auto leaves = [](std::vector<Tensor> ts) {
    for (Tensor& t : ts) t.set_requires_grad(true);
    return ts;
  };
  SECTION("linear_gelu, bf16 result: gelu of the rounded product, rounded") {
    std::vector<Tensor> in = leaves({x.clone(), w.clone(), b.clone()});
    Tensor out = linear_gelu(in[0], in[1], in[2], DType::BF16);
    REQUIRE(out.dtype() == DType::BF16);
    backward(out, cast(go, DType::BF16));
    // The reference from float32 ops: pre = rounded(linear), out = rounded(gelu(pre)),
    // dpre = rounded(gelu's gradient at pre), then linear's gradients from dpre.
    Tensor pre = rounded(linear(x, w, b).detach());
    pre.set_requires_grad(true);
    Tensor y = gelu(pre);
    REQUIRE(same_bits(out, rounded(y.detach())));
    backward(y, rounded(go));
    Tensor dpre = rounded(pre.grad());
    std::vector<Tensor> ref = leaves({x.clone(), w.clone(), b.clone()});
    backward(linear(ref[0], ref[1], ref[2]), dpre);
    for (int i = 0; i < 3; i++) {
      INFO("gradient " << i);
      REQUIRE(in[i].grad().dtype() == DType::F32);
      REQUIRE(same_bits(in[i].grad(), ref[i].grad()));
    }
    // Without a gradient nothing is saved and gelu joins the product's pass:
    // gelu of the float32 product, rounded once.
    REQUIRE(same_bits(linear_gelu(x, w, b, DType::BF16), rounded(gelu(linear(x, w, b)))));
  }
  SECTION("linear and linear_scale_add on a bf16 x: the float32 ops on the rounded x") {
    Tensor res = randn({R, O}, rng), gamma = randn({O}, rng);
    for (int which = 0; which < 2; which++) {
      INFO((which ? "linear_scale_add" : "linear"));
      auto op = [&](const std::vector<Tensor>& t) {
        return which ? linear_scale_add(t[3], t[0], t[1], t[2], t[4]) : linear(t[0], t[1], t[2]);
      };
      // linear_scale_add stores its product y in bf16 (the residual add reads
      // it rounded, y's gradient is bf16): the reference rounds y by casts.
      auto ref_op = [&](const std::vector<Tensor>& t) {
        if (!which) return linear(t[0], t[1], t[2]);
        return scale_add(t[3], cast(cast(linear(t[0], t[1], t[2]), DType::BF16), DType::F32), t[4]);
      };
      std::vector<Tensor> in =
          leaves({cast(x, DType::BF16).detach(), w.clone(), b.clone(), res.clone(), gamma.clone()});
      std::vector<Tensor> ref = leaves({rounded(x), w.clone(), b.clone(), res.clone(), gamma.clone()});
      Tensor out = op(in), outf = ref_op(ref);
      REQUIRE(out.dtype() == DType::F32);
      REQUIRE(same_bits(out, outf));
      backward(out, go);
      backward(outf, go);
      REQUIRE(in[0].grad().dtype() == DType::BF16);
      REQUIRE(same_bits(in[0].grad(), rounded(ref[0].grad())));
      for (int i = 1; i < (which ? 5 : 3); i++) {
        INFO("gradient " << i);
        REQUIRE(same_bits(in[i].grad(), ref[i].grad()));
      }
    }
  }
  REQUIRE_THROWS_WITH(linear_gelu(x, w, b, DType::I64), Catch::Contains("linear_gelu: result dtype f32 or bf16"));
}

// A LayerNorm with a bf16 result (norm1, norm2 in bf16 mode): the float32
// result rounded once; its bf16 gradient goes back as the float32 op's
// gradient of the same values. The gate on bf16 x and g: the float32 gate on
// the rounded values, its result (f32 or bf16) rounded once and x's and g's
// gradients returned in bf16.
TEST_CASE("layernorm with a bf16 result, layernorm_gate on bf16: the float32 ops, rounded", "[bf16][norm]") {
  Rng rng(36);
  const int64_t R = 7, C = 12;
  Tensor x = randn({R, C}, rng, 2.0f), g = randn({R, C}, rng, 2.0f), w = randn({C}, rng), b = randn({C}, rng);
  Tensor go = randn({R, C}, rng);
  auto leaves = [](std::vector<Tensor> ts) {
    for (Tensor& t : ts) t.set_requires_grad(true);
    return ts;
  };
  SECTION("layernorm") {
    std::vector<Tensor> in = leaves({x.clone(), w.clone(), b.clone()}), ref = leaves({x.clone(), w.clone(), b.clone()});
    Tensor out = layernorm(in[0], in[1], in[2], 1e-6f, -1, DType::BF16);
    REQUIRE(out.dtype() == DType::BF16);
    Tensor outf = layernorm(ref[0], ref[1], ref[2], 1e-6f);
    REQUIRE(same_bits(out, rounded(outf)));
    backward(out, cast(go, DType::BF16));
    backward(outf, rounded(go));
    for (int i = 0; i < 3; i++) {
      INFO("gradient " << i);
      REQUIRE(in[i].grad().dtype() == DType::F32);
      REQUIRE(same_bits(in[i].grad(), ref[i].grad()));
    }
    REQUIRE_THROWS_WITH(layernorm(x, w, b, 1e-6f, 0, DType::BF16),
                        Catch::Contains("layernorm: the result is f32, or bf16 over the last dim"));
  }
  SECTION("layernorm_gate") {
    for (DType od : {DType::F32, DType::BF16}) {
      INFO("result " << dtype_name(od));
      std::vector<Tensor> in = leaves({cast(x, DType::BF16).detach(), cast(g, DType::BF16).detach(), w.clone(), b.clone()});
      std::vector<Tensor> ref = leaves({rounded(x), rounded(g), w.clone(), b.clone()});
      Tensor out = layernorm_gate(in[0], in[1], in[2], in[3], 1e-6f, od);
      REQUIRE(out.dtype() == od);
      Tensor outf = layernorm_gate(ref[0], ref[1], ref[2], ref[3], 1e-6f);
      REQUIRE(same_bits(out, od == DType::BF16 ? rounded(outf) : outf));
      Tensor gd = od == DType::BF16 ? rounded(go) : go;
      backward(out, cast(gd, od));
      backward(outf, gd);
      for (int i = 0; i < 4; i++) {
        INFO("gradient " << i);
        REQUIRE(in[i].grad().dtype() == (i < 2 ? DType::BF16 : DType::F32));
        REQUIRE(same_bits(in[i].grad(), i < 2 ? rounded(ref[i].grad()) : ref[i].grad()));
      }
    }
    REQUIRE_THROWS_WITH(layernorm_gate(x, cast(g, DType::BF16), w, b, 1e-6f),
                        Catch::Contains("layernorm_gate: inputs must be both f32 or both bf16"));
  }
}
