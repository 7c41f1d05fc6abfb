// kernels/cpu/attention.cpp - NaLa and softmax attention kernels (see
// attention.h for the math, the shape letters, what is saved and the
// overwrite rule).
//
// Fast NaLa: each problem's tokens are cut into blocks of kBlock. A parallel
// pass over (problem, block) items computes per-block partial sums (S and
// kmean in forward; dS and dkmean in backward) into separate buffers, which
// are then added in block order: the result does not depend on the thread
// count. Problems are taken a chunk at a time so that the partial buffers
// stay small (O(N D) at most).
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/exp_fast.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/shape.h"

namespace nala {
namespace cpu {

namespace {

constexpr int64_t kBlock = 64;  // tokens per work item
constexpr float kZEps = 1e-6f;  // the normaliser's epsilon (docs/SPEC.md §2.1)

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// How many problems to process together so that there are enough items for
// every thread without unbounded partial buffers.
// Below this many multiply-adds a kernel runs on the calling thread: a
// parallel region costs more than the work (and gradchecks call tiny ones).
constexpr int64_t kParallelWork = 1 << 16;

int64_t problems_per_chunk(int64_t G, int64_t nblocks) {
  int64_t target = std::max<int64_t>(nblocks, 32 * (int64_t)max_threads());
  return std::max<int64_t>(1, std::min<int64_t>(G, target / nblocks));
}

// ---------------------------------------------------------------- naive helpers

// x^p with the convention of docs/SPEC.md §7 at x = 0.
double powz(double x, double p) { return x > 0 ? std::pow(x, p) : 0.0; }

// Rope (sign +1) or its transpose (-1) of both D-halves of a feature vector of
// 2D values at token n; x and y must not alias.
void rope_feat_naive(const double* x, double* y, const RopeTables& T, int64_t n, int64_t D, double sign) {
  const float* sn = T.sin.data() + n * D;
  const float* cs = T.cos.data() + n * D;
  for (int64_t h = 0; h < 2 * D; h += D)
    for (int64_t e = 0; e < D; e += 2) {
      y[h + e] = x[h + e] * cs[e] - sign * x[h + e + 1] * sn[e];
      y[h + e + 1] = x[h + e + 1] * cs[e + 1] + sign * x[h + e] * sn[e + 1];
    }
}

// The query side of one token: u = [relu(q), relu(-q)] / n, fq = u^p.
struct QueryRow {
  double norm, n, p, th;
};
QueryRow query_features_naive(const float* qi, int64_t D, float floor, double* u, double* fq) {
  QueryRow s;
  double ss = 0;
  for (int64_t e = 0; e < D; e++) ss += (double)qi[e] * qi[e];
  s.norm = std::sqrt(ss);
  s.n = std::max(s.norm, (double)floor);
  s.th = std::tanh(s.n);
  s.p = 3.0 * (0.5 + s.th);
  for (int64_t e = 0; e < D; e++) {
    u[e] = std::max((double)qi[e], 0.0) / s.n;
    u[D + e] = std::max(-(double)qi[e], 0.0) / s.n;
  }
  for (int64_t a = 0; a < 2 * D; a++) fq[a] = powz(u[a], s.p);
  return s;
}

void key_features_naive(const float* kj, int64_t D, double* fk) {
  for (int64_t e = 0; e < D; e++) {
    double kc = (double)kj[e] * kj[e] * kj[e];
    fk[e] = std::max(kc, 0.0);
    fk[D + e] = std::max(-kc, 0.0);
  }
}

}  // namespace

// ================================================================ NaLa, naive

void nala_attention_forward_naive(const float* q, const float* k, const float* v, float* o, float* S, float* kmean,
                                  int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor) {
  const int64_t N = H * W, F = 2 * D;
  const RopeTables& T = rope_tables(H, W, D);
  std::vector<double> fk(F), rk(N * F), fq(F), rq(F), u(F), km(F), Sd(F * D);
  for (int64_t g = 0; g < G; g++) {
    const float *qg = q + g * N * D, *kg = k + g * N * D, *vg = v + g * N * D;
    std::fill(km.begin(), km.end(), 0.0);
    std::fill(Sd.begin(), Sd.end(), 0.0);
    for (int64_t j = 0; j < N; j++) {
      key_features_naive(kg + j * D, D, fk.data());
      rope_feat_naive(fk.data(), &rk[j * F], T, j, D, 1.0);
      for (int64_t a = 0; a < F; a++) {
        km[a] += fk[a] / N;
        for (int64_t c = 0; c < D; c++) Sd[a * D + c] += rk[j * F + a] * vg[j * D + c] / N;
      }
    }
    for (int64_t i = 0; i < N; i++) {
      query_features_naive(qg + i * D, D, norm_floor, u.data(), fq.data());
      rope_feat_naive(fq.data(), rq.data(), T, i, D, 1.0);
      double den = kZEps;
      for (int64_t a = 0; a < F; a++) den += fq[a] * km[a];
      for (int64_t c = 0; c < D; c++) {
        double y = 0;
        for (int64_t a = 0; a < F; a++) y += rq[a] * Sd[a * D + c];
        o[(g * N + i) * D + c] = (float)(y / den);
      }
    }
    for (int64_t a = 0; a < F; a++) kmean[g * F + a] = (float)km[a];
    for (int64_t a = 0; a < F * D; a++) S[g * F * D + a] = (float)Sd[a];
  }
}

void nala_attention_backward_naive(const float* q, const float* k, const float* v, const float* S,
                                   const float* kmean, const float* gout, float* dq, float* dk, float* dv, int64_t G,
                                   int64_t H, int64_t W, int64_t D, float norm_floor) {
  const int64_t N = H * W, F = 2 * D;
  const RopeTables& T = rope_tables(H, W, D);
  std::vector<double> u(F), fq(F), rq(F), w(F), drq(F), dfq(F), du(F), fk(F), rk(F), drk(F), dfk(F);
  std::vector<double> dS(F * D), dkm(F);
  for (int64_t g = 0; g < G; g++) {
    const float *qg = q + g * N * D, *kg = k + g * N * D, *vg = v + g * N * D, *gog = gout + g * N * D;
    const float *Sg = S + g * F * D, *km = kmean + g * F;
    std::fill(dS.begin(), dS.end(), 0.0);
    std::fill(dkm.begin(), dkm.end(), 0.0);
    // Queries: o_i = z_i (rq_i S), z_i = 1 / (fq_i . kmean + eps).
    for (int64_t i = 0; i < N; i++) {
      const float *qi = qg + i * D, *go = gog + i * D;
      QueryRow s = query_features_naive(qi, D, norm_floor, u.data(), fq.data());
      rope_feat_naive(fq.data(), rq.data(), T, i, D, 1.0);
      double den = kZEps;
      for (int64_t a = 0; a < F; a++) den += fq[a] * km[a];
      double z = 1.0 / den, dz = 0;
      for (int64_t a = 0; a < F; a++) {
        w[a] = 0;
        for (int64_t c = 0; c < D; c++) w[a] += Sg[a * D + c] * (double)go[c];  // w = S go
        dz += rq[a] * w[a];                                                       // dz = go . (rq S)
        drq[a] = z * w[a];
        for (int64_t c = 0; c < D; c++) dS[a * D + c] += z * rq[a] * go[c];
      }
      double dden = -z * z * dz;
      rope_feat_naive(drq.data(), dfq.data(), T, i, D, -1.0);
      double dp = 0, dn_u = 0;
      for (int64_t a = 0; a < F; a++) {
        dkm[a] += dden * fq[a];
        dfq[a] += dden * km[a];
        if (u[a] > 0) {
          dp += dfq[a] * fq[a] * std::log(u[a]);    // d(u^p)/dp = u^p ln u
          du[a] = dfq[a] * s.p * fq[a] / u[a];      // d(u^p)/du = p u^(p-1)
          dn_u -= du[a] * u[a] / s.n;               // u = relu(+-q) / n
        } else {
          du[a] = 0;
        }
      }
      double dn = dp * 3.0 * (1.0 - s.th * s.th) + dn_u;
      for (int64_t e = 0; e < D; e++) {
        double g_e = 0;
        if (qi[e] > 0) g_e += du[e] / s.n;
        if (qi[e] < 0) g_e -= du[D + e] / s.n;
        if (s.norm > norm_floor) g_e += dn * qi[e] / s.norm;
        dq[(g * N + i) * D + e] = (float)g_e;
      }
    }
    // Keys and values: S = (1/N) sum_j rk_j^T v_j, kmean = (1/N) sum_j fk_j.
    for (int64_t j = 0; j < N; j++) {
      const float *kj = kg + j * D, *vj = vg + j * D;
      key_features_naive(kj, D, fk.data());
      rope_feat_naive(fk.data(), rk.data(), T, j, D, 1.0);
      for (int64_t a = 0; a < F; a++) {
        drk[a] = 0;
        for (int64_t c = 0; c < D; c++) drk[a] += dS[a * D + c] * vj[c] / N;
      }
      for (int64_t c = 0; c < D; c++) {
        double acc = 0;
        for (int64_t a = 0; a < F; a++) acc += rk[a] * dS[a * D + c] / N;
        dv[(g * N + j) * D + c] = (float)acc;
      }
      rope_feat_naive(drk.data(), dfk.data(), T, j, D, -1.0);
      for (int64_t e = 0; e < D; e++) {
        double kc = (double)kj[e] * kj[e] * kj[e], g_e = 0;
        if (kc > 0) g_e += dfk[e] + dkm[e] / N;
        if (kc < 0) g_e -= dfk[D + e] + dkm[D + e] / N;
        dk[(g * N + j) * D + e] = (float)(g_e * 3.0 * kj[e] * kj[e]);
      }
    }
  }
}

// ================================================================ NaLa, fast

namespace {

// ---- vectorisable ln (a Cephes-style polynomial, ~1 ulp in float; its exp
// partner is exp_fast.h). Plain arithmetic on bit patterns so that `omp simd`
// loops vectorise it (libm's logf is not vectorised without -ffast-math).
inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline int32_t float_to_bits(float f) {
  int32_t i;
  std::memcpy(&i, &f, 4);
  return i;
}

// ln x for finite x >= FLT_MIN (callers clamp). GCC vectorises these loops
// only when the selects are simple, hence the split loops in query_row.
inline float vlog(float x) {
  const int32_t i = float_to_bits(x);
  float e = (float)((i >> 23) - 126);
  const float m0 = bits_to_float((i & 0x007fffff) | 0x3f000000);  // in [0.5, 1)
  const bool lo = m0 < 0.707106781f;
  const float em = e - 1.0f, mlo = m0 + m0 - 1.0f, mhi = m0 - 1.0f;
  e = lo ? em : e;
  const float m = lo ? mlo : mhi;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

// ---- small dense products inside one token block, register-tiled.
// C (M x Nc) = A B (or += with acc). A(i, kk) = A[i * ars + kk * acs] (so A or
// A^T of a row-major array); B row-major K x Nc (leading dim ldb); C leading
// dim ldc. Nc % 4 == 0.
template <int RM, int CW>
inline void mm_tile(int64_t i0, int64_t ni, int64_t c0, int64_t K, const float* A, int64_t ars, int64_t acs,
                    const float* B, int64_t ldb, float* C, int64_t ldc, bool acc) {
  float t[RM][CW];
  for (int r = 0; r < RM; r++)
    for (int c = 0; c < CW; c++) t[r][c] = (acc && r < ni) ? C[(i0 + r) * ldc + c0 + c] : 0.0f;
  for (int64_t kk = 0; kk < K; kk++) {
    const float* b = B + kk * ldb + c0;
    for (int r = 0; r < RM; r++) {
      const float a = r < ni ? A[(i0 + r) * ars + kk * acs] : 0.0f;
#pragma omp simd
      for (int c = 0; c < CW; c++) t[r][c] += a * b[c];
    }
  }
  for (int r = 0; r < ni; r++)
    for (int c = 0; c < CW; c++) C[(i0 + r) * ldc + c0 + c] = t[r][c];
}

// Row blocks of 8 (16 independent vector accumulators at CW = 32: enough to
// cover the FMA latency), then of 4 for the rest.
void mm(int64_t M, int64_t Nc, int64_t K, const float* A, int64_t ars, int64_t acs, const float* B, int64_t ldb,
        float* C, int64_t ldc, bool acc) {
  int64_t i0 = 0;
  for (; i0 + 8 <= M; i0 += 8) {
    int64_t c0 = 0;
    for (; c0 + 32 <= Nc; c0 += 32) mm_tile<8, 32>(i0, 8, c0, K, A, ars, acs, B, ldb, C, ldc, acc);
    for (; c0 + 16 <= Nc; c0 += 16) mm_tile<8, 16>(i0, 8, c0, K, A, ars, acs, B, ldb, C, ldc, acc);
    for (; c0 + 4 <= Nc; c0 += 4) mm_tile<8, 4>(i0, 8, c0, K, A, ars, acs, B, ldb, C, ldc, acc);
  }
  for (; i0 < M; i0 += 4) {
    const int64_t ni = std::min<int64_t>(4, M - i0);
    int64_t c0 = 0;
    for (; c0 + 32 <= Nc; c0 += 32) mm_tile<4, 32>(i0, ni, c0, K, A, ars, acs, B, ldb, C, ldc, acc);
    for (; c0 + 16 <= Nc; c0 += 16) mm_tile<4, 16>(i0, ni, c0, K, A, ars, acs, B, ldb, C, ldc, acc);
    for (; c0 + 4 <= Nc; c0 += 4) mm_tile<4, 4>(i0, ni, c0, K, A, ars, acs, B, ldb, C, ldc, acc);
  }
}

// The per-token feature maps below are templates on the head width: DT = 16,
// 32 or 64 (NaLaFormer's) gives loops of fixed length, fully vectorised
// without remainder code; DT = 0 takes the width at run time. key_row and
// query_row pick the instance.
template <int DT>
inline void rope_row_t(const float* x, const float* sn, const float* cs, float* y, int64_t Drt, float sign) {
  rope_row(x, sn, cs, y, DT ? DT : Drt, sign);
}

// Key features of one token: fk = [relu(k^3), relu(-k^3)], rk = rope(fk).
template <int DT>
inline void key_row_t(const float* kj, const float* sn, const float* cs, int64_t Drt, float* fk, float* rk) {
  const int64_t D = DT ? DT : Drt;
  for (int64_t e = 0; e < D; e++) {
    float kc = kj[e] * kj[e] * kj[e];
    fk[e] = std::max(kc, 0.0f);
    fk[D + e] = std::max(-kc, 0.0f);
  }
  rope_row_t<DT>(fk, sn, cs, rk, D, 1.0f);
  rope_row_t<DT>(fk + D, sn, cs, rk + D, D, 1.0f);
}

struct QRow {
  float norm, n, p, th;
};
// Query features of one token: u, lu = ln u (0 where u = 0), fq = u^p, rq = rope(fq).
template <int DT>
inline QRow query_row_t(const float* qi, const float* sn, const float* cs, int64_t Drt, float floor, float* u,
                        float* lu, float* fq, float* rq) {
  const int64_t D = DT ? DT : Drt;
  QRow s;
  float ss = 0;
  for (int64_t e = 0; e < D; e++) ss += qi[e] * qi[e];
  s.norm = std::sqrt(ss);
  s.n = std::max(s.norm, floor);
  s.th = std::tanh(s.n);
  s.p = 3.0f * (0.5f + s.th);
  const float inv = 1.0f / s.n, p = s.p;
  // Of q_e's two halves (relu(q_e), relu(-q_e)) at most one is non-zero, so
  // ln and exp run on the D magnitudes a = |q_e| / n, and each result goes
  // to the half that owns it: half the transcendental work of the 2D
  // features. fq = u^p = exp(p ln u); x^p at x = 0 is 0 and ln 0 is never
  // taken (a is clamped to FLT_MIN first, then masked: FLT_MIN^p underflows
  // to 0 anyway). u, lu, fq use their first D slots as scratch for a.
  const float tiny = 1.17549435e-38f;
#pragma omp simd
  for (int64_t e = 0; e < D; e++) {
    const float a = std::fabs(qi[e]) * inv;
    lu[e] = a > tiny ? a : tiny;
  }
#pragma omp simd
  for (int64_t e = 0; e < D; e++) {
    const float l = vlog(lu[e]);
    lu[e] = l;
    fq[e] = exp_fast(p * l);
  }
#pragma omp simd
  for (int64_t e = 0; e < D; e++) {
    const float x = qi[e], a = std::fabs(x) * inv, l = lu[e], f = fq[e];
    const bool pos = x > 0.0f && a > 0.0f, neg = x < 0.0f && a > 0.0f;  // u > 0, as the 2D features have it
    u[e] = pos ? a : 0.0f;
    u[D + e] = neg ? a : 0.0f;
    lu[e] = pos ? l : 0.0f;
    lu[D + e] = neg ? l : 0.0f;
    fq[e] = pos ? f : 0.0f;
    fq[D + e] = neg ? f : 0.0f;
  }
  rope_row_t<DT>(fq, sn, cs, rq, D, 1.0f);
  rope_row_t<DT>(fq + D, sn, cs, rq + D, D, 1.0f);
  return s;
}


inline void key_row(const float* kj, const float* sn, const float* cs, int64_t D, float* fk, float* rk) {
  switch (D) {
    case 16: return key_row_t<16>(kj, sn, cs, D, fk, rk);
    case 32: return key_row_t<32>(kj, sn, cs, D, fk, rk);
    case 64: return key_row_t<64>(kj, sn, cs, D, fk, rk);
    default: return key_row_t<0>(kj, sn, cs, D, fk, rk);
  }
}
inline QRow query_row(const float* qi, const float* sn, const float* cs, int64_t D, float floor, float* u, float* lu,
                      float* fq, float* rq) {
  switch (D) {
    case 16: return query_row_t<16>(qi, sn, cs, D, floor, u, lu, fq, rq);
    case 32: return query_row_t<32>(qi, sn, cs, D, floor, u, lu, fq, rq);
    case 64: return query_row_t<64>(qi, sn, cs, D, floor, u, lu, fq, rq);
    default: return query_row_t<0>(qi, sn, cs, D, floor, u, lu, fq, rq);
  }
}

// Scratch of one token block, per work item.
struct Scratch {
  std::vector<float> buf;
  float* take(int64_t n) {
    float* p = buf.data() + used;
    used += n;
    return p;
  }
  int64_t used = 0;
  explicit Scratch(int64_t n) : buf(n) {}
};

// Forward, keys of tokens [j0, j1): Sp = sum rk^T v, kp = sum fk (partials, =).
void nala_key_block_fwd(const float* k, const float* v, int64_t j0, int64_t j1, const RopeTables& T, int64_t D,
                        float* Sp, float* kp) {
  const int64_t F = 2 * D, nt = j1 - j0;
  Scratch sc(F + nt * F);
  float *fk = sc.take(F), *RK = sc.take(nt * F);
  std::fill(kp, kp + F, 0.0f);
  for (int64_t t = 0; t < nt; t++) {
    const int64_t j = j0 + t;
    key_row(k + j * D, &T.sin[j * D], &T.cos[j * D], D, fk, RK + t * F);
    for (int64_t a = 0; a < F; a++) kp[a] += fk[a];
  }
  mm(F, D, nt, RK, 1, F, v + j0 * D, D, Sp, D, false);  // Sp = RK^T V
}

// Forward, queries of tokens [i0, i1): o_i = z_i (rq_i S).
void nala_query_block_fwd(const float* q, const float* S, const float* km, int64_t i0, int64_t i1,
                          const RopeTables& T, int64_t D, float floor, float* o) {
  const int64_t F = 2 * D, nt = i1 - i0;
  Scratch sc(3 * F + nt * F + nt);
  float *u = sc.take(F), *lu = sc.take(F), *fq = sc.take(F), *RQ = sc.take(nt * F), *z = sc.take(nt);
  for (int64_t t = 0; t < nt; t++) {
    const int64_t i = i0 + t;
    query_row(q + i * D, &T.sin[i * D], &T.cos[i * D], D, floor, u, lu, fq, RQ + t * F);
    float den = kZEps;
#pragma omp simd reduction(+ : den)
    for (int64_t a = 0; a < F; a++) den += fq[a] * km[a];
    z[t] = 1.0f / den;
  }
  float* ob = o + i0 * D;
  mm(nt, D, F, RQ, F, 1, S, D, ob, D, false);  // Y = RQ S
  for (int64_t t = 0; t < nt; t++)
    for (int64_t c = 0; c < D; c++) ob[t * D + c] *= z[t];
}

// Backward, queries of tokens [i0, i1), given St = S^T: dq (=), and partials dSp = sum z rq^T go,
// dkp = sum dden fq (=).
void nala_query_block_bwd(const float* q, const float* St, const float* km, const float* gout, int64_t i0,
                          int64_t i1, const RopeTables& T, int64_t D, float floor, float* dq, float* dSp, float* dkp) {
  const int64_t F = 2 * D, nt = i1 - i0;
  Scratch sc(3 * F + 5 * nt * F + 2 * nt);
  float *dfq = sc.take(F), *du = sc.take(F), *w = sc.take(F);
  float *U = sc.take(nt * F), *LU = sc.take(nt * F), *FQ = sc.take(nt * F), *RQ = sc.take(nt * F);
  float *WM = sc.take(nt * F), *z = sc.take(nt), *dden = sc.take(nt);
  std::vector<QRow> rows(nt);
  const float* go = gout + i0 * D;
  for (int64_t t = 0; t < nt; t++) {
    const int64_t i = i0 + t;
    rows[t] = query_row(q + i * D, &T.sin[i * D], &T.cos[i * D], D, floor, U + t * F, LU + t * F, FQ + t * F,
                        RQ + t * F);
  }
  mm(nt, F, D, go, D, 1, St, F, WM, F, false);  // W = GO S^T: row t is S go_t
  std::fill(dkp, dkp + F, 0.0f);
  for (int64_t t = 0; t < nt; t++) {
    const float *fq = FQ + t * F, *wt = WM + t * F;
    float* rq = RQ + t * F;
    float den = kZEps, dz = 0;
#pragma omp simd reduction(+ : den, dz)
    for (int64_t a = 0; a < F; a++) {
      den += fq[a] * km[a];
      dz += rq[a] * wt[a];  // dz = go . (rq S)
    }
    z[t] = 1.0f / den;
    dden[t] = -z[t] * z[t] * dz;
    for (int64_t a = 0; a < F; a++) rq[a] *= z[t];  // RQ <- z rq, for dS
    for (int64_t a = 0; a < F; a++) dkp[a] += dden[t] * fq[a];
  }
  mm(F, D, nt, RQ, 1, F, go, D, dSp, D, false);  // dSp = (z RQ)^T GO
  for (int64_t t = 0; t < nt; t++) {
    const int64_t i = i0 + t;
    const float *qi = q + i * D, *sn = &T.sin[i * D], *cs = &T.cos[i * D];
    const float *u = U + t * F, *lu = LU + t * F, *fq = FQ + t * F;
    const QRow s = rows[t];
    for (int64_t a = 0; a < F; a++) w[a] = z[t] * WM[t * F + a];  // drq = z S go
    rope_row(w, sn, cs, dfq, D, -1.0f);
    rope_row(w + D, sn, cs, dfq + D, D, -1.0f);
    float dp = 0, dn_u = 0;
#pragma omp simd reduction(+ : dp, dn_u)
    for (int64_t a = 0; a < F; a++) {
      const float gf = (dfq[a] + dden[t] * km[a]) * fq[a];
      dp += gf * lu[a];                           // d(u^p)/dp = u^p ln u (0 at u = 0)
      const float ua = u[a] > 0.0f ? u[a] : 1.0f;   // no division by 0, no branch
      du[a] = u[a] > 0.0f ? s.p * gf / ua : 0.0f;  // d(u^p)/du = p u^(p-1)
      dn_u += du[a] * u[a];
    }
    const float inv = 1.0f / s.n;
    const float dn = dp * 3.0f * (1.0f - s.th * s.th) - dn_u * inv;
    const float dnq = s.norm > floor ? dn / s.norm : 0.0f;
    float* dqi = dq + i * D;
    for (int64_t e = 0; e < D; e++) {
      float g = dnq * qi[e];
      if (qi[e] > 0) g += du[e] * inv;
      if (qi[e] < 0) g -= du[D + e] * inv;
      dqi[e] = g;
    }
  }
}

// Backward, keys of tokens [j0, j1): dk, dv (=) from dS, dSt = dS^T and dkm (full sums).
void nala_key_block_bwd(const float* k, const float* v, const float* dS, const float* dSt, const float* dkm,
                        int64_t j0, int64_t j1, const RopeTables& T, int64_t D, float invN, float* dk, float* dv) {
  const int64_t F = 2 * D, nt = j1 - j0;
  Scratch sc(2 * F + 2 * nt * F);
  float *fk = sc.take(F), *dfk = sc.take(F), *RK = sc.take(nt * F), *DRK = sc.take(nt * F);
  for (int64_t t = 0; t < nt; t++) {
    const int64_t j = j0 + t;
    key_row(k + j * D, &T.sin[j * D], &T.cos[j * D], D, fk, RK + t * F);
  }
  mm(nt, F, D, v + j0 * D, D, 1, dSt, F, DRK, F, false);  // DRK = V dS^T (times 1/N below)
  float* dvb = dv + j0 * D;
  mm(nt, D, F, RK, F, 1, dS, D, dvb, D, false);  // DV = RK dS (times 1/N below)
  for (int64_t t = 0; t < nt; t++) {
    const int64_t j = j0 + t;
    const float *kj = k + j * D, *sn = &T.sin[j * D], *cs = &T.cos[j * D];
    float* drk = DRK + t * F;
    for (int64_t a = 0; a < F; a++) drk[a] *= invN;
    for (int64_t c = 0; c < D; c++) dvb[t * D + c] *= invN;
    rope_row(drk, sn, cs, dfk, D, -1.0f);
    rope_row(drk + D, sn, cs, dfk + D, D, -1.0f);
    float* dkj = dk + j * D;
    for (int64_t e = 0; e < D; e++) {
      const float kc = kj[e] * kj[e] * kj[e];
      float g = 0;
      if (kc > 0) g += dfk[e] + dkm[e] * invN;
      if (kc < 0) g -= dfk[D + e] + dkm[D + e] * invN;
      dkj[e] = g * 3.0f * kj[e] * kj[e];
    }
  }
}

}  // namespace

void nala_attention_forward(const float* q, const float* k, const float* v, float* o, float* S, float* kmean,
                            int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor) {
  const int64_t N = H * W, F = 2 * D, P = F * D + F;
  const int64_t nb = (N + kBlock - 1) / kBlock;
  const RopeTables& T = rope_tables(H, W, D);
  const int64_t chunk = problems_per_chunk(G, nb);
  std::vector<float> part(chunk * nb * P);
  const float invN = 1.0f / (float)N;
  for (int64_t g0 = 0; g0 < G; g0 += chunk) {
    const int64_t ng = std::min(chunk, G - g0), items = ng * nb;
    const bool par = ng * N * F * D > kParallelWork;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < items; it++) {
      const int64_t g = g0 + it / nb, j0 = (it % nb) * kBlock, j1 = std::min(N, j0 + kBlock);
      float* pp = part.data() + it * P;
      nala_key_block_fwd(k + g * N * D, v + g * N * D, j0, j1, T, D, pp, pp + F * D);
    }
#pragma omp parallel for schedule(static) if (par && ng > 1)
    for (int64_t lg = 0; lg < ng; lg++) {
      float *Sg = S + (g0 + lg) * F * D, *kg = kmean + (g0 + lg) * F;
      std::fill(Sg, Sg + F * D, 0.0f);
      std::fill(kg, kg + F, 0.0f);
      for (int64_t b = 0; b < nb; b++) {  // fixed order: deterministic
        const float* pp = part.data() + (lg * nb + b) * P;
        for (int64_t a = 0; a < F * D; a++) Sg[a] += pp[a];
        for (int64_t a = 0; a < F; a++) kg[a] += pp[F * D + a];
      }
      for (int64_t a = 0; a < F * D; a++) Sg[a] *= invN;
      for (int64_t a = 0; a < F; a++) kg[a] *= invN;
    }
#pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < items; it++) {
      const int64_t g = g0 + it / nb, i0 = (it % nb) * kBlock, i1 = std::min(N, i0 + kBlock);
      nala_query_block_fwd(q + g * N * D, S + g * F * D, kmean + g * F, i0, i1, T, D, norm_floor, o + g * N * D);
    }
  }
}

void nala_attention_backward(const float* q, const float* k, const float* v, const float* S, const float* kmean,
                             const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H, int64_t W,
                             int64_t D, float norm_floor) {
  const int64_t N = H * W, F = 2 * D, P = F * D + F;
  const int64_t nb = (N + kBlock - 1) / kBlock;
  const RopeTables& T = rope_tables(H, W, D);
  const int64_t chunk = problems_per_chunk(G, nb);
  const int64_t R = P + F * D;  // reduced: dS, dkm, dS^T
  std::vector<float> part(chunk * nb * P), red(chunk * R), St(chunk * F * D);
  const float invN = 1.0f / (float)N;
  for (int64_t g0 = 0; g0 < G; g0 += chunk) {
    const int64_t ng = std::min(chunk, G - g0), items = ng * nb;
    const bool par = ng * N * F * D > kParallelWork;
#pragma omp parallel for schedule(static) if (par && ng > 1)
    for (int64_t lg = 0; lg < ng; lg++) transpose_2d(St.data() + lg * F * D, S + (g0 + lg) * F * D, F, D);
#pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < items; it++) {
      const int64_t g = g0 + it / nb, i0 = (it % nb) * kBlock, i1 = std::min(N, i0 + kBlock);
      float* pp = part.data() + it * P;
      nala_query_block_bwd(q + g * N * D, St.data() + (it / nb) * F * D, kmean + g * F, gout + g * N * D, i0, i1, T, D, norm_floor,
                           dq + g * N * D, pp, pp + F * D);
    }
#pragma omp parallel for schedule(static) if (par && ng > 1)
    for (int64_t lg = 0; lg < ng; lg++) {
      float* rg = red.data() + lg * R;
      std::fill(rg, rg + P, 0.0f);
      for (int64_t b = 0; b < nb; b++) {  // fixed order: deterministic
        const float* pp = part.data() + (lg * nb + b) * P;
        for (int64_t a = 0; a < P; a++) rg[a] += pp[a];
      }
      transpose_2d(rg + P, rg, F, D);
    }
#pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < items; it++) {
      const int64_t lg = it / nb, g = g0 + lg, j0 = (it % nb) * kBlock, j1 = std::min(N, j0 + kBlock);
      const float* rg = red.data() + lg * R;
      nala_key_block_bwd(k + g * N * D, v + g * N * D, rg, rg + P, rg + F * D, j0, j1, T, D, invN, dk + g * N * D,
                         dv + g * N * D);
    }
  }
}

// ================================================================ softmax, naive

void softmax_attention_forward_naive(const float* q, const float* k, const float* v, float* o, float* lse, int64_t G,
                                     int64_t H, int64_t W, int64_t D) {
  const int64_t N = H * W;
  const double scale = 1.0 / std::sqrt((double)D);
  std::vector<float> rq(N * D), rk(N * D);
  std::vector<double> s(N);
  for (int64_t g = 0; g < G; g++) {
    rope2d_forward_naive(q + g * N * D, rq.data(), 1, H, W, D);
    rope2d_forward_naive(k + g * N * D, rk.data(), 1, H, W, D);
    for (int64_t i = 0; i < N; i++) {
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < N; j++) {
        s[j] = 0;
        for (int64_t c = 0; c < D; c++) s[j] += (double)rq[i * D + c] * rk[j * D + c];
        s[j] *= scale;
        mx = std::max(mx, s[j]);
      }
      for (int64_t j = 0; j < N; j++) sum += s[j] = std::exp(s[j] - mx);
      for (int64_t c = 0; c < D; c++) {
        double acc = 0;
        for (int64_t j = 0; j < N; j++) acc += s[j] / sum * v[(g * N + j) * D + c];
        o[(g * N + i) * D + c] = (float)acc;
      }
      lse[g * N + i] = (float)(mx + std::log(sum));
    }
  }
}

void softmax_attention_backward_naive(const float* q, const float* k, const float* v, const float* o,
                                      const float* lse, const float* gout, float* dq, float* dk, float* dv, int64_t G,
                                      int64_t H, int64_t W, int64_t D) {
  (void)o, (void)lse;  // recomputed here from q, k, v
  const int64_t N = H * W;
  const double scale = 1.0 / std::sqrt((double)D);
  std::vector<float> rq(N * D), rk(N * D), drq(N * D), drk(N * D);
  std::vector<double> P(N * N), dP(N * N);
  for (int64_t g = 0; g < G; g++) {
    const float *vg = v + g * N * D, *gog = gout + g * N * D;
    rope2d_forward_naive(q + g * N * D, rq.data(), 1, H, W, D);
    rope2d_forward_naive(k + g * N * D, rk.data(), 1, H, W, D);
    for (int64_t i = 0; i < N; i++) {  // P = softmax(rq rk^T * scale), dP = go v^T
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < N; j++) {
        double s = 0, dp = 0;
        for (int64_t c = 0; c < D; c++) s += (double)rq[i * D + c] * rk[j * D + c];
        for (int64_t c = 0; c < D; c++) dp += (double)gog[i * D + c] * vg[j * D + c];
        P[i * N + j] = s * scale;
        dP[i * N + j] = dp;
        mx = std::max(mx, s * scale);
      }
      for (int64_t j = 0; j < N; j++) sum += P[i * N + j] = std::exp(P[i * N + j] - mx);
      for (int64_t j = 0; j < N; j++) P[i * N + j] /= sum;
    }
    for (int64_t i = 0; i < N; i++) {  // dS = P * (dP - rowsum(P * dP)), in place of dP
      double rs = 0;
      for (int64_t j = 0; j < N; j++) rs += P[i * N + j] * dP[i * N + j];
      for (int64_t j = 0; j < N; j++) dP[i * N + j] = P[i * N + j] * (dP[i * N + j] - rs) * scale;
    }
    for (int64_t x = 0; x < N; x++)
      for (int64_t c = 0; c < D; c++) {
        double aq = 0, ak = 0, av = 0;
        for (int64_t y = 0; y < N; y++) {
          aq += dP[x * N + y] * rk[y * D + c];
          ak += dP[y * N + x] * rq[y * D + c];
          av += P[y * N + x] * gog[y * D + c];
        }
        drq[x * D + c] = (float)aq, drk[x * D + c] = (float)ak, dv[(g * N + x) * D + c] = (float)av;
      }
    rope2d_backward_naive(drq.data(), dq + g * N * D, 1, H, W, D);
    rope2d_backward_naive(drk.data(), dk + g * N * D, 1, H, W, D);
  }
}

// ================================================================ softmax, fast

namespace {
inline float dot(const float* a, const float* b, int64_t D) {
  float acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t c = 0; c < D; c++) acc += a[c] * b[c];
  return acc;
}
}  // namespace

// Work items of (problem, block of up to kSoftRows queries), each three
// small register-tiled products (mm, as the NaLa kernels use): S = RQ RK^T
// (the keys roped once per problem and stored transposed, D x Np, Np = N
// rounded up to 4 with zero columns), then per row the max over the N real
// keys, p = exp(s - max) (exp_fast, vectorised; padding p = 0) and its sum,
// then O = P V and O /= sum. Nothing N x N beyond one item's rows is stored;
// roping the keys costs N D per problem beside its 4 N^2 D FLOPs.
constexpr int64_t kSoftRows = 64;

void softmax_attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, int64_t G,
                               int64_t H, int64_t W, int64_t D) {
  const int64_t N = H * W, nb = (N + kSoftRows - 1) / kSoftRows, Np = (N + 3) / 4 * 4;
  const int64_t rows = std::min(N, kSoftRows);
  const float scale = 1.0f / std::sqrt((float)D);
  const RopeTables& T = rope_tables(H, W, D);
#pragma omp parallel if (G * N * N * D > kParallelWork)
  {
    std::vector<float> rkT(D * Np, 0.0f), rk(D), RQ(rows * D), S(rows * Np), inv(rows);
    int64_t have = -1;  // the problem whose keys rkT holds
#pragma omp for schedule(static)
    for (int64_t it = 0; it < G * nb; it++) {
      const int64_t g = it / nb, i0 = (it % nb) * kSoftRows, nq = std::min(N, i0 + kSoftRows) - i0;
      if (have != g) {
        for (int64_t j = 0; j < N; j++) {
          rope_row(k + (g * N + j) * D, &T.sin[j * D], &T.cos[j * D], rk.data(), D, 1.0f);
          for (int64_t c = 0; c < D; c++) rkT[c * Np + j] = rk[c];
        }
        have = g;
      }
      for (int64_t t = 0; t < nq; t++) {
        const int64_t i = i0 + t;
        float* r = RQ.data() + t * D;
        rope_row(q + (g * N + i) * D, &T.sin[i * D], &T.cos[i * D], r, D, 1.0f);
        for (int64_t c = 0; c < D; c++) r[c] *= scale;
      }
      mm(nq, Np, D, RQ.data(), D, 1, rkT.data(), Np, S.data(), Np, false);  // S = (RQ / sqrt D) RK^T
      float* ob = o + (g * N + i0) * D;
      float* lb = lse + g * N + i0;
      for (int64_t t = 0; t < nq; t++) {
        float* sr = S.data() + t * Np;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < N; j++) mx = std::max(mx, sr[j]);
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < N; j++) {
          sr[j] = exp_fast(sr[j] - mx);
          sum += sr[j];
        }
        lb[t] = mx + std::log(sum);
        inv[t] = 1.0f / sum;
      }
      mm(nq, D, N, S.data(), Np, 1, v + g * N * D, D, ob, D, false);  // O = P V
      for (int64_t t = 0; t < nq; t++) {
        float* oi = ob + t * D;
#pragma omp simd
        for (int64_t c = 0; c < D; c++) oi[c] *= inv[t];
      }
    }
  }
}

void softmax_attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                                const float* gout, float* dq, float* dk, float* dv, int64_t G, int64_t H, int64_t W,
                                int64_t D) {
  const int64_t N = H * W;
  const float scale = 1.0f / std::sqrt((float)D);
  const RopeTables& T = rope_tables(H, W, D);
  std::vector<float> rq(G * N * D), rk(G * N * D), Dl(G * N);
  rope2d_forward(q, rq.data(), G, H, W, D);
  rope2d_forward(k, rk.data(), G, H, W, D);
  const bool par = G * N * N * D > kParallelWork;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t gi = 0; gi < G * N; gi++) Dl[gi] = dot(gout + gi * D, o + gi * D, D);  // rowsum(P * dP)
  // Rows: drq_i = scale sum_j P_ij (dP_ij - Dl_i) rk_j.
#pragma omp parallel if (par)
  {
    std::vector<float> acc(D);
#pragma omp for schedule(static)
    for (int64_t gi = 0; gi < G * N; gi++) {
      const int64_t g = gi / N, i = gi % N;
      const float *rqi = &rq[gi * D], *goi = gout + gi * D, *rkg = &rk[g * N * D], *vg = v + g * N * D;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < N; j++) {
        const float p = std::exp(scale * dot(rqi, rkg + j * D, D) - lse[gi]);
        const float ds = p * (dot(goi, vg + j * D, D) - Dl[gi]) * scale;
        const float* rkj = rkg + j * D;
#pragma omp simd
        for (int64_t c = 0; c < D; c++) acc[c] += ds * rkj[c];
      }
      rope_row(acc.data(), &T.sin[i * D], &T.cos[i * D], dq + gi * D, D, -1.0f);
    }
  }
  // Columns: drk_j = scale sum_i dS_ij rq_i, dv_j = sum_i P_ij go_i.
#pragma omp parallel if (par)
  {
    std::vector<float> acc(D);
#pragma omp for schedule(static)
    for (int64_t gj = 0; gj < G * N; gj++) {
      const int64_t g = gj / N, j = gj % N;
      const float *rkj = &rk[gj * D], *vj = v + gj * D;
      float* dvj = dv + gj * D;
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(dvj, dvj + D, 0.0f);
      for (int64_t i = 0; i < N; i++) {
        const int64_t gi = g * N + i;
        const float *rqi = &rq[gi * D], *goi = gout + gi * D;
        const float p = std::exp(scale * dot(rqi, rkj, D) - lse[gi]);
        const float ds = p * (dot(goi, vj, D) - Dl[gi]) * scale;
#pragma omp simd
        for (int64_t c = 0; c < D; c++) {
          acc[c] += ds * rqi[c];
          dvj[c] += p * goi[c];
        }
      }
      rope_row(acc.data(), &T.sin[j * D], &T.cos[j * D], dk + gj * D, D, -1.0f);
    }
  }
}

// ---- bf16 inputs and outputs: widen, the float32 kernels, round once ----

namespace {
std::vector<float> widen(const bf16_t* x, int64_t n) {
  std::vector<float> out((size_t)n);
  cast_bf16_f32(out.data(), x, n);
  return out;
}
void round_into(bf16_t* out, const std::vector<float>& x) { cast_f32_bf16(out, x.data(), (int64_t)x.size()); }
}  // namespace

void nala_attention_forward(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* o, float* S, float* kmean,
                            int64_t G, int64_t H, int64_t W, int64_t D, float norm_floor, bool /*one_pass*/) {
  const int64_t n = G * H * W * D;
  const std::vector<float> qf = widen(q, n), kf = widen(k, n), vf = widen(v, n);
  std::vector<float> of((size_t)n);
  nala_attention_forward(qf.data(), kf.data(), vf.data(), of.data(), S, kmean, G, H, W, D, norm_floor);
  round_into(o, of);
}

void nala_attention_backward(const bf16_t* q, const bf16_t* k, const bf16_t* v, const float* S, const float* kmean,
                             const bf16_t* gout, bf16_t* dq, bf16_t* dk, bf16_t* dv, int64_t G, int64_t H, int64_t W,
                             int64_t D, float norm_floor, bool /*one_pass*/) {
  const int64_t n = G * H * W * D;
  const std::vector<float> qf = widen(q, n), kf = widen(k, n), vf = widen(v, n), gf = widen(gout, n);
  std::vector<float> dqf((size_t)n), dkf((size_t)n), dvf((size_t)n);
  nala_attention_backward(qf.data(), kf.data(), vf.data(), S, kmean, gf.data(), dqf.data(), dkf.data(), dvf.data(), G,
                          H, W, D, norm_floor);
  round_into(dq, dqf);
  round_into(dk, dkf);
  round_into(dv, dvf);
}

}  // namespace cpu
}  // namespace nala
