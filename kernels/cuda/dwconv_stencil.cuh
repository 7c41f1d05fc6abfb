// kernels/cuda/dwconv_stencil.cuh - the depthwise convolution stencil, CUDA:
// out = stencil(x) (+ bias), and with flip the taps reversed (dx = the
// flipped stencil of dout). Used by dwconv2d_forward / dwconv2d_backward
// (conv.cu) and, as its last version, by the kernel lab
// (kernels/lab/dwconv_cuda.cu, walkthrough in docs/kernels.md).
//
// Activations (B, H, W, C) channels-last, weights (C, 1, k, k). A block is
// 32 channels (threadIdx.x: coalesced channels-last reads and writes) x TH
// output rows (threadIdx.y) x 8 output columns (per thread, in registers).
// The input tile with its halo, (TH+k-1) x (8+k-1) x 32, and the taps
// (k*k x 32) sit in shared memory; an optional addend joins the store; k = 3, 5, 7 are compiled with the tile
// row held in registers: each of the k+7 inputs of a row is read from shared
// memory once and used by up to k of the 8 outputs (register blocking). TH
// shrinks (8, 4, 2, 1) to keep the tile within 48 KB; a kernel too large for
// any tile (k >= 13) takes a direct kernel (one thread per output, taps read
// through the cache).
//
// Where C % 4 == 0, the arrays are 16-byte aligned and k is 3, 5 or 7,
// dw_stencil_vec4 takes over: a thread computes a strip of 4 pixels of one
// row for a float4 of channels, reading the inputs through the L1 cache
// (neighbouring strips share them), without a shared tile. Small images
// (pico's 14 x 14, 7 x 7 and 4 x 4) leave most of the tiled kernel's 8 x 8
// output tile empty and its shared tile costs a round trip that so little
// work cannot hide: pico's inference went from 195,800 to 200,800 img/s on an
// H200 with it; at 224 px (xt, t) it measured 1-2% faster too. The block's
// taps sit in shared memory, transposed to (k*k, channels) so a float4 of
// taps is one load. The same sums in the same (ky, kx) order.
//
// Activations (x, add, out) are float or bf16 (T): bf16 values are widened
// as they are loaded (a float4 of channels is one 8-byte load), every sum is
// in float32, and the store rounds once (to nearest even). Taps and bias stay
// float32.
//
// With dgelu (an array of out's shape, nullable) the store multiplies by
// GELU's derivative there: the FFN's backward, dpre = gelu'(pre) (dout +
// flipped stencil(dout)), in the pass that makes dh, rounded once.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/vec_io.cuh"

namespace nala {
namespace cuda {
namespace dwconv_stencil {

constexpr int kDwCh = 32;        // channels per block (threadIdx.x)
constexpr int kDwTW = 8;         // output columns per thread
constexpr int kDwSmem = 48 * 1024;  // bytes of shared memory a tile may use

inline int dw_smem_bytes(int TH, int k) { return ((TH + k - 1) * (kDwTW + k - 1) + k * k) * kDwCh * (int)sizeof(float); }

// Loads and stores of an activation of type T (float or bf16) as float32.
using vio::ld1;
using vio::ld4;
using vio::st1;
using vio::st4;

// out = stencil(x) (+ bias) (+ add, an array of out's shape, added in the store);
// with flip the taps are read reversed (dx = flipped stencil of dout).
// Grid: x = column tiles * channel blocks, y = row tiles, z = batch. Block (32, TH).
template <int KS, class T>
static __global__ void dw_stencil_tiled(T* out, const T* x, const float* w, const float* bias, int64_t H,
                                 int64_t W, int64_t C, int k_rt, bool flip, int ntx, const T* add,
                                 const T* dgelu) {
  extern __shared__ float sm[];
  const int k = KS > 0 ? KS : k_rt, kk = k * k, p = k / 2;
  const int TH = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
  const int tw = kDwTW + k - 1, th = TH + k - 1;
  float* sx = sm;                     // (th, tw, 32)
  float* sw = sm + th * tw * kDwCh;   // (kk, 32)
  const int x0 = (int)(blockIdx.x % ntx) * kDwTW, c0 = (int)(blockIdx.x / ntx) * kDwCh;
  const int y0 = (int)blockIdx.y * TH, Hi = (int)H, Wi = (int)W, Ci = (int)C;  // H W C < 2^31 (dw_stencil)
  const int64_t b = blockIdx.z;
  // Each thread loads its own channel (tx) of the tile's positions ty, ty + TH, ...: one
  // division by the (compile-time) tile width and 32-bit index math per load.
  const int cc = c0 + tx;
  const bool cok = cc < Ci;
  for (int t = ty; t < kk; t += TH) sw[t * kDwCh + tx] = cok ? __ldg(w + cc * kk + (flip ? kk - 1 - t : t)) : 0.0f;
  const T* xb = x + b * H * W * C + cc;
  for (int q = ty; q < th * tw; q += TH) {
    const int row = q / tw, col = q - row * tw, iy = y0 + row - p, ix = x0 + col - p;
    sx[q * kDwCh + tx] = (cok && iy >= 0 && iy < Hi && ix >= 0 && ix < Wi) ? ld1(xb + (iy * Wi + ix) * Ci) : 0.0f;
  }
  __syncthreads();
  const int64_t c = cc, y = y0 + ty;
  if (!cok || y >= H) return;
  float acc[kDwTW];
  const float bv = bias ? bias[c] : 0.0f;
#pragma unroll
  for (int j = 0; j < kDwTW; j++) acc[j] = bv;
  for (int ky = 0; ky < k; ky++) {
    const float* srow = sx + (ty + ky) * tw * kDwCh + tx;
    const float* wrow = sw + ky * k * kDwCh + tx;
    if constexpr (KS > 0) {
      float r[kDwTW + KS - 1];
#pragma unroll
      for (int q = 0; q < kDwTW + KS - 1; q++) r[q] = srow[q * kDwCh];
#pragma unroll
      for (int kx = 0; kx < KS; kx++) {
        const float wv = wrow[kx * kDwCh];
#pragma unroll
        for (int j = 0; j < kDwTW; j++) acc[j] += wv * r[j + kx];
      }
    } else {
      for (int kx = 0; kx < k; kx++) {
        const float wv = wrow[kx * kDwCh];
#pragma unroll
        for (int j = 0; j < kDwTW; j++) acc[j] += wv * srow[(j + kx) * kDwCh];
      }
    }
  }
  const int64_t at = ((b * H + y) * W + x0) * C + c;
  T* o = out + at;
#pragma unroll
  for (int j = 0; j < kDwTW; j++)
    if (x0 + j < W) {
      float v = add ? acc[j] + ld1(add + at + j * C) : acc[j];
      if (dgelu) v = act::gelu_backward(v, ld1(dgelu + at + j * C));
      st1(o + j * C, v);
    }
}

// Block (C4b, PY): threadIdx.x a float4 of channels (C4b of the C / 4 per
// block, blockIdx.y picks the group), threadIdx.y a strip of kDwPX pixels of
// one row; the grid's x walks the B * H * ceil(W / kDwPX) strips PY at a
// time. A strip's row of kDwPX + k - 1 inputs is loaded once per ky and
// used by up to k of its outputs (register blocking, as in the tiled
// kernel). Taps in shared memory: (k*k, C4b) float4s.
constexpr int kDwPX = 4;
template <int KS, class T>
static __global__ void dw_stencil_vec4(T* out, const T* x, const float* w, const float* bias, int B, int H,
                                       int W, int C, bool flip, const T* add, const T* dgelu) {
  extern __shared__ float4 sw4[];
  constexpr int kk = KS * KS, p = KS / 2, R = kDwPX + KS - 1;
  const int C4 = C / 4, tx = threadIdx.x, q = blockIdx.y * blockDim.x + tx;  // q: the thread's float4 of channels
  const bool qok = q < C4;
  for (int t = threadIdx.y; t < kk; t += blockDim.y) {
    const int tt = flip ? kk - 1 - t : t;
    sw4[t * blockDim.x + tx] = qok ? make_float4(__ldg(w + (4 * q) * kk + tt), __ldg(w + (4 * q + 1) * kk + tt),
                                                 __ldg(w + (4 * q + 2) * kk + tt), __ldg(w + (4 * q + 3) * kk + tt))
                                   : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  __syncthreads();
  if (!qok) return;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  const float4 bv = bias ? reinterpret_cast<const float4*>(bias)[q] : zero;
  const int S = (W + kDwPX - 1) / kDwPX, HS = H * S;  // strips per row, per image
  for (int st = blockIdx.x * blockDim.y + threadIdx.y; st < B * HS; st += gridDim.x * blockDim.y) {
    const int b = st / HS, r = st - b * HS, y = r / S, x0 = (r - y * S) * kDwPX;
    float4 acc[kDwPX];
#pragma unroll
    for (int j = 0; j < kDwPX; j++) acc[j] = bv;
#pragma unroll
    for (int ky = 0; ky < KS; ky++) {
      const int iy = y + ky - p;
      if (iy < 0 || iy >= H) continue;
      const T* row = x + ((int64_t)(b * H + iy) * W * C4 + q) * 4;
      float4 v[R];
#pragma unroll
      for (int i = 0; i < R; i++) {
        const int ix = x0 + i - p;
        v[i] = ix >= 0 && ix < W ? ld4(row + (int64_t)ix * C) : zero;
      }
#pragma unroll
      for (int kx = 0; kx < KS; kx++) {
        const float4 wv = sw4[(ky * KS + kx) * blockDim.x + tx];
#pragma unroll
        for (int j = 0; j < kDwPX; j++) {
          acc[j].x += wv.x * v[j + kx].x, acc[j].y += wv.y * v[j + kx].y;
          acc[j].z += wv.z * v[j + kx].z, acc[j].w += wv.w * v[j + kx].w;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kDwPX; j++) {
      if (x0 + j >= W) break;
      const int64_t at = ((int64_t)(b * H + y) * W + x0 + j) * C4 + q;
      float4 o = acc[j];
      if (add) {
        const float4 a = ld4(add + 4 * at);
        o.x = o.x + a.x, o.y = o.y + a.y, o.z = o.z + a.z, o.w = o.w + a.w;
      }
      if (dgelu) {
        const float4 p = ld4(dgelu + 4 * at);
        o.x = act::gelu_backward(o.x, p.x), o.y = act::gelu_backward(o.y, p.y);
        o.z = act::gelu_backward(o.z, p.z), o.w = act::gelu_backward(o.w, p.w);
      }
      st4(out + 4 * at, o);
    }
  }
}

// Tests and benchmarks: true makes dw_stencil take the tiled kernel everywhere.
inline bool& dw_force_tiled() {
  static bool on = false;
  return on;
}

// dw_stencil_vec4's launch for k = KS; false when it does not apply.
template <class T>
inline bool dw_vec4(T* out, const T* x, const float* w, const float* bias, int64_t B, int64_t H, int64_t W,
                    int64_t C, int64_t k, bool flip, const char* op, const T* add, const T* dgelu) {
  auto al = [](const void* ptr, int bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; };
  constexpr int v = 4 * sizeof(T);  // bytes of four activations
  if (dw_force_tiled() || C % 4 != 0 || !al(out, v) || !al(x, v) || !al(bias, 16) || !al(add, v) || !al(dgelu, v) ||
      B * H * W * C >= INT32_MAX || (k != 3 && k != 5 && k != 7) || (C / 4 + 31) / 32 > 65535)
    return false;
  const int C4 = (int)(C / 4), cx = std::min(C4, 32), ngroups = (C4 + cx - 1) / cx, py = std::max(1, 256 / cx);
  const int64_t strips = B * H * ((W + kDwPX - 1) / kDwPX);
  const dim3 grid((unsigned)std::min<int64_t>((strips + py - 1) / py, 1 << 20), (unsigned)ngroups),
      block((unsigned)cx, (unsigned)py);
  const size_t smem = (size_t)k * k * cx * sizeof(float4);
  const int b = (int)B, h = (int)H, wd = (int)W, c = (int)C;
  switch (k) {
    case 3: dw_stencil_vec4<3, T><<<grid, block, smem>>>(out, x, w, bias, b, h, wd, c, flip, add, dgelu); break;
    case 5: dw_stencil_vec4<5, T><<<grid, block, smem>>>(out, x, w, bias, b, h, wd, c, flip, add, dgelu); break;
    default: dw_stencil_vec4<7, T><<<grid, block, smem>>>(out, x, w, bias, b, h, wd, c, flip, add, dgelu);
  }
  CUDA_CHECK_LAUNCH(op);
  return true;
}

// The same stencil without tiles, for kernels whose tile does not fit in shared memory.
template <class T>
static __global__ void dw_stencil_direct(T* out, const T* x, const float* w, const float* bias, int64_t B,
                                  int64_t H, int64_t W, int64_t C, int k, bool flip, const T* add,
                                  const T* dgelu) {
  const int kk = k * k, p = k / 2;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < B * H * W * C;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = e % C, pix = e / C, xx = pix % W, by = pix / W, y = by % H, b = by / H;
    float acc = bias ? bias[c] : 0.0f;
    for (int ky = 0; ky < k; ky++) {
      const int64_t iy = y + ky - p;
      if (iy < 0 || iy >= H) continue;
      for (int kx = 0; kx < k; kx++) {
        const int64_t ix = xx + kx - p;
        if (ix < 0 || ix >= W) continue;
        const int t = ky * k + kx;
        acc += w[c * kk + (flip ? kk - 1 - t : t)] * ld1(x + ((b * H + iy) * W + ix) * C + c);
      }
    }
    if (add) acc += ld1(add + e);
    if (dgelu) acc = act::gelu_backward(acc, ld1(dgelu + e));
    st1(out + e, acc);
  }
}

// The tiled kernel (or the direct one where no tile fits), any C, k and alignment.
template <class T>
inline void dw_tiled(T* out, const T* x, const float* w, const float* bias, int64_t B, int64_t H, int64_t W,
                     int64_t C, int64_t k, bool flip, const char* op, const T* add = nullptr,
                     const T* dgelu = nullptr) {
  if (B * H * W * C == 0) return;
  int TH = 8;
  while (TH > 1 && dw_smem_bytes(TH, (int)k) > kDwSmem) TH /= 2;
  const int64_t rows = (H + TH - 1) / TH, ntx = (W + kDwTW - 1) / kDwTW, ncb = (C + kDwCh - 1) / kDwCh;
  if (dw_smem_bytes(TH, (int)k) > kDwSmem || rows > 65535 || B > 65535 || ntx * ncb > INT32_MAX ||
      H * W * C + (W + k) * C >= INT32_MAX) {  // the tiled kernel's 32-bit offsets within an image
    dw_stencil_direct<T><<<(unsigned)std::max<int64_t>(1, std::min<int64_t>((B * H * W * C + 255) / 256, 1 << 16)), 256>>>(
        out, x, w, bias, B, H, W, C, (int)k, flip, add, dgelu);
    CUDA_CHECK_LAUNCH(op);
    return;
  }
  const dim3 grid((unsigned)(ntx * ncb), (unsigned)rows, (unsigned)B), block(kDwCh, TH);
  const size_t smem = dw_smem_bytes(TH, (int)k);
  switch (k) {
    case 3: dw_stencil_tiled<3, T><<<grid, block, smem>>>(out, x, w, bias, H, W, C, 3, flip, (int)ntx, add, dgelu); break;
    case 5: dw_stencil_tiled<5, T><<<grid, block, smem>>>(out, x, w, bias, H, W, C, 5, flip, (int)ntx, add, dgelu); break;
    case 7: dw_stencil_tiled<7, T><<<grid, block, smem>>>(out, x, w, bias, H, W, C, 7, flip, (int)ntx, add, dgelu); break;
    default: dw_stencil_tiled<0, T><<<grid, block, smem>>>(out, x, w, bias, H, W, C, (int)k, flip, (int)ntx, add, dgelu);
  }
  CUDA_CHECK_LAUNCH(op);
}

// The production stencil: dw_stencil_vec4 where it applies, else the tiled kernel.
template <class T>
inline void dw_stencil(T* out, const T* x, const float* w, const float* bias, int64_t B, int64_t H, int64_t W,
                       int64_t C, int64_t k, bool flip, const char* op, const T* add = nullptr,
                       const T* dgelu = nullptr) {
  if (B * H * W * C == 0) return;
  if (dw_vec4(out, x, w, bias, B, H, W, C, k, flip, op, add, dgelu)) return;
  dw_tiled(out, x, w, bias, B, H, W, C, k, flip, op, add, dgelu);
}

}  // namespace dwconv_stencil
}  // namespace cuda
}  // namespace nala
