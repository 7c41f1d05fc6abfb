// tests/test_cuda_attention.cpp - rope2d, nala_attention, softmax_attention and
// every attention kind of models/attention_kind.h (the core, and pico built
// with it) on the GPU against the CPU: forward outputs and every input gradient through
// the ops, and the kernels directly for what the ops hide (NaLa's S and
// kmean, softmax's lse, rope in place). NaLa has two CUDA paths: tensor cores
// for d = 16, 32, 64 (kernels/cuda/attention_nala.cu) and the first version
// for the other head dims (attention_nala_v1.cu); both are held to the CPU,
// and to each other on the same inputs. Skipped without a GPU.
//
// Shape letters: B batch, h heads, N = H * W tokens, d head dim; G = B * h.
#include <cmath>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/rope.h"
#include "models/attention_kind.h"
#include "models/nalaformer.h"
#include "tensor/device.h"
#include "tests/cuda_harness.h"
#include "tests/golden_init.h"
#ifdef NALA_CUDA
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_softmax_tc.h"
#include "kernels/cuda/rope.h"
#endif

using namespace nala;
using namespace nala::test;

namespace {

using AttnOp = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t);

// The op as a function of {q, k, v} on an H x W grid of tokens.
OpFn attn_fn(AttnOp op, int64_t H, int64_t W) {
  return [=](const std::vector<Tensor>& in) { return op(in[0], in[1], in[2], H, W); };
}

// o, dq, dk and dv of one run, on the host.
std::vector<Tensor> outputs(const DeviceRun& r) { return {r.out, r.grads[0], r.grads[1], r.grads[2]}; }

// Forward + backward with upstream gradient go on dev; {o, dq, dk, dv} on the CPU.
std::vector<Tensor> run_attn(AttnOp op, const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t W,
                             const Tensor& go, Device dev) {
  return outputs(run_on(dev, attn_fn(op, H, W), {q, k, v}, go));
}

// CUDA against CPU for o, dq, dk, dv.
void compare_attn(AttnOp op, const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t W, const Tensor& go,
                  double atol, double rtol) {
  compare_devices(attn_fn(op, H, W), {q, k, v}, go, {atol, rtol});
}

// Queries whose rows have norms alternating between lo and hi (elements away from 0).
Tensor make_queries(const Shape& s, Rng& rng, float lo, float hi) {
  Tensor q = Tensor::empty(s);
  const int64_t d = s.back(), rows = q.numel() / d;
  float* p = q.f32();
  for (int64_t r = 0; r < rows; r++) {
    double ss = 0;
    for (int64_t e = 0; e < d; e++) {
      float m = rng.uniform(0.5f, 1.5f);
      p[r * d + e] = rng.uniform() < 0.5f ? -m : m;
      ss += (double)p[r * d + e] * p[r * d + e];
    }
    const float target = (r % 2) ? hi : lo;
    for (int64_t e = 0; e < d; e++) p[r * d + e] *= (float)(target / std::sqrt(ss));
  }
  return q;
}

bool all_finite(const Tensor& t) {
  for (float x : t.to_vector())
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

// ============================================================== rope2d

TEST_CASE("cuda: rope2d forward and backward against the CPU", "[cuda][attention]") {
  if (!nala::device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
  Rng rng(101);
  const int64_t B = 2, h = 3, H = 7, W = 9, N = H * W;
  for (int64_t d : {4, 8, 20, 64, 128}) {
    INFO("rope2d (B, h, N, d) = (" << B << ", " << h << ", " << N << ", " << d << "), H " << H << " W " << W);
    Tensor x = randn({B, h, N, d}, rng), go = randn({B, h, N, d}, rng);
    Tensor xc = x.to(Device::CPU).set_requires_grad(true), xg = x.to(Device::CUDA).set_requires_grad(true);
    Tensor yc = rope2d(xc, H, W), yg = rope2d(xg, H, W);
    backward(yc, go);
    backward(yg, go.to(Device::CUDA));
    REQUIRE(yg.device() == Device::CUDA);
    REQUIRE_CLOSE(yg.to(Device::CPU), yc, 1e-6, 1e-5);
    REQUIRE_CLOSE(xg.grad().to(Device::CPU), xc.grad(), 1e-6, 1e-5);
#ifdef NALA_CUDA
    // In place (x and y alias), forward then backward gives x back.
    Tensor t = x.to(Device::CUDA);
    cuda::rope2d_forward(t.f32(), t.f32(), B * h, H, W, d);
    REQUIRE_CLOSE(t.to(Device::CPU), yc.detach(), 1e-6, 1e-5);
    cuda::rope2d_backward(t.f32(), t.f32(), B * h, H, W, d);
    REQUIRE_CLOSE(t.to(Device::CPU), x, 1e-5, 1e-5);
#endif
  }
}

// ============================================================== nala_attention

TEST_CASE("cuda: nala_attention forward and dq, dk, dv against the CPU", "[cuda][attention]") {
  if (!nala::device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
  Rng rng(102);
  const int64_t B = 2, h = 3;
  struct Case {
    int64_t H, W, d;
  };
  // N = 63 is not a multiple of any tile; d = 68 leaves partial tiles of S;
  // d = 128 is the largest supported head dim (S needs 135 KB of shared memory).
  for (Case cs : {Case{7, 9, 4}, Case{7, 9, 8}, Case{7, 9, 12}, Case{7, 9, 32}, Case{7, 9, 64}, Case{5, 7, 68},
                  Case{5, 7, 128}, Case{1, 1, 8}, Case{1, 3, 4}}) {
    const int64_t N = cs.H * cs.W, d = cs.d;
    INFO("nala (B, h, N, d) = (" << B << ", " << h << ", " << N << ", " << d << "), H " << cs.H << " W " << cs.W);
    const Shape s = {B, h, N, d};
    Tensor q = make_queries(s, rng, 0.3f, 3.0f), k = randn(s, rng, 0.8f), v = randn(s, rng), go = randn(s, rng);
    compare_attn(nala_attention, q, k, v, cs.H, cs.W, go, 1e-4, 1e-3);
  }
}

TEST_CASE("cuda: nala_attention kernels: S and kmean against the CPU, deterministic", "[cuda][attention]") {
  if (!nala::device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
#ifdef NALA_CUDA
  Rng rng(103);
  for (int64_t d : {8, 16, 32, 64}) {
    const int64_t G = 5, H = 13, W = 11, N = H * W, F = 2 * d;
    INFO("nala kernels G " << G << " N " << N << " d " << d);
    Tensor q = make_queries({G, N, d}, rng, 0.5f, 2.0f), k = randn({G, N, d}, rng, 0.8f), v = randn({G, N, d}, rng);
    Tensor go = randn({G, N, d}, rng);
    Tensor o = Tensor::empty({G, N, d}), S = Tensor::empty({G, F, d}), km = Tensor::empty({G, F});
    cpu::nala_attention_forward(q.f32(), k.f32(), v.f32(), o.f32(), S.f32(), km.f32(), G, H, W, d, kNalaNormFloor);
    Tensor qg = q.to(Device::CUDA), kg = k.to(Device::CUDA), vg = v.to(Device::CUDA), gog = go.to(Device::CUDA);
    std::vector<std::vector<float>> runs[2];
    for (int run = 0; run < 2; run++) {
      Tensor og = Tensor::empty({G, N, d}, DType::F32, Device::CUDA), Sg = Tensor::empty({G, F, d}, DType::F32, Device::CUDA);
      Tensor kmg = Tensor::empty({G, F}, DType::F32, Device::CUDA);
      Tensor dq = Tensor::empty({G, N, d}, DType::F32, Device::CUDA), dk = Tensor::empty({G, N, d}, DType::F32, Device::CUDA);
      Tensor dv = Tensor::empty({G, N, d}, DType::F32, Device::CUDA);
      cuda::nala_attention_forward(qg.f32(), kg.f32(), vg.f32(), og.f32(), Sg.f32(), kmg.f32(), G, H, W, d,
                                   kNalaNormFloor);
      cuda::nala_attention_backward(qg.f32(), kg.f32(), vg.f32(), Sg.f32(), kmg.f32(), gog.f32(), dq.f32(), dk.f32(),
                                    dv.f32(), G, H, W, d, kNalaNormFloor);
      if (run == 0) {
        INFO("S");
        REQUIRE_CLOSE(Sg.to(Device::CPU), S, 1e-5, 1e-4);
        INFO("kmean");
        REQUIRE_CLOSE(kmg.to(Device::CPU), km, 1e-6, 1e-4);
        INFO("o");
        REQUIRE_CLOSE(og.to(Device::CPU), o, 1e-4, 1e-3);
      }
      for (Tensor* t : {&og, &Sg, &kmg, &dq, &dk, &dv}) runs[run].push_back(t->to_vector());
    }
    for (size_t i = 0; i < runs[0].size(); i++) {
      INFO("output " << i << " (o, S, kmean, dq, dk, dv) differs between two identical runs");
      REQUIRE(runs[0][i] == runs[1][i]);
    }
  }
#endif
}

TEST_CASE("cuda: nala_attention zero and negative inputs", "[cuda][attention]") {
  if (!nala::device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
  Rng rng(104);
  // d = 8 takes the first version, 16 and 64 the tensor-core path.
  for (int64_t d : {8, 16, 64}) {
    const int64_t B = 2, h = 3, H = 7, W = 9, N = H * W;
    const Shape s = {B, h, N, d};
    Tensor go = randn(s, rng);
    INFO("d = " << d);
    {
      INFO("all-zero q rows: zero output and zero dq on those rows");
      Tensor q = randn(s, rng), k = randn(s, rng, 0.8f), v = randn(s, rng);
      const std::vector<int64_t> zero_rows = {0, 5, 62, 63, 200, B * h * N - 1};
      for (int64_t r : zero_rows) std::fill(q.f32() + r * d, q.f32() + (r + 1) * d, 0.0f);
      compare_attn(nala_attention, q, k, v, H, W, go, 1e-4, 1e-3);
      std::vector<Tensor> res = run_attn(nala_attention, q, k, v, H, W, go, Device::CUDA);
      for (auto& t : res) REQUIRE(all_finite(t));
      for (int64_t r : zero_rows)
        for (int64_t e = 0; e < d; e++) {
          INFO("row " << r << " element " << e);
          REQUIRE(res[0].f32()[r * d + e] == 0.0f);
          REQUIRE(res[1].f32()[r * d + e] == 0.0f);
        }
    }
    {
      INFO("all-zero k");
      Tensor q = randn(s, rng), k = Tensor::zeros(s), v = randn(s, rng);
      std::vector<Tensor> res = run_attn(nala_attention, q, k, v, H, W, go, Device::CUDA);
      for (auto& t : res) REQUIRE(all_finite(t));
      for (float x : res[0].to_vector()) REQUIRE(x == 0.0f);
      compare_attn(nala_attention, q, k, v, H, W, go, 1e-4, 1e-3);
    }
    {
      INFO("all-zero q, k and v");
      std::vector<Tensor> res =
          run_attn(nala_attention, Tensor::zeros(s), Tensor::zeros(s), Tensor::zeros(s), H, W, go, Device::CUDA);
      for (auto& t : res) {
        REQUIRE(all_finite(t));
        for (float x : t.to_vector()) REQUIRE(x == 0.0f);
      }
    }
    {
      INFO("negative-only inputs");
      Tensor q = randu(s, rng, -2.0f, -0.1f), k = randu(s, rng, -1.5f, -0.1f), v = randu(s, rng, -1.0f, -0.1f);
      compare_attn(nala_attention, q, k, v, H, W, go, 1e-4, 1e-3);
    }
    {
      INFO("a q element that is exactly 0");
      Tensor q = make_queries(s, rng, 0.5f, 3.0f), k = randn(s, rng, 0.8f), v = randn(s, rng);
      q.f32()[3 * d + 2] = 0.0f;
      compare_attn(nala_attention, q, k, v, H, W, go, 1e-4, 1e-3);
    }
  }
}

TEST_CASE("cuda: nala_attention larger case (B=4, h=2, N=28*28, d=32)", "[cuda][attention]") {
  if (!nala::device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
  Rng rng(105);
  const int64_t B = 4, h = 2, H = 28, W = 28, d = 32;
  const Shape s = {B, h, H * W, d};
  Tensor q = make_queries(s, rng, 0.5f, 4.0f), k = randn(s, rng, 0.8f), v = randn(s, rng), go = randn(s, rng);
  // Sums over 784 tokens in another order than the CPU: a looser rtol.
  compare_attn(nala_attention, q, k, v, H, W, go, 1e-4, 2e-3);
}

TEST_CASE("cuda: nala_attention tensor-core path against the CPU", "[cuda][attention]") {
  if (!nala::device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
#ifdef NALA_CUDA
  for (int64_t d : {16, 32, 64}) REQUIRE(cuda::nala_attention_tensor_cores(d));
  for (int64_t d : {4, 8, 12, 68, 96, 128}) REQUIRE_FALSE(cuda::nala_attention_tensor_cores(d));
#endif
  Rng rng(106);
  struct Case {
    int64_t B, h, H, W;
  };
  // One token; N below a warp's 16 tokens; odd N; N that is not a multiple of
  // any tile (63, 255); a single problem of 1600 tokens, which the kernels cut
  // into many chunks (each chunk's partial state is summed in order).
  for (int64_t d : {16, 32, 64})
    for (Case cs : {Case{1, 1, 1, 1}, Case{2, 1, 1, 3}, Case{1, 3, 3, 5}, Case{2, 3, 7, 9}, Case{3, 2, 15, 17},
                    Case{1, 1, 40, 40}}) {
      const int64_t N = cs.H * cs.W;
      INFO("nala (B, h, N, d) = (" << cs.B << ", " << cs.h << ", " << N << ", " << d << "), H " << cs.H << " W "
                                   << cs.W);
      const Shape s = {cs.B, cs.h, N, d};
      Tensor q = make_queries(s, rng, 0.3f, 3.0f), k = randn(s, rng, 0.8f), v = randn(s, rng), go = randn(s, rng);
      compare_attn(nala_attention, q, k, v, cs.H, cs.W, go, 1e-4, 1e-3);
    }
}

TEST_CASE("cuda: nala_attention tensor-core path, long chunks (many problems) against the CPU", "[cuda][attention]") {
  if (!nala::device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
  // With more problems than the GPU has resident blocks, every kernel takes a
  // whole problem per block: the state kernel's steps of 32 tokens go round
  // its ring of k, v stages several times (N = 143: 4 full steps and a part),
  // the other kernels loop over many 16-token tiles per warp.
  Rng rng(108);
  for (int64_t d : {16, 32, 64}) {
    const int64_t B = 300, h = 1, H = 11, W = 13, N = H * W;
    INFO("nala (B, h, N, d) = (" << B << ", " << h << ", " << N << ", " << d << ")");
    const Shape s = {B, h, N, d};
    Tensor q = make_queries(s, rng, 0.3f, 3.0f), k = randn(s, rng, 0.8f), v = randn(s, rng), go = randn(s, rng);
    compare_attn(nala_attention, q, k, v, H, W, go, 1e-4, 1e-3);
  }
}

TEST_CASE("cuda: nala_attention tensor-core path against the first version", "[cuda][attention]") {
  if (!nala::device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
#ifdef NALA_CUDA
  // The fused kernels (two per pass) and the first version's five stages on
  // the same device inputs: S, kmean, o, dq, dk, dv.
  Rng rng(107);
  for (int64_t d : {16, 32, 64}) {
    const int64_t G = 6, H = 19, W = 23, N = H * W, F = 2 * d;
    INFO("G " << G << " N " << N << " d " << d);
    Tensor q = make_queries({G, N, d}, rng, 0.3f, 3.0f), k = randn({G, N, d}, rng, 0.8f), v = randn({G, N, d}, rng);
    Tensor go = randn({G, N, d}, rng);
    Tensor qg = q.to(Device::CUDA), kg = k.to(Device::CUDA), vg = v.to(Device::CUDA), gog = go.to(Device::CUDA);
    std::vector<Tensor> out[2];
    for (int path = 0; path < 2; path++) {
      auto empty = [](const Shape& sh) { return Tensor::full(sh, NAN, Device::CUDA); };  // poisoned
      Tensor o = empty({G, N, d}), S = empty({G, F, d}), km = empty({G, F});
      Tensor dq = empty({G, N, d}), dk = empty({G, N, d}), dv = empty({G, N, d});
      decltype(&cuda::nala_attention_forward_v1) fwd = cuda::nala_attention_forward;  // the f32 overload
      decltype(&cuda::nala_attention_backward_v1) bwd = cuda::nala_attention_backward;
      if (path) fwd = cuda::nala_attention_forward_v1, bwd = cuda::nala_attention_backward_v1;
      fwd(qg.f32(), kg.f32(), vg.f32(), o.f32(), S.f32(), km.f32(), G, H, W, d, kNalaNormFloor);
      bwd(qg.f32(), kg.f32(), vg.f32(), S.f32(), km.f32(), gog.f32(), dq.f32(), dk.f32(), dv.f32(), G, H, W, d,
          kNalaNormFloor);
      for (Tensor* t : {&S, &km, &o, &dq, &dk, &dv}) out[path].push_back(t->to(Device::CPU));
    }
    const char* names[] = {"S", "kmean", "o", "dq", "dk", "dv"};
    const double atol[] = {1e-5, 1e-6, 1e-4, 1e-4, 1e-4, 1e-4}, rtol[] = {1e-4, 1e-4, 1e-3, 1e-3, 1e-3, 1e-3};
    for (int i = 0; i < 6; i++) {
      INFO(names[i] << ": tensor cores against the first version");
      REQUIRE(all_finite(out[0][i]));
      REQUIRE_CLOSE(out[0][i], out[1][i], atol[i], rtol[i]);
    }
  }
#endif
}

// ============================================================== softmax_attention

TEST_CASE("cuda: softmax_attention forward and grads against the CPU", "[cuda][attention]") {
  if (!nala::device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
  Rng rng(106);
  struct Case {
    int64_t B, h, H, W, d;
  };
  for (Case cs : {Case{2, 3, 7, 9, 4}, Case{2, 3, 7, 9, 8}, Case{2, 3, 7, 9, 32}, Case{2, 3, 7, 9, 64},
                  Case{1, 2, 5, 7, 128}, Case{2, 2, 14, 14, 32}, Case{2, 3, 1, 1, 8}, Case{1, 1, 3, 11, 12},
                  Case{1, 2, 10, 13, 36}}) {
    const int64_t N = cs.H * cs.W, d = cs.d;
    INFO("softmax (B, h, N, d) = (" << cs.B << ", " << cs.h << ", " << N << ", " << d << "), H " << cs.H << " W "
                                    << cs.W);
    const Shape s = {cs.B, cs.h, N, d};
    // std 2 makes peaked rows: exercises the running max.
    Tensor q = randn(s, rng, 2.0f), k = randn(s, rng, 2.0f), v = randn(s, rng), go = randn(s, rng);
    compare_attn(softmax_attention, q, k, v, cs.H, cs.W, go, 1e-4, 1e-3);
#ifdef NALA_CUDA
    const int64_t G = cs.B * cs.h;
    Tensor o = Tensor::empty({G, N, d}), lse = Tensor::empty({G, N});
    cpu::softmax_attention_forward(q.f32(), k.f32(), v.f32(), o.f32(), lse.f32(), G, cs.H, cs.W, d);
    Tensor qg = q.to(Device::CUDA), kg = k.to(Device::CUDA), vg = v.to(Device::CUDA);
    Tensor og = Tensor::empty({G, N, d}, DType::F32, Device::CUDA), lg = Tensor::empty({G, N}, DType::F32, Device::CUDA);
    cuda::softmax_attention_forward(qg.f32(), kg.f32(), vg.f32(), og.f32(), lg.f32(), G, cs.H, cs.W, d);
    INFO("lse");
    REQUIRE_CLOSE(lg.to(Device::CPU), lse, 1e-4, 1e-5);
#endif
  }
}

// The tensor-core path of --precision bf16 (kernels/cuda/attention_softmax_tc.cu)
// rounds rope(q), rope(k), v and the output gradient to bf16, and the softmax
// weights and score gradients on their way into the second products. Its
// reference: the float32 CPU kernels on the same rounded operands (q' =
// rope^T(bf16(rope(q))), so that rope(q') is the rounded rope(q) to float32
// rounding), which leaves the rounding of P and dS (2^-9 of each weight) and
// the accumulation order to tolerate: 1% of the largest reference value per
// element, and 0.5% relative L2 over each tensor (the backward's Dl takes the
// rounded dO too, as dP does). A missing mask, scale or
// RoPE transpose is off by tens of percent.
TEST_CASE("cuda: softmax_attention on tensor cores (bf16) against the CPU on the rounded operands",
          "[cuda][attention][bf16]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(2611);
  struct Case {
    int64_t B, h, H, W, d;
  };
  auto scaled_close = [](const std::vector<float>& got, const std::vector<float>& ref, const char* name) {
    double amax = 0, e2 = 0, r2 = 0, worst = 0;
    for (size_t i = 0; i < ref.size(); i++) amax = std::max(amax, (double)std::fabs(ref[i]));
    for (size_t i = 0; i < ref.size(); i++) {
      const double e = (double)got[i] - ref[i];
      worst = std::max(worst, std::isnan(e) ? INFINITY : std::fabs(e));
      e2 += e * e, r2 += (double)ref[i] * ref[i];
    }
    INFO(name << ": worst error " << worst << " (largest |ref| " << amax << "), relative L2 "
              << std::sqrt(e2 / std::max(r2, 1e-30)));
    // (+ 1e-4: one token's gradients are 0 up to float32 rounding)
    REQUIRE(worst <= 1e-2 * amax + 1e-4);
    REQUIRE(std::sqrt(e2) <= 5e-3 * std::sqrt(r2) + 1e-4 * std::sqrt((double)ref.size()));
  };
  // N = 49, 196 (xt's stages 3 and 2), 15, 135 (three key tiles, the last partial), 1, 256 (whole tiles),
  // and 135 at d = 16 (both buffers of the double buffer at the smallest rows)
  for (Case cs : {Case{2, 3, 7, 7, 32}, Case{1, 2, 14, 14, 32}, Case{2, 1, 3, 5, 16}, Case{1, 2, 9, 15, 64},
                  Case{2, 1, 1, 1, 64}, Case{1, 1, 16, 16, 64}, Case{1, 2, 9, 15, 16}}) {
    const int64_t G = cs.B * cs.h, N = cs.H * cs.W, d = cs.d, n = G * N * d;
    INFO("(G, N, d) = (" << G << ", " << N << ", " << d << "), H " << cs.H << " W " << cs.W);
    REQUIRE(cuda::softmax_attention_tc_supported(d));
    const Shape s = {G, N, d};
    Tensor q = randn(s, rng, 1.5f), k = randn(s, rng, 1.5f), v = randn(s, rng), go = randn(s, rng);
    // the rounded operands, rotated back
    std::vector<float> rq(n), rk(n), q1(n), k1(n);
    cpu::rope2d_forward(q.f32(), rq.data(), G, cs.H, cs.W, d);
    cpu::rope2d_forward(k.f32(), rk.data(), G, cs.H, cs.W, d);
    rq = round_bf16(rq), rk = round_bf16(rk);
    cpu::rope2d_backward(rq.data(), q1.data(), G, cs.H, cs.W, d);
    cpu::rope2d_backward(rk.data(), k1.data(), G, cs.H, cs.W, d);
    const std::vector<float> v1 = round_bf16(v.to_vector()), go1 = round_bf16(go.to_vector());
    std::vector<float> o(n), lse(G * N), dq(n), dk(n), dv(n);
    cpu::softmax_attention_forward(q1.data(), k1.data(), v1.data(), o.data(), lse.data(), G, cs.H, cs.W, d);
    cpu::softmax_attention_backward(q1.data(), k1.data(), v1.data(), o.data(), lse.data(), go1.data(), dq.data(),
                                    dk.data(), dv.data(), G, cs.H, cs.W, d);

    Tensor qg = q.to(Device::CUDA), kg = k.to(Device::CUDA), vg = v.to(Device::CUDA), gg = go.to(Device::CUDA);
    auto dev = [&](const Shape& sh) { return Tensor::empty(sh, DType::F32, Device::CUDA); };
    Tensor og = dev(s), lg = dev({G, N}), dqg = dev(s), dkg = dev(s), dvg = dev(s);
    std::vector<float> first[5];
    for (int run = 0; run < 2; run++) {
      Bf16Products bf16;  // the public entry points take the tensor-core path
      cuda::softmax_attention_forward(qg.f32(), kg.f32(), vg.f32(), og.f32(), lg.f32(), G, cs.H, cs.W, d);
      cuda::softmax_attention_backward(qg.f32(), kg.f32(), vg.f32(), og.f32(), lg.f32(), gg.f32(), dqg.f32(),
                                       dkg.f32(), dvg.f32(), G, cs.H, cs.W, d);
      const std::vector<float> got[5] = {og.to(Device::CPU).to_vector(), lg.to(Device::CPU).to_vector(),
                                         dqg.to(Device::CPU).to_vector(), dkg.to(Device::CPU).to_vector(),
                                         dvg.to(Device::CPU).to_vector()};
      if (run == 1) {
        INFO("a second run gives the same bits");
        for (int i = 0; i < 5; i++) REQUIRE(bit_equal(got[i], first[i]));
        break;
      }
      for (int i = 0; i < 5; i++) first[i] = got[i];
      scaled_close(got[0], o, "o");
      REQUIRE_CLOSE(got[1], lse, 1e-4, 1e-4);  // scores from the same rounded operands: float32 close
      scaled_close(got[2], dq, "dq");
      scaled_close(got[3], dk, "dk");
      scaled_close(got[4], dv, "dv");
    }
    // the direct call is the same kernel; float32 products take the float32 kernels (other bits)
    cuda::softmax_attention_forward_tc(qg.f32(), kg.f32(), vg.f32(), og.f32(), lg.f32(), G, cs.H, cs.W, d);
    REQUIRE(bit_equal(og.to(Device::CPU).to_vector(), first[0]));
    cuda::softmax_attention_forward(qg.f32(), kg.f32(), vg.f32(), og.f32(), lg.f32(), G, cs.H, cs.W, d);
    REQUIRE(!bit_equal(og.to(Device::CPU).to_vector(), first[0]));
  }
  // head dims without a tensor-core kernel keep the float32 kernels in bf16 mode
  for (int64_t d : {8, 36, 128}) {
    INFO("d = " << d);
    REQUIRE(!cuda::softmax_attention_tc_supported(d));
    const Shape s = {2, 35, d};
    Tensor q = randn(s, rng), k = randn(s, rng), v = randn(s, rng);
    Tensor qg = q.to(Device::CUDA), kg = k.to(Device::CUDA), vg = v.to(Device::CUDA);
    Tensor o32 = Tensor::empty(s, DType::F32, Device::CUDA), o16 = Tensor::empty(s, DType::F32, Device::CUDA);
    Tensor lg = Tensor::empty({2, 35}, DType::F32, Device::CUDA);
    cuda::softmax_attention_forward(qg.f32(), kg.f32(), vg.f32(), o32.f32(), lg.f32(), 2, 5, 7, d);
    {
      Bf16Products bf16;
      cuda::softmax_attention_forward(qg.f32(), kg.f32(), vg.f32(), o16.f32(), lg.f32(), 2, 5, 7, d);
    }
    REQUIRE(bit_equal(o16.to(Device::CPU).to_vector(), o32.to(Device::CPU).to_vector()));
  }
#endif
}

TEST_CASE("cuda: attention kernels reject a head dim above 128", "[cuda][attention]") {
  if (!nala::device::cuda_available()) {
    WARN("no CUDA device");
    return;
  }
  Tensor a = Tensor::zeros({1, 1, 4, 132}, DType::F32, Device::CUDA);
  REQUIRE_THROWS_WITH(nala_attention(a, a, a, 2, 2), Catch::Contains("nala_attention") && Catch::Contains("132"));
  REQUIRE_THROWS_WITH(softmax_attention(a, a, a, 2, 2), Catch::Contains("softmax_attention") && Catch::Contains("132"));
}

// ---- attention kinds (docs/SPEC.md §11) ------------------------------------

TEST_CASE("cuda: every attention kind's core, forward and dq, dk, dv against the CPU", "[cuda][attention][kinds]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(91);
  struct Case {
    int64_t B, h, H, W, d;
  };
  for (Case c : {Case{2, 2, 4, 5, 8}, Case{2, 2, 7, 7, 32}, Case{1, 4, 4, 4, 16}}) {
    const Shape s = {c.B, c.h, c.H * c.W, c.d};
    Tensor q = make_queries(s, rng, 0.5f, 3.0f), k = make_queries(s, rng, 0.5f, 2.0f), v = randn(s, rng);
    for (const std::string& name : attn_kind_names()) {
      INFO("kind " << name << " shape " << shape_str(s));
      const AttnKind kind = parse_attn_kind(name);
      compare_devices([=](const std::vector<Tensor>& in) { return attention_core(kind, in[0], in[1], in[2], c.H, c.W); },
                      {q, k, v}, 7, {1e-4, 1e-3}, {}, {Tol{1e-3, 2e-3}, Tol{1e-3, 2e-3}, Tol{1e-4, 1e-3}});
    }
  }
}

TEST_CASE("cuda: pico with each attention kind, logits and every gradient against the CPU", "[cuda][attention][kinds]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(92);
  Tensor x = randn({2, 28, 28, 1}, rng);
  Tensor labels = Tensor::from_vector_i64({2}, {3, 7});
  for (const std::string& name : attn_kind_names()) {
    INFO("kind " << name);
    NalaConfig cfg = nalaformer_config("pico");
    cfg.attn = parse_attn_kind(name);
    NalaFormer a(cfg), b(cfg);
    golden_init(a);
    golden_init(b);
    b.to(Device::CUDA);
    a.train(), b.train();
    Tensor la = a.forward(x), lb = b.forward(x.to(Device::CUDA));
    REQUIRE_CLOSE(host(lb), la, 1e-4, 1e-3);
    backward(cross_entropy(la, labels));
    backward(cross_entropy(lb, labels.to(Device::CUDA)));
    auto pa = a.named_parameters(), pb = b.named_parameters();
    REQUIRE(pa.size() == pb.size());
    for (size_t i = 0; i < pa.size(); i++) {
      INFO("gradient of " << pa[i].first);
      double scale = 0;
      for (float g : pa[i].second.grad().to_vector()) scale = std::max(scale, (double)std::fabs(g));
      REQUIRE_CLOSE(host(pb[i].second.grad()), pa[i].second.grad(), 1e-3 * scale + 1e-6, 1e-2);
    }
  }
}
