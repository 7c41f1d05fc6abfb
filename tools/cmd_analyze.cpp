// tools/cmd_analyze.cpp - `nala analyze`: the query norm against the entropy
// of the query's attention, for every attention layer and head of trained
// weights (the measurement is models/analyze.h; this file reads the inputs,
// writes the files and prints the table).
//
// Output folder: --out DIR (made when missing) or a new
// runs/analyze-<model>-<data>-<date>-<time>. A folder that already holds an
// analysis (any file this command writes) is refused and left as it was:
// an earlier run is never replaced.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "models/analyze.h"
#include "models/attention_kind.h"
#include "models/model_file.h"
#include "models/plot.h"
#include "models/train/log.h"
#include "models/train/run_folder.h"
#include "nn/files.h"
#include "tools/common.h"

namespace nala {

namespace {

constexpr const char* kNormEntropyCsv = "entropy_norm.csv";
constexpr const char* kSummaryCsv = "summary.csv";
constexpr const char* kSummaryMd = "summary.md";
constexpr const char* kPanelsSvg = "entropy_norm.svg";

bool exists(const std::string& path) {
  struct stat sb;
  return lstat(path.c_str(), &sb) == 0;
}

// The files an analysis of `layers` layers writes into dir.
std::vector<std::string> output_files(const std::string& dir, size_t layers) {
  std::vector<std::string> f = {dir + "/" + kNormEntropyCsv, dir + "/" + kSummaryCsv, dir + "/" + kSummaryMd,
                                dir + "/" + kPanelsSvg};
  for (size_t i = 0; i < layers; i++) f.push_back(dir + "/layer_" + std::to_string(i) + ".svg");
  return f;
}

// Refuses a folder that holds any file of an earlier analysis.
void refuse_earlier_analysis(const std::string& dir, size_t layers) {
  for (const std::string& f : output_files(dir, layers))
    NALA_CHECK(!exists(f), "analyze: ", dir, " already holds an analysis (", f,
               "); nala never replaces an earlier run: give a new --out, or leave --out out for a new folder");
}

}  // namespace

int cmd_analyze(int argc, char** argv) {
  std::string model_name, weights, out, attn, device = "cpu";
  DataSpec data;
  AnalyzeOptions opt;
  int64_t threads = 0, seed = 0;
  ArgParser p("analyze", "query norm against attention entropy for every attention layer and head (the paper's "
              "Fig. 1): entropy_norm.csv, a scatter plot per layer, Pearson and Spearman per layer");
  p.add_choice("model", &model_name, "model config (default: the one the weights file records)",
               nalaformer_config_names());
  p.add_string("weights", &weights, "weights (.safetensors)");
  add_data_options(p, data);
  p.add_choice("attn", &attn, "attention kind of the weights (default: the one the file records; for files that "
               "record none, nala); a kind other than the file's is an error", analyze_kinds());
  p.add_int("images", &opt.images, "the first N test images", 1, 1 << 20);
  p.add_int("queries", &opt.queries, "queries sampled per image, layer and head (all when a layer has fewer)", 1,
            1 << 20);
  p.add_int("seed", &seed, "which queries are sampled", 0, (int64_t)1 << 62);
  p.add_int("batch-size", &opt.batch_size, "images per forward pass", 1, 1 << 16);
  p.add_int("threads", &threads, "CPU threads (0 = all)", 0, 4096);
  p.add_choice("device", &device, "where the forward passes run", {"cpu", "cuda"});
  p.add_string("out", &out, "output folder (default: a new runs/analyze-<model>-<data>-<date>-<time>); one that "
               "holds an analysis is refused");
  p.parse(argc, argv);
  if (weights.empty()) throw UsageError("--weights is required");
  opt.seed = (uint64_t)seed;
  set_threads(threads);

  LoadedModel lm = load_model_file(weights, model_name, attn);
  const ModelFile& mf = lm.file;
  const NalaConfig& cfg = mf.config;
  NalaFormer& model = *lm.model;
  size_t layers = 0;
  for (int64_t s = 0; s < cfg.num_stages(); s++) layers += model.blocks[s]->size();
  attn = attn_kind_name(cfg.attn);
  data_as_trained(data, mf, weights);  // the images as the model was trained on them (size, channels)
  // The output folder before the data is read: a refusal costs nothing.
  std::vector<std::string> made;
  struct RemoveIfEmpty {  // a run that fails leaves no empty folder of its own behind
    std::vector<std::string>& dirs;
    bool keep = false;
    ~RemoveIfEmpty() {
      if (!keep)
        for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) rmdir(it->c_str());
    }
  } cleanup{made};
  if (out.empty()) out = make_new_run_folder("runs", "analyze-" + cfg.name + "-" + data.name, &made);
  refuse_earlier_analysis(out, layers);
  check_output_dir(out, "analysis output");

  Dataset ds = load_dataset(data, false);
  NALA_CHECK(ds.c == cfg.in_chans, ds.name, " holds ", ds.c, "-channel images; ", weights, " takes ", cfg.in_chans);
  if (mf.has_input()) {
    NALA_CHECK(ds.h == mf.height && ds.w == mf.width, weights, " was trained on ", mf.height, "x", mf.width,
               " images; ", ds.name, " holds ", ds.h, "x", ds.w);
    ds.mean = mf.mean, ds.std = mf.std;
  }
  check_image_size(cfg, ds.h, ds.w);
  model.to(parse_device(device));

  const double t0 = now_seconds();
  const AnalyzeResult r = analyze_attention(model, ds, opt);
  const double secs = now_seconds() - t0;

  refuse_earlier_analysis(out, layers);  // again: another process may have written meanwhile
  const std::string title = "# nala analyze: " + weights + " (" + cfg.name + ", --attn " + attn + ") on " + ds.name +
                            ", " + std::to_string(std::min(opt.images, ds.n)) + " test images, " +
                            std::to_string(opt.queries) + " queries per image, layer and head";
  cleanup.keep = true;
  write_file_atomic(out + "/" + kNormEntropyCsv, norm_entropy_csv(r), "analysis table");
  write_file_atomic(out + "/" + kSummaryCsv, summary_csv(r), "analysis summary");
  plot::Panels panels;
  panels.title = "query norm against attention entropy: " + cfg.name + " (" + attn + ")";
  panels.columns = 2;
  panels.shared_x = false;
  for (size_t i = 0; i < r.layers.size(); i++) {
    plot::Chart c = layer_chart(r, i);
    plot::write_svg(out + "/layer_" + std::to_string(i) + ".svg", plot::chart_svg(c));
    panels.charts.push_back(std::move(c));
  }
  plot::write_svg(out + "/" + kPanelsSvg, plot::panels_svg(panels));
  write_file_atomic(out + "/" + kSummaryMd, summary_markdown(r, title), "analysis summary");

  std::printf("nala analyze: %s (%s, --attn %s) on %s: %zu samples in %s\n", weights.c_str(), cfg.name.c_str(),
              attn.c_str(), ds.name.c_str(), r.rows.size(), format_duration(secs).c_str());
  std::printf("%-6s %-8s %-8s %-13s %8s %9s %9s %13s\n", "layer", "stage.b", "kind", "heads x N", "samples", "Pearson",
              "Spearman", "mean entropy");
  for (const LayerSummary& s : r.layers) {
    char hn[32], sb[16];
    std::snprintf(hn, sizeof hn, "%lld x %lld", (long long)s.heads, (long long)s.tokens);
    std::snprintf(sb, sizeof sb, "%lld.%lld", (long long)s.stage, (long long)s.block);
    std::printf("%-6lld %-8s %-8s %-13s %8lld %9.3f %9.3f %13.3f\n", (long long)s.layer, sb, s.kind.c_str(), hn,
                (long long)s.samples, s.pearson, s.spearman, s.mean_entropy);
  }
  std::printf("files: %s/{%s, %s, %s, %s, layer_*.svg}\n", out.c_str(), kNormEntropyCsv, kSummaryCsv, kSummaryMd,
              kPanelsSvg);
  return 0;
}

}  // namespace nala
