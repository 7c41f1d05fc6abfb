// tests/test_run_folder.cpp - `nala train`'s output folder and the checks
// around a run (models/train/run_folder.h, tools/cmd_train.cpp): a new folder per
// run, an earlier run never replaced without --overwrite, the lock against a
// second writer, an unusable --out found before any data is read, what
// --max-steps inside an epoch leaves, damaged checkpoints refused naming the
// key or the tensor, and the command-line slips of the same area.
//
// Most commands run in-process (cmd_train with stdout and stderr captured,
// exit codes as tools/main.cpp gives them); the ones that need their own
// working folder, a memory limit or a second process run the nala binary.
// Runs use 32-64 Fashion-MNIST images in batches of 8: seconds each.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "models/train/run_folder.h"
#include "models/weights.h"
#include "nn/safetensors.h"
#include "tests/process.h"
#include "tests/run_command.h"
#include "tools/common.h"

using namespace nala;
using namespace nala::test;
namespace fs = std::filesystem;

namespace {

using Outcome = CmdResult;

bool has(const Outcome& r, const std::string& text) { return r.out.find(text) != std::string::npos; }

// The nala binary in folder `cwd`, optionally under an address-space limit;
// waits (at most `seconds`) and returns the exit code, the output in *out.
int run_binary(const std::vector<std::string>& args, const std::string& cwd, std::string* out,
               int64_t address_limit = 0, double seconds = 300) {
  const std::string bin = nala_binary(), log = cwd + "/binary.log";
  REQUIRE(access(bin.c_str(), X_OK) == 0);  // built next to the tests: make CUDA=0
  std::remove(log.c_str());
  const pid_t pid = spawn(bin, args, log, cwd, address_limit);
  int status = 0;
  if (!wait_for(pid, seconds, &status)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL("nala did not end within " << seconds << " s: " << slurp(log));
  }
  *out = slurp(log);
  if (!WIFEXITED(status)) return 128 + WTERMSIG(status);  // e.g. killed while loading under a tight limit
  return WEXITSTATUS(status);
}

// 64 images in batches of 8: 8 steps an epoch.
std::vector<std::string> small(const std::string& out, int epochs, std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"--model", "pico", "--subset", "64", "--eval-subset", "16", "--batch-size", "8",
                                "--epochs", std::to_string(epochs), "--threads", "2", "--log-every", "100"};
  if (!out.empty()) a.insert(a.end(), {"--out", out});
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// The same as a command line of the nala binary.
std::vector<std::string> train_cmd(const std::vector<std::string>& args) {
  std::vector<std::string> a = {"train"};
  a.insert(a.end(), args.begin(), args.end());
  return a;
}

// Every file of a folder (name -> bytes), to prove a refused run touched nothing.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (auto& e : fs::directory_iterator(dir)) files[e.path().filename().string()] = slurp(e.path().string());
  return files;
}

int64_t csv_rows(const std::string& path) {
  std::ifstream f(path);
  int64_t n = 0;
  for (std::string line; std::getline(f, line);) n++;
  return n;
}

}  // namespace

TEST_CASE("runfolder: training twice without --out makes two new folders", "[runfolder]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  std::string out1, out2;
  REQUIRE(run_binary(train_cmd(small("", 1)), t.path, &out1) == 0);
  REQUIRE(run_binary(train_cmd(small("", 1)), t.path, &out2) == 0);
  INFO(out1 << "\n----\n" << out2);
  std::set<std::string> dirs;
  for (auto& e : fs::directory_iterator(t.path + "/runs")) dirs.insert(e.path().filename().string());
  REQUIRE(dirs.size() == 2);
  for (auto& d : dirs) {
    INFO(d);
    REQUIRE(d.rfind("pico-fashion-mnist-", 0) == 0);  // runs/<model>-<data>-<YYYYmmdd-HHMMSS>[-N]
    REQUIRE(fs::exists(t.path + "/runs/" + d + "/checkpoint.safetensors"));
    REQUIRE(fs::exists(t.path + "/runs/" + d + "/best.safetensors"));
    REQUIRE(csv_rows(t.path + "/runs/" + d + "/metrics.csv") == 2);
    REQUIRE(!fs::exists(t.path + "/runs/" + d + "/" + kLockFile));  // removed at the end
  }
  // Each run says where it writes, first.
  REQUIRE(out1.rfind("nala train: output folder runs/pico-fashion-mnist-", 0) == 0);
  REQUIRE(out2.rfind("nala train: output folder runs/pico-fashion-mnist-", 0) == 0);
  REQUIRE(out1.substr(0, out1.find('\n')) != out2.substr(0, out2.find('\n')));
}

TEST_CASE("runfolder: an --out that holds a run is refused untouched; --overwrite replaces it", "[runfolder]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  const std::string out = t.path + "/run";
  Outcome r = run_cmd(cmd_train, small(out, 1));
  INFO(r.out);
  REQUIRE(r.code == 0);
  const auto before = snapshot(out);
  REQUIRE(before.count("checkpoint.safetensors"));
  REQUIRE(before.count("best.safetensors"));
  REQUIRE(before.count("metrics.csv"));

  // Another seed into the same folder: refused, every file byte-identical.
  Outcome again = run_cmd(cmd_train, small(out, 1, {"--seed", "2"}));
  INFO(again.out);
  REQUIRE(again.code == 1);
  REQUIRE(has(again, out + " holds an earlier run (checkpoint.safetensors, best.safetensors, metrics.csv)"));
  REQUIRE(has(again, "--resume " + out));
  REQUIRE(has(again, "--overwrite"));
  REQUIRE(!has(again, "epoch 1"));  // before any training
  REQUIRE(snapshot(out) == before);

  // Any one of the three files makes a run.
  TempDir u;
  fs::create_directories(u.path + "/only_metrics");
  { std::ofstream(u.path + "/only_metrics/metrics.csv") << "epoch\n"; }
  REQUIRE(run_cmd(cmd_train, small(u.path + "/only_metrics", 1)).code == 1);
  // A folder that holds other things but no run is fine.
  fs::create_directories(u.path + "/other");
  { std::ofstream(u.path + "/other/notes.txt") << "mine\n"; }
  REQUIRE(run_cmd(cmd_train, small(u.path + "/other", 1)).code == 0);
  REQUIRE(slurp(u.path + "/other/notes.txt") == "mine\n");

  // --overwrite: the earlier run's files are replaced by this run's.
  Outcome over = run_cmd(cmd_train, small(out, 1, {"--seed", "2", "--overwrite"}));
  INFO(over.out);
  REQUIRE(over.code == 0);
  REQUIRE(has(over, "--overwrite: removed the earlier run's checkpoint.safetensors, best.safetensors, metrics.csv"));
  const auto after = snapshot(out);
  REQUIRE(after.at("checkpoint.safetensors") != before.at("checkpoint.safetensors"));
  REQUIRE(csv_rows(out + "/metrics.csv") == 2);  // header and this run's epoch only
  // --overwrite with a partial first epoch: the old files are gone, nothing mixes runs.
  Outcome partial = run_cmd(cmd_train, small(out, 1, {"--overwrite", "--max-steps", "2"}));
  REQUIRE(partial.code == 0);
  REQUIRE(run_files_in(out).empty());
  // --overwrite and --resume contradict each other.
  REQUIRE(run_cmd(cmd_train, {"--resume", out, "--overwrite"}).code == 2);
}

TEST_CASE("runfolder: a second writer is refused while the first holds the lock", "[runfolder]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  const std::string out = t.path + "/run";
  fs::create_directories(out);
  // The lock as a running nala train holds it.
  int fd = open((out + "/" + kLockFile).c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(flock(fd, LOCK_EX | LOCK_NB) == 0);
  REQUIRE(write(fd, "4242\n", 5) == 5);
  Outcome r = run_cmd(cmd_train, small(out, 1));
  INFO(r.out);
  REQUIRE(r.code == 1);
  REQUIRE(has(r, out + " is being written by another nala train (pid 4242)"));
  REQUIRE(run_files_in(out).empty());
  REQUIRE(slurp(out + "/" + kLockFile) == "4242\n");  // the holder's lock is left alone
  close(fd);  // the holder ends

  // A holder killed with SIGKILL leaves the file but not the lock.
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int cfd = open((out + "/" + kLockFile).c_str(), O_RDWR);
    if (cfd < 0 || flock(cfd, LOCK_EX) != 0) _exit(1);
    pause();
    _exit(0);
  }
  // Wait until the child holds it.
  for (int i = 0; i < 500; i++) {
    int probe = open((out + "/" + kLockFile).c_str(), O_RDWR);
    REQUIRE(probe >= 0);
    const bool held = flock(probe, LOCK_EX | LOCK_NB) != 0;
    close(probe);
    if (held) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(run_cmd(cmd_train, small(out, 1)).code == 1);  // still held
  REQUIRE(kill(child, SIGKILL) == 0);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  Outcome after = run_cmd(cmd_train, small(out, 1));
  INFO(after.out);
  REQUIRE(after.code == 0);
  REQUIRE(csv_rows(out + "/metrics.csv") == 2);
}

TEST_CASE("runfolder: two processes started into one folder: one writes, the other is refused", "[runfolder]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  const std::string bin = nala_binary(), out = t.path + "/run", log1 = t.path + "/1.log";
  REQUIRE(access(bin.c_str(), X_OK) == 0);
  // The first trains 3 epochs of 256 images: it holds the folder for seconds.
  std::vector<std::string> first = small(out, 3);
  first[3] = "256";  // --subset
  first = train_cmd(first);
  pid_t pid = spawn(bin, first, log1);
  bool started = false;
  for (int i = 0; i < 3000 && !started; i++) {
    started = slurp(log1).find("output folder") != std::string::npos;
    if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(started);
  std::string second;
  const int code = run_binary(train_cmd(small(out, 1)), t.path, &second);
  int status = 0;
  REQUIRE(wait_for(pid, 600, &status));
  INFO(slurp(log1) << "\n----\n" << second);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(code == 1);
  REQUIRE(second.find("is being written by another nala train (pid " + std::to_string((long)pid) + ")") !=
          std::string::npos);
  REQUIRE(csv_rows(out + "/metrics.csv") == 4);  // the first run's header and 3 epochs, nothing else
}

TEST_CASE("runfolder: an unusable --out fails before any data is read", "[runfolder]") {
  TempDir t;
  const std::string nowhere = t.path + "/no/such/data";  // would fail, later, if the data came first
  { std::ofstream(t.path + "/file") << "x"; }
  auto t0 = std::chrono::steady_clock::now();
  Outcome r = run_cmd(cmd_train, {"--data-dir", nowhere, "--out", t.path + "/file", "--threads", "2"});
  INFO(r.out);
  REQUIRE(r.code == 1);
  REQUIRE(has(r, t.path + "/file exists and is not a folder"));
  REQUIRE(!has(r, nowhere));
  REQUIRE(slurp(t.path + "/file") == "x");
  // Below a regular file, and a place no one may create a folder in.
  r = run_cmd(cmd_train, {"--data-dir", nowhere, "--out", t.path + "/file/run", "--threads", "2"});
  REQUIRE(r.code == 1);
  REQUIRE(has(r, "cannot create training output folder " + t.path + "/file/run"));
  r = run_cmd(cmd_train, {"--data-dir", nowhere, "--out", "/proc/nala-cannot-be-here", "--threads", "2"});
  INFO(r.out);
  REQUIRE(r.code == 1);
  REQUIRE(has(r, "/proc/nala-cannot-be-here"));
  REQUIRE(!has(r, nowhere));
  REQUIRE(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 10);
  // A --resume folder without a checkpoint: said so, before any data.
  fs::create_directories(t.path + "/empty");
  r = run_cmd(cmd_train, {"--data-dir", nowhere, "--resume", t.path + "/empty"});
  REQUIRE(r.code == 1);
  REQUIRE(has(r, "--resume " + t.path + "/empty: the folder holds no checkpoint.safetensors"));
  // A run that fails after making its folders (here: on the data) leaves none behind.
  r = run_cmd(cmd_train, {"--data-dir", nowhere, "--out", t.path + "/new/run", "--threads", "2"});
  REQUIRE(r.code == 1);
  REQUIRE(has(r, nowhere));
  REQUIRE(!fs::exists(t.path + "/new"));
}

TEST_CASE("runfolder: metrics.csv is read and written through the checked file functions", "[runfolder]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  const std::string out = t.path + "/run";
  REQUIRE(run_cmd(cmd_train, small(out, 2, {"--max-steps", "8"})).code == 0);  // epoch 1 of 2
  // A FIFO in place of metrics.csv: refused by name at --resume (it used to block forever).
  fs::remove(out + "/metrics.csv");
  REQUIRE(mkfifo((out + "/metrics.csv").c_str(), 0644) == 0);
  std::vector<std::string> resume = train_cmd(small("", 2, {"--resume", out}));
  std::string text;
  REQUIRE(run_binary(resume, t.path, &text, 0, 120) == 1);
  INFO(text);
  REQUIRE(text.find(out + "/metrics.csv is a FIFO") != std::string::npos);
}

TEST_CASE("runfolder: --max-steps inside an epoch reports the partial epoch and claims no file", "[runfolder]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  // 3 steps of an 8-step first epoch: nothing is written, and the closing lines say so.
  Outcome r = run_cmd(cmd_train, small(t.path + "/a", 1, {"--max-steps", "3"}));
  INFO(r.out);
  REQUIRE(r.code == 0);
  REQUIRE(has(r, "epoch 1 (partial: 3 of 8 steps): train loss"));
  REQUIRE(has(r, "stopped by --max-steps 3 at step 3, 3 of 8 steps into epoch 1"));
  REQUIRE(has(r, "no checkpoint was written"));
  REQUIRE(has(r, "no best weights were written"));
  REQUIRE(!has(r, "weights in"));
  REQUIRE(run_files_in(t.path + "/a").empty());

  // 10 steps of 2 epochs: epoch 1 is saved, the 2 steps of epoch 2 are reported.
  r = run_cmd(cmd_train, small(t.path + "/b", 2, {"--max-steps", "10"}));
  INFO(r.out);
  REQUIRE(r.code == 0);
  REQUIRE(has(r, "stopped by --max-steps 10 at step 10, 2 of 8 steps into epoch 2"));
  REQUIRE(has(r, "checkpoint of epoch 1 of 2 (step 8): " + t.path + "/b/checkpoint.safetensors"));
  REQUIRE(has(r, "weights in " + t.path + "/b/best.safetensors"));
  REQUIRE(load_safetensors(t.path + "/b/checkpoint.safetensors").metadata.at("nala.epoch") == "1");
  REQUIRE(csv_rows(t.path + "/b/metrics.csv") == 2);

  // At an epoch's end: said so.
  r = run_cmd(cmd_train, small(t.path + "/c", 2, {"--max-steps", "8"}));
  REQUIRE(r.code == 0);
  REQUIRE(has(r, "stopped by --max-steps 8 at the end of epoch 1 of 2"));
}

TEST_CASE("runfolder: a damaged checkpoint is refused naming the key or the tensor", "[runfolder]") {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir t;
  const std::string good = t.path + "/good";
  REQUIRE(run_cmd(cmd_train, small(good, 2, {"--max-steps", "8"})).code == 0);
  const SafeTensors st = load_safetensors(good + "/checkpoint.safetensors");
  std::string model_key, optim_key;
  for (auto& [k, v] : st.tensors) {
    if (v.dtype() != DType::F32) continue;
    if (model_key.empty() && k.rfind("model.", 0) == 0) model_key = k;
    if (optim_key.empty() && k.rfind("optim.", 0) == 0) optim_key = k;
  }
  REQUIRE(!model_key.empty());
  REQUIRE(!optim_key.empty());

  // A copy of the good run with one change to its checkpoint, then --resume.
  int n = 0;
  auto resume_damaged = [&](const std::string& key, const std::string& value, const std::string& nan_tensor) {
    const std::string dir = t.path + "/bad" + std::to_string(n++);
    fs::create_directories(dir);
    fs::copy_file(good + "/metrics.csv", dir + "/metrics.csv");
    std::map<std::string, std::string> meta = st.metadata;
    if (!key.empty()) meta[key] = value;
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (auto& [k, v] : st.tensors) {
      Tensor c = v.clone();
      if (k == nan_tensor) c.f32()[c.numel() / 2] = k == model_key ? NAN : INFINITY;
      tensors.push_back({k, c});
    }
    save_safetensors(dir + "/checkpoint.safetensors", tensors, meta);
    const std::string before = slurp(dir + "/checkpoint.safetensors");
    Outcome r = run_cmd(cmd_train, small("", 2, {"--resume", dir}));
    if (r.code != 0) {  // refused before anything was written over it
      REQUIRE(slurp(dir + "/checkpoint.safetensors") == before);
      REQUIRE(csv_rows(dir + "/metrics.csv") == 2);
    }
    r.out += "\n[folder " + dir + "]";
    return std::make_pair(r, dir + "/checkpoint.safetensors");
  };
  auto [neg, neg_path] = resume_damaged("nala.epoch", "-5", "");
  INFO(neg.out);
  REQUIRE(neg.code == 1);
  REQUIRE(has(neg, neg_path + ": checkpoint metadata nala.epoch = '-5' is out of range"));
  auto [abc, abc_path] = resume_damaged("nala.epoch", "abc", "");
  INFO(abc.out);
  REQUIRE(abc.code == 1);
  REQUIRE(has(abc, abc_path + ": checkpoint metadata nala.epoch = 'abc' is not an integer"));
  auto [step, step_path] = resume_damaged("nala.step", "12x", "");
  REQUIRE(has(step, "nala.step = '12x' is not an integer"));
  auto [skew, skew_path] = resume_damaged("nala.step", "5", "");  // epoch 1 of 8 steps ends at step 8
  INFO(skew.out);
  REQUIRE(skew.code == 1);
  REQUIRE(has(skew, "nala.step = '5' does not match nala.epoch = 1 at 8 steps per epoch (8)"));
  auto [big, big_path] = resume_damaged("nala.epoch", "7", "");  // the run has 2 epochs
  REQUIRE(has(big, "nala.epoch = '7' exceeds the run's --epochs 2"));
  auto [rng, rng_path] = resume_damaged("nala.rng", "zz", "");
  REQUIRE(has(rng, "nala.rng = 'zz' is not 64 hexadecimal digits"));
  auto [best, best_path] = resume_damaged("nala.best_top1", "nan", "");
  REQUIRE(has(best, "nala.best_top1 = 'nan' is not a finite number"));

  auto [wnan, wnan_path] = resume_damaged("", "", model_key);
  INFO(wnan.out);
  REQUIRE(wnan.code == 1);
  REQUIRE(has(wnan, wnan_path + ": tensor " + model_key + " holds 1 non-finite value"));
  REQUIRE(!has(wnan, "--lr"));  // not blamed on the learning rate
  auto [onan, onan_path] = resume_damaged("", "", optim_key);
  REQUIRE(onan.code == 1);
  REQUIRE(has(onan, onan_path + ": tensor " + optim_key + " holds 1 non-finite value"));

  // The undamaged copy resumes.
  auto [ok, ok_path] = resume_damaged("", "", "");
  INFO(ok.out);
  REQUIRE(ok.code == 0);
}

TEST_CASE("runfolder: command-line slips are usage errors", "[runfolder]") {
  g_check_args_only = true;  // return after the command line: nothing is read or trained
  Outcome r = run_cmd(cmd_train, {"--out", "--hflip"});
  INFO(r.out);
  REQUIRE(r.code == 2);
  REQUIRE(has(r, "--out needs a value, but the next argument is the option --hflip"));
  REQUIRE(has(r, "--out=--hflip"));
  REQUIRE(run_cmd(cmd_train, {"--out=--hflip"}).code == 0);  // a value that starts with --, on purpose
  REQUIRE(run_cmd(cmd_train, {"--epochs", "--hflip"}).code == 2);
  REQUIRE(run_cmd(cmd_eval, {"--weights", "--data", "cifar10"}).code == 2);
  r = run_cmd(cmd_train, {"--epochs", "2", "--warmup-epochs", "3"});
  INFO(r.out);
  REQUIRE(r.code == 2);
  REQUIRE(has(r, "--warmup-epochs 3 exceeds --epochs 2"));
  REQUIRE(run_cmd(cmd_train, {"--epochs", "2", "--warmup-epochs", "2"}).code == 0);
  REQUIRE(run_cmd(cmd_train, {"--resume", "r", "--overwrite"}).code == 2);
  g_check_args_only = false;
}

TEST_CASE("runfolder: nala forward with a batch of 0 images is a clear error", "[runfolder]") {
  TempDir t;
  NalaConfig cfg = nalaformer_config("pico");
  NalaFormer m(cfg);
  Rng rng(1);
  m.init_weights(rng);
  save_weights(m, t.path + "/w.safetensors");
  save_safetensors(t.path + "/in.safetensors", {{"input", Tensor::zeros({0, cfg.in_chans, 28, 28})}});
  Outcome r = run_cmd(cmd_forward, {"--weights", t.path + "/w.safetensors", "--input",
                                           t.path + "/in.safetensors", "--output", t.path + "/out.safetensors",
                                           "--threads", "2"});
  INFO(r.out);
  REQUIRE(r.code == 1);
  REQUIRE(has(r, t.path + "/in.safetensors: 'input' holds a batch of 0 images"));
  REQUIRE(!fs::exists(t.path + "/out.safetensors"));
}

TEST_CASE("runfolder: memory refusals in readable units; out of memory says what was allocated", "[runfolder]") {
  NalaConfig pico = nalaformer_config("pico", 1, 10);
  TrainMemory m = estimate_train_memory(pico, 653194, 2, 28, 28, 4096);
  try {
    check_train_memory(m, (int64_t)64 << 20);  // 64 MiB
    FAIL("a 4096-image batch fits in 64 MiB?");
  } catch (const UsageError& e) {
    const std::string what = e.what();
    INFO(what);
    REQUIRE(what.find("weights and gradients 5.0 MiB") != std::string::npos);  // 8 bytes x 653194
    REQUIRE(what.find("this machine has 64.0 MiB") != std::string::npos);
    REQUIRE(what.find("0.00 GiB") == std::string::npos);
  }
  REQUIRE(human_bytes(512) == "512 bytes");
  REQUIRE(human_bytes(3 << 10) == "3.0 KiB");
  REQUIRE(human_bytes((int64_t)8 << 30) == "8.00 GiB");

#if NALA_SANITIZER_BUILD
  WARN("sanitizer build: the address-space limit below would stop the sanitizer itself: skipped");
#else
  if (!have_fashion_mnist()) return;
  // The address space the program needs to start and build pico: the least
  // limit under which `nala info` runs (found by bisection; it depends on the
  // build: CUDA, MPI and NCCL libraries take hundreds of MiB of it).
  TempDir t;
  std::string text;
  int64_t lo = (int64_t)8 << 20, hi = (int64_t)16 << 30;
  REQUIRE(run_binary({"info", "--model", "pico"}, t.path, &text, hi, 60) == 0);
  while (hi - lo > ((int64_t)1 << 20)) {
    const int64_t mid = lo + (hi - lo) / 2;
    (run_binary({"info", "--model", "pico"}, t.path, &text, mid, 60) == 0 ? hi : lo) = mid;
  }
  // With 24 MiB more than that, the 47 MB of Fashion-MNIST training images
  // cannot be allocated (std::bad_alloc): the error says what failed.
  REQUIRE(run_binary(train_cmd(small("run", 1)), t.path, &text, hi + ((int64_t)24 << 20), 120) == 1);
  INFO(text);
  REQUIRE(text.find("out of memory while loading the fashion-mnist training images") != std::string::npos);
  REQUIRE(!fs::exists(t.path + "/run"));  // the failed run's folder is gone
#endif
}
