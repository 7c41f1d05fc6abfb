// tools/datasets.h - image classification datasets held in memory, and the
// batch loader that turns them into normalised float batches.
//
// Shape letters: N images in the dataset, B images in a batch, H x W pixels,
// C channels (1 grey, 3 RGB). Images are stored uint8 (N, H, W, C),
// channels-last; labels int64 (N).
//
// Sources:
//   Fashion-MNIST  gzipped IDX files (train-images-idx3-ubyte.gz, ...), C = 1
//   CIFAR-10       binary batches (data_batch_1..5.bin, test_batch.bin), C = 3
//   image folders  root/<class>/*.{jpg,jpeg,png,bmp}, decoded with stb_image;
//                  which images train and which evaluate: load_folder_split
// Every loader checks what it reads and names the file in its errors.
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

#include "tensor/rng.h"
#include "tensor/tensor.h"
#include "tools/augment.h"

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
};

// Input normalisation (per channel, on the [0, 1] pixel scale): the one place
// where each dataset's numbers are chosen. The loaders put them in
// Dataset::mean/std, and `nala train` records the training set's in the model
// file (models/model_file.h), from where eval and predict take them.
struct Normalisation {
  std::vector<float> mean, std;
};
Normalisation fashion_mnist_normalisation();         // mean 0.2860, std 0.3530
Normalisation cifar10_normalisation();               // (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
Normalisation imagenet_normalisation(int channels);  // image folders: ImageNet's (grey: 0.449, 0.226)
// By name: "fashion-mnist", "cifar10", "imagenet"; throws on others or a channel mismatch.
Normalisation normalisation_named(const std::string& name, int channels);

extern const char* const kFashionMnistDir;  // /usr/share/datasets/fashion-mnist
std::vector<std::string> fashion_mnist_classes();
std::vector<std::string> cifar10_classes();

// Fashion-MNIST from dir: train (60000) or t10k (10000) images. Plain
// (uncompressed) IDX files are read too, under the same names without .gz.
Dataset load_fashion_mnist(const std::string& dir = kFashionMnistDir, bool train = true);
// Any IDX pair: images (magic 0x803, N x H x W) and labels (magic 0x801, N),
// gzipped or not. Labels must be below classes.size() when classes are given.
// Each file must be a regular file (nn/files.h); its header is read and
// checked first, and no more than the header promises (at most kMaxIdxBytes)
// is decompressed into memory, so a wrong or endless file is refused early.
constexpr int64_t kMaxIdxBytes = (int64_t)8 << 30;  // 8 GiB decompressed
Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 const std::vector<std::string>& classes = {});
// The same from the decompressed bytes of both files; the names are used in errors.
Dataset parse_idx(const std::vector<uint8_t>& images, const std::vector<uint8_t>& labels,
                  const std::vector<std::string>& classes, const std::string& images_name,
                  const std::string& labels_name);

// CIFAR-10 from dir (or dir/cifar-10-batches-bin): data_batch_1..5 or test_batch.
// Each file must be a regular file of at most kMaxCifarFileBytes (a batch is
// 29.3 MiB), checked before it is read.
constexpr int64_t kMaxCifarFileBytes = (int64_t)1 << 30;  // 1 GiB
Dataset load_cifar10(const std::string& dir, bool train = true);
Dataset load_cifar10_files(const std::vector<std::string>& files);
// The same from the files' bytes in memory (one buffer and one name per file).
Dataset parse_cifar10(const std::vector<std::vector<uint8_t>>& files, const std::vector<std::string>& names);

struct FolderOptions {
  int img_size = 224;        // every image is resized to img_size x img_size
  int channels = 3;          // 1 = grey, 3 = RGB (alpha dropped)
  bool skip_bad = false;     // skip (and count) unreadable images instead of failing
  std::vector<float> mean, std;  // default: ImageNet statistics
};
Dataset load_image_folder(const std::string& root, const FolderOptions& opt = {});

// The class folders under root (hidden ones ignored) and each one's image
// files (.jpg, .jpeg, .png, .bmp), both sorted by name; a label is the
// class's position in this list. Throws when root has no class folder or a
// class folder holds no image. Reads no image.
struct FolderListing {
  std::string root;
  std::vector<std::string> classes;
  std::vector<std::vector<std::string>> files;  // per class, full paths
};
FolderListing list_image_folder(const std::string& root);
// Decodes the listed images (as load_image_folder); `name` becomes Dataset::name.
Dataset load_image_folder(const FolderListing& listing, const FolderOptions& opt, const std::string& name);

// One split of a folder dataset, by this rule:
//   dir/train/ and dir/val/ (or dir/test/ when there is no val/): the training
//     and the evaluation images. Both must hold the same class folders: a
//     class missing from either side is refused, naming it (labels are
//     positions in the class list, so they would shift).
//   no val/ or test/: val_split > 0 holds out that fraction of each class of
//     dir/train/ (or of dir itself when it holds the class folders) for
//     evaluation: round(n * val_split) images, at least 1, spread evenly over
//     the sorted file names, so the same images every time; the rest train.
//     Without val_split, evaluating a plain dir/<class>/ folder uses all of
//     it, and anything else (training on it, evaluating dir/train/) is
//     refused rather than evaluated on the training images.
// val_split is refused beside a val/ or test/ folder.
Dataset load_folder_split(const std::string& dir, bool train, const FolderOptions& opt, float val_split = 0);

std::vector<int64_t> label_histogram(const Dataset& ds);

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
