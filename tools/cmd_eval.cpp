// tools/cmd_eval.cpp - `nala eval` (accuracy, per class, confusion matrix)
// and `nala predict` (top-5 classes of image files): the images are read and
// prepared here, the figures computed by the library (models/train/
// evaluate.h), and printed here.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <sstream>

#include "autograd/ops.h"
#include "models/model_file.h"
#include "models/train/evaluate.h"
#include "models/train/graph_step.h"
#include "models/train/log.h"
#include "models/weights.h"
#include "nn/files.h"
#include "nn/safetensors.h"
#include "tools/common.h"
#include "tools/image.h"

namespace nala {

namespace {

std::string floats_str(const std::vector<float>& v) {
  std::string s = "(";
  char buf[32];
  for (size_t i = 0; i < v.size(); i++) {
    std::snprintf(buf, sizeof buf, "%s%.4g", i ? ", " : "", v[i]);
    s += buf;
  }
  return s + ")";
}

std::string quoted(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", '" : "'") + v[i] + "'";
  return s;
}

// The dataset's classes must be the model's, in the same order: a label is a
// position in the class list. Without recorded names, the counts must agree.
void check_classes(const ModelFile& mf, const Dataset& ds, const std::string& weights) {
  const int64_t K = mf.config.num_classes;
  if (mf.classes.empty()) {
    NALA_CHECK((int64_t)ds.classes.size() == K, weights, " has ", K, " classes, ", ds.name, " ", ds.classes.size());
    return;
  }
  std::vector<std::string> missing, extra, moved;
  for (const std::string& c : mf.classes)
    if (std::find(ds.classes.begin(), ds.classes.end(), c) == ds.classes.end()) missing.push_back(c);
  for (const std::string& c : ds.classes)
    if (std::find(mf.classes.begin(), mf.classes.end(), c) == mf.classes.end()) extra.push_back(c);
  if (missing.empty() && extra.empty())
    for (size_t i = 0; i < ds.classes.size(); i++)
      if (ds.classes[i] != mf.classes[i]) moved.push_back(ds.classes[i]);
  if (missing.empty() && extra.empty() && moved.empty()) return;
  std::string what;
  if (!extra.empty()) what += ds.name + " has class" + (extra.size() > 1 ? "es " : " ") + quoted(extra) +
                              " that the model was not trained on";
  if (!missing.empty()) what += (what.empty() ? "" : "; ") + ds.name + " lacks class" +
                                (missing.size() > 1 ? "es " : " ") + quoted(missing) + " of the model";
  if (!moved.empty()) what += ds.name + " orders its classes differently (" + quoted(moved) + " at other labels)";
  NALA_FAIL(weights, ": the model's classes (nala.classes) are not the dataset's: ", what,
            ". Evaluating would compare predictions against the wrong labels");
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  std::string model_name, weights;
  DataSpec data;
  int64_t batch = 256, threads = 0, limit = 0;
  std::string device = "cpu";
  ArgParser p("eval", "evaluate weights on a dataset's test split (--val: the held-out training images): top-1, "
              "top-5, per class, confusion matrix");
  p.add_choice("model", &model_name, "model config (default: the one the weights file records)",
               nalaformer_config_names());
  p.add_string("weights", &weights, "weights (.safetensors: best.safetensors, a checkpoint, or the release's)");
  AttnOptions attn;
  add_attn_options(p, attn, false, true);
  add_data_options(p, data);
  p.add_int("batch-size", &batch, "batch size", 1, 1 << 20);
  p.add_int("threads", &threads, "CPU threads (0 = all)", 0, 4096);
  p.add_int("limit", &limit, "evaluate the first N images only (0 = all)", 0, 1LL << 40);
  p.add_choice("device", &device, "where to run", {"cpu", "cuda"});
  bool no_graphs = false;
  p.add_flag("no-graphs", &no_graphs, "GPU: launch every kernel on its own instead of replaying each batch as a "
             "CUDA graph");
  TestTimeAug tta;
  p.add_flag("tta-flip", &tta.flip, "test-time augmentation: the mean of the logits of each image and its mirror");
  int64_t tta_shift = 0;
  p.add_int("tta-shift", &tta_shift, "test-time augmentation: also each image moved N pixels up, down, left and "
            "right (with --tta-flip, their mirrors too; 0 = off)", 0, 64);
  int64_t val = 0;
  p.add_int("val", &val, "evaluate on the N training images that `nala train --val N` held out (its validation "
            "split), not on the test split (0 = the test split)", 0, 1LL << 40);
  int64_t subset = 0;
  p.add_int("subset", &subset, "with --val: the run trained on the first N training images (nala train --subset N) "
            "and held its N out of those", 0, 1LL << 40);
  std::string precision = "fp32";
  add_precision_option(p, &precision);
  p.parse(argc, argv);
  apply_precision(precision, device);
  if (weights.empty()) throw UsageError("--weights is required");
  if (subset > 0 && val == 0) throw UsageError("--subset chooses the training images --val N holds out: give --val");
  set_threads(threads);
  LoadedModel lm = load_model_file(weights, model_name, attn.attn);
  const ModelFile& mf = lm.file;
  const NalaConfig& cfg = mf.config;
  // The images are prepared as the model was trained on them: channels, size
  // and normalisation come from its file, not from the command line.
  data_as_trained(data, mf, weights);
  tta.shift = (int)tta_shift;
  Dataset test;
  if (val > 0) {  // the images `nala train --val N` held out, chosen as it chose them
    Dataset train = load_dataset(data, true, subset);
    test = split_validation(train, val);
  } else {
    test = load_dataset(data, false);
  }
  NALA_CHECK(test.c == cfg.in_chans, test.name, " holds ", test.c, "-channel images; ", weights, " takes ",
             cfg.in_chans);
  std::string input;
  if (mf.has_input()) {
    NALA_CHECK(test.h == mf.height && test.w == mf.width, weights, " was trained on ", mf.height, "x", mf.width,
               " images; ", test.name, " holds ", test.h, "x", test.w);
    test.mean = mf.mean, test.std = mf.std;
    input = "normalisation from the weights file: mean " + floats_str(mf.mean) + ", std " + floats_str(mf.std);
  } else {
    input = "normalisation: the dataset's, mean " + floats_str(test.mean) + ", std " + floats_str(test.std) +
            " (the weights file records none: no nala.input.* metadata)";
  }
  check_image_size(cfg, test.h, test.w);
  check_classes(mf, test, weights);
  NalaFormer& model = *lm.model;
  model.to(parse_device(device));
  std::unique_ptr<GraphEval> graphs;
  if (parse_device(device) != Device::CPU && !no_graphs) graphs = std::make_unique<GraphEval>(model);
  double t0 = now_seconds();
  EvalResult r = evaluate(model, test, batch, limit, nullptr, graphs.get(), tta);
  if (graphs && !graphs->off_reason.empty())
    std::fprintf(stderr, "nala: warning: CUDA graphs off: %s\n", graphs->off_reason.c_str());
  double secs = now_seconds() - t0;
  const size_t K = test.classes.size();
  std::printf("%s (%s) on %s (%lld %s images %lldx%lldx%lld, %s, %.0f img/s)\n%s\n", weights.c_str(),
              cfg.name.c_str(), test.name.c_str(), (long long)r.n, val > 0 ? "held-out training" : "test",
              (long long)test.h, (long long)test.w, (long long)test.c, format_duration(secs).c_str(), r.n / secs,
              input.c_str());
  if (tta.any()) std::printf("test-time augmentation: %s\n", tta.describe().c_str());
  std::printf("loss %.4f  top-1 %.2f%%  top-5 %.2f%%\n\nper class:\n", r.loss, 100 * r.top1, 100 * r.top5);
  for (size_t k = 0; k < K; k++) std::printf("  %2zu %-20s %6.2f%%\n", k, test.classes[k].c_str(), 100 * r.per_class[k]);
  std::printf("\nconfusion matrix (rows: true class, columns: predicted):\n     ");
  for (size_t k = 0; k < K; k++) std::printf("%6zu", k);
  std::printf("\n");
  for (size_t i = 0; i < K; i++) {
    std::printf("  %2zu ", i);
    for (size_t j = 0; j < K; j++) std::printf("%6lld", (long long)r.confusion[i][j]);
    std::printf("\n");
  }
  return 0;
}

int cmd_predict(int argc, char** argv) {
  std::string model_name, weights, norm_name;
  int64_t img_size = 0, threads = 0;
  std::string device = "cpu";
  std::vector<std::string> files;
  ArgParser p("predict", "the top-5 classes with probabilities for each image file");
  p.add_choice("model", &model_name, "model config (default: the one the weights file records)",
               nalaformer_config_names());
  p.add_string("weights", &weights, "weights (.safetensors)");
  AttnOptions attn;
  add_attn_options(p, attn, false, true);
  p.add_int("img-size", &img_size,
            "for weights without nala.input metadata: resize images to this (default: 28 for 1 channel, 224 for 3)",
            0, 4096);
  p.add_choice("norm", &norm_name,
               "for weights without nala.input metadata: the normalisation (default: fashion-mnist for 1 channel, "
               "imagenet for 3)",
               {"fashion-mnist", "cifar10", "imagenet"});
  p.add_int("threads", &threads, "CPU threads (0 = all)", 0, 4096);
  p.add_choice("device", &device, "where to run", {"cpu", "cuda"});
  p.add_positional(&files, "IMAGE", 1);
  p.parse(argc, argv);
  if (weights.empty()) throw UsageError("--weights is required");
  set_threads(threads);
  LoadedModel lm = load_model_file(weights, model_name, attn.attn);
  const ModelFile& mf = lm.file;
  const NalaConfig& cfg = mf.config;
  const int64_t C = cfg.in_chans;
  NALA_CHECK(C == 1 || C == 3, weights, ": the model takes ", C, "-channel images; predict reads grey (1) or RGB (3)");
  int64_t size;
  std::vector<float> mean, std;
  std::string from;
  if (mf.has_input()) {
    if (p.given("img-size") && img_size != mf.height)
      throw UsageError("--img-size " + std::to_string(img_size) + ": " + weights + " was trained on " +
                       std::to_string(mf.height) + "x" + std::to_string(mf.width) +
                       " images (nala.input.height/width); leave --img-size out");
    if (p.given("norm"))
      throw UsageError("--norm: " + weights + " records its normalisation (nala.input.mean/std); leave --norm out");
    NALA_CHECK(mf.height == mf.width, weights, ": trained on ", mf.height, "x", mf.width,
               " images; predict resizes to squares");
    size = mf.height, mean = mf.mean, std = mf.std;
    from = "from the weights file";
  } else {
    size = img_size ? img_size : C == 1 ? 28 : 224;
    std::string name = !norm_name.empty() ? norm_name : C == 1 ? "fashion-mnist" : "imagenet";
    Normalisation n = normalisation_named(name, (int)C);
    mean = n.mean, std = n.std;
    from = std::string("(") + (p.given("norm") ? "--norm " : "default: ") + name + " statistics, " +
           (p.given("img-size") ? "--img-size" : "default size") +
           "; the weights file records no nala.input.* metadata)";
  }
  check_image_size(cfg, size, size);
  std::printf("%s: %s, %lld classes; input %lldx%lldx%lld, mean %s, std %s %s\n", weights.c_str(), cfg.name.c_str(),
              (long long)cfg.num_classes, (long long)size, (long long)size, (long long)C, floats_str(mean).c_str(),
              floats_str(std).c_str(), from.c_str());
  NalaFormer& model = *lm.model;
  model.to(parse_device(device));
  for (const std::string& f : files) {
    const Prediction top = predict(model, load_image(f, (int)size, (int)C, mean, std), 5)[0];
    std::printf("%s\n", f.c_str());
    for (size_t i = 0; i < top.classes.size(); i++) {
      const int64_t k = top.classes[i];
      std::string name = k < (int64_t)mf.classes.size() ? mf.classes[k] : "class " + std::to_string(k);
      std::printf("  %6.2f%%  %s\n", 100 * top.probs[i], name.c_str());
    }
  }
  return 0;
}

int cmd_sample(int argc, char** argv) {
  DataSpec data;
  int64_t count = 5, first = 0;
  std::string out;
  ArgParser p("sample", "write test-split images as PNG files named <index>_<class>.png");
  add_data_options(p, data);
  p.add_int("count", &count, "how many images", 1, 1 << 20);
  p.add_int("first", &first, "index of the first image", 0, 1LL << 40);
  p.add_string("out", &out, "output directory");
  p.parse(argc, argv);
  if (out.empty()) throw UsageError("--out is required");
  // The folder is created (without a shell: any name is taken literally) and
  // proved writable before the dataset is read.
  check_output_dir(out, "sample output");
  Dataset ds = load_dataset(data, false);
  NALA_CHECK(first + count <= ds.n, "sample: images ", first, "..", first + count - 1, " requested, ", ds.name,
             " has ", ds.n);
  for (int64_t i = first; i < first + count; i++) {
    Image img;
    img.h = (int)ds.h, img.w = (int)ds.w, img.c = (int)ds.c;
    img.pixels.assign(ds.image(i), ds.image(i) + ds.image_size());
    std::string cls = ds.classes[ds.labels[i]];
    for (char& ch : cls)
      if (!isalnum((unsigned char)ch)) ch = '-';
    std::string path = out + "/" + std::to_string(i) + "_" + cls + ".png";
    write_png(path, img);
    std::printf("%s\n", path.c_str());
  }
  return 0;
}

}  // namespace nala
