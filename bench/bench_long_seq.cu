// bench/bench_long_seq.cu - attention over long sequences on the GPU: one
// image, one head, d = 64, N = 4,096 to 262,144 tokens (square grids). For
// nala's NaLa attention and nala's softmax (flash-style) attention, a
// training step of the op alone: q, k, v uploaded, forward, backward with a
// given output gradient. Printed per op and N: the forward and forward +
// backward times (CUDA-event medians), and the peak of nala's device
// allocator over the whole step (q, k, v, the output gradient, the output
// and dq, dk, dv included: everything the step allocates), beside the floor
// of 8 N d floats (those eight tensors) and what lies beyond it.
//
//   make CUDA=1 bench && build/release/bench/bench_long_seq [--csv FILE] [--max-n N] [--seconds S] [--ops LIST]
//   (--ops: comma-separated, of nala, softmax, nala-bf16; default all three)
//
// bench/torch_long_seq.py measures the same steps in PyTorch (and plots both).
// At the smallest N both ops are checked against the CPU (the same autograd
// ops on CPU tensors): "worst" is the largest |gpu - cpu| / (1e-4 + 1e-3 |cpu|)
// over o, dq, dk, dv (<= 1 passes); bf16 rows, whose products take one
// tensor-core pass (autograd/ops.h), the normwise measure of
// kernels/closeness.h. bf16: nala's NaLa with q, k, v, the output gradient, o
// and dq, dk, dv in bf16 (nala_attention on bf16 tensors); the softmax op
// takes float32 only.
//
// Output, one line per measurement:
//   nala long_seq nala fp32 N=65536 d=64 fwd_ms=... fwd_bwd_ms=... peak_MiB=... floor_MiB=128.0 beyond_KiB=...
//   nala long_seq nala bf16 N=65536 d=64 ... floor_MiB=64.0 ...
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops.h"
#include "kernels/closeness.h"
#include "kernels/cuda/check.cuh"
#include "bench/cuda_timing.cuh"
#include "tensor/device.h"
#include "tensor/rng.h"

using namespace nala;

namespace {

using AttnFn = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t);

// How far the GPU's output or gradient lies from the CPU's (kernels/closeness.h; <= 1 passes):
// float32 element-wise; NaLa on bf16 runs one-pass products on the GPU, held normwise.
double worst(const Tensor& got_dev, const Tensor& ref, bool bf16) {
  const std::vector<float> got = got_dev.to_vector(), r = ref.to_vector();
  return bf16 ? bound_ratio(normwise_error(got.data(), r.data(), r.size()), kNalaOnePassBound)
              : worst_elementwise(got.data(), r.data(), r.size(), 1e-3);
}

struct Inputs {
  Tensor q, k, v, go;  // on the CPU
};

// One step: upload q, k, v and go, forward, backward. Returns o and the gradients (on the GPU).
std::vector<Tensor> step(AttnFn attn, const Inputs& in, int64_t H, int64_t W, Device dev) {
  auto put = [&](const Tensor& t) { return dev == Device::CPU ? t.clone() : t.to(dev); };  // never the inputs themselves
  Tensor q = put(in.q), k = put(in.k), v = put(in.v), go = put(in.go);
  q.set_requires_grad(true), k.set_requires_grad(true), v.set_requires_grad(true);
  Tensor o = attn(q, k, v, H, W);
  backward(o, go);
  return {o.detach(), q.grad(), k.grad(), v.grad()};
}

}  // namespace

int main(int argc, char** argv) {
  std::string csv;
  int64_t max_n = 262144;
  double seconds = 1.0;  // timed work per measurement (at least one run)
  std::string only = "nala,softmax,nala-bf16";
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--csv" && i + 1 < argc) csv = argv[++i];
    else if (a == "--max-n" && i + 1 < argc) max_n = std::atoll(argv[++i]);
    else if (a == "--seconds" && i + 1 < argc) seconds = std::atof(argv[++i]);
    else if (a == "--ops" && i + 1 < argc) only = argv[++i];
    else {
      fprintf(stderr, "bench_long_seq: unknown argument %s (--csv FILE, --max-n N, --seconds S, --ops LIST)\n",
              a.c_str());
      return 2;
    }
  }
  const struct {
    const char *name, *key;
    AttnFn fn;
    DType dt;
  } ops[] = {{"nala", "nala", &nala_attention, DType::F32},
             {"softmax", "softmax", &softmax_attention, DType::F32},
             {"nala", "nala-bf16", &nala_attention, DType::BF16}};
  for (size_t a = 0; a <= only.size();) {  // every name of --ops must be one of the keys
    const size_t b = std::min(only.find(',', a), only.size());
    const std::string key = only.substr(a, b - a);
    bool known = false;
    for (const auto& op : ops) known = known || key == op.key;
    if (!known) {
      fprintf(stderr, "bench_long_seq: unknown op '%s' in --ops (nala, softmax, nala-bf16)\n", key.c_str());
      return 2;
    }
    a = b + 1;
  }
  if (!device::cuda_available()) {
    fprintf(stderr, "bench_long_seq: no CUDA device\n");
    return 1;
  }
  FILE* out = nullptr;
  if (!csv.empty()) {
    out = fopen(csv.c_str(), "wx");  // never replaces a file
    if (!out) {
      fprintf(stderr, "bench_long_seq: cannot create %s (it must not exist)\n", csv.c_str());
      return 1;
    }
    fprintf(out, "impl,dtype,N,d,fwd_ms,fwd_bwd_ms,peak_MiB\n");
  }
  const int64_t sides[] = {64, 128, 256, 512}, D = 64;
  auto chosen = [&](const char* key) { return ("," + only + ",").find("," + std::string(key) + ",") != std::string::npos; };
  printf("# long sequences: 1 image, 1 head, d = %lld; float32, and nala's NaLa in bf16 (the softmax op: float32 only)\n",
         (long long)D);
  bool ok = true;
  for (int64_t side : sides) {
    const int64_t N = side * side;
    if (N > max_n) break;
    Inputs in32;
    Rng rng(7);
    for (Tensor* t : {&in32.q, &in32.k, &in32.v, &in32.go}) *t = Tensor::empty({1, 1, N, D});
    rng.fill_normal(in32.q, 0.0f, 0.5f);
    rng.fill_normal(in32.k, 0.0f, 0.8f);
    rng.fill_normal(in32.v, 0.0f, 1.0f);
    rng.fill_normal(in32.go, 0.0f, 1.0f);
    for (const auto& op : ops) {
      if (!chosen(op.key)) continue;
      const bool bf = op.dt == DType::BF16;
      const char* dname = bf ? "bf16" : "fp32";
      const double floor_mib = 8.0 * N * D * (bf ? 2 : 4) / 1048576.0;
      // The inputs in the op's dtype (bf16: rounded once, on the host).
      const Inputs in{cast(in32.q, op.dt), cast(in32.k, op.dt), cast(in32.v, op.dt), cast(in32.go, op.dt)};
      // Peak: nothing of ours is held at the reset; the step allocates everything.
      device::synchronize();
      const size_t base = device::in_use_bytes();
      device::reset_peak();
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<Tensor> res = step(op.fn, in, side, side, Device::CUDA);
      device::synchronize();
      const double once_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      const double peak_mib = (device::peak_bytes() - base) / 1048576.0;
      double w = -1;
      if (side == sides[0]) {
        std::vector<Tensor> ref = step(op.fn, in, side, side, Device::CPU);
        w = 0;
        for (size_t i = 0; i < ref.size(); i++) w = std::max(w, worst(res[i], ref[i], bf));
        ok = ok && w <= 1.0;
      }
      res.clear();
      // Times: inputs stay on the GPU; each run makes the output and fresh gradients.
      Tensor q = in.q.to(Device::CUDA), k = in.k.to(Device::CUDA), v = in.v.to(Device::CUDA),
             go = in.go.to(Device::CUDA);
      q.set_requires_grad(true), k.set_requires_grad(true), v.set_requires_grad(true);
      auto fwd = [&] {
        NoGradGuard ng;
        op.fn(q, k, v, side, side);
      };
      auto fwd_bwd = [&] {
        for (Tensor* t : {&q, &k, &v}) t->set_grad(Tensor());
        backward(op.fn(q, k, v, side, side), go);
      };
      // Medians over ~`seconds` of runs each (the first step, uploads included, sizes them).
      const int reps = (int)std::max(1.0, std::min(20.0, seconds * 1e3 / std::max(once_ms, 1e-3)));
      const int warm = once_ms > 1e3 ? 0 : 1;  // the kernels ran in the first step
      const float t_fwd = median_ms(fwd, 1, reps), t_all = median_ms(fwd_bwd, warm, reps);
      printf("nala long_seq %s %s N=%lld d=%lld fwd_ms=%.3f fwd_bwd_ms=%.3f peak_MiB=%.2f floor_MiB=%.1f "
             "beyond_KiB=%.0f reps=%d",
             op.name, dname, (long long)N, (long long)D, t_fwd, t_all, peak_mib, floor_mib, (peak_mib - floor_mib) * 1024,
             reps);
      if (w >= 0) printf(" worst=%.3f %s", w, w <= 1.0 ? "ok" : "FAILED");
      printf("\n");
      fflush(stdout);
      if (out) {
        fprintf(out, "nala_%s,%s,%lld,%lld,%.4f,%.4f,%.3f\n", op.name, dname, (long long)N, (long long)D, t_fwd,
                t_all, peak_mib);
        fflush(out);
      }
    }
  }
  if (out) fclose(out);
  return ok ? 0 : 1;
}
