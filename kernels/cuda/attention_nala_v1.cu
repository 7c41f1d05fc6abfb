// kernels/cuda/attention_nala_v1.cu - NaLa attention on the GPU, the
// "fused" version of the kernel lab (kernels/lab/nala_attention_cuda.cu,
// versions 3 and 6: the step between the two-pass kernels with features in
// memory and the tensor cores of attention_nala.cu): float32 FMA, one kernel
// per stage, the feature maps made on chip (docs/SPEC.md §2; the math, what
// is saved and the overwrite rule are in kernels/cpu/attention.h, which these
// kernels mirror operation by operation). It is also the production path for
// the head dims the tensor-core kernels do not take: every d % 4 == 0 up to
// 128 other than 16, 32 and 64. Measured on one H200 at (B, h, N, d) =
// (128, 1, 3136, 64): forward 0.93 ms (443 GB/s), forward + backward 3.69 ms
// (307 GB/s); bench/bench_nala_cuda times it beside the new path.
//
// Shape letters: G = B * heads problems, N = H * W tokens, D head dim
// (D % 4 == 0, D <= 128), F = 2D features; S is (F, D) per problem.
// Memory O(N D): nothing N x N, and each pass reads q, k, v (or their
// gradients) once or twice.
//
// Forward:
//   1. nala_reduce_kernel<false>: blocks over (problem, chunk of L tokens,
//      tile of S). Each step stages kTT tokens of k and v in shared memory,
//      builds their rotated key features, and each thread adds the products
//      into its own 8 x 4 register tile of S. A block writes its partial S
//      and partial sum of fk to a buffer (no atomics).
//   2. nala_sum_parts_kernel: adds the partials of each problem in chunk
//      order (deterministic) and scales by 1/N -> S, kmean.
//   3. nala_query_fwd_kernel: a block of TQ tokens; a warp per token builds
//      fq (u^p = exp2(p log2 u), 0 at u = 0), z and rq in shared memory; then
//      o = z (RQ S) with S staged in shared memory, 4 x 4 register tiles.
// Backward (same formulas as the CPU backward):
//   1. nala_query_bwd_kernel: W = GO S^T (tiles as above), then a warp per
//      token: z, dden, dq; saves (z, dden, p, 1/n) of every token (aux).
//   2. nala_reduce_kernel<true>: dS = sum_i (z rq_i)^T go_i and
//      dkm = sum_i dden_i fq_i, partials as in forward 1 (fq rebuilt from q
//      and aux), 3. summed in fixed order.
//   4. nala_key_bwd_kernel: DV = RK dS / N, DRK = V dS^T / N, dk from DRK.
// Forward makes the fewest passes over (N, d) arrays (4); backward reads q
// and dO twice (9 passes where 7 would do). Both are bound by float32 FMA
// (39.5 GFLOP for forward + backward at the shape above), not by memory.
#include <algorithm>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/rope.h"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {

constexpr int kMaxD = 128;
constexpr int kTT = 16;            // tokens staged per step in the reductions
constexpr int kAT = 128;           // rows of S per reduction block (at most)
constexpr int kCT = 64;            // columns of S per reduction block (at most)
constexpr int kTargetBlocks = 768; // reduction blocks to aim for (chunks per problem follow)
constexpr int kThreads = 256;      // per block in the token kernels
constexpr float kZEps = 1e-6f;     // the normaliser's epsilon (docs/SPEC.md §2.1)
constexpr float kTiny = 1.17549435e-38f;  // FLT_MIN
constexpr float kLn2 = 0.693147180559945f;

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);  // same value in every lane
  return x;
}

// u^p for u >= 0 as exp2(p log2 u), 0 at u = 0 (docs/SPEC.md §7); *ln = ln u (0 at u = 0).
__device__ __forceinline__ float pow_guarded(float u, float p, float* ln) {
  const float l = log2f(fmaxf(u, kTiny));
  const bool pos = u > 0.0f;
  *ln = pos ? l * kLn2 : 0.0f;
  return pos ? exp2f(p * l) : 0.0f;
}

__device__ __forceinline__ float key_feat(float x, bool neg) {
  const float kc = x * x * x;
  return neg ? fmaxf(-kc, 0.0f) : fmaxf(kc, 0.0f);
}

// One pair at table entries (e, e+1): y = x cos + sign rot(x) sin (cpu::rope_row).
__device__ __forceinline__ void rot_pair(float x0, float x1, const float* sn, const float* cs, int e, float sign,
                                         float& y0, float& y1) {
  y0 = x0 * cs[e] - sign * x1 * sn[e];
  y1 = x1 * cs[e + 1] + sign * x0 * sn[e + 1];
}

struct QStats {
  float norm, th, p, inv;
};
// Norm statistics of one query row, computed by a whole warp.
__device__ __forceinline__ QStats query_stats(const float* qi, int D, float floor) {
  const int lane = threadIdx.x & 31;
  float ss = 0;
  for (int e = 2 * lane; e < D; e += 64) {
    const float2 x = *(const float2*)(qi + e);
    ss += x.x * x.x + x.y * x.y;
  }
  QStats s;
  s.norm = sqrtf(warp_sum(ss));
  const float n = fmaxf(s.norm, floor);
  s.th = tanhf(n);
  s.p = 3.0f * (0.5f + s.th);
  s.inv = 1.0f / n;
  return s;
}

__device__ __forceinline__ float dot4(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }
__device__ __forceinline__ float comp(float4 a, int i) { return i == 0 ? a.x : i == 1 ? a.y : i == 2 ? a.z : a.w; }

// ---------------------------------------------------------------- reductions over tokens

// Forward (kBwd = false): src = k, Y = v; X = rk, Fw = fk.
// Backward (true): src = q, Y = go, aux = (z, dden, p, 1/n); X = z rq, Fw = dden fq.
// part[g, chunk] (F*D + F) = [sum X^T Y over the chunk's tokens, sum Fw] (=), for
// rows [a0, a0 + AT) and columns [c0, c0 + CT) of this block's tile.
template <bool kBwd>
__global__ void __launch_bounds__(256) nala_reduce_kernel(const float* __restrict__ src, const float* __restrict__ Y,
                                                          const float4* __restrict__ aux,
                                                          const float* __restrict__ tsin,
                                                          const float* __restrict__ tcos, float* __restrict__ part,
                                                          int N, int D, int L, int nch, int AT, int CT, int nct) {
  __shared__ __align__(16) float s_src[kTT][kMaxD];
  __shared__ __align__(16) float s_x[kTT][kAT];
  __shared__ __align__(16) float s_f[kTT][kAT];
  __shared__ __align__(16) float s_y[kTT][kCT];
  __shared__ float4 s_aux[kTT];
  const int F = 2 * D, D4 = D / 4, tid = threadIdx.x, nthr = blockDim.x;
  const int g = blockIdx.x / nch, ch = blockIdx.x % nch;
  const int a0 = (blockIdx.y / nct) * AT, c0 = (blockIdx.y % nct) * CT;
  const int j0 = ch * L, j1 = min(N, j0 + L);
  const int ncq = CT / 4, nmt = (AT / 8) * ncq;
  const int ty = tid / ncq, tx = tid % ncq;
  const bool mm = tid < nmt, fsum = c0 == 0 && tid < AT;
  const float* srcg = src + (size_t)g * N * D;
  const float* Yg = Y + (size_t)g * N * D;
  float acc[8][4];
#pragma unroll
  for (int i = 0; i < 8; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
  float facc = 0.0f;

  for (int t0 = j0; t0 < j1; t0 += kTT) {
    const int nt = min(kTT, j1 - t0);
    for (int idx = tid; idx < kTT * D4; idx += nthr) {
      const int t = idx / D4, e = (idx % D4) * 4;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (t < nt) x = *(const float4*)(srcg + (size_t)(t0 + t) * D + e);
      *(float4*)&s_src[t][e] = x;
    }
    for (int idx = tid; idx < kTT * ncq; idx += nthr) {
      const int t = idx / ncq, c = c0 + (idx % ncq) * 4;
      float4 y = make_float4(0.f, 0.f, 0.f, 0.f);
      if (t < nt && c < D) y = *(const float4*)(Yg + (size_t)(t0 + t) * D + c);
      *(float4*)&s_y[t][c - c0] = y;
    }
    if (kBwd && tid < kTT) s_aux[tid] = tid < nt ? aux[(size_t)g * N + t0 + tid] : make_float4(0.f, 0.f, 0.f, 0.f);
    __syncthreads();
    for (int idx = tid; idx < kTT * AT; idx += nthr) {
      const int t = idx / AT, al = idx % AT, a = a0 + al;
      float x = 0.0f, f = 0.0f;
      if (t < nt && a < F) {
        const bool neg = a >= D;
        const int e = neg ? a - D : a, ep = e ^ 1;  // ep: the other value of e's pair
        const size_t te = (size_t)(t0 + t) * D + e;
        float fe, fp;
        if (kBwd) {
          const float4 au = s_aux[t];
          const float ue = fmaxf(neg ? -s_src[t][e] : s_src[t][e], 0.0f) * au.w;
          const float up = fmaxf(neg ? -s_src[t][ep] : s_src[t][ep], 0.0f) * au.w;
          float ln;
          fe = pow_guarded(ue, au.z, &ln);
          fp = pow_guarded(up, au.z, &ln);
        } else {
          fe = key_feat(s_src[t][e], neg);
          fp = key_feat(s_src[t][ep], neg);
        }
        const float r = (e & 1) ? fe * tcos[te] + fp * tsin[te] : fe * tcos[te] - fp * tsin[te];
        x = kBwd ? r * s_aux[t].x : r;
        f = kBwd ? s_aux[t].y * fe : fe;
      }
      s_x[t][al] = x;
      s_f[t][al] = f;
    }
    __syncthreads();
    if (mm) {
      for (int t = 0; t < nt; t++) {
        const float4 xa = *(const float4*)&s_x[t][ty * 8], xb = *(const float4*)&s_x[t][ty * 8 + 4];
        const float4 y = *(const float4*)&s_y[t][tx * 4];
        const float xs[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
        for (int i = 0; i < 8; i++) {
          acc[i][0] += xs[i] * y.x;
          acc[i][1] += xs[i] * y.y;
          acc[i][2] += xs[i] * y.z;
          acc[i][3] += xs[i] * y.w;
        }
      }
    }
    if (fsum)
      for (int t = 0; t < nt; t++) facc += s_f[t][tid];  // token order
    __syncthreads();
  }

  float* pg = part + (size_t)blockIdx.x * (F * D + F);  // blockIdx.x = g * nch + ch
  if (mm) {
    const int c = c0 + tx * 4;
#pragma unroll
    for (int i = 0; i < 8; i++) {
      const int a = a0 + ty * 8 + i;
      if (a < F && c < D) *(float4*)(pg + (size_t)a * D + c) = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
    }
  }
  if (fsum && a0 + tid < F) pg[F * D + a0 + tid] = facc;
}

// M[g] (FD) and vec[g] (F) = scale * sum over chunks of part[g, chunk], in chunk order.
__global__ void nala_sum_parts_kernel(const float* __restrict__ part, float* __restrict__ M, float* __restrict__ vec,
                                      int64_t G, int nch, int FD, int F, float scale) {
  const int64_t P = FD + F, total = G * P;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t g = idx / P, x = idx % P;
    const float* p = part + g * nch * P + x;
    float s = 0.0f;
    for (int c = 0; c < nch; c++) s += p[c * P];
    s *= scale;
    if (x < FD)
      M[g * FD + x] = s;
    else
      vec[g * F + x - FD] = s;
  }
}

// ---------------------------------------------------------------- per-token kernels

// Stage a (F, D) matrix in shared memory with row stride D + 4 (rows read in
// parallel by a warp fall in different banks).
__device__ __forceinline__ void stage_state(float* s_S, const float* M, int D) {
  const int D4 = D / 4, LS = D + 4;
  for (int idx = threadIdx.x; idx < 2 * D * D4; idx += blockDim.x) {
    const int a = idx / D4, c = (idx % D4) * 4;
    *(float4*)&s_S[a * LS + c] = *(const float4*)(M + (size_t)a * D + c);
  }
}

// rows (TQ, D) of a (N, D) array from token i0 into shared memory; zeros past N.
__device__ __forceinline__ void stage_rows(float* s, const float* X, int i0, int TQ, int N, int D) {
  const int D4 = D / 4;
  for (int idx = threadIdx.x; idx < TQ * D4; idx += blockDim.x) {
    const int t = idx / D4, c = (idx % D4) * 4;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (i0 + t < N) x = *(const float4*)(X + (size_t)(i0 + t) * D + c);
    *(float4*)&s[t * D + c] = x;
  }
}

// out (TQ, Nc) = A (TQ, K) B (K, Nc): A rows of stride K in shared memory, B rows
// of stride LS. Each thread takes 4 x 4 tiles; calls fn(t, col, float4 of the row).
template <typename Fn>
__device__ __forceinline__ void tile_mm_ab(const float* A, const float* B, int TQ, int K, int Nc, int LS, Fn fn) {
  const int nc4 = Nc / 4, nmt = (TQ / 4) * nc4;
  for (int mt = threadIdx.x; mt < nmt; mt += blockDim.x) {
    const int t0 = (mt / nc4) * 4, c = (mt % nc4) * 4;
    float acc[4][4] = {};
    for (int a = 0; a < K; a += 4) {
      float4 r[4], s[4];
#pragma unroll
      for (int i = 0; i < 4; i++) r[i] = *(const float4*)&A[(t0 + i) * K + a];
#pragma unroll
      for (int kk = 0; kk < 4; kk++) s[kk] = *(const float4*)&B[(a + kk) * LS + c];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
          const float x = comp(r[i], kk);
          acc[i][0] += x * s[kk].x;
          acc[i][1] += x * s[kk].y;
          acc[i][2] += x * s[kk].z;
          acc[i][3] += x * s[kk].w;
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) fn(t0 + i, c, make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
  }
}

// out (TQ, Nr) = A (TQ, K) B^T with B (Nr, K) of row stride LS (both read along K).
template <typename Fn>
__device__ __forceinline__ void tile_mm_abt(const float* A, const float* B, int TQ, int K, int Nr, int LS, Fn fn) {
  const int nr4 = Nr / 4, nmt = (TQ / 4) * nr4;
  for (int mt = threadIdx.x; mt < nmt; mt += blockDim.x) {
    const int t0 = (mt / nr4) * 4, a = (mt % nr4) * 4;
    float acc[4][4] = {};
    for (int c = 0; c < K; c += 4) {
      float4 x[4], s[4];
#pragma unroll
      for (int i = 0; i < 4; i++) x[i] = *(const float4*)&A[(t0 + i) * K + c];
#pragma unroll
      for (int j = 0; j < 4; j++) s[j] = *(const float4*)&B[(a + j) * LS + c];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += dot4(x[i], s[j]);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) fn(t0 + i, a, make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
  }
}

// o = z (rq S) for TQ tokens of one problem. Shared: S (F, D+4), RQ (TQ, F), z (TQ).
__global__ void __launch_bounds__(kThreads) nala_query_fwd_kernel(const float* __restrict__ q,
                                                                  const float* __restrict__ S,
                                                                  const float* __restrict__ kmean,
                                                                  const float* __restrict__ tsin,
                                                                  const float* __restrict__ tcos, float* __restrict__ o,
                                                                  int N, int D, int TQ, int ntq, float floor) {
  extern __shared__ __align__(16) float smem[];
  const int F = 2 * D, LS = D + 4;
  float* s_S = smem;
  float* s_rq = s_S + F * LS;
  float* s_z = s_rq + TQ * F;
  const int g = blockIdx.x / ntq, i0 = (blockIdx.x % ntq) * TQ;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  stage_state(s_S, S + (size_t)g * F * D, D);
  const float* km = kmean + (size_t)g * F;
  for (int t = warp; t < TQ; t += nwarps) {
    const int i = i0 + t;
    float* rq = s_rq + t * F;
    if (i >= N) {
      for (int a = lane; a < F; a += 32) rq[a] = 0.0f;
      if (lane == 0) s_z[t] = 0.0f;
      continue;
    }
    const float* qi = q + ((size_t)g * N + i) * D;
    const QStats st = query_stats(qi, D, floor);
    const float *sn = tsin + (size_t)i * D, *cs = tcos + (size_t)i * D;
    float den = 0.0f;
    for (int e = 2 * lane; e < D; e += 64) {
      const float2 x = *(const float2*)(qi + e);
#pragma unroll
      for (int h = 0; h < 2; h++) {
        float ln, r0, r1;
        const float f0 = pow_guarded(fmaxf(h ? -x.x : x.x, 0.0f) * st.inv, st.p, &ln);
        const float f1 = pow_guarded(fmaxf(h ? -x.y : x.y, 0.0f) * st.inv, st.p, &ln);
        den += f0 * km[h * D + e] + f1 * km[h * D + e + 1];
        rot_pair(f0, f1, sn, cs, e, 1.0f, r0, r1);
        *(float2*)&rq[h * D + e] = make_float2(r0, r1);
      }
    }
    den = warp_sum(den) + kZEps;
    if (lane == 0) s_z[t] = 1.0f / den;
  }
  __syncthreads();
  float* og = o + (size_t)g * N * D;
  tile_mm_ab(s_rq, s_S, TQ, F, D, LS, [&](int t, int c, float4 y) {
    if (i0 + t >= N) return;
    const float z = s_z[t];
    *(float4*)(og + (size_t)(i0 + t) * D + c) = make_float4(y.x * z, y.y * z, y.z * z, y.w * z);
  });
}

// dq of TQ tokens, and aux = (z, dden, p, 1/n) per token. Shared: S (F, D+4), GO (TQ, D), W (TQ, F).
__global__ void __launch_bounds__(kThreads) nala_query_bwd_kernel(
    const float* __restrict__ q, const float* __restrict__ S, const float* __restrict__ kmean,
    const float* __restrict__ gout, const float* __restrict__ tsin, const float* __restrict__ tcos,
    float* __restrict__ dq, float4* __restrict__ aux, int N, int D, int TQ, int ntq, float floor) {
  extern __shared__ __align__(16) float smem[];
  const int F = 2 * D, LS = D + 4;
  float* s_S = smem;
  float* s_go = s_S + F * LS;
  float* s_w = s_go + TQ * D;
  const int g = blockIdx.x / ntq, i0 = (blockIdx.x % ntq) * TQ;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  stage_state(s_S, S + (size_t)g * F * D, D);
  stage_rows(s_go, gout + (size_t)g * N * D, i0, TQ, N, D);
  __syncthreads();
  // W = GO S^T: row t is S go_t.
  tile_mm_abt(s_go, s_S, TQ, D, F, LS, [&](int t, int a, float4 y) { *(float4*)&s_w[t * F + a] = y; });
  __syncthreads();
  const float* km = kmean + (size_t)g * F;
  for (int t = warp; t < TQ; t += nwarps) {
    const int i = i0 + t;
    if (i >= N) continue;
    const float* qi = q + ((size_t)g * N + i) * D;
    const float* w = s_w + t * F;
    const QStats st = query_stats(qi, D, floor);
    const float *sn = tsin + (size_t)i * D, *cs = tcos + (size_t)i * D;
    // A lane holds pairs e = 2 lane + 64 r (r < 2), in both halves: index [r][2 h + m] is element h D + e + m.
    float2 xq[2];
    float u[2][4], lu[2][4], fq[2][4], du[2][4];
    float den = 0.0f, dz = 0.0f;
#pragma unroll
    for (int r = 0; r < kMaxD / 64; r++) {
      const int e = 2 * lane + 64 * r;
      if (e >= D) continue;
      xq[r] = *(const float2*)(qi + e);
#pragma unroll
      for (int h = 0; h < 2; h++) {
        u[r][2 * h] = fmaxf(h ? -xq[r].x : xq[r].x, 0.0f) * st.inv;
        u[r][2 * h + 1] = fmaxf(h ? -xq[r].y : xq[r].y, 0.0f) * st.inv;
        fq[r][2 * h] = pow_guarded(u[r][2 * h], st.p, &lu[r][2 * h]);
        fq[r][2 * h + 1] = pow_guarded(u[r][2 * h + 1], st.p, &lu[r][2 * h + 1]);
        den += fq[r][2 * h] * km[h * D + e] + fq[r][2 * h + 1] * km[h * D + e + 1];
        float r0, r1;
        rot_pair(fq[r][2 * h], fq[r][2 * h + 1], sn, cs, e, 1.0f, r0, r1);
        dz += r0 * w[h * D + e] + r1 * w[h * D + e + 1];  // dz = go . (rq S)
      }
    }
    den = warp_sum(den) + kZEps;
    dz = warp_sum(dz);
    const float z = 1.0f / den, dden = -z * z * dz;
    float dp = 0.0f, dn_u = 0.0f;
#pragma unroll
    for (int r = 0; r < kMaxD / 64; r++) {
      const int e = 2 * lane + 64 * r;
      if (e >= D) continue;
#pragma unroll
      for (int h = 0; h < 2; h++) {
        float df[2];
        rot_pair(z * w[h * D + e], z * w[h * D + e + 1], sn, cs, e, -1.0f, df[0], df[1]);  // dfq = rope^T(z S go)
#pragma unroll
        for (int m = 0; m < 2; m++) {
          const int x = 2 * h + m;
          const float gf = (df[m] + dden * km[h * D + e + m]) * fq[r][x];
          dp += gf * lu[r][x];  // d(u^p)/dp = u^p ln u
          const float ua = u[r][x] > 0.0f ? u[r][x] : 1.0f;
          du[r][x] = u[r][x] > 0.0f ? st.p * gf / ua : 0.0f;  // d(u^p)/du = p u^(p-1)
          dn_u += du[r][x] * u[r][x];
        }
      }
    }
    dp = warp_sum(dp);
    dn_u = warp_sum(dn_u);
    const float dn = dp * 3.0f * (1.0f - st.th * st.th) - dn_u * st.inv;
    const float dnq = st.norm > floor ? dn / st.norm : 0.0f;
    float* dqi = dq + ((size_t)g * N + i) * D;
#pragma unroll
    for (int r = 0; r < kMaxD / 64; r++) {
      const int e = 2 * lane + 64 * r;
      if (e >= D) continue;
      float out[2];
#pragma unroll
      for (int m = 0; m < 2; m++) {
        const float qe = m ? xq[r].y : xq[r].x;
        float gq = dnq * qe;
        if (qe > 0) gq += du[r][m] * st.inv;
        if (qe < 0) gq -= du[r][2 + m] * st.inv;
        out[m] = gq;
      }
      *(float2*)(dqi + e) = make_float2(out[0], out[1]);
    }
    if (lane == 0) aux[(size_t)g * N + i] = make_float4(z, dden, st.p, st.inv);
  }
}

// dk, dv of TQ tokens from dS, dkm (plain sums; 1/N applied here).
// Shared: dS (F, D+4), RK (TQ, F) then DRK in its place, V (TQ, D).
__global__ void __launch_bounds__(kThreads) nala_key_bwd_kernel(
    const float* __restrict__ k, const float* __restrict__ v, const float* __restrict__ dS,
    const float* __restrict__ dkm, const float* __restrict__ tsin, const float* __restrict__ tcos,
    float* __restrict__ dk, float* __restrict__ dv, int N, int D, int TQ, int ntq, float invN) {
  extern __shared__ __align__(16) float smem[];
  const int F = 2 * D, LS = D + 4;
  float* s_S = smem;
  float* s_rk = s_S + F * LS;
  float* s_v = s_rk + TQ * F;
  const int g = blockIdx.x / ntq, i0 = (blockIdx.x % ntq) * TQ;
  const float* kg = k + (size_t)g * N * D;
  stage_state(s_S, dS + (size_t)g * F * D, D);
  stage_rows(s_v, v + (size_t)g * N * D, i0, TQ, N, D);
  for (int idx = threadIdx.x; idx < TQ * F; idx += blockDim.x) {
    const int t = idx / F, a = idx % F, j = i0 + t;
    float r = 0.0f;
    if (j < N) {
      const bool neg = a >= D;
      const int e = neg ? a - D : a;
      const size_t te = (size_t)j * D + e;
      const float fe = key_feat(kg[te], neg), fp = key_feat(kg[te ^ 1], neg);  // te ^ 1: e's pair (D even)
      r = (e & 1) ? fe * tcos[te] + fp * tsin[te] : fe * tcos[te] - fp * tsin[te];
    }
    s_rk[idx] = r;
  }
  __syncthreads();
  float* dvg = dv + (size_t)g * N * D;
  tile_mm_ab(s_rk, s_S, TQ, F, D, LS, [&](int t, int c, float4 y) {  // DV = RK dS / N
    if (i0 + t < N) *(float4*)(dvg + (size_t)(i0 + t) * D + c) = make_float4(y.x * invN, y.y * invN, y.z * invN, y.w * invN);
  });
  __syncthreads();  // RK is read; DRK goes in its place
  tile_mm_abt(s_v, s_S, TQ, D, F, LS, [&](int t, int a, float4 y) {  // DRK = V dS^T / N
    *(float4*)&s_rk[t * F + a] = make_float4(y.x * invN, y.y * invN, y.z * invN, y.w * invN);
  });
  __syncthreads();
  const float* km = dkm + (size_t)g * F;
  float* dkg = dk + (size_t)g * N * D;
  for (int idx = threadIdx.x; idx < TQ * D; idx += blockDim.x) {
    const int t = idx / D, e = idx % D, j = i0 + t;
    if (j >= N) continue;
    const float* drk = s_rk + t * F;
    const size_t te = (size_t)j * D + e;
    // dfk = rope^T(drk), element e of each half.
    const float sgn = (e & 1) ? -1.0f : 1.0f;
    const float dfp = drk[e] * tcos[te] + sgn * drk[e ^ 1] * tsin[te];
    const float dfn = drk[D + e] * tcos[te] + sgn * drk[D + (e ^ 1)] * tsin[te];
    const float kx = kg[te], kc = kx * kx * kx;
    float gk = 0.0f;
    if (kc > 0) gk += dfp + km[e] * invN;
    if (kc < 0) gk -= dfn + km[D + e] * invN;
    dkg[te] = gk * 3.0f * kx * kx;
  }
}

// ---------------------------------------------------------------- host side

int tile_tokens(int64_t D) { return (int)std::max<int64_t>(32, std::min<int64_t>(128, (4096 / D) & ~int64_t(3))); }

template <typename K>
void allow_smem(K kernel, size_t bytes, const char* op) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), op);
}

struct ReducePlan {
  int AT, CT, nat, nct, L, nch, threads;
};
ReducePlan reduce_plan(int64_t G, int64_t N, int64_t D) {
  ReducePlan p;
  const int F = (int)(2 * D);
  p.AT = std::min(F, kAT);
  p.CT = std::min((int)D, kCT);
  p.nat = (F + p.AT - 1) / p.AT;
  p.nct = ((int)D + p.CT - 1) / p.CT;
  const int64_t per = G * p.nat * p.nct, steps = (N + kTT - 1) / kTT;
  const int64_t nch = std::max<int64_t>(1, std::min<int64_t>(steps, (kTargetBlocks + per - 1) / per));
  p.L = (int)(((N + nch - 1) / nch + kTT - 1) / kTT * kTT);
  p.nch = (int)((N + p.L - 1) / p.L);
  p.threads = (std::max((p.AT / 8) * (p.CT / 4), p.AT) + 31) / 32 * 32;
  return p;
}

void check_dims(const char* op, int64_t G, int64_t N, int64_t D) {
  NALA_CHECK(D % 4 == 0 && D > 0 && D <= kMaxD, op, ": CUDA kernels take head dim d % 4 == 0 and d <= ", kMaxD,
             ", got d = ", D);
  NALA_CHECK(G * N * D < (int64_t(1) << 31) && G * 2 * D * D < (int64_t(1) << 31), op, ": too large (G=", G,
             " N=", N, " d=", D, ")");
}

// Partials of one reduction, then their fixed-order sum into M (F, D) and vec (F).
template <bool kBwd>
void reduce_tokens(const float* src, const float* Y, const float4* aux, const float* ts, const float* tc, float* M,
                   float* vec, int64_t G, int64_t N, int64_t D, float scale, const char* op) {
  const ReducePlan p = reduce_plan(G, N, D);
  const int64_t F = 2 * D, P = F * D + F;
  Tensor part = Tensor::empty({G * p.nch * P}, DType::F32, Device::CUDA);
  dim3 grid((unsigned)(G * p.nch), (unsigned)(p.nat * p.nct));
  nala_reduce_kernel<kBwd><<<grid, p.threads>>>(src, Y, aux, ts, tc, part.f32(), (int)N, (int)D, p.L, p.nch, p.AT,
                                                p.CT, p.nct);
  CUDA_CHECK_LAUNCH(op);
  const int64_t total = G * P;
  const int blocks = (int)std::min<int64_t>((total + 255) / 256, 4096);
  nala_sum_parts_kernel<<<blocks, 256>>>(part.f32(), M, vec, G, p.nch, (int)(F * D), (int)F, scale);
  CUDA_CHECK_LAUNCH(op);
}

}  // namespace

void nala_attention_forward_v1(const float* q, const float* k, const float* v, float* o, float* S, float* kmean,
                            int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor) {
  const char* op = "nala_attention_forward_v1";
  const int64_t N = H * W, F = 2 * D;
  check_dims(op, G, N, D);
  if (G == 0 || N == 0) return;
  const float *ts, *tc;
  rope_tables_device(H, W, D, &ts, &tc);
  reduce_tokens<false>(k, v, nullptr, ts, tc, S, kmean, G, N, D, 1.0f / (float)N, op);
  const int TQ = tile_tokens(D), ntq = (int)((N + TQ - 1) / TQ);
  const size_t smem = (size_t)(F * (D + 4) + TQ * F + TQ) * sizeof(float);
  allow_smem(nala_query_fwd_kernel, smem, op);
  nala_query_fwd_kernel<<<(unsigned)(G * ntq), kThreads, smem>>>(q, S, kmean, ts, tc, o, (int)N, (int)D, TQ, ntq,
                                                                 norm_floor);
  CUDA_CHECK_LAUNCH(op);
}

void nala_attention_backward_v1(const float* q, const float* k, const float* v, const float* S, const float* kmean,
                             const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H, int64_t W,
                             int64_t D, float norm_floor) {
  const char* op = "nala_attention_backward_v1";
  const int64_t N = H * W, F = 2 * D;
  check_dims(op, G, N, D);
  if (G == 0 || N == 0) return;
  const float *ts, *tc;
  rope_tables_device(H, W, D, &ts, &tc);
  const int TQ = tile_tokens(D), ntq = (int)((N + TQ - 1) / TQ);
  Tensor aux = Tensor::empty({G * N * 4}, DType::F32, Device::CUDA);  // (z, dden, p, 1/n) per token
  Tensor dS = Tensor::empty({G, F, D}, DType::F32, Device::CUDA), dkm = Tensor::empty({G, F}, DType::F32, Device::CUDA);
  float4* auxp = (float4*)aux.f32();

  const size_t smem_q = (size_t)(F * (D + 4) + TQ * D + TQ * F) * sizeof(float);
  allow_smem(nala_query_bwd_kernel, smem_q, op);
  nala_query_bwd_kernel<<<(unsigned)(G * ntq), kThreads, smem_q>>>(q, S, kmean, gout, ts, tc, dq, auxp, (int)N,
                                                                   (int)D, TQ, ntq, norm_floor);
  CUDA_CHECK_LAUNCH(op);

  reduce_tokens<true>(q, gout, auxp, ts, tc, dS.f32(), dkm.f32(), G, N, D, 1.0f, op);

  const size_t smem_k = (size_t)(F * (D + 4) + TQ * F + TQ * D) * sizeof(float);
  allow_smem(nala_key_bwd_kernel, smem_k, op);
  nala_key_bwd_kernel<<<(unsigned)(G * ntq), kThreads, smem_k>>>(k, v, dS.f32(), dkm.f32(), ts, tc, dk, dv, (int)N,
                                                                 (int)D, TQ, ntq, 1.0f / (float)N);
  CUDA_CHECK_LAUNCH(op);
}

}  // namespace cuda
}  // namespace nala
