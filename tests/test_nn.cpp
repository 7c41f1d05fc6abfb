// tests/test_nn.cpp - modules: hierarchical names and their order, buffers,
// Sequential indices, train/eval, parameter counts, state_dict loading, and
// the initialisation helpers. The modules here are small test modules built
// from register_*; the real layers are exercised in tests/test_layers.cpp.
#include <cmath>
#include <memory>

#include "nn/init.h"
#include "nn/module.h"
#include "tests/helpers.h"

using namespace nala;

namespace {

std::vector<std::string> names_of(const NamedTensors& v) {
  std::vector<std::string> out;
  for (auto& kv : v) out.push_back(kv.first);
  return out;
}

// A leaf with a weight (a, b) and a bias (a), reporting `type`.
struct Leaf : Module {
  Tensor weight, bias;
  Leaf(const std::string& type, int64_t a, int64_t b, bool has_bias = true) : Module(type) {
    weight = register_parameter("weight", Tensor::zeros({a, b}));
    if (has_bias) bias = register_parameter("bias", Tensor::zeros({a}));
  }
  Tensor forward(const Tensor& x) override { return x; }
};

// BatchNorm-shaped: params then buffers.
struct NormLike : Module {
  NormLike(int64_t C) : Module("BatchNorm") {
    register_parameter("weight", Tensor::full({C}, 3.0f));
    register_parameter("bias", Tensor::full({C}, 3.0f));
    register_buffer("running_mean", Tensor::full({C}, 3.0f));
    register_buffer("running_var", Tensor::full({C}, 3.0f));
    register_buffer("num_batches_tracked", Tensor::from_vector_i64({}, {7}));
  }
  Tensor forward(const Tensor& x) override { return x; }
};

struct NoParams : Module {
  NoParams() : Module("GELU") {}
  Tensor forward(const Tensor& x) override { return x; }
};

struct Net : Module {
  Tensor gamma, late;
  Sequential* stem;
  Leaf* head;
  Net() : Module("Net") {
    gamma = register_parameter("gamma_1", Tensor::ones({1, 4, 1, 1}));
    register_buffer("table", Tensor::zeros({3}), /*persistent=*/false);
    stem = register_module("stem", std::make_unique<Sequential>());
    stem->push(std::make_unique<Leaf>("Conv2d", 4, 3));
    stem->push(std::make_unique<NoParams>());
    stem->push(std::make_unique<NormLike>(4));
    head = register_module("head", std::make_unique<Leaf>("Linear", 2, 4));
    late = register_parameter("late", Tensor::zeros({5}));  // registered after the children
  }
};

}  // namespace

TEST_CASE("module: parameter, buffer and state_dict names in PyTorch order", "[nn]") {
  Net net;
  using V = std::vector<std::string>;
  REQUIRE(names_of(net.named_parameters()) == V{"gamma_1", "late", "stem.0.weight", "stem.0.bias", "stem.2.weight",
                                                "stem.2.bias", "head.weight", "head.bias"});
  REQUIRE(names_of(net.named_buffers()) ==
          V{"table", "stem.2.running_mean", "stem.2.running_var", "stem.2.num_batches_tracked"});
  REQUIRE(names_of(net.state_dict()) ==
          V{"gamma_1", "late", "stem.0.weight", "stem.0.bias", "stem.2.weight", "stem.2.bias", "stem.2.running_mean",
            "stem.2.running_var", "stem.2.num_batches_tracked", "head.weight", "head.bias"});
  std::vector<std::string> mods;
  for (auto& m : net.named_modules()) mods.push_back(m.first + ":" + m.second->type());
  REQUIRE(mods == V{":Net", "stem:Sequential", "stem.0:Conv2d", "stem.1:GELU", "stem.2:BatchNorm", "head:Linear"});
  auto ch = net.named_children();
  REQUIRE(ch.size() == 2);
  REQUIRE(ch[0].first == "stem");
  REQUIRE(ch[0].second == net.stem);
  REQUIRE((*net.stem)[2]->type() == "BatchNorm");
  REQUIRE(net.stem->size() == 3);
  // Handles returned by register_parameter are the registered tensors.
  REQUIRE(net.named_parameters()[0].second.same(net.gamma));
  REQUIRE(net.head->weight.requires_grad());
  REQUIRE(!net.named_buffers()[1].second.requires_grad());
  REQUIRE(net.parameters().size() == 8);
}

TEST_CASE("module: num_parameters counts each tensor once", "[nn]") {
  Net net;
  // 4 + 5 + (12 + 4) + (4 + 4) + (8 + 2) = 43; buffers excluded.
  REQUIRE(net.num_parameters() == 43);
  struct Shared : Module {
    Tensor w;
    Shared() : Module("Shared") {
      w = register_parameter("w", Tensor::zeros({3, 2}));
      register_parameter("w_again", w);  // the same tensor registered twice
    }
  };
  Shared s;
  REQUIRE(s.num_parameters() == 6);
  REQUIRE(names_of(s.named_parameters()) == std::vector<std::string>{"w"});
  REQUIRE(names_of(s.state_dict()) == std::vector<std::string>{"w", "w_again"});
}

TEST_CASE("module: train/eval propagates to every descendant", "[nn]") {
  Net net;
  REQUIRE(net.is_training());
  net.eval();
  for (auto& m : net.named_modules()) REQUIRE(!m.second->is_training());
  net.stem->push(std::make_unique<NoParams>());  // a child added later takes the parent's mode
  REQUIRE(!(*net.stem)[3]->is_training());
  net.stem->train();
  REQUIRE(!net.is_training());
  REQUIRE(net.head->is_training() == false);
  REQUIRE((*net.stem)[0]->is_training());
  net.train(true);
  for (auto& m : net.named_modules()) REQUIRE(m.second->is_training());
}

TEST_CASE("module: zero_grad, Sequential forward, registration errors", "[nn]") {
  Net net;
  for (auto& p : net.named_parameters()) p.second.set_grad(Tensor::ones(p.second.shape()));
  REQUIRE(net.head->bias.grad().defined());
  net.zero_grad();
  for (auto& p : net.named_parameters()) REQUIRE(!p.second.grad().defined());

  Tensor x = Tensor::from_vector({2}, {1, 2});
  REQUIRE(net.stem->forward(x).same(x));
  REQUIRE_THROWS_WITH(net.forward(x), Catch::Contains("Net") && Catch::Contains("no forward"));
  REQUIRE_THROWS_WITH((*net.stem)[3], Catch::Contains("Sequential") && Catch::Contains("out of range"));

  struct Bad : Module {
    explicit Bad(int which) : Module("Bad") {
      register_parameter("w", Tensor::zeros({2}));
      if (which == 0) register_buffer("w", Tensor::zeros({2}));
      if (which == 1) register_parameter("a.b", Tensor::zeros({2}));
      if (which == 2) register_module("w", std::make_unique<NoParams>());
      if (which == 3) register_parameter("i", Tensor::zeros({2}, DType::I64));
    }
  };
  REQUIRE_THROWS_WITH(Bad(0), Catch::Contains("Bad") && Catch::Contains("'w'") && Catch::Contains("already used"));
  REQUIRE_THROWS_WITH(Bad(1), Catch::Contains("no '.'"));
  REQUIRE_THROWS_WITH(Bad(2), Catch::Contains("already used"));
  REQUIRE_THROWS_WITH(Bad(3), Catch::Contains("must be f32"));
}

TEST_CASE("module: load_state_dict copies values, converts num_batches_tracked, reports keys", "[nn]") {
  Net src, dst;
  Rng rng(5);
  for (auto& kv : src.state_dict())
    if (kv.second.dtype() == DType::F32) rng.fill_normal(kv.second, 0, 1);
  std::map<std::string, Tensor> sd;
  for (auto& kv : src.state_dict()) sd[kv.first] = kv.second.clone();
  sd["stem.2.num_batches_tracked"] = Tensor::scalar(11.0f);  // f32 in the file, i64 in the module
  REQUIRE(dst.load_state_dict(sd).empty());
  auto a = src.state_dict(), b = dst.state_dict();
  for (size_t i = 0; i < a.size(); i++) {
    if (a[i].second.dtype() == DType::I64) continue;
    REQUIRE(a[i].second.to_vector() == b[i].second.to_vector());
  }
  REQUIRE(dst.stem->named_buffers()[2].second.to_vector_i64()[0] == 11);

  auto missing = sd;
  missing.erase("head.bias");
  missing["head.extra"] = Tensor::zeros({1});
  REQUIRE_THROWS_WITH(dst.load_state_dict(missing),
                      Catch::Contains("missing keys: head.bias") && Catch::Contains("unexpected keys: head.extra"));
  auto unused = dst.load_state_dict(missing, /*strict=*/false);
  REQUIRE(unused == std::vector<std::string>{"head.extra"});

  auto bad = sd;
  bad["head.weight"] = Tensor::zeros({4, 2});
  Tensor before = dst.gamma.clone();
  REQUIRE_THROWS_WITH(dst.load_state_dict(bad), Catch::Contains("head.weight") && Catch::Contains("[4, 2]"));
  REQUIRE(dst.gamma.to_vector() == before.to_vector());  // nothing was copied
}

TEST_CASE("init: trunc_normal_, linear_default_ and constant fills", "[nn]") {
  Rng rng(1);
  Tensor t = Tensor::empty({200, 100});
  trunc_normal_(t, rng);  // std 0.02 cut at +-2: effectively untruncated
  double s = 0, s2 = 0;
  for (float v : t.to_vector()) s += v, s2 += (double)v * v;
  double n = t.numel(), mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
  REQUIRE(std::fabs(mean) < 1e-3);
  REQUIRE(std::fabs(sd - 0.02) < 0.001);

  trunc_normal_(t, rng, 1.0f, -1.0f, 1.0f);  // real truncation: std of N(0,1) cut at +-1 is 0.5379
  s = s2 = 0;
  float lo = 1, hi = -1;
  for (float v : t.to_vector()) s += v, s2 += (double)v * v, lo = std::min(lo, v), hi = std::max(hi, v);
  REQUIRE(lo >= -1.0f);
  REQUIRE(hi <= 1.0f);
  REQUIRE(std::fabs(std::sqrt(s2 / n) - 0.5379) < 0.01);

  Tensor w = Tensor::empty({64, 50}), b = Tensor::empty({64});
  linear_default_(w, b, rng);
  float bound = 1.0f / std::sqrt(50.0f);
  s2 = 0;
  for (float v : w.to_vector()) {
    REQUIRE(std::fabs(v) <= bound);
    s2 += (double)v * v;
  }
  REQUIRE(std::fabs(std::sqrt(s2 / w.numel()) - bound / std::sqrt(3.0)) < 0.005);
  for (float v : b.to_vector()) REQUIRE(std::fabs(v) <= bound);
  REQUIRE(fan_in(Tensor::zeros({8, 3, 5, 5})) == 75);

  Tensor c = Tensor::zeros({3});
  constant_(c, 2.5f);
  REQUIRE(c.to_vector() == std::vector<float>{2.5f, 2.5f, 2.5f});
  Tensor i = Tensor::from_vector_i64({}, {9});
  zeros_(i);
  REQUIRE(i.to_vector_i64()[0] == 0);
}

TEST_CASE("init: init_module_default dispatches on module type", "[nn]") {
  Net net;
  Rng rng(3);
  Tensor gamma_before = net.gamma.clone();
  init_module_default(net, rng);
  auto conv = static_cast<Leaf*>((*net.stem)[0]);
  bool nonzero = false;
  for (float v : conv->weight.to_vector()) {
    REQUIRE(std::fabs(v) < 0.2f);  // 10 std: trunc normal 0.02
    nonzero |= v != 0.0f;
  }
  REQUIRE(nonzero);
  REQUIRE(conv->bias.to_vector() == std::vector<float>(4, 0.0f));
  float bound = 0.5f;  // head: Linear(4 -> 2), 1/sqrt(4)
  nonzero = false;
  for (float v : net.head->bias.to_vector()) {
    REQUIRE(std::fabs(v) <= bound);
    nonzero |= v != 0.0f;
  }
  REQUIRE(nonzero);
  auto bn = (*net.stem)[2];
  REQUIRE(bn->own_parameter("weight").to_vector() == std::vector<float>(4, 1.0f));
  REQUIRE(bn->own_parameter("bias").to_vector() == std::vector<float>(4, 0.0f));
  REQUIRE(bn->own_buffer("running_mean").to_vector() == std::vector<float>(4, 0.0f));
  REQUIRE(bn->own_buffer("running_var").to_vector() == std::vector<float>(4, 1.0f));
  REQUIRE(bn->own_buffer("num_batches_tracked").to_vector_i64()[0] == 0);
  REQUIRE(net.gamma.to_vector() == gamma_before.to_vector());  // model-owned: untouched

  // Same seed, same model.
  Net again;
  Rng rng2(3);
  init_module_default(again, rng2);
  auto a = net.state_dict(), b = again.state_dict();
  for (size_t i = 0; i < a.size(); i++)
    if (a[i].second.dtype() == DType::F32) REQUIRE(a[i].second.to_vector() == b[i].second.to_vector());
}
