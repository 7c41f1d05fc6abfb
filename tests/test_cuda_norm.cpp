// tests/test_cuda_norm.cpp - layernorm and batchnorm on the GPU against the
// CPU: forward outputs, every gradient, the running statistics after a
// training step, eval mode; the kernels called directly with some gradients
// not wanted, and run-to-run determinism; batchnorm_sync with one rank and
// with two ranks (two threads) against BatchNorm on the whole batch.
// Shape letters: x viewed as (O, C, I) around the normalised dimension.
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/cpu/norm.h"
#include "tests/cuda_harness.h"
#ifdef NALA_CUDA
#include "kernels/cuda/norm.h"
#endif

using namespace nala;
using namespace nala::test;

namespace {

// randn * std + mean, on the host (the statistics then need the two-pass form).
Tensor randn_shifted(const Shape& s, Rng& rng, float std, float mean) {
  Tensor t = randn(s, rng, std);
  for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] += mean;
  return t;
}

struct NormCase {
  Shape shape;
  int64_t dim;
  bool affine;
};

int64_t channels(const NormCase& c) { return c.shape[c.dim < 0 ? c.shape.size() + c.dim : c.dim]; }

// Tolerances of the gradients of {x, weight, bias}: dweight and dbias sum
// over every row, hence their atol.
const std::vector<Tol> kNormGradTol = {{1e-4, 1e-3}, {2e-3, 1e-4}, {2e-3, 1e-4}};

}  // namespace

TEST_CASE("cuda: layernorm forward and gradients match the CPU", "[cuda][norm]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(201);
  const std::vector<NormCase> cases = {
      {{1000, 61}, -1, true},     {{1000, 61}, -1, false},   {{2, 37, 61}, -1, true},  // token rows (I = 1)
      {{5, 300}, -1, true},       {{7, 1}, -1, true},                                  // long rows, C = 1
      {{1000, 32}, -1, true},     {{333, 64}, -1, false},    {{2, 37, 128}, -1, true}, // float4 rows: 8, 16,
      {{50, 384}, -1, true},      {{9, 1024}, -1, true},     {{4, 700}, -1, false},    // 32 lanes; > 512
      {{3, 61, 9, 7}, 1, true},   {{3, 61, 9, 7}, 1, false},                           // per pixel (I = H*W)
      {{2, 5, 13, 11}, 1, true},  {{4, 24, 33, 35}, 1, true},                          // several blocks
  };
  for (const NormCase& c : cases) {
    const int64_t C = channels(c);
    INFO("layernorm shape " << shape_str(c.shape) << " dim " << c.dim << " affine " << c.affine);
    Tensor x = randn_shifted(c.shape, rng, 2.0f, 3.0f);
    Tensor w = c.affine ? randn({C}, rng) : Tensor(), b = c.affine ? randn({C}, rng) : Tensor();
    compare_devices([&c](const std::vector<Tensor>& in) { return layernorm(in[0], in[1], in[2], 1e-5f, c.dim); },
                    {x, w, b}, rng, {1e-4, 1e-4}, {}, kNormGradTol);
  }
}

TEST_CASE("cuda: batchnorm training, running statistics and eval match the CPU", "[cuda][norm]") {
  SKIP_WITHOUT_CUDA();
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
      Tensor x = randn_shifted(c.shape, rng, 2.0f, 3.0f);
      Tensor w = c.affine ? randn({C}, rng) : Tensor();
      Tensor b = c.affine ? randn({C}, rng) : Tensor();
      Tensor rm = randn({C}, rng), rv = randu({C}, rng, 0.5f, 2.0f);
      Tensor rmc = rm.to(Device::CUDA), rvc = rv.to(Device::CUDA);
      // Each device updates its own running statistics.
      auto f = [&](const std::vector<Tensor>& in) {
        const bool gpu = in[0].device() == Device::CUDA;
        return batchnorm(in[0], in[1], in[2], gpu ? rmc : rm, gpu ? rvc : rv, training, 0.1f, 1e-5f, c.dim);
      };
      compare_devices(f, {x, w, b}, rng, {1e-4, 1e-4}, {}, kNormGradTol);
      REQUIRE(rmc.device() == Device::CUDA);
      INFO("running_mean, running_var");
      REQUIRE_CLOSE(host(rmc), rm, 1e-5, 1e-5);
      REQUIRE_CLOSE(host(rvc), rv, 1e-5, 1e-5);
    }
  }
  // Training without running statistics.
  Tensor x = randn_shifted({50, 7}, rng, 1.0f, -2.0f), none, none2, nonec, nonec2;
  Tensor y = batchnorm(x, Tensor(), Tensor(), none, none2, true, 0.1f, 1e-5f);
  Tensor yc = batchnorm(x.to(Device::CUDA), Tensor(), Tensor(), nonec, nonec2, true, 0.1f, 1e-5f);
  REQUIRE_CLOSE(host(yc), y, 1e-4, 1e-4);
}

TEST_CASE("cuda: norm kernels with some gradients not wanted, deterministic", "[cuda][norm]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(203);
  // C = 32, 64, 384: the register-cached rows (layernorm_rows.cuh), the backward fused with dw and db.
  for (Shape s : {Shape{1000, 61, 1}, Shape{3, 61, 63}, Shape{4, 24, 1155}, Shape{1000, 32, 1}, Shape{777, 64, 1},
                  Shape{130, 384, 1}}) {
    const int64_t O = s[0], C = s[1], I = s[2];
    INFO("(O, C, I) = " << shape_str(s));
    Tensor x = randn_shifted(s, rng, 2.0f, 3.0f), w = randn({C}, rng), g = randn(s, rng);
    Tensor xc = x.to(Device::CUDA), wc = w.to(Device::CUDA), gc = g.to(Device::CUDA);

    // LayerNorm: the CPU mean / rstd are fed to both backward kernels.
    Tensor lm = Tensor::empty({O * I}), lr = Tensor::empty({O * I}), ly = Tensor::empty(s);
    cpu::layernorm_forward(ly.f32(), lm.f32(), lr.f32(), x.f32(), w.f32(), nullptr, O, C, I, 1e-5f);
    Tensor lmc = cuda_empty({O * I}), lrc = cuda_empty({O * I}), lyc = cuda_empty(s);
    cuda::layernorm_forward(lyc.f32(), lmc.f32(), lrc.f32(), xc.f32(), wc.f32(), nullptr, O, C, I, 1e-5f);
    REQUIRE_CLOSE(host(lyc), ly, 1e-4, 1e-4);
    REQUIRE_CLOSE(host(lmc), lm, 1e-5, 1e-5);
    REQUIRE_CLOSE(host(lrc), lr, 1e-5, 1e-4);
    Tensor dx = Tensor::empty(s), dw = Tensor::empty({C}), db = Tensor::empty({C});
    cpu::layernorm_backward(dx.f32(), dw.f32(), db.f32(), g.f32(), x.f32(), lm.f32(), lr.f32(), w.f32(), O, C, I);
    Tensor lmh = lm.to(Device::CUDA), lrh = lr.to(Device::CUDA);
    for (int want = 1; want < 8; want++) {
      INFO("layernorm want dx " << (want & 1) << " dweight " << (want >> 1 & 1) << " dbias " << (want >> 2 & 1));
      Tensor dxc = cuda_sentinel(s), dwc = cuda_sentinel({C}), dbc = cuda_sentinel({C});
      cuda::layernorm_backward(want & 1 ? dxc.f32() : nullptr, want & 2 ? dwc.f32() : nullptr,
                               want & 4 ? dbc.f32() : nullptr, gc.f32(), xc.f32(), lmh.f32(), lrh.f32(), wc.f32(), O,
                               C, I);
      if (want & 1) REQUIRE_CLOSE(host(dxc), dx, 1e-4, 1e-3);
      else REQUIRE(holds_sentinel(dxc));
      if (want & 2) REQUIRE_CLOSE(host(dwc), dw, 2e-3, 1e-4);
      else REQUIRE(holds_sentinel(dwc));
      if (want & 4) REQUIRE_CLOSE(host(dbc), db, 2e-3, 1e-4);
      else REQUIRE(holds_sentinel(dbc));
    }

    // BatchNorm: statistics, then backward in both modes from the CPU statistics.
    Tensor bm = Tensor::empty({C}), br = Tensor::empty({C});
    cpu::batchnorm_train_stats(bm.f32(), br.f32(), nullptr, nullptr, x.f32(), O, C, I, 0.1f, 1e-5f);
    Tensor bmc = cuda_empty({C}), brc = cuda_empty({C});
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
        Tensor dxc = cuda_sentinel(s), dwc = cuda_sentinel({C}), dbc = cuda_sentinel({C});
        cuda::batchnorm_backward(want & 1 ? dxc.f32() : nullptr, want & 2 ? dwc.f32() : nullptr,
                                 want & 4 ? dbc.f32() : nullptr, gc.f32(), xc.f32(), bmh.f32(), brh.f32(), wc.f32(),
                                 O, C, I, training);
        if (want & 1) REQUIRE_CLOSE(host(dxc), bdx, 1e-4, 1e-3);
        else REQUIRE(holds_sentinel(dxc));
        if (want & 2) REQUIRE_CLOSE(host(dwc), bdw, 2e-3, 1e-4);
        if (want & 4) REQUIRE_CLOSE(host(dbc), bdb, 2e-3, 1e-4);
      }
    }

    // Eval statistics.
    Tensor rm = randn({C}, rng), rv = randu({C}, rng, 0.5f, 2.0f), em = Tensor::empty({C}), er = Tensor::empty({C});
    cpu::batchnorm_eval_stats(em.f32(), er.f32(), rm.f32(), rv.f32(), C, 1e-5f);
    Tensor emc = cuda_empty({C}), erc = cuda_empty({C});
    Tensor rmc = rm.to(Device::CUDA), rvc = rv.to(Device::CUDA);
    cuda::batchnorm_eval_stats(emc.f32(), erc.f32(), rmc.f32(), rvc.f32(), C, 1e-5f);
    REQUIRE_CLOSE(host(emc), em, 0.0, 1e-6);
    REQUIRE_CLOSE(host(erc), er, 0.0, 1e-6);

    // Two runs give the same bits (statistics and all gradients).
    std::vector<float> first[5];
    for (int run = 0; run < 2; run++) {
      Tensor m = cuda_empty({C}), r = cuda_empty({C});
      Tensor d[6] = {cuda_empty(s), cuda_empty({C}), cuda_empty({C}), cuda_empty(s), cuda_empty({C}), cuda_empty({C})};
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

// ---- synchronised BatchNorm ------------------------------------------------------

namespace {
const RankSum kOneRankCuda = [](float*, int64_t, Device) {};  // one process: nothing to add

// Two ranks simulated by two host threads sharing one GPU: each call copies
// its buffer to the host, waits for the other rank, adds both host copies
// (the same order on both, so the same bits), waits again (neither copy is
// reused while the other rank reads it) and copies the sum back.
class HostSumOfTwo {
 public:
  RankSum rank(int r) {
    return [this, r](float* p, int64_t n, Device d) { sum(r, p, n, d); };
  }
  bool bad = false;  // different lengths, or a buffer not on the GPU

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;
  int64_t generation_ = 0;
  std::vector<float> host_[2];

  void barrier() {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t g = generation_;
    if (++waiting_ == 2) {
      waiting_ = 0, generation_++;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != g; });
    }
  }
  void sum(int r, float* p, int64_t n, Device d) {
    if (d != Device::CUDA) bad = true;
    host_[r].resize((size_t)n);
    device::copy_bytes(host_[r].data(), Device::CPU, p, d, n * sizeof(float));
    barrier();
    std::vector<float> s((size_t)n);
    if (host_[0].size() != host_[1].size()) bad = true;
    else
      for (int64_t i = 0; i < n; i++) s[i] = host_[0][i] + host_[1][i];
    barrier();
    device::copy_bytes(p, d, s.data(), Device::CPU, n * sizeof(float));
  }
};
}  // namespace

TEST_CASE("cuda: batchnorm_sync with one rank matches the CPU and batchnorm", "[cuda][norm]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(204);
  const std::vector<NormCase> cases = {
      {{333, 37}, -1, true},      {{333, 37}, -1, false},  {{2, 9, 7, 37}, -1, true},  {{5000, 19}, -1, true},
      {{3, 37, 9, 7}, 1, true},   {{3, 37, 9, 7}, 1, false}, {{8, 13, 40, 41}, 1, true}, {{2, 3}, -1, true},
  };
  for (const NormCase& c : cases) {
    const int64_t C = channels(c);
    for (bool running : {true, false}) {
      INFO("batchnorm_sync shape " << shape_str(c.shape) << " dim " << c.dim << " affine " << c.affine
                                   << " running " << running);
      Tensor w = c.affine ? randn({C}, rng) : Tensor();
      Tensor b = c.affine ? randn({C}, rng) : Tensor();
      Tensor rm = running ? randn({C}, rng) : Tensor(), rv = running ? randu({C}, rng, 0.5f, 2.0f) : Tensor();
      Tensor rmc = running ? rm.to(Device::CUDA) : Tensor(), rvc = running ? rv.to(Device::CUDA) : Tensor();
      Tensor rmb = running ? rm.to(Device::CUDA) : Tensor(), rvb = running ? rv.to(Device::CUDA) : Tensor();
      // Each device updates its own running statistics.
      auto f = [&](const std::vector<Tensor>& in) {
        const bool gpu = in[0].device() == Device::CUDA;
        return batchnorm_sync(in[0], in[1], in[2], gpu ? rmc : rm, gpu ? rvc : rv, 0.1f, 1e-5f, c.dim, kOneRankCuda);
      };
      for (int step = 0; step < 2; step++) {  // the second step shifts the sums by the updated running mean
        INFO("step " << step);
        Tensor x = randn_shifted(c.shape, rng, 2.0f, 3.0f);
        const DeviceRuns r = compare_devices(f, {x, w, b}, rng, {1e-4, 1e-4}, {}, kNormGradTol);
        // The unaffine reference.
        Tensor yb = batchnorm(on_cuda(x), Tensor(), Tensor(), rmb, rvb, true, 0.1f, 1e-5f, c.dim);
        if (!c.affine) REQUIRE_CLOSE(r.cuda.out, host(yb), 1e-4, 1e-4);
        if (running) {
          INFO("running_mean, running_var");
          REQUIRE(rmc.device() == Device::CUDA);
          REQUIRE_CLOSE(host(rmc), rm, 1e-5, 1e-5);
          REQUIRE_CLOSE(host(rvc), rv, 1e-5, 1e-4);
          REQUIRE_CLOSE(host(rmc), host(rmb), 1e-5, 1e-5);
          REQUIRE_CLOSE(host(rvc), host(rvb), 1e-5, 1e-4);
        }
      }
    }
  }
}

TEST_CASE("cuda: batchnorm_sync over two ranks (two threads, one GPU) equals the whole batch", "[cuda][norm]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(205);
  struct Case {
    Shape shape;  // the whole batch; split along dim 0 into B0 and B - B0 samples
    int64_t dim, B0;
  };
  for (const Case& c : {Case{{7, 5, 37}, -1, 3}, Case{{9, 13, 11, 7}, 1, 2}, Case{{300, 19}, -1, 299}}) {
    const int64_t B = c.shape[0], B0 = c.B0, B1 = B - c.B0;
    const int64_t C = c.shape[c.dim < 0 ? c.shape.size() - 1 : c.dim];
    INFO("shape " << shape_str(c.shape) << " dim " << c.dim << " shards " << B0 << " + " << B1);
    Tensor x = randn_shifted(c.shape, rng, 2.0f, -3.0f), g = randn(c.shape, rng), w = randn({C}, rng);
    Tensor b = randn({C}, rng), rm = randn({C}, rng), rv = randu({C}, rng, 0.5f, 2.0f);
    // The whole batch on the CPU.
    Tensor xa = x.clone(), wa = w.clone(), ba = b.clone(), rma = rm.clone(), rva = rv.clone();
    xa.set_requires_grad(true), wa.set_requires_grad(true), ba.set_requires_grad(true);
    Tensor y = batchnorm(xa, wa, ba, rma, rva, true, 0.1f, 1e-5f, c.dim);
    backward(y, g);
    // Two ranks on the GPU, each with its own shard, parameters and running statistics.
    const int64_t start[2] = {0, B0}, len[2] = {B0, B1};
    Tensor xs[2], ws[2], bs[2], rms[2], rvs[2], ys[2];
    for (int r = 0; r < 2; r++) {
      xs[r] = on_cuda(view::narrow(x, 0, start[r], len[r]).clone(), true);
      ws[r] = on_cuda(w, true), bs[r] = on_cuda(b, true);
      rms[r] = rm.to(Device::CUDA), rvs[r] = rv.to(Device::CUDA);
    }
    HostSumOfTwo ranks;
    std::string errors[2];
    auto run_rank = [&](int r) {
      try {
        ys[r] = batchnorm_sync(xs[r], ws[r], bs[r], rms[r], rvs[r], 0.1f, 1e-5f, c.dim, ranks.rank(r));
        backward(ys[r], view::narrow(g, 0, start[r], len[r]).clone().to(Device::CUDA));
        device::synchronize();
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    };
    std::thread t1(run_rank, 1);
    run_rank(0);
    t1.join();
    INFO("rank 0: " << errors[0] << " rank 1: " << errors[1]);
    REQUIRE(errors[0].empty());
    REQUIRE(errors[1].empty());
    REQUIRE(!ranks.bad);
    std::vector<float> dw(C, 0.0f), db(C, 0.0f);
    for (int r = 0; r < 2; r++) {
      INFO("rank " << r);
      REQUIRE(ys[r].device() == Device::CUDA);
      REQUIRE_CLOSE(host(ys[r]), view::narrow(y, 0, start[r], len[r]).clone(), 1e-4, 1e-4);
      REQUIRE_CLOSE(host(rms[r]), rma, 1e-5, 1e-5);
      REQUIRE_CLOSE(host(rvs[r]), rva, 1e-5, 1e-4);
      INFO("dx");
      REQUIRE_CLOSE(host(xs[r].grad()), view::narrow(xa.grad(), 0, start[r], len[r]).clone(), 1e-4, 1e-3);
      std::vector<float> dwr = host(ws[r].grad()).to_vector(), dbr = host(bs[r].grad()).to_vector();
      for (int64_t i = 0; i < C; i++) dw[i] += dwr[i], db[i] += dbr[i];
    }
    INFO("dweight0 + dweight1, dbias0 + dbias1");
    REQUIRE_CLOSE(dw, wa.grad().to_vector(), 2e-3, 1e-4);
    REQUIRE_CLOSE(db, ba.grad().to_vector(), 2e-3, 1e-4);
  }
}

TEST_CASE("cuda: batchnorm_sync kernels match the CPU kernels", "[cuda][norm]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(206);
  for (Shape s : {Shape{1000, 61, 1}, Shape{3, 61, 63}, Shape{4, 24, 1155}, Shape{5, 3, 1}}) {
    const int64_t O = s[0], C = s[1], I = s[2];
    INFO("(O, C, I) = " << shape_str(s));
    Tensor x = randn_shifted(s, rng, 2.0f, 3.0f), w = randn({C}, rng), g = randn(s, rng);
    Tensor shift = randn_shifted({C}, rng, 0.3f, 3.0f);
    Tensor xc = x.to(Device::CUDA), wc = w.to(Device::CUDA), gc = g.to(Device::CUDA), shiftc = shift.to(Device::CUDA);
    for (int with_shift = 0; with_shift < 2; with_shift++) {
      INFO("shift " << with_shift);
      Tensor sums = Tensor::empty({2 * C + 1}), sumsc = cuda_sentinel({2 * C + 1});
      cpu::batchnorm_sums(sums.f32(), x.f32(), with_shift ? shift.f32() : nullptr, O, C, I);
      cuda::batchnorm_sums(sumsc.f32(), xc.f32(), with_shift ? shiftc.f32() : nullptr, O, C, I);
      REQUIRE_CLOSE(host(sumsc), sums, 1e-3, 1e-5);
      // Finalise from the same (CPU) sums on both sides.
      Tensor rm = with_shift ? shift.clone() : randn({C}, rng), rv = randu({C}, rng, 0.5f, 2.0f);
      Tensor rmc = rm.to(Device::CUDA), rvc = rv.to(Device::CUDA), sumsh = sums.to(Device::CUDA);
      Tensor m = Tensor::empty({C}), r = Tensor::empty({C});
      Tensor mc = cuda_empty({C}), rc = cuda_empty({C});
      cpu::batchnorm_sync_stats(m.f32(), r.f32(), rm.f32(), rv.f32(), sums.f32(), with_shift ? rm.f32() : nullptr, C,
                                0.1f, 1e-5f);
      cuda::batchnorm_sync_stats(mc.f32(), rc.f32(), rmc.f32(), rvc.f32(), sumsh.f32(),
                                 with_shift ? rmc.f32() : nullptr, C, 0.1f, 1e-5f);
      REQUIRE_CLOSE(host(mc), m, 1e-6, 1e-6);
      REQUIRE_CLOSE(host(rc), r, 1e-6, 1e-6);
      REQUIRE_CLOSE(host(rmc), rm, 1e-6, 1e-6);
      REQUIRE_CLOSE(host(rvc), rv, 1e-6, 1e-6);
    }
    // dx from global sums (the CPU statistics and sums fed to both).
    Tensor m = Tensor::empty({C}), r = Tensor::empty({C}), gsum = Tensor::empty({2 * C});
    cpu::batchnorm_train_stats(m.f32(), r.f32(), nullptr, nullptr, x.f32(), O, C, I, 0.1f, 1e-5f);
    cpu::batchnorm_backward(nullptr, gsum.f32(), gsum.f32() + C, g.f32(), x.f32(), m.f32(), r.f32(), w.f32(), O, C, I,
                            true);
    Tensor count = Tensor::from_vector({1}, {(float)(O * I)});
    Tensor mc = m.to(Device::CUDA), rc = r.to(Device::CUDA), gsumc = gsum.to(Device::CUDA), countc = count.to(Device::CUDA);
    for (int affine = 0; affine < 2; affine++) {
      INFO("affine " << affine);
      Tensor dx = Tensor::empty(s), dxc = cuda_sentinel(s);
      cpu::batchnorm_backward_dx_global(dx.f32(), g.f32(), x.f32(), m.f32(), r.f32(), affine ? w.f32() : nullptr,
                                        gsum.f32(), count.f32(), O, C, I);
      cuda::batchnorm_backward_dx_global(dxc.f32(), gc.f32(), xc.f32(), mc.f32(), rc.f32(),
                                         affine ? wc.f32() : nullptr, gsumc.f32(), countc.f32(), O, C, I);
      REQUIRE_CLOSE(host(dxc), dx, 1e-4, 1e-4);
    }
  }
#endif
}
