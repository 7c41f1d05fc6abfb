// bench/bench_pico.cpp - pico training and inference images/s on the CPU.
//
// Same work as bench/torch_pico_cpu.py: random 1x28x28 images, 10 classes;
// a training step is forward, cross-entropy, backward and an AdamW step;
// inference is an eval-mode forward without the tape. Run both side by side
// with bench/pico_cpu_vs_torch.sh; xt's latency for one 224 px image with
// bench/xt_cpu_vs_torch.sh. ms/iter is the mean of the timed iterations,
// ms_median their median (the latency of one call).
//
// --graphs 1 (cuda): the step as nala train runs it with CUDA graphs
// (models/train/graph_step.h): a host batch uploaded from page-locked memory,
// then one graph launch; inference as the evaluation does it (forward, loss
// and the accuracy sums on the device). No read-back until the end.
//
//   build/release/bench/bench_pico [--threads 2] [--batch 128] [--warmup 3] [--iters 10]
//                                  [--model pico] [--img 28] [--device cpu|cuda] [--modes train,infer]
//                                  [--graphs 0|1] [--precision fp32|bf16]
// --precision bf16 (cuda): the matrix products on tensor cores (nala train --precision bf16).
// --dw-tiled 1 (cuda): the depthwise stencil's tiled kernel everywhere (cuda::dwconv_force_tiled).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "models/nalaformer.h"
#include "models/train/graph_step.h"
#include "nn/optim.h"
#include "tensor/device.h"
#ifdef NALA_CUDA
#include "kernels/cuda/conv.h"
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace nala;

int main(int argc, char** argv) {
  int threads = 2, batch = 128, warmup = 3, iters = 10, img = 28, graphs = 0, dw_tiled = 0;
  std::string model_name = "pico", modes = "train,infer", device = "cpu", precision = "fp32";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--batch") batch = std::atoi(argv[i + 1]);
    else if (a == "--warmup") warmup = std::atoi(argv[i + 1]);
    else if (a == "--iters") iters = std::atoi(argv[i + 1]);
    else if (a == "--model") model_name = argv[i + 1];
    else if (a == "--img") img = std::atoi(argv[i + 1]);
    else if (a == "--modes") modes = argv[i + 1];
    else if (a == "--device") device = argv[i + 1];
    else if (a == "--graphs") graphs = std::atoi(argv[i + 1]);
    else if (a == "--precision") precision = argv[i + 1];
    else if (a == "--dw-tiled") dw_tiled = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  const Device dev = device == "cuda" ? Device::CUDA : Device::CPU;
  if (precision != "fp32" && (precision != "bf16" || dev != Device::CUDA)) {
    std::fprintf(stderr, "--precision: fp32, or bf16 with --device cuda\n");
    return 2;
  }
  if (precision == "bf16") device::set_gemm_bf16(true);
  if (dw_tiled) {
#ifdef NALA_CUDA
    cuda::dwconv_force_tiled(true);
#else
    std::fprintf(stderr, "--dw-tiled needs a CUDA build\n");
    return 2;
#endif
  }
  NalaConfig cfg = nalaformer_config(model_name);
  NalaFormer model(cfg, 1);
  Rng rng(0);
  model.init_weights(rng);
  model.to(dev);
  Tensor x = Tensor::empty({batch, img, img, cfg.in_chans});
  rng.fill_normal(x, 0, 1);
  x = x.to(dev);
  std::vector<int64_t> y(batch);
  for (auto& v : y) v = (int64_t)rng.below(cfg.num_classes);
  const Tensor x_host = x, labels_host = Tensor::from_vector_i64({batch}, y);
  Tensor labels = labels_host.to(dev);
  if (graphs && dev != Device::CUDA) {
    std::fprintf(stderr, "--graphs needs --device cuda\n");
    return 2;
  }
  auto sync = [&] {
    if (dev == Device::CUDA) device::synchronize();
  };
  AdamW opt(model.named_parameters(), 1e-3, 0.9, 0.999, 1e-8, 0.05);

  double median_s = 0;  // of the last time_loop's iterations
  auto time_loop = [&](auto fn) {
    for (int i = 0; i < warmup; i++) fn();
    sync();
    if (dev == Device::CUDA) device::reset_peak();
    // The CPU: each call timed. CUDA: one synchronisation at the end (the
    // host queues the next step while the GPU runs), so the median is the mean.
    std::vector<double> t;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; i++) {
      auto a = std::chrono::steady_clock::now();
      fn();
      if (dev == Device::CPU) t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
    }
    sync();
    const double mean = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    std::sort(t.begin(), t.end());
    median_s = t.empty() ? mean : t[t.size() / 2];
    return mean;
  };
  if (modes.find("train") != std::string::npos) {
    model.train();
    double s;
    if (graphs) {
      GraphTrainStep g(model, opt, 0.0f);
      s = time_loop([&] { g.step(x_host, labels_host); });
      if (!g.graph_on()) std::fprintf(stderr, "CUDA graphs off: %s\n", g.off_reason.c_str());
      std::printf("train graph: %zu nodes, %.2f us per node\n", g.graph_nodes(), 1e6 * s / (double)g.graph_nodes());
    } else {
      s = time_loop([&] {
        Tensor loss = cross_entropy(model.forward(x), labels);
        backward(loss);
        opt.step();
        opt.zero_grad();
      });
    }
    // Timing as a profile: with graphs the GPU runs the step's work back to
    // back, so ms/iter with graphs is close to the GPU's busy time; the
    // difference to the eager ms/iter is what launching costs.
    std::printf("nala %s train device=%s graphs=%d threads=%d batch=%d img=%d img/s=%.1f ms/iter=%.3f ms_median=%.3f "
                "peak_MiB=%.0f precision=%s\n",
                model_name.c_str(), device.c_str(), graphs, threads, batch, img, batch / s, 1e3 * s, 1e3 * median_s,
                device::peak_bytes() / 1048576.0, precision.c_str());
  }
  if (modes.find("infer") != std::string::npos) {
    model.eval();
    double s;
    if (graphs) {
      GraphEval g(model);
      g.start(cfg.num_classes);
      s = time_loop([&] { g.batch(x_host, labels_host); });
      if (!g.off_reason.empty()) std::fprintf(stderr, "CUDA graphs off: %s\n", g.off_reason.c_str());
      const size_t nodes = g.graph_nodes(x_host.shape());
      std::printf("infer graph: %zu nodes, %.2f us per node\n", nodes, 1e6 * s / (double)nodes);
    } else {
      s = time_loop([&] {
        NoGradGuard ng;
        model.forward(x);
      });
    }
    std::printf("nala %s infer device=%s graphs=%d threads=%d batch=%d img=%d img/s=%.1f ms/iter=%.3f ms_median=%.3f "
                "peak_MiB=%.0f precision=%s\n",
                model_name.c_str(), device.c_str(), graphs, threads, batch, img, batch / s, 1e3 * s, 1e3 * median_s,
                device::peak_bytes() / 1048576.0, precision.c_str());
  }
  return 0;
}
