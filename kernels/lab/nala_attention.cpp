// kernels/lab/nala_attention.cpp - the NaLa attention lab, CPU: from the
// N x N attention matrix that the math implies to the production kernel that
// never forms it. Walkthrough: docs/kernels.md; math: docs/SPEC.md §2 (and
// §4 for RoPE), restated in kernels/cpu/attention.h.
//
// Shape letters: G independent problems (batch x heads), N = H W tokens of
// head dim D, F = 2D features. q, k, v, o are (G, N, D).
//
//   fq_i = (u_i)^p_i, u_i = [relu(q_i), relu(-q_i)] / n_i, p_i = 3 (0.5 + tanh n_i)
//   fk_j = [relu(k_j^3), relu(-k_j^3)],   rq, rk = RoPE of each D-half
//   z_i = 1 / (fq_i . mean_j fk_j + 1e-6)
//   o_i = sum_j A_ij v_j  with  A_ij = z_i (rq_i . rk_j) / N         (the definition)
//       = z_i rq_i S      with  S = (1/N) sum_j rk_j^T v_j (F x D)   (associativity)
//
//   build/release-nocuda/lab/nala_attention [VERSION] [--size S] [--check] [--csv]
//     default G = 2, H x W = 7 x 9, D = 16; --size S: G = 2, H = W = S, D = 64
//     (docs/kernels.md times S = 28, N = 784)
//
// Versions:
//   1  forward, quadratic      forms A (N x N) in double: O(N^2 D); the reference
//   2  forward, two-pass state S and kmean over the keys, then the queries: O(N D^2)
//   3  forward, production     cpu::nala_attention_forward: fused token blocks,
//                              vectorised u^p, register-tiled products, threads
//   4  backward, two-pass      cpu::nala_attention_backward_naive (double): the reference
//   5  backward, production    cpu::nala_attention_backward
// FLOP/s count the O(N D^2) algorithm's work for every version (forward
// 8 G N D^2, backward 16 G N D^2), so the quadratic version's number is its
// speed in those units, not the arithmetic it does.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/rope.h"
#include "kernels/lab/lab.h"
#include "tensor/rng.h"

using namespace nala;

namespace {

constexpr float kNormFloor = 1e-12f;  // the value the NaLa op passes (autograd/ops.h)
constexpr double kZEps = 1e-6;

struct Problem {
  int64_t G, H, W, D;
  std::vector<float> q, k, v, go;
  std::vector<float> o, S, km, dq, dk, dv;  // what the versions write
  std::vector<float> o_ref, S_ref, km_ref, dq_ref, dk_ref, dv_ref;
  int64_t N() const { return H * W; }
};

// RoPE of one D-vector at token (r, c), angles computed on the spot (docs/SPEC.md §4):
// pair t of the first D/2 elements turns by r a_t, of the second by c a_t.
void rope_double(const double* x, double* y, int64_t r, int64_t c, int64_t D) {
  const int64_t m = D / 4, h = D / 2;
  for (int64_t e = 0; e < D; e += 2) {
    const int64_t t = (e % h) / 2;
    const double a = m == 1 ? 1.0 : std::pow(10000.0, -(double)t / (double)(m - 1));
    const double th = (double)(e < h ? r : c) * a, cs = std::cos(th), sn = std::sin(th);
    y[e] = x[e] * cs - x[e + 1] * sn;
    y[e + 1] = x[e + 1] * cs + x[e] * sn;
  }
}

// ---- 1. forward, quadratic: the definition. Build every feature vector,
// the N x N matrix A of the implied attention weights, and o = A V. O(N^2 D)
// time and O(N^2) memory, in double: this is the reference of the other
// versions, and what a linear attention exists to avoid.
void v1_quadratic(Problem& p) {
  const int64_t N = p.N(), D = p.D, F = 2 * D;
  std::vector<double> fq(N * F), rq(N * F), fk(F), rk(N * F), km(F), z(N), A(N * N);
  for (int64_t g = 0; g < p.G; g++) {
    const float *q = &p.q[g * N * D], *k = &p.k[g * N * D], *v = &p.v[g * N * D];
    std::fill(km.begin(), km.end(), 0.0);
    for (int64_t j = 0; j < N; j++) {  // keys: fk, rk, and their mean
      for (int64_t e = 0; e < D; e++) {
        const double kc = (double)k[j * D + e] * k[j * D + e] * k[j * D + e];
        fk[e] = std::max(kc, 0.0), fk[D + e] = std::max(-kc, 0.0);
      }
      for (int64_t a = 0; a < F; a++) km[a] += fk[a] / N;
      rope_double(&fk[0], &rk[j * F], j / p.W, j % p.W, D);
      rope_double(&fk[D], &rk[j * F + D], j / p.W, j % p.W, D);
    }
    for (int64_t i = 0; i < N; i++) {  // queries: fq, rq, z
      double ss = 0;
      for (int64_t e = 0; e < D; e++) ss += (double)q[i * D + e] * q[i * D + e];
      const double n = std::max(std::sqrt(ss), (double)kNormFloor), pw = 3.0 * (0.5 + std::tanh(n));
      for (int64_t e = 0; e < D; e++) {
        const double u = q[i * D + e] / n;
        fq[i * F + e] = u > 0 ? std::pow(u, pw) : 0.0;
        fq[i * F + D + e] = u < 0 ? std::pow(-u, pw) : 0.0;
      }
      double den = kZEps;
      for (int64_t a = 0; a < F; a++) den += fq[i * F + a] * km[a];
      z[i] = 1.0 / den;
      rope_double(&fq[i * F], &rq[i * F], i / p.W, i % p.W, D);
      rope_double(&fq[i * F + D], &rq[i * F + D], i / p.W, i % p.W, D);
    }
    for (int64_t i = 0; i < N; i++)  // A_ij = z_i (rq_i . rk_j) / N
      for (int64_t j = 0; j < N; j++) {
        double s = 0;
        for (int64_t a = 0; a < F; a++) s += rq[i * F + a] * rk[j * F + a];
        A[i * N + j] = z[i] * s / N;
      }
    for (int64_t i = 0; i < N; i++)  // o = A V
      for (int64_t c = 0; c < D; c++) {
        double s = 0;
        for (int64_t j = 0; j < N; j++) s += A[i * N + j] * v[j * D + c];
        p.o[(g * N + i) * D + c] = (float)s;
      }
  }
}

// ---- 2. forward, two-pass state form: o_i = z_i rq_i (sum_j rk_j^T v_j) / N
// by associativity. Pass 1 runs over the keys once and builds the F x D state
// S and the mean key feature; pass 2 runs over the queries once. O(N D^2)
// time, O(D^2) extra memory: linear in N. Plain float loops, one thread, libm's
// pow for u^p (a call per feature; it does not vectorise).
void v2_two_pass(Problem& p) {
  const int64_t N = p.N(), D = p.D, F = 2 * D;
  const cpu::RopeTables& T = cpu::rope_tables(p.H, p.W, D);
  std::vector<float> f(F), r(F), S(F * D), km(F);
  for (int64_t g = 0; g < p.G; g++) {
    const float *q = &p.q[g * N * D], *k = &p.k[g * N * D], *v = &p.v[g * N * D];
    std::fill(S.begin(), S.end(), 0.0f);
    std::fill(km.begin(), km.end(), 0.0f);
    for (int64_t j = 0; j < N; j++) {  // pass 1: S += rk_j^T v_j, km += fk_j
      for (int64_t e = 0; e < D; e++) {
        const float kc = k[j * D + e] * k[j * D + e] * k[j * D + e];
        f[e] = std::max(kc, 0.0f), f[D + e] = std::max(-kc, 0.0f);
      }
      cpu::rope_row(&f[0], &T.sin[j * D], &T.cos[j * D], &r[0], D, 1.0f);
      cpu::rope_row(&f[D], &T.sin[j * D], &T.cos[j * D], &r[D], D, 1.0f);
      for (int64_t a = 0; a < F; a++) {
        km[a] += f[a];
        for (int64_t c = 0; c < D; c++) S[a * D + c] += r[a] * v[j * D + c];
      }
    }
    for (float& s : S) s /= (float)N;
    for (float& m : km) m /= (float)N;
    for (int64_t i = 0; i < N; i++) {  // pass 2: o_i = z_i rq_i S
      float ss = 0;
      for (int64_t e = 0; e < D; e++) ss += q[i * D + e] * q[i * D + e];
      const float n = std::max(std::sqrt(ss), kNormFloor), pw = 3.0f * (0.5f + std::tanh(n));
      for (int64_t e = 0; e < D; e++) {
        const float u = q[i * D + e] / n;
        f[e] = u > 0 ? std::pow(u, pw) : 0.0f;
        f[D + e] = u < 0 ? std::pow(-u, pw) : 0.0f;
      }
      float den = (float)kZEps;
      for (int64_t a = 0; a < F; a++) den += f[a] * km[a];
      cpu::rope_row(&f[0], &T.sin[i * D], &T.cos[i * D], &r[0], D, 1.0f);
      cpu::rope_row(&f[D], &T.sin[i * D], &T.cos[i * D], &r[D], D, 1.0f);
      float* o = &p.o[(g * N + i) * D];
      std::fill(o, o + D, 0.0f);
      for (int64_t a = 0; a < F; a++)
        for (int64_t c = 0; c < D; c++) o[c] += r[a] * S[a * D + c];
      for (int64_t c = 0; c < D; c++) o[c] /= den;
    }
    std::copy(S.begin(), S.end(), &p.S[g * F * D]);
    std::copy(km.begin(), km.end(), &p.km[g * F]);
  }
}

// ---- 3. forward, production: cpu::nala_attention_forward. The same two
// passes, reorganised for the machine: tokens in blocks of 64 whose features
// are built into small arrays, then multiplied by register-tiled loops
// (S_block = RK^T V, O = RQ S); u^p = exp(p ln u) with polynomial exp and ln
// that vectorise; (problem, block) items spread over the threads, and the
// per-block partial states added in block order (deterministic).
void v3_production(Problem& p) {
  cpu::nala_attention_forward(p.q.data(), p.k.data(), p.v.data(), p.o.data(), p.S.data(), p.km.data(), p.G, p.H,
                              p.W, p.D, kNormFloor);
}

// ---- 4. backward, two-pass in double: the reference of kernels/cpu
// (cpu::nala_attention_backward_naive), one token at a time through the
// chain rule of docs/SPEC.md §2; recomputes the features from q and k.
void v4_backward_naive(Problem& p) {
  cpu::nala_attention_backward_naive(p.q.data(), p.k.data(), p.v.data(), p.S_ref.data(), p.km_ref.data(),
                                     p.go.data(), p.dq.data(), p.dk.data(), p.dv.data(), p.G, p.H, p.W, p.D,
                                     kNormFloor);
}

// ---- 5. backward, production: cpu::nala_attention_backward, organised like
// version 3: a query pass (dq and partial dS, dkmean per block), an ordered
// reduction, a key pass (dk, dv).
void v5_backward_production(Problem& p) {
  cpu::nala_attention_backward(p.q.data(), p.k.data(), p.v.data(), p.S_ref.data(), p.km_ref.data(), p.go.data(),
                               p.dq.data(), p.dk.data(), p.dv.data(), p.G, p.H, p.W, p.D, kNormFloor);
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: nala_attention [VERSION] [--size S] [--check] [--csv] [--threaded] [--min-time S]\n"
      "  NaLa attention: default G = 2, H x W = 7 x 9, D = 16; --size S: G = 2, H = W = S, D = 64\n"
      "  (docs/kernels.md times S = 28)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  Problem p;
  p.G = 2;
  p.H = opt.size ? opt.size : 7, p.W = opt.size ? opt.size : 9, p.D = opt.size ? 64 : 16;
  const int64_t G = p.G, N = p.N(), D = p.D, F = 2 * D, n = G * N * D;
  for (auto* x : {&p.q, &p.k, &p.v, &p.go, &p.o, &p.dq, &p.dk, &p.dv, &p.o_ref, &p.dq_ref, &p.dk_ref, &p.dv_ref})
    x->resize(n);
  lab::fill_normal(p.q, 1, 1.0f);
  lab::fill_normal(p.k, 2, 0.9f);
  lab::fill_normal(p.v, 3, 1.0f);
  lab::fill_normal(p.go, 4, 1.0f);
  Rng rng(5);  // query norms spread over [0.4, 2.5]: exponents p from ~2.6 to ~4.5
  for (int64_t r = 0; r < G * N; r++) {
    float ss = 0, want = rng.uniform(0.4f, 2.5f);
    for (int64_t e = 0; e < D; e++) ss += p.q[r * D + e] * p.q[r * D + e];
    for (int64_t e = 0; e < D; e++) p.q[r * D + e] *= want / std::sqrt(ss);
  }
  p.S.resize(G * F * D), p.S_ref.resize(G * F * D), p.km.resize(G * F), p.km_ref.resize(G * F);
  // References: o from the quadratic definition; S, kmean and the gradients
  // from kernels/cpu's naive (double) kernels, whose S and kmean feed both
  // backward versions.
  v1_quadratic(p);
  p.o_ref = p.o;
  std::vector<float> o_tmp(n);
  cpu::nala_attention_forward_naive(p.q.data(), p.k.data(), p.v.data(), o_tmp.data(), p.S_ref.data(),
                                    p.km_ref.data(), G, p.H, p.W, D, kNormFloor);
  v4_backward_naive(p);
  p.dq_ref = p.dq, p.dk_ref = p.dk, p.dv_ref = p.dv;

  auto poison = [](std::vector<float>& v) { std::fill(v.begin(), v.end(), NAN); };
  lab::Task fwd, bwd;
  fwd.name = "forward";
  fwd.flops = 8.0 * G * N * D * D;
  fwd.bytes = 16.0 * n;  // q, k, v read, o written
  fwd.clear = [&] { poison(p.o); };
  fwd.check = [&] { return lab::compare("o", p.o.data(), p.o_ref.data(), n, 1e-5, 1e-4); };
  bwd.name = "backward";
  bwd.flops = 16.0 * G * N * D * D;
  bwd.bytes = 28.0 * n;  // q, k, v, go read, dq, dk, dv written
  bwd.clear = [&] { poison(p.dq), poison(p.dk), poison(p.dv); };
  bwd.check = [&] {
    return lab::both(lab::compare("dq", p.dq.data(), p.dq_ref.data(), n, 1e-5, 1e-4),
                     lab::both(lab::compare("dk", p.dk.data(), p.dk_ref.data(), n, 1e-5, 1e-4),
                               lab::compare("dv", p.dv.data(), p.dv_ref.data(), n, 1e-5, 1e-4)));
  };

  using lab::Isa;
  std::vector<lab::Version> v = {
      {"quadratic: N x N matrix, double", 0, false, Isa::any, [&] { v1_quadratic(p); }},
      {"two-pass state form, scalar", 0, false, Isa::any, [&] { v2_two_pass(p); }},
      {"cpu::nala_attention_forward (prod.)", 0, true, Isa::any, [&] { v3_production(p); }},
      {"two-pass, double (naive reference)", 1, false, Isa::any, [&] { v4_backward_naive(p); }},
      {"cpu::nala_attention_backward (prod.)", 1, true, Isa::any, [&] { v5_backward_production(p); }},
  };
  char desc[160];
  std::snprintf(desc, sizeof desc, "NaLa attention, G = %lld problems of N = %lld x %lld tokens, D = %lld",
                (long long)G, (long long)p.H, (long long)p.W, (long long)D);
  return lab::run("nala_attention", desc, {fwd, bwd}, v, opt);
}
