// autograd/profile.h - per-kernel time, when NALA_PROFILE=1 is set.
//
// NALA_DISPATCH wraps every kernel call in a ProfileScope. With profiling on,
// each scope synchronises the device before and after the call (so GPU
// times are real, and the run is slower) and adds the elapsed time to the
// kernel's total; the table is printed to stderr at exit, largest first.
// With profiling off a scope costs one branch.
#pragma once
#include "tensor/tensor.h"

namespace nala {

bool profiling_enabled();

class ProfileScope {
 public:
  ProfileScope(const char* name, Device dev);
  ~ProfileScope();

 private:
  const char* name_;
  Device dev_;
  double start_ = 0;
  bool on_;
};

}  // namespace nala
