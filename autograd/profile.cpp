// autograd/profile.cpp
#include "autograd/profile.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "tensor/device.h"

namespace nala {

namespace {
struct Entry {
  double seconds = 0;
  long calls = 0;
};
struct Table {
  std::mutex mu;
  std::map<std::string, Entry> rows;
  ~Table() {
    if (rows.empty()) return;
    std::vector<std::pair<std::string, Entry>> v(rows.begin(), rows.end());
    std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.second.seconds > b.second.seconds; });
    double total = 0;
    for (auto& r : v) total += r.second.seconds;
    std::fprintf(stderr, "\nnala profile (NALA_PROFILE=1): kernel time, synchronised\n%-40s %10s %10s %8s\n",
                 "kernel", "ms", "calls", "share");
    for (auto& r : v)
      std::fprintf(stderr, "%-40s %10.2f %10ld %7.1f%%\n", r.first.c_str(), 1e3 * r.second.seconds, r.second.calls,
                   100 * r.second.seconds / total);
  }
};
Table& table() {
  static Table t;
  return t;
}
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

bool profiling_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("NALA_PROFILE");
    return e && std::strcmp(e, "0") != 0;
  }();
  return on;
}

ProfileScope::ProfileScope(const char* name, Device dev) : name_(name), dev_(dev), on_(profiling_enabled()) {
  if (!on_) return;
  if (dev_ != Device::CPU) device::synchronize();
  start_ = now();
}

ProfileScope::~ProfileScope() {
  if (!on_) return;
  if (dev_ != Device::CPU) device::synchronize();
  double el = now() - start_;
  std::string key = std::string(name_) + (dev_ == Device::CPU ? " (cpu)" : " (cuda)");
  std::lock_guard<std::mutex> lock(table().mu);
  Entry& e = table().rows[key];
  e.seconds += el;
  e.calls++;
}

}  // namespace nala
