// kernels/cuda/matmul.cu - single-precision GEMM on row-major device matrices
// (FP32 FFMA, no tensor cores) and the bias of a linear layer. The CPU
// kernels in kernels/cpu/matmul.cpp are the reference; the contract is in
// kernels/cpu/matmul.h.
//
// Letters: M, N the rows and columns of C, K the summed size; BM x BN the
// tile of C one block computes, BK the slice of K staged per step; R the rows
// of a linear layer's output Y[R, N].
//
//   C[M, N] = alpha * op(A) op(B) + beta * C   (beta = 0 overwrites, even NaN)
//
// gemm_tiled (kernels/cuda/gemm_fp32.cuh, shared with the GEMM lab, where it
//   is kernels/lab/gemm_cuda.cu's version 5, the last FP32 step): 256
//   threads, each owning 4 x 4 pieces of C, float4 loads, double-buffered
//   k-major shared tiles. Shapes: 128 x 128 x 8 when there are enough tiles
//   to fill the GPU and they do not pad much more than small ones, else the
//   one of 64 x 64, 128 x 32, 32 x 128, 256 x 16 and 16 x 256 (x 16) that pads least.
// Split-K: when even the small tiles leave SMs idle and K is long (the weight
//   gradient of a linear layer: M, N small, K = all rows), K is cut into
//   slices whose partial products go to a workspace [batch, splits, M, N];
//   a second kernel adds the slices in order (deterministic) and applies
//   alpha and beta.
//
// bf16 mode (set_gemm_bf16(true), `--precision bf16`): single products
//   (batch 1) with beta 0 or 1 run on tensor cores instead, their float32
//   operands rounded to bf16 on the way in (cuda::gemm_bf16_f32); beta = 1
//   is the GEMM's residual. Batched products and other betas stay FP32.
//
// linear_forward: the bias goes in the GEMM's store (bit for bit the
//   separate add: the product first, then + bias).
// linear_bias_forward: Y[r, :] += bias (accumulates, like the CPU kernel).
// linear_bias_backward: dbias = column sums of dY (overwrites): partial sums
//   over fixed chunks of rows, then the chunk sums added in a fixed order -
//   two passes, no atomics, the same bits every run.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstring>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm_bf16.h"
#include "kernels/cuda/gemm_fp32.cuh"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/reduce_util.cuh"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {

using fp32gemm::GemmParams;
using fp32gemm::THREADS;
using fp32gemm::gemm_tiled;
using reduce_util::col_block;
using reduce_util::col_blocks;
using reduce_util::col_index;
using reduce_util::column_sum;

// C = alpha * (sum of the slices of ws) + beta * C: column idx of the batch's
// slices (rows of M * N) added in a fixed order (reduce_util::column_sum).
// With dsum (batch 1), the workspace's slices are followed by the slices'
// row sums of op(A), (splits, M) (GemmParams::dsum): the threads past the
// M N products add those into dsum. (One column_sum call for every thread:
// it synchronises the block.)
__global__ void splitk_reduce(const float* ws, int splits, int64_t M, int64_t N, float alpha, float beta, float* C,
                              int64_t ldc, int64_t sC, int64_t total, const float* bias, float* dsum) {
  const int64_t idx = col_index(), MN = M * N;
  const bool in = idx < total, row_sum = dsum && idx >= MN;
  const int64_t b = row_sum ? 0 : idx / MN, r = idx - b * MN, m = r / N, n = r - m * N;
  const float* col = !in ? ws : row_sum ? ws + splits * MN + (idx - MN) : ws + b * splits * MN + r;
  const float acc = (float)column_sum(col, splits, row_sum ? M : MN, in);
  if (threadIdx.y != 0 || !in) return;
  if (row_sum) {
    dsum[idx - MN] = alpha * acc;
    return;
  }
  float* c = C + b * sC + m * ldc + n;
  const float v = (beta == 0.0f ? 0.0f : beta * *c) + alpha * acc;
  *c = bias ? v + bias[n] : v;
}

// C = beta * C (K = 0 or alpha = 0); beta = 0 writes zeros over anything.
__global__ void scale_c(float* C, int64_t M, int64_t N, int64_t ldc, int64_t sC, float beta, int64_t total) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = idx % N, r = idx / N, m = r % M, b = r / M;
    float* c = C + b * sC + m * ldc + n;
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

int grid_for(int64_t n, int threads) { return (int)std::min<int64_t>((n + threads - 1) / threads, 1 << 20); }

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

template <int BM, int BN, int BK>
void launch_tiled(bool ta, bool tb, GemmParams p, int64_t nz, int gather, bool epi) {
  dim3 grid((unsigned)((p.M + BM - 1) / BM), (unsigned)((p.N + BN - 1) / BN), 1);
  NALA_CHECK(grid.y <= 65535, "gemm: N = ", p.N, " is too large");
  for (int64_t z0 = 0; z0 < nz; z0 += 65535) {
    p.z0 = (int)z0;
    grid.z = (unsigned)std::min<int64_t>(65535, nz - z0);
    if (epi)  // a linear layer's forward with its epilogue: X W^T
      gemm_tiled<BM, BN, BK, false, true, 0, true><<<grid, THREADS>>>(p);
    else if (gather == 1)  // the implicit-GEMM convolution's forward: unfold(x) w^T
      gemm_tiled<BM, BN, BK, false, true, 1><<<grid, THREADS>>>(p);
    else if (gather == 2)  // its weight gradient: dout^T unfold(x)
      gemm_tiled<BM, BN, BK, true, false, 2><<<grid, THREADS>>>(p);
    else if (!ta && !tb)
      gemm_tiled<BM, BN, BK, false, false><<<grid, THREADS>>>(p);
    else if (ta && !tb)
      gemm_tiled<BM, BN, BK, true, false><<<grid, THREADS>>>(p);
    else if (!ta && tb)
      gemm_tiled<BM, BN, BK, false, true><<<grid, THREADS>>>(p);
    else
      gemm_tiled<BM, BN, BK, true, true><<<grid, THREADS>>>(p);
    CUDA_CHECK_LAUNCH("gemm");
  }
}

}  // namespace

// The device's multiprocessors (100 if it cannot be read); read once.
int sm_count() {
  static int n = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || v <= 0)
      v = 100;
    cudaGetLastError();
    return v;
  }();
  return n;
}

namespace {
std::atomic<bool> g_gemm_bf16{false};

// The FP32 kernel's tiles: 128 x 128 x 8 (64 outputs a thread), and five of
// 16 outputs a thread: 64 x 64, 128 x 32, 32 x 128, 256 x 16, 16 x 256 (x 16;
// the last two for 16-channel convolutions: the stem's).
enum Tile { kBig, kSquare, kTall, kWide, kTaller, kWider, kAuto };
constexpr int kTiles = kAuto;
constexpr int kTileDims[kTiles][2] = {{128, 128}, {64, 64}, {128, 32}, {32, 128}, {256, 16}, {16, 256}};
const char* const kTileNames[kTiles] = {"128x128", "64x64", "128x32", "32x128", "256x16", "16x256"};
std::atomic<int> g_force_tile{kAuto};

int64_t tile_count(Tile t, int64_t M, int64_t N, int64_t batch) {
  const int64_t bm = kTileDims[t][0], bn = kTileDims[t][1];
  return ((M + bm - 1) / bm) * ((N + bn - 1) / bn) * batch;
}

// The small tile that pads least, 64 x 64 on a tie (a linear layer 32 or 96
// wide runs on 128 x 32 tiles instead of half-empty 64 x 64 ones), unless the
// big tile pads about as little and either
// - fills the GPU for four waves or more (two blocks an SM), or for at least
//   one with K > 256: below that its 64 outputs a thread are a few k-steps of
//   waiting on loads with a ragged last wave, and the small tiles' four
//   times as many blocks (four an SM) hide more of it; or
// - both would cut a long K (>= 16384) into split-K slices: the slices set
//   the block count, and the big tile's blocks compute twice as much per
//   shared-memory load.
// Measured on an H200 (bench_gemm_cuda, forcing each tile): xt's stage-1
// product 401408 x 256 x 64 is 420 us on big tiles and 498 on 64 x 64;
// pico's 50176 x 128 x 32 (392 big tiles, 1.5 waves) 21 us on 64 x 64.
Tile choose_tile(int64_t M, int64_t N, int64_t K, int64_t batch) {
  if (g_force_tile != kAuto) return (Tile)g_force_tile.load();
  auto used = [&](Tile t) {
    return (double)M * N * batch / ((double)tile_count(t, M, N, batch) * kTileDims[t][0] * kTileDims[t][1]);
  };
  Tile small = kSquare;  // the first of the least padded, each later one only when it pads 5% less
  for (Tile t : {kTall, kWide, kTaller, kWider})
    if (used(t) > 1.05 * used(small)) small = t;
  const int64_t sms = sm_count(), big = tile_count(kBig, M, N, batch);
  if (used(kBig) >= 0.8 * used(small) && (big >= 8 * sms || (big >= sms && K > 256))) return kBig;
  if (used(kBig) >= 0.95 * used(small) && tile_count(small, M, N, batch) < sms && K >= 16384) return kBig;
  return small;
}
}  // namespace

void set_gemm_bf16(bool on) { g_gemm_bf16 = on; }
bool gemm_bf16_mode() { return g_gemm_bf16; }

const char* gemm_fp32_tile(int64_t M, int64_t N, int64_t K, int64_t batch) {
  return kTileNames[choose_tile(M, N, K, batch)];
}

void gemm_fp32_force_tile(const char* tile) {
  int t = kAuto;
  for (int i = 0; tile && i < kTiles; i++)
    if (std::strcmp(tile, kTileNames[i]) == 0) t = i;
  NALA_CHECK(!tile || t != kAuto, "gemm_fp32_force_tile: no tile \"", tile,
             "\" (128x128, 64x64, 128x32, 32x128, 256x16, 16x256)");
  g_force_tile = t;
}

// gemm_batched, plus bias (null, or N floats) added to every row of every C
// after alpha and beta, in the GEMM's store (the last step of the split-K sum).
// gather 1 or 2: A (not transposed) or B (not transposed) is the unfolding
// *conv of the image batch A or B (FP32 only; batch 1). lin: a linear
// layer's epilogue (linear_forward_epilogue) in the store, or in a pass after.
static void gemm_batched_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                              const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb,
                              int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c, int64_t batch,
                              const float* bias, int gather = 0, const ConvGather* conv = nullptr,
                              float* dsum = nullptr, const LinearEpilogue* lin = nullptr) {
  if (M <= 0 || N <= 0 || batch <= 0) return;
  NALA_CHECK(!lin || (batch == 1 && gather == 0 && !trans_a && trans_b && beta == 0.0f && ldc == N && !dsum &&
                      lin->rows_per_scale > 0 && lin->rows_per_scale < INT_MAX),
             "gemm: a linear epilogue needs one product X W^T");
  // Where the store cannot take the epilogue (bf16 mode, split-K, no product):
  // the product with its bias, then the epilogue as one pass over it.
  auto unfused = [&] {
    float* y = lin->pre ? lin->pre : C;
    gemm_batched_bias(false, true, M, N, K, alpha, A, lda, 0, B, ldb, 0, 0.0f, y, ldc, 0, 1, bias);
    linear_epilogue_apply(C, y, *lin, M, N);
  };
  if (lin && (K <= 0 || alpha == 0.0f || g_gemm_bf16)) return unfused();
  NALA_CHECK(M < INT_MAX && N < INT_MAX && K < INT_MAX && batch < INT_MAX, "gemm: sizes too large (M ", M, ", N ",
             N, ", K ", K, ", batch ", batch, ")");
  NALA_CHECK(!dsum || (batch == 1 && gather == 0 && !g_gemm_bf16), "gemm: row sums of op(A) need one FP32 product");
  if (dsum && (K <= 0 || alpha == 0.0f)) CUDA_CHECK(cudaMemsetAsync(dsum, 0, M * sizeof(float)), "gemm");
  if (K <= 0 || alpha == 0.0f) {
    int64_t total = batch * M * N;
    scale_c<<<grid_for(total, 256), 256>>>(C, M, N, ldc, stride_c, beta, total);
    CUDA_CHECK_LAUNCH("gemm");
    if (bias) {
      NALA_CHECK(batch == 1 && ldc == N, "gemm: a bias needs one C with rows of N");
      linear_bias_forward(C, bias, M, N);
    }
    return;
  }
  if (g_gemm_bf16 && batch == 1 && (beta == 0.0f || beta == 1.0f) && gather == 0) {
    GemmEpilogue epi;
    epi.bias = bias;
    if (beta == 1.0f) epi.residual = C, epi.ldr = ldc;
    gemm_bf16_f32(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, C, ldc, epi);
    return;
  }
  const Tile shape = choose_tile(M, N, K, batch);
  const int64_t ntiles = tile_count(shape, M, N, batch);
  const int sms = sm_count();

  GemmParams p;
  p.A = A, p.B = B, p.C = C;
  p.lda = lda, p.ldb = ldb, p.ldc = ldc;
  p.sA = stride_a, p.sB = stride_b, p.sC = stride_c;
  p.M = (int)M, p.N = (int)N, p.K = (int)K;
  p.splits = 1, p.kchunk = (int)K, p.z0 = 0;
  p.alpha = alpha, p.beta = beta;
  p.bias = bias;
  p.vecA = aligned16(A) && lda % 4 == 0 && stride_a % 4 == 0;
  p.vecB = aligned16(B) && ldb % 4 == 0 && stride_b % 4 == 0;
  p.vecC = aligned16(C) && ldc % 4 == 0 && stride_c % 4 == 0;
  if (gather) {
    NALA_CHECK(conv && batch == 1 && (gather == 1 ? !trans_a : !trans_b), "gemm: a bad gathered operand");
    p.conv = *conv;
  }
  p.dsum = dsum;

  // Split-K: aim for four blocks per SM (a 64 x 64 block of 8 warps alone on
  // an SM waits on its loads), slices of at least 128, a bounded workspace.
  // The slices' sum is one more pass over splits x M x N floats, in L2.
  int64_t splits = 1;
  if (ntiles < sms && K >= 512) {
    splits = std::min<int64_t>((4 * sms + ntiles - 1) / ntiles, K / 128);
    splits = std::min<int64_t>(splits, std::max<int64_t>(1, ((int64_t)1 << 26) / (batch * M * N)));
  }
  if (lin && splits > 1) return unfused();
  const bool fused = lin != nullptr;
  if (fused) {
    p.gelu = lin->gelu, p.res = lin->res, p.gamma = lin->gamma, p.row_scale = lin->row_scale;
    p.rows_per_scale = (int)lin->rows_per_scale, p.pre = lin->pre;
    p.vecC = p.vecC && aligned16(p.res) && aligned16(p.pre);
  }
  Tensor ws;
  if (splits > 1) {
    int64_t kchunk = ((K + splits - 1) / splits + 15) / 16 * 16;  // a multiple of BK keeps float4 alignment
    splits = (K + kchunk - 1) / kchunk;
    ws = Tensor::empty({batch * splits * M * N + (dsum ? splits * M : 0)}, DType::F32, Device::CUDA);
    p.C = ws.f32(), p.ldc = N, p.sC = M * N;
    p.alpha = 1.0f, p.beta = 0.0f, p.bias = nullptr;
    if (dsum) p.dsum = ws.f32() + splits * M * N;  // the slices' row sums, (splits, M)
    p.vecC = aligned16(p.C) && N % 4 == 0;
    p.splits = (int)splits, p.kchunk = (int)kchunk;
  }
  switch (shape) {
    case kAuto:  // not returned by choose_tile
    case kBig: launch_tiled<128, 128, 8>(trans_a, trans_b, p, batch * splits, gather, fused); break;
    case kSquare: launch_tiled<64, 64, 16>(trans_a, trans_b, p, batch * splits, gather, fused); break;
    case kTall: launch_tiled<128, 32, 16>(trans_a, trans_b, p, batch * splits, gather, fused); break;
    case kWide: launch_tiled<32, 128, 16>(trans_a, trans_b, p, batch * splits, gather, fused); break;
    case kTaller: launch_tiled<256, 16, 16>(trans_a, trans_b, p, batch * splits, gather, fused); break;
    case kWider: launch_tiled<16, 256, 16>(trans_a, trans_b, p, batch * splits, gather, fused); break;
  }
  if (splits > 1) {
    int64_t total = batch * M * N + (dsum ? M : 0);
    splitk_reduce<<<col_blocks(total), col_block(splits)>>>(ws.f32(), (int)splits, M, N, alpha, beta, C, ldc, stride_c,
                                                      total, bias, dsum);
    CUDA_CHECK_LAUNCH("gemm");
  }
  // ws goes back to the caching allocator here; later kernels on the same
  // stream that reuse it run after splitk_reduce.
}

void linear_backward_weight_bias(float* dW, float* db, const float* dY, const float* X, int64_t R, int64_t O,
                                 int64_t I) {
  if (g_gemm_bf16 || I == 0) {  // the bf16 GEMM makes no row sums (and with I = 0 there is no product): two passes
    gemm(true, false, O, I, R, 1.0f, dY, O, X, I, 0.0f, dW, I);
    linear_bias_backward(db, dY, R, O);
    return;
  }
  // dW = dY^T X, db[o] = the sum over k of (dY^T)[o, k]: op(A)'s row sums
  gemm_batched_bias(true, false, O, I, R, 1.0f, dY, O, 0, X, I, 0, 0.0f, dW, I, 0, 1, nullptr, 0, nullptr, db);
}

void conv_fp32_forward(float* out, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                       int64_t W, int64_t Ci, int64_t Co, int64_t k, int64_t stride, int64_t pad) {
  const ConvGather g = conv_gather(x, B, H, W, Ci, k, stride, pad, "conv2d_forward");
  // out[rows, Co] = unfold(x)[rows, cols] w[Co, cols]^T (+ bias)
  gemm_batched_bias(false, true, g.rows, Co, g.cols, 1.0f, x, g.cols, 0, w, g.cols, 0, 0.0f, out, Co, 0, 1, bias, 1,
                    &g);
}

void conv_fp32_dw(float* dw, const float* dout, const float* x, int64_t B, int64_t H, int64_t W, int64_t Ci,
                  int64_t Co, int64_t k, int64_t stride, int64_t pad) {
  const ConvGather g = conv_gather(x, B, H, W, Ci, k, stride, pad, "conv2d_backward");
  // dw[Co, cols] = dout[rows, Co]^T unfold(x)[rows, cols]
  gemm_batched_bias(true, false, Co, g.cols, g.rows, 1.0f, dout, Co, 0, x, g.cols, 0, 0.0f, dw, g.cols, 0, 1,
                    nullptr, 2, &g);
}

void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                  int64_t ldc, int64_t stride_c, int64_t batch) {
  gemm_batched_bias(trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c,
                    batch, nullptr);
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_batched(trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

// ---- linear bias --------------------------------------------------------------

namespace {

__global__ void bias_add(float* Y, const float* bias, int64_t N, int64_t total) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x)
    Y[idx] += bias[idx % N];
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void from_float(float* p, float v) { *p = v; }
__device__ __forceinline__ void from_float(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// out[c, n] = sum of f(r, n) over the rows r of chunk c (chunk rows each), in
// a fixed order: 8 row lanes stride through the chunk, then lane sums are
// added 0..7. Blocks of 32 x 8 threads: a warp reads 32 consecutive columns.
// f is called once for each (r, n).
template <class F>
__global__ void col_sums(F f, float* out, int64_t R, int64_t N, int64_t chunk, int64_t nchunks) {
  __shared__ float part[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t n = blockIdx.x * 32 + tx;
  for (int64_t c = blockIdx.y; c < nchunks; c += gridDim.y) {
    float acc = 0.0f;
    if (n < N) {
      const int64_t r1 = (c + 1) * chunk < R ? (c + 1) * chunk : R;
      for (int64_t r = c * chunk + ty; r < r1; r += 8) acc += f(r, n);
    }
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && n < N) {
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < 8; i++) s += part[i][tx];
      out[c * N + n] = s;
    }
    __syncthreads();
  }
}

// X[r, n] (rows of N), as float: the bias gradient's column sums.
template <class T>
struct Entry {
  const T* X;
  int64_t N;
  __device__ float operator()(int64_t r, int64_t n) const { return to_float(X[r * N + n]); }
};

// The backward of out = res + s_r gamma[n] y[r, n] (s_r = row_scale[r /
// rows_per_scale], or 1) for gradient g: each call stores dy = (g s_r)
// gamma[n] (when dy) and returns (g s_r) y[r, n], summed into dgamma.
template <class TY, class TD>
struct ScaleGrad {
  const float *g, *gamma, *row_scale;
  const TY* y;
  TD* dy;
  int64_t N, rows_per_scale;
  __device__ float operator()(int64_t r, int64_t n) const {
    const int64_t i = r * N + n;
    float gv = g[i];
    if (row_scale) gv *= row_scale[r / rows_per_scale];
    if (dy) from_float(dy + i, gv * gamma[n]);
    return gv * to_float(y[i]);
  }
};

// out[n] = the chunk sums part[c * N + n] added in a fixed order (reduce_util::column_sum).
__global__ void chunk_sums_finish(const float* part, float* out, int64_t nchunks, int64_t N) {
  const int64_t n = col_index();
  const double s = column_sum(part + (n < N ? n : 0), nchunks, N, n < N);
  if (threadIdx.y == 0 && n < N) out[n] = (float)s;
}

// out[n] = the sum of f(r, n) over the R rows, in a fixed order: chunks of at
// least 256 rows, at most ~1024 of them (the cut depends on R only), then the
// chunk sums in double.
template <class F>
void column_sums(const F& f, float* out, int64_t R, int64_t N, const char* op) {
  if (N <= 0) return;
  NALA_CHECK((N + 31) / 32 <= INT_MAX, op, ": N = ", N, " is too large");
  const int64_t chunk = std::max<int64_t>(256, ((R + 1023) / 1024 + 7) / 8 * 8);
  const int64_t nchunks = std::max<int64_t>(1, (R + chunk - 1) / chunk);
  Tensor part = nchunks > 1 ? Tensor::empty({nchunks * N}, DType::F32, Device::CUDA) : Tensor();
  float* dst = nchunks > 1 ? part.f32() : out;  // one chunk (R = 0 too: zeros) straight into out
  dim3 block(32, 8), grid((unsigned)((N + 31) / 32), (unsigned)std::min<int64_t>(nchunks, 65535));
  col_sums<<<grid, block>>>(f, dst, R, N, chunk, nchunks);
  CUDA_CHECK_LAUNCH(op);
  if (nchunks == 1) return;
  chunk_sums_finish<<<col_blocks(N), col_block(nchunks)>>>(part.f32(), out, nchunks, N);
  CUDA_CHECK_LAUNCH(op);
}

}  // namespace

void linear_forward(float* Y, const float* X, const float* W, const float* bias, int64_t R, int64_t O, int64_t I) {
  if (R <= 0 || O <= 0) return;
  gemm_batched_bias(false, true, R, O, I, 1.0f, X, I, 0, W, I, 0, 0.0f, Y, O, 0, 1, bias);
}

void linear_forward_epilogue(float* Y, const float* X, const float* W, const float* bias, int64_t R, int64_t O,
                             int64_t I, const LinearEpilogue& e) {
  if (R <= 0 || O <= 0) return;
  gemm_batched_bias(false, true, R, O, I, 1.0f, X, I, 0, W, I, 0, 0.0f, Y, O, 0, 1, bias, 0, nullptr, nullptr, &e);
}

void linear_epilogue_apply(float* Y, const float* y, const LinearEpilogue& e, int64_t R, int64_t O) {
  linear_epilogue_passes(Y, y, e, R, O, gelu_forward, scale_add_forward, copy);
}

void linear_bias_forward(float* Y, const float* bias, int64_t R, int64_t N) {
  int64_t total = R * N;
  if (total <= 0) return;
  bias_add<<<grid_for(total, 256), 256>>>(Y, bias, N, total);
  CUDA_CHECK_LAUNCH("linear_bias_forward");
}

void linear_bias_backward(float* dbias, const float* dY, int64_t R, int64_t N) {
  column_sums(Entry<float>{dY, N}, dbias, R, N, "linear_bias_backward");
}
void linear_bias_backward_bf16(float* dbias, const bf16_t* dY, int64_t R, int64_t N) {
  column_sums(Entry<__nv_bfloat16>{reinterpret_cast<const __nv_bfloat16*>(dY), N}, dbias, R, N,
              "linear_bias_backward");
}

namespace {
template <class TY, class TD>
void scale_grads_t(void* dy, float* dgamma, const float* g, const void* y, const float* gamma, const float* row_scale,
                   int64_t rows_per_scale, int64_t R, int64_t N) {
  Tensor tmp = dgamma ? Tensor() : Tensor::empty({std::max<int64_t>(N, 1)}, DType::F32, Device::CUDA);
  column_sums(ScaleGrad<TY, TD>{g, gamma, row_scale, static_cast<const TY*>(y), static_cast<TD*>(dy), N,
                                std::max<int64_t>(rows_per_scale, 1)},
              dgamma ? dgamma : tmp.f32(), R, N, "scale_rows_backward");
}
}  // namespace

void scale_rows_backward(void* dy, bool dy_bf16, float* dgamma, const float* g, const void* y, bool y_bf16,
                         const float* gamma, const float* row_scale, int64_t rows_per_scale, int64_t R, int64_t N) {
  using B = __nv_bfloat16;
  if (y_bf16) {
    if (dy_bf16) scale_grads_t<B, B>(dy, dgamma, g, y, gamma, row_scale, rows_per_scale, R, N);
    else scale_grads_t<B, float>(dy, dgamma, g, y, gamma, row_scale, rows_per_scale, R, N);
  } else {
    if (dy_bf16) scale_grads_t<float, B>(dy, dgamma, g, y, gamma, row_scale, rows_per_scale, R, N);
    else scale_grads_t<float, float>(dy, dgamma, g, y, gamma, row_scale, rows_per_scale, R, N);
  }
}

}  // namespace cuda
}  // namespace nala
