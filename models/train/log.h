// models/train/log.h - what a training run reports, and where it goes:
// metrics.csv (one row per completed epoch), the callbacks through which
// train() (trainer.h) tells its caller what it does, and ConsoleLog, the
// callbacks that print it as `nala train` does (the progress line, the
// epoch summaries, the closing lines).
//
// train() itself never prints: without callbacks a run is silent.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/train/evaluate.h"

namespace nala {

// ---------------------------------------------------------------- metrics.csv

// The header line of metrics.csv (with its newline), and one epoch's row.
extern const char* const kMetricsHeader;
std::string metrics_row(int64_t epoch, int64_t step, double lr, double train_loss, double train_acc,
                        double test_loss, double test_top1, double test_top5, double seconds,
                        double images_per_second);
// metrics.csv holds one row per completed epoch. trim_metrics keeps the rows
// of epochs <= `epochs` (a resumed run writes the rest again) and drops a row
// cut short by a kill; append_metrics makes the file, with its header, at the
// first row. Both check every write (nn/files.h).
void trim_metrics(const std::string& path, int64_t epochs);
// With a validation set: the header and a row get two more columns,
// val_loss and val_top1, at the end.
std::string with_val_columns(const std::string& header_or_row, double val_loss, double val_top1);
extern const char* const kMetricsValHeader;
void append_metrics(const std::string& path, const std::string& header, const std::string& row);

// ---------------------------------------------------------------- the progress line

// "12.3 s", "4 min 05 s", "1 h 02 min"; "?" for a negative or unknown time.
std::string format_duration(double seconds);
double now_seconds();  // a steady clock, in seconds

// A one-line progress report on stdout: redrawn in place on a terminal,
// printed every `every` calls otherwise (logs stay readable).
class Progress {
 public:
  Progress(int64_t total, int64_t every);
  void update(int64_t done, const std::string& text);
  void finish();

 private:
  int64_t total_, every_;
  bool tty_;
  double start_;
};

// ---------------------------------------------------------------- what train() reports

// The run about to start (after any resume).
struct RunStart {
  std::string config;  // the model's config on one line (NalaConfig::describe)
  std::string data;    // the training set's name
  int64_t train_images = 0, test_images = 0, h = 0, w = 0, c = 0, classes = 0;
  int64_t parameters = 0, epochs = 0, steps_per_epoch = 0, batch_size = 0;
  int threads = 1;
  std::string out;        // the output folder ("" when nothing is written)
  int64_t left_out = 0;   // images per epoch that do not fill a last global batch
  int64_t log_every = 50; // progress reports come every log_every steps
  double time_budget = 0; // seconds (0: none); `epochs` is then the most the budget may choose
};

// An epoch's figures so far, after a step that was checked (step.h).
struct StepReport {
  int64_t epoch = 0, epochs = 0;           // 1-based
  int64_t done = 0, steps_per_epoch = 0;   // steps of this epoch so far
  double loss = 0, accuracy = 0, lr = 0, images_per_second = 0;
};

struct EpochReport {
  int64_t epoch = 0;                       // 1-based
  int64_t done = 0, steps_per_epoch = 0;   // done < steps_per_epoch: stopped inside the epoch
  int64_t step = 0;                        // optimiser steps at its end
  double train_loss = 0, train_accuracy = 0, lr = 0, seconds = 0, images_per_second = 0;
  EvalResult test;
  EvalResult val;         // the validation set's, when the run has one (has_val)
  bool has_val = false;
  bool averaged = false;  // evaluated with the weight average (--ema), not the live weights
  bool complete() const { return done == steps_per_epoch; }
};

struct TrainResult {
  int64_t epochs = 0;           // the run's epochs
  int64_t epoch = 0, step = 0;  // epochs completed (those the checkpoint holds), steps taken
  int64_t checkpoint_step = 0;  // the step the checkpoint holds
  int64_t skipped = 0;          // steps skipped for NaN/Inf
  int64_t max_steps = 0;        // the option, for the closing lines
  // Stopped by max_steps inside an epoch: which, and its steps.
  int64_t partial_epoch = 0, partial_steps = 0, steps_per_epoch = 0;
  bool stopped_at_epoch_end = false;  // stopped by max_steps at the end of an epoch before the last
  double best_top1 = -1;              // -1: no epoch was evaluated
  // With a validation set: the epoch best on it (0: none yet), its
  // validation and test top-1, and its weights (best_val.safetensors).
  int64_t best_val_epoch = 0;
  double best_val_top1 = -1, best_val_test_top1 = -1;
  std::string best_val;
  std::string out;                    // the output folder ("" when nothing is written)
  std::string checkpoint, best;       // those files when they exist, else ""
  std::vector<std::string> plots;     // loss.svg, accuracy.svg, lr.svg when written
  double seconds = 0;
  EpochReport last;                   // the last epoch trained (epoch 0: none)
};

// What train() tells its caller. Every method does nothing unless overridden.
class TrainCallbacks {
 public:
  virtual ~TrainCallbacks() = default;
  virtual void message(const std::string& line) {}  // a notice about the run (resume, data-parallel, ...)
  virtual void warning(const std::string& text) {}  // something that may be a mistake
  virtual void start(const RunStart& r) {}
  virtual void epoch_start(int64_t epoch, int64_t steps_per_epoch) {}
  virtual void progress(const StepReport& r) {}
  virtual void skipped(int64_t step, const std::string& what) {}  // step skipped: `what` (loss, gradient norm) was NaN/Inf
  virtual void epoch_end(const EpochReport& r) {}
  virtual void end(const TrainResult& r) {}
};

// Prints what `nala train` prints: notices, the header, the progress line
// (Progress), the epoch summaries and the closing lines on stdout; warnings
// and skipped steps on stderr, after "nala: ".
class ConsoleLog : public TrainCallbacks {
 public:
  void message(const std::string& line) override;
  void warning(const std::string& text) override;
  void start(const RunStart& r) override;
  void epoch_start(int64_t epoch, int64_t steps_per_epoch) override;
  void progress(const StepReport& r) override;
  void skipped(int64_t step, const std::string& what) override;
  void epoch_end(const EpochReport& r) override;
  void end(const TrainResult& r) override;

 private:
  std::unique_ptr<Progress> bar_;
  int64_t every_ = 50;
};

// The threads an OpenMP parallel region gets (1 without OpenMP).
int threads_in_use();

}  // namespace nala
