// bench/bench_pico.cpp - pico training and inference images/s on the CPU.
//
// Same work as bench/torch_pico_cpu.py: random 1x28x28 images, 10 classes;
// a training step is forward, cross-entropy, backward and an AdamW step;
// inference is an eval-mode forward without the tape. Run both side by side
// with bench/pico_cpu_vs_torch.sh.
//
//   build/release/bench/bench_pico [--threads 2] [--batch 128] [--warmup 3] [--iters 10] [--model pico]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "autograd/ops.h"
#include "models/nalaformer.h"
#include "nn/optim.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace nala;

int main(int argc, char** argv) {
  int threads = 2, batch = 128, warmup = 3, iters = 10, img = 28;
  std::string model_name = "pico", modes = "train,infer";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--batch") batch = std::atoi(argv[i + 1]);
    else if (a == "--warmup") warmup = std::atoi(argv[i + 1]);
    else if (a == "--iters") iters = std::atoi(argv[i + 1]);
    else if (a == "--model") model_name = argv[i + 1];
    else if (a == "--img") img = std::atoi(argv[i + 1]);
    else if (a == "--modes") modes = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  NalaConfig cfg = nalaformer_config(model_name);
  NalaFormer model(cfg, 1);
  Rng rng(0);
  model.init_weights(rng);
  Tensor x = Tensor::empty({batch, img, img, cfg.in_chans});
  rng.fill_normal(x, 0, 1);
  std::vector<int64_t> y(batch);
  for (auto& v : y) v = (int64_t)rng.below(cfg.num_classes);
  Tensor labels = Tensor::from_vector_i64({batch}, y);
  AdamW opt(model.named_parameters(), 1e-3, 0.9, 0.999, 1e-8, 0.05);

  auto time_loop = [&](auto fn) {
    for (int i = 0; i < warmup; i++) fn();
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; i++) fn();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  };
  if (modes.find("train") != std::string::npos) {
    model.train();
    double s = time_loop([&] {
      Tensor loss = cross_entropy(model.forward(x), labels);
      backward(loss);
      opt.step();
      opt.zero_grad();
    });
    std::printf("nala %s train threads=%d batch=%d img/s=%.1f ms/iter=%.1f\n", model_name.c_str(), threads, batch,
                batch / s, 1e3 * s);
  }
  if (modes.find("infer") != std::string::npos) {
    model.eval();
    double s = time_loop([&] {
      NoGradGuard ng;
      model.forward(x);
    });
    std::printf("nala %s infer threads=%d batch=%d img/s=%.1f ms/iter=%.1f\n", model_name.c_str(), threads, batch,
                batch / s, 1e3 * s);
  }
  return 0;
}
