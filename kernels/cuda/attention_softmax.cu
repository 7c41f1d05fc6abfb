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
// (rows of D + 4 floats, 16-byte aligned), and lane j takes row j of the tile.
// A warp works on all its rows at once, so that every value it reads from
// shared memory serves kRPW = 8 of them: the dot products read the lane's
// tile row as float4 and the warp's rows as float4 broadcasts; the weights
// (softmax numerators, dS) go to a small shared array, and the D-vectors
// accumulate over the tile's rows (lane c owns columns c, c + 32, ...) with
// the weights read back as float4 broadcasts. Forward keeps a running max
// and sum per row (online softmax) and writes lse = max + log(sum).
// Backward, as on the CPU:
// Dl_i = go_i . o_i, P_ij = exp(s_ij - lse_i), dS_ij = P_ij (go_i . v_j - Dl_i) / sqrt(D);
// dq = rope^T(sum_j dS_ij rk_j); dk = rope^T(sum_i dS_ij rq_i), dv = sum_i P_ij go_i.
// Every sum runs in a fixed order: results are deterministic.
// With bf16 products on (--precision bf16) and head dim 16, 32 or 64, both
// entry points take the tensor-core kernels of attention_softmax_tc.cu instead.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_softmax_tc.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/matmul.h"
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

// s[i] = the dot product of row i of the warp's kRPW rows (rows, ld D,
// read as float4 broadcasts) with the lane's row trow of a staged tile: the
// tile's value is loaded once for all kRPW rows.
__device__ __forceinline__ void dot_warp_rows(float (&s)[kRPW], const float* rows, const float* trow, int D) {
#pragma unroll
  for (int i = 0; i < kRPW; i++) s[i] = 0.0f;
  for (int c = 0; c < D; c += 4) {
    const float4 b = *reinterpret_cast<const float4*>(trow + c);
#pragma unroll
    for (int i = 0; i < kRPW; i++) {
      const float4 a = *reinterpret_cast<const float4*>(rows + i * D + c);
      s[i] = fmaf(a.x, b.x, s[i]);
      s[i] = fmaf(a.y, b.y, s[i]);
      s[i] = fmaf(a.z, b.z, s[i]);
      s[i] = fmaf(a.w, b.w, s[i]);
    }
  }
}

// acc[i][cc] += sum over j < n of w[i][j] * tile[j][lane + 32 cc]: the warp's
// weights w (kRPW rows of kKT in shared memory, read as float4 broadcasts)
// times the rows of a staged tile (ld LK; rows up to n rounded up to 4 must be
// readable, weights there zero). Each tile value is loaded once for all rows.
__device__ __forceinline__ void acc_weighted(float (&acc)[kRPW][kCPL], const float* w, const float* tile, int LK,
                                             int n, int D) {
  const int lane = threadIdx.x & 31;
  for (int j = 0; j < n; j += 4) {
    float4 wv[kRPW];
#pragma unroll
    for (int i = 0; i < kRPW; i++) wv[i] = *reinterpret_cast<const float4*>(w + i * kKT + j);
#pragma unroll
    for (int cc = 0; cc < kCPL; cc++) {
      const int c = lane + 32 * cc;
      if (c < D) {
        const float t0 = tile[j * LK + c], t1 = tile[(j + 1) * LK + c], t2 = tile[(j + 2) * LK + c],
                    t3 = tile[(j + 3) * LK + c];
#pragma unroll
        for (int i = 0; i < kRPW; i++) {
          float a = acc[i][cc];
          a = fmaf(wv[i].x, t0, a);
          a = fmaf(wv[i].y, t1, a);
          a = fmaf(wv[i].z, t2, a);
          acc[i][cc] = fmaf(wv[i].w, t3, a);
        }
      }
    }
  }
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

// Shared memory of the three kernels, in floats: the staged tiles have rows
// of LK = D + 4 (16-byte aligned; when D % 8 == 0, a warp's float4 reads of
// 32 rows fall in distinct banks per quarter), the owned rows D; w: kWarps x kRPW x kKT
// weights (softmax numerators, dS), one or two sets.
__host__ __device__ constexpr int tile_ld(int D) { return D + 4; }

__global__ void __launch_bounds__(kWarps * 32) softmax_fwd_kernel(const float* __restrict__ q,
                                                                  const float* __restrict__ k,
                                                                  const float* __restrict__ v, float* __restrict__ o,
                                                                  float* __restrict__ lse, RopeTab rope, int N, int D,
                                                                  int nrb, float scale) {
  extern __shared__ __align__(16) float smem[];
  const int LK = tile_ld(D);
  float* s_q = smem;                // kRows x D
  float* s_k = s_q + kRows * D;     // kKT x LK
  float* s_v = s_k + kKT * LK;      // kKT x LK
  float* s_w = s_v + kKT * LK;      // kWarps x kRPW x kKT
  const int64_t g = blockIdx.x / nrb;
  const int i0 = (blockIdx.x % nrb) * kRows, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float *qg = q + g * N * D, *kg = k + g * N * D, *vg = v + g * N * D;
  float* w = s_w + warp * kRPW * kKT;
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
    float sc[kRPW];
    dot_warp_rows(sc, s_q + warp * kRPW * D, s_k + lane * LK, D);
#pragma unroll
    for (int i = 0; i < kRPW; i++) {
      const float s = lane < nk ? scale * sc[i] : -INFINITY;
      const float mn = fmaxf(m[i], warp_max(s));
      const float corr = expf(m[i] - mn);  // 0 on the first tile
      const float p = lane < nk ? expf(s - mn) : 0.0f;
      l[i] = l[i] * corr + warp_sum(p);
      m[i] = mn;
#pragma unroll
      for (int cc = 0; cc < kCPL; cc++) acc[i][cc] *= corr;
      w[i * kKT + lane] = p;
    }
    __syncwarp();
    acc_weighted(acc, w, s_v, LK, (nk + 3) & ~3, D);
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
  extern __shared__ __align__(16) float smem[];
  const int LK = tile_ld(D);
  float* s_q = smem;               // kRows x D
  float* s_go = s_q + kRows * D;   // kRows x D
  float* s_k = s_go + kRows * D;   // kKT x LK
  float* s_v = s_k + kKT * LK;     // kKT x LK
  float* s_w = s_v + kKT * LK;     // kWarps x kRPW x kKT
  const int64_t g = blockIdx.x / nrb;
  const int i0 = (blockIdx.x % nrb) * kRows, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* w = s_w + warp * kRPW * kKT;
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
    float qk[kRPW], gv[kRPW];
    dot_warp_rows(qk, s_q + warp * kRPW * D, s_k + lane * LK, D);
    dot_warp_rows(gv, s_go + warp * kRPW * D, s_v + lane * LK, D);
#pragma unroll
    for (int i = 0; i < kRPW; i++) {
      float ds = 0.0f;
      if (lane < nk && i0 + warp * kRPW + i < N) {
        const float p = expf(scale * qk[i] - rl[i]);
        ds = p * (gv[i] - rd[i]) * scale;
      }
      w[i * kKT + lane] = ds;
    }
    __syncwarp();
    acc_weighted(acc, w, s_k, LK, (nk + 3) & ~3, D);
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
  extern __shared__ __align__(16) float smem[];
  const int LK = tile_ld(D);
  float* s_k = smem;               // kRows x D
  float* s_v = s_k + kRows * D;    // kRows x D
  float* s_q = s_v + kRows * D;    // kKT x LK
  float* s_go = s_q + kKT * LK;    // kKT x LK
  float* s_p = s_go + kKT * LK;    // kWarps x kRPW x kKT
  float* s_ds = s_p + kWarps * kRPW * kKT;  // kWarps x kRPW x kKT
  float* s_l = s_ds + kWarps * kRPW * kKT;  // kKT
  float* s_d = s_l + kKT;          // kKT
  const int64_t g = blockIdx.x / nrb;
  const int j0 = (blockIdx.x % nrb) * kRows, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float *wp = s_p + warp * kRPW * kKT, *wd = s_ds + warp * kRPW * kKT;
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
    float qk[kRPW], gv[kRPW];
    dot_warp_rows(qk, s_k + warp * kRPW * D, s_q + lane * LK, D);
    dot_warp_rows(gv, s_v + warp * kRPW * D, s_go + lane * LK, D);
#pragma unroll
    for (int i = 0; i < kRPW; i++) {
      float p = 0.0f, ds = 0.0f;
      if (lane < nq && j0 + warp * kRPW + i < N) {
        p = expf(scale * qk[i] - s_l[lane]);
        ds = p * (gv[i] - s_d[lane]) * scale;
      }
      wp[i * kKT + lane] = p;
      wd[i * kKT + lane] = ds;
    }
    __syncwarp();
    const int n4 = (nq + 3) & ~3;
    acc_weighted(ak, wd, s_q, LK, n4, D);
    acc_weighted(av, wp, s_go, LK, n4, D);
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

// The tensor-core path: bf16 products on, a head dim it has kernels for, and
// rows it can read and write as float2 (8-byte aligned arrays).
bool use_tensor_cores(int64_t D, std::initializer_list<const float*> arrays) {
  if (!gemm_bf16_mode() || !softmax_attention_tc_supported(D)) return false;
  for (const float* a : arrays)
    if (reinterpret_cast<uintptr_t>(a) % 8) return false;
  return true;
}

}  // namespace

void softmax_attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, int64_t G,
                               int64_t H, int64_t W, int64_t D) {
  const char* op = "softmax_attention_forward";
  const int64_t N = H * W;
  check_dims(op, G, N, D);
  if (G == 0 || N == 0) return;
  if (use_tensor_cores(D, {q, k, v, o})) return softmax_attention_forward_tc(q, k, v, o, lse, G, H, W, D);
  const RopeTab rope{(const float2*)rope_pair_table_device(H, W, D), (int)H, (int)W};
  const int nrb = (int)((N + kRows - 1) / kRows);
  const size_t smem = (size_t)(kRows * D + 2 * kKT * tile_ld((int)D) + kWarps * kRPW * kKT) * sizeof(float);
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
  if (use_tensor_cores(D, {q, k, v, o, gout, dq, dk, dv}))
    return softmax_attention_backward_tc(q, k, v, o, lse, gout, dq, dk, dv, G, H, W, D);
  const float scale = 1.0f / std::sqrt((float)D);
  const RopeTab rope{(const float2*)rope_pair_table_device(H, W, D), (int)H, (int)W};
  Tensor dl = Tensor::empty({G, N}, DType::F32, Device::CUDA);
  const int64_t rows = G * N;
  softmax_dl_kernel<<<(unsigned)std::min<int64_t>((rows + 7) / 8, 65535), 256>>>(gout, o, dl.f32(), rows, (int)D);
  CUDA_CHECK_LAUNCH(op);
  const int nrb = (int)((N + kRows - 1) / kRows);
  const size_t smem_q = (size_t)(2 * kRows * D + 2 * kKT * tile_ld((int)D) + kWarps * kRPW * kKT) * sizeof(float);
  allow_smem(softmax_dq_kernel, smem_q, op);
  softmax_dq_kernel<<<(unsigned)(G * nrb), kWarps * 32, smem_q>>>(q, k, v, gout, lse, dl.f32(), rope, dq,
                                                                  (int)N, (int)D, nrb, scale);
  CUDA_CHECK_LAUNCH(op);
  const size_t smem_k =
      (size_t)(2 * kRows * D + 2 * kKT * tile_ld((int)D) + 2 * kWarps * kRPW * kKT + 2 * kKT) * sizeof(float);
  allow_smem(softmax_dkv_kernel, smem_k, op);
  softmax_dkv_kernel<<<(unsigned)(G * nrb), kWarps * 32, smem_k>>>(q, k, v, gout, lse, dl.f32(), rope, dk,
                                                                   dv, (int)N, (int)D, nrb, scale);
  CUDA_CHECK_LAUNCH(op);
}

}  // namespace cuda
}  // namespace nala
