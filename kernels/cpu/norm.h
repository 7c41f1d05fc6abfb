// kernels/cpu/norm.h - LayerNorm and BatchNorm on contiguous f32 arrays.
// Same names and signatures as kernels/cuda/norm.h.
//
// Shape letters: x is viewed as (O, C, I): O outer, C the normalised /
// channel dimension, I inner. Token layout (..., C) with dim -1: I = 1.
// Per-pixel / NCHW layout (B, C, H, W) with dim 1: O = B, I = H*W.
// weight and bias are (C) or nullptr (weight 1, bias 0).
//
// LayerNorm normalises each (o, i) row over C; BatchNorm normalises each
// channel c over its O*I values. Variances are biased, eps inside the sqrt:
//   y = (x - mean) * rstd * weight + bias,   rstd = 1 / sqrt(var + eps).
//
// Saved for backward: x, and mean and rstd (LayerNorm: one per row, (O*I);
// BatchNorm: one per channel, (C)). Backward kernels OVERWRITE (=) dx,
// dweight, dbias; any of them may be nullptr. Every reduction has a fixed
// order independent of the thread count (deterministic).
#pragma once
#include <cstdint>

namespace nala {
namespace cpu {

// ---- LayerNorm -----------------------------------------------------------------
void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t O, int64_t C, int64_t I, float eps);
void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* mean, const float* rstd, const float* weight, int64_t O, int64_t C,
                        int64_t I);
void layernorm_forward_naive(float* out, float* mean, float* rstd, const float* x, const float* weight,
                             const float* bias, int64_t O, int64_t C, int64_t I, float eps);
void layernorm_backward_naive(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                              const float* mean, const float* rstd, const float* weight, int64_t O, int64_t C,
                              int64_t I);

// ---- BatchNorm -----------------------------------------------------------------
// Training statistics: batch mean and rstd (biased variance) per channel; when
// running_mean / running_var are given, also updates them in place:
//   running = (1 - momentum) running + momentum batch, with the UNBIASED
//   variance var * n / (n - 1), n = O*I (> 1).
void batchnorm_train_stats(float* mean, float* rstd, float* running_mean, float* running_var, const float* x,
                           int64_t O, int64_t C, int64_t I, float momentum, float eps);
// Eval statistics: mean = running_mean, rstd = 1 / sqrt(running_var + eps).
void batchnorm_eval_stats(float* mean, float* rstd, const float* running_mean, const float* running_var,
                          int64_t C, float eps);
// y = (x - mean[c]) * rstd[c] * weight[c] + bias[c].
void batchnorm_forward(float* out, const float* x, const float* mean, const float* rstd, const float* weight,
                       const float* bias, int64_t O, int64_t C, int64_t I);
// training: full backward through the batch statistics; eval: the affine map only.
void batchnorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* mean, const float* rstd, const float* weight, int64_t O, int64_t C,
                        int64_t I, bool training);
void batchnorm_train_stats_naive(float* mean, float* rstd, float* running_mean, float* running_var,
                                 const float* x, int64_t O, int64_t C, int64_t I, float momentum, float eps);
void batchnorm_forward_naive(float* out, const float* x, const float* mean, const float* rstd,
                             const float* weight, const float* bias, int64_t O, int64_t C, int64_t I);
void batchnorm_backward_naive(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                              const float* mean, const float* rstd, const float* weight, int64_t O, int64_t C,
                              int64_t I, bool training);

}  // namespace cpu
}  // namespace nala
