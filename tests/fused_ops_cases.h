// tests/fused_ops_cases.h - what tests/test_fused_ops.cpp (CPU) and
// tests/test_cuda_fused_ops.cpp (GPU) both check: each fused op of
// NaLaFormer's blocks beside the ops it replaces, and the check that the two
// give the same bits, forward and every gradient, on one device.
#pragma once
#include <algorithm>
#include <cmath>

#include "tests/cuda_harness.h"

namespace nala {
namespace test {

// inputs: x, w, bias
inline const OpFn kLinearGelu = [](const std::vector<Tensor>& in) { return linear_gelu(in[0], in[1], in[2]); };
inline const OpFn kLinearGeluRef = [](const std::vector<Tensor>& in) { return gelu(linear(in[0], in[1], in[2])); };
// inputs: res, x, w, bias, gamma
inline const OpFn kLinearScaleAdd = [](const std::vector<Tensor>& in) {
  return linear_scale_add(in[0], in[1], in[2], in[3], in[4]);
};
inline const OpFn kLinearScaleAddRef = [](const std::vector<Tensor>& in) {
  return add(in[0], mul(linear(in[1], in[2], in[3]), in[4]));
};
// inputs: x, g, weight, bias
inline const OpFn kLnGate = [](const std::vector<Tensor>& in) {
  return layernorm_gate(in[0], in[1], in[2], in[3], 1e-5f);
};
inline const OpFn kLnGateRef = [](const std::vector<Tensor>& in) {
  return mul(layernorm(in[0], in[2], in[3], 1e-5f), silu(in[1]));
};

// linear_scale_add with a drop-path mask of probability p, and the ops it
// replaces; each draws its mask from a fresh Rng(seed), so both draw the same.
struct FusedPair {
  OpFn fused, ref;
};
inline FusedPair drop_path_pair(uint64_t seed, float p) {
  return {[seed, p](const std::vector<Tensor>& in) {
            Rng masks(seed);
            return linear_scale_add(in[0], in[1], in[2], in[3], in[4],
                                    drop_path_mask(in[0].size(0), p, masks, in[0].device()));
          },
          [seed, p](const std::vector<Tensor>& in) {
            Rng masks(seed);
            return add(in[0], drop_path(mul(linear(in[1], in[2], in[3]), in[4]), p, masks, true));
          }};
}

// fused and ref on dev from the same inputs and upstream gradient: the same
// output and gradients (want as in run_on), bit for bit; except the gradient
// of input `resummed` (>= 0), the same sum of the same float32 terms added in
// another fixed order (on CUDA, linear_scale_add's gamma gradient joins the
// one pass of its backward), within 1e-5 of its largest value.
inline void require_same_bits(Device dev, const OpFn& fused, const OpFn& ref, const std::vector<Tensor>& inputs,
                              const std::vector<bool>& want = {}, int resummed = -1) {
  const DeviceRun a = run_on(dev, fused, inputs, 5, want), b = run_on(dev, ref, inputs, 5, want);
  REQUIRE(bit_equal(a.out.to_vector(), b.out.to_vector()));
  for (size_t i = 0; i < inputs.size(); i++) {
    INFO("gradient of input " << i);
    REQUIRE(a.grads[i].defined() == b.grads[i].defined());
    if (!a.grads[i].defined()) continue;
    if ((int)i != resummed) {
      REQUIRE(bit_equal(a.grads[i].to_vector(), b.grads[i].to_vector()));
      continue;
    }
    float top = 0.0f;
    for (float v : b.grads[i].to_vector()) top = std::max(top, std::fabs(v));
    REQUIRE_CLOSE(a.grads[i], b.grads[i], 1e-5 * top, 1e-5);
  }
}

}  // namespace test
}  // namespace nala
