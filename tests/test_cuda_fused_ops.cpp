// tests/test_cuda_fused_ops.cpp - the fused ops of NaLaFormer's blocks on the
// GPU (tests/test_fused_ops.cpp: the CPU side): linear_gelu, linear_scale_add
// and layernorm_gate against the CPU, and bit for bit the ops they replace on
// the GPU, forward and every gradient: through every FP32 GEMM tile (the
// epilogue in the store, float4 and scalar), the split-K and bf16 fallbacks
// (the product, then a pass; bf16 split-K too), misaligned operands, the LayerNorm's
// register-cached and warp-per-row kernels, with and without the tape.
// (linear_scale_add's gamma gradient is the one exception: on the GPU its sum
// joins the backward's one pass, the same terms in another fixed order.)
#include <array>
#include <string>

#include "tests/fused_ops_cases.h"
#ifdef NALA_CUDA
#include "kernels/cuda/matmul.h"
#endif

using namespace nala;
using namespace nala::test;

namespace {

// (R, I, O) with the inputs of both linear ops
struct LinearCase {
  Tensor x, w, b, r, g;
};
[[maybe_unused]] LinearCase linear_case(int64_t R, int64_t I, int64_t O, Rng& rng) {
  return {randn({R, I}, rng), randn({O, I}, rng, 1.0f / std::sqrt((float)I)), randn({O}, rng), randn({R, O}, rng),
          randn({O}, rng)};
}

}  // namespace

TEST_CASE("cuda: linear_gelu and linear_scale_add against the CPU and bit for bit the composed ops",
          "[cuda][fused]") {
  SKIP_WITHOUT_CUDA();
#ifdef NALA_CUDA
  Rng rng(41);
  // O % 4 == 0 (float4 stores) and not, one row, pico's and xt's shapes, a
  // short product split over K (few tiles, K >= 512: the product, then a pass)
  const int64_t shapes[][3] = {{37, 5, 7}, {300, 33, 40}, {1, 3, 4}, {12544, 32, 96}, {3136, 128, 32}, {8, 2048, 8}};
  const char* tiles[] = {nullptr, "128x128", "64x64", "128x32", "32x128", "256x16", "16x256"};
  for (const char* tile : tiles)
    for (auto& s : shapes) {
      const int64_t R = s[0], I = s[1], O = s[2];
      INFO("tile " << (tile ? tile : "auto") << " R " << R << " I " << I << " O " << O);
      cuda::gemm_fp32_force_tile(tile);
      LinearCase c = linear_case(R, I, O, rng);
      const double tol = 1e-5 * std::sqrt((double)I);
      if (!tile || R < 1000) {
        compare_devices(kLinearGelu, {c.x, c.w, c.b}, 7, {tol, 1e-4});
        compare_devices(kLinearScaleAdd, {c.r, c.x, c.w, c.b, c.g}, 7, {tol, 1e-4});
      }
      require_same_bits(Device::CUDA, kLinearGelu, kLinearGeluRef, {c.x, c.w, c.b});
      require_same_bits(Device::CUDA, kLinearGelu, kLinearGeluRef, {c.x, c.w, Tensor()});
      require_same_bits(Device::CUDA, kLinearScaleAdd, kLinearScaleAddRef, {c.r, c.x, c.w, c.b, c.g}, {}, 4);
    }
  cuda::gemm_fp32_force_tile(nullptr);
  // Misaligned residual and output rows of a float4 width: the scalar store
  Tensor flat = randn({1 + 64 * 8}, rng);
  LinearCase c = linear_case(64, 16, 8, rng);
  const OpFn off = [&flat](const std::vector<Tensor>& in) {
    Tensor r = reshape(narrow(flat.to(in[0].device()), 0, 1, 64 * 8), {64, 8});
    return linear_scale_add(r, in[0], in[1], in[2], in[3]);
  };
  const OpFn off_ref = [&flat](const std::vector<Tensor>& in) {
    Tensor r = reshape(narrow(flat.to(in[0].device()), 0, 1, 64 * 8), {64, 8});
    return add(r, mul(linear(in[0], in[1], in[2]), in[3]));
  };
  require_same_bits(Device::CUDA, off, off_ref, {c.x, c.w, c.b, c.g}, {}, 3);
  compare_devices(off, {c.x, c.w, c.b, c.g}, 7, {1e-5, 1e-4});
  // A drop-path mask (stochastic depth in training): in the store and in the fallback pass
  for (const char* tile : {"128x32", "64x64", (const char*)nullptr}) {
    cuda::gemm_fp32_force_tile(tile);
    for (int64_t O : {32, 30}) {
      INFO("drop path, tile " << (tile ? tile : "auto") << " O " << O);
      Tensor x = randn({6, 49, 24}, rng), w = randn({O, 24}, rng, 0.2f), b = randn({O}, rng), r = randn({6, 49, O}, rng);
      Tensor g = randn({O}, rng);
      const FusedPair dp = drop_path_pair(78, 0.3f);
      require_same_bits(Device::CUDA, dp.fused, dp.ref, {r, x, w, b, g}, {}, 4);
      compare_devices(dp.fused, {r, x, w, b, g}, 7, {1e-5, 1e-4});
    }
  }
  cuda::gemm_fp32_force_tile(nullptr);
  {
    Bf16Products bf16;
    Tensor x = randn({3, 40, 16}, rng), w = randn({12, 16}, rng, 0.2f), b = randn({12}, rng), r = randn({3, 40, 12}, rng);
    const FusedPair dp = drop_path_pair(79, 0.5f);
    require_same_bits(Device::CUDA, dp.fused, dp.ref, {r, x, w, b, randn({12}, rng)}, {}, 4);
  }
  // bf16 products: the bf16 product (split over K too: few tiles, a long K), then the same pass
  {
    Bf16Products bf16;
    for (auto& sh : {std::array<int64_t, 3>{200, 64, 96}, std::array<int64_t, 3>{37, 33, 7},
                     std::array<int64_t, 3>{8, 4096, 8}}) {
      INFO("bf16 R " << sh[0] << " I " << sh[1] << " O " << sh[2]);
      LinearCase d = linear_case(sh[0], sh[1], sh[2], rng);
      require_same_bits(Device::CUDA, kLinearGelu, kLinearGeluRef, {d.x, d.w, d.b});
      require_same_bits(Device::CUDA, kLinearGelu, kLinearGeluRef, {d.x, d.w, Tensor()});
      require_same_bits(Device::CUDA, kLinearScaleAdd, kLinearScaleAddRef, {d.r, d.x, d.w, d.b, d.g}, {}, 4);
    }
  }
  // Without the tape (inference: no product kept) the same output as with it
  LinearCase e = linear_case(500, 32, 96, rng);
  Tensor x = on_cuda(e.x), w = on_cuda(e.w, true), b = on_cuda(e.b), r = on_cuda(e.r), g = on_cuda(e.g);
  const std::vector<float> taped = host(linear_scale_add(r, x, w, b, g)).to_vector();
  const std::vector<float> taped_gelu = host(linear_gelu(x, w, b)).to_vector();
  NoGradGuard no_grad;
  REQUIRE(bit_equal(host(linear_scale_add(r, x, w, b, g)).to_vector(), taped));
  REQUIRE(bit_equal(host(linear_gelu(x, w, b)).to_vector(), taped_gelu));
#endif
}

TEST_CASE("cuda: layernorm_gate against the CPU and bit for bit the composed ops", "[cuda][fused]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(42);
  // C % 4 == 0 up to 1024: the register-cached kernel (8, 16 or 32 lanes a
  // row); C = 6 and C = 1536: warp per row
  for (int64_t C : {32, 64, 128, 384, 1024, 6, 1536}) {
    INFO("C " << C);
    const int64_t R = C > 512 ? 33 : 1001;
    Tensor x = randn({R, C}, rng, 2.0f), g = randn({R, C}, rng, 2.0f), w = randn({C}, rng), b = randn({C}, rng);
    compare_devices(kLnGate, {x, g, w, b}, 7, {2e-5, 1e-4});
    require_same_bits(Device::CUDA, kLnGate, kLnGateRef, {x, g, w, b});
    require_same_bits(Device::CUDA, kLnGate, kLnGateRef, {x, g, Tensor(), Tensor()});
  }
  // a misaligned gate (the register-cached LayerNorm, then the gate as a pass), and without the tape
  Tensor flat = randn({1 + 40 * 64}, rng), x = randn({40, 64}, rng), w = randn({64}, rng), b = randn({64}, rng);
  const OpFn off = [&flat](const std::vector<Tensor>& in) {
    return layernorm_gate(in[0], reshape(narrow(flat.to(in[0].device()), 0, 1, 40 * 64), {40, 64}), in[1], in[2],
                          1e-6f);
  };
  const OpFn off_ref = [&flat](const std::vector<Tensor>& in) {
    return mul(layernorm(in[0], in[1], in[2], 1e-6f), silu(reshape(narrow(flat.to(in[0].device()), 0, 1, 40 * 64), {40, 64})));
  };
  require_same_bits(Device::CUDA, off, off_ref, {x, w, b});
  Tensor xc = on_cuda(x, true), gc = on_cuda(randn({40, 64}, rng)), wc = on_cuda(w), bc = on_cuda(b);
  const std::vector<float> taped = host(layernorm_gate(xc, gc, wc, bc, 1e-6f)).to_vector();
  NoGradGuard no_grad;
  REQUIRE(bit_equal(host(layernorm_gate(xc, gc, wc, bc, 1e-6f)).to_vector(), taped));
}
