// kernels/cuda/attention_softmax.cu - softmax attention with 2-D RoPE on the
// GPU (docs/SPEC.md §3; math, saved tensors and the overwrite rule in
// kernels/cpu/attention.h). Declared in kernels/cuda/attention.h.
//
// Shape letters: G problems, N = H * W tokens, D head dim (D % 4 == 0,
// D <= 128); rq = rope(q), rk = rope(k) are applied as the rows are staged in
// shared memory (from the (H + W, D/4) pair table of kernels/cuda/rope.h), so
// the kernels allocate nothing of size N * D: forward no workspace, backward
// the G * N floats of Dl.
//
// Flash-style: nothing N x N is stored. A block owns kRows rows (queries in
// forward and in the dq pass, keys in the dk/dv pass), a warp kRows / kWarps
// of them; the other side is staged in shared memory kKT = 32 rows at a time
// (row stride D + 1, so that lane j reading row j hits distinct banks), lane
// j takes row j of the tile for the dot products, and the weights are
// broadcast with shuffles to accumulate the D-vectors (lane c owns columns
// c, c + 32, ...). Forward keeps a running max and sum per row (online
// softmax) and writes lse = max + log(sum). Backward, as on the CPU:
// Dl_i = go_i . o_i, P_ij = exp(s_ij - lse_i), dS_ij = P_ij (go_i . v_j - Dl_i) / sqrt(D);
// dq = rope^T(sum_j dS_ij rk_j); dk = rope^T(sum_i dS_ij rq_i), dv = sum_i P_ij go_i.
// Every sum runs in a fixed order: results are deterministic.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/rope.h"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {

constexpr int kMaxD = 128;
constexpr int kRows = 32;              // rows owned by a block
constexpr int kWarps = 4;              // warps per block
constexpr int kRPW = kRows / kWarps;   // rows per warp
constexpr int kKT = 32;                // rows of the other side per staged tile (one per lane)
constexpr int kCPL = kMaxD / 32;       // columns per lane

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// rows [r0, r0 + n) of a (N, D) array into shared rows of stride ld; zeros past N.
__device__ __forceinline__ void stage(float* s, int ld, int n, const float* X, int64_t r0, int64_t N, int D) {
  for (int idx = threadIdx.x; idx < n * D; idx += blockDim.x) {
    const int t = idx / D, c = idx % D;
    s[t * ld + c] = r0 + t < N ? X[(r0 + t) * D + c] : 0.0f;
  }
}

// The angles of one problem's grid: (cos, sin) per rope pair and coordinate
// (rope_pair_table_device: entry r * D/4 + i for the pair i of row r, entry
// (H + c) * D/4 + i for the pair i of column c).
struct RopeTab {
  const float2* tab;
  int H, W;
  // (cos, sin) of the pair at even feature e of token n.
  __device__ __forceinline__ float2 at(int64_t n, int e, int D) const {
    const int r = (int)(n / W), c = (int)(n - (int64_t)r * W), Q = D / 4;
    return e < D / 2 ? __ldg(tab + r * Q + e / 2) : __ldg(tab + (H + c) * Q + (e - D / 2) / 2);
  }
};

// As stage, with rope applied: y_e = x_e cos - x_{e+1} sin, y_{e+1} = x_{e+1} cos + x_e sin
// (the values of rope2d_forward).
__device__ __forceinline__ void stage_rope(float* s, int ld, int n, const float* X, int64_t r0, int64_t N, int D,
                                           const RopeTab& R) {
  const int half = D / 2;
  for (int idx = threadIdx.x; idx < n * half; idx += blockDim.x) {
    const int t = idx / half, e = 2 * (idx % half);
    float y0 = 0.0f, y1 = 0.0f;
    if (r0 + t < N) {
      const float2 x = *(const float2*)(X + (r0 + t) * D + e), cs = R.at(r0 + t, e, D);
      y0 = x.x * cs.x - x.y * cs.y;
      y1 = x.y * cs.x + x.x * cs.y;
    }
    s[t * ld + e] = y0;
    s[t * ld + e + 1] = y1;
  }
}

__device__ __forceinline__ float dot_rows(const float* a, const float* b, int D) {
  float s = 0.0f;
  for (int c = 0; c < D; c++) s += a[c] * b[c];
  return s;
}

// Rope transpose of the D-vector spread over a warp (lane holds c = lane + 32 cc),
// stored at y (token n). Pairs (c, c^1) sit in neighbouring lanes.
__device__ __forceinline__ void store_rope_t(const float (&acc)[kCPL], float* y, const RopeTab& R, int64_t n, int D) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int cc = 0; cc < kCPL; cc++) {
    const float other = __shfl_xor_sync(0xffffffffu, acc[cc], 1);
    const int c = lane + 32 * cc;
    if (c < D) {
      const float2 cs = R.at(n, c & ~1, D);
      y[c] = (c & 1) ? acc[cc] * cs.x - other * cs.y : acc[cc] * cs.x + other * cs.y;
    }
  }
}

__global__ void __launch_bounds__(kWarps * 32) softmax_fwd_kernel(const float* __restrict__ q,
                                                                  const float* __restrict__ k,
                                                                  const float* __restrict__ v, float* __restrict__ o,
                                                                  float* __restrict__ lse, RopeTab rope, int N, int D,
                                                                  int nrb, float scale) {
  extern __shared__ float smem[];
  const int LK = D + 1;
  float* s_q = smem;                // kRows x D
  float* s_k = s_q + kRows * D;     // kKT x LK
  float* s_v = s_k + kKT * LK;      // kKT x LK
  const int64_t g = blockIdx.x / nrb;
  const int i0 = (blockIdx.x % nrb) * kRows, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float *qg = q + g * N * D, *kg = k + g * N * D, *vg = v + g * N * D;
  stage_rope(s_q, D, kRows, qg, i0, N, D, rope);
  float m[kRPW], l[kRPW], acc[kRPW][kCPL];
#pragma unroll
  for (int i = 0; i < kRPW; i++) {
    m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
    for (int cc = 0; cc < kCPL; cc++) acc[i][cc] = 0.0f;
  }
  for (int j0 = 0; j0 < N; j0 += kKT) {
    const int nk = min(kKT, N - j0);
    __syncthreads();  // the previous tile is consumed
    stage_rope(s_k, LK, kKT, kg, j0, N, D, rope);
    stage(s_v, LK, kKT, vg, j0, N, D);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRPW; i++) {
      const int r = warp * kRPW + i;
      if (i0 + r >= N) continue;  // the same for the whole warp
      const float s = lane < nk ? scale * dot_rows(s_q + r * D, s_k + lane * LK, D) : -INFINITY;
      const float mn = fmaxf(m[i], warp_max(s));
      const float corr = expf(m[i] - mn);  // 0 on the first tile
      const float p = lane < nk ? expf(s - mn) : 0.0f;
      l[i] = l[i] * corr + warp_sum(p);
      m[i] = mn;
#pragma unroll
      for (int cc = 0; cc < kCPL; cc++) acc[i][cc] *= corr;
      for (int j = 0; j < nk; j++) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int cc = 0; cc < kCPL; cc++) {
          const int c = lane + 32 * cc;
          if (c < D) acc[i][cc] += pj * s_v[j * LK + c];
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRPW; i++) {
    const int64_t row = i0 + warp * kRPW + i;
    if (row >= N) continue;
    const float inv = 1.0f / l[i];
#pragma unroll
    for (int cc = 0; cc < kCPL; cc++) {
      const int c = lane + 32 * cc;
      if (c < D) o[(g * N + row) * D + c] = acc[i][cc] * inv;
    }
    if (lane == 0) lse[g * N + row] = m[i] + logf(l[i]);
  }
}

// Dl = rowsum(go * o), a warp per row.
__global__ void softmax_dl_kernel(const float* __restrict__ go, const float* __restrict__ o, float* __restrict__ dl,
                                  int64_t rows, int D) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; r < rows;
       r += ((int64_t)gridDim.x * blockDim.x) >> 5) {
    float s = 0.0f;
    for (int c = lane; c < D; c += 32) s += go[r * D + c] * o[r * D + c];
    s = warp_sum(s);
    if (lane == 0) dl[r] = s;
  }
}

// dq for kRows queries: loop over key tiles.
__global__ void __launch_bounds__(kWarps * 32) softmax_dq_kernel(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const float* __restrict__ go, const float* __restrict__ lse, const float* __restrict__ dl, RopeTab rope,
    float* __restrict__ dq, int N, int D, int nrb, float scale) {
  extern __shared__ float smem[];
  const int LK = D + 1;
  float* s_q = smem;               // kRows x D
  float* s_go = s_q + kRows * D;   // kRows x D
  float* s_k = s_go + kRows * D;   // kKT x LK
  float* s_v = s_k + kKT * LK;     // kKT x LK
  const int64_t g = blockIdx.x / nrb;
  const int i0 = (blockIdx.x % nrb) * kRows, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  stage_rope(s_q, D, kRows, q + g * N * D, i0, N, D, rope);
  stage(s_go, D, kRows, go + g * N * D, i0, N, D);
  float rl[kRPW], rd[kRPW], acc[kRPW][kCPL];
#pragma unroll
  for (int i = 0; i < kRPW; i++) {
    const int64_t row = i0 + warp * kRPW + i;
    rl[i] = row < N ? lse[g * N + row] : 0.0f;
    rd[i] = row < N ? dl[g * N + row] : 0.0f;
#pragma unroll
    for (int cc = 0; cc < kCPL; cc++) acc[i][cc] = 0.0f;
  }
  for (int j0 = 0; j0 < N; j0 += kKT) {
    const int nk = min(kKT, N - j0);
    __syncthreads();
    stage_rope(s_k, LK, kKT, k + g * N * D, j0, N, D, rope);
    stage(s_v, LK, kKT, v + g * N * D, j0, N, D);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRPW; i++) {
      const int r = warp * kRPW + i;
      if (i0 + r >= N) continue;
      float ds = 0.0f;
      if (lane < nk) {
        const float p = expf(scale * dot_rows(s_q + r * D, s_k + lane * LK, D) - rl[i]);
        ds = p * (dot_rows(s_go + r * D, s_v + lane * LK, D) - rd[i]) * scale;
      }
      for (int j = 0; j < nk; j++) {
        const float dj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
        for (int cc = 0; cc < kCPL; cc++) {
          const int c = lane + 32 * cc;
          if (c < D) acc[i][cc] += dj * s_k[j * LK + c];
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRPW; i++) {
    const int64_t row = i0 + warp * kRPW + i;
    if (row >= N) continue;
    store_rope_t(acc[i], dq + (g * N + row) * D, rope, row, D);
  }
}

// dk, dv for kRows keys: loop over query tiles.
__global__ void __launch_bounds__(kWarps * 32) softmax_dkv_kernel(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const float* __restrict__ go, const float* __restrict__ lse, const float* __restrict__ dl, RopeTab rope,
    float* __restrict__ dk, float* __restrict__ dv, int N, int D, int nrb, float scale) {
  extern __shared__ float smem[];
  const int LK = D + 1;
  float* s_k = smem;               // kRows x D
  float* s_v = s_k + kRows * D;    // kRows x D
  float* s_q = s_v + kRows * D;    // kKT x LK
  float* s_go = s_q + kKT * LK;    // kKT x LK
  float* s_l = s_go + kKT * LK;    // kKT
  float* s_d = s_l + kKT;          // kKT
  const int64_t g = blockIdx.x / nrb;
  const int j0 = (blockIdx.x % nrb) * kRows, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  stage_rope(s_k, D, kRows, k + g * N * D, j0, N, D, rope);
  stage(s_v, D, kRows, v + g * N * D, j0, N, D);
  float ak[kRPW][kCPL], av[kRPW][kCPL];
#pragma unroll
  for (int i = 0; i < kRPW; i++)
#pragma unroll
    for (int cc = 0; cc < kCPL; cc++) ak[i][cc] = av[i][cc] = 0.0f;
  for (int q0 = 0; q0 < N; q0 += kKT) {
    const int nq = min(kKT, N - q0);
    __syncthreads();
    stage_rope(s_q, LK, kKT, q + g * N * D, q0, N, D, rope);
    stage(s_go, LK, kKT, go + g * N * D, q0, N, D);
    if (threadIdx.x < kKT) {
      const int64_t qi = q0 + threadIdx.x;
      s_l[threadIdx.x] = qi < N ? lse[g * N + qi] : 0.0f;
      s_d[threadIdx.x] = qi < N ? dl[g * N + qi] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRPW; i++) {
      const int r = warp * kRPW + i;
      if (j0 + r >= N) continue;
      float p = 0.0f, ds = 0.0f;
      if (lane < nq) {
        p = expf(scale * dot_rows(s_q + lane * LK, s_k + r * D, D) - s_l[lane]);
        ds = p * (dot_rows(s_go + lane * LK, s_v + r * D, D) - s_d[lane]) * scale;
      }
      for (int t = 0; t < nq; t++) {
        const float pt = __shfl_sync(0xffffffffu, p, t), dt = __shfl_sync(0xffffffffu, ds, t);
#pragma unroll
        for (int cc = 0; cc < kCPL; cc++) {
          const int c = lane + 32 * cc;
          if (c < D) {
            ak[i][cc] += dt * s_q[t * LK + c];
            av[i][cc] += pt * s_go[t * LK + c];
          }
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRPW; i++) {
    const int64_t row = j0 + warp * kRPW + i;
    if (row >= N) continue;
    store_rope_t(ak[i], dk + (g * N + row) * D, rope, row, D);
#pragma unroll
    for (int cc = 0; cc < kCPL; cc++) {
      const int c = lane + 32 * cc;
      if (c < D) dv[(g * N + row) * D + c] = av[i][cc];
    }
  }
}

template <typename K>
void allow_smem(K kernel, size_t bytes, const char* op) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), op);
}

void check_dims(const char* op, int64_t G, int64_t N, int64_t D) {
  NALA_CHECK(D % 4 == 0 && D > 0 && D <= kMaxD, op, ": CUDA kernels take head dim d % 4 == 0 and d <= ", kMaxD,
             ", got d = ", D);
  NALA_CHECK(G * ((N + kRows - 1) / kRows) < (int64_t(1) << 31), op, ": too many problems (G=", G, ")");
}

}  // namespace

void softmax_attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, int64_t G,
                               int64_t H, int64_t W, int64_t D) {
  const char* op = "softmax_attention_forward";
  const int64_t N = H * W;
  check_dims(op, G, N, D);
  if (G == 0 || N == 0) return;
  const RopeTab rope{(const float2*)rope_pair_table_device(H, W, D), (int)H, (int)W};
  const int nrb = (int)((N + kRows - 1) / kRows);
  const size_t smem = (size_t)(kRows * D + 2 * kKT * (D + 1)) * sizeof(float);
  allow_smem(softmax_fwd_kernel, smem, op);
  softmax_fwd_kernel<<<(unsigned)(G * nrb), kWarps * 32, smem>>>(q, k, v, o, lse, rope, (int)N, (int)D, nrb,
                                                                 1.0f / std::sqrt((float)D));
  CUDA_CHECK_LAUNCH(op);
}

void softmax_attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                                const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H, int64_t W,
                                int64_t D) {
  const char* op = "softmax_attention_backward";
  const int64_t N = H * W;
  check_dims(op, G, N, D);
  if (G == 0 || N == 0) return;
  const float scale = 1.0f / std::sqrt((float)D);
  const RopeTab rope{(const float2*)rope_pair_table_device(H, W, D), (int)H, (int)W};
  Tensor dl = Tensor::empty({G, N}, DType::F32, Device::CUDA);
  const int64_t rows = G * N;
  softmax_dl_kernel<<<(unsigned)std::min<int64_t>((rows + 7) / 8, 65535), 256>>>(gout, o, dl.f32(), rows, (int)D);
  CUDA_CHECK_LAUNCH(op);
  const int nrb = (int)((N + kRows - 1) / kRows);
  const size_t smem_q = (size_t)(2 * kRows * D + 2 * kKT * (D + 1)) * sizeof(float);
  allow_smem(softmax_dq_kernel, smem_q, op);
  softmax_dq_kernel<<<(unsigned)(G * nrb), kWarps * 32, smem_q>>>(q, k, v, gout, lse, dl.f32(), rope, dq,
                                                                  (int)N, (int)D, nrb, scale);
  CUDA_CHECK_LAUNCH(op);
  const size_t smem_k = (size_t)(2 * kRows * D + 2 * kKT * (D + 1) + 2 * kKT) * sizeof(float);
  allow_smem(softmax_dkv_kernel, smem_k, op);
  softmax_dkv_kernel<<<(unsigned)(G * nrb), kWarps * 32, smem_k>>>(q, k, v, gout, lse, dl.f32(), rope, dk,
                                                                   dv, (int)N, (int)D, nrb, scale);
  CUDA_CHECK_LAUNCH(op);
}

}  // namespace cuda
}  // namespace nala
