// tests/test_cuda_model.cpp - the whole pico model on the GPU: the golden
// numbers of the PyTorch reference, and one AdamW training step on GPU and
// CPU from the same weights (loss, every gradient, every updated weight).
#include "autograd/ops.h"
#include "models/nalaformer.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "tests/cuda_harness.h"
#include "tests/golden_init.h"

using namespace nala;

namespace {
Tensor nchw_to_nhwc(const Tensor& x) { return view::contiguous(view::permute(x, {0, 2, 3, 1})); }
double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : t.to_vector()) m = std::max(m, (double)std::fabs(v));
  return m;
}
}  // namespace

TEST_CASE("cuda: pico matches the PyTorch reference on the GPU", "[cuda][model]") {
  SKIP_WITHOUT_CUDA();
  SafeTensors g = load_safetensors("tests/golden/pico_golden.safetensors");
  NalaFormer m(nalaformer_config("pico"));
  test::golden_init(m);
  m.to(Device::CUDA);
  Tensor x = nchw_to_nhwc(g.tensors.at("input")).to(Device::CUDA);
  m.eval();
  {
    NoGradGuard ng;
    REQUIRE_CLOSE(m.forward(x).to(Device::CPU), g.tensors.at("logits_eval"), 1e-5, 1e-4);
  }
  m.train();
  Tensor loss = cross_entropy(m.forward(x), g.tensors.at("labels").to(Device::CUDA));
  REQUIRE_CLOSE(reshape(loss, {1}).to(Device::CPU), g.tensors.at("loss_train"), 1e-5, 1e-5);
  backward(loss);
  for (auto& [name, p] : m.named_parameters()) {
    const Tensor& ref = g.tensors.at("grad." + name);
    INFO("gradient of " << name);
    REQUIRE(p.grad().defined());
    REQUIRE(p.grad().device() == Device::CUDA);
    REQUIRE_CLOSE(p.grad().to(Device::CPU), ref, 1e-3 * max_abs(ref) + 1e-6, 1e-3);
  }
}

TEST_CASE("cuda: one pico training step on GPU and CPU from the same weights", "[cuda][model]") {
  SKIP_WITHOUT_CUDA();
  NalaConfig cfg = nalaformer_config("pico");
  NalaFormer cpu(cfg, 3), gpu(cfg, 3);
  Rng r1(11), r2(11);
  cpu.init_weights(r1);
  gpu.init_weights(r2);
  gpu.to(Device::CUDA);
  Rng rng(5);
  const int64_t B = 6;
  Tensor x = test::randn({B, 28, 28, 1}, rng);
  Tensor y = Tensor::from_vector_i64({B}, {0, 3, 9, 2, 7, 3});
  // SGD: its update is proportional to the gradient, so GPU-CPU differences
  // stay at float rounding. (AdamW's first step moves every weight by about
  // lr * sign(g), which turns rounding noise in the exactly-zero gradients of
  // biases that feed a BatchNorm into lr-sized differences; the AdamW kernel
  // itself is compared in tests/test_cuda_optim.cpp.)
  SGD oc(cpu.named_parameters(), 0.05, 0.9, 1e-4), og(gpu.named_parameters(), 0.05, 0.9, 1e-4);
  cpu.train();
  gpu.train();
  Tensor lc = cross_entropy(cpu.forward(x), y, 0.1f);
  Tensor lg = cross_entropy(gpu.forward(x.to(Device::CUDA)), y.to(Device::CUDA), 0.1f);
  REQUIRE_CLOSE(lg.to(Device::CPU), lc, 1e-5, 1e-5);
  backward(lc);
  backward(lg);
  auto pc = cpu.named_parameters(), pg = gpu.named_parameters();
  REQUIRE(pc.size() == pg.size());
  for (size_t i = 0; i < pc.size(); i++) {
    INFO("gradient of " << pc[i].first);
    REQUIRE_CLOSE(pg[i].second.grad().to(Device::CPU), pc[i].second.grad(), 1e-4 * max_abs(pc[i].second.grad()) + 1e-6,
                  1e-3);
  }
  oc.step();
  og.step();
  {
    INFO("updated parameters");
    test::require_same_named(pg, pc, {1e-5, 1e-4});
  }
  INFO("buffers");
  test::require_same_named(gpu.named_buffers(), cpu.named_buffers(), {1e-5, 1e-4});
}

TEST_CASE("cuda: page-locked staging buffers copy to and from the GPU", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Tensor p = Tensor::empty_pinned({37, 3});
  REQUIRE(p.storage()->pinned);
  Rng rng(2);
  Tensor src = test::randn({37, 3}, rng);
  p.copy_(src);
  Tensor d = p.to(Device::CUDA);
  REQUIRE(d.device() == Device::CUDA);
  REQUIRE(d.to_vector() == src.to_vector());
  Tensor back = Tensor::empty_pinned({37, 3});
  back.copy_(d);
  REQUIRE(back.to_vector() == src.to_vector());
}
