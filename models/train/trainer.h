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
  bool flip_tta = false;  // evaluate with the mirror image too (evaluate.h)
  float weight_decay = 0.05f, momentum = 0.9f;
  float label_smoothing = 0.1f;
  float clip_grad = 0;  // clip the gradient's global norm (0 = off)
  AugmentOptions augment;
  int workers = 1;       // data loader threads
  uint64_t seed = 0;     // data order and augmentation of epoch e: from (seed, e)
  int64_t max_steps = 0; // stop after this many optimiser steps in total (0 = no limit)
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

// The options that shape a run, on one line.
std::string describe_options(const TrainOptions& opt);

// Trains `model` (initialised, on its device, on every rank the same
// options) on `train`, evaluating on `test` after every epoch. The model's
// config must take the data's channels and classes. With a group of several
// ranks `sync` must be given.
TrainResult train(NalaFormer& model, const Dataset& train, const Dataset& test, const TrainOptions& opt, Comm& comm,
                  GradSync* sync = nullptr, TrainCallbacks* cb = nullptr);

}  // namespace nala
