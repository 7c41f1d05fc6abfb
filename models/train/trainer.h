// models/train/trainer.h - the training loop: train(model, train set, test
// set, options) runs the epochs and writes the run's files.
//
// It composes the pieces of this folder:
//   data.h        the batch loader: shuffled, augmented, sharded batches
//   step.h        one step: forward, loss, backward, NaN/Inf check, optimiser
//   nn/schedule.h the learning rate of each step (warm-up, then cosine)
//   evaluate.h    the test set's loss and accuracy after every epoch
//   checkpoint.h  the checkpoint and the best weights at the end of an epoch
//   nn/ema.h      the weight average (--ema)
//   log.h         metrics.csv, and what the run reports to its caller
//   run_folder.h  the output folder's rule and lock
//
// The time budget (time_budget > 0, a new run only): the clock starts when
// train() starts. The steps after the first kBudgetSkip are timed up to the
// end of the warm-up (at least kBudgetSteps, at most the first epoch), then
// one evaluation batch; from these (on the CPU the median step, so that a
// burst of other work on the cores does not count; on the GPU the mean) the
// run takes E = the most whole epochs,
// each its steps and its evaluation, that end within the budget less 3%, at
// least 1 and at most `epochs`, and the schedule becomes E epochs long. The
// timed steps are inside the warm-up, so their learning rates do not depend
// on E. After every epoch the run checks again, from the mean step time of
// all its steps so far and the evaluation it just did: when the machine got
// faster or slower (other work on its cores) and another E fits, the run
// continues on the plain schedule of the new E, as if E had been chosen at
// the start (the learning rate jumps to that schedule's value at this step;
// a resumed run with --epochs E follows the same schedule), or it ends after
// this epoch when no further epoch fits. Every change is reported through
// TrainCallbacks::message. With a data-parallel group every rank takes the
// ranks' mean times, so all choose the same E. The arguments recorded in the
// checkpoint name E (epochs=E): resume such a run with `--epochs E` and
// without the budget. Timing makes the epoch count depend on the machine's speed
// and load; everything else stays reproducible given E.
//
// A run is reproducible: epoch e's data order and augmentation come from
// (seed, e) and the drop-path RNG state is saved, so a run resumed from its
// checkpoint with the same options, data and thread count ends bit for bit
// where the uninterrupted run ends. Files are written at the end of an epoch
// only; a run stopped by max_steps inside an epoch trains and evaluates the
// partial epoch, reports it, and writes nothing for it.
//
// Data-parallel: with a group of several processes (comm, nn/comm.h), each
// trains on its shard of every global batch of batch_size x comm.size()
// images, `sync` (distributed/'s GradReducer) averages the gradients during
// backward, and rank 0 writes the files. Every rank calls train() with the
// same options and data.
//
// train() prints nothing: what it does reaches the caller through
// TrainCallbacks (log.h), and ConsoleLog there prints it as `nala train`
// does. Errors throw nala::Error; an allocation that fails says what was
// being done. Messages name the options by their `nala train` flags
// (--lr for TrainOptions::lr, and so on).
#pragma once
#include <cstdint>
#include <string>

#include "models/nalaformer.h"
#include "models/train/augment.h"
#include "models/train/data.h"
#include "models/train/evaluate.h"
#include "models/train/log.h"
#include "models/train/run_folder.h"
#include "nn/comm.h"

namespace nala {

struct TrainOptions {
  // The schedule: warm-up from warmup_lr to lr over warmup_epochs, then a
  // cosine down to min_lr at the end of `epochs`.
  int64_t epochs = 10;
  int64_t batch_size = 128;  // per process: the global batch is batch_size x comm.size()
  float lr = 1e-3f, min_lr = 1e-5f, warmup_lr = 1e-6f, warmup_epochs = 1.0f;
  // The optimiser: "adamw" (no decay on biases, norms and the gammas) or "sgd".
  std::string optimizer = "adamw";
  // An exponential moving average of the weights (nn/ema.h) with this decay,
  // updated after every step; evaluated and saved (best weights) instead of
  // the live weights, which keep training. 0 = off.
  float ema_decay = 0;
  // A validation set (split_validation, data.h), evaluated after every epoch
  // beside the test set: the epoch best on it is saved as
  // best_val.safetensors and reported, and best.safetensors (chosen on the
  // test set) is not written. Null: none. Must outlive train().
  const Dataset* val = nullptr;
  TestTimeAug tta;  // evaluate with test-time augmentation (evaluate.h)
  float weight_decay = 0.05f, momentum = 0.9f;
  float label_smoothing = 0.1f;
  float clip_grad = 0;  // clip the gradient's global norm (0 = off)
  AugmentOptions augment;
  int workers = 1;       // data loader threads
  uint64_t seed = 0;     // data order and augmentation of epoch e: from (seed, e)
  int64_t max_steps = 0; // stop after this many optimiser steps in total (0 = no limit)
  // A wall-clock budget in seconds for the training loop (0 = none): the run
  // times its first steps and one evaluation batch, then fixes the number of
  // epochs (at most `epochs`, at least 1) and the learning-rate schedule to
  // the whole epochs that fit, evaluations included. See "The time budget"
  // below.
  double time_budget = 0;
  int64_t eval_subset = 0;      // evaluate on the first N test images only (0 = all)
  int64_t eval_batch_size = 0;  // 0: max(batch_size, 256)
  int64_t log_every = 50;       // a progress report every N steps (and at an epoch's end)
  bool skip_nonfinite = false;  // skip a step whose loss or gradient is not finite (default: stop)
  int64_t debug_nan_at = -1;    // testing aid: make the loss NaN at this step
  bool sync_bn = false;         // data-parallel: BatchNorm statistics over the global batch
  // GPU: every step (and evaluation batch) captured once as a CUDA graph and
  // replayed (graph_step.h), bit for bit the eager step; the loss and
  // accuracy are read back at log points only. Not with a data-parallel
  // group, --clip-grad, --skip-nonfinite or the NaN testing aid: those run
  // eagerly (the run says so).
  bool graphs = true;
  // Where the files go: checkpoint.safetensors, best.safetensors and
  // metrics.csv in `out` (run_folder.h); empty: nothing is written.
  std::string out;
  bool resume = false;  // continue the run in `out` from its checkpoint
  // Rank 0's handle on `out` when the caller opened it already (`nala
  // train` does, before reading the data, so that an unusable folder fails
  // first). Null: train() opens `out` itself, as a new run or to resume.
  RunFolder* folder = nullptr;
  // The arguments that must not change across a resume, on one line,
  // recorded in the checkpoint (nala.args). A resume with other arguments is
  // allowed with a warning, and is then forgiving about the step count.
  // Empty: describe_options(*this).
  std::string args;
};

// Timed steps of the time budget (above): the first kBudgetSkip steps warm
// up, the next kBudgetSteps are timed.
constexpr int64_t kBudgetSkip = 5, kBudgetSteps = 30;

// Which whole epochs fit a time budget: `left` seconds remain, `done` steps
// of the first epoch are already taken, a step takes `step_s`, an epoch has
// `steps_per_epoch` steps and its evaluation takes `eval_s`. 3% of the time
// is kept as margin. Returns a number in [1, max_epochs].
int64_t epochs_in_budget(double left, int64_t done, double step_s, int64_t steps_per_epoch, double eval_s,
                         int64_t max_epochs);

// `args` (TrainOptions::args) with its "epochs=N" replaced by "epochs=E"
// (unchanged when it has none).
std::string with_epochs(const std::string& args, int64_t epochs);

// The options that shape a run, on one line.
std::string describe_options(const TrainOptions& opt);

// Trains `model` (initialised, on its device, on every rank the same
// options) on `train`, evaluating on `test` after every epoch. The model's
// config must take the data's channels and classes. With a group of several
// ranks `sync` must be given.
TrainResult train(NalaFormer& model, const Dataset& train, const Dataset& test, const TrainOptions& opt, Comm& comm,
                  GradSync* sync = nullptr, TrainCallbacks* cb = nullptr);

}  // namespace nala
