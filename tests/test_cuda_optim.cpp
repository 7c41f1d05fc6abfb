// tests/test_cuda_optim.cpp - AdamW, SGD and gradient clipping with the
// parameters on CUDA against the same optimisers on the CPU: three steps from
// identical parameters and gradients give the same parameters and state;
// state loaded from a CPU snapshot continues identically; grad_norm and
// clip_grad_norm agree; and the CUDA optimiser kernels called directly
// against the CPU kernels. Skipped (with a warning) when no GPU is present.
#include <cmath>
#include <memory>

#include "kernels/cpu/optim.h"
#include "nn/optim.h"
#include "tests/cuda_harness.h"
#ifdef NALA_CUDA
#include "kernels/cuda/optim.h"
#endif

using namespace nala;
using namespace nala::test;

namespace {

// Awkward shapes: odd sizes, a bias, a 1-D scale, a pattern-excluded gamma and
// one tensor large enough for many blocks.
const std::vector<std::pair<std::string, Shape>> kShapes = {
    {"fc.weight", {13, 7}}, {"fc.bias", {7}}, {"blk.gamma_1", {1, 33}}, {"big.weight", {257, 391}}};

struct Twin {
  NamedTensors cpu, cuda;
};

Twin make_params(uint64_t seed) {
  Rng rng(seed);
  Twin t;
  for (auto& s : kShapes) {
    Tensor p = randn(s.second, rng);
    Tensor pd = p.to(Device::CUDA);
    p.set_requires_grad(true);
    pd.set_requires_grad(true);
    t.cpu.emplace_back(s.first, p);
    t.cuda.emplace_back(s.first, pd);
  }
  return t;
}

// The same random gradient on both sides; parameter 2 has none at step index
// 1 (PyTorch then leaves it and its state alone).
void set_grads(Twin& t, Rng& rng, int step) {
  for (size_t i = 0; i < t.cpu.size(); i++) {
    if (i == 2 && step == 1) {
      t.cpu[i].second.set_grad(Tensor());
      t.cuda[i].second.set_grad(Tensor());
      continue;
    }
    Tensor g = randn(t.cpu[i].second.shape(), rng, 0.1f);
    t.cpu[i].second.set_grad(g);
    t.cuda[i].second.set_grad(g.to(Device::CUDA));
  }
}

std::map<std::string, Tensor> host_snapshot(const NamedTensors& st) {
  std::map<std::string, Tensor> out;
  for (auto& kv : st) out[kv.first] = kv.second.to(Device::CPU).clone();
  return out;
}

}  // namespace

TEST_CASE("cuda: adamw three steps match the CPU (parameters and state)", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  for (double beta1 : {0.9, 0.3}) {  // both branches of the lerp
    INFO("beta1 " << beta1);
    Twin t = make_params(1);
    AdamW oc(t.cpu, 1e-2, beta1, 0.999, 1e-8, 0.05, {"gamma_"});
    AdamW od(t.cuda, 1e-2, beta1, 0.999, 1e-8, 0.05, {"gamma_"});
    for (auto& kv : od.state())
      if (kv.second.dtype() == DType::F32) REQUIRE(kv.second.device() == Device::CUDA);
    Rng rng(2);
    for (int step = 0; step < 3; step++) {
      INFO("step " << step + 1);
      set_grads(t, rng, step);
      oc.step();
      od.step();
      require_same_named(t.cuda, t.cpu, {1e-7, 1e-6});
      // fused multiply-adds; momentum sums of ~0.1-sized terms cancel
      require_same_named(od.state(), oc.state(), {1e-7, 1e-5});
    }
  }
}

TEST_CASE("cuda: sgd three steps match the CPU (plain, momentum, nesterov, weight decay)", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  struct Cfg { double momentum, wd; bool nesterov; };
  for (Cfg c : {Cfg{0.0, 0.0, false}, Cfg{0.9, 0.0, false}, Cfg{0.9, 1e-3, true}, Cfg{0.5, 0.01, false}}) {
    INFO("momentum " << c.momentum << " weight_decay " << c.wd << " nesterov " << c.nesterov);
    Twin t = make_params(3);
    SGD oc(t.cpu, 0.05, c.momentum, c.wd, c.nesterov);
    SGD od(t.cuda, 0.05, c.momentum, c.wd, c.nesterov);
    Rng rng(4);
    for (int step = 0; step < 3; step++) {
      INFO("step " << step + 1);
      set_grads(t, rng, step);
      oc.step();
      od.step();
      require_same_named(t.cuda, t.cpu, {1e-7, 1e-6});
      // fused multiply-adds; momentum sums of ~0.1-sized terms cancel
      require_same_named(od.state(), oc.state(), {1e-7, 1e-5});
    }
  }
}

TEST_CASE("cuda: optimiser state loaded from a CPU snapshot continues like the CPU", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  for (bool adam : {true, false}) {
    INFO((adam ? "adamw" : "sgd"));
    Twin t = make_params(5);
    std::unique_ptr<Optimizer> oc, od;
    if (adam) oc.reset(new AdamW(t.cpu, 1e-2));
    else oc.reset(new SGD(t.cpu, 0.05, 0.9, 1e-3));
    Rng rng(6);
    for (int step = 0; step < 2; step++) {
      set_grads(t, rng, step);
      oc->step();
    }
    // a fresh CUDA optimiser from the CPU's current parameters and state
    for (size_t i = 0; i < t.cpu.size(); i++) t.cuda[i].second.copy_(t.cpu[i].second);
    if (adam) od.reset(new AdamW(t.cuda, 1e-2));
    else od.reset(new SGD(t.cuda, 0.05, 0.9, 1e-3));
    od->load_state(host_snapshot(oc->state()));
    require_same_named(od->state(), oc->state(), {0.0, 0.0});
    set_grads(t, rng, 2);
    oc->step();
    od->step();
    require_same_named(t.cuda, t.cpu, {1e-7, 1e-6});
    require_same_named(od->state(), oc->state(), {1e-7, 1e-5});
    // and back: the CUDA state saved to the host loads into a CPU optimiser
    std::map<std::string, Tensor> st = host_snapshot(od->state());
    for (auto& kv : st) REQUIRE(kv.second.device() == Device::CPU);
    oc->load_state(st);
  }
}

TEST_CASE("cuda: grad_norm and clip_grad_norm match the CPU", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Twin t = make_params(7);
  Rng rng(8);
  set_grads(t, rng, 0);
  std::vector<Tensor> pc, pd;
  for (size_t i = 0; i < t.cpu.size(); i++) pc.push_back(t.cpu[i].second), pd.push_back(t.cuda[i].second);
  const double nc = grad_norm(pc), nd = grad_norm(pd);
  INFO("cpu " << nc << " cuda " << nd);
  REQUIRE(std::fabs(nd - nc) <= 1e-12 * nc);
  // no clipping above the norm; clipping to a tenth below it
  const float uc = clip_grad_norm(pc, (float)nc * 2), ud = clip_grad_norm(pd, (float)nc * 2);
  REQUIRE(std::fabs(ud - uc) <= 1e-6f * uc);
  const float tc = clip_grad_norm(pc, (float)nc / 10), td = clip_grad_norm(pd, (float)nc / 10);
  REQUIRE(std::fabs(td - tc) <= 1e-6f * tc);
  for (size_t i = 0; i < pc.size(); i++) {
    INFO(t.cpu[i].first);
    REQUIRE(pd[i].grad().device() == Device::CUDA);
    REQUIRE_CLOSE(pd[i].grad().to(Device::CPU), pc[i].grad(), 1e-9, 1e-6);
  }
  REQUIRE(std::fabs(grad_norm(pd) - nc / 10) <= 1e-5 * nc);
}

#ifdef NALA_CUDA
TEST_CASE("cuda: optimiser kernels against the CPU kernels", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(9);
  for (int64_t n : {0, 1, 4095, 4096, 4097, 100001}) {
    INFO("n " << n);
    Tensor x = randn({n}, rng);
    Tensor xd = x.to(Device::CUDA);
    const double sc = cpu::grad_sum_squares(x.f32(), n), sd = cuda::grad_sum_squares(xd.f32(), n);
    REQUIRE(std::fabs(sd - sc) <= 1e-12 * std::max(1.0, sc));
    REQUIRE(cuda::grad_sum_squares(xd.f32(), n) == sd);  // deterministic
    cpu::grad_scale(x.f32(), n, 0.37f);
    cuda::grad_scale(xd.f32(), n, 0.37f);
    REQUIRE_CLOSE(xd.to(Device::CPU), x, 0.0, 0.0);

    Tensor p = randn({n}, rng), g = randn({n}, rng), m = randn({n}, rng, 0.1f);
    Tensor v = randu({n}, rng, 0.0f, 0.01f);
    Tensor pd = p.to(Device::CUDA), gd = g.to(Device::CUDA), md = m.to(Device::CUDA), vd = v.to(Device::CUDA);
    const AdamWCoefs c = adamw_coefs(1e-3, 0.9, 0.999, 1e-8, 0.05, 4);
    cpu::adamw_step(p.f32(), g.f32(), m.f32(), v.f32(), n, c);
    cuda::adamw_step(pd.f32(), gd.f32(), md.f32(), vd.f32(), n, c);
    REQUIRE_CLOSE(pd.to(Device::CPU), p, 1e-7, 1e-6);
    REQUIRE_CLOSE(md.to(Device::CPU), m, 1e-9, 1e-6);
    REQUIRE_CLOSE(vd.to(Device::CPU), v, 1e-12, 1e-6);
    cpu::sgd_step(p.f32(), g.f32(), m.f32(), n, 0.1f, 0.9f, 0.1f, 1e-2f, true, false);
    cuda::sgd_step(pd.f32(), gd.f32(), md.f32(), n, 0.1f, 0.9f, 0.1f, 1e-2f, true, false);
    REQUIRE_CLOSE(pd.to(Device::CPU), p, 1e-7, 1e-6);
    REQUIRE_CLOSE(md.to(Device::CPU), m, 1e-7, 1e-6);
  }
}
#endif
