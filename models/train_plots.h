// models/train_plots.h - the curves of a training run as SVG files, from the
// run's metrics.csv (one row per epoch): loss.svg (train and test loss),
// accuracy.svg (train accuracy, test top-1 and top-5, in %) and lr.svg (the
// learning rate), written with models/plot.h. The training loop calls
// write_training_plots at the end of a run; `nala plot` calls it for any run.
//
// metrics.csv is read by its header: the columns are found by name, in any
// order, and others are ignored (today: epoch, step, lr, train_loss,
// train_acc, test_loss, test_top1, test_top5, epoch_seconds,
// images_per_second; val_loss, val_top1 and val_top5 are drawn when present).
// Only `epoch` is required; a missing curve is named in a note on its chart.
// Part of the core library (C++ standard library only, and nn/files.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nala {

// A CSV file of numbers with a header line. An empty cell reads as NaN, as do
// "nan" and "inf" (strtod's spellings); any other text that is not a number
// is an error naming the file, the line and the column. A last line without
// its newline and with too few cells (a write cut short by a kill) is dropped
// and counted; a short or long line elsewhere is an error.
struct CsvTable {
  std::vector<std::string> columns;
  std::vector<std::vector<double>> rows;  // each columns.size() long
  int dropped_lines = 0;                  // a torn last line

  int column(const std::string& name) const;  // its index, or -1 when absent
  std::vector<double> values(int column) const;
};
constexpr int64_t kMaxCsvBytes = (int64_t)1 << 30;
CsvTable read_numeric_csv(const std::string& path, const std::string& what);

constexpr const char* kLossPlot = "loss.svg";
constexpr const char* kAccuracyPlot = "accuracy.svg";
constexpr const char* kLrPlot = "lr.svg";

// Reads metrics_csv and writes the three plots into out_dir (made when
// missing); returns their paths. A plot file already there is replaced only
// when nala wrote it (plot::write_svg). Throws nala::Error naming the file on
// failure (no such file, no `epoch` column, a bad cell); a caller that must
// not fail because of a plot (the end of a training run) catches and warns.
std::vector<std::string> write_training_plots(const std::string& metrics_csv, const std::string& out_dir);

// Several runs on one chart each (`nala plot --compare`, tools/ablate.sh):
// compare_val.svg (validation top-1 in %, the runs that have it),
// compare_test.svg (test top-1 in %) and compare_loss.svg (train loss),
// one line per run against its epochs. Runs with the same label share a
// colour and one legend entry (the seeds of one kind); a note under each
// chart gives every run's best value and its epoch, and its last one.
// from_epoch > 1 leaves out the earlier epochs (the end of a run, where runs
// differ, drawn at a readable scale). Returns the paths written; throws as
// write_training_plots does, naming the file.
struct PlotRun {
  std::string metrics_csv;
  std::string label;  // empty: the run's name (the folder that holds metrics.csv)
};
constexpr const char* kCompareValPlot = "compare_val.svg";
constexpr const char* kCompareTestPlot = "compare_test.svg";
constexpr const char* kCompareLossPlot = "compare_loss.svg";
std::vector<std::string> write_comparison_plots(const std::vector<PlotRun>& runs, const std::string& out_dir,
                                                int64_t from_epoch = 1);

// The name of a run from its metrics file: the folder that holds metrics.csv
// (runs/NAME/metrics.csv), or the file's name without ".csv" otherwise.
std::string run_name_of(const std::string& metrics_csv);

}  // namespace nala
