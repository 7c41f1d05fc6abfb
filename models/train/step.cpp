// models/train/step.cpp - see step.h.
#include "models/train/step.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/ops.h"

namespace nala {

ForwardBackward forward_backward(NalaFormer& model, const Tensor& images, const Tensor& labels,
                                 float label_smoothing, GradSync* sync, bool nan_loss) {
  ForwardBackward r;
  r.logits = model.forward(images);
  r.loss = cross_entropy(r.logits, labels, label_smoothing);
  if (nan_loss) r.loss = scale(r.loss, NAN);
  if (sync) {
    backward(r.loss, Tensor(), false, sync->hook());
    sync->finish();  // every rank now holds the mean gradient
  } else {
    backward(r.loss);
  }
  return r;
}

StepResult train_step(NalaFormer& model, Optimizer& opt, const Tensor& images, const Tensor& labels,
                      const StepOptions& so, Comm& comm, GradSync* sync, EpochStats& stats) {
  const bool on_gpu = images.device() != Device::CPU;
  const bool group = std::strcmp(comm.backend(), "single") != 0;
  ForwardBackward fb = forward_backward(model, images, labels, so.label_smoothing, sync, so.nan_loss);
  StepResult r;
  r.logits = fb.logits;
  if (so.clip_grad > 0) r.grad_norm = clip_grad_norm(model.parameters(), so.clip_grad);
  else if (so.need_norm) r.grad_norm = grad_norm(model.parameters());
  if (on_gpu) {
    NoGradGuard ng;
    stats.loss_dev = stats.loss_dev.defined() ? add(stats.loss_dev, fb.loss.detach()) : fb.loss.detach().clone();
  }
  if (so.check) {
    r.checked = true;
    r.loss = fb.loss.item();
    const double total = on_gpu ? (double)stats.loss_dev.item() : stats.loss_sum + r.loss;
    bool bad = !std::isfinite(r.loss) || !std::isfinite(r.grad_norm) || !std::isfinite(total);
    if (group) {  // one rank's bad value stops (or skips) every rank
      float flag = bad ? 1.0f : 0.0f;
      comm.all_reduce_sum(&flag, 1, Device::CPU);
      bad = flag > 0;
    }
    if (bad) {
      r.skipped = true;
      r.nonfinite = !std::isfinite(r.grad_norm) ? "gradient norm" : "loss";
      r.from_earlier = !std::isfinite(total) && std::isfinite(r.loss) && std::isfinite(r.grad_norm);
      opt.zero_grad();
      if (on_gpu) stats.loss_dev = Tensor();
    }
  }
  stats.steps++;
  if (r.skipped) return r;
  opt.step();
  opt.zero_grad();
  if (!on_gpu) stats.loss_sum += r.loss;
  stats.seen += labels.size(0);
  if (r.checked) {  // training accuracy: every batch on the CPU, the checked batches on the GPU
    const std::vector<float> l = fb.logits.to_vector();
    const std::vector<int64_t> y = labels.to_vector_i64();
    const int64_t K = fb.logits.size(1);
    for (size_t i = 0; i < y.size(); i++) {
      const float* row = l.data() + i * K;
      stats.correct += (std::max_element(row, row + K) - row) == y[i];
    }
    stats.counted += (int64_t)y.size();
    if (on_gpu) stats.loss_sum = stats.loss_dev.item();
  }
  return r;
}

}  // namespace nala
