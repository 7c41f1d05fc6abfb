// tests/test_trainer.cpp - the training loop as a library (models/train/):
// pico trained on a small synthetic task held in memory, through train()
// alone, as an embedding program would: the loss falls, the test accuracy
// is far above chance, evaluate() and predict() agree with what the run
// reported, the checkpoint is written and a run resumed from it ends bit for
// bit where the uninterrupted one ends, NaN steps stop or are skipped, and
// the run prints nothing unless its callbacks do. This file uses nala only
// through include/nala/nala.h (the public C++ API), and a scan checks that the
// library includes no tools/ header.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "include/nala/nala.h"  // the public C++ API, nothing else of nala's
#include "tests/process.h"

using namespace nala;
using namespace nala::test;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kSize = 16, kClasses = 4;

// 16x16 grey images of 4 classes: class k has its k-th quadrant bright and
// the rest dark, with noise on every pixel.
Dataset quadrants(const std::string& name, int64_t n, uint64_t seed) {
  Dataset ds;
  ds.name = name;
  ds.n = n, ds.h = ds.w = kSize, ds.c = 1;
  ds.classes = {"top-left", "top-right", "bottom-left", "bottom-right"};
  ds.mean = {0.35f}, ds.std = {0.3f};
  Rng rng(seed);
  for (int64_t i = 0; i < n; i++) {
    const int64_t k = i % kClasses;
    ds.labels.push_back(k);
    for (int64_t y = 0; y < kSize; y++)
      for (int64_t x = 0; x < kSize; x++) {
        const bool bright = (y < kSize / 2 ? 0 : 2) + (x < kSize / 2 ? 0 : 1) == k;
        ds.images.push_back((uint8_t)((bright ? 170 : 40) + rng.below(60)));
      }
  }
  return ds;
}

std::unique_ptr<NalaFormer> fresh_model(uint64_t seed) {
  auto m = std::make_unique<NalaFormer>(nalaformer_config("pico", 1, kClasses), seed + 1);
  Rng init(seed);
  m->init_weights(init);
  return m;
}

// 192 images in batches of 16: 12 steps an epoch.
TrainOptions options(const std::string& out, int64_t epochs) {
  TrainOptions o;
  o.epochs = epochs, o.batch_size = 16;
  o.lr = 2e-3f, o.warmup_epochs = 0.5f;
  o.augment.crop_pad = 1;
  o.seed = 5, o.log_every = 4, o.workers = 2;
  o.out = out;
  return o;
}

// Every callback, recorded.
struct Recorder : TrainCallbacks {
  std::vector<std::string> messages, warnings;
  std::vector<RunStart> starts;
  std::vector<StepReport> steps;
  std::vector<std::pair<int64_t, std::string>> skips;
  std::vector<EpochReport> epochs;
  std::vector<TrainResult> ends;
  void message(const std::string& l) override { messages.push_back(l); }
  void warning(const std::string& t) override { warnings.push_back(t); }
  void start(const RunStart& r) override { starts.push_back(r); }
  void progress(const StepReport& r) override { steps.push_back(r); }
  void skipped(int64_t step, const std::string& what) override { skips.push_back({step, what}); }
  void epoch_end(const EpochReport& r) override { epochs.push_back(r); }
  void end(const TrainResult& r) override { ends.push_back(r); }
};

// Runs f with stdout and stderr sent to a file; returns what was written.
template <typename F>
std::string captured(F f) {
  char tmpl[] = "/tmp/nala_trainer_out_XXXXXX";
  const int fd = mkstemp(tmpl);
  REQUIRE(fd >= 0);
  std::fflush(stdout), std::fflush(stderr);
  const int out = dup(1), err = dup(2);
  dup2(fd, 1), dup2(fd, 2);
  try {
    f();
  } catch (...) {
    std::fflush(stdout), std::fflush(stderr);
    dup2(out, 1), dup2(err, 2), close(out), close(err), close(fd);
    std::remove(tmpl);
    throw;
  }
  std::fflush(stdout), std::fflush(stderr);
  dup2(out, 1), dup2(err, 2), close(out), close(err), close(fd);
  std::ifstream in(tmpl);
  std::stringstream text;
  text << in.rdbuf();
  std::remove(tmpl);
  return text.str();
}

}  // namespace

TEST_CASE("trainer: pico learns a synthetic task through train() alone; evaluate and predict agree", "[trainer]") {
  TempDir t;
  const int64_t kEpochs = 5;
  const Dataset train_set = quadrants("quadrants", 192, 1), test_set = quadrants("quadrants-test", 64, 2);
  auto model = fresh_model(5);
  auto comm = make_single_comm();
  Recorder rec;
  TrainResult res;
  const std::string printed =
      captured([&] { res = train(*model, train_set, test_set, options(t.path + "/run", kEpochs), *comm, nullptr, &rec); });
  INFO(printed);
  CHECK(printed.empty());  // the library prints nothing itself

  // What the callbacks saw.
  REQUIRE(rec.starts.size() == 1);
  CHECK(rec.starts[0].steps_per_epoch == 12);
  CHECK(rec.starts[0].train_images == 192);
  CHECK(rec.starts[0].classes == kClasses);
  CHECK(rec.steps.size() == 12 * kEpochs);  // the CPU checks every step
  CHECK(rec.steps.back().done == 12);
  REQUIRE(rec.epochs.size() == (size_t)kEpochs);
  REQUIRE(rec.ends.size() == 1);
  CHECK(rec.skips.empty());
  CHECK(rec.warnings.empty());

  // The loss falls (ln 4 = 1.39 at the start; label smoothing 0.1 keeps it
  // above ~0.35), and the test accuracy ends far above chance (0.25). The
  // first epochs' eval-mode accuracy is at chance: BatchNorm's running
  // statistics lag behind the weights at first.
  const EpochReport& last = rec.epochs.back();
  INFO("first step loss " << rec.steps.front().loss << "; epoch 1 train loss " << rec.epochs[0].train_loss
                          << ", last epoch train loss " << last.train_loss << ", test loss " << last.test.loss
                          << ", top-1 " << last.test.top1);
  CHECK(rec.steps.front().loss > 1.2);
  CHECK(rec.epochs[0].train_loss < rec.steps.front().loss);
  CHECK(last.train_loss < rec.epochs[0].train_loss);
  CHECK(last.train_loss < 0.6);
  CHECK(last.test.loss < 1.0);
  CHECK(last.test.top1 > 0.8);
  CHECK(last.test.n == 64);

  // The result: both epochs complete, the files exist.
  CHECK(res.epoch == kEpochs);
  CHECK(res.step == 12 * kEpochs);
  CHECK(res.checkpoint_step == 12 * kEpochs);
  CHECK(res.partial_epoch == 0);
  CHECK(!res.stopped_at_epoch_end);
  CHECK(res.checkpoint == t.path + "/run/checkpoint.safetensors");
  CHECK(res.best == t.path + "/run/best.safetensors");
  double best = -1;
  for (auto& e : rec.epochs) best = std::max(best, e.test.top1);
  CHECK(res.best_top1 == best);
  const Checkpoint ck = read_checkpoint(res.checkpoint, model->cfg);
  CHECK(ck.state.epoch == kEpochs);
  CHECK(ck.state.step == 12 * kEpochs);
  CHECK(ck.state.global_batch == 16);
  CHECK(ck.state.args == describe_options(options("", kEpochs)));
  CHECK(ck.state.rng == model->rng.state());
  std::ifstream csv(t.path + "/run/metrics.csv");
  int rows = 0;
  for (std::string line; std::getline(csv, line);) rows++;
  CHECK(rows == 1 + kEpochs);  // the header and a row per epoch
  CHECK(!fs::exists(t.path + "/run/" + kLockFile));  // released at the end

  // evaluate() on the trained model gives what the last epoch reported.
  const EvalResult ev = evaluate(*model, test_set, 16);
  CHECK(ev.n == 64);
  CHECK(ev.top1 == last.test.top1);
  CHECK(ev.top5 == 1.0);  // 4 classes: the true one is always among the top 5
  CHECK(ev.loss == Approx(last.test.loss).epsilon(1e-6));
  for (int64_t k = 0; k < kClasses; k++) {
    int64_t row = 0;
    for (int64_t j = 0; j < kClasses; j++) row += ev.confusion[k][j];
    CHECK(row == 16);
    CHECK(ev.per_class[k] == (double)ev.confusion[k][k] / 16);
  }
  CHECK(evaluate(*model, test_set, 7, 10).n == 10);

  // predict(): the most probable class is the one evaluate counts, the
  // probabilities come sorted and sum to 1 over all 4 classes.
  LoaderOptions lo;
  lo.batch_size = 64, lo.shuffle = false, lo.workers = 0;
  BatchLoader loader(test_set, lo);
  Rng unused(0);
  loader.start_epoch(unused);
  Batch b;
  REQUIRE(loader.next(b));
  const std::vector<Prediction> pred = predict(*model, b.images, 5);
  REQUIRE(pred.size() == 64);
  int64_t right = 0;
  for (size_t i = 0; i < pred.size(); i++) {
    REQUIRE(pred[i].classes.size() == (size_t)kClasses);
    double sum = 0;
    for (size_t j = 0; j < pred[i].probs.size(); j++) {
      sum += pred[i].probs[j];
      if (j) CHECK(pred[i].probs[j] <= pred[i].probs[j - 1]);
    }
    CHECK(sum == Approx(1.0).epsilon(1e-5));
    right += pred[i].classes[0] == test_set.labels[b.indices[i]];
  }
  CHECK((double)right / 64 == ev.top1);
  CHECK(predict(*model, b.images, 2)[0].classes.size() == 2);
}

TEST_CASE("trainer: a run stopped after epoch 1 and resumed ends bit for bit where the uninterrupted run ends",
          "[trainer]") {
  TempDir t;
  const Dataset train_set = quadrants("quadrants", 192, 1), test_set = quadrants("quadrants-test", 64, 2);
  auto comm = make_single_comm();
  {
    auto model = fresh_model(5);
    train(*model, train_set, test_set, options(t.path + "/full", 2), *comm);
  }
  {  // stopped by max_steps at the end of epoch 1; no callbacks: silent
    auto model = fresh_model(5);
    TrainOptions o = options(t.path + "/part", 2);
    o.max_steps = 12;
    TrainResult r;
    const std::string printed = captured([&] { r = train(*model, train_set, test_set, o, *comm); });
    CHECK(printed.empty());
    CHECK(r.epoch == 1);
    CHECK(r.stopped_at_epoch_end);
  }
  Recorder rec;
  {  // resumed: a model built afresh from another seed, everything comes from the checkpoint
    auto model = fresh_model(99);
    TrainOptions o = options(t.path + "/part", 2);
    o.resume = true;
    TrainResult r = train(*model, train_set, test_set, o, *comm, nullptr, &rec);
    CHECK(r.epoch == 2);
    CHECK(r.step == 24);
  }
  REQUIRE(!rec.messages.empty());
  CHECK(rec.messages[0] == "resuming " + t.path + "/part at epoch 1 (step 12)");
  CHECK(rec.epochs.size() == 1);  // epoch 2 only
  const SafeTensors full = load_safetensors(t.path + "/full/checkpoint.safetensors");
  const SafeTensors part = load_safetensors(t.path + "/part/checkpoint.safetensors");
  CHECK(full.metadata.at("nala.rng") == part.metadata.at("nala.rng"));
  CHECK(full.metadata.at("nala.step") == part.metadata.at("nala.step"));
  REQUIRE(full.tensors.size() == part.tensors.size());
  for (auto& [k, v] : full.tensors) {
    INFO(k);
    REQUIRE(part.tensors.count(k));
    if (v.dtype() == DType::I64) REQUIRE(v.to_vector_i64() == part.tensors.at(k).to_vector_i64());
    else REQUIRE(v.to_vector() == part.tensors.at(k).to_vector());  // bit for bit
  }
}

TEST_CASE("trainer: a NaN step stops the run naming it, or is skipped; no output folder writes nothing",
          "[trainer]") {
  const Dataset train_set = quadrants("quadrants", 64, 1), test_set = quadrants("quadrants-test", 16, 2);
  auto comm = make_single_comm();
  TrainOptions o = options("", 1);
  o.debug_nan_at = 2;
  auto model = fresh_model(5);
  REQUIRE_THROWS_WITH(train(*model, train_set, test_set, o, *comm),
                      Catch::Contains("non-finite gradient norm at step 2 (epoch 1); stopping without saving. "
                                      "No checkpoint was written yet"));
  o.skip_nonfinite = true;
  model = fresh_model(5);
  Recorder rec;
  TrainResult r = train(*model, train_set, test_set, o, *comm, nullptr, &rec);
  CHECK(r.skipped == 1);
  REQUIRE(rec.skips.size() == 1);
  CHECK(rec.skips[0].first == 2);
  CHECK(rec.skips[0].second == "gradient norm");
  CHECK(r.step == 4);  // the skipped step counts
  CHECK(r.epoch == 1);
  CHECK(r.checkpoint.empty());
  CHECK(r.best.empty());
  for (auto& [name, p] : model->named_parameters()) {
    INFO(name);
    for (float v : p.to_vector()) REQUIRE(std::isfinite(v));
  }
}

namespace {

// A group of one that says it is a data-parallel group.
struct LaunchedGroupOfOne : Comm {
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend() const override { return "test"; }
  void all_reduce_sum(float*, int64_t, Device) override {}
  void broadcast(float*, int64_t, Device, int) override {}
  void broadcast_bytes(void*, size_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int) override { std::abort(); }
};

// The #include lines of a file that name a header under one of `folders`.
std::vector<std::string> includes_from(const fs::path& file, const std::vector<std::string>& folders) {
  std::ifstream in(file);
  std::vector<std::string> found;
  for (std::string line; std::getline(in, line);)
    for (const std::string& f : folders)
      if (line.rfind("#include \"" + f + "/", 0) == 0) found.push_back(file.string() + ": " + line);
  return found;
}

}  // namespace

TEST_CASE("trainer: data-parallel needs a GradSync; the library includes nothing from tools/ or distributed/",
          "[trainer]") {
  const Dataset train_set = quadrants("quadrants", 32, 1), test_set = quadrants("quadrants-test", 8, 2);
  auto model = fresh_model(5);
  LaunchedGroupOfOne group;
  REQUIRE_THROWS_WITH(train(*model, train_set, test_set, options("", 1), group),
                      Catch::Contains("needs a GradSync"));
  // A model that does not fit the data is refused before any step.
  auto wrong = std::make_unique<NalaFormer>(nalaformer_config("pico", 3, kClasses));
  auto single = make_single_comm();
  REQUIRE_THROWS_WITH(train(*wrong, train_set, test_set, options("", 1), *single),
                      Catch::Contains("the model (pico) takes 3 channels"));

  // The core library's folders (libnala.a) never include the program's
  // headers or the optional data-parallel library's; nor does this test.
  const fs::path root = fs::path(__FILE__).parent_path().parent_path();
  std::vector<std::string> bad;
  for (const char* dir : {"tensor", "autograd", "kernels", "nn", "models"})
    for (auto& e : fs::recursive_directory_iterator(root / dir)) {
      const std::string ext = e.path().extension().string();
      if (ext != ".h" && ext != ".cpp" && ext != ".cu" && ext != ".cuh") continue;
      for (auto& line : includes_from(e.path(), {"tools", "distributed"})) bad.push_back(line);
    }
  for (auto& line : includes_from(fs::path(__FILE__), {"tools", "distributed"})) bad.push_back(line);
  INFO([&] {
    std::string s;
    for (auto& b : bad) s += b + "\n";
    return s;
  }());
  CHECK(bad.empty());
  CHECK(fs::exists(root / "models/train/trainer.h"));  // the scan looked at the right place
}

TEST_CASE("trainer: the time budget's arithmetic", "[trainer]") {
  // 100 s left, 10 of 100 steps done at 0.1 s, 5 s per evaluation: the rest
  // of epoch 1 takes 14 s, each further epoch 15 s; 97 s usable: 1 + 5.
  CHECK(epochs_in_budget(100, 10, 0.1, 100, 5, 50) == 6);
  CHECK(epochs_in_budget(100, 10, 0.1, 100, 5, 4) == 4);   // the cap
  CHECK(epochs_in_budget(10, 10, 0.1, 100, 5, 50) == 1);   // not even epoch 1 fits: still 1
  CHECK(epochs_in_budget(-5, 10, 0.1, 100, 5, 50) == 1);
  CHECK(epochs_in_budget(14.5 / 0.97 + 15 - 0.1, 10, 0.1, 100, 5, 50) == 1);  // just short of a second
  CHECK(epochs_in_budget(14.5 / 0.97 + 15 + 0.1, 10, 0.1, 100, 5, 50) == 2);
  CHECK(with_epochs("model=pico epochs=10 batch=128 warmup_epochs=3", 4) == "model=pico epochs=4 batch=128 "
                                                                            "warmup_epochs=3");
  CHECK(with_epochs("epochs=10 batch=1", 7) == "epochs=7 batch=1");
  CHECK(with_epochs("batch=1 epochs=12", 3) == "batch=1 epochs=3");
  CHECK(with_epochs("batch=1 lr=2", 3) == "batch=1 lr=2");
}

TEST_CASE("trainer: a time budget chooses the epochs; the checkpoint names them and resumes with them",
          "[trainer]") {
  TempDir t;
  const Dataset train_set = quadrants("quadrants", 192, 1), test_set = quadrants("quadrants-test", 64, 2);
  auto comm = make_single_comm();
  auto run = [&](const std::string& dir, double budget, int64_t cap, Recorder& rec) {
    auto model = fresh_model(5);
    TrainOptions o = options(t.path + "/" + dir, cap);
    o.batch_size = 4;  // 48 steps an epoch: the timed steps are inside epoch 1
    o.warmup_epochs = 1;
    o.time_budget = budget;
    return train(*model, train_set, test_set, o, *comm, nullptr, &rec);
  };
  {  // far more time than the cap needs: the cap
    Recorder rec;
    const TrainResult r = run("roomy", 1e6, 2, rec);
    CHECK(r.epochs == 2);
    CHECK(r.epoch == 2);
    CHECK(rec.epochs.size() == 2);
    REQUIRE(rec.messages.size() == 1);
    CHECK(rec.messages[0].find("--time-budget") == 0);
    CHECK(rec.messages[0].find("2 epochs fit (--epochs 2 is the most)") != std::string::npos);
    REQUIRE(rec.starts.size() == 1);
    CHECK(rec.starts[0].time_budget == 1e6);
  }
  {  // no time at all: one epoch, and its files say so
    Recorder rec;
    const TrainResult r = run("tight", 1e-3, 8, rec);
    CHECK(r.epochs == 1);
    CHECK(r.epoch == 1);
    CHECK(r.step == 48);
    CHECK(rec.epochs.size() == 1);
    REQUIRE(!rec.messages.empty());
    CHECK(rec.messages[0].find("1 epoch fits") != std::string::npos);
    const SafeTensors ck = load_safetensors(t.path + "/tight/checkpoint.safetensors");
    CHECK(ck.metadata.at("nala.args").find("epochs=1 ") == 0);
    // Resumed with --epochs 1 and no budget: the same arguments, nothing to train.
    Recorder again;
    auto model = fresh_model(5);
    TrainOptions o = options(t.path + "/tight", 1);
    o.batch_size = 4, o.warmup_epochs = 1, o.resume = true;
    train(*model, train_set, test_set, o, *comm, nullptr, &again);
    CHECK(again.warnings.empty());  // the arguments match the checkpoint's
    // A budget does not resume.
    o.time_budget = 10;
    CHECK_THROWS_WITH(train(*model, train_set, test_set, o, *comm), Catch::Contains("--time-budget chooses"));
  }
}

TEST_CASE("trainer: a budgeted run that slows down fits fewer epochs and ends in time", "[trainer]") {
#if NALA_SANITIZER_BUILD
  // Its 12 s budget is sized for an optimised build (it holds up to a
  // machine about 4x slower than the development one); a sanitizer build
  // runs the epochs several times slower still.
  WARN("sanitizer build: the wall-clock budget of this test is sized for an optimised build: skipped");
  return;
#endif
  TempDir t;
  const Dataset train_set = quadrants("quadrants", 192, 1), test_set = quadrants("quadrants-test", 64, 2);
  auto comm = make_single_comm();
  // From epoch 2 on every fourth step's progress report waits 0.7 s: the
  // machine "gets slower", and after epoch 2 no further epoch fits. With t
  // the time of a fast step, epoch 2 ends at 96 t + 8.4 s, and epoch 3 (48
  // steps at the average step of epochs 1-2, 24 t + 4.2 s) does not fit in
  // what is left for any t; epoch 2 ends inside the budget for t < 37 ms.
  struct Slow : Recorder {
    void progress(const StepReport& r) override {
      Recorder::progress(r);
      if (r.epoch >= 2 && r.done % 4 == 0) usleep(700000);
    }
  } rec;
  auto model = fresh_model(5);
  TrainOptions o = options(t.path + "/slow", 30);
  o.batch_size = 4, o.warmup_epochs = 1;  // 48 steps an epoch
  o.time_budget = 12;
  const double t0 = now_seconds();
  const TrainResult r = train(*model, train_set, test_set, o, *comm, nullptr, &rec);
  const double took = now_seconds() - t0;
  REQUIRE(rec.messages.size() >= 2);
  INFO(rec.messages[0]);
  const size_t fits = rec.messages[0].find(" epochs fit");
  REQUIRE(fits != std::string::npos);
  const int64_t planned = std::atoll(rec.messages[0].substr(rec.messages[0].rfind(' ', fits - 1) + 1).c_str());
  REQUIRE(planned >= 3);  // epoch 1 alone is fast
  // Noise may re-fit after epoch 1 by an epoch or so; after epoch 2 the run ends.
  const std::string& last = rec.messages.back();
  INFO(last);
  CHECK(last.find("--time-budget: after epoch 2") == 0);
  CHECK(last.find("fewer epochs fit, 2 instead of ") != std::string::npos);
  CHECK(last.find("; the run ends here") != std::string::npos);
  CHECK(r.epochs == 2);
  CHECK(r.epoch == 2);
  CHECK(rec.epochs.size() == 2);
  CHECK(took < 12.0 + 2.0);  // epoch 2 was already under way when the slowdown began
  const SafeTensors ck = load_safetensors(t.path + "/slow/checkpoint.safetensors");
  CHECK(ck.metadata.at("nala.args").find("epochs=2 ") == 0);
}

// Test-time augmentation against its definition, built here independently:
// each view made from the uint8 image (moved with black coming in, then
// mirrored), normalised, its logits taken alone, the views' logits averaged.
TEST_CASE("trainer: evaluate() with test-time augmentation is the mean of its views' logits", "[trainer]") {
  const Dataset ds = quadrants("tta", 12, 31);
  auto model = fresh_model(17);
  // A fresh head gives nearly equal logits for any image (weights of std
  // 0.02): scaled up, every pixel of a view moves the logits and the loss.
  for (auto& [name, p] : model->named_parameters())
    if (name.rfind("head.", 0) == 0)
      for (int64_t j = 0; j < p.numel(); j++) p.f32()[j] *= 300.0f;
  const int64_t H = kSize, W = kSize;
  auto view_logits = [&](int64_t i, int dy, int dx, bool mirror) {
    Tensor img = Tensor::empty({1, H, W, 1});
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++) {
        const int64_t sx0 = mirror ? W - 1 - x : x;  // mirror the moved image
        const int64_t sy = y + dy, sx = sx0 + dx;
        const bool in = sy >= 0 && sy < H && sx >= 0 && sx < W;
        const float pixel = in ? ds.image(i)[sy * W + sx] / 255.0f : 0.0f;
        img.f32()[y * W + x] = (pixel - ds.mean[0]) / ds.std[0];
      }
    return eval_logits(*model, img).to_vector();
  };
  for (int shift : {0, 2}) {
    for (bool flip : {false, true}) {
      TestTimeAug tta;
      tta.flip = flip, tta.shift = shift;
      INFO("flip " << flip << ", shift " << shift);
      std::vector<std::array<int, 2>> moves = {{0, 0}};
      if (shift) moves.insert(moves.end(), {{-shift, 0}, {0, -shift}, {shift, 0}, {0, shift}});
      CHECK(tta.views() == (int)moves.size() * (flip ? 2 : 1));
      double loss = 0;
      int64_t right = 0;
      for (int64_t i = 0; i < ds.n; i++) {
        std::vector<double> mean(kClasses, 0.0);
        for (auto m : moves)
          for (bool mirror : {false, true}) {
            if (mirror && !flip) continue;
            const std::vector<float> l = view_logits(i, m[0], m[1], mirror);
            for (int64_t k = 0; k < kClasses; k++) mean[k] += l[k] / (double)tta.views();
          }
        const int64_t pred = std::max_element(mean.begin(), mean.end()) - mean.begin();
        right += pred == ds.labels[i];
        double mx = *std::max_element(mean.begin(), mean.end()), z = 0;
        for (double v : mean) z += std::exp(v - mx);
        loss += mx + std::log(z) - mean[ds.labels[i]];
      }
      const EvalResult r = evaluate(*model, ds, 5, 0, nullptr, nullptr, tta);
      CHECK(r.n == ds.n);
      CHECK(r.top1 == (double)right / ds.n);
      CHECK(r.loss == Approx(loss / ds.n).epsilon(1e-5));
      CHECK(r.loss > 0.05);  // not a sure answer, where any view would do
    }
  }
  // The views differ: a shift changes the logits of an untrained model.
  TestTimeAug shifted;
  shifted.shift = 3;
  CHECK(evaluate(*model, ds, 12, 0, nullptr, nullptr, shifted).loss != Approx(evaluate(*model, ds, 12).loss).epsilon(1e-6));
  CHECK(shifted.describe() == "shifts of 3 px: the mean of the logits of 5 views of each image");
}
