// autograd/dispatch.h - pick the kernel of the tensor's device.
//
// NALA_DISPATCH(device, kernel, args...) calls cpu::kernel(args...) or
// cuda::kernel(args...). Both namespaces export the same names and
// signatures (kernels/cpu/*.h, kernels/cuda/*.h). In a build without CUDA a
// device tensor cannot exist (Storage refuses), and the CUDA branch fails
// loudly with the kernel's name. Every call is timed when NALA_PROFILE=1
// (autograd/profile.h).
#pragma once
#include "autograd/profile.h"
#include "tensor/tensor.h"

#ifdef NALA_CUDA
#define NALA_CUDA_BRANCH(kernel, ...) ::nala::cuda::kernel(__VA_ARGS__)
#else
#define NALA_CUDA_BRANCH(kernel, ...) NALA_FAIL(#kernel ": this build has no CUDA kernels (rebuild with CUDA=1)")
#endif

#define NALA_DISPATCH(device, kernel, ...)                       \
  do {                                                           \
    ::nala::ProfileScope _nala_prof(#kernel, (device));          \
    if ((device) == ::nala::Device::CPU)                         \
      ::nala::cpu::kernel(__VA_ARGS__);                          \
    else                                                         \
      NALA_CUDA_BRANCH(kernel, __VA_ARGS__);                     \
  } while (0)

namespace nala {
// All inputs of an op must live on one device; names the op and the tensors.
inline Device common_device(const char* op, std::initializer_list<const Tensor*> ts) {
  Device d = Device::CPU;
  bool first = true;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (first) d = t->device(), first = false;
    NALA_CHECK(t->device() == d, op, ": inputs on different devices (", t->desc(), ")");
  }
  return d;
}
}  // namespace nala
