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

// ---- LayerNorm with NaLaFormer's attention gate ----------------------------------
// Rows of C (I = 1): out = y * silu(g), y = layernorm(x) (weight, bias as
// above), kept in y for backward. y may be null on CUDA only (where the
// gate joins the LayerNorm's store); the CPU needs it as its buffer. The bits
// of layernorm_forward, silu_forward, then a multiply. out must not alias x or g.
void layernorm_gate_forward(float* out, float* y, float* mean, float* rstd, const float* x, const float* g,
                            const float* weight, const float* bias, int64_t R, int64_t C, float eps);
// The gate's backward, n elements: dy = dout * silu(g) (the LayerNorm's
// incoming gradient) and dg = silu_backward(dout * y, g) (dg nullable): the
// bits of mul's and silu's backward.
void gate_backward(float* dy, float* dg, const float* dout, const float* y, const float* g, int64_t n);

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

// ---- Synchronised BatchNorm (data-parallel: statistics over every rank) ---------
// Layout of the statistics buffer, 2C + 1 floats: [S1 (C), S2 (C), n (1)] with
//   S1[c] = sum (x - shift[c]),  S2[c] = sum (x - shift[c])^2,  n = O*I,
// over this rank's values (shift nullptr: 0). The buffer is then summed over the
// ranks element by element; the shift must be the same on every rank (the running
// mean is: every rank updates it with the same global statistics). The shift only
// reduces the cancellation in S2/n - (S1/n)^2; the result does not depend on it.
// Sums accumulate in double and are stored as float (n exact up to 2^24).
void batchnorm_sums(float* sums, const float* x, const float* shift, int64_t O, int64_t C, int64_t I);
// From the summed buffer (N = sums[2C], the global count):
//   mean = shift + S1/N, var = max(S2/N - (S1/N)^2, 0), rstd = 1/sqrt(var + eps);
// running statistics (either may be nullptr) updated as in batchnorm_train_stats,
// running_var with var * N / (N - 1) (var itself when N <= 1). shift may alias
// running_mean (each channel reads it before writing it).
void batchnorm_sync_stats(float* mean, float* rstd, float* running_mean, float* running_var, const float* sums,
                          const float* shift, int64_t C, float momentum, float eps);
// dx = weight * rstd * (dout - sum_dy/N - xhat * sum_dy_xhat/N), xhat = (x - mean) * rstd,
// with grad_sums = [sum dout*xhat (C), sum dout (C)] summed over every rank (the dweight,
// dbias of batchnorm_backward, in that order) and N = *count (device memory on CUDA).
// weight nullptr: 1. Overwrites dx.
void batchnorm_backward_dx_global(float* dx, const float* dout, const float* x, const float* mean,
                                  const float* rstd, const float* weight, const float* grad_sums,
                                  const float* count, int64_t O, int64_t C, int64_t I);
void batchnorm_sums_naive(float* sums, const float* x, const float* shift, int64_t O, int64_t C, int64_t I);
void batchnorm_backward_dx_global_naive(float* dx, const float* dout, const float* x, const float* mean,
                                        const float* rstd, const float* weight, const float* grad_sums,
                                        const float* count, int64_t O, int64_t C, int64_t I);

}  // namespace cpu
}  // namespace nala
