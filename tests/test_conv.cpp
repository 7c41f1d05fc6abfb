// tests/test_conv.cpp - conv2d and dwconv2d: gradchecks, fast kernels against
// the naive ones, hand-computed values, bad inputs.
// Shape letters: B batch, H W input size, Ci Co channels, C depthwise channels, k kernel.
#include <functional>
#include <vector>

#include "kernels/cpu/conv.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/conv_gather.h"
#include "kernels/fastdiv.h"
#include "nn/layers.h"
#include "tests/helpers.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace nala;
using namespace nala::test;

namespace {

struct ConvCase {
  int64_t B, H, W, Ci, Co, k, stride, pad;
  bool bias;
};

Tensor out_like_conv(const ConvCase& c) {
  int64_t Ho = (c.H + 2 * c.pad - c.k) / c.stride + 1, Wo = (c.W + 2 * c.pad - c.k) / c.stride + 1;
  return Tensor::empty({c.B, Ho, Wo, c.Co});
}

}  // namespace

TEST_CASE("gradcheck: conv2d", "[conv][gradcheck]") {
  const std::vector<ConvCase> cases = {
      {2, 7, 5, 3, 5, 3, 1, 1, true},  {2, 7, 5, 3, 5, 3, 2, 1, true}, {2, 7, 5, 3, 5, 3, 1, 1, false},
      {2, 7, 5, 3, 5, 3, 2, 1, false}, {2, 7, 5, 3, 5, 1, 1, 0, true}, {2, 7, 5, 3, 5, 1, 2, 0, false},
      {2, 6, 5, 3, 5, 3, 2, 0, true},
  };
  Rng rng(1);
  for (const ConvCase& c : cases) {
    INFO("B " << c.B << " H " << c.H << " W " << c.W << " k " << c.k << " stride " << c.stride << " pad " << c.pad
              << " bias " << c.bias);
    std::vector<Tensor> in = {randn({c.B, c.H, c.W, c.Ci}, rng, 1.0f, true),
                              randn({c.Co, c.Ci, c.k, c.k}, rng, 0.5f, true)};
    if (c.bias) in.push_back(randn({c.Co}, rng, 1.0f, true));
    auto f = [&](const std::vector<Tensor>& t) {
      return conv2d(t[0], t[1], t.size() > 2 ? t[2] : Tensor(), (int)c.stride, (int)c.pad);
    };
    GradcheckOptions opt;
    opt.max_per_input = 100;  // every other element or so: keeps the 7 cases fast
    REQUIRE_GRADCHECK(f, in, opt);
  }
}

TEST_CASE("gradcheck: dwconv2d", "[conv][gradcheck]") {
  Rng rng(2);
  for (int64_t k : {3, 5}) {
    for (bool bias : {true, false}) {
      INFO("k " << k << " bias " << bias);
      std::vector<Tensor> in = {randn({2, 7, 5, 4}, rng, 1.0f, true), randn({4, 1, k, k}, rng, 0.5f, true)};
      if (bias) in.push_back(randn({4}, rng, 1.0f, true));
      auto f = [](const std::vector<Tensor>& t) { return dwconv2d(t[0], t[1], t.size() > 2 ? t[2] : Tensor()); };
      REQUIRE_GRADCHECK(f, in);
    }
  }
}

TEST_CASE("gradcheck: dwconv2d with an addend, and the residual x + dwconv(x)", "[conv][gradcheck]") {
  Rng rng(12);
  for (int64_t k : {3, 5}) {
    INFO("k " << k);
    std::vector<Tensor> in = {randn({2, 6, 5, 4}, rng, 1.0f, true), randn({4, 1, k, k}, rng, 0.5f, true),
                              randn({4}, rng, 1.0f, true), randn({2, 6, 5, 4}, rng, 1.0f, true)};
    auto f = [](const std::vector<Tensor>& t) { return dwconv2d(t[0], t[1], t[2], t[3]); };
    REQUIRE_GRADCHECK(f, in);
    // x both convolved and added: its gradient has both parts.
    auto r = [](const std::vector<Tensor>& t) { return dwconv2d(t[0], t[1], t[2], t[0]); };
    REQUIRE_GRADCHECK(r, (std::vector<Tensor>{in[0], in[1], in[2]}));
  }
}

TEST_CASE("gradcheck: dwconv2d_gelu_add", "[conv][gradcheck]") {
  Rng rng(14);
  for (int64_t k : {3, 5})
    for (bool bias : {true, false}) {
      INFO("k " << k << " bias " << bias);
      std::vector<Tensor> in = {randn({2, 6, 5, 4}, rng, 1.0f, true), randn({4, 1, k, k}, rng, 0.5f, true)};
      if (bias) in.push_back(randn({4}, rng, 1.0f, true));
      auto f = [](const std::vector<Tensor>& t) { return dwconv2d_gelu_add(t[0], t[1], t.size() > 2 ? t[2] : Tensor()); };
      REQUIRE_GRADCHECK(f, in);
    }
}

// The fused op is the FFN's two ops, h = gelu(pre), then h + dwconv(h): in
// float32 the same kernels in the same order, so the same bits, gradients
// included; in bf16 the output is the two ops' on a rounded h, bit for bit,
// and pre's gradient skips one rounding (dh stays float32 inside the op).
TEST_CASE("dwconv2d_gelu_add equals gelu, then h + dwconv(h)", "[conv]") {
  Rng rng(15);
  const int64_t geoms[][5] = {{3, 2, 9, 7, 67}, {5, 1, 7, 13, 32}, {3, 2, 4, 4, 6}, {9, 1, 3, 2, 13}};
  for (auto& gm : geoms) {
    const int64_t k = gm[0], B = gm[1], H = gm[2], W = gm[3], C = gm[4];
    INFO("k " << k << " B " << B << " H " << H << " W " << W << " C " << C);
    Tensor pre = randn({B, H, W, C}, rng, 1.5f), w = randn({C, 1, k, k}, rng, 0.3f), b = randn({C}, rng);
    Tensor up = randn(pre.shape(), rng);
    auto fused = [](const std::vector<Tensor>& t) { return dwconv2d_gelu_add(t[0], t[1], t[2]); };
    auto two = [](const std::vector<Tensor>& t) {
      Tensor h = gelu(t[0]);
      return dwconv2d(h, t[1], t[2], h);
    };
    auto run = [&](const std::function<Tensor(const std::vector<Tensor>&)>& f, DType dt) {
      std::vector<Tensor> in = {cast(pre, dt).detach(), w.clone(), b.clone()};
      for (Tensor& t : in) t.set_requires_grad(true);
      Tensor y = f(in);
      backward(y, cast(up, dt));
      std::vector<Tensor> r = {y.detach()};
      for (Tensor& t : in) r.push_back(t.grad());
      return r;
    };
    const std::vector<Tensor> a = run(fused, DType::F32), e = run(two, DType::F32);
    for (size_t i = 0; i < a.size(); i++) {
      INFO("float32, result " << i);
      REQUIRE(a[i].to_vector() == e[i].to_vector());
    }
    // bf16: the two ops on bf16 values, gelu in float32 and h rounded once
    Tensor pb = cast(pre, DType::BF16);
    Tensor hb = cast(gelu(cast(pb, DType::F32)), DType::BF16);
    REQUIRE(dwconv2d_gelu_add(pb, w, b).to_vector() == dwconv2d(hb, w, b, hb).to_vector());
    const std::vector<Tensor> g16 = run(fused, DType::BF16);
    REQUIRE(g16[1].dtype() == DType::BF16);
    // pre's gradient: gelu'(pre) (dout + flipped stencil(dout)), in float32 on the rounded values, rounded once
    Tensor ub = cast(up, DType::BF16), dh = Tensor::empty(pre.shape()), dp = Tensor::empty(pre.shape());
    Tensor uf = cast(ub, DType::F32), pf = cast(pb, DType::F32);
    cpu::dwconv2d_backward(dh.f32(), nullptr, nullptr, uf.f32(), pf.f32(), w.f32(), B, H, W, C, k, uf.f32());
    cpu::gelu_backward(dp.f32(), dh.f32(), pf.f32(), dp.numel());
    REQUIRE(g16[1].to_vector() == cast(dp, DType::BF16).to_vector());
    // taps and bias: float32 sums over the rounded h and dout
    Tensor dw = Tensor::empty(w.shape()), db = Tensor::empty(b.shape()), hf = cast(hb, DType::F32);
    cpu::dwconv2d_backward(nullptr, dw.f32(), db.f32(), uf.f32(), hf.f32(), w.f32(), B, H, W, C, k);
    REQUIRE(g16[2].to_vector() == dw.to_vector());
    REQUIRE(g16[3].to_vector() == db.to_vector());
  }
  REQUIRE_THROWS_WITH(dwconv2d_gelu_add(Tensor::zeros({1, 4, 4, 3}), Tensor::zeros({3, 1, 2, 2}), Tensor()),
                      Catch::Contains("dwconv2d_gelu_add") && Catch::Contains("odd"));
}

// conv2d_affine (inference): the convolution, a BatchNorm in eval mode as
// scale and shift, GELU: on the CPU the three passes, so the modules' values
// up to the rounding of scale (weight / sqrt(var + eps) against BatchNorm's
// rstd times weight).
TEST_CASE("conv2d_affine: conv2d, BatchNorm in eval mode, GELU", "[conv]") {
  Rng rng(16);
  for (bool act : {true, false}) {
    INFO("gelu " << act);
    Conv2d conv(3, 8, 3, 2, 1);
    BatchNorm bn(8);
    Rng init(3);
    for (Tensor* t : {&conv.weight, &conv.bias, &bn.weight, &bn.bias, &bn.running_mean})
      t->copy_(randn(t->shape(), init, 0.5f));
    bn.running_var.copy_(add_scalar(mul(randn({8}, init, 0.5f), randn({8}, init, 0.5f)), 1.0f));
    bn.eval();
    Tensor x = randn({2, 9, 11, 3}, rng);
    NoGradGuard ng;
    Tensor ref = bn.forward(conv.forward(x));
    if (act) ref = gelu(ref);
    const auto [scale, shift] = bn.eval_affine();
    REQUIRE_CLOSE(conv2d_affine(x, conv.weight, conv.bias, scale, shift, act, 2, 1), ref, 1e-5, 1e-5);
  }
  Tensor x = randn({1, 5, 5, 2}, rng), w = randn({4, 2, 3, 3}, rng), s = randn({4}, rng);
  REQUIRE_THROWS_WITH(conv2d_affine(x, w, Tensor(), s, Tensor::zeros({3}), false, 1, 1),
                      Catch::Contains("conv2d_affine") && Catch::Contains("shift") && Catch::Contains("[4]"));
  Tensor wg = w.clone();
  wg.set_requires_grad(true);
  REQUIRE_THROWS_WITH(conv2d_affine(x, wg, Tensor(), s, s, false, 1, 1), Catch::Contains("inference only"));
}

TEST_CASE("dwconv2d with an addend: add + dwconv(x), as the separate add rounds it", "[conv]") {
  Rng rng(13);
  const int64_t geoms[][5] = {{3, 2, 9, 7, 67}, {7, 2, 8, 15, 96}, {5, 1, 7, 13, 32}, {9, 2, 3, 2, 13}};
  for (auto& gm : geoms) {
    const int64_t k = gm[0], B = gm[1], H = gm[2], W = gm[3], C = gm[4];
    INFO("k " << k << " B " << B << " H " << H << " W " << W << " C " << C);
    Tensor x = randn({B, H, W, C}, rng), w = randn({C, 1, k, k}, rng), b = randn({C}, rng), a = randn(x.shape(), rng);
    Tensor y = Tensor::empty(x.shape()), yc = Tensor::empty(x.shape()), yr = Tensor::empty(x.shape());
    cpu::dwconv2d_add_forward(y.f32(), x.f32(), w.f32(), b.f32(), a.f32(), B, H, W, C, k);
    cpu::dwconv2d_forward(yc.f32(), x.f32(), w.f32(), b.f32(), B, H, W, C, k);
    cpu::dwconv2d_forward_naive(yr.f32(), x.f32(), w.f32(), b.f32(), B, H, W, C, k);
    std::vector<float> sep = yc.to_vector(), ref = yr.to_vector(), av = a.to_vector();
    for (size_t i = 0; i < sep.size(); i++) sep[i] += av[i], ref[i] += av[i];
    REQUIRE(y.to_vector() == sep);  // bit for bit the separate add
    REQUIRE_CLOSE(y.to_vector(), ref, 1e-5, 1e-5);
    // the op: with the addend and without it, then added
    REQUIRE(dwconv2d(x, w, b, a).to_vector() == add(dwconv2d(x, w, b), a).to_vector());
    // backward's dx_add: the flipped stencil of dout plus dx_add in one pass, bit for bit the two steps
    Tensor dx = Tensor::empty(x.shape()), dx2 = Tensor::empty(x.shape());
    cpu::dwconv2d_backward(dx.f32(), nullptr, nullptr, a.f32(), x.f32(), w.f32(), B, H, W, C, k, yc.f32());
    cpu::dwconv2d_backward(dx2.f32(), nullptr, nullptr, a.f32(), x.f32(), w.f32(), B, H, W, C, k);
    std::vector<float> two = dx2.to_vector(), ycv = yc.to_vector();
    for (size_t i = 0; i < two.size(); i++) two[i] += ycv[i];
    REQUIRE(dx.to_vector() == two);
  }
  Tensor x = randn({1, 4, 4, 3}, rng);
  REQUIRE_THROWS_WITH(dwconv2d(x, Tensor::zeros({3, 1, 3, 3}), Tensor(), Tensor::zeros({1, 4, 4, 2})),
                      Catch::Contains("dwconv2d") && Catch::Contains("addend") && Catch::Contains("[1, 4, 4, 2]"));
}

TEST_CASE("conv2d: fast kernels match the naive ones", "[conv]") {
  const std::vector<ConvCase> cases = {
      {2, 7, 5, 3, 5, 3, 1, 1, true},   {3, 9, 11, 6, 7, 3, 2, 1, true}, {2, 7, 5, 3, 5, 1, 1, 0, true},
      {2, 8, 7, 5, 3, 1, 2, 0, false},  {1, 6, 6, 4, 4, 5, 1, 2, true},  {2, 5, 7, 3, 4, 3, 3, 2, false},
      {3, 45, 45, 80, 8, 3, 1, 1, true},  // several im2col chunks
      {2, 0, 5, 3, 4, 1, 1, 1, true},     // H = 0: the padding alone gives 2 x 7 outputs (the bias)
      {2, 5, 4, 0, 3, 3, 1, 1, true},     // Ci = 0: no columns, the output is the bias
  };
  Rng rng(3);
  for (const ConvCase& c : cases) {
    INFO("B " << c.B << " H " << c.H << " W " << c.W << " Ci " << c.Ci << " Co " << c.Co << " k " << c.k
              << " stride " << c.stride << " pad " << c.pad);
    Tensor x = randn({c.B, c.H, c.W, c.Ci}, rng), w = randn({c.Co, c.Ci, c.k, c.k}, rng, 0.3f);
    Tensor b = randn({c.Co}, rng);
    const float* bp = c.bias ? b.f32() : nullptr;
    Tensor y = out_like_conv(c), yr = out_like_conv(c);
    cpu::conv2d_forward(y.f32(), x.f32(), w.f32(), bp, c.B, c.H, c.W, c.Ci, c.Co, c.k, c.stride, c.pad);
    cpu::conv2d_forward_naive(yr.f32(), x.f32(), w.f32(), bp, c.B, c.H, c.W, c.Ci, c.Co, c.k, c.stride, c.pad);
    REQUIRE_CLOSE(y, yr, 1e-4, 1e-5);

    Tensor g = randn(y.shape(), rng);
    Tensor dx = Tensor::full(x.shape(), 7.0f), dw = Tensor::full(w.shape(), 7.0f), db = Tensor::full({c.Co}, 7.0f);
    Tensor dxr = Tensor::empty(x.shape()), dwr = Tensor::empty(w.shape()), dbr = Tensor::empty({c.Co});
    cpu::conv2d_backward(dx.f32(), dw.f32(), db.f32(), g.f32(), x.f32(), w.f32(), c.B, c.H, c.W, c.Ci, c.Co, c.k,
                         c.stride, c.pad);
    cpu::conv2d_backward_naive(dxr.f32(), dwr.f32(), dbr.f32(), g.f32(), x.f32(), w.f32(), c.B, c.H, c.W, c.Ci,
                               c.Co, c.k, c.stride, c.pad);
    REQUIRE_CLOSE(dx, dxr, 1e-4, 1e-4);
    REQUIRE_CLOSE(dw, dwr, 1e-3, 1e-4);
    REQUIRE_CLOSE(db, dbr, 1e-4, 1e-4);
    // Each gradient alone gives the same values.
    Tensor dx2 = Tensor::empty(x.shape()), dw2 = Tensor::empty(w.shape());
    cpu::conv2d_backward(dx2.f32(), nullptr, nullptr, g.f32(), x.f32(), w.f32(), c.B, c.H, c.W, c.Ci, c.Co, c.k,
                         c.stride, c.pad);
    cpu::conv2d_backward(nullptr, dw2.f32(), nullptr, g.f32(), x.f32(), w.f32(), c.B, c.H, c.W, c.Ci, c.Co, c.k,
                         c.stride, c.pad);
    REQUIRE(dx2.to_vector() == dx.to_vector());
    REQUIRE(dw2.to_vector() == dw.to_vector());
  }
}

TEST_CASE("dwconv2d: fast kernels match the naive ones", "[conv]") {
  Rng rng(4);
  // k = 9 on a 3x2 image: the kernel is larger than the image. Channels in
  // whole blocks of 32 and rows wider than the kernel take the several-pixel
  // path for the interior (and the one-pixel path at the edges).
  const int64_t geoms[][5] = {{1, 2, 9, 7, 13},  {3, 2, 9, 7, 67},  {5, 2, 9, 7, 13},  {7, 2, 9, 7, 13},
                              {9, 2, 3, 2, 13},  {3, 2, 6, 14, 64}, {5, 1, 7, 13, 32}, {7, 2, 8, 15, 96},
                              {7, 1, 7, 11, 32}, {3, 1, 4, 6, 32}};
  for (auto& gm : geoms) {
    const int64_t k = gm[0], B = gm[1], H = gm[2], W = gm[3], C = gm[4];
    INFO("k " << k << " B " << B << " H " << H << " W " << W << " C " << C);
    Tensor x = randn({B, H, W, C}, rng), w = randn({C, 1, k, k}, rng), b = randn({C}, rng);
    Tensor y = Tensor::empty(x.shape()), yr = Tensor::empty(x.shape());
    cpu::dwconv2d_forward(y.f32(), x.f32(), w.f32(), b.f32(), B, H, W, C, k);
    cpu::dwconv2d_forward_naive(yr.f32(), x.f32(), w.f32(), b.f32(), B, H, W, C, k);
    REQUIRE_CLOSE(y, yr, 1e-5, 1e-5);
    Tensor g = randn(x.shape(), rng);
    Tensor dx = Tensor::full(x.shape(), 7.0f), dw = Tensor::full(w.shape(), 7.0f), db = Tensor::full({C}, 7.0f);
    Tensor dxr = Tensor::empty(x.shape()), dwr = Tensor::empty(w.shape()), dbr = Tensor::empty({C});
    cpu::dwconv2d_backward(dx.f32(), dw.f32(), db.f32(), g.f32(), x.f32(), w.f32(), B, H, W, C, k);
    cpu::dwconv2d_backward_naive(dxr.f32(), dwr.f32(), dbr.f32(), g.f32(), x.f32(), w.f32(), B, H, W, C, k);
    REQUIRE_CLOSE(dx, dxr, 1e-5, 1e-5);
    REQUIRE_CLOSE(dw, dwr, 1e-4, 1e-5);
    REQUIRE_CLOSE(db, dbr, 1e-4, 1e-5);
  }
}

TEST_CASE("conv2d: hand-computed values", "[conv]") {
  // A 1x1 conv is a matmul over channels: out[p, co] = sum_ci x[p, ci] w[co, ci] + b[co].
  Rng rng(5);
  const int64_t B = 2, H = 3, W = 5, Ci = 4, Co = 3;
  Tensor x = randn({B, H, W, Ci}, rng), w = randn({Co, Ci, 1, 1}, rng), b = randn({Co}, rng);
  Tensor y = conv2d(x, w, b, 1, 0);
  REQUIRE(y.shape() == Shape{B, H, W, Co});
  std::vector<float> xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector(), ref(B * H * W * Co);
  for (int64_t p = 0; p < B * H * W; p++)
    for (int64_t co = 0; co < Co; co++) {
      double s = bv[co];
      for (int64_t ci = 0; ci < Ci; ci++) s += (double)xv[p * Ci + ci] * wv[co * Ci + ci];
      ref[p * Co + co] = (float)s;
    }
  REQUIRE_CLOSE(y.to_vector(), ref, 1e-5, 1e-5);

  // All-ones 3x3 input and kernel, pad 1: each output counts the in-range taps.
  Tensor ones = Tensor::ones({1, 3, 3, 1}), k3 = Tensor::ones({1, 1, 3, 3});
  REQUIRE(conv2d(ones, k3, Tensor(), 1, 1).to_vector() == std::vector<float>{4, 6, 4, 6, 9, 6, 4, 6, 4});
  // Stride 2 keeps the corners: Ho = (3 + 2 - 3) / 2 + 1 = 2.
  Tensor y2 = conv2d(ones, k3, Tensor::from_vector({1}, {0.5f}), 2, 1);
  REQUIRE(y2.shape() == Shape{1, 2, 2, 1});
  REQUIRE(y2.to_vector() == std::vector<float>{4.5f, 4.5f, 4.5f, 4.5f});
}

TEST_CASE("dwconv2d: a delta kernel is the identity", "[conv]") {
  Rng rng(6);
  for (int64_t k : {3, 5}) {
    const int64_t C = 6;
    Tensor x = randn({2, 7, 5, C}, rng);
    Tensor w = Tensor::zeros({C, 1, k, k});
    for (int64_t c = 0; c < C; c++) w.f32()[(c * k + k / 2) * k + k / 2] = 1.0f;
    REQUIRE(dwconv2d(x, w, Tensor()).to_vector() == x.to_vector());
    // A delta shifted one column right reads the left neighbour (zero at the border).
    Tensor ws = Tensor::zeros({C, 1, k, k});
    for (int64_t c = 0; c < C; c++) ws.f32()[(c * k + k / 2) * k + k / 2 - 1] = 2.0f;
    Tensor y = dwconv2d(x, ws, Tensor::full({C}, 1.0f));
    REQUIRE(y.at({1, 3, 0, 2}) == 1.0f);
    REQUIRE(y.at({1, 3, 4, 2}) == 2.0f * x.at({1, 3, 3, 2}) + 1.0f);
  }
}

TEST_CASE("conv: autograd gradients match the naive backward", "[conv]") {
  Rng rng(7);
  Tensor x = randn({2, 7, 5, 3}, rng, 1.0f, true), w = randn({5, 3, 3, 3}, rng, 0.5f, true);
  Tensor b = randn({5}, rng, 1.0f, true);
  Tensor y = conv2d(x, w, b, 2, 1);
  Tensor g = randn(y.shape(), rng);
  backward(y, g);
  Tensor dxr = Tensor::empty(x.shape()), dwr = Tensor::empty(w.shape()), dbr = Tensor::empty({5});
  cpu::conv2d_backward_naive(dxr.f32(), dwr.f32(), dbr.f32(), g.f32(), x.f32(), w.f32(), 2, 7, 5, 3, 5, 3, 2, 1);
  REQUIRE_CLOSE(x.grad(), dxr, 1e-5, 1e-5);
  REQUIRE_CLOSE(w.grad(), dwr, 1e-5, 1e-5);
  REQUIRE_CLOSE(b.grad(), dbr, 1e-5, 1e-5);
  // Only the inputs that require grad receive one.
  Tensor x2 = randn({2, 7, 5, 3}, rng), w2 = randn({5, 3, 3, 3}, rng, 0.5f, true);
  backward(conv2d(x2, w2, Tensor(), 1, 1), randn({2, 7, 5, 5}, rng));
  REQUIRE(!x2.grad().defined());
  REQUIRE(w2.grad().shape() == w2.shape());
  // Non-contiguous input (a transposed view) gives the same result as its copy.
  Tensor xt = transpose(randn({2, 5, 7, 3}, rng), 1, 2);
  REQUIRE_CLOSE(conv2d(xt, w2, Tensor(), 1, 1), conv2d(xt.clone(), w2, Tensor(), 1, 1), 0.0, 0.0);
}

TEST_CASE("conv: bad inputs name the op and the shapes", "[conv]") {
  Tensor x = Tensor::zeros({2, 8, 8, 3});
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros({16, 4, 3, 3}), Tensor(), 1, 1),
                      Catch::Contains("conv2d") && Catch::Contains("[2, 8, 8, 3]") &&
                          Catch::Contains("[16, 4, 3, 3]") && Catch::Contains("channel mismatch"));
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros({16, 3, 3, 3}), Tensor::zeros({15}), 1, 1),
                      Catch::Contains("conv2d") && Catch::Contains("[15]"));
  REQUIRE_THROWS_WITH(conv2d(Tensor::zeros({8, 8, 3}), Tensor::zeros({16, 3, 3, 3}), Tensor(), 1, 1),
                      Catch::Contains("conv2d") && Catch::Contains("[8, 8, 3]"));
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros({16, 3, 3, 2}), Tensor(), 1, 1), Catch::Contains("conv2d"));
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros({16, 3, 3, 3}), Tensor(), 0, 1), Catch::Contains("conv2d"));
  REQUIRE_THROWS_WITH(conv2d(Tensor::zeros({1, 2, 2, 3}), Tensor::zeros({4, 3, 5, 5}), Tensor(), 1, 0),
                      Catch::Contains("conv2d") && Catch::Contains("smaller than the kernel"));
  REQUIRE_THROWS_WITH(dwconv2d(x, Tensor::zeros({4, 1, 3, 3}), Tensor()),
                      Catch::Contains("dwconv2d") && Catch::Contains("[2, 8, 8, 3]") &&
                          Catch::Contains("[4, 1, 3, 3]"));
  REQUIRE_THROWS_WITH(dwconv2d(x, Tensor::zeros({3, 1, 4, 4}), Tensor()),
                      Catch::Contains("dwconv2d") && Catch::Contains("odd"));
  REQUIRE_THROWS_WITH(dwconv2d(x, Tensor::zeros({3, 1, 3, 3}), Tensor::zeros({4})),
                      Catch::Contains("dwconv2d") && Catch::Contains("[4]"));
  REQUIRE_THROWS_WITH(dwconv2d(Tensor::from_vector_i64({1, 1, 1, 1}, {1}), Tensor::zeros({1, 1, 3, 3}), Tensor()),
                      Catch::Contains("dwconv2d") && Catch::Contains("f32"));
}

TEST_CASE("conv: reductions do not depend on the thread count", "[conv]") {
#ifdef _OPENMP
  Rng rng(8);
  const int64_t B = 3, H = 17, W = 15, C = 40, Co = 9;
  Tensor x = randn({B, H, W, C}, rng), w = randn({Co, C, 3, 3}, rng), wd = randn({C, 1, 3, 3}, rng);
  Tensor g = randn({B, 9, 8, Co}, rng), gd = randn({B, H, W, C}, rng);
  std::vector<std::vector<float>> runs[2];
  for (int t = 0; t < 2; t++) {
    const int prev = omp_get_max_threads();
    omp_set_num_threads(t == 0 ? 1 : 3);
    Tensor dw = Tensor::empty(w.shape()), db = Tensor::empty({Co}), dwd = Tensor::empty(wd.shape()),
           dbd = Tensor::empty({C});
    cpu::conv2d_backward(nullptr, dw.f32(), db.f32(), g.f32(), x.f32(), w.f32(), B, H, W, C, Co, 3, 2, 1);
    cpu::dwconv2d_backward(nullptr, dwd.f32(), dbd.f32(), gd.f32(), x.f32(), wd.f32(), B, H, W, C, 3);
    omp_set_num_threads(prev);
    runs[t] = {db.to_vector(), dwd.to_vector(), dbd.to_vector()};
  }
  REQUIRE(runs[0] == runs[1]);
#endif
}

TEST_CASE("conv2d: FastDiv (the CUDA unfolding's index division) equals integer division", "[conv]") {
  Rng rng(5);
  const int64_t top = 2147483647;  // operands below 2^31
  auto check = [&](int64_t d, int64_t n) {
    INFO("d " << d << " n " << n);
    REQUIRE(FastDiv(d)((int)n) == n / d);
  };
  for (int64_t d = 1; d <= 3000; d++) {
    for (int64_t n : {int64_t(0), d - 1, d, d + 1, 2 * d - 1, 7 * d, top - 1, top - (top % d), top - (top % d) - 1})
      if (n >= 0 && n < top) check(d, n);
    for (int i = 0; i < 40; i++) check(d, (int64_t)(rng.uniform(0.0f, 1.0f) * (double)(top - 1)));
  }
  for (int64_t d : {4096, 65535, 65536, 65537, 1000003, 1 << 30, (1 << 30) + 1, 2147483646, 2147483647})
    for (int i = 0; i < 2000; i++) check(d, i < 1000 ? i * (d / 1000 + 1) % top : (int64_t)(rng.uniform(0.0f, 1.0f) * (double)(top - 1)));
  REQUIRE(FastDiv(0)(12345) == 12345);  // an empty extent: never a divisor, harmless
}

TEST_CASE("conv2d: gather_cols (the CUDA implicit GEMMs' unfolding) equals a written-out unfolding", "[conv]") {
  Rng rng(6);
  struct Case {
    int B, H, W, Ci, k, stride, pad;
  };
  // channel counts with and without the 8- and 4-channel vector paths, the stem's 1 and 3, kernels 1-5,
  // strides 1-2, padding 0-2 (wider than the kernel's half too)
  for (const Case& c : {Case{2, 7, 9, 3, 3, 2, 1}, Case{1, 6, 5, 1, 3, 1, 1}, Case{2, 8, 8, 8, 3, 2, 1},
                        Case{1, 5, 7, 16, 2, 2, 0}, Case{2, 4, 6, 24, 3, 1, 2}, Case{1, 9, 4, 5, 5, 1, 2},
                        Case{3, 3, 3, 12, 1, 1, 1}, Case{1, 11, 13, 32, 3, 2, 1}}) {
    INFO("B " << c.B << " H " << c.H << " W " << c.W << " Ci " << c.Ci << " k " << c.k << " stride " << c.stride
              << " pad " << c.pad);
    const int Ho = (c.H + 2 * c.pad - c.k) / c.stride + 1, Wo = (c.W + 2 * c.pad - c.k) / c.stride + 1;
    const int rows = c.B * Ho * Wo, cols = c.k * c.k * c.Ci;
    std::vector<float> x((size_t)c.B * c.H * c.W * c.Ci);
    for (float& v : x) v = rng.uniform(-1.0f, 1.0f);
    ConvGather g{c.H, c.W, c.Ci, Ho, Wo, c.k, c.stride, c.pad, rows, cols, false};
    // the unfolding written out: column q = (ky k + kx) Ci + ci
    auto ref = [&](int r, int q) -> float {
      const int b = r / (Ho * Wo), ho = r / Wo % Ho, wo = r % Wo, t = q / c.Ci, ci = q % c.Ci;
      const int h = ho * c.stride - c.pad + t / c.k, w = wo * c.stride - c.pad + t % c.k;
      if (h < 0 || h >= c.H || w < 0 || w >= c.W) return 0.0f;
      return x[(((size_t)b * c.H + h) * c.W + w) * c.Ci + ci];
    };
    for (int r = 0; r < rows; r++) {
      for (int q0 = 0; q0 < cols; q0 += 8)
        for (int qmax : {cols, std::min(cols, q0 + 3)}) {  // the whole row, and a slice ending mid-chunk
          float v[8];
          gather_cols<8>(x.data(), g, r, q0, qmax, v);
          for (int j = 0; j < 8; j++) {
            INFO("row " << r << " column " << q0 + j << " of " << qmax);
            REQUIRE(v[j] == (q0 + j < qmax ? ref(r, q0 + j) : 0.0f));
          }
        }
      for (int q0 = 0; q0 < cols; q0 += 4)  // the FP32 GEMM's pieces of 4
        for (int qmax : {cols, std::min(cols, q0 + 2)}) {
          float v[4];
          gather_cols<4>(x.data(), g, r, q0, qmax, v);
          for (int j = 0; j < 4; j++) {
            INFO("row " << r << " column " << q0 + j << " of " << qmax << " (pieces of 4)");
            REQUIRE(v[j] == (q0 + j < qmax ? ref(r, q0 + j) : 0.0f));
          }
        }
    }
  }
}
