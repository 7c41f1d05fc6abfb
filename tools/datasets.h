// tools/datasets.h - the nala program's dataset readers: each fills a
// Dataset (models/train/data.h: images in memory, uint8 (N, H, W, C),
// channels-last, labels, class names, normalisation) from files.
//
// Sources:
//   Fashion-MNIST  gzipped IDX files (train-images-idx3-ubyte.gz, ...), C = 1
//   CIFAR-10       binary batches (data_batch_1..5.bin, test_batch.bin), C = 3
//   image folders  root/<class>/*.{jpg,jpeg,png,bmp}, decoded with stb_image;
//                  which images train and which evaluate: load_folder_split
// Every reader checks what it reads and names the file in its errors.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/train/data.h"

namespace nala {

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

// Every image of a fixed-size set (Fashion-MNIST, CIFAR-10) resized to size
// x size with resize_image's filters (`--img-size`: the paper's models at
// 224 px on these sets). No-op at the set's own size. Refused, naming the
// set, when the result would exceed kMaxResizedBytes or half of the
// machine's physical memory.
constexpr int64_t kMaxResizedBytes = (int64_t)64 << 30;  // 64 GiB
void resize_dataset(Dataset& ds, int size);

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

}  // namespace nala
