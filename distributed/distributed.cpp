// distributed/distributed.cpp - launch detection, choosing the group, and the
// bucketed gradient all-reduce (see distributed/distributed.h). The MPI and
// NCCL backends are in distributed/comm_mpi.cpp and distributed/comm_nccl.cpp.
#include "distributed/distributed.h"

#include <algorithm>
#include <cstdlib>

#include "autograd/dispatch.h"
#include "kernels/cpu/elementwise.h"
#include "tensor/device.h"
#ifdef NALA_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace nala {

namespace {



int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  NALA_CHECK(end && *end == '\0' && x >= 0 && x < (1 << 24), "environment variable ", name, "='", v,
             "' is not a rank or a process count");
  return (int)x;
}

}  // namespace

bool mpi_built() {
#ifdef NALA_MPI
  return true;
#else
  return false;
#endif
}

bool nccl_built() {
#ifdef NALA_NCCL
  return true;
#else
  return false;
#endif
}

LaunchEnv detect_launch() {
  LaunchEnv e;
  if (std::getenv("NALA_WORLD_SIZE")) {
    e.launcher = "nala";
    e.size = env_int("NALA_WORLD_SIZE", 1);
    e.rank = env_int("NALA_RANK", 0);
    e.local_rank = env_int("NALA_LOCAL_RANK", e.rank);
    e.local_size = e.size;
    const char* dir = std::getenv("NALA_RENDEZVOUS");
    e.rendezvous = dir ? dir : "";
    NALA_CHECK(!e.rendezvous.empty(), "NALA_WORLD_SIZE is set but NALA_RENDEZVOUS is not");
  } else if (std::getenv("OMPI_COMM_WORLD_SIZE")) {  // Open MPI
    e.launcher = "mpirun";
    e.size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    e.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    e.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
    e.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1);
  } else if (std::getenv("PMI_SIZE")) {  // MPICH's Hydra
    e.launcher = "mpirun";
    e.size = env_int("PMI_SIZE", 1);
    e.rank = env_int("PMI_RANK", 0);
    e.local_rank = env_int("MPI_LOCALRANKID", 0);
    e.local_size = env_int("MPI_LOCALNRANKS", 1);
  }
  NALA_CHECK(e.size >= 1 && e.rank < e.size, "launch environment: rank ", e.rank, " of ", e.size, " processes");
  return e;
}

std::unique_ptr<Comm> open_comm(Device dev) {
  const LaunchEnv env = detect_launch();
  if (env.launcher.empty()) return make_single_comm();
  if (dev == Device::CUDA) {
    const int gpus = device::cuda_device_count();
    NALA_CHECK(env.local_rank < gpus, "rank ", env.rank, " is local process ", env.local_rank, " on its machine, but ",
               gpus, " GPU(s) are visible: start at most one process per GPU");
    device::set_cuda_device(env.local_rank);
  }
  if (env.launcher == "nala") {
    NALA_CHECK(dev == Device::CUDA, "`--gpus N` runs one process per GPU: it needs --device cuda");
#ifdef NALA_NCCL
    return make_nccl_comm(env, nullptr);
#else
    NALA_FAIL("`--gpus N` needs NCCL, and this build has none: rebuild with CUDA and NCCL (README: Several GPUs)");
#endif
  }
#ifdef NALA_MPI
  std::unique_ptr<Comm> mpi = make_mpi_comm();
#ifdef NALA_NCCL
  if (dev == Device::CUDA) return make_nccl_comm(env, mpi.release());
#endif
  return mpi;
#else
  NALA_FAIL("started by mpirun (", env.size, " processes), but this build has no MPI: install libopenmpi-dev and "
            "openmpi-bin and rebuild (README: Several GPUs)");
#endif
}

// ---------------------------------------------------------------- GradReducer

GradReducer::GradReducer(const std::vector<Tensor>& params, Comm& comm, int64_t bucket_bytes)
    : params_(params), comm_(comm), dev_(params.empty() ? Device::CPU : params[0].device()) {
  NALA_CHECK(bucket_bytes > 0, "GradReducer: bucket size ", bucket_bytes, " bytes");
  const int P = (int)params_.size();
  bucket_of_.assign(P, -1);
  slot_of_.assign(P, -1);
  done_.assign(P, 0);
  for (int i = 0; i < P; i++) {
    const Tensor& p = params_[i];
    NALA_CHECK(p.dtype() == DType::F32 && p.device() == dev_, "GradReducer: parameter ", i, " ", p.desc(),
               " (every parameter must be f32 on one device)");
    index_.push_back({p.impl(), i});
  }
  std::sort(index_.begin(), index_.end());
  // Reverse registration order: the last layers' gradients come first.
  const int64_t cap = std::max<int64_t>(1, bucket_bytes / (int64_t)sizeof(float));
  for (int i = P - 1; i >= 0; i--) {
    if (buckets_.empty() || (buckets_.back().numel > 0 && buckets_.back().numel + params_[i].numel() > cap))
      buckets_.emplace_back();
    Bucket& b = buckets_.back();
    bucket_of_[i] = (int)buckets_.size() - 1;
    slot_of_[i] = (int)b.params.size();
    b.params.push_back(i);
    b.offsets.push_back(b.numel);
    b.numel += params_[i].numel();
  }
  for (Bucket& b : buckets_) b.flat = Tensor::empty({std::max<int64_t>(1, b.numel)}, DType::F32, dev_);
  reset();
}

void GradReducer::reset() {
  for (Bucket& b : buckets_) b.pending = (int)b.params.size(), b.started = false;
  std::fill(done_.begin(), done_.end(), 0);
  next_start_ = 0;
}

LeafHook GradReducer::hook() {
  return [this](Tensor& leaf) {
    auto it = std::lower_bound(index_.begin(), index_.end(), std::make_pair((const void*)leaf.impl(), -1));
    if (it != index_.end() && it->first == leaf.impl()) ready(it->second);
  };
}

void GradReducer::ready(int i) {
  if (done_[i]) return;
  done_[i] = 1;
  Bucket& b = buckets_[bucket_of_[i]];
  float* dst = b.flat.f32() + b.offsets[slot_of_[i]];
  const Tensor& g = params_[i].grad();
  const int64_t n = params_[i].numel();
  if (g.defined()) {
    NALA_CHECK(g.shape() == params_[i].shape() && g.is_contiguous() && g.device() == dev_,
               "GradReducer: gradient ", g.desc(), " of parameter ", params_[i].desc());
    NALA_DISPATCH(dev_, scale_forward, dst, g.f32(), 1.0f / comm_.size(), n);
  } else {
    NALA_DISPATCH(dev_, fill, dst, 0.0f, n);
  }
  b.pending--;
  start_ready_buckets();
  comm_.poll();
}

void GradReducer::start_ready_buckets() {
  while (next_start_ < (int)buckets_.size() && buckets_[next_start_].pending == 0) {
    Bucket& b = buckets_[next_start_++];
    comm_.all_reduce_sum_start(b.flat.f32(), b.numel, dev_);
    b.started = true;
  }
}

void GradReducer::finish() {
  for (int i = 0; i < (int)params_.size(); i++)
    if (!done_[i]) ready(i);  // not reached by this rank's graph: zero
  comm_.wait_all();
  for (const Bucket& b : buckets_)
    for (size_t k = 0; k < b.params.size(); k++) {
      Tensor& p = params_[b.params[k]];
      p.set_grad(view::reshape(view::narrow(b.flat, 0, b.offsets[k], p.numel()), p.shape()));
    }
  reset();
}

}  // namespace nala
