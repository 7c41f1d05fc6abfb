// kernels/cpu/reduce.cpp - sum/mean, l2norm and the softmax family on
// (O, R, I) arrays (letters and rules in reduce.h).
//
// The fast kernels split (O, I) into pieces of at most kBlock inner elements
// and loop over r inside a piece, so the inner loop runs along contiguous
// memory and vectorises. When I == 1 (the last dimension is reduced) each
// row is one contiguous run and gets its own path. Sums over a long R with
// few pieces are split into fixed-length chunks whose partial sums are added
// in chunk order afterwards, which keeps every thread busy and the result
// independent of the thread count.
#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/exp_fast.h"

namespace nala {
namespace cpu {

static constexpr int64_t kBlock = 256;         // inner elements per piece
static constexpr int64_t kParallelMin = 16384;  // below this many elements, one thread
static constexpr int64_t kMinPieces = 64;       // fewer (o, block) pieces than this: chunk R

// ---------------------------------------------------------------------------
// Sums (and sums of squares) over r.

template <bool Square>
static inline float sq(float v) {
  return Square ? v * v : v;
}

// y[o, i] = alpha * sum_r f(x[o, r, i]), f = identity or square.
template <bool Square>
static void sum_impl(float* y, const float* x, int64_t O, int64_t R, int64_t I, float alpha) {
  if (O * I == 0) return;
  if (R == 0) {
    std::fill(y, y + O * I, 0.0f);
    return;
  }
  const int64_t nb = (I + kBlock - 1) / kBlock;
  // Chunk length along R: a fixed function of the shape, never of the thread count.
  int64_t Rc = R;
  if (O * nb < kMinPieces) Rc = std::max<int64_t>(64, 16384 / I);
  const int64_t nc = (R + Rc - 1) / Rc;
  std::vector<float> part(nc > 1 ? O * nc * I : 0);  // partial sums (O, nc, I)
  float* dst = nc > 1 ? part.data() : y;
  const float a = nc > 1 ? 1.0f : alpha;
  const int64_t tasks = O * nc * nb;
#pragma omp parallel for schedule(static) if (O * R * I > kParallelMin)
  for (int64_t t = 0; t < tasks; t++) {
    const int64_t b = t % nb, c = (t / nb) % nc, o = t / (nb * nc);
    const int64_t r0 = c * Rc, r1 = std::min(R, r0 + Rc);
    float* out = dst + (o * nc + c) * I;
    if (I == 1) {
      const float* p = x + o * R;
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t r = r0; r < r1; r++) s += sq<Square>(p[r]);
      out[0] = a * (float)s;
    } else {
      const int64_t i0 = b * kBlock, w = std::min(I, i0 + kBlock) - i0;
      double acc[kBlock];  // double: long sums of floats stay accurate, and the loop is memory-bound
      for (int64_t i = 0; i < w; i++) acc[i] = 0.0;
      for (int64_t r = r0; r < r1; r++) {
        const float* p = x + (o * R + r) * I + i0;
#pragma omp simd
        for (int64_t i = 0; i < w; i++) acc[i] += sq<Square>(p[i]);
      }
      for (int64_t i = 0; i < w; i++) out[i0 + i] = a * (float)acc[i];
    }
  }
  if (nc > 1) {
#pragma omp parallel for schedule(static) if (O * I * nc > kParallelMin)
    for (int64_t j = 0; j < O * I; j++) {
      const int64_t o = j / I, i = j % I;
      double s = 0;
      for (int64_t c = 0; c < nc; c++) s += part[(o * nc + c) * I + i];
      y[j] = alpha * (float)s;
    }
  }
}

void reduce_sum_naive(float* y, const float* x, int64_t O, int64_t R, int64_t I, float alpha) {
  for (int64_t o = 0; o < O; o++)
    for (int64_t i = 0; i < I; i++) {
      double s = 0;
      for (int64_t r = 0; r < R; r++) s += x[(o * R + r) * I + i];
      y[o * I + i] = (float)(alpha * s);
    }
}

void reduce_sum(float* y, const float* x, int64_t O, int64_t R, int64_t I, float alpha) {
  sum_impl<false>(y, x, O, R, I, alpha);
}

void reduce_sum_backward(float* dx, const float* dy, int64_t O, int64_t R, int64_t I, float alpha) {
#pragma omp parallel for schedule(static) if (O * R * I > kParallelMin)
  for (int64_t row = 0; row < O * R; row++) {
    const float* g = dy + (row / R) * I;
    float* d = dx + row * I;
#pragma omp simd
    for (int64_t i = 0; i < I; i++) d[i] = alpha * g[i];
  }
}

// ---------------------------------------------------------------------------
// l2norm

void l2norm_forward_naive(float* y, const float* x, int64_t O, int64_t R, int64_t I, float floor) {
  for (int64_t o = 0; o < O; o++)
    for (int64_t i = 0; i < I; i++) {
      double s = 0;
      for (int64_t r = 0; r < R; r++) s += (double)x[(o * R + r) * I + i] * x[(o * R + r) * I + i];
      y[o * I + i] = std::max((float)std::sqrt(s), floor);
    }
}

void l2norm_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I, float floor) {
  sum_impl<true>(y, x, O, R, I, 1.0f);
#pragma omp parallel for simd schedule(static) if (O * I > kParallelMin)
  for (int64_t j = 0; j < O * I; j++) y[j] = std::max(std::sqrt(y[j]), floor);
}

void l2norm_backward(float* dx, const float* dy, const float* x, const float* y, int64_t O, int64_t R, int64_t I,
                     float floor) {
#pragma omp parallel for schedule(static) if (O * R * I > kParallelMin)
  for (int64_t row = 0; row < O * R; row++) {
    const int64_t o = row / R;
    const float* xr = x + row * I;
    float* d = dx + row * I;
    for (int64_t i = 0; i < I; i++) {
      const float n = y[o * I + i];
      d[i] = n > floor ? dy[o * I + i] * xr[i] / n : 0.0f;
    }
  }
}

// ---------------------------------------------------------------------------
// softmax and log_softmax

void softmax_forward_naive(float* y, const float* x, int64_t O, int64_t R, int64_t I) {
  for (int64_t o = 0; o < O; o++)
    for (int64_t i = 0; i < I; i++) {
      auto at = [&](int64_t r) { return (o * R + r) * I + i; };
      double m = -INFINITY, s = 0;
      for (int64_t r = 0; r < R; r++) m = std::max(m, (double)x[at(r)]);
      for (int64_t r = 0; r < R; r++) s += std::exp(x[at(r)] - m);
      for (int64_t r = 0; r < R; r++) y[at(r)] = (float)(std::exp(x[at(r)] - m) / s);
    }
}

void log_softmax_forward_naive(float* y, const float* x, int64_t O, int64_t R, int64_t I) {
  for (int64_t o = 0; o < O; o++)
    for (int64_t i = 0; i < I; i++) {
      auto at = [&](int64_t r) { return (o * R + r) * I + i; };
      double m = -INFINITY, s = 0;
      for (int64_t r = 0; r < R; r++) m = std::max(m, (double)x[at(r)]);
      for (int64_t r = 0; r < R; r++) s += std::exp(x[at(r)] - m);
      for (int64_t r = 0; r < R; r++) y[at(r)] = (float)(x[at(r)] - m - std::log(s));
    }
}

void softmax_backward_naive(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I) {
  for (int64_t o = 0; o < O; o++)
    for (int64_t i = 0; i < I; i++) {
      auto at = [&](int64_t r) { return (o * R + r) * I + i; };
      double dot = 0;
      for (int64_t r = 0; r < R; r++) dot += (double)dy[at(r)] * y[at(r)];
      for (int64_t r = 0; r < R; r++) dx[at(r)] = (float)(y[at(r)] * (dy[at(r)] - dot));
    }
}

void log_softmax_backward_naive(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I) {
  for (int64_t o = 0; o < O; o++)
    for (int64_t i = 0; i < I; i++) {
      auto at = [&](int64_t r) { return (o * R + r) * I + i; };
      double s = 0;
      for (int64_t r = 0; r < R; r++) s += dy[at(r)];
      for (int64_t r = 0; r < R; r++) dx[at(r)] = (float)(dy[at(r)] - std::exp((double)y[at(r)]) * s);
    }
}

// One contiguous row (I == 1): the fast path for the last dimension.
template <bool Log>
static void softmax_row(float* q, const float* p, int64_t R) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t r = 0; r < R; r++) m = std::max(m, p[r]);
  float s = 0.0f;
  if (Log) {
#pragma omp simd reduction(+ : s)
    for (int64_t r = 0; r < R; r++) s += exp_fast(p[r] - m);
  } else {
#pragma omp simd reduction(+ : s)
    for (int64_t r = 0; r < R; r++) {
      const float e = exp_fast(p[r] - m);
      q[r] = e;
      s += e;
    }
  }
  if (Log) {
    const float c = m + std::log(s);
#pragma omp simd
    for (int64_t r = 0; r < R; r++) q[r] = p[r] - c;
  } else {
    const float inv = 1.0f / s;
#pragma omp simd
    for (int64_t r = 0; r < R; r++) q[r] *= inv;
  }
}

// A piece of w <= kBlock inner columns, rows r strided by I.
template <bool Log>
static void softmax_piece(float* q, const float* p, int64_t R, int64_t I, int64_t w) {
  float m[kBlock], s[kBlock];
  for (int64_t i = 0; i < w; i++) m[i] = -INFINITY, s[i] = 0.0f;
  for (int64_t r = 0; r < R; r++)
#pragma omp simd
    for (int64_t i = 0; i < w; i++) m[i] = std::max(m[i], p[r * I + i]);
  for (int64_t r = 0; r < R; r++)
#pragma omp simd
    for (int64_t i = 0; i < w; i++) {
      const float e = exp_fast(p[r * I + i] - m[i]);
      if (!Log) q[r * I + i] = e;
      s[i] += e;
    }
  if (Log) {
    for (int64_t i = 0; i < w; i++) m[i] += std::log(s[i]);
    for (int64_t r = 0; r < R; r++)
#pragma omp simd
      for (int64_t i = 0; i < w; i++) q[r * I + i] = p[r * I + i] - m[i];
  } else {
    for (int64_t i = 0; i < w; i++) s[i] = 1.0f / s[i];
    for (int64_t r = 0; r < R; r++)
#pragma omp simd
      for (int64_t i = 0; i < w; i++) q[r * I + i] *= s[i];
  }
}

template <bool Log>
static void softmax_impl(float* y, const float* x, int64_t O, int64_t R, int64_t I) {
  if (I == 1) {
#pragma omp parallel for schedule(static) if (O * R > kParallelMin)
    for (int64_t o = 0; o < O; o++) softmax_row<Log>(y + o * R, x + o * R, R);
    return;
  }
  const int64_t nb = (I + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (O * R * I > kParallelMin)
  for (int64_t t = 0; t < O * nb; t++) {
    const int64_t o = t / nb, i0 = (t % nb) * kBlock;
    const int64_t off = o * R * I + i0;
    softmax_piece<Log>(y + off, x + off, R, I, std::min(I, i0 + kBlock) - i0);
  }
}

void softmax_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I) {
  softmax_impl<false>(y, x, O, R, I);
}
void log_softmax_forward(float* y, const float* x, int64_t O, int64_t R, int64_t I) {
  softmax_impl<true>(y, x, O, R, I);
}

// Backward: softmax dx = y (dy - sum dy y); log_softmax dx = dy - exp(y) sum dy.
template <bool Log>
static void softmax_backward_impl(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I) {
  if (I == 1) {
#pragma omp parallel for schedule(static) if (O * R > kParallelMin)
    for (int64_t o = 0; o < O; o++) {
      const float *g = dy + o * R, *p = y + o * R;
      float* d = dx + o * R;
      float s = 0.0f;
      if (Log) {
#pragma omp simd reduction(+ : s)
        for (int64_t r = 0; r < R; r++) s += g[r];
#pragma omp simd
        for (int64_t r = 0; r < R; r++) d[r] = g[r] - exp_fast(p[r]) * s;
      } else {
#pragma omp simd reduction(+ : s)
        for (int64_t r = 0; r < R; r++) s += g[r] * p[r];
#pragma omp simd
        for (int64_t r = 0; r < R; r++) d[r] = p[r] * (g[r] - s);
      }
    }
    return;
  }
  const int64_t nb = (I + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (O * R * I > kParallelMin)
  for (int64_t t = 0; t < O * nb; t++) {
    const int64_t o = t / nb, i0 = (t % nb) * kBlock, w = std::min(I, i0 + kBlock) - i0;
    const int64_t off = o * R * I + i0;
    const float *g = dy + off, *p = y + off;
    float* d = dx + off;
    float s[kBlock];
    for (int64_t i = 0; i < w; i++) s[i] = 0.0f;
    for (int64_t r = 0; r < R; r++)
#pragma omp simd
      for (int64_t i = 0; i < w; i++) s[i] += Log ? g[r * I + i] : g[r * I + i] * p[r * I + i];
    for (int64_t r = 0; r < R; r++)
#pragma omp simd
      for (int64_t i = 0; i < w; i++) {
        const int64_t k = r * I + i;
        d[k] = Log ? g[k] - exp_fast(p[k]) * s[i] : p[k] * (g[k] - s[i]);
      }
  }
}

void softmax_backward(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I) {
  softmax_backward_impl<false>(dx, dy, y, O, R, I);
}
void log_softmax_backward(float* dx, const float* dy, const float* y, int64_t O, int64_t R, int64_t I) {
  softmax_backward_impl<true>(dx, dy, y, O, R, I);
}

}  // namespace cpu
}  // namespace nala
