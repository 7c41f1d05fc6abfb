// tests/test_cuda_bf16.cpp - bf16 tensors on the GPU against the CPU: the
// casts bit for bit (aligned, unaligned and odd lengths, ties, NaN, infinity),
// and nala_attention on bf16 q, k, v (the tensor-core kernels reading and
// writing bf16, and the first version on float32 copies at other head dims)
// against the CPU's bf16 op: odd N, N smaller than a block, several heads,
// many problems, zero inputs, a long sequence. Skipped without a GPU.
//
// Tolerance of the attention: the CUDA kernels' float32 tolerance (1e-4 +
// 1e-3 |ref|) plus one bf16 step (2^-7 relative): the two devices' float32
// results differ slightly, and each is rounded once, which may land on
// either side of a rounding boundary.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops.h"
#include "tensor/device.h"
#include "tests/cuda_harness.h"

using namespace nala;
using namespace nala::test;

namespace {

const Tol kBf16Attn{1e-4, 1e-3 + 1.0 / 128};

std::vector<uint16_t> bits(const Tensor& t) {
  Tensor h = host(t).clone();
  std::vector<uint16_t> b((size_t)h.numel());
  std::memcpy(b.data(), h.raw(), b.size() * 2);
  return b;
}

OpFn nala_fn(int64_t H, int64_t W) {
  return [=](const std::vector<Tensor>& in) { return nala_attention(in[0], in[1], in[2], H, W); };
}

Tensor bf(const Tensor& t) { return cast(t, DType::BF16); }

}  // namespace

TEST_CASE("cuda: casts between f32 and bf16, bit for bit as the CPU", "[cuda][bf16]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(41);
  std::vector<float> v = randn({1001}, rng, 10.0f).to_vector();
  const float inf = std::numeric_limits<float>::infinity();
  const float special[] = {0.0f, -0.0f, 1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8), inf, -inf,
                           std::nanf(""), std::numeric_limits<float>::max(), 1e-40f, -3e-39f};
  for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) v[i * 7] = special[i];
  Tensor x = Tensor::from_vector({1001}, v);
  // Odd length from an aligned start, and from an odd offset (the element-wise path).
  for (int64_t off : {0, 1}) {
    INFO("offset " << off);
    Tensor xs = view::narrow(x, 0, off, 1001 - off);
    Tensor xd = view::narrow(x.to(Device::CUDA), 0, off, 1001 - off);
    Tensor bc = cast(xs, DType::BF16), bg = cast(xd, DType::BF16);
    REQUIRE(bg.device() == Device::CUDA);
    REQUIRE(bits(bg) == bits(bc));
    Tensor bgs = view::narrow(bg, 0, off, 1000 - 2 * off), bcs = view::narrow(bc, 0, off, 1000 - 2 * off);
    REQUIRE(bit_equal(host(cast(bgs, DType::F32)).to_vector(), cast(bcs, DType::F32).to_vector()));
  }
  // The gradient goes back through the other cast.
  compare_devices([](const std::vector<Tensor>& in) { return cast(cast(in[0], DType::BF16), DType::F32); },
                  {randn({3, 33}, rng)}, 7, {0, 0});
}

TEST_CASE("cuda: nala_attention on bf16 against the CPU's bf16 op", "[cuda][bf16][attention]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(42);
  struct Case {
    int64_t B, h, H, W, d;
  };
  // d = 16, 32, 64: tensor cores; 12 and 48: the first version on float32 copies. Odd N,
  // N below a token block (6 tokens), several heads, many problems (B h = 96).
  for (Case c : {Case{2, 3, 7, 11, 16}, Case{1, 1, 2, 3, 32}, Case{2, 2, 9, 13, 64}, Case{32, 3, 5, 5, 32},
                 Case{1, 2, 6, 7, 12}, Case{2, 1, 5, 9, 48}, Case{1, 1, 40, 41, 64}}) {
    INFO("B " << c.B << " h " << c.h << " H " << c.H << " W " << c.W << " d " << c.d);
    const Shape s = {c.B, c.h, c.H * c.W, c.d};
    compare_devices(nala_fn(c.H, c.W), {bf(randn(s, rng, 0.5f)), bf(randn(s, rng, 0.8f)), bf(randn(s, rng))},
                    bf(randn(s, rng)), kBf16Attn);
  }
}

TEST_CASE("cuda: nala_attention on bf16, zero queries, keys and values", "[cuda][bf16][attention]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(43);
  for (int64_t d : {16, 64}) {
    INFO("d " << d);
    const int64_t H = 5, W = 7;
    const Shape s = {1, 2, H * W, d};
    Tensor zero = Tensor::zeros(s);
    // All zeros: o = 0 (z finite), every gradient 0.
    DeviceRuns r = compare_devices(nala_fn(H, W), {bf(zero), bf(zero), bf(zero)}, bf(randn(s, rng)), kBf16Attn);
    for (const Tensor& g : {r.cuda.out, r.cuda.grads[0], r.cuda.grads[1], r.cuda.grads[2]})
      for (float x : g.to_vector()) REQUIRE(x == 0.0f);
    // Zero queries (the norm floor) with real keys and values, and zero keys with real queries.
    compare_devices(nala_fn(H, W), {bf(zero), bf(randn(s, rng, 0.8f)), bf(randn(s, rng))}, bf(randn(s, rng)),
                    kBf16Attn);
    compare_devices(nala_fn(H, W), {bf(randn(s, rng, 0.5f)), bf(zero), bf(randn(s, rng))}, bf(randn(s, rng)),
                    kBf16Attn);
  }
}
