// kernels/lab/layernorm.cpp - the LayerNorm lab, CPU, forward and backward,
// on the token layout the engine uses: R rows (tokens) of C channels,
// contiguous. Walkthrough: docs/kernels.md.
//
//   forward:  mean_r = (1/C) sum_c x,  var_r = (1/C) sum_c (x - mean_r)^2,
//             rstd_r = 1 / sqrt(var_r + eps),  xhat = (x - mean_r) rstd_r,
//             y = xhat w + b                           (saves mean, rstd)
//   backward: g = dy w,  dx = rstd (g - mean_c(g) - xhat mean_c(g xhat)),
//             dw = sum_r dy xhat,  db = sum_r dy       (all overwritten)
//
//   build/release-nocuda/lab/layernorm [VERSION] [--size R] [--check] [--csv]
//     default R = 203 rows of C = 100 (odd: every tail runs); with --size,
//     R rows of C = 320; docs/kernels.md times R = 32768 (40 MiB of x)
//
// Versions:
//   1  forward, naive          three passes over each row, scalar sums
//   2  forward, fused          one pass for both moments (shifted), vectorised
//   3  forward, production     cpu::layernorm_forward (kernels/cpu/norm.cpp)
//   4  backward, naive         scalar sums, dw and db accumulated row by row
//   5  backward, fused         one vectorised pass per row for every sum
//   6  backward, production    cpu::layernorm_backward
// References: cpu::layernorm_forward_naive / layernorm_backward_naive
// (double accumulation); the backward versions all start from the
// reference's mean and rstd.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/norm.h"
#include "kernels/lab/lab.h"

using namespace nala;

namespace {

constexpr float kEps = 1e-6f;  // norm1 / norm2 of a block (docs/SPEC.md §1)

struct Problem {
  int64_t R, C;
  std::vector<float> x, w, b, y, mean, rstd, dy, dx, dw, db;  // what the versions write
  std::vector<float> y_ref, mean_ref, rstd_ref, dx_ref, dw_ref, db_ref;
};

// ---- 1. forward, naive: the definition, row by row: a pass for the mean, a
// pass for the variance, a pass to normalise. Each sum is one chain of
// dependent float adds (not vectorised: the compiler keeps their order).
void v1_forward_naive(Problem& p) {
  for (int64_t r = 0; r < p.R; r++) {
    const float* x = &p.x[r * p.C];
    float* y = &p.y[r * p.C];
    float s = 0.0f, v = 0.0f;
    for (int64_t c = 0; c < p.C; c++) s += x[c];
    const float m = s / p.C;
    for (int64_t c = 0; c < p.C; c++) v += (x[c] - m) * (x[c] - m);
    const float rs = 1.0f / std::sqrt(v / p.C + kEps);
    for (int64_t c = 0; c < p.C; c++) y[c] = (x[c] - m) * rs * p.w[c] + p.b[c];
    p.mean[r] = m, p.rstd[r] = rs;
  }
}

// ---- 2. forward, fused: both moments in one pass, sum (x - s) and
// sum (x - s)^2 with the shift s = x[0] (var = E[d^2] - E[d]^2 cancels badly
// when |mean| >> std; shifting by any value of the row keeps d small).
// `omp simd reduction` allows the reordering, so the sums vectorise. Welford's
// running mean would be one-pass too, but with a division per element and a
// sequential dependence: slower, and not needed with the shift.
void v2_forward_fused(Problem& p) {
  for (int64_t r = 0; r < p.R; r++) {
    const float* x = &p.x[r * p.C];
    float* y = &p.y[r * p.C];
    const float sh = x[0];
    float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t c = 0; c < p.C; c++) {
      const float d = x[c] - sh;
      s1 += d, s2 += d * d;
    }
    const float md = s1 / p.C, var = std::max(s2 / p.C - md * md, 0.0f);
    const float m = sh + md, rs = 1.0f / std::sqrt(var + kEps);
    const float *w = p.w.data(), *b = p.b.data();
#pragma omp simd
    for (int64_t c = 0; c < p.C; c++) y[c] = (x[c] - m) * rs * w[c] + b[c];
    p.mean[r] = m, p.rstd[r] = rs;
  }
}

// ---- 3. forward, production: cpu::layernorm_forward. Two vectorised passes
// for the statistics (mean, then squared deviations: no cancellation at all;
// the second pass reads the row from L1, so it costs little), rows spread
// over the threads.
void v3_forward_production(Problem& p) {
  cpu::layernorm_forward(p.y.data(), p.mean.data(), p.rstd.data(), p.x.data(), p.w.data(), p.b.data(), p.R, p.C, 1,
                         kEps);
}

// ---- 4. backward, naive: per row, a pass for the two means (scalar chains)
// that also adds the row's share into dw and db, then a pass for dx.
void v4_backward_naive(Problem& p) {
  std::fill(p.dw.begin(), p.dw.end(), 0.0f);
  std::fill(p.db.begin(), p.db.end(), 0.0f);
  for (int64_t r = 0; r < p.R; r++) {
    const float *x = &p.x[r * p.C], *dy = &p.dy[r * p.C];
    const float m = p.mean_ref[r], rs = p.rstd_ref[r];
    float m1 = 0.0f, m2 = 0.0f;
    for (int64_t c = 0; c < p.C; c++) {
      const float xh = (x[c] - m) * rs, g = dy[c] * p.w[c];
      m1 += g, m2 += g * xh;
      p.dw[c] += dy[c] * xh;
      p.db[c] += dy[c];
    }
    m1 /= p.C, m2 /= p.C;
    for (int64_t c = 0; c < p.C; c++) {
      const float xh = (x[c] - m) * rs;
      p.dx[r * p.C + c] = rs * (dy[c] * p.w[c] - m1 - xh * m2);
    }
  }
}

// ---- 5. backward, fused: the same two passes, but every sum of the first
// (m1, m2 and the row's contribution to dw and db) in one vectorised loop;
// the second pass finds the row still in L1. Each input is read from memory
// once. (Single thread: dw and db are one accumulator set; version 6 shows
// how threads share that reduction deterministically.)
void v5_backward_fused(Problem& p) {
  const int64_t C = p.C;
  float *dw = p.dw.data(), *db = p.db.data();
  const float* w = p.w.data();
  std::fill(dw, dw + C, 0.0f);
  std::fill(db, db + C, 0.0f);
  for (int64_t r = 0; r < p.R; r++) {
    const float *x = &p.x[r * C], *dy = &p.dy[r * C];
    float* dx = &p.dx[r * C];
    const float m = p.mean_ref[r], rs = p.rstd_ref[r];
    float m1 = 0.0f, m2 = 0.0f;
#pragma omp simd reduction(+ : m1, m2)
    for (int64_t c = 0; c < C; c++) {
      const float xh = (x[c] - m) * rs, g = dy[c] * w[c];
      m1 += g, m2 += g * xh;
      dw[c] += dy[c] * xh;
      db[c] += dy[c];
    }
    m1 /= C, m2 /= C;
#pragma omp simd
    for (int64_t c = 0; c < C; c++) dx[c] = rs * (dy[c] * w[c] - m1 - (x[c] - m) * rs * m2);
  }
}

// ---- 6. backward, production: cpu::layernorm_backward. dw and db are summed
// over fixed blocks of rows in parallel, the block partials added in order
// (the same bits for any thread count); then dx, rows over the threads.
void v6_backward_production(Problem& p) {
  cpu::layernorm_backward(p.dx.data(), p.dw.data(), p.db.data(), p.dy.data(), p.x.data(), p.mean_ref.data(),
                          p.rstd_ref.data(), p.w.data(), p.R, p.C, 1);
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: layernorm [VERSION] [--size R] [--check] [--csv] [--threaded] [--min-time S]\n"
      "  LayerNorm over C channels of R rows: default R = 203, C = 100; with --size, C = 320\n"
      "  (docs/kernels.md times R = 32768)\n";
  lab::Options opt = lab::parse(argc, argv, usage);
  Problem p;
  p.R = opt.size ? opt.size : 203;
  p.C = opt.size ? 320 : 100;
  const int64_t R = p.R, C = p.C, n = R * C;
  p.x.resize(n), p.dy.resize(n), p.w.resize(C), p.b.resize(C);
  lab::fill_normal(p.x, 1, 2.0f);
  for (float& e : p.x) e += 3.0f;  // a mean away from 0: the one-pass variance must not cancel
  lab::fill_normal(p.dy, 2, 1.0f);
  lab::fill_uniform(p.w, 3, 0.5f, 1.5f);
  lab::fill_uniform(p.b, 4, -0.5f, 0.5f);
  p.y.resize(n), p.dx.resize(n), p.mean.resize(R), p.rstd.resize(R), p.dw.resize(C), p.db.resize(C);
  p.y_ref.resize(n), p.dx_ref.resize(n), p.mean_ref.resize(R), p.rstd_ref.resize(R);
  p.dw_ref.resize(C), p.db_ref.resize(C);
  cpu::layernorm_forward_naive(p.y_ref.data(), p.mean_ref.data(), p.rstd_ref.data(), p.x.data(), p.w.data(),
                               p.b.data(), R, C, 1, kEps);
  cpu::layernorm_backward_naive(p.dx_ref.data(), p.dw_ref.data(), p.db_ref.data(), p.dy.data(), p.x.data(),
                                p.mean_ref.data(), p.rstd_ref.data(), p.w.data(), R, C, 1);

  auto poison = [](std::vector<float>& v) { std::fill(v.begin(), v.end(), NAN); };
  lab::Task fwd, bwd;
  fwd.name = "forward";
  fwd.flops = 8.0 * n;             // about: sum, squared deviation, normalise and affine
  fwd.bytes = 8.0 * n + 8.0 * R;  // x read, y written; mean and rstd
  fwd.clear = [&] { poison(p.y), poison(p.mean), poison(p.rstd); };
  fwd.check = [&] {
    return lab::both(lab::compare("y", p.y.data(), p.y_ref.data(), n, 1e-5, 1e-4),
                     lab::both(lab::compare("mean", p.mean.data(), p.mean_ref.data(), R, 1e-5, 1e-5),
                               lab::compare("rstd", p.rstd.data(), p.rstd_ref.data(), R, 1e-5, 1e-4)));
  };
  bwd.name = "backward";
  bwd.flops = 16.0 * n;             // about: xhat, g, four sums, dx
  bwd.bytes = 12.0 * n + 8.0 * R;  // x, dy read, dx written; mean, rstd
  bwd.clear = [&] { poison(p.dx), poison(p.dw), poison(p.db); };
  // dw and db sum R terms of size ~1: float rounding grows with R.
  const double atol_sum = 1e-4 + 2e-6 * R;
  bwd.check = [&] {
    return lab::both(lab::compare("dx", p.dx.data(), p.dx_ref.data(), n, 1e-5, 1e-4),
                     lab::both(lab::compare("dw", p.dw.data(), p.dw_ref.data(), C, atol_sum, 1e-4),
                               lab::compare("db", p.db.data(), p.db_ref.data(), C, atol_sum, 1e-4)));
  };

  using lab::Isa;
  std::vector<lab::Version> v = {
      {"naive: three passes, scalar sums", 0, false, Isa::any, [&] { v1_forward_naive(p); }},
      {"fused: one pass for both moments", 0, false, Isa::any, [&] { v2_forward_fused(p); }},
      {"cpu::layernorm_forward (production)", 0, true, Isa::any, [&] { v3_forward_production(p); }},
      {"naive: scalar sums", 1, false, Isa::any, [&] { v4_backward_naive(p); }},
      {"fused: one vectorised pass for the sums", 1, false, Isa::any, [&] { v5_backward_fused(p); }},
      {"cpu::layernorm_backward (production)", 1, true, Isa::any, [&] { v6_backward_production(p); }},
  };
  char desc[128];
  std::snprintf(desc, sizeof desc, "LayerNorm over C = %lld channels of R = %lld rows (x: %.1f MiB)", (long long)C,
                (long long)R, 4.0 * n / (1 << 20));
  return lab::run("layernorm", desc, {fwd, bwd}, v, opt);
}
