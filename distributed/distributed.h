// distributed/distributed.h - data-parallel training: one process per GPU (or per
// CPU share), each with a shard of every global batch, gradients averaged
// across the processes after each backward pass.
//
// A Comm is one process's handle on the group of size() processes (ranks).
// Three backends, chosen by open_comm():
//   single  one process; every collective is a no-op (always built)
//   mpi     MPI's collectives on host memory (build with MPI; start with
//           mpirun); CUDA tensors are staged through the host
//   nccl    NCCL's collectives on GPU memory (build with CUDA and NCCL),
//           one GPU per process; NCCL's unique id travels through MPI under
//           mpirun, or through a file under `nala train --gpus N`
// This folder is its own optional library (libnala_dist.a): the core
// (libnala.a) holds only the Comm interface and the single-process group
// (nn/comm.h), and never depends on MPI, NCCL or the launcher. Without MPI
// and NCCL only `single` exists, and open_comm() says which build option a
// launch needs.
//
// GradReducer does what PyTorch's DistributedDataParallel does for the
// gradients: parameters are packed into buckets (about bucket_bytes each,
// in reverse registration order, roughly the order backward produces
// them); backward()'s leaf hook copies each gradient, scaled by 1/size, into
// its bucket as soon as it is final, and a full bucket starts its all-reduce
// while the rest of the backward pass runs (NCCL: on a stream of its own).
// finish() waits for every bucket and makes each .grad a view of its
// bucket. Buckets start in index order on every rank, as collectives must.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "nn/comm.h"
#include "tensor/tensor.h"

namespace nala {



// How this process was started: by mpirun (Open MPI's OMPI_COMM_WORLD_*,
// or PMI_RANK/PMI_SIZE), by `nala train --gpus N` (NALA_RANK,
// NALA_WORLD_SIZE, NALA_LOCAL_RANK, NALA_RENDEZVOUS), or alone.
struct LaunchEnv {
  std::string launcher;  // "", "mpirun" or "nala"
  int rank = 0, size = 1, local_rank = 0;
  int local_size = 1;  // processes of the group on this machine
  std::string rendezvous;  // "nala": a directory every rank can reach
};
LaunchEnv detect_launch();

// Runs this program again as n processes of one group on this machine
// (args[0] is the name they see; NALA_RANK, NALA_LOCAL_RANK, NALA_WORLD_SIZE
// and NALA_RENDEZVOUS tell each its place). Waits for all; when one fails
// the others are stopped (SIGTERM, then SIGKILL after 10 s). Returns the first failure's exit code, or 0.
int launch_local_group(int n, const std::vector<std::string>& args);

bool mpi_built();
bool nccl_built();

// The process group for a run on `dev`: single when started alone; under
// mpirun MPI (CPU) or NCCL (CUDA, falling back to MPI when NCCL is not
// built); under `nala train --gpus N` NCCL. On CUDA it first selects GPU
// local_rank. Fails naming the missing build option.
std::unique_ptr<Comm> open_comm(Device dev);
#ifdef NALA_MPI
std::unique_ptr<Comm> make_mpi_comm();
#endif
#ifdef NALA_NCCL
// The NCCL id comes from rank 0 through `mpi` (owned from now on; null
// under `nala train --gpus N`) or through the file rendezvous of env.
std::unique_ptr<Comm> make_nccl_comm(const LaunchEnv& env, Comm* mpi);
#endif



class GradReducer : public GradSync {
 public:
  GradReducer(const std::vector<Tensor>& params, Comm& comm, int64_t bucket_bytes = 25 << 20);
  // Pass to backward(): backward(loss, Tensor(), false, reducer.hook()).
  LeafHook hook() override;
  // After backward(): every gradient is the mean over the ranks. A parameter
  // that got no gradient on a rank counts as zero there.
  void finish() override;
  int num_buckets() const { return (int)buckets_.size(); }
  const std::vector<int>& bucket_params(int b) const { return buckets_[b].params; }

 private:
  struct Bucket {
    std::vector<int> params;       // indices into params_
    std::vector<int64_t> offsets;  // element offset of each in flat
    int64_t numel = 0;
    Tensor flat;
    int pending = 0;
    bool started = false;
  };
  void ready(int param);
  void start_ready_buckets();
  void reset();

  std::vector<Tensor> params_;
  Comm& comm_;
  Device dev_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_, slot_of_;
  std::vector<char> done_;
  std::vector<std::pair<const void*, int>> index_;  // (TensorImpl*, param), sorted
  int next_start_ = 0;
};

}  // namespace nala
