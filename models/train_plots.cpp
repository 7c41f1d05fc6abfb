// models/train_plots.cpp - metrics.csv to loss.svg, accuracy.svg and lr.svg
// (see models/train_plots.h), and the numeric CSV reader they use.
#include "models/train_plots.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "models/plot.h"
#include "nn/files.h"
#include "tensor/error.h"

namespace nala {

namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t comma = line.find(',', start);
    out.push_back(trim(line.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// The last finite value of v, and its index; -1 when there is none.
int last_finite(const std::vector<double>& v) {
  for (int i = (int)v.size() - 1; i >= 0; i--)
    if (std::isfinite(v[(size_t)i])) return i;
  return -1;
}

// Index of the largest finite value; -1 when there is none.
int argmax_finite(const std::vector<double>& v) {
  int best = -1;
  for (size_t i = 0; i < v.size(); i++)
    if (std::isfinite(v[i]) && (best < 0 || v[i] > v[(size_t)best])) best = (int)i;
  return best;
}

// Makes out_dir (after every input was read: a bad file leaves no folder
// behind) and writes each chart there; returns the paths.
std::vector<std::string> write_charts(const std::string& out_dir,
                                      const std::vector<std::pair<const char*, const plot::Chart*>>& charts) {
  make_dirs(out_dir, "plot folder");
  std::vector<std::string> written;
  const std::string dir = out_dir.back() == '/' ? out_dir : out_dir + "/";
  for (const auto& [name, c] : charts) {
    written.push_back(dir + name);
    plot::write_svg(written.back(), plot::chart_svg(*c));
  }
  return written;
}

}  // namespace

int CsvTable::column(const std::string& name) const {
  for (size_t i = 0; i < columns.size(); i++)
    if (columns[i] == name) return (int)i;
  return -1;
}

std::vector<double> CsvTable::values(int c) const {
  NALA_CHECK(c >= 0 && (size_t)c < columns.size(), "CsvTable: column ", c, " of ", columns.size());
  std::vector<double> v;
  v.reserve(rows.size());
  for (const auto& r : rows) v.push_back(r[(size_t)c]);
  return v;
}

CsvTable read_numeric_csv(const std::string& path, const std::string& what) {
  const std::string text = read_file(path, what, kMaxCsvBytes);
  CsvTable t;
  size_t pos = 0;
  int lineno = 0;
  bool header = true;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    const bool complete = nl != std::string::npos;
    std::string line = text.substr(pos, complete ? nl - pos : std::string::npos);
    pos = complete ? nl + 1 : text.size();
    lineno++;
    if (trim(line).empty()) continue;
    std::vector<std::string> cells = split(line);
    if (header) {
      for (auto& c : cells) NALA_CHECK(!c.empty(), path, ": line ", lineno, ": the header has an empty column name");
      t.columns = cells, header = false;
      continue;
    }
    if (cells.size() != t.columns.size()) {
      if (!complete && cells.size() < t.columns.size()) {  // the last line, cut short
        t.dropped_lines++;
        break;
      }
      NALA_FAIL(path, ": line ", lineno, " has ", cells.size(), " cells, the header has ", t.columns.size());
    }
    std::vector<double> row(cells.size());
    for (size_t i = 0; i < cells.size(); i++) {
      if (cells[i].empty()) {
        row[i] = NAN;
        continue;
      }
      char* end = nullptr;
      row[i] = std::strtod(cells[i].c_str(), &end);
      NALA_CHECK(end && *end == 0, path, ": line ", lineno, ", column '", t.columns[i], "': '", cells[i],
                 "' is not a number");
    }
    t.rows.push_back(std::move(row));
  }
  NALA_CHECK(!header, path, ": empty (no header line)");
  return t;
}

std::string run_name_of(const std::string& metrics_csv) {
  auto base = [](const std::string& p) {
    size_t slash = p.find_last_of('/');
    return slash == std::string::npos ? p : p.substr(slash + 1);
  };
  std::string run = base(metrics_csv);
  if (run == "metrics.csv") {
    run = base(parent_dir(metrics_csv));
    if (run == "." || run == "..") run.clear();
  } else if (run.size() > 4 && run.compare(run.size() - 4, 4, ".csv") == 0) {
    run.resize(run.size() - 4);
  }
  return run;
}

std::vector<std::string> write_training_plots(const std::string& metrics_csv, const std::string& out_dir) {
  NALA_CHECK(!out_dir.empty(), "write_training_plots: no output folder given for ", metrics_csv);
  const CsvTable t = read_numeric_csv(metrics_csv, "training metrics");
  const int ce = t.column("epoch");
  NALA_CHECK(ce >= 0, metrics_csv, ": no 'epoch' column (not a nala metrics.csv?)");
  const std::vector<double> epoch = t.values(ce);

  const std::string run = run_name_of(metrics_csv);
  const std::string prefix = run.empty() ? "" : run + ": ";

  std::vector<std::string> common_notes;
  if (t.rows.empty()) common_notes.push_back("no epoch completed yet (metrics.csv has no rows)");
  if (t.dropped_lines) common_notes.push_back("the last line of metrics.csv was cut short and is left out");

  // A chart of the named columns (scaled by `scale`); absent optional ones are skipped silently.
  struct Want {
    const char* column;
    const char* name;
    bool required;
    bool dashed;
  };
  auto chart = [&](const std::string& title, const std::string& ylabel, const std::vector<Want>& wants,
                   double scale) {
    plot::Chart c;
    c.title = prefix + title;
    c.x.label = "epoch";
    c.y.label = ylabel;
    c.notes = common_notes;
    for (const Want& w : wants) {
      const int col = t.column(w.column);
      if (col < 0) {
        if (w.required) c.notes.push_back(std::string("metrics.csv has no '") + w.column + "' column");
        continue;
      }
      plot::Series s;
      s.name = w.name;
      s.x = epoch;
      s.y = t.values(col);
      for (double& v : s.y) v *= scale;
      s.dashed = w.dashed;
      c.series.push_back(std::move(s));
    }
    return c;
  };
  auto series_of = [](const plot::Chart& c, const char* name) -> const plot::Series* {
    for (const auto& s : c.series)
      if (s.name == name) return &s;
    return nullptr;
  };

  plot::Chart loss = chart("loss", "loss",
                           {{"train_loss", "train", true, false}, {"val_loss", "validation", false, true},
                            {"test_loss", "test", true, false}}, 1.0);
  {
    std::string sub;
    for (const char* n : {"train", "validation", "test"})
      if (const plot::Series* s = series_of(loss, n); s && last_finite(s->y) >= 0) {
        const int i = last_finite(s->y);
        sub += (sub.empty() ? "" : ", ") + std::string(n) + " " + fmt("%.4g", s->y[(size_t)i]) + " at epoch " +
               fmt("%.0f", s->x[(size_t)i]);
      }
    loss.subtitle = sub.empty() ? "" : "last: " + sub;
  }

  plot::Chart acc = chart("accuracy", "accuracy (%)",
                          {{"train_acc", "train", true, false}, {"val_top1", "validation top-1", false, true},
                           {"test_top1", "test top-1", true, false}, {"test_top5", "test top-5", true, false}}, 100.0);
  for (const char* n : {"validation top-1", "test top-1"})
    if (const plot::Series* s = series_of(acc, n); s && argmax_finite(s->y) >= 0) {
      const int i = argmax_finite(s->y);
      acc.subtitle += (acc.subtitle.empty() ? "best " : ", best ") + std::string(n) + " " +
                      fmt("%.2f%%", s->y[(size_t)i]) + " at epoch " + fmt("%.0f", s->x[(size_t)i]);
    }

  plot::Chart lr = chart("learning rate", "learning rate", {{"lr", "learning rate", true, false}}, 1.0);
  lr.legend = false;
  if (const plot::Series* s = series_of(lr, "learning rate"); s && argmax_finite(s->y) >= 0) {
    const int i = argmax_finite(s->y), j = last_finite(s->y);
    lr.subtitle = "peak " + fmt("%.3g", s->y[(size_t)i]) + " at epoch " + fmt("%.0f", s->x[(size_t)i]) + ", last " +
                  fmt("%.3g", s->y[(size_t)j]);
  }

  return write_charts(out_dir, {{kLossPlot, &loss}, {kAccuracyPlot, &acc}, {kLrPlot, &lr}});
}

std::vector<std::string> write_comparison_plots(const std::vector<PlotRun>& runs, const std::string& out_dir,
                                                int64_t from_epoch) {
  NALA_CHECK(!out_dir.empty(), "write_comparison_plots: no output folder given");
  NALA_CHECK(!runs.empty(), "write_comparison_plots: no runs to compare");
  NALA_CHECK(from_epoch >= 1, "write_comparison_plots: from_epoch must be at least 1, got ", from_epoch);
  struct Run {
    std::string label, name;
    CsvTable t;
    std::vector<double> epoch;
  };
  std::vector<Run> rs;
  for (const PlotRun& pr : runs) {
    Run r;
    r.name = run_name_of(pr.metrics_csv);
    if (r.name.empty()) r.name = pr.metrics_csv;
    r.label = pr.label.empty() ? r.name : pr.label;
    r.t = read_numeric_csv(pr.metrics_csv, "training metrics");
    const int ce = r.t.column("epoch");
    NALA_CHECK(ce >= 0, pr.metrics_csv, ": no 'epoch' column (not a nala metrics.csv?)");
    r.epoch = r.t.values(ce);
    rs.push_back(std::move(r));
  }
  // One colour per label, in order of first appearance.
  std::vector<std::string> labels;
  auto label_index = [&](const std::string& l) {
    for (size_t i = 0; i < labels.size(); i++)
      if (labels[i] == l) return i;
    labels.push_back(l);
    return labels.size() - 1;
  };
  std::vector<int> runs_of;  // per label: how many runs it names
  for (const Run& r : rs) {
    const size_t li = label_index(r.label);
    runs_of.resize(labels.size(), 0);
    runs_of[li]++;
  }

  // The chart of one column over every run; best_is_max: accuracy (the
  // largest value is the best), else loss (the smallest).
  auto chart = [&](const std::string& title, const std::string& ylabel, const char* column, double scale,
                   bool best_is_max, const char* unit) {
    plot::Chart c;
    c.title = title;
    c.subtitle = std::to_string(rs.size()) + (rs.size() == 1 ? " run" : " runs") +
                 (from_epoch > 1 ? ", from epoch " + std::to_string(from_epoch) : "");
    c.x.label = "epoch";
    c.y.label = ylabel;
    std::vector<bool> named(labels.size(), false);
    int missing = 0;
    for (const Run& r : rs) {
      const int col = r.t.column(column);
      if (col < 0) {
        missing++;
        continue;
      }
      const std::vector<double> v = r.t.values(col);
      const size_t li = label_index(r.label);
      // Each run by its label, and by its name too where a label names several.
      const std::string who = runs_of[li] > 1 && r.name != r.label ? r.label + " (" + r.name + ")" : r.label;
      plot::Series s;
      s.name = who;
      s.legend = r.label;
      s.in_legend = !named[li];  // one legend entry a label
      named[li] = true;
      s.color = plot::palette_color(li);
      int best = -1, last = -1;
      for (size_t i = 0; i < v.size(); i++) {
        if (!(r.epoch[i] >= (double)from_epoch)) continue;
        s.x.push_back(r.epoch[i]);
        s.y.push_back(v[i] * scale);
        if (!std::isfinite(v[i])) continue;
        last = (int)i;
        if (best < 0 || (best_is_max ? v[i] > v[(size_t)best] : v[i] < v[(size_t)best])) best = (int)i;
      }
      std::string note = who;
      if (best < 0) {
        note += ": no value";
      } else {
        note += ": best " + fmt(best_is_max ? "%.2f" : "%.4g", v[(size_t)best] * scale) + unit + " at epoch " +
                fmt("%.0f", r.epoch[(size_t)best]) + ", last " + fmt(best_is_max ? "%.2f" : "%.4g", v[(size_t)last] * scale) +
                unit + " at epoch " + fmt("%.0f", r.epoch[(size_t)last]);
      }
      c.notes.push_back(note);
      c.series.push_back(std::move(s));
    }
    if (missing) c.notes.push_back(std::to_string(missing) + (missing == 1 ? " run has" : " runs have") + " no '" +
                                   column + "' column");
    return c;
  };
  plot::Chart val = chart("validation top-1", "validation top-1 (%)", "val_top1", 100.0, true, "%");
  plot::Chart test = chart("test top-1", "test top-1 (%)", "test_top1", 100.0, true, "%");
  plot::Chart loss = chart("train loss", "train loss", "train_loss", 1.0, false, "");
  for (plot::Chart* c : {&val, &test, &loss}) {  // a line under the chart for every run
    c->max_notes = c->notes.size() + rs.size() + 1;
    c->height = 460 + 15.0 * (double)c->notes.size();
  }

  return write_charts(out_dir, {{kCompareValPlot, &val}, {kCompareTestPlot, &test}, {kCompareLossPlot, &loss}});
}

}  // namespace nala
