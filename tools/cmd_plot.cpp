// tools/cmd_plot.cpp - `nala plot`: the loss, accuracy and learning-rate
// curves of a training run as SVG files (models/train_plots.h), from its
// metrics.csv; the same plots `nala train` writes at the end of a run. With
// --compare, several runs on one chart each.
#include <cstdio>

#include "models/train_plots.h"
#include "nn/files.h"
#include "tools/common.h"

namespace nala {

int cmd_plot(int argc, char** argv) {
  std::string metrics, out, labels;
  bool compare = false, group_seeds = false;
  int64_t from_epoch = 1;
  std::vector<std::string> files;
  ArgParser p("plot", "write a training run's loss, accuracy and learning-rate curves as SVG files, or compare "
              "several runs (--compare)");
  p.add_string("metrics", &metrics, "the run's metrics.csv (e.g. runs/NAME/metrics.csv)");
  p.add_string("out", &out, "output folder (default: the folder of --metrics; required with --compare)");
  p.add_flag("compare", &compare, "compare the runs whose metrics.csv files follow the options: compare_val.svg, "
             "compare_test.svg and compare_loss.svg, one line per run");
  p.add_string("labels", &labels, "--compare: the runs' labels, comma-separated, in their order (default: each "
               "run's folder name); runs with one label share a colour");
  p.add_flag("group-seeds", &group_seeds, "--compare: label each run by its folder name without a trailing "
             "-s<seed> (runs/nala-s0 and runs/nala-s1: nala)");
  p.add_int("from-epoch", &from_epoch, "--compare: leave out the epochs before this one", 1, 1 << 30);
  p.add_positional(&files, "METRICS.csv", 0);
  p.parse(argc, argv);
  if (!compare) {
    if (!files.empty()) throw UsageError("metrics files after the options are for --compare; one run: --metrics FILE");
    if (!labels.empty() || group_seeds || p.given("from-epoch"))
      throw UsageError("--labels, --group-seeds and --from-epoch go with --compare");
    if (metrics.empty()) throw UsageError("--metrics is required");
    if (out.empty()) out = parent_dir(metrics);
    // (the writers read every input before they make the folder: a bad file leaves none behind)
    for (const std::string& path : write_training_plots(metrics, out)) std::printf("%s\n", path.c_str());
    return 0;
  }
  if (!metrics.empty()) throw UsageError("--compare takes the metrics files after the options, not --metrics");
  if (files.empty()) throw UsageError("--compare needs the metrics.csv files of the runs, after the options");
  if (out.empty()) throw UsageError("--compare needs --out DIR");
  if (!labels.empty() && group_seeds) throw UsageError("--labels or --group-seeds, not both");
  std::vector<PlotRun> runs(files.size());
  std::vector<std::string> names;
  if (!labels.empty()) {
    names = split_list(labels);
    if (names.size() != files.size())
      throw UsageError("--labels has " + std::to_string(names.size()) + " labels for " +
                       std::to_string(files.size()) + " metrics files");
  }
  for (size_t i = 0; i < files.size(); i++) {
    runs[i].metrics_csv = files[i];
    if (!names.empty()) runs[i].label = names[i];
    if (group_seeds) {
      std::string n = run_name_of(files[i]);
      size_t dash = n.rfind("-s");
      if (dash != std::string::npos && dash + 2 < n.size() &&
          n.find_first_not_of("0123456789", dash + 2) == std::string::npos)
        n.resize(dash);
      runs[i].label = n;
    }
  }
  for (const std::string& path : write_comparison_plots(runs, out, from_epoch)) std::printf("%s\n", path.c_str());
  return 0;
}

}  // namespace nala
