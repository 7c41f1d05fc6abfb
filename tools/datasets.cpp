// tools/datasets.cpp - Fashion-MNIST (gzipped IDX through zlib), CIFAR-10
// binary batches, image folders (stb_image).
// Shape letters as in tools/datasets.h.
#include "tools/datasets.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <numeric>

#include "nn/files.h"
#include "tools/image.h"

namespace fs = std::filesystem;

namespace nala {

const char* const kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

std::vector<std::string> fashion_mnist_classes() {
  return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
}

std::vector<std::string> cifar10_classes() {
  return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
}

Normalisation fashion_mnist_normalisation() { return {{0.2860f}, {0.3530f}}; }

Normalisation cifar10_normalisation() { return {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}}; }

Normalisation imagenet_normalisation(int channels) { return {imagenet_mean(channels), imagenet_std(channels)}; }

Normalisation normalisation_named(const std::string& name, int channels) {
  Normalisation n;
  if (name == "fashion-mnist") n = fashion_mnist_normalisation();
  else if (name == "cifar10") n = cifar10_normalisation();
  else if (name == "imagenet") n = imagenet_normalisation(channels);
  else NALA_FAIL("unknown normalisation '", name, "' (fashion-mnist, cifar10, imagenet)");
  NALA_CHECK((int)n.mean.size() == channels, "the ", name, " normalisation is for ", n.mean.size(),
             " channel(s), not ", channels);
  return n;
}

namespace {

bool exists(const std::string& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

uint32_t be32(const uint8_t* p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

// Checks the IDX magic (unsigned bytes, ndims dimensions) and returns the dimensions.
std::vector<uint32_t> idx_header(const std::vector<uint8_t>& b, int ndims, const std::string& path) {
  NALA_CHECK(b.size() >= 4, path, ": truncated IDX header (", b.size(), " bytes)");
  uint32_t magic = be32(b.data()), want = 0x800u | (uint32_t)ndims;
  char hex[16];
  std::snprintf(hex, sizeof hex, "0x%08x", magic);
  NALA_CHECK(magic == want, path, ": wrong IDX magic ", hex, " (expected 0x0000080", ndims,
             ": unsigned bytes, ", ndims, " dimension", ndims > 1 ? "s" : "", ")");
  NALA_CHECK(b.size() >= 4 + 4 * (size_t)ndims, path, ": truncated IDX header (", b.size(), " bytes)");
  std::vector<uint32_t> dims;
  for (int k = 0; k < ndims; k++) dims.push_back(be32(b.data() + 4 + 4 * k));
  return dims;
}

// Reads up to n more bytes of g into out; returns how many came (0 at the end).
size_t gz_more(gzFile g, std::vector<uint8_t>& out, size_t n, const std::string& path) {
  const size_t old = out.size();
  out.resize(old + n);
  const int r = gzread(g, out.data() + old, (unsigned)n);
  if (r < 0) {
    int code;
    std::string msg = gzerror(g, &code);
    if (code == Z_ERRNO) msg = std::strerror(errno);
    NALA_FAIL(path, ": cannot read: ", msg);
  }
  out.resize(old + (size_t)r);
  return (size_t)r;
}

// The whole of an IDX file with `ndims` dimensions, decompressed when it is
// gzip (zlib reads plain files as they are). The file is opened through
// nn/files.h (a regular file, or an error naming what it is); the header is
// read and checked first, and at most what it promises plus kTrailing bytes
// is decompressed, so an endless or wrong file costs no memory or time.
std::vector<uint8_t> read_idx_file(const std::string& path, int ndims) {
  constexpr size_t kTrailing = 1 << 20;  // trailing bytes counted exactly up to this
  InputFile file(path, "IDX file");
  const int fd = ::dup(file.fd());  // zlib closes its own descriptor
  NALA_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
  gzFile g = gzdopen(fd, "rb");
  if (!g) {
    ::close(fd);
    NALA_FAIL(path, ": cannot open with zlib (out of memory)");
  }
  struct Closer {
    gzFile g;
    ~Closer() { gzclose(g); }
  } closer{g};
  gzbuffer(g, 1 << 17);
  std::vector<uint8_t> out;
  const size_t head = 4 + 4 * (size_t)ndims;
  while (out.size() < head && gz_more(g, out, head - out.size(), path) > 0) {
  }
  std::vector<uint32_t> dims = idx_header(out, ndims, path);  // magic and length checked here
  long double promised = 1;  // no overflow: at most (2^32)^3
  std::string shape;
  for (uint32_t d : dims) promised *= d, shape += (shape.empty() ? "" : " x ") + std::to_string(d);
  NALA_CHECK(promised + head <= (long double)kMaxIdxBytes, path, ": the header promises ", shape,
             " bytes, more than the limit of ", kMaxIdxBytes, " bytes (corrupt, or not an IDX file)");
  const size_t total = head + (size_t)promised;
  // Reserve what the header promises only up to 64 MiB: a few bytes claiming
  // gigabytes must not allocate them; a real file grows the vector as it is read.
  out.reserve(std::min(total, (size_t)64 << 20));
  const size_t chunk = 1 << 20;
  while (out.size() <= total + kTrailing) {
    if (gz_more(g, out, std::min(chunk, total + kTrailing + 1 - out.size()), path) == 0) break;
  }
  NALA_CHECK(out.size() <= total + kTrailing, path, ": more than ", kTrailing, " unexpected bytes after the ",
             total - head, " bytes the header promises");
  int code;
  gzerror(g, &code);
  NALA_CHECK(code != Z_BUF_ERROR, path, ": truncated gzip stream (the file ends inside the compressed data)");
  return out;
}

// The header and size of an IDX images file (N x H x W unsigned bytes); returns N, H, W.
std::vector<uint32_t> check_idx_images(const std::vector<uint8_t>& ib, const std::string& images_path) {
  std::vector<uint32_t> d = idx_header(ib, 3, images_path);
  NALA_CHECK(d[1] >= 1 && d[1] <= 65536 && d[2] >= 1 && d[2] <= 65536, images_path, ": absurd image size ", d[1],
             "x", d[2]);
  uint64_t need = (uint64_t)d[0] * d[1] * d[2];
  uint64_t have = ib.size() - 16;
  NALA_CHECK(have >= need, images_path, ": truncated: the header promises ", d[0], " images of ", d[1], "x", d[2],
             " (", need, " bytes) but only ", have, " bytes follow");
  NALA_CHECK(have == need, images_path, ": ", have - need, " unexpected bytes after ", d[0], " images of ", d[1],
             "x", d[2]);
  return d;
}

Dataset cifar_from_records(const std::vector<std::vector<uint8_t>>& files, const std::vector<std::string>& names) {
  const int64_t rec = 1 + 3072;
  Dataset ds;
  ds.name = "cifar10";
  ds.h = ds.w = 32;
  ds.c = 3;
  ds.classes = cifar10_classes();
  Normalisation norm = cifar10_normalisation();
  ds.mean = norm.mean;
  ds.std = norm.std;
  for (size_t f = 0; f < files.size(); f++) ds.n += (int64_t)files[f].size() / rec;
  ds.images.resize(ds.n * 3072);
  ds.labels.resize(ds.n);
  int64_t i = 0;
  for (size_t f = 0; f < files.size(); f++) {
    const uint8_t* p = files[f].data();
    for (int64_t r = 0; r < (int64_t)files[f].size() / rec; r++, i++, p += rec) {
      NALA_CHECK(p[0] < 10, names[f], ": record ", r, " has label ", (int)p[0], " (CIFAR-10 labels are 0..9)");
      ds.labels[i] = p[0];
      uint8_t* dst = ds.images.data() + i * 3072;
      for (int ch = 0; ch < 3; ch++)  // CHW planes -> HWC
        for (int px = 0; px < 1024; px++) dst[px * 3 + ch] = p[1 + ch * 1024 + px];
    }
  }
  return ds;
}

std::string lower(std::string s) {
  for (auto& ch : s) ch = (char)std::tolower((unsigned char)ch);
  return s;
}

bool is_image_name(const fs::path& p) {
  std::string e = lower(p.extension().string());
  return e == ".jpg" || e == ".jpeg" || e == ".png" || e == ".bmp";
}

}  // namespace

// ---------------------------------------------------------------- IDX / Fashion-MNIST

Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 const std::vector<std::string>& classes) {
  std::vector<uint8_t> ib = read_idx_file(images_path, 3);
  check_idx_images(ib, images_path);  // a bad images file is reported before the labels file is read
  std::vector<uint8_t> lb = read_idx_file(labels_path, 1);
  return parse_idx(ib, lb, classes, images_path, labels_path);
}

Dataset parse_idx(const std::vector<uint8_t>& ib, const std::vector<uint8_t>& lb,
                  const std::vector<std::string>& classes, const std::string& images_path,
                  const std::string& labels_path) {
  std::vector<uint32_t> d = check_idx_images(ib, images_path);
  std::vector<uint32_t> ld = idx_header(lb, 1, labels_path);
  NALA_CHECK(lb.size() - 8 >= ld[0], labels_path, ": truncated: the header promises ", ld[0], " labels but only ",
             lb.size() - 8, " bytes follow");
  NALA_CHECK(lb.size() - 8 == ld[0], labels_path, ": ", lb.size() - 8 - ld[0], " unexpected bytes after ", ld[0],
             " labels");
  NALA_CHECK(ld[0] == d[0], "IDX: ", images_path, " holds ", d[0], " images but ", labels_path, " holds ", ld[0],
             " labels");
  Dataset ds;
  ds.name = images_path;
  ds.n = d[0], ds.h = d[1], ds.w = d[2], ds.c = 1;
  ds.images.assign(ib.begin() + 16, ib.end());
  ds.labels.resize(ds.n);
  int64_t max_label = -1;
  for (int64_t i = 0; i < ds.n; i++) {
    ds.labels[i] = lb[8 + i];
    max_label = std::max(max_label, ds.labels[i]);
    NALA_CHECK(classes.empty() || ds.labels[i] < (int64_t)classes.size(), labels_path, ": label ", ds.labels[i],
               " of image ", i, " is out of range (", classes.size(), " classes)");
  }
  ds.classes = classes;
  for (int64_t k = 0; classes.empty() && k <= max_label; k++) ds.classes.push_back(std::to_string(k));
  ds.mean = {0.5f};
  ds.std = {0.5f};
  return ds;
}

Dataset load_fashion_mnist(const std::string& dir, bool train) {
  NALA_CHECK(exists(dir), "Fashion-MNIST: directory ", dir, " not found");
  std::string pre = dir + "/" + (train ? "train" : "t10k");
  auto pick = [](const std::string& base) { return exists(base + ".gz") || !exists(base) ? base + ".gz" : base; };
  Dataset ds = load_idx(pick(pre + "-images-idx3-ubyte"), pick(pre + "-labels-idx1-ubyte"), fashion_mnist_classes());
  ds.name = "fashion-mnist";
  Normalisation norm = fashion_mnist_normalisation();
  ds.mean = norm.mean;
  ds.std = norm.std;
  return ds;
}

// ---------------------------------------------------------------- CIFAR-10

Dataset load_cifar10_files(const std::vector<std::string>& files) {
  NALA_CHECK(!files.empty(), "CIFAR-10: no files given");
  std::vector<std::vector<uint8_t>> data;
  for (auto& f : files) {
    const std::string b = read_file(f, "CIFAR-10 batch", kMaxCifarFileBytes);
    data.emplace_back(b.begin(), b.end());
  }
  return parse_cifar10(data, files);
}

Dataset parse_cifar10(const std::vector<std::vector<uint8_t>>& files, const std::vector<std::string>& names) {
  NALA_CHECK(!files.empty() && files.size() == names.size(), "CIFAR-10: ", files.size(), " buffers but ",
             names.size(), " names");
  for (size_t k = 0; k < files.size(); k++) {
    const std::string& f = names[k];
    NALA_CHECK(!files[k].empty(), "CIFAR-10: ", f, ": empty file");
    NALA_CHECK(files[k].size() % 3073 == 0, "CIFAR-10: ", f, ": truncated or not a CIFAR-10 batch: ",
               files[k].size(), " bytes is not a whole number of 3073-byte records (1 label + 32x32x3 pixels)");
  }
  return cifar_from_records(files, names);
}

void resize_dataset(Dataset& ds, int size) {
  NALA_CHECK(size >= 1 && size <= 8192, ds.name, ": bad image size ", size);
  if (ds.h == size && ds.w == size) return;
  const int64_t per = (int64_t)size * size * ds.c;
  // at most kMaxResizedBytes, and at most half of this machine's memory
  const int64_t pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  const int64_t most = pages > 0 && page > 0 ? std::min(kMaxResizedBytes, pages / 2 * page) : kMaxResizedBytes;
  NALA_CHECK(ds.n <= most / per, ds.name, ": ", ds.n, " images at ", size, "x", size, " would take ",
             (double)per * ds.n / 1048576.0, " MiB (at most ", most >> 20,
             " MiB: half of this machine's memory, 64 GiB at most); use a smaller --img-size");
  std::vector<uint8_t> out((size_t)(per * ds.n));
  std::string error;  // the first failure, if any (no exception may leave the parallel loop)
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t i = 0; i < ds.n; i++) {
    try {
      Image img;
      img.h = (int)ds.h, img.w = (int)ds.w, img.c = (int)ds.c;
      img.pixels.assign(ds.image(i), ds.image(i) + ds.image_size());
      const Image r = resize_image(img, size, size);
      std::copy(r.pixels.begin(), r.pixels.end(), out.begin() + i * per);
    } catch (const std::exception& e) {
#pragma omp critical(nala_resize_dataset)
      if (error.empty()) error = "image " + std::to_string(i) + ": " + e.what();
    }
  }
  NALA_CHECK(error.empty(), ds.name, ": resizing to ", size, "x", size, " failed at ", error);
  ds.images = std::move(out);
  ds.h = ds.w = size;
}

Dataset load_cifar10(const std::string& dir, bool train) {
  std::string probe = train ? "data_batch_1.bin" : "test_batch.bin";
  std::string base = exists(dir + "/" + probe)                             ? dir
                     : exists(dir + "/cifar-10-batches-bin/" + probe) ? dir + "/cifar-10-batches-bin"
                                                                        : "";
  NALA_CHECK(!base.empty(), "CIFAR-10: no ", probe, " in ", dir, " or ", dir, "/cifar-10-batches-bin");
  std::vector<std::string> files;
  if (train)
    for (int k = 1; k <= 5; k++) files.push_back(base + "/data_batch_" + std::to_string(k) + ".bin");
  else
    files.push_back(base + "/test_batch.bin");
  return load_cifar10_files(files);
}

// ---------------------------------------------------------------- image folders

FolderListing list_image_folder(const std::string& root) {
  std::error_code ec;
  NALA_CHECK(fs::exists(root, ec), "image folder: root ", root, " does not exist");
  NALA_CHECK(fs::is_directory(root, ec), "image folder: root ", root, " is not a directory");
  FolderListing l;
  l.root = root;
  for (auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string()[0] != '.') l.classes.push_back(e.path().filename().string());
  std::sort(l.classes.begin(), l.classes.end());
  NALA_CHECK(!l.classes.empty(), "image folder ", root, ": no class subfolders (expected root/<class>/*.jpg)");
  for (const std::string& cls : l.classes) {
    std::string cdir = root + "/" + cls;
    std::vector<std::string> files;
    for (auto& e : fs::directory_iterator(cdir))
      if (e.is_regular_file() && is_image_name(e.path())) files.push_back(e.path().string());
    NALA_CHECK(!files.empty(), "image folder ", root, ": class folder ", cdir,
               " holds no images (.jpg, .jpeg, .png, .bmp)");
    std::sort(files.begin(), files.end());
    l.files.push_back(std::move(files));
  }
  return l;
}

Dataset load_image_folder(const std::string& root, const FolderOptions& opt) {
  return load_image_folder(list_image_folder(root), opt, root);
}

Dataset load_image_folder(const FolderListing& listing, const FolderOptions& opt, const std::string& name) {
  const std::string& root = listing.root;
  NALA_CHECK(opt.channels == 1 || opt.channels == 3, "image folder ", root, ": channels must be 1 or 3, got ",
             opt.channels);
  NALA_CHECK(opt.img_size >= 1 && opt.img_size <= 8192, "image folder ", root, ": bad img_size ", opt.img_size);
  NALA_CHECK(listing.files.size() == listing.classes.size(), "image folder ", root, ": ", listing.classes.size(),
             " classes but ", listing.files.size(), " file lists");
  Dataset ds;
  ds.name = name;
  ds.classes = listing.classes;
  std::vector<std::string> paths;
  for (size_t k = 0; k < listing.files.size(); k++)
    for (auto& f : listing.files[k]) {
      paths.push_back(f);
      ds.labels.push_back((int64_t)k);
    }
  NALA_CHECK(!paths.empty(), "image folder ", root, ": no images");
  const int64_t S = opt.img_size, C = opt.channels, n = (int64_t)paths.size();
  ds.h = ds.w = S;
  ds.c = C;
  ds.images.resize(n * S * S * C);
  std::vector<std::string> errors(n);
  // Decoding dominates; stb keeps its failure reason per thread.
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t i = 0; i < n; i++) {
    try {
      Image img = load_image_u8(paths[i], (int)C, (int)S);
      std::memcpy(ds.images.data() + i * S * S * C, img.pixels.data(), img.pixels.size());
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  }
  int64_t kept = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!errors[i].empty()) {
      NALA_CHECK(opt.skip_bad, errors[i], " [image folder ", root, "; --skip-bad skips unreadable images]");
      ds.skipped++;
      ds.skipped_files.push_back(paths[i]);
      continue;
    }
    if (kept != i) {
      std::memmove(ds.images.data() + kept * S * S * C, ds.images.data() + i * S * S * C, S * S * C);
      ds.labels[kept] = ds.labels[i];
    }
    kept++;
  }
  NALA_CHECK(kept > 0, "image folder ", root, ": none of the ", n, " images could be read");
  if (ds.skipped) {
    std::string first;
    for (auto& e : errors)
      if (!e.empty()) {
        first = e;
        break;
      }
    std::fprintf(stderr, "image folder %s: skipped %lld unreadable image(s), first: %s\n", root.c_str(),
                 (long long)ds.skipped, first.c_str());
  }
  ds.n = kept;
  ds.images.resize(kept * S * S * C);
  ds.labels.resize(kept);
  Normalisation norm = imagenet_normalisation((int)C);
  ds.mean = opt.mean.empty() ? norm.mean : opt.mean;
  ds.std = opt.std.empty() ? norm.std : opt.std;
  NALA_CHECK((int64_t)ds.mean.size() == C && (int64_t)ds.std.size() == C, "image folder ", root, ": need ", C,
             " mean/std values");
  return ds;
}

// ---------------------------------------------------------------- folder splits

namespace {

bool is_dir(const std::string& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

std::string names_list(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", '" : "'") + v[i] + "'";
  return s;
}

// Refuses two class lists that differ, naming each class on one side only.
void check_same_classes(const FolderListing& train, const FolderListing& eval, const std::string& dir,
                        const std::string& eval_sub) {
  std::vector<std::string> missing, extra;
  std::set_difference(train.classes.begin(), train.classes.end(), eval.classes.begin(), eval.classes.end(),
                      std::back_inserter(missing));
  std::set_difference(eval.classes.begin(), eval.classes.end(), train.classes.begin(), train.classes.end(),
                      std::back_inserter(extra));
  if (missing.empty() && extra.empty()) return;
  std::string what;
  if (!missing.empty())
    what += eval_sub + "/ lacks class" + (missing.size() > 1 ? "es " : " ") + names_list(missing) + " of train/";
  if (!extra.empty())
    what += (what.empty() ? "" : "; ") + eval_sub + "/ has class" + (extra.size() > 1 ? "es " : " ") +
            names_list(extra) + " that train/ lacks";
  NALA_FAIL("image folder ", dir, ": ", what, ". Both splits must hold the same class folders: a label is the "
            "class's position in the sorted list, so any difference shifts the labels");
}

// The held-out part (held = true) or the rest of each class: round(n * f)
// images, at least 1, evenly spread: file i is held out when
// floor((i + 1) * h / n) > floor(i * h / n).
FolderListing hold_out(const FolderListing& all, float f, bool held) {
  FolderListing out = all;
  for (size_t k = 0; k < all.classes.size(); k++) {
    const int64_t n = (int64_t)all.files[k].size();
    NALA_CHECK(n >= 2, "image folder ", all.root, ": class '", all.classes[k], "' has ", n,
               " image; holding images out needs at least 2 per class");
    const int64_t h = std::min(n - 1, std::max<int64_t>(1, std::llround(n * (double)f)));
    out.files[k].clear();
    for (int64_t i = 0; i < n; i++)
      if (((i + 1) * h / n > i * h / n) == held) out.files[k].push_back(all.files[k][i]);
  }
  return out;
}

}  // namespace

Dataset load_folder_split(const std::string& dir, bool train, const FolderOptions& opt, float val_split) {
  NALA_CHECK(val_split >= 0 && val_split < 1, "image folder ", dir, ": val_split ", val_split, " is outside [0, 1)");
  std::error_code ec;
  NALA_CHECK(fs::exists(dir, ec), "image folder: root ", dir, " does not exist");
  const bool has_train = is_dir(dir + "/train");
  const std::string eval_sub = is_dir(dir + "/val") ? "val" : is_dir(dir + "/test") ? "test" : "";
  if (!eval_sub.empty()) {
    NALA_CHECK(val_split == 0, "image folder ", dir, " has ", eval_sub,
               "/: its images are the evaluation split; --val-split is for folders without one");
    FolderListing ev = list_image_folder(dir + "/" + eval_sub);
    if (!has_train) {
      NALA_CHECK(!train, "image folder ", dir, " has ", eval_sub, "/ but no train/ to train on");
      return load_image_folder(ev, opt, ev.root);
    }
    FolderListing tr = list_image_folder(dir + "/train");
    check_same_classes(tr, ev, dir, eval_sub);
    return train ? load_image_folder(tr, opt, tr.root) : load_image_folder(ev, opt, ev.root);
  }
  const std::string root = has_train ? dir + "/train" : dir;
  FolderListing all = list_image_folder(root);
  if (val_split > 0) {
    char pct[32];
    std::snprintf(pct, sizeof pct, "%g%%", 100.0 * val_split);
    FolderListing part = hold_out(all, val_split, !train);
    std::string name = root + (train ? " [without the " : " [the ") + pct + " of each class held out by --val-split]";
    return load_image_folder(part, opt, name);
  }
  NALA_CHECK(!has_train, "image folder ", dir, " has train/ but no val/ or test/ to evaluate on. Add ", dir,
             "/val/<class>/, or pass --val-split F to hold out a fraction F of each class of train/ (the same "
             "images every time)");
  NALA_CHECK(!train, "image folder ", dir, " has no train/ and val/ subfolders, so training would be evaluated on "
             "its own images. Pass --val-split F to hold out a fraction F of each class for evaluation (e.g. "
             "--val-split 0.1; the same images every time), or split it into ", dir, "/train/<class>/ and ", dir,
             "/val/<class>/");
  return load_image_folder(all, opt, root);
}

}  // namespace nala
