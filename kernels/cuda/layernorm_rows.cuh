// kernels/cuda/layernorm_rows.cuh - LayerNorm over contiguous rows (the
// token layout, I = 1 in norm.h's (O, C, I) view), CUDA: the row kernels of
// layernorm_forward / layernorm_backward (norm.cu) and the last two versions
// of the kernel lab (kernels/lab/layernorm_cuda.cu; docs/kernels.md).
//
// Two kernels each way:
//   warp per row       (forward_warp, backward_warp) any C, any alignment:
//                      the 32 lanes stride over the row, a butterfly shuffle
//                      sums; the forward reads the row three times (mean,
//                      variance, output), the later passes from L1.
//   register-cached    (forward_vec, backward_vec) C % 4 == 0, C <= 1024,
//                      16-byte aligned rows: a group of LPR lanes (8, 16 or
//                      32: C = 32 takes 8 lanes, so a warp does 4 rows) holds
//                      its row in registers as float4s, read from memory
//                      exactly once and written once; the two-pass mean and
//                      variance run on the registers. The backward also
//                      accumulates dweight and dbias for its lanes' channels
//                      in registers over all the rows the group visits (a
//                      lane always owns the same channels) and writes one
//                      partial per block: x and dy are read once for all of
//                      dx, dweight and dbias (no second pass over them).
// The forward kernels can also apply NaLaFormer's attention gate (gate not
// null): out = y * silu(gate), y = the LayerNorm output, kept in ysave when
// that is not null (layernorm_gate_forward in norm.cu).
// Every sum has a fixed order, set by the shape only: results are identical
// run to run. Means and variances are two-pass (exact for large means).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/vec_io.cuh"

namespace nala {
namespace cuda {
namespace layernorm_rows {

constexpr int kWarps = 8;           // warps per block (block (32, 8))
constexpr int kMaxBlocksBwd = 512;  // blocks (and dweight/dbias partials) of the fused backward: one
                                    // wave of 4 blocks per SM on the H200 (132 SMs), a constant (the
                                    // partials, hence the bits, depend on the shape only)

template <int LPR = 32>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = LPR / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;  // every lane of the group holds the sum
}

// ---- warp per row -------------------------------------------------------------------

// Block (32, 8) = 8 rows.
static __global__ void forward_warp(float* out, float* mean, float* rstd, const float* x, const float* w,
                                    const float* b, int64_t O, int64_t C, float eps, const float* gate = nullptr,
                                    float* ysave = nullptr) {
  const int64_t o = (int64_t)blockIdx.x * kWarps + threadIdx.y;
  if (o >= O) return;  // the whole warp leaves together
  const int lane = threadIdx.x;
  const float* xr = x + o * C;
  float s = 0.0f;
  for (int64_t c = lane; c < C; c += 32) s += xr[c];
  const float m = group_sum(s) / C;
  float v = 0.0f;
  for (int64_t c = lane; c < C; c += 32) v += (xr[c] - m) * (xr[c] - m);
  const float rs = 1.0f / sqrtf(group_sum(v) / C + eps);
  float* yr = out + o * C;
  for (int64_t c = lane; c < C; c += 32) {
    const float y = (xr[c] - m) * rs * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
    if (ysave) ysave[o * C + c] = y;
    yr[c] = gate ? y * act::silu(gate[o * C + c]) : y;
  }
  if (lane == 0) mean[o] = m, rstd[o] = rs;
}

// dx = rs * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight. Block (32, 8) = 8 rows.
static __global__ void backward_warp(float* dx, const float* dout, const float* x, const float* mean,
                                     const float* rstd, const float* w, int64_t O, int64_t C) {
  const int64_t o = (int64_t)blockIdx.x * kWarps + threadIdx.y;
  if (o >= O) return;
  const int lane = threadIdx.x;
  const float* xr = x + o * C;
  const float* gr = dout + o * C;
  const float m = mean[o], rs = rstd[o];
  float m1 = 0.0f, m2 = 0.0f;
  for (int64_t c = lane; c < C; c += 32) {
    const float g = gr[c] * (w ? w[c] : 1.0f);
    m1 += g;
    m2 += g * (xr[c] - m) * rs;
  }
  m1 = group_sum(m1) / C, m2 = group_sum(m2) / C;
  float* dr = dx + o * C;
  for (int64_t c = lane; c < C; c += 32) dr[c] = rs * (gr[c] * (w ? w[c] : 1.0f) - m1 - (xr[c] - m) * rs * m2);
}

// ---- register-cached, float4 --------------------------------------------------------

__device__ __forceinline__ float4 f4(float a) { return make_float4(a, a, a, a); }
__device__ __forceinline__ float hsum(float4 v) { return (v.x + v.y) + (v.z + v.w); }

// Group g = (threadIdx.y * 32 + threadIdx.x) / LPR of the block, lane q of its
// group; its j-th float4 of the row is column 4 * (q + LPR * j). x and gate
// are stored as TX, out as TO (float or bf16; vec_io.cuh): every sum is in
// float32 and the store rounds once.
template <int LPR, int NV, class TX = float, class TO = float>
static __global__ void forward_vec(TO* out, float* mean, float* rstd, const TX* x, const float* w, const float* b,
                                   int64_t O, int C, float eps, const TX* gate, float* ysave) {
  constexpr int G = kWarps * 32 / LPR;  // rows per block
  const int t = threadIdx.y * 32 + threadIdx.x, q = t % LPR, C4 = C / 4;
  const int64_t o = (int64_t)blockIdx.x * G + t / LPR;
  const bool live = o < O;  // dead groups still take part in the shuffles of their warp
  const TX* xr = x + (live ? o : 0) * C;
  float4 v[NV];
  float s = 0.0f;
#pragma unroll
  for (int j = 0; j < NV; j++) {
    const int k = q + LPR * j;
    v[j] = live && k < C4 ? vio::ld4(xr + 4 * k) : f4(0.0f);
    s += hsum(v[j]);
  }
  const float m = group_sum<LPR>(s) / C;
  float var = 0.0f;
#pragma unroll
  for (int j = 0; j < NV; j++)
    if (q + LPR * j < C4) {
      const float4 d = make_float4(v[j].x - m, v[j].y - m, v[j].z - m, v[j].w - m);
      var += (d.x * d.x + d.y * d.y) + (d.z * d.z + d.w * d.w);
    }
  const float rs = 1.0f / sqrtf(group_sum<LPR>(var) / C + eps);
  if (!live) return;
  TO* yr = out + o * C;
#pragma unroll
  for (int j = 0; j < NV; j++) {
    const int k = q + LPR * j;
    if (k >= C4) break;
    const float4 wv = w ? reinterpret_cast<const float4*>(w)[k] : f4(1.0f);
    const float4 bv = b ? reinterpret_cast<const float4*>(b)[k] : f4(0.0f);
    float4 y = make_float4((v[j].x - m) * rs * wv.x + bv.x, (v[j].y - m) * rs * wv.y + bv.y,
                           (v[j].z - m) * rs * wv.z + bv.z, (v[j].w - m) * rs * wv.w + bv.w);
    if (gate) {
      if (ysave) reinterpret_cast<float4*>(ysave + o * C)[k] = y;
      const float4 g = vio::ld4(gate + o * C + 4 * k);
      y.x *= act::silu(g.x), y.y *= act::silu(g.y), y.z *= act::silu(g.z), y.w *= act::silu(g.w);
    }
    vio::st4(yr + 4 * k, y);
  }
  if (q == 0) mean[o] = m, rstd[o] = rs;
}

// dx (may be null) for every row, and when part is not null the block's
// partial sums of dweight (sum dy * xhat) and dbias (sum dy): part
// (gridDim.x, 2, C), rows [blk * O / nblk, (blk + 1) * O / nblk) for block
// blk; group g of the block takes rows r0 + g, r0 + g + G, ... The groups'
// register sums are added into shared memory one group after another.
// x and dx are stored as TX, dout as TD. With GATE the LayerNorm's output
// y = xhat * w + b was multiplied by silu(gate) (TX): y is made again from x,
// the LayerNorm's gradient is dy = dout * silu(gate), and the gate's,
// silu_backward(dout * y, gate), goes to dgate (nullable): the bits of
// gate_backward then the LayerNorm's backward, in one pass.
template <int LPR, int NV, class TX = float, class TD = float, bool GATE = false>
static __global__ void backward_vec(TX* dx, float* part, const TD* dout, const TX* x, const float* mean,
                                    const float* rstd, const float* w, int64_t O, int C, const TX* gate = nullptr,
                                    const float* b = nullptr, TX* dgate = nullptr) {
  constexpr int G = kWarps * 32 / LPR;
  extern __shared__ float sh[];  // (2, C) when part
  const int t = threadIdx.y * 32 + threadIdx.x, q = t % LPR, g = t / LPR, C4 = C / 4;
  const int64_t nblk = gridDim.x, r0 = blockIdx.x * O / nblk, r1 = (blockIdx.x + 1) * O / nblk;
  float4 wv[NV], adw[NV], adb[NV];
#pragma unroll
  for (int j = 0; j < NV; j++) {
    const int k = q + LPR * j;
    wv[j] = w && k < C4 ? reinterpret_cast<const float4*>(w)[k] : f4(1.0f);
    adw[j] = adb[j] = f4(0.0f);
  }
  // Every group of the block runs the same number of iterations (the warp's
  // shuffles need all 32 lanes); a group past r1 does no loads or stores.
  for (int64_t base = r0; base < r1; base += G) {
    const int64_t o = base + g;
    const bool live = o < r1;
    const TX* xr = x + (live ? o : 0) * C;
    const TD* gr = dout + (live ? o : 0) * C;
    const float m = live ? mean[o] : 0.0f, rs = live ? rstd[o] : 0.0f;
    float4 xh[NV], gv[NV];
    float m1 = 0.0f, m2 = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
      const int k = q + LPR * j;
      const bool in = live && k < C4;
      const float4 xv = in ? vio::ld4(xr + 4 * k) : f4(0.0f);
      float4 dy = in ? vio::ld4(gr + 4 * k) : f4(0.0f);
      xh[j] = make_float4((xv.x - m) * rs, (xv.y - m) * rs, (xv.z - m) * rs, (xv.w - m) * rs);
      if (GATE && in) {
        const float4 gt = vio::ld4(gate + o * C + 4 * k);
        const float4 bv = b ? reinterpret_cast<const float4*>(b)[k] : f4(0.0f);
        if (dgate) {
          const float4 y = make_float4(xh[j].x * wv[j].x + bv.x, xh[j].y * wv[j].y + bv.y,
                                       xh[j].z * wv[j].z + bv.z, xh[j].w * wv[j].w + bv.w);
          vio::st4(dgate + o * C + 4 * k,
                   make_float4(act::silu_backward(dy.x * y.x, gt.x), act::silu_backward(dy.y * y.y, gt.y),
                               act::silu_backward(dy.z * y.z, gt.z), act::silu_backward(dy.w * y.w, gt.w)));
        }
        dy = make_float4(dy.x * act::silu(gt.x), dy.y * act::silu(gt.y), dy.z * act::silu(gt.z),
                         dy.w * act::silu(gt.w));
      }
      gv[j] = make_float4(dy.x * wv[j].x, dy.y * wv[j].y, dy.z * wv[j].z, dy.w * wv[j].w);
      m1 += hsum(gv[j]);
      m2 += (gv[j].x * xh[j].x + gv[j].y * xh[j].y) + (gv[j].z * xh[j].z + gv[j].w * xh[j].w);
      adw[j].x += dy.x * xh[j].x, adw[j].y += dy.y * xh[j].y, adw[j].z += dy.z * xh[j].z, adw[j].w += dy.w * xh[j].w;
      adb[j].x += dy.x, adb[j].y += dy.y, adb[j].z += dy.z, adb[j].w += dy.w;
    }
    m1 = group_sum<LPR>(m1) / C, m2 = group_sum<LPR>(m2) / C;
    if (live && dx) {
      TX* dr = dx + o * C;
#pragma unroll
      for (int j = 0; j < NV; j++) {
        const int k = q + LPR * j;
        if (k >= C4) break;
        vio::st4(dr + 4 * k, make_float4(rs * (gv[j].x - m1 - xh[j].x * m2), rs * (gv[j].y - m1 - xh[j].y * m2),
                                         rs * (gv[j].z - m1 - xh[j].z * m2), rs * (gv[j].w - m1 - xh[j].w * m2)));
      }
    }
  }
  if (!part) return;
  for (int gg = 0; gg < G; gg++) {  // the groups' sums, in group order
    if (g == gg)
#pragma unroll
      for (int j = 0; j < NV; j++) {
        const int k = q + LPR * j;
        if (k >= C4) break;
        float* sw = sh + 4 * k;
        float* sb = sh + C + 4 * k;
        if (gg == 0) {
          sw[0] = adw[j].x, sw[1] = adw[j].y, sw[2] = adw[j].z, sw[3] = adw[j].w;
          sb[0] = adb[j].x, sb[1] = adb[j].y, sb[2] = adb[j].z, sb[3] = adb[j].w;
        } else {
          sw[0] += adw[j].x, sw[1] += adw[j].y, sw[2] += adw[j].z, sw[3] += adw[j].w;
          sb[0] += adb[j].x, sb[1] += adb[j].y, sb[2] += adb[j].z, sb[3] += adb[j].w;
        }
      }
    __syncthreads();
  }
  for (int c = t; c < 2 * C; c += kWarps * 32) part[(int64_t)blockIdx.x * 2 * C + c] = sh[c];
}

// dweight[c] and dbias[c] from the partials part (nblk, 2, C): a warp per
// (sum, channel), the lanes striding over the blocks in double, then a
// butterfly (a fixed order). One thread per channel adding the nblk
// partials in a row would be a chain of nblk dependent L2 round trips
// (~0.1 us each: 100-200 us for 1024 partials, more than the whole pass).
static __global__ void param_finish(float* dweight, float* dbias, const float* part, int64_t C, int nblk) {
  const int lane = threadIdx.x & 31;
  const int64_t wpb = blockDim.x / 32;
  for (int64_t j = blockIdx.x * wpb + threadIdx.x / 32; j < 2 * C; j += (int64_t)gridDim.x * wpb) {
    const int which = (int)(j / C);
    const int64_t c = j - which * C;
    float* dst = which ? dbias : dweight;
    if (!dst) continue;  // the whole warp
    double s = 0.0;
    for (int blk = lane; blk < nblk; blk += 32) s += part[((int64_t)blk * 2 + which) * C + c];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) dst[c] = (float)s;
  }
}

// ---- launchers --------------------------------------------------------------------

inline void finish_params(float* dweight, float* dbias, const float* part, int64_t C, int nblk) {
  const int64_t blocks = std::min<int64_t>((2 * C + kWarps - 1) / kWarps, 1 << 16);
  param_finish<<<(unsigned)blocks, 32 * kWarps>>>(dweight, dbias, part, C, nblk);
}

// Whether the register-cached kernels take this row shape and these pointers.
inline bool vec_ok(int64_t C, std::initializer_list<const void*> ptrs) {
  if (C % 4 != 0 || C > 1024 || C == 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Calls f.template go<LPR, NV>() for the group shape of C (C % 4 == 0, C <= 1024).
template <class F>
void dispatch(int64_t C, const F& f) {
  const int64_t C4 = C / 4;
  if (C4 <= 8) f.template go<8, 1>();
  else if (C4 <= 16) f.template go<16, 1>();
  else if (C4 <= 32) f.template go<32, 1>();
  else if (C4 <= 64) f.template go<32, 2>();
  else if (C4 <= 96) f.template go<32, 3>();
  else if (C4 <= 128) f.template go<32, 4>();
  else if (C4 <= 192) f.template go<32, 6>();
  else f.template go<32, 8>();
}

template <class TX = float, class TO = float>
struct ForwardLaunch {
  TO* out;
  float *mean, *rstd;
  const TX* x;
  const float *w, *b;
  int64_t O, C;
  float eps;
  const TX* gate;
  float* ysave;
  template <int LPR, int NV>
  void go() const {
    constexpr int G = kWarps * 32 / LPR;
    forward_vec<LPR, NV, TX, TO><<<(unsigned)((O + G - 1) / G), dim3(32, kWarps)>>>(out, mean, rstd, x, w, b, O,
                                                                                        (int)C, eps, gate, ysave);
  }
};

// y, mean, rstd of O rows of C (O > 0, C > 0); with gate, out = y * silu(gate)
// and y into ysave (nullable).
inline void forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int64_t O,
                    int64_t C, float eps, const float* gate = nullptr, float* ysave = nullptr) {
  if (vec_ok(C, {out, x, w, b, gate, ysave}))
    dispatch(C, ForwardLaunch<>{out, mean, rstd, x, w, b, O, C, eps, gate, ysave});
  else
    forward_warp<<<(unsigned)((O + kWarps - 1) / kWarps), dim3(32, kWarps)>>>(out, mean, rstd, x, w, b, O, C, eps,
                                                                              gate, ysave);
}

// The number of dweight/dbias partials the fused backward (backward_vec) writes for O rows of C.
inline int fused_blocks(int64_t O, int64_t C) {
  const int64_t G = kWarps * 32 / (C / 4 <= 8 ? 8 : C / 4 <= 16 ? 16 : 32);
  return (int)std::max<int64_t>(1, std::min<int64_t>((O + G - 1) / G, kMaxBlocksBwd));
}
// Whether the fused backward (backward_vec) takes these rows and pointers.
inline bool fused_ok(int64_t C, std::initializer_list<const void*> ptrs) { return C <= 512 && vec_ok(C, ptrs); }

template <class TX = float, class TD = float, bool GATE = false>
struct BackwardLaunch {
  TX* dx;
  float* part;
  const TD* dout;
  const TX* x;
  const float *mean, *rstd, *w;
  int64_t O, C;
  const TX* gate;
  const float* b;
  TX* dgate;
  template <int LPR, int NV>
  void go() const {
    const size_t smem = part ? 2 * C * sizeof(float) : 0;
    backward_vec<LPR, NV, TX, TD, GATE><<<fused_blocks(O, C), dim3(32, kWarps), smem>>>(
        dx, part, dout, x, mean, rstd, w, O, (int)C, gate, b, dgate);
  }
};

// dx only, any C and alignment.
inline void backward_dx_warp(float* dx, const float* dout, const float* x, const float* mean, const float* rstd,
                             const float* w, int64_t O, int64_t C) {
  backward_warp<<<(unsigned)((O + kWarps - 1) / kWarps), dim3(32, kWarps)>>>(dx, dout, x, mean, rstd, w, O, C);
}

}  // namespace layernorm_rows
}  // namespace cuda
}  // namespace nala
