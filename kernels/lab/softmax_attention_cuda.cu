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
//     --check also runs D = 16 and 36 and a problem with zero rows in q, k, v;
//     --size S: G = 16, H = W = S, D = 64 (docs/kernels.md times S = 28: N = 784)
//
// Versions (forward 1-2, backward 3-4):
//   1  forward, naive    rope, the N x N scores to memory, a softmax pass per row, o = P V
//   2  forward, online   cuda::softmax_attention_forward (kernels/cuda/attention_softmax.cu):
//                        key tiles in shared memory, a running max and sum per row, nothing N x N
//   3  backward, naive   P and dS (N x N) to memory, then dq, dk, dv as sums over them
//   4  backward, online  cuda::softmax_attention_backward: scores recomputed tile by tile from lse
// GFLOP/s count the four (forward: q k^T, P v) and ten (backward) N^2 D
// products; GB/s the least traffic (forward q, k, v read, o and lse written;
// backward q, k, v, o, dO, lse read, dq, dk, dv written). At these sizes the
// op is bound by arithmetic, not memory: the FP32 peak is the yardstick.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
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

  const float *pq = q, *pk = k, *pv = v, *pgo = go, *poi = o_in, *plsei = lse_in;
  float *po = o, *plse = lse, *pdq = dq, *pdk = dk, *pdv = dv, *prq = rq, *prk = rk, *pdl = dl, *pP = P, *pdS = dS;
  const int iG = (int)G, iN = (int)N, iD = (int)D;
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
  };
  char desc[200];
  std::snprintf(desc, sizeof desc, "softmax attention, G = %lld problems of N = %lld x %lld tokens, D = %lld%s",
                (long long)G, (long long)H, (long long)W, (long long)D, cf.zero_rows ? ", zero rows in q, k, v" : "");
  return lab::run_gpu("softmax_attention_cuda", desc, {fwd, bwd}, vs, opt);
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: softmax_attention_cuda [VERSION] [--size S] [--check] [--csv] [--min-time S]\n"
      "  softmax attention: default G = 3, H x W = 5 x 7, D = 64 (--check: also D = 16, 36 and zero rows);\n"
      "  --size S: G = 16, H = W = S, D = 64 (docs/kernels.md times S = 28)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  std::vector<Config> cfs = {{3, 5, 7, 64, false}};
  if (opt.size) cfs = {{16, opt.size, opt.size, 64, false}};
  if (opt.check_only && !opt.size) cfs.insert(cfs.end(), {{2, 3, 3, 16, false}, {2, 9, 7, 36, false}, {3, 7, 5, 64, true}});
  int status = 0;
  for (const Config& cf : cfs) status = std::max(status, run_config(cf, opt));
  return status;
}
