// kernels/cuda/norm.h - LayerNorm and BatchNorm, CUDA.
// Same names and signatures as kernels/cpu/norm.h (the (O, C, I) view, the
// formulas and the save / overwrite rules are stated there); pointers are
// device pointers, running statistics included (updated on the device).
// Kernels run on the default stream and do not synchronise.
#pragma once
#include <cstdint>

namespace nala {
namespace cuda {

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t O, int64_t C, int64_t I, float eps);
void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
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

// ---- LayerNorm rows with float32 or bf16 storage --------------------------------
// Rows of C (the token layout): x, gate, dx and dgate stored as float32 or
// bf16 (x_bf16), out and dout as out_bf16 / dout_bf16; statistics, weights
// and every sum in float32, each store rounded once. With gate null the
// LayerNorm alone (layernorm_forward's numbers), else out = y * silu(gate)
// (layernorm_gate_forward's) and the backward makes y again from x (b is read
// only then): gate_backward and layernorm_backward in one pass, with no y
// saved. dx, dgate, dweight, dbias nullable (overwritten). They return false,
// doing nothing, where the register-cached kernels do not take the rows:
// C % 4 != 0, C > 1024 (backward: C > 512), or a pointer not 16-byte aligned;
// the caller then goes through float32 and the functions above.
bool layernorm_rows_forward(void* out, bool out_bf16, float* mean, float* rstd, const void* x, const void* gate,
                            bool x_bf16, const float* w, const float* b, int64_t R, int64_t C, float eps);
bool layernorm_rows_backward(void* dx, void* dgate, float* dweight, float* dbias, const void* dout, bool dout_bf16,
                             const void* x, const void* gate, bool x_bf16, const float* mean, const float* rstd,
                             const float* w, const float* b, int64_t R, int64_t C);

void batchnorm_train_stats(float* mean, float* rstd, float* running_mean, float* running_var, const float* x,
                           int64_t O, int64_t C, int64_t I, float momentum, float eps);
void batchnorm_eval_stats(float* mean, float* rstd, const float* running_mean, const float* running_var,
                          int64_t C, float eps);
void batchnorm_forward(float* out, const float* x, const float* mean, const float* rstd, const float* weight,
                       const float* bias, int64_t O, int64_t C, int64_t I);
void batchnorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* mean, const float* rstd, const float* weight, int64_t O, int64_t C,
                        int64_t I, bool training);

// Synchronised BatchNorm (see kernels/cpu/norm.h): sums is a device buffer of
// 2C + 1 floats, count a device pointer; nothing is read back to the host.
void batchnorm_sums(float* sums, const float* x, const float* shift, int64_t O, int64_t C, int64_t I);
void batchnorm_sync_stats(float* mean, float* rstd, float* running_mean, float* running_var, const float* sums,
                          const float* shift, int64_t C, float momentum, float eps);
void batchnorm_backward_dx_global(float* dx, const float* dout, const float* x, const float* mean,
                                  const float* rstd, const float* weight, const float* grad_sums,
                                  const float* count, int64_t O, int64_t C, int64_t I);

}  // namespace cuda
}  // namespace nala
