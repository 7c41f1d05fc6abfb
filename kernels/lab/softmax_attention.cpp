// kernels/lab/softmax_attention.cpp - the softmax attention lab, CPU: from
// the materialised N x N score matrix to the online (flash-style) softmax,
// and the production kernel. Walkthrough: docs/kernels.md; math:
// docs/SPEC.md §3 (and §4 for RoPE), restated in kernels/cpu/attention.h.
//
// Shape letters: G independent problems (batch x heads), N = H W tokens of
// head dim D. q, k, v, o are (G, N, D), lse is (G, N).
//
//   s_ij = rope(q_i) . rope(k_j) / sqrt(D),   o_i = sum_j softmax_j(s_i.) v_j,
//   lse_i = log sum_j exp(s_ij)               (saved for the backward)
//
//   build/release-nocuda/lab/softmax_attention [VERSION] [--size S] [--check] [--csv]
//     default G = 2, H x W = 5 x 7, D = 16; --size S: G = 2, H = W = S, D = 64
//     (docs/kernels.md times S = 28, N = 784)
//
// Versions:
//   1  forward, naive          the N x N scores in memory, softmax, then P V
//   2  forward, online         flash-style: key blocks, running max and sum
//   3  forward, production     cpu::softmax_attention_forward (kernels/cpu/attention.cpp)
//   4  backward, naive         cpu::softmax_attention_backward_naive (double, N x N)
//   5  backward, production    cpu::softmax_attention_backward: scores recomputed row by row
// The forward reference is cpu::softmax_attention_forward_naive (double);
// the backward reference is version 4.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/rope.h"
#include "kernels/lab/lab.h"

using namespace nala;

namespace {

struct Problem {
  int64_t G, H, W, D;
  std::vector<float> q, k, v, go, rq, rk;
  std::vector<float> o, lse, dq, dk, dv;  // what the versions write
  std::vector<float> o_ref, lse_ref, dq_ref, dk_ref, dv_ref;
  int64_t N() const { return H * W; }
};

// ---- 1. forward, naive: rotate q and k, write all N x N scores of a
// problem to memory, softmax each row (max, exp, sum), then o = P V. O(N^2)
// memory per problem: 2.4 MiB at N = 784, 38 MiB at N = 3136, far beyond L2;
// each score is written and read back three times.
void v1_naive(Problem& p) {
  const int64_t N = p.N(), D = p.D;
  const float scale = 1.0f / std::sqrt((float)D);
  cpu::rope2d_forward(p.q.data(), p.rq.data(), p.G, p.H, p.W, D);
  cpu::rope2d_forward(p.k.data(), p.rk.data(), p.G, p.H, p.W, D);
  std::vector<float> P(N * N);
  for (int64_t g = 0; g < p.G; g++) {
    const float *rq = &p.rq[g * N * D], *rk = &p.rk[g * N * D], *v = &p.v[g * N * D];
    for (int64_t i = 0; i < N; i++)
      for (int64_t j = 0; j < N; j++) {
        float s = 0;
        for (int64_t c = 0; c < D; c++) s += rq[i * D + c] * rk[j * D + c];
        P[i * N + j] = s * scale;
      }
    for (int64_t i = 0; i < N; i++) {
      float* row = &P[i * N];
      const float mx = *std::max_element(row, row + N);
      float sum = 0;
      for (int64_t j = 0; j < N; j++) sum += row[j] = std::exp(row[j] - mx);
      for (int64_t j = 0; j < N; j++) row[j] /= sum;
      p.lse[g * N + i] = mx + std::log(sum);
    }
    for (int64_t i = 0; i < N; i++) {
      float* o = &p.o[(g * N + i) * D];
      std::fill(o, o + D, 0.0f);
      for (int64_t j = 0; j < N; j++)
        for (int64_t c = 0; c < D; c++) o[c] += P[i * N + j] * v[j * D + c];
    }
  }
}

// ---- 2. forward, online softmax (the forward of FlashAttention): nothing
// N x N exists. A block of Br queries walks the keys in blocks of Bc, keeping
// per query a running max m, a running sum l of exp(s - m) and an unnormalised
// output acc. When a block raises the max, the old l and acc are rescaled by
// exp(m_old - m_new): one multiply per block instead of a second pass. The
// Bc x D key and value blocks are reused by all Br queries from L1, and the
// scores of a tile live in a Br x Bc array that never leaves L1.
void v2_online(Problem& p) {
  constexpr int64_t Br = 16, Bc = 64;
  const int64_t N = p.N(), D = p.D;
  const float scale = 1.0f / std::sqrt((float)D);
  cpu::rope2d_forward(p.q.data(), p.rq.data(), p.G, p.H, p.W, D);
  cpu::rope2d_forward(p.k.data(), p.rk.data(), p.G, p.H, p.W, D);
  std::vector<float> s(Br * Bc), acc(Br * D);
  float m[Br], l[Br];
  for (int64_t g = 0; g < p.G; g++) {
    const float *rq = &p.rq[g * N * D], *rk = &p.rk[g * N * D], *v = &p.v[g * N * D];
    for (int64_t i0 = 0; i0 < N; i0 += Br) {
      const int64_t nr = std::min(Br, N - i0);
      std::fill(m, m + Br, -INFINITY), std::fill(l, l + Br, 0.0f), std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j0 = 0; j0 < N; j0 += Bc) {
        const int64_t nc = std::min(Bc, N - j0);
        for (int64_t r = 0; r < nr; r++)  // the score tile
          for (int64_t j = 0; j < nc; j++) {
            const float *a = &rq[(i0 + r) * D], *b = &rk[(j0 + j) * D];
            float d = 0;
#pragma omp simd reduction(+ : d)
            for (int64_t c = 0; c < D; c++) d += a[c] * b[c];
            s[r * Bc + j] = d * scale;
          }
        for (int64_t r = 0; r < nr; r++) {  // the online update of each query
          float* sr = &s[r * Bc];
          float* ar = &acc[r * D];
          const float mn = std::max(m[r], *std::max_element(sr, sr + nc));
          const float corr = std::exp(m[r] - mn);  // 0 on the first block (m = -inf)
          l[r] *= corr;
          for (int64_t c = 0; c < D; c++) ar[c] *= corr;
          for (int64_t j = 0; j < nc; j++) {
            const float pj = std::exp(sr[j] - mn);
            l[r] += pj;
            const float* vj = &v[(j0 + j) * D];
#pragma omp simd
            for (int64_t c = 0; c < D; c++) ar[c] += pj * vj[c];
          }
          m[r] = mn;
        }
      }
      for (int64_t r = 0; r < nr; r++) {
        float* o = &p.o[(g * N + i0 + r) * D];
        for (int64_t c = 0; c < D; c++) o[c] = acc[r * D + c] / l[r];
        p.lse[g * N + i0 + r] = m[r] + std::log(l[r]);
      }
    }
  }
}

// ---- 3. forward, production: cpu::softmax_attention_forward. One query row
// at a time over the threads: its N scores in a row buffer (O(N) memory,
// in L1/L2), the max, then exp and the P V accumulation in one sweep.
// Two passes over the keys per query instead of the online update.
void v3_production(Problem& p) {
  cpu::softmax_attention_forward(p.q.data(), p.k.data(), p.v.data(), p.o.data(), p.lse.data(), p.G, p.H, p.W, p.D);
}

// ---- 4. backward, naive: cpu::softmax_attention_backward_naive, the N x N
// probabilities P and dP = go v^T in double, dS = P (dP - rowsum(P dP)).
void v4_backward_naive(Problem& p) {
  cpu::softmax_attention_backward_naive(p.q.data(), p.k.data(), p.v.data(), p.o_ref.data(), p.lse_ref.data(),
                                        p.go.data(), p.dq.data(), p.dk.data(), p.dv.data(), p.G, p.H, p.W, p.D);
}

// ---- 5. backward, production: cpu::softmax_attention_backward. Nothing
// N x N: each probability is recomputed from q, k and the saved lse, and
// rowsum(P dP) is go . o; one sweep over rows (dq), one over columns (dk, dv).
void v5_backward_production(Problem& p) {
  cpu::softmax_attention_backward(p.q.data(), p.k.data(), p.v.data(), p.o_ref.data(), p.lse_ref.data(), p.go.data(),
                                  p.dq.data(), p.dk.data(), p.dv.data(), p.G, p.H, p.W, p.D);
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: softmax_attention [VERSION] [--size S] [--check] [--csv] [--threaded] [--min-time S]\n"
      "  softmax attention: default G = 2, H x W = 5 x 7, D = 16; --size S: G = 2, H = W = S, D = 64\n"
      "  (docs/kernels.md times S = 28)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  Problem p;
  p.G = 2;
  p.H = opt.size ? opt.size : 5, p.W = opt.size ? opt.size : 7, p.D = opt.size ? 64 : 16;
  const int64_t G = p.G, N = p.N(), D = p.D, n = G * N * D;
  for (auto* x : {&p.q, &p.k, &p.v, &p.go, &p.rq, &p.rk, &p.o, &p.dq, &p.dk, &p.dv, &p.o_ref, &p.dq_ref, &p.dk_ref,
                  &p.dv_ref})
    x->resize(n);
  p.lse.resize(G * N), p.lse_ref.resize(G * N);
  lab::fill_normal(p.q, 1, 1.5f);  // scores of std ~2: the max subtraction matters
  lab::fill_normal(p.k, 2, 1.5f);
  lab::fill_normal(p.v, 3, 1.0f);
  lab::fill_normal(p.go, 4, 1.0f);
  cpu::softmax_attention_forward_naive(p.q.data(), p.k.data(), p.v.data(), p.o_ref.data(), p.lse_ref.data(), G, p.H,
                                       p.W, D);
  v4_backward_naive(p);
  p.dq_ref = p.dq, p.dk_ref = p.dk, p.dv_ref = p.dv;

  auto poison = [](std::vector<float>& v) { std::fill(v.begin(), v.end(), NAN); };
  lab::Task fwd, bwd;
  fwd.name = "forward";
  fwd.flops = 4.0 * G * N * N * D;  // q k^T and P v
  fwd.bytes = 16.0 * n + 4.0 * G * N;
  fwd.clear = [&] { poison(p.o), poison(p.lse); };
  fwd.check = [&] {
    return lab::both(lab::compare("o", p.o.data(), p.o_ref.data(), n, 1e-5, 1e-4),
                     lab::compare("lse", p.lse.data(), p.lse_ref.data(), G * N, 1e-5, 1e-5));
  };
  bwd.name = "backward";
  bwd.flops = 10.0 * G * N * N * D;  // five N x N x D products: scores, dP = go v^T, dq, dk, dv
  bwd.bytes = 32.0 * n + 4.0 * G * N;  // q, k, v, o, go, lse read; dq, dk, dv written
  bwd.clear = [&] { poison(p.dq), poison(p.dk), poison(p.dv); };
  bwd.check = [&] {
    return lab::both(lab::compare("dq", p.dq.data(), p.dq_ref.data(), n, 1e-4, 1e-4),
                     lab::both(lab::compare("dk", p.dk.data(), p.dk_ref.data(), n, 1e-4, 1e-4),
                               lab::compare("dv", p.dv.data(), p.dv_ref.data(), n, 1e-4, 1e-4)));
  };

  using lab::Isa;
  std::vector<lab::Version> v = {
      {"naive: N x N scores in memory", 0, false, Isa::any, [&] { v1_naive(p); }},
      {"online softmax, 16 x 64 tiles", 0, false, Isa::any, [&] { v2_online(p); }},
      {"cpu::softmax_attention_forward (prod.)", 0, true, Isa::any, [&] { v3_production(p); }},
      {"naive: N x N in double", 1, false, Isa::any, [&] { v4_backward_naive(p); }},
      {"cpu::softmax_attention_backward (prod.)", 1, true, Isa::any, [&] { v5_backward_production(p); }},
  };
  char desc[160];
  std::snprintf(desc, sizeof desc, "softmax attention, G = %lld problems of N = %lld x %lld tokens, D = %lld",
                (long long)G, (long long)p.H, (long long)p.W, (long long)D);
  return lab::run("softmax_attention", desc, {fwd, bwd}, v, opt);
}
