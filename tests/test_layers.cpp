// tests/test_layers.cpp - the layers of nn/layers.h on top of the real ops:
// forward shapes, a few forward values, BatchNorm bookkeeping, DropPath
// modes, layer_scale, the release's key names for a stem, and the
// initialisation statistics of init_module_default (docs/SPEC.md §6.1).
#include <cmath>
#include <memory>

#include "nn/init.h"
#include "nn/layers.h"
#include "tests/helpers.h"

using namespace nala;

namespace {
void stats(const Tensor& t, double& mean, double& sd, float& absmax) {
  double s = 0, s2 = 0;
  absmax = 0;
  for (float v : t.to_vector()) s += v, s2 += (double)v * v, absmax = std::max(absmax, std::fabs(v));
  mean = s / t.numel();
  sd = std::sqrt(s2 / t.numel() - mean * mean);
}
}  // namespace

TEST_CASE("layers: forward shapes", "[nn]") {
  Rng rng(1);
  Linear fc(6, 4);
  Conv2d conv(3, 8, 3, 2, 1);
  DWConv2d dw(8, 5);
  LayerNorm ln(8, 1e-6f);
  BatchNorm bn(8);
  GELU gelu_m;
  SiLU silu_m;
  for (Module* m : std::vector<Module*>{&fc, &conv, &dw, &ln, &bn}) init_module_default(*m, rng);
  REQUIRE(fc.forward(test::randn({2, 5, 6}, rng)).shape() == Shape{2, 5, 4});
  Tensor img = test::randn({2, 9, 7, 3}, rng);
  Tensor y = conv.forward(img);
  REQUIRE(y.shape() == Shape{2, 5, 4, 8});
  REQUIRE(dw.forward(y).shape() == Shape{2, 5, 4, 8});
  REQUIRE(ln.forward(y).shape() == Shape{2, 5, 4, 8});
  REQUIRE(bn.forward(y).shape() == Shape{2, 5, 4, 8});
  REQUIRE(gelu_m.forward(y).shape() == Shape{2, 5, 4, 8});
  REQUIRE(silu_m.forward(y).shape() == Shape{2, 5, 4, 8});
  Linear nobias(6, 3, false);
  REQUIRE(nobias.named_parameters().size() == 1);
  REQUIRE(!nobias.bias.defined());
  REQUIRE(nobias.forward(test::randn({4, 6}, rng)).shape() == Shape{4, 3});
  REQUIRE(conv.weight.shape() == Shape{8, 3, 3, 3});
  REQUIRE(dw.weight.shape() == Shape{8, 1, 5, 5});
}

TEST_CASE("layers: LayerNorm and BatchNorm values and BatchNorm bookkeeping", "[nn]") {
  Rng rng(2);
  LayerNorm ln(5, 1e-5f);
  Tensor x = test::randn({3, 5}, rng, 2.0f);
  std::vector<float> y = ln.forward(x).to_vector();
  for (int r = 0; r < 3; r++) {
    double s = 0, s2 = 0;
    for (int c = 0; c < 5; c++) s += y[r * 5 + c], s2 += (double)y[r * 5 + c] * y[r * 5 + c];
    REQUIRE(std::fabs(s / 5) < 1e-5);
    REQUIRE(std::fabs(s2 / 5 - 1) < 1e-3);
  }

  BatchNorm bn(4);
  REQUIRE(bn.num_batches_tracked.dtype() == DType::I64);
  REQUIRE(bn.num_batches_tracked.shape() == Shape{});
  Tensor b = test::randn({2, 3, 3, 4}, rng, 1.0f);
  bn.eval();
  REQUIRE_CLOSE(bn.forward(b).to_vector(), [&] {
    std::vector<float> r = b.to_vector();
    for (float& v : r) v = v / std::sqrt(1.0f + 1e-5f);
    return r;
  }(), 1e-6, 1e-5);
  REQUIRE(bn.num_batches_tracked.to_vector_i64()[0] == 0);
  bn.train();
  bn.forward(b);
  bn.forward(b);
  REQUIRE(bn.num_batches_tracked.to_vector_i64()[0] == 2);
  REQUIRE(bn.running_mean.to_vector() != std::vector<float>(4, 0.0f));
  std::vector<std::string> keys;
  for (auto& kv : bn.state_dict()) keys.push_back(kv.first);
  REQUIRE(keys == std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"});
}

TEST_CASE("layers: DropPath is the identity in eval or at p = 0, per-sample otherwise", "[nn]") {
  Rng rng(3);
  Tensor x = test::randu({64, 3, 5}, rng, 1.0f, 2.0f);
  DropPath zero(0.0f, nullptr);
  REQUIRE(zero.forward(x).same(x));
  DropPath dp(0.25f, &rng);
  dp.eval();
  REQUIRE(dp.forward(x).same(x));
  dp.train();
  std::vector<float> y = dp.forward(x).to_vector(), xv = x.to_vector();
  int dropped = 0;
  for (int s = 0; s < 64; s++) {
    bool zero_s = y[s * 15] == 0.0f;
    dropped += zero_s;
    for (int i = 0; i < 15; i++)
      REQUIRE(std::fabs(y[s * 15 + i] - (zero_s ? 0.0f : xv[s * 15 + i] / 0.75f)) < 1e-5f);
  }
  REQUIRE(dropped > 2);
  REQUIRE(dropped < 40);
  REQUIRE_THROWS_WITH(DropPath(0.1f, nullptr), Catch::Contains("DropPath"));
}

TEST_CASE("layers: layer_scale multiplies each channel, gradients reach gamma", "[nn]") {
  Rng rng(4);
  Tensor x = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor g = Tensor::from_vector({1, 3, 1, 1}, {10, 100, 1000});
  REQUIRE(layer_scale(x, g).to_vector() == std::vector<float>{10, 200, 3000, 40, 500, 6000});
  REQUIRE_THROWS_WITH(layer_scale(x, Tensor::ones({1, 4, 1, 1})),
                      Catch::Contains("layer_scale") && Catch::Contains("[1, 4, 1, 1]") && Catch::Contains("[2, 3]"));
  Tensor xs = test::randn({2, 4, 3, 5}, rng, 1, true), gs = test::randn({1, 5, 1, 1}, rng, 1, true);
  auto fn = [](const std::vector<Tensor>& in) { return layer_scale(in[0], in[1]); };
  std::vector<Tensor> inputs = {xs, gs};
  REQUIRE_GRADCHECK(fn, inputs);
}

TEST_CASE("layers: a release-style stem has the release's key names", "[nn]") {
  // patch_embed.proj: conv 0, 3, 6, 9; BN 1, 4, 7, 10; GELU 2, 5, 8 (docs/SPEC.md §1.1).
  Sequential proj;
  int64_t c0 = 32;
  proj.push(std::make_unique<Conv2d>(3, c0 / 2, 3, 2, 1));
  proj.push(std::make_unique<BatchNorm>(c0 / 2));
  proj.push(std::make_unique<GELU>());
  proj.push(std::make_unique<Conv2d>(c0 / 2, c0 / 2, 3, 1, 1));
  proj.push(std::make_unique<BatchNorm>(c0 / 2));
  auto sd = proj.state_dict();
  REQUIRE(sd.size() == 14);
  REQUIRE(sd[0].first == "0.weight");
  REQUIRE(sd[2].first == "1.weight");
  REQUIRE(sd[6].first == "1.num_batches_tracked");
  REQUIRE(sd[7].first == "3.weight");
  REQUIRE(sd[12].first == "4.running_var");
  // (3*9*16 + 16) + 2*16 + (16*9*16 + 16) + 2*16
  REQUIRE(proj.num_parameters() == 448 + 32 + 2320 + 32);
  Rng rng(5);
  init_module_default(proj, rng);
  REQUIRE(proj.forward(test::randn({1, 8, 8, 3}, rng)).shape() == Shape{1, 4, 4, 16});
}

TEST_CASE("layers: initialisation statistics (docs/SPEC.md §6.1)", "[nn]") {
  Rng rng(6);
  Conv2d conv(64, 128, 3, 1, 1);
  DWConv2d dw(256, 5);
  Linear fc(300, 200);
  LayerNorm ln(16, 1e-6f);
  for (Module* m : std::vector<Module*>{&conv, &dw, &fc, &ln}) init_module_default(*m, rng);
  double mean, sd;
  float absmax;
  for (Tensor w : {conv.weight, dw.weight}) {
    stats(w, mean, sd, absmax);
    REQUIRE(absmax <= 2.0f);
    REQUIRE(std::fabs(mean) < 1e-3);
    REQUIRE(std::fabs(sd - 0.02) < 0.001);
  }
  REQUIRE(conv.bias.to_vector() == std::vector<float>(128, 0.0f));
  REQUIRE(dw.bias.to_vector() == std::vector<float>(256, 0.0f));
  float bound = 1.0f / std::sqrt(300.0f);
  stats(fc.weight, mean, sd, absmax);
  REQUIRE(absmax <= bound);
  REQUIRE(std::fabs(sd - bound / std::sqrt(3.0)) < 0.002);
  stats(fc.bias, mean, sd, absmax);
  REQUIRE(absmax <= bound);
  REQUIRE(sd > 0.0);
  REQUIRE(ln.weight.to_vector() == std::vector<float>(16, 1.0f));
  REQUIRE(ln.bias.to_vector() == std::vector<float>(16, 0.0f));
}
