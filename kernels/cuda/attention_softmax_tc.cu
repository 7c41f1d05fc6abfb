// kernels/cuda/attention_softmax_tc.cu - softmax attention with 2-D RoPE on
// tensor cores (bf16 mma.sync, float32 accumulation): FlashAttention-2's
// forward and backward. API and numerics: kernels/cuda/attention_softmax_tc.h;
// the math: kernels/cpu/attention.h and docs/SPEC.md §3; the float32 kernels
// it mirrors: kernels/cuda/attention_softmax.cu; its steps in the kernel lab:
// kernels/lab/softmax_attention_cuda.cu (versions 5 and 6).
//
//   s_ij = rq_i . rk_j / sqrt(D), P_ij = exp(s_ij - lse_i), o_i = sum_j P_ij v_j
//   Dl_i = dO_i . o_i, dS_ij = P_ij (dO_i . v_j - Dl_i) / sqrt(D)
//   dq = rope^T(dS rk), dk = rope^T(dS^T rq), dv = P^T dO
//
// A first pass rounds rope(q), rope(k), v (and in backward dO) to bf16 and
// makes Dl (from the rounded dO). Then each kernel's block of 4 warps owns 64 rows of one problem,
// a warp 16 of them, held as mma A fragments in registers for the whole run;
// the other side streams through shared memory 64 rows at a time by
// cp.async, two buffers (tile t + 1 in flight while tile t is used):
//   forward  (rows: queries) S = Q K^T; online softmax; O += P V
//   dq       (rows: queries) S = Q K^T, dP = dO V^T; dS; dQ += dS K
//   dk, dv   (rows: keys)    S^T = K Q^T, dP^T = V dO^T; P^T, dS^T;
//                            dV += P^T dO, dK += dS^T Q
// A lane of an m16n8 accumulator holds rows g and g + 8 (lane = 4 g + t),
// columns 2t and 2t + 1 of each 8-column tile; those float32 accumulators,
// rounded to bf16 pairs, are already the A fragments of the next product (the
// C and A layouts agree), so P and dS never leave registers. Row statistics
// (max, sum) reduce over the quad of lanes sharing g with two shuffles. Shared
// rows are D + 8 bf16: the 8 rows an ldmatrix reads fall in distinct banks.
// Rows past N are zero-filled; their scores are masked (keys: -inf before
// the max, P = 0; queries: lse = +inf, so P = 0) and they are never written.
// dq and dk/dv are separate kernels (no atomics): every sum runs in a fixed
// order, and results are deterministic. The RoPE transpose of dq and dk is
// applied to the accumulators as they are stored: a rope pair (e, e + 1) sits
// in one lane.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "kernels/cuda/attention_softmax_tc.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/rope.h"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;              // warps per block
constexpr int kRows = 16 * kWarps;     // rows owned by a block, 16 per warp
constexpr int kTile = 64;              // rows of the other side per staged tile
constexpr int kNT = kTile / 8;         // 8-column tiles of a warp's 16 x kTile scores
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.693147180559945f;

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) { return mma::bits(__floats2bfloat162_rn(lo, hi)); }
__device__ __forceinline__ uint32_t ld_u32(const bf16* p) { return *reinterpret_cast<const uint32_t*>(p); }

// (cos, sin) of the rope pair at even feature e of token n (the layout of rope_pair_table_device).
__device__ __forceinline__ float2 rope_cs(const float2* tab, int n, int e, int H, int W, int D) {
  const int Q = D / 4, half = D / 2;
  return __ldg(e < half ? tab + (n / W) * Q + e / 2 : tab + (H + n % W) * Q + (e - half) / 2);
}

// ---- the first passes ------------------------------------------------------------

// A thread per feature pair (e, e + 1) of a token.
__global__ void rope_bf16_kernel(const float2* __restrict__ q, const float2* __restrict__ k,
                                 const float2* __restrict__ v, const float2* __restrict__ tab,
                                 __nv_bfloat162* __restrict__ rq, __nv_bfloat162* __restrict__ rk,
                                 __nv_bfloat162* __restrict__ bv, int64_t pairs, int N, int H, int W, int D) {
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= pairs) return;
  const int half = D / 2, e = 2 * (int)(id % half), n = (int)(id / half % N);
  const float2 cs = rope_cs(tab, n, e, H, W, D), a = q[id], b = k[id];
  rq[id] = __floats2bfloat162_rn(a.x * cs.x - a.y * cs.y, a.y * cs.x + a.x * cs.y);
  rk[id] = __floats2bfloat162_rn(b.x * cs.x - b.y * cs.y, b.y * cs.x + b.x * cs.y);
  bv[id] = __float22bfloat162_rn(v[id]);
}

// A warp per row: bgo = bf16(go), dl = bgo . o in float32 (lanes over feature pairs, D <= 64).
// Dl takes the rounded dO that dP = dO V^T takes, so that dP - Dl cancels as
// it does in exact arithmetic (one token: dS = 0).
__global__ void go_bf16_dl_kernel(const float2* __restrict__ go, const float2* __restrict__ o,
                                  __nv_bfloat162* __restrict__ bgo, float* __restrict__ dl, int64_t rows, int D) {
  const int lane = threadIdx.x & 31, half = D / 2;
  const int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if (r >= rows) return;
  float s = 0.0f;
  if (lane < half) {
    const __nv_bfloat162 a16 = __float22bfloat162_rn(go[r * half + lane]);
    const float2 a = __bfloat1622float2(a16), b = o[r * half + lane];
    bgo[r * half + lane] = a16;
    s = a.x * b.x + a.y * b.y;
  }
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) dl[r] = s;
}

// ---- building blocks of the three kernels ---------------------------------------------

// The A fragments (16 rows x D) of rows r0 and r1 = r0 + 8 of X (rows of D),
// zeros past N: f[ks] covers columns 16 ks .. 16 ks + 15.
template <int D>
__device__ __forceinline__ void load_frags(uint32_t (&f)[D / 16][4], const bf16* X, int r0, int r1, int N, int t) {
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++) {
    const int c = 16 * ks + 2 * t;
    f[ks][0] = r0 < N ? ld_u32(X + (int64_t)r0 * D + c) : 0u;
    f[ks][1] = r1 < N ? ld_u32(X + (int64_t)r1 * D + c) : 0u;
    f[ks][2] = r0 < N ? ld_u32(X + (int64_t)r0 * D + c + 8) : 0u;
    f[ks][3] = r1 < N ? ld_u32(X + (int64_t)r1 * D + c + 8) : 0u;
  }
}

// Rows [j0, j0 + kTile) of X and Y (rows of D bf16) into shared tiles sx, sy
// (rows of D + 8) by cp.async, zeros past N; one commit group.
template <int D>
__device__ __forceinline__ void load_tiles(const bf16* X, const bf16* Y, bf16* sx, bf16* sy, int j0, int N) {
  constexpr int CH = D / 8, LS = D + 8;  // 16-byte chunks per row
  for (int idx = threadIdx.x; idx < kTile * CH; idx += kWarps * 32) {
    const int r = idx / CH, c = idx % CH * 8;
    const bool ok = j0 + r < N;
    const int64_t at = ok ? (int64_t)(j0 + r) * D + c : 0;
    mma::cp_async16(sx + r * LS + c, X + at, ok);
    mma::cp_async16(sy + r * LS + c, Y + at, ok);
  }
  mma::cp_async_commit();
}

// Before a kernel's tile it is used: tile it + 1 of X and Y starts into the
// other buffer (freed by the barrier that ended tile it - 1), then tile it is
// waited for. Buffers of kTile rows of D + 8 at sx and sy.
template <int D>
__device__ __forceinline__ void next_tiles(const bf16* X, const bf16* Y, bf16* sx, bf16* sy, int it, int ntiles,
                                           int N) {
  constexpr int TS = kTile * (D + 8);
  if (it + 1 < ntiles) {
    const int nb = (it + 1) & 1;
    load_tiles<D>(X, Y, sx + nb * TS, sy + nb * TS, (it + 1) * kTile, N);
    mma::cp_async_wait<1>();
  } else {
    mma::cp_async_wait<0>();
  }
}

// A block's problem b and this lane's two rows r0, r1 = r0 + 8 of the kRows
// (16 a warp) the block owns.
struct LaneRows {
  int64_t b;
  int r0, r1;
};
__device__ __forceinline__ LaneRows lane_rows(int nrb) {
  const int r0 = (int)(blockIdx.x % nrb) * kRows + (int)(threadIdx.x >> 5) * 16 + (int)((threadIdx.x & 31) >> 2);
  return {(int64_t)(blockIdx.x / nrb), r0, r0 + 8};
}

// This lane's ldmatrix row address in a tile, in bytes from the tile, for a
// B operand stored with n along the tile's rows (b[n][k]: plain) or with k
// along them (b[k][n]: transposed). One ldsm_x4 at byte offset
// 2 (16 np LS + 16 ks) (plain) or 2 (16 ks LS + 16 np) (transposed) gives b0,
// b1 of n-tile 2 np in r[0], r[1] and of n-tile 2 np + 1 in r[2], r[3], for
// the k step ks.
template <int D>
__device__ __forceinline__ uint32_t lane_plain(int lane) {
  return (uint32_t)((((lane & 7) + 8 * (lane >> 4)) * (D + 8) + 8 * ((lane >> 3) & 1)) * 2);
}
template <int D>
__device__ __forceinline__ uint32_t lane_trans(int lane) {
  return (uint32_t)(((lane & 15) * (D + 8) + 8 * (lane >> 4)) * 2);
}

// acc (16 x kTile) = A (the warp's 16 x D fragments) times the tile's rows^T:
// A B^T with B the tile (kTile rows of D), read plain.
template <int D>
__device__ __forceinline__ void product_rows_t(float (&acc)[kNT][4], const uint32_t (&a)[D / 16][4], uint32_t tile,
                                               uint32_t lp) {
  mma::zero_acc(acc);
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++)
#pragma unroll
    for (int np = 0; np < kNT / 2; np++) {
      uint32_t r[4];
      mma::ldsm_x4(r, tile + lp + (uint32_t)((16 * np * (D + 8) + 16 * ks) * 2));
      mma::bf16_16816(acc[2 * np], a[ks], r[0], r[1]);
      mma::bf16_16816(acc[2 * np + 1], a[ks], r[2], r[3]);
    }
}

// out (16 x D) += w (16 x kTile float32 accumulators, rounded to bf16) times
// the tile (kTile rows of D), read transposed.
template <int D>
__device__ __forceinline__ void accumulate_weighted(float (&out)[D / 8][4], const float (&w)[kNT][4], uint32_t tile,
                                                    uint32_t lt) {
#pragma unroll
  for (int kk = 0; kk < kTile / 16; kk++) {
    // columns 16 kk .. +15 of w: accumulator tiles 2 kk and 2 kk + 1 as one A fragment
    const uint32_t a[4] = {pack_bf16(w[2 * kk][0], w[2 * kk][1]), pack_bf16(w[2 * kk][2], w[2 * kk][3]),
                           pack_bf16(w[2 * kk + 1][0], w[2 * kk + 1][1]),
                           pack_bf16(w[2 * kk + 1][2], w[2 * kk + 1][3])};
#pragma unroll
    for (int dp = 0; dp < D / 16; dp++) {
      uint32_t r[4];
      mma::ldsm_x4_trans(r, tile + lt + (uint32_t)((16 * kk * (D + 8) + 16 * dp) * 2));
      mma::bf16_16816(out[2 * dp], a, r[0], r[1]);
      mma::bf16_16816(out[2 * dp + 1], a, r[2], r[3]);
    }
  }
}

// Store rows r0, r1 (if < N) of a warp's 16 x D float32 accumulators to Y
// (rows of D), through the RoPE transpose when tab is not null:
// y_e = x_e cos + x_{e+1} sin, y_{e+1} = x_{e+1} cos - x_e sin.
template <int D>
__device__ __forceinline__ void store_rows(float* Y, const float (&acc)[D / 8][4], int r0, int r1, int N, int t,
                                           const float2* tab, int H, int W) {
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int r = h ? r1 : r0;
    if (r >= N) continue;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
      const int c = 8 * dt + 2 * t;
      float x0 = acc[dt][2 * h], x1 = acc[dt][2 * h + 1];
      if (tab) {
        const float2 cs = rope_cs(tab, r, c, H, W, D);
        const float y0 = x0 * cs.x + x1 * cs.y, y1 = x1 * cs.x - x0 * cs.y;
        x0 = y0, x1 = y1;
      }
      *reinterpret_cast<float2*>(Y + (int64_t)r * D + c) = make_float2(x0, x1);
    }
  }
}

// ---- forward ---------------------------------------------------------------------

template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    flash_fwd_kernel(const bf16* __restrict__ rq, const bf16* __restrict__ rk, const bf16* __restrict__ bv,
                     float* __restrict__ o, float* __restrict__ lse, int N, int nrb, float scale_log2) {
  constexpr int LS = D + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sk = reinterpret_cast<bf16*>(smem_raw);  // [2][kTile][LS]
  bf16* sv = sk + 2 * kTile * LS;                // [2][kTile][LS]
  const int lane = threadIdx.x & 31, t = lane & 3;
  const auto [b, r0, r1] = lane_rows(nrb);  // this lane's query rows
  const bf16 *kb = rk + b * N * D, *vb = bv + b * N * D;
  const int ntiles = (N + kTile - 1) / kTile;
  load_tiles<D>(kb, vb, sk, sv, 0, N);
  uint32_t qf[D / 16][4];
  load_frags<D>(qf, rq + b * N * D, r0, r1, N, t);
  const uint32_t sk0 = mma::smem_addr(sk), sv0 = mma::smem_addr(sv);
  const uint32_t lp = lane_plain<D>(lane), lt = lane_trans<D>(lane);

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows r0, r1: max (log2 units), sum
  float acc[D / 8][4];
  mma::zero_acc(acc);
  for (int it = 0; it < ntiles; it++) {
    const int st = it & 1, j0 = it * kTile;
    next_tiles<D>(kb, vb, sk, sv, it, ntiles, N);
    __syncthreads();  // tile it has landed, for every thread's copies
    const uint32_t buf = (uint32_t)(st * kTile * LS * 2);
    float s[kNT][4];
    product_rows_t<D>(s, qf, sk0 + buf, lp);
    // s[nt][c]: row (c < 2 ? r0 : r1), key j0 + 8 nt + 2 t + (c & 1)
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < kNT; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++) {
        s[nt][c] = j0 + 8 * nt + 2 * t + (c & 1) < N ? s[nt][c] * scale_log2 : -INFINITY;
        mx[c >> 1] = fmaxf(mx[c >> 1], s[nt][c]);
      }
    float corr[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      corr[h] = exp2f(m[h] - mx[h]);  // 0 on the first tile (key j0 < N: mx is finite)
      m[h] = mx[h];
      l[h] *= corr[h];
    }
#pragma unroll
    for (int nt = 0; nt < kNT; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++) {
        s[nt][c] = exp2f(s[nt][c] - m[c >> 1]);
        l[c >> 1] += s[nt][c];  // the lane's own columns; summed over the quad at the end
      }
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
      acc[dt][0] *= corr[0], acc[dt][1] *= corr[0];
      acc[dt][2] *= corr[1], acc[dt][3] *= corr[1];
    }
    accumulate_weighted<D>(acc, s, sv0 + buf, lt);
    __syncthreads();  // every warp is done with buffer st before it is refilled
  }
#pragma unroll
  for (int h = 0; h < 2; h++) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++) {
    acc[dt][0] /= l[0], acc[dt][1] /= l[0];
    acc[dt][2] /= l[1], acc[dt][3] /= l[1];
  }
  store_rows<D>(o + b * N * D, acc, r0, r1, N, t, nullptr, 0, 0);
  if (t == 0) {  // lse = ln(sum_j exp(s_ij)) = (m + log2 l) ln 2, m in log2 units
    if (r0 < N) lse[b * N + r0] = (m[0] + log2f(l[0])) * kLn2;
    if (r1 < N) lse[b * N + r1] = (m[1] + log2f(l[1])) * kLn2;
  }
}

// ---- backward: dq ------------------------------------------------------------------

template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    flash_dq_kernel(const bf16* __restrict__ rq, const bf16* __restrict__ rk, const bf16* __restrict__ bv,
                    const bf16* __restrict__ bgo, const float* __restrict__ lse, const float* __restrict__ dl,
                    const float2* __restrict__ tab, float* __restrict__ dq, int N, int H, int W, int nrb,
                    float scale) {
  constexpr int LS = D + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sk = reinterpret_cast<bf16*>(smem_raw);  // [2][kTile][LS]
  bf16* sv = sk + 2 * kTile * LS;                // [2][kTile][LS]
  const int lane = threadIdx.x & 31, t = lane & 3;
  const auto [b, r0, r1] = lane_rows(nrb);  // this lane's query rows
  const bf16 *kb = rk + b * N * D, *vb = bv + b * N * D;
  const int ntiles = (N + kTile - 1) / kTile;
  load_tiles<D>(kb, vb, sk, sv, 0, N);
  uint32_t qf[D / 16][4], gf[D / 16][4];
  load_frags<D>(qf, rq + b * N * D, r0, r1, N, t);
  load_frags<D>(gf, bgo + b * N * D, r0, r1, N, t);
  const float scale_log2 = scale * kLog2e;
  // per row: lse in log2 units (+inf past N: P = 0 there) and Dl
  const float L[2] = {r0 < N ? lse[b * N + r0] * kLog2e : INFINITY, r1 < N ? lse[b * N + r1] * kLog2e : INFINITY};
  const float Dl[2] = {r0 < N ? dl[b * N + r0] : 0.0f, r1 < N ? dl[b * N + r1] : 0.0f};
  const uint32_t sk0 = mma::smem_addr(sk), sv0 = mma::smem_addr(sv);
  const uint32_t lp = lane_plain<D>(lane), lt = lane_trans<D>(lane);

  float acc[D / 8][4];
  mma::zero_acc(acc);
  for (int it = 0; it < ntiles; it++) {
    const int st = it & 1, j0 = it * kTile;
    next_tiles<D>(kb, vb, sk, sv, it, ntiles, N);
    __syncthreads();
    const uint32_t buf = (uint32_t)(st * kTile * LS * 2);
    float s[kNT][4], dp[kNT][4];
    product_rows_t<D>(s, qf, sk0 + buf, lp);   // S = Q K^T
    product_rows_t<D>(dp, gf, sv0 + buf, lp);  // dP = dO V^T
#pragma unroll
    for (int nt = 0; nt < kNT; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const int h = c >> 1;
        const float p = j0 + 8 * nt + 2 * t + (c & 1) < N ? exp2f(s[nt][c] * scale_log2 - L[h]) : 0.0f;
        s[nt][c] = p * (dp[nt][c] - Dl[h]) * scale;  // dS
      }
    accumulate_weighted<D>(acc, s, sk0 + buf, lt);  // dQ += dS K
    __syncthreads();
  }
  store_rows<D>(dq + b * N * D, acc, r0, r1, N, t, tab, H, W);
}

// ---- backward: dk, dv -------------------------------------------------------------

template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    flash_dkv_kernel(const bf16* __restrict__ rq, const bf16* __restrict__ rk, const bf16* __restrict__ bv,
                     const bf16* __restrict__ bgo, const float* __restrict__ lse, const float* __restrict__ dl,
                     const float2* __restrict__ tab, float* __restrict__ dk, float* __restrict__ dv, int N, int H,
                     int W, int nrb, float scale) {
  constexpr int LS = D + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sq = reinterpret_cast<bf16*>(smem_raw);                    // [2][kTile][LS]
  bf16* sg = sq + 2 * kTile * LS;                                  // [2][kTile][LS]
  float* sl = reinterpret_cast<float*>(sg + 2 * kTile * LS);       // [2][kTile]: lse (log2 units)
  float* sd = sl + 2 * kTile;                                      // [2][kTile]: Dl
  const int lane = threadIdx.x & 31, t = lane & 3;
  const auto [b, r0, r1] = lane_rows(nrb);  // this lane's key rows
  const bf16 *qb = rq + b * N * D, *gb = bgo + b * N * D;
  const int ntiles = (N + kTile - 1) / kTile;
  load_tiles<D>(qb, gb, sq, sg, 0, N);
  uint32_t kf[D / 16][4], vf[D / 16][4];
  load_frags<D>(kf, rk + b * N * D, r0, r1, N, t);
  load_frags<D>(vf, bv + b * N * D, r0, r1, N, t);
  const float scale_log2 = scale * kLog2e;
  const uint32_t sq0 = mma::smem_addr(sq), sg0 = mma::smem_addr(sg);
  const uint32_t lp = lane_plain<D>(lane), lt = lane_trans<D>(lane);

  float ak[D / 8][4], av[D / 8][4];
  mma::zero_acc(ak);
  mma::zero_acc(av);
  for (int it = 0; it < ntiles; it++) {
    const int st = it & 1, i0 = it * kTile;
    next_tiles<D>(qb, gb, sq, sg, it, ntiles, N);
    // this tile's lse and Dl into buffer st (last read two tiles ago, before a barrier since)
    for (int i = threadIdx.x; i < kTile; i += kWarps * 32) {
      const bool ok = i0 + i < N;
      sl[st * kTile + i] = ok ? lse[b * N + i0 + i] * kLog2e : INFINITY;
      sd[st * kTile + i] = ok ? dl[b * N + i0 + i] : 0.0f;
    }
    __syncthreads();
    const uint32_t buf = (uint32_t)(st * kTile * LS * 2);
    const float *L = sl + st * kTile, *Dl = sd + st * kTile;
    float w[kNT][4];
    // w[nt][c]: key row (c < 2 ? r0 : r1), query i0 + 8 nt + 2 t + (c & 1)
    product_rows_t<D>(w, kf, sq0 + buf, lp);  // S^T = K Q^T
#pragma unroll
    for (int nt = 0; nt < kNT; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++) w[nt][c] = exp2f(w[nt][c] * scale_log2 - L[8 * nt + 2 * t + (c & 1)]);  // P^T
    accumulate_weighted<D>(av, w, sg0 + buf, lt);  // dV += P^T dO
    float dp[kNT][4];
    product_rows_t<D>(dp, vf, sg0 + buf, lp);  // dP^T = V dO^T
#pragma unroll
    for (int nt = 0; nt < kNT; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++) w[nt][c] *= (dp[nt][c] - Dl[8 * nt + 2 * t + (c & 1)]) * scale;  // dS^T
    accumulate_weighted<D>(ak, w, sq0 + buf, lt);  // dK += dS^T Q
    __syncthreads();
  }
  store_rows<D>(dk + b * N * D, ak, r0, r1, N, t, tab, H, W);
  store_rows<D>(dv + b * N * D, av, r0, r1, N, t, nullptr, 0, 0);
}

// ---- launches ----------------------------------------------------------------------

template <typename K>
void allow_smem(K kernel, size_t bytes, const char* op) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), op);
}

size_t tile_bytes(int64_t D) { return (size_t)2 * 2 * kTile * (D + 8) * sizeof(bf16); }  // two tiles, two buffers

void check_aligned(const char* op, std::initializer_list<const void*> arrays, int bytes) {
  for (const void* a : arrays)
    NALA_CHECK(reinterpret_cast<uintptr_t>(a) % bytes == 0, op, ": arrays must be ", bytes, "-byte aligned");
}

void check_problem(const char* op, int64_t G, int64_t N, int64_t D, bool backward) {
  NALA_CHECK(backward ? softmax_attention_tc_supported(D) : (softmax_attention_tc_supported(D) || D == 128), op,
             ": no tensor-core kernel for head dim ", D);
  NALA_CHECK(G * ((N + kRows - 1) / kRows) < (int64_t(1) << 31) && N * D < (int64_t(1) << 31), op,
             ": too many problems or tokens (G = ", G, ", N = ", N, ")");
}

template <int D>
void forward_launch(const bf16* rq, const bf16* rk, const bf16* bv, float* o, float* lse, int64_t G, int64_t N) {
  const char* op = "softmax_flash_forward_bf16";
  const int nrb = (int)((N + kRows - 1) / kRows);
  const size_t smem = tile_bytes(D);
  allow_smem(flash_fwd_kernel<D>, smem, op);
  flash_fwd_kernel<D><<<(unsigned)(G * nrb), kWarps * 32, smem>>>(rq, rk, bv, o, lse, (int)N, nrb,
                                                                  kLog2e / std::sqrt((float)D));
  CUDA_CHECK_LAUNCH(op);
}

template <int D>
void backward_launch(const bf16* rq, const bf16* rk, const bf16* bv, const bf16* bgo, const float* lse,
                     const float* dl, const float2* tab, float* dq, float* dk, float* dv, int64_t G, int64_t H,
                     int64_t W) {
  const char* op = "softmax_attention_backward_tc";
  const int64_t N = H * W;
  const int nrb = (int)((N + kRows - 1) / kRows);
  const float scale = 1.0f / std::sqrt((float)D);
  const size_t smem_q = tile_bytes(D), smem_k = tile_bytes(D) + 2 * 2 * kTile * sizeof(float);
  allow_smem(flash_dq_kernel<D>, smem_q, op);
  allow_smem(flash_dkv_kernel<D>, smem_k, op);
  flash_dq_kernel<D><<<(unsigned)(G * nrb), kWarps * 32, smem_q>>>(rq, rk, bv, bgo, lse, dl, tab, dq, (int)N,
                                                                   (int)H, (int)W, nrb, scale);
  CUDA_CHECK_LAUNCH(op);
  flash_dkv_kernel<D><<<(unsigned)(G * nrb), kWarps * 32, smem_k>>>(rq, rk, bv, bgo, lse, dl, tab, dk, dv, (int)N,
                                                                    (int)H, (int)W, nrb, scale);
  CUDA_CHECK_LAUNCH(op);
}

// rq, rk, bv for a problem set: bf16 device buffers of G N D values each.
struct Operands {
  Tensor buf;
  bf16 *rq, *rk, *bv;
  Operands(int64_t n, int64_t extra) {  // n values each, and extra more after them
    buf = Tensor::empty({(3 * n + extra + 1) / 2}, DType::F32, Device::CUDA);
    rq = reinterpret_cast<bf16*>(buf.f32()), rk = rq + n, bv = rk + n;
  }
};

}  // namespace

bool softmax_attention_tc_supported(int64_t D) { return D == 16 || D == 32 || D == 64; }

void softmax_rope_bf16(const float* q, const float* k, const float* v, bf16* rq, bf16* rk, bf16* bv, int64_t G,
                       int64_t H, int64_t W, int64_t D) {
  const char* op = "softmax_rope_bf16";
  NALA_CHECK(D % 4 == 0 && D > 0, op, ": head dim ", D, " is not a positive multiple of 4");
  check_aligned(op, {q, k, v}, 8);
  check_aligned(op, {rq, rk, bv}, 4);
  const int64_t N = H * W, pairs = G * N * D / 2;
  if (pairs == 0) return;
  const float2* tab = (const float2*)rope_pair_table_device(H, W, D);
  rope_bf16_kernel<<<(unsigned)((pairs + 255) / 256), 256>>>((const float2*)q, (const float2*)k, (const float2*)v,
                                                             tab, (__nv_bfloat162*)rq, (__nv_bfloat162*)rk,
                                                             (__nv_bfloat162*)bv, pairs, (int)N, (int)H, (int)W,
                                                             (int)D);
  CUDA_CHECK_LAUNCH(op);
}

void softmax_flash_forward_bf16(const bf16* rq, const bf16* rk, const bf16* bv, float* o, float* lse, int64_t G,
                                int64_t N, int64_t D) {
  check_problem("softmax_flash_forward_bf16", G, N, D, false);
  check_aligned("softmax_flash_forward_bf16", {rq, rk, bv}, 16);  // cp.async rows
  check_aligned("softmax_flash_forward_bf16", {o}, 8);
  if (G == 0 || N == 0) return;
  switch (D) {
    case 16: return forward_launch<16>(rq, rk, bv, o, lse, G, N);
    case 32: return forward_launch<32>(rq, rk, bv, o, lse, G, N);
    case 64: return forward_launch<64>(rq, rk, bv, o, lse, G, N);
    default: return forward_launch<128>(rq, rk, bv, o, lse, G, N);
  }
}

void softmax_attention_forward_tc(const float* q, const float* k, const float* v, float* o, float* lse, int64_t G,
                                  int64_t H, int64_t W, int64_t D) {
  const int64_t N = H * W, n = G * N * D;
  check_problem("softmax_attention_forward_tc", G, N, D, false);
  check_aligned("softmax_attention_forward_tc", {q, k, v, o}, 8);  // rows read and written as float2
  if (n == 0) return;
  Operands x(n, 0);
  softmax_rope_bf16(q, k, v, x.rq, x.rk, x.bv, G, H, W, D);
  softmax_flash_forward_bf16(x.rq, x.rk, x.bv, o, lse, G, N, D);
}

void softmax_attention_backward_tc(const float* q, const float* k, const float* v, const float* o, const float* lse,
                                   const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H,
                                   int64_t W, int64_t D) {
  const char* op = "softmax_attention_backward_tc";
  const int64_t N = H * W, n = G * N * D;
  check_problem(op, G, N, D, true);
  check_aligned(op, {q, k, v, o, gout, dq, dk, dv}, 8);
  if (n == 0) return;
  Operands x(n, n);  // and bf16(dO) after them
  bf16* bgo = x.bv + n;
  Tensor dl = Tensor::empty({G, N}, DType::F32, Device::CUDA);
  softmax_rope_bf16(q, k, v, x.rq, x.rk, x.bv, G, H, W, D);
  const int64_t rows = G * N;
  go_bf16_dl_kernel<<<(unsigned)((rows + 7) / 8), 256>>>((const float2*)gout, (const float2*)o, (__nv_bfloat162*)bgo,
                                                         dl.f32(), rows, (int)D);
  CUDA_CHECK_LAUNCH(op);
  const float2* tab = (const float2*)rope_pair_table_device(H, W, D);
  switch (D) {
    case 16: return backward_launch<16>(x.rq, x.rk, x.bv, bgo, lse, dl.f32(), tab, dq, dk, dv, G, H, W);
    case 32: return backward_launch<32>(x.rq, x.rk, x.bv, bgo, lse, dl.f32(), tab, dq, dk, dv, G, H, W);
    default: return backward_launch<64>(x.rq, x.rk, x.bv, bgo, lse, dl.f32(), tab, dq, dk, dv, G, H, W);
  }
}

}  // namespace cuda
}  // namespace nala
