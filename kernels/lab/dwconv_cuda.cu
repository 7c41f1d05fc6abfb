// kernels/lab/dwconv_cuda.cu - the depthwise 7x7 convolution lab, CUDA, on
// the channels-last activations the engine uses. Walkthrough:
// docs/kernels.md; harness: kernels/lab/lab_cuda.cuh.
//
// Shape letters: B images of H x W pixels, C channels, k = 7 taps a side,
// p = k / 2. x and out are (B, H, W, C); w keeps PyTorch's (C, 1, k, k).
//
//   out[b, y, x, c] = bias[c] + sum_{ky, kx} w[c, ky, kx] x[b, y + ky - p, x + kx - p, c]
//   (zero padding: taps outside the image are skipped)
//
//   build/release/lab/dwconv_cuda [VERSION] [--size S] [--check] [--csv]
//     default B = 2, 9 x 11 pixels, C = 40 (a channel block and a column
//     tile cut short); --size S: B = 128, S x S pixels, C = 32 (NaLaFormer-xt's
//     first stage at batch 128 for S = 56, which docs/kernels.md times)
//
// Versions:
//   1  naive                   one thread per output; the 49 taps and pixels read from global memory
//   2  shared-memory tile      a block stages its input tile with the halo and the taps in
//                              shared memory; still one output per thread
//   3  register blocking       the tiled stencil (kernels/cuda/dwconv_stencil.cuh, dw_tiled):
//                              8 outputs per thread along a row, each input row in registers
//   4  float4 channels         the production stencil (dw_stencil_vec4): no shared tile, a
//                              strip of 4 pixels x 4 channels per thread, inputs through L1
// The reference is cpu::dwconv2d_forward_naive (double accumulation).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/conv.h"
#include "kernels/cuda/dwconv_stencil.cuh"
#include "kernels/lab/lab_cuda.cuh"

using namespace nala;

namespace {

constexpr int K = 7, P = K / 2;

struct Shape {
  int64_t B, H, W, C;
};

// ---- 1. naive: one thread per output value, channel fastest, so the 32
// threads of a warp read 32 consecutive channels of a pixel (coalesced).
// Each output reads its 49 pixels from global memory (the L1 and L2 catch
// most of the 49-fold reuse between neighbours, but every read is still an
// instruction and a trip to the cache), and its taps w[c * 49 + t]: 32
// channels 49 floats apart, 32 separate cache lines per warp per tap.
__global__ void v1_naive(float* out, const float* x, const float* w, const float* bias, Shape s) {
  const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= s.B * s.H * s.W * s.C) return;
  const int64_t c = e % s.C, pix = e / s.C, xx = pix % s.W, y = (pix / s.W) % s.H, b = pix / (s.W * s.H);
  float acc = bias[c];
  for (int ky = 0; ky < K; ky++) {
    const int64_t iy = y + ky - P;
    if (iy < 0 || iy >= s.H) continue;
    for (int kx = 0; kx < K; kx++) {
      const int64_t ix = xx + kx - P;
      if (ix < 0 || ix >= s.W) continue;
      acc += w[c * K * K + ky * K + kx] * x[((b * s.H + iy) * s.W + ix) * s.C + c];
    }
  }
  out[e] = acc;
}

// ---- 2. shared-memory tile with halo: a block of 32 channels x (4 x 8)
// output pixels, one output per thread (1024 threads). It first copies its
// input tile, (4 + 6) x (8 + 6) pixels x 32 channels, zero outside the
// image, and the 49 taps of its 32 channels (transposed to tap-major, so a
// warp reads 32 consecutive floats) into shared memory; after one barrier
// every tap reads shared memory only. Global traffic drops to the tile (with
// its halo: 140 pixels per 32 outputs) instead of 49 reads per output; but
// each FMA still needs two shared-memory loads (the pixel and the tap), so
// the shared-memory pipe, not the FMA units, is now the limit.
constexpr int kTH = 4, kTW = 8, kCh = 32;
__global__ void v2_tiled(float* out, const float* x, const float* w, const float* bias, Shape s, int ntx) {
  __shared__ float sx[kTH + K - 1][kTW + K - 1][kCh];
  __shared__ float sw[K * K][kCh];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kCh + tx;  // ty: a pixel of the 4 x 8 tile
  const int64_t x0 = (int64_t)(blockIdx.x % ntx) * kTW, c0 = (int64_t)(blockIdx.x / ntx) * kCh;
  const int64_t y0 = (int64_t)blockIdx.y * kTH, b = blockIdx.z;
  for (int e = tid; e < K * K * kCh; e += kTH * kTW * kCh) {
    const int64_t cc = c0 + e % kCh;
    sw[e / kCh][e % kCh] = cc < s.C ? w[cc * K * K + e / kCh] : 0.0f;
  }
  for (int e = tid; e < (kTH + K - 1) * (kTW + K - 1) * kCh; e += kTH * kTW * kCh) {
    const int q = e / kCh, col = q % (kTW + K - 1), row = q / (kTW + K - 1);
    const int64_t iy = y0 + row - P, ix = x0 + col - P, cc = c0 + e % kCh;
    sx[row][col][e % kCh] =
        (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W && cc < s.C) ? x[((b * s.H + iy) * s.W + ix) * s.C + cc] : 0.0f;
  }
  __syncthreads();
  const int py = ty / kTW, px = ty % kTW;
  const int64_t c = c0 + tx, y = y0 + py, xx = x0 + px;
  if (c >= s.C || y >= s.H || xx >= s.W) return;
  float acc = bias[c];
  for (int ky = 0; ky < K; ky++)
    for (int kx = 0; kx < K; kx++) acc += sw[ky * K + kx][tx] * sx[py + ky][px + kx][tx];
  out[((b * s.H + y) * s.W + xx) * s.C + c] = acc;
}

void v2(float* out, const float* x, const float* w, const float* bias, Shape s) {
  const int ntx = (int)lab::blocks_for(s.W, kTW), ncb = (int)lab::blocks_for(s.C, kCh);
  v2_tiled<<<dim3((unsigned)(ntx * ncb), lab::blocks_for(s.H, kTH), (unsigned)s.B), dim3(kCh, kTH * kTW)>>>(
      out, x, w, bias, s, ntx);
}

// ---- 3. register blocking (kernels/cuda/dwconv_stencil.cuh, dw_tiled):
// each thread computes 8 neighbouring outputs of a row. For each of the 7
// tap rows it loads the 14 input pixels it needs from shared memory into
// registers once, and each of the 7 taps once, then does 7 x 8 = 56 FMAs
// from registers: 21 shared loads per 56 FMAs instead of 2 per FMA. The
// block is 32 channels x 8 rows (TH = 8) x 8 columns; the tile row loop is
// unrolled for k = 7 so the 14 values really live in registers.
void v3(float* out, const float* x, const float* w, const float* bias, Shape s) {
  cuda::dwconv_stencil::dw_tiled(out, x, w, bias, s.B, s.H, s.W, s.C, K, false, "dwconv lab");
}

// ---- 4. float4 channels (production, dw_stencil_vec4 in
// kernels/cuda/dwconv_stencil.cuh): no shared tile at all. A thread owns a
// float4 of channels (16-byte loads and stores, 4 FMAs per instruction
// pair) and a strip of 4 pixels of a row; per tap row it loads the 4 + 6
// inputs of the strip into registers once (through the L1 cache, which
// neighbouring strips share) and makes 7 x 4 float4 FMAs from them. The
// taps, transposed to (49, channels) in shared memory, are one float4 load
// per tap. 32-bit index math. No halo copy, no barrier but the taps', no
// empty outputs at the image's edge beyond the last strip.
void v4(float* out, const float* x, const float* w, const float* bias, Shape s) {
  cuda::dwconv_stencil::dw_stencil(out, x, w, bias, s.B, s.H, s.W, s.C, K, false, "dwconv lab");
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: dwconv_cuda [VERSION] [--size S] [--check] [--csv] [--min-time S]\n"
      "  depthwise 7x7 conv, channels-last: default B = 2, 9 x 11, C = 40; --size S: B = 128, S x S, C = 32\n"
      "  (docs/kernels.md times S = 56)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  const Shape s = opt.size ? Shape{128, opt.size, opt.size, 32} : Shape{2, 9, 11, 40};
  const int64_t n = s.B * s.H * s.W * s.C;
  std::vector<float> xh(n), wh(s.C * K * K), bh(s.C), ref(n);
  lab::fill_normal(xh, 1, 1.0f);
  lab::fill_normal(wh, 2, 0.2f);
  lab::fill_uniform(bh, 3, -0.5f, 0.5f);
  cpu::dwconv2d_forward_naive(ref.data(), xh.data(), wh.data(), bh.data(), s.B, s.H, s.W, s.C, K);

  lab::DeviceArray<float> x(xh), w(wh), bias(bh), out(n);
  lab::Task t;
  t.name = "forward";
  t.flops = 2.0 * K * K * n;  // (the padded border does a little less)
  t.bytes = 8.0 * n + 4.0 * s.C * (K * K + 1);
  t.clear = [&] { out.poison(); };
  t.check = [&] {
    const std::vector<float> got = out.download();
    return lab::compare("out", got.data(), ref.data(), n, 1e-5, 1e-4);
  };
  std::vector<lab::GpuVersion> v = {
      {"naive, one thread per output", 0, lab::Unit::fp32, 0,
       [&] { v1_naive<<<lab::blocks_for(n, 256), 256>>>(out, x, w, bias, s); }},
      {"shared-memory tile with halo", 0, lab::Unit::fp32, 0, [&] { v2(out, x, w, bias, s); }},
      {"register blocking, shared tile", 0, lab::Unit::fp32, 0, [&] { v3(out, x, w, bias, s); }},
      {"float4 channels, pixel strips (production)", 0, lab::Unit::fp32, 0, [&] { v4(out, x, w, bias, s); }},
  };
  char desc[160];
  std::snprintf(desc, sizeof desc, "depthwise %dx%d conv, B = %lld, %lld x %lld pixels, C = %lld, channels-last", K,
                K, (long long)s.B, (long long)s.H, (long long)s.W, (long long)s.C);
  return lab::run_gpu("dwconv", desc, {t}, v, opt);
}
