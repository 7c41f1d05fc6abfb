// kernels/cuda/metrics.h - a batch's loss and hit counts added into running
// sums on the device, so that a training or evaluation loop reads them back
// once (at a log point or at the end) instead of once per batch.
//
// Shape letters: B rows (images), K classes. acc holds doubles on the device:
//   acc[0] += w * loss[0]
//   acc[1] += rows whose first largest logit is the label (top-1)
//   acc[2] += rows whose label has fewer than 5 logits strictly above it (top-5)
// and, when confusion is given, confusion[label * K + prediction] += 1.
// Counts are integers in doubles (exact below 2^53), so the sums do not
// depend on the order of the atomic adds. The same rules as the host loops
// of models/train/evaluate.cpp and step.cpp, which are the reference.
// CUDA only: on the CPU those loops do this.
#pragma once
#include <cstdint>

namespace nala {
namespace cuda {

void accumulate_metrics(double* acc, const float* loss, double w, const float* logits, const int64_t* labels,
                        int64_t B, int64_t K, double* confusion);

}  // namespace cuda
}  // namespace nala
