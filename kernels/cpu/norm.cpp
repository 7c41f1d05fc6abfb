// kernels/cpu/norm.cpp - LayerNorm and BatchNorm, CPU.
// Shape letters and the save/overwrite rules: see norm.h.
//
// LayerNorm rows: with I = 1 a row is C contiguous floats (parallel over
// rows, vectorised reductions over C); with I > 1 the C values of a row are
// I apart, so rows are taken in tiles of kTile neighbours along I and the
// reductions over C run vectorised across the tile.
// Per-channel sums (BatchNorm statistics, dweight, dbias) go through
// channel_sums(): with I = 1, fixed blocks of outer rows vectorised over C,
// block partials reduced in order; with I > 1, parallel over channels, each
// channel summed in a fixed order. Both are deterministic for any thread count.
// Means and variances are two-pass (mean first, then squared deviations),
// except for synchronised BatchNorm, whose one exchange between ranks carries
// shifted sums and sums of squares (accumulated in double; see norm.h).
#include "kernels/cpu/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/elementwise.h"
#include "tensor/error.h"

namespace nala {
namespace cpu {

namespace {

constexpr int64_t kTile = 64;          // rows per tile when I > 1
constexpr int64_t kReduceBlocks = 64;  // fixed partial-sum blocks
constexpr int64_t kParallelWork = 1 << 15;  // below this many flops a parallel region costs more than it saves

struct Pair {
  float a, b;
};
struct PairD {
  double a, b;
};

// s1[c] = sum f(idx, c, r).a, s2[c] = sum f(idx, c, r).b over all (o, i), where
// idx = (o*C + c)*I + i is the element and r = o*I + i its LayerNorm row.
// Acc: the type of the block / row partial sums (float, or double where the
// sums feed a cancelling difference, as in batchnorm_sums).
template <class Acc = float, class F>
void channel_sums(double* s1, double* s2, int64_t O, int64_t C, int64_t I, F f) {
  if (I == 1) {
    const int64_t nblk = std::max<int64_t>(1, std::min(O, kReduceBlocks));
    std::vector<Acc> part(2 * nblk * C, Acc(0));
#pragma omp parallel for schedule(static) if (O * C > kParallelWork)
    for (int64_t blk = 0; blk < nblk; blk++) {
      Acc* p1 = part.data() + 2 * blk * C;
      Acc* p2 = p1 + C;
      for (int64_t o = blk * O / nblk; o < (blk + 1) * O / nblk; o++) {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
          const auto v = f(o * C + c, c, o);
          p1[c] += v.a;
          p2[c] += v.b;
        }
      }
    }
    for (int64_t c = 0; c < C; c++) {
      double a = 0, b = 0;
      for (int64_t blk = 0; blk < nblk; blk++) a += part[2 * blk * C + c], b += part[(2 * blk + 1) * C + c];
      s1[c] = a, s2[c] = b;
    }
  } else {
#pragma omp parallel for schedule(static) if (O * C * I > kParallelWork)
    for (int64_t c = 0; c < C; c++) {
      double a = 0, b = 0;
      for (int64_t o = 0; o < O; o++) {
        const int64_t base = (o * C + c) * I, rbase = o * I;
        Acc pa = 0, pb = 0;
#pragma omp simd reduction(+ : pa, pb)
        for (int64_t i = 0; i < I; i++) {
          const auto v = f(base + i, c, rbase + i);
          pa += v.a;
          pb += v.b;
        }
        a += pa, b += pb;
      }
      s1[c] = a, s2[c] = b;
    }
  }
}

// f(e, c) for every element e = (o*C + c)*I + i, vectorised along the contiguous dimension.
template <class F>
void per_channel_map(int64_t O, int64_t C, int64_t I, F f) {
  if (I == 1) {
#pragma omp parallel for schedule(static) if (O * C > kParallelWork)
    for (int64_t o = 0; o < O; o++)
#pragma omp simd
      for (int64_t c = 0; c < C; c++) f(o * C + c, c);
  } else {
#pragma omp parallel for collapse(2) schedule(static) if (O * C * I > kParallelWork)
    for (int64_t o = 0; o < O; o++)
      for (int64_t c = 0; c < C; c++)
#pragma omp simd
        for (int64_t i = 0; i < I; i++) f((o * C + c) * I + i, c);
  }
}

inline float wget(const float* w, int64_t c) { return w ? w[c] : 1.0f; }
inline float bget(const float* b, int64_t c) { return b ? b[c] : 0.0f; }

}  // namespace

// ---- LayerNorm -----------------------------------------------------------------

void layernorm_forward_naive(float* out, float* mean, float* rstd, const float* x, const float* weight,
                             const float* bias, int64_t O, int64_t C, int64_t I, float eps) {
  for (int64_t o = 0; o < O; o++)
    for (int64_t i = 0; i < I; i++) {
      auto at = [&](int64_t c) { return (o * C + c) * I + i; };
      double m = 0, v = 0;
      for (int64_t c = 0; c < C; c++) m += x[at(c)];
      m /= C;
      for (int64_t c = 0; c < C; c++) v += (x[at(c)] - m) * (x[at(c)] - m);
      float rs = (float)(1.0 / std::sqrt(v / C + eps));
      for (int64_t c = 0; c < C; c++)
        out[at(c)] = (float)((x[at(c)] - m) * rs) * wget(weight, c) + bget(bias, c);
      mean[o * I + i] = (float)m, rstd[o * I + i] = rs;
    }
}

void layernorm_backward_naive(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                              const float* mean, const float* rstd, const float* weight, int64_t O, int64_t C,
                              int64_t I) {
  if (dweight) std::fill(dweight, dweight + C, 0.0f);
  if (dbias) std::fill(dbias, dbias + C, 0.0f);
  for (int64_t o = 0; o < O; o++)
    for (int64_t i = 0; i < I; i++) {
      auto at = [&](int64_t c) { return (o * C + c) * I + i; };
      const float m = mean[o * I + i], rs = rstd[o * I + i];
      double m1 = 0, m2 = 0;  // mean of g and of g * xhat, g = dout * weight
      for (int64_t c = 0; c < C; c++) {
        double xh = (x[at(c)] - m) * rs, g = dout[at(c)] * wget(weight, c);
        m1 += g, m2 += g * xh;
        if (dweight) dweight[c] += dout[at(c)] * xh;
        if (dbias) dbias[c] += dout[at(c)];
      }
      m1 /= C, m2 /= C;
      if (dx)
        for (int64_t c = 0; c < C; c++) {
          double xh = (x[at(c)] - m) * rs, g = dout[at(c)] * wget(weight, c);
          dx[at(c)] = (float)(rs * (g - m1 - xh * m2));
        }
    }
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t O, int64_t C, int64_t I, float eps) {
  if (I == 1) {
#pragma omp parallel for schedule(static) if (O * C > kParallelWork)
    for (int64_t o = 0; o < O; o++) {
      const float* xr = x + o * C;
      float* yr = out + o * C;
      float s = 0, v = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < C; c++) s += xr[c];
      const float m = s / C;
#pragma omp simd reduction(+ : v)
      for (int64_t c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
      const float rs = 1.0f / std::sqrt(v / C + eps);
#pragma omp simd
      for (int64_t c = 0; c < C; c++) yr[c] = (xr[c] - m) * rs * wget(weight, c) + bget(bias, c);
      mean[o] = m, rstd[o] = rs;
    }
    return;
  }
  const int64_t ntile = (I + kTile - 1) / kTile;
#pragma omp parallel for collapse(2) schedule(static) if (O * C * I > kParallelWork)
  for (int64_t o = 0; o < O; o++)
    for (int64_t t = 0; t < ntile; t++) {
      const int64_t i0 = t * kTile, n = std::min(kTile, I - i0);
      float s[kTile] = {0}, v[kTile] = {0};
      const float* xo = x + o * C * I + i0;
      float* yo = out + o * C * I + i0;
      for (int64_t c = 0; c < C; c++)
#pragma omp simd
        for (int64_t i = 0; i < n; i++) s[i] += xo[c * I + i];
      for (int64_t i = 0; i < n; i++) s[i] /= C;
      for (int64_t c = 0; c < C; c++)
#pragma omp simd
        for (int64_t i = 0; i < n; i++) v[i] += (xo[c * I + i] - s[i]) * (xo[c * I + i] - s[i]);
      for (int64_t i = 0; i < n; i++) v[i] = 1.0f / std::sqrt(v[i] / C + eps);
      for (int64_t c = 0; c < C; c++) {
        const float wc = wget(weight, c), bc = bget(bias, c);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) yo[c * I + i] = (xo[c * I + i] - s[i]) * v[i] * wc + bc;
      }
      for (int64_t i = 0; i < n; i++) mean[o * I + i0 + i] = s[i], rstd[o * I + i0 + i] = v[i];
    }
}

void layernorm_gate_forward(float* out, float* y, float* mean, float* rstd, const float* x, const float* g,
                            const float* weight, const float* bias, int64_t R, int64_t C, float eps) {
  NALA_CHECK(y, "layernorm_gate_forward: the CPU needs y (the LayerNorm output's buffer)");
  const int64_t n = R * C;
  layernorm_forward(y, mean, rstd, x, weight, bias, R, C, 1, eps);
  silu_forward(out, g, n);
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; i++) out[i] = y[i] * out[i];
}

void gate_backward(float* dy, float* dg, const float* dout, const float* y, const float* g, int64_t n) {
  silu_forward(dy, g, n);
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; i++) dy[i] = dout[i] * dy[i];
  if (!dg) return;
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; i++) dg[i] = dout[i] * y[i];
  silu_backward(dg, dg, g, n);
}

void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* mean, const float* rstd, const float* weight, int64_t O, int64_t C,
                        int64_t I) {
  if (dweight || dbias) {
    std::vector<double> sw(C), sb(C);
    channel_sums(sw.data(), sb.data(), O, C, I, [&](int64_t idx, int64_t, int64_t r) {
      return Pair{dout[idx] * (x[idx] - mean[r]) * rstd[r], dout[idx]};
    });
    for (int64_t c = 0; c < C; c++) {
      if (dweight) dweight[c] = (float)sw[c];
      if (dbias) dbias[c] = (float)sb[c];
    }
  }
  if (!dx) return;
  if (I == 1) {
#pragma omp parallel for schedule(static) if (O * C > kParallelWork)
    for (int64_t o = 0; o < O; o++) {
      const float* xr = x + o * C;
      const float* gr = dout + o * C;
      float* dr = dx + o * C;
      const float m = mean[o], rs = rstd[o];
      float m1 = 0, m2 = 0;
#pragma omp simd reduction(+ : m1, m2)
      for (int64_t c = 0; c < C; c++) {
        const float g = gr[c] * wget(weight, c);
        m1 += g;
        m2 += g * (xr[c] - m) * rs;
      }
      m1 /= C, m2 /= C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) {
        const float g = gr[c] * wget(weight, c);
        dr[c] = rs * (g - m1 - (xr[c] - m) * rs * m2);
      }
    }
    return;
  }
  const int64_t ntile = (I + kTile - 1) / kTile;
#pragma omp parallel for collapse(2) schedule(static) if (O * C * I > kParallelWork)
  for (int64_t o = 0; o < O; o++)
    for (int64_t t = 0; t < ntile; t++) {
      const int64_t i0 = t * kTile, n = std::min(kTile, I - i0);
      const int64_t off = o * C * I + i0;
      const float* m = mean + o * I + i0;
      const float* rs = rstd + o * I + i0;
      float m1[kTile] = {0}, m2[kTile] = {0};
      for (int64_t c = 0; c < C; c++) {
        const float wc = wget(weight, c);
        const float* xo = x + off + c * I;
        const float* go = dout + off + c * I;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
          const float g = go[i] * wc;
          m1[i] += g;
          m2[i] += g * (xo[i] - m[i]) * rs[i];
        }
      }
      for (int64_t i = 0; i < n; i++) m1[i] /= C, m2[i] /= C;
      for (int64_t c = 0; c < C; c++) {
        const float wc = wget(weight, c);
        const float* xo = x + off + c * I;
        const float* go = dout + off + c * I;
        float* d = dx + off + c * I;
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
          d[i] = rs[i] * (go[i] * wc - m1[i] - (xo[i] - m[i]) * rs[i] * m2[i]);
      }
    }
}

// ---- BatchNorm -----------------------------------------------------------------

void batchnorm_train_stats_naive(float* mean, float* rstd, float* running_mean, float* running_var,
                                 const float* x, int64_t O, int64_t C, int64_t I, float momentum, float eps) {
  const int64_t n = O * I;
  for (int64_t c = 0; c < C; c++) {
    double m = 0, v = 0;
    for (int64_t o = 0; o < O; o++)
      for (int64_t i = 0; i < I; i++) m += x[(o * C + c) * I + i];
    m /= n;
    for (int64_t o = 0; o < O; o++)
      for (int64_t i = 0; i < I; i++) v += (x[(o * C + c) * I + i] - m) * (x[(o * C + c) * I + i] - m);
    v /= n;
    mean[c] = (float)m;
    rstd[c] = (float)(1.0 / std::sqrt(v + eps));
    if (running_mean) running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * m);
    if (running_var) running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * v * n / (n - 1));
  }
}

void batchnorm_forward_naive(float* out, const float* x, const float* mean, const float* rstd,
                             const float* weight, const float* bias, int64_t O, int64_t C, int64_t I) {
  for (int64_t o = 0; o < O; o++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < I; i++) {
        int64_t e = (o * C + c) * I + i;
        out[e] = (x[e] - mean[c]) * rstd[c] * wget(weight, c) + bget(bias, c);
      }
}

void batchnorm_backward_naive(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                              const float* mean, const float* rstd, const float* weight, int64_t O, int64_t C,
                              int64_t I, bool training) {
  const double n = (double)(O * I);
  for (int64_t c = 0; c < C; c++) {
    double sd = 0, sdx = 0;  // sum dout, sum dout * xhat
    for (int64_t o = 0; o < O; o++)
      for (int64_t i = 0; i < I; i++) {
        int64_t e = (o * C + c) * I + i;
        sd += dout[e], sdx += dout[e] * (x[e] - mean[c]) * rstd[c];
      }
    if (dweight) dweight[c] = (float)sdx;
    if (dbias) dbias[c] = (float)sd;
    if (!dx) continue;
    for (int64_t o = 0; o < O; o++)
      for (int64_t i = 0; i < I; i++) {
        int64_t e = (o * C + c) * I + i;
        double xh = (x[e] - mean[c]) * rstd[c], g = dout[e];
        if (training) g = g - sd / n - xh * sdx / n;
        dx[e] = (float)(wget(weight, c) * rstd[c] * g);
      }
  }
}

void batchnorm_train_stats(float* mean, float* rstd, float* running_mean, float* running_var, const float* x,
                           int64_t O, int64_t C, int64_t I, float momentum, float eps) {
  const int64_t n = O * I;
  std::vector<double> s(C), v(C), unused(C);
  channel_sums(s.data(), unused.data(), O, C, I, [&](int64_t idx, int64_t, int64_t) { return Pair{x[idx], 0.0f}; });
  for (int64_t c = 0; c < C; c++) mean[c] = (float)(s[c] / n);
  channel_sums(v.data(), unused.data(), O, C, I, [&](int64_t idx, int64_t c, int64_t) {
    const float d = x[idx] - mean[c];
    return Pair{d * d, 0.0f};
  });
  for (int64_t c = 0; c < C; c++) {
    const double var = v[c] / n;
    rstd[c] = (float)(1.0 / std::sqrt(var + eps));
    if (running_mean) running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * (s[c] / n));
    if (running_var) running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * var * n / (n - 1));
  }
}

void batchnorm_eval_stats(float* mean, float* rstd, const float* running_mean, const float* running_var,
                          int64_t C, float eps) {
  for (int64_t c = 0; c < C; c++) {
    mean[c] = running_mean[c];
    rstd[c] = 1.0f / std::sqrt(running_var[c] + eps);
  }
}

void batchnorm_forward(float* out, const float* x, const float* mean, const float* rstd, const float* weight,
                       const float* bias, int64_t O, int64_t C, int64_t I) {
  // y = (x - mean[c]) * scale[c] + shift[c]
  std::vector<float> scale(C), shift(C);
  for (int64_t c = 0; c < C; c++) scale[c] = rstd[c] * wget(weight, c), shift[c] = bget(bias, c);
  const float* sc = scale.data();
  const float* sh = shift.data();
  per_channel_map(O, C, I, [&](int64_t e, int64_t c) { out[e] = (x[e] - mean[c]) * sc[c] + sh[c]; });
}

void batchnorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* mean, const float* rstd, const float* weight, int64_t O, int64_t C,
                        int64_t I, bool training) {
  const double n = (double)(O * I);
  std::vector<double> sd(C), sdx(C);  // sum dout, sum dout * xhat
  channel_sums(sd.data(), sdx.data(), O, C, I, [&](int64_t idx, int64_t c, int64_t) {
    return Pair{dout[idx], dout[idx] * (x[idx] - mean[c]) * rstd[c]};
  });
  for (int64_t c = 0; c < C; c++) {
    if (dweight) dweight[c] = (float)sdx[c];
    if (dbias) dbias[c] = (float)sd[c];
  }
  if (!dx) return;
  // dx = a[c] * dout + b[c] * (x - mean[c]) + d[c]   (training: through the batch statistics)
  std::vector<float> a(C), b(C), d(C);
  for (int64_t c = 0; c < C; c++) {
    const double k = (double)wget(weight, c) * rstd[c];
    a[c] = (float)k, b[c] = 0.0f, d[c] = 0.0f;
    if (training) {
      b[c] = (float)(-k * (sdx[c] / n) * rstd[c]);  // xhat = (x - mean) rstd
      d[c] = (float)(-k * (sd[c] / n));
    }
  }
  const float* pa = a.data();
  const float* pb = b.data();
  const float* pd = d.data();
  per_channel_map(O, C, I,
                  [&](int64_t e, int64_t c) { dx[e] = pa[c] * dout[e] + pb[c] * (x[e] - mean[c]) + pd[c]; });
}

// ---- Synchronised BatchNorm ------------------------------------------------------

void batchnorm_sums_naive(float* sums, const float* x, const float* shift, int64_t O, int64_t C, int64_t I) {
  for (int64_t c = 0; c < C; c++) {
    const double k = shift ? shift[c] : 0.0;
    double s1 = 0, s2 = 0;
    for (int64_t o = 0; o < O; o++)
      for (int64_t i = 0; i < I; i++) {
        const double d = x[(o * C + c) * I + i] - k;
        s1 += d, s2 += d * d;
      }
    sums[c] = (float)s1, sums[C + c] = (float)s2;
  }
  sums[2 * C] = (float)(O * I);
}

void batchnorm_backward_dx_global_naive(float* dx, const float* dout, const float* x, const float* mean,
                                        const float* rstd, const float* weight, const float* grad_sums,
                                        const float* count, int64_t O, int64_t C, int64_t I) {
  const double n = *count;
  for (int64_t o = 0; o < O; o++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < I; i++) {
        const int64_t e = (o * C + c) * I + i;
        const double xh = ((double)x[e] - mean[c]) * rstd[c];
        dx[e] = (float)(wget(weight, c) * (double)rstd[c] *
                        (dout[e] - grad_sums[C + c] / n - xh * grad_sums[c] / n));
      }
}

void batchnorm_sums(float* sums, const float* x, const float* shift, int64_t O, int64_t C, int64_t I) {
  std::vector<double> s1(C), s2(C);
  channel_sums<double>(s1.data(), s2.data(), O, C, I, [&](int64_t idx, int64_t c, int64_t) {
    const double d = (double)x[idx] - (shift ? shift[c] : 0.0f);
    return PairD{d, d * d};
  });
  for (int64_t c = 0; c < C; c++) sums[c] = (float)s1[c], sums[C + c] = (float)s2[c];
  sums[2 * C] = (float)(O * I);
}

void batchnorm_sync_stats(float* mean, float* rstd, float* running_mean, float* running_var, const float* sums,
                          const float* shift, int64_t C, float momentum, float eps) {
  const double n = sums[2 * C];
  for (int64_t c = 0; c < C; c++) {
    const double m = sums[c] / n, var = std::max(sums[C + c] / n - m * m, 0.0);
    const double mu = (shift ? shift[c] : 0.0) + m;  // read shift before running_mean (may alias) is written
    mean[c] = (float)mu;
    rstd[c] = (float)(1.0 / std::sqrt(var + eps));
    if (running_mean) running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
    if (running_var)
      running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * (n > 1 ? var * n / (n - 1) : var));
  }
}

void batchnorm_backward_dx_global(float* dx, const float* dout, const float* x, const float* mean,
                                  const float* rstd, const float* weight, const float* grad_sums,
                                  const float* count, int64_t O, int64_t C, int64_t I) {
  // dx = a[c] * dout + b[c] * (x - mean[c]) + d[c], as in batchnorm_backward with global sums.
  const double n = *count;
  std::vector<float> a(C), b(C), d(C);
  for (int64_t c = 0; c < C; c++) {
    const double k = (double)wget(weight, c) * rstd[c];
    a[c] = (float)k;
    b[c] = (float)(-k * (grad_sums[c] / n) * rstd[c]);
    d[c] = (float)(-k * (grad_sums[C + c] / n));
  }
  const float* pa = a.data();
  const float* pb = b.data();
  const float* pd = d.data();
  per_channel_map(O, C, I,
                  [&](int64_t e, int64_t c) { dx[e] = pa[c] * dout[e] + pb[c] * (x[e] - mean[c]) + pd[c]; });
}

}  // namespace cpu
}  // namespace nala
