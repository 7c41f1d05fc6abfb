// kernels/cuda/norm.cu - LayerNorm and BatchNorm, CUDA.
//
// Shape letters: x is viewed as (O, C, I) (see kernels/cpu/norm.h): token
// layout I = 1, per-pixel / NCHW layout I = H*W. Saved for backward: x,
// mean and rstd (LayerNorm: per row (O*I); BatchNorm: per channel (C)).
// Backward OVERWRITES (=) dx, dweight, dbias (each may be nullptr).
// Every reduction has a fixed order: results are identical run to run.
//
// LayerNorm rows: with I = 1 the kernels of layernorm_rows.cuh (shared with
// the kernel lab): register-cached float4 rows (C % 4 == 0, C <= 1024,
// aligned), the backward fusing dx with the dweight / dbias partials (C <=
// 512), else one warp per row (the lanes stride over C, then a butterfly
// shuffle reduction); with I > 1 one thread per (o, i) row, consecutive
// threads on consecutive i (coalesced), each looping over C. Means and
// variances are two-pass.
//
// Per-channel sums (BatchNorm statistics, dweight, dbias) go through
// channel_partials(): pass 1 writes per-block partial sums, pass 2 (the
// op's finish kernel) adds the blocks of a channel in order, in double
// (LayerNorm's, layernorm_rows.cuh's param_finish, with a warp per channel).
//   I = 1: block (32 channels, 8 row lanes) over a fixed range of rows, the
//          lanes combined in order in shared memory.
//   I > 1: block of 256 threads on one channel over a fixed range of the
//          O*I (o, i) pairs (contiguous runs of i), then a tree reduction.
// The number of blocks depends on the sizes only.
// Elementwise BatchNorm maps (forward, dx) run channel-fastest with I = 1
// and as (o, c) planes of I contiguous values otherwise.
// Synchronised BatchNorm: the shifted sums use the same two passes (float
// block partials, double in-order finish); the finalisation (mean, rstd,
// running statistics) and the dx coefficients from the global sums are tiny
// per-channel kernels reading the global count on the device, so nothing is
// copied back to the host.
#include <algorithm>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/layernorm_rows.cuh"
#include "kernels/cuda/norm.h"
#include "kernels/cuda/reduce_util.cuh"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {

using reduce_util::col_block;
using reduce_util::col_blocks;
using reduce_util::col_index;
using reduce_util::column_sum;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride loops beyond this

int blocks_for(int64_t n) { return (int)std::max<int64_t>(1, std::min((n + kThreads - 1) / kThreads, kMaxBlocks)); }

#define GRID_STRIDE(e, n) \
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < (n); e += (int64_t)gridDim.x * blockDim.x)

__device__ __forceinline__ float wget(const float* w, int64_t c) { return w ? w[c] : 1.0f; }
__device__ __forceinline__ float bget(const float* b, int64_t c) { return b ? b[c] : 0.0f; }

// ---- per-channel partial sums --------------------------------------------------

struct Pair {
  float a, b;
};

// part (nblk, 2, C): part[(blk*2 + 0)*C + c] sums f(e, c, r).a, [(blk*2 + 1)*C + c] sums .b, over
// the elements e = (o*C + c)*I + i of block blk's share; r = o*I + i is the LayerNorm row.
template <class F>
__global__ void chan_partials_rows(float* part, int64_t O, int64_t C, int nblk, F f) {  // I == 1, block (32, 8)
  __shared__ float sa[8][32], sb[8][32];
  const int tx = threadIdx.x, ty = threadIdx.y, blk = blockIdx.y;
  const int64_t c = (int64_t)blockIdx.x * 32 + tx, o0 = blk * O / nblk, o1 = (blk + 1) * O / nblk;
  float a = 0.0f, b = 0.0f;
  if (c < C)
    for (int64_t o = o0 + ty; o < o1; o += 8) {
      const Pair v = f(o * C + c, c, o);
      a += v.a, b += v.b;
    }
  sa[ty][tx] = a, sb[ty][tx] = b;
  __syncthreads();
  if (ty == 0 && c < C) {
    float s = 0.0f, t = 0.0f;
    for (int j = 0; j < 8; j++) s += sa[j][tx], t += sb[j][tx];
    part[(int64_t)blk * 2 * C + c] = s;
    part[((int64_t)blk * 2 + 1) * C + c] = t;
  }
}

template <class F>
__global__ void chan_partials_strided(float* part, int64_t O, int64_t C, int64_t I, int nblk, F f) {  // block 256
  __shared__ float sa[kThreads], sb[kThreads];
  const int tid = threadIdx.x, blk = blockIdx.y;
  const int64_t c = blockIdx.x, n = O * I, j0 = blk * n / nblk, j1 = (blk + 1) * n / nblk;
  float a = 0.0f, b = 0.0f;
  for (int64_t j = j0 + tid; j < j1; j += kThreads) {
    const int64_t o = j / I, i = j - o * I;
    const Pair v = f((o * C + c) * I + i, c, j);
    a += v.a, b += v.b;
  }
  sa[tid] = a, sb[tid] = b;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) sa[tid] += sa[tid + s], sb[tid] += sb[tid + s];
    __syncthreads();
  }
  if (tid == 0) {
    part[(int64_t)blk * 2 * C + c] = sa[0];
    part[((int64_t)blk * 2 + 1) * C + c] = sb[0];
  }
}

// Launches pass 1; returns the partials (nblk, 2, C). Needs C > 0.
template <class F>
Tensor channel_partials(int64_t O, int64_t C, int64_t I, F f, int& nblk, const char* op) {
  if (I == 1) {
    // at least 64 rows a block, at most 256 blocks: the second pass adds
    // nblk partials per channel in one block, a few loads a lane
    nblk = (int)std::max<int64_t>(1, std::min<int64_t>((O + 63) / 64, 256));
  } else {
    const int64_t by_work = (O * I + 1023) / 1024, by_grid = std::max<int64_t>(1, 2048 / C);
    nblk = (int)std::max<int64_t>(1, std::min<int64_t>(std::min(by_work, by_grid), 65535));
  }
  Tensor part = Tensor::empty({(int64_t)nblk * 2 * C}, DType::F32, Device::CUDA);
  if (I == 1)
    chan_partials_rows<<<dim3((unsigned)((C + 31) / 32), nblk), dim3(32, 8)>>>(part.f32(), O, C, nblk, f);
  else
    chan_partials_strided<<<dim3((unsigned)C, nblk), kThreads>>>(part.f32(), O, C, I, nblk, f);
  CUDA_CHECK_LAUNCH(op);
  return part;
}

// Pass 2 for channel c: the block partials of sum `which` (0: a, 1: b), added
// in a fixed order (reduce_util::column_sum; the finish kernels run in blocks
// of col_block(nblk), col_blocks(C) of them, and write from the threads with
// threadIdx.y == 0). Every thread of the block calls it; c may be past C.
__device__ double part_sum(const float* part, int nblk, int64_t C, int64_t c, int which) {
  return column_sum(part + which * C + (c < C ? c : 0), nblk, 2 * C, c < C);
}

// The channel of a finish kernel's thread, or -1 when the thread writes nothing.
__device__ int64_t finish_channel(int64_t C) {
  const int64_t c = col_index();
  return threadIdx.y == 0 && c < C ? c : -1;
}

// ---- elementwise per-channel maps ----------------------------------------------

// f(e, c) for every element: I == 1, channel fastest (c advanced without divisions).
template <class F>
__global__ void map_rows(int64_t n, int64_t C, F f) {
  const int64_t e0 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, step = (int64_t)gridDim.x * blockDim.x;
  const int64_t cstep = step % C;
  int64_t c = e0 % C;
  for (int64_t e = e0; e < n; e += step) {
    f(e, c);
    c += cstep;
    if (c >= C) c -= C;
  }
}

// f(e, c) for every element: I > 1, blocks over the (o, c) planes, threads along i.
template <class F>
__global__ void map_planes(int64_t planes, int64_t C, int64_t I, F f) {
  for (int64_t pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    const int64_t c = pl % C;
    for (int64_t i = threadIdx.x; i < I; i += blockDim.x) f(pl * I + i, c);
  }
}

template <class F>
void per_channel_map(int64_t O, int64_t C, int64_t I, F f, const char* op) {
  const int64_t n = O * C * I;
  if (n == 0) return;
  if (I == 1)
    map_rows<<<blocks_for(n), kThreads>>>(n, C, f);
  else
    map_planes<<<(unsigned)std::min<int64_t>(O * C, kMaxBlocks), 128>>>(O * C, C, I, f);
  CUDA_CHECK_LAUNCH(op);
}

// ---- LayerNorm kernels ----------------------------------------------------------

// I > 1: one thread per row r = o*I + i; its C values are I apart.
__global__ void ln_forward_strided(float* out, float* mean, float* rstd, const float* x, const float* w,
                                   const float* b, int64_t O, int64_t C, int64_t I, float eps) {
  GRID_STRIDE(r, O * I) {
    const int64_t o = r / I, i = r - o * I;
    const float* xr = x + o * C * I + i;
    float s = 0.0f, v = 0.0f;
    for (int64_t c = 0; c < C; c++) s += xr[c * I];
    const float m = s / C;
    for (int64_t c = 0; c < C; c++) v += (xr[c * I] - m) * (xr[c * I] - m);
    const float rs = 1.0f / sqrtf(v / C + eps);
    float* yr = out + o * C * I + i;
    for (int64_t c = 0; c < C; c++) yr[c * I] = (xr[c * I] - m) * rs * wget(w, c) + bget(b, c);
    mean[r] = m, rstd[r] = rs;
  }
}

// dx = rs * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight. I > 1: thread per row.
__global__ void ln_backward_strided(float* dx, const float* dout, const float* x, const float* mean,
                                    const float* rstd, const float* w, int64_t O, int64_t C, int64_t I) {
  GRID_STRIDE(r, O * I) {
    const int64_t o = r / I, i = r - o * I, off = o * C * I + i;
    const float m = mean[r], rs = rstd[r];
    float m1 = 0.0f, m2 = 0.0f;
    for (int64_t c = 0; c < C; c++) {
      const float g = dout[off + c * I] * wget(w, c);
      m1 += g;
      m2 += g * (x[off + c * I] - m) * rs;
    }
    m1 /= C, m2 /= C;
    for (int64_t c = 0; c < C; c++)
      dx[off + c * I] = rs * (dout[off + c * I] * wget(w, c) - m1 - (x[off + c * I] - m) * rs * m2);
  }
}

struct LnParamGrad {  // (dout * xhat, dout)
  const float *dout, *x, *mean, *rstd;
  __device__ Pair operator()(int64_t e, int64_t, int64_t r) const {
    return Pair{dout[e] * (x[e] - mean[r]) * rstd[r], dout[e]};
  }
};

// ---- BatchNorm kernels ----------------------------------------------------------

struct XSum {
  const float* x;
  __device__ Pair operator()(int64_t e, int64_t, int64_t) const { return Pair{x[e], 0.0f}; }
};
struct XDevSq {  // (x - mean[c])^2
  const float *x, *mean;
  __device__ Pair operator()(int64_t e, int64_t c, int64_t) const {
    const float d = x[e] - mean[c];
    return Pair{d * d, 0.0f};
  }
};
struct BnGradSums {  // (dout, dout * xhat)
  const float *dout, *x, *mean, *rstd;
  __device__ Pair operator()(int64_t e, int64_t c, int64_t) const {
    return Pair{dout[e], dout[e] * (x[e] - mean[c]) * rstd[c]};
  }
};

__global__ void bn_mean_finish(float* mean, const float* part, int64_t C, int nblk, double n) {
  const double s = part_sum(part, nblk, C, col_index(), 0);
  const int64_t c = finish_channel(C);
  if (c >= 0) mean[c] = (float)(s / n);
}

__global__ void bn_var_finish(float* rstd, float* running_mean, float* running_var, const float* part_mean,
                              int nblk_mean, const float* part_var, int nblk_var, int64_t C, double n,
                              float momentum, float eps) {
  const double var = part_sum(part_var, nblk_var, C, col_index(), 0) / n;
  const double mu = running_mean ? part_sum(part_mean, nblk_mean, C, col_index(), 0) / n : 0.0;
  const int64_t c = finish_channel(C);
  if (c < 0) return;
  rstd[c] = (float)(1.0 / sqrt(var + eps));
  if (running_mean) running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
  if (running_var) running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * var * n / (n - 1));
}

__global__ void bn_eval_stats_kernel(float* mean, float* rstd, const float* running_mean, const float* running_var,
                                     int64_t C, float eps) {
  GRID_STRIDE(c, C) {
    mean[c] = running_mean[c];
    rstd[c] = 1.0f / sqrtf(running_var[c] + eps);
  }
}

struct BnForward {  // out = (x - mean) * (rstd * weight) + bias
  float* out;
  const float *x, *mean, *rstd, *w, *b;
  __device__ void operator()(int64_t e, int64_t c) const {
    out[e] = (x[e] - mean[c]) * (rstd[c] * wget(w, c)) + bget(b, c);
  }
};

// coef (3, C): dx = a[c] * dout + b[c] * (x - mean[c]) + d[c]; also dweight, dbias.
__global__ void bn_backward_finish(float* coef, float* dweight, float* dbias, const float* part, const float* rstd,
                                   const float* w, int64_t C, int nblk, double n, bool training) {
  const double sd = part_sum(part, nblk, C, col_index(), 0), sdx = part_sum(part, nblk, C, col_index(), 1);
  const int64_t c = finish_channel(C);
  if (c < 0) return;
  if (dweight) dweight[c] = (float)sdx;
  if (dbias) dbias[c] = (float)sd;
  const double k = (double)wget(w, c) * rstd[c];
  coef[c] = (float)k;
  coef[C + c] = training ? (float)(-k * (sdx / n) * rstd[c]) : 0.0f;
  coef[2 * C + c] = training ? (float)(-k * (sd / n)) : 0.0f;
}

struct BnBackwardDx {
  float* dx;
  const float *dout, *x, *mean, *coef;
  int64_t C;
  __device__ void operator()(int64_t e, int64_t c) const {
    dx[e] = coef[c] * dout[e] + coef[C + c] * (x[e] - mean[c]) + coef[2 * C + c];
  }
};

// ---- Synchronised BatchNorm kernels -----------------------------------------------

struct XShifted {  // (x - shift[c], (x - shift[c])^2)
  const float *x, *shift;
  __device__ Pair operator()(int64_t e, int64_t c, int64_t) const {
    const float d = x[e] - (shift ? shift[c] : 0.0f);
    return Pair{d, d * d};
  }
};

// sums (2C + 1) = [S1 (C), S2 (C), count]; the block partials added in order, in double.
__global__ void bn_sums_finish(float* sums, const float* part, int64_t C, int nblk, float count) {
  const double s1 = part_sum(part, nblk, C, col_index(), 0), s2 = part_sum(part, nblk, C, col_index(), 1);
  const int64_t c = finish_channel(C);
  if (c < 0) return;
  sums[c] = (float)s1;
  sums[C + c] = (float)s2;
  if (c == 0) sums[2 * C] = count;
}

__global__ void bn_sync_stats_kernel(float* mean, float* rstd, float* running_mean, float* running_var,
                                     const float* sums, const float* shift, int64_t C, float momentum, float eps) {
  GRID_STRIDE(c, C) {
    const double n = sums[2 * C];
    const double m = sums[c] / n, var = fmax(sums[C + c] / n - m * m, 0.0);
    const double mu = (shift ? (double)shift[c] : 0.0) + m;  // shift may alias running_mean: read it first
    mean[c] = (float)mu;
    rstd[c] = (float)(1.0 / sqrt(var + eps));
    if (running_mean) running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
    if (running_var)
      running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * (n > 1 ? var * n / (n - 1) : var));
  }
}

// coef (3, C) for BnBackwardDx from the global [sum dy*xhat, sum dy] and the global count.
__global__ void bn_global_dx_coef(float* coef, const float* grad_sums, const float* count, const float* rstd,
                                  const float* w, int64_t C) {
  GRID_STRIDE(c, C) {
    const double n = *count, k = (double)wget(w, c) * rstd[c];
    coef[c] = (float)k;
    coef[C + c] = (float)(-k * (grad_sums[c] / n) * rstd[c]);
    coef[2 * C + c] = (float)(-k * (grad_sums[C + c] / n));
  }
}

}  // namespace

// ---- LayerNorm -----------------------------------------------------------------

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t O, int64_t C, int64_t I, float eps) {
  if (O * I == 0 || C == 0) return;
  if (I == 1)
    layernorm_rows::forward(out, mean, rstd, x, weight, bias, O, C, eps);
  else
    ln_forward_strided<<<blocks_for(O * I), kThreads>>>(out, mean, rstd, x, weight, bias, O, C, I, eps);
  CUDA_CHECK_LAUNCH("layernorm_forward");
}

namespace {
// out = y * silu(g), elementwise (out may be y)
__global__ void gate_kernel(float* out, const float* y, const float* g, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = y[i] * act::silu(g[i]);
}
}  // namespace

void layernorm_gate_forward(float* out, float* y, float* mean, float* rstd, const float* x, const float* g,
                            const float* weight, const float* bias, int64_t R, int64_t C, float eps) {
  if (R == 0 || C == 0) return;
  if (!layernorm_rows::vec_ok(C, {out, x, weight, bias}) || layernorm_rows::vec_ok(C, {g, y})) {
    layernorm_rows::forward(out, mean, rstd, x, weight, bias, R, C, eps, g, y);  // one pass
    CUDA_CHECK_LAUNCH("layernorm_gate_forward");
    return;
  }
  // A misaligned gate or y where the LayerNorm alone would take the register-
  // cached kernel: that kernel (the same sums, so layernorm's bits), then the gate.
  float* ln = y ? y : out;
  layernorm_rows::forward(ln, mean, rstd, x, weight, bias, R, C, eps);
  gate_kernel<<<blocks_for(R * C), kThreads>>>(out, ln, g, R * C);
  CUDA_CHECK_LAUNCH("layernorm_gate_forward");
}

namespace {
__global__ void gate_backward_kernel(float* dy, float* dg, const float* dout, const float* y, const float* g,
                                     int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float d = dout[i], v = g[i];
    dy[i] = d * act::silu(v);
    if (dg) dg[i] = act::silu_backward(d * y[i], v);
  }
}
}  // namespace

void gate_backward(float* dy, float* dg, const float* dout, const float* y, const float* g, int64_t n) {
  if (n <= 0) return;
  gate_backward_kernel<<<blocks_for(n), kThreads>>>(dy, dg, dout, y, g, n);
  CUDA_CHECK_LAUNCH("gate_backward");
}

void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* mean, const float* rstd, const float* weight, int64_t O, int64_t C,
                        int64_t I) {
  if (C == 0) return;
  // One pass over x and dout for dx and the dweight / dbias partials (the row kernels).
  if (I == 1 && layernorm_rows_backward(dx, nullptr, dweight, dbias, dout, false, x, nullptr, false, mean, rstd,
                                        weight, nullptr, O, C))
    return;
  if (dweight || dbias) {
    int nblk = 0;
    Tensor part = channel_partials(O, C, I, LnParamGrad{dout, x, mean, rstd}, nblk, "layernorm_backward");
    layernorm_rows::finish_params(dweight, dbias, part.f32(), C, nblk);
    CUDA_CHECK_LAUNCH("layernorm_backward");
  }
  if (!dx || O * I == 0) return;
  if (I == 1)
    layernorm_rows::backward_dx_warp(dx, dout, x, mean, rstd, weight, O, C);
  else
    ln_backward_strided<<<blocks_for(O * I), kThreads>>>(dx, dout, x, mean, rstd, weight, O, C, I);
  CUDA_CHECK_LAUNCH("layernorm_backward");
}

// ---- LayerNorm rows with float32 or bf16 storage ------------------------------

namespace {
using bf16 = __nv_bfloat16;

template <class TX, class TO>
void rows_forward_t(void* out, float* mean, float* rstd, const void* x, const void* gate, const float* w,
                    const float* b, int64_t R, int64_t C, float eps) {
  layernorm_rows::dispatch(C, layernorm_rows::ForwardLaunch<TX, TO>{static_cast<TO*>(out), mean, rstd,
                                                                    static_cast<const TX*>(x), w, b, R, C, eps,
                                                                    static_cast<const TX*>(gate), nullptr});
}

template <class TX, class TD, bool GATE>
void rows_backward_t(void* dx, float* part, const void* dout, const void* x, const float* mean, const float* rstd,
                     const float* w, int64_t R, int64_t C, const void* gate, const float* b, void* dgate) {
  layernorm_rows::dispatch(
      C, layernorm_rows::BackwardLaunch<TX, TD, GATE>{static_cast<TX*>(dx), part, static_cast<const TD*>(dout),
                                                      static_cast<const TX*>(x), mean, rstd, w, R, C,
                                                      static_cast<const TX*>(gate), b, static_cast<TX*>(dgate)});
}

template <class TX, class TD>
void rows_backward_g(bool gated, void* dx, float* part, const void* dout, const void* x, const float* mean,
                     const float* rstd, const float* w, int64_t R, int64_t C, const void* gate, const float* b,
                     void* dgate) {
  if (gated) rows_backward_t<TX, TD, true>(dx, part, dout, x, mean, rstd, w, R, C, gate, b, dgate);
  else rows_backward_t<TX, TD, false>(dx, part, dout, x, mean, rstd, w, R, C, gate, b, dgate);
}
}  // namespace

bool layernorm_rows_forward(void* out, bool out_bf16, float* mean, float* rstd, const void* x, const void* gate,
                            bool x_bf16, const float* w, const float* b, int64_t R, int64_t C, float eps) {
  if (!layernorm_rows::vec_ok(C, {out, x, gate, w, b})) return false;
  if (R == 0) return true;
  if (x_bf16) {
    if (out_bf16) rows_forward_t<bf16, bf16>(out, mean, rstd, x, gate, w, b, R, C, eps);
    else rows_forward_t<bf16, float>(out, mean, rstd, x, gate, w, b, R, C, eps);
  } else {
    if (out_bf16) rows_forward_t<float, bf16>(out, mean, rstd, x, gate, w, b, R, C, eps);
    else rows_forward_t<float, float>(out, mean, rstd, x, gate, w, b, R, C, eps);
  }
  CUDA_CHECK_LAUNCH("layernorm_rows_forward");
  return true;
}

bool layernorm_rows_backward(void* dx, void* dgate, float* dweight, float* dbias, const void* dout, bool dout_bf16,
                             const void* x, const void* gate, bool x_bf16, const float* mean, const float* rstd,
                             const float* w, const float* b, int64_t R, int64_t C) {
  if (!layernorm_rows::fused_ok(C, {dx, dgate, dout, x, gate, w, b})) return false;
  if (R == 0) {
    if (dweight) CUDA_CHECK(cudaMemsetAsync(dweight, 0, C * sizeof(float)), "layernorm_rows_backward");
    if (dbias) CUDA_CHECK(cudaMemsetAsync(dbias, 0, C * sizeof(float)), "layernorm_rows_backward");
    return true;
  }
  Tensor part;
  const int nblk = layernorm_rows::fused_blocks(R, C);
  if (dweight || dbias) part = Tensor::empty({(int64_t)nblk * 2 * C}, DType::F32, Device::CUDA);
  float* pp = part.defined() ? part.f32() : nullptr;
  const bool gated = gate != nullptr;
  if (x_bf16) {
    if (dout_bf16) rows_backward_g<bf16, bf16>(gated, dx, pp, dout, x, mean, rstd, w, R, C, gate, b, dgate);
    else rows_backward_g<bf16, float>(gated, dx, pp, dout, x, mean, rstd, w, R, C, gate, b, dgate);
  } else {
    if (dout_bf16) rows_backward_g<float, bf16>(gated, dx, pp, dout, x, mean, rstd, w, R, C, gate, b, dgate);
    else rows_backward_g<float, float>(gated, dx, pp, dout, x, mean, rstd, w, R, C, gate, b, dgate);
  }
  CUDA_CHECK_LAUNCH("layernorm_rows_backward");
  if (pp) {
    layernorm_rows::finish_params(dweight, dbias, pp, C, nblk);
    CUDA_CHECK_LAUNCH("layernorm_rows_backward");
  }
  return true;
}

// ---- BatchNorm -----------------------------------------------------------------

void batchnorm_train_stats(float* mean, float* rstd, float* running_mean, float* running_var, const float* x,
                           int64_t O, int64_t C, int64_t I, float momentum, float eps) {
  if (C == 0) return;
  const double n = (double)(O * I);
  int nb1 = 0, nb2 = 0;
  Tensor p1 = channel_partials(O, C, I, XSum{x}, nb1, "batchnorm_train_stats");
  bn_mean_finish<<<col_blocks(C), col_block(nb1)>>>(mean, p1.f32(), C, nb1, n);
  CUDA_CHECK_LAUNCH("batchnorm_train_stats");
  Tensor p2 = channel_partials(O, C, I, XDevSq{x, mean}, nb2, "batchnorm_train_stats");
  bn_var_finish<<<col_blocks(C), col_block(std::max(nb1, nb2))>>>(rstd, running_mean, running_var, p1.f32(), nb1,
                                                                    p2.f32(), nb2, C, n, momentum, eps);
  CUDA_CHECK_LAUNCH("batchnorm_train_stats");
}

void batchnorm_eval_stats(float* mean, float* rstd, const float* running_mean, const float* running_var,
                          int64_t C, float eps) {
  if (C == 0) return;
  bn_eval_stats_kernel<<<blocks_for(C), kThreads>>>(mean, rstd, running_mean, running_var, C, eps);
  CUDA_CHECK_LAUNCH("batchnorm_eval_stats");
}

void batchnorm_forward(float* out, const float* x, const float* mean, const float* rstd, const float* weight,
                       const float* bias, int64_t O, int64_t C, int64_t I) {
  per_channel_map(O, C, I, BnForward{out, x, mean, rstd, weight, bias}, "batchnorm_forward");
}

void batchnorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* mean, const float* rstd, const float* weight, int64_t O, int64_t C,
                        int64_t I, bool training) {
  if (C == 0) return;
  int nblk = 0;
  Tensor part = channel_partials(O, C, I, BnGradSums{dout, x, mean, rstd}, nblk, "batchnorm_backward");
  Tensor coef = Tensor::empty({3 * C}, DType::F32, Device::CUDA);
  bn_backward_finish<<<col_blocks(C), col_block(nblk)>>>(coef.f32(), dweight, dbias, part.f32(), rstd, weight, C, nblk,
                                                  (double)(O * I), training);
  CUDA_CHECK_LAUNCH("batchnorm_backward");
  if (dx) per_channel_map(O, C, I, BnBackwardDx{dx, dout, x, mean, coef.f32(), C}, "batchnorm_backward");
}

// ---- Synchronised BatchNorm ------------------------------------------------------

void batchnorm_sums(float* sums, const float* x, const float* shift, int64_t O, int64_t C, int64_t I) {
  if (C == 0) return;
  int nblk = 0;
  Tensor part = channel_partials(O, C, I, XShifted{x, shift}, nblk, "batchnorm_sums");
  bn_sums_finish<<<col_blocks(C), col_block(nblk)>>>(sums, part.f32(), C, nblk, (float)(O * I));
  CUDA_CHECK_LAUNCH("batchnorm_sums");
}

void batchnorm_sync_stats(float* mean, float* rstd, float* running_mean, float* running_var, const float* sums,
                          const float* shift, int64_t C, float momentum, float eps) {
  if (C == 0) return;
  bn_sync_stats_kernel<<<blocks_for(C), kThreads>>>(mean, rstd, running_mean, running_var, sums, shift, C,
                                                    momentum, eps);
  CUDA_CHECK_LAUNCH("batchnorm_sync_stats");
}

void batchnorm_backward_dx_global(float* dx, const float* dout, const float* x, const float* mean,
                                  const float* rstd, const float* weight, const float* grad_sums,
                                  const float* count, int64_t O, int64_t C, int64_t I) {
  if (C == 0 || O * I == 0) return;
  Tensor coef = Tensor::empty({3 * C}, DType::F32, Device::CUDA);
  bn_global_dx_coef<<<blocks_for(C), kThreads>>>(coef.f32(), grad_sums, count, rstd, weight, C);
  CUDA_CHECK_LAUNCH("batchnorm_backward_dx_global");
  per_channel_map(O, C, I, BnBackwardDx{dx, dout, x, mean, coef.f32(), C}, "batchnorm_backward_dx_global");
}

}  // namespace cuda
}  // namespace nala
