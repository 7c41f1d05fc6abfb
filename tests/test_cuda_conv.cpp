// tests/test_cuda_conv.cpp - conv2d and dwconv2d on the GPU against the CPU:
// forward outputs and every gradient through the ops, the kernels called
// directly with some gradients not wanted, and run-to-run determinism.
// Shape letters: B batch, H W input size, Ci Co channels, C depthwise channels, k kernel.
#include <array>
#include <cmath>
#include <vector>

#include "kernels/cpu/conv.h"
#include "tests/cuda_harness.h"
#ifdef NALA_CUDA
#include "kernels/cuda/conv.h"
#include "kernels/cuda/gemm_bf16.h"
#endif

using namespace nala;
using namespace nala::test;

namespace {

struct ConvCase {
  int64_t B, H, W, Ci, Co, k, stride, pad;
  bool bias;
};

std::ostream& operator<<(std::ostream& os, const ConvCase& c) {
  return os << "B " << c.B << " H " << c.H << " W " << c.W << " Ci " << c.Ci << " Co " << c.Co << " k " << c.k
            << " stride " << c.stride << " pad " << c.pad << " bias " << c.bias;
}

// conv2d through the ops on CPU and CUDA: forward and all three gradients
// (x, w and the bias when there is one).
[[maybe_unused]] void check_conv_op(const ConvCase& c, Rng& rng, double atol, double rtol) {
  INFO(c);
  Tensor x = randn({c.B, c.H, c.W, c.Ci}, rng), w = randn({c.Co, c.Ci, c.k, c.k}, rng, 0.3f);
  Tensor b = c.bias ? randn({c.Co}, rng) : Tensor();
  auto f = [&c](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], (int)c.stride, (int)c.pad); };
  compare_devices(f, {x, w, b}, rng, {atol, rtol});
}

// dwconv2d likewise; dw and dbias sum over every pixel, hence their atol.
void check_dwconv_op(int64_t B, int64_t H, int64_t W, int64_t C, int64_t k, bool bias, Rng& rng) {
  INFO("dwconv2d B " << B << " H " << H << " W " << W << " C " << C << " k " << k << " bias " << bias);
  Tensor x = randn({B, H, W, C}, rng), w = randn({C, 1, k, k}, rng, 0.3f);
  Tensor b = bias ? randn({C}, rng) : Tensor();
  compare_devices([](const std::vector<Tensor>& in) { return dwconv2d(in[0], in[1], in[2]); }, {x, w, b}, rng,
                  {1e-4, 1e-4}, {}, {{1e-4, 1e-4}, {1e-3, 1e-4}, {1e-3, 1e-4}});
}

// The FFN's gelu + depthwise op (gelu's derivative in the store of the
// stencil that makes dh) likewise, with every gradient and with the taps'
// alone, no bias.
void check_gelu_dwconv_op(int64_t B, int64_t H, int64_t W, int64_t C, int64_t k, Rng& rng) {
  INFO("dwconv2d_gelu_add B " << B << " H " << H << " W " << W << " C " << C << " k " << k);
  auto f = [](const std::vector<Tensor>& in) { return dwconv2d_gelu_add(in[0], in[1], in[2]); };
  Tensor pre = randn({B, H, W, C}, rng, 1.5f), w = randn({C, 1, k, k}, rng, 0.3f), b = randn({C}, rng);
  compare_devices(f, {pre, w, b}, rng, {1e-4, 1e-4}, {}, {{1e-4, 1e-4}, {1e-3, 1e-4}, {1e-3, 1e-4}});
  compare_devices(f, {pre, w, Tensor()}, rng, {1e-4, 1e-4}, {false, true, false});
}

}  // namespace

TEST_CASE("cuda: conv2d forward and gradients match the CPU", "[cuda][conv]") {
  SKIP_WITHOUT_CUDA();
  const std::vector<ConvCase> cases = {
      {3, 9, 7, 5, 6, 3, 1, 1, true},  {3, 9, 7, 5, 6, 3, 2, 1, true},  {3, 9, 7, 5, 6, 1, 1, 0, true},
      {3, 9, 7, 5, 6, 1, 2, 0, false}, {3, 9, 7, 5, 6, 3, 1, 1, false}, {3, 9, 7, 5, 6, 3, 2, 0, true},
      {2, 8, 11, 3, 17, 5, 2, 2, true}, {1, 6, 6, 4, 4, 5, 1, 2, true},  {2, 5, 7, 3, 4, 3, 3, 2, false},
      {2, 13, 10, 37, 33, 3, 1, 1, true},  // K = 333 and Co = 33: not multiples of any tile
      {2, 30, 30, 1, 8, 3, 2, 1, true},    // Ci = 1 (a stem): 910 rows of cols per shared tile
      {1, 5, 4, 911, 3, 3, 2, 1, true},    // K = 8199: rows too long for im2col's shared tile
      {2, 0, 5, 3, 4, 1, 1, 1, true},      // H = 0: the padding alone gives 2 x 7 outputs (the bias)
      {2, 5, 4, 0, 3, 3, 1, 1, true},      // Ci = 0: no columns, the output is the bias
  };
  Rng rng(101);
#ifdef NALA_CUDA
  for (bool unfold : {false, true}) {  // the implicit GEMM (FP32 kernel), and im2col into memory
    INFO("im2col " << unfold);
    cuda::conv2d_force_unfold(unfold);
    for (const ConvCase& c : cases) check_conv_op(c, rng, 1e-4, 1e-4);
  }
  cuda::conv2d_force_unfold(false);
  // The stem's shapes: Ci = 1, then 16 channels (the 4-channel vector gather; the 256 x 16 and
  // 16 x 256 tiles), stride 2 and 1.
  for (const ConvCase& c : {ConvCase{8, 28, 28, 1, 16, 3, 2, 1, true}, ConvCase{8, 14, 14, 16, 16, 3, 1, 1, true},
                            ConvCase{4, 14, 14, 16, 32, 3, 2, 1, true}, ConvCase{2, 9, 9, 12, 8, 5, 1, 2, false}})
    check_conv_op(c, rng, 1e-4, 1e-4);
#endif
}

TEST_CASE("cuda: conv2d over several im2col chunks", "[cuda][conv]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  // cols of one image: 64*64 x 128*9 = 4.7M floats; the 16M-float budget takes 3 images per chunk.
  Rng rng(102);
  cuda::conv2d_force_unfold(true);
  check_conv_op({4, 64, 64, 128, 16, 3, 1, 1, true}, rng, 1e-3, 1e-3);
  cuda::conv2d_force_unfold(false);
  check_conv_op({4, 64, 64, 128, 16, 3, 1, 1, true}, rng, 1e-3, 1e-3);  // and the same as an implicit GEMM
#endif
}

TEST_CASE("cuda: conv2d kernels with some gradients not wanted, deterministic", "[cuda][conv]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(103);
  for (int unfold = 0; unfold < 2; unfold++)
  for (const ConvCase& c : {ConvCase{3, 9, 7, 5, 6, 3, 2, 1, true}, ConvCase{3, 9, 7, 5, 6, 1, 1, 0, true},
                            ConvCase{3, 9, 7, 8, 6, 3, 1, 1, true}}) {
    INFO(c << " im2col " << unfold);
    cuda::conv2d_force_unfold(unfold == 1);
    const int64_t Ho = (c.H + 2 * c.pad - c.k) / c.stride + 1, Wo = (c.W + 2 * c.pad - c.k) / c.stride + 1;
    Tensor x = randn({c.B, c.H, c.W, c.Ci}, rng), w = randn({c.Co, c.Ci, c.k, c.k}, rng, 0.3f);
    Tensor g = randn({c.B, Ho, Wo, c.Co}, rng);
    Tensor dx = Tensor::empty(x.shape()), dw = Tensor::empty(w.shape()), db = Tensor::empty({c.Co});
    cpu::conv2d_backward(dx.f32(), dw.f32(), db.f32(), g.f32(), x.f32(), w.f32(), c.B, c.H, c.W, c.Ci, c.Co, c.k,
                         c.stride, c.pad);
    Tensor xc = x.to(Device::CUDA), wc = w.to(Device::CUDA), gc = g.to(Device::CUDA);
    for (int want = 1; want < 8; want++) {  // bit 0: dx, bit 1: dw, bit 2: dbias
      INFO("want dx " << (want & 1) << " dw " << (want >> 1 & 1) << " dbias " << (want >> 2 & 1));
      Tensor dxc = cuda_sentinel(x.shape()), dwc = cuda_sentinel(w.shape()), dbc = cuda_sentinel({c.Co});
      cuda::conv2d_backward(want & 1 ? dxc.f32() : nullptr, want & 2 ? dwc.f32() : nullptr,
                            want & 4 ? dbc.f32() : nullptr, gc.f32(), xc.f32(), wc.f32(), c.B, c.H, c.W, c.Ci, c.Co,
                            c.k, c.stride, c.pad);
      if (want & 1) REQUIRE_CLOSE(host(dxc), dx, 1e-4, 1e-4);
      else REQUIRE(holds_sentinel(dxc));
      if (want & 2) REQUIRE_CLOSE(host(dwc), dw, 1e-4, 1e-4);
      if (want & 4) REQUIRE_CLOSE(host(dbc), db, 1e-4, 1e-4);
    }
    // Two runs give the same bits.
    Tensor d1[3], d2[3];
    for (Tensor* d : {d1, d2}) {
      d[0] = cuda_empty(x.shape());
      d[1] = cuda_empty(w.shape());
      d[2] = cuda_empty({c.Co});
      cuda::conv2d_backward(d[0].f32(), d[1].f32(), d[2].f32(), gc.f32(), xc.f32(), wc.f32(), c.B, c.H, c.W, c.Ci,
                            c.Co, c.k, c.stride, c.pad);
    }
    for (int i = 0; i < 3; i++) REQUIRE(d1[i].to_vector() == d2[i].to_vector());
    cuda::conv2d_force_unfold(false);
  }
#endif
}

TEST_CASE("cuda: dwconv2d forward and gradients match the CPU", "[cuda][conv]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(104);
  // k 3/5/7: the register-row tiles; 9: generic tile of 8 rows; 11: tile of 4 rows; 13: the direct kernel.
  for (int64_t k : {3, 5, 7, 9, 11, 13})
    for (bool bias : {true, false}) check_dwconv_op(2, 9, 11, 37, k, bias, rng);
  check_dwconv_op(3, 20, 19, 70, 3, true, rng);  // several row and column tiles, 3 channel blocks
  check_dwconv_op(2, 17, 30, 64, 7, true, rng);
  check_dwconv_op(1, 1, 1, 5, 3, true, rng);      // a single pixel: every tap but the centre is padding
  check_dwconv_op(40, 420, 3, 5, 3, true, rng);   // 16,800 rows: more than the 2048 row blocks of 8 (dw partials)
  // 10,240 strips of 4 pixels: more than one wave of the one-pass backward's blocks holds on an H200
  // (132 multiprocessors x 2 blocks of 16 or 32 strips), so its threads walk several strips each
  check_dwconv_op(2, 128, 160, 64, 3, true, rng);
  check_dwconv_op(2, 128, 160, 32, 5, false, rng);
  // with an addend (add + dwconv(x)) and the residual x + dwconv(x)
  Tensor x = randn({2, 9, 11, 37}, rng), w = randn({37, 1, 5, 5}, rng, 0.3f), b = randn({37}, rng);
  Tensor a = randn(x.shape(), rng);
  compare_devices([](const std::vector<Tensor>& in) { return dwconv2d(in[0], in[1], in[2], in[3]); }, {x, w, b, a},
                  rng, {1e-4, 1e-4}, {}, {{1e-4, 1e-4}, {1e-3, 1e-4}, {1e-3, 1e-4}, {1e-4, 1e-4}});
  compare_devices([](const std::vector<Tensor>& in) { return dwconv2d(in[0], in[1], in[2], in[0]); }, {x, w, b}, rng,
                  {1e-4, 1e-4}, {}, {{1e-4, 1e-4}, {1e-3, 1e-4}, {1e-3, 1e-4}});
}

TEST_CASE("cuda: dwconv2d's and dwconv2d_gelu_add's stencil kernels (tiled, float4 channels) against the CPU",
          "[cuda][conv]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(105);
  struct Restore {
    ~Restore() { cuda::dwconv_force_tiled(false); }
  } restore;
  for (bool tiled : {true, false}) {
    INFO((tiled ? "tiled kernel" : "float4 kernel where it applies"));
    cuda::dwconv_force_tiled(tiled);
    // pico's images (14, 7 and 4 pixels a side; 32 to 384 channels), C = 4, a
    // C past one block of 32 float4s, k = 3, 5, 7, a 9 (tiled only) and C = 6 (not float4)
    for (int64_t k : {3, 5, 7}) check_dwconv_op(2, 14, 14, 32, k, true, rng);
    check_dwconv_op(3, 7, 7, 96, 3, false, rng);
    check_dwconv_op(2, 4, 4, 384, 5, true, rng);
    check_dwconv_op(2, 5, 3, 4, 3, true, rng);
    check_dwconv_op(1, 9, 20, 136, 7, true, rng);
    check_dwconv_op(2, 6, 6, 6, 3, true, rng);
    check_dwconv_op(2, 6, 6, 8, 9, true, rng);
    Tensor x = randn({3, 7, 7, 64}, rng), w = randn({64, 1, 3, 3}, rng, 0.3f), b = randn({64}, rng);
    compare_devices([](const std::vector<Tensor>& in) { return dwconv2d(in[0], in[1], in[2], in[0]); }, {x, w, b}, rng,
                    {1e-4, 1e-4}, {}, {{1e-4, 1e-4}, {1e-3, 1e-4}, {1e-3, 1e-4}});
    // gelu + depthwise: float4 channels, tiled (forced, and C % 4 != 0), the
    // generic tile (k = 9), the direct kernel (k = 13), one pixel
    for (auto [B, H, W, C, k] : std::vector<std::array<int64_t, 5>>{
             {2, 14, 14, 64, 3}, {2, 9, 11, 37, 3}, {3, 7, 7, 96, 5}, {1, 9, 20, 136, 7}, {2, 6, 6, 8, 9},
             {2, 5, 4, 6, 13}, {1, 1, 1, 4, 3}})
      check_gelu_dwconv_op(B, H, W, C, k, rng);
  }
#endif
}

// conv2d_affine on the GPU: in bf16 mode the direct 3x3 kernels with the map
// and GELU in their store (the stem's and xt's first merge's shapes), against
// the CPU's three passes on rounded operands; elsewhere (float32, a conv the
// direct kernels do not take) the three passes on the GPU.
TEST_CASE("cuda: conv2d_affine (convolution, eval BatchNorm, GELU in one store) against the CPU", "[cuda][conv][bf16]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(108);
  for (const ConvCase& c : {ConvCase{2, 17, 23, 3, 16, 3, 2, 1, true}, ConvCase{2, 13, 21, 32, 32, 3, 1, 1, true},
                            ConvCase{1, 9, 11, 1, 16, 3, 2, 1, false}, ConvCase{2, 14, 14, 32, 64, 3, 2, 1, true},
                            ConvCase{2, 11, 13, 16, 32, 3, 1, 1, true}, ConvCase{2, 8, 9, 64, 128, 3, 2, 1, true},
                            ConvCase{1, 7, 9, 5, 7, 2, 2, 0, true}})
    for (bool bf16 : {true, false})
      for (bool act : {true, false}) {
        INFO(c << " bf16 " << bf16 << " gelu " << act);
        Tensor x = randn({c.B, c.H, c.W, c.Ci}, rng), w = randn({c.Co, c.Ci, c.k, c.k}, rng, 0.3f);
        Tensor b = c.bias ? randn({c.Co}, rng) : Tensor(), scale = randn({c.Co}, rng), shift = randn({c.Co}, rng);
        // the CPU on the operands as the GPU's products see them
        Tensor ref = conv2d_affine(bf16 ? round_bf16(x) : x, bf16 ? round_bf16(w) : w, b, scale, shift, act,
                                   (int)c.stride, (int)c.pad);
        Tensor got;
        {
          Bf16Products products(bf16);
          got = conv2d_affine(x.to(Device::CUDA), w.to(Device::CUDA), c.bias ? b.to(Device::CUDA) : Tensor(),
                              scale.to(Device::CUDA), shift.to(Device::CUDA), act, (int)c.stride, (int)c.pad);
        }
        const double atol = (bf16 ? 1e-4 : 1e-5) * std::sqrt((double)(c.Ci * c.k * c.k)) * 4;
        REQUIRE_CLOSE(host(got), ref, atol, 1e-4);
      }
#endif
}

TEST_CASE("cuda: dwconv2d kernels with some gradients not wanted, deterministic", "[cuda][conv]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(105);
  const int64_t B = 2, H = 9, W = 11;
  // C = 37: the stencil and a second pass for the taps; C = 64 with k = 3, 5: one pass for all three
  // (dw_backward_fused: C a multiple of 4)
  for (int64_t C : {37, 64}) {
    for (int64_t k : {3, 5, 13}) {
      INFO("B " << B << " H " << H << " W " << W << " C " << C << " k " << k);
      Tensor x = randn({B, H, W, C}, rng), w = randn({C, 1, k, k}, rng, 0.3f), g = randn({B, H, W, C}, rng);
      Tensor dx = Tensor::empty(x.shape()), dw = Tensor::empty(w.shape()), db = Tensor::empty({C});
      cpu::dwconv2d_backward(dx.f32(), dw.f32(), db.f32(), g.f32(), x.f32(), w.f32(), B, H, W, C, k);
      Tensor xc = x.to(Device::CUDA), wc = w.to(Device::CUDA), gc = g.to(Device::CUDA);
      for (int want = 1; want < 8; want++) {
        INFO("want dx " << (want & 1) << " dw " << (want >> 1 & 1) << " dbias " << (want >> 2 & 1));
        Tensor dxc = cuda_sentinel(x.shape()), dwc = cuda_sentinel(w.shape()), dbc = cuda_sentinel({C});
        cuda::dwconv2d_backward(want & 1 ? dxc.f32() : nullptr, want & 2 ? dwc.f32() : nullptr,
                                want & 4 ? dbc.f32() : nullptr, gc.f32(), xc.f32(), wc.f32(), B, H, W, C, k);
        if (want & 1) REQUIRE_CLOSE(host(dxc), dx, 1e-4, 1e-4);
        if (want & 2) REQUIRE_CLOSE(host(dwc), dw, 1e-3, 1e-4);
        else REQUIRE(holds_sentinel(dwc));
        if (want & 4) REQUIRE_CLOSE(host(dbc), db, 1e-3, 1e-4);
        else REQUIRE(holds_sentinel(dbc));
      }
      Tensor d1[3], d2[3];
      for (Tensor* d : {d1, d2}) {
        d[0] = cuda_empty(x.shape());
        d[1] = cuda_empty(w.shape());
        d[2] = cuda_empty({C});
        cuda::dwconv2d_backward(d[0].f32(), d[1].f32(), d[2].f32(), gc.f32(), xc.f32(), wc.f32(), B, H, W, C, k);
      }
      for (int i = 0; i < 3; i++) REQUIRE(d1[i].to_vector() == d2[i].to_vector());
    }
  }
#endif
}

// On the GPU too the FFN's fused op is its two ops in float32 bit for bit,
// gradients included: pre's and the taps' gradients leave one pass that
// makes h = gelu(pre) itself (C % 4 == 0, k = 3 or 5), the same sums in the same
// order as dwconv2d's one-pass backward over the h the gelu op stored; odd C
// and k = 7 take the stencil and a second pass, with h made by a kernel of
// its own.
TEST_CASE("cuda: dwconv2d_gelu_add equals gelu, then h + dwconv(h), bit for bit in float32", "[cuda][conv]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(109);
  const int64_t geoms[][5] = {{3, 2, 9, 7, 64}, {5, 1, 7, 13, 32}, {3, 2, 9, 7, 67}, {7, 1, 7, 13, 32},
                              {3, 2, 128, 160, 64}};
  for (auto& gm : geoms) {
    const int64_t k = gm[0], B = gm[1], H = gm[2], W = gm[3], C = gm[4];
    INFO("k " << k << " B " << B << " H " << H << " W " << W << " C " << C);
    Tensor pre = randn({B, H, W, C}, rng, 1.5f), w = randn({C, 1, k, k}, rng, 0.3f), b = randn({C}, rng);
    Tensor up = randn(pre.shape(), rng).to(Device::CUDA);
    auto run = [&](bool fused) {
      std::vector<Tensor> in = {pre.to(Device::CUDA), w.to(Device::CUDA), b.to(Device::CUDA)};
      for (Tensor& t : in) t.set_requires_grad(true);
      Tensor h = fused ? Tensor() : gelu(in[0]);
      Tensor y = fused ? dwconv2d_gelu_add(in[0], in[1], in[2]) : dwconv2d(h, in[1], in[2], h);
      backward(y, up);
      std::vector<Tensor> r = {host(y.detach())};
      for (Tensor& t : in) r.push_back(host(t.grad()));
      return r;
    };
    const std::vector<Tensor> a = run(true), e = run(false);
    for (size_t i = 0; i < a.size(); i++) {
      INFO("result " << i << " (output, then the gradients of pre, w, bias)");
      REQUIRE(a[i].to_vector() == e[i].to_vector());
    }
  }
}

TEST_CASE("cuda: conv2d with bf16 products: implicit GEMM and direct 3x3 kernels, forward, dw, dx, against the CPU on rounded operands",
          "[cuda][conv][bf16]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(107);
  // The stem (1 and 3 channels, stride 2), patch merging (stride 2 over many channels),
  // odd sizes, a kernel of 2 without padding, a padded 1x1 (not the direct case), rows past
  // split-K's threshold for dw, and a kernel wider than the image. Stride 1 with padding at
  // most k - 1 takes dx as an implicit GEMM over dout (padding 1 and 0 at k = 3, 2 at k = 5;
  // 16 channels: the vector gather), the others dcols and col2im. 3 x 3 padding-1
  // convolutions take the direct tensor-core kernels (conv3x3_tc.cuh) for forward and dw (and
  // dx at stride 1) where compiled: stride 1 C to C (16, 32, 48, 64), 16 to 32 and 32 to 16;
  // stride 2 from 1 or 3 channels (read as 16) to 16, 32 or 48, 16 to 32, 32 to 64: tiles cut by
  // the image's edges, an image smaller than a tile, an exact tile, and more tiles than the
  // persistent grid has blocks (8 x 112 x 112).
  for (const ConvCase& c : {ConvCase{2, 13, 21, 32, 32, 3, 1, 1, true}, ConvCase{1, 17, 35, 48, 48, 3, 1, 1, true},
                            ConvCase{2, 8, 16, 64, 64, 3, 1, 1, false}, ConvCase{3, 5, 3, 16, 16, 3, 1, 1, true},
                            ConvCase{8, 112, 112, 16, 16, 3, 1, 1, true}, ConvCase{2, 11, 13, 16, 32, 3, 1, 1, true},
                            ConvCase{2, 11, 13, 32, 16, 3, 1, 1, true}, ConvCase{2, 17, 23, 16, 32, 3, 2, 1, true},
                            ConvCase{1, 9, 11, 1, 16, 3, 2, 1, true}, ConvCase{2, 12, 10, 3, 48, 3, 2, 1, false},
                            ConvCase{4, 64, 66, 3, 32, 3, 2, 1, true},
                            ConvCase{2, 15, 17, 3, 16, 3, 2, 1, true}, ConvCase{2, 9, 8, 1, 8, 3, 2, 1, false},
                            ConvCase{2, 14, 14, 32, 64, 3, 2, 1, true}, ConvCase{1, 7, 9, 5, 7, 2, 2, 0, true},
                            ConvCase{3, 6, 6, 8, 12, 3, 1, 1, false}, ConvCase{1, 4, 5, 2, 3, 1, 1, 1, true},
                            ConvCase{4, 40, 40, 3, 16, 3, 1, 1, true}, ConvCase{2, 3, 2, 4, 5, 5, 1, 2, true},
                            ConvCase{2, 7, 6, 4, 6, 3, 1, 0, true}, ConvCase{1, 9, 7, 16, 16, 3, 1, 1, false}}) {
    INFO(c);
    const int64_t Ho = (c.H + 2 * c.pad - c.k) / c.stride + 1, Wo = (c.W + 2 * c.pad - c.k) / c.stride + 1;
    Tensor x = randn({c.B, c.H, c.W, c.Ci}, rng), w = randn({c.Co, c.Ci, c.k, c.k}, rng, 0.3f);
    Tensor b = randn({c.Co}, rng), g = randn({c.B, Ho, Wo, c.Co}, rng);
    Tensor xr = round_bf16(x), wr = round_bf16(w), gr = round_bf16(g);
    // CPU references on the rounded operands: the products are exact in float, only the order of the sums differs.
    Tensor out = Tensor::empty({c.B, Ho, Wo, c.Co}), dx = Tensor::empty(x.shape()), dw = Tensor::empty(w.shape());
    cpu::conv2d_forward(out.f32(), xr.f32(), wr.f32(), c.bias ? b.f32() : nullptr, c.B, c.H, c.W, c.Ci, c.Co, c.k,
                        c.stride, c.pad);
    cpu::conv2d_backward(dx.f32(), nullptr, nullptr, gr.f32(), xr.f32(), wr.f32(), c.B, c.H, c.W, c.Ci, c.Co, c.k,
                         c.stride, c.pad);
    cpu::conv2d_backward(nullptr, dw.f32(), nullptr, gr.f32(), xr.f32(), wr.f32(), c.B, c.H, c.W, c.Ci, c.Co, c.k,
                         c.stride, c.pad);
    Tensor xc = x.to(Device::CUDA), wc = w.to(Device::CUDA), bc = b.to(Device::CUDA), gc = g.to(Device::CUDA);
    const double atol = 1e-4 * std::sqrt((double)(c.Ci * c.k * c.k + c.B * Ho * Wo)), rtol = 1e-4;
    // the implicit GEMMs called directly: their weights in (Co, k, k, Ci) order
    auto taps_last = [&](const Tensor& t) {  // (Co, Ci, k, k) -> (Co, k, k, Ci)
      return view::contiguous(view::permute(t, {0, 2, 3, 1}));
    };
    Tensor o1 = cuda_sentinel(out.shape()), w1 = cuda_sentinel({c.Co, c.k, c.k, c.Ci});
    Tensor wpc = taps_last(w).to(Device::CUDA);
    cuda::conv_bf16_f32_forward(o1.f32(), xc.f32(), wpc.f32(), c.bias ? bc.f32() : nullptr, c.B, c.H, c.W, c.Ci, c.Co,
                                c.k, c.stride, c.pad);
    cuda::conv_bf16_f32_dw(w1.f32(), gc.f32(), xc.f32(), c.B, c.H, c.W, c.Ci, c.Co, c.k, c.stride, c.pad);
    REQUIRE_CLOSE(host(o1), out, atol, rtol);
    REQUIRE_CLOSE(host(w1), taps_last(dw), atol, rtol);
    // and through conv2d in bf16 mode, dx included (an implicit GEMM at stride 1, else a bf16
    // GEMM and col2im), and dx alone
    Tensor o2 = cuda_sentinel(out.shape()), dx2 = cuda_sentinel(x.shape()), dw2 = cuda_sentinel(w.shape());
    {
      Bf16Products bf16;
      cuda::conv2d_forward(o2.f32(), xc.f32(), wc.f32(), c.bias ? bc.f32() : nullptr, c.B, c.H, c.W, c.Ci, c.Co, c.k,
                           c.stride, c.pad);
      cuda::conv2d_backward(dx2.f32(), dw2.f32(), nullptr, gc.f32(), xc.f32(), wc.f32(), c.B, c.H, c.W, c.Ci, c.Co,
                            c.k, c.stride, c.pad);
    }
    REQUIRE_CLOSE(host(o2), out, atol, rtol);
    REQUIRE_CLOSE(host(dx2), dx, atol, rtol);
    REQUIRE_CLOSE(host(dw2), dw, atol, rtol);
    Tensor dx3 = cuda_sentinel(x.shape());
    {
      Bf16Products bf16;
      cuda::conv2d_backward(dx3.f32(), nullptr, nullptr, gc.f32(), xc.f32(), wc.f32(), c.B, c.H, c.W, c.Ci, c.Co, c.k,
                            c.stride, c.pad);
    }
    REQUIRE(bit_equal(host(dx3).to_vector(), host(dx2).to_vector()));
  }
#endif
}
