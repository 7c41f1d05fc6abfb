// tools/cmd_plot.cpp - `nala plot`: the loss, accuracy and learning-rate
// curves of a training run as SVG files (models/train_plots.h), from its
// metrics.csv; the same plots `nala train` writes at the end of a run.
#include <cstdio>

#include "models/train_plots.h"
#include "nn/files.h"
#include "tools/common.h"

namespace nala {

int cmd_plot(int argc, char** argv) {
  std::string metrics, out;
  ArgParser p("plot", "write a training run's loss, accuracy and learning-rate curves as SVG files");
  p.add_string("metrics", &metrics, "the run's metrics.csv (e.g. runs/NAME/metrics.csv)");
  p.add_string("out", &out, "output folder (default: the folder of --metrics)");
  p.parse(argc, argv);
  if (metrics.empty()) throw UsageError("--metrics is required");
  if (out.empty()) out = parent_dir(metrics);
  check_output_dir(out, "plot folder");
  for (const std::string& path : write_training_plots(metrics, out)) std::printf("%s\n", path.c_str());
  return 0;
}

}  // namespace nala
