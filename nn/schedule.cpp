// nn/schedule.cpp - see nn/schedule.h.
#include "nn/schedule.h"

#include <cmath>

#include "tensor/error.h"

namespace nala {

WarmupCosine::WarmupCosine(double base, double min, int64_t warmup, double warmup_start, int64_t total)
    : base_lr(base), min_lr(min), warmup_steps(warmup), warmup_start_lr(warmup_start), total_steps(total) {
  NALA_CHECK(warmup >= 0 && total >= warmup && base >= 0 && min >= 0 && warmup_start >= 0,
             "WarmupCosine: bad schedule base_lr=", base, " min_lr=", min, " warmup_steps=", warmup,
             " warmup_start_lr=", warmup_start, " total_steps=", total);
}

double WarmupCosine::lr_at(int64_t step) const {
  NALA_CHECK(step >= 0, "WarmupCosine: negative step ", step);
  if (step < warmup_steps) return warmup_start_lr + (base_lr - warmup_start_lr) * (double)step / (double)warmup_steps;
  if (step >= total_steps) return min_lr;
  double t = (double)(step - warmup_steps) / (double)(total_steps - warmup_steps);
  return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(M_PI * t));
}

}  // namespace nala
