// kernels/cuda/activation.cuh - the activations' scalar device functions and
// LayerScale's residual add, one definition for every kernel that applies
// them: the elementwise ops (elementwise.cu), the GEMM stores (gemm_fp32.cuh,
// gemm_bf16_*.cuh) and the fused LayerNorm gate (norm.cu). A fused kernel
// calling these computes the same bits as the separate ops.
#pragma once
#include <cuda_runtime.h>

namespace nala {
namespace cuda {
namespace act {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }
// GELU, erf form: x Phi(x), and its slope Phi(x) + x phi(x), from e =
// erf(x / sqrt 2), which both take (a kernel that needs both computes it once).
__device__ __forceinline__ float gelu_erf(float v) { return erff(v * kInvSqrt2); }
__device__ __forceinline__ float gelu_of_erf(float v, float e) { return 0.5f * v * (1.0f + e); }
__device__ __forceinline__ float gelu_slope_of_erf(float v, float e) {
  const float cdf = 0.5f * (1.0f + e);
  const float pdf = kInvSqrt2Pi * expf(-0.5f * v * v);
  return cdf + v * pdf;
}
__device__ __forceinline__ float gelu(float v) { return gelu_of_erf(v, gelu_erf(v)); }
// g d/dx x Phi(x) = g (Phi(x) + x phi(x))
__device__ __forceinline__ float gelu_backward(float g, float v) { return g * gelu_slope_of_erf(v, gelu_erf(v)); }
// SiLU: x sigmoid(x)
__device__ __forceinline__ float silu(float v) { return v * sigmoid(v); }
// g d/dx x s(x) = g s (1 + x (1 - s))
__device__ __forceinline__ float silu_backward(float g, float v) {
  const float s = sigmoid(v);
  return g * s * (1.0f + v * (1.0f - s));
}

// x + (y * gamma) * f: each product rounded (never contracted into an FMA),
// then the sum: the bits of mul, drop_path's mul by f (f = 1: exact) and add.
__device__ __forceinline__ float scale_add(float x, float y, float gamma, float f = 1.0f) {
  return __fadd_rn(x, __fmul_rn(__fmul_rn(y, gamma), f));
}

}  // namespace act
}  // namespace cuda
}  // namespace nala
