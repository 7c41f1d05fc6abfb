// nn/comm.h - the process-group interface the training loop talks to, the
// group of one, and the gradient synchronisation the loop calls during
// backward. The real groups (MPI, NCCL), the launcher and the bucketed
// gradient all-reduce (GradReducer, a GradSync) are in distributed/
// (libnala_dist.a, optional): the core library never depends on them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "autograd/autograd.h"
#include "tensor/tensor.h"

namespace nala {

// A Comm is one process's handle on the group of size() processes (ranks).
class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;  // "single", "mpi", "nccl"
  // n floats at data (on dev) become their sum over the ranks, in place.
  // Later kernels on dev see the result.
  virtual void all_reduce_sum(float* data, int64_t n, Device dev) = 0;
  // The same, started asynchronously: complete after wait_all().
  virtual void all_reduce_sum_start(float* data, int64_t n, Device dev) { all_reduce_sum(data, n, dev); }
  virtual void wait_all() {}
  // Lets started operations progress (MPI progresses only inside its calls).
  virtual void poll() {}
  // n floats at data (on dev) become root's values.
  virtual void broadcast(float* data, int64_t n, Device dev, int root) = 0;
  // n bytes of host memory become root's (small messages: ids, flags).
  virtual void broadcast_bytes(void* data, size_t n, int root) = 0;
  virtual void barrier() = 0;
  // Ends every process of the group now (after an error on one rank, the
  // others would wait forever in their next collective).
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

// Makes every rank's gradients their mean over the group, during and after
// one backward pass: backward(loss, Tensor(), false, sync.hook()) hands it
// each parameter's gradient as soon as that is final (to start its
// all-reduce early), and finish() waits until every gradient is the mean.
class GradSync {
 public:
  virtual ~GradSync() = default;
  virtual LeafHook hook() = 0;
  virtual void finish() = 0;
};

// The group of one process: every collective is a no-op.
std::unique_ptr<Comm> make_single_comm();

// Every tensor's values (f32 only) become rank root's: parameters and
// buffers at the start of a run.
void broadcast_tensors(Comm& comm, const std::vector<Tensor>& ts, int root = 0);
// Every f32 tensor becomes its mean over the ranks (BatchNorm running
// statistics before evaluation and checkpoints).
void average_tensors(Comm& comm, const std::vector<Tensor>& ts);

}  // namespace nala
