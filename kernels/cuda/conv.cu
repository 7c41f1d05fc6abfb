// kernels/cuda/conv.cu - conv2d (im2col + cuda::gemm) and depthwise conv, CUDA.
//
// Shape letters: B batch, H W input size, Ho Wo output size, Ci Co channels,
// C depthwise channels, k kernel size, K = Ci*k*k. Activations (B, H, W, C)
// channels-last; weights (Co, Ci, k, k) / (C, 1, k, k). Saved for backward:
// x and w only. Backward OVERWRITES (=) dx, dw, dbias (each may be nullptr).
// Every reduction has a fixed order: results are identical run to run.
//
// conv2d mirrors the CPU version: whole images are unfolded chunk by chunk
// (bounded buffer) into cols (rows = images*Ho*Wo, K) and
//   forward   out   = cols @ w^T (+ bias)       the bias in the GEMM's store
//   backward  dw   += dout^T @ cols              one gemm per chunk
//             dcols = dout @ w, then col2im      gather form: no atomics
//             dbias = column sums of dout        linear_bias_backward (a linear
//                                                layer's bias gradient: the same sum)
// A 1x1 stride-1 unpadded conv skips the unfolding (cols is x itself).
// When the sizes fit int indices (conv_fits_int: every model's do), the
// forward and dw are implicit GEMMs instead, on tensor cores with bf16
// products (set_gemm_bf16: cuda::conv_bf16_f32_forward / _dw), else on the
// FP32 kernel (cuda::conv_fp32_forward / _dw): the GEMM reads the unfolding
// from x in place and nothing is unfolded into memory; its columns are
// channel-fastest (kernels/conv_gather.h), so the weights go in, and dw comes
// out, permuted to (Co, k, k, Ci) (swap_inner, a pass over the small weight
// array); dx of a stride-1 conv (padding at most k - 1) is the same implicit
// GEMM over dout with the taps reversed and the channels swapped
// (flip_transpose_kernel); dx of a strided conv as above (dcols, col2im).
// In bf16 mode the stem's 3 x 3 convolutions (the channel counts and strides
// dispatch3x3 lists) take the direct tensor-core kernels of conv3x3_tc.cuh
// instead, forward, dw and (stride 1) dx: shared-memory tiles, no gather.
// im2col: whole rows of cols through a shared tile (gathered channel-fastest,
// written out contiguously). col2im: one thread per dx element (channel fastest: coalesced
// writes), summing the taps that read it in (ky, kx) order like the CPU.
//
// dwconv2d: the stencil (shared-memory tile with halo, 8 output columns per
// thread in registers) is in dwconv_stencil.cuh, the kernel lab's last version.
// dx is the same stencil on dout with the kernel flipped. dw and dbias:
// per-(channel block, row block) partials (k = 3, 5, 7: each thread sums
// every tap over its rows in registers; other k: each thread a tap over the
// block's rows), then a second pass over the row blocks in a fixed order
// (double accumulation).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <climits>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/conv.h"
#include "kernels/cuda/conv3x3_tc.cuh"
#include "kernels/cuda/dwconv_stencil.cuh"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm_bf16.h"
#include "kernels/fastdiv.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/reduce_util.cuh"
#include "kernels/conv_geometry.h"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {

using reduce_util::col_block;
using reduce_util::col_blocks;
using reduce_util::col_index;
using reduce_util::column_sum;

constexpr int64_t kChunkFloats = int64_t(1) << 24;  // im2col buffer budget: 64 MB
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride loops beyond this

int blocks_for(int64_t n) { return (int)std::max<int64_t>(1, std::min((n + kThreads - 1) / kThreads, kMaxBlocks)); }

Tensor scratch(int64_t n) { return Tensor::empty({std::max<int64_t>(n, 1)}, DType::F32, Device::CUDA); }

// ---- conv2d helpers -------------------------------------------------------------

// The index math of im2col and col2im: int with FastDiv (kernels/fastdiv.h)
// when every index of the call fits (the usual case), int64_t with plain
// division otherwise (see fits_int). These kernels move little data per
// element, so their index divisions decide their speed.
struct PlainDiv {
  int64_t d = 1;
  PlainDiv() = default;
  explicit PlainDiv(int64_t v) : d(v) {}
  __device__ int64_t operator()(int64_t n) const { return n / d; }
};

#define GRID_STRIDE_I(I, e, n) \
  for (I e = (I)(blockIdx.x * blockDim.x + threadIdx.x); e < (n); e += (I)(gridDim.x * blockDim.x))

// The geometry of one im2col / col2im call, sizes in I, divisors as D.
template <typename I, typename D>
struct Unfold {
  I rows, H, W, Ci, Ho, Wo, k, stride, pad, kk, K;
  D by_Ci, by_kk, by_k, by_W, by_H, by_Wo, by_Ho, by_stride;
};

template <typename I, typename D>
Unfold<I, D> unfold(int64_t rows, int64_t H, int64_t W, int64_t Ci, int64_t Ho, int64_t Wo, int64_t k, int64_t stride,
                    int64_t pad) {
  Unfold<I, D> u;
  u.rows = (I)rows, u.H = (I)H, u.W = (I)W, u.Ci = (I)Ci, u.Ho = (I)Ho, u.Wo = (I)Wo;
  u.k = (I)k, u.stride = (I)stride, u.pad = (I)pad, u.kk = (I)(k * k), u.K = (I)(Ci * k * k);
  u.by_Ci = D(Ci), u.by_kk = D(k * k), u.by_k = D(k), u.by_W = D(W), u.by_H = D(H);
  u.by_Wo = D(Wo), u.by_Ho = D(Ho), u.by_stride = D(stride);
  return u;
}

// cols (rows, K) for images starting at x (already offset to the chunk's
// first image), TR whole rows of cols a block at a time (TR K <= kTile;
// launch_im2col takes TR small enough for about 1024 blocks): the taps are gathered channel-fastest (consecutive threads read
// consecutive channels of a pixel: coalesced) into a shared tile laid out as
// the rows of cols (ci major, then the tap; a stride of k*k between
// consecutive channels, conflict-free for odd k), then the tile is written
// out as one contiguous run of TR * K floats (coalesced).
constexpr int kTile = 8192;  // floats of the shared tile (32 KB)

template <typename I, typename D>
__global__ void im2col_tile_kernel(float* cols, const float* x, Unfold<I, D> u, I TR) {
  __shared__ float tile[kTile];
  for (I r0 = (I)blockIdx.x * TR; r0 < u.rows; r0 += (I)gridDim.x * TR) {
    const I n = min(TR, u.rows - r0) * u.K;
    for (I j = threadIdx.x; j < n; j += blockDim.x) {
      const I q = u.by_Ci(j), ci = j - q * u.Ci, rr = u.by_kk(q), t = q - rr * u.kk;
      const I row = r0 + rr, bo = u.by_Wo(row), ox = row - bo * u.Wo, b = u.by_Ho(bo), oy = bo - b * u.Ho;
      const I ky = u.by_k(t), iy = oy * u.stride - u.pad + ky, ix = ox * u.stride - u.pad + (t - ky * u.k);
      tile[rr * u.K + ci * u.kk + t] =
          iy >= 0 && iy < u.H && ix >= 0 && ix < u.W ? x[((b * u.H + iy) * u.W + ix) * u.Ci + ci] : 0.0f;
    }
    __syncthreads();
    float* out = cols + r0 * u.K;
    for (I j = threadIdx.x; j < n; j += blockDim.x) out[j] = tile[j];
    __syncthreads();
  }
}

// The same for K > kTile: a thread per (row, ci) writes that channel's k*k
// taps (consecutive threads: consecutive channels, coalesced reads).
template <typename I, typename D>
__global__ void im2col_kernel(float* cols, const float* x, Unfold<I, D> u) {
  GRID_STRIDE_I(I, e, u.rows * u.Ci) {
    const I row = u.by_Ci(e), ci = e - row * u.Ci;
    const I bo = u.by_Wo(row), ox = row - bo * u.Wo, b = u.by_Ho(bo), oy = bo - b * u.Ho;
    const I y0 = oy * u.stride - u.pad, x0 = ox * u.stride - u.pad;
    const float* xb = x + b * u.H * u.W * u.Ci + ci;
    float* out = cols + e * u.kk;  // row * K + ci * kk
    for (I ky = 0; ky < u.k; ky++) {
      const I iy = y0 + ky;
      const bool row_in = iy >= 0 && iy < u.H;
      for (I kx = 0; kx < u.k; kx++) {
        const I ix = x0 + kx;
        out[ky * u.k + kx] = row_in && ix >= 0 && ix < u.W ? xb[(iy * u.W + ix) * u.Ci] : 0.0f;
      }
    }
  }
}

// dx (nb images, overwritten) from dcols (nb*Ho*Wo, K): each element gathers its taps.
template <typename I, typename D>
__global__ void col2im_kernel(float* dx, const float* dcols, I nb, Unfold<I, D> u) {
  GRID_STRIDE_I(I, e, nb * u.H * u.W * u.Ci) {
    const I pix = u.by_Ci(e), ci = e - pix * u.Ci, by = u.by_W(pix), ix = pix - by * u.W, b = u.by_H(by),
            iy = by - b * u.H;
    float acc = 0.0f;
    for (I ky = 0; ky < u.k; ky++) {
      const I ty = iy + u.pad - ky;
      if (ty < 0) continue;
      const I oy = u.by_stride(ty);
      if (oy * u.stride != ty || oy >= u.Ho) continue;
      for (I kx = 0; kx < u.k; kx++) {
        const I tx = ix + u.pad - kx;
        if (tx < 0) continue;
        const I ox = u.by_stride(tx);
        if (ox * u.stride != tx || ox >= u.Wo) continue;
        acc += dcols[((b * u.Ho + oy) * u.Wo + ox) * u.K + ci * u.kk + ky * u.k + kx];
      }
    }
    dx[e] = acc;
  }
}

// Whether every index of an im2col / col2im call (element counts of cols and
// of the images, plus a grid-stride step) fits an int.
bool fits_int(int64_t rows, int64_t K, int64_t nb, int64_t H, int64_t W, int64_t Ci) {
  const int64_t lim = INT32_MAX - (int64_t)kMaxBlocks * kThreads;
  return 2 * rows * K < lim && nb * H * W * Ci < lim;  // 2x: a grid-stride step past the last row
}

template <typename I, typename D>
void launch_im2col(float* cols, const float* x, const Unfold<I, D>& u) {
  if (u.K <= kTile) {
    // Enough blocks to fill the GPU: a one-channel stem (K = 9) would
    // otherwise put 910 rows in each of 56 blocks.
    const int64_t TR = std::max<int64_t>(1, std::min<int64_t>(kTile / u.K, ((int64_t)u.rows + 1023) / 1024));
    im2col_tile_kernel<<<(int)std::min<int64_t>((u.rows + TR - 1) / TR, kMaxBlocks), kThreads>>>(cols, x, u, (I)TR);
  } else {
    im2col_kernel<<<blocks_for((int64_t)u.rows * u.Ci), kThreads>>>(cols, x, u);
  }
}

void im2col(float* cols, const float* x, int64_t nb, int64_t rows, int64_t H, int64_t W, int64_t Ci, int64_t Ho,
            int64_t Wo, int64_t k, int64_t stride, int64_t pad, const char* op) {
  if (rows == 0 || Ci * k * k == 0) return;  // no columns (Ci = 0 or k = 0): nothing to unfold
  if (fits_int(rows, Ci * k * k, nb, H, W, Ci))
    launch_im2col(cols, x, unfold<int, FastDiv>(rows, H, W, Ci, Ho, Wo, k, stride, pad));
  else
    launch_im2col(cols, x, unfold<int64_t, PlainDiv>(rows, H, W, Ci, Ho, Wo, k, stride, pad));
  CUDA_CHECK_LAUNCH(op);
}

void col2im(float* dx, const float* dcols, int64_t nb, int64_t rows, int64_t H, int64_t W, int64_t Ci, int64_t Ho,
            int64_t Wo, int64_t k, int64_t stride, int64_t pad, const char* op) {
  if (nb * H * W * Ci == 0) return;  // no dx elements
  if (Ci * k * k == 0) {             // no columns: nothing reaches dx
    CUDA_CHECK(cudaMemsetAsync(dx, 0, nb * H * W * Ci * sizeof(float)), op);
    return;
  }
  const int blocks = blocks_for(nb * H * W * Ci);
  if (fits_int(rows, Ci * k * k, nb, H, W, Ci))
    col2im_kernel<<<blocks, kThreads>>>(dx, dcols, (int)nb, unfold<int, FastDiv>(rows, H, W, Ci, Ho, Wo, k, stride, pad));
  else
    col2im_kernel<<<blocks, kThreads>>>(dx, dcols, nb, unfold<int64_t, PlainDiv>(rows, H, W, Ci, Ho, Wo, k, stride, pad));
  CUDA_CHECK_LAUNCH(op);
}



// out[c][j][i] = in[c][i][j] for in (n, a, b): the weights between the
// model's (Co, Ci, k k) and the implicit GEMM's channel-fastest (Co, k k, Ci).
__global__ void swap_inner_kernel(float* out, const float* in, int64_t n, int64_t a, int64_t b) {
  GRID_STRIDE_I(int64_t, e, n * a * b) {
    const int64_t j = e % b, ci = e / b, i = ci % a, c = ci / a;
    out[(c * b + j) * a + i] = in[e];
  }
}
void swap_inner(float* out, const float* in, int64_t n, int64_t a, int64_t b, const char* op) {
  if (n * a * b == 0) return;
  swap_inner_kernel<<<blocks_for(n * a * b), kThreads>>>(out, in, n, a, b);
  CUDA_CHECK_LAUNCH(op);
}

// wt (Ci, k k, Co) from w (Co, Ci, k k) with the taps reversed: wt[ci][t][co] =
// w[co][ci][kk - 1 - t], the kernel of a stride-1 conv's dx as a convolution of
// dout, in the implicit GEMM's (Co', k k, Ci') order (Co' = Ci, Ci' = Co).
__global__ void flip_transpose_kernel(float* wt, const float* w, int64_t Co, int64_t Ci, int64_t kk) {
  GRID_STRIDE_I(int64_t, e, Co * Ci * kk) {
    const int64_t t = e % kk, ci = e / kk % Ci, co = e / (kk * Ci);
    wt[(ci * kk + (kk - 1 - t)) * Co + co] = w[e];
  }
}

// The implicit GEMM takes the conv (see the file comment): an unfolding to
// avoid, int-sized.
std::atomic<bool> g_force_unfold{false};
bool implicit_gemm(const ConvGeom& g, int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t k, int64_t stride,
                   int64_t pad) {
  return !g_force_unfold && !g.direct && g.K > 0 && conv_fits_int(B, H, W, Ci, k, stride, pad);
}

// The implicit GEMM's forward and dw in the precision of the products: bf16
// tensor cores in bf16 mode, else the FP32 kernel.
void implicit_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                      int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad) {
  if (gemm_bf16_mode())
    conv_bf16_f32_forward(out, x, w, bias, B, H, W, Ci, Co, k, stride, pad);
  else
    conv_fp32_forward(out, x, w, bias, B, H, W, Ci, Co, k, stride, pad);
}
void implicit_dw(float* dw, const float* dout, const float* x, int64_t B, int64_t H, int64_t W, int64_t Ci,
                 int64_t Co, int64_t k, int64_t stride, int64_t pad) {
  if (gemm_bf16_mode())
    conv_bf16_f32_dw(dw, dout, x, B, H, W, Ci, Co, k, stride, pad);
  else
    conv_fp32_dw(dw, dout, x, B, H, W, Ci, Co, k, stride, pad);
}

bool aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// The direct tensor-core kernels (conv3x3_tc.cuh) take, in bf16 mode, 3 x 3
// padding-1 convolutions whose (input channels padded to CI, output channels,
// stride) they are compiled for: the stem's (and pico's) stride-1 C to C (and
// 16 to 32, 32 to 16: the dx of the latter), its first (1 or 3 channels, read
// as 16) and last at stride 2. Calls f.template go<CI, CO, S>() and returns
// true for those, else false.
template <class F>
bool dispatch3x3(int CI, int CO, int S, const F& f) {
#define NALA_C3(ci, co, s)                       \
  if (CI == ci && CO == co && S == s) {          \
    f.template go<ci, co, s>();                  \
    return true;                                 \
  }
  NALA_C3(16, 16, 1) NALA_C3(32, 32, 1) NALA_C3(48, 48, 1) NALA_C3(64, 64, 1) NALA_C3(16, 32, 1) NALA_C3(32, 16, 1)
  NALA_C3(16, 16, 2) NALA_C3(16, 32, 2) NALA_C3(16, 48, 2) NALA_C3(32, 64, 2)
#undef NALA_C3
  return false;
}
struct Probe3x3 {
  template <int CI, int CO, int S>
  void go() const {}
};

// The input channels the direct kernels read a conv's Ci as (an image's 1 or
// 3 padded to 16), or 0 where they do not take the conv.
int direct3x3(int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad,
              const float* x, const float* out) {
  if (!gemm_bf16_mode() || g_force_unfold || k != 3 || pad != 1 || (stride != 1 && stride != 2) || !aligned(out, 8) ||
      !conv_fits_int(B, H, W, Ci, k, stride, pad))
    return 0;
  const int CI = Ci < 16 ? 16 : (int)Ci;
  if (Ci < 16 ? (Ci != 1 && Ci != 3) || stride != 2 : !aligned(x, 16)) return 0;  // padded images at stride 2 only
  return Co <= 64 && dispatch3x3(CI, (int)Co, (int)stride, Probe3x3{}) ? CI : 0;
}

// Occupancy of a persistent kernel: its blocks on the device at once (at least one a multiprocessor).
template <class K>
int persistent_blocks(K kernel, int threads, int smem, const char* op) {
  int per_sm = 0, dev = 0, sms = 0;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), op);
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem), op);
  CUDA_CHECK(cudaGetDevice(&dev), op);
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), op);
  return std::max(per_sm, 1) * sms;
}

struct Conv3x3Args {
  float* out;  // forward: out (B, Ho, Wo, CO); dw: dw (CO, Ci, 3, 3)
  const float *x, *dout, *bias;
  const __nv_bfloat16* wt;
  int B, H, W, Ho, Wo, CIR;
  const char* op;
  const float *scale = nullptr, *shift = nullptr;  // forward: the epilogue's affine map and GELU
  bool gelu = false;
  // x read four channels a load: all CI channels present, 16-byte aligned
  bool vec(int CI) const { return CIR == CI && CIR % 4 == 0 && aligned(x, 16); }
  int tiles_h() const { return (Ho + conv3x3::TH - 1) / conv3x3::TH; }
  int tiles_w() const { return (Wo + conv3x3::TW - 1) / conv3x3::TW; }
  // the persistent grid: one block a tile, at most `resident` (what fits on the device at once)
  int grid(int resident) const {
    return (int)std::max<int64_t>(1, std::min<int64_t>((int64_t)B * tiles_h() * tiles_w(), resident));
  }
};

struct Forward3x3 {
  Conv3x3Args a;
  template <int CI, int CO, int S>
  void go() const {
    using namespace conv3x3;
    constexpr int smem = smem_bytes<CI, CO, S>();
    static const int blocks = persistent_blocks(conv3x3_kernel<CI, CO, S, float, float>, conv3x3::kThreads, smem, a.op);
    conv3x3_kernel<CI, CO, S, float, float><<<a.grid(blocks), conv3x3::kThreads, smem>>>(
        a.out, a.x, a.wt, a.bias, a.B, a.H, a.W, a.Ho, a.Wo, a.CIR, a.vec(CI), a.tiles_h(), a.tiles_w(), a.scale, a.shift,
        a.gelu);
    CUDA_CHECK_LAUNCH(a.op);
  }
};

// dw (CO, CIR, 3, 3), the model's layout, from the (nblk, 9, CO, CI) partials,
// in block order (reduce_util::column_sum).
__global__ void conv3x3_dw_finish(float* dw, const float* part, int64_t CO, int64_t CI, int64_t CIR, int nblk) {
  const int64_t ncol = 9 * CO * CI, j = col_index();  // j = (tap, o, i)
  const double s = column_sum(part + (j < ncol ? j : 0), nblk, ncol, j < ncol);
  if (threadIdx.y != 0 || j >= ncol) return;
  const int64_t tap = j / (CO * CI), o = (j / CI) % CO, i = j % CI;
  if (i < CIR) dw[(o * CIR + i) * 9 + tap] = (float)s;
}

struct Dw3x3 {
  Conv3x3Args a;
  template <int CI, int CO, int S>
  void go() const {
    using namespace conv3x3;
    constexpr int smem = dw_smem_bytes<CI, CO, S>();
    static const int blocks = persistent_blocks(conv3x3_dw_kernel<CI, CO, S, float>, kDwThreads, smem, a.op);
    const int nblk = a.grid(blocks);
    Tensor part = scratch((int64_t)nblk * 9 * CO * CI);
    conv3x3_dw_kernel<CI, CO, S, float><<<nblk, kDwThreads, smem>>>(
        part.f32(), a.dout, a.x, a.B, a.H, a.W, a.Ho, a.Wo, a.CIR, a.vec(CI), a.tiles_h(), a.tiles_w());
    CUDA_CHECK_LAUNCH(a.op);
    conv3x3_dw_finish<<<col_blocks(9 * CO * CI), col_block(nblk)>>>(a.out, part.f32(), CO, CI, a.CIR, nblk);
    CUDA_CHECK_LAUNCH(a.op);
  }
};

// out = the 3 x 3 convolution (stride S, padding 1) of x (B, H, W, Ci) by w
// (Co, Ci, 3, 3), input channels read as CI; or with flip (stride 1) the
// convolution whose result is dx for dout = x (taps reversed, channels
// swapped: x then has Co channels, out Ci; no bias).
void conv3x3_direct(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H, int64_t W,
                    int64_t Ci, int64_t Co, int S, int CI, bool flip, const char* op, const float* scale = nullptr,
                    const float* shift = nullptr, bool gelu = false) {
  const int in = flip ? (int)Co : CI, outc = flip ? (int)Ci : (int)Co;
  Tensor wt = Tensor::empty({9 * (int64_t)in * outc}, DType::BF16, Device::CUDA);
  auto* wb = reinterpret_cast<__nv_bfloat16*>(wt.bf16());
  conv3x3::conv3x3_weights<<<blocks_for(9 * (int64_t)in * outc), kThreads>>>(wb, w, outc, in, (int)Co, (int)Ci, flip);
  CUDA_CHECK_LAUNCH(op);
  const int Ho = (int)((H - 1) / S + 1), Wo = (int)((W - 1) / S + 1);
  Conv3x3Args a{out, x, nullptr, bias, wb, (int)B, (int)H, (int)W, Ho, Wo, flip ? (int)Co : (int)Ci, op};
  a.scale = scale, a.shift = shift, a.gelu = gelu;
  dispatch3x3(in, outc, S, Forward3x3{a});
}

void conv3x3_direct_dw(float* dw, const float* dout, const float* x, int64_t B, int64_t H, int64_t W, int64_t Ci,
                       int64_t Co, int S, int CI, const char* op) {
  const int Ho = (int)((H - 1) / S + 1), Wo = (int)((W - 1) / S + 1);
  const Conv3x3Args a{dw, x, dout, nullptr, nullptr, (int)B, (int)H, (int)W, Ho, Wo, (int)Ci, op};
  dispatch3x3(CI, (int)Co, S, Dw3x3{a});
}

}  // namespace

// ---- conv2d -----------------------------------------------------------------

void conv2d_force_unfold(bool on) { g_force_unfold = on; }
void dwconv_force_tiled(bool on) { dwconv_stencil::dw_force_tiled() = on; }

bool conv2d_affine_forward(float* out, const float* x, const float* w, const float* bias, const float* scale,
                           const float* shift, bool gelu, int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co,
                           int64_t k, int64_t stride, int64_t pad) {
  if (B == 0 || Co == 0) return false;
  const int CI = direct3x3(B, H, W, Ci, Co, k, stride, pad, x, out);
  if (!CI) return false;
  conv3x3_direct(out, x, w, bias, B, H, W, Ci, Co, (int)stride, CI, false, "conv2d_affine_forward", scale, shift,
                 gelu);
  return true;
}

void conv2d_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                    int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad) {
  const ConvGeom g = conv_geometry(H, W, Ci, k, stride, pad, kChunkFloats);
  if (B == 0 || g.per_image == 0 || Co == 0) return;
  if (const int CI = direct3x3(B, H, W, Ci, Co, k, stride, pad, x, out)) {
    conv3x3_direct(out, x, w, bias, B, H, W, Ci, Co, (int)stride, CI, false, "conv2d_forward");
    return;
  }
  if (implicit_gemm(g, B, H, W, Ci, k, stride, pad)) {
    Tensor wp = scratch(Co * g.K);
    swap_inner(wp.f32(), w, Co, Ci, k * k, "conv2d_forward");  // (Co, k k, Ci)
    implicit_forward(out, x, wp.f32(), bias, B, H, W, Ci, Co, k, stride, pad);
    return;
  }
  Tensor cols;
  if (!g.direct) cols = scratch(std::min(B, g.chunk) * g.per_image * g.K);
  for (int64_t b0 = 0; b0 < B; b0 += g.chunk) {
    const int64_t nb = std::min(g.chunk, B - b0), rows = nb * g.per_image;
    const float* A = g.direct ? x + b0 * g.per_image * Ci : cols.f32();
    if (!g.direct) im2col(cols.f32(), x + b0 * H * W * Ci, nb, rows, H, W, Ci, g.Ho, g.Wo, k, stride, pad, "conv2d_forward");
    // out = cols @ w^T + bias, the bias in the GEMM's store (v + bias: the same
    // bits as a bias-filled C with beta = 1)
    linear_forward(out + b0 * g.per_image * Co, A, w, bias, rows, Co, g.K);
  }
}

void conv2d_backward(float* dx, float* dw, float* dbias, const float* dout, const float* x, const float* w,
                     int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride,
                     int64_t pad) {
  const ConvGeom g = conv_geometry(H, W, Ci, k, stride, pad, kChunkFloats);
  if (dbias) linear_bias_backward(dbias, dout, B * g.per_image, Co);  // column sums of dout (rows, Co)
  if (!dx && !dw) return;
  if (B * g.per_image == 0 || Co == 0) {  // nothing flows back: the gradients are zero
    if (dw) CUDA_CHECK(cudaMemsetAsync(dw, 0, Co * g.K * sizeof(float)), "conv2d_backward");
    if (dx) CUDA_CHECK(cudaMemsetAsync(dx, 0, B * H * W * Ci * sizeof(float)), "conv2d_backward");
    return;
  }
  const int CI3 = dw && aligned(dout, 16) ? direct3x3(B, H, W, Ci, Co, k, stride, pad, x, dw) : 0;
  if (CI3) {
    conv3x3_direct_dw(dw, dout, x, B, H, W, Ci, Co, (int)stride, CI3, "conv2d_backward");
    dw = nullptr;  // done
    if (!dx) return;
  }
  if (dw && implicit_gemm(g, B, H, W, Ci, k, stride, pad)) {
    Tensor dwp = scratch(Co * g.K);
    implicit_dw(dwp.f32(), dout, x, B, H, W, Ci, Co, k, stride, pad);  // (Co, k k, Ci)
    swap_inner(dw, dwp.f32(), Co, k * k, Ci, "conv2d_backward");
    dw = nullptr;  // done
    if (!dx) return;
  }
  // (from here on, an implicit-GEMM conv has no dw left to make)
  if (dx && !dw && stride == 1 && direct3x3(B, g.Ho, g.Wo, Co, Ci, k, stride, pad, dout, dx) == (int)Co) {
    conv3x3_direct(dx, dout, w, nullptr, B, H, W, Ci, Co, 1, (int)Co, true, "conv2d_backward");  // Ho, Wo = H, W
    return;
  }
  if (dx && stride == 1 && pad <= k - 1 && implicit_gemm(g, B, H, W, Ci, k, stride, pad) &&
      conv_fits_int(B, g.Ho, g.Wo, Co, k, 1, k - 1 - pad)) {
    // A stride-1 conv's dx is itself a stride-1 convolution, of dout with the kernel's
    // taps reversed and its channels swapped, padding k - 1 - pad:
    //   dx[b, h, w, ci] = sum over co, ky, kx of dout[b, h + pad - ky, w + pad - kx, co] w[co, ci, ky, kx]
    // so it runs as the implicit GEMM too: no dcols buffer, no col2im.
    Tensor wt = scratch(Co * g.K);
    flip_transpose_kernel<<<blocks_for(Co * g.K), kThreads>>>(wt.f32(), w, Co, Ci, k * k);
    CUDA_CHECK_LAUNCH("conv2d_backward");
    implicit_forward(dx, dout, wt.f32(), nullptr, B, g.Ho, g.Wo, Co, Ci, k, 1, k - 1 - pad);
    return;
  }
  const int64_t buf = std::min(B, g.chunk) * g.per_image * g.K;
  Tensor cols, dcols;
  if (dw && !g.direct) cols = scratch(buf);
  if (dx && !g.direct) dcols = scratch(buf);
  for (int64_t b0 = 0; b0 < B; b0 += g.chunk) {
    const int64_t nb = std::min(g.chunk, B - b0), rows = nb * g.per_image;
    const float* dO = dout + b0 * g.per_image * Co;
    if (dw) {
      const float* A = g.direct ? x + b0 * g.per_image * Ci : cols.f32();
      if (!g.direct)
        im2col(cols.f32(), x + b0 * H * W * Ci, nb, rows, H, W, Ci, g.Ho, g.Wo, k, stride, pad, "conv2d_backward");
      gemm(true, false, Co, g.K, rows, 1.0f, dO, Co, A, g.K, b0 == 0 ? 0.0f : 1.0f, dw, g.K);
    }
    if (dx) {
      float* D = g.direct ? dx + b0 * g.per_image * Ci : dcols.f32();
      gemm(false, false, rows, g.K, Co, 1.0f, dO, Co, w, g.K, 0.0f, D, g.K);
      if (!g.direct)
        col2im(dx + b0 * H * W * Ci, dcols.f32(), nb, rows, H, W, Ci, g.Ho, g.Wo, k, stride, pad, "conv2d_backward");
    }
  }
}

// ---- depthwise conv2d ---------------------------------------------------------
// The stencil (forward, and dx with the taps flipped) is in dwconv_stencil.cuh,
// shared with the kernel lab (kernels/lab/dwconv_cuda.cu, its last version).

namespace {

using dwconv_stencil::dw_stencil;
using dwconv_stencil::ld1;

// Per (channel block, row block) partials of dw and dbias; part is (nblk, kk+1, C): taps, then bias.
// Block (32, 8): threadIdx.x a channel, threadIdx.y takes taps t = ty, ty+8, ... (t == kk: the bias)
// and sums each over all pixels of rows [blk*R/nblk, (blk+1)*R/nblk) of the R = B*H rows.
template <class T>
__global__ void dw_grad_partials(float* part, const T* g, const T* x, int64_t R, int64_t H, int64_t W,
                                 int64_t C, int k, int nblk, bool want_dw) {
  const int kk = k * k, p = k / 2, blk = blockIdx.y;
  const int64_t c = (int64_t)blockIdx.x * 32 + threadIdx.x;
  if (c >= C) return;
  const int64_t r0 = blk * R / nblk, r1 = (blk + 1) * R / nblk;
  for (int t = (int)threadIdx.y + (want_dw ? 0 : kk); t <= kk; t += blockDim.y) {
    float acc = 0.0f;
    if (t == kk) {
      for (int64_t r = r0; r < r1; r++)
        for (int64_t xx = 0; xx < W; xx++) acc += ld1(g + (r * W + xx) * C + c);
    } else {
      const int ky = t / k, kx = t % k;
      const int64_t xlo = max(0, p - kx), xhi = min(W, W + p - kx);
      for (int64_t r = r0; r < r1; r++) {
        const int64_t b = r / H, iy = r % H + ky - p;
        if (iy < 0 || iy >= H) continue;
        const T* gr = g + r * W * C + c;
        const T* xr = x + (b * H + iy) * W * C + c;
        for (int64_t xx = xlo; xx < xhi; xx++) acc += ld1(gr + xx * C) * ld1(xr + (xx + kx - p) * C);
      }
    }
    part[((int64_t)blk * (kk + 1) + t) * C + c] = acc;
  }
}

// The same partials for k = KS (3, 5, 7: the model's kernels), a row per
// lane: block (32, 8), lane ty takes rows r0 + ty, r0 + ty + 8, ... of the
// block's rows and keeps all KS*KS + 1 sums in registers, so a g value is
// loaded once for its KS*KS products, an x value once per row it serves
// (a window of registers slides along the row) and the sums are independent
// chains. Then the 8 lanes are added in lane order,
// tap by tap, through shared memory. (A thread per tap, above, reloads g for
// every tap and runs one long dependent chain: latency-bound, 30+ us.)
template <int KS, class T>
__global__ void dw_grad_partials_k(float* part, const T* g, const T* x, int64_t R, int64_t H, int64_t W,
                                   int64_t C, int nblk, bool want_dw) {
  constexpr int kk = KS * KS, P = KS / 2;
  __shared__ float sh[8][32];
  const int blk = blockIdx.y, tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = (int64_t)blockIdx.x * 32 + tx;
  const bool live = c < C;
  const int64_t r0 = blk * R / nblk, r1 = (blk + 1) * R / nblk;
  float acc[kk + 1];
#pragma unroll
  for (int t = 0; t <= kk; t++) acc[t] = 0.0f;
  if (live)
    for (int64_t r = r0 + ty; r < r1; r += 8) {
      const int64_t b = r / H, y = r - b * H;
      const T* gr = g + r * W * C + c;
      const T* xb = x + b * H * W * C + c;
      if (!want_dw) {
        for (int64_t xx = 0; xx < W; xx++) acc[kk] += ld1(gr + xx * C);
        continue;
      }
      // The KS x KS window of x under the output pixel, in registers: it
      // slides one column per step, so each x value is loaded once per row
      // (KS loads a step, not KS*KS); outside the image it holds zeros, whose
      // products add nothing.
      const T* xr[KS];
      bool row_in[KS];
#pragma unroll
      for (int ky = 0; ky < KS; ky++) {
        const int64_t iy = y + ky - P;
        row_in[ky] = iy >= 0 && iy < H;
        xr[ky] = xb + (row_in[ky] ? iy : 0) * W * C;
      }
      auto at = [&](int ky, int64_t ix) { return row_in[ky] && ix >= 0 && ix < W ? ld1(xr[ky] + ix * C) : 0.0f; };
      float win[KS][KS];
#pragma unroll
      for (int ky = 0; ky < KS; ky++) {
        win[ky][0] = 0.0f;
#pragma unroll
        for (int kx = 1; kx < KS; kx++) win[ky][kx] = at(ky, kx - 1 - P);  // columns -P - 1 + kx
      }
      for (int64_t xx = 0; xx < W; xx++) {
        const float gv = ld1(gr + xx * C);
        acc[kk] += gv;
#pragma unroll
        for (int ky = 0; ky < KS; ky++) {
#pragma unroll
          for (int kx = 0; kx + 1 < KS; kx++) win[ky][kx] = win[ky][kx + 1];
          win[ky][KS - 1] = at(ky, xx + P);  // now win[ky][kx] = x(y + ky - P, xx + kx - P)
#pragma unroll
          for (int kx = 0; kx < KS; kx++) acc[ky * KS + kx] += gv * win[ky][kx];
        }
      }
    }
#pragma unroll
  for (int t = 0; t <= kk; t++) {
    sh[ty][tx] = acc[t];
    __syncthreads();
    if (ty == 0 && live) {
      float s = sh[0][tx];
      for (int j = 1; j < 8; j++) s += sh[j][tx];
      part[((int64_t)blk * (kk + 1) + t) * C + c] = s;
    }
    __syncthreads();
  }
}

// dw[c*kk + t] (t < kk) and dbias[c] (t == kk): column t*C + c of the
// partials (nblk rows of (kk+1)*C), in row-block order (reduce_util::column_sum).
__global__ void dw_grad_finish(float* dw, float* dbias, const float* part, int64_t C, int k, int nblk) {
  const int kk = k * k;
  const int64_t ncol = (kk + 1) * C, j = col_index();
  const double s = column_sum(part + (j < ncol ? j : 0), nblk, ncol, j < ncol);
  if (threadIdx.y != 0 || j >= ncol) return;
  const int64_t t = j / C, c = j % C;
  if (t < kk) {
    if (dw) dw[c * kk + t] = (float)s;
  } else if (dbias) {
    dbias[c] = (float)s;
  }
}

// dx and the partials of dw and dbias in one pass over dout, for k = KS (3,
// 5). A thread takes VW = 4 channels (one 16-byte access of float, 8 of
// bf16) and a strip of PX pixels of one row, as dw_stencil_vec4 does: for
// each row ky of the flipped stencil it loads the PX + KS - 1 values of dout
// once and makes dx from them, and the same registers make the taps'
// gradient. dw[t] = sum_p g(p) x(p + off_t) = sum_p x(p) g(p - off_t), and
// g(p - off_t) is exactly the value the flipped stencil multiplies by tap t
// at pixel p; x(p), the input at the strip's own pixels, is loaded once
// (with pre given, x is h = gelu(pre) as the forward pass stored it: made
// here from pre, which the store's gelu' needs anyway, one erf for both).
// The bias's gradient is the sum of dout at the strip's pixels (the middle
// row's centre values).
// Block (cx, py): threadIdx.x a vector of channels, threadIdx.y a strip; the
// grid's x (nblk blocks) walks the strips, so each block leaves one row of
// partials (nblk, KS*KS + 1, C), summed in a fixed order: a thread's strips
// in turn, the block's threads in ty order; dw_grad_finish adds the blocks.
// This replaces a second pass that read dout and x again (and, for the FFN's
// gelu + depthwise op, a pass that made h again).
template <int N>
struct Vf {
  float v[N];
};
template <int N, class T>
__device__ __forceinline__ Vf<N> ldv(const T* p) {
  static_assert(N == 4, "vectors of 4 channels");
  const float4 a = vio::ld4(p);
  return Vf<N>{{a.x, a.y, a.z, a.w}};
}
template <int N, class T>
__device__ __forceinline__ void stv(T* p, const Vf<N>& a) {
  static_assert(N == 4, "vectors of 4 channels");
  vio::st4(p, make_float4(a.v[0], a.v[1], a.v[2], a.v[3]));
}

template <int KS, int PX, int VW, int MINB, class T>
__global__ void __launch_bounds__(256, MINB) dw_backward_fused(T* dx, float* part, const T* g, const T* x,
                                                                const float* w, int B, int H, int W, int C,
                                                                const T* add, const T* pre) {
  constexpr int kk = KS * KS, P = KS / 2, R = PX + KS - 1;
  using V = Vf<VW>;
  extern __shared__ float smf[];  // the flipped taps (kk, cx, VW), then the block's sums (py, cx, VW)
  const int cx = blockDim.x, py = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
  const int CV = C / VW, q = blockIdx.y * cx + tx;  // q: the thread's vector of channels
  const bool qok = q < CV;
  V* sw = reinterpret_cast<V*>(smf);
  V* sred = sw + kk * cx;
  for (int t = ty; t < kk; t += py) {
    V a;
#pragma unroll
    for (int i = 0; i < VW; i++) a.v[i] = qok ? __ldg(w + (VW * q + i) * kk + kk - 1 - t) : 0.0f;
    sw[t * cx + tx] = a;
  }
  __syncthreads();
  V acw[kk + 1];  // acw[t]: flipped tap t (dw's tap kk - 1 - t); acw[kk]: the bias
#pragma unroll
  for (int t = 0; t <= kk; t++)
#pragma unroll
    for (int i = 0; i < VW; i++) acw[t].v[i] = 0.0f;
  if (qok) {
    const int S = (W + PX - 1) / PX, HS = H * S;  // strips per row, per image
    for (int st = blockIdx.x * py + ty; st < B * HS; st += gridDim.x * py) {
      const int b = st / HS, r = st - b * HS, y = r / S, x0 = (r - y * S) * PX;
      V acc[PX], xc[PX], sl[PX];  // dx's sums; x (or h) and gelu's slope at the strip's pixels
#pragma unroll
      for (int j = 0; j < PX; j++) {
#pragma unroll
        for (int i = 0; i < VW; i++) acc[j].v[i] = 0.0f, xc[j].v[i] = 0.0f, sl[j].v[i] = 0.0f;
        if (x0 + j >= W) continue;  // past the row: x stays 0, so its products add nothing
        const int64_t at = VW * (((int64_t)(b * H + y) * W + x0 + j) * CV + q);
        if (pre) {
          const V pv = ldv<VW>(pre + at);
#pragma unroll
          for (int i = 0; i < VW; i++) {
            const float e = act::gelu_erf(pv.v[i]);
            xc[j].v[i] = vio::as_stored(x, act::gelu_of_erf(pv.v[i], e));
            sl[j].v[i] = act::gelu_slope_of_erf(pv.v[i], e);
          }
        } else {
          xc[j] = ldv<VW>(x + at);
        }
      }
#pragma unroll
      for (int ky = 0; ky < KS; ky++) {
        const int iy = y + ky - P;
        if (iy < 0 || iy >= H) continue;  // a row of zero padding: no dx, no taps' terms
        const T* row = g + ((int64_t)(b * H + iy) * W * CV + q) * VW;
        V v[R];
#pragma unroll
        for (int m = 0; m < R; m++) {
          const int ix = x0 + m - P;
          if (ix >= 0 && ix < W) {
            v[m] = ldv<VW>(row + (int64_t)ix * C);
          } else {
#pragma unroll
            for (int i = 0; i < VW; i++) v[m].v[i] = 0.0f;
          }
        }
#pragma unroll
        for (int kx = 0; kx < KS; kx++) {
          const V wv = sw[(ky * KS + kx) * cx + tx];
#pragma unroll
          for (int i = 0; i < VW; i++) {
            float s = 0.0f;
#pragma unroll
            for (int j = 0; j < PX; j++) {
              acc[j].v[i] += wv.v[i] * v[j + kx].v[i];
              s += xc[j].v[i] * v[j + kx].v[i];
            }
            acw[ky * KS + kx].v[i] += s;
          }
        }
        if (ky == P) {  // dout at the strip's own pixels (0 past the row)
#pragma unroll
          for (int j = 0; j < PX; j++)
#pragma unroll
            for (int i = 0; i < VW; i++) acw[kk].v[i] += v[j + P].v[i];
        }
      }
#pragma unroll
      for (int j = 0; j < PX; j++) {
        if (x0 + j >= W) break;
        const int64_t at = VW * (((int64_t)(b * H + y) * W + x0 + j) * CV + q);
        V o = acc[j];
        if (add) {
          const V a = ldv<VW>(add + at);
#pragma unroll
          for (int i = 0; i < VW; i++) o.v[i] = o.v[i] + a.v[i];
        }
        if (pre) {  // act::gelu_backward(o, pre): o times gelu's slope
#pragma unroll
          for (int i = 0; i < VW; i++) o.v[i] = o.v[i] * sl[j].v[i];
        }
        stv<VW>(dx + at, o);
      }
    }
  }
  // The block's threads of one vector of channels added in ty order, tap by tap.
#pragma unroll
  for (int t = 0; t <= kk; t++) {
    sred[ty * cx + tx] = acw[t];
    __syncthreads();
    if (ty == 0 && qok) {
      V s = sred[tx];
      for (int j = 1; j < py; j++)
#pragma unroll
        for (int i = 0; i < VW; i++) s.v[i] += sred[j * cx + tx].v[i];
      const int tap = t < kk ? kk - 1 - t : kk;
      float* out = part + ((int64_t)blockIdx.x * (kk + 1) + tap) * C + VW * q;
#pragma unroll
      for (int i = 0; i < VW; i++) out[i] = s.v[i];
    }
    __syncthreads();
  }
}

// dw_backward_fused's launch (then dw_grad_finish); false where it does not
// apply: k other than 3 and 5, C not a multiple of 4, misaligned vectors,
// 32-bit indices exceeded, or the tiled stencil forced (tests). Strips of 4 pixels, 4 channels a thread, 2 blocks of 256 a multiprocessor
// (128 registers): on an H200, t's bf16 training step took 48.7-48.9 ms with
// it, 49.7-49.9 with 4 pixels x 2 channels at 3 blocks, 51.9-52.0 with 2 x 4
// at 3, 50.7-51.2 with 2 x 2 at 4, and 51.8-52.4 with the two passes. The
// kernel is bound by its instructions (issue slots 60% busy, DRAM 12% at
// the stage-0 FFN's launch: GELU's erf and exp and the 18 products per
// value), not by its bytes.
template <class T>
bool dw_backward_fused_launch(T* dx, float* dw, float* dbias, const T* dout, const T* x, const float* w, int64_t B,
                              int64_t H, int64_t W, int64_t C, int64_t k, const T* add, const T* pre) {
  constexpr int PX = 4, VW = 4, MINB = 2;
  auto al = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % (VW * sizeof(T)) == 0; };
  if (dwconv_stencil::dw_force_tiled() || (k != 3 && k != 5) || C % VW != 0 || !al(dx) || !al(dout) || !al(x) ||
      !al(add) || !al(pre) || B * H * W * C >= INT32_MAX || (C / VW + 31) / 32 > 65535)
    return false;
  const int CV = (int)(C / VW), cx = std::min(CV, 32), ngroups = (CV + cx - 1) / cx, py = std::max(1, 256 / cx);
  const int kk = (int)(k * k);
  const size_t smem = (size_t)(kk + py) * cx * VW * sizeof(float);
  auto kernel = k == 3 ? dw_backward_fused<3, PX, VW, MINB, T> : dw_backward_fused<5, PX, VW, MINB, T>;
  // One wave of blocks (each walks its share of the strips): as few partials
  // as fill the GPU. The launch bound caps the registers so that MINB blocks
  // of up to 256 threads fit a multiprocessor.
  const int64_t strips = B * H * ((W + PX - 1) / PX);
  const int nblk = (int)std::max<int64_t>(
      1, std::min<int64_t>((strips + py - 1) / py, std::max<int64_t>(1, (int64_t)MINB * sm_count() / ngroups)));
  Tensor part = scratch((int64_t)nblk * (kk + 1) * C);
  kernel<<<dim3((unsigned)nblk, (unsigned)ngroups), dim3((unsigned)cx, (unsigned)py), smem>>>(
      dx, part.f32(), dout, x, w, (int)B, (int)H, (int)W, (int)C, add, pre);
  CUDA_CHECK_LAUNCH("dwconv2d_backward");
  dw_grad_finish<<<col_blocks((kk + 1) * C), col_block(nblk)>>>(dw, dbias, part.f32(), C, (int)k, nblk);
  CUDA_CHECK_LAUNCH("dwconv2d_backward");
  return true;
}

// h = gelu(pre) in T (bf16: rounded once), for the second pass's taps where
// the one-pass backward does not apply: the GELU op's kernels (elementwise.cu).
void gelu_values(float* h, const float* pre, int64_t n) { gelu_forward(h, pre, n); }
void gelu_values(__nv_bfloat16* h, const __nv_bfloat16* pre, int64_t n) {
  gelu_forward_bf16(reinterpret_cast<bf16_t*>(h), reinterpret_cast<const bf16_t*>(pre), n);
}

}  // namespace

namespace {

// dx (and dx_add: x + dwconv(x)) by the flipped stencil; dw, dbias from
// per-block partials, for activations of type T; dx multiplied by gelu's
// derivative at dgelu in the stencil's store where dgelu is given (then x
// is h = gelu(dgelu), or null: made from dgelu). One pass
// (dw_backward_fused) where it applies and all three are wanted, else the
// stencil and a second pass for the taps.
template <class T>
void dw_backward(T* dx, float* dw, float* dbias, const T* dout, const T* x, const float* w, int64_t B, int64_t H,
                 int64_t W, int64_t C, int64_t k, const T* dx_add, const T* dgelu = nullptr) {
  const bool want_w = (dw || dbias) && C > 0;
  if (dx && want_w && B * H * W > 0 &&
      dw_backward_fused_launch(dx, dw, dbias, dout, dgelu ? nullptr : x, w, B, H, W, C, k, dx_add, dgelu))
    return;
  if (dx) dw_stencil(dx, dout, w, nullptr, B, H, W, C, k, true, "dwconv2d_backward", dx_add, dgelu);
  if (!want_w) return;
  Tensor h;  // gelu(dgelu), where the caller left it to us
  if (!x && dgelu && dw) {
    const int64_t n = B * H * W * C;
    h = Tensor::empty({std::max<int64_t>(n, 1)}, sizeof(T) == 2 ? DType::BF16 : DType::F32, Device::CUDA);
    T* hp = static_cast<T*>(h.raw());
    gelu_values(hp, dgelu, n);
    x = hp;
  }
  const int64_t R = B * H, kk = k * k;
  const bool reg = k == 3 || k == 5 || k == 7;  // dw_grad_partials_k: 8 rows a block, one per lane
  const int nblk = (int)std::max<int64_t>(1, std::min<int64_t>(reg ? (R + 7) / 8 : R, reg ? 2048 : 512));
  Tensor part = scratch(nblk * (kk + 1) * C);
  const dim3 grid((unsigned)((C + 31) / 32), nblk), block(32, 8);
  const bool want_dw = dw != nullptr;
  switch (k) {
    case 3: dw_grad_partials_k<3><<<grid, block>>>(part.f32(), dout, x, R, H, W, C, nblk, want_dw); break;
    case 5: dw_grad_partials_k<5><<<grid, block>>>(part.f32(), dout, x, R, H, W, C, nblk, want_dw); break;
    case 7: dw_grad_partials_k<7><<<grid, block>>>(part.f32(), dout, x, R, H, W, C, nblk, want_dw); break;
    default: dw_grad_partials<<<grid, block>>>(part.f32(), dout, x, R, H, W, C, (int)k, nblk, want_dw);
  }
  CUDA_CHECK_LAUNCH("dwconv2d_backward");
  dw_grad_finish<<<col_blocks((kk + 1) * C), col_block(nblk)>>>(dw, dbias, part.f32(), C, (int)k, nblk);
  CUDA_CHECK_LAUNCH("dwconv2d_backward");
}

__nv_bfloat16* nv(bf16_t* p) { return reinterpret_cast<__nv_bfloat16*>(p); }
const __nv_bfloat16* nv(const bf16_t* p) { return reinterpret_cast<const __nv_bfloat16*>(p); }

}  // namespace

void dwconv2d_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                      int64_t W, int64_t C, int64_t k) {
  dw_stencil(out, x, w, bias, B, H, W, C, k, false, "dwconv2d_forward");
}

// The stencil with the addend in its store, as on the CPU (the same bits as a
// separate add; out must not be x, whose tiles other blocks still read).
void dwconv2d_add_forward(float* out, const float* x, const float* w, const float* bias, const float* add, int64_t B,
                          int64_t H, int64_t W, int64_t C, int64_t k) {
  dw_stencil(out, x, w, bias, B, H, W, C, k, false, "dwconv2d_add_forward", add);
}

void dwconv2d_backward(float* dx, float* dw, float* dbias, const float* dout, const float* x, const float* w,
                       int64_t B, int64_t H, int64_t W, int64_t C, int64_t k, const float* dx_add) {
  dw_backward(dx, dw, dbias, dout, x, w, B, H, W, C, k, dx_add);
}

void dwconv2d_add_forward_bf16(bf16_t* out, const bf16_t* x, const float* w, const float* bias, const bf16_t* add,
                               int64_t B, int64_t H, int64_t W, int64_t C, int64_t k) {
  dw_stencil(nv(out), nv(x), w, bias, B, H, W, C, k, false, "dwconv2d_forward (bf16)", nv(add));
}

void dwconv2d_backward_bf16(bf16_t* dx, float* dw, float* dbias, const bf16_t* dout, const bf16_t* x, const float* w,
                            int64_t B, int64_t H, int64_t W, int64_t C, int64_t k, const bf16_t* dx_add) {
  dw_backward(nv(dx), dw, dbias, nv(dout), nv(x), w, B, H, W, C, k, nv(dx_add));
}

// The FFN's backward: dpre = gelu'(pre) (dout + flipped stencil(dout)) in one
// stencil pass, the taps' and bias's gradients from dout and h = gelu(pre).
void dwconv2d_gelu_backward(float* dpre, float* dw, float* dbias, const float* dout, const float* h, const float* pre,
                            const float* w, int64_t B, int64_t H, int64_t W, int64_t C, int64_t k) {
  dw_backward(dpre, dw, dbias, dout, h, w, B, H, W, C, k, dout, pre);
}

void dwconv2d_gelu_backward_bf16(bf16_t* dpre, float* dw, float* dbias, const bf16_t* dout, const bf16_t* h,
                                 const bf16_t* pre, const float* w, int64_t B, int64_t H, int64_t W, int64_t C,
                                 int64_t k) {
  dw_backward(nv(dpre), dw, dbias, nv(dout), nv(h), w, B, H, W, C, k, nv(dout), nv(pre));
}

}  // namespace cuda
}  // namespace nala
