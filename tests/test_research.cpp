// tests/test_research.cpp - the research tools: the attention-entropy
// measurement (models/analyze.h: weights of one query, entropy, Pearson and
// Spearman against hand-computed values, `nala analyze` and its output
// folder rule), the validation split, the weight average (nn/ema.h) and a
// training run that chooses its epoch on validation.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "models/analyze.h"
#include "models/attention_kind.h"
#include "models/model_file.h"
#include "models/train/checkpoint.h"
#include "models/train/evaluate.h"
#include "models/train/run_folder.h"
#include "models/train/trainer.h"
#include "models/weights.h"
#include "nn/ema.h"
#include "nn/safetensors.h"
#include "tests/helpers.h"
#include "tests/process.h"
#include "tests/run_command.h"
#include "tools/common.h"

using namespace nala;
using namespace nala::test;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::vector<std::string> cells_of(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string c; std::getline(in, c, ',');) out.push_back(c);
  return out;
}

}  // namespace

// ---------------------------------------------------------------- measures

TEST_CASE("analyze: entropy, Pearson and Spearman against hand-computed values", "[research]") {
  CHECK(entropy(std::vector<double>(7, 1.0 / 7)) == Approx(std::log(7.0)).epsilon(1e-12));
  CHECK(entropy({0, 1, 0}) == 0.0);
  CHECK(entropy({0.5, 0.25, 0.25}) == Approx(1.5 * std::log(2.0)).epsilon(1e-12));

  // x = 1..5, y = 2 4 5 4 5: sxy = 6, sxx = 10, syy = 6 -> 6 / sqrt(60).
  const std::vector<double> x = {1, 2, 3, 4, 5}, y = {2, 4, 5, 4, 5};
  CHECK(pearson(x, y) == Approx(6 / std::sqrt(60.0)).epsilon(1e-12));
  // Ranks of y with ties averaged: 1, 2.5, 4.5, 2.5, 4.5 -> 7 / sqrt(10 * 9).
  CHECK(spearman(x, y) == Approx(7 / std::sqrt(90.0)).epsilon(1e-12));
  // Spearman sees any monotone relation as perfect; Pearson does not.
  const std::vector<double> cubes = {1, 8, 27, 64, 125}, down = {5, 4, 3, 2, 1};
  CHECK(spearman(x, cubes) == Approx(1.0));
  CHECK(pearson(x, cubes) < 0.99);
  CHECK(spearman(x, down) == Approx(-1.0));
  CHECK(pearson(x, down) == Approx(-1.0));
  // Undefined: too few pairs, or a constant side.
  CHECK(std::isnan(pearson({1}, {2})));
  CHECK(std::isnan(pearson({1, 2, 3}, {4, 4, 4})));
  CHECK(std::isnan(spearman({1, 1, 1}, {1, 2, 3})));
  CHECK_THROWS_WITH(pearson({1, 2}, {1}), Catch::Contains("2 x values and 1 y values"));
}

TEST_CASE("analyze: attention weights of one query, softmax with RoPE and NaLa's features, by hand",
          "[research]") {
  // softmax, grid 1 x 2, d = 4 (one frequency, 1 rad per column): token 0 is
  // not rotated, token 1's last pair turns by 1 rad. q0 = (0, 0, 2, 0),
  // k0 = k1 = (0, 0, 1, 0): s00 = 2 / 2 = 1, s01 = 2 cos(1) / 2.
  const float q[8] = {0, 0, 2, 0, 0, 0, 0, 0};
  const float k[8] = {0, 0, 1, 0, 0, 0, 1, 0};
  std::vector<double> w = attention_weights("softmax", q, k, 1, 2, 4, 0);
  REQUIRE(w.size() == 2);
  CHECK(w[0] == Approx(1 / (1 + std::exp(std::cos(1.0) - 1))).epsilon(1e-6));
  CHECK(w[0] + w[1] == Approx(1.0));

  // NaLa: q = (1, 0.5, 0, 0), |q| = sqrt(1.25), p = 3 (0.5 + tanh|q|),
  // phi(q) = ((1, 0.5) / |q|)^p on the positive half; keys e1, e2 and -e1:
  // phi(k) = (1, 0), (0, 1) and the negative half. Weights:
  // 1 / (1 + 0.5^p), 0.5^p / (1 + 0.5^p), 0.
  const float qn[12] = {1, 0.5f, 0, 0};
  const float kn[12] = {1, 0, 0, 0, 0, 1, 0, 0, -1, 0, 0, 0};
  const double p = 3 * (0.5 + std::tanh(std::sqrt(1.25)));
  w = attention_weights("nala", qn, kn, 1, 3, 4, 0);
  REQUIRE(w.size() == 3);
  CHECK(w[0] == Approx(1 / (1 + std::pow(0.5, p))).epsilon(1e-6));
  CHECK(w[1] == Approx(std::pow(0.5, p) / (1 + std::pow(0.5, p))).epsilon(1e-6));
  CHECK(w[2] == 0.0);
  // The norm-aware power: the same direction with a larger norm is sharper.
  const float qn3[12] = {3, 1.5f, 0, 0};
  CHECK(entropy(attention_weights("nala", qn3, kn, 1, 3, 4, 0)) < entropy(w));
  // ... and a plain softmax over the same scores is sharper with the norm too.
  const float qs3[12] = {0, 0, 6, 0};
  CHECK(entropy(attention_weights("softmax", qs3, k, 1, 2, 4, 0)) <
        entropy(attention_weights("softmax", q, k, 1, 2, 4, 0)));

  // Identical keys: uniform weights, entropy ln N, for both kinds.
  Rng rng(3);
  const int64_t H = 3, W = 4, N = H * W, d = 8;
  std::vector<float> qq(N * d), kk(N * d);
  for (float& v : qq) v = rng.normal();
  for (int64_t j = 0; j < N; j++)
    for (int64_t e = 0; e < d; e++) kk[j * d + e] = e % 2 ? 0.7f : -0.4f;
  CHECK(entropy(attention_weights("nala", qq.data(), kk.data(), H, W, d, 5)) == Approx(std::log((double)N)));
  // softmax rotates the keys per token: a zero query gives every key the same score.
  std::vector<float> zero(N * d, 0.0f);
  CHECK(entropy(attention_weights("softmax", zero.data(), kk.data(), H, W, d, 7)) == Approx(std::log((double)N)));
  // A zero query has no NaLa features: it attends nowhere, and its entropy is undefined.
  CHECK(std::isnan(entropy(attention_weights("nala", zero.data(), kk.data(), H, W, d, 7))));
  CHECK(std::isnan(entropy({0, 0, 0})));

  // relu: phi = relu, un-rotated. q = (1, 2, -1, 0); keys (1, 0, 0, 0), (0, 1, 5, 0), (-1, -1, 0, 0):
  // products 1, 2, 0 -> 1/3, 2/3, 0. Several queries at once give the same rows.
  const float qr[12] = {1, 2, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  const float kr[12] = {1, 0, 0, 0, 0, 1, 5, 0, -1, -1, 0, 0};
  const std::vector<std::vector<double>> rows = attention_weights("relu", qr, kr, 1, 3, 4, std::vector<int64_t>{0, 0});
  REQUIRE(rows.size() == 2);
  CHECK(rows[0][0] == Approx(1.0 / 3));
  CHECK(rows[0][1] == Approx(2.0 / 3));
  CHECK(rows[0][2] == 0.0);
  CHECK(rows[1] == rows[0]);

  CHECK_THROWS_WITH(attention_weights("relu2", q, k, 1, 2, 4, 0), Catch::Contains("unknown attention kind 'relu2'"));
  for (const std::string& kind : analyze_kinds()) {  // every kind: a distribution over the keys
    INFO(kind);
    const std::vector<double> wk = attention_weights(kind, qq.data(), qq.data(), H, W, d, 3);
    double sum = 0;
    for (double v : wk) {
      CHECK(v >= 0);
      sum += v;
    }
    CHECK(sum == Approx(1.0).epsilon(1e-5));
  }
  CHECK_THROWS_WITH(attention_weights("nala", q, k, 1, 2, 4, 2), Catch::Contains("query 2 outside the 2 tokens"));
  CHECK_THROWS_WITH(attention_weights("nala", q, k, 1, 2, 6, 0), Catch::Contains("multiple of 4"));
}

// ---------------------------------------------------------------- nala analyze

namespace {

std::string fresh_pico_file(const std::string& dir, AttnKind kind = AttnKind::nala, int64_t size = 28) {
  NalaConfig cfg = nalaformer_config("pico", 1, 10);
  cfg.attn = kind;
  NalaFormer m(cfg, 1);
  Rng r(11);
  m.init_weights(r);
  ModelFile mf;
  mf.config = cfg;
  mf.mean = {0.2860f}, mf.std = {0.3530f};
  mf.height = mf.width = size;
  const std::string path = dir + "/pico-" + attn_kind_name(kind) + "-" + std::to_string(size) + ".safetensors";
  save_model(m, mf, path);
  return path;
}

}  // namespace

TEST_CASE("nala analyze and nala eval: Fashion-MNIST resized to the size the weights were trained on",
          "[research]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  // pico trained on 28x28 images upsampled to 40x40 (nala train --img-size 40): 20x20 tokens in its first stage.
  const std::string w = fresh_pico_file(t.path, AttnKind::nala, 40), out = t.path + "/an";
  CmdResult r = run_cmd(cmd_analyze, {"--weights", w, "--images", "1", "--queries", "400", "--threads", "2", "--out", out});
  INFO(r.out);
  REQUIRE(r.code == 0);
  // Every query of every head: stages of 20x20, 10x10 and 5x5 tokens with 1, 2
  // and 4 heads, 2 blocks each (at 28 px it would be 14x14, 7x7, 4x4: 716).
  CHECK(lines_of(slurp(out + "/entropy_norm.csv")).size() == 1 + 2 * 400 + 2 * 2 * 100 + 2 * 4 * 25);
  r = run_cmd(cmd_eval, {"--weights", w, "--limit", "20", "--threads", "2"});
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("40x40") != std::string::npos);
  // An --img-size that disagrees with the weights is refused, naming both.
  r = run_cmd(cmd_eval, {"--weights", w, "--img-size", "28", "--threads", "2"});
  CHECK(r.code == 2);
  CHECK(r.out.find("was trained on 40x40 images") != std::string::npos);
  r = run_cmd(cmd_analyze, {"--weights", w, "--img-size", "28", "--threads", "2", "--out", t.path + "/no"});
  CHECK(r.code == 2);
  CHECK(r.out.find("was trained on 40x40 images") != std::string::npos);
  CHECK(!std::filesystem::exists(t.path + "/no"));
}

// nala eval --val N: the N training images `nala train --val N` held out,
// with test-time augmentation; the figures are the library's on that split.
TEST_CASE("nala eval --val N evaluates the held-out training images, with --tta-flip and --tta-shift",
          "[research]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  const std::string w = fresh_pico_file(t.path);
  LoadedModel lm = load_model_file(w);
  Dataset train = load_dataset(DataSpec{}, true);
  const Dataset val = split_validation(train, 40);
  TestTimeAug tta;
  tta.flip = true, tta.shift = 2;
  char want[2][64];
  std::snprintf(want[0], sizeof want[0], "top-1 %.2f%%", 100 * evaluate(*lm.model, val, 64).top1);
  std::snprintf(want[1], sizeof want[1], "loss %.4f", evaluate(*lm.model, val, 64, 0, nullptr, nullptr, tta).loss);
  CmdResult r = run_cmd(cmd_eval, {"--weights", w, "--val", "40", "--threads", "2"});
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("40 held-out training images") != std::string::npos);
  CHECK(r.out.find(want[0]) != std::string::npos);
  r = run_cmd(cmd_eval, {"--weights", w, "--val", "40", "--tta-flip", "--tta-shift", "2", "--threads", "2"});
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find(want[1]) != std::string::npos);
  CHECK(r.out.find("mirror, shifts of 2 px: the mean of the logits of 10 views") != std::string::npos);
  // More held out than there are training images: an error naming the split.
  r = run_cmd(cmd_eval, {"--weights", w, "--val", "60000", "--threads", "2"});
  CHECK(r.code != 0);
}

TEST_CASE("nala analyze: entropy_norm.csv, plots, summary; refuses bad input and never replaces a run",
          "[research]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  const std::string w = fresh_pico_file(t.path), out = t.path + "/an";
  CmdResult r = run_cmd(cmd_analyze, {"--weights", w, "--images", "2", "--queries", "8", "--threads", "2", "--out", out});
  INFO(r.out);
  REQUIRE(r.code == 0);
  // pico: stages of 14x14, 7x7 and 4x4 tokens, 1, 2 and 4 heads, 2 blocks
  // each; 8 queries per image and head (all 16 at the last stage would be
  // more than 8, so 8 there too): 2 images x (1 + 1 + 2 + 2 + 4 + 4) heads x 8.
  const std::vector<std::string> rows = lines_of(slurp(out + "/entropy_norm.csv"));
  REQUIRE(!rows.empty());
  CHECK(rows[0] == "layer,head,query,norm,entropy,image,token");
  CHECK(rows.size() == 1 + 2 * 14 * 8);
  const int64_t tokens[6] = {196, 196, 49, 49, 16, 16}, heads[6] = {1, 1, 2, 2, 4, 4};
  std::vector<int64_t> per_layer(6, 0);
  for (size_t i = 1; i < rows.size(); i++) {
    const std::vector<std::string> c = cells_of(rows[i]);
    REQUIRE(c.size() == 7);
    const int64_t layer = std::stoll(c[0]), head = std::stoll(c[1]), image = std::stoll(c[5]),
                  token = std::stoll(c[6]);
    REQUIRE(layer >= 0);
    REQUIRE(layer < 6);
    per_layer[layer]++;
    CHECK(head < heads[layer]);
    CHECK(image < 2);
    CHECK(token < tokens[layer]);
    CHECK(std::stod(c[3]) > 0);
    const double h = std::stod(c[4]);
    CHECK(h >= 0);
    CHECK(h <= std::log((double)tokens[layer]) + 1e-6);
  }
  for (int l = 0; l < 6; l++) CHECK(per_layer[l] == 2 * heads[l] * 8);
  // One scatter plot per layer, the panels, the summaries.
  for (int l = 0; l < 6; l++) {
    const std::string svg = slurp(out + "/layer_" + std::to_string(l) + ".svg");
    CHECK(svg.rfind(plot::kSvgMarker, 0) == 0);
    CHECK(svg.find("<circle") != std::string::npos);
  }
  CHECK(slurp(out + "/entropy_norm.svg").rfind(plot::kSvgMarker, 0) == 0);
  const std::vector<std::string> sum = lines_of(slurp(out + "/summary.csv"));
  REQUIRE(sum.size() == 7);
  CHECK(sum[0].rfind("layer,stage,block,kind,heads,tokens,head_dim,samples,pearson,spearman", 0) == 0);
  CHECK(cells_of(sum[1])[3] == "nala");
  CHECK(cells_of(sum[5])[3] == "softmax");
  CHECK(slurp(out + "/summary.md").find("| 5 | 2.1 | softmax | 4 x 16 | 64 |") != std::string::npos);
  CHECK(r.out.find("Spearman") != std::string::npos);

  // The same folder again: refused, nothing replaced.
  const std::string before = slurp(out + "/entropy_norm.csv");
  r = run_cmd(cmd_analyze, {"--weights", w, "--images", "1", "--threads", "2", "--out", out});
  CHECK(r.code == 1);
  CHECK(r.out.find("already holds an analysis") != std::string::npos);
  CHECK(slurp(out + "/entropy_norm.csv") == before);

  // Weights of another kind: measured as the file says; --attn must agree with it.
  const std::string ws = fresh_pico_file(t.path, AttnKind::softmax), wr = fresh_pico_file(t.path, AttnKind::relu);
  r = run_cmd(cmd_analyze, {"--weights", ws, "--images", "1", "--queries", "4", "--threads", "2", "--attn", "softmax",
                            "--out", t.path + "/an_softmax"});
  REQUIRE(r.code == 0);
  for (const std::string& line : lines_of(slurp(t.path + "/an_softmax/summary.csv")))
    if (line.rfind("layer", 0) != 0) CHECK(cells_of(line)[3] == "softmax");
  r = run_cmd(cmd_analyze, {"--weights", wr, "--images", "1", "--queries", "4", "--threads", "2",
                            "--out", t.path + "/an_relu"});
  REQUIRE(r.code == 0);
  CHECK(cells_of(lines_of(slurp(t.path + "/an_relu/summary.csv"))[1])[3] == "relu");
  CHECK(cells_of(lines_of(slurp(t.path + "/an_relu/summary.csv"))[6])[3] == "softmax");
  r = run_cmd(cmd_analyze, {"--weights", wr, "--attn", "nala", "--out", t.path + "/an_wrong"});
  CHECK(r.code != 0);
  CHECK(r.out.find("relu") != std::string::npos);
  CHECK(access((t.path + "/an_wrong/entropy_norm.csv").c_str(), F_OK) != 0);

  // Bad input: usage errors (2) before any work, a bad file (1); no folder made.
  CHECK(run_cmd(cmd_analyze, {"--images", "2", "--out", t.path + "/x"}).code == 2);
  CHECK(run_cmd(cmd_analyze, {"--weights", w, "--images", "0", "--out", t.path + "/x"}).code == 2);
  CHECK(run_cmd(cmd_analyze, {"--weights", w, "--attn", "cosine", "--out", t.path + "/x"}).code == 2);
  r = run_cmd(cmd_analyze, {"--weights", t.path + "/missing.safetensors", "--out", t.path + "/x"});
  CHECK(r.code == 1);
  CHECK(r.out.find("missing.safetensors") != std::string::npos);
  CHECK(access((t.path + "/x").c_str(), F_OK) != 0);
}

// ---------------------------------------------------------------- validation split

namespace {

// n images of 8 x 8 whose first two pixels encode the index (so every image
// is unique), label = index % classes.
Dataset numbered(int64_t n, int64_t classes = 4) {
  Dataset ds;
  ds.name = "numbered";
  ds.n = n, ds.h = ds.w = 8, ds.c = 1;
  for (int64_t k = 0; k < classes; k++) ds.classes.push_back("c" + std::to_string(k));
  ds.mean = {0.5f}, ds.std = {0.25f};
  for (int64_t i = 0; i < n; i++) {
    ds.labels.push_back(i % classes);
    for (int64_t p = 0; p < 64; p++) ds.images.push_back(p == 0 ? (uint8_t)(i % 256) : p == 1 ? (uint8_t)(i / 256) : 0);
  }
  return ds;
}

int64_t index_of(const Dataset& ds, int64_t i) { return ds.image(i)[0] + 256 * ds.image(i)[1]; }

}  // namespace

TEST_CASE("split_validation: a fixed, disjoint split in the original order; refusals", "[research]") {
  Dataset a = numbered(1000), b = numbered(1000);
  const Dataset va = split_validation(a, 150), vb = split_validation(b, 150);
  CHECK(va.n == 150);
  CHECK(a.n == 850);
  CHECK(a.images.size() == 850 * 64);
  CHECK(va.labels.size() == 150);
  CHECK(va.images == vb.images);  // the same on every call
  CHECK(a.images == b.images);
  CHECK(va.classes == a.classes);
  CHECK(va.mean == a.mean);
  std::vector<int> seen(1000, 0);
  int64_t last = -1;
  for (int64_t i = 0; i < va.n; i++) {
    const int64_t id = index_of(va, i);
    seen[id]++;
    CHECK(va.labels[i] == id % 4);
    CHECK(id > last);  // original order
    last = id;
  }
  last = -1;
  for (int64_t i = 0; i < a.n; i++) {
    const int64_t id = index_of(a, i);
    seen[id]++;
    CHECK(a.labels[i] == id % 4);
    CHECK(id > last);
    last = id;
  }
  for (int s : seen) REQUIRE(s == 1);  // every image on exactly one side
  // Not simply the first or the last images.
  CHECK(index_of(va, 0) < 500);
  CHECK(index_of(va, va.n - 1) >= 500);

  Dataset c = numbered(10);
  CHECK(split_validation(c, 0).n == 0);
  CHECK(c.n == 10);
  CHECK_THROWS_WITH(split_validation(c, 10), Catch::Contains("--val 10: numbered has 10 training images"));
}

// ---------------------------------------------------------------- weight average

TEST_CASE("WeightEma: the update with its warm-up, swap, state and its refusals", "[research]") {
  Tensor x = Tensor::from_vector({3}, {1, 2, 3});
  Tensor steps = Tensor::from_vector_i64({}, {7});  // integer buffers are not averaged
  WeightEma ema({{"x", x}, {"steps", steps}}, 0.9);
  CHECK(ema.averages().size() == 1);
  // Update 1 (t = 0): d = min(0.9, 1/10) = 0.1.
  x.copy_(Tensor::from_vector({3}, {11, 12, 13}));
  CHECK(ema.next_decay() == Approx(0.1));
  ema.update();
  std::vector<float> a = ema.averages()[0].to_vector();
  CHECK(a[0] == Approx(0.1 * 1 + 0.9 * 11));
  CHECK(a[2] == Approx(0.1 * 3 + 0.9 * 13));
  // t = 1: d = 2/11; t large: d = 0.9.
  CHECK(ema.next_decay() == Approx(2.0 / 11));
  for (int i = 0; i < 200; i++) ema.update();
  CHECK(ema.next_decay() == Approx(0.9));
  a = ema.averages()[0].to_vector();
  CHECK(a[1] == Approx(12).epsilon(1e-5));  // converged to the constant weights
  // swap exchanges the live values and the averages.
  x.copy_(Tensor::from_vector({3}, {-1, -2, -3}));
  ema.swap();
  CHECK(x.to_vector()[1] == Approx(12).epsilon(1e-5));
  CHECK(ema.averages()[0].to_vector()[1] == -2.0f);
  ema.swap();
  CHECK(x.to_vector()[1] == -2.0f);
  // The state round-trips; a state without the average is refused.
  NamedTensors st = ema.state();
  std::map<std::string, Tensor> m;
  for (auto& [k, v] : st) m[k] = v.clone();
  WeightEma other({{"x", Tensor::from_vector({3}, {0, 0, 0})}}, 0.9);
  other.load_state(m, "ck.safetensors");
  CHECK(other.updates() == 201);
  CHECK(other.averages()[0].to_vector() == ema.averages()[0].to_vector());
  CHECK_THROWS_WITH(other.load_state({}, "ck.safetensors"), Catch::Contains("trained without --ema"));
  m.erase("ema.x");
  CHECK_THROWS_WITH(other.load_state(m, "ck.safetensors"), Catch::Contains("lacks 'ema.x'"));
  CHECK_THROWS_WITH(WeightEma({{"x", x}}, 1.0), Catch::Contains("must lie in (0, 1)"));
  CHECK_THROWS_WITH(WeightEma({{"x", x}}, 0.0), Catch::Contains("must lie in (0, 1)"));
}

// ---------------------------------------------------------------- a run chosen on validation

namespace {

// 16x16 grey images of 4 classes (a bright quadrant per class), with noise.
Dataset quadrants(int64_t n, uint64_t seed) {
  Dataset ds;
  ds.name = "quadrants";
  ds.n = n, ds.h = ds.w = 16, ds.c = 1;
  ds.classes = {"tl", "tr", "bl", "br"};
  ds.mean = {0.35f}, ds.std = {0.3f};
  Rng rng(seed);
  for (int64_t i = 0; i < n; i++) {
    const int64_t k = i % 4;
    ds.labels.push_back(k);
    for (int64_t y = 0; y < 16; y++)
      for (int64_t x = 0; x < 16; x++)
        ds.images.push_back((uint8_t)(((y < 8 ? 0 : 2) + (x < 8 ? 0 : 1) == k ? 170 : 40) + rng.below(60)));
  }
  return ds;
}

std::unique_ptr<NalaFormer> fresh(uint64_t seed) {
  auto m = std::make_unique<NalaFormer>(nalaformer_config("pico", 1, 4), seed + 1);
  Rng init(seed);
  m->init_weights(init);
  return m;
}

struct Epochs : TrainCallbacks {
  std::vector<EpochReport> reports;
  void epoch_end(const EpochReport& r) override { reports.push_back(r); }
};

}  // namespace

TEST_CASE("train with --val and --ema: best_val.safetensors holds the averaged weights of the epoch best on "
          "validation; a resumed run ends bit for bit", "[research]") {
  TempDir t;
  Dataset train_set = quadrants(240, 1), test_set = quadrants(96, 2);
  const Dataset val_set = split_validation(train_set, 48);
  REQUIRE(train_set.n == 192);
  TrainOptions o;
  o.epochs = 3, o.batch_size = 16, o.lr = 2e-3f, o.warmup_epochs = 0.5f;
  o.seed = 4, o.log_every = 4, o.workers = 1;
  o.val = &val_set, o.ema_decay = 0.95f;
  o.out = t.path + "/full";
  auto model = fresh(3);
  auto comm_ptr = make_single_comm();
  Comm& comm = *comm_ptr;
  Epochs rec;
  const TrainResult res = train(*model, train_set, test_set, o, comm, nullptr, &rec);
  REQUIRE(rec.reports.size() == 3);
  // The chosen epoch: the first with the highest validation top-1.
  size_t best = 0;
  for (size_t e = 0; e < 3; e++) {
    CHECK(rec.reports[e].has_val);
    CHECK(rec.reports[e].averaged);
    CHECK(rec.reports[e].val.n == 48);
    if (rec.reports[e].val.top1 > rec.reports[best].val.top1) best = e;
  }
  CHECK(res.best_val_epoch == (int64_t)best + 1);
  CHECK(res.best_val_top1 == rec.reports[best].val.top1);
  CHECK(res.best_val_test_top1 == rec.reports[best].test.top1);
  CHECK(res.best_val == o.out + "/best_val.safetensors");
  CHECK(access((o.out + "/best.safetensors").c_str(), F_OK) != 0);  // no choice on the test set
  const std::vector<std::string> csv = lines_of(slurp(o.out + "/metrics.csv"));
  REQUIRE(csv.size() == 4);
  CHECK(csv[0] == "epoch,step,lr,train_loss,train_acc,test_loss,test_top1,test_top5,epoch_seconds,"
                  "images_per_second,val_loss,val_top1");
  CHECK(cells_of(csv[1]).size() == 12);
  // The saved weights are the averaged ones of that epoch: evaluated again, the same test top-1.
  LoadedModel lm = load_model_file(o.out + "/best_val.safetensors");
  CHECK(evaluate(*lm.model, test_set, 64).top1 == rec.reports[best].test.top1);
  SafeTensors bv = load_safetensors(o.out + "/best_val.safetensors");
  CHECK(bv.metadata.at("nala.chosen_on") == "validation");
  CHECK(bv.metadata.at("nala.epoch") == std::to_string(best + 1));
  // The live weights differ from the average (the checkpoint holds both).
  SafeTensors ck = load_safetensors(o.out + "/checkpoint.safetensors");
  REQUIRE(ck.tensors.count("ema.head.weight"));
  CHECK(ck.tensors.at("ema.head.weight").to_vector() != ck.tensors.at("model.head.weight").to_vector());

  // Stopped after epoch 1 and resumed: the same checkpoint, average included.
  TrainOptions o1 = o;
  o1.out = t.path + "/split";
  o1.max_steps = 12;  // one epoch of 192 / 16
  auto m1 = fresh(3);
  train(*m1, train_set, test_set, o1, comm);
  TrainOptions o2 = o;
  o2.out = o1.out, o2.resume = true;
  auto m2 = fresh(99);  // overwritten by the checkpoint
  const TrainResult r2 = train(*m2, train_set, test_set, o2, comm);
  CHECK(r2.best_val_epoch == res.best_val_epoch);
  CHECK(r2.best_val_top1 == res.best_val_top1);
  SafeTensors ck2 = load_safetensors(o1.out + "/checkpoint.safetensors");
  for (auto& [name, ten] : ck.tensors) {
    INFO(name);
    REQUIRE(ck2.tensors.count(name));
    if (ten.dtype() == DType::F32) CHECK(ck2.tensors.at(name).to_vector() == ten.to_vector());
  }
  CHECK(slurp(o1.out + "/best_val.safetensors") == slurp(o.out + "/best_val.safetensors"));

  // A resume with --ema of a run trained without it is refused, naming the file.
  TrainOptions o3 = o;
  o3.ema_decay = 0, o3.out = t.path + "/plain", o3.max_steps = 12;
  auto m3 = fresh(3);
  train(*m3, train_set, test_set, o3, comm);
  TrainOptions o4 = o;
  o4.out = o3.out, o4.resume = true;
  auto m4 = fresh(3);
  CHECK_THROWS_WITH(train(*m4, train_set, test_set, o4, comm), Catch::Contains("trained without --ema"));
}

// ---------------------------------------------------------------- tools/ablate.sh

TEST_CASE("tools/ablate.sh: runs kinds x seeds at once, chooses on validation, analyzes, reports; never reuses "
          "a results folder", "[research][slow]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  const std::string root = std::filesystem::current_path().string(), out = t.path + "/ab", log = t.path + "/log";
  REQUIRE(access((root + "/tools/ablate.sh").c_str(), X_OK) == 0);  // the tests run from the repository root
  // --epochs 2, but --max-steps ends every run after its first epoch (10
  // steps of 50 of the 500 images left after validation): the table must
  // give the epochs each run trained, not the --epochs asked for.
  const std::vector<std::string> args = {"--kinds", "nala softmax", "--seeds", "0 1", "--epochs", "2", "--jobs", "2", "--val", "100",
                                         "--device", "cpu", "--recipe", "none", "--analyze-images", "2",
                                         "--nala", nala_binary(), "--out", out, "--", "--subset", "600",
                                         "--eval-subset", "200", "--batch-size", "50", "--warmup-epochs", "0",
                                         "--max-steps", "10"};
  int status = 0;
  pid_t pid = spawn("/bin/bash", [&] {
    std::vector<std::string> a = {root + "/tools/ablate.sh"};
    a.insert(a.end(), args.begin(), args.end());
    return a;
  }(), log);
  REQUIRE(wait_for(pid, 600, &status));
  INFO(slurp(log));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  const std::vector<std::string> rows = lines_of(slurp(out + "/results.csv"));
  REQUIRE(rows.size() == 5);  // header, then each kind's seeds 0 and 1
  CHECK(rows[0] == "kind,seed,parameters,epochs,chosen_epoch,val_top1,test_top1,images_per_second,spearman_by_layer");
  for (int run = 0; run < 4; run++) {
    const std::string kind = run < 2 ? "nala" : "softmax";
    const int s = run % 2;
    const std::vector<std::string> c = cells_of(rows[1 + run]);
    REQUIRE(c.size() == 9);
    CHECK(c[0] == kind);
    CHECK(c[1] == std::to_string(s));
    CHECK(c[2] == "653194");
    CHECK(c[3] == "1");  // trained (--epochs 2 was asked for)
    CHECK(c[4] == "1");
    // The test top-1 the run reported for its chosen epoch, read back from its weights' metadata.
    const std::string run_name = kind + "-s" + std::to_string(s);
    SafeTensors st = load_safetensors(out + "/runs/" + run_name + "/best_val.safetensors");
    CHECK(st.metadata.at("nala.config").find(kind == "nala" ? "model=pico" : "attn=softmax") != std::string::npos);
    CHECK(std::stod(c[6]) == Approx(std::stod(st.metadata.at("nala.top1"))).margin(1e-4));
    CHECK(lines_of(c[8]).size() == 1);
    std::istringstream sp(c[8]);
    int layers = 0;
    for (double v; sp >> v; layers++) CHECK(std::abs(v) <= 1.0);
    CHECK(layers == 6);
    CHECK(access((out + "/analyze/" + run_name + "/entropy_norm.csv").c_str(), R_OK) == 0);
  }
  const std::string report = slurp(out + "/README.md");
  CHECK(report.find("| nala | 653194 | **") != std::string::npos);
  CHECK(report.find("| softmax | 653194 | **") != std::string::npos);
  CHECK(report.find("nala train") != std::string::npos);  // the exact commands
  CHECK(report.find("1 epochs (--epochs 2)") != std::string::npos);
  // Every run's curves on one chart each, linked from the report.
  for (const char* f : {"compare_val.svg", "compare_test.svg", "compare_loss.svg"}) {
    INFO(f);
    CHECK(slurp(out + "/" + f).find("softmax (softmax-s1): best") != std::string::npos);
    CHECK(report.find(std::string("(") + f + ")") != std::string::npos);
  }

  // The same --out again: refused (exit 2), the earlier results untouched.
  const std::string before = slurp(out + "/results.csv");
  pid = spawn("/bin/bash", {root + "/tools/ablate.sh", "--out", out, "--nala", nala_binary()}, log);
  REQUIRE(wait_for(pid, 60, &status));
  CHECK(WEXITSTATUS(status) == 2);
  CHECK(slurp(log).find("never overwritten") != std::string::npos);
  CHECK(slurp(out + "/results.csv") == before);
}

// ---------------------------------------------------------------- tools/recipe_955.sh

TEST_CASE("tools/recipe_955.sh: hands its recipe to ablate.sh, an option after -- replaces the recipe's value",
          "[research][slow]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  const std::string root = std::filesystem::current_path().string(), out = t.path + "/r", log = t.path + "/log";
  REQUIRE(access((root + "/tools/recipe_955.sh").c_str(), X_OK) == 0);
  // One seed, one epoch of 4 steps of 50 images at the recipe's 56 px, 100
  // images held out (--val); --batch-size and --warmup-epochs given again
  // after -- replace the recipe's.
  int status = 0;
  pid_t pid = spawn("/bin/bash", {root + "/tools/recipe_955.sh", "--device", "cpu", "--epochs", "1", "--seeds", "3",
                                  "--jobs", "1", "--val", "100", "--nala", nala_binary(), "--out", out, "--", "--subset",
                                  "300", "--eval-subset", "100", "--batch-size", "50", "--warmup-epochs", "0"},
                    log);
  REQUIRE(wait_for(pid, 600, &status));
  INFO(slurp(log));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  const std::vector<std::string> cmds = lines_of(slurp(out + "/commands.txt"));
  REQUIRE(cmds.size() >= 1);
  const std::string& c = cmds[0];
  INFO(c);
  CHECK(c.find("--seed 3 ") != std::string::npos);
  for (const char* kept : {"--img-size 56 ", "--crop-pad 4 ", "--lr 3e-3 ", "--drop-path 0.15 ", "--erase 0.5 ",
                           "--ema 0.999 ", "--tta-flip ", "--hflip "})
    CHECK(c.find(kept) != std::string::npos);
  // replaced, not given twice
  CHECK(c.find("--batch-size 512") == std::string::npos);
  CHECK(c.find("--batch-size 50 ") != std::string::npos);
  CHECK(c.find("--warmup-epochs 5") == std::string::npos);
  CHECK(c.find("--val 100 ") != std::string::npos);
  CHECK(c.find("--val 5000") == std::string::npos);
  // The run trained at 56 px: its weights say so.
  SafeTensors st = load_safetensors(out + "/runs/nala-s3/best_val.safetensors");
  CHECK(st.metadata.at("nala.input.height") == "56");
  CHECK(st.metadata.at("nala.input.width") == "56");
  const std::vector<std::string> rows = lines_of(slurp(out + "/results.csv"));
  REQUIRE(rows.size() == 2);
  CHECK(cells_of(rows[1])[2] == "653194");
  // Test-time shifts chosen on validation: the chosen weights on the 100
  // held-out images moved 0, 1, 2, 3 px, then the best of them on the test
  // images. Moved 0 px, the evaluation is the run's own of its chosen epoch.
  const std::vector<std::string> tta = lines_of(slurp(out + "/tta.csv"));
  REQUIRE(tta.size() == 1 + 4 + 1);
  CHECK(tta[0] == "kind,seed,shift,split,top1");
  double best = -1;
  int best_shift = -1;
  for (int i = 1; i <= 4; i++) {
    const std::vector<std::string> c = cells_of(tta[i]);
    REQUIRE(c.size() == 5);
    CHECK(c[0] == "nala");
    CHECK(c[1] == "3");
    CHECK(c[2] == std::to_string(i - 1));
    CHECK(c[3] == "val");
    const double v = std::stod(c[4]);
    if (v > best) best = v, best_shift = i - 1;
  }
  CHECK(std::stod(cells_of(tta[1])[4]) == Approx(100 * std::stod(cells_of(rows[1])[5])).margin(1e-9));
  const std::vector<std::string> chosen = cells_of(tta[5]);
  CHECK(chosen[2] == std::to_string(best_shift));
  CHECK(chosen[3] == "test");
  if (best_shift == 0) CHECK(std::stod(chosen[4]) == Approx(100 * std::stod(cells_of(rows[1])[6])).margin(1e-9));
  CHECK(slurp(out + "/README.md").find("Test-time shifts chosen on validation") != std::string::npos);
  CHECK(slurp(out + "/commands.txt").find("--tta-shift 3 --val 100 --subset 300") != std::string::npos);
}

// ---------------------------------------------------------------- tools/ablate.sh --resume

TEST_CASE("tools/ablate.sh --resume: a killed ablation continues each run from its checkpoint; finished runs "
          "are kept", "[research][slow]") {
  SKIP_WITHOUT_FASHION_MNIST();
  if (access("/usr/bin/setsid", X_OK) != 0) {
    WARN("no /usr/bin/setsid: skipped");
    return;
  }
  TempDir t;
  const std::string root = std::filesystem::current_path().string(), out = t.path + "/ab", log = t.path + "/log";
  const std::string ablate = root + "/tools/ablate.sh", run = out + "/runs/nala-s0";
  // 20 epochs of 10 steps (500 images after validation, batch 50): the run is
  // killed, with ablate.sh, once its first checkpoint is on disk.
  const int epochs = 20;
  pid_t pid = spawn("/usr/bin/setsid",
                    {"/bin/bash", ablate, "--kinds", "nala", "--seeds", "0", "--epochs", std::to_string(epochs),
                     "--val", "100", "--device", "cpu", "--recipe", "none", "--analyze-images", "2", "--nala",
                     nala_binary(), "--out", out, "--", "--subset", "600", "--eval-subset", "100", "--batch-size",
                     "50", "--warmup-epochs", "0"},
                    log);
  int status = 0;
  bool ended = false;
  for (int i = 0; i < 6000 && !ended && access((run + "/checkpoint.safetensors").c_str(), R_OK) != 0; i++)
    ended = wait_for(pid, 0.02, &status);
  INFO(slurp(log));
  REQUIRE(!ended);  // still training: 20 epochs take several seconds
  REQUIRE(access((run + "/checkpoint.safetensors").c_str(), R_OK) == 0);
  REQUIRE(kill(-pid, SIGKILL) == 0);  // setsid made ablate.sh a group leader: the group is it and its nala
  REQUIRE(wait_for(pid, 60, &status));
  CHECK(slurp(out + "/logs/nala-s0.log").find("\ndone in") == std::string::npos);
  const size_t trained_before = lines_of(slurp(run + "/metrics.csv")).size() - 1;
  CHECK(trained_before < (size_t)epochs);

  // Options that would change the settings are refused beside --resume.
  pid = spawn("/bin/bash", {ablate, "--resume", out, "--epochs", "5"}, log);
  REQUIRE(wait_for(pid, 60, &status));
  CHECK(WEXITSTATUS(status) == 2);
  CHECK(slurp(log).find("only --jobs and --nala") != std::string::npos);
  pid = spawn("/bin/bash", {ablate, "--resume", t.path}, log);  // not a folder ablate.sh made
  REQUIRE(wait_for(pid, 60, &status));
  CHECK(WEXITSTATUS(status) == 2);
  CHECK(slurp(log).find("ablate.args: no such file") != std::string::npos);

  // Runs given --time-budget cannot be resumed: said before anything runs.
  const std::string tb = t.path + "/budget";
  for (const char* d : {"", "/runs", "/logs", "/analyze"}) fs::create_directories(tb + d);
  {
    std::ofstream f(tb + "/ablate.args", std::ios::binary);
    for (const char* a : {"--kinds", "nala", "--epochs", "3", "--out", "x", "--", "--time-budget", "5"}) f << a << '\0';
  }
  pid = spawn("/bin/bash", {ablate, "--resume", tb, "--nala", nala_binary()}, log);
  REQUIRE(wait_for(pid, 60, &status));
  CHECK(WEXITSTATUS(status) == 2);
  CHECK(slurp(log).find("nala train cannot resume such a run") != std::string::npos);
  CHECK(fs::is_empty(tb + "/runs"));

  // An analysis already there for a run that trains on (of its earlier weights): moved aside, made again.
  fs::create_directories(out + "/analyze/nala-s0");
  std::ofstream(out + "/analyze/nala-s0/summary.md") << "an analysis of earlier weights\n";

  // Resumed: the run continues from its checkpoint to its 20th epoch, then the analysis and the report.
  pid = spawn("/bin/bash", {ablate, "--resume", out}, log);  // the nala program: the ablation's own
  REQUIRE(wait_for(pid, 600, &status));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  const std::string run_log = slurp(out + "/logs/nala-s0.log");
  CHECK(run_log.find("resuming " + run + " at epoch ") != std::string::npos);
  CHECK(run_log.find("\ndone in") != std::string::npos);
  const std::vector<std::string> metrics = lines_of(slurp(run + "/metrics.csv"));
  REQUIRE(metrics.size() == (size_t)epochs + 1);  // every epoch once: the killed epoch's row is not kept twice
  for (int e = 1; e <= epochs; e++) CHECK(cells_of(metrics[e])[0] == std::to_string(e));
  const std::string cmds = slurp(out + "/commands.txt");
  CHECK(cmds.find("--resume " + run) != std::string::npos);
  const std::vector<std::string> rows = lines_of(slurp(out + "/results.csv"));
  REQUIRE(rows.size() == 2);
  const std::vector<std::string> c = cells_of(rows[1]);
  REQUIRE(c.size() == 9);
  CHECK(c[3] == std::to_string(epochs));
  CHECK(std::stoi(c[4]) >= 1);
  CHECK(std::stoi(c[4]) <= epochs);
  CHECK(slurp(out + "/analyze/nala-s0.earlier-1/summary.md") == "an analysis of earlier weights\n");
  CHECK(slurp(out + "/analyze/nala-s0/summary.md").find("nala analyze") != std::string::npos);

  // Again: nothing left to train or analyze; the report is rebuilt from the same results.
  const std::string results = slurp(out + "/results.csv");
  pid = spawn("/bin/bash", {ablate, "--resume", out, "--nala", nala_binary()}, log);
  REQUIRE(wait_for(pid, 120, &status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(slurp(log).find("nala seed 0: finished earlier") != std::string::npos);
  CHECK(slurp(out + "/commands.txt") == cmds);
  CHECK(slurp(out + "/results.csv") == results);

  // An analysis cut short (its last file, summary.md, missing): made again, the partial one kept aside.
  fs::rename(out + "/analyze/nala-s0/summary.md", t.path + "/summary.md");
  pid = spawn("/bin/bash", {ablate, "--resume", out, "--nala", nala_binary()}, log);
  REQUIRE(wait_for(pid, 120, &status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(fs::exists(out + "/analyze/nala-s0.earlier-2/entropy_norm.csv"));
  CHECK(slurp(out + "/analyze/nala-s0/summary.md") == slurp(t.path + "/summary.md"));  // the same weights
  CHECK(slurp(out + "/results.csv") == results);
}
