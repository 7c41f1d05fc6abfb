// nn/ema.h - an exponential moving average of a model's weights (Polyak
// averaging, timm's ModelEmaV2): after every optimiser step
//
//   a <- d a + (1 - d) x,   d = min(decay, (1 + t) / (10 + t))
//
// for every f32 tensor x of the state_dict (parameters and BatchNorm running
// statistics; integer buffers such as num_batches_tracked are left out), t
// the updates made before this one. The warm-up factor (1 + t) / (10 + t)
// lets the average follow the fast early changes instead of remembering the
// random initialisation for 1 / (1 - decay) steps.
//
// The averages live on the model's device (moved there at the first update
// or swap): two elementwise kernels per tensor and step, on the CPU or the
// GPU. swap() exchanges the model's values with the averages, so the
// averaged model can be evaluated or saved and the training weights put back
// by a second swap().
//
// Saved state (a training checkpoint): "ema.<name>" per tensor and
// "ema.updates" (i64 scalar).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nn/module.h"

namespace nala {

class WeightEma {
 public:
  // tracked: the model's state_dict (names and the live tensors); decay in (0, 1).
  WeightEma(const NamedTensors& tracked, double decay);
  void update();
  void swap();
  // The decay the next update uses (with the warm-up).
  double next_decay() const;
  int64_t updates() const { return updates_; }
  double decay() const { return decay_; }
  // The averaged tensors (not the live ones), in the order tracked.
  std::vector<Tensor> averages() const { return avg_; }
  NamedTensors state() const;
  // Every "ema.*" entry must be present with the right shape; others are ignored.
  void load_state(const std::map<std::string, Tensor>& st, const std::string& path);

 private:
  void follow();
  NamedTensors live_;
  std::vector<Tensor> avg_;
  double decay_;
  int64_t updates_ = 0;
};

}  // namespace nala
