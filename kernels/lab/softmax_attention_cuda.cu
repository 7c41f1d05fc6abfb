// kernels/lab/softmax_attention_cuda.cu - the softmax attention lab, CUDA:
// from the materialised N x N score matrix to the online (flash-style)
// softmax of the production kernels. Math and CPU versions:
// kernels/lab/softmax_attention.cpp (same letters: G problems, N = H W tokens
// of head dim D); walkthrough: docs/kernels.md; harness: kernels/lab/lab_cuda.cuh.
//
//   s_ij = rope(q_i) . rope(k_j) / sqrt(D),   o_i = sum_j softmax_j(s_i.) v_j,
//   lse_i = log sum_j exp(s_ij)               (saved for the backward)
//
//   build/release/lab/softmax_attention_cuda [VERSION] [--size S] [--check] [--csv] [--min-time S]
//     default G = 3, H x W = 5 x 7 (N = 35: odd, a block of 32 rows and a part), D = 64;
//     --check also runs D = 16 and 36, a problem with zero rows in q, k, v, and two of
//     several key tiles: N = 13 x 11 at D = 32, N = 9 x 15 at D = 128 with zero rows;
//     --size S: G = 16, H = W = S, D = 64 (docs/kernels.md times S = 28: N = 784)
//
// Versions (forward 1-2 and 5, backward 3-4 and 6):
//   1  forward, naive    rope, the N x N scores to memory, a softmax pass per row, o = P V
//   2  forward, online   cuda::softmax_attention_forward (kernels/cuda/attention_softmax.cu):
//                        key tiles in shared memory, a running max and sum per row, nothing N x N
//   3  backward, naive   P and dS (N x N) to memory, then dq, dk, dv as sums over them
//   4  backward, online  cuda::softmax_attention_backward: scores recomputed tile by tile from lse
//   5  forward, tensor   version 2's online softmax with S = rq rk^T and O += P V as bf16
//      cores             mma.sync (FlashAttention-2's forward): sm_80 and later, D = 16, 32, 64,
//                        128 (another D runs version 2, and the problem line says so); checked
//                        against the same math in double on its bf16-rounded operands
//   6  backward, tensor  FlashAttention-2's backward on the same operands, dq and dk/dv
//      cores             kernels (D = 16, 32, 64; another D runs version 4); versions 5 and 6
//                        are the production kernels of --precision bf16
//                        (kernels/cuda/attention_softmax_tc.cu)
// GFLOP/s count the four (forward: q k^T, P v) and ten (backward) N^2 D
// products; GB/s the least traffic (forward q, k, v read, o and lse written;
// backward q, k, v, o, dO, lse read, dq, dk, dv written). At these sizes the
// op is bound by arithmetic, not memory: the FP32 peak is the yardstick (the
// dense bf16 tensor peak for version 5).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_softmax_tc.h"
#include "kernels/cuda/rope.h"
#include "kernels/lab/lab_cuda.cuh"

using namespace nala;

namespace {

constexpr int kBlock = 256;

// ---- 1. forward, naive: rope q and k (cuda::rope2d_forward), a thread per
// score s_ij into a (G, N, N) array, a thread per row for its max, sum and
// lse and to turn the row into probabilities, a thread per element of o for
// sum_j P_ij v_j. The scores are written once and read three times: O(N^2)
// traffic and memory (G N^2 floats: 630 MB at N = 3136, G = 16).
__global__ void v1_scores(const float* rq, const float* rk, float* P, int G, int N, int D, float scale) {
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= (int64_t)G * N * N) return;
  const int64_t g = id / ((int64_t)N * N), i = id / N % N, j = id % N;
  const float *x = rq + (g * N + i) * D, *y = rk + (g * N + j) * D;
  float s = 0.0f;
  for (int c = 0; c < D; c++) s += x[c] * y[c];
  P[id] = s * scale;
}
__global__ void v1_softmax_rows(float* P, float* lse, int64_t rows, int N) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float* p = P + r * N;
  float m = -INFINITY, l = 0.0f;
  for (int j = 0; j < N; j++) m = fmaxf(m, p[j]);
  for (int j = 0; j < N; j++) l += expf(p[j] - m);
  for (int j = 0; j < N; j++) p[j] = expf(p[j] - m) / l;
  lse[r] = m + logf(l);
}
__global__ void v1_pv(const float* P, const float* v, float* o, int G, int N, int D) {
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= (int64_t)G * N * D) return;
  const int64_t g = id / ((int64_t)N * D), i = id / D % N, c = id % D;
  const float* p = P + (g * N + i) * N;
  float s = 0.0f;
  for (int j = 0; j < N; j++) s += p[j] * v[(g * N + j) * D + c];
  o[id] = s;
}

// ---- 3. backward, naive: Dl_i = go_i . o_i; a thread per (i, j) for
// P_ij = exp(s_ij - lse_i) and dS_ij = P_ij (go_i . v_j - Dl_i) / sqrt(D),
// both to (G, N, N) arrays; then a thread per output element for
// drq = dS rk, drk = dS^T rq, dv = P^T go (the transposed sums read
// columns: strided), and the rope rotated back on dq and dk.
__global__ void v3_dl(const float* go, const float* o, float* dl, int64_t rows, int D) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float s = 0.0f;
  for (int c = 0; c < D; c++) s += go[r * D + c] * o[r * D + c];
  dl[r] = s;
}
__global__ void v3_p_ds(const float* rq, const float* rk, const float* v, const float* go, const float* lse,
                        const float* dl, float* P, float* dS, int G, int N, int D, float scale) {
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= (int64_t)G * N * N) return;
  const int64_t g = id / ((int64_t)N * N), i = id / N % N, j = id % N, ri = g * N + i, rj = g * N + j;
  float s = 0.0f, dp = 0.0f;
  for (int c = 0; c < D; c++) {
    s += rq[ri * D + c] * rk[rj * D + c];
    dp += go[ri * D + c] * v[rj * D + c];
  }
  const float p = expf(s * scale - lse[ri]);
  P[id] = p;
  dS[id] = p * (dp - dl[ri]) * scale;
}
// y[g][i][c] = sum_j M[g][i][j] x[g][j][c], or with M transposed (sum over the first index).
__global__ void v3_mm(const float* M, const float* x, float* y, int G, int N, int D, bool trans) {
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= (int64_t)G * N * D) return;
  const int64_t g = id / ((int64_t)N * D), i = id / D % N, c = id % D;
  const float* m = M + g * N * N;
  float s = 0.0f;
  for (int j = 0; j < N; j++) s += (trans ? m[(int64_t)j * N + i] : m[(int64_t)i * N + j]) * x[(g * N + j) * D + c];
  y[id] = s;
}

// ---- 5. forward on tensor cores (FlashAttention-2's forward, bf16 in,
// float32 accumulate): the production kernels of
// kernels/cuda/attention_softmax_tc.cu, which `--precision bf16` runs.
// Versions 2 and 4 spend a scalar FMA per product; an mma.sync m16n8k16 does
// 2048 of them in one warp instruction. First q and k are rotated and q, k, v
// rounded to bf16 (cuda::softmax_rope_bf16, one pass). Then a block of 4 warps
// owns 64 queries, a warp 16 of them (its A fragments of rq, held in
// registers for the whole run), and walks the keys 64 at a time:
//   S (16 x 64) = rq rk^T      D/16 x 8 mma.sync, rk tile read by ldmatrix
//   online softmax on S        in float32 registers: a lane holds rows g and
//                              g + 8 (lane = 4 g + t), so a row's max is a
//                              max over the lane's values and two shuffles
//                              within its quad; exp2f of s log2(e) / sqrt(D)
//   O (16 x D) += P V          the S accumulators, rounded to bf16 pairs,
//                              are already P's A fragments (C and A layouts
//                              agree); v tile read by ldmatrix.trans
// The rk and v tiles come in by cp.async, two buffers: tile t + 1 is in
// flight while tile t is used. Shared rows are D + 8 bf16 (16 bytes more
// than a row): the 8 rows an ldmatrix reads fall in 8 different bank groups.
// Keys past N are zero-filled and their scores set to -inf before the max;
// query rows past N compute on zeros and are not written.
// Rounding q, k, v and P to bf16 (8 significant bits) costs accuracy:
// about 1e-2 relative on o, so it is checked with its own, wider tolerance.
// Head dims 16, 32, 64 and 128; at another D the version runs version 2 and
// says so.
//
// ---- 6. backward on tensor cores (FlashAttention-2's backward):
// cuda::softmax_attention_backward_tc. The same first pass, and dO rounded
// to bf16 with Dl = dO . o (float32) in a second; then two kernels that
// recompute the scores tile by tile from lse, as version 4 does:
//   dq     a warp owns 16 queries: S = Q K^T and dP = dO V^T (two products
//          from A fragments in registers), dS = P (dP - Dl) / sqrt(D) in
//          registers, dQ += dS K with dS's accumulators as A fragments
//   dk, dv a warp owns 16 keys: S^T = K Q^T, P^T; dV += P^T dO; dP^T = V
//          dO^T, dS^T; dK += dS^T Q
// (no atomics: dq and dk/dv are separate passes, every sum in a fixed
// order). The RoPE transpose of dq and dk is applied to the accumulators as
// they are stored. Head dims 16, 32, 64 (another D runs version 4).
bool v5_supported(int64_t D) { return cuda::softmax_attention_tc_supported(D) || D == 128; }

std::vector<float> to_float(const std::vector<__nv_bfloat16>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); i++) y[i] = __bfloat162float(x[i]);
  return y;
}

// Version 5's reference: softmax attention in double on its bf16 operands (rope already applied).
void reference_bf16(const std::vector<__nv_bfloat16>& rq16, const std::vector<__nv_bfloat16>& rk16,
                    const std::vector<__nv_bfloat16>& v16, std::vector<float>& o, std::vector<float>& lse, int64_t G,
                    int64_t N, int64_t D) {
  const std::vector<float> rq = to_float(rq16), rk = to_float(rk16), v = to_float(v16);
  o.assign(rq.size(), 0.0f);
  lse.assign((size_t)(G * N), 0.0f);
  const double scale = 1.0 / std::sqrt((double)D);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < G * N; r++) {
    const int64_t g0 = r / N * N;
    std::vector<double> p((size_t)N), acc((size_t)D, 0.0);
    double m = -INFINITY, l = 0.0;
    for (int64_t j = 0; j < N; j++) {
      double s = 0.0;
      for (int64_t c = 0; c < D; c++) s += (double)rq[r * D + c] * rk[(g0 + j) * D + c];
      p[j] = s * scale;
      m = std::max(m, p[j]);
    }
    for (int64_t j = 0; j < N; j++) {
      p[j] = std::exp(p[j] - m);
      l += p[j];
      for (int64_t c = 0; c < D; c++) acc[c] += p[j] * v[(g0 + j) * D + c];
    }
    for (int64_t c = 0; c < D; c++) o[r * D + c] = (float)(acc[c] / l);
    lse[r] = (float)(m + std::log(l));
  }
}

// Version 6's reference, in double on the same operands: rq, rk, v and the
// rounded go16 as version 6 rounds them, o and lse of version 5's reference
// (the scores of the rounded operands), Dl = go16 . o (as version 6 makes
// it); dq and dk through the RoPE transpose of cpu::rope2d_backward.
void reference_bf16_backward(const std::vector<__nv_bfloat16>& rq16, const std::vector<__nv_bfloat16>& rk16,
                             const std::vector<__nv_bfloat16>& v16, const std::vector<float>& go,
                             const std::vector<float>& o, const std::vector<float>& lse, std::vector<float>& dq,
                             std::vector<float>& dk, std::vector<float>& dv, int64_t G, int64_t H, int64_t W,
                             int64_t D) {
  const int64_t N = H * W, n = G * N * D;
  const std::vector<float> rq = to_float(rq16), rk = to_float(rk16), v = to_float(v16);
  std::vector<float> go16(go.size());
  for (size_t i = 0; i < go.size(); i++) go16[i] = __bfloat162float(__float2bfloat16_rn(go[i]));
  std::vector<float> drq(n), drk(n);
  dv.assign(n, 0.0f);
  const double scale = 1.0 / std::sqrt((double)D);
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < G; g++) {
    const int64_t b = g * N;
    std::vector<double> aq((size_t)(N * D), 0.0), ak((size_t)(N * D), 0.0), av((size_t)(N * D), 0.0);
    for (int64_t i = 0; i < N; i++) {
      double dl = 0.0;
      for (int64_t c = 0; c < D; c++) dl += (double)go16[(b + i) * D + c] * o[(b + i) * D + c];
      for (int64_t j = 0; j < N; j++) {
        double s = 0.0, dp = 0.0;
        for (int64_t c = 0; c < D; c++) {
          s += (double)rq[(b + i) * D + c] * rk[(b + j) * D + c];
          dp += (double)go16[(b + i) * D + c] * v[(b + j) * D + c];
        }
        const double p = std::exp(s * scale - lse[b + i]), ds = p * (dp - dl) * scale;
        for (int64_t c = 0; c < D; c++) {
          aq[i * D + c] += ds * rk[(b + j) * D + c];
          ak[j * D + c] += ds * rq[(b + i) * D + c];
          av[j * D + c] += p * go16[(b + i) * D + c];
        }
      }
    }
    for (int64_t e = 0; e < N * D; e++)
      drq[b * D + e] = (float)aq[e], drk[b * D + e] = (float)ak[e], dv[b * D + e] = (float)av[e];
  }
  dq.resize(n), dk.resize(n);
  cpu::rope2d_backward(drq.data(), dq.data(), G, H, W, D);
  cpu::rope2d_backward(drk.data(), dk.data(), G, H, W, D);
}

// atol for a bf16 version: a fraction of the reference's largest magnitude.
double scaled_atol(const std::vector<float>& ref, double frac) {
  double m = 0.0;
  for (float x : ref) m = std::max(m, (double)std::fabs(x));
  return frac * m;
}

struct Config {
  int64_t G, H, W, D;
  bool zero_rows;
};

int run_config(const Config& cf, const lab::Options& opt) {
  const int64_t G = cf.G, H = cf.H, W = cf.W, D = cf.D, N = H * W, n = G * N * D;
  const float scale = 1.0f / std::sqrt((float)D);
  std::vector<float> qh(n), kh(n), vh(n), goh(n);
  lab::fill_normal(qh, 1, 1.5f);  // scores of std ~2: the max subtraction matters
  lab::fill_normal(kh, 2, 1.5f);
  lab::fill_normal(vh, 3, 1.0f);
  lab::fill_normal(goh, 4, 1.0f);
  if (cf.zero_rows)
    for (int64_t r = 0; r < G * N; r++)
      for (int64_t e = 0; e < D; e++) {
        if (r % N % 5 == 0) qh[r * D + e] = 0.0f;
        if (r % N % 4 == 1) kh[r * D + e] = 0.0f;
        if (r % N % 3 == 2) vh[r * D + e] = 0.0f;
      }
  // The reference: kernels/cpu's naive kernels (double) at the default sizes, its production
  // kernels (threaded; held to the naive ones by the CPU tests) with --size.
  std::vector<float> o_ref(n), lse_ref(G * N), dq_ref(n), dk_ref(n), dv_ref(n);
  auto fwd_ref = opt.size ? cpu::softmax_attention_forward : cpu::softmax_attention_forward_naive;
  auto bwd_ref = opt.size ? cpu::softmax_attention_backward : cpu::softmax_attention_backward_naive;
  fwd_ref(qh.data(), kh.data(), vh.data(), o_ref.data(), lse_ref.data(), G, H, W, D);
  bwd_ref(qh.data(), kh.data(), vh.data(), o_ref.data(), lse_ref.data(), goh.data(), dq_ref.data(), dk_ref.data(),
          dv_ref.data(), G, H, W, D);

  lab::DeviceArray<float> q(qh), k(kh), v(vh), go(goh), o_in(o_ref), lse_in(lse_ref);
  lab::DeviceArray<float> o(n), lse(G * N), dq(n), dk(n), dv(n), rq(n), rk(n), dl(G * N);
  const bool naive = opt.version == 0 || opt.version == 1 || opt.version == 3;
  lab::DeviceArray<float> P(naive ? G * N * N : 1), dS(naive ? G * N * N : 1);
  lab::DeviceArray<__nv_bfloat16> hq(n), hk(n), hv(n);  // version 5: rope(q), rope(k), v in bf16
  const bool tc = v5_supported(D);

  lab::Task fwd, bwd;
  fwd.name = "forward";
  fwd.flops = 4.0 * G * N * N * D;
  fwd.bytes = 16.0 * n + 4.0 * G * N;
  fwd.clear = [&] { o.poison(), lse.poison(); };
  fwd.check = [&] {  // the GPU kernels' contract (tests/test_cuda_attention.cpp)
    const auto og = o.download(), lg = lse.download();
    return lab::both(lab::compare("o", og.data(), o_ref.data(), n, 1e-4, 1e-3),
                     lab::compare("lse", lg.data(), lse_ref.data(), G * N, 1e-4, 1e-4));
  };
  bwd.name = "backward";
  bwd.flops = 10.0 * G * N * N * D;
  bwd.bytes = 32.0 * n + 4.0 * G * N;
  bwd.clear = [&] { dq.poison(), dk.poison(), dv.poison(); };
  bwd.check = [&] {
    const auto a = dq.download(), b = dk.download(), c = dv.download();
    return lab::both(lab::compare("dq", a.data(), dq_ref.data(), n, 1e-4, 1e-3),
                     lab::both(lab::compare("dk", b.data(), dk_ref.data(), n, 1e-4, 1e-3),
                               lab::compare("dv", c.data(), dv_ref.data(), n, 1e-4, 1e-3)));
  };

  // Version 5 rounds rope(q), rope(k) and v to bf16, as gemm_cuda's bf16 versions round A
  // and B; its reference is the same math, in double, on those rounded operands (the ones
  // cuda::softmax_rope_bf16 made in a first run: it is deterministic), so what is left to tolerate is
  // P rounded to bf16 (2^-9 of each weight) and float accumulation: o to 4e-3 + 1e-2 |o|,
  // lse as tightly as the float versions. The operands themselves are held to the CPU's
  // rope (cpu::rope2d_forward) within bf16 rounding. (Against the float reference the bf16
  // scores alone would move lse by ~1e-2: a tolerance that hides a mask or scale error at
  // large N.) Skipped when version 5 does not run.
  std::vector<float> rq_ref(n), rk_ref(n), o16_ref, lse16_ref, dq16_ref, dk16_ref, dv16_ref;
  lab::Task fwd16 = fwd, bwd16 = bwd;
  const bool tc_runs = tc && (opt.version == 0 || opt.version == 5);
  const bool tc6 = cuda::softmax_attention_tc_supported(D), tc6_runs = tc6 && (opt.version == 0 || opt.version == 6);
  if (tc_runs || tc6_runs) {
    cpu::rope2d_forward(qh.data(), rq_ref.data(), G, H, W, D);
    cpu::rope2d_forward(kh.data(), rk_ref.data(), G, H, W, D);
    cuda::softmax_rope_bf16(q, k, v, hq, hk, hv, G, H, W, D);
    LAB_CUDA(cudaGetLastError());
    reference_bf16(hq.download(), hk.download(), hv.download(), o16_ref, lse16_ref, G, N, D);
    fwd16.check = [&] {
      const auto og = o.download(), lg = lse.download();
      auto operand = [&](const char* name, const lab::DeviceArray<__nv_bfloat16>& x, const std::vector<float>& ref) {
        const std::vector<float> xf = to_float(x.download());
        return lab::compare(name, xf.data(), ref.data(), n, 1e-6, 1.0 / 256);
      };
      return lab::both(lab::both(operand("bf16 rope(q)", hq, rq_ref),
                                 lab::both(operand("bf16 rope(k)", hk, rk_ref), operand("bf16 v", hv, vh))),
                       lab::both(lab::compare("o", og.data(), o16_ref.data(), n, 4e-3, 1e-2),
                                 lab::compare("lse", lg.data(), lse16_ref.data(), G * N, 1e-4, 1e-4)));
    };
  }
  // Version 6 takes version 5's reference o and lse as its inputs; its reference is the
  // same math in double (reference_bf16_backward). Left to tolerate: P and dS rounded to
  // bf16 on their way into the second products, 1% of the largest |value| of each output.
  lab::DeviceArray<float> o16_in(tc6_runs ? o16_ref : o_ref), lse16_in(tc6_runs ? lse16_ref : lse_ref);
  if (tc6_runs) {
    reference_bf16_backward(hq.download(), hk.download(), hv.download(), goh, o16_ref, lse16_ref, dq16_ref, dk16_ref,
                            dv16_ref, G, H, W, D);
    bwd16.check = [&] {
      const auto a = dq.download(), b = dk.download(), c = dv.download();
      return lab::both(lab::compare("dq", a.data(), dq16_ref.data(), n, scaled_atol(dq16_ref, 1e-2), 1e-2),
                       lab::both(lab::compare("dk", b.data(), dk16_ref.data(), n, scaled_atol(dk16_ref, 1e-2), 1e-2),
                                 lab::compare("dv", c.data(), dv16_ref.data(), n, scaled_atol(dv16_ref, 1e-2), 1e-2)));
    };
  }

  const float *pq = q, *pk = k, *pv = v, *pgo = go, *poi = o_in, *plsei = lse_in, *po16 = o16_in,
              *plse16 = lse16_in;
  float *po = o, *plse = lse, *pdq = dq, *pdk = dk, *pdv = dv, *prq = rq, *prk = rk, *pdl = dl, *pP = P, *pdS = dS;
  const int iG = (int)G, iN = (int)N, iD = (int)D;
  __nv_bfloat16 *phq = hq, *phk = hk, *phv = hv;
  const int64_t NN = G * N * N;
  std::vector<lab::GpuVersion> vs = {
      {"fwd naive: N x N scores in memory", 0, lab::Unit::fp32, 0,
       [=] {
         cuda::rope2d_forward(pq, prq, G, H, W, D);
         cuda::rope2d_forward(pk, prk, G, H, W, D);
         v1_scores<<<lab::blocks_for(NN, kBlock), kBlock>>>(prq, prk, pP, iG, iN, iD, scale);
         v1_softmax_rows<<<lab::blocks_for(G * N, kBlock), kBlock>>>(pP, plse, G * N, iN);
         v1_pv<<<lab::blocks_for(n, kBlock), kBlock>>>(pP, pv, po, iG, iN, iD);
       }},
      {"fwd online softmax, flash (production)", 0, lab::Unit::fp32, 0,
       [=] { cuda::softmax_attention_forward(pq, pk, pv, po, plse, G, H, W, D); }},
      {"bwd naive: P and dS in memory", 1, lab::Unit::fp32, 0,
       [=] {
         cuda::rope2d_forward(pq, prq, G, H, W, D);
         cuda::rope2d_forward(pk, prk, G, H, W, D);
         v3_dl<<<lab::blocks_for(G * N, kBlock), kBlock>>>(pgo, poi, pdl, G * N, iD);
         v3_p_ds<<<lab::blocks_for(NN, kBlock), kBlock>>>(prq, prk, pv, pgo, plsei, pdl, pP, pdS, iG, iN, iD, scale);
         v3_mm<<<lab::blocks_for(n, kBlock), kBlock>>>(pdS, prk, pdq, iG, iN, iD, false);
         v3_mm<<<lab::blocks_for(n, kBlock), kBlock>>>(pdS, prq, pdk, iG, iN, iD, true);
         v3_mm<<<lab::blocks_for(n, kBlock), kBlock>>>(pP, pgo, pdv, iG, iN, iD, true);
         cuda::rope2d_backward(pdq, pdq, G, H, W, D);
         cuda::rope2d_backward(pdk, pdk, G, H, W, D);
       }},
      {"bwd online, flash (production)", 1, lab::Unit::fp32, 0,
       [=] { cuda::softmax_attention_backward(pq, pk, pv, poi, plsei, pgo, pdq, pdk, pdv, G, H, W, D); }},
      {"fwd tensor cores: bf16 mma.sync, flash", tc ? 2 : 0, tc ? lab::Unit::bf16 : lab::Unit::fp32, 80,
       [=] {
         if (!tc) return cuda::softmax_attention_forward(pq, pk, pv, po, plse, G, H, W, D);  // version 2
         cuda::softmax_rope_bf16(pq, pk, pv, phq, phk, phv, G, H, W, D);
         cuda::softmax_flash_forward_bf16(phq, phk, phv, po, plse, G, N, D);
       }},
      {"bwd tensor cores: bf16 mma.sync, flash", tc6 ? 3 : 1, tc6 ? lab::Unit::bf16 : lab::Unit::fp32, 80,
       [=] {
         if (!tc6)  // version 4
           return cuda::softmax_attention_backward(pq, pk, pv, poi, plsei, pgo, pdq, pdk, pdv, G, H, W, D);
         cuda::softmax_attention_backward_tc(pq, pk, pv, po16, plse16, pgo, pdq, pdk, pdv, G, H, W, D);
       }},
  };
  char desc[200];
  std::snprintf(desc, sizeof desc, "softmax attention, G = %lld problems of N = %lld x %lld tokens, D = %lld%s%s",
                (long long)G, (long long)H, (long long)W, (long long)D,
                tc6 ? "" : tc ? " (version 6 has no kernel for this D: it runs version 4)"
                          : " (versions 5 and 6 have no kernel for this D: they run versions 2 and 4)",
                cf.zero_rows ? ", zero rows in q, k, v" : "");
  return lab::run_gpu("softmax_attention_cuda", desc, {fwd, bwd, fwd16, bwd16}, vs, opt);
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: softmax_attention_cuda [VERSION] [--size S] [--check] [--csv] [--min-time S]\n"
      "  softmax attention: default G = 3, H x W = 5 x 7, D = 64 (--check: also D = 16, 36, zero rows,\n"
      "  and N = 143, 135 at D = 32, 128);\n"
      "  --size S: G = 16, H = W = S, D = 64 (docs/kernels.md times S = 28)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  std::vector<Config> cfs = {{3, 5, 7, 64, false}};
  if (opt.size) cfs = {{16, opt.size, opt.size, 64, false}};
  if (opt.check_only && !opt.size)  // N = 143 and 135: three key tiles of version 5, the last one partial
    cfs.insert(cfs.end(), {{2, 3, 3, 16, false}, {2, 9, 7, 36, false}, {3, 7, 5, 64, true}, {2, 13, 11, 32, false},
                           {2, 9, 15, 128, true}});
  int status = 0;
  for (const Config& cf : cfs) status = std::max(status, run_config(cf, opt));
  return status;
}
