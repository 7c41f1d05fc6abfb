// tests/test_cuda_norm.cpp - layernorm and batchnorm on the GPU against the
// CPU: forward outputs, every gradient, the running statistics after a
// training step, eval mode; the kernels called directly with some gradients
// not wanted, and run-to-run determinism.
// Shape letters: x viewed as (O, C, I) around the normalised dimension.
#include <vector>

#include "kernels/cpu/norm.h"
#include "tensor/device.h"
#include "tests/helpers.h"
#ifdef NALA_CUDA
#include "kernels/cuda/norm.h"
#endif

using namespace nala;
using namespace nala::test;

namespace {

// randn * std + mean, on the host (the statistics then need the two-pass form).
Tensor randn_shifted(const Shape& s, Rng& rng, float std, float mean, bool grad) {
  Tensor t = randn(s, rng, std);
  for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] += mean;
  if (grad) t.set_requires_grad(true);
  return t;
}

struct NormCase {
  Shape shape;
  int64_t dim;
  bool affine;
};

int64_t channels(const NormCase& c) { return c.shape[c.dim < 0 ? c.shape.size() + c.dim : c.dim]; }

}  // namespace

TEST_CASE("cuda: layernorm forward and gradients match the CPU", "[cuda][norm]") {
  if (!device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
  Rng rng(201);
  const std::vector<NormCase> cases = {
      {{1000, 61}, -1, true},     {{1000, 61}, -1, false},   {{2, 37, 61}, -1, true},  // token rows (I = 1)
      {{5, 300}, -1, true},       {{7, 1}, -1, true},                                  // long rows, C = 1
      {{3, 61, 9, 7}, 1, true},   {{3, 61, 9, 7}, 1, false},                           // per pixel (I = H*W)
      {{2, 5, 13, 11}, 1, true},  {{4, 24, 33, 35}, 1, true},                          // several blocks
  };
  for (const NormCase& c : cases) {
    const int64_t C = channels(c);
    INFO("layernorm shape " << shape_str(c.shape) << " dim " << c.dim << " affine " << c.affine);
    Tensor x = randn_shifted(c.shape, rng, 2.0f, 3.0f, true);
    Tensor w = c.affine ? randn({C}, rng, 1.0f, true) : Tensor(), b = c.affine ? randn({C}, rng, 1.0f, true) : Tensor();
    Tensor xc = on_cuda(x, true), wc = c.affine ? on_cuda(w, true) : Tensor(), bc = c.affine ? on_cuda(b, true) : Tensor();
    Tensor y = layernorm(x, w, b, 1e-5f, c.dim), yc = layernorm(xc, wc, bc, 1e-5f, c.dim);
    REQUIRE(yc.device() == Device::CUDA);
    REQUIRE_CLOSE(host(yc), y, 1e-4, 1e-4);
    Tensor g = randn(c.shape, rng);
    backward(y, g);
    backward(yc, g.to(Device::CUDA));
    INFO("dx");
    REQUIRE_CLOSE(host(xc.grad()), x.grad(), 1e-4, 1e-3);
    if (c.affine) {
      INFO("dweight, dbias");
      REQUIRE_CLOSE(host(wc.grad()), w.grad(), 2e-3, 1e-4);
      REQUIRE_CLOSE(host(bc.grad()), b.grad(), 2e-3, 1e-4);
    }
  }
}

TEST_CASE("cuda: batchnorm training, running statistics and eval match the CPU", "[cuda][norm]") {
  if (!device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
  Rng rng(202);
  const std::vector<NormCase> cases = {
      {{333, 37}, -1, true},       {{333, 37}, -1, false},       // channels-last (M, C)
      {{2, 9, 7, 37}, -1, true},   {{5000, 19}, -1, true},       // (B, H, W, C); many row blocks
      {{3, 37, 9, 7}, 1, true},    {{3, 37, 9, 7}, 1, false},    // NCHW
      {{8, 13, 40, 41}, 1, true},  {{2, 3}, -1, true},           // several blocks per channel; tiny
  };
  for (const NormCase& c : cases) {
    const int64_t C = channels(c);
    INFO("batchnorm shape " << shape_str(c.shape) << " dim " << c.dim << " affine " << c.affine);
    for (bool training : {true, false}) {
      INFO("training " << training);
      Tensor x = randn_shifted(c.shape, rng, 2.0f, 3.0f, true);
      Tensor w = c.affine ? randn({C}, rng, 1.0f, true) : Tensor();
      Tensor b = c.affine ? randn({C}, rng, 1.0f, true) : Tensor();
      Tensor rm = randn({C}, rng), rv = randu({C}, rng, 0.5f, 2.0f);
      Tensor xc = on_cuda(x, true), wc = c.affine ? on_cuda(w, true) : Tensor();
      Tensor bc = c.affine ? on_cuda(b, true) : Tensor();
      Tensor rmc = rm.to(Device::CUDA), rvc = rv.to(Device::CUDA);
      Tensor y = batchnorm(x, w, b, rm, rv, training, 0.1f, 1e-5f, c.dim);
      Tensor yc = batchnorm(xc, wc, bc, rmc, rvc, training, 0.1f, 1e-5f, c.dim);
      REQUIRE(yc.device() == Device::CUDA);
      REQUIRE(rmc.device() == Device::CUDA);
      REQUIRE_CLOSE(host(yc), y, 1e-4, 1e-4);
      INFO("running_mean, running_var");
      REQUIRE_CLOSE(host(rmc), rm, 1e-5, 1e-5);
      REQUIRE_CLOSE(host(rvc), rv, 1e-5, 1e-5);
      Tensor g = randn(c.shape, rng);
      backward(y, g);
      backward(yc, g.to(Device::CUDA));
      INFO("dx");
      REQUIRE_CLOSE(host(xc.grad()), x.grad(), 1e-4, 1e-3);
      if (c.affine) {
        INFO("dweight, dbias");
        REQUIRE_CLOSE(host(wc.grad()), w.grad(), 2e-3, 1e-4);
        REQUIRE_CLOSE(host(bc.grad()), b.grad(), 2e-3, 1e-4);
      }
    }
  }
  // Training without running statistics.
  Tensor x = randn_shifted({50, 7}, rng, 1.0f, -2.0f, false), none, none2, nonec, nonec2;
  Tensor y = batchnorm(x, Tensor(), Tensor(), none, none2, true, 0.1f, 1e-5f);
  Tensor yc = batchnorm(x.to(Device::CUDA), Tensor(), Tensor(), nonec, nonec2, true, 0.1f, 1e-5f);
  REQUIRE_CLOSE(host(yc), y, 1e-4, 1e-4);
}

TEST_CASE("cuda: norm kernels with some gradients not wanted, deterministic", "[cuda][norm]") {
  if (!device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
#ifdef NALA_CUDA
  Rng rng(203);
  for (Shape s : {Shape{1000, 61, 1}, Shape{3, 61, 63}, Shape{4, 24, 1155}}) {
    const int64_t O = s[0], C = s[1], I = s[2];
    INFO("(O, C, I) = " << shape_str(s));
    Tensor x = randn_shifted(s, rng, 2.0f, 3.0f, false), w = randn({C}, rng), g = randn(s, rng);
    Tensor xc = x.to(Device::CUDA), wc = w.to(Device::CUDA), gc = g.to(Device::CUDA);

    // LayerNorm: the CPU mean / rstd are fed to both backward kernels.
    Tensor lm = Tensor::empty({O * I}), lr = Tensor::empty({O * I}), ly = Tensor::empty(s);
    cpu::layernorm_forward(ly.f32(), lm.f32(), lr.f32(), x.f32(), w.f32(), nullptr, O, C, I, 1e-5f);
    Tensor lmc = Tensor::empty({O * I}, DType::F32, Device::CUDA), lrc = Tensor::empty({O * I}, DType::F32, Device::CUDA);
    Tensor lyc = Tensor::empty(s, DType::F32, Device::CUDA);
    cuda::layernorm_forward(lyc.f32(), lmc.f32(), lrc.f32(), xc.f32(), wc.f32(), nullptr, O, C, I, 1e-5f);
    REQUIRE_CLOSE(host(lyc), ly, 1e-4, 1e-4);
    REQUIRE_CLOSE(host(lmc), lm, 1e-5, 1e-5);
    REQUIRE_CLOSE(host(lrc), lr, 1e-5, 1e-4);
    Tensor dx = Tensor::empty(s), dw = Tensor::empty({C}), db = Tensor::empty({C});
    cpu::layernorm_backward(dx.f32(), dw.f32(), db.f32(), g.f32(), x.f32(), lm.f32(), lr.f32(), w.f32(), O, C, I);
    Tensor lmh = lm.to(Device::CUDA), lrh = lr.to(Device::CUDA);
    for (int want = 1; want < 8; want++) {
      INFO("layernorm want dx " << (want & 1) << " dweight " << (want >> 1 & 1) << " dbias " << (want >> 2 & 1));
      Tensor dxc = Tensor::full(s, 7.0f, Device::CUDA), dwc = Tensor::full({C}, 7.0f, Device::CUDA);
      Tensor dbc = Tensor::full({C}, 7.0f, Device::CUDA);
      cuda::layernorm_backward(want & 1 ? dxc.f32() : nullptr, want & 2 ? dwc.f32() : nullptr,
                               want & 4 ? dbc.f32() : nullptr, gc.f32(), xc.f32(), lmh.f32(), lrh.f32(), wc.f32(), O,
                               C, I);
      if (want & 1) REQUIRE_CLOSE(host(dxc), dx, 1e-4, 1e-3);
      else REQUIRE(host(dxc).to_vector() == std::vector<float>(x.numel(), 7.0f));
      if (want & 2) REQUIRE_CLOSE(host(dwc), dw, 2e-3, 1e-4);
      else REQUIRE(host(dwc).to_vector() == std::vector<float>(C, 7.0f));
      if (want & 4) REQUIRE_CLOSE(host(dbc), db, 2e-3, 1e-4);
      else REQUIRE(host(dbc).to_vector() == std::vector<float>(C, 7.0f));
    }

    // BatchNorm: statistics, then backward in both modes from the CPU statistics.
    Tensor bm = Tensor::empty({C}), br = Tensor::empty({C});
    cpu::batchnorm_train_stats(bm.f32(), br.f32(), nullptr, nullptr, x.f32(), O, C, I, 0.1f, 1e-5f);
    Tensor bmc = Tensor::empty({C}, DType::F32, Device::CUDA), brc = Tensor::empty({C}, DType::F32, Device::CUDA);
    cuda::batchnorm_train_stats(bmc.f32(), brc.f32(), nullptr, nullptr, xc.f32(), O, C, I, 0.1f, 1e-5f);
    REQUIRE_CLOSE(host(bmc), bm, 1e-5, 1e-5);
    REQUIRE_CLOSE(host(brc), br, 1e-5, 1e-4);
    Tensor bmh = bm.to(Device::CUDA), brh = br.to(Device::CUDA);
    for (bool training : {true, false}) {
      Tensor bdx = Tensor::empty(s), bdw = Tensor::empty({C}), bdb = Tensor::empty({C});
      cpu::batchnorm_backward(bdx.f32(), bdw.f32(), bdb.f32(), g.f32(), x.f32(), bm.f32(), br.f32(), w.f32(), O, C,
                              I, training);
      for (int want = 1; want < 8; want++) {
        INFO("batchnorm training " << training << " want dx " << (want & 1) << " dweight " << (want >> 1 & 1)
                                   << " dbias " << (want >> 2 & 1));
        Tensor dxc = Tensor::full(s, 7.0f, Device::CUDA), dwc = Tensor::full({C}, 7.0f, Device::CUDA);
        Tensor dbc = Tensor::full({C}, 7.0f, Device::CUDA);
        cuda::batchnorm_backward(want & 1 ? dxc.f32() : nullptr, want & 2 ? dwc.f32() : nullptr,
                                 want & 4 ? dbc.f32() : nullptr, gc.f32(), xc.f32(), bmh.f32(), brh.f32(), wc.f32(),
                                 O, C, I, training);
        if (want & 1) REQUIRE_CLOSE(host(dxc), bdx, 1e-4, 1e-3);
        else REQUIRE(host(dxc).to_vector() == std::vector<float>(x.numel(), 7.0f));
        if (want & 2) REQUIRE_CLOSE(host(dwc), bdw, 2e-3, 1e-4);
        if (want & 4) REQUIRE_CLOSE(host(dbc), bdb, 2e-3, 1e-4);
      }
    }

    // Eval statistics.
    Tensor rm = randn({C}, rng), rv = randu({C}, rng, 0.5f, 2.0f), em = Tensor::empty({C}), er = Tensor::empty({C});
    cpu::batchnorm_eval_stats(em.f32(), er.f32(), rm.f32(), rv.f32(), C, 1e-5f);
    Tensor emc = Tensor::empty({C}, DType::F32, Device::CUDA), erc = Tensor::empty({C}, DType::F32, Device::CUDA);
    Tensor rmc = rm.to(Device::CUDA), rvc = rv.to(Device::CUDA);
    cuda::batchnorm_eval_stats(emc.f32(), erc.f32(), rmc.f32(), rvc.f32(), C, 1e-5f);
    REQUIRE_CLOSE(host(emc), em, 0.0, 1e-6);
    REQUIRE_CLOSE(host(erc), er, 0.0, 1e-6);

    // Two runs give the same bits (statistics and all gradients).
    std::vector<float> first[5];
    for (int run = 0; run < 2; run++) {
      Tensor m = Tensor::empty({C}, DType::F32, Device::CUDA), r = Tensor::empty({C}, DType::F32, Device::CUDA);
      Tensor d[6] = {Tensor::empty(s, DType::F32, Device::CUDA), Tensor::empty({C}, DType::F32, Device::CUDA),
                     Tensor::empty({C}, DType::F32, Device::CUDA), Tensor::empty(s, DType::F32, Device::CUDA),
                     Tensor::empty({C}, DType::F32, Device::CUDA), Tensor::empty({C}, DType::F32, Device::CUDA)};
      cuda::batchnorm_train_stats(m.f32(), r.f32(), nullptr, nullptr, xc.f32(), O, C, I, 0.1f, 1e-5f);
      cuda::batchnorm_backward(d[0].f32(), d[1].f32(), d[2].f32(), gc.f32(), xc.f32(), m.f32(), r.f32(), wc.f32(),
                               O, C, I, true);
      cuda::layernorm_backward(d[3].f32(), d[4].f32(), d[5].f32(), gc.f32(), xc.f32(), lmh.f32(), lrh.f32(),
                               wc.f32(), O, C, I);
      std::vector<float> now[5] = {r.to_vector(), d[1].to_vector(), d[2].to_vector(), d[4].to_vector(),
                                   d[5].to_vector()};
      for (int i = 0; i < 5; i++) {
        if (run == 0) first[i] = now[i];
        else REQUIRE(now[i] == first[i]);
      }
    }
  }
#endif
}
