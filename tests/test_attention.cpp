// tests/test_attention.cpp - rope2d, nala_attention, softmax_attention:
// gradchecks, fast kernels against naive ones, NaLa against an independent
// double-precision transcription of docs/SPEC.md §2, edge cases (zero and
// negative inputs), RoPE tables against hand-computed values, bad inputs.
//
// Shape letters: B batch, h heads, N = H * W tokens, d head dim; G = B * h.
#include <cmath>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/cpu/attention.h"
#include "kernels/cpu/rope.h"
#include "tests/helpers.h"

using namespace nala;
using namespace nala::test;

namespace {

// Queries whose elements stay away from 0 (relu kinks) and whose rows have
// norms alternating between `lo` and `hi`.
Tensor make_queries(const Shape& s, Rng& rng, float lo, float hi) {
  Tensor q = Tensor::empty(s);
  const int64_t d = s.back(), rows = q.numel() / d;
  float* p = q.f32();
  for (int64_t r = 0; r < rows; r++) {
    double ss = 0;
    for (int64_t e = 0; e < d; e++) {
      float m = rng.uniform(0.5f, 1.5f);
      p[r * d + e] = rng.uniform() < 0.5f ? -m : m;
      ss += (double)p[r * d + e] * p[r * d + e];
    }
    float target = (r % 2) ? hi : lo;
    for (int64_t e = 0; e < d; e++) p[r * d + e] *= (float)(target / std::sqrt(ss));
  }
  return q;
}

bool all_finite(const Tensor& t) {
  for (float x : t.to_vector())
    if (!std::isfinite(x)) return false;
  return true;
}

// ---- an independent transcription of docs/SPEC.md §2 and §4, in double -----
// One (b, h) problem: q, k, v (N, d) row-major; returns o (N, d).
std::vector<double> spec_rope(const std::vector<double>& x, int64_t r, int64_t c) {
  const int64_t d = (int64_t)x.size(), m = d / 4;
  std::vector<double> A(d / 2), sn(d), cs(d), y(d);
  for (int64_t t = 0; t < m; t++) {
    double a = m == 1 ? 1.0 : std::pow(10000.0, -(double)t / (m - 1));
    A[2 * t] = A[2 * t + 1] = a;
  }
  for (int64_t e = 0; e < d / 2; e++) {
    sn[e] = std::sin(r * A[e]), cs[e] = std::cos(r * A[e]);
    sn[d / 2 + e] = std::sin(c * A[e]), cs[d / 2 + e] = std::cos(c * A[e]);
  }
  for (int64_t e = 0; e < d; e++) {
    double rot = (e % 2 == 0) ? -x[e + 1] : x[e - 1];
    y[e] = x[e] * cs[e] + rot * sn[e];
  }
  return y;
}

std::vector<double> spec_nala(const float* q, const float* k, const float* v, int64_t H, int64_t W, int64_t d) {
  const int64_t N = H * W;
  std::vector<std::vector<double>> fq(N), fk(N), rq(N), rk(N);
  auto rope_halves = [&](const std::vector<double>& f, int64_t n) {
    std::vector<double> a(f.begin(), f.begin() + d), b(f.begin() + d, f.end());
    a = spec_rope(a, n / W, n % W), b = spec_rope(b, n / W, n % W);
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  for (int64_t i = 0; i < N; i++) {
    double nrm = 0;
    for (int64_t e = 0; e < d; e++) nrm += (double)q[i * d + e] * q[i * d + e];
    nrm = std::max(std::sqrt(nrm), (double)kNalaNormFloor);
    double p = 3.0 * (0.5 + std::tanh(nrm));
    fq[i].assign(2 * d, 0.0);
    fk[i].assign(2 * d, 0.0);
    for (int64_t e = 0; e < d; e++) {
      double qe = q[i * d + e], kc = std::pow((double)k[i * d + e], 3);
      if (qe > 0) fq[i][e] = std::pow(qe / nrm, p);
      if (qe < 0) fq[i][d + e] = std::pow(-qe / nrm, p);
      fk[i][e] = std::max(kc, 0.0);
      fk[i][d + e] = std::max(-kc, 0.0);
    }
    rq[i] = rope_halves(fq[i], i);
    rk[i] = rope_halves(fk[i], i);
  }
  std::vector<double> kmean(2 * d, 0.0), S(2 * d * d, 0.0), o(N * d, 0.0);
  for (int64_t j = 0; j < N; j++)
    for (int64_t a = 0; a < 2 * d; a++) {
      kmean[a] += fk[j][a] / N;
      for (int64_t c = 0; c < d; c++) S[a * d + c] += rk[j][a] * v[j * d + c] / N;
    }
  for (int64_t i = 0; i < N; i++) {
    double den = 1e-6;
    for (int64_t a = 0; a < 2 * d; a++) den += fq[i][a] * kmean[a];
    for (int64_t c = 0; c < d; c++) {
      double y = 0;
      for (int64_t a = 0; a < 2 * d; a++) y += rq[i][a] * S[a * d + c];
      o[i * d + c] = y / den;
    }
  }
  return o;
}

// Forward + backward of an attention op; returns {o, dq, dk, dv}.
std::vector<Tensor> run_op(Tensor (*op)(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t), Tensor q,
                           Tensor k, Tensor v, int64_t H, int64_t W, const Tensor& gout) {
  for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true), t->set_grad(Tensor());
  Tensor o = op(q, k, v, H, W);
  backward(o, gout);
  return {o.detach(), q.grad(), k.grad(), v.grad()};
}

}  // namespace

// ============================================================== rope2d

TEST_CASE("gradcheck: rope2d", "[attention][gradcheck]") {
  Rng rng(11);
  for (int64_t d : {4, 8, 12}) {
    Tensor x = randn({2, 3, 15, d}, rng, 1.0f, true);
    REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return rope2d(in[0], 3, 5); },
                      (std::vector<Tensor>{x}));
  }
  // A non-contiguous input (a transposed view) gives the values of its copy.
  Tensor base = randn({8, 6}, rng);
  Tensor t = transpose(base, 0, 1);
  REQUIRE_CLOSE(rope2d(t, 2, 3), rope2d(t.clone(), 2, 3), 0.0, 0.0);
}

TEST_CASE("rope2d: tables for d = 8 and d = 4 against hand-computed values", "[attention]") {
  // d = 8: m = 2 angles, a = (1, 10000^-1) -> A = (1, 1, 1e-4, 1e-4).
  const cpu::RopeTables& T = cpu::rope_tables(3, 5, 8);
  const int64_t n = 2 * 5 + 3;  // row 2, column 3
  const float* sn = &T.sin[n * 8];
  const float* cs = &T.cos[n * 8];
  const float s2 = 0.909297427f, c2 = -0.416146837f, s3 = 0.141120008f, c3 = -0.989992497f;
  std::vector<float> want_sin = {s2, s2, 2e-4f, 2e-4f, s3, s3, 3e-4f, 3e-4f};
  std::vector<float> want_cos = {c2, c2, 0.99999998f, 0.99999998f, c3, c3, 0.99999996f, 0.99999996f};
  REQUIRE_CLOSE(std::vector<float>(sn, sn + 8), want_sin, 1e-7, 1e-6);
  REQUIRE_CLOSE(std::vector<float>(cs, cs + 8), want_cos, 1e-7, 1e-6);
  // d = 4: m = 1, a_0 = 1 -> A = (1, 1); token (1, 2) of a 2 x 3 grid.
  const cpu::RopeTables& T4 = cpu::rope_tables(2, 3, 4);
  const float* s4 = &T4.sin[5 * 4];
  REQUIRE_CLOSE(std::vector<float>(s4, s4 + 4), (std::vector<float>{0.841470985f, 0.841470985f, 0.909297427f,
                                                                     0.909297427f}),
                1e-7, 1e-6);
  // One rotation by hand: x = (1, 2, 3, 4) at token (1, 2), d = 4.
  Tensor x = Tensor::from_vector({6, 4}, std::vector<float>(24, 0.0f));
  float* p = x.f32();
  p[5 * 4 + 0] = 1, p[5 * 4 + 1] = 2, p[5 * 4 + 2] = 3, p[5 * 4 + 3] = 4;
  std::vector<float> y = rope2d(x, 2, 3).to_vector();
  const double c1 = std::cos(1.0), sn1 = std::sin(1.0), cc2 = std::cos(2.0), ss2 = std::sin(2.0);
  REQUIRE_CLOSE(std::vector<float>(y.begin() + 20, y.end()),
                (std::vector<float>{(float)(1 * c1 - 2 * sn1), (float)(2 * c1 + 1 * sn1), (float)(3 * cc2 - 4 * ss2),
                                    (float)(4 * cc2 + 3 * ss2)}),
                1e-6, 1e-6);
}

TEST_CASE("rope2d: identity at token (0, 0), pair norms preserved, fast = naive", "[attention]") {
  Rng rng(12);
  const int64_t H = 5, W = 7, d = 16, R = 3, N = H * W;
  Tensor x = randn({R, N, d}, rng);
  Tensor y = rope2d(x, H, W);
  std::vector<float> xv = x.to_vector(), yv = y.to_vector();
  for (int64_t r = 0; r < R; r++)
    for (int64_t e = 0; e < d; e++) REQUIRE(yv[r * N * d + e] == xv[r * N * d + e]);
  for (size_t i = 0; i < xv.size(); i += 2) {
    double nx = std::hypot(xv[i], xv[i + 1]), ny = std::hypot(yv[i], yv[i + 1]);
    REQUIRE(std::fabs(nx - ny) <= 1e-5 * (1 + nx));
  }
  Tensor yn = Tensor::empty({R, N, d}), gx = Tensor::empty({R, N, d}), gxn = Tensor::empty({R, N, d});
  cpu::rope2d_forward_naive(x.f32(), yn.f32(), R, H, W, d);
  REQUIRE_CLOSE(y, yn, 1e-5, 1e-5);
  cpu::rope2d_backward(y.f32(), gx.f32(), R, H, W, d);  // the transpose undoes the rotation
  cpu::rope2d_backward_naive(y.f32(), gxn.f32(), R, H, W, d);
  REQUIRE_CLOSE(gx, x, 1e-5, 1e-5);
  REQUIRE_CLOSE(gxn, x, 1e-5, 1e-5);
}

// ============================================================== nala_attention

TEST_CASE("gradcheck: nala_attention", "[attention][gradcheck]") {
  Rng rng(21);
  for (int64_t d : {8, 4}) {
    const Shape s = {2, 2, 15, d};
    Tensor q = make_queries(s, rng, 0.3f, 3.0f).set_requires_grad(true);
    Tensor k = randn(s, rng, 0.8f, true);
    Tensor v = randn(s, rng, 1.0f, true);
    INFO("d = " << d);
    REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return nala_attention(in[0], in[1], in[2], 3, 5); },
                      (std::vector<Tensor>{q, k, v}));
  }
}

TEST_CASE("nala_attention: fast kernels = naive kernels, forward and backward", "[attention]") {
  Rng rng(22);
  struct Case {
    int64_t G, H, W, d;
  };
  // Odd sizes; N > 64 spans several token blocks; G = 35 spans several chunks.
  for (Case cs : {Case{3, 7, 11, 12}, Case{35, 9, 9, 8}, Case{2, 1, 3, 4}, Case{1, 13, 10, 20}}) {
    const int64_t N = cs.H * cs.W, d = cs.d, F = 2 * d;
    INFO("G " << cs.G << " H " << cs.H << " W " << cs.W << " d " << d);
    Tensor q = make_queries({cs.G, N, d}, rng, 0.4f, 2.5f), k = randn({cs.G, N, d}, rng, 0.9f);
    Tensor v = randn({cs.G, N, d}, rng), go = randn({cs.G, N, d}, rng);
    std::vector<Tensor> a, b;
    for (int naive = 0; naive < 2; naive++) {
      Tensor o = Tensor::empty({cs.G, N, d}), S = Tensor::empty({cs.G, F, d}), km = Tensor::empty({cs.G, F});
      Tensor dq = Tensor::empty({cs.G, N, d}), dk = Tensor::empty({cs.G, N, d}), dv = Tensor::empty({cs.G, N, d});
      decltype(&cpu::nala_attention_forward_naive) fwd = cpu::nala_attention_forward;  // the f32 overload
      decltype(&cpu::nala_attention_backward_naive) bwd = cpu::nala_attention_backward;
      if (naive) fwd = cpu::nala_attention_forward_naive, bwd = cpu::nala_attention_backward_naive;
      fwd(q.f32(), k.f32(), v.f32(), o.f32(), S.f32(), km.f32(), cs.G, cs.H, cs.W, d, kNalaNormFloor);
      bwd(q.f32(), k.f32(), v.f32(), S.f32(), km.f32(), go.f32(), dq.f32(), dk.f32(), dv.f32(), cs.G, cs.H, cs.W, d,
          kNalaNormFloor);
      (naive ? b : a) = {o, S, km, dq, dk, dv};
    }
    const char* names[] = {"o", "S", "kmean", "dq", "dk", "dv"};
    for (int t = 0; t < 6; t++) {
      INFO(names[t]);
      REQUIRE_CLOSE(a[t], b[t], 1e-5, 1e-4);
    }
  }
}

TEST_CASE("nala_attention: forward matches a double transcription of docs/SPEC.md §2", "[attention]") {
  Rng rng(23);
  const int64_t B = 2, h = 3, H = 4, W = 6, d = 12, N = H * W;
  Tensor q = make_queries({B, h, N, d}, rng, 0.2f, 4.0f), k = randn({B, h, N, d}, rng), v = randn({B, h, N, d}, rng);
  Tensor o = nala_attention(q, k, v, H, W);
  std::vector<float> ref;
  for (int64_t g = 0; g < B * h; g++) {
    std::vector<double> og = spec_nala(q.f32() + g * N * d, k.f32() + g * N * d, v.f32() + g * N * d, H, W, d);
    ref.insert(ref.end(), og.begin(), og.end());
  }
  REQUIRE_CLOSE(o.to_vector(), ref, 1e-5, 1e-4);
}

TEST_CASE("nala_attention: zero and negative inputs stay finite", "[attention]") {
  Rng rng(24);
  const int64_t B = 2, h = 2, H = 3, W = 4, d = 8, N = H * W;
  const Shape s = {B, h, N, d};
  Tensor go = randn(s, rng);
  SECTION("all-zero q rows give zero output and finite gradients") {
    Tensor q = randn(s, rng), k = randn(s, rng), v = randn(s, rng);
    for (int64_t r : {0, 5, 17, 40}) std::fill(q.f32() + r * d, q.f32() + (r + 1) * d, 0.0f);
    auto res = run_op(nala_attention, q, k, v, H, W, go);
    for (auto& t : res) REQUIRE(all_finite(t));
    for (int64_t r : {0, 5, 17, 40})
      for (int64_t e = 0; e < d; e++) {
        REQUIRE(res[0].f32()[r * d + e] == 0.0f);
        REQUIRE(res[1].f32()[r * d + e] == 0.0f);  // the floored norm passes no gradient
      }
  }
  SECTION("all-zero k") {
    Tensor q = randn(s, rng), k = Tensor::zeros(s), v = randn(s, rng);
    auto res = run_op(nala_attention, q, k, v, H, W, go);
    for (auto& t : res) REQUIRE(all_finite(t));
    for (float x : res[0].to_vector()) REQUIRE(x == 0.0f);
  }
  SECTION("all-zero q, k and v") {
    auto res = run_op(nala_attention, Tensor::zeros(s), Tensor::zeros(s), Tensor::zeros(s), H, W, go);
    for (auto& t : res) {
      REQUIRE(all_finite(t));
      for (float x : t.to_vector()) REQUIRE(x == 0.0f);
    }
  }
  SECTION("negative-only inputs") {
    Tensor q = randu(s, rng, -2.0f, -0.1f), k = randu(s, rng, -1.5f, -0.1f), v = randu(s, rng, -1.0f, -0.1f);
    auto res = run_op(nala_attention, q, k, v, H, W, go);
    for (auto& t : res) REQUIRE(all_finite(t));
    std::vector<float> ref;
    for (int64_t g = 0; g < B * h; g++) {
      auto og = spec_nala(q.f32() + g * N * d, k.f32() + g * N * d, v.f32() + g * N * d, H, W, d);
      ref.insert(ref.end(), og.begin(), og.end());
    }
    REQUIRE_CLOSE(res[0].to_vector(), ref, 1e-5, 1e-4);
    // Negative-only values are smooth points: the gradients pass gradcheck.
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
    REQUIRE_GRADCHECK([&](const std::vector<Tensor>& in) { return nala_attention(in[0], in[1], in[2], H, W); },
                      (std::vector<Tensor>{q, k, v}));
  }
}

TEST_CASE("nala_attention: the gradient at a q element that is exactly 0", "[attention]") {
  Rng rng(25);
  const int64_t H = 2, W = 3, d = 8, N = H * W;
  Tensor q = make_queries({1, 1, N, d}, rng, 0.5f, 3.0f), k = randn({1, 1, N, d}, rng), v = randn({1, 1, N, d}, rng);
  const int64_t at = 3 * d + 2;  // row 3 (norm 3), element 2
  q.f32()[at] = 0.0f;
  Tensor go = randn({1, 1, N, d}, rng);
  auto res = run_op(nala_attention, q, k, v, H, W, go);
  for (auto& t : res) REQUIRE(all_finite(t));
  REQUIRE(res[1].f32()[at] == 0.0f);
  // The map is C^1 there (exponent p > 1): a central difference agrees.
  auto loss = [&](float x) {
    NoGradGuard ng;
    Tensor qq = q.clone();
    qq.f32()[at] = x;
    std::vector<float> o = nala_attention(qq, k, v, H, W).to_vector(), g = go.to_vector();
    double s = 0;
    for (size_t i = 0; i < o.size(); i++) s += (double)o[i] * g[i];
    return s;
  };
  const double eps = 1e-3;
  REQUIRE(std::fabs((loss(eps) - loss(-eps)) / (2 * eps)) < 1e-3);
}

#ifdef _OPENMP
TEST_CASE("nala_attention: results do not depend on the thread count", "[attention]") {
  Rng rng(26);
  const int64_t G = 3, H = 12, W = 11, d = 16, N = H * W, F = 2 * d;  // big enough to run in parallel
  Tensor q = randn({G, N, d}, rng), k = randn({G, N, d}, rng), v = randn({G, N, d}, rng), go = randn({G, N, d}, rng);
  std::vector<std::vector<float>> out[2];
  const int saved = omp_get_max_threads();
  for (int t = 0; t < 2; t++) {
    omp_set_num_threads(t == 0 ? 1 : 3);
    Tensor o = Tensor::empty({G, N, d}), S = Tensor::empty({G, F, d}), km = Tensor::empty({G, F});
    Tensor dq = Tensor::empty({G, N, d}), dk = Tensor::empty({G, N, d}), dv = Tensor::empty({G, N, d});
    cpu::nala_attention_forward(q.f32(), k.f32(), v.f32(), o.f32(), S.f32(), km.f32(), G, H, W, d, kNalaNormFloor);
    cpu::nala_attention_backward(q.f32(), k.f32(), v.f32(), S.f32(), km.f32(), go.f32(), dq.f32(), dk.f32(),
                                 dv.f32(), G, H, W, d, kNalaNormFloor);
    for (Tensor* x : {&o, &dq, &dk, &dv}) out[t].push_back(x->to_vector());
  }
  omp_set_num_threads(saved);
  for (int i = 0; i < 4; i++) REQUIRE(out[0][i] == out[1][i]);
}
#endif

// ============================================================== softmax_attention

TEST_CASE("gradcheck: softmax_attention", "[attention][gradcheck]") {
  Rng rng(31);
  const Shape s = {2, 2, 15, 8};
  Tensor q = randn(s, rng, 1.0f, true), k = randn(s, rng, 1.0f, true), v = randn(s, rng, 1.0f, true);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return softmax_attention(in[0], in[1], in[2], 3, 5); },
                    (std::vector<Tensor>{q, k, v}));
}

TEST_CASE("softmax_attention: fast kernels = naive kernels; one token returns v", "[attention]") {
  Rng rng(32);
  struct Case {
    int64_t G, H, W, d;
  };
  for (Case cs : {Case{3, 5, 7, 12}, Case{5, 2, 9, 4}, Case{1, 7, 7, 32}}) {
    const int64_t N = cs.H * cs.W, d = cs.d;
    INFO("G " << cs.G << " H " << cs.H << " W " << cs.W << " d " << d);
    // Large scores (std 3) exercise the max subtraction.
    Tensor q = randn({cs.G, N, d}, rng, 3.0f), k = randn({cs.G, N, d}, rng, 3.0f);
    Tensor v = randn({cs.G, N, d}, rng), go = randn({cs.G, N, d}, rng);
    std::vector<Tensor> a, b;
    for (int naive = 0; naive < 2; naive++) {
      Tensor o = Tensor::empty({cs.G, N, d}), lse = Tensor::empty({cs.G, N});
      Tensor dq = Tensor::empty({cs.G, N, d}), dk = Tensor::empty({cs.G, N, d}), dv = Tensor::empty({cs.G, N, d});
      auto fwd = naive ? cpu::softmax_attention_forward_naive : cpu::softmax_attention_forward;
      auto bwd = naive ? cpu::softmax_attention_backward_naive : cpu::softmax_attention_backward;
      fwd(q.f32(), k.f32(), v.f32(), o.f32(), lse.f32(), cs.G, cs.H, cs.W, d);
      bwd(q.f32(), k.f32(), v.f32(), o.f32(), lse.f32(), go.f32(), dq.f32(), dk.f32(), dv.f32(), cs.G, cs.H, cs.W, d);
      (naive ? b : a) = {o, lse, dq, dk, dv};
    }
    const char* names[] = {"o", "lse", "dq", "dk", "dv"};
    for (int t = 0; t < 5; t++) {
      INFO(names[t]);
      REQUIRE_CLOSE(a[t], b[t], 1e-4, 1e-4);
    }
  }
  Tensor q = randn({2, 3, 1, 8}, rng), k = randn({2, 3, 1, 8}, rng), v = randn({2, 3, 1, 8}, rng);
  REQUIRE_CLOSE(softmax_attention(q, k, v, 1, 1), v, 1e-6, 1e-6);
}

// ============================================================== bad inputs

TEST_CASE("attention ops: bad inputs name the op and the shapes", "[attention]") {
  Tensor a = Tensor::zeros({2, 2, 15, 8}), b = Tensor::zeros({2, 2, 15, 6}), c = Tensor::zeros({2, 2, 14, 8});
  Tensor three = Tensor::zeros({2, 15, 8}), i64 = Tensor::zeros({2, 2, 15, 8}, DType::I64);
  REQUIRE_THROWS_WITH(nala_attention(b, b, b, 3, 5), Catch::Contains("nala_attention") && Catch::Contains("4"));
  REQUIRE_THROWS_WITH(nala_attention(a, c, a, 3, 5),
                      Catch::Contains("nala_attention") && Catch::Contains("[2, 2, 14, 8]") &&
                          Catch::Contains("[2, 2, 15, 8]"));
  REQUIRE_THROWS_WITH(nala_attention(a, a, a, 4, 4), Catch::Contains("nala_attention") && Catch::Contains("H*W"));
  REQUIRE_THROWS_WITH(nala_attention(three, three, three, 3, 5), Catch::Contains("nala_attention"));
  REQUIRE_THROWS_WITH(nala_attention(i64, i64, i64, 3, 5), Catch::Contains("nala_attention"));
  REQUIRE_THROWS_WITH(softmax_attention(a, a, c, 3, 5), Catch::Contains("softmax_attention"));
  REQUIRE_THROWS_WITH(softmax_attention(b, b, b, 3, 5), Catch::Contains("softmax_attention"));
  REQUIRE_THROWS_WITH(rope2d(b, 3, 5), Catch::Contains("rope2d") && Catch::Contains("divisible by 4"));
  REQUIRE_THROWS_WITH(rope2d(a, 5, 5), Catch::Contains("rope2d") && Catch::Contains("[2, 2, 15, 8]"));
}
