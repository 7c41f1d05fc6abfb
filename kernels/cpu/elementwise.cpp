// kernels/cpu/elementwise.cpp - unary, broadcasting binary and sum_to kernels.
//
// Unary kernels are one parallel loop over a scalar formula; the formula is
// the reference. The broadcasting kernels walk a collapsed Layout: the work is
// split into one piece per thread along a dim (kernels/cpu/shape.h), each
// piece walks its rows (the last dim), and each row picks an inner loop with
// compile-time strides for the common patterns so that it vectorises.
#include "kernels/cpu/elementwise.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace nala {

const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
    case BinaryOp::Pow: return "pow";
  }
  return "?";
}

namespace cpu {

namespace {
constexpr int64_t kPar = 1 << 15;  // below this many elements, run on one thread

template <class F>
void map1(float* out, const float* x, int64_t n, F f) {
#pragma omp parallel for simd schedule(static) if (n > kPar)
  for (int64_t i = 0; i < n; i++) out[i] = f(x[i]);
}

template <class F>
void map2(float* out, const float* g, const float* x, int64_t n, F f) {
#pragma omp parallel for simd schedule(static) if (n > kPar)
  for (int64_t i = 0; i < n; i++) out[i] = f(g[i], x[i]);
}

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

// Vectorisable exp and erf (std::exp and std::erf are library calls that the
// compiler will not vectorise). exp: e^x = 2^k e^r with k = round(x log2 e)
// and r = x - k ln 2 (ln 2 split in two for precision, |r| <= ln2 / 2), e^r
// by its degree-7 Taylor polynomial (relative error < 1e-7; 0 below -87,
// saturates above 88).
inline float exp_v(float x) {
  // Plain compares and the 1.5 * 2^23 rounding trick (not fmin/floor) keep
  // this loop vectorisable.
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - k * 0.693145751953125f;
  r = r - k * 1.428606765330187045e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = ((int32_t)k + 127) << 23;
  float two_k;
  std::memcpy(&two_k, &bits, sizeof two_k);
  return p * two_k;
}
// erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7).
inline float erf_v(float x) {
  float a = std::fabs(x);
  float t = 1.0f / (1.0f + 0.3275911f * a);
  float y = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  float r = 1.0f - y * exp_v(-a * a);
  return std::copysign(r, x);
}
inline float sigmoidf(float x) { return 1.0f / (1.0f + exp_v(-x)); }
}  // namespace

void axpy(float* y, const float* x, float a, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kPar)
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

void fill(float* out, float v, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kPar)
  for (int64_t i = 0; i < n; i++) out[i] = v;
}

void copy(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return v; });
}

void cast_f32_bf16(bf16_t* out, const float* x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kPar)
  for (int64_t i = 0; i < n; i++) out[i] = float_to_bf16(x[i]);
}
void cast_bf16_f32(float* out, const bf16_t* x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kPar)
  for (int64_t i = 0; i < n; i++) out[i] = bf16_to_float(x[i]);
}

void add_bf16(bf16_t* out, const bf16_t* a, const bf16_t* b, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kPar)
  for (int64_t i = 0; i < n; i++) out[i] = float_to_bf16(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}

void scale_forward(float* out, const float* x, float s, int64_t n) {
  map1(out, x, n, [s](float v) { return v * s; });
}
void add_scalar_forward(float* out, const float* x, float s, int64_t n) {
  map1(out, x, n, [s](float v) { return v + s; });
}

void scale_add_forward(float* out, const float* x, const float* y, const float* gamma, int64_t R, int64_t C,
                       const float* row_scale, int64_t rows_per_scale) {
#pragma omp parallel for schedule(static) if (R * C > kPar)
  for (int64_t r = 0; r < R; r++) {
    const float *xr = x + r * C, *yr = y + r * C;
    float* o = out + r * C;
    // each rounding in its own pass over the row, so the compiler cannot
    // contract a product and the sum into an FMA: the product, the sample's
    // factor, then the sum
    for (int64_t c = 0; c < C; c++) o[c] = yr[c] * gamma[c];
    if (row_scale) {
      const float f = row_scale[r / rows_per_scale];
      for (int64_t c = 0; c < C; c++) o[c] = o[c] * f;
    }
    for (int64_t c = 0; c < C; c++) o[c] = xr[c] + o[c];
  }
}

// ---- unary ----------------------------------------------------------------

void relu_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return v > 0.0f ? v : 0.0f; });
}
void relu_backward(float* dx, const float* dout, const float* x, int64_t n) {
  map2(dx, dout, x, n, [](float g, float v) { return v > 0.0f ? g : 0.0f; });
}

void gelu_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return 0.5f * v * (1.0f + erf_v(v * kInvSqrt2)); });
}
void gelu_backward(float* dx, const float* dout, const float* x, int64_t n) {
  // d/dx x Phi(x) = Phi(x) + x phi(x)
  map2(dx, dout, x, n, [](float g, float v) {
    float cdf = 0.5f * (1.0f + erf_v(v * kInvSqrt2));
    float pdf = kInvSqrt2Pi * exp_v(-0.5f * v * v);
    return g * (cdf + v * pdf);
  });
}
// The references, with the library's erf and exp.
void gelu_forward_naive(float* out, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * kInvSqrt2));
}
void gelu_backward_naive(float* dx, const float* dout, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    dx[i] = dout[i] * (0.5f * (1.0f + std::erf(v * kInvSqrt2)) + v * kInvSqrt2Pi * std::exp(-0.5f * v * v));
  }
}

void silu_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return v * sigmoidf(v); });
}
void silu_backward(float* dx, const float* dout, const float* x, int64_t n) {
  map2(dx, dout, x, n, [](float g, float v) {
    float s = sigmoidf(v);
    return g * s * (1.0f + v * (1.0f - s));
  });
}
void silu_forward_naive(float* out, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + std::exp(-x[i]));
}

void tanh_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return std::tanh(v); });
}
void tanh_backward(float* dx, const float* dout, const float* y, int64_t n) {
  map2(dx, dout, y, n, [](float g, float t) { return g * (1.0f - t * t); });
}

void sigmoid_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return sigmoidf(v); });
}
void sigmoid_backward(float* dx, const float* dout, const float* y, int64_t n) {
  map2(dx, dout, y, n, [](float g, float s) { return g * s * (1.0f - s); });
}

void exp_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return exp_v(v); });
}
void exp_backward(float* dx, const float* dout, const float* y, int64_t n) {
  map2(dx, dout, y, n, [](float g, float e) { return g * e; });
}

void sin_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return std::sin(v); });
}
void sin_backward(float* dx, const float* dout, const float* x, int64_t n) {
  map2(dx, dout, x, n, [](float g, float v) { return g * std::cos(v); });
}
void cos_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return std::cos(v); });
}
void cos_backward(float* dx, const float* dout, const float* x, int64_t n) {
  map2(dx, dout, x, n, [](float g, float v) { return -g * std::sin(v); });
}

// std::expm1 keeps exp(x) - 1 accurate for small |x|.
void elu_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return v > 0.0f ? v : std::expm1(v); });
}
void elu_backward(float* dx, const float* dout, const float* y, int64_t n) {
  map2(dx, dout, y, n, [](float g, float e) { return e > 0.0f ? g : g * (e + 1.0f); });
}

void log_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return std::log(v); });
}
void log_backward(float* dx, const float* dout, const float* x, int64_t n) {
  map2(dx, dout, x, n, [](float g, float v) { return g / v; });
}

void sqrt_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return std::sqrt(v); });
}
void sqrt_backward(float* dx, const float* dout, const float* y, int64_t n) {
  map2(dx, dout, y, n, [](float g, float r) { return 0.5f * g / r; });
}

void cube_forward(float* out, const float* x, int64_t n) {
  map1(out, x, n, [](float v) { return v * v * v; });
}
void cube_backward(float* dx, const float* dout, const float* x, int64_t n) {
  map2(dx, dout, x, n, [](float g, float v) { return 3.0f * v * v * g; });
}

// ---- broadcasting binary --------------------------------------------------
// Each op: f (forward), da and db (dout times the partial derivative).

namespace {
struct AddOp {
  static float f(float a, float b) { return a + b; }
  static float da(float g, float, float) { return g; }
  static float db(float g, float, float) { return g; }
};
struct SubOp {
  static float f(float a, float b) { return a - b; }
  static float da(float g, float, float) { return g; }
  static float db(float g, float, float) { return -g; }
};
struct MulOp {
  static float f(float a, float b) { return a * b; }
  static float da(float g, float, float b) { return g * b; }
  static float db(float g, float a, float) { return g * a; }
};
struct DivOp {
  static float f(float a, float b) { return a / b; }
  static float da(float g, float, float b) { return g / b; }
  static float db(float g, float a, float b) { return -g * a / (b * b); }
};
// x^p for x >= 0. Both partials are defined as 0 at x == 0 (never ln 0).
struct PowOp {
  static float f(float x, float p) { return std::pow(x, p); }
  static float da(float g, float x, float p) { return x == 0.0f ? 0.0f : g * p * std::pow(x, p - 1.0f); }
  static float db(float g, float x, float p) { return x == 0.0f ? 0.0f : g * std::pow(x, p) * std::log(x); }
};

#define NALA_BINARY_SWITCH(op, CALL)        \
  switch (op) {                             \
    case BinaryOp::Add: CALL(AddOp); break; \
    case BinaryOp::Sub: CALL(SubOp); break; \
    case BinaryOp::Mul: CALL(MulOp); break; \
    case BinaryOp::Div: CALL(DivOp); break; \
    case BinaryOp::Pow: CALL(PowOp); break; \
  }

// One row: o[i] = f(g[i], a[i*sa], b[i*sb]), o and g contiguous. The three
// common stride patterns get loops the compiler can vectorise.
template <class F>
inline void row3(float* o, const float* g, const float* a, int64_t sa, const float* b, int64_t sb, int64_t n, F f) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; i++) o[i] = f(g[i], a[i], b[i]);
  } else if (sa == 1 && sb == 0) {
    const float bv = *b;
    for (int64_t i = 0; i < n; i++) o[i] = f(g[i], a[i], bv);
  } else if (sa == 0 && sb == 1) {
    const float av = *a;
    for (int64_t i = 0; i < n; i++) o[i] = f(g[i], av, b[i]);
  } else {
    for (int64_t i = 0; i < n; i++) o[i] = f(g[i], a[i * sa], b[i * sb]);
  }
}

template <class Op>
void forward_impl(float* out, const float* a, const float* b, const Layout& L, bool fast) {
  if (layout_numel(L) == 0) return;
  const int last = L.nd - 1;
  detail::parallel_pieces(L, kPar, -1, [&](const Layout& p, int64_t oo, int64_t oa, int64_t ob, int) {
    const int64_t n = p.size[last], so = p.so[last], sa = p.sa[last], sb = p.sb[last];
    detail::for_rows(p, [&](int64_t po, int64_t pa, int64_t pb) {
      float* o = out + oo + po;
      const float* x = a + oa + pa;
      const float* y = b + ob + pb;
      if (fast && so == 1) {
        row3(o, o, x, sa, y, sb, n, [](float, float u, float v) { return Op::f(u, v); });
      } else {
        for (int64_t i = 0; i < n; i++) o[i * so] = Op::f(x[i * sa], y[i * sb]);
      }
    });
  });
}

template <class Op>
void backward_impl(float* da, float* db, const float* g, const float* a, const float* b, const Layout& L) {
  if (layout_numel(L) == 0) return;
  const int last = L.nd - 1;
  detail::parallel_pieces(L, kPar, -1, [&](const Layout& p, int64_t oo, int64_t oa, int64_t ob, int) {
    const int64_t n = p.size[last], so = p.so[last], sa = p.sa[last], sb = p.sb[last];
    detail::for_rows(p, [&](int64_t po, int64_t pa, int64_t pb) {
      const float* gr = g + oo + po;
      const float* x = a + oa + pa;
      const float* y = b + ob + pb;
      if (so == 1) {
        if (da) row3(da + oo + po, gr, x, sa, y, sb, n, [](float q, float u, float v) { return Op::da(q, u, v); });
        if (db) row3(db + oo + po, gr, x, sa, y, sb, n, [](float q, float u, float v) { return Op::db(q, u, v); });
      } else {
        for (int64_t i = 0; i < n; i++) {
          if (da) da[oo + po + i * so] = Op::da(gr[i * so], x[i * sa], y[i * sb]);
          if (db) db[oo + po + i * so] = Op::db(gr[i * so], x[i * sa], y[i * sb]);
        }
      }
    });
  });
}

// Element e of L in row-major order -> offsets of the three operands.
inline void decode(const Layout& L, int64_t e, int64_t& po, int64_t& pa, int64_t& pb) {
  po = pa = pb = 0;
  for (int d = L.nd - 1; d >= 0; d--) {
    int64_t i = e % L.size[d];
    e /= L.size[d];
    po += i * L.so[d], pa += i * L.sa[d], pb += i * L.sb[d];
  }
}
}  // namespace

void binary_forward(BinaryOp op, float* out, const float* a, const float* b, Layout L) {
#define NALA_CALL(OP) forward_impl<OP>(out, a, b, L, true)
  NALA_BINARY_SWITCH(op, NALA_CALL)
#undef NALA_CALL
}

void binary_forward_strided(BinaryOp op, float* out, const float* a, const float* b, Layout L) {
#define NALA_CALL(OP) forward_impl<OP>(out, a, b, L, false)
  NALA_BINARY_SWITCH(op, NALA_CALL)
#undef NALA_CALL
}

void binary_forward_naive(BinaryOp op, float* out, const float* a, const float* b, Layout L) {
  int64_t n = layout_numel(L), po, pa, pb;
  for (int64_t e = 0; e < n; e++) {
    decode(L, e, po, pa, pb);
#define NALA_CALL(OP) out[po] = OP::f(a[pa], b[pb])
    NALA_BINARY_SWITCH(op, NALA_CALL)
#undef NALA_CALL
  }
}

void binary_backward(BinaryOp op, float* da, float* db, const float* dout, const float* a, const float* b,
                     Layout L) {
#define NALA_CALL(OP) backward_impl<OP>(da, db, dout, a, b, L)
  NALA_BINARY_SWITCH(op, NALA_CALL)
#undef NALA_CALL
}

void binary_backward_naive(BinaryOp op, float* da, float* db, const float* dout, const float* a, const float* b,
                           Layout L) {
  int64_t n = layout_numel(L), po, pa, pb;
  for (int64_t e = 0; e < n; e++) {
    decode(L, e, po, pa, pb);
#define NALA_CALL(OP)                                      \
  do {                                                     \
    if (da) da[po] = OP::da(dout[po], a[pa], b[pb]);       \
    if (db) db[po] = OP::db(dout[po], a[pa], b[pb]);       \
  } while (0)
    NALA_BINARY_SWITCH(op, NALA_CALL)
#undef NALA_CALL
  }
}
#undef NALA_BINARY_SWITCH

// ---- sum_to ---------------------------------------------------------------
// Two parallel plans. Small output (per-channel, scalar): each thread sums its
// piece of x into a private copy of out, then the copies are added. Large
// output: split a dim that out keeps, so threads write disjoint elements.

namespace {
// Add the rows of piece p (x offset ox, out offset oo) into o.
void accumulate_piece(float* o, const float* x, const Layout& p, int64_t oo, int64_t ox) {
  const int last = p.nd - 1;
  const int64_t n = p.size[last], so = p.so[last];
  detail::for_rows(p, [&](int64_t po, int64_t px, int64_t) {
    float* r = o + oo + po;
    const float* xr = x + ox + px;
    if (so == 0) {  // the last dim is summed over
      float t = 0.0f;
#pragma omp simd reduction(+ : t)
      for (int64_t i = 0; i < n; i++) t += xr[i];
      r[0] += t;
    } else if (so == 1) {
      for (int64_t i = 0; i < n; i++) r[i] += xr[i];
    } else {
      for (int64_t i = 0; i < n; i++) r[i * so] += xr[i];
    }
  });
}
}  // namespace

void sum_to(float* out, const float* x, Layout L) {
  int64_t N = layout_numel(L), M = 1;
  for (int d = 0; d < L.nd; d++)
    if (L.so[d] != 0) M *= L.size[d];
  if (N == 0) return;
  if (M == N) {  // nothing summed: a copy (the layout collapsed to so == sa)
    copy_strided(out, x, L);
    return;
  }
  int T = detail::num_threads();
  if (T <= 1 || N < kPar) {
    fill(out, 0.0f, M);
    accumulate_piece(out, x, L, 0, 0);
    return;
  }
  if (M * T * 4 <= N) {
    std::vector<float> part((size_t)(M * T), 0.0f);
    detail::parallel_pieces(L, 0, -1, [&](const Layout& p, int64_t oo, int64_t ox, int64_t, int t) {
      accumulate_piece(part.data() + (size_t)t * M, x, p, oo, ox);
    });
#pragma omp parallel for schedule(static) if (M > kPar)
    for (int64_t j = 0; j < M; j++) {
      float s = 0.0f;
      for (int t = 0; t < T; t++) s += part[(size_t)t * M + j];
      out[j] = s;
    }
    return;
  }
  int d = -1;
  for (int k = 0; k < L.nd; k++)
    if (L.so[k] != 0 && (d < 0 || L.size[k] > L.size[d])) d = k;
  fill(out, 0.0f, M);
  detail::parallel_pieces(L, 0, d, [&](const Layout& p, int64_t oo, int64_t ox, int64_t, int) {
    accumulate_piece(out, x, p, oo, ox);
  });
}

void sum_to_naive(float* out, const float* x, Layout L) {
  int64_t N = layout_numel(L), M = 1, po, px, pb;
  for (int d = 0; d < L.nd; d++)
    if (L.so[d] != 0) M *= L.size[d];
  std::vector<double> acc((size_t)M, 0.0);
  for (int64_t e = 0; e < N; e++) {
    decode(L, e, po, px, pb);
    acc[po] += x[px];
  }
  for (int64_t j = 0; j < M; j++) out[j] = (float)acc[j];
}

}  // namespace cpu
}  // namespace nala
