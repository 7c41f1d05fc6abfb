// bench/bench_nala.cpp - times the NaLa attention CPU kernels, forward and
// forward + backward, at a few shapes of the NaLaFormer stages, after
// checking the fast kernels against the naive ones on a small problem.
//
//   make CUDA=0 build/release/bench/bench_nala && OMP_NUM_THREADS=8 build/release/bench/bench_nala [reps]
//
// Shape letters: B batch, h heads, N = H * W tokens, d head dim; G = B * h.
// FLOP counts are those of the O(N d^2) algorithm (multiply-add = 2):
// forward 8 G N d^2 (S = rk^T v, o = rq S), backward 16 G N d^2 (S go,
// dS, dS v, rk dS). GB/s counts q, k, v, o once in forward and q, k, v, go,
// dq, dk, dv once more in backward.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/ops.h"
#include "kernels/cpu/attention.h"
#include "tensor/rng.h"

using namespace nala;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Problem {
  int64_t G, H, W, D;
  std::vector<float> q, k, v, o, S, km, go, dq, dk, dv;
  Problem(int64_t G_, int64_t H_, int64_t W_, int64_t D_, uint64_t seed) : G(G_), H(H_), W(W_), D(D_) {
    const int64_t n = G * H * W * D;
    Rng rng(seed);
    for (auto* x : {&q, &k, &v, &go}) {
      x->resize(n);
      for (auto& e : *x) e = rng.normal();
    }
    for (auto* x : {&o, &dq, &dk, &dv}) x->assign(n, 0.0f);
    S.assign(G * 2 * D * D, 0.0f);
    km.assign(G * 2 * D, 0.0f);
  }
  void forward(bool naive) {
    decltype(&cpu::nala_attention_forward_naive) f = cpu::nala_attention_forward;  // the f32 overload
    if (naive) f = cpu::nala_attention_forward_naive;
    f(q.data(), k.data(), v.data(), o.data(), S.data(), km.data(), G, H, W, D, kNalaNormFloor);
  }
  void backward(bool naive) {
    decltype(&cpu::nala_attention_backward_naive) f = cpu::nala_attention_backward;
    if (naive) f = cpu::nala_attention_backward_naive;
    f(q.data(), k.data(), v.data(), S.data(), km.data(), go.data(), dq.data(), dk.data(), dv.data(), G, H, W, D,
      kNalaNormFloor);
  }
};

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); i++)
    worst = std::max(worst, std::fabs((double)a[i] - b[i]) / (1e-3 + std::fabs((double)b[i])));
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 5;
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  std::printf("nala_attention CPU kernels, %d threads, best of %d\n", threads, reps);

  // Correctness first: fast against naive on one small problem.
  {
    Problem a(6, 9, 13, 16, 1), b(6, 9, 13, 16, 1);
    a.forward(false), a.backward(false), b.forward(true), b.backward(true);
    double err = std::max({max_rel_diff(a.o, b.o), max_rel_diff(a.dq, b.dq), max_rel_diff(a.dk, b.dk),
                           max_rel_diff(a.dv, b.dv)});
    std::printf("check fast vs naive (G=6, N=117, d=16): max rel diff %.2e %s\n", err, err < 1e-3 ? "ok" : "FAIL");
    if (err >= 1e-3) return 1;
  }

  struct Shape4 {
    int64_t B, h, H, W, D;
  };
  const Shape4 shapes[] = {{32, 1, 28, 28, 32}, {32, 2, 14, 14, 64}, {128, 1, 14, 14, 32}, {8, 1, 56, 56, 64}};
  std::printf("%-22s %10s %9s %8s %12s %9s %8s\n", "B,h,N,d", "fwd ms", "GFLOP/s", "GB/s", "fwd+bwd ms", "GFLOP/s",
              "GB/s");
  for (const Shape4& s : shapes) {
    const int64_t G = s.B * s.h, N = s.H * s.W, D = s.D;
    Problem p(G, s.H, s.W, D, 7);
    p.forward(false), p.backward(false);  // warm up (tables, pages)
    double tf = 1e30, tfb = 1e30;
    for (int r = 0; r < reps; r++) {
      double t0 = now_ms();
      p.forward(false);
      double t1 = now_ms();
      p.backward(false);
      double t2 = now_ms();
      tf = std::min(tf, t1 - t0);
      tfb = std::min(tfb, t2 - t0);
    }
    const double gnd2 = (double)G * N * D * D, bytes = 4.0 * G * N * D;
    char name[64];
    std::snprintf(name, sizeof name, "%lld,%lld,%lld,%lld", (long long)s.B, (long long)s.h, (long long)N,
                  (long long)D);
    std::printf("%-22s %10.2f %9.1f %8.2f %12.2f %9.1f %8.2f\n", name, tf, 8 * gnd2 / tf * 1e-6,
                4 * bytes / tf * 1e-6, tfb, 24 * gnd2 / tfb * 1e-6, 11 * bytes / tfb * 1e-6);
  }
  return 0;
}
