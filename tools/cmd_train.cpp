// tools/cmd_train.cpp - `nala train`: train NaLaFormer from scratch.
//
// One run writes into its output folder (a new one by default; the rule for
// an existing one is in tools/run_folder.h):
//   checkpoint.safetensors  the last completed epoch: weights ("model.*"),
//                           optimiser state ("optim.*"), and in the metadata
//                           the epoch, step, RNG state, config and arguments
//   best.safetensors        the weights (release key names) of the epoch with
//                           the best test top-1
//   metrics.csv             one row per completed epoch
// Every file is written atomically (temporary file, fsync, rename), so a
// crash leaves the previous complete checkpoint in place. `--resume DIR`
// continues from DIR's checkpoint; with the same arguments, seed and thread
// count the result is bit-identical to a run that was never interrupted:
// every epoch's data order and augmentation come from (seed, epoch), and the
// drop-path RNG state is saved. A checkpoint is read with every metadata
// value checked and every tensor finite, or refused naming what is wrong.
//
// Files are written at the end of an epoch only. --max-steps that stops a run
// inside an epoch trains and evaluates that partial epoch, reports it, and
// writes nothing for it; the closing lines name only files that exist.
//
// Data-parallel (distributed/distributed.h): under mpirun, or `--gpus N` which starts
// N copies of this program, each process trains on its shard of every
// global batch and the bucketed all-reduce averages the gradients during
// the backward pass; rank 0 writes the files.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <sstream>
#include <thread>

#include "autograd/ops.h"
#include "distributed/distributed.h"
#include "models/train/evaluate.h"
#include "models/train/log.h"
#include "models/train/run_folder.h"
#include "models/weights.h"
#include "nn/files.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "nn/schedule.h"
#include "tensor/device.h"
#include "tools/common.h"

namespace nala {

namespace {

struct TrainArgs {
  std::string model = "pico";
  DataSpec data;
  int64_t epochs = 10, batch_size = 128, seed = 0, threads = 0, workers = 1;
  float lr = 1e-3f, min_lr = 1e-5f, warmup_lr = 1e-6f, weight_decay = 0.05f, warmup_epochs = 1.0f;
  float label_smoothing = 0.1f, drop_path = -1.0f, clip_grad = 0.0f, momentum = 0.9f;
  std::string optimizer = "adamw";
  int64_t crop_pad = 0;
  bool hflip = false;
  float erase = 0.0f;
  std::string out, resume;
  bool overwrite = false;
  int64_t subset = 0, eval_subset = 0, max_steps = 0, log_every = 50;
  bool skip_nonfinite = false;
  int64_t debug_nan_at = -1;
  std::string device = "cpu";
  int64_t gpus = 0, bucket_mb = 25;
  bool sync_bn = false;
  int64_t seed_epoch_hash(int64_t epoch) const { return seed * 1000003 + epoch; }
  // The arguments that must not change across --resume (they shape the run).
  std::string fingerprint() const {
    std::ostringstream os;
    os << "model=" << model << " data=" << data.name << " img=" << data.img_size << " epochs=" << epochs
       << " batch=" << batch_size << " seed=" << seed << " lr=" << lr << " min_lr=" << min_lr
       << " warmup=" << warmup_epochs << " wd=" << weight_decay << " ls=" << label_smoothing
       << " dp=" << drop_path << " clip=" << clip_grad << " opt=" << optimizer << " crop=" << crop_pad
       << " flip=" << hflip << " erase=" << erase << " subset=" << subset;
    return os.str();
  }
};

std::string rng_to_string(const std::array<uint64_t, 4>& s) {
  char buf[80];
  std::snprintf(buf, sizeof buf, "%016llx%016llx%016llx%016llx", (unsigned long long)s[0],
                (unsigned long long)s[1], (unsigned long long)s[2], (unsigned long long)s[3]);
  return buf;
}

// ---------------------------------------------------------------- checkpoint metadata
// Every value is checked and an error names the file, the key and the value.

struct CheckpointMeta {
  const SafeTensors& st;
  const std::string& path;
  const std::string& get(const char* key) const {
    auto it = st.metadata.find(key);
    NALA_CHECK(it != st.metadata.end(), path, ": not a nala training checkpoint (no ", key, " in its metadata)");
    return it->second;
  }
  [[noreturn]] void bad(const char* key, const std::string& why,
                        const char* cause = "the checkpoint is damaged or was not written by nala train") const {
    NALA_FAIL(path, ": checkpoint metadata ", key, " = '", get(key), "' ", why, "; ", cause);
  }
  int64_t integer(const char* key, int64_t lo, int64_t hi) const {
    const std::string& v = get(key);
    errno = 0;
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || errno || v.find_first_of(" \t\n") != std::string::npos) bad(key, "is not an integer");
    if (x < lo || x > hi)
      bad(key, "is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }
  double number(const char* key, double lo, double hi) const {
    const std::string& v = get(key);
    errno = 0;
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end || errno || !std::isfinite(x)) bad(key, "is not a finite number");
    if (x < lo || x > hi) bad(key, "is out of range");
    return x;
  }
  std::array<uint64_t, 4> rng(const char* key) const {
    const std::string& v = get(key);
    if (v.size() != 64 || v.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
      bad(key, "is not 64 hexadecimal digits");
    std::array<uint64_t, 4> s{};
    for (int i = 0; i < 4; i++) s[i] = std::strtoull(v.substr(16 * i, 16).c_str(), nullptr, 16);
    return s;
  }
};

// A checkpoint whose weights or optimiser state hold NaN or Inf cannot be
// continued: refused naming the tensor, before anything is loaded from it.
void check_checkpoint_finite(const SafeTensors& st, const std::string& path) {
  for (auto& [name, t] : st.tensors) {
    if (t.dtype() != DType::F32) continue;
    const float* p = t.f32();
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < t.numel(); i++)
      if (!std::isfinite(p[i])) bad++, first = first < 0 ? i : first;
    NALA_CHECK(bad == 0, path, ": tensor ", name, " holds ", bad, " non-finite value", bad == 1 ? "" : "s",
               " (NaN or Inf; the first at element ", first, " of ", t.numel(),
               "): the checkpoint is damaged and cannot be resumed; start a new run, or resume from a copy "
               "saved before the damage");
  }
}

int train_run(TrainArgs& a, Device dev, Comm& comm);
std::string default_run_stem(const TrainArgs& a) { return a.model + "-" + a.data.name; }

}  // namespace

int cmd_train(int argc, char** argv) {
  TrainArgs a;
  ArgParser p("train", "train NaLaFormer from scratch on a dataset (see README: Training)");
  p.add_choice("model", &a.model, "model config", nalaformer_config_names());
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
  p.add_int("log-every", &a.log_every, "progress line every N steps when not on a terminal", 1, 1 << 30);
  p.add_flag("skip-nonfinite", &a.skip_nonfinite, "skip a step whose loss or gradient is not finite (default: stop)");
  p.add_int("debug-nan-at", &a.debug_nan_at, "testing aid: make the loss NaN at optimiser step N (counted from 0)", 0,
            1LL << 40);
  p.add_choice("device", &a.device, "where to train", {"cpu", "cuda"});
  p.add_int("gpus", &a.gpus, "data-parallel on N GPUs of this machine, one process each (NCCL; implies --device cuda)",
            0, 4096);
  p.add_flag("sync-bn", &a.sync_bn, "data-parallel: BatchNorm statistics over the global batch (default: per process)");
  p.add_int("bucket-mb", &a.bucket_mb, "data-parallel: gradient all-reduce bucket size in MiB", 1, 1 << 16);
  p.parse(argc, argv);
  if (a.gpus > 0) a.device = "cuda";
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
  if (!a.resume.empty()) a.out = a.resume;
  // A size the model cannot take is refused before the data is read.
  if (a.data.img_size) check_image_size(model_config_for(a.model, 3, 10), a.data.img_size, a.data.img_size);
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
  // locked, and refused when it holds a run (tools/run_folder.h). Rank 0
  // writes; the other ranks learn its name.
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
  Dataset train = load_dataset(a.data, true);
  doing = "loading the " + a.data.name + " test images";
  Dataset test = load_dataset(a.data, false);
  if (a.subset && a.subset < train.n) {
    train.n = a.subset;
    train.images.resize(train.n * train.image_size());
    train.labels.resize(train.n);
  }
  NalaConfig cfg = model_config_for(a.model, train.c, (int64_t)train.classes.size());
  if (a.drop_path >= 0) cfg.drop_path_rate = a.drop_path;
  check_image_size(cfg, train.h, train.w);
  if (a.batch_size > train.n) throw UsageError("--batch-size " + std::to_string(a.batch_size) + " exceeds the " +
                                               std::to_string(train.n) + " training images");

  doing = "building the model and its optimiser";
  NalaFormer model(cfg, (uint64_t)a.seed + 1);
  if (dev == Device::CPU)
    check_train_memory(estimate_train_memory(cfg, model.num_parameters(), a.optimizer == "adamw" ? 2 : 1, train.h,
                                             train.w, a.batch_size),
                       physical_memory_bytes());
  Rng init_rng((uint64_t)a.seed);
  model.init_weights(init_rng);
  model.train();
  model.to(dev);
  const bool on_gpu = dev != Device::CPU;
  std::vector<Tensor> bn_stats;  // running means and variances
  for (auto& [name, m] : model.named_modules())
    if (auto* bn = dynamic_cast<BatchNorm*>(m)) {
      bn_stats.push_back(bn->running_mean), bn_stats.push_back(bn->running_var);
      if (a.sync_bn && dp)
        bn->sync = [&comm](float* data, int64_t n, Device d) { comm.all_reduce_sum(data, n, d); };
    }

  std::unique_ptr<Optimizer> opt;
  if (a.optimizer == "adamw")
    opt = std::make_unique<AdamW>(model.named_parameters(), a.lr, 0.9, 0.999, 1e-8, a.weight_decay,
                                  std::vector<std::string>{"gamma_"});
  else
    opt = std::make_unique<SGD>(model.named_parameters(), a.lr, a.momentum, a.weight_decay);

  LoaderOptions lo;
  lo.batch_size = a.batch_size;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.workers = (int)a.workers;
  lo.augment.crop_pad = (int)a.crop_pad;
  lo.augment.hflip = a.hflip;
  lo.augment.erase_prob = a.erase;
  lo.rank = rank, lo.world = world;
  if (a.batch_size * world > train.n)
    throw UsageError("the global batch of " + std::to_string(world) + " x " + std::to_string(a.batch_size) +
                     " exceeds the " + std::to_string(train.n) + " training images");
  BatchLoader loader(train, lo);
  const int64_t steps_per_epoch = loader.num_batches();
  WarmupCosine sched(a.lr, a.min_lr, (int64_t)std::llround(a.warmup_epochs * steps_per_epoch), a.warmup_lr,
                     a.epochs * steps_per_epoch);

  const std::string ckpt = a.out + "/" + kCheckpointFile, best_path = a.out + "/" + kBestFile,
                    csv = a.out + "/" + kMetricsFile;
  int64_t epoch0 = 0, step = 0;
  double best = -1;
  if (!a.resume.empty()) {  // every rank reads the checkpoint: the run directory must be reachable from all
    doing = "reading the checkpoint " + ckpt;
    SafeTensors st = load_safetensors(ckpt);
    const CheckpointMeta meta{st, ckpt};
    NALA_CHECK(meta.get("nala.config") == cfg.describe(), ckpt, ": the checkpoint is of another model: ",
               meta.get("nala.config"), " (this run: ", cfg.describe(), ")");
    const bool same_args = meta.get("nala.args") == a.fingerprint();
    if (lead && !same_args)
      std::fprintf(stderr, "nala: warning: arguments differ from the checkpoint's run:\n  was: %s\n  now: %s\n",
                   meta.get("nala.args").c_str(), a.fingerprint().c_str());
    // A checkpoint is written at the end of an epoch: epoch >= 1.
    epoch0 = meta.integer("nala.epoch", 1, 1LL << 40);
    step = meta.integer("nala.step", 0, 1LL << 62);
    best = meta.number("nala.best_top1", -1, 1);
    const std::array<uint64_t, 4> rng = meta.rng("nala.rng");
    const int64_t was_global =
        st.metadata.count("nala.global_batch") ? meta.integer("nala.global_batch", 1, 1LL << 40) : a.batch_size;
    if (same_args && epoch0 > a.epochs)
      meta.bad("nala.epoch", "exceeds the run's --epochs " + std::to_string(a.epochs));
    check_checkpoint_finite(st, ckpt);
    load_weights(model, ckpt);
    std::map<std::string, Tensor> ost;
    for (auto& [k, t] : st.tensors)
      if (k.rfind("optim.", 0) == 0) ost[k.substr(6)] = t;
    opt->load_state(ost);
    model.rng.set_state(rng);
    if (was_global != a.batch_size * world) {  // a different number of ranks: same epoch, new steps per epoch
      std::printf("the checkpoint's run had a global batch of %lld, this one %lld x %d: the schedule restarts "
                  "at epoch %lld in steps of the new batch\n",
                  (long long)was_global, (long long)a.batch_size, world, (long long)epoch0);
      step = epoch0 * steps_per_epoch;
    } else if (step != epoch0 * steps_per_epoch) {
      // Every epoch has steps_per_epoch steps (skipped ones count): with the
      // same arguments, any other step is damage.
      if (same_args)
        meta.bad("nala.step", "does not match nala.epoch = " + std::to_string(epoch0) + " at " +
                                  std::to_string(steps_per_epoch) + " steps per epoch (" +
                                  std::to_string(epoch0 * steps_per_epoch) + ")",
                 "the checkpoint is damaged, or the training images changed since it was written");
      std::printf("the checkpoint's step %lld does not match its epoch %lld at this run's %lld steps per epoch: "
                  "the schedule continues at step %lld\n",
                  (long long)step, (long long)epoch0, (long long)steps_per_epoch,
                  (long long)(epoch0 * steps_per_epoch));
      step = epoch0 * steps_per_epoch;
    }
    if (lead) trim_metrics(csv, epoch0);
    std::printf("resuming %s at epoch %lld (step %lld)\n", a.out.c_str(), (long long)epoch0, (long long)step);
  }
  int64_t saved_epoch = epoch0, saved_step = step;  // what checkpoint.safetensors holds

  if (dp) {
    // Every rank starts from rank 0's weights and buffers; drop-path masks
    // differ per rank (each holds other images).
    std::vector<Tensor> state;
    for (auto& nt : model.state_dict()) state.push_back(nt.second);
    broadcast_tensors(comm, state);  // parameters and buffers
    if (rank > 0) {
      const auto s = model.rng.state();
      model.rng.seed_(s[0] ^ s[1] ^ s[2] ^ s[3] ^ (0x9e3779b97f4a7c15ULL * (uint64_t)rank));
    }
    std::printf("data-parallel: %d processes (%s), global batch %lld, BatchNorm %s\n", world, comm.backend(),
                (long long)(a.batch_size * world), a.sync_bn ? "synchronised" : "per process");
  }
  std::unique_ptr<GradReducer> reducer;
  if (dp) reducer = std::make_unique<GradReducer>(model.parameters(), comm, a.bucket_mb << 20);

  std::printf("nala train: %s\n  data %s: %lld train / %lld test images %lldx%lldx%lld, %zu classes\n"
              "  %lld parameters, %lld epochs x %lld steps of %lld, %d threads, output %s\n",
              cfg.describe().c_str(), train.name.c_str(), (long long)train.n, (long long)test.n, (long long)train.h,
              (long long)train.w, (long long)train.c, train.classes.size(), (long long)model.num_parameters(),
              (long long)a.epochs, (long long)steps_per_epoch, (long long)a.batch_size, threads_in_use(),
              a.out.c_str());
  const int64_t left_out = train.n - steps_per_epoch * a.batch_size * world;
  if (left_out > 0)
    std::printf("  each epoch trains on %lld of the %lld images: the last %lld of its shuffled order do not fill a "
                "batch (a new order every epoch)\n",
                (long long)(train.n - left_out), (long long)train.n, (long long)left_out);
  std::fflush(stdout);

  const double run_start = now_seconds();
  int64_t skipped = 0, partial_epoch = 0, partial_steps = 0;
  const int64_t first_step = step;
  bool stop = a.max_steps && step >= a.max_steps;
  if (stop)
    std::printf("--max-steps %lld: the run is already at step %lld; nothing to train\n", (long long)a.max_steps,
                (long long)step);
  else if (epoch0 >= a.epochs)
    std::printf("the checkpoint is at epoch %lld and this run has --epochs %lld: nothing to train\n",
                (long long)epoch0, (long long)a.epochs);
  if (lead && !stop && epoch0 < a.epochs) {  // --overwrite, now that the run is ready
    std::string removed;
    for (const std::string& f : folder->remove_earlier_run()) removed += (removed.empty() ? "" : ", ") + f;
    if (!removed.empty()) std::printf("--overwrite: removed the earlier run's %s from %s\n", removed.c_str(), a.out.c_str());
  }
  const std::string batch_text = "batches of " + std::to_string(a.batch_size) + " images of " +
                                 std::to_string(train.h) + "x" + std::to_string(train.w) + "x" +
                                 std::to_string(train.c);
  for (int64_t epoch = epoch0; epoch < a.epochs && !stop; epoch++) {
    doing = "training epoch " + std::to_string(epoch + 1) + " (" + batch_text +
            "); a smaller --batch-size needs less memory";
    Rng epoch_rng((uint64_t)a.seed_epoch_hash(epoch));
    loader.start_epoch(epoch_rng);
    model.train();
    Progress bar(steps_per_epoch, a.log_every);
    const double t0 = now_seconds();
    double loss_sum = 0, lr = 0;
    int64_t correct = 0, seen = 0, acc_seen = 0, steps_done = 0;
    Batch batch;
    Tensor loss_dev;  // GPU: the sum of this epoch's losses, read at log steps only
    Tensor pin_images, pin_labels;  // GPU: page-locked staging buffers for each batch
    int64_t last_checked = step;
    while (loader.next(batch)) {
      lr = sched.lr_at(step);
      opt->set_lr(lr);
      Tensor images = batch.images, labels = batch.labels;
      if (on_gpu) {  // host batch -> page-locked buffer -> device
        if (!pin_images.defined() || pin_images.shape() != images.shape()) {
          pin_images = Tensor::empty_pinned(images.shape());
          pin_labels = Tensor::empty_pinned(labels.shape(), DType::I64);
        }
        pin_images.copy_(images);
        pin_labels.copy_(labels);
        images = pin_images.to(dev), labels = pin_labels.to(dev);
      }
      Tensor logits = model.forward(images);
      Tensor loss = cross_entropy(logits, labels, a.label_smoothing);
      if (step == a.debug_nan_at) loss = scale(loss, NAN);  // --debug-nan-at: NaN loss and gradients
      if (reducer) {
        backward(loss, Tensor(), false, reducer->hook());
        reducer->finish();  // every rank now holds the mean gradient
      } else {
        backward(loss);
      }
      // The CPU checks every step. The GPU reads values back only at log
      // steps (and at the end of the epoch), unless --skip-nonfinite or
      // --clip-grad need the values of every step.
      const bool log_now = (steps_done + 1) % a.log_every == 0 || steps_done + 1 == steps_per_epoch;
      const bool check_now = !on_gpu || log_now || a.skip_nonfinite;
      double gnorm = 0;
      if (a.clip_grad > 0) gnorm = clip_grad_norm(model.parameters(), a.clip_grad);
      else if (!on_gpu || a.skip_nonfinite) gnorm = grad_norm(model.parameters());
      float lv = 0;
      if (on_gpu) {
        NoGradGuard ng;
        loss_dev = loss_dev.defined() ? add(loss_dev, loss.detach()) : loss.detach().clone();
      }
      bool skip_step = false;
      if (check_now) {
        lv = loss.item();
        double total = on_gpu ? (double)loss_dev.item() : loss_sum + lv;
        bool bad = !std::isfinite(lv) || !std::isfinite(gnorm) || !std::isfinite(total);
        if (dp) {  // one rank's bad loss stops (or skips) every rank
          float flag = bad ? 1.0f : 0.0f;
          comm.all_reduce_sum(&flag, 1, Device::CPU);
          bad = flag > 0;
        }
        if (bad) {
          std::string what = !std::isfinite(gnorm) ? "gradient norm" : "loss";
          std::string where = "at step " + std::to_string(step);
          if (!std::isfinite(total) && std::isfinite(lv) && std::isfinite(gnorm))
            where = "between steps " + std::to_string(last_checked) + " and " + std::to_string(step);
          if (!a.skip_nonfinite)
            NALA_FAIL("non-finite ", what, " ", where, " (epoch ", epoch + 1, "); stopping without saving. ",
                      access(ckpt.c_str(), F_OK) == 0 ? "The last good checkpoint is " + ckpt
                                                      : "No checkpoint was written yet",
                      ". Lower --lr, set --clip-grad, or pass --skip-nonfinite.");
          std::fprintf(stderr, "\nnala: non-finite %s at step %lld: step skipped\n", what.c_str(), (long long)step);
          opt->zero_grad();
          skipped++;
          if (on_gpu) loss_dev = Tensor();
          skip_step = true;
        } else {
          last_checked = step;
        }
      }
      if (!skip_step) {
        opt->step();
        opt->zero_grad();
        if (!on_gpu) loss_sum += lv;
      }
      step++, steps_done++;  // a skipped step counts too
      if (!skip_step && check_now) {  // training accuracy: every batch on the CPU, the logged batches on the GPU
        std::vector<float> l = logits.to_vector();
        std::vector<int64_t> y = batch.labels.to_vector_i64();
        const int64_t K = logits.size(1);
        for (size_t i = 0; i < y.size(); i++) {
          const float* row = l.data() + i * K;
          correct += (std::max_element(row, row + K) - row) == y[i];
        }
        acc_seen += (int64_t)y.size();
        if (on_gpu) loss_sum = loss_dev.item();
      }
      if (!skip_step) seen += batch.labels.size(0);
      if (!skip_step && check_now) {
        char text[160];
        std::snprintf(text, sizeof text, "epoch %lld/%lld loss %.4f acc %.3f lr %.2e %.0f img/s", (long long)epoch + 1,
                      (long long)a.epochs, loss_sum / std::max<int64_t>(1, steps_done),
                      (double)correct / std::max<int64_t>(1, acc_seen), lr, seen / (now_seconds() - t0));
        bar.update(steps_done, text);
      }
      if (a.max_steps && step >= a.max_steps) {
        stop = true;
        break;
      }
    }
    if (on_gpu && loss_dev.defined()) loss_sum = loss_dev.item();
    if (dp) {  // the epoch's figures over every rank
      std::vector<float> t = {(float)loss_sum, (float)correct, (float)acc_seen, (float)seen};
      comm.all_reduce_sum(t.data(), (int64_t)t.size(), Device::CPU);
      loss_sum = t[0] / world, correct = std::llround(t[1]), acc_seen = std::llround(t[2]), seen = std::llround(t[3]);
      if (!a.sync_bn) average_tensors(comm, bn_stats);  // one model to evaluate and save
    }
    bar.finish();
    const bool epoch_complete = steps_done == steps_per_epoch;
    const double secs = now_seconds() - t0;
    doing = "evaluating epoch " + std::to_string(epoch + 1) + " (batches of " +
            std::to_string(std::max<int64_t>(a.batch_size, 256)) + " test images)";
    EvalResult ev = evaluate(model, test, std::max<int64_t>(a.batch_size, 256), a.eval_subset, &comm);
    const std::string label = epoch_complete ? "epoch " + std::to_string(epoch + 1)
                                             : "epoch " + std::to_string(epoch + 1) + " (partial: " +
                                                   std::to_string(steps_done) + " of " +
                                                   std::to_string(steps_per_epoch) + " steps)";
    std::printf("%s: train loss %.4f acc %.4f | test loss %.4f top-1 %.4f top-5 %.4f | %s, %.0f img/s\n",
                label.c_str(), loss_sum / std::max<int64_t>(1, steps_done),
                (double)correct / std::max<int64_t>(1, acc_seen), ev.loss, ev.top1, ev.top5,
                format_duration(secs).c_str(), seen / secs);
    std::fflush(stdout);
    if (!epoch_complete) {  // stopped by --max-steps inside the epoch: nothing is written for it
      partial_epoch = epoch + 1, partial_steps = steps_done;
      break;
    }
    saved_epoch = epoch + 1, saved_step = step;
    if (!lead) {  // rank 0 writes the files
      best = std::max(best, ev.top1);
      continue;
    }
    doing = "writing the results of epoch " + std::to_string(epoch + 1);
    append_metrics(csv, kMetricsHeader,
                   metrics_row(epoch + 1, step, lr, loss_sum / std::max<int64_t>(1, steps_done),
                               (double)correct / std::max<int64_t>(1, acc_seen), ev.loss, ev.top1, ev.top5, secs,
                               seen / secs));
    if (ev.top1 > best) {
      best = ev.top1;
      save_safetensors(best_path, model.state_dict(),
                       model_file_metadata(model_file_for(cfg, train), {{"nala.top1", std::to_string(ev.top1)},
                                                                        {"nala.epoch", std::to_string(epoch + 1)}}));
    }
    NamedTensors all;
    for (auto& [k, t] : model.state_dict()) all.push_back({"model." + k, t});
    for (auto& [k, t] : opt->state()) all.push_back({"optim." + k, t});
    save_safetensors(ckpt, all,
                    model_file_metadata(model_file_for(cfg, train),
                                        {{"nala.format", "train-checkpoint-1"},
                                         {"nala.args", a.fingerprint()},
                                         {"nala.epoch", std::to_string(epoch + 1)},
                                         {"nala.step", std::to_string(step)},
                                         {"nala.global_batch", std::to_string(a.batch_size * world)},
                                         {"nala.world_size", std::to_string(world)},
                                         {"nala.best_top1", std::to_string(best)},
                                         {"nala.rng", rng_to_string(model.rng.state())}}));
  }

  // The closing lines name only files that exist.
  if (skipped)
    std::printf("skipped %lld step%s with non-finite values\n", (long long)skipped, skipped == 1 ? "" : "s");
  if (partial_epoch)
    std::printf("stopped by --max-steps %lld at step %lld, %lld of %lld steps into epoch %lld: those steps were "
                "trained and evaluated (above) but are in no file, since files are written at the end of an epoch\n",
                (long long)a.max_steps, (long long)step, (long long)partial_steps, (long long)steps_per_epoch,
                (long long)partial_epoch);
  else if (a.max_steps && step >= a.max_steps && step > first_step && saved_epoch < a.epochs)
    std::printf("stopped by --max-steps %lld at the end of epoch %lld of %lld\n", (long long)a.max_steps,
                (long long)saved_epoch, (long long)a.epochs);
  const bool have_ckpt = access(ckpt.c_str(), F_OK) == 0, have_best = access(best_path.c_str(), F_OK) == 0;
  if (have_ckpt)
    std::printf("checkpoint of epoch %lld of %lld (step %lld): %s\n", (long long)saved_epoch, (long long)a.epochs,
                (long long)saved_step, ckpt.c_str());
  else
    std::printf("no checkpoint was written: no epoch was completed\n");
  const std::string took = format_duration(now_seconds() - run_start);
  if (have_best && best >= 0)
    std::printf("done in %s: best test top-1 %.4f; weights in %s\n", took.c_str(), best, best_path.c_str());
  else
    std::printf("done in %s: no best weights were written: no epoch was completed\n", took.c_str());
  if (folder) folder->finish();
  return 0;
}

}  // namespace

}  // namespace nala
