// nn/comm.cpp - the single-process group and the tensor collectives built on
// any Comm (see nn/comm.h).
#include "nn/comm.h"

#include <cstdlib>

#include "autograd/dispatch.h"
#include "kernels/cpu/elementwise.h"
#include "tensor/device.h"
#ifdef NALA_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace nala {

namespace {

class SingleComm : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend() const override { return "single"; }
  void all_reduce_sum(float*, int64_t, Device) override {}
  void broadcast(float*, int64_t, Device, int) override {}
  void broadcast_bytes(void*, size_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override { std::_Exit(exit_code); }
};

}  // namespace

std::unique_ptr<Comm> make_single_comm() { return std::make_unique<SingleComm>(); }

void broadcast_tensors(Comm& comm, const std::vector<Tensor>& ts, int root) {
  for (const Tensor& t : ts) {
    if (t.dtype() != DType::F32 || !t.numel()) continue;
    NALA_CHECK(t.is_contiguous(), "broadcast_tensors: ", t.desc(), " is not contiguous");
    comm.broadcast(const_cast<Tensor&>(t).f32(), t.numel(), t.device(), root);
  }
}

void average_tensors(Comm& comm, const std::vector<Tensor>& ts) {
  for (const Tensor& t : ts) {
    if (t.dtype() != DType::F32 || !t.numel()) continue;
    NALA_CHECK(t.is_contiguous(), "average_tensors: ", t.desc(), " is not contiguous");
    float* p = const_cast<Tensor&>(t).f32();
    comm.all_reduce_sum(p, t.numel(), t.device());
    if (comm.size() > 1) NALA_DISPATCH(t.device(), scale_forward, p, p, 1.0f / comm.size(), t.numel());
  }
}

}  // namespace nala
