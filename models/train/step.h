// models/train/step.h - one training step: forward, the loss, backward (with
// the data-parallel gradient sync when there is one), the gradient norm and
// clipping, the check for NaN/Inf that every rank agrees on, and the
// optimiser step, or its skip.
//
// Shape letters: B images in the batch, H x W pixels, C channels, K classes.
//
// Reading a value back from a GPU waits for it, so on a GPU a step reads its
// loss only when asked to check (the loop asks at the steps it logs, or at
// every step when a non-finite step is to be skipped); the epoch's loss sum
// then stays on the device, and a check reads it too, so NaN or Inf in a
// step that was not read back is still found, one check later. On the CPU
// every step is checked.
#pragma once
#include <cstdint>

#include "models/nalaformer.h"
#include "nn/comm.h"
#include "nn/optim.h"
#include "tensor/tensor.h"

namespace nala {

struct StepOptions {
  float label_smoothing = 0;
  float clip_grad = 0;    // clip the gradient's global norm to this (0 = off)
  bool check = true;      // read the loss (and the epoch's loss sum) back and check them
  bool need_norm = true;  // compute the gradient norm (and check it) without clipping too
  bool nan_loss = false;  // testing aid: the loss (and so every gradient) becomes NaN
};

// What an epoch's steps add up to, on this rank.
struct EpochStats {
  int64_t steps = 0;                // steps taken, skipped ones included
  double loss_sum = 0;              // sum of the losses read back (GPU: the device sum at the last check)
  int64_t correct = 0, counted = 0; // training accuracy over the checked steps' batches
  int64_t seen = 0;                 // images of the steps not skipped
  Tensor loss_dev;                  // GPU: the sum of this epoch's losses, on the device
  double mean_loss() const { return loss_sum / (double)(steps > 0 ? steps : 1); }
  double accuracy() const { return (double)correct / (double)(counted > 0 ? counted : 1); }
};

struct StepResult {
  Tensor logits;              // (B, K) on the model's device
  float loss = 0;             // this step's loss, when checked
  double grad_norm = 0;       // before clipping, when computed
  bool checked = false;       // the values were read back and checked
  bool skipped = false;       // NaN or Inf on some rank: no optimiser step
  const char* nonfinite = ""; // when skipped: "loss" or "gradient norm"
  // When skipped: this step's values are finite, but the epoch's loss sum
  // is not, so the NaN/Inf came from a step since the last check.
  bool from_earlier = false;
};

// Forward and backward of one batch: logits, the mean cross-entropy with
// label smoothing, and every parameter's gradient (averaged over the group
// through `sync` when given). images f32 (B, H, W, C), labels i64 (B), both
// on the model's device.
struct ForwardBackward {
  Tensor logits, loss;
};
ForwardBackward forward_backward(NalaFormer& model, const Tensor& images, const Tensor& labels,
                                 float label_smoothing = 0, GradSync* sync = nullptr, bool nan_loss = false);

// One step at the optimiser's current learning rate, adding to `stats`.
// With a group of several ranks (comm) a non-finite value on any rank skips
// the step on every rank. The caller decides whether a skipped step stops
// the run; the gradients are cleared either way.
StepResult train_step(NalaFormer& model, Optimizer& opt, const Tensor& images, const Tensor& labels,
                      const StepOptions& so, Comm& comm, GradSync* sync, EpochStats& stats);

}  // namespace nala
