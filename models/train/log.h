// models/train/log.h - what a training run reports, and where it goes:
// metrics.csv (one row per completed epoch) and the progress line.
#pragma once
#include <cstdint>
#include <string>

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

}  // namespace nala
