// tests/test_cuda_bf16.cpp - bf16 tensors on the GPU against the CPU: the
// casts bit for bit (aligned, unaligned and odd lengths, ties, NaN, infinity),
// dwconv2d and the linear ops on bf16 activations (the FFN's hidden layer and
// a NaLa layer's q, k, v in bf16 mode, which the last two cases check the
// model takes), and nala_attention on bf16 q, k, v (the tensor-core kernels
// reading and writing bf16, and the first version on float32 copies at other
// head dims) against the CPU's bf16 op: odd N, N smaller than a block,
// several heads, many problems, zero inputs, a long sequence. Skipped
// without a GPU.
//
// Tolerances of the attention. The kernels with three-pass products
// (cuda::nala_attention_* with one_pass = false): the CUDA kernels' float32
// tolerance (1e-4 + 1e-3 |ref|) plus one bf16 step (2^-7 relative), element
// by element: the two devices' float32 results differ slightly, and each is
// rounded once, which may land on either side of a rounding boundary. The
// one-pass products (one_pass = true, what autograd's op runs on bf16):
// kNalaOnePassBound (kernels/closeness.h), normwise.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops.h"
#include "kernels/cpu/attention.h"
#include "models/nalaformer.h"
#include "tensor/device.h"
#include "tests/cuda_harness.h"
#ifdef NALA_CUDA
#include "kernels/cuda/attention.h"
#include "kernels/cuda/conv.h"
#endif

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

// contiguous() of a bf16 view on the GPU: head splits and merges move 4-byte
// pairs through the float copy kernel (even last dim, even strides), other
// views element by element; both bit for bit as the CPU, gradients too.
TEST_CASE("cuda: bf16 copies of permuted and sliced views, bit for bit as the CPU", "[cuda][bf16]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(50);
  Tensor x = bf(randn({2, 5, 3, 8}, rng, 3.0f));  // (B, N, h, d)
  auto to_heads = [](const std::vector<Tensor>& in) { return contiguous(permute(in[0], {0, 2, 1, 3})); };
  auto odd_last = [](const std::vector<Tensor>& in) { return contiguous(permute(in[0], {0, 1, 3, 2})); };
  auto odd_offset = [](const std::vector<Tensor>& in) {  // a view starting at an odd element, last dim 7
    return contiguous(view::narrow(reshape(in[0], {2, 5, 24}), 2, 1, 7));
  };
  for (const auto& f : {OpFn(to_heads), OpFn(odd_last)}) {
    DeviceRuns r = compare_devices(f, {x}, bf(randn(f({x}).shape(), rng)), {0, 0});
    REQUIRE(bits(r.cuda.out) == bits(cast(r.cpu.out, DType::BF16)));
    REQUIRE(bits(r.cuda.grads[0]) == bits(r.cpu.grads[0]));
  }
  Tensor y = odd_offset({x.to(Device::CUDA)});
  REQUIRE(bits(y) == bits(odd_offset({x})));
}

TEST_CASE("cuda: nala_attention on bf16 against the CPU's bf16 op", "[cuda][bf16][attention]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(42);
  struct Case {
    int64_t B, h, H, W, d;
  };
  // d = 16, 32, 64: tensor cores, one-pass products; 12 and 48: the first
  // version on float32 copies. Odd N, N below a token block (6 tokens), several
  // heads, many problems (B h = 96).
  for (Case c : {Case{2, 3, 7, 11, 16}, Case{1, 1, 2, 3, 32}, Case{2, 2, 9, 13, 64}, Case{32, 3, 5, 5, 32},
                 Case{1, 2, 6, 7, 12}, Case{2, 1, 5, 9, 48}, Case{1, 1, 40, 41, 64}}) {
    INFO("B " << c.B << " h " << c.h << " H " << c.H << " W " << c.W << " d " << c.d);
    const Shape s = {c.B, c.h, c.H * c.W, c.d};
    compare_devices_normwise(nala_fn(c.H, c.W), {bf(randn(s, rng, 0.5f)), bf(randn(s, rng, 0.8f)), bf(randn(s, rng))},
                             bf(randn(s, rng)), kNalaOnePassBound);
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
    DeviceRuns r =
        compare_devices_normwise(nala_fn(H, W), {bf(zero), bf(zero), bf(zero)}, bf(randn(s, rng)), kNalaOnePassBound);
    for (const Tensor& g : {r.cuda.out, r.cuda.grads[0], r.cuda.grads[1], r.cuda.grads[2]})
      for (float x : g.to_vector()) REQUIRE(x == 0.0f);
    // Zero queries (the norm floor) with real keys and values, and zero keys
    // with real queries.
    compare_devices_normwise(nala_fn(H, W), {bf(zero), bf(randn(s, rng, 0.8f)), bf(randn(s, rng))}, bf(randn(s, rng)),
                             kNalaOnePassBound);
    compare_devices_normwise(nala_fn(H, W), {bf(randn(s, rng, 0.5f)), bf(zero), bf(randn(s, rng))}, bf(randn(s, rng)),
                             kNalaOnePassBound);
  }
}

// The kernels themselves, both kinds of products, against the CPU's bf16 op
// on the same values: three passes (one_pass = false) element by element
// (kBf16Attn), one pass normwise (kNalaOnePassBound), and the one-pass result
// must differ from the three-pass one where the tensor-core kernels run (the
// flag reached them). d = 48 runs the first version either way.
TEST_CASE(
    "cuda: nala_attention kernels on bf16, three-pass and one-pass "
    "products, against the CPU's bf16 op",
    "[cuda][bf16][attention]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(44);
  struct Case {
    int64_t G, H, W, d;
  };
  for (Case c : {Case{6, 7, 11, 16}, Case{1, 2, 3, 32}, Case{4, 9, 13, 64}, Case{96, 5, 5, 32}, Case{1, 40, 41, 64},
                 Case{2, 56, 56, 64}, Case{3, 5, 9, 48}}) {
    const int64_t G = c.G, H = c.H, W = c.W, N = H * W, d = c.d, F = 2 * d;
    INFO("G " << G << " H " << H << " W " << W << " d " << d);
    auto draw = [&](float sd) { return cast(randn({G, N, d}, rng, sd), DType::BF16); };
    Tensor q = draw(0.5f), k = draw(0.8f), v = draw(1.0f), go = draw(1.0f);
    // The CPU's bf16 op: its float32 arithmetic on these values, each output
    // rounded once.
    Tensor o = Tensor::empty({G, N, d}, DType::BF16), S = Tensor::empty({G, F, d}), km = Tensor::empty({G, F});
    Tensor dq = Tensor::empty({G, N, d}, DType::BF16), dk = Tensor::empty({G, N, d}, DType::BF16);
    Tensor dv = Tensor::empty({G, N, d}, DType::BF16);
    cpu::nala_attention_forward(q.bf16(), k.bf16(), v.bf16(), o.bf16(), S.f32(), km.f32(), G, H, W, d, kNalaNormFloor);
    cpu::nala_attention_backward(q.bf16(), k.bf16(), v.bf16(), S.f32(), km.f32(), go.bf16(), dq.bf16(), dk.bf16(),
                                 dv.bf16(), G, H, W, d, kNalaNormFloor);
    const Tensor ref[4] = {o, dq, dk, dv};
    Tensor qg = q.to(Device::CUDA), kg = k.to(Device::CUDA), vg = v.to(Device::CUDA), gog = go.to(Device::CUDA);
    std::vector<float> got[2][4];
    for (int one = 0; one < 2; one++) {
      INFO((one ? "one-pass products" : "three-pass products"));
      auto empty = [&](const Shape& s, DType t) { return Tensor::empty(s, t, Device::CUDA); };
      Tensor og = empty({G, N, d}, DType::BF16), Sg = empty({G, F, d}, DType::F32), kmg = empty({G, F}, DType::F32);
      Tensor dqg = empty({G, N, d}, DType::BF16), dkg = empty({G, N, d}, DType::BF16),
             dvg = empty({G, N, d}, DType::BF16);
      cuda::nala_attention_forward(qg.bf16(), kg.bf16(), vg.bf16(), og.bf16(), Sg.f32(), kmg.f32(), G, H, W, d,
                                   kNalaNormFloor, one == 1);
      cuda::nala_attention_backward(qg.bf16(), kg.bf16(), vg.bf16(), Sg.f32(), kmg.f32(), gog.bf16(), dqg.bf16(),
                                    dkg.bf16(), dvg.bf16(), G, H, W, d, kNalaNormFloor, one == 1);
      const Tensor outs[4] = {host(og), host(dqg), host(dkg), host(dvg)};
      for (int i = 0; i < 4; i++) {
        INFO("output " << i << " (o, dq, dk, dv)");
        if (one)
          require_normwise(outs[i], ref[i], kNalaOnePassBound);
        else
          REQUIRE_CLOSE(outs[i], ref[i], kBf16Attn.atol, kBf16Attn.rtol);
        got[one][i] = outs[i].to_vector();
      }
    }
    bool differs = false;
    for (int i = 0; i < 4; i++) differs = differs || got[0][i] != got[1][i];
    CHECK(differs == (d == 16 || d == 32 || d == 64));
  }
#endif
}

// dwconv2d on bf16 activations, both stencil kernels: the same float32 sums of
// the same bf16 values on both devices, so the outputs and dx differ by at most
// a rounding (kBf16Attn's bf16 step); dw and dbias are float32 sums over every pixel.
// dwconv2d_gelu_add too: h = gelu(pre) is rounded to bf16 on both devices, but
// erf differs in its last bits (CUDA's erff, the CPU's vectorised one), so a
// rare h lands on the other side of a bf16 rounding: its output and taps'
// sums get an atol for one such step; pre's gradient does not use h.
TEST_CASE("cuda: dwconv2d and dwconv2d_gelu_add on bf16 activations against the CPU's bf16 ops",
          "[cuda][bf16][conv]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(45);
  struct Restore {
    ~Restore() { cuda::dwconv_force_tiled(false); }
  } restore;
  struct Case {
    int64_t B, H, W, C, k;
  };
  const std::vector<Tol> gt = {kBf16Attn, {1e-3, 1e-4}, {1e-3, 1e-4}};
  for (bool tiled : {true, false}) {
    INFO((tiled ? "tiled kernel" : "float4 kernel where it applies"));
    cuda::dwconv_force_tiled(tiled);
    // C % 4 == 0 (float4 channels, 8-byte bf16 loads) and not; odd sizes; k = 3, 5, 7, 9
    for (Case c : {Case{2, 9, 11, 64, 3}, Case{2, 9, 11, 37, 3}, Case{3, 20, 19, 72, 5}, Case{1, 14, 14, 4, 7},
                   Case{2, 6, 6, 8, 9}, Case{1, 1, 1, 6, 3}}) {
      INFO("B " << c.B << " H " << c.H << " W " << c.W << " C " << c.C << " k " << c.k);
      Tensor x = bf(randn({c.B, c.H, c.W, c.C}, rng)), w = randn({c.C, 1, c.k, c.k}, rng, 0.3f), b = randn({c.C}, rng);
      compare_devices([](const std::vector<Tensor>& in) { return dwconv2d(in[0], in[1], in[2]); }, {x, w, b}, rng,
                      kBf16Attn, {}, gt);
      compare_devices([](const std::vector<Tensor>& in) { return dwconv2d(in[0], in[1], in[2], in[0]); }, {x, w, b},
                      rng, kBf16Attn, {}, gt);
      Tensor pre = bf(randn({c.B, c.H, c.W, c.C}, rng, 1.5f));
      compare_devices([](const std::vector<Tensor>& in) { return dwconv2d_gelu_add(in[0], in[1], in[2]); },
                      {pre, w, b}, rng, Tol{2e-2, 1e-3 + 1.0 / 128}, {},
                      {kBf16Attn, {5e-2, 1e-3}, {1e-3, 1e-4}});
    }
  }
#endif
}

// The linear ops with bf16 activations. The GPU rounds float32 operands (the
// weights, the upstream gradient) to bf16 in its products, the CPU does not:
// normwise bf16 bounds. Weights and x drawn as bf16 values where they meet
// such a product, so most of the difference is that rounding of the gradient.
TEST_CASE("cuda: linear_gelu to bf16 and the linear ops on a bf16 x, against the CPU", "[cuda][bf16][matmul]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(46);
  const NormBound bound{1e-2, 3e-2};
  struct Case {
    int64_t R, I, O;
  };
  // 16-byte rows (the wgmma path where both operands are bf16) and odd ones;
  // R = 3000 splits the weight gradient's product over K.
  for (Case c : {Case{126, 40, 24}, Case{77, 37, 19}, Case{3000, 64, 32}}) {
    INFO("R " << c.R << " I " << c.I << " O " << c.O);
    Tensor x = round_bf16(randn({c.R, c.I}, rng)), w = round_bf16(randn({c.O, c.I}, rng, 0.3f)), b = randn({c.O}, rng);
    compare_devices_normwise(
        [](const std::vector<Tensor>& in) { return linear_gelu(in[0], in[1], in[2], DType::BF16); }, {x, w, b}, rng,
        bound);
    compare_devices_normwise([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                             {bf(x), w, b}, rng, bound);
    Tensor res = randn({c.R, c.O}, rng), gamma = randn({c.O}, rng);
    std::vector<float> mv(c.R, 1.25f);  // a drop-path mask, one sample a row: a third of them dropped
    for (int64_t i = 0; i < c.R; i += 3) mv[i] = 0.0f;
    Tensor mask = Tensor::from_vector({c.R}, mv);
    compare_devices_normwise(
        [](const std::vector<Tensor>& in) {
          return linear_scale_add(in[3], in[0], in[1], in[2], in[4], in[5].defined() ? in[5].detach() : Tensor());
        },
        {bf(x), w, b, res, gamma, mask}, rng, bound, {true, true, true, true, true, false});
  }
#endif
}

namespace {
// Restores NalaAttention::qkvg_one_product_bytes (which a test sets to pick
// the layer's qkvg path) when the test leaves.
struct KeepOneProductBytes {
  int64_t saved = NalaAttention::qkvg_one_product_bytes;
  ~KeepOneProductBytes() { NalaAttention::qkvg_one_product_bytes = saved; }
};
// A module on the CPU and a copy on the GPU with the same random weights.
template <class M>
void same_random_weights(M& cpu, M& gpu, Rng& rng) {
  for (auto& [name, p] : cpu.named_parameters()) p.copy_(randn(p.shape(), rng, 0.3f));
  std::map<std::string, Tensor> sd;
  for (auto& [name, t] : cpu.state_dict()) sd[name] = t;
  gpu.load_state_dict(sd);
  gpu.to(Device::CUDA);
}
// forward(x) on the CPU in float32 and on the GPU in bf16 mode, backward from
// the same g: the outputs and every gradient within bf16 bounds. check(y) sees
// the GPU's output (its graph) while bf16 mode is on.
template <class M, class F, class C>
void cpu_f32_vs_gpu_bf16(M& cpu, M& gpu, const Tensor& x, F forward, C check, NormBound bound) {
  Rng rng(48);
  Tensor g = randn(x.shape(), rng);
  Tensor xc = x.clone(), xg = x.to(Device::CUDA);
  xc.set_requires_grad(true), xg.set_requires_grad(true);
  Tensor yc = forward(cpu, xc);
  backward(yc, g);
  {
    Bf16Products on;
    Tensor yg = forward(gpu, xg);
    REQUIRE(yg.dtype() == DType::F32);
    check(yg);
    backward(yg, g.to(Device::CUDA));
    INFO("output");
    require_normwise(host(yg.detach()), yc.detach(), bound);
  }
  {
    INFO("gradient of x");
    require_normwise(host(xg.grad()), xc.grad(), bound);
  }
  auto pc = cpu.named_parameters(), pg = gpu.named_parameters();
  for (size_t i = 0; i < pc.size(); i++) {
    INFO("gradient of " << pc[i].first);
    require_normwise(host(pg[i].second.grad()), pc[i].second.grad(), bound);
  }
}
}  // namespace

// In bf16 mode the FFN stores its hidden activations in bf16 (fc1's result
// and h + dwconv(h) are bf16 tensors; h itself is a temporary): the same values as the CPU's float32
// FFN within bf16 bounds, forward and every gradient.
TEST_CASE("cuda: in bf16 mode the FFN's hidden activations are bf16, its results the float32 FFN's",
          "[cuda][bf16][model]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(47);
  NalaFFN cpu(16, 64), gpu(16, 64);
  same_random_weights(cpu, gpu, rng);
  cpu_f32_vs_gpu_bf16(
      cpu, gpu, randn({2, 5, 7, 16}, rng), [](NalaFFN& m, const Tensor& x) { return m.forward(x); },
      [](const Tensor& y) {
        REQUIRE(y.grad_fn());
        REQUIRE(y.grad_fn()->op == OpId::linear);                // fc2
        REQUIRE(y.grad_fn()->inputs[0].dtype() == DType::BF16);  // h + dwconv(h)
        // gelu and the depthwise conv are one op: fc1's bf16 result is the one hidden tensor saved before fc2's input
        const std::vector<OpId> ops = graph_ops(y);
        REQUIRE(std::count(ops.begin(), ops.end(), OpId::dwconv2d_gelu_add) == 1);
        REQUIRE(std::count(ops.begin(), ops.end(), OpId::linear_gelu) == 0);
      },
      {1e-2, 3e-2});
}

// In bf16 mode a NaLa layer whose qkvg takes four products runs them on one
// bf16 copy of its input (four bf16 gradients added), on bf16 q, k, v (one
// head: v is LePE's input and the attention's, two bf16 gradients added; two
// heads: bf16 copies by head) and g; its LayerNorm gate reads o + lepe(v)
// and g in bf16 and stores out_proj's input in bf16: against the CPU's
// float32 layer within bf16 bounds.
TEST_CASE("cuda: in bf16 mode a NaLa layer's q, k, v are bf16, its results the float32 layer's",
          "[cuda][bf16][model]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(49);
  KeepOneProductBytes restore;
  NalaAttention::qkvg_one_product_bytes = 0;  // four products
  for (int64_t heads : {1, 2}) {
    INFO("heads " << heads);
    const int64_t C = 32 * heads, H = 5, W = 7;
    NalaAttention cpu(C, heads, AttnKind::nala), gpu(C, heads, AttnKind::nala);
    same_random_weights(cpu, gpu, rng);
    cpu_f32_vs_gpu_bf16(
        cpu, gpu, randn({2, H, W, C}, rng),
        [&](NalaAttention& m, const Tensor& x) { return m.forward_hw(x, H, W); },
        [](const Tensor& y) {
          const std::vector<OpId> ops = graph_ops(y);
          // the products' input to bf16, and no other cast
          REQUIRE(std::count(ops.begin(), ops.end(), OpId::cast) == 1);
          REQUIRE(std::count(ops.begin(), ops.end(), OpId::layernorm_gate) == 1);
        },
        {2e-2, 5e-2});
  }
}

// A NalaBlock in bf16 mode: its LayerNorms store bf16 results (the products'
// inputs), the gate reads and writes bf16, the last products store their
// result y in bf16 for the residual add: no cast op anywhere in the block,
// against the CPU's float32 block within bf16 bounds.
TEST_CASE("cuda: in bf16 mode a NalaBlock runs without casts, its results the float32 block's",
          "[cuda][bf16][model]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(51);
  KeepOneProductBytes restore;
  for (int64_t one_product : {int64_t(0), int64_t(1) << 30}) {  // four products, one product
    INFO("qkvg_one_product_bytes " << one_product);
    NalaAttention::qkvg_one_product_bytes = one_product;
    const int64_t C = 32, H = 5, W = 7;
    Rng r1(1), r2(1);
    NalaBlock cpu(C, 1, 2.0f, 0.5f, 0.0f, AttnKind::nala, &r1), gpu(C, 1, 2.0f, 0.5f, 0.0f, AttnKind::nala, &r2);
    same_random_weights(cpu, gpu, rng);
    cpu_f32_vs_gpu_bf16(
        cpu, gpu, randn({2, H, W, C}, rng), [](NalaBlock& m, const Tensor& x) { return m.forward(x); },
        [one_product](const Tensor& y) {
          const std::vector<OpId> ops = graph_ops(y);
          REQUIRE(std::count(ops.begin(), ops.end(), OpId::cast) == 0);
          REQUIRE(std::count(ops.begin(), ops.end(), OpId::layernorm) == 2);
          REQUIRE(y.grad_fn()->op == OpId::linear_scale_add);       // fc2, LayerScale, the residual
          REQUIRE(y.grad_fn()->inputs[1].dtype() == DType::BF16);  // h + dwconv(h)
          (void)one_product;
        },
        {2e-2, 5e-2});
  }
}

// layernorm with a bf16 result and layernorm_gate on bf16 (or float32) inputs
// to a bf16 (or float32) result, against the CPU: C % 4 == 0 up to 512 takes
// the row kernels both ways (8, 16, 32 lanes a row, up to four float4s a
// lane), C = 102 and a misaligned input the float32 path, C = 768 the row
// kernel forward and the float32 backward.
TEST_CASE("cuda: layernorm to bf16 and layernorm_gate on bf16, against the CPU", "[cuda][bf16][norm]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(52);
  const NormBound bound{1e-2, 2e-2};
  for (int64_t C : {32, 64, 96, 256, 512, 102, 768}) {
    INFO("C " << C);
    const int64_t R = C > 512 ? 45 : 301;
    Tensor x = randn({R, C}, rng, 2.0f), g = randn({R, C}, rng, 2.0f), w = randn({C}, rng), b = randn({C}, rng);
    compare_devices_normwise(
        [](const std::vector<Tensor>& in) { return layernorm(in[0], in[1], in[2], 1e-6f, -1, DType::BF16); },
        {x, w, b}, rng, bound);
    for (DType od : {DType::F32, DType::BF16}) {
      INFO("result " << dtype_name(od));
      const OpFn gate = [od](const std::vector<Tensor>& in) {
        return layernorm_gate(in[0], in[1], in[2], in[3], 1e-6f, od);
      };
      compare_devices_normwise(gate, {bf(x), bf(g), w, b}, rng, bound);
      compare_devices_normwise(gate, {x, g, w, b}, rng, bound);
      compare_devices_normwise(gate, {bf(x), bf(g), Tensor(), Tensor()}, rng, bound);
    }
  }
  // x one element past an aligned start: the float32 path (on CUDA, y kept for backward)
  const Tensor flat = cast(randn({1 + 40 * 64}, rng), DType::BF16);
  Tensor g = randn({40, 64}, rng), w = randn({64}, rng), b = randn({64}, rng);
  const OpFn off = [&flat](const std::vector<Tensor>& in) {
    Tensor xv = reshape(narrow(flat.to(in[0].device()), 0, 1, 40 * 64), {40, 64});
    return layernorm_gate(xv, cast(in[0], DType::BF16), in[1], in[2], 1e-6f, DType::BF16);
  };
  compare_devices_normwise(off, {g, w, b}, rng, bound);
}
