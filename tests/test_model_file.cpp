// tests/test_model_file.cpp - self-describing model files (config, class
// names, input normalisation in the safetensors metadata), load_model with and
// without that metadata, non-finite weights refused on load, and what eval
// and predict do with it: the same images give the same predictions, classes
// that are not the model's are refused. Also the folder-dataset rules (a
// val/ that is not train/'s classes, folders without val/).
//
// The commands run in-process with stdout and stderr captured (exit codes as
// tools/main.cpp: UsageError 2, any other error 1). Images are a few pixels,
// so each test takes seconds.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "autograd/ops.h"
#include "models/model_file.h"
#include "models/train/evaluate.h"
#include "models/weights.h"
#include "nn/safetensors.h"
#include "stb/stb_image_write.h"
#include "tests/helpers.h"
#include "tests/process.h"
#include "tests/run_command.h"
#include "tools/common.h"
#include "tools/image.h"

using namespace nala;
using namespace nala::test;
namespace fs = std::filesystem;

namespace {

using Result = CmdResult;

// A w x h RGB PNG of pseudo-random pixels (a different picture per seed).
void noise_png(const std::string& path, int w, int h, uint32_t seed) {
  fs::create_directories(fs::path(path).parent_path());
  std::vector<uint8_t> px(w * h * 3);
  uint32_t s = seed * 2654435761u + 12345;
  for (auto& p : px) {
    s = s * 1664525u + 1013904223u;
    p = (uint8_t)(s >> 24);
  }
  REQUIRE(stbi_write_png(path.c_str(), w, h, 3, px.data(), w * 3));
}

// A w x h grey PNG of one value (to tell images apart after loading).
void solid_png(const std::string& path, int w, int h, uint8_t v) {
  fs::create_directories(fs::path(path).parent_path());
  std::vector<uint8_t> px(w * h, v);
  REQUIRE(stbi_write_png(path.c_str(), w, h, 1, px.data(), w));
}

// root/<split>/<class>/<i>.png for every class, `per` images each of 20x14 noise.
void make_split(const std::string& root, const std::string& split, const std::vector<std::string>& classes, int per,
                uint32_t seed) {
  for (size_t k = 0; k < classes.size(); k++)
    for (int i = 0; i < per; i++)
      noise_png(root + "/" + split + "/" + classes[k] + "/" + std::to_string(i) + ".png", 20, 14,
                seed + 100 * (uint32_t)k + (uint32_t)i);
}

// pico for 3-channel images and `classes` outputs, with a head scaled up so
// that the predictions depend visibly on the input.
std::unique_ptr<NalaFormer> sharp_pico(int64_t classes, uint64_t seed) {
  auto m = std::make_unique<NalaFormer>(nalaformer_config("pico", 3, classes));
  Rng rng(seed);
  m->init_weights(rng);
  float* w = m->head->weight.f32();
  for (int64_t i = 0; i < m->head->weight.numel(); i++) w[i] *= 6;
  m->eval();
  return m;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string l; std::getline(ss, l);) v.push_back(l);
  return v;
}

// eval's loss and confusion matrix, read back from its output.
struct EvalOut {
  double loss = -1;
  std::vector<std::vector<int64_t>> confusion;
};
EvalOut parse_eval(const std::string& out, size_t K) {
  EvalOut e;
  auto v = lines(out);
  for (size_t i = 0; i < v.size(); i++) {
    if (v[i].rfind("loss ", 0) == 0) e.loss = std::stod(v[i].substr(5));
    if (v[i].rfind("confusion matrix", 0) == 0) {
      for (size_t r = 0; r < K; r++) {
        std::stringstream ss(v.at(i + 2 + r));
        int64_t row, x;
        ss >> row;
        std::vector<int64_t> counts;
        while (ss >> x) counts.push_back(x);
        e.confusion.push_back(counts);
      }
    }
  }
  return e;
}

// predict's probabilities (in %) per image, by class name.
std::map<std::string, std::map<std::string, double>> parse_predict(const std::string& out,
                                                                  const std::vector<std::string>& files) {
  std::map<std::string, std::map<std::string, double>> p;
  std::string cur;
  for (auto& l : lines(out)) {
    if (std::find(files.begin(), files.end(), l) != files.end()) {
      cur = l;
      continue;
    }
    if (cur.empty() || l.size() < 3 || l[0] != ' ') continue;
    std::stringstream ss(l);
    double pct;
    std::string pc, name;
    ss >> pct >> pc;
    std::getline(ss >> std::ws, name);
    p[cur][name] = pct;
  }
  return p;
}

std::string top1(const std::map<std::string, double>& probs) {
  std::string best;
  double b = -1;
  for (auto& [n, v] : probs)
    if (v > b) b = v, best = n;
  return best;
}

// What predict should print for one image: softmax of the model on it,
// prepared with the given size and normalisation.
std::vector<float> reference_probs(NalaFormer& m, const std::string& file, int size, const std::vector<float>& mean,
                                   const std::vector<float>& std) {
  NoGradGuard ng;
  return softmax(m.forward(load_image(file, size, 3, mean, std)), -1).to_vector();
}

}  // namespace

// ---------------------------------------------------------------- metadata

TEST_CASE("model file: the metadata round trip holds every field, for every config", "[modelfile]") {
  int cases = 0;
  for (const std::string& name : nalaformer_config_names())
    for (auto [ch, k] : {std::pair<int64_t, int64_t>{1, 10}, {3, 1000}, {3, 2}}) {
      ModelFile mf;
      mf.config = nalaformer_config(name, ch, k);
      if (k <= 10)
        for (int64_t i = 0; i < k; i++) mf.classes.push_back("class/" + std::to_string(i) + " x");
      if (ch == 3) {
        mf.mean = {0.1f / 3, 0.5f, 1.0f / 7}, mf.std = {0.2291f, 1e-3f, 3.3f};
        mf.height = mf.width = 224;
      }
      Metadata m = model_file_metadata(mf, {{"nala.epoch", "3"}});
      REQUIRE(m.at("nala.epoch") == "3");
      REQUIRE(m.at("nala.config") == mf.config.describe());
      ModelFile back = read_model_metadata(m, "w.safetensors");
      INFO(name << " " << ch << " " << k);
      REQUIRE(back.described);
      REQUIRE(back.config.describe() == mf.config.describe());
      REQUIRE(back.config.dims == mf.config.dims);
      REQUIRE(back.config.depths == mf.config.depths);
      REQUIRE(back.config.heads == mf.config.heads);
      REQUIRE(back.config.mlp_ratio == mf.config.mlp_ratio);
      REQUIRE(back.config.layer_init == mf.config.layer_init);
      REQUIRE(back.config.drop_path_rate == mf.config.drop_path_rate);
      REQUIRE(back.config.nala_stage == mf.config.nala_stage);
      REQUIRE(back.config.stem_stride_last == mf.config.stem_stride_last);
      REQUIRE(back.config.head_width == mf.config.head_width);
      REQUIRE(back.config.in_chans == ch);
      REQUIRE(back.config.num_classes == k);
      REQUIRE(back.classes == mf.classes);
      REQUIRE(back.mean == mf.mean);  // bit for bit: the shortest text that reads back the same float
      REQUIRE(back.std == mf.std);
      REQUIRE(back.height == mf.height);
      REQUIRE(back.width == mf.width);
      cases++;
    }
  REQUIRE(cases == 18);
  // The keys as a reader of the file sees them.
  ModelFile p;
  p.config = nalaformer_config("pico");
  p.mean = {0.2860f}, p.std = {0.3530f}, p.height = p.width = 28;
  Metadata m = model_file_metadata(p);
  CHECK(m.at("nala.model_file") == "1");
  CHECK(m.at("nala.config.name") == "pico");
  CHECK(m.at("nala.config.dims") == "32,64,128");
  CHECK(m.at("nala.config.depths") == "2,2,2");
  CHECK(m.at("nala.config.heads") == "1,2,4");
  CHECK(m.at("nala.config.mlp_ratio") == "3");
  CHECK(m.at("nala.config.nala_stages") == "1,1,0");
  CHECK(m.at("nala.config.stem_strides") == "2,1");
  CHECK(m.at("nala.config.head_width") == "256");
  CHECK(m.at("nala.config.in_chans") == "1");
  CHECK(m.at("nala.config.classes") == "10");
  CHECK(m.at("nala.input.mean") == "0.286");
  CHECK(m.at("nala.input.std") == "0.353");
  CHECK(m.at("nala.input.height") == "28");
  CHECK(m.at("nala.input.channels") == "1");
  CHECK(m.count("nala.classes") == 0);  // not recorded: no key
  // An extra key may not replace one of the model's.
  REQUIRE_THROWS_WITH(model_file_metadata(p, {{"nala.config.dims", "1"}}), Catch::Contains("nala.config.dims"));

  // A config no name describes rebuilds from the file alone, to the same outputs.
  TempDir t;
  NalaConfig c = nalaformer_config("pico", 3, 4);
  c.name = "mine";
  c.dims = {16, 32}, c.depths = {1, 2}, c.heads = {2, 4}, c.layer_init = {0.5f, 1e-6f};
  c.nala_stage = {false, true}, c.stem_stride_last = 2, c.head_width = 48, c.mlp_ratio = 2.5f;
  NalaFormer a(c);
  Rng rng(11);
  a.init_weights(rng);
  ModelFile mf;
  mf.config = c;
  mf.classes = {"w", "x", "y", "z"};
  mf.mean = {0.1f, 0.2f, 0.3f}, mf.std = {0.4f, 0.5f, 0.6f}, mf.height = mf.width = 16;
  save_model(a, mf, t.path + "/mine.safetensors");
  LoadedModel lm = load_model_file(t.path + "/mine.safetensors");
  REQUIRE(lm.model->cfg.describe() == c.describe());
  REQUIRE(lm.file.classes == mf.classes);
  REQUIRE(lm.file.mean == mf.mean);
  Tensor x = randn({2, 16, 16, 3}, rng);
  a.eval();
  NoGradGuard ng;
  REQUIRE(lm.model->forward(x).to_vector() == a.forward(x).to_vector());
  // save_weights records the config (no classes or normalisation): loadable without a name.
  save_weights(a, t.path + "/plain.safetensors");
  LoadedModel lp = load_model_file(t.path + "/plain.safetensors");
  REQUIRE(lp.model->cfg.describe() == c.describe());
  REQUIRE(!lp.file.has_input());
  REQUIRE(lp.file.classes.empty());
}

TEST_CASE("model file: every field is validated, and errors name the file and the key", "[modelfile]") {
  ModelFile mf;
  mf.config = nalaformer_config("pico", 3, 3);
  mf.classes = {"a", "b", "c"};
  mf.mean = {0.5f, 0.5f, 0.5f}, mf.std = {0.2f, 0.2f, 0.2f}, mf.height = mf.width = 32;
  const Metadata good = model_file_metadata(mf);
  REQUIRE(read_model_metadata(good, "/d/w.safetensors").config.describe() == mf.config.describe());
  struct Case {
    std::string key, value, says, named = "";  // named: the key the error names, when not `key`
  } cases[] = {
      {"nala.model_file", "2", "version 1"},
      {"nala.config.name", "", "not a config name"},
      {"nala.config.dims", "32,x,128", "not an integer"},
      {"nala.config.dims", "32,64,", "not an integer"},
      {"nala.config.dims", "0,64,128", "out of range"},
      {"nala.config.dims", "33,64,128", "head width"},  // 33 / 1 head is not a multiple of 4
      {"nala.config.depths", "2,2", "2 values, expected 3"},
      {"nala.config.depths", "2,2,-1", "out of range"},
      {"nala.config.heads", "1,2,5", "head width must be a multiple of 4"},
      {"nala.config.mlp_ratio", "abc", "not a number"},
      {"nala.config.mlp_ratio", "nan", "not a finite number"},
      {"nala.config.mlp_ratio", "-1", "FFN width"},
      {"nala.config.mlp_ratio", "3 ", "not a number"},
      {"nala.config.layer_init", "1,1,inf", "not a finite number"},
      {"nala.config.drop_path", "1.5", "outside [0, 1)"},
      {"nala.config.nala_stages", "1,2,0", "out of range"},
      {"nala.config.stem_strides", "1,1", "first stem stride must be 2"},
      {"nala.config.stem_strides", "2,3", "out of range"},
      {"nala.config.stem_strides", "2", "1 values, expected 2"},
      {"nala.config.head_width", "0", "out of range"},
      {"nala.config.in_chans", "three", "not an integer"},
      {"nala.config.classes", "99999999999999999999", "not an integer"},
      {"nala.config.classes", "4", "nala.classes names 3 classes", "nala.config.classes says 4"},
      {"nala.classes", "a\nb\na", "class \"a\" named twice"},
      {"nala.classes", "a\n\nc", "empty class name"},
      {"nala.input.mean", "0.5", "1 values, expected 3"},
      {"nala.input.std", "0.2,0,0.2", "every std must be positive"},
      {"nala.input.height", "2", "cannot take"},
      {"nala.input.width", "-8", "out of range"},
      {"nala.input.channels", "1", "nala.config.in_chans is 3"},
  };
  for (auto& c : cases) {
    Metadata m = good;
    m[c.key] = c.value;
    INFO(c.key << " = " << c.value);
    REQUIRE_THROWS_WITH(read_model_metadata(m, "/d/w.safetensors"),
                        Catch::Contains("/d/w.safetensors") &&
                            Catch::Contains(c.named.empty() ? c.key : c.named) &&
                            Catch::Contains(c.says));
  }
  for (const char* key : {"nala.config.heads", "nala.config.head_width", "nala.model_file"}) {
    Metadata m = good;
    m.erase(key);
    INFO(key);
    REQUIRE_THROWS_WITH(read_model_metadata(m, "/d/w.safetensors"),
                        Catch::Contains("/d/w.safetensors") && Catch::Contains(std::string("without ") + key));
  }
  Metadata half = good;
  half.erase("nala.input.std");
  REQUIRE_THROWS_WITH(read_model_metadata(half, "/d/w.safetensors"),
                      Catch::Contains("nala.input.std") && Catch::Contains("all five or none"));
  // Writing refuses what could not be read back.
  ModelFile bad = mf;
  bad.std = {0.2f, 0.0f, 0.2f};
  REQUIRE_THROWS_WITH(model_file_metadata(bad), Catch::Contains("std"));
  bad = mf;
  bad.classes = {"a", "b\nc", "d"};
  REQUIRE_THROWS_WITH(model_file_metadata(bad), Catch::Contains("line break"));
  // Through a file: load_model names the file and the key.
  TempDir t;
  NalaFormer net(mf.config);
  Metadata m = good;
  m["nala.config.heads"] = "1,2";
  save_safetensors(t.path + "/w.safetensors", net.state_dict(), m);
  REQUIRE_THROWS_WITH(load_model(t.path + "/w.safetensors"),
                      Catch::Contains(t.path + "/w.safetensors") && Catch::Contains("nala.config.heads"));
}

TEST_CASE("model file: weights without metadata load with a named config, shapes from the weights", "[modelfile]") {
  TempDir t;
  NalaFormer a(nalaformer_config("pico", 3, 7));
  Rng rng(4);
  a.init_weights(rng);
  a.eval();
  const std::string w = t.path + "/release.safetensors";
  save_safetensors(w, a.state_dict());  // as PyTorch writes a state_dict: no metadata
  LoadedModel lm = load_model_file(w, "pico");
  REQUIRE(!lm.file.described);
  REQUIRE(lm.model->cfg.in_chans == 3);
  REQUIRE(lm.model->cfg.num_classes == 7);
  REQUIRE(!lm.file.has_input());
  Tensor x = randn({1, 12, 12, 3}, rng);
  {
    NoGradGuard ng;
    REQUIRE(lm.model->forward(x).to_vector() == a.forward(x).to_vector());
  }
  // A training checkpoint ("model." keys, optimiser state beside) loads the same way.
  NamedTensors ck;
  for (auto& [k, v] : a.state_dict()) ck.push_back({"model." + k, v});
  ck.push_back({"optim.step", Tensor::zeros({1})});
  save_safetensors(t.path + "/ck.safetensors", ck);
  REQUIRE(load_model(t.path + "/ck.safetensors", "pico")->cfg.num_classes == 7);
  // No metadata and no name: an error naming the file and what to do.
  REQUIRE_THROWS_WITH(load_model(w), Catch::Contains(w) && Catch::Contains("does not say which model") &&
                                         Catch::Contains("name the config"));
  // Older nala files carry the one-line description: the error quotes it.
  save_safetensors(t.path + "/old.safetensors", a.state_dict(), {{"nala.config", a.cfg.describe()}});
  REQUIRE_THROWS_WITH(load_model(t.path + "/old.safetensors"), Catch::Contains("model=pico"));
  // The wrong name: the weights do not fit.
  REQUIRE_THROWS_WITH(load_model(w, "xt"), Catch::Contains(w) && Catch::Contains("not a checkpoint of xt"));
  // With metadata, a name that contradicts it is refused.
  save_weights(a, t.path + "/meta.safetensors");
  REQUIRE_THROWS_WITH(load_model(t.path + "/meta.safetensors", "xt"),
                      Catch::Contains("not a checkpoint of xt") && Catch::Contains("nala.config.name) says pico"));
  // The commands: --model is needed only without metadata.
  noise_png(t.path + "/img.png", 9, 7, 1);
  Result r = run_cmd(cmd_predict, {"--weights", w, "--threads", "2", "--img-size", "16", t.path + "/img.png"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("does not say which model") != std::string::npos);
  r = run_cmd(cmd_predict, {"--weights", w, "--model", "pico", "--img-size", "16", "--threads", "2", t.path + "/img.png"});
  INFO(r.out);
  REQUIRE(r.code == 0);
  REQUIRE(r.out.find("default: imagenet statistics, --img-size; the weights file records no nala.input.* metadata") !=
          std::string::npos);
  std::vector<float> want = reference_probs(a, t.path + "/img.png", 16, imagenet_mean(3), imagenet_std(3));
  auto got = parse_predict(r.out, {t.path + "/img.png"})[t.path + "/img.png"];
  REQUIRE(got.size() == 5);
  for (int k = 0; k < 7; k++)
    if (got.count("class " + std::to_string(k))) CHECK(std::abs(got["class " + std::to_string(k)] - 100 * want[k]) < 0.006);
  // forward takes the config from the file too.
  save_safetensors(t.path + "/in.safetensors", {{"input", randn({1, 3, 12, 12}, rng)}});
  r = run_cmd(cmd_forward, {"--weights", t.path + "/meta.safetensors", "--input", t.path + "/in.safetensors",
                            "--output", t.path + "/out.safetensors", "--threads", "2"});
  INFO(r.out);
  REQUIRE(r.code == 0);
  REQUIRE(load_safetensors(t.path + "/out.safetensors").tensors.at("logits").shape() == Shape{1, 7});
  r = run_cmd(cmd_forward, {"--weights", w, "--input", t.path + "/in.safetensors", "--output", t.path + "/o2.safetensors"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("name the config") != std::string::npos);
}

// ---------------------------------------------------------------- non-finite weights

TEST_CASE("model file: a tensor holding NaN or Inf is refused, naming the tensor and the file", "[modelfile]") {
  TempDir t;
  NalaFormer a(nalaformer_config("pico", 3, 2));
  Rng rng(9);
  a.init_weights(rng);
  ModelFile mf;
  mf.config = a.cfg;
  mf.classes = {"a", "b"};
  mf.mean = {0.5f, 0.5f, 0.5f}, mf.std = {0.25f, 0.25f, 0.25f}, mf.height = mf.width = 8;
  auto poisoned = [&](const std::string& key, float v, const std::string& prefix) {
    NamedTensors sd;
    for (auto& [k, x] : a.state_dict()) {
      Tensor c = x.clone();
      if (k == key) c.f32()[c.numel() / 2] = v;
      sd.push_back({prefix + k, c});
    }
    std::string path = t.path + "/" + key + (prefix.empty() ? "" : ".ck") + ".safetensors";
    save_safetensors(path, sd, model_file_metadata(mf));
    return path;
  };
  std::string nan_path = poisoned("layers.1.blocks.0.attn.qkvg.weight", NAN, "");
  NalaFormer b(a.cfg);
  REQUIRE_THROWS_WITH(load_weights(b, nan_path), Catch::Contains(nan_path) &&
                                                     Catch::Contains("\"layers.1.blocks.0.attn.qkvg.weight\"") &&
                                                     Catch::Contains("1 non-finite value (NaN at index"));
  REQUIRE_THROWS_WITH(load_model(nan_path), Catch::Contains("layers.1.blocks.0.attn.qkvg.weight"));
  std::string inf_path = poisoned("norm.running_var", INFINITY, "");  // a buffer, not a parameter
  REQUIRE_THROWS_WITH(load_model(inf_path), Catch::Contains(inf_path) && Catch::Contains("\"norm.running_var\"") &&
                                                Catch::Contains("(Inf at index"));
  std::string ck_path = poisoned("head.bias", -INFINITY, "model.");  // a checkpoint names the key as stored
  REQUIRE_THROWS_WITH(load_model(ck_path), Catch::Contains("\"model.head.bias\"") && Catch::Contains("-Inf"));
  // eval and predict stop with an error instead of printing a NaN accuracy.
  make_split(t.path + "/data", "train", {"a", "b"}, 2, 1);
  make_split(t.path + "/data", "val", {"a", "b"}, 2, 50);
  Result r = run_cmd(cmd_eval, {"--weights", nan_path, "--data", "folder", "--data-dir", t.path + "/data",
                                "--threads", "2"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("layers.1.blocks.0.attn.qkvg.weight") != std::string::npos);
  REQUIRE(r.out.find("top-1") == std::string::npos);
  r = run_cmd(cmd_predict, {"--weights", inf_path, "--threads", "2", t.path + "/data/val/a/0.png"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("norm.running_var") != std::string::npos);
  REQUIRE(r.out.find("%") == std::string::npos);
  // The same file without the poison loads.
  save_model(a, mf, t.path + "/clean.safetensors");
  REQUIRE(load_model(t.path + "/clean.safetensors")->cfg.num_classes == 2);
}

// ---------------------------------------------------------------- eval, predict and the model's input

TEST_CASE("model file: eval refuses a dataset whose classes are not the model's, naming them", "[modelfile]") {
  TempDir t;
  auto m = sharp_pico(2, 3);
  ModelFile mf;
  mf.config = m->cfg;
  mf.classes = {"cat", "dog"};
  mf.mean = {0.5f, 0.5f, 0.5f}, mf.std = {0.25f, 0.25f, 0.25f}, mf.height = mf.width = 8;
  const std::string w = t.path + "/w.safetensors";
  save_model(*m, mf, w);
  auto eval = [&](const std::string& dir) {
    return run_cmd(cmd_eval, {"--weights", w, "--data", "folder", "--data-dir", dir, "--threads", "2"});
  };
  make_split(t.path + "/good", "val", {"cat", "dog"}, 2, 1);
  Result r = eval(t.path + "/good");
  INFO(r.out);
  REQUIRE(r.code == 0);
  REQUIRE(r.out.find("4 test images 8x8x3") != std::string::npos);
  // Same number of classes, one name differs: labels would be compared against the wrong class.
  make_split(t.path + "/cow", "val", {"cat", "cow"}, 2, 1);
  r = eval(t.path + "/cow");
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("has class 'cow' that the model was not trained on") != std::string::npos);
  REQUIRE(r.out.find("lacks class 'dog' of the model") != std::string::npos);
  make_split(t.path + "/three", "val", {"cat", "dog", "emu"}, 1, 1);
  r = eval(t.path + "/three");
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("has class 'emu'") != std::string::npos);
  // A model file without class names: the count must still agree.
  save_safetensors(t.path + "/nonames.safetensors", m->state_dict());
  r = run_cmd(cmd_eval, {"--weights", t.path + "/nonames.safetensors", "--model", "pico", "--data", "folder",
                         "--data-dir", t.path + "/three", "--img-size", "8", "--threads", "2"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("has 2 classes") != std::string::npos);
  // Fashion-MNIST's classes against a model of cats and dogs (1 channel model needed first: channels are checked too).
  if (have_fashion_mnist()) {
    r = run_cmd(cmd_eval, {"--weights", w, "--data", "fashion-mnist", "--threads", "2"});
    REQUIRE(r.code == 1);
    REQUIRE(r.out.find("1-channel images") != std::string::npos);
  }
  // An --img-size other than the one the model was trained on is refused.
  r = run_cmd(cmd_eval, {"--weights", w, "--data", "folder", "--data-dir", t.path + "/good", "--img-size", "16"});
  REQUIRE(r.code == 2);
  REQUIRE(r.out.find("trained on 8x8 images") != std::string::npos);
}

TEST_CASE("model file: predict and eval agree on the images of a folder", "[modelfile]") {
  TempDir t;
  const std::vector<std::string> classes = {"a", "b", "c"};
  auto m = sharp_pico(3, 21);
  ModelFile mf;
  mf.config = m->cfg;
  mf.classes = classes;
  // Far from every dataset's statistics, so that any other normalisation shows.
  mf.mean = {0.3f, 0.5f, 0.7f}, mf.std = {0.1f, 0.2f, 0.3f}, mf.height = mf.width = 12;
  make_split(t.path + "/data", "train", classes, 2, 1);
  make_split(t.path + "/data", "val", classes, 5, 1000);

  // The reference: the model on the val/ images prepared as its file says.
  FolderOptions fo;
  fo.img_size = 12;
  fo.mean = mf.mean, fo.std = mf.std;
  Dataset ref_ds = load_image_folder(t.path + "/data/val", fo);
  {  // Centre the logits on these images, so that which class wins depends on the image.
    LoaderOptions lo;
    lo.batch_size = ref_ds.n, lo.shuffle = false, lo.workers = 0;
    BatchLoader loader(ref_ds, lo);
    Rng unused(0);
    loader.start_epoch(unused);
    NoGradGuard ng;
    std::vector<float> l = m->forward(loader.build_batch(0).images).to_vector();
    for (int k = 0; k < 3; k++) {
      double mean = 0;
      for (int64_t i = 0; i < ref_ds.n; i++) mean += l[i * 3 + k] / ref_ds.n;
      m->head->bias.f32()[k] -= (float)mean;
    }
  }
  const std::string w = t.path + "/w.safetensors";
  save_model(*m, mf, w);
  EvalResult ref = evaluate(*m, ref_ds, 64);

  Result e = run_cmd(cmd_eval, {"--weights", w, "--data", "folder", "--data-dir", t.path + "/data", "--threads", "2"});
  INFO(e.out);
  REQUIRE(e.code == 0);
  REQUIRE(e.out.find("15 test images 12x12x3") != std::string::npos);
  REQUIRE(e.out.find("normalisation from the weights file: mean (0.3, 0.5, 0.7), std (0.1, 0.2, 0.3)") !=
          std::string::npos);
  EvalOut ev = parse_eval(e.out, 3);
  REQUIRE(std::abs(ev.loss - ref.loss) < 2e-4);
  REQUIRE(ev.confusion == ref.confusion);

  std::vector<std::string> files;
  for (auto& c : classes)
    for (int i = 0; i < 5; i++) files.push_back(t.path + "/data/val/" + c + "/" + std::to_string(i) + ".png");
  std::vector<std::string> args = {"--weights", w, "--threads", "2"};
  args.insert(args.end(), files.begin(), files.end());
  Result p = run_cmd(cmd_predict, args);
  INFO(p.out);
  REQUIRE(p.code == 0);
  REQUIRE(p.out.find("input 12x12x3, mean (0.3, 0.5, 0.7), std (0.1, 0.2, 0.3) from the weights file") !=
          std::string::npos);
  auto probs = parse_predict(p.out, files);
  REQUIRE(probs.size() == files.size());
  std::vector<std::vector<int64_t>> confusion(3, std::vector<int64_t>(3, 0));
  std::set<std::string> predicted;
  for (size_t i = 0; i < files.size(); i++) {
    auto& pr = probs[files[i]];
    REQUIRE(pr.size() == 3);
    std::vector<float> want = reference_probs(*m, files[i], 12, mf.mean, mf.std);
    for (int k = 0; k < 3; k++) CHECK(std::abs(pr[classes[k]] - 100 * want[k]) < 0.006);
    std::string top = top1(pr);
    predicted.insert(top);
    confusion[i / 5][std::find(classes.begin(), classes.end(), top) - classes.begin()]++;
  }
  REQUIRE(confusion == ev.confusion);  // the same prediction for every image
  REQUIRE(predicted.size() >= 2);      // and the model is not constant, so that says something
}

TEST_CASE("model file: a folder model records ImageNet's normalisation, and predict uses it", "[modelfile]") {
  TempDir t;
  const std::vector<std::string> classes = {"a", "b", "c"};
  make_split(t.path + "/data", "train", classes, 4, 1);
  make_split(t.path + "/data", "val", classes, 2, 500);
  Result r = run_cmd(cmd_train, {"--data", "folder", "--data-dir", t.path + "/data", "--img-size", "8", "--epochs",
                                  "1", "--batch-size", "4", "--threads", "2", "--seed", "1", "--out", t.path + "/run"});
  INFO(r.out);
  REQUIRE(r.code == 0);
  for (const char* f : {"/run/best.safetensors", "/run/checkpoint.safetensors"}) {
    SafeTensors st = load_safetensors(t.path + f);
    INFO(f);
    REQUIRE(st.metadata.at("nala.input.mean") == "0.485,0.456,0.406");
    REQUIRE(st.metadata.at("nala.input.std") == "0.229,0.224,0.225");
    REQUIRE(st.metadata.at("nala.input.height") == "8");
    REQUIRE(st.metadata.at("nala.classes") == "a\nb\nc");
    ModelFile mf = read_model_metadata(st.metadata, f);
    REQUIRE(mf.mean == imagenet_normalisation(3).mean);
    REQUIRE(mf.std == imagenet_normalisation(3).std);
    REQUIRE(mf.config.name == "pico");
    REQUIRE(mf.config.in_chans == 3);
  }
  const std::string w = t.path + "/run/best.safetensors", img = t.path + "/data/val/b/1.png";
  Result p = run_cmd(cmd_predict, {"--weights", w, "--threads", "2", img});
  INFO(p.out);
  REQUIRE(p.code == 0);
  REQUIRE(p.out.find("input 8x8x3, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) from the weights file") !=
          std::string::npos);
  auto m = load_model(w);
  std::vector<float> want = reference_probs(*m, img, 8, imagenet_mean(3), imagenet_std(3));
  auto got = parse_predict(p.out, {img})[img];
  REQUIRE(got.size() == 3);
  for (int k = 0; k < 3; k++) CHECK(std::abs(got[classes[k]] - 100 * want[k]) < 0.006);
  // Options that would contradict the file are refused.
  REQUIRE(run_cmd(cmd_predict, {"--weights", w, "--norm", "cifar10", img}).code == 2);
  REQUIRE(run_cmd(cmd_predict, {"--weights", w, "--img-size", "32", img}).code == 2);
  // eval reads the folder at the model's size without being told.
  Result e = run_cmd(cmd_eval, {"--weights", w, "--data", "folder", "--data-dir", t.path + "/data", "--threads", "2"});
  INFO(e.out);
  REQUIRE(e.code == 0);
  REQUIRE(e.out.find("6 test images 8x8x3") != std::string::npos);
}

// ---------------------------------------------------------------- folder splits

TEST_CASE("folder datasets: val/ must hold exactly train/'s classes, named when not", "[modelfile]") {
  TempDir t;
  DataSpec d;
  d.name = "folder";
  d.img_size = 8;
  d.dir = t.path + "/lacks";
  make_split(d.dir, "train", {"a", "b", "c"}, 1, 1);
  make_split(d.dir, "val", {"a", "b"}, 1, 1);
  for (bool train : {true, false})
    REQUIRE_THROWS_WITH(load_dataset(d, train), Catch::Contains(d.dir) && Catch::Contains("val/ lacks class 'c'"));
  d.dir = t.path + "/extra";
  make_split(d.dir, "train", {"a", "b"}, 1, 1);
  make_split(d.dir, "val", {"a", "b", "d", "e"}, 1, 1);
  REQUIRE_THROWS_WITH(load_dataset(d, false), Catch::Contains("val/ has classes 'd', 'e' that train/ lacks"));
  d.dir = t.path + "/test";  // test/ in place of val/: the same rule
  make_split(d.dir, "train", {"a", "b"}, 1, 1);
  make_split(d.dir, "test", {"b", "x"}, 1, 1);
  REQUIRE_THROWS_WITH(load_dataset(d, false),
                      Catch::Contains("test/ lacks class 'a' of train/") && Catch::Contains("test/ has class 'x'"));
  // Through nala train: refused before training, naming the class.
  Result r = run_cmd(cmd_train, {"--data", "folder", "--data-dir", t.path + "/lacks", "--img-size", "8",
                                 "--threads", "2", "--out", t.path + "/o"});
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("lacks class 'c'") != std::string::npos);
  // Matching splits load, with the same labels on both sides.
  d.dir = t.path + "/ok";
  make_split(d.dir, "train", {"a", "b"}, 2, 1);
  make_split(d.dir, "val", {"a", "b"}, 1, 1);
  Dataset tr = load_dataset(d, true), va = load_dataset(d, false);
  REQUIRE(tr.classes == va.classes);
  REQUIRE((tr.n == 4 && va.n == 2));
  REQUIRE(va.labels == std::vector<int64_t>{0, 1});
}

TEST_CASE("folder datasets: a folder without val/ is not evaluated on its training images", "[modelfile]") {
  TempDir t;
  DataSpec d;
  d.name = "folder";
  d.img_size = 4;
  d.channels = 1;
  d.dir = t.path + "/plain";
  for (int k = 0; k < 2; k++)  // class k, image i: one grey value each
    for (int i = 0; i < 5; i++)
      solid_png(d.dir + "/" + std::string(1, (char)('a' + k)) + "/" + std::to_string(i) + ".png", 6, 6,
                (uint8_t)(100 * k + 10 * i));
  auto values = [](const Dataset& ds) {
    std::multiset<int> v;
    for (int64_t i = 0; i < ds.n; i++) v.insert(ds.image(i)[0]);
    return v;
  };
  // Training on it alone is refused, saying what to do.
  REQUIRE_THROWS_WITH(load_dataset(d, true), Catch::Contains(d.dir) && Catch::Contains("no train/ and val/") &&
                                                 Catch::Contains("--val-split"));
  // Evaluating it alone uses every image (it is the test set).
  REQUIRE(load_dataset(d, false).n == 10);
  // --val-split holds out a fraction of each class: the same images every time, never trained on.
  d.val_split = 0.4f;
  Dataset tr = load_dataset(d, true), va = load_dataset(d, false);
  REQUIRE(tr.n == 6);
  REQUIRE(va.n == 4);
  REQUIRE(values(va) == std::multiset<int>{20, 40, 120, 140});  // files 2 and 4 of 0..4: evenly spread
  REQUIRE(values(tr) == std::multiset<int>{0, 10, 30, 100, 110, 130});
  REQUIRE(va.labels == std::vector<int64_t>{0, 0, 1, 1});
  REQUIRE(values(load_dataset(d, false)) == values(va));
  REQUIRE(va.name.find("held out by --val-split") != std::string::npos);
  d.val_split = 0.01f;  // at least one image per class
  REQUIRE(load_dataset(d, false).n == 2);
  // train/ without val/: the same rule on train/'s images.
  d.dir = t.path + "/trainonly";
  d.val_split = 0;
  make_split(d.dir, "train", {"a", "b"}, 3, 1);
  REQUIRE_THROWS_WITH(load_dataset(d, false), Catch::Contains("has train/ but no val/ or test/"));
  d.val_split = 0.3f;
  REQUIRE(load_dataset(d, false).n == 2);
  REQUIRE(load_dataset(d, true).n == 4);
  // Beside a val/ folder --val-split is refused; for Fashion-MNIST it is a usage error.
  make_split(d.dir, "val", {"a", "b"}, 1, 1);
  REQUIRE_THROWS_WITH(load_dataset(d, true), Catch::Contains("has val/") && Catch::Contains("--val-split"));
  DataSpec fm;
  fm.val_split = 0.1f;
  REQUIRE_THROWS_AS(load_dataset(fm, false), UsageError);
  // A class of one image cannot give one away.
  solid_png(t.path + "/one/a/0.png", 6, 6, 1);
  solid_png(t.path + "/one/b/0.png", 6, 6, 2);
  solid_png(t.path + "/one/b/1.png", 6, 6, 3);
  d.dir = t.path + "/one";
  REQUIRE_THROWS_WITH(load_dataset(d, true), Catch::Contains("class 'a' has 1 image"));
  // nala train: refused without --val-split, and with it trains on the rest.
  std::vector<std::string> args = {"--data", "folder", "--data-dir", t.path + "/plain", "--img-size", "8",
                                   "--epochs", "1", "--batch-size", "2", "--threads", "2", "--out", t.path + "/o1"};
  Result r = run_cmd(cmd_train, args);
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("training would be evaluated on its own images") != std::string::npos);
  args.back() = t.path + "/o2";
  args.insert(args.end(), {"--val-split", "0.2"});
  r = run_cmd(cmd_train, args);
  INFO(r.out);
  REQUIRE(r.code == 0);
  REQUIRE(r.out.find("8 train / 2 test images 8x8x3, 2 classes") != std::string::npos);
}
