// models/train/checkpoint.h - the files a training run writes at the end of
// an epoch: the checkpoint that --resume continues bit for bit, and the best
// weights.
//
// checkpoint.safetensors holds
//   model.<name>   every tensor of the model's state_dict (parameters and buffers)
//   optim.<name>   the optimiser's state
// and in its metadata the model file's description (models/model_file.h:
// config, classes, input normalisation) and
//   nala.format        "train-checkpoint-1"
//   nala.args          the arguments that must not change across a resume, on one line
//   nala.epoch         epochs completed (>= 1: a checkpoint ends an epoch)
//   nala.step          optimiser steps taken, skipped ones included
//   nala.global_batch  images per step over every rank
//   nala.world_size    ranks
//   nala.best_top1     the best test top-1 so far (-1: none yet)
//   nala.rng           the model's drop-path RNG state, 64 hexadecimal digits
// and, for a run with a validation set (--val), nala.best_val_top1,
// nala.best_val_epoch and nala.best_val_test_top1 (the epoch best on
// validation, and its test top-1); with --ema, the weight average's tensors
// ema.<name> and ema.updates (nn/ema.h).
// best.safetensors holds the weights (release key names) and the
// description, plus nala.top1 and nala.epoch of the epoch that made them.
//
// Reading checks every metadata value and refuses a checkpoint whose tensors
// hold NaN or Inf; each error names the file and the key or the tensor.
// Files are written atomically (nn/files.h): a crash leaves the previous one.
#pragma once
#include <array>
#include <map>
#include <cstdint>
#include <string>

#include "models/model_file.h"
#include "models/nalaformer.h"
#include "nn/optim.h"
#include "nn/safetensors.h"

namespace nala {

struct CheckpointState {
  std::string args;
  int64_t epoch = 0, step = 0;
  int64_t global_batch = 0;  // 0 when the file does not record it (older checkpoints)
  int64_t world_size = 1;
  double best_top1 = -1;
  double best_val_top1 = -1, best_val_test_top1 = -1;  // -1: no validation set
  int64_t best_val_epoch = 0;
  std::array<uint64_t, 4> rng{};
};

// extra: more tensors to store as they are named (the weight average's state).
void save_checkpoint(const std::string& path, NalaFormer& model, const Optimizer& opt, const ModelFile& mf,
                     const CheckpointState& s, const NamedTensors& extra = {});
// The model's weights; `meta` adds metadata (nala.val_top1 of weights chosen on validation).
void save_best_weights(const std::string& path, NalaFormer& model, const ModelFile& mf, double top1,
                       int64_t epoch, const std::map<std::string, std::string>& meta = {});

// A checkpoint read from its file, metadata checked, tensors not yet used.
struct Checkpoint {
  std::string path;
  SafeTensors st;
  CheckpointState state;
  // Refuses the checkpoint: "<path>: checkpoint metadata <key> = '<value>'
  // <why>; <cause>".
  [[noreturn]] void refuse(const char* key, const std::string& why,
                           const char* cause = "the checkpoint is damaged or was not written by nala train") const;
};

// Reads `path`: it must be a training checkpoint of the model `cfg`
// describes, and every value of CheckpointState must be well formed.
Checkpoint read_checkpoint(const std::string& path, const NalaConfig& cfg);
// Every tensor finite, then the weights, the optimiser state and the RNG
// state loaded into `model` and `opt` (which must match the checkpoint).
void restore_checkpoint(const Checkpoint& ck, NalaFormer& model, Optimizer& opt);

}  // namespace nala
