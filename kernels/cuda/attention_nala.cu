// kernels/cuda/attention_nala.cu - NaLa attention on the GPU with tensor
// cores: the production path for head dims 16, 32 and 64 (other head dims go
// to kernels/cuda/attention_nala_v1.cu, the first version). The math, what
// is saved for backward and the overwrite rule: kernels/cpu/attention.h.
//
// Shape letters: G = B * heads problems, N = H * W tokens, D head dim,
// F = 2D features; S (F, D) and kmean (F) per problem.
//
// Element type T: float32 or bf16 for q, k, v, dO and o, dq, dk, dv (the
// kernels are templates; ld2/ld4 widen as they read, st2 rounds as it
// writes). Everything on chip, S, kmean and the partials are float32, and
// the products are the same 3-pass products either way, so a bf16 run does
// the float32 arithmetic on the rounded inputs and rounds once at the end
// (the chunk plan may differ, since bf16 outputs hold fewer partials, and
// with it the order in which partials add up). Where an operand is a bf16
// input (v in S and in drk, dO in W) its lo part is zero and that pass is
// left out (mma.cuh's 2-pass forms: the same sum). bf16 halves the floor
// below (and the memory of the eight arrays).
//
// The floor, at (B, h, N, d) = (128, 1, 3136, 64) float32, where each of q, k,
// v, o, dO, dq, dk, dv is 102.8 MB. Forward must read q, k, v and write o:
// 411 MB, 0.096 ms at the 4.3 TB/s an H200 copies at. Backward must read
// q, k, v, dO and write dq, dk, dv: 719 MB, 0.167 ms. Together 1.13 GB,
// 0.263 ms. Arithmetic: six products of 2 N F D flops per problem each
// (S, o forward; W = S dO, dS, dv, drk backward): 39.5 GFLOP, 0.6 ms of
// float32 FMA at the 67 TFLOP/s peak. Hence tensor cores; with them the
// memory floor is the bound.
//
// Precision. The CUDA tests hold every output to 1e-4 + 1e-3 |ref| of the
// CPU. One bf16 or tf32 product per term misses that (tf32 by up to 50x on
// dq), so each operand is split into hi + lo and each product done as
// a_hi b_hi + a_hi b_lo + a_lo b_hi (kernels/cuda/mma.cuh). bf16 3-pass
// (~1e-5 per product) serves o, dS, dv and drk; dq is sensitive to the
// errors of S and of W = S dO (the numerator's and the normaliser's
// gradients cancel along fq), so S and W use tf32 3-pass (~1e-6), which
// costs twice the tensor time of bf16 3-pass.
// One-pass products (bf16 arrays, one_pass = true: template flag ONE; what
// autograd's nala_attention on bf16 tensors runs): each operand rounded once, tf32 for W, bf16
// for the other five, one mma per term and no lo parts (no splits, no lo
// tiles read). Its error is about 4e-3 of each output normwise
// (tests/reference/nala_product_precision.py), outside the element-wise
// tolerance above: the tests hold it to a normwise bound instead.
//
// Forward, two kernels (each reads its inputs once, writes its outputs once):
//   1. nala_state_kernel: a block per (problem, chunk of L tokens). 32 tokens
//      per step: k and v come into registers one step ahead, rk = rope([k^3]+,
//      [-k^3]+) and v go to shared memory as tf32 hi/lo, feature-major, and
//      8 warps add RK^T V into their tiles of S (tf32 3-pass, fragments by
//      ldmatrix). One-pass: rk goes to shared memory token-major in bf16,
//      and both operands of the bf16 product come by ldmatrix.trans, v
//      straight from its stage; the steps are pipelined (one barrier a step,
//      step i's features made while step i - 1's product runs). The block
//      writes its partial S and partial sum of fk (no atomics).
//   2. nala_output_kernel: a block per (problem, chunk). It adds the partials
//      in chunk order (deterministic), scales by 1/N, keeps S as bf16 hi/lo in
//      shared memory and writes S, kmean (the first chunk's block). Each warp
//      takes 16 tokens at a time (q through cp.async, two stages): norm, p, z,
//      then fq and rq built directly as the A operand of o = z (rq S) (bf16
//      3-pass; a thread's fragment columns 2t, 2t+1 are a rope pair, so no
//      data moves between lanes).
// Backward, two kernels:
//   3. nala_query_grad_kernel: a block per (problem, chunk), 128 tokens per
//      step, 16 per warp: W = dO S^T for the warp's tokens (tf32 3-pass; the
//      fragment of W holds exactly the features whose fq the thread holds),
//      then z, dden, dq as in the CPU backward, and dden fq summed per warp.
//      rq and z dO go to shared memory as bf16 hi/lo, and the block adds
//      dS += RQ^T (z dO) over the step (bf16 3-pass). Partials as in 1.
//      One-pass: q staged by cp.async beside dO, two (z rq, z dO) buffers (one
//      barrier a step), dden fq summed into a row per lane group.
//   4. nala_key_grad_kernel: a block per (problem, chunk) sums the partials of
//      dS and dkm; each warp takes 16 tokens: dv = rk dS / N and
//      drk = v dS^T / N (bf16 3-pass, A operands from registers, dS through
//      ldmatrix and ldmatrix.trans from one copy), then dk.
// Chunks per problem are chosen so that G x chunks blocks fill the GPU's
// resident slots in as few, as full waves as possible (plan_chunks).
// Between 1 and 2 (and 3 and 4), sum_partials_kernel adds each problem's
// partials up once, so kernels 2 and 4 read one partial state, not one per
// chunk; with at most kDirectParts chunks (many problems, as in the models)
// kernels 2 and 4 add them themselves and the summing kernel is left out.
// Otherwise the partials themselves are kept in an output the pair has not
// written yet (o in forward, dk in backward) whenever they fit there (at
// long sequences, where they are many: 256 of 33 KB at G = 1, N = 65,536,
// d = 64): the op then allocates only the sum, 2d^2 + 2d floats per problem
// (class Partials).
//
// The kernels are bound by instruction issue more than by memory or tensor
// time: the 3-pass products triple the mma count and double the fragment
// work, and the per-token feature maps (u^p, rope, the dq chain) are scalar.
// The steps, on one H200 at (128, 1, 3136, 64), forward / forward + backward:
//   first version (attention_nala_v1.cu, float32 FMA)       0.93 / 3.69 ms
//   tensor cores, one chunk per 96 tokens                   0.41 / 2.29 ms
//     (33 partial states per problem, each summed by every output block)
//   two chunks per problem, vectorised partial sums         0.32 / 1.63 ms
//   no cvt.rna emulation (integer tf32 split), MUFU log2/exp2,
//     q gradient restructured (S pre-split in shared memory)  0.30 / 0.88 ms
//   this file: rk, v feature-major with ldmatrix fragments in 1, S's
//     fragment hi and lo in consecutive registers in 3       0.32 / 0.83 ms
// (the last two measured in one run: kernel 1 went from 190 to 208 us, its
// transposed stores cost more than the register moves they removed; kernel
// 3 from 405 to 339 us). Per kernel in the last: 208, 109, 339, 174 us.
//   the rope table read pair-major in 1 (2026-12-01)           0.27 / 0.79 ms
// On bf16 arrays with one-pass products (2026-12-01): 0.20 / 0.58 ms at first,
// 0.15 / 0.51 ms with the pair-major rope table and the state product from
// token-major tiles (kernels at Nsight Compute's clocks: 86, 89, 311, 135 us).
// Later the same day (lab, bf16 backward / forward): the key-gradient kernel at 3
// blocks an SM and q staged in 3 (0.3550 to 0.3420 ms); LaneRope's column
// entries fragment-major (0.3437 to 0.3316 ms; float32 backward 0.5237 to
// 0.4936 ms); kernels 1 and 3 at one barrier a step (forward 0.1473 to 0.1426,
// backward 0.3341 to 0.3290 ms; kernels 81.5, 87, 290, 131 us); the two
// partials a problem added by kernel 2 itself (forward 0.1422 to 0.1315 ms,
// float32 0.2683 to 0.2588 ms). bench_nala_cuda: 0.26 / 0.76 ms, bf16 0.14 / 0.47 ms.
// Then dq stored in whole rows through the q stage (bf16 backward 0.3304 to 0.3198 ms).
#include <algorithm>
#include <cuda_bf16.h>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/rope.h"
#include "tensor/tensor.h"

namespace nala {
namespace cuda {

namespace {

using namespace mma;

constexpr int kThreads = 256, kWarps = 8;  // kernels 1-3
constexpr int kT1 = 32;                    // tokens per step of the state kernel
constexpr int kTok3 = 16 * kWarps;         // tokens per step of the query-gradient kernel
constexpr int kWarps4 = 4;                 // warps per block of the key-gradient kernel
constexpr float kZEps = 1e-6f;             // the normaliser's epsilon (docs/SPEC.md §2.1)
constexpr float kTiny = 1.17549435e-38f;   // FLT_MIN
constexpr float kLn2 = 0.693147180559945f;

// Warp tiles of the block-level products over tokens (S forward, dS backward):
// the (F, D) result is cut into MT x NT mma tiles (16 x 8) per warp on a
// WGM x WGN grid; WGK groups of warps take alternate k-steps and are added at
// the end in group order.
template <int D>
struct Tile;
template <>
struct Tile<16> {
  static constexpr int MT = 1, NT = 1, WGM = 2, WGN = 2, WGK = 2;
};
template <>
struct Tile<32> {
  static constexpr int MT = 2, NT = 2, WGM = 2, WGN = 2, WGK = 2;
};
template <>
struct Tile<64> {
  static constexpr int MT = 2, NT = 4, WGM = 4, WGN = 2, WGK = 1;
};

// The rope pair table of one (H, W, D) (kernels/cuda/rope.h).
struct Rope {
  const float2* tab;
  int H, W;
  // (cos, sin) of the pair at even feature e of the token in row r, column c, from the table's
  // pair-major copy: where a warp's lanes hold consecutive tokens of a row (the state kernel),
  // their column entries are consecutive, 2 or 3 cache lines a load where the position-major
  // table spreads them over 32 (the first profile of the one-pass state kernel: L1 75% busy,
  // about a third of its wavefronts these loads).
  template <int D>
  __device__ __forceinline__ float2 at(int r, int c, int e) const {
    const float2* pm = tab + (H + W) * (D / 4);
    return e < D / 2 ? __ldg(pm + (e / 2) * (H + W) + r) : __ldg(pm + ((e - D / 2) / 2) * (H + W) + H + c);
  }
};
// The table entries of one token for the pairs 8j + 2t, +1 that lane t holds (j = 0 .. D/8 - 1):
// the first D/16 come from its row's entries (position-major: the 8 tokens of a fragment mostly
// share a row, one line a load), the rest from its column's, fragment-major (the 8 tokens'
// entries are 256 consecutive bytes, two lines a load where the position-major ones take eight).
template <int D>
struct LaneRope {
  const float2 *row, *col;
  int cstride;  // 4 W: from one group of four column pairs to the next
  __device__ __forceinline__ LaneRope(const Rope& R, int n, int t) {
    const int r = n / R.W, c = n - r * R.W;
    row = R.tab + r * (D / 4) + t;
    col = R.tab + 2 * (R.H + R.W) * (D / 4) + c * 4 + t;
    cstride = 4 * R.W;
  }
  __device__ __forceinline__ float2 operator()(int j) const {
    return j < D / 16 ? __ldg(row + 4 * j) : __ldg(col + (j - D / 16) * cstride);
  }
};

// The pair (x0, x1) rotated (rope) and rotated back (its transpose), as cpu::rope_row.
__device__ __forceinline__ void rot(float x0, float x1, float2 cs, float& y0, float& y1) {
  y0 = x0 * cs.x - x1 * cs.y;
  y1 = x1 * cs.x + x0 * cs.y;
}
__device__ __forceinline__ void rot_t(float x0, float x1, float2 cs, float& y0, float& y1) {
  y0 = x0 * cs.x + x1 * cs.y;
  y1 = x1 * cs.x - x0 * cs.y;
}

__device__ __forceinline__ float quad_sum(float x) {  // over the 4 lanes of a row (t = 0..3)
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// The special-function unit's log2 and exp2 (lg2/ex2.approx: about 2^-22 absolute in log2 u,
// so about 1e-6 relative in u^p; the library's log2f is a ~20-instruction polynomial).
__device__ __forceinline__ float lg2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
// 1/x by the special-function unit (rcp.approx: within 1 ulp; x is never tiny where used).
__device__ __forceinline__ float rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
// u^p for u >= 0 as exp2(p log2 u), 0 at u = 0 (docs/SPEC.md §7).
__device__ __forceinline__ float pow_pos(float u, float p) { return u > 0.0f ? ex2(p * lg2(fmaxf(u, kTiny))) : 0.0f; }
// Query feature of one value x of a row with exponent p and 1/n = inv, with
// the sign of x: fq+ = max(sf, 0), fq- = max(-sf, 0).
__device__ __forceinline__ float qfeat(float x, float inv, float p) {
  const float f = pow_pos(fabsf(x) * inv, p);
  return x < 0.0f ? -f : f;
}

// Two floats from shared memory by an explicit load, which the compiler may not hoist out of
// a loop into registers (kmean's values are the same for every tile: held, they cost 32).
__device__ __forceinline__ float2 lds2(const float* p) {
  float2 y;
  asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(y.x), "=f"(y.y) : "r"(smem_addr(p)));
  return y;
}

// Element I/O: the kernels take T = float or __nv_bfloat16 for q, k, v, dO
// and o, dq, dk, dv (everything else is float32). Values are widened to
// float as they are read and rounded once (to nearest even) as they are
// written; the arithmetic in between is the same for both types.
__device__ __forceinline__ float2 ld2(const float* p) { return *(const float2*)p; }
__device__ __forceinline__ float2 ld2(const __nv_bfloat16* p) { return __bfloat1622float2(*(const __nv_bfloat162*)p); }
__device__ __forceinline__ float4 ld4(const float* p) { return *(const float4*)p; }
__device__ __forceinline__ float4 ld4(const __nv_bfloat16* p) {
  const uint2 u = *(const uint2*)p;
  const float2 a = __bfloat1622float2(*(const __nv_bfloat162*)&u.x), b = __bfloat1622float2(*(const __nv_bfloat162*)&u.y);
  return make_float4(a.x, a.y, b.x, b.y);
}
__device__ __forceinline__ void st2(float* p, float a, float b) { *(float2*)p = make_float2(a, b); }
__device__ __forceinline__ void st2(__nv_bfloat16* p, float a, float b) {
  *(__nv_bfloat162*)p = __floats2bfloat162_rn(a, b);
}

struct QRow {
  float norm, th, p, inv;
};
// Norm statistics of the fragment rows g and g + 8 whose pairs this thread holds (the 4 lanes
// of a row hold all of it): pair(r, j) is pair j of row g + 8 r as this lane holds it.
template <int NP, class Pair>
__device__ __forceinline__ void query_rows(QRow (&qs)[2], const Pair& pair, float floor) {
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < NP; j++) {
      const float2 x = pair(r, j);
      ss += x.x * x.x + x.y * x.y;
    }
    QRow& s = qs[r];
    s.norm = sqrtf(quad_sum(ss));
    const float n = fmaxf(s.norm, floor);
    s.th = tanhf(n);
    s.p = 3.0f * (0.5f + s.th);
    s.inv = rcp(n);
  }
}

// One warp copies rows [n0, n0 + 16) of an (N, D) array of T into a (16, D + 8)
// shared tile of T, zeros for rows at or past n1 (16 bytes a copy).
template <int D, typename T>
__device__ __forceinline__ void stage_rows(T* dst, const T* src, int n0, int n1, int lane) {
  constexpr int E = 16 / sizeof(T), C = D / E;  // elements a copy, copies a row
  static_assert(16 * C % 32 == 0, "whole copies per lane");
#pragma unroll
  for (int i = 0; i < 16 * C / 32; i++) {
    const int c = lane + 32 * i, row = c / C, col = E * (c % C), n = n0 + row;
    const bool ok = n < n1;
    cp_async16(dst + row * (D + 8) + col, src + (ok ? (size_t)n * D : 0) + col, ok);
  }
}

// Sum the partials of one problem in chunk order, times scale: M as bf16
// hi/lo (F, D + 8) and vec (F) in shared memory; also to M_out, vec_out when
// given (plain (F, D) and (F)). A thread issues all its loads of a partial
// before adding: the partials come from L2 or memory, and a chain of
// dependent loads per element would leave the block waiting.
template <int D, int THREADS>
__device__ void stage_sum(const float* __restrict__ pp, int nparts, float scale, __nv_bfloat16* mh,
                          __nv_bfloat16* ml, float* vec, float* M_out, float* vec_out) {
  constexpr int F = 2 * D, FD = F * D, P4 = (FD + F) / 4, K = (P4 + THREADS - 1) / THREADS;
  const float4* p4 = (const float4*)pp;
  float4 s[K];
#pragma unroll
  for (int i = 0; i < K; i++) {
    const int x = threadIdx.x + i * THREADS;
    s[i] = x < P4 ? p4[x] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  for (int c = 1; c < nparts; c++) {
    float4 y[K];
#pragma unroll
    for (int i = 0; i < K; i++) {
      const int x = threadIdx.x + i * THREADS;
      y[i] = x < P4 ? p4[(size_t)c * P4 + x] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int i = 0; i < K; i++) {
      s[i].x += y[i].x;
      s[i].y += y[i].y;
      s[i].z += y[i].z;
      s[i].w += y[i].w;
    }
  }
#pragma unroll
  for (int i = 0; i < K; i++) {
    const int x = threadIdx.x + i * THREADS, x0 = 4 * x;
    if (x >= P4) continue;
    const float4 v = make_float4(s[i].x * scale, s[i].y * scale, s[i].z * scale, s[i].w * scale);
    if (x0 < FD) {  // 4 values of one row of M
      const int at = (x0 / D) * (D + 8) + x0 % D;
      uint32_t h01, l01, h23, l23;
      split_bf16(v.x, v.y, h01, l01);
      split_bf16(v.z, v.w, h23, l23);
      *(uint2*)(mh + at) = make_uint2(h01, h23);
      if (ml) *(uint2*)(ml + at) = make_uint2(l01, l23);  // null: the hi parts alone (one-pass products)
      if (M_out) *(float4*)(M_out + x0) = v;
    } else {
      *(float4*)(vec + x0 - FD) = v;
      if (vec_out) *(float4*)(vec_out + x0 - FD) = v;
    }
  }
}

// Write (or add, or read back into) a warp's (MT x NT) tiles of an (F, D) float matrix.
template <int MT, int NT>
__device__ __forceinline__ void tiles_io(float* M, int ld, float (&acc)[MT][NT][4], int m0, int n0, int g, int t,
                                         int mode) {  // 0 store, 1 add into acc
#pragma unroll
  for (int mi = 0; mi < MT; mi++)
#pragma unroll
    for (int ni = 0; ni < NT; ni++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        float2* p = (float2*)(M + (size_t)(m0 + 16 * mi + g + 8 * h) * ld + n0 + 8 * ni + 2 * t);
        if (mode == 0) {
          *p = make_float2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
        } else {
          const float2 y = *p;
          acc[mi][ni][2 * h] += y.x;
          acc[mi][ni][2 * h + 1] += y.y;
        }
      }
}

// ---------------------------------------------------------------- 1. state partials

// rk and v tiles are stored feature-major ([feature][token], rows of LT floats) as tf32 hi
// and lo: then the A fragment (A[a][token] = rk[token][a]) and the B fragment (B[token][c] =
// v[token][c]) of m16n8k8 each come from one ldmatrix.x4: with 32-bit data, ldmatrix hands
// lane 4g + t the element (g, t) of each 8 x 4 block, the fragment's own pattern. LT = 36:
// rows 144 bytes apart fall in distinct 16-byte bank groups. The k and v rows themselves
// arrive token-major by cp.async (coalesced, 16 bytes a lane) in a ring of kStages1 stages
// of LK = D + 4 floats a row (a lane per row reads 16 bytes without bank conflicts).
// One-pass products (bf16 arrays) pipeline the steps instead: two token-major bf16 rk tiles
// [kT1][F + 8] and a ring of kStagesOne bf16 stages [2 kT1][D + 8] (the product of step i reads
// v from its stage while step i + 1 is prepared and steps i + 2, i + 3 are in flight).
constexpr int kStages1 = 3, kStagesOne = 4;
template <int D, bool ONE = false>
struct StateLayout {
  static constexpr int F = 2 * D, LT = kT1 + 4, LK = D + 4;
  static constexpr int BUF = (2 * F + 2 * D) * LT;  // floats of the tile buffer: rk hi, lo; v hi, lo
  static constexpr int STAGE = 2 * kT1 * LK;        // floats of one stage: k rows, v rows
  static constexpr size_t bytes = ONE ? 2 * (size_t)(2 * kT1 * (F + 8) + kStagesOne * 2 * kT1 * (D + 8))
                                      : sizeof(float) * (BUF + kStages1 * STAGE);
  static_assert(BUF >= (D / 4) * 8, "the fk sums fit in the tile buffer");
};

// part[g, chunk] = [sum over the chunk of rk^T v (F, D), sum of fk (F)] (=).
// Steps of kT1 tokens. The k and v rows of steps i + 1 and i + 2 are in
// flight (cp.async) while step i is prepared and multiplied (rows of T: bf16
// rows take half the stage, D + 8 elements a row). Lane l of warp w
// prepares token l of the step, features 4 e4 .. 4 e4 + 3 of each half for
// e4 = w, w + 8, ...: it reads them from the stage (16 bytes), and its stores
// to the feature-major tiles are consecutive words across the warp.
// (The first tensor-core version read k and v straight into registers with a
// lane per token: each warp load touched 32 rows of 256 bytes, and the
// profile showed 57% of the L2 sectors fetched twice and L1 busy 86%.)
template <int D, typename T, bool ONE = false>
__global__ void __launch_bounds__(kThreads, 2)
    nala_state_kernel(const T* __restrict__ k, const T* __restrict__ v, Rope rope, float* __restrict__ part,
                      int N, int nch, int L) {
  using TL = Tile<D>;
  using SL = StateLayout<D, false>;
  // A stage row: D + 4 floats, or D + 8 bf16 (16-byte aligned rows for cp.async).
  constexpr int F = 2 * D, Q4 = D / 4, LT = SL::LT, LK = sizeof(T) == 4 ? SL::LK : D + 8, MT = TL::MT, NT = TL::NT;
  constexpr int STAGE = 2 * kT1 * LK;  // elements of T a stage
  static_assert(STAGE * sizeof(T) <= SL::STAGE * sizeof(float), "a stage fits the float layout");
  constexpr bool kExactV = sizeof(T) == 2;  // bf16 v is exact in tf32: its lo tile is zero, left out
  static_assert(!ONE || kExactV, "one-pass products are for bf16 arrays");
  constexpr int IPT = (Q4 + kWarps - 1) / kWarps;  // feature groups per lane
  constexpr int LR = F + 8;  // ONE: a token's row of the bf16 rk tile (rows 16-byte aligned, 4 banks apart)
  static_assert(kT1 == 32, "a lane per token of the step");
  extern __shared__ __align__(16) float smem[];
  T* ring = ONE ? (T*)smem + 2 * kT1 * LR : (T*)(smem + SL::BUF);  // ONE: after the two rk tiles
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int wk = warp / (TL::WGM * TL::WGN), wm = warp % (TL::WGM * TL::WGN) / TL::WGN, wn = warp % TL::WGN;
  const int pb = blockIdx.x / nch, ch = blockIdx.x % nch, j0 = ch * L, j1 = min(N, j0 + L);
  const T* kg = k + (size_t)pb * N * D;
  const T* vg = v + (size_t)pb * N * D;
  float acc[MT][NT][4];
#pragma unroll
  for (int mi = 0; mi < MT; mi++)
#pragma unroll
    for (int ni = 0; ni < NT; ni++)
#pragma unroll
      for (int c = 0; c < 4; c++) acc[mi][ni][c] = 0.0f;
  float fs[IPT][8];
#pragma unroll
  for (int i = 0; i < IPT; i++)
#pragma unroll
    for (int m = 0; m < 8; m++) fs[i][m] = 0.0f;
  // The k and v rows of the step at `base` into stage b (zeros past the chunk).
  auto fetch = [&](int base, int b) {
    T* st = ring + b * STAGE;
    constexpr int E = 16 / sizeof(T), C = D / E, PER = 2 * kT1 * C;  // elements a copy, copies a row
    for (int x = tid; x < PER; x += kThreads) {
      const int which = x / (kT1 * C), y = x % (kT1 * C), row = y / C, col = E * (y % C), n = base + row;
      const bool ok = n < j1;
      const T* src = which ? vg : kg;
      cp_async16(st + (which * kT1 + row) * LK + col, src + (ok ? (size_t)n * D + col : 0), ok);
    }
  };
  // rk (rope of [k^3]+, [-k^3]+) and v of the step at `base` (in stage sb) into the tile buffer, as tf32 hi/lo;
  // ONE: rk alone, token-major bf16, into rk tile rt (v is read from the stage).
  auto prep = [&](int base, int sb, int rt) {
    float *rkh = smem, *rkl = smem + F * LT, *vh = smem + 2 * F * LT, *vl = vh + D * LT;
    __nv_bfloat16* rkb = (__nv_bfloat16*)smem + (rt * kT1 + lane) * LR;
    const T* sk = ring + sb * STAGE + lane * LK;
    const T* sv = sk + kT1 * LK;
    const int n = base + lane, rr = n / rope.W, cc = n - rr * rope.W;
#pragma unroll
    for (int i = 0; i < IPT; i++) {
      const int e = 4 * (warp + kWarps * i);
      if (e < D) {
        const float4 kx = ld4(sk + e), vx = ONE ? make_float4(0.f, 0.f, 0.f, 0.f) : ld4(sv + e);
        float r[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
        if (n < j1) {
          const float x[4] = {kx.x, kx.y, kx.z, kx.w};
          float f[2][4];
#pragma unroll
          for (int m = 0; m < 4; m++) {
            const float kc = x[m] * x[m] * x[m];
            f[0][m] = fmaxf(kc, 0.0f);
            f[1][m] = fmaxf(-kc, 0.0f);
            fs[i][m] += f[0][m];
            fs[i][4 + m] += f[1][m];
          }
          const float2 c0 = rope.at<D>(rr, cc, e), c1 = rope.at<D>(rr, cc, e + 2);
#pragma unroll
          for (int h = 0; h < 2; h++) {
            rot(f[h][0], f[h][1], c0, r[h][0], r[h][1]);
            rot(f[h][2], f[h][3], c1, r[h][2], r[h][3]);
          }
        }
        if (ONE) {
#pragma unroll
          for (int h = 0; h < 2; h++)
            *(uint2*)(rkb + h * D + e) = make_uint2(pack_bf16(r[h][0], r[h][1]), pack_bf16(r[h][2], r[h][3]));
          continue;
        }
        const float y[4] = {vx.x, vx.y, vx.z, vx.w};
#pragma unroll
        for (int m = 0; m < 4; m++) {
          uint32_t hi, lo;
          split_tf32(r[0][m], hi, lo);
          rkh[(e + m) * LT + lane] = __uint_as_float(hi);
          if (!ONE) rkl[(e + m) * LT + lane] = __uint_as_float(lo);
          split_tf32(r[1][m], hi, lo);
          rkh[(D + e + m) * LT + lane] = __uint_as_float(hi);
          if (!ONE) rkl[(D + e + m) * LT + lane] = __uint_as_float(lo);
          split_tf32(y[m], hi, lo);
          vh[(e + m) * LT + lane] = __uint_as_float(hi);
          if (!kExactV) vl[(e + m) * LT + lane] = __uint_as_float(lo);
        }
      }
    }
  };
  // This lane's ldmatrix rows: A (rk) row (lane & 7) + 8 ((lane >> 3) & 1), column 4 (lane >> 4);
  // B (v) row (lane & 7) + 8 (lane >> 4), column 4 ((lane >> 3) & 1). Byte offsets in a buffer.
  const uint32_t s0 = smem_addr(smem);
  const uint32_t la = (uint32_t)((((lane & 7) + ((lane >> 3) & 1) * 8) * LT + (lane >> 4) * 4) * 4);
  const uint32_t lb = (uint32_t)((((lane & 7) + (lane >> 4) * 8) * LT + ((lane >> 3) & 1) * 4) * 4);

  // ONE: A = rk^T from the token-major rk tile and B = v from the stage, both by ldmatrix.trans
  // (m16n8k16: A row (feature) g, columns (tokens) 2t, 2t + 1 come from the transposes of
  // 8 x 8 blocks whose rows are tokens). Lane rows: A token (lane & 7) + 8 (lane >> 4),
  // feature 8 ((lane >> 3) & 1); B token (lane & 15), column 8 (lane >> 4).
  const uint32_t ra = smem_addr((__nv_bfloat16*)smem + ((lane & 7) + (lane >> 4) * 8) * LR + ((lane >> 3) & 1) * 8);
  const uint32_t rb = smem_addr(ring + kT1 * LK + (lane & 15) * LK + (lane >> 4) * 8);

  // ONE: the product of the step in rk tile rt and stage sb.
  auto product = [&](int rt, int sb) {
#pragma unroll
    for (int s = 0; s < kT1 / 16 / TL::WGK; s++) {
      const int k0 = 16 * (s * TL::WGK + wk);
      uint32_t a[MT][4];
#pragma unroll
      for (int mi = 0; mi < MT; mi++)
        ldsm_x4_trans(a[mi], ra + (uint32_t)(((rt * kT1 + k0) * LR + (wm * MT + mi) * 16) * 2));
#pragma unroll
      for (int np = 0; np < (NT + 1) / 2; np++) {
        uint32_t b[4];
        const uint32_t at = rb + (uint32_t)(((sb * STAGE) + k0 * LK + (wn * NT + 2 * np) * 8) * 2);
        if (NT == 1)
          ldsm_x2_trans(b, at);
        else
          ldsm_x4_trans(b, at);
#pragma unroll
        for (int mi = 0; mi < MT; mi++) {
          bf16_16816(acc[mi][2 * np], a[mi], b[0], b[1]);
          if (NT > 1) bf16_16816(acc[mi][(2 * np + 1) % NT], a[mi], b[2], b[3]);
        }
      }
    }
  };

  fetch(j0, 0);
  cp_async_commit();
  if (j0 + kT1 < j1) fetch(j0 + kT1, 1);
  cp_async_commit();
  if (ONE) {
    // One barrier a step: after it, step i - 1's rk tile is complete (every lane prepared its
    // token) and step i - 2's product is done with the other tile and with stage i + 2 (mod 4).
    // Then each warp multiplies step i - 1 and prepares step i, so that the features of one
    // step are made while the tensor cores work on the last (the 3-pass path's two barriers a
    // step left the product and the preparation to wait for each other).
    for (int base = j0, i = 0; base < j1; base += kT1, i++) {
      cp_async_wait<1>();  // this thread's copies of step i have landed
      __syncthreads();
      if (base + 2 * kT1 < j1) fetch(base + 2 * kT1, (i + 2) % kStagesOne);
      cp_async_commit();
      if (i > 0) product((i - 1) & 1, (i - 1) % kStagesOne);
      prep(base, i % kStagesOne, i & 1);
    }
    const int last = (j1 - j0 + kT1 - 1) / kT1 - 1;
    __syncthreads();
    if (last >= 0) product(last & 1, last % kStagesOne);
  }
  for (int base = j0, cur = 0; !ONE && base < j1; base += kT1, cur = cur == kStages1 - 1 ? 0 : cur + 1) {
    cp_async_wait<1>();  // this thread's copies of the step have landed
    __syncthreads();     // everyone's have; the tiles and the oldest stage are free
    if (base + 2 * kT1 < j1) fetch(base + 2 * kT1, cur == 0 ? kStages1 - 1 : cur - 1);
    cp_async_commit();
    prep(base, cur, 0);
    __syncthreads();
    const uint32_t bh = s0, bl = bh + F * LT * 4;  // rk hi, lo
    const uint32_t vh = bh + 2 * F * LT * 4, vl = vh + D * LT * 4;                  // v hi, lo
#pragma unroll
    for (int s = 0; s < kT1 / 8 / TL::WGK; s++) {
      const int k0 = 8 * (s * TL::WGK + wk);
      uint32_t ah[MT][4], al[MT][4], b_h[NT + 1][2], b_l[NT + 1][2];
#pragma unroll
      for (int mi = 0; mi < MT; mi++) {
        const uint32_t at = la + (uint32_t)(((wm * MT + mi) * 16 * LT + k0) * 4);
        ldsm_x4(ah[mi], bh + at);
        if (!ONE) ldsm_x4(al[mi], bl + at);
      }
#pragma unroll
      for (int np = 0; np < (NT + 1) / 2; np++) {
        const uint32_t at = lb + (uint32_t)(((wn * NT + 2 * np) * 8 * LT + k0) * 4);
        uint32_t rh[4], rl[4] = {0u, 0u, 0u, 0u};
        if (NT == 1) {
          ldsm_x2(rh, vh + at);
          if (!kExactV) ldsm_x2(rl, vl + at);
        } else {
          ldsm_x4(rh, vh + at);
          if (!kExactV) ldsm_x4(rl, vl + at);
        }
        b_h[2 * np][0] = rh[0], b_h[2 * np][1] = rh[1], b_h[2 * np + 1][0] = rh[2], b_h[2 * np + 1][1] = rh[3];
        b_l[2 * np][0] = rl[0], b_l[2 * np][1] = rl[1], b_l[2 * np + 1][0] = rl[2], b_l[2 * np + 1][1] = rl[3];
      }
#pragma unroll
      for (int mi = 0; mi < MT; mi++)
#pragma unroll
        for (int ni = 0; ni < NT; ni++)
          if (ONE)
            tf32_1688(acc[mi][ni], ah[mi], b_h[ni][0], b_h[ni][1]);
          else if (kExactV)
            tf32_2pass_b(acc[mi][ni], ah[mi], al[mi], b_h[ni][0], b_h[ni][1]);
          else
            tf32_3pass(acc[mi][ni], ah[mi], al[mi], b_h[ni][0], b_h[ni][1], b_l[ni][0], b_l[ni][1]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the tiles and the stages

  // The tile buffer takes the other warp groups' tiles, the first stage the fk sums.
  float* out = part + (size_t)blockIdx.x * (F * D + F);
  float* red = (float*)ring;  // the first stage
  const int m0 = wm * MT * 16, n0 = wn * NT * 8;
  if (TL::WGK > 1) {
    if (wk > 0) tiles_io<MT, NT>(smem + (size_t)(wk - 1) * F * D, D, acc, m0, n0, g, t, 0);
    __syncthreads();
    if (wk == 0)
      for (int w2 = 1; w2 < TL::WGK; w2++) tiles_io<MT, NT>(smem + (size_t)(w2 - 1) * F * D, D, acc, m0, n0, g, t, 1);
  }
  if (wk == 0) tiles_io<MT, NT>(out, D, acc, m0, n0, g, t, 0);
  // fk sums: over the warp's 32 tokens (fixed tree), then lane 0 keeps its feature group's.
#pragma unroll
  for (int i = 0; i < IPT; i++)
#pragma unroll
    for (int m = 0; m < 8; m++) {
      float x = fs[i][m];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
      const int e4 = warp + kWarps * i;
      if (lane == 0 && e4 < Q4) red[e4 * 8 + m] = x;
    }
  __syncthreads();
  for (int a = tid; a < F; a += kThreads) {
    const int h = a / D, ee = a % D;
    out[F * D + a] = red[(ee / 4) * 8 + h * 4 + ee % 4];
  }
}

// ---------------------------------------------------------------- 2. outputs

template <int D>
struct OutputLayout {
  static constexpr int F = 2 * D, LS = D + 8;
  static constexpr size_t bytes = 2 * F * LS * sizeof(__nv_bfloat16) + F * sizeof(float) +
                                  (size_t)kWarps * 2 * 16 * (D + 8) * sizeof(float);
};

// S, kmean from the partials (block of chunk 0), and o = (z rq) S for the chunk's tokens.
template <int D, typename T, bool ONE = false>
__global__ void __launch_bounds__(kThreads, 2)
    nala_output_kernel(const T* __restrict__ q, const float* __restrict__ part, Rope rope,
                       T* __restrict__ o, float* __restrict__ S, float* __restrict__ kmean, int N, int nparts,
                       int nch, int L, float invN, float floor) {
  constexpr int F = 2 * D, NP = D / 8, LS = D + 8, LQ = D + 8, P = F * D + F;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sh = (__nv_bfloat16*)smem_raw;
  __nv_bfloat16* sl = sh + F * LS;
  float* km = (float*)(sl + F * LS);
  float* stage = km + F;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int pb = blockIdx.x / nch, ch = blockIdx.x % nch;
  // One-pass products read S's hi parts alone: no lo parts are written.
  stage_sum<D, kThreads>(part + (size_t)pb * nparts * P, nparts, invN, sh, ONE ? nullptr : sl, km,
                         ch == 0 ? S + (size_t)pb * F * D : nullptr,
                         ch == 0 ? kmean + (size_t)pb * F : nullptr);
  __syncthreads();

  const int i0 = ch * L, i1 = min(N, i0 + L), ntile = (i1 - i0 + 15) / 16;
  const T* qg = q + (size_t)pb * N * D;
  T* og = o + (size_t)pb * N * D;
  T* st = (T*)stage + warp * 2 * 16 * LQ;  // two (16, LQ) tiles of T a warp
  // This lane's ldmatrix.trans row of S (hi, lo): row k0 + (lane & 15), column 16 np + 8 (lane >> 4).
  const uint32_t sbh = smem_addr(sh + (lane & 15) * LS + (lane >> 4) * 8), sbl = smem_addr(sl + (lane & 15) * LS + (lane >> 4) * 8);
  if (warp < ntile) stage_rows<D, T>(st, qg, i0 + 16 * warp, i1, lane);
  cp_async_commit();
  int buf = 0;
  for (int tile = warp; tile < ntile; tile += kWarps, buf ^= 1) {
    __syncwarp();  // every lane is done reading the buffer refilled next
    if (tile + kWarps < ntile) stage_rows<D, T>(st + (buf ^ 1) * 16 * LQ, qg, i0 + 16 * (tile + kWarps), i1, lane);
    cp_async_commit();
    cp_async_wait<1>();
    __syncwarp();
    // q stays in the stage while the tile is worked on. u^p is made once, for the A operand;
    // the normaliser's sum rides along (z only scales the finished rows), where the first
    // version made u^p a second time in a pass of its own for z.
    const T* sq = st + buf * 16 * LQ;
    auto xq = [&](int r, int j) { return ld2(sq + (g + 8 * r) * LQ + 8 * j + 2 * t); };
    const int nb = i0 + 16 * tile;
    const LaneRope<D> tb[2] = {LaneRope<D>(rope, min(nb + g, N - 1), t), LaneRope<D>(rope, min(nb + g + 8, N - 1), t)};
    QRow qs[2];
    query_rows<NP>(qs, xq, floor);
    float den[2] = {0.0f, 0.0f};
    float acc[D / 8][4];
    zero_acc(acc);
#pragma unroll
    for (int s = 0; s < D / 16; s++) {
      float2 cs[2][2], f[2][2];  // [row][pair 2s + jj]: the table entry and the signed features
#pragma unroll
      for (int r = 0; r < 2; r++)
#pragma unroll
        for (int jj = 0; jj < 2; jj++) {
          cs[r][jj] = tb[r](2 * s + jj);
          const float2 x = xq(r, 2 * s + jj);
          f[r][jj] = make_float2(qfeat(x.x, qs[r].inv, qs[r].p), qfeat(x.y, qs[r].inv, qs[r].p));
          const int e = 8 * (2 * s + jj) + 2 * t;
          const float2 kp = lds2(km + e), kn = lds2(km + D + e);  // read each time, not held in registers
          den[r] += fmaxf(f[r][jj].x, 0.0f) * kp.x + fmaxf(-f[r][jj].x, 0.0f) * kn.x + fmaxf(f[r][jj].y, 0.0f) * kp.y +
                    fmaxf(-f[r][jj].y, 0.0f) * kn.y;
        }
#pragma unroll
      for (int h = 0; h < 2; h++) {
        uint32_t ah[4], al[4];  // a0 (row g, pair 2s), a1 (g+8, 2s), a2 (g, 2s+1), a3 (g+8, 2s+1)
#pragma unroll
        for (int jj = 0; jj < 2; jj++)
#pragma unroll
          for (int r = 0; r < 2; r++) {
            const float2 sf = f[r][jj];
            const float f0 = h ? fmaxf(-sf.x, 0.0f) : fmaxf(sf.x, 0.0f), f1 = h ? fmaxf(-sf.y, 0.0f) : fmaxf(sf.y, 0.0f);
            float y0, y1;
            rot(f0, f1, cs[r][jj], y0, y1);
            if (ONE)
              ah[r + 2 * jj] = pack_bf16(y0, y1);
            else
              split_bf16(y0, y1, ah[r + 2 * jj], al[r + 2 * jj]);
          }
        mma_k16_panels<D, ONE>(acc, ah, al, sbh, sbl, h * D + 16 * s, LS);
      }
    }
    const float z[2] = {rcp(quad_sum(den[0]) + kZEps), rcp(quad_sum(den[1]) + kZEps)};
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int n = nb + g + 8 * r;
      if (n < i1)
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++)
          st2(og + (size_t)n * D + 8 * nt + 2 * t, z[r] * acc[nt][2 * r], z[r] * acc[nt][2 * r + 1]);
    }
  }
  cp_async_wait<0>();
}

// ---------------------------------------------------------------- 3. dq, dS and dkm partials

template <int D, bool ONE>
struct QueryGradLayout {
  static constexpr int F = 2 * D, LS = D + 8, LQ = D + 8, LZ = F + 8, LG = D + 8;
  // floats: S as tf32 (hi, lo) [F][LS] pairs, each two columns stored (hi, hi, lo, lo) so that
  // one 16-byte load is a B fragment's hi and lo; kmean [F], go stage [kWarps][16][LQ], dkm rows
  // [kWarps][F]; then bf16: z rq hi, lo [kTok3][LZ] and go hi, lo [kTok3][LG].
  // One-pass products (bf16 arrays): S's hi parts alone [F][D + 8], no lo tiles, a q stage
  // beside the go stage (both bf16 [kWarps][16][LQ]), a dkm row per lane group g
  // [kWarps][8][F + 8], and two buffers of (z rq, go) hi parts, so that one barrier a step
  // suffices: 211 KB where the 3-pass layout takes 222.
  static constexpr int DKM_ROWS = ONE ? 8 * kWarps : kWarps, LDK = ONE ? F + 8 : F;
  static constexpr size_t floats = (size_t)(ONE ? 1 : 2) * F * LS + F + kWarps * 16 * LQ + (size_t)DKM_ROWS * LDK;
  static constexpr int ZG = kTok3 * (LZ + LG);  // bf16 of one (z rq, go) buffer
  static constexpr size_t bytes = floats * sizeof(float) + (size_t)2 * ZG * 2;
};

// dq of the chunk's tokens (=); part[g, chunk] = [sum z rq^T go (F, D), sum dden fq (F)] (=).
// Per step of kTok3 tokens, warp w takes tokens 16 w .. 16 w + 15:
//   1. W = go S^T (tf32 3-pass; go rows staged one step ahead by cp.async; S kept in shared
//      memory split into hi and lo, one 16-byte load per fragment). Its q rows load into
//      registers meanwhile.
//   2. per token, as the CPU backward: n, p, fq, z, rq into the block's dS operand Z and
//      z go into G; dz = rq . w, dden = -z^2 dz; on the active half of each value (the sign
//      of q) dfq = z rope^T(w) + dden kmean, gf = dfq fq, dp = sum gf ln u, sum of p gf,
//      then dq = dn q / |q| + p gf / q. dden fq goes into the warp's dkm row.
//   3. the block: dS += Z^T G over the step (bf16 3-pass).
template <int D, typename T, bool ONE = false>
__global__ void __launch_bounds__(kThreads, 1)
    nala_query_grad_kernel(const T* __restrict__ q, const float* __restrict__ S, const float* __restrict__ kmean,
                           const T* __restrict__ gout, Rope rope, T* __restrict__ dq,
                           float* __restrict__ part, int N, int nch, int L, float floor) {
  using TL = Tile<D>;
  constexpr int F = 2 * D, NP = D / 8, LS = D + 8, LQ = D + 8, LZ = F + 8, LG = D + 8, MT = TL::MT, NT = TL::NT;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float2* s2 = (float2*)smem_raw;
  float* km = (float*)smem_raw + (ONE ? 1 : 2) * F * LS;
  float* stage = km + F;  // go rows; with ONE, go rows of T then q rows of T
  float* dkmw = stage + kWarps * 16 * LQ;  // dkm rows: one a warp, or with ONE one a lane group g
  constexpr int DKM_ROWS = QueryGradLayout<D, ONE>::DKM_ROWS, LDK = QueryGradLayout<D, ONE>::LDK;
  // (z rq, go) rows of a step: hi, lo tiles (3-pass), or with ONE hi tiles in two buffers
  // (zh, gh of step `it` at + ZG (it & 1)); zl, gl are not used when ONE.
  constexpr int ZG = QueryGradLayout<D, ONE>::ZG;
  __nv_bfloat16* zh0 = (__nv_bfloat16*)(dkmw + DKM_ROWS * LDK);
  __nv_bfloat16* zl = zh0 + kTok3 * LZ;
  __nv_bfloat16* gh0 = zh0 + (ONE ? 1 : 2) * kTok3 * LZ;
  __nv_bfloat16* gl = gh0 + kTok3 * LG;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int wk = warp / (TL::WGM * TL::WGN), wm = warp % (TL::WGM * TL::WGN) / TL::WGN, wn = warp % TL::WGN;
  const int pb = blockIdx.x / nch, ch = blockIdx.x % nch, i0 = ch * L, i1 = min(N, i0 + L);
  // One-pass products (ONE) keep the hi parts alone, a row of D + 8 floats: one 8-byte load a
  // fragment (lanes g and g + 4 share banks: 2 wavefronts, the least for 256 bytes), half the
  // shared-memory reads of the (hi, hi, lo, lo) layout.
  uint2* s1 = (uint2*)smem_raw;
  for (int x = tid; x < F * D / 2; x += kThreads) {  // a pair of columns: (hi, hi, lo, lo)
    const float2 v = *(const float2*)(S + (size_t)pb * F * D + 2 * x);
    uint32_t h0, l0, h1, l1;
    split_tf32(v.x, h0, l0);
    split_tf32(v.y, h1, l1);
    if (ONE)
      s1[((2 * x / D) * (D + 8) + 2 * x % D) / 2] = make_uint2(h0, h1);
    else
      *(uint4*)(s2 + (2 * x / D) * LS + 2 * x % D) = make_uint4(h0, h1, l0, l1);
  }
  for (int a = tid; a < F; a += kThreads) km[a] = kmean[(size_t)pb * F + a];
  for (int x = tid; x < DKM_ROWS * LDK; x += kThreads) dkmw[x] = 0.0f;
  __syncthreads();

  const T* qg = q + (size_t)pb * N * D;
  const T* gg = gout + (size_t)pb * N * D;
  T* dqg = dq + (size_t)pb * N * D;
  T* sg = (T*)stage + warp * 16 * LQ;
  T* sqs = (T*)stage + (kWarps + warp) * 16 * LQ;  // ONE: this warp's q rows (a bf16 stage fits twice)
  static_assert(!ONE || sizeof(T) == 2, "one-pass products take bf16 arrays");
  const int niter = (i1 - i0 + kTok3 - 1) / kTok3;
  // This lane's ldmatrix.trans rows for dS: z rq (row k0 + (lane & 7) + 8 (lane >> 4), column
  // m0 + 8 ((lane >> 3) & 1)) and go (row k0 + (lane & 15), column n0 + 8 (lane >> 4)).
  const int lz = ((lane & 7) + ((lane >> 4) << 3)) * LZ + ((lane >> 3) & 1) * 8, lg = (lane & 15) * LG + (lane >> 4) * 8;
  const uint32_t zbh0 = smem_addr(zh0 + lz), zbl = smem_addr(zl + lz), gbh0 = smem_addr(gh0 + lg), gbl = smem_addr(gl + lg);
  stage_rows<D, T>(sg, gg, i0 + 16 * warp, i1, lane);
  cp_async_commit();
  if (ONE) stage_rows<D, T>(sqs, qg, i0 + 16 * warp, i1, lane);  // committed as the next group
  cp_async_commit();
  float dacc[MT][NT][4];
#pragma unroll
  for (int mi = 0; mi < MT; mi++)
#pragma unroll
    for (int ni = 0; ni < NT; ni++)
#pragma unroll
      for (int c = 0; c < 4; c++) dacc[mi][ni][c] = 0.0f;

  for (int it = 0; it < niter; it++) {
    const int nb = i0 + it * kTok3 + 16 * warp;  // this warp's 16 tokens
    const int zoff = ONE ? (it & 1) * ZG : 0;
    __nv_bfloat16 *zh = zh0 + zoff, *gh = gh0 + zoff;
    const uint32_t zbh = zbh0 + 2 * zoff, gbh = gbh0 + 2 * zoff;
    // q of rows g, g + 8 (zeros past the chunk): into registers, in flight during W; with ONE
    // from the q stage, filled by cp.async during the previous step's dS product (coalesced
    // 16-byte copies where a lane's own loads take half of each 32-byte sector, and 32
    // registers fewer).
    float2 xq[2][NP];
    if (!ONE)
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const int n = nb + g + 8 * r;
#pragma unroll
        for (int j = 0; j < NP; j++)
          xq[r][j] = n < i1 ? ld2(qg + (size_t)n * D + 8 * j + 2 * t) : make_float2(0.0f, 0.0f);
      }
    auto qv = [&](int r, int j) { return ONE ? ld2(sqs + (g + 8 * r) * LQ + 8 * j + 2 * t) : xq[r][j]; };
    cp_async_wait<1>();  // the go rows (the q rows, committed after them, may still be in flight)
    __syncwarp();
    auto gop = [&](int r, int j) { return ld2(sg + (g + 8 * r) * LQ + 8 * j + 2 * t); };
    // W = go S^T for the warp's 16 tokens: w[nt] holds features 8 nt + 2t, +1 of rows g, g + 8,
    // which are the features whose fq this thread holds. The k index t (t + 4) of a step
    // stands for column 8j + 2t (8j + 2t + 1) of go and S.
    float w[F / 8][4];
#pragma unroll
    for (int nt = 0; nt < F / 8; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++) w[nt][c] = 0.0f;
#pragma unroll
    for (int j = 0; j < NP; j++) {
      uint32_t ah[4], al[4];
      const float2 x0 = gop(0, j), x1 = gop(1, j);
      split_tf32(x0.x, ah[0], al[0]);
      split_tf32(x1.x, ah[1], al[1]);
      split_tf32(x0.y, ah[2], al[2]);
      split_tf32(x1.y, ah[3], al[3]);
#pragma unroll
      for (int nt = 0; nt < F / 8; nt++) {
        if (ONE) {  // S rounded to tf32 (its hi part)
          const uint2 b = s1[((8 * nt + g) * (D + 8) + 8 * j + 2 * t) / 2];
          tf32_1688(w[nt], ah, b.x, b.y);
          continue;
        }
        const uint4 b = *(const uint4*)(s2 + (8 * nt + g) * LS + 8 * j + 2 * t);  // b0, b1 hi; b0, b1 lo
        if (sizeof(T) == 2)
          tf32_2pass_a(w[nt], ah, b.x, b.y, b.z, b.w);  // bf16 go is exact in tf32: al = 0
        else
          tf32_3pass(w[nt], ah, al, b.x, b.y, b.z, b.w);
      }
    }

    const LaneRope<D> tb[2] = {LaneRope<D>(rope, min(nb + g, N - 1), t), LaneRope<D>(rope, min(nb + g + 8, N - 1), t)};
    if (ONE) {
      cp_async_wait<0>();
      __syncwarp();
    }
    QRow qs[2];
    query_rows<NP>(qs, qv, floor);
    // One pass for the normaliser, dz = go . (rq S) = rq . w, and rq into the block's dS operand
    // Z (bf16 hi/lo); z goes on the go side of dS (G = z go), so Z needs no second pass.
    float z[2], dden[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int row = 16 * warp + g + 8 * r;
      float den = 0.0f, dz = 0.0f;
#pragma unroll
      for (int j = 0; j < NP; j++) {
        const int e = 8 * j + 2 * t;
        const float2 cs = tb[r](j), xr = qv(r, j);
        const float s0 = qfeat(xr.x, qs[r].inv, qs[r].p), s1 = qfeat(xr.y, qs[r].inv, qs[r].p);
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const float f0 = h ? fmaxf(-s0, 0.0f) : fmaxf(s0, 0.0f), f1 = h ? fmaxf(-s1, 0.0f) : fmaxf(s1, 0.0f);
          den += f0 * km[h * D + e] + f1 * km[h * D + e + 1];
          float y0, y1;
          rot(f0, f1, cs, y0, y1);
          dz += y0 * w[h * NP + j][2 * r] + y1 * w[h * NP + j][2 * r + 1];
          if (ONE) {
            *(uint32_t*)(zh + row * LZ + h * D + e) = pack_bf16(y0, y1);
          } else {
            uint32_t hi, lo;
            split_bf16(y0, y1, hi, lo);
            *(uint32_t*)(zh + row * LZ + h * D + e) = hi;
            *(uint32_t*)(zl + row * LZ + h * D + e) = lo;
          }
        }
      }
      z[r] = rcp(quad_sum(den) + kZEps);
      dden[r] = -z[r] * z[r] * quad_sum(dz);
      // G = z go (bf16 hi/lo), the B operand of dS.
#pragma unroll
      for (int j = 0; j < NP; j++) {
        const float2 x = gop(r, j);
        if (ONE) {
          *(uint32_t*)(gh + row * LG + 8 * j + 2 * t) = pack_bf16(z[r] * x.x, z[r] * x.y);
        } else {
          uint32_t hi, lo;
          split_bf16(z[r] * x.x, z[r] * x.y, hi, lo);
          *(uint32_t*)(gh + row * LG + 8 * j + 2 * t) = hi;
          *(uint32_t*)(gl + row * LG + 8 * j + 2 * t) = lo;
        }
      }
    }
    __syncwarp();  // every lane is done with the go stage: the next step's rows go in flight
    if (it + 1 < niter) stage_rows<D, T>(sg, gg, nb + kTok3, i1, lane);
    cp_async_commit();
    // On the active half of each value (the sign of q): dfq = z rope^T(w) + dden kmean
    // (rope^T: the pair rotated back), gf = dfq fq; dp = sum gf ln u, sum of p gf (= du u);
    // dden fq over the warp's rows into its dkm row, here where fq is at hand (the first
    // version made u^p a third time for it). gf is kept for dq.
    float gfv[2][NP][2], dp[2] = {0.0f, 0.0f}, sg2[2] = {0.0f, 0.0f};  // sum gf log2 u, sum gf
#pragma unroll
    for (int j = 0; j < NP; j++) {
      float dkv[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};  // [value][half], over rows g and g + 8
      const float2 kmh[2] = {lds2(km + 8 * j + 2 * t), lds2(km + D + 8 * j + 2 * t)};  // kmean of both halves
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const float2 cs = tb[r](j), xr = qv(r, j);
#pragma unroll
        for (int m = 0; m < 2; m++) {
          const float x = m ? xr.y : xr.x, u = fabsf(x) * qs[r].inv;
          const int h = x < 0.0f ? 1 : 0;
          const float w0 = h ? w[NP + j][2 * r] : w[j][2 * r], w1 = h ? w[NP + j][2 * r + 1] : w[j][2 * r + 1];
          const float rt = m ? w1 * cs.x - w0 * cs.y : w0 * cs.x + w1 * cs.y;  // rope^T(w), value m
          const float lu = lg2(fmaxf(u, kTiny)), f = u > 0.0f ? ex2(qs[r].p * lu) : 0.0f;
          const float kmv = h ? (m ? kmh[1].y : kmh[1].x) : (m ? kmh[0].y : kmh[0].x);
          const float gf = (z[r] * rt + dden[r] * kmv) * f;
          gfv[r][j][m] = gf;
          dp[r] += gf * lu;
          sg2[r] += gf;
          dkv[m][h] += dden[r] * f;
        }
      }
      if (ONE) {  // into this lane's own row (g, t own distinct entries: no shuffles, no conflicts)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          float2* at = (float2*)(dkmw + (warp * 8 + g) * LDK + h * D + 8 * j + 2 * t);
          const float2 y = *at;
          *at = make_float2(y.x + dkv[0][h], y.y + dkv[1][h]);
        }
      } else {
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
          for (int h = 0; h < 2; h++) {  // add over the 8 rows g (fixed tree); lanes g = 0 into the warp's row
            float v = dkv[m][h];
            v += __shfl_xor_sync(0xffffffffu, v, 4);
            v += __shfl_xor_sync(0xffffffffu, v, 8);
            v += __shfl_xor_sync(0xffffffffu, v, 16);
            if (g == 0) dkmw[warp * F + h * D + 8 * j + 2 * t + m] += v;
          }
      }
    }
    float dnq[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const float dpr = quad_sum(dp[r]) * kLn2;      // d(u^p)/dp = u^p ln u
      const float dnu = qs[r].p * quad_sum(sg2[r]);  // sum du u with du = p gf / u
      const float dn = dpr * 3.0f * (1.0f - qs[r].th * qs[r].th) - dnu * qs[r].inv;
      dnq[r] = qs[r].norm > floor ? dn * rcp(qs[r].norm) : 0.0f;
    }
    // dq = dnq q + p gf / q (that is du / n with the sign of q; gf is 0 where u^p is).
#pragma unroll
    for (int j = 0; j < NP; j++)
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const float2 xr = qv(r, j);
        float out[2];
#pragma unroll
        for (int m = 0; m < 2; m++) {
          const float x = m ? xr.y : xr.x;
          out[m] = dnq[r] * x + (fabsf(x) >= kTiny ? qs[r].p * gfv[r][j][m] * rcp(x) : 0.0f);
        }
        const int n = nb + g + 8 * r;
        if (ONE)  // over its own q value (this lane read it last), stored whole rows below
          st2(sqs + (g + 8 * r) * LQ + 8 * j + 2 * t, out[0], out[1]);
        else if (n < i1)
          st2(dqg + (size_t)n * D + 8 * j + 2 * t, out[0], out[1]);
      }
    if (ONE) {
      // The warp's 16 dq rows from the q stage in 16-byte pieces: whole 32-byte sectors, where
      // the fragment layout's 4-byte stores fill half a sector each.
      __syncwarp();
      constexpr int C = D / 8;  // 16-byte pieces a row (8 bf16)
#pragma unroll
      for (int i = 0; i < 16 * C / 32; i++) {
        const int c = lane + 32 * i, row = c / C, col = 8 * (c % C), tok = nb + row;  // nb: the warp's first token
        if (tok < i1) *(uint4*)(dqg + (size_t)tok * D + col) = *(const uint4*)(sqs + row * LQ + col);
      }
      __syncwarp();  // the next step's q rows go in flight during the dS product
      if (it + 1 < niter) stage_rows<D, T>(sqs, qg, nb + kTok3, i1, lane);
    }
    cp_async_commit();
    __syncthreads();  // the step's z rq and go rows are all in shared memory
    // dS += Z^T G over the step's tokens: A from z rq (tokens x features) through
    // ldmatrix.trans, B from go (tokens x columns) likewise.
#pragma unroll
    for (int s = 0; s < kTok3 / 16 / TL::WGK; s++) {
      const int k0 = 16 * (s * TL::WGK + wk);
      uint32_t ah[MT][4], al[MT][4];
#pragma unroll
      for (int mi = 0; mi < MT; mi++) {
        const uint32_t at = (uint32_t)(k0 * LZ + (wm * MT + mi) * 16) * 2;
        ldsm_x4_trans(ah[mi], zbh + at);
        if (!ONE) ldsm_x4_trans(al[mi], zbl + at);
      }
#pragma unroll
      for (int np = 0; np < (NT + 1) / 2; np++) {
        uint32_t bh[4], bl[4];
        const uint32_t at = (uint32_t)(k0 * LG + (wn * NT + 2 * np) * 8) * 2;
        if (NT == 1) {
          ldsm_x2_trans(bh, gbh + at);
          if (!ONE) ldsm_x2_trans(bl, gbl + at);
        } else {
          ldsm_x4_trans(bh, gbh + at);
          if (!ONE) ldsm_x4_trans(bl, gbl + at);
        }
#pragma unroll
        for (int mi = 0; mi < MT; mi++) {
          if (ONE) {
            bf16_16816(dacc[mi][2 * np], ah[mi], bh[0], bh[1]);
            if (NT > 1) bf16_16816(dacc[mi][(2 * np + 1) % NT], ah[mi], bh[2], bh[3]);
            continue;
          }
          bf16_3pass(dacc[mi][2 * np], ah[mi], al[mi], bh[0], bh[1], bl[0], bl[1]);
          if (NT > 1) bf16_3pass(dacc[mi][(2 * np + 1) % NT], ah[mi], al[mi], bh[2], bh[3], bl[2], bl[3]);
        }
      }
    }
    if (!ONE) __syncthreads();  // before the next step rewrites Z and G (ONE: it writes the other buffer)
  }
  __syncthreads();  // every warp is done with both buffers

  float* out = part + (size_t)blockIdx.x * (F * D + F);
  float* red = (float*)zh0;  // free now: (WGK - 1) F D floats fit
  const int m0 = wm * MT * 16, n0 = wn * NT * 8;
  if (TL::WGK > 1) {
    if (wk > 0) tiles_io<MT, NT>(red + (size_t)(wk - 1) * F * D, D, dacc, m0, n0, g, t, 0);
    __syncthreads();
    if (wk == 0)
      for (int w2 = 1; w2 < TL::WGK; w2++) tiles_io<MT, NT>(red + (size_t)(w2 - 1) * F * D, D, dacc, m0, n0, g, t, 1);
  }
  if (wk == 0) tiles_io<MT, NT>(out, D, dacc, m0, n0, g, t, 0);
  for (int a = tid; a < F; a += kThreads) {
    float s = 0.0f;
    for (int w2 = 0; w2 < DKM_ROWS; w2++) s += dkmw[w2 * LDK + a];
    out[F * D + a] = s;
  }
}

// ---------------------------------------------------------------- 4. dk, dv

// One-pass products keep dS's hi part alone, and the stage holds T: on bf16 arrays the block
// needs 55 KB instead of 111, so that 3 blocks (12 warps) share an SM where 2 did (at most 168
// registers a thread; 4 blocks at 128 registers spilled 136 bytes and measured slower).
template <int D, typename T, bool ONE>
struct KeyGradLayout {
  static constexpr int F = 2 * D, LS = D + 8;
  static constexpr size_t bytes = (ONE ? 1 : 2) * F * LS * sizeof(__nv_bfloat16) + F * sizeof(float) +
                                  (size_t)kWarps4 * 2 * 2 * 16 * (D + 8) * sizeof(T);
};
constexpr int kKeyGradBlocksOne = 3;  // resident blocks an SM the one-pass kernel is compiled for

// dS, dkm from the partials (times 1/N), then dv = rk dS, drk = v dS^T and dk for the chunk's tokens.
template <int D, typename T, bool ONE = false>
__global__ void __launch_bounds__(kWarps4 * 32, ONE ? kKeyGradBlocksOne : 2)
    nala_key_grad_kernel(const T* __restrict__ k, const T* __restrict__ v, const float* __restrict__ part,
                         Rope rope, T* __restrict__ dk, T* __restrict__ dv, int N, int nparts, int nch, int L,
                         float invN) {
  constexpr int F = 2 * D, NP = D / 8, LS = D + 8, LQ = D + 8, P = F * D + F;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sh = (__nv_bfloat16*)smem_raw;
  __nv_bfloat16* sl = sh + F * LS;  // not allocated when ONE
  float* dkm = (float*)(sh + (ONE ? 1 : 2) * F * LS);
  float* stage = dkm + F;  // per warp: 2 buffers of (k rows, v rows) of T
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int pb = blockIdx.x / nch, ch = blockIdx.x % nch;
  stage_sum<D, kWarps4 * 32>(part + (size_t)pb * nparts * P, nparts, invN, sh, ONE ? nullptr : sl, dkm, nullptr, nullptr);
  __syncthreads();

  const int i0 = ch * L, i1 = min(N, i0 + L), ntile = (i1 - i0 + 15) / 16;
  const T* kg = k + (size_t)pb * N * D;
  const T* vg = v + (size_t)pb * N * D;
  T* dkg = dk + (size_t)pb * N * D;
  T* dvg = dv + (size_t)pb * N * D;
  T* st = (T*)stage + warp * 2 * 2 * 16 * LQ;
  // This lane's ldmatrix rows of dS (hi, lo): .trans for dv (row k0 + (lane & 15), column
  // 16 np + 8 (lane >> 4)), plain for drk (row 16 np + (lane & 7) + 8 (lane >> 4), column
  // 16 s + 8 ((lane >> 3) & 1)).
  const int lt = (lane & 15) * LS + (lane >> 4) * 8, ln = ((lane & 7) + ((lane >> 4) << 3)) * LS + ((lane >> 3) & 1) * 8;
  const uint32_t tbh = smem_addr(sh + lt), tbl = smem_addr(sl + lt), nbh = smem_addr(sh + ln), nbl = smem_addr(sl + ln);
  if (warp < ntile) {
    stage_rows<D, T>(st, kg, i0 + 16 * warp, i1, lane);
    stage_rows<D, T>(st + 16 * LQ, vg, i0 + 16 * warp, i1, lane);
  }
  cp_async_commit();
  int buf = 0;
  for (int tile = warp; tile < ntile; tile += kWarps4, buf ^= 1) {
    __syncwarp();  // every lane is done reading the buffer refilled next
    if (tile + kWarps4 < ntile) {
      T* nx = st + (buf ^ 1) * 2 * 16 * LQ;
      stage_rows<D, T>(nx, kg, i0 + 16 * (tile + kWarps4), i1, lane);
      stage_rows<D, T>(nx + 16 * LQ, vg, i0 + 16 * (tile + kWarps4), i1, lane);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncwarp();
    const T* sk = st + buf * 2 * 16 * LQ;  // k and v rows stay here while the tile is worked on
    const T* sv = sk + 16 * LQ;
    auto pair = [&](const T* rows, int r, int j) { return ld2(rows + (g + 8 * r) * LQ + 8 * j + 2 * t); };
    const int nb = i0 + 16 * tile;
    const LaneRope<D> tb[2] = {LaneRope<D>(rope, min(nb + g, N - 1), t), LaneRope<D>(rope, min(nb + g + 8, N - 1), t)};
    // dv = rk dS: A = rk from registers (a rope pair per fragment register), B = dS through ldmatrix.trans.
    {
      float acc[D / 8][4];
      zero_acc(acc);
#pragma unroll
      for (int s = 0; s < D / 16; s++) {
        float2 cs[2][2], xk[2][2];
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
          for (int jj = 0; jj < 2; jj++) {
            cs[r][jj] = tb[r](2 * s + jj);
            xk[r][jj] = pair(sk, r, 2 * s + jj);
          }
#pragma unroll
        for (int h = 0; h < 2; h++) {
          uint32_t ah[4], al[4];
#pragma unroll
          for (int jj = 0; jj < 2; jj++)
#pragma unroll
            for (int r = 0; r < 2; r++) {
              const float2 x = xk[r][jj];
              const float c0 = x.x * x.x * x.x, c1 = x.y * x.y * x.y;
              float y0, y1;
              rot(h ? fmaxf(-c0, 0.0f) : fmaxf(c0, 0.0f), h ? fmaxf(-c1, 0.0f) : fmaxf(c1, 0.0f), cs[r][jj], y0, y1);
              if (ONE)
                ah[r + 2 * jj] = pack_bf16(y0, y1);
              else
                split_bf16(y0, y1, ah[r + 2 * jj], al[r + 2 * jj]);
            }
          mma_k16_panels<D, ONE>(acc, ah, al, tbh, tbl, h * D + 16 * s, LS);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const int n = nb + g + 8 * r;
        if (n < i1)
#pragma unroll
          for (int nt = 0; nt < D / 8; nt++)
            st2(dvg + (size_t)n * D + 8 * nt + 2 * t, acc[nt][2 * r], acc[nt][2 * r + 1]);
      }
    }
    // drk = v dS^T: A = v from registers, B[c][a] = dS[a][c] through plain ldmatrix.
    float w[F / 8][4];
#pragma unroll
    for (int nt = 0; nt < F / 8; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++) w[nt][c] = 0.0f;
#pragma unroll
    for (int s = 0; s < D / 16; s++) {
      uint32_t ah[4], al[4];
#pragma unroll
      for (int jj = 0; jj < 2; jj++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
          const float2 x = pair(sv, r, 2 * s + jj);
          if (ONE)
            ah[r + 2 * jj] = pack_bf16(x.x, x.y);
          else
            split_bf16(x.x, x.y, ah[r + 2 * jj], al[r + 2 * jj]);
        }
#pragma unroll
      for (int np = 0; np < F / 16; np++) {
        uint32_t bh[4], bl[4];
        const uint32_t at = (uint32_t)(16 * np * LS + 16 * s) * 2;
        ldsm_x4(bh, nbh + at);
        if (ONE) {  // dS rounded to bf16 (its hi part); bf16 v is exact
          bf16_16816(w[2 * np], ah, bh[0], bh[1]);
          bf16_16816(w[2 * np + 1], ah, bh[2], bh[3]);
          continue;
        }
        ldsm_x4(bl, nbl + at);
        if (sizeof(T) == 2) {  // bf16 v is exact: al = 0
          bf16_2pass_a(w[2 * np], ah, bh[0], bh[1], bl[0], bl[1]);
          bf16_2pass_a(w[2 * np + 1], ah, bh[2], bh[3], bl[2], bl[3]);
        } else {
          bf16_3pass(w[2 * np], ah, al, bh[0], bh[1], bl[0], bl[1]);
          bf16_3pass(w[2 * np + 1], ah, al, bh[2], bh[3], bl[2], bl[3]);
        }
      }
    }
    // dk = 3 k^2 (dfk of the active half + dkm / N), dfk = rope^T(drk).
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int n = nb + g + 8 * r;
#pragma unroll
      for (int j = 0; j < NP; j++) {
        const int e = 8 * j + 2 * t;
        const float2 cs = tb[r](j), xk = pair(sk, r, j);
        float df[2][2];
#pragma unroll
        for (int h = 0; h < 2; h++) rot_t(w[h * NP + j][2 * r], w[h * NP + j][2 * r + 1], cs, df[h][0], df[h][1]);
        float out[2];
#pragma unroll
        for (int m = 0; m < 2; m++) {
          const float x = m ? xk.y : xk.x, kc = x * x * x;
          float gk = 0.0f;
          if (kc > 0.0f) gk += df[0][m] + dkm[e + m];
          if (kc < 0.0f) gk -= df[1][m] + dkm[D + e + m];
          out[m] = gk * 3.0f * x * x;
        }
        if (n < i1) st2(dkg + (size_t)n * D + e, out[0], out[1]);
      }
    }
  }
  cp_async_wait<0>();
}

// ---------------------------------------------------------------- partial sums
// sum[g] = the nch partials of problem g added up (P floats each, P % 4 == 0),
// so that kernels 2 and 4 read one partial instead of nch (at G = 1 and
// N = 65,536 there are 256 partials of 33 KB, and each of the 256 output
// blocks would read all of them). A block takes 32 float4 columns of one
// problem: row y of threads adds chunks y, y + 8, ... in order, then row 0
// adds the 8 row sums in order (deterministic).
constexpr int kSumCols = 32, kSumRows = 8;
__global__ void __launch_bounds__(kSumCols* kSumRows)
    sum_partials_kernel(const float4* __restrict__ part, float4* __restrict__ sum, int nch, int P4, int bpp) {
  __shared__ float4 rows[kSumRows][kSumCols];
  const int64_t g = blockIdx.x / bpp;
  const int x = (blockIdx.x % bpp) * kSumCols + threadIdx.x;
  float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
  if (x < P4) {
    const float4* p = part + (size_t)g * nch * P4 + x;
    for (int c = threadIdx.y; c < nch; c += kSumRows) {
      const float4 y = p[(size_t)c * P4];
      s.x += y.x, s.y += y.y, s.z += y.z, s.w += y.w;
    }
  }
  rows[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && x < P4) {
#pragma unroll
    for (int r = 1; r < kSumRows; r++) {
      const float4 y = rows[r][threadIdx.x];
      s.x += y.x, s.y += y.y, s.z += y.z, s.w += y.w;
    }
    sum[(size_t)g * P4 + x] = s;
  }
}

// ---------------------------------------------------------------- host side

template <typename K>
int slots_of(K kernel, int threads, size_t smem) {  // resident blocks on the whole GPU
  if (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "nala_attention");
  int dev = 0, sms = 0, per = 0;
  CUDA_CHECK(cudaGetDevice(&dev), "nala_attention");
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "nala_attention");
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kernel, threads, smem), "nala_attention");
  NALA_CHECK(per > 0, "nala_attention: a kernel does not fit on this GPU (", smem, " bytes of shared memory)");
  return per * sms;
}

struct Plan {
  int L, nch;  // tokens per chunk (a multiple of the quantum), chunks per problem
};
// Chunks per problem for G problems of N tokens, G * chunks blocks in `slots`
// resident places. A block's time is about its tokens plus a fixed cost
// (staging and writing a partial state of F * (D + 1) floats, ~kBlockCost
// tokens' worth), and every chunk adds a partial for the next kernel to read:
// minimise waves * (length + kBlockCost).
// The chunks' partial states (P floats each) should fit in the spare output
// (`spare` floats per problem, class Partials below), or the pair allocates
// them: the best plan whose partials fit is taken when it costs at most
// kFitSlack more than the best plan (at long sequences it does: chunks of
// 288 instead of 256 tokens for one bf16 problem of 65,536 tokens at d = 64,
// where the partials of 256 chunks would need 8.5 MB and o holds 8.4).
constexpr int64_t kBlockCost = 256;
constexpr double kFitSlack = 1.15;
constexpr int64_t kNoPartials = INT64_MAX;  // `spare` of a kernel that writes no partials (any plan fits)
Plan plan_chunks(int64_t G, int64_t N, int64_t quantum, int64_t slots, int64_t P, int64_t spare) {
  Plan best{0, 0}, fit{0, 0};
  int64_t best_cost = -1, fit_cost = -1;
  for (int64_t c = 1; c <= 4096; c++) {
    const int64_t L = ((N + c - 1) / c + quantum - 1) / quantum * quantum, nch = (N + L - 1) / L;
    if (nch != c) continue;  // same chunks as a smaller count
    const int64_t cost = (G * nch + slots - 1) / slots * (L + kBlockCost);
    if (best_cost < 0 || cost < best_cost) best = {(int)L, (int)nch}, best_cost = cost;
    if ((nch == 1 || nch * P <= spare) && (fit_cost < 0 || cost < fit_cost)) fit = {(int)L, (int)nch}, fit_cost = cost;
    if (L == quantum) break;
  }
  return fit_cost >= 0 && fit_cost <= kFitSlack * best_cost ? fit : best;
}

// The workspace of a kernel pair: nch partials of P floats per problem, and
// their sum (P floats per problem), which the second kernel reads. The
// partials go into `spare`, an output of G * N * D elements of `elem` bytes
// that the second kernel writes and the first does not touch, when they fit
// there (nch * P floats <= N * D elements, i.e. chunks of at least ~2D tokens
// in float32, ~4D in bf16: at long sequences), so the pair allocates only the
// G * P floats of the sum; else into a tensor of their own. With one chunk
// the partial is the sum. With a few chunks (at most kDirectParts: many
// problems, as in the models) the partials get a tensor of their own and the
// second kernel adds them itself, in the same order (stage_sum): no summing
// kernel and its launch between the two (2026-12-01: the forward at (128, 1,
// 3136, 64), two chunks, see the file's head).
constexpr int64_t kDirectParts = 4;
struct Partials {
  Tensor sum, own;
  float* part;
  int64_t G, nch, P;
  bool direct;  // the second kernel reads the nch partials (src(), nsrc()) instead of their sum
  Partials(int64_t G_, int64_t N, int64_t nch_, void* spare, size_t elem, int64_t D)
      : G(G_), nch(nch_), P(2 * D * D + 2 * D), direct(nch_ > 1 && nch_ <= kDirectParts) {
    if (nch == 1) sum = Tensor::empty({G * P}, DType::F32, Device::CUDA), part = sum.f32();
    else if (direct) own = Tensor::empty({G * nch * P}, DType::F32, Device::CUDA), part = own.f32();
    else {
      sum = Tensor::empty({G * P}, DType::F32, Device::CUDA);
      if ((size_t)(nch * P) * sizeof(float) <= (size_t)(N * D) * elem) part = (float*)spare;
      else own = Tensor::empty({G * nch * P}, DType::F32, Device::CUDA), part = own.f32();
    }
  }
  const float* src() const { return direct ? part : sum.f32(); }
  int nsrc() const { return direct ? (int)nch : 1; }
  void reduce(const char* op) const {
    if (nch == 1 || direct) return;
    const int P4 = (int)(P / 4), bpp = (P4 + kSumCols - 1) / kSumCols;
    sum_partials_kernel<<<(unsigned)(G * bpp), dim3(kSumCols, kSumRows)>>>((const float4*)part, (float4*)sum.f32(),
                                                                           (int)nch, P4, bpp);
    CUDA_CHECK_LAUNCH(op);
  }
};

// T: float or __nv_bfloat16, the type of q, k, v, dO and of o, dq, dk, dv.
// ONE (bf16 only): every product in one tensor-core pass (one_pass of the bf16 entry points).
template <int D, typename T, bool ONE = false>
struct Kernels {
  static int slots(int which) {  // per kernel, measured once
    static const int s[4] = {
        slots_of(nala_state_kernel<D, T, ONE>, kThreads, StateLayout<D, ONE>::bytes),
        slots_of(nala_output_kernel<D, T, ONE>, kThreads, OutputLayout<D>::bytes),
        slots_of(nala_query_grad_kernel<D, T, ONE>, kThreads, QueryGradLayout<D, ONE>::bytes),
        slots_of(nala_key_grad_kernel<D, T, ONE>, kWarps4 * 32, KeyGradLayout<D, T, ONE>::bytes)};
    return s[which];
  }

  static void forward(const T* q, const T* k, const T* v, T* o, float* S, float* kmean, int64_t G, int64_t H,
                      int64_t W, float floor, const char* op) {
    const int64_t N = H * W;
    const Rope rope{(const float2*)rope_pair_table_device(H, W, D), (int)H, (int)W};
    const int64_t P = 2 * D * D + 2 * D, spare = N * D * (int64_t)sizeof(T) / 4;  // floats
    const Plan p1 = plan_chunks(G, N, kT1, slots(0), P, spare), p2 = plan_chunks(G, N, 16 * kWarps, slots(1), P, kNoPartials);
    // The partials live in o (not yet written) when they fit; summed into `sum`.
    Partials pp(G, N, p1.nch, o, sizeof(T), D);
    nala_state_kernel<D, T, ONE><<<(unsigned)(G * p1.nch), kThreads, StateLayout<D, ONE>::bytes>>>(k, v, rope, pp.part,
                                                                                         (int)N, p1.nch, p1.L);
    CUDA_CHECK_LAUNCH(op);
    pp.reduce(op);
    nala_output_kernel<D, T, ONE><<<(unsigned)(G * p2.nch), kThreads, OutputLayout<D>::bytes>>>(
        q, pp.src(), rope, o, S, kmean, (int)N, pp.nsrc(), p2.nch, p2.L, 1.0f / (float)N, floor);
    CUDA_CHECK_LAUNCH(op);
  }

  static void backward(const T* q, const T* k, const T* v, const float* S, const float* kmean, const T* gout, T* dq,
                       T* dk, T* dv, int64_t G, int64_t H, int64_t W, float floor, const char* op) {
    const int64_t N = H * W;
    const Rope rope{(const float2*)rope_pair_table_device(H, W, D), (int)H, (int)W};
    const int64_t P = 2 * D * D + 2 * D, spare = N * D * (int64_t)sizeof(T) / 4;  // floats
    const Plan p3 = plan_chunks(G, N, kTok3, slots(2), P, spare), p4 = plan_chunks(G, N, 16 * kWarps4, slots(3), P, kNoPartials);
    // The partials live in dk (written only by kernel 4) when they fit.
    Partials pp(G, N, p3.nch, dk, sizeof(T), D);
    nala_query_grad_kernel<D, T, ONE><<<(unsigned)(G * p3.nch), kThreads, QueryGradLayout<D, ONE>::bytes>>>(
        q, S, kmean, gout, rope, dq, pp.part, (int)N, p3.nch, p3.L, floor);
    CUDA_CHECK_LAUNCH(op);
    pp.reduce(op);
    nala_key_grad_kernel<D, T, ONE><<<(unsigned)(G * p4.nch), kWarps4 * 32, KeyGradLayout<D, T, ONE>::bytes>>>(
        k, v, pp.src(), rope, dk, dv, (int)N, pp.nsrc(), p4.nch, p4.L, 1.0f / (float)N);
    CUDA_CHECK_LAUNCH(op);
  }
};

void check_dims(const char* op, int64_t G, int64_t N, int64_t D) {
  NALA_CHECK(D % 4 == 0 && D > 0 && D <= 128, op, ": CUDA kernels take head dim d % 4 == 0 and d <= 128, got d = ", D);
  NALA_CHECK(G * N * D < (int64_t(1) << 31) && G * 2 * D * D < (int64_t(1) << 31), op, ": too large (G=", G,
             " N=", N, " d=", D, ")");
}

// bf16 at head dims without tensor-core kernels: the first version on float32 copies.
Tensor widened(const bf16_t* x, int64_t n) {
  Tensor t = Tensor::empty({n}, DType::F32, Device::CUDA);
  cast_bf16_f32(t.f32(), x, n);
  return t;
}

// The public entry points for element type T (float or __nv_bfloat16): the checks, then the
// tensor-core kernels at d = 16, 32, 64 and `other` (the first version) at the other head dims.
// ONE = true: one-pass products (bf16 arrays only).
template <bool ONE = false, typename T, class Other>
void forward_any(const T* q, const T* k, const T* v, T* o, float* S, float* kmean, int64_t G, int64_t H, int64_t W,
                 int64_t D, float floor, const char* op, Other other) {
  check_dims(op, G, H * W, D);
  if (G == 0 || H * W == 0) return;
  switch (D) {
    case 16: return Kernels<16, T, ONE>::forward(q, k, v, o, S, kmean, G, H, W, floor, op);
    case 32: return Kernels<32, T, ONE>::forward(q, k, v, o, S, kmean, G, H, W, floor, op);
    case 64: return Kernels<64, T, ONE>::forward(q, k, v, o, S, kmean, G, H, W, floor, op);
    default: return other();
  }
}
template <bool ONE = false, typename T, class Other>
void backward_any(const T* q, const T* k, const T* v, const float* S, const float* kmean, const T* gout, T* dq, T* dk,
                  T* dv, int64_t G, int64_t H, int64_t W, int64_t D, float floor, const char* op, Other other) {
  check_dims(op, G, H * W, D);
  if (G == 0 || H * W == 0) return;
  switch (D) {
    case 16: return Kernels<16, T, ONE>::backward(q, k, v, S, kmean, gout, dq, dk, dv, G, H, W, floor, op);
    case 32: return Kernels<32, T, ONE>::backward(q, k, v, S, kmean, gout, dq, dk, dv, G, H, W, floor, op);
    case 64: return Kernels<64, T, ONE>::backward(q, k, v, S, kmean, gout, dq, dk, dv, G, H, W, floor, op);
    default: return other();
  }
}

}  // namespace

bool nala_attention_tensor_cores(int64_t D) { return D == 16 || D == 32 || D == 64; }

void nala_attention_forward(const float* q, const float* k, const float* v, float* o, float* S, float* kmean,
                            int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor) {
  forward_any(q, k, v, o, S, kmean, G, H, W, D, norm_floor, "nala_attention_forward",
              [&] { nala_attention_forward_v1(q, k, v, o, S, kmean, G, H, W, D, norm_floor); });
}

void nala_attention_backward(const float* q, const float* k, const float* v, const float* S, const float* kmean,
                             const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H, int64_t W,
                             int64_t D, float norm_floor) {
  backward_any(q, k, v, S, kmean, gout, dq, dk, dv, G, H, W, D, norm_floor, "nala_attention_backward",
               [&] { nala_attention_backward_v1(q, k, v, S, kmean, gout, dq, dk, dv, G, H, W, D, norm_floor); });
}

void nala_attention_forward(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* o, float* S, float* kmean,
                            int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor, bool one_pass) {
  using B = __nv_bfloat16;
  auto other = [&] {
    const int64_t n = G * H * W * D;
    Tensor qf = widened(q, n), kf = widened(k, n), vf = widened(v, n);
    Tensor of = Tensor::empty({n}, DType::F32, Device::CUDA);
    nala_attention_forward_v1(qf.f32(), kf.f32(), vf.f32(), of.f32(), S, kmean, G, H, W, D, norm_floor);
    cast_f32_bf16(o, of.f32(), n);
  };
  const char* op = "nala_attention_forward (bf16)";
  if (one_pass)
    forward_any<true>((const B*)q, (const B*)k, (const B*)v, (B*)o, S, kmean, G, H, W, D, norm_floor, op, other);
  else
    forward_any((const B*)q, (const B*)k, (const B*)v, (B*)o, S, kmean, G, H, W, D, norm_floor, op, other);
}

void nala_attention_backward(const bf16_t* q, const bf16_t* k, const bf16_t* v, const float* S, const float* kmean,
                             const bf16_t* gout, bf16_t* dq, bf16_t* dk, bf16_t* dv, int64_t G, int64_t H, int64_t W,
                             int64_t D, float norm_floor, bool one_pass) {
  using B = __nv_bfloat16;
  auto other = [&] {
    const int64_t n = G * H * W * D;
    Tensor qf = widened(q, n), kf = widened(k, n), vf = widened(v, n), gf = widened(gout, n);
    Tensor d[3];
    for (Tensor& t : d) t = Tensor::empty({n}, DType::F32, Device::CUDA);
    nala_attention_backward_v1(qf.f32(), kf.f32(), vf.f32(), S, kmean, gf.f32(), d[0].f32(), d[1].f32(), d[2].f32(),
                               G, H, W, D, norm_floor);
    cast_f32_bf16(dq, d[0].f32(), n);
    cast_f32_bf16(dk, d[1].f32(), n);
    cast_f32_bf16(dv, d[2].f32(), n);
  };
  const char* op = "nala_attention_backward (bf16)";
  if (one_pass)
    backward_any<true>((const B*)q, (const B*)k, (const B*)v, S, kmean, (const B*)gout, (B*)dq, (B*)dk, (B*)dv, G, H,
                       W, D, norm_floor, op, other);
  else
    backward_any((const B*)q, (const B*)k, (const B*)v, S, kmean, (const B*)gout, (B*)dq, (B*)dk, (B*)dv, G, H, W, D,
                 norm_floor, op, other);
}

}  // namespace cuda
}  // namespace nala
