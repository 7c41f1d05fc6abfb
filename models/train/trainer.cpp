// models/train/trainer.cpp - the training loop; see trainer.h. Read from the
// bottom: train() catches an allocation failure, run() prepares the run and
// walks the epochs, train_epoch() walks the steps of one, end_epoch()
// evaluates, reports and writes the files.
#include "models/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <sstream>

#include "models/train/checkpoint.h"
#include "models/train/evaluate.h"
#include "models/train/graph_step.h"
#include "models/train/step.h"
#include "models/train_plots.h"
#include "nn/ema.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "tensor/device.h"

namespace nala {

std::string describe_options(const TrainOptions& o) {
  std::ostringstream os;
  os << "epochs=" << o.epochs << " batch=" << o.batch_size << " seed=" << o.seed << " lr=" << o.lr
     << " min_lr=" << o.min_lr << " warmup=" << o.warmup_epochs << " wd=" << o.weight_decay
     << " ls=" << o.label_smoothing << " clip=" << o.clip_grad << " opt=" << o.optimizer
     << " crop=" << o.augment.crop_pad << " flip=" << o.augment.hflip << " erase=" << o.augment.erase_prob;
  if (o.ema_decay > 0) os << " ema=" << o.ema_decay;
  if (o.val) os << " val=" << o.val->n;
  if (o.tta.flip) os << " tta=flip";
  if (o.tta.shift > 0) os << " tta_shift=" << o.tta.shift;
  return os.str();
}

int64_t epochs_in_budget(double left, int64_t done, double step_s, int64_t steps_per_epoch, double eval_s,
                         int64_t max_epochs) {
  const double usable = 0.97 * left;
  const double first = (double)(steps_per_epoch - done) * step_s + eval_s;  // the rest of epoch 1
  const double each = (double)steps_per_epoch * step_s + eval_s;
  int64_t e = 1;
  if (usable > first && each > 0) e += (int64_t)std::floor((usable - first) / each);
  return std::max<int64_t>(1, std::min(e, max_epochs));
}

std::string with_epochs(const std::string& args, int64_t epochs) {
  size_t at = 0;
  while ((at = args.find("epochs=", at)) != std::string::npos && at > 0 && args[at - 1] != ' ') at++;
  if (at == std::string::npos) return args;
  const size_t end = args.find(' ', at);
  return args.substr(0, at) + "epochs=" + std::to_string(epochs) + (end == std::string::npos ? "" : args.substr(end));
}

namespace {

// Everything one run holds while it goes: set up by run(), used by the
// epoch functions below.
struct Run {
  Run(NalaFormer& m, const Dataset& tr, const Dataset& te, const TrainOptions& o, Comm& c, GradSync* s,
      TrainCallbacks& callbacks, std::string& what)
      : model(m), train(tr), test(te), opt(o), comm(c), sync(s), cb(callbacks), doing(what) {}
  NalaFormer& model;
  const Dataset& train;
  const Dataset& test;
  const TrainOptions& opt;
  Comm& comm;
  GradSync* sync;
  TrainCallbacks& cb;
  std::string& doing;  // what is being done, for an out-of-memory error

  bool lead = true, group = false, on_gpu = false;
  Device dev = Device::CPU;
  RunFolder* folder = nullptr;  // rank 0's, when files are written
  std::unique_ptr<Optimizer> optim;
  std::unique_ptr<WeightEma> ema;  // --ema
  std::unique_ptr<BatchLoader> loader;
  std::unique_ptr<GraphTrainStep> graph_step;  // CUDA graphs: when in use
  std::unique_ptr<GraphEval> graph_eval;
  WarmupCosine sched;
  int64_t steps_per_epoch = 0;
  std::vector<Tensor> bn_stats;  // BatchNorm running means and variances
  std::string args, ckpt, best_path, best_val_path, csv;
  ModelFile model_file;

  int64_t step = 0, epoch0 = 0;
  int64_t epochs = 0;  // the run's epochs: the option, or what the time budget chose
  // The time budget (trainer.h): pending until the epochs are chosen; the
  // timed steps are those after budget_skip .. budget_decide steps of the run.
  bool budget_pending = false;
  int64_t first_step = 0, budget_skip = 0, budget_decide = 0;
  double run_start = 0, budget_t0 = 0;
  double train_seconds = 0;  // this run's training time so far, evaluations excluded
  std::vector<double> step_times;  // the timed steps (the CPU: each step; the GPU: one window)
  double last_step_end = 0;
  int64_t last_checked = 0;  // the last step whose values were checked finite
  bool stop = false;
  TrainResult result;
};

std::unique_ptr<Optimizer> make_optimizer(NalaFormer& model, const TrainOptions& o) {
  if (o.optimizer == "adamw")
    return std::make_unique<AdamW>(model.named_parameters(), o.lr, 0.9, 0.999, 1e-8, o.weight_decay,
                                   std::vector<std::string>{"gamma_"});
  NALA_CHECK(o.optimizer == "sgd", "train: unknown optimizer '", o.optimizer, "' (adamw or sgd)");
  return std::make_unique<SGD>(model.named_parameters(), o.lr, o.momentum, o.weight_decay);
}

// GPU: host batch -> page-locked buffer -> device.
struct Staging {
  Tensor images, labels;
  void to_device(const Batch& b, Device dev, Tensor& images_out, Tensor& labels_out) {
    if (dev == Device::CPU) {
      images_out = b.images, labels_out = b.labels;
      return;
    }
    if (!images.defined() || images.shape() != b.images.shape()) {
      images = Tensor::empty_pinned(b.images.shape());
      labels = Tensor::empty_pinned(b.labels.shape(), DType::I64);
    }
    images.copy_(b.images);
    labels.copy_(b.labels);
    images_out = images.to(dev), labels_out = labels.to(dev);
  }
};

// Continues from the checkpoint in the output folder. Every rank reads it:
// the folder must be reachable from all.
void resume(Run& r) {
  const TrainOptions& o = r.opt;
  const int world = r.comm.size();
  r.doing = "reading the checkpoint " + r.ckpt;
  const Checkpoint ck = read_checkpoint(r.ckpt, r.model.cfg);
  const CheckpointState& s = ck.state;
  const bool same_args = s.args == r.args;
  if (r.lead && !same_args)
    r.cb.warning("arguments differ from the checkpoint's run:\n  was: " + s.args + "\n  now: " + r.args);
  if (same_args && s.epoch > r.epochs) ck.refuse("nala.epoch", "exceeds the run's --epochs " + std::to_string(r.epochs));
  restore_checkpoint(ck, r.model, *r.optim);
  if (r.ema) r.ema->load_state(ck.st.tensors, r.ckpt);
  r.epoch0 = s.epoch, r.step = s.step;
  r.result.best_top1 = s.best_top1;
  r.result.best_val_top1 = s.best_val_top1, r.result.best_val_test_top1 = s.best_val_test_top1;
  r.result.best_val_epoch = s.best_val_epoch;
  const int64_t was_global = s.global_batch ? s.global_batch : o.batch_size;
  if (was_global != o.batch_size * world) {  // a different number of ranks: same epoch, new steps per epoch
    r.cb.message("the checkpoint's run had a global batch of " + std::to_string(was_global) + ", this one " +
                 std::to_string(o.batch_size) + " x " + std::to_string(world) +
                 ": the schedule restarts at epoch " + std::to_string(r.epoch0) + " in steps of the new batch");
    r.step = r.epoch0 * r.steps_per_epoch;
  } else if (r.step != r.epoch0 * r.steps_per_epoch) {
    // Every epoch has steps_per_epoch steps (skipped ones count): with the
    // same arguments, any other step is damage.
    const int64_t expected = r.epoch0 * r.steps_per_epoch;
    if (same_args)
      ck.refuse("nala.step",
                "does not match nala.epoch = " + std::to_string(r.epoch0) + " at " +
                    std::to_string(r.steps_per_epoch) + " steps per epoch (" + std::to_string(expected) + ")",
                "the checkpoint is damaged, or the training images changed since it was written");
    r.cb.message("the checkpoint's step " + std::to_string(r.step) + " does not match its epoch " +
                 std::to_string(r.epoch0) + " at this run's " + std::to_string(r.steps_per_epoch) +
                 " steps per epoch: the schedule continues at step " + std::to_string(expected));
    r.step = expected;
  }
  if (r.lead) trim_metrics(r.csv, r.epoch0);
  r.cb.message("resuming " + o.out + " at epoch " + std::to_string(r.epoch0) + " (step " + std::to_string(r.step) +
               ")");
}

// Now, after the device's queued work (the GPU runs ahead of the host).
double synced_now(const Run& r) {
  if (r.on_gpu) device::synchronize();
  return now_seconds();
}

// The time budget's decision (trainer.h): the epochs that fit, and the
// schedule for them.
void decide_budget(Run& r) {
  const TrainOptions& o = r.opt;
  // The CPU: the median step (a burst of other work on the cores does not
  // count); the GPU, which runs ahead of the host: the window's mean.
  double step_s = (synced_now(r) - r.budget_t0) / (double)(r.budget_decide - r.budget_skip);
  if (!r.on_gpu && !r.step_times.empty()) {
    std::vector<double> v = r.step_times;
    std::nth_element(v.begin(), v.begin() + (ptrdiff_t)(v.size() / 2), v.end());
    step_s = v[v.size() / 2];
  }
  const int64_t eval_batch = o.eval_batch_size ? o.eval_batch_size : std::max<int64_t>(o.batch_size, 256);
  const int64_t eval_n = o.eval_subset ? std::min(o.eval_subset, r.test.n) : r.test.n;
  const int64_t probe = std::min(eval_batch, eval_n);
  r.doing = "timing one evaluation batch for --time-budget";
  const double e0 = synced_now(r);
  evaluate(r.model, r.test, eval_batch, probe, &r.comm);  // restores training mode
  const double eval_s = (synced_now(r) - e0) * (double)eval_n / (double)probe;
  std::vector<float> t = {(float)step_s, (float)eval_s};
  if (r.group) {  // every rank the same figures: the mean of the ranks' (they step in lockstep)
    r.comm.all_reduce_sum(t.data(), (int64_t)t.size(), Device::CPU);
    for (float& x : t) x /= (float)r.comm.size();
  }
  const double left = o.time_budget - (now_seconds() - r.run_start);
  int64_t e = epochs_in_budget(left, r.step - r.first_step, t[0], r.steps_per_epoch, t[1], o.epochs);
  const int64_t warm = (int64_t)std::ceil(o.warmup_epochs);
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << "--time-budget " << o.time_budget << " s: a step takes " << t[0] * 1e3 << " ms ("
     << (double)o.batch_size * r.comm.size() / t[0] << " img/s), an evaluation " << t[1] << " s; " << e
     << (e == 1 ? " epoch fits" : " epochs fit");
  if (e == o.epochs) os << " (--epochs " << o.epochs << " is the most)";
  if (e < warm) os << "; the warm-up needs " << warm << ", so the run takes " << warm << " and exceeds the budget";
  r.cb.message(os.str());
  e = std::max(e, warm);
  r.epochs = r.result.epochs = e;
  r.sched = WarmupCosine(o.lr, o.min_lr, (int64_t)std::llround(o.warmup_epochs * r.steps_per_epoch), o.warmup_lr,
                         e * r.steps_per_epoch);
  r.args = with_epochs(r.args, e);
  r.budget_pending = false;
}

// The learning rate of a step.
double lr_for(const Run& r, int64_t step) { return r.sched.lr_at(step); }

// At the end of epoch `done` (1-based) of a budgeted run: how many epochs
// fit now, from the mean step time of the run so far and this epoch's
// evaluation. A change re-fits the schedule: the run continues on the plain
// schedule of the new epoch count (trainer.h).
void refit_budget(Run& r, int64_t done, double eval_s) {
  const TrainOptions& o = r.opt;
  const int64_t steps = r.step - r.first_step;
  if (steps <= 0 || done >= r.epochs) return;
  std::vector<float> t = {(float)(r.train_seconds / (double)steps), (float)eval_s};
  if (r.group) {
    r.comm.all_reduce_sum(t.data(), (int64_t)t.size(), Device::CPU);
    for (float& x : t) x /= (float)r.comm.size();
  }
  const double left = o.time_budget - (now_seconds() - r.run_start);
  const double each = (double)r.steps_per_epoch * t[0] + t[1];
  int64_t more = left > 0 && each > 0 ? (int64_t)std::floor(0.97 * left / each) : 0;
  const int64_t e = std::max<int64_t>(done, std::min<int64_t>(o.epochs, done + more));
  if (e == r.epochs) return;
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << "--time-budget: after epoch " << done << ", " << left << " s left at " << t[0] * 1e3 << " ms a step: "
     << (e > r.epochs ? "more" : "fewer") << " epochs fit, " << e << " instead of " << r.epochs;
  if (e == done) os << "; the run ends here";
  r.cb.message(os.str());
  const int64_t warm = (int64_t)std::llround(o.warmup_epochs * r.steps_per_epoch);
  r.sched = WarmupCosine(o.lr, o.min_lr, warm, o.warmup_lr, e * r.steps_per_epoch);
  r.epochs = r.result.epochs = e;
  r.args = with_epochs(r.args, e);
}

// Called after every step while the budget is pending.
void budget_tick(Run& r) {
  const int64_t k = r.step - r.first_step;
  if (k == r.budget_skip && r.budget_skip > 0) r.budget_t0 = synced_now(r);
  if (!r.on_gpu) {
    const double t = now_seconds();
    if (k > r.budget_skip) r.step_times.push_back(t - r.last_step_end);
    r.last_step_end = t;
  }
  if (k == r.budget_decide) decide_budget(r);
}

// The progress line of a logged step (epoch 0-based, t0 the epoch's start).
void report_progress(Run& r, int64_t epoch, const EpochStats& st, double lr, double t0) {
  StepReport rep;
  rep.epoch = epoch + 1, rep.epochs = r.epochs, rep.done = st.steps, rep.steps_per_epoch = r.steps_per_epoch;
  rep.loss = st.mean_loss(), rep.accuracy = st.accuracy(), rep.lr = lr;
  rep.images_per_second = st.seen / (now_seconds() - t0);
  r.cb.progress(rep);
}

// After every step: the time budget's timing, then --max-steps; true when
// the run stops here.
bool after_step(Run& r) {
  if (r.budget_pending) budget_tick(r);
  if (r.opt.max_steps && r.step >= r.opt.max_steps) r.stop = true;
  return r.stop;
}

// The steps of one epoch as CUDA graph replays (graph_step.h): nothing is
// read back but at log points, where a non-finite loss sum stops the run.
EpochStats train_epoch_graphs(Run& r, int64_t epoch, double* lr, double* seconds) {
  const TrainOptions& o = r.opt;
  Rng epoch_rng(o.seed * 1000003 + (uint64_t)epoch);
  r.loader->start_epoch(epoch_rng);
  r.model.train();
  r.cb.epoch_start(epoch + 1, r.steps_per_epoch);
  const double t0 = now_seconds();
  EpochStats st;
  GraphTrainStep& g = *r.graph_step;
  g.zero_metrics();
  Batch batch;
  bool read = true;
  while (r.loader->next(batch)) {
    *lr = r.sched.lr_at(r.step);
    r.optim->set_lr(*lr);
    const bool was_on = g.graph_on();
    g.step(batch.images, batch.labels);
    if (was_on && !g.graph_on()) r.cb.warning("CUDA graphs off: " + g.off_reason + "; the steps run eagerly");
    if (r.ema) r.ema->update();  // after the replay, in stream order
    st.steps++, r.step++;
    st.seen += batch.labels.size(0);
    read = false;
    if (st.steps % o.log_every == 0 || st.steps == r.steps_per_epoch) {
      g.read_metrics(&st.loss_sum, &st.correct);
      st.counted = st.seen, read = true;
      if (!std::isfinite(st.loss_sum))
        NALA_FAIL("non-finite loss between steps ", r.last_checked, " and ", r.step - 1, " (epoch ", epoch + 1,
                  "); stopping without saving. ",
                  !r.ckpt.empty() && access(r.ckpt.c_str(), F_OK) == 0 ? "The last good checkpoint is " + r.ckpt
                                                                        : "No checkpoint was written yet",
                  ". Lower --lr, set --clip-grad, or pass --skip-nonfinite.");
      r.last_checked = r.step - 1;
      report_progress(r, epoch, st, *lr, t0);
    }
    if (after_step(r)) break;
  }
  if (!read) g.read_metrics(&st.loss_sum, &st.correct), st.counted = st.seen;
  *seconds = now_seconds() - t0;
  return st;
}

// One epoch's steps; returns its figures on this rank.
EpochStats train_epoch(Run& r, int64_t epoch, double* lr, double* seconds) {
  if (r.graph_step) return train_epoch_graphs(r, epoch, lr, seconds);
  const TrainOptions& o = r.opt;
  Rng epoch_rng(o.seed * 1000003 + (uint64_t)epoch);  // the epoch's order and augmentation
  r.loader->start_epoch(epoch_rng);
  r.model.train();
  r.cb.epoch_start(epoch + 1, r.steps_per_epoch);
  const double t0 = now_seconds();
  EpochStats st;
  Staging staging;
  Batch batch;
  while (r.loader->next(batch)) {
    *lr = lr_for(r, r.step);
    r.optim->set_lr(*lr);
    Tensor images, labels;
    staging.to_device(batch, r.dev, images, labels);
    StepOptions so;
    so.label_smoothing = o.label_smoothing;
    so.clip_grad = o.clip_grad;
    // The CPU checks every step. The GPU reads values back only at log
    // steps (and at the end of the epoch), unless --skip-nonfinite needs the
    // values of every step.
    const bool log_now = (st.steps + 1) % o.log_every == 0 || st.steps + 1 == r.steps_per_epoch;
    so.check = !r.on_gpu || log_now || o.skip_nonfinite;
    so.need_norm = !r.on_gpu || o.skip_nonfinite;
    so.nan_loss = r.step == o.debug_nan_at;
    const StepResult s = train_step(r.model, *r.optim, images, labels, so, r.comm, r.sync, st);
    if (s.skipped) {
      std::string where = "at step " + std::to_string(r.step);
      if (s.from_earlier) where = "between steps " + std::to_string(r.last_checked) + " and " + std::to_string(r.step);
      if (!o.skip_nonfinite)
        NALA_FAIL("non-finite ", s.nonfinite, " ", where, " (epoch ", epoch + 1, "); stopping without saving. ",
                  !r.ckpt.empty() && access(r.ckpt.c_str(), F_OK) == 0 ? "The last good checkpoint is " + r.ckpt
                                                                        : "No checkpoint was written yet",
                  ". Lower --lr, set --clip-grad, or pass --skip-nonfinite.");
      r.cb.skipped(r.step, s.nonfinite);
      r.result.skipped++;
    } else if (s.checked) {
      r.last_checked = r.step;
    }
    if (!s.skipped && r.ema) r.ema->update();
    r.step++;  // a skipped step counts too
    if (!s.skipped && s.checked) report_progress(r, epoch, st, *lr, t0);
    if (after_step(r)) break;
  }
  if (r.on_gpu && st.loss_dev.defined()) st.loss_sum = st.loss_dev.item();
  if (r.group) {  // the epoch's figures over every rank
    std::vector<float> t = {(float)st.loss_sum, (float)st.correct, (float)st.counted, (float)st.seen};
    r.comm.all_reduce_sum(t.data(), (int64_t)t.size(), Device::CPU);
    st.loss_sum = t[0] / r.comm.size();
    st.correct = std::llround(t[1]), st.counted = std::llround(t[2]), st.seen = std::llround(t[3]);
    if (!o.sync_bn) average_tensors(r.comm, r.bn_stats);  // one model to evaluate and save
    if (r.ema) average_tensors(r.comm, r.ema->averages());  // the same for the average's statistics
  }
  *seconds = now_seconds() - t0;
  return st;
}

// Evaluates the epoch, reports it, and (rank 0, complete epochs) writes
// metrics.csv, the best weights when they improved, and the checkpoint.
void end_epoch(Run& r, int64_t epoch, const EpochStats& st, double lr, double secs) {
  const TrainOptions& o = r.opt;
  const int64_t eval_batch = o.eval_batch_size ? o.eval_batch_size : std::max<int64_t>(o.batch_size, 256);
  r.doing = "evaluating epoch " + std::to_string(epoch + 1) + " (batches of " + std::to_string(eval_batch) +
            " test images)";
  EpochReport rep;
  rep.epoch = epoch + 1, rep.done = st.steps, rep.steps_per_epoch = r.steps_per_epoch, rep.step = r.step;
  rep.train_loss = st.mean_loss(), rep.train_accuracy = st.accuracy(), rep.lr = lr;
  rep.seconds = secs, rep.images_per_second = st.seen / secs;
  const double e0 = now_seconds();
  // With --ema the average is evaluated (and saved as the best weights): it
  // is swapped into the model until the checkpoint is written.
  struct Swapped {
    WeightEma* ema;
    explicit Swapped(WeightEma* e) : ema(e) {
      if (ema) ema->swap();
    }
    ~Swapped() { restore(); }
    void restore() {
      if (ema) ema->swap();
      ema = nullptr;
    }
  } swapped(r.ema.get());
  rep.averaged = r.ema != nullptr;
  if (o.val) {
    rep.has_val = true;
    rep.val = evaluate(r.model, *o.val, eval_batch, 0, &r.comm, r.graph_eval.get(), o.tta);
  }
  rep.test = evaluate(r.model, r.test, eval_batch, o.eval_subset, &r.comm, r.graph_eval.get(), o.tta);
  const double eval_s = now_seconds() - e0;
  r.cb.epoch_end(rep);
  r.result.last = rep;
  TrainResult& res = r.result;
  if (!rep.complete()) {  // stopped by --max-steps inside the epoch: nothing is written for it
    res.partial_epoch = epoch + 1, res.partial_steps = st.steps;
    return;
  }
  // The budget checked again before the files are written, so that the
  // checkpoint names the epochs the run now has.
  if (o.time_budget > 0 && !r.budget_pending) refit_budget(r, epoch + 1, eval_s);
  res.epoch = epoch + 1, res.checkpoint_step = r.step;
  const bool best_test = rep.test.top1 > res.best_top1;
  const bool best_val = rep.has_val && rep.val.top1 > res.best_val_top1;
  res.best_top1 = std::max(res.best_top1, rep.test.top1);
  if (best_val)
    res.best_val_top1 = rep.val.top1, res.best_val_test_top1 = rep.test.top1, res.best_val_epoch = epoch + 1;
  if (!r.folder) return;  // the other ranks, or no output folder
  r.doing = "writing the results of epoch " + std::to_string(epoch + 1);
  std::string row = metrics_row(epoch + 1, r.step, lr, rep.train_loss, rep.train_accuracy, rep.test.loss,
                                rep.test.top1, rep.test.top5, secs, rep.images_per_second);
  if (rep.has_val) row = with_val_columns(row, rep.val.loss, rep.val.top1);
  append_metrics(r.csv, rep.has_val ? kMetricsValHeader : kMetricsHeader, row);
  if (best_val)
    save_best_weights(r.best_val_path, r.model, r.model_file, rep.test.top1, epoch + 1,
                      {{"nala.val_top1", std::to_string(rep.val.top1)}, {"nala.chosen_on", "validation"}});
  else if (!rep.has_val && best_test)
    save_best_weights(r.best_path, r.model, r.model_file, rep.test.top1, epoch + 1);
  swapped.restore();  // the live weights back before the checkpoint
  CheckpointState cs;
  cs.args = r.args;
  cs.epoch = epoch + 1, cs.step = r.step;
  cs.global_batch = o.batch_size * r.comm.size(), cs.world_size = r.comm.size();
  cs.best_top1 = res.best_top1;
  cs.best_val_top1 = res.best_val_top1, cs.best_val_test_top1 = res.best_val_test_top1;
  cs.best_val_epoch = res.best_val_epoch;
  cs.rng = r.model.rng.state();
  save_checkpoint(r.ckpt, r.model, *r.optim, r.model_file, cs, r.ema ? r.ema->state() : NamedTensors{});
}

// BatchNorm's sync hook (--sync-bn) refers to the group: removed when the run ends.
struct BatchNormSync {
  std::vector<BatchNorm*> bns;
  ~BatchNormSync() {
    for (BatchNorm* bn : bns) bn->sync = nullptr;
  }
};

TrainResult run(Run& r) {
  const TrainOptions& o = r.opt;
  NalaFormer& model = r.model;
  const int world = r.comm.size();
  r.lead = r.comm.rank() == 0;
  // Data-parallel whenever a launcher made a group, even a group of one.
  r.group = std::strcmp(r.comm.backend(), "single") != 0;
  NALA_CHECK(!r.group || r.sync, "train: a data-parallel group (", r.comm.backend(), ", ", world,
             " ranks) needs a GradSync to average the gradients");
  NALA_CHECK(o.epochs >= 1 && o.batch_size >= 1 && o.log_every >= 1, "train: epochs, batch_size and log_every must "
             "be positive (got ", o.epochs, ", ", o.batch_size, ", ", o.log_every, ")");
  NALA_CHECK(r.train.c == model.cfg.in_chans && (int64_t)r.train.classes.size() == model.cfg.num_classes, "train: ",
             r.train.name, " has ", r.train.c, "-channel images of ", r.train.classes.size(), " classes; the model (",
             model.cfg.name, ") takes ", model.cfg.in_chans, " channels and has ", model.cfg.num_classes, " classes");
  NALA_CHECK(r.test.c == r.train.c && r.test.h == r.train.h && r.test.w == r.train.w &&
                 r.test.classes.size() == r.train.classes.size(),
             "train: the test set ", r.test.name, " (", r.test.h, "x", r.test.w, "x", r.test.c, ", ",
             r.test.classes.size(), " classes) does not match the training set (", r.train.h, "x", r.train.w, "x",
             r.train.c, ", ", r.train.classes.size(), " classes)");
  NALA_CHECK(o.batch_size * world <= r.train.n, "the global batch of ", world, " x ", o.batch_size, " exceeds the ",
             r.train.n, " training images");
  NALA_CHECK(!o.resume || !o.out.empty(), "train: resume needs the output folder of the run to continue");
  NALA_CHECK(o.time_budget >= 0 && std::isfinite(o.time_budget), "train: --time-budget must be a number of seconds >= "
             "0 (got ", o.time_budget, ")");
  NALA_CHECK(o.time_budget == 0 || !o.resume, "train: --time-budget chooses the epochs of a new run; resume a run "
             "with the --epochs it chose (its first lines say how many) and without --time-budget");
  r.run_start = now_seconds();
  r.epochs = o.epochs;

  // The output folder (rank 0 writes): the caller's, or opened here.
  std::unique_ptr<RunFolder> own_folder;
  if (r.lead && !o.out.empty()) {
    r.folder = o.folder;
    if (!r.folder) {
      own_folder = std::make_unique<RunFolder>(o.out, o.resume ? RunFolder::RESUME : RunFolder::NEW);
      r.folder = own_folder.get();
      for (const std::string& f : remove_stale_temp_files(o.out))
        r.cb.warning("removed " + f + ", left by an interrupted save");
    }
  }
  if (!o.out.empty()) {
    r.ckpt = o.out + "/" + kCheckpointFile, r.best_path = o.out + "/" + kBestFile;
    r.best_val_path = o.out + "/" + kBestValFile;
    r.csv = o.out + "/" + kMetricsFile;
  }
  r.args = o.args.empty() ? describe_options(o) : o.args;
  r.model_file = model_file_for(model.cfg, r.train);

  r.doing = "building the optimiser";
  r.dev = module_device(model);
  r.on_gpu = r.dev != Device::CPU;
  model.train();
  BatchNormSync bn_sync;
  for (auto& [name, m] : model.named_modules())
    if (auto* bn = dynamic_cast<BatchNorm*>(m)) {
      r.bn_stats.push_back(bn->running_mean), r.bn_stats.push_back(bn->running_var);
      if (o.sync_bn && r.group) {
        Comm* comm = &r.comm;
        bn->sync = [comm](float* data, int64_t n, Device d) { comm->all_reduce_sum(data, n, d); };
        bn_sync.bns.push_back(bn);
      }
    }
  r.optim = make_optimizer(model, o);
  if (o.ema_decay > 0) r.ema = std::make_unique<WeightEma>(model.state_dict(), o.ema_decay);
  if (o.val) {
    NALA_CHECK(o.val->n > 0 && o.val->c == r.train.c && o.val->h == r.train.h && o.val->w == r.train.w &&
                   o.val->classes == r.train.classes,
               "train: the validation set ", o.val->name, " is empty or does not match the training set");
  }
  LoaderOptions lo;
  lo.batch_size = o.batch_size;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.workers = o.workers;
  lo.augment = o.augment;
  lo.rank = r.comm.rank(), lo.world = world;
  r.loader = std::make_unique<BatchLoader>(r.train, lo);
  r.steps_per_epoch = r.loader->num_batches();
  r.sched = WarmupCosine(o.lr, o.min_lr, (int64_t)std::llround(o.warmup_epochs * r.steps_per_epoch), o.warmup_lr,
                         r.epochs * r.steps_per_epoch);

  // CUDA graphs where the shapes are fixed and nothing is read back per step.
  if (r.on_gpu && o.graphs) {
    const char* why = r.group ? "data-parallel" : o.clip_grad > 0 ? "--clip-grad reads the gradient norm every step"
                      : o.skip_nonfinite ? "--skip-nonfinite reads the loss every step"
                      : o.debug_nan_at >= 0 ? "--debug-nan-at" : nullptr;
    if (why) {
      r.cb.message(std::string("CUDA graphs: off (") + why + "); every kernel is launched on its own");
    } else {
      r.graph_step = std::make_unique<GraphTrainStep>(model, *r.optim, o.label_smoothing);
      r.graph_eval = std::make_unique<GraphEval>(model);
      r.cb.message("CUDA graphs: on (each step captured once and replayed; loss and accuracy read every " +
                   std::to_string(o.log_every) + " steps; --no-graphs launches every kernel on its own)");
    }
  }
  if (r.on_gpu)
    r.cb.message(device::gemm_bf16() ? "precision: bf16 products and convolutions on tensor cores, float32 "
                                       "accumulation; the blocks' stored activations in bf16; weights, optimiser, "
                                       "norm statistics, residual stream and loss in float32"
                                     : "precision: float32");
  if (o.resume) resume(r);
  r.last_checked = r.step;
  TrainResult& res = r.result;
  res.epochs = r.epochs, res.max_steps = o.max_steps, res.steps_per_epoch = r.steps_per_epoch, res.out = o.out;
  res.epoch = r.epoch0, res.checkpoint_step = r.step;

  if (r.group) {
    // Every rank starts from rank 0's weights and buffers; drop-path masks
    // differ per rank (each holds other images).
    std::vector<Tensor> state;
    for (auto& nt : model.state_dict()) state.push_back(nt.second);
    broadcast_tensors(r.comm, state);  // parameters and buffers
    if (r.comm.rank() > 0) {
      const auto s = model.rng.state();
      model.rng.seed_(s[0] ^ s[1] ^ s[2] ^ s[3] ^ (0x9e3779b97f4a7c15ULL * (uint64_t)r.comm.rank()));
    }
    r.cb.message("data-parallel: " + std::to_string(world) + " processes (" + r.comm.backend() + "), global batch " +
                 std::to_string(o.batch_size * world) + ", BatchNorm " +
                 (o.sync_bn ? "synchronised" : "per process"));
  }
  RunStart start;
  start.config = model.cfg.describe(), start.data = r.train.name;
  start.train_images = r.train.n, start.test_images = r.test.n;
  start.h = r.train.h, start.w = r.train.w, start.c = r.train.c, start.classes = (int64_t)r.train.classes.size();
  start.parameters = model.num_parameters(), start.epochs = r.epochs, start.steps_per_epoch = r.steps_per_epoch;
  start.batch_size = o.batch_size, start.threads = threads_in_use(), start.out = o.out;
  start.left_out = r.train.n - r.steps_per_epoch * o.batch_size * world;
  start.log_every = o.log_every;
  start.time_budget = o.time_budget;
  r.cb.start(start);

  const double run_start = r.run_start;
  const int64_t first_step = r.first_step = r.step;
  if (o.time_budget > 0) {  // the steps to time: within the first epoch
    r.budget_pending = true;
    r.budget_skip = std::min<int64_t>(kBudgetSkip, r.steps_per_epoch - 1);
    // The whole warm-up when it is longer (more steps, a steadier figure).
    const int64_t warm = (int64_t)std::llround(o.warmup_epochs * r.steps_per_epoch);
    r.budget_decide = std::min<int64_t>(std::max<int64_t>(r.budget_skip + kBudgetSteps, warm), r.steps_per_epoch);
    r.budget_t0 = r.last_step_end = now_seconds();
  }
  r.stop = o.max_steps && r.step >= o.max_steps;
  if (r.stop)
    r.cb.message("--max-steps " + std::to_string(o.max_steps) + ": the run is already at step " +
                 std::to_string(r.step) + "; nothing to train");
  else if (r.epoch0 >= r.epochs)
    r.cb.message("the checkpoint is at epoch " + std::to_string(r.epoch0) + " and this run has --epochs " +
                 std::to_string(r.epochs) + ": nothing to train");
  if (r.folder && !r.stop && r.epoch0 < r.epochs) {  // --overwrite, now that the run is ready
    std::string removed;
    for (const std::string& f : r.folder->remove_earlier_run()) removed += (removed.empty() ? "" : ", ") + f;
    if (!removed.empty()) r.cb.message("--overwrite: removed the earlier run's " + removed + " from " + o.out);
  }
  const std::string batch_text = "batches of " + std::to_string(o.batch_size) + " images of " +
                                 std::to_string(r.train.h) + "x" + std::to_string(r.train.w) + "x" +
                                 std::to_string(r.train.c);
  for (int64_t epoch = r.epoch0; epoch < r.epochs && !r.stop; epoch++) {
    r.doing = "training epoch " + std::to_string(epoch + 1) + " (" + batch_text +
              "); a smaller --batch-size needs less memory";
    double lr = 0, secs = 0;
    const EpochStats st = train_epoch(r, epoch, &lr, &secs);
    r.train_seconds += secs;
    end_epoch(r, epoch, st, lr, secs);
    if (res.partial_epoch) break;
  }

  res.step = r.step;
  res.stopped_at_epoch_end = !res.partial_epoch && o.max_steps && r.step >= o.max_steps && r.step > first_step &&
                             res.epoch < r.epochs;
  if (!r.ckpt.empty() && access(r.ckpt.c_str(), F_OK) == 0) res.checkpoint = r.ckpt;
  if (!r.best_path.empty() && access(r.best_path.c_str(), F_OK) == 0) res.best = r.best_path;
  if (!r.best_val_path.empty() && access(r.best_val_path.c_str(), F_OK) == 0) res.best_val = r.best_val_path;
  res.seconds = now_seconds() - run_start;
  // The run's curves (loss.svg, accuracy.svg, lr.svg) beside metrics.csv. A
  // plot that cannot be drawn must not fail a finished run: it is a warning.
  if (r.lead && !r.csv.empty() && access(r.csv.c_str(), F_OK) == 0) {
    try {
      res.plots = write_training_plots(r.csv, o.out);
    } catch (const Error& e) {
      r.cb.warning(std::string("the training plots were not written: ") + e.what());
    }
  }
  r.cb.end(res);
  if (r.folder) r.folder->finish();
  return res;
}

}  // namespace

// std::bad_alloc says nothing of what was being allocated: `doing` does.
TrainResult train(NalaFormer& model, const Dataset& train, const Dataset& test, const TrainOptions& opt, Comm& comm,
                  GradSync* sync, TrainCallbacks* cb) {
  TrainCallbacks silent;
  std::string doing = "starting";
  Run r(model, train, test, opt, comm, sync, cb ? *cb : silent, doing);
  try {
    return run(r);
  } catch (const std::bad_alloc&) {
    NALA_FAIL("out of memory while ", doing);
  }
}

}  // namespace nala
