// tools/cmd_train.cpp - `nala train`: train NaLaFormer from scratch.
//
// The command line becomes TrainOptions, the datasets are read (tools/
// datasets.h), the model is built and initialised from the seed, and the
// library's training loop runs (models/train/trainer.h: what a run writes,
// --resume, --max-steps, NaN/Inf); ConsoleLog prints what it reports.
// Before any data is read the output folder is opened under its rule
// (models/train/run_folder.h): a new one by default, refused when it holds a
// run unless --resume or --overwrite.
//
// Data-parallel (distributed/distributed.h): under mpirun, or `--gpus N` which starts
// N copies of this program, each process trains on its shard of every
// global batch and the bucketed all-reduce (GradReducer) averages the
// gradients during the backward pass; rank 0 writes the files.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>
#include <sstream>
#include <thread>

#include "distributed/distributed.h"
#include "models/train/run_folder.h"
#include "models/train/trainer.h"
#include "tensor/device.h"
#include "tools/common.h"

namespace nala {

namespace {

struct TrainArgs {
  std::string model = "pico";
  AttnOptions attn;
  DataSpec data;
  int64_t epochs = 10, batch_size = 128, seed = 0, threads = 0, workers = 1;
  float lr = 1e-3f, min_lr = 1e-5f, warmup_lr = 1e-6f, weight_decay = 0.05f, warmup_epochs = 1.0f;
  float label_smoothing = 0.1f, drop_path = -1.0f, clip_grad = 0.0f, momentum = 0.9f;
  std::string optimizer = "adamw";
  int64_t crop_pad = 0;
  bool hflip = false;
  float erase = 0.0f;
  int64_t val = 0;
  float ema = 0.0f;
  bool tta_flip = false;
  int64_t tta_shift = 0;
  std::string out, resume;
  bool overwrite = false;
  int64_t subset = 0, eval_subset = 0, max_steps = 0, log_every = 50;
  float time_budget = 0;
  bool skip_nonfinite = false;
  int64_t debug_nan_at = -1;
  std::string device = "cpu";
  int64_t gpus = 0, bucket_mb = 25;
  bool sync_bn = false;
  bool no_graphs = false;
  std::string precision = "fp32";
  // The arguments that must not change across --resume (they shape the run).
  std::string fingerprint() const {
    std::ostringstream os;
    os << "model=" << model;
    if (!attn.attn.empty() && attn.attn != "nala") os << " attn=" << attn.attn;  // the default's line is unchanged
    if (!attn.stages.empty()) os << " nala_stages=" << attn.stages;
    os << " data=" << data.name << " img=" << data.img_size << " epochs=" << epochs
       << " batch=" << batch_size << " seed=" << seed << " lr=" << lr << " min_lr=" << min_lr
       << " warmup=" << warmup_epochs << " wd=" << weight_decay << " ls=" << label_smoothing
       << " dp=" << drop_path << " clip=" << clip_grad << " opt=" << optimizer << " crop=" << crop_pad
       << " flip=" << hflip << " erase=" << erase << " subset=" << subset;
    if (val) os << " val=" << val;
    if (ema > 0) os << " ema=" << ema;
    if (tta_flip) os << " tta=flip";
    if (tta_shift > 0) os << " tta_shift=" << tta_shift;
    if (precision != "fp32") os << " precision=" << precision;
    // --time-budget is not recorded: the checkpoint names the epochs it chose.
    return os.str();
  }
};

int train_run(TrainArgs& a, Device dev, Comm& comm);
std::string default_run_stem(const TrainArgs& a) { return a.model + "-" + a.data.name; }

}  // namespace

int cmd_train(int argc, char** argv) {
  TrainArgs a;
  ArgParser p("train", "train NaLaFormer from scratch on a dataset (see README: Training)");
  p.add_choice("model", &a.model, "model config", nalaformer_config_names());
  add_attn_options(p, a.attn, true, false);
  add_data_options(p, a.data);
  p.add_int("epochs", &a.epochs, "epochs", 1, 100000);
  p.add_int("batch-size", &a.batch_size, "batch size", 1, 1 << 20);
  p.add_float("lr", &a.lr, "peak learning rate", 1e-9, 10);
  p.add_float("min-lr", &a.min_lr, "learning rate at the end of the cosine", 0, 10);
  p.add_float("warmup-lr", &a.warmup_lr, "learning rate at the start of the warm-up", 0, 10);
  p.add_float("warmup-epochs", &a.warmup_epochs, "linear warm-up length in epochs (fractions allowed)", 0, 1e5);
  p.add_float("weight-decay", &a.weight_decay, "decoupled weight decay (not on biases, norms, gammas)", 0, 10);
  p.add_float("label-smoothing", &a.label_smoothing, "label smoothing", 0, 0.999);
  p.add_float("drop-path", &a.drop_path, "stochastic depth rate (default: the config's)", -1, 0.999);
  p.add_float("clip-grad", &a.clip_grad, "clip the gradient's global norm (0 = off)", 0, 1e9);
  p.add_choice("optimizer", &a.optimizer, "optimiser", {"adamw", "sgd"});
  p.add_float("momentum", &a.momentum, "SGD momentum", 0, 0.999);
  p.add_int("crop-pad", &a.crop_pad, "augment: random crop after zero padding by N pixels (0 = off)", 0, 64);
  p.add_flag("hflip", &a.hflip, "augment: random horizontal flip");
  p.add_float("erase", &a.erase, "augment: random erasing probability", 0, 1);
  p.add_int("val", &a.val, "hold out N training images for validation (the same N on every run): the epoch best "
            "on them is saved as best_val.safetensors and reported with its test top-1 (0 = none)", 0, 1LL << 40);
  p.add_float("ema", &a.ema, "evaluate and save an exponential moving average of the weights with this decay, "
              "e.g. 0.999 (0 = off)", 0, 0.999999);
  p.add_flag("tta-flip", &a.tta_flip, "evaluate every epoch on each image and its mirror (mean of the logits)");
  p.add_int("tta-shift", &a.tta_shift, "evaluate every epoch on each image and its copies moved N pixels up, down, "
            "left and right (mean of the logits; with --tta-flip their mirrors too; 0 = off)", 0, 64);
  p.add_int("seed", &a.seed, "random seed", 0, (int64_t)1 << 62);
  p.add_int("threads", &a.threads, "CPU threads (0 = all)", 0, 4096);
  p.add_int("workers", &a.workers, "data loader threads", 0, 64);
  p.add_string("out", &a.out, "output folder (default: a new runs/<model>-<data>-<date>-<time>); one that holds "
               "a run is refused");
  p.add_flag("overwrite", &a.overwrite, "--out may hold an earlier run: its checkpoint, best weights and metrics "
             "are removed when this run starts");
  p.add_string("resume", &a.resume, "continue the run in this folder from its checkpoint");
  p.add_int("subset", &a.subset, "train on the first N images only (0 = all)", 0, 1LL << 40);
  p.add_int("eval-subset", &a.eval_subset, "evaluate on the first N test images only (0 = all)", 0, 1LL << 40);
  p.add_int("max-steps", &a.max_steps,
            "stop after N optimiser steps in total (0 = no limit); the schedule still spans --epochs", 0, 1LL << 40);
  p.add_float("time-budget", &a.time_budget,
              "seconds for the training loop: time the first steps, then train the whole epochs that fit "
              "(at most --epochs) with the schedule fitted to them (0 = off)", 0, 1e9);
  p.add_int("log-every", &a.log_every, "progress line every N steps when not on a terminal", 1, 1 << 30);
  p.add_flag("skip-nonfinite", &a.skip_nonfinite, "skip a step whose loss or gradient is not finite (default: stop)");
  p.add_int("debug-nan-at", &a.debug_nan_at, "testing aid: make the loss NaN at optimiser step N (counted from 0)", 0,
            1LL << 40);
  p.add_choice("device", &a.device, "where to train", {"cpu", "cuda"});
  p.add_int("gpus", &a.gpus, "data-parallel on N GPUs of this machine, one process each (NCCL; implies --device cuda)",
            0, 4096);
  p.add_flag("sync-bn", &a.sync_bn, "data-parallel: BatchNorm statistics over the global batch (default: per process)");
  p.add_flag("no-graphs", &a.no_graphs, "GPU: launch every kernel on its own instead of replaying each step "
             "as a CUDA graph (the default where shapes are fixed)");
  add_precision_option(p, &a.precision);
  p.add_int("bucket-mb", &a.bucket_mb, "data-parallel: gradient all-reduce bucket size in MiB", 1, 1 << 16);
  p.parse(argc, argv);
  if (a.gpus > 0) a.device = "cuda";
  apply_precision(a.precision, a.device);
  if (a.min_lr > a.lr) throw UsageError("--min-lr must not exceed --lr");
  if (a.warmup_epochs > (float)a.epochs) {
    std::ostringstream os;
    os << "--warmup-epochs " << a.warmup_epochs << " exceeds --epochs " << a.epochs
       << ": the warm-up must fit in the run";
    throw UsageError(os.str());
  }
  if (!a.resume.empty() && p.given("out") && a.out != a.resume)
    throw UsageError("--resume DIR writes into DIR; drop --out");
  if (!a.resume.empty() && a.overwrite) throw UsageError("--overwrite replaces a run and --resume continues one: "
                                                         "give one of them");
  if (!a.resume.empty() && a.time_budget > 0)
    throw UsageError("--time-budget chooses the epochs of a new run; resume with the --epochs that run chose "
                     "(its output says how many) and without --time-budget");
  if (!a.resume.empty()) a.out = a.resume;
  // A size the model cannot take is refused before the data is read.
  if (a.data.img_size) check_image_size(model_config_for(a.model, 3, 10), a.data.img_size, a.data.img_size);
  {
    NalaConfig probe = model_config_for(a.model, 3, 10);  // --nala-stages refused before any data is read
    apply_attn_options(a.attn, probe);
  }
  if (g_check_args_only) return 0;
  const LaunchEnv env = detect_launch();
  if (a.gpus > 1 && env.launcher.empty()) {
    NALA_CHECK(nccl_built(), "--gpus ", a.gpus, " needs NCCL, and this build has none: rebuild with CUDA and NCCL "
               "(README: Several GPUs)");
    const int have = device::cuda_device_count();
    NALA_CHECK(have >= a.gpus, "--gpus ", a.gpus, ": this machine has ", have, " GPU(s)");
    std::vector<std::string> args = {"nala", "train"};
    args.insert(args.end(), argv, argv + argc);
    if (a.out.empty()) {  // one new folder for the whole group, named here
      std::vector<std::string> made;
      a.out = make_new_run_folder("runs", default_run_stem(a), &made);
      args.insert(args.end(), {"--out", a.out});
    }
    return launch_local_group((int)a.gpus, args);
  }
  if (a.gpus > 0 && env.launcher == "nala" && env.size != a.gpus)
    NALA_FAIL("--gpus ", a.gpus, " but this process is one of ", env.size);
  // The processes of one machine share its cores unless told otherwise.
  if (a.threads == 0 && env.local_size > 1)
    a.threads = std::max<int64_t>(1, (int64_t)std::thread::hardware_concurrency() / env.local_size);
  const Device dev = parse_device(a.device);
  std::unique_ptr<Comm> comm = open_comm(dev);  // on CUDA: selects this rank's GPU first
  try {
    return train_run(a, dev, *comm);
  } catch (const std::exception& e) {
    if (comm->size() == 1) throw;
    std::fprintf(stderr, "nala (rank %d of %d): error: %s\n", comm->rank(), comm->size(), e.what());
    std::fflush(stderr);
    comm->abort(1);
  }
  return 1;  // not reached: abort() ends the process
}

namespace {

TrainOptions train_options(const TrainArgs& a) {
  TrainOptions o;
  o.epochs = a.epochs, o.batch_size = a.batch_size;
  o.lr = a.lr, o.min_lr = a.min_lr, o.warmup_lr = a.warmup_lr, o.warmup_epochs = a.warmup_epochs;
  o.optimizer = a.optimizer, o.weight_decay = a.weight_decay, o.momentum = a.momentum;
  o.label_smoothing = a.label_smoothing, o.clip_grad = a.clip_grad;
  o.ema_decay = a.ema, o.tta.flip = a.tta_flip, o.tta.shift = (int)a.tta_shift;
  o.augment.crop_pad = (int)a.crop_pad, o.augment.hflip = a.hflip, o.augment.erase_prob = a.erase;
  o.workers = (int)a.workers, o.seed = (uint64_t)a.seed;
  o.time_budget = a.time_budget;
  o.max_steps = a.max_steps, o.eval_subset = a.eval_subset, o.log_every = a.log_every;
  o.skip_nonfinite = a.skip_nonfinite, o.debug_nan_at = a.debug_nan_at, o.sync_bn = a.sync_bn;
  o.graphs = !a.no_graphs;
  o.out = a.out, o.resume = !a.resume.empty();
  o.args = a.fingerprint();
  return o;
}

int train_body(TrainArgs& a, Device dev, Comm& comm, std::string& doing);

// std::bad_alloc says nothing of what was being allocated: `doing` does.
int train_run(TrainArgs& a, const Device dev, Comm& comm) {
  std::string doing = "starting";
  try {
    return train_body(a, dev, comm, doing);
  } catch (const std::bad_alloc&) {
    NALA_FAIL("out of memory while ", doing);
  }
}

int train_body(TrainArgs& a, const Device dev, Comm& comm, std::string& doing) {
  const int rank = comm.rank(), world = comm.size();
  const bool lead = rank == 0;
  // Data-parallel whenever a launcher made a group, even a group of one
  // (mpirun -np 1 takes the same code path as -np 8).
  const bool dp = std::strcmp(comm.backend(), "single") != 0;
  if (!lead && std::freopen("/dev/null", "w", stdout) == nullptr) NALA_FAIL("cannot silence rank ", rank);
  set_threads(a.threads);

  // The output folder before any work: made (a new one by default), checked,
  // locked, and refused when it holds a run (models/train/run_folder.h).
  // Rank 0 writes; the other ranks learn its name.
  std::unique_ptr<RunFolder> folder;
  if (lead) {
    std::vector<std::string> made;
    if (a.out.empty()) a.out = make_new_run_folder("runs", default_run_stem(a), &made);
    folder = std::make_unique<RunFolder>(
        a.out, !a.resume.empty() ? RunFolder::RESUME : a.overwrite ? RunFolder::OVERWRITE : RunFolder::NEW, made);
    if (!folder->warning().empty()) std::fprintf(stderr, "nala: warning: %s\n", folder->warning().c_str());
    for (const std::string& f : remove_stale_temp_files(a.out))
      std::fprintf(stderr, "nala: removed %s, left by an interrupted save\n", f.c_str());
    std::printf("nala train: output folder %s\n", a.out.c_str());
    std::fflush(stdout);
  }
  if (dp) {
    uint64_t n = a.out.size();
    comm.broadcast_bytes(&n, sizeof n, 0);
    a.out.resize(n);
    comm.broadcast_bytes(&a.out[0], n, 0);
  }

  doing = "loading the " + a.data.name + " training images";
  Dataset train_set = load_dataset(a.data, true, a.subset);
  doing = "loading the " + a.data.name + " test images";
  Dataset test_set = load_dataset(a.data, false);
  const Dataset val_set = split_validation(train_set, a.val);  // --val: held out of the training images
  NalaConfig cfg = model_config_for(a.model, train_set.c, (int64_t)train_set.classes.size());
  if (a.drop_path >= 0) cfg.drop_path_rate = a.drop_path;
  apply_attn_options(a.attn, cfg);
  check_image_size(cfg, train_set.h, train_set.w);
  if (a.batch_size > train_set.n)
    throw UsageError("--batch-size " + std::to_string(a.batch_size) + " exceeds the " +
                     std::to_string(train_set.n) + " training images");
  if (a.batch_size * world > train_set.n)
    throw UsageError("the global batch of " + std::to_string(world) + " x " + std::to_string(a.batch_size) +
                     " exceeds the " + std::to_string(train_set.n) + " training images");

  doing = "building the model";
  NalaFormer model(cfg, (uint64_t)a.seed + 1);
  if (dev == Device::CPU)
    check_train_memory(estimate_train_memory(cfg, model.num_parameters(), a.optimizer == "adamw" ? 2 : 1,
                                             train_set.h, train_set.w, a.batch_size),
                       physical_memory_bytes());
  Rng init_rng((uint64_t)a.seed);
  model.init_weights(init_rng);
  model.train();
  model.to(dev);
  std::unique_ptr<GradReducer> reducer;
  if (dp) reducer = std::make_unique<GradReducer>(model.parameters(), comm, a.bucket_mb << 20);

  TrainOptions opt = train_options(a);
  opt.folder = folder.get();
  if (val_set.n > 0) opt.val = &val_set;
  ConsoleLog log;
  train(model, train_set, test_set, opt, comm, reducer.get(), &log);
  return 0;
}

}  // namespace

}  // namespace nala
