// tools/cmd_eval.cpp - `nala eval` (accuracy, per class, confusion matrix)
// and `nala predict` (top-5 classes of image files).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <sstream>

#include "autograd/ops.h"
#include "models/weights.h"
#include "nn/files.h"
#include "nn/safetensors.h"
#include "tools/common.h"
#include "tools/image.h"

namespace nala {

int cmd_eval(int argc, char** argv) {
  std::string model_name = "pico", weights;
  DataSpec data;
  int64_t batch = 256, threads = 0, limit = 0;
  std::string device = "cpu";
  ArgParser p("eval", "evaluate weights on a dataset's test split: top-1, top-5, per class, confusion matrix");
  p.add_choice("model", &model_name, "model config", nalaformer_config_names());
  p.add_string("weights", &weights, "weights (.safetensors: best.safetensors, a checkpoint, or the release's)");
  add_data_options(p, data);
  p.add_int("batch-size", &batch, "batch size", 1, 1 << 20);
  p.add_int("threads", &threads, "CPU threads (0 = all)", 0, 4096);
  p.add_int("limit", &limit, "evaluate the first N images only (0 = all)", 0, 1LL << 40);
  p.add_choice("device", &device, "where to run", {"cpu", "cuda"});
  p.parse(argc, argv);
  if (weights.empty()) throw UsageError("--weights is required");
  set_threads(threads);
  Dataset test = load_dataset(data, false);
  NalaConfig cfg = model_config_for(model_name, test.c, (int64_t)test.classes.size());
  check_image_size(cfg, test.h, test.w);
  NalaFormer model(cfg);
  load_weights(model, weights);
  model.to(parse_device(device));
  double t0 = now_seconds();
  EvalResult r = evaluate(model, test, batch, limit);
  double secs = now_seconds() - t0;
  const size_t K = test.classes.size();
  std::printf("%s on %s (%lld test images, %s, %.0f img/s)\n", weights.c_str(), test.name.c_str(), (long long)r.n,
              format_duration(secs).c_str(), r.n / secs);
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
  std::string model_name = "pico", weights;
  int64_t in_chans = 0, classes = 0, img_size = 0, threads = 0;
  std::string device = "cpu";
  std::vector<std::string> files;
  ArgParser p("predict", "the top-5 classes with probabilities for each image file");
  p.add_choice("model", &model_name, "model config", nalaformer_config_names());
  p.add_string("weights", &weights, "weights (.safetensors)");
  p.add_int("in-chans", &in_chans, "input channels (default: the weights')", 0, 3);
  p.add_int("classes", &classes, "classes (default: the weights')", 0, 1 << 20);
  p.add_int("img-size", &img_size, "resize images to this (default: 28 for 1 channel, 32 for 3)", 0, 4096);
  p.add_int("threads", &threads, "CPU threads (0 = all)", 0, 4096);
  p.add_choice("device", &device, "where to run", {"cpu", "cuda"});
  p.add_positional(&files, "IMAGE", 1);
  p.parse(argc, argv);
  if (weights.empty()) throw UsageError("--weights is required");
  set_threads(threads);
  // Channels, classes and class names come from the weights when not given.
  SafeTensors st = load_safetensors(weights);
  std::vector<std::string> names;
  if (st.metadata.count("nala.classes")) {
    std::stringstream ss(st.metadata["nala.classes"]);
    for (std::string n; std::getline(ss, n, '\n');) names.push_back(n);
  }
  auto find = [&](const std::string& k) -> Tensor {
    for (const char* pre : {"", "model."})
      if (st.tensors.count(pre + k)) return st.tensors.at(pre + k);
    return Tensor();
  };
  Tensor w0 = find("patch_embed.proj.0.weight"), hw = find("head.weight");
  NALA_CHECK(w0.defined() && hw.defined(), weights, ": not NaLaFormer weights (no patch_embed.proj.0.weight / head.weight)");
  if (!in_chans) in_chans = w0.size(1);
  if (!classes) classes = hw.size(0);
  if (!img_size) img_size = in_chans == 1 ? 28 : 32;
  NalaConfig cfg = model_config_for(model_name, in_chans, classes);
  check_image_size(cfg, img_size, img_size);
  NalaFormer model(cfg);
  load_weights(model, weights);
  const Device dev = parse_device(device);
  model.to(dev);
  model.eval();
  NoGradGuard ng;
  std::vector<float> mean, std;
  if (in_chans == 1) mean = {0.2860f}, std = {0.3530f};  // Fashion-MNIST statistics
  else mean = {0.4914f, 0.4822f, 0.4465f}, std = {0.2470f, 0.2435f, 0.2616f};  // CIFAR-10
  for (const std::string& f : files) {
    Tensor x = load_image(f, (int)img_size, (int)in_chans, mean, std).to(dev);
    Tensor prob = softmax(model.forward(x), -1);
    std::vector<float> pr = prob.to_vector();
    std::vector<int64_t> idx(pr.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return pr[a] > pr[b]; });
    std::printf("%s\n", f.c_str());
    for (size_t i = 0; i < std::min<size_t>(5, idx.size()); i++) {
      int64_t k = idx[i];
      std::string name = k < (int64_t)names.size() ? names[k] : "class " + std::to_string(k);
      std::printf("  %5.1f%%  %s\n", 100 * pr[k], name.c_str());
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
