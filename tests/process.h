// tests/process.h - what the tests that run the nala program share: a
// temporary directory, the program's path, starting it and waiting for it.
#pragma once

// NALA_SANITIZER_BUILD: 1 in a build under a sanitizer (GCC's or Clang's),
// which runs several times slower and reserves much address space.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define NALA_SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define NALA_SANITIZER_BUILD 1
#endif
#endif
#ifndef NALA_SANITIZER_BUILD
#define NALA_SANITIZER_BUILD 0
#endif
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "catch2/catch.hpp"

namespace nala {
namespace test {

// A fresh directory under /tmp, removed with everything in it at the end of the test.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/nala_test_XXXXXX";
    char* d = mkdtemp(tmpl);
    REQUIRE(d != nullptr);
    path = d;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// The whole content of a file ("" when it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Debian's dataset-fashion-mnist package (tools/test.sh installs it).
inline bool have_fashion_mnist() {
  return access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) == 0;
}
// A test that reads Fashion-MNIST starts (or continues) with this: without
// the dataset it passes with a warning.
#define SKIP_WITHOUT_FASHION_MNIST()                                                        \
  do {                                                                                      \
    if (!have_fashion_mnist()) {                                                            \
      WARN("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): skipped"); \
      return;                                                                               \
    }                                                                                       \
  } while (0)

// The nala program built next to the test binary.
inline std::string nala_binary() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  REQUIRE(n > 0);
  buf[n] = 0;
  std::string dir(buf);
  return dir.substr(0, dir.find_last_of('/')) + "/nala";
}

// Starts `bin args...` with stdout and stderr appended to log; optionally in
// folder cwd and under an address-space limit (bytes, RLIMIT_AS). The child
// exits with 127 when it cannot start, 126 when the limit cannot be set.
inline pid_t spawn(const std::string& bin, const std::vector<std::string>& args, const std::string& log,
                   const std::string& cwd = "", int64_t address_limit = 0) {
  std::vector<std::string> all = {bin};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(&a[0]);
  argv.push_back(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0 || (!cwd.empty() && chdir(cwd.c_str()) != 0)) _exit(127);
    dup2(fd, 1), dup2(fd, 2);
    if (address_limit) {
      struct rlimit rl = {(rlim_t)address_limit, (rlim_t)address_limit};
      if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(126);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Waits up to `seconds`; returns true (and the exit status) when the child ended by itself.
inline bool wait_for(pid_t pid, double seconds, int* status) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    REQUIRE(r >= 0);
    if (r == pid) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace test
}  // namespace nala
