// bench/bench_nala_cuda.cu - times the NaLa attention CUDA kernels, forward
// and forward + backward, at the ANCHORS.md shapes: the production path
// (kernels/cuda/attention_nala.cu, tensor cores for d = 16, 32, 64) beside the
// first version (attention_nala_v1.cu), each checked against the CPU kernels
// on the first two problems of each shape (before and after the timed runs;
// outputs poisoned with NaN first, and every element must come back finite).
//
//   make CUDA=1 build/release/bench/bench_nala_cuda && build/release/bench/bench_nala_cuda [reps] [--torch FILE]
//   bench/nala_vs_torch.sh    the same with PyTorch eager and torch.compile beside (bench/torch_gpu.py)
//
// (The rule is in bench/cuda.mk.) Shape letters: B batch, h heads,
// N = H * W tokens, d head dim; G = B * h. Times are CUDA-event medians of
// `reps` runs (default 20) after 3 warm-up runs. GB/s counts the least
// traffic: q, k, v, o once in forward; plus q, k, v, go, dq, dk, dv once in
// backward. The first line measures the device-to-device copy rate (bytes
// read + written), the ceiling for these numbers; "floor" is the least
// traffic moved at that rate, "%" the share of it a time reaches (floor /
// time). "worst" is the largest |got - cpu| / (1e-4 + 1e-3 |cpu|) over o, dq,
// dk, dv (<= 1 passes). The bf16 rows run the same kernels on bf16 arrays
// (kernels/cuda/attention.h), against the CPU's bf16 overloads on the same
// rounded inputs, with 2^-7 added to the relative tolerance (the outputs'
// one rounding may fall on either side); their GB/s count 2-byte elements,
// their "%" is of the bf16 floor (half the float32 one). The "tensor cores
// bf16" rows run the three-pass products (one_pass = false), the "bf16
// 1-pass" rows the one-pass products that autograd's nala_attention runs on
// bf16 tensors: their "worst" is the largest of each output's normwise
// error ||got - cpu|| / ||cpu|| over 1.5e-2 and max |got - cpu| / max |cpu|
// over 2.5e-2 (kernels/closeness.h), three times what an emulation of that
// plan measured (tests/reference/nala_product_precision.py). --torch FILE: the lines bench/torch_gpu.py --parts
// attn printed ("torch cuda nala_attn fwd B=.. h=.. N=.. d=.. ms=.."); their
// times go in a row under each shape they cover, with the same "%".
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "kernels/closeness.h"
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.cuh"
#include "bench/cuda_timing.cuh"
#include "tensor/device.h"
#include "tensor/rng.h"

using namespace nala;

namespace {

struct Shape4 {
  int64_t B, h, H, W, d;
};

// kernels/closeness.h's measures of a GPU tensor's first n values; <= 1 passes.
double worst(const Tensor& got_dev, const std::vector<float>& ref, int64_t n, double rtol) {
  return worst_elementwise(got_dev.to_vector().data(), ref.data(), (size_t)n, rtol);
}
double worst_normwise(const Tensor& got_dev, const std::vector<float>& ref, int64_t n) {
  return bound_ratio(normwise_error(got_dev.to_vector().data(), ref.data(), (size_t)n), kNalaOnePassBound);
}

// PyTorch's times from bench/torch_gpu.py's output: key "impl mode B h N d" -> ms.
std::map<std::string, double> read_torch(const char* path) {
  std::map<std::string, double> t;
  std::ifstream f(path);
  if (!f) {
    fprintf(stderr, "bench_nala_cuda: cannot read the PyTorch times in %s\n", path);
    exit(2);
  }
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string torch, dev, impl, mode, b, h, n, d, ms;
    if (!(in >> torch >> dev >> impl >> mode >> b >> h >> n >> d >> ms) || torch != "torch" || ms.rfind("ms=", 0))
      continue;
    t[impl + " " + mode + " " + b + " " + h + " " + n + " " + d] = atof(ms.c_str() + 3);
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  std::map<std::string, double> torch_ms;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--torch") && i + 1 < argc)
      torch_ms = read_torch(argv[++i]);
    else
      reps = std::max(1, atoi(argv[i]));
  }
  if (!device::cuda_available()) {
    fprintf(stderr, "bench_nala_cuda: no CUDA device\n");
    return 1;
  }
  double copy_gbs = 0;
  {  // the ceiling: a 2 GB device-to-device copy
    const size_t n = size_t(1) << 30;
    void *a = nullptr, *b = nullptr;
    CUDA_CHECK(cudaMalloc(&a, n), "bench");
    CUDA_CHECK(cudaMalloc(&b, n), "bench");
    CUDA_CHECK(cudaMemset(a, 1, n), "bench");
    const float ms = median_ms([&] { CUDA_CHECK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice), "bench"); }, 3, reps);
    copy_gbs = 2.0 * n / ms * 1e-6;
    printf("device-to-device copy of 1 GiB: %.3f ms, %.0f GB/s (read + write)\n", ms, copy_gbs);
    cudaFree(a);
    cudaFree(b);
  }
  const Shape4 shapes[] = {{128, 1, 56, 56, 64}, {128, 2, 28, 28, 64}, {128, 1, 14, 14, 32}};
  bool ok = true;
  printf("NaLa attention, CUDA kernels (median of %d); bf16: q, k, v, dO and o, dq, dk, dv in bf16\n", reps);
  printf("%-22s %-19s %8s %8s %5s %10s %8s %5s %7s %6s\n", "(B, h, N, d)", "path", "fwd ms", "GB/s", "%",
         "fwd+bwd ms", "GB/s", "%", "worst", "check");
  for (const Shape4& s : shapes) {
    const int64_t G = s.B * s.h, N = s.H * s.W, D = s.d, F = 2 * D, n = G * N * D;
    Rng rng(7);
    Tensor q = Tensor::empty({G, N, D}), k = Tensor::empty({G, N, D}), v = Tensor::empty({G, N, D});
    Tensor go = Tensor::empty({G, N, D});
    rng.fill_normal(q, 0.0f, 0.5f);
    rng.fill_normal(k, 0.0f, 0.8f);
    rng.fill_normal(v, 0.0f, 1.0f);
    rng.fill_normal(go, 0.0f, 1.0f);
    const int64_t g2 = std::min<int64_t>(2, G), n2 = g2 * N * D;
    const double floor_fwd = 4.0 * n * sizeof(float) / copy_gbs * 1e-6, floor_all = 11.0 * n * sizeof(float) / copy_gbs * 1e-6;
    // path 0: tensor cores, 1: the first version (float32 FMA), 2: tensor cores with bf16 arrays,
    // 3: the same with one-pass products.
    for (int path = 0; path < 4; path++) {
      if (path != 1 && !cuda::nala_attention_tensor_cores(D)) continue;
      const bool bf = path >= 2, one = path == 3;
      const DType dt = bf ? DType::BF16 : DType::F32;
      const size_t es = bf ? 2 : 4;
      // Inputs on the device in the path's dtype (bf16: rounded once), and the CPU reference on
      // the first two problems of the same values (bf16: the CPU's bf16 overloads).
      Tensor qd = cast(q, dt).to(Device::CUDA), kd = cast(k, dt).to(Device::CUDA), vd = cast(v, dt).to(Device::CUDA),
             god = cast(go, dt).to(Device::CUDA);
      auto empty = [&](const Shape& sh, DType t) { return Tensor::empty(sh, t, Device::CUDA); };
      Tensor o = empty({G, N, D}, dt), S = empty({G, F, D}, DType::F32), km = empty({G, F}, DType::F32);
      Tensor dq = empty({G, N, D}, dt), dk = empty({G, N, D}, dt), dv = empty({G, N, D}, dt);
      std::vector<Tensor> ref;  // o, dq, dk, dv of the first two problems, on the host
      {
        auto first = [&](const Tensor& t) { return view::narrow(cast(t, dt), 0, 0, g2).clone(); };
        Tensor hq = first(q), hk = first(k), hv = first(v), hgo = first(go);
        Tensor ro = Tensor::empty({g2, N, D}, dt), rS = Tensor::empty({g2, F, D}), rkm = Tensor::empty({g2, F});
        Tensor rdq = Tensor::empty({g2, N, D}, dt), rdk = Tensor::empty({g2, N, D}, dt), rdv = Tensor::empty({g2, N, D}, dt);
        if (bf) {
          cpu::nala_attention_forward(hq.bf16(), hk.bf16(), hv.bf16(), ro.bf16(), rS.f32(), rkm.f32(), g2, s.H, s.W, D,
                                      kNalaNormFloor);
          cpu::nala_attention_backward(hq.bf16(), hk.bf16(), hv.bf16(), rS.f32(), rkm.f32(), hgo.bf16(), rdq.bf16(),
                                       rdk.bf16(), rdv.bf16(), g2, s.H, s.W, D, kNalaNormFloor);
        } else {
          cpu::nala_attention_forward(hq.f32(), hk.f32(), hv.f32(), ro.f32(), rS.f32(), rkm.f32(), g2, s.H, s.W, D,
                                      kNalaNormFloor);
          cpu::nala_attention_backward(hq.f32(), hk.f32(), hv.f32(), rS.f32(), rkm.f32(), hgo.f32(), rdq.f32(),
                                       rdk.f32(), rdv.f32(), g2, s.H, s.W, D, kNalaNormFloor);
        }
        ref = {ro, rdq, rdk, rdv};
      }
      auto fwd = [&] {
        if (bf)
          cuda::nala_attention_forward(qd.bf16(), kd.bf16(), vd.bf16(), o.bf16(), S.f32(), km.f32(), G, s.H, s.W, D,
                                       kNalaNormFloor, one);
        else if (path == 0)
          cuda::nala_attention_forward(qd.f32(), kd.f32(), vd.f32(), o.f32(), S.f32(), km.f32(), G, s.H, s.W, D,
                                       kNalaNormFloor);
        else
          cuda::nala_attention_forward_v1(qd.f32(), kd.f32(), vd.f32(), o.f32(), S.f32(), km.f32(), G, s.H, s.W, D,
                                          kNalaNormFloor);
      };
      auto bwd = [&] {
        if (bf)
          cuda::nala_attention_backward(qd.bf16(), kd.bf16(), vd.bf16(), S.f32(), km.f32(), god.bf16(), dq.bf16(),
                                        dk.bf16(), dv.bf16(), G, s.H, s.W, D, kNalaNormFloor, one);
        else if (path == 0)
          cuda::nala_attention_backward(qd.f32(), kd.f32(), vd.f32(), S.f32(), km.f32(), god.f32(), dq.f32(), dk.f32(),
                                        dv.f32(), G, s.H, s.W, D, kNalaNormFloor);
        else
          cuda::nala_attention_backward_v1(qd.f32(), kd.f32(), vd.f32(), S.f32(), km.f32(), god.f32(), dq.f32(),
                                           dk.f32(), dv.f32(), G, s.H, s.W, D, kNalaNormFloor);
      };
      // bf16 outputs may differ from the CPU's by the one rounding (a bf16 step, 2^-7 relative).
      const double rtol = bf ? 1e-3 + 1.0 / 128 : 1e-3;
      double w = 0;
      auto check = [&] {
        for (Tensor* t : {&o, &S, &km, &dq, &dk, &dv})
          CUDA_CHECK(cudaMemset(t->raw(), 0xff, t->numel() * dtype_size(t->dtype())), "bench");  // NaN
        fwd();
        bwd();
        CUDA_CHECK(cudaDeviceSynchronize(), "bench");
        bool finite = true;
        const Tensor* got[] = {&o, &dq, &dk, &dv};
        for (int i = 0; i < 4; i++) {
          for (float x : got[i]->to_vector()) finite = finite && std::isfinite(x);
          w = std::max(w, one ? worst_normwise(*got[i], ref[i].to_vector(), n2) : worst(*got[i], ref[i].to_vector(), n2, rtol));
        }
        return finite && w <= 1.0;
      };
      bool good = check();
      const float t_fwd = median_ms(fwd, 3, reps);
      const float t_all = median_ms([&] { fwd(); bwd(); }, 3, reps);
      good = check() && good;
      ok = ok && good;
      const double bytes_fwd = 4.0 * n * es, bytes_all = 11.0 * n * es;
      char name[64];
      snprintf(name, sizeof name, "(%lld, %lld, %lld, %lld)", (long long)s.B, (long long)s.h, (long long)N,
               (long long)D);
      const char* pname[] = {"tensor cores", "v1 (FMA)", "tensor cores bf16", "bf16 1-pass"};
      printf("%-22s %-19s %8.3f %8.0f %4.0f%% %10.3f %8.0f %4.0f%% %7.3f %6s\n", name, pname[path], t_fwd,
             bytes_fwd / t_fwd * 1e-6, 100 * floor_fwd * es / 4 / t_fwd, t_all, bytes_all / t_all * 1e-6,
             100 * floor_all * es / 4 / t_all, w, good ? "ok" : "FAILED");
    }
    // The floor and PyTorch's times (when given) for this shape.
    printf("%-22s %-19s %8.3f %8s %5s %10.3f\n", "", "floor", floor_fwd, "", "", floor_all);
    printf("%-22s %-19s %8.3f %8s %5s %10.3f\n", "", "floor bf16", floor_fwd / 2, "", "", floor_all / 2);
    const struct {
      const char *impl, *label;
      double es;  // bytes an element
    } rows[] = {{"nala_attn", "PyTorch eager", 4},
                {"nala_attn_compile", "torch.compile", 4},
                {"nala_attn_bf16", "PyTorch eager bf16", 2},
                {"nala_attn_compile_bf16", "torch.compile bf16", 2}};
    for (const auto& r : rows) {
      char tail[128];
      snprintf(tail, sizeof tail, " B=%lld h=%lld N=%lld d=%lld", (long long)s.B, (long long)s.h, (long long)N,
               (long long)D);
      const std::string kf = std::string(r.impl) + " fwd" + tail, kb = std::string(r.impl) + " fwd_bwd" + tail;
      if (!torch_ms.count(kf) || !torch_ms.count(kb)) continue;
      const double tf = torch_ms[kf], tb = torch_ms[kb], f = r.es / 4;  // floors scale with the element size
      printf("%-22s %-19s %8.3f %8.0f %4.0f%% %10.3f %8.0f %4.0f%%\n", "", r.label, tf,
             4.0 * n * r.es / tf * 1e-6, 100 * floor_fwd * f / tf, tb, 11.0 * n * r.es / tb * 1e-6,
             100 * floor_all * f / tb);
    }
  }
  return ok ? 0 : 1;
}
