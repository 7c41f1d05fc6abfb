// tests/test_cuda_long_seq.cpp - the device allocator's counters, and what
// the attention ops allocate beyond their inputs, outputs and gradients:
// NaLa keeps its partial states in an output it has not written yet (o in
// forward, dk in backward) when they fit, and softmax attention applies the
// rope as it stages rows (no rope(q), rope(k) copies); NaLa in float32 and
// in bf16. Both ops checked against the CPU at a size where this happens,
// odd N included. Skipped without a GPU.
//
// Shape letters: B batch, h heads, N = H * W tokens, d head dim.
#include <vector>

#include "autograd/autograd.h"
#include "tensor/device.h"
#include "tests/cuda_harness.h"

using namespace nala;
using namespace nala::test;

namespace {

// The pool's rounding (kernels/cuda/memory.cu): 512 B below 1 MiB, else 2 MiB.
size_t pool_size(size_t n) {
  if (n < (size_t(1) << 20)) return (n + 511) / 512 * 512;
  return (n + (size_t(2) << 20) - 1) / (size_t(2) << 20) * (size_t(2) << 20);
}

using AttnOp = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t);

// The peak of nala's allocator over one step of op at (1, 1, H * W, d): q, k,
// v and go uploaded, forward, backward; less what was held before. Also
// returns o, dq, dk, dv on the host.
size_t step_peak(AttnOp op, const std::vector<Tensor>& in, int64_t H, int64_t W, std::vector<Tensor>* out) {
  device::synchronize();
  const size_t base = device::in_use_bytes();
  device::reset_peak();
  Tensor q = on_cuda(in[0], true), k = on_cuda(in[1], true), v = on_cuda(in[2], true), go = on_cuda(in[3]);
  Tensor o = op(q, k, v, H, W);
  backward(o, go);
  device::synchronize();
  const size_t peak = device::peak_bytes() - base;
  *out = {host(o.detach()), host(q.grad()), host(k.grad()), host(v.grad())};
  return peak;
}

std::vector<Tensor> cpu_step(AttnOp op, const std::vector<Tensor>& in, int64_t H, int64_t W) {
  Tensor q = in[0].clone(), k = in[1].clone(), v = in[2].clone();
  for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
  Tensor o = op(q, k, v, H, W);
  backward(o, in[3]);
  return {o.detach(), q.grad(), k.grad(), v.grad()};
}

}  // namespace

TEST_CASE("cuda: the allocator's in-use and peak counters", "[cuda][memory]") {
  SKIP_WITHOUT_CUDA();
  device::synchronize();
  const size_t base = device::in_use_bytes();
  device::reset_peak();
  REQUIRE(device::peak_bytes() == base);
  size_t small_bytes = 0;
  {
    Tensor big = Tensor::empty({3 << 18}, DType::F32, Device::CUDA);  // 3 MiB: 4 MiB from the pool
    REQUIRE(device::in_use_bytes() == base + (size_t(4) << 20));
    Tensor small = Tensor::empty({1000}, DType::F32, Device::CUDA);  // 4000 B: 4096
    small_bytes = 4096;
    REQUIRE(device::in_use_bytes() == base + (size_t(4) << 20) + small_bytes);
    big = Tensor();
    REQUIRE(device::in_use_bytes() == base + small_bytes);
    REQUIRE(device::peak_bytes() == base + (size_t(4) << 20) + small_bytes);  // the peak stays
    device::reset_peak();
    REQUIRE(device::peak_bytes() == base + small_bytes);
    Tensor again = Tensor::empty({3 << 18}, DType::F32, Device::CUDA);  // from the cache: counted again
    REQUIRE(device::peak_bytes() == base + (size_t(4) << 20) + small_bytes);
  }
  REQUIRE(device::in_use_bytes() == base);
  device::reset_peak();
  REQUIRE(device::peak_bytes() == base);
}

TEST_CASE("cuda: nala_attention at long N allocates only its tensors and the state", "[cuda][attention][memory][bf16]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(171);
  // Odd N (251 x 257 = 64,507): the partial states of the many chunks fit in
  // o and dk. Beyond q, k, v, go, o, dq, dk, dv the step may hold S and kmean
  // (saved for backward) and the sum of the partials: 2d^2 + 2d floats each.
  // The same in bf16: the eight tensors take half the bytes, and the partial
  // states (float32) still fit in o and dk, now of 2-byte elements; the outputs
  // (one-pass products, autograd/ops.h) within the normwise bound of
  // tests/test_cuda_bf16.cpp of the CPU's bf16 op.
  for (DType dt : {DType::F32, DType::BF16})
    for (int64_t d : {16, 64}) {
      const int64_t H = 251, W = 257, N = H * W;
      INFO("(1, 1, " << N << ", " << d << ") " << dtype_name(dt));
      const Shape s = {1, 1, N, d};
      std::vector<Tensor> in;
      for (float sd : {0.5f, 0.8f, 1.0f, 1.0f}) in.push_back(cast(randn(s, rng, sd), dt));
      std::vector<Tensor> got;
      const size_t peak = step_peak(nala_attention, in, H, W, &got);
      const size_t tensors = 8 * pool_size(N * d * dtype_size(dt)), state = pool_size((2 * d * d + 2 * d) * 4);
      INFO("peak " << peak << " bytes, the eight tensors " << tensors << ", one state " << state);
      REQUIRE(peak >= tensors);
      REQUIRE(peak <= tensors + 3 * state + 1024);
      std::vector<Tensor> ref = cpu_step(nala_attention, in, H, W);
      const char* names[] = {"o", "dq", "dk", "dv"};
      for (int i = 0; i < 4; i++) {
        INFO(names[i]);
        REQUIRE(got[i].dtype() == dt);
        if (dt == DType::BF16)
          require_normwise(got[i], ref[i], kNalaOnePassBound);
        else
          REQUIRE_CLOSE(got[i], ref[i], 1e-4, 1e-3);
      }
    }
}

TEST_CASE("cuda: softmax_attention allocates no rope copies", "[cuda][attention][memory]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(172);
  // Beyond the eight tensors: lse (forward, saved) and Dl (backward), N floats each.
  struct Case {
    int64_t H, W, d;
  };
  for (Case cs : {Case{63, 65, 64}, Case{1, 5, 32}, Case{17, 19, 16}}) {
    const int64_t N = cs.H * cs.W, d = cs.d;
    INFO("(1, 1, " << N << ", " << d << ")");
    const Shape s = {1, 1, N, d};
    std::vector<Tensor> in = {randn(s, rng, 1.5f), randn(s, rng, 1.5f), randn(s, rng), randn(s, rng)};
    std::vector<Tensor> got;
    const size_t peak = step_peak(softmax_attention, in, cs.H, cs.W, &got);
    const size_t tensors = 8 * pool_size(N * d * sizeof(float)), rows = pool_size(N * sizeof(float));
    INFO("peak " << peak << " bytes, the eight tensors " << tensors);
    REQUIRE(peak >= tensors);
    REQUIRE(peak <= tensors + 2 * rows);
    std::vector<Tensor> ref = cpu_step(softmax_attention, in, cs.H, cs.W);
    const char* names[] = {"o", "dq", "dk", "dv"};
    for (int i = 0; i < 4; i++) {
      INFO(names[i]);
      REQUIRE_CLOSE(got[i], ref[i], 1e-4, 1e-3);
    }
  }
}
