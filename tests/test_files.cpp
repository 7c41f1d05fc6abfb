// tests/test_files.cpp - the file rules of nn/files.h, through the library
// and through the nala program: what is at an output path and is not a
// regular file (a device, a FIFO, a symlink, a folder) is refused and left
// as it was; a FIFO, a device or a huge file given as input is refused at
// once, before it is read; folders are created without a shell; errors name
// the file and carry errno's reason.
//
// A test that would hang or eat memory without its fix (a FIFO opened for
// reading blocks until a writer comes; a 5 GB file read whole) runs its body
// in a child process with a time limit (and, outside ASan, a memory limit),
// so that a regression fails the test instead of stopping the suite.
//
// The tests run as root, where permissions do not stop a write: an unwritable
// folder is made with /proc (no file can be created under /proc/1/fdinfo)
// and with a regular file where a folder is expected. Instead of the system's
// /dev/null, a character device made with mknod in the temporary folder (the
// same device, 1:3) stands for it, so that a regression cannot damage the
// machine; where mknod is not allowed, /dev/null itself is only used through
// the fixed code paths that are asserted not to touch it.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <tuple>

#include "models/weights.h"
#include "nn/files.h"
#include "nn/safetensors.h"
#include "tests/helpers.h"
#include "tests/process.h"
#include "tools/common.h"
#include "tools/datasets.h"
#include "tools/image.h"

using namespace nala;
using namespace nala::test;
namespace fs = std::filesystem;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), (std::streamsize)bytes.size());
  REQUIRE(f.good());
}

// What lstat says is at a path: kind, device numbers, size, inode.
struct PathInfo {
  mode_t mode = 0;
  dev_t rdev = 0;
  off_t size = -1;
  ino_t ino = 0;
  bool operator==(const PathInfo& o) const { return mode == o.mode && rdev == o.rdev && size == o.size && ino == o.ino; }
};
PathInfo node(const std::string& path) {
  struct stat sb;
  REQUIRE(lstat(path.c_str(), &sb) == 0);
  return {sb.st_mode, sb.st_rdev, sb.st_size, sb.st_ino};
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> v;
  for (auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

// A character device like /dev/null (1:3) inside dir, or "" where mknod is not allowed.
std::string null_device(const std::string& dir) {
  std::string p = dir + "/null";
  if (mknod(p.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0) return "";
  return p;
}

// ---------------------------------------------------------------- running things with a time limit

struct ChildResult {
  bool finished = false;  // false: killed at the time limit
  bool threw = false;
  std::string error;  // the exception's message
};

// Runs fn in a child process, killed after `seconds`; the child's address
// space is limited to mem_bytes (0: no limit; ignored under ASan).
ChildResult in_child(const std::function<void()>& fn, double seconds, int64_t mem_bytes = 0) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  std::fflush(stdout), std::fflush(stderr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    if (mem_bytes > 0 && !kAsan) {
      struct rlimit lim = {(rlim_t)mem_bytes, (rlim_t)mem_bytes};
      setrlimit(RLIMIT_AS, &lim);
    }
    std::string msg = "R";
    try {
      fn();
    } catch (const std::exception& e) {
      msg = std::string("T") + e.what();
    }
    size_t off = 0;
    while (off < msg.size()) {
      ssize_t w = write(fds[1], msg.data() + off, msg.size() - off);
      if (w <= 0) break;
      off += (size_t)w;
    }
    _exit(0);
  }
  close(fds[1]);
  ChildResult r;
  int status = 0;
  r.finished = wait_for(pid, seconds, &status);
  if (!r.finished) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  std::string msg;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) msg.append(buf, (size_t)n);
  close(fds[0]);
  if (r.finished && !msg.empty()) {
    r.threw = msg[0] == 'T';
    r.error = msg.substr(1);
  }
  return r;
}

struct Run {
  bool finished = false;
  int code = -1;
  std::string out;  // stdout and stderr
};

// Runs the nala program (no shell) in cwd, killed after `seconds`.
Run run_nala(const std::vector<std::string>& args, const std::string& cwd, double seconds = 120) {
  char tmpl[] = "/tmp/nala_files_log_XXXXXX";
  int lfd = mkstemp(tmpl);
  REQUIRE(lfd >= 0);
  close(lfd);
  const std::string log = tmpl;
  std::vector<std::string> all = {nala_binary()};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(&a[0]);
  argv.push_back(nullptr);
  std::fflush(stdout), std::fflush(stderr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_APPEND);
    if (fd < 0 || chdir(cwd.c_str()) != 0) _exit(127);
    dup2(fd, 1), dup2(fd, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  Run r;
  int status = 0;
  r.finished = wait_for(pid, seconds, &status);
  if (!r.finished) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  } else {
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  r.out = slurp(log);
  std::remove(log.c_str());
  return r;
}

// ---------------------------------------------------------------- inputs for the commands

void put_be32(std::string& b, uint32_t v) {
  for (int k = 3; k >= 0; k--) b.push_back((char)(v >> (8 * k)));
}

// A Fashion-MNIST-shaped test split of n images (labels 0, 1, ...) as plain IDX files in dir.
void make_idx_dir(const std::string& dir, uint32_t n) {
  fs::create_directories(dir);
  std::string im, lb;
  for (uint32_t v : {0x803u, n, 28u, 28u}) put_be32(im, v);
  for (uint32_t i = 0; i < n * 784; i++) im.push_back((char)(i * 7));
  for (uint32_t v : {0x801u, n}) put_be32(lb, v);
  for (uint32_t i = 0; i < n; i++) lb.push_back((char)(i % 10));
  spit(dir + "/t10k-images-idx3-ubyte", im);
  spit(dir + "/t10k-labels-idx1-ubyte", lb);
}

// Pico weights (1 channel, 10 classes) and an input file for `nala grad`.
void make_grad_inputs(const std::string& dir) {
  NalaFormer m(nalaformer_config("pico", 1, 10));
  Rng rng(3);
  m.init_weights(rng);
  save_weights(m, dir + "/w.safetensors");
  Tensor x = randn({1, 1, 28, 28}, rng);
  save_safetensors(dir + "/in.safetensors", {{"input", x}, {"labels", Tensor::zeros({1}, DType::I64)}});
}

std::vector<std::string> grad_args(const std::string& dir, const std::string& output) {
  return {"grad", "--model", "pico", "--threads", "1", "--weights", dir + "/w.safetensors", "--input",
          dir + "/in.safetensors", "--output", output};
}

}  // namespace

// ---------------------------------------------------------------- writing: nothing that is not a regular file is replaced

TEST_CASE("files: save_safetensors refuses a device, a FIFO, a symlink and a folder, and leaves them as they were",
          "[files]") {
  TempDir t;
  const Tensor w = Tensor::from_vector({2}, {1, 2});
  std::vector<std::string> targets;
  const std::string dev = null_device(t.path);
  if (dev.empty()) WARN("mknod not allowed here: the device case is covered by /dev/null through the binary test");
  else targets.push_back(dev);
  REQUIRE(mkfifo((t.path + "/fifo").c_str(), 0644) == 0);
  targets.push_back(t.path + "/fifo");
  spit(t.path + "/real.safetensors", "precious");
  REQUIRE(symlink("real.safetensors", (t.path + "/link").c_str()) == 0);
  targets.push_back(t.path + "/link");
  REQUIRE(symlink("nowhere", (t.path + "/dangling").c_str()) == 0);
  targets.push_back(t.path + "/dangling");
  fs::create_directories(t.path + "/folder");
  targets.push_back(t.path + "/folder");
  const std::vector<std::string> before_names = names_in(t.path);
  for (const std::string& p : targets) {
    INFO(p);
    const PathInfo before = node(p);
    REQUIRE_THROWS_WITH(save_safetensors(p, {{"w", w}}),
                        Catch::Contains("refusing to write") && Catch::Contains(p) &&
                            Catch::Contains("nala replaces only regular files"));
    REQUIRE(node(p) == before);
  }
  REQUIRE(slurp(t.path + "/real.safetensors") == "precious");
  REQUIRE(names_in(t.path) == before_names);  // no temporary file left behind
  // A path ending in '/' names a folder, whatever is there.
  REQUIRE_THROWS_WITH(save_safetensors(t.path + "/new/", {{"w", w}}), Catch::Contains("names a folder"));
}

TEST_CASE("files: nala grad --output a device, a FIFO or a symlink is refused before any work", "[files]") {
  TempDir t;
  make_grad_inputs(t.path);
  // Works into a regular file (so a refusal below is the output rule, not a bad input).
  Run ok = run_nala(grad_args(t.path, t.path + "/g.safetensors"), t.path);
  INFO(ok.out);
  REQUIRE(ok.code == 0);
  REQUIRE(load_safetensors(t.path + "/g.safetensors").tensors.count("loss") == 1);

  std::vector<std::string> targets;
  const std::string dev = null_device(t.path);
  targets.push_back(dev.empty() ? std::string("/dev/null") : dev);
  REQUIRE(mkfifo((t.path + "/fifo").c_str(), 0644) == 0);
  targets.push_back(t.path + "/fifo");
  spit(t.path + "/keep.safetensors", "keep me");
  REQUIRE(symlink("keep.safetensors", (t.path + "/link").c_str()) == 0);
  targets.push_back(t.path + "/link");
  for (const std::string& p : targets) {
    INFO(p);
    const PathInfo before = node(p);
    Run r = run_nala(grad_args(t.path, p), t.path);
    INFO(r.out);
    REQUIRE(r.finished);
    REQUIRE(r.code == 1);
    REQUIRE(r.out.find("refusing to write output to " + p) != std::string::npos);
    REQUIRE(node(p) == before);
  }
  REQUIRE(slurp(t.path + "/keep.safetensors") == "keep me");
  // The output is checked before the weights are read: a bad output is the
  // error even when the weights do not exist.
  Run early = run_nala({"grad", "--weights", t.path + "/missing", "--input", t.path + "/missing", "--output",
                        t.path + "/fifo"},
                       t.path);
  INFO(early.out);
  REQUIRE(early.code == 1);
  REQUIRE(early.out.find("refusing to write output to " + t.path + "/fifo") != std::string::npos);
  for (auto& n : names_in(t.path)) REQUIRE(n.find(".tmp.") == std::string::npos);
}

TEST_CASE("files: nala sample refuses a FIFO or a symlink at an image's name, without hanging", "[files]") {
  TempDir t;
  make_idx_dir(t.path + "/fm", 2);
  const std::string out = t.path + "/out";
  fs::create_directories(out);
  // Image 0 has label 0 ("T-shirt/top"): 0_T-shirt-top.png.
  REQUIRE(mkfifo((out + "/0_T-shirt-top.png").c_str(), 0644) == 0);
  const PathInfo fifo = node(out + "/0_T-shirt-top.png");
  Run r = run_nala({"sample", "--data-dir", t.path + "/fm", "--count", "1", "--out", out}, t.path, 20);
  INFO(r.out);
  REQUIRE(r.finished);  // without the check, the PNG writer blocks on the FIFO forever
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("refusing to write PNG image to " + out + "/0_T-shirt-top.png: it is a FIFO") !=
          std::string::npos);
  REQUIRE(node(out + "/0_T-shirt-top.png") == fifo);

  spit(t.path + "/victim", "do not touch");
  REQUIRE(symlink((t.path + "/victim").c_str(), (out + "/1_Trouser.png").c_str()) == 0);
  r = run_nala({"sample", "--data-dir", t.path + "/fm", "--first", "1", "--count", "1", "--out", out}, t.path, 20);
  INFO(r.out);
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find("it is a symbolic link") != std::string::npos);
  REQUIRE(slurp(t.path + "/victim") == "do not touch");
  REQUIRE(fs::is_symlink(out + "/1_Trouser.png"));
  REQUIRE(names_in(out) == std::vector<std::string>{"0_T-shirt-top.png", "1_Trouser.png"});
}

TEST_CASE("files: nala grad refuses an --output that is its --weights or --input, also through a link", "[files]") {
  TempDir t;
  make_grad_inputs(t.path);
  const std::string w = slurp(t.path + "/w.safetensors"), in = slurp(t.path + "/in.safetensors");
  REQUIRE(link((t.path + "/w.safetensors").c_str(), (t.path + "/hard").c_str()) == 0);
  Run r = run_nala(grad_args(t.path, t.path + "/hard"), t.path);
  INFO(r.out);
  REQUIRE(r.code == 2);
  REQUIRE(r.out.find("--output " + t.path + "/hard is the same file as --weights") != std::string::npos);
  r = run_nala(grad_args(t.path, t.path + "/in.safetensors"), t.path);
  INFO(r.out);
  REQUIRE(r.code == 2);
  REQUIRE(r.out.find("is the same file as --input") != std::string::npos);
  REQUIRE(slurp(t.path + "/w.safetensors") == w);
  REQUIRE(slurp(t.path + "/in.safetensors") == in);
  REQUIRE(same_file(t.path + "/hard", t.path + "/w.safetensors"));
  REQUIRE(!same_file(t.path + "/in.safetensors", t.path + "/w.safetensors"));
  REQUIRE(!same_file(t.path + "/absent", t.path + "/absent"));
}

// ---------------------------------------------------------------- no shell

TEST_CASE("files: nala sample --out takes any folder name literally (no shell)", "[files]") {
  TempDir t;
  make_idx_dir(t.path + "/fm", 2);
  const std::string evil = "x'; touch INJECTED; echo '";
  Run r = run_nala({"sample", "--data-dir", t.path + "/fm", "--count", "2", "--out", evil}, t.path);
  INFO(r.out);
  REQUIRE(r.code == 0);
  REQUIRE(!fs::exists(t.path + "/INJECTED"));
  REQUIRE(fs::is_directory(t.path + "/" + evil));
  REQUIRE(names_in(t.path + "/" + evil) == std::vector<std::string>{"0_T-shirt-top.png", "1_Trouser.png"});
  // The PNGs hold the images: decoded back, pixel for pixel.
  Image img = decode_image(t.path + "/" + evil + "/1_Trouser.png", 1);
  REQUIRE((img.h == 28 && img.w == 28 && img.c == 1));
  for (int i = 0; i < 784; i++) REQUIRE(img.pixels[i] == (uint8_t)((784 + i) * 7));

  // An apostrophe, a space and nested folders that do not exist yet.
  const std::string odd = "it's a \"folder\"/and $(this) one";
  r = run_nala({"sample", "--data-dir", t.path + "/fm", "--count", "1", "--out", odd}, t.path);
  INFO(r.out);
  REQUIRE(r.code == 0);
  REQUIRE(fs::exists(t.path + "/" + odd + "/0_T-shirt-top.png"));
  REQUIRE(names_in(t.path) == std::vector<std::string>{"fm", "it's a \"folder\"", evil});
}

TEST_CASE("files: an output folder that cannot be used is reported with errno's reason", "[files]") {
  TempDir t;
  make_idx_dir(t.path + "/fm", 1);
  // Root is not stopped by permissions; /proc/1/fdinfo exists and no file can be created there.
  const std::string ro = "/proc/1/fdinfo";
  int fd = open((ro + "/probe").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  REQUIRE(fd < 0);
  const std::string why = std::strerror(errno);
  Run r = run_nala({"sample", "--data-dir", t.path + "/fm", "--count", "1", "--out", ro}, t.path);
  INFO(r.out);
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find(ro) != std::string::npos);
  REQUIRE(r.out.find(why) != std::string::npos);
  // A regular file where a folder is expected: named, and nothing is created.
  spit(t.path + "/afile", "x");
  r = run_nala({"sample", "--data-dir", t.path + "/fm", "--count", "1", "--out", t.path + "/afile/sub"}, t.path);
  INFO(r.out);
  REQUIRE(r.code == 1);
  REQUIRE(r.out.find(t.path + "/afile exists and is not a folder") != std::string::npos);
  REQUIRE(slurp(t.path + "/afile") == "x");
  // make_dirs says which component failed and why.
  REQUIRE_THROWS_WITH(make_dirs("/proc/nala_no_such/x", "test"),
                      Catch::Contains("/proc/nala_no_such") && Catch::Contains(std::strerror(ENOENT)));
  // A weights file into that folder: errno's reason too.
  REQUIRE_THROWS_WITH(save_safetensors(ro + "/w.safetensors", {{"w", Tensor::ones({1})}}),
                      Catch::Contains(ro + "/w.safetensors") && Catch::Contains(why));
}

// ---------------------------------------------------------------- reading: checked before a byte is read

TEST_CASE("files: a FIFO given as weights, image or IDX file fails at once", "[files]") {
  TempDir t;
  const std::string fifo = t.path + "/fifo";
  REQUIRE(mkfifo(fifo.c_str(), 0644) == 0);
  make_idx_dir(t.path + "/fm", 1);
  auto check = [&](const char* what, const std::function<void()>& fn) {
    INFO(what);
    auto t0 = std::chrono::steady_clock::now();
    ChildResult r = in_child(fn, 10);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE(r.finished);  // without the check the open blocks until a writer comes
    INFO(r.error);
    REQUIRE(r.threw);
    REQUIRE(r.error.find(fifo + " is a FIFO, not a regular file") != std::string::npos);
    REQUIRE(secs < 5);
  };
  check("weights", [&] { load_safetensors(fifo); });
  check("image", [&] { decode_image(fifo, 3); });
  check("IDX images", [&] { load_idx(fifo, t.path + "/fm/t10k-labels-idx1-ubyte"); });
  check("IDX labels", [&] { load_idx(t.path + "/fm/t10k-images-idx3-ubyte", fifo); });
  check("CIFAR-10 batch", [&] { load_cifar10_files({fifo}); });
  // A symlink to the FIFO is the FIFO.
  REQUIRE(symlink(fifo.c_str(), (t.path + "/link.png").c_str()) == 0);
  ChildResult r = in_child([&] { decode_image(t.path + "/link.png", 1); }, 10);
  REQUIRE(r.finished);
  REQUIRE(r.error.find("link.png is a FIFO") != std::string::npos);
  // And through the program: predict with the FIFO as the image.
  NalaFormer m(nalaformer_config("pico", 1, 10));
  Rng rng(1);
  m.init_weights(rng);
  save_weights(m, t.path + "/w.safetensors");
  Run run = run_nala({"predict", "--weights", t.path + "/w.safetensors", "--threads", "1", fifo}, t.path, 20);
  INFO(run.out);
  REQUIRE(run.finished);
  REQUIRE(run.code == 1);
  REQUIRE(run.out.find("image " + fifo + " is a FIFO") != std::string::npos);
  run = run_nala({"predict", "--weights", fifo, t.path + "/x.png"}, t.path, 20);
  INFO(run.out);
  REQUIRE(run.finished);
  REQUIRE(run.code == 1);
  REQUIRE(run.out.find(fifo + " is a FIFO") != std::string::npos);
}

TEST_CASE("files: a 5 GB sparse file is refused without being read (image, CIFAR-10, IDX)", "[files]") {
  TempDir t;
  const std::string big = t.path + "/big.png";
  {
    int fd = open(big.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, (off_t)5 << 30) == 0);  // sparse: no disk used
    close(fd);
  }
  auto timed = [&](const std::function<void()>& fn) {
    auto t0 = std::chrono::steady_clock::now();
    ChildResult r = in_child(fn, 20, (int64_t)2 << 30);  // reading it whole would need 5 GiB
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE(r.finished);
    REQUIRE(r.threw);
    return std::make_pair(r.error, secs);
  };
  auto [err, secs] = timed([&] { decode_image(big, 3); });
  INFO(err);
  REQUIRE(err.find("image " + big + " is 5.00 GiB; the limit for this kind of file is 256.0 MiB") != std::string::npos);
  REQUIRE(secs < 2);
  // The same file as a CIFAR-10 batch (refused by size) and as IDX (refused by its header, read first).
  const std::string bin = t.path + "/data_batch_1.bin";
  REQUIRE(rename(big.c_str(), bin.c_str()) == 0);
  std::tie(err, secs) = timed([&] { load_cifar10_files({bin}); });
  INFO(err);
  REQUIRE(err.find("CIFAR-10 batch " + bin + " is 5.00 GiB") != std::string::npos);
  REQUIRE(secs < 2);
  std::tie(err, secs) = timed([&] { load_idx(bin, bin); });
  INFO(err);
  REQUIRE(err.find(bin + ": wrong IDX magic 0x00000000") != std::string::npos);
  REQUIRE(secs < 2);
  // A file of exactly the image limit is allowed in (and then fails as not an image).
  REQUIRE(truncate(bin.c_str(), (off_t)kMaxImageFileBytes) == 0);
  std::tie(err, secs) = timed([&] { decode_image(bin, 1); });
  REQUIRE(err.find("not a PNG, JPEG or BMP") != std::string::npos);
}

// ---------------------------------------------------------------- more bad inputs

TEST_CASE("files: bad weights paths give errors naming the file and the reason", "[files]") {
  TempDir t;
  save_safetensors(t.path + "/w.safetensors", {{"w", Tensor::ones({2})}});
  fs::create_directories(t.path + "/dir");
  spit(t.path + "/empty", "");
  REQUIRE(symlink("nowhere", (t.path + "/dangling").c_str()) == 0);
  REQUIRE_THROWS_WITH(load_safetensors(t.path + "/dir"), Catch::Contains(t.path + "/dir is a directory"));
  REQUIRE_THROWS_WITH(load_safetensors(t.path + "/empty"), Catch::Contains("empty: file is 0 bytes"));
  REQUIRE_THROWS_WITH(load_safetensors(t.path + "/w.safetensors/"),
                      Catch::Contains("w.safetensors/") && Catch::Contains(std::strerror(ENOTDIR)));
  REQUIRE_THROWS_WITH(load_safetensors(t.path + "/dangling"),
                      Catch::Contains("dangling") && Catch::Contains(std::strerror(ENOENT)));
  REQUIRE_THROWS_WITH(load_safetensors(""), Catch::Contains("empty path"));
  // Devices: never read, whatever they would give.
  REQUIRE_THROWS_WITH(load_safetensors("/dev/zero"), Catch::Contains("/dev/zero is a character device"));
  REQUIRE_THROWS_WITH(decode_image("/dev/zero", 3), Catch::Contains("/dev/zero is a character device"));
  // A /proc file is a regular file of size 0: refused as too short, not read without end.
  REQUIRE_THROWS_WITH(load_safetensors("/proc/self/status"), Catch::Contains("file is 0 bytes"));
}

TEST_CASE("files: endless or lying IDX files are refused without reading them whole", "[files]") {
  TempDir t;
  make_idx_dir(t.path + "/fm", 1);
  const std::string labels = t.path + "/fm/t10k-labels-idx1-ubyte";
  // /dev/urandom (through a symlink named like the real file) never ends.
  REQUIRE(symlink("/dev/urandom", (t.path + "/rand.gz").c_str()) == 0);
  ChildResult r = in_child([&] { load_idx(t.path + "/rand.gz", labels); }, 10, (int64_t)2 << 30);
  REQUIRE(r.finished);
  INFO(r.error);
  REQUIRE(r.error.find("rand.gz is a character device") != std::string::npos);
  // A header promising more than kMaxIdxBytes: refused from the header alone.
  std::string h;
  for (uint32_t v : {0x803u, 4000000000u, 60000u, 60000u}) put_be32(h, v);
  spit(t.path + "/huge", h + std::string(1000, '\0'));
  REQUIRE_THROWS_WITH(load_idx(t.path + "/huge", labels),
                      Catch::Contains("promises 4000000000 x 60000 x 60000 bytes, more than the limit"));
  // A gzip bomb: one image, then 64 MiB of zeros (64 KiB compressed). At most
  // 1 MiB past what the header promises is decompressed.
  std::string one = slurp(t.path + "/fm/t10k-images-idx3-ubyte");
  {
    gzFile g = gzopen((t.path + "/bomb.gz").c_str(), "wb9");
    REQUIRE(g != nullptr);
    REQUIRE(gzwrite(g, one.data(), (unsigned)one.size()) == (int)one.size());
    std::string zeros(1 << 20, '\0');
    for (int k = 0; k < 64; k++) REQUIRE(gzwrite(g, zeros.data(), (unsigned)zeros.size()) == (int)zeros.size());
    REQUIRE(gzclose(g) == Z_OK);
  }
  r = in_child([&] { load_idx(t.path + "/bomb.gz", labels); }, 20, (int64_t)1 << 30);
  REQUIRE(r.finished);
  INFO(r.error);
  REQUIRE(r.error.find("bomb.gz: more than 1048576 unexpected bytes after the 784 bytes the header promises") !=
          std::string::npos);
  // The good pair still loads.
  Dataset ds = load_idx(t.path + "/fm/t10k-images-idx3-ubyte", labels);
  REQUIRE(ds.n == 1);
  REQUIRE(ds.images == std::vector<uint8_t>(one.begin() + 16, one.end()));
}

TEST_CASE("files: a file that shrinks while it is read is an error, not short data", "[files]") {
  TempDir t;
  const std::string p = t.path + "/f";
  spit(p, std::string(10000, 'a'));
  InputFile f(p, "test");
  REQUIRE(f.size() == 10000);
  char buf[4000];
  f.read(buf, sizeof buf);
  REQUIRE(truncate(p.c_str(), 5000) == 0);
  REQUIRE_THROWS_WITH(f.read(buf, sizeof buf), Catch::Contains(p) && Catch::Contains("short read (1000 of 4000"));
  // read_file reads exactly the size it saw, from the start.
  REQUIRE(read_file(p, "test") == std::string(5000, 'a'));
  REQUIRE_THROWS_WITH(read_file(p, "test", 4999), Catch::Contains("the limit for this kind of file is 4999 bytes"));
}

TEST_CASE("files: atomic writes keep a replaced file's permissions and handle leftovers of a killed save", "[files]") {
  TempDir t;
  const std::string p = t.path + "/private.safetensors";
  save_safetensors(p, {{"w", Tensor::ones({1})}});
  REQUIRE(chmod(p.c_str(), 0600) == 0);
  save_safetensors(p, {{"w", Tensor::ones({2})}});
  REQUIRE((node(p).mode & 07777) == 0600);
  REQUIRE(load_safetensors(p).tensors.at("w").numel() == 2);

  // A temporary file of this process id left by a save that was killed (a
  // restarted container runs as the same pid): removed and the name reused.
  // A symlink planted at that name is refused and nothing is written through it.
  const std::string stale = p + ".tmp." + std::to_string((long)getpid());
  spit(stale, "half a checkpoint");
  save_safetensors(p, {{"w", Tensor::ones({3})}});
  REQUIRE(load_safetensors(p).tensors.at("w").numel() == 3);
  REQUIRE(!fs::exists(stale));
  spit(t.path + "/victim", "untouched");
  REQUIRE(symlink((t.path + "/victim").c_str(), stale.c_str()) == 0);
  REQUIRE_THROWS_WITH(save_safetensors(p, {{"w", Tensor::ones({4})}}),
                      Catch::Contains(stale) && Catch::Contains(std::strerror(EEXIST)));
  REQUIRE(slurp(t.path + "/victim") == "untouched");
  REQUIRE(fs::is_symlink(stale));
  REQUIRE(load_safetensors(p).tensors.at("w").numel() == 3);
  REQUIRE(unlink(stale.c_str()) == 0);
  // check_output_dir's probe steps over a leftover of its own name.
  const std::string probe = t.path + "/.nala-write-test." + std::to_string((long)getpid());
  spit(probe, "left");
  check_output_dir(t.path, "test");
  REQUIRE(slurp(probe) == "left");

  // A file name at the length limit: the temporary name is shortened, the file written.
  const std::string longname = t.path + "/" + std::string(250, 'n');
  save_safetensors(longname, {{"w", Tensor::ones({4})}});
  REQUIRE(load_safetensors(longname).tensors.at("w").numel() == 4);
  for (auto& n : names_in(t.path)) REQUIRE(n.find(".tmp.") == std::string::npos);
}

TEST_CASE("files: kernel pseudo-files are read to their end; write_png goes through the same rules", "[files]") {
  // /proc files report size 0: read_system_file reads them anyway.
  std::string text;
  REQUIRE(read_system_file("/proc/self/status", &text));
  REQUIRE(text.find("Name:") != std::string::npos);
  REQUIRE(!read_system_file("/proc/self/status", &text, 10));  // longer than the cap
  REQUIRE(text.empty());
  REQUIRE(!read_system_file("/nonexistent/nala", &text));
  REQUIRE(!read_system_file("/dev/zero", &text));
  REQUIRE(physical_memory_bytes() > 0);

  TempDir t;
  Image img;
  img.h = 2, img.w = 3, img.c = 1;
  img.pixels = {0, 50, 100, 150, 200, 250};
  REQUIRE(mkfifo((t.path + "/p.png").c_str(), 0644) == 0);
  ChildResult r = in_child([&] { write_png(t.path + "/p.png", img); }, 10);
  REQUIRE(r.finished);
  REQUIRE(r.error.find("it is a FIFO") != std::string::npos);
  write_png(t.path + "/q.png", img);
  Image back = decode_image(t.path + "/q.png", 1);
  REQUIRE(back.pixels == img.pixels);
  REQUIRE(names_in(t.path) == std::vector<std::string>{"p.png", "q.png"});

  // A write that fails midway (the file size limit makes write() fail with
  // EFBIG, as a full disk would with ENOSPC) is an error naming the file, and
  // leaves no partial PNG: stb's own file writer does not check its writes.
  Image noise;
  noise.h = noise.w = 256, noise.c = 3;
  Rng rng(9);
  for (int k = 0; k < 256 * 256 * 3; k++) noise.pixels.push_back((uint8_t)(rng.next_u64() >> 56));
  struct rlimit old_lim;
  REQUIRE(getrlimit(RLIMIT_FSIZE, &old_lim) == 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old_lim;
  lim.rlim_cur = 64 * 1024;
  REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
  std::string err;
  try {
    write_png(t.path + "/big.png", noise);
  } catch (const Error& e) {
    err = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old_lim);
  signal(SIGXFSZ, old_handler);
  INFO(err);
  REQUIRE(err.find(t.path + "/big.png") != std::string::npos);
  REQUIRE(err.find(std::strerror(EFBIG)) != std::string::npos);
  REQUIRE(names_in(t.path) == std::vector<std::string>{"p.png", "q.png"});
}
