// bench/bench_scaling.cpp - data-parallel training images/s on 1..N GPUs.
//
// Each process trains one replica on random images (its own seed) with the
// training step of `nala train`: forward, cross-entropy, backward with the
// bucketed gradient all-reduce (distributed/distributed.h), AdamW. Rank 0 prints
// the images/s of the whole group. Scaling efficiency is N-GPU images/s over
// N times the 1-GPU figure (bench/scaling.sh runs 1, 2, 4, 8).
//
//   build/release/bench/bench_scaling [--gpus N] [--model t] [--img 224] [--batch 128 (per GPU)]
//       [--warmup 3] [--iters 10] [--bucket-mb 25] [--nccl1]
//   mpirun -np N build/release/bench/bench_scaling ...      (the same through MPI)
//
// --nccl1 runs one process through the NCCL group (instead of no group at
// all), to measure what the reducer itself costs.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "autograd/ops.h"
#include "models/nalaformer.h"
#include "distributed/distributed.h"
#include "nn/optim.h"
#include "tensor/device.h"

using namespace nala;

int main(int argc, char** argv) {
  int gpus = 1, batch = 128, warmup = 3, iters = 10, img = 224, bucket_mb = 25;
  bool nccl1 = false;
  std::string model_name = "t";
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (a == "--gpus") gpus = std::atoi(val().c_str());
    else if (a == "--batch") batch = std::atoi(val().c_str());
    else if (a == "--warmup") warmup = std::atoi(val().c_str());
    else if (a == "--iters") iters = std::atoi(val().c_str());
    else if (a == "--model") model_name = val();
    else if (a == "--img") img = std::atoi(val().c_str());
    else if (a == "--bucket-mb") bucket_mb = std::atoi(val().c_str());
    else if (a == "--nccl1") nccl1 = true;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    if (gpus > 1 && detect_launch().launcher.empty())
      return launch_local_group(gpus, std::vector<std::string>(argv, argv + argc));
    char dir[] = "/tmp/nala_bench_XXXXXX";
    if (nccl1 && detect_launch().launcher.empty()) {  // a group of one, through NCCL
      if (!mkdtemp(dir)) return 1;
      setenv("NALA_WORLD_SIZE", "1", 1), setenv("NALA_RANK", "0", 1), setenv("NALA_RENDEZVOUS", dir, 1);
    }
    std::unique_ptr<Comm> comm = open_comm(Device::CUDA);
    const int rank = comm->rank(), world = comm->size();
    NalaConfig cfg = nalaformer_config(model_name);
    NalaFormer model(cfg, 1);
    Rng rng(0);
    model.init_weights(rng);
    model.to(Device::CUDA);
    model.train();
    std::vector<Tensor> ps = model.parameters();
    broadcast_tensors(*comm, ps);
    Rng data_rng(100 + rank);
    Tensor x = Tensor::empty({batch, img, img, cfg.in_chans});
    data_rng.fill_normal(x, 0, 1);
    x = x.to(Device::CUDA);
    std::vector<int64_t> y(batch);
    for (auto& v : y) v = (int64_t)data_rng.below(cfg.num_classes);
    Tensor labels = Tensor::from_vector_i64({batch}, y).to(Device::CUDA);
    AdamW opt(model.named_parameters(), 1e-4, 0.9, 0.999, 1e-8, 0.05);
    std::unique_ptr<GradReducer> red;
    if (world > 1 || nccl1) red = std::make_unique<GradReducer>(ps, *comm, (int64_t)bucket_mb << 20);
    auto step = [&] {
      Tensor loss = cross_entropy(model.forward(x), labels);
      if (red) {
        backward(loss, Tensor(), false, red->hook());
        red->finish();
      } else {
        backward(loss);
      }
      opt.step();
      opt.zero_grad();
    };
    for (int i = 0; i < warmup; i++) step();
    device::synchronize();
    comm->barrier();
    device::reset_peak();
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; i++) step();
    device::synchronize();
    comm->barrier();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    if (rank == 0)
      std::printf("nala %s data-parallel gpus=%d comm=%s buckets=%d batch/gpu=%d img=%d img/s=%.1f img/s/gpu=%.1f "
                  "ms/step=%.2f peak_MiB=%.0f\n",
                  model_name.c_str(), world, red ? comm->backend() : "none", red ? red->num_buckets() : 0, batch, img,
                  world * batch / s, batch / s, 1e3 * s, device::peak_bytes() / 1048576.0);
    if (nccl1) {
      std::remove((std::string(dir) + "/nccl_id").c_str());
      rmdir(dir);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_scaling: %s\n", e.what());
    return 1;
  }
  return 0;
}
