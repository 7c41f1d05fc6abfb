// models/train/log.cpp - see log.h.
#include "models/train/log.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "nn/files.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace nala {

// ---------------------------------------------------------------- metrics.csv

const char* const kMetricsHeader =
    "epoch,step,lr,train_loss,train_acc,test_loss,test_top1,test_top5,epoch_seconds,images_per_second\n";

const char* const kMetricsValHeader =
    "epoch,step,lr,train_loss,train_acc,test_loss,test_top1,test_top5,epoch_seconds,images_per_second,val_loss,"
    "val_top1\n";

std::string with_val_columns(const std::string& row, double val_loss, double val_top1) {
  char extra[96];
  std::snprintf(extra, sizeof extra, ",%.6f,%.6f\n", val_loss, val_top1);
  std::string out = row;
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out + extra;
}

std::string metrics_row(int64_t epoch, int64_t step, double lr, double train_loss, double train_acc,
                        double test_loss, double test_top1, double test_top5, double seconds,
                        double images_per_second) {
  char row[256];
  std::snprintf(row, sizeof row, "%lld,%lld,%.6g,%.6f,%.6f,%.6f,%.6f,%.6f,%.2f,%.1f\n", (long long)epoch,
                (long long)step, lr, train_loss, train_acc, test_loss, test_top1, test_top5, seconds,
                images_per_second);
  return row;
}

void trim_metrics(const std::string& path, int64_t epochs) {
  if (::access(path.c_str(), F_OK) != 0) return;  // no epoch row was ever written
  std::istringstream in(read_file(path, "training metrics"));
  std::string keep, line;
  size_t fields = 0;
  for (int64_t row = 0; std::getline(in, line); row++) {
    size_t f = std::count(line.begin(), line.end(), ',') + 1;
    if (row == 0) fields = f;
    if (row == 0 || (f == fields && std::atoll(line.c_str()) <= epochs)) keep += line + "\n";
  }
  write_file_atomic(path, keep, "training metrics");  // a kill here must not lose the rows
}

void append_metrics(const std::string& path, const std::string& header, const std::string& row) {
  if (::access(path.c_str(), F_OK) != 0) write_file_atomic(path, header + row, "training metrics");
  else append_file(path, row, "training metrics");
}


// ---------------------------------------------------------------- the progress line

std::string format_duration(double s) {
  char buf[64];
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1f s", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%d min %02d s", (int)s / 60, (int)s % 60);
  else std::snprintf(buf, sizeof buf, "%d h %02d min", (int)s / 3600, ((int)s % 3600) / 60);
  return buf;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(int64_t total, int64_t every)
    : total_(total), every_(std::max<int64_t>(1, every)), tty_(isatty(fileno(stdout))), start_(now_seconds()) {}

void Progress::update(int64_t done, const std::string& text) {
  if (!tty_ && done % every_ != 0 && done != total_) return;
  const int width = 24;
  int fill = total_ ? (int)(width * done / total_) : width;
  std::string bar(fill, '#');
  bar += std::string(width - fill, '.');
  double el = now_seconds() - start_;
  double left = done ? el * (total_ - done) / done : NAN;
  std::printf("%s[%s] %lld/%lld %s | %s left", tty_ ? "\r" : "", bar.c_str(), (long long)done, (long long)total_,
              text.c_str(), format_duration(left).c_str());
  std::printf(tty_ ? "\033[K" : "\n");
  std::fflush(stdout);
}

void Progress::finish() {
  if (tty_) std::printf("\n");
}

int threads_in_use() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// ---------------------------------------------------------------- ConsoleLog

void ConsoleLog::message(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

void ConsoleLog::warning(const std::string& text) {
  std::fprintf(stderr, "nala: warning: %s\n", text.c_str());
  std::fflush(stderr);
}

void ConsoleLog::start(const RunStart& r) {
  every_ = r.log_every;
  std::printf("nala train: %s\n  data %s: %lld train / %lld test images %lldx%lldx%lld, %lld classes\n"
              "  %lld parameters, %lld epochs x %lld steps of %lld, %d threads, output %s\n",
              r.config.c_str(), r.data.c_str(), (long long)r.train_images, (long long)r.test_images, (long long)r.h,
              (long long)r.w, (long long)r.c, (long long)r.classes, (long long)r.parameters, (long long)r.epochs,
              (long long)r.steps_per_epoch, (long long)r.batch_size, r.threads,
              r.out.empty() ? "(none)" : r.out.c_str());
  if (r.time_budget > 0)
    std::printf("  --time-budget %.0f s: the epochs (at most %lld) are chosen after timing the first steps\n",
                r.time_budget, (long long)r.epochs);
  if (r.left_out > 0)
    std::printf("  each epoch trains on %lld of the %lld images: the last %lld of its shuffled order do not fill a "
                "batch (a new order every epoch)\n",
                (long long)(r.train_images - r.left_out), (long long)r.train_images, (long long)r.left_out);
  std::fflush(stdout);
}

void ConsoleLog::epoch_start(int64_t epoch, int64_t steps_per_epoch) {
  bar_ = std::make_unique<Progress>(steps_per_epoch, every_);
}

void ConsoleLog::progress(const StepReport& r) {
  if (!bar_) bar_ = std::make_unique<Progress>(r.steps_per_epoch, every_);
  char text[160];
  std::snprintf(text, sizeof text, "epoch %lld/%lld loss %.4f acc %.3f lr %.2e %.0f img/s", (long long)r.epoch,
                (long long)r.epochs, r.loss, r.accuracy, r.lr, r.images_per_second);
  bar_->update(r.done, text);
}

void ConsoleLog::skipped(int64_t step, const std::string& what) {
  std::fprintf(stderr, "\nnala: non-finite %s at step %lld: step skipped\n", what.c_str(), (long long)step);
}

void ConsoleLog::epoch_end(const EpochReport& r) {
  if (bar_) bar_->finish();
  bar_.reset();
  std::string label = "epoch " + std::to_string(r.epoch);
  if (!r.complete())
    label += " (partial: " + std::to_string(r.done) + " of " + std::to_string(r.steps_per_epoch) + " steps)";
  std::string val;
  if (r.has_val) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "val loss %.4f top-1 %.4f | ", r.val.loss, r.val.top1);
    val = buf;
  }
  std::printf("%s: train loss %.4f acc %.4f | %s%stest loss %.4f top-1 %.4f top-5 %.4f | %s, %.0f img/s\n",
              label.c_str(), r.train_loss, r.train_accuracy, r.averaged ? "average: " : "", val.c_str(), r.test.loss,
              r.test.top1, r.test.top5, format_duration(r.seconds).c_str(), r.images_per_second);
  std::fflush(stdout);
}

// The closing lines name only files that exist.
void ConsoleLog::end(const TrainResult& r) {
  if (r.skipped)
    std::printf("skipped %lld step%s with non-finite values\n", (long long)r.skipped, r.skipped == 1 ? "" : "s");
  if (r.partial_epoch)
    std::printf("stopped by --max-steps %lld at step %lld, %lld of %lld steps into epoch %lld: those steps were "
                "trained and evaluated (above) but are in no file, since files are written at the end of an epoch\n",
                (long long)r.max_steps, (long long)r.step, (long long)r.partial_steps, (long long)r.steps_per_epoch,
                (long long)r.partial_epoch);
  else if (r.stopped_at_epoch_end)
    std::printf("stopped by --max-steps %lld at the end of epoch %lld of %lld\n", (long long)r.max_steps,
                (long long)r.epoch, (long long)r.epochs);
  const std::string took = format_duration(r.seconds);
  if (r.out.empty()) {
    if (r.best_val_epoch > 0)
      std::printf("done in %s: chosen on validation: epoch %lld (validation top-1 %.4f), test top-1 %.4f; no output "
                  "folder, so no file was written\n", took.c_str(), (long long)r.best_val_epoch, r.best_val_top1,
                  r.best_val_test_top1);
    else if (r.best_top1 >= 0)
      std::printf("done in %s: best test top-1 %.4f; no output folder, so no file was written\n", took.c_str(),
                  r.best_top1);
    else
      std::printf("done in %s: no epoch was completed; no output folder, so no file was written\n", took.c_str());
    std::fflush(stdout);
    return;
  }
  if (!r.checkpoint.empty())
    std::printf("checkpoint of epoch %lld of %lld (step %lld): %s\n", (long long)r.epoch, (long long)r.epochs,
                (long long)r.checkpoint_step, r.checkpoint.c_str());
  else
    std::printf("no checkpoint was written: no epoch was completed\n");
  if (!r.plots.empty()) {
    std::string list;
    for (const std::string& p : r.plots) list += (list.empty() ? "" : ", ") + p;
    std::printf("curves: %s\n", list.c_str());
  }
  if (!r.best_val.empty() && r.best_val_epoch > 0) {
    std::printf("done in %s: chosen on validation: epoch %lld (validation top-1 %.4f), test top-1 %.4f; weights in "
                "%s\n", took.c_str(), (long long)r.best_val_epoch, r.best_val_top1, r.best_val_test_top1,
                r.best_val.c_str());
  } else if (!r.best.empty() && r.best_top1 >= 0)
    std::printf("done in %s: best test top-1 %.4f; weights in %s\n", took.c_str(), r.best_top1, r.best.c_str());
  else
    std::printf("done in %s: no best weights were written: no epoch was completed\n", took.c_str());
  std::fflush(stdout);
}

}  // namespace nala
