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
// Two models with the same weights (init_weights from the same seed).
void same_weights(NalaFormer& a, NalaFormer& b, uint64_t seed) {
  Rng ra(seed), rb(seed);
  a.init_weights(ra);
  b.init_weights(rb);
}
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
  same_weights(cpu, gpu, 11);
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

TEST_CASE("cuda: a bf16-precision training step follows the float32 step from the same weights", "[cuda][model][bf16]") {
  SKIP_WITHOUT_CUDA();
  NalaConfig cfg = nalaformer_config("pico");
  NalaFormer m32(cfg, 3), m16(cfg, 3);
  same_weights(m32, m16, 21);
  m32.to(Device::CUDA);
  m16.to(Device::CUDA);
  Rng rng(6);
  const int64_t B = 32;
  Tensor x = test::randn({B, 28, 28, 1}, rng).to(Device::CUDA);
  std::vector<int64_t> yv(B);
  for (int64_t i = 0; i < B; i++) yv[i] = (i * 7) % 10;
  Tensor y = Tensor::from_vector_i64({B}, yv).to(Device::CUDA);
  SGD o32(m32.named_parameters(), 0.05, 0.9, 1e-4), o16(m16.named_parameters(), 0.05, 0.9, 1e-4);
  m32.train();
  m16.train();
  for (int step = 0; step < 4; step++) {
    Tensor l32 = cross_entropy(m32.forward(x), y, 0.1f);
    backward(l32);
    Tensor l16;
    {
      test::Bf16Products bf16;
      l16 = cross_entropy(m16.forward(x), y, 0.1f);
      backward(l16);
    }
    const float a = l32.to(Device::CPU).to_vector()[0], b = l16.to(Device::CPU).to_vector()[0];
    INFO("step " << step << ": loss float32 " << a << ", bf16 " << b);
    REQUIRE(std::fabs(a - b) <= 1e-2 * std::fabs(a));
    if (step == 0) {
      // Every gradient within a few bf16 roundings of the float32 one (relative L2), and the
      // rounding is real: the gradients are not the float32 ones.
      auto p32 = m32.named_parameters(), p16 = m16.named_parameters();
      double differ = 0;
      for (size_t i = 0; i < p32.size(); i++) {
        const std::vector<float> g = p32[i].second.grad().to(Device::CPU).to_vector(),
                                 h = p16[i].second.grad().to(Device::CPU).to_vector();
        double d2 = 0, n2 = 0;
        for (size_t j = 0; j < g.size(); j++) d2 += (double)(g[j] - h[j]) * (g[j] - h[j]), n2 += (double)g[j] * g[j];
        INFO("gradient of " << p32[i].first << ": |g| " << std::sqrt(n2) << ", |g16 - g| " << std::sqrt(d2));
        if (n2 > 1e-12) REQUIRE(std::sqrt(d2 / n2) < 0.05);
        differ = std::max(differ, std::sqrt(d2 / std::max(n2, 1e-30)));
      }
      REQUIRE(differ > 1e-4);
    }
    o32.step(), o16.step();
    o32.zero_grad(), o16.zero_grad();
  }
}

// Inference in bf16 mode takes the stem's and merges' BatchNorms and GELUs
// into the convolutions' stores (conv2d_affine, where the direct kernels
// take the convolution): the logits of the module-by-module pass (taken when
// the weights require grad) within bf16 bounds, for pico and xt's stem and
// first merge (the others fall back to three passes).
TEST_CASE("cuda: bf16 inference with the stem's BatchNorms in the convolutions' stores", "[cuda][model][bf16]") {
  SKIP_WITHOUT_CUDA();
  for (const char* name : {"pico", "xt"}) {
    INFO(name);
    NalaConfig cfg = nalaformer_config(name);
    NalaFormer m(cfg, 3);
    Rng init(22);
    m.init_weights(init);
    // BatchNorms that do something: random affine parameters and running statistics
    for (auto& [name, t] : m.named_parameters())
      if (name.find("norm") != std::string::npos || name.find("patch_embed.proj.") != std::string::npos)
        if (t.dim() == 1) {
          const float centre = name.find("weight") != std::string::npos ? 1.0f : 0.0f;
          t.copy_(add_scalar(test::randn(t.shape(), init, 0.2f), centre));
        }
    for (auto& [name, t] : m.named_buffers()) {
      if (name.find("running_mean") != std::string::npos) t.copy_(test::randn(t.shape(), init, 0.2f));
      if (name.find("running_var") != std::string::npos)
        t.copy_(add_scalar(mul(test::randn(t.shape(), init, 0.3f), test::randn(t.shape(), init, 0.3f)), 1.0f));
    }
    m.to(Device::CUDA);
    m.eval();
    Rng rng(7);
    const int64_t side = std::string(name) == "pico" ? 28 : 64;
    Tensor x = test::randn({4, side, side, cfg.in_chans}, rng).to(Device::CUDA);
    test::Bf16Products bf16;
    REQUIRE(!m.fused_eval_convs(x));  // the parameters require grad
    const std::vector<float> plain = m.forward(x).to(Device::CPU).to_vector();
    NoGradGuard ng;
    REQUIRE(m.fused_eval_convs(x));
    const std::vector<float> fused = m.forward(x).to(Device::CPU).to_vector();
    REQUIRE(fused != plain);  // another path: the pre-activations are not stored between the passes
    REQUIRE_CLOSE(fused, plain, 0.05, 0.05);
  }
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
