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

namespace nala {

// ---------------------------------------------------------------- metrics.csv

const char* const kMetricsHeader =
    "epoch,step,lr,train_loss,train_acc,test_loss,test_top1,test_top5,epoch_seconds,images_per_second\n";

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

}  // namespace nala
