// models/train/data.cpp - see data.h.
#include "models/train/data.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "tensor/error.h"

namespace nala {

void Dataset::truncate(int64_t keep) {
  if (keep <= 0 || keep >= n) return;
  n = keep;
  images.resize(n * image_size());
  labels.resize(n);
}

Dataset split_validation(Dataset& train, int64_t n) {
  NALA_CHECK(n >= 0 && n < train.n, "--val ", n, ": ", train.name, " has ", train.n,
             " training images; the validation split must leave at least one to train on");
  Dataset val;
  val.name = train.name + " (validation)";
  val.h = train.h, val.w = train.w, val.c = train.c;
  val.classes = train.classes, val.mean = train.mean, val.std = train.std;
  if (n == 0) return val;
  // A fixed seed, independent of --seed: the split is a property of the data.
  Rng rng(0x76616c6964ULL);
  std::vector<int64_t> perm = rng.permutation(train.n);
  std::vector<char> held(train.n, 0);
  for (int64_t i = 0; i < n; i++) held[perm[i]] = 1;
  const int64_t sz = train.image_size();
  std::vector<uint8_t> keep_images;
  std::vector<int64_t> keep_labels;
  keep_images.reserve((train.n - n) * sz), keep_labels.reserve(train.n - n);
  val.images.reserve(n * sz), val.labels.reserve(n);
  for (int64_t i = 0; i < train.n; i++) {
    auto& imgs = held[i] ? val.images : keep_images;
    imgs.insert(imgs.end(), train.image(i), train.image(i) + sz);
    (held[i] ? val.labels : keep_labels).push_back(train.labels[i]);
  }
  val.n = n;
  train.images.swap(keep_images), train.labels.swap(keep_labels);
  train.n -= n;
  return val;
}

std::vector<int64_t> label_histogram(const Dataset& ds) {
  std::vector<int64_t> h(ds.classes.size(), 0);
  for (int64_t l : ds.labels)
    if (l >= 0 && l < (int64_t)h.size()) h[l]++;
  return h;
}

ModelFile model_file_for(const NalaConfig& cfg, const Dataset& train) {
  ModelFile mf;
  mf.config = cfg;
  mf.classes = train.classes;
  mf.mean = train.mean, mf.std = train.std;
  mf.height = train.h, mf.width = train.w;
  return mf;
}

// ---------------------------------------------------------------- batch loader

namespace {
uint64_t mix_seed(uint64_t seed, uint64_t b) {  // splitmix64 of (seed, batch index)
  uint64_t z = seed + (b + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
}  // namespace

BatchLoader::BatchLoader(const Dataset& ds, const LoaderOptions& opt) : ds_(ds), opt_(opt) {
  NALA_CHECK(opt.batch_size > 0, "BatchLoader: batch_size must be positive, got ", opt.batch_size);
  NALA_CHECK(opt.workers >= 0 && opt.prefetch >= 1, "BatchLoader: need workers >= 0 and prefetch >= 1, got ",
             opt.workers, " and ", opt.prefetch);
  NALA_CHECK(ds.c >= 1 && (int64_t)ds.images.size() == ds.n * ds.image_size() && (int64_t)ds.labels.size() == ds.n,
             "BatchLoader: dataset ", ds.name, " is inconsistent (", ds.n, " images of ", ds.h, "x", ds.w, "x", ds.c,
             ", ", ds.images.size(), " bytes, ", ds.labels.size(), " labels)");
  NALA_CHECK(opt.world >= 1 && opt.rank >= 0 && opt.rank < opt.world && opt.limit >= 0, "BatchLoader: rank ",
             opt.rank, " of ", opt.world, ", limit ", opt.limit);
  std::vector<float> mean = ds.mean, std = ds.std;
  if (mean.empty()) mean.assign(ds.c, 0.0f);
  if (std.empty()) std.assign(ds.c, 1.0f);
  NALA_CHECK((int64_t)mean.size() == ds.c && (int64_t)std.size() == ds.c, "BatchLoader: dataset ", ds.name, " has ",
             ds.c, " channels but ", mean.size(), " means and ", std.size(), " stds");
  lut_.resize(ds.c * 256);
  for (int64_t ch = 0; ch < ds.c; ch++)
    for (int v = 0; v < 256; v++) lut_[ch * 256 + v] = (v / 255.0f - mean[ch]) / std[ch];
}

BatchLoader::~BatchLoader() { stop_workers(); }

int64_t BatchLoader::num_batches() const {
  const int64_t n = opt_.limit ? std::min(opt_.limit, ds_.n) : ds_.n, global = opt_.batch_size * opt_.world;
  return opt_.drop_last ? n / global : (n + global - 1) / global;
}

void BatchLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void BatchLoader::start_epoch(Rng& rng) {
  stop_workers();
  if (opt_.shuffle) {
    order_ = rng.permutation(ds_.n);
  } else {
    order_.resize(ds_.n);
    std::iota(order_.begin(), order_.end(), 0);
  }
  epoch_seed_ = rng.next_u64();
  started_ = true;
  ready_.clear();
  next_build_ = next_take_ = 0;
  stop_ = false;
  for (int k = 0; k < opt_.workers; k++) threads_.emplace_back([this] { worker_loop(); });
}

void BatchLoader::worker_loop() {
  const int64_t nb = num_batches();
  for (;;) {
    int64_t b;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || next_build_ >= nb || next_build_ < next_take_ + opt_.prefetch; });
      if (stop_ || next_build_ >= nb) return;
      b = next_build_++;
    }
    Slot s;
    try {
      s.batch = build_batch(b);
    } catch (...) {
      s.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      ready_[b] = std::move(s);
    }
    cv_.notify_all();
  }
}

bool BatchLoader::next(Batch& out) {
  NALA_CHECK(started_, "BatchLoader: call start_epoch before next");
  if (next_take_ >= num_batches()) return false;
  if (opt_.workers == 0) {
    out = build_batch(next_take_++);
    return true;
  }
  Slot s;
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return ready_.count(next_take_) > 0; });
    s = std::move(ready_[next_take_]);
    ready_.erase(next_take_);
    next_take_++;
  }
  cv_.notify_all();
  if (s.error) std::rethrow_exception(s.error);
  out = std::move(s.batch);
  return true;
}

Batch BatchLoader::build_batch(int64_t b) const {
  NALA_CHECK(started_, "BatchLoader: call start_epoch before building batches");
  NALA_CHECK(b >= 0 && b < num_batches(), "BatchLoader: batch ", b, " out of range (", num_batches(), " batches)");
  const int64_t n = opt_.limit ? std::min(opt_.limit, ds_.n) : ds_.n;
  const int64_t start = std::min(n, b * opt_.batch_size * opt_.world + opt_.rank * opt_.batch_size);
  const int64_t B = std::min(opt_.batch_size, n - start);
  const int H = (int)ds_.h, W = (int)ds_.w, C = (int)ds_.c;
  const int64_t img = ds_.image_size();
  Batch out;
  out.images = Tensor::empty({B, ds_.h, ds_.w, ds_.c});
  out.labels = Tensor::empty({B}, DType::I64);
  out.indices.assign(order_.begin() + start, order_.begin() + start + B);
  float* dst = out.images.f32();
  int64_t* lab = out.labels.i64();
  std::vector<uint8_t> scratch(img);
  const AugmentOptions& aug = opt_.augment;
  for (int64_t i = 0; i < B; i++) {
    int64_t idx = out.indices[i];
    Rng rng(mix_seed(epoch_seed_, (uint64_t)(start + i)));
    lab[i] = ds_.labels[idx];
    const uint8_t* src = ds_.image(idx);
    if (aug.crop_pad > 0 || aug.hflip) {
      std::memcpy(scratch.data(), src, img);
      augment_geometric(scratch.data(), H, W, C, aug, rng);
      src = scratch.data();
    }
    float* o = dst + i * img;
    for (int64_t p = 0; p < (int64_t)H * W; p++)
      for (int ch = 0; ch < C; ch++) o[p * C + ch] = lut_[ch * 256 + src[p * C + ch]];
    if (aug.erase_prob > 0) random_erase(o, H, W, C, aug, rng);
  }
  return out;
}

}  // namespace nala
