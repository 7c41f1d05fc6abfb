// tests/test_datasets.cpp - IDX / Fashion-MNIST, CIFAR-10, image folders,
// single-image loading, augmentation invariants and the batch loader's
// determinism. Fixtures are generated in temp directories.
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "models/train/augment.h"
#include "models/train/data.h"
#include "stb/stb_image_write.h"
#include "tests/helpers.h"
#include "tests/process.h"
#include "tools/datasets.h"
#include "tools/image.h"

using namespace nala;
using namespace nala::test;
namespace fs = std::filesystem;

namespace {


using Bytes = std::vector<uint8_t>;

void write_file(const std::string& path, const Bytes& b) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write((const char*)b.data(), (std::streamsize)b.size());
}

void write_gz(const std::string& path, const Bytes& b) {
  gzFile g = gzopen(path.c_str(), "wb");
  REQUIRE(g != nullptr);
  REQUIRE(gzwrite(g, b.data(), (unsigned)b.size()) == (int)b.size());
  gzclose(g);
}

Bytes read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void put_be32(Bytes& b, uint32_t v) {
  for (int k = 3; k >= 0; k--) b.push_back((uint8_t)(v >> (8 * k)));
}

Bytes idx_images(uint32_t n, uint32_t h, uint32_t w, uint32_t magic = 0x803) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, n);
  put_be32(b, h);
  put_be32(b, w);
  for (uint32_t i = 0; i < n * h * w; i++) b.push_back((uint8_t)(i * 7 + 3));
  return b;
}

Bytes idx_labels(const Bytes& labels) {
  Bytes b;
  put_be32(b, 0x801);
  put_be32(b, (uint32_t)labels.size());
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

// A 16-bit PNG (stb_image_write only writes 8-bit ones): every sample = value.
Bytes png16(int w, int h, int channels, uint16_t value) {
  Bytes raw;
  for (int y = 0; y < h; y++) {
    raw.push_back(0);  // filter: none
    for (int k = 0; k < w * channels; k++) raw.push_back(value >> 8), raw.push_back(value & 0xFF);
  }
  uLongf zlen = compressBound(raw.size());
  Bytes z(zlen);
  REQUIRE(compress2(z.data(), &zlen, raw.data(), raw.size(), 6) == Z_OK);
  z.resize(zlen);
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  auto chunk = [&](const char* type, const Bytes& data) {
    put_be32(png, (uint32_t)data.size());
    Bytes td(type, type + 4);
    td.insert(td.end(), data.begin(), data.end());
    png.insert(png.end(), td.begin(), td.end());
    put_be32(png, (uint32_t)crc32(0, td.data(), (uInt)td.size()));
  };
  Bytes ihdr;
  put_be32(ihdr, w);
  put_be32(ihdr, h);
  ihdr.insert(ihdr.end(), {16, (uint8_t)(channels == 3 ? 2 : 0), 0, 0, 0});
  chunk("IHDR", ihdr);
  chunk("IDAT", z);
  chunk("IEND", {});
  return png;
}

// A w x h image of one colour (c values).
std::vector<uint8_t> solid(int w, int h, std::vector<uint8_t> colour) {
  std::vector<uint8_t> p;
  for (int k = 0; k < w * h; k++) p.insert(p.end(), colour.begin(), colour.end());
  return p;
}

}  // namespace

// ---------------------------------------------------------------- IDX

TEST_CASE("datasets: resize_dataset (--img-size on Fashion-MNIST and CIFAR-10)", "[io]") {
  TempDir t;
  write_gz(t.path + "/im.gz", idx_images(3, 4, 6));
  write_gz(t.path + "/lb.gz", idx_labels({1, 2, 3}));
  Dataset ds = load_idx(t.path + "/im.gz", t.path + "/lb.gz");
  const std::vector<uint8_t> before = ds.images;
  resize_dataset(ds, 4);  // not square: resized
  REQUIRE(ds.n == 3);
  REQUIRE(ds.h == 4);
  REQUIRE(ds.w == 4);
  REQUIRE(ds.images.size() == 3u * 16);
  REQUIRE(ds.labels == std::vector<int64_t>{1, 2, 3});
  // each image is resize_image of its own pixels
  for (int64_t i = 0; i < 3; i++) {
    Image img;
    img.h = 4, img.w = 6, img.c = 1;
    img.pixels.assign(before.begin() + i * 24, before.begin() + (i + 1) * 24);
    const Image r = resize_image(img, 4, 4);
    REQUIRE(std::vector<uint8_t>(ds.image(i), ds.image(i) + 16) == r.pixels);
  }
  // a constant image stays constant when enlarged; the set's own size is a no-op
  Dataset flat;
  flat.name = "flat", flat.n = 2, flat.h = 2, flat.w = 2, flat.c = 3;
  flat.images.assign(2 * 12, 77);
  flat.labels = {0, 1};
  resize_dataset(flat, 2);
  REQUIRE(flat.images.size() == 24u);
  resize_dataset(flat, 9);
  REQUIRE(flat.h == 9);
  REQUIRE(flat.c == 3);
  REQUIRE(flat.images == std::vector<uint8_t>(2 * 9 * 9 * 3, 77));
  // too large: refused before allocating, naming the set
  flat.n = (int64_t)1 << 40;
  REQUIRE_THROWS_WITH(resize_dataset(flat, 512), Catch::Contains("flat") && Catch::Contains("--img-size"));
}

TEST_CASE("datasets: gzipped IDX files load and bad ones are refused", "[io]") {
  TempDir t;
  std::string im = t.path + "/im.gz", lb = t.path + "/lb.gz";
  write_gz(im, idx_images(5, 4, 3));
  write_gz(lb, idx_labels({3, 0, 9, 1, 1}));
  Dataset ds = load_idx(im, lb, fashion_mnist_classes());
  REQUIRE(ds.n == 5);
  REQUIRE(ds.h == 4);
  REQUIRE(ds.w == 3);
  REQUIRE(ds.c == 1);
  REQUIRE(ds.labels == std::vector<int64_t>{3, 0, 9, 1, 1});
  REQUIRE(ds.image(2)[5] == (uint8_t)((2 * 12 + 5) * 7 + 3));
  REQUIRE(label_histogram(ds) == std::vector<int64_t>{1, 2, 0, 1, 0, 0, 0, 0, 0, 1});

  // Plain (uncompressed) IDX reads the same; classes default to "0".."max".
  write_file(t.path + "/im.raw", idx_images(5, 4, 3));
  write_file(t.path + "/lb.raw", idx_labels({3, 0, 9, 1, 1}));
  Dataset raw = load_idx(t.path + "/im.raw", t.path + "/lb.raw");
  REQUIRE(raw.images == ds.images);
  REQUIRE(raw.classes.size() == 10);

  // Truncated pixel data.
  Bytes shortb = idx_images(5, 4, 3);
  shortb.resize(shortb.size() - 7);
  write_gz(t.path + "/short.gz", shortb);
  REQUIRE_THROWS_WITH(load_idx(t.path + "/short.gz", lb),
                      Catch::Contains("short.gz") && Catch::Contains("truncated: the header promises 5 images"));
  // Truncated gzip stream.
  Bytes gz = read_file(im);
  gz.resize(gz.size() / 2);
  write_file(t.path + "/cut.gz", gz);
  REQUIRE_THROWS_WITH(load_idx(t.path + "/cut.gz", lb), Catch::Contains("cut.gz") && Catch::Contains("truncated"));
  // Wrong magic (a labels file where images belong, and a made-up one).
  REQUIRE_THROWS_WITH(load_idx(lb, lb), Catch::Contains("lb.gz") && Catch::Contains("wrong IDX magic 0x00000801"));
  write_gz(t.path + "/magic.gz", idx_images(5, 4, 3, 0x0D03));
  REQUIRE_THROWS_WITH(load_idx(t.path + "/magic.gz", lb), Catch::Contains("magic.gz") && Catch::Contains("0x00000d03"));
  // Counts that disagree, labels out of range, trailing bytes, a missing file.
  write_gz(t.path + "/lb4.gz", idx_labels({1, 2, 3, 4}));
  REQUIRE_THROWS_WITH(load_idx(im, t.path + "/lb4.gz"), Catch::Contains("holds 5 images but"));
  write_gz(t.path + "/lbbad.gz", idx_labels({1, 2, 3, 4, 10}));
  REQUIRE_THROWS_WITH(load_idx(im, t.path + "/lbbad.gz", fashion_mnist_classes()),
                      Catch::Contains("lbbad.gz") && Catch::Contains("label 10 of image 4 is out of range"));
  Bytes longb = idx_images(5, 4, 3);
  longb.push_back(1);
  write_gz(t.path + "/long.gz", longb);
  REQUIRE_THROWS_WITH(load_idx(t.path + "/long.gz", lb), Catch::Contains("1 unexpected bytes"));
  REQUIRE_THROWS_WITH(load_idx(t.path + "/nope.gz", lb), Catch::Contains("nope.gz") && Catch::Contains("cannot open"));
  REQUIRE_THROWS_WITH(load_fashion_mnist(t.path + "/nodir"), Catch::Contains("nodir") && Catch::Contains("not found"));
}

TEST_CASE("datasets: the installed Fashion-MNIST loads completely", "[io]") {
  if (!fs::exists(kFashionMnistDir)) {
    WARN("Fashion-MNIST not installed at " << kFashionMnistDir << "; skipped");
    return;
  }
  Dataset tr = load_fashion_mnist();
  REQUIRE(tr.n == 60000);
  REQUIRE((tr.h == 28 && tr.w == 28 && tr.c == 1));
  REQUIRE(tr.images.size() == 60000u * 784);
  REQUIRE(tr.classes.size() == 10);
  REQUIRE(tr.classes[0] == "T-shirt/top");
  REQUIRE(tr.classes[9] == "Ankle boot");
  REQUIRE(label_histogram(tr) == std::vector<int64_t>(10, 6000));
  double mean = 0;
  for (uint8_t v : tr.images) mean += v;
  mean /= 255.0 * tr.images.size();
  REQUIRE(std::fabs(mean - 0.2860) < 5e-4);  // the published statistic
  Dataset te = load_fashion_mnist(kFashionMnistDir, false);
  REQUIRE(te.n == 10000);
  REQUIRE(label_histogram(te) == std::vector<int64_t>(10, 1000));
}

// ---------------------------------------------------------------- CIFAR-10

TEST_CASE("datasets: CIFAR-10 binary batches, CHW to HWC, truncation", "[io]") {
  TempDir t;
  auto records = [](int n, int first_label) {
    Bytes b;
    for (int r = 0; r < n; r++) {
      b.push_back((uint8_t)((first_label + r) % 10));
      for (int ch = 0; ch < 3; ch++)
        for (int px = 0; px < 1024; px++) b.push_back((uint8_t)(px + 50 * ch + r));
    }
    return b;
  };
  std::string d = t.path + "/cifar-10-batches-bin";
  for (int k = 1; k <= 5; k++) write_file(d + "/data_batch_" + std::to_string(k) + ".bin", records(2, k));
  write_file(d + "/test_batch.bin", records(3, 7));
  Dataset tr = load_cifar10(t.path, true);
  REQUIRE(tr.n == 10);
  REQUIRE((tr.h == 32 && tr.w == 32 && tr.c == 3));
  REQUIRE(tr.classes[0] == "airplane");
  REQUIRE(tr.labels == std::vector<int64_t>{1, 2, 2, 3, 3, 4, 4, 5, 5, 6});
  // Image 3 is record 1 of batch 2: pixel (y, x) channel ch = y*32 + x + 50*ch + 1.
  const uint8_t* im = tr.image(3);
  for (int y : {0, 5, 31})
    for (int x : {0, 17, 31})
      for (int ch = 0; ch < 3; ch++) REQUIRE(im[(y * 32 + x) * 3 + ch] == (uint8_t)(y * 32 + x + 50 * ch + 1));
  Dataset te = load_cifar10(d, false);  // the batches directory itself works too
  REQUIRE(te.n == 3);
  REQUIRE(te.labels == std::vector<int64_t>{7, 8, 9});
  REQUIRE(te.mean.size() == 3);

  Bytes cut = records(2, 0);
  cut.resize(cut.size() - 100);
  write_file(t.path + "/cut.bin", cut);
  REQUIRE_THROWS_WITH(load_cifar10_files({t.path + "/cut.bin"}),
                      Catch::Contains("cut.bin") && Catch::Contains("truncated"));
  Bytes bad = records(1, 0);
  bad[0] = 12;
  write_file(t.path + "/bad.bin", bad);
  REQUIRE_THROWS_WITH(load_cifar10_files({t.path + "/bad.bin"}), Catch::Contains("bad.bin") && Catch::Contains("label 12"));
  REQUIRE_THROWS_WITH(load_cifar10(t.path + "/none"), Catch::Contains("no data_batch_1.bin"));
}

// ---------------------------------------------------------------- image folders

TEST_CASE("datasets: image folders decode, convert and resize", "[io]") {
  TempDir t;
  std::string root = t.path + "/root";
  fs::create_directories(root + "/cat");
  fs::create_directories(root + "/dog");
  fs::create_directories(root + "/.hidden");
  auto rgb = solid(8, 6, {10, 200, 30});
  REQUIRE(stbi_write_png((root + "/cat/a.png").c_str(), 8, 6, 3, rgb.data(), 8 * 3));
  // A 10x10 JPEG of (200, 100, 50), written once by stbi_write_jpg at quality 95 and
  // committed: stb's JPEG writer left-shifts negative ints, which UBSan (make SANITIZE=1) stops on.
  std::string src = __FILE__;
  fs::copy_file(src.substr(0, src.find_last_of('/') + 1) + "data/solid_200_100_50.jpg", root + "/cat/b.JPG");
  auto grey = solid(5, 7, {77});
  REQUIRE(stbi_write_bmp((root + "/cat/c.bmp").c_str(), 5, 7, 1, grey.data()));
  auto rgba = solid(4, 4, {50, 60, 70, 0});
  REQUIRE(stbi_write_png((root + "/dog/d.png").c_str(), 4, 4, 4, rgba.data(), 4 * 4));
  write_file(root + "/dog/e.png", png16(6, 3, 3, 25850));  // 25850 / 257 = 100.58 -> 101 (stb's >> 8 gives 100)
  write_file(root + "/dog/notes.txt", {'h', 'i'});            // not an image name: ignored
  write_file(root + "/.hidden/x.png", {1, 2, 3});             // hidden folder: ignored

  FolderOptions opt;
  opt.img_size = 4;
  Dataset ds = load_image_folder(root, opt);
  REQUIRE(ds.classes == std::vector<std::string>{"cat", "dog"});
  REQUIRE(ds.n == 5);
  REQUIRE((ds.h == 4 && ds.w == 4 && ds.c == 3));
  REQUIRE(ds.labels == std::vector<int64_t>{0, 0, 0, 1, 1});
  REQUIRE(ds.skipped == 0);
  auto pixel_near = [&](int64_t i, std::vector<int> want, int tol) {
    for (int p = 0; p < 16; p++)
      for (int ch = 0; ch < (int)want.size(); ch++) {
        INFO("image " << i << " pixel " << p << " channel " << ch);
        REQUIRE(std::abs((int)ds.image(i)[p * ds.c + ch] - want[ch]) <= tol);
      }
  };
  pixel_near(0, {10, 200, 30}, 1);   // png, resized 8x6 -> 4x4
  pixel_near(1, {200, 100, 50}, 4);  // jpeg (lossy)
  pixel_near(2, {77, 77, 77}, 0);    // grey bmp -> RGB
  pixel_near(3, {50, 60, 70}, 0);    // alpha dropped
  pixel_near(4, {101, 101, 101}, 0); // 16-bit png, rounded

  opt.channels = 1;
  opt.img_size = 3;
  Dataset g = load_image_folder(root, opt);
  REQUIRE((g.c == 1 && g.h == 3 && g.mean.size() == 1));
  REQUIRE(std::abs((int)g.image(0)[4] - (10 * 77 + 200 * 150 + 30 * 29) / 256) <= 1);  // stb's luminance

  // A corrupt file: an error naming it and stb's reason, or skipped and counted.
  write_file(root + "/dog/zz_bad.png", {0x89, 'P', 'N', 'G', 1, 2, 3, 4, 5});
  opt = FolderOptions();
  opt.img_size = 4;
  REQUIRE_THROWS_WITH(load_image_folder(root, opt), Catch::Contains("zz_bad.png") && Catch::Contains("cannot decode: ") &&
                                                        Catch::Contains("--skip-bad skips unreadable images"));
  opt.skip_bad = true;
  Dataset sk = load_image_folder(root, opt);
  REQUIRE(sk.skipped == 1);
  REQUIRE(sk.skipped_files.size() == 1);
  REQUIRE(sk.n == 5);
  REQUIRE(sk.images == ds.images);

  // An empty class folder and a missing root.
  fs::create_directories(root + "/empty");
  REQUIRE_THROWS_WITH(load_image_folder(root, opt), Catch::Contains("empty") && Catch::Contains("holds no images"));
  REQUIRE_THROWS_WITH(load_image_folder(t.path + "/nothere", opt),
                      Catch::Contains("nothere") && Catch::Contains("does not exist"));
  fs::create_directories(t.path + "/flat");
  REQUIRE_THROWS_WITH(load_image_folder(t.path + "/flat", opt), Catch::Contains("no class subfolders"));
}

TEST_CASE("datasets: one image for prediction", "[io]") {
  TempDir t;
  auto rgb = solid(9, 5, {255, 0, 51});
  std::string p = t.path + "/x.png";
  REQUIRE(stbi_write_png(p.c_str(), 9, 5, 3, rgb.data(), 9 * 3));
  Tensor x = load_image(p, 7, 3, {0.5f, 0.5f, 0.2f}, {0.5f, 0.25f, 0.1f});
  REQUIRE(x.shape() == Shape{1, 7, 7, 3});
  REQUIRE(x.at({0, 3, 4, 0}) == Approx(1.0f).margin(1e-2));   // (1 - 0.5) / 0.5
  REQUIRE(x.at({0, 6, 0, 1}) == Approx(-2.0f).margin(1e-2));  // (0 - 0.5) / 0.25
  REQUIRE(x.at({0, 0, 6, 2}) == Approx(0.0f).margin(1e-2));   // (0.2 - 0.2) / 0.1
  REQUIRE_THROWS_WITH(load_image(t.path + "/missing.png", 7, 3, {0, 0, 0}, {1, 1, 1}),
                      Catch::Contains("missing.png") && Catch::Contains("cannot open"));
  write_file(t.path + "/bad.jpg", {0xFF, 0xD8, 0xFF, 0x00, 0x11});
  REQUIRE_THROWS_WITH(load_image(t.path + "/bad.jpg", 7, 3, {0, 0, 0}, {1, 1, 1}),
                      Catch::Contains("bad.jpg") && Catch::Contains("cannot decode"));
}

// ---------------------------------------------------------------- augmentation

TEST_CASE("augment: flip, crop and erasing invariants", "[io]") {
  Rng rng(3);
  const int H = 7, W = 9, C = 3;
  std::vector<uint8_t> u(H * W * C);
  for (auto& v : u) v = (uint8_t)(1 + rng.below(255));
  std::vector<float> f(u.begin(), u.end());

  auto u2 = u;
  hflip(u2.data(), H, W, C);
  REQUIRE(u2 != u);
  REQUIRE(u2[(2 * W + 0) * C + 1] == u[(2 * W + W - 1) * C + 1]);
  hflip(u2.data(), H, W, C);
  REQUIRE(u2 == u);
  auto f2 = f;
  hflip(f2.data(), H, W, C);
  hflip(f2.data(), H, W, C);
  REQUIRE(f2 == f);

  std::vector<uint8_t> out(u.size());
  shift_crop(u.data(), out.data(), H, W, C, 0, 0);
  REQUIRE(out == u);
  shift_crop(u.data(), out.data(), H, W, C, 2, -3);
  REQUIRE(out[(0 * W + 5) * C + 2] == u[(2 * W + 2) * C + 2]);
  REQUIRE(out[(0 * W + 2) * C + 0] == 0);  // x - 3 < 0: padding
  REQUIRE(out[(5 * W + 4) * C + 0] == 0);  // y + 2 >= H: padding
  std::vector<float> fo(f.size());
  shift_crop(f.data(), fo.data(), H, W, C, -1, 1);
  REQUIRE(fo[(1 * W + 0) * C + 1] == f[(0 * W + 1) * C + 1]);

  // random_crop equals shift_crop for some shift within [-pad, pad].
  for (int trial = 0; trial < 20; trial++) {
    auto c = u;
    random_crop(c.data(), H, W, C, 2, rng);
    bool found = false;
    for (int dy = -2; dy <= 2 && !found; dy++)
      for (int dx = -2; dx <= 2 && !found; dx++) {
        shift_crop(u.data(), out.data(), H, W, C, dy, dx);
        found = out == c;
      }
    REQUIRE(found);
  }

  // Erasing with probability 1 blanks exactly its rectangle, within the option ranges.
  AugmentOptions opt;
  opt.erase_prob = 1.0f;
  opt.erase_value = 0;
  const int EH = 32, EW = 32;
  for (int trial = 0; trial < 20; trial++) {
    std::vector<float> img(EH * EW * C, 1.0f);
    Rect r;
    REQUIRE(random_erase(img.data(), EH, EW, C, opt, rng, &r));
    REQUIRE((r.y >= 0 && r.x >= 0 && r.y + r.h <= EH && r.x + r.w <= EW && r.h >= 1 && r.w >= 1));
    int zeros = 0;
    for (int y = 0; y < EH; y++)
      for (int x = 0; x < EW; x++)
        for (int ch = 0; ch < C; ch++) {
          bool inside = y >= r.y && y < r.y + r.h && x >= r.x && x < r.x + r.w;
          float v = img[(y * EW + x) * C + ch];
          REQUIRE(v == (inside ? 0.0f : 1.0f));
          zeros += v == 0.0f;
        }
    REQUIRE(zeros == r.h * r.w * C);
    float frac = (float)(r.h * r.w) / (EH * EW);  // area drawn in [0.02, 0.33]; rounding h, w moves it a little
    REQUIRE(frac >= 0.01f);
    REQUIRE(frac <= 0.40f);
  }
  REQUIRE(train_augment(28).crop_pad == 2);
  REQUIRE(train_augment(32).crop_pad == 4);
  opt.erase_prob = 0;
  auto keep = f;
  REQUIRE(!random_erase(keep.data(), H, W, C, opt, rng));
  REQUIRE(keep == f);
}

// ---------------------------------------------------------------- batch loader

namespace {
Dataset synthetic(int64_t n, int64_t h, int64_t w, int64_t c, uint64_t seed) {
  Rng rng(seed);
  Dataset ds;
  ds.name = "synthetic";
  ds.n = n, ds.h = h, ds.w = w, ds.c = c;
  ds.images.resize(n * h * w * c);
  for (auto& v : ds.images) v = (uint8_t)rng.below(256);
  for (int64_t i = 0; i < n; i++) ds.labels.push_back(i % 4);
  ds.classes = {"a", "b", "c", "d"};
  ds.mean.assign(c, 0.4f);
  ds.std.assign(c, 0.2f);
  return ds;
}

std::vector<Batch> epoch(BatchLoader& L, Rng& rng) {
  std::vector<Batch> out;
  L.start_epoch(rng);
  Batch b;
  while (L.next(b)) out.push_back(b);
  return out;
}
}  // namespace

TEST_CASE("loader: batches are deterministic whatever the threads do", "[io]") {
  Dataset ds = synthetic(37, 6, 5, 3, 11);
  LoaderOptions o;
  o.batch_size = 8;
  o.workers = 3;
  o.prefetch = 2;
  o.augment.crop_pad = 2;
  o.augment.hflip = true;
  o.augment.erase_prob = 0.5f;
  BatchLoader a(ds, o), b(ds, o);
  LoaderOptions o0 = o;
  o0.workers = 0;
  BatchLoader s(ds, o0);
  REQUIRE(a.num_batches() == 5);
  Rng ra(42), rb(42), rs(42);
  for (int e = 0; e < 2; e++) {
    auto ea = epoch(a, ra), eb = epoch(b, rb), es = epoch(s, rs);
    REQUIRE(ea.size() == 5);
    REQUIRE(es.size() == 5);
    std::set<int64_t> seen;
    for (size_t k = 0; k < ea.size(); k++) {
      REQUIRE(ea[k].images.shape() == Shape{k < 4 ? 8 : 5, 6, 5, 3});
      REQUIRE(ea[k].images.to_vector() == eb[k].images.to_vector());
      REQUIRE(ea[k].images.to_vector() == es[k].images.to_vector());
      REQUIRE(ea[k].labels.to_vector_i64() == es[k].labels.to_vector_i64());
      for (size_t i = 0; i < ea[k].indices.size(); i++) {
        seen.insert(ea[k].indices[i]);
        REQUIRE(ea[k].labels.to_vector_i64()[i] == ds.labels[ea[k].indices[i]]);
      }
    }
    REQUIRE(seen.size() == 37);  // every image once per epoch
  }
  // A new epoch reshuffles; an abandoned epoch does not hang.
  Rng r1(1);
  a.start_epoch(r1);
  Batch first;
  REQUIRE(a.next(first));
  auto next_epoch = epoch(a, r1);
  REQUIRE(next_epoch[0].indices != first.indices);
}

TEST_CASE("loader: normalisation, order without shuffle, drop_last", "[io]") {
  Dataset ds = synthetic(10, 3, 2, 2, 5);
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  o.drop_last = true;
  BatchLoader L(ds, o);
  REQUIRE(L.num_batches() == 2);
  Rng rng(0);
  auto e = epoch(L, rng);
  REQUIRE(e.size() == 2);
  REQUIRE(e[1].indices == std::vector<int64_t>{4, 5, 6, 7});
  REQUIRE(e[1].labels.to_vector_i64() == std::vector<int64_t>{0, 1, 2, 3});
  std::vector<float> got = e[1].images.to_vector();
  for (int64_t k = 0; k < 4 * ds.image_size(); k++)
    REQUIRE(got[k] == Approx((ds.images[4 * ds.image_size() + k] / 255.0f - 0.4f) / 0.2f).margin(1e-5));
  o.drop_last = false;
  BatchLoader L2(ds, o);
  REQUIRE(L2.num_batches() == 3);
  REQUIRE(epoch(L2, rng).back().images.shape() == Shape{2, 3, 2, 2});
  o.batch_size = 0;
  REQUIRE_THROWS_WITH(BatchLoader(ds, o), Catch::Contains("batch_size"));
}
