// tests/test_fused_ops.cpp - the fused ops of NaLaFormer's blocks on the CPU:
// linear_gelu (an FFN's fc1 and its GELU), linear_scale_add (a block's last
// product, LayerScale and the residual add) and layernorm_gate (the attention
// output's LayerNorm times SiLU of the gate). Each: a gradcheck (with and
// without a bias, some inputs without a gradient, a non-contiguous input),
// the output and every gradient bit for bit those of the ops it replaces, and
// its errors. tests/test_cuda_fused_ops.cpp holds the GPU side.
#include "models/nalaformer.h"
#include "tests/fused_ops_cases.h"

using namespace nala;
using namespace nala::test;

TEST_CASE("gradcheck: linear_gelu", "[gradcheck][fused]") {
  Rng rng(31);
  Tensor x = randn({2, 3, 5}, rng, 1.0f, true), w = randn({7, 5}, rng, 0.7f, true), b = randn({7}, rng, 0.5f, true);
  REQUIRE_GRADCHECK(kLinearGelu, std::vector<Tensor>({x, w, b}));
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return linear_gelu(in[0], in[1], Tensor()); },
                    std::vector<Tensor>({x, w}));
  Tensor xt = randn({5, 3, 2}, rng, 1.0f, true);  // a transposed x, a weight without gradient
  Tensor wn = randn({4, 5}, rng);
  REQUIRE_GRADCHECK([&wn](const std::vector<Tensor>& in) { return linear_gelu(transpose(in[0], 0, 2), wn, in[1]); },
                    std::vector<Tensor>({xt, randn({4}, rng, 1.0f, true)}));
}

TEST_CASE("gradcheck: linear_scale_add", "[gradcheck][fused]") {
  Rng rng(32);
  Tensor r = randn({2, 3, 7}, rng, 1.0f, true), x = randn({2, 3, 5}, rng, 1.0f, true);
  Tensor w = randn({7, 5}, rng, 0.7f, true), b = randn({7}, rng, 0.5f, true), g = randn({7}, rng, 1.0f, true);
  REQUIRE_GRADCHECK(kLinearScaleAdd, std::vector<Tensor>({r, x, w, b, g}));
  REQUIRE_GRADCHECK(
      [](const std::vector<Tensor>& in) { return linear_scale_add(in[0], in[1], in[2], Tensor(), in[3]); },
      std::vector<Tensor>({r, x, w, g}));
  // gamma and the residual without gradient; a transposed residual
  Tensor gn = randn({7}, rng), rt = randn({7, 3, 2}, rng);
  REQUIRE_GRADCHECK([&](const std::vector<Tensor>& in) {
    return linear_scale_add(transpose(rt, 0, 2), in[0], in[1], in[2], gn);
  }, std::vector<Tensor>({x, w, b}));
}

TEST_CASE("gradcheck: layernorm_gate", "[gradcheck][fused]") {
  Rng rng(33);
  for (int64_t C : {1, 6, 9}) {
    INFO("C " << C);
    Tensor x = randn({2, 3, C}, rng, 1.0f, true), g = randn({2, 3, C}, rng, 1.5f, true);
    Tensor w = randn({C}, rng, 1.0f, true), b = randn({C}, rng, 0.5f, true);
    REQUIRE_GRADCHECK(kLnGate, std::vector<Tensor>({x, g, w, b}));
  }
  Tensor x = randn({4, 6}, rng, 1.0f, true), g = randn({6, 4}, rng, 1.5f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) {  // no weight or bias, a transposed gate
    return layernorm_gate(in[0], transpose(in[1], 0, 1), Tensor(), Tensor(), 1e-5f);
  }, std::vector<Tensor>({x, g}));
}

TEST_CASE("fused ops: bit for bit the ops they replace, forward and every gradient", "[fused]") {
  Rng rng(34);
  // R rows of I in, O out: O a multiple of 4 and not, one row, a wide layer
  const int64_t shapes[][3] = {{37, 5, 7}, {64, 32, 96}, {1, 1, 1}, {300, 33, 40}};
  for (auto& s : shapes) {
    const int64_t R = s[0], I = s[1], O = s[2];
    INFO("R " << R << " I " << I << " O " << O);
    Tensor x = randn({R, I}, rng), w = randn({O, I}, rng, 0.3f), b = randn({O}, rng), r = randn({R, O}, rng);
    Tensor g = randn({O}, rng);
    require_same_bits(Device::CPU, kLinearGelu, kLinearGeluRef, {x, w, b});
    require_same_bits(Device::CPU, kLinearGelu, kLinearGeluRef, {x, w, Tensor()});
    require_same_bits(Device::CPU, kLinearScaleAdd, kLinearScaleAddRef, {r, x, w, b, g});
    require_same_bits(Device::CPU, kLinearScaleAdd, kLinearScaleAddRef, {r, x, w, b, g}, {false, true, false, true, false});
    // scale_add is add(x, mul(y, gamma)) to the bit: the two references agree
    require_same_bits(Device::CPU, kLinearScaleAdd, [](const std::vector<Tensor>& in) {
      return scale_add(in[0], linear(in[1], in[2], in[3]), in[4]);
    }, {r, x, w, b, g});
    Tensor xo = randn({R, O}, rng), go = randn({R, O}, rng, 2.0f), wo = randn({O}, rng), bo = randn({O}, rng);
    require_same_bits(Device::CPU, kLnGate, kLnGateRef, {xo, go, wo, bo});
    require_same_bits(Device::CPU, kLnGate, kLnGateRef, {xo, go, wo, bo}, {false, true, false, false});
    require_same_bits(Device::CPU, kLnGate, kLnGateRef, {xo, go, wo, bo}, {true, false, true, false});
  }
  // Without the tape (inference) the same output as with it.
  Tensor x = randn({9, 12}, rng), w = randn({8, 12}, rng), b = randn({8}, rng), r = randn({9, 8}, rng);
  Tensor g = randn({8}, rng), xg = randn({9, 8}, rng);
  Tensor wt = w.detach(), xgt = xg.detach();
  wt.set_requires_grad(true), xgt.set_requires_grad(true);
  const Tensor with = linear_scale_add(r, x, wt, b, g);
  const Tensor with_gelu = linear_gelu(x, wt, b);
  const Tensor with_gate = layernorm_gate(r, xgt, g, b, 1e-6f);
  NoGradGuard no_grad;
  REQUIRE(bit_equal(linear_scale_add(r, x, w, b, g).to_vector(), with.to_vector()));
  REQUIRE(bit_equal(linear_gelu(x, w, b).to_vector(), with_gelu.to_vector()));
  REQUIRE(bit_equal(layernorm_gate(r, xg, g, b, 1e-6f).to_vector(), with_gate.to_vector()));
}

TEST_CASE("gradcheck: linear_scale_add with a drop-path mask", "[gradcheck][fused]") {
  Rng rng(35);
  Tensor r = randn({3, 2, 7}, rng, 1.0f, true), x = randn({3, 2, 5}, rng, 1.0f, true);
  Tensor w = randn({7, 5}, rng, 0.7f, true), b = randn({7}, rng, 0.5f, true), g = randn({7}, rng, 1.0f, true);
  const Tensor mask = Tensor::from_vector({3}, {2.0f, 0.0f, 2.0f});  // sample 1 dropped, p = 0.5
  REQUIRE_GRADCHECK([&mask](const std::vector<Tensor>& in) {
    return linear_scale_add(in[0], in[1], in[2], in[3], in[4], mask);
  }, std::vector<Tensor>({r, x, w, b, g}));
}

TEST_CASE("linear_scale_add with a drop-path mask: bit for bit add(res, drop_path(mul(linear, gamma)))", "[fused]") {
  Rng rng(36);
  for (const Shape& xs : {Shape{4, 9, 12}, Shape{5, 3, 3, 8}, Shape{1, 6}}) {
    INFO("x " << shape_str(xs));
    const int64_t O = 20;
    Shape os = xs;
    os.back() = O;
    Tensor x = randn(xs, rng), w = randn({O, xs.back()}, rng, 0.3f), b = randn({O}, rng), r = randn(os, rng);
    Tensor g = randn({O}, rng);
    const FusedPair dp = drop_path_pair(77, 0.4f);  // the same draws on both sides
    require_same_bits(Device::CPU, dp.fused, dp.ref, {r, x, w, b, g});
    require_same_bits(Device::CPU, dp.fused, dp.ref, {r, x, w, b, g}, {false, true, false, false, true});
  }
  Tensor x = Tensor::zeros({4, 3}), w = Tensor::zeros({5, 3}), r = Tensor::zeros({4, 5}), g = Tensor::zeros({5});
  REQUIRE_THROWS_WITH(linear_scale_add(r, x, w, Tensor(), g, Tensor::zeros({3})),
                      Catch::Contains("sample_mask") && Catch::Contains("[4]"));
  Tensor m = Tensor::zeros({4});
  m.set_requires_grad(true);
  REQUIRE_THROWS_WITH(linear_scale_add(r, x, w, Tensor(), g, m), Catch::Contains("without gradient"));
  REQUIRE_THROWS_WITH(linear_scale_add(Tensor::zeros({5}), Tensor::zeros({3}), w, Tensor(), g, Tensor::zeros({5})),
                      Catch::Contains("batch dim"));
}

TEST_CASE("a NalaBlock in training with stochastic depth is bit for bit the composed ops, and draws the same masks",
          "[fused][model]") {
  Rng init(37);
  for (AttnKind kind : {AttnKind::nala, AttnKind::softmax}) {
    INFO("kind " << attn_kind_name(kind));
    Rng masks(91);
    NalaBlock block(16, 2, 3.0f, 0.5f, 0.4f, kind, &masks);
    for (auto& [name, t] : block.named_parameters()) {
      Tensor v = t.detach();
      init.fill_normal(v, 0.0f, 0.3f);
    }
    block.train();
    Tensor x = randn({5, 4, 3, 16}, init, 1.0f, true);
    Tensor fused = block.forward(x);
    const auto fused_state = masks.state();
    Tensor up = randn(fused.shape(), init);
    backward(fused, up);
    const std::vector<float> gx = x.grad().to_vector();
    const std::vector<float> gw = block.ffn->fc2->weight.grad().to_vector();
    const std::vector<float> gg = block.gamma_1.grad().to_vector();
    x.set_grad(Tensor());
    block.zero_grad();
    // the same block as separate ops: y, LayerScale, drop path, add; the masks from an Rng in the same state
    Rng again(91);
    const int64_t H = 4, W = 3;
    Tensor h = block.cpe1->forward_add(x, x);
    h = add(h, drop_path(layer_scale(block.attn->forward_hw(block.norm1_ln->forward(h), H, W), block.gamma_1), 0.4f,
                         again, true));
    h = block.cpe2->forward_add(h, h);
    h = add(h, drop_path(layer_scale(block.ffn->forward(block.norm2_ln->forward(h)), block.gamma_2), 0.4f, again,
                         true));
    REQUIRE(again.state() == fused_state);
    REQUIRE(bit_equal(fused.to_vector(), h.to_vector()));
    backward(h, up);
    REQUIRE(bit_equal(gx, x.grad().to_vector()));
    REQUIRE(bit_equal(gw, block.ffn->fc2->weight.grad().to_vector()));
    REQUIRE(bit_equal(gg, block.gamma_1.grad().to_vector()));
  }
}

TEST_CASE("fused ops: errors name the op and the shapes", "[fused]") {
  Tensor x = Tensor::zeros({4, 3}), w = Tensor::zeros({5, 3}), b = Tensor::zeros({5});
  REQUIRE_THROWS_WITH(linear_gelu(x, Tensor::zeros({5, 2}), b), Catch::Contains("linear_gelu") && Catch::Contains("in features"));
  REQUIRE_THROWS_WITH(linear_scale_add(Tensor::zeros({4, 4}), x, w, b, Tensor::zeros({5})),
                      Catch::Contains("linear_scale_add") && Catch::Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(linear_scale_add(Tensor::zeros({4, 5}), x, w, b, Tensor::zeros({4})),
                      Catch::Contains("linear_scale_add") && Catch::Contains("gamma"));
  REQUIRE_THROWS_WITH(layernorm_gate(x, Tensor::zeros({3, 4}), Tensor(), Tensor(), 1e-5f),
                      Catch::Contains("layernorm_gate") && Catch::Contains("one shape"));
  REQUIRE_THROWS_WITH(layernorm_gate(x, x, Tensor::zeros({4}), Tensor(), 1e-5f), Catch::Contains("layernorm_gate"));
}
