// nn/schedule.h - learning-rate schedule: linear warm-up, then cosine decay
// (docs/SPEC.md §9; timm's CosineLRScheduler with warmup_prefix, per step).
//
//   step < warmup_steps:            warmup_start_lr + (base_lr - warmup_start_lr) * step / warmup_steps
//   warmup_steps <= step < total:   min_lr + (base_lr - min_lr) (1 + cos(pi t)) / 2,
//                                   t = (step - warmup_steps) / (total_steps - warmup_steps)
//   step >= total_steps:            min_lr
// Computed in double. Steps count optimiser updates from 0.
#pragma once
#include <cstdint>

namespace nala {

struct WarmupCosine {
  double base_lr = 5e-4;
  double min_lr = 1e-5;
  int64_t warmup_steps = 0;
  double warmup_start_lr = 1e-6;
  int64_t total_steps = 1;

  WarmupCosine() = default;
  WarmupCosine(double base_lr, double min_lr, int64_t warmup_steps, double warmup_start_lr, int64_t total_steps);
  double lr_at(int64_t step) const;
};

}  // namespace nala
