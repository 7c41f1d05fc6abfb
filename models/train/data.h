// models/train/data.h - an image classification dataset held in memory, and
// the batch loader that turns it into normalised float batches.
//
// Shape letters: N images in the dataset, B images in a batch, H x W pixels,
// C channels (1 grey, 3 RGB). Images are stored uint8 (N, H, W, C),
// channels-last; labels int64 (N).
//
// A Dataset is plain data: a program fills it from wherever its images are.
// The file readers of the nala program (Fashion-MNIST's IDX files, CIFAR-10's
// batches, image folders) are in tools/datasets.h, outside the library: they
// need zlib and stb_image.
//
// The loader (BatchLoader) shuffles once per epoch with the caller's Rng and
// builds batches on worker threads a few batches ahead of the consumer. Batch
// b of an epoch depends only on the dataset, the options and the Rng state at
// start_epoch: the permutation and one epoch seed are drawn there, and batch
// b's augmentation uses its own Rng seeded from (epoch seed, b). Thread timing
// changes nothing.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "models/model_file.h"
#include "models/train/augment.h"
#include "tensor/rng.h"
#include "tensor/tensor.h"

namespace nala {

struct Dataset {
  std::string name;                  // "fashion-mnist", "cifar10", or the folder root
  int64_t n = 0, h = 0, w = 0, c = 0;
  std::vector<uint8_t> images;       // (N, H, W, C)
  std::vector<int64_t> labels;       // (N), each in [0, classes.size())
  std::vector<std::string> classes;  // class names, index = label
  std::vector<float> mean, std;      // per channel, on the [0, 1] pixel scale, used by the loader
  int64_t skipped = 0;               // image folders with skip_bad: unreadable files left out
  std::vector<std::string> skipped_files;

  int64_t image_size() const { return h * w * c; }
  const uint8_t* image(int64_t i) const { return images.data() + i * image_size(); }
  // Keeps the first n images (all when n is 0 or not smaller).
  void truncate(int64_t n);
};

// Holds out n images of `train` as a validation set (`nala train --val N`):
// a fixed pseudo-random choice, the same on every run and for every training
// seed (so runs of different seeds are chosen on the same images), returned
// in their original order and named "<name> (validation)"; `train` keeps
// the rest, in their original order. n = 0 returns an empty set and changes
// nothing. Refused unless 0 <= n < train.n.
Dataset split_validation(Dataset& train, int64_t n);

// Images per class (labels outside the class list are not counted).
std::vector<int64_t> label_histogram(const Dataset& ds);

// The description a model trained on `train` carries in its files
// (models/model_file.h): the config, and the training set's class names,
// normalisation and image size.
ModelFile model_file_for(const NalaConfig& cfg, const Dataset& train);

// ---------------------------------------------------------------- batches

struct Batch {
  Tensor images;                 // f32 (B, H, W, C), normalised by the dataset mean/std
  Tensor labels;                 // i64 (B)
  std::vector<int64_t> indices;  // which dataset images, in batch order
};

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  bool drop_last = false;  // leave out a last batch smaller than batch_size
  int workers = 1;         // threads building batches (0 = build in next() on the caller's thread)
  int prefetch = 2;        // batches built ahead of the consumer (bounded queue)
  AugmentOptions augment;  // off by default (evaluation)
  // Data-parallel sharding: the epoch's order is cut into global batches of
  // batch_size * world images, and rank takes its batch_size of each, so
  // the ranks together see what one process with the global batch sees.
  // The last global batch may leave a rank fewer (or no) images unless drop_last.
  int rank = 0, world = 1;
  int64_t limit = 0;  // use the first `limit` images of the order only (0 = all)
};

class BatchLoader {
 public:
  // The dataset must outlive the loader.
  BatchLoader(const Dataset& ds, const LoaderOptions& opt);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t num_batches() const;
  // Begin an epoch: draws the order (when shuffling) and the epoch seed from
  // rng. Each image's augmentation draws come from (epoch seed, its position
  // in the order), so they do not depend on the batch size or the sharding.
  // An unfinished previous epoch is abandoned.
  void start_epoch(Rng& rng);
  // The next batch of the epoch in order; false when the epoch is done.
  bool next(Batch& out);
  // Batch b of the current epoch, built on the calling thread (same result as next()).
  Batch build_batch(int64_t b) const;

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  void stop_workers();
  void worker_loop();

  const Dataset& ds_;
  LoaderOptions opt_;
  std::vector<float> lut_;  // (C, 256): normalised value of each uint8 level per channel
  std::vector<int64_t> order_;
  uint64_t epoch_seed_ = 0;
  bool started_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  std::map<int64_t, Slot> ready_;
  int64_t next_build_ = 0, next_take_ = 0;
  bool stop_ = false;
};

}  // namespace nala
