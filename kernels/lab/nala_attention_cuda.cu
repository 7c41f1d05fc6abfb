// kernels/lab/nala_attention_cuda.cu - the NaLa attention lab, CUDA: from the
// N x N attention matrix the math implies to the production tensor-core
// kernels. Math and CPU versions: kernels/lab/nala_attention.cpp (same
// letters: G problems, N = H W tokens, head dim D, F = 2D features);
// walkthrough: docs/kernels.md; harness: kernels/lab/lab_cuda.cuh.
//
//   build/release/lab/nala_attention_cuda [VERSION] [--size S] [--check] [--csv] [--min-time S]
//     default G = 3, H x W = 7 x 9 (N = 63: odd, below every kernel's block of tokens), D = 64;
//     --check also runs D = 16, 32 and 48, and a problem with zero rows in q, k and v;
//     --size S: G = 128, H = W = S, D = 64 (docs/kernels.md times S = 56: (128, 1, 3136, 64))
//
// Versions (forward 1-4, backward 5-7):
//   1  forward, quadratic     features to global memory, the N x N matrix A, o = A V
//   2  forward, two-pass      features to global memory, S = RK^T V / N by a thread per
//                             element of S, o = z RQ S by a thread per element of o
//   3  forward, fused         one kernel per pass, features made on chip, float32 FMA
//                             (kernels/cuda/attention_nala_v1.cu, the production path for d
//                             other than 16, 32, 64)
//   4  forward, tensor cores  the production kernels (kernels/cuda/attention_nala.cu)
//   5  backward, two-pass     a thread per token for dq, a thread per element of dS, a thread
//                             per token for dk and dv
//   6  backward, fused        attention_nala_v1.cu's backward
//   7  backward, tensor cores attention_nala.cu's backward (production)
//   8  forward, bf16 arrays   version 4's kernels reading and writing bf16 q, k, v, o
//   9  backward, bf16 arrays  version 7's kernels on bf16 q, k, v, dO, dq, dk, dv (the
//                             products whose operand is a bf16 input take 2 passes, not 3)
//  10  forward, one pass      version 8 with every product in one tensor-core pass (bf16
//                             for S and o; the state product from token-major tiles by
//                             ldmatrix.trans): one_pass = true, what autograd's op runs on bf16
//  11  backward, one pass     version 9 likewise (tf32 for dO S^T, bf16 for dS, dv, drk)
// Versions 3, 4, 6-11 are called through kernels/cuda/attention.h, the code
// that trains the models. GB/s count the least traffic: q, k, v read and o
// written (forward, 16 G N D bytes; 8 in bf16), q, k, v, dO read and dq, dk,
// dv written (backward, 28 G N D bytes; 14 in bf16). Versions 8 and 9 are
// checked against the CPU's bf16 op on the same rounded inputs, within the
// float32 tolerance plus one bf16 step (2^-7 relative); versions 10 and 11
// normwise against the same reference (each output within 1.5e-2 of it in
// ||error|| / ||reference|| and 2.5e-2 of its largest value everywhere:
// three times what tests/reference/nala_product_precision.py's emulation of
// one-pass products measured); GFLOP/s count 8 G N D^2 (forward) and
// 16 G N D^2 (backward), the state form's products, for every version.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/rope.h"
#include "kernels/lab/lab_cuda.cuh"
#include "tensor/bf16.h"
#include "tensor/rng.h"

using namespace nala;

namespace {

constexpr float kNormFloor = 1e-12f;  // the value the NaLa op passes (autograd/ops.h)
constexpr float kZEps = 1e-6f;
constexpr int kMaxF = 256;  // F for D <= 128
constexpr int kBlock = 256;

// Rotate both D-halves of a feature vector by the token's angles (sign = -1: rotate back).
__device__ void rope_feat(const float* x, float* y, const float* sn, const float* cs, int D, float sign) {
  for (int h = 0; h < 2 * D; h += D)
    for (int e = 0; e < D; e += 2) {
      const float x0 = x[h + e], x1 = x[h + e + 1];
      y[h + e] = x0 * cs[e] - sign * x1 * sn[e];
      y[h + e + 1] = x1 * cs[e + 1] + sign * x0 * sn[e + 1];
    }
}

// The query side of one token: fq = u^p with u = [q]+ / n, [-q]+ / n (docs/SPEC.md §2.1).
struct QRow {
  float norm, n, p, th;
};
__device__ QRow query_row(const float* q, float* fq, int D, float floor) {
  QRow s;
  float ss = 0.0f;
  for (int e = 0; e < D; e++) ss += q[e] * q[e];
  s.norm = sqrtf(ss);
  s.n = fmaxf(s.norm, floor);
  s.th = tanhf(s.n);
  s.p = 3.0f * (0.5f + s.th);
  for (int e = 0; e < D; e++) {
    const float u = fabsf(q[e]) / s.n, f = u > 0.0f ? powf(u, s.p) : 0.0f;
    fq[e] = q[e] > 0.0f ? f : 0.0f;
    fq[D + e] = q[e] < 0.0f ? f : 0.0f;
  }
  return s;
}

// ---- shared by versions 1, 2 and 5: the feature maps, a thread per token, into global memory.

// fk = [k^3]+, [-k^3]+ and rk = rope(fk), (G, N, F) each.
__global__ void key_features(const float* k, const float* sn, const float* cs, float* fk, float* rk, int64_t GN,
                             int N, int D) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= GN) return;
  const int F = 2 * D, j = (int)(r % N);
  float* f = fk + r * F;
  for (int e = 0; e < D; e++) {
    const float x = k[r * D + e], kc = x * x * x;
    f[e] = fmaxf(kc, 0.0f);
    f[D + e] = fmaxf(-kc, 0.0f);
  }
  rope_feat(f, rk + r * F, sn + (int64_t)j * D, cs + (int64_t)j * D, D, 1.0f);
}

// out[g][a] = scale * sum over tokens of x[g][n][a]: a thread per (g, a), tokens in order.
__global__ void token_sum(const float* x, float* out, int G, int N, int F, float scale) {
  const int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= G * F) return;
  const int g = id / F, a = id % F;
  float s = 0.0f;
  for (int n = 0; n < N; n++) s += x[((int64_t)g * N + n) * F + a];
  out[id] = s * scale;
}

// rq = rope(fq) (G, N, F) and z = 1 / (fq . kmean + eps) (G, N).
__global__ void query_features(const float* q, const float* sn, const float* cs, const float* km, float* rq,
                               float* z, int64_t GN, int N, int D, float floor) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= GN) return;
  const int F = 2 * D, i = (int)(r % N);
  float fq[kMaxF];
  query_row(q + r * D, fq, D, floor);
  const float* m = km + (r / N) * F;
  float den = kZEps;
  for (int a = 0; a < F; a++) den += fq[a] * m[a];
  z[r] = 1.0f / den;
  rope_feat(fq, rq + r * F, sn + (int64_t)i * D, cs + (int64_t)i * D, D, 1.0f);
}

// ---- 1. forward, quadratic: the definition, o_i = sum_j A_ij v_j with
// A_ij = z_i (rq_i . rk_j) / N. The features go to global memory, then a
// thread per (g, i, j) writes A (G N^2 floats: 5 GB at N = 3136, G = 128) and
// a thread per (g, i, c) reads a row of it back. O(N^2 F) work and O(N^2)
// memory: what a linear attention exists to avoid, kept as the check that
// associativity (version 2 on) changes nothing.
__global__ void v1_scores(const float* rq, const float* rk, const float* z, float* A, int G, int N, int F) {
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= (int64_t)G * N * N) return;
  const int64_t g = id / ((int64_t)N * N), i = id / N % N, j = id % N;
  const float *x = rq + (g * N + i) * F, *y = rk + (g * N + j) * F;
  float s = 0.0f;
  for (int a = 0; a < F; a++) s += x[a] * y[a];
  A[id] = z[g * N + i] * s / (float)N;
}
__global__ void v1_av(const float* A, const float* v, float* o, int G, int N, int D) {
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= (int64_t)G * N * D) return;
  const int64_t g = id / ((int64_t)N * D), i = id / D % N, c = id % D;
  const float* a = A + (g * N + i) * N;
  float s = 0.0f;
  for (int j = 0; j < N; j++) s += a[j] * v[(g * N + j) * D + c];
  o[id] = s;
}

// ---- 2. forward, two-pass state form: o_i = z_i rq_i S with
// S = (1/N) sum_j rk_j^T v_j (F x D), by associativity: O(N F D) work, linear
// in N. Still one simple kernel per step with the features in global memory
// (rk and rq are each twice the size of k): a thread per element of S runs
// over the N tokens (its warp reads one rk value, broadcast, and 32
// consecutive v values: coalesced), a thread per element of o runs over the
// F features. About 8x the least traffic, and the state pass has only
// G F D threads (1M at the timed size) for N-long loops.
__global__ void v2_state(const float* rk, const float* v, float* S, int G, int N, int D) {
  const int F = 2 * D;
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= (int64_t)G * F * D) return;
  const int64_t g = id / ((int64_t)F * D), a = id / D % F, c = id % D;
  float s = 0.0f;
  for (int j = 0; j < N; j++) s += rk[(g * N + j) * F + a] * v[(g * N + j) * D + c];
  S[id] = s / (float)N;
}
__global__ void v2_out(const float* rq, const float* z, const float* S, float* o, int G, int N, int D) {
  const int F = 2 * D;
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= (int64_t)G * N * D) return;
  const int64_t g = id / ((int64_t)N * D), i = id / D % N, c = id % D;
  const float *x = rq + (g * N + i) * F, *s = S + g * F * D + c;
  float acc = 0.0f;
  for (int a = 0; a < F; a++) acc += x[a] * s[(int64_t)a * D];
  o[id] = z[g * N + i] * acc;
}

// ---- 5. backward, two-pass: the chain rule of docs/SPEC.md §2 as
// cpu::nala_attention_backward_naive, one thread per token with its feature
// vectors in local memory. Per query: w = S go, dz = rq . w, dden = -z^2 dz,
// dfq = rope^T(z w) + dden kmean, then through u^p and the norm to dq; z rq
// (for dS) and dden fq (for dkmean) go to global memory. Then dS = sum_i
// z_i rq_i^T go_i by a thread per element, dkmean by token sums, and per key
// drk = dS v / N, dv = rk dS / N, dk through the cube.
__global__ void v5_query(const float* q, const float* go, const float* S, const float* km, const float* sn,
                         const float* cs, float* dq, float* zrq, float* ddf, int64_t GN, int N, int D, float floor) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= GN) return;
  const int F = 2 * D, i = (int)(r % N);
  const float *qi = q + r * D, *gi = go + r * D, *Sg = S + (r / N) * F * D, *m = km + (r / N) * F;
  float fq[kMaxF], rq[kMaxF], w[kMaxF], dfq[kMaxF];
  const QRow s = query_row(qi, fq, D, floor);
  const float *sni = sn + (int64_t)i * D, *csi = cs + (int64_t)i * D;
  rope_feat(fq, rq, sni, csi, D, 1.0f);
  float den = kZEps, dz = 0.0f;
  for (int a = 0; a < F; a++) {
    den += fq[a] * m[a];
    float x = 0.0f;
    for (int c = 0; c < D; c++) x += Sg[a * D + c] * gi[c];
    w[a] = x;
    dz += rq[a] * x;
  }
  const float z = 1.0f / den, dden = -z * z * dz;
  for (int a = 0; a < F; a++) {
    zrq[r * F + a] = z * rq[a];
    ddf[r * F + a] = dden * fq[a];
    w[a] *= z;  // drq
  }
  rope_feat(w, dfq, sni, csi, D, -1.0f);
  float dp = 0.0f, dnu = 0.0f;  // dp = sum dfq fq ln u; dnu = sum dfq p fq (= sum du u)
  for (int a = 0; a < F; a++) {
    dfq[a] += dden * m[a];
    const float x = qi[a % D], u = (a < D ? fmaxf(x, 0.0f) : fmaxf(-x, 0.0f)) / s.n;
    if (u > 0.0f) {
      dp += dfq[a] * fq[a] * logf(u);
      dnu += dfq[a] * s.p * fq[a];
    }
  }
  const float dn = dp * 3.0f * (1.0f - s.th * s.th) - dnu / s.n;
  for (int e = 0; e < D; e++) {  // du / n with du = dfq p fq / u: dfq p fq / |q| on the active half
    const float x = qi[e];
    float g = 0.0f;
    if (x > 0.0f) g += dfq[e] * s.p * fq[e] / x;
    if (x < 0.0f) g += dfq[D + e] * s.p * fq[D + e] / x;
    if (s.norm > floor) g += dn * x / s.norm;
    dq[r * D + e] = g;
  }
}
// dS[g][a][c] = sum_i zrq[g][i][a] go[g][i][c] (not yet divided by N).
__global__ void v5_dstate(const float* zrq, const float* go, float* dS, int G, int N, int D) {
  const int F = 2 * D;
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= (int64_t)G * F * D) return;
  const int64_t g = id / ((int64_t)F * D), a = id / D % F, c = id % D;
  float s = 0.0f;
  for (int i = 0; i < N; i++) s += zrq[(g * N + i) * F + a] * go[(g * N + i) * D + c];
  dS[id] = s;
}
__global__ void v5_key(const float* k, const float* v, const float* dS, const float* dkm, const float* sn,
                       const float* cs, float* dk, float* dv, int64_t GN, int N, int D) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= GN) return;
  const int F = 2 * D, j = (int)(r % N);
  const float *kj = k + r * D, *vj = v + r * D, *dSg = dS + (r / N) * F * D, *dm = dkm + (r / N) * F;
  const float *snj = sn + (int64_t)j * D, *csj = cs + (int64_t)j * D, invN = 1.0f / (float)N;
  float fk[kMaxF], rk[kMaxF], drk[kMaxF], dfk[kMaxF];
  for (int e = 0; e < D; e++) {
    const float kc = kj[e] * kj[e] * kj[e];
    fk[e] = fmaxf(kc, 0.0f);
    fk[D + e] = fmaxf(-kc, 0.0f);
  }
  rope_feat(fk, rk, snj, csj, D, 1.0f);
  for (int a = 0; a < F; a++) {
    float x = 0.0f;
    for (int c = 0; c < D; c++) x += dSg[a * D + c] * vj[c];
    drk[a] = x * invN;
  }
  for (int c = 0; c < D; c++) {
    float x = 0.0f;
    for (int a = 0; a < F; a++) x += rk[a] * dSg[a * D + c];
    dv[r * D + c] = x * invN;
  }
  rope_feat(drk, dfk, snj, csj, D, -1.0f);
  for (int e = 0; e < D; e++) {
    const float kc = kj[e] * kj[e] * kj[e];
    float g = 0.0f;
    if (kc > 0.0f) g += dfk[e] + dm[e] * invN;
    if (kc < 0.0f) g -= dfk[D + e] + dm[D + e] * invN;
    dk[r * D + e] = g * 3.0f * kj[e] * kj[e];
  }
}

struct Config {
  int64_t G, H, W, D;
  bool zero_rows;  // some rows of q, k and v all zero
};

int run_config(const Config& cf, const lab::Options& opt) {
  const int64_t G = cf.G, H = cf.H, W = cf.W, D = cf.D, N = H * W, F = 2 * D, n = G * N * D;
  std::vector<float> qh(n), kh(n), vh(n), goh(n);
  lab::fill_normal(qh, 1, 1.0f);
  lab::fill_normal(kh, 2, 0.9f);
  lab::fill_normal(vh, 3, 1.0f);
  lab::fill_normal(goh, 4, 1.0f);
  Rng rng(5);  // query norms spread over [0.4, 2.5]: exponents p from ~2.6 to ~4.5
  for (int64_t r = 0; r < G * N; r++) {
    float ss = 0, want = rng.uniform(0.4f, 2.5f);
    for (int64_t e = 0; e < D; e++) ss += qh[r * D + e] * qh[r * D + e];
    for (int64_t e = 0; e < D; e++) qh[r * D + e] *= want / std::sqrt(ss);
  }
  if (cf.zero_rows)  // q row 0 mod 5, k row 1 mod 4, v row 2 mod 3 of every problem
    for (int64_t r = 0; r < G * N; r++)
      for (int64_t e = 0; e < D; e++) {
        if (r % N % 5 == 0) qh[r * D + e] = 0.0f;
        if (r % N % 4 == 1) kh[r * D + e] = 0.0f;
        if (r % N % 3 == 2) vh[r * D + e] = 0.0f;
      }
  // The reference: kernels/cpu's naive kernels (double accumulation) at the default sizes,
  // its production kernels (threaded; held to the naive ones by the CPU tests) with --size,
  // where the naive ones would take minutes. Their S and kmean feed every backward version.
  std::vector<float> o_ref(n), S_ref(G * F * D), km_ref(G * F), dq_ref(n), dk_ref(n), dv_ref(n);
  decltype(&cpu::nala_attention_forward_naive) fwd_ref = cpu::nala_attention_forward_naive;
  decltype(&cpu::nala_attention_backward_naive) bwd_ref = cpu::nala_attention_backward_naive;
  if (opt.size) fwd_ref = cpu::nala_attention_forward, bwd_ref = cpu::nala_attention_backward;  // the f32 overloads
  fwd_ref(qh.data(), kh.data(), vh.data(), o_ref.data(), S_ref.data(), km_ref.data(), G, H, W, D, kNormFloor);
  bwd_ref(qh.data(), kh.data(), vh.data(), S_ref.data(), km_ref.data(), goh.data(), dq_ref.data(), dk_ref.data(),
          dv_ref.data(), G, H, W, D, kNormFloor);

  lab::DeviceArray<float> q(qh), k(kh), v(vh), go(goh), Sin(S_ref), kmin(km_ref);
  lab::DeviceArray<float> o(n), S(G * F * D), km(G * F), dq(n), dk(n), dv(n);
  // Workspace of versions 1, 2, 5: features (G, N, F), z (G, N), the scores (G, N, N) of
  // version 1 (only when it runs), dS and dkmean.
  const bool quad = opt.version == 0 || opt.version == 1;
  lab::DeviceArray<float> fk(G * N * F), rk(G * N * F), rq(G * N * F), z(G * N), A(quad ? G * N * N : 1);
  lab::DeviceArray<float> dS(G * F * D), dkm(G * F);
  const float *sn = nullptr, *cs = nullptr;
  cuda::rope_tables_device(H, W, D, &sn, &cs);

  // bf16 (versions 8, 9): the inputs rounded once, the CPU's bf16 op on them as the reference.
  auto to_bf16 = [](const std::vector<float>& x) {  // the cast op's CPU kernels
    std::vector<bf16_t> y(x.size());
    cpu::cast_f32_bf16(y.data(), x.data(), (int64_t)x.size());
    return y;
  };
  auto widen = [](const std::vector<bf16_t>& x) {
    std::vector<float> y(x.size());
    cpu::cast_bf16_f32(y.data(), x.data(), (int64_t)x.size());
    return y;
  };
  const std::vector<bf16_t> qb = to_bf16(qh), kb = to_bf16(kh), vb = to_bf16(vh), gob = to_bf16(goh);
  std::vector<bf16_t> ob_ref(n), dqb_ref(n), dkb_ref(n), dvb_ref(n);
  std::vector<float> Sb_ref(G * F * D), kmb_ref(G * F);
  cpu::nala_attention_forward(qb.data(), kb.data(), vb.data(), ob_ref.data(), Sb_ref.data(), kmb_ref.data(), G, H, W,
                              D, kNormFloor);
  cpu::nala_attention_backward(qb.data(), kb.data(), vb.data(), Sb_ref.data(), kmb_ref.data(), gob.data(),
                               dqb_ref.data(), dkb_ref.data(), dvb_ref.data(), G, H, W, D, kNormFloor);
  const std::vector<float> ob_f = widen(ob_ref), dqb_f = widen(dqb_ref), dkb_f = widen(dkb_ref),
                           dvb_f = widen(dvb_ref);
  lab::DeviceArray<bf16_t> qd(qb), kd(kb), vd(vb), god(gob), ob(n), dqb(n), dkb(n), dvb(n);
  lab::DeviceArray<float> Sbin(Sb_ref), kmbin(kmb_ref);
  const double rtol_b = 1e-3 + 1.0 / 128;

  lab::Task fwd, bwd;
  fwd.name = "forward";
  fwd.flops = 8.0 * G * N * D * D;
  fwd.bytes = 16.0 * n;
  fwd.clear = [&] { o.poison(); };
  // The GPU kernels' contract (tests/test_cuda_attention.cpp): 1e-4 + 1e-3 |ref|.
  fwd.check = [&] {
    const auto og = o.download();
    return lab::compare("o", og.data(), o_ref.data(), n, 1e-4, 1e-3);
  };
  bwd.name = "backward";
  bwd.flops = 16.0 * G * N * D * D;
  bwd.bytes = 28.0 * n;
  bwd.clear = [&] { dq.poison(), dk.poison(), dv.poison(); };
  bwd.check = [&] {
    const auto a = dq.download(), b = dk.download(), c = dv.download();
    return lab::both(lab::compare("dq", a.data(), dq_ref.data(), n, 1e-4, 1e-3),
                     lab::both(lab::compare("dk", b.data(), dk_ref.data(), n, 1e-4, 1e-3),
                               lab::compare("dv", c.data(), dv_ref.data(), n, 1e-4, 1e-3)));
  };

  const float *pq = q, *pk = k, *pv = v, *pgo = go, *pS = Sin, *pkm = kmin;
  float *po = o, *pSw = S, *pkmw = km, *pdq = dq, *pdk = dk, *pdv = dv, *pfk = fk, *prk = rk, *prq = rq, *pz = z,
        *pA = A, *pdS = dS, *pdkm = dkm;
  const int iN = (int)N, iD = (int)D, iF = (int)F, iG = (int)G;
  const int64_t GN = G * N;
  auto features = [=] {  // keys, kmean, queries: versions 1 and 2
    key_features<<<lab::blocks_for(GN, kBlock), kBlock>>>(pk, sn, cs, pfk, prk, GN, iN, iD);
    token_sum<<<lab::blocks_for(G * F, kBlock), kBlock>>>(pfk, pkmw, iG, iN, iF, 1.0f / (float)N);
    query_features<<<lab::blocks_for(GN, kBlock), kBlock>>>(pq, sn, cs, pkmw, prq, pz, GN, iN, iD, kNormFloor);
  };
  lab::Task fwd_b, bwd_b;
  fwd_b.name = "fwd bf16";  // the task column is 8 wide
  fwd_b.flops = fwd.flops;
  fwd_b.bytes = 8.0 * n;
  fwd_b.clear = [&] { ob.poison(); };
  fwd_b.check = [&] { return lab::compare("o", widen(ob.download()).data(), ob_f.data(), n, 1e-4, rtol_b); };
  bwd_b.name = "bwd bf16";
  bwd_b.flops = bwd.flops;
  bwd_b.bytes = 14.0 * n;
  bwd_b.clear = [&] { dqb.poison(), dkb.poison(), dvb.poison(); };
  bwd_b.check = [&] {
    return lab::both(lab::compare("dq", widen(dqb.download()).data(), dqb_f.data(), n, 1e-4, rtol_b),
                     lab::both(lab::compare("dk", widen(dkb.download()).data(), dkb_f.data(), n, 1e-4, rtol_b),
                               lab::compare("dv", widen(dvb.download()).data(), dvb_f.data(), n, 1e-4, rtol_b)));
  };
  lab::Task fwd_1 = fwd_b, bwd_1 = bwd_b;
  fwd_1.name = "fwd 1p";
  fwd_1.check = [&] { return lab::compare_normwise("o", widen(ob.download()).data(), ob_f.data(), n, kNalaOnePassBound); };
  bwd_1.name = "bwd 1p";
  bwd_1.check = [&] {
    auto cmp = [&](const char* what, lab::DeviceArray<bf16_t>& got, const std::vector<float>& ref) {
      return lab::compare_normwise(what, widen(got.download()).data(), ref.data(), n, kNalaOnePassBound);
    };
    return lab::both(cmp("dq", dqb, dqb_f), lab::both(cmp("dk", dkb, dkb_f), cmp("dv", dvb, dvb_f)));
  };
  const bf16_t *bq = qd.p, *bk = kd.p, *bv = vd.p, *bgo = god.p;
  bf16_t *bo = ob.p, *bdq = dqb.p, *bdk = dkb.p, *bdv = dvb.p;
  const float *pSb = Sbin.p, *pkmb = kmbin.p;

  std::vector<lab::GpuVersion> vs = {
      {"fwd quadratic: N x N scores in memory", 0, lab::Unit::fp32, 0,
       [=] {
         features();
         v1_scores<<<lab::blocks_for(G * N * N, kBlock), kBlock>>>(prq, prk, pz, pA, iG, iN, iF);
         v1_av<<<lab::blocks_for(n, kBlock), kBlock>>>(pA, pv, po, iG, iN, iD);
       }},
      {"fwd two-pass: features in memory", 0, lab::Unit::fp32, 0,
       [=] {
         features();
         v2_state<<<lab::blocks_for(G * F * D, kBlock), kBlock>>>(prk, pv, pSw, iG, iN, iD);
         v2_out<<<lab::blocks_for(n, kBlock), kBlock>>>(prq, pz, pSw, po, iG, iN, iD);
       }},
      {"fwd fused, FMA (attention_nala_v1)", 0, lab::Unit::fp32, 0,
       [=] { cuda::nala_attention_forward_v1(pq, pk, pv, po, pSw, pkmw, G, H, W, D, kNormFloor); }},
      {"fwd tensor cores (production)", 0, lab::Unit::tf32, 80,
       [=] { cuda::nala_attention_forward(pq, pk, pv, po, pSw, pkmw, G, H, W, D, kNormFloor); }},
      {"bwd two-pass: thread per token", 1, lab::Unit::fp32, 0,
       [=] {
         v5_query<<<lab::blocks_for(GN, kBlock), kBlock>>>(pq, pgo, pS, pkm, sn, cs, pdq, prq, pfk, GN, iN, iD,
                                                          kNormFloor);
         v5_dstate<<<lab::blocks_for(G * F * D, kBlock), kBlock>>>(prq, pgo, pdS, iG, iN, iD);
         token_sum<<<lab::blocks_for(G * F, kBlock), kBlock>>>(pfk, pdkm, iG, iN, iF, 1.0f);
         v5_key<<<lab::blocks_for(GN, kBlock), kBlock>>>(pk, pv, pdS, pdkm, sn, cs, pdk, pdv, GN, iN, iD);
       }},
      {"bwd fused, FMA (attention_nala_v1)", 1, lab::Unit::fp32, 0,
       [=] {
         cuda::nala_attention_backward_v1(pq, pk, pv, pS, pkm, pgo, pdq, pdk, pdv, G, H, W, D, kNormFloor);
       }},
      {"bwd tensor cores (production)", 1, lab::Unit::tf32, 80,
       [=] { cuda::nala_attention_backward(pq, pk, pv, pS, pkm, pgo, pdq, pdk, pdv, G, H, W, D, kNormFloor); }},
      {"fwd tensor cores, bf16 arrays", 2, lab::Unit::tf32, 80,
       [=] { cuda::nala_attention_forward(bq, bk, bv, bo, pSw, pkmw, G, H, W, D, kNormFloor); }},
      {"bwd tensor cores, bf16 arrays", 3, lab::Unit::tf32, 80,
       [=] { cuda::nala_attention_backward(bq, bk, bv, pSb, pkmb, bgo, bdq, bdk, bdv, G, H, W, D, kNormFloor); }},
      {"fwd bf16 arrays, one-pass products", 4, lab::Unit::bf16, 80,
       [=] { cuda::nala_attention_forward(bq, bk, bv, bo, pSw, pkmw, G, H, W, D, kNormFloor, true); }},
      {"bwd bf16 arrays, one-pass products", 5, lab::Unit::bf16, 80,
       [=] {
         cuda::nala_attention_backward(bq, bk, bv, pSb, pkmb, bgo, bdq, bdk, bdv, G, H, W, D, kNormFloor, true);
       }},
  };
  char desc[200];
  std::snprintf(desc, sizeof desc, "NaLa attention, G = %lld problems of N = %lld x %lld tokens, D = %lld%s%s",
                (long long)G, (long long)H, (long long)W, (long long)D,
                cuda::nala_attention_tensor_cores(D) ? "" : " (versions 4, 7-11 take the fused path at this D)",
                cf.zero_rows ? ", zero rows in q, k, v" : "");
  return lab::run_gpu("nala_attention_cuda", desc, {fwd, bwd, fwd_b, bwd_b, fwd_1, bwd_1}, vs, opt);
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: nala_attention_cuda [VERSION] [--size S] [--check] [--csv] [--min-time S]\n"
      "  NaLa attention: default G = 3, H x W = 7 x 9, D = 64 (--check: also D = 16, 32, 48 and zero rows);\n"
      "  --size S: G = 128, H = W = S, D = 64 (docs/kernels.md times S = 56)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  std::vector<Config> cfs = {{3, 7, 9, 64, false}};
  if (opt.size) cfs = {{128, opt.size, opt.size, 64, false}};
  if (opt.check_only && !opt.size)
    cfs.insert(cfs.end(), {{2, 5, 5, 16, false}, {2, 11, 13, 32, false}, {2, 3, 7, 48, false}, {3, 9, 7, 64, true}});
  int status = 0;
  for (const Config& cf : cfs) status = std::max(status, run_config(cf, opt));
  return status;
}
