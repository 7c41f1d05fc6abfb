// bench/bench_nala_cuda.cu - times the NaLa attention CUDA kernels, forward
// and forward + backward, at the ANCHORS.md shapes: the production path
// (kernels/cuda/attention_nala.cu, tensor cores for d = 16, 32, 64) beside the
// first version (attention_nala_v1.cu), each checked against the CPU kernels
// on the first two problems of each shape (before and after the timed runs;
// outputs poisoned with NaN first, and every element must come back finite).
//
//   make CUDA=1 build/release/bench/bench_nala_cuda && build/release/bench/bench_nala_cuda [reps]
//
// (The rule is in bench/cuda.mk.) Shape letters: B batch, h heads,
// N = H * W tokens, d head dim; G = B * h. Times are CUDA-event medians of
// `reps` runs (default 20) after 3 warm-up runs. GB/s counts the least
// traffic: q, k, v, o once in forward; plus q, k, v, go, dq, dk, dv once in
// backward. The first line measures the device-to-device copy rate (bytes
// read + written), the ceiling for these numbers. "worst" is the largest
// |got - cpu| / (1e-4 + 1e-3 |cpu|) over o, dq, dk, dv (<= 1 passes).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "autograd/ops.h"
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.cuh"
#include "tensor/device.h"
#include "tensor/rng.h"

using namespace nala;

namespace {

struct Shape4 {
  int64_t B, h, H, W, d;
};

// Largest |got - ref| / (1e-4 + 1e-3 |ref|) over the first `n` values; <= 1 passes.
double worst(const Tensor& got_dev, const std::vector<float>& ref, int64_t n) {
  std::vector<float> got = got_dev.to_vector();
  double w = 0;
  for (int64_t i = 0; i < n; i++) {
    double r = std::fabs((double)got[i] - ref[i]) / (1e-4 + 1e-3 * std::fabs((double)ref[i]));
    if (!(r <= w)) w = std::isnan(r) ? INFINITY : std::max(w, r);
  }
  return w;
}

template <typename Fn>
float median_ms(Fn fn, int reps) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a), "bench");
  CUDA_CHECK(cudaEventCreate(&b), "bench");
  for (int i = 0; i < 3; i++) fn();
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; i++) {
    CUDA_CHECK(cudaEventRecord(a), "bench");
    fn();
    CUDA_CHECK(cudaEventRecord(b), "bench");
    CUDA_CHECK(cudaEventSynchronize(b), "bench");
    CUDA_CHECK(cudaEventElapsedTime(&ms[i], a, b), "bench");
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::max(1, atoi(argv[1])) : 20;
  if (!device::cuda_available()) {
    fprintf(stderr, "bench_nala_cuda: no CUDA device\n");
    return 1;
  }
  {  // the ceiling: a 2 GB device-to-device copy
    const size_t n = size_t(1) << 30;
    void *a = nullptr, *b = nullptr;
    CUDA_CHECK(cudaMalloc(&a, n), "bench");
    CUDA_CHECK(cudaMalloc(&b, n), "bench");
    CUDA_CHECK(cudaMemset(a, 1, n), "bench");
    const float ms = median_ms([&] { CUDA_CHECK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice), "bench"); }, reps);
    printf("device-to-device copy of 1 GiB: %.3f ms, %.0f GB/s (read + write)\n", ms, 2.0 * n / ms * 1e-6);
    cudaFree(a);
    cudaFree(b);
  }
  const Shape4 shapes[] = {{128, 1, 56, 56, 64}, {128, 2, 28, 28, 64}, {128, 1, 14, 14, 32}};
  bool ok = true;
  printf("NaLa attention, CUDA kernels, float32 (median of %d)\n", reps);
  printf("%-22s %-13s %9s %9s %11s %12s %7s %6s\n", "(B, h, N, d)", "path", "fwd ms", "fwd GB/s", "fwd+bwd ms",
         "fwd+bwd GB/s", "worst", "check");
  for (const Shape4& s : shapes) {
    const int64_t G = s.B * s.h, N = s.H * s.W, D = s.d, F = 2 * D, n = G * N * D;
    Rng rng(7);
    Tensor q = Tensor::empty({G, N, D}), k = Tensor::empty({G, N, D}), v = Tensor::empty({G, N, D});
    Tensor go = Tensor::empty({G, N, D});
    rng.fill_normal(q, 0.0f, 0.5f);
    rng.fill_normal(k, 0.0f, 0.8f);
    rng.fill_normal(v, 0.0f, 1.0f);
    rng.fill_normal(go, 0.0f, 1.0f);
    auto dev = [](const Tensor& t) { return t.to(Device::CUDA); };
    auto empty = [](const Shape& sh) { return Tensor::empty(sh, DType::F32, Device::CUDA); };
    Tensor qd = dev(q), kd = dev(k), vd = dev(v), god = dev(go);
    Tensor o = empty({G, N, D}), S = empty({G, F, D}), km = empty({G, F});
    Tensor dq = empty({G, N, D}), dk = empty({G, N, D}), dv = empty({G, N, D});
    // Reference: the CPU kernels on the first two problems.
    const int64_t g2 = std::min<int64_t>(2, G), n2 = g2 * N * D;
    std::vector<float> ro(n2), rS(g2 * F * D), rkm(g2 * F), rdq(n2), rdk(n2), rdv(n2);
    cpu::nala_attention_forward(q.f32(), k.f32(), v.f32(), ro.data(), rS.data(), rkm.data(), g2, s.H, s.W, D,
                                kNalaNormFloor);
    cpu::nala_attention_backward(q.f32(), k.f32(), v.f32(), rS.data(), rkm.data(), go.f32(), rdq.data(), rdk.data(),
                                 rdv.data(), g2, s.H, s.W, D, kNalaNormFloor);
    for (int path = 0; path < 2; path++) {
      if (path == 0 && !cuda::nala_attention_tensor_cores(D)) continue;
      auto fwd = [&] {
        (path ? cuda::nala_attention_forward_v1 : cuda::nala_attention_forward)(
            qd.f32(), kd.f32(), vd.f32(), o.f32(), S.f32(), km.f32(), G, s.H, s.W, D, kNalaNormFloor);
      };
      auto bwd = [&] {
        (path ? cuda::nala_attention_backward_v1 : cuda::nala_attention_backward)(
            qd.f32(), kd.f32(), vd.f32(), S.f32(), km.f32(), god.f32(), dq.f32(), dk.f32(), dv.f32(), G, s.H, s.W, D,
            kNalaNormFloor);
      };
      double w = 0;
      auto check = [&] {
        for (Tensor* t : {&o, &S, &km, &dq, &dk, &dv})
          CUDA_CHECK(cudaMemset(t->f32(), 0xff, t->numel() * sizeof(float)), "bench");  // NaN
        fwd();
        bwd();
        CUDA_CHECK(cudaDeviceSynchronize(), "bench");
        bool finite = true;
        for (Tensor* t : {&o, &dq, &dk, &dv})
          for (float x : t->to_vector()) finite = finite && std::isfinite(x);
        w = std::max({w, worst(o, ro, n2), worst(dq, rdq, n2), worst(dk, rdk, n2), worst(dv, rdv, n2)});
        return finite && w <= 1.0;
      };
      bool good = check();
      const float t_fwd = median_ms(fwd, reps);
      const float t_all = median_ms([&] { fwd(); bwd(); }, reps);
      good = check() && good;
      ok = ok && good;
      const double bytes_fwd = 4.0 * n * sizeof(float), bytes_all = 11.0 * n * sizeof(float);
      char name[64];
      snprintf(name, sizeof name, "(%lld, %lld, %lld, %lld)", (long long)s.B, (long long)s.h, (long long)N,
               (long long)D);
      printf("%-22s %-13s %9.3f %9.0f %11.3f %12.0f %7.3f %6s\n", name, path ? "v1 (FMA)" : "tensor cores", t_fwd,
             bytes_fwd / t_fwd * 1e-6, t_all, bytes_all / t_all * 1e-6, w, good ? "ok" : "FAILED");
    }
  }
  return ok ? 0 : 1;
}
