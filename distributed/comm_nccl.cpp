// distributed/comm_nccl.cpp - the NCCL process group (distributed/distributed.h): compiled
// when the build has CUDA and finds NCCL (Makefile: NCCL=1).
//
// One GPU per process. Every NCCL call runs on one stream of the group's
// own (non-blocking, so it overlaps the default stream where the kernels
// run), ordered after the kernels issued so far by an event, so that every
// rank issues its collectives in one order on one stream. A blocking call
// then makes the default stream wait for it; a started one is waited for
// by wait_all().
//
// NCCL's unique id is made by rank 0 and reaches the others through MPI
// (mpirun) or through a file in the rendezvous directory (`nala train
// --gpus N`): written through nn/files.h's AtomicWriter (a temporary name,
// renamed), so a reader sees all of it or nothing, and read back through its
// checked reader (a regular file of exactly the id's size).
#ifdef NALA_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "kernels/cuda/check.cuh"
#include "distributed/distributed.h"
#include "nn/files.h"
#include "tensor/device.h"

namespace nala {

namespace {

#define NCCL_CALL(call, what)                                                            \
  do {                                                                                   \
    ncclResult_t r_ = (call);                                                            \
    if (r_ != ncclSuccess) NALA_FAIL("NCCL ", what, ": ", ncclGetErrorString(r_));       \
  } while (0)

ncclUniqueId id_from_file(const LaunchEnv& env) {
  ncclUniqueId id;
  const std::string path = env.rendezvous + "/nccl_id";
  if (env.rank == 0) {
    NCCL_CALL(ncclGetUniqueId(&id), "ncclGetUniqueId");
    write_file_atomic(path, std::string(reinterpret_cast<const char*>(&id), sizeof id), "NCCL id");
    return id;
  }
  for (int waited_ms = 0;; waited_ms += 10) {
    if (::access(path.c_str(), F_OK) == 0) {  // renamed into place: complete
      const std::string bytes = read_file(path, "NCCL id", sizeof id);
      NALA_CHECK(bytes.size() == sizeof id, path, ": truncated NCCL id (", bytes.size(), " of ", sizeof id, " bytes)");
      std::memcpy(&id, bytes.data(), sizeof id);
      return id;
    }
    NALA_CHECK(waited_ms < 300000, path, ": rank 0 did not publish the NCCL id within 5 minutes");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

class NcclComm : public Comm {
 public:
  NcclComm(const LaunchEnv& env, Comm* mpi) : mpi_(mpi) {
    ncclUniqueId id;
    if (mpi_) {
      rank_ = mpi_->rank(), size_ = mpi_->size();
      if (rank_ == 0) NCCL_CALL(ncclGetUniqueId(&id), "ncclGetUniqueId");
      mpi_->broadcast_bytes(&id, sizeof id, 0);
    } else {
      rank_ = env.rank, size_ = env.size;
      id = id_from_file(env);
    }
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
    CUDA_CHECK(cudaEventCreateWithFlags(&issued_, cudaEventDisableTiming), "event");
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "event");
    NCCL_CALL(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
  }
  ~NcclComm() override {
    cudaStreamSynchronize(stream_);
    ncclCommDestroy(comm_);
    cudaEventDestroy(issued_);
    cudaEventDestroy(done_);
    cudaStreamDestroy(stream_);
    if (scratch_) cudaFree(scratch_);
    delete mpi_;
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }

  void all_reduce_sum(float* data, int64_t n, Device dev) override {
    if (dev == Device::CPU) return staged(data, n, [&](float* d) { all_reduce_sum(d, n, Device::CUDA); });
    all_reduce_sum_start(data, n, dev);
    wait_all();
  }
  void all_reduce_sum_start(float* data, int64_t n, Device dev) override {
    if (dev == Device::CPU) return all_reduce_sum(data, n, dev);
    after_issued_kernels();
    NCCL_CALL(ncclAllReduce(data, data, (size_t)n, ncclFloat, ncclSum, comm_, stream_), "all-reduce");
    pending_ = true;
  }
  void wait_all() override {
    if (!pending_) return;
    CUDA_CHECK(cudaEventRecord(done_, stream_), "event record");
    CUDA_CHECK(cudaStreamWaitEvent(cudaStreamLegacy, done_, 0), "stream wait");
    pending_ = false;
  }
  void broadcast(float* data, int64_t n, Device dev, int root) override {
    if (dev == Device::CPU) return staged(data, n, [&](float* d) { broadcast(d, n, Device::CUDA, root); });
    after_issued_kernels();
    NCCL_CALL(ncclBroadcast(data, data, (size_t)n, ncclFloat, root, comm_, stream_), "broadcast");
    pending_ = true;
    wait_all();
  }
  void broadcast_bytes(void* data, size_t n, int root) override {
    const int64_t words = (int64_t)((n + 3) / 4);
    std::vector<float> buf((size_t)words);
    std::memcpy(buf.data(), data, n);
    staged(buf.data(), words, [&](float* d) {
      after_issued_kernels();
      NCCL_CALL(ncclBroadcast(d, d, (size_t)words * 4, ncclUint8, root, comm_, stream_), "broadcast");
      pending_ = true;
      wait_all();
    });
    std::memcpy(data, buf.data(), n);
  }
  void barrier() override {
    float one = 1;
    all_reduce_sum(&one, 1, Device::CPU);
  }
  [[noreturn]] void abort(int exit_code) override {
    ncclCommAbort(comm_);
    if (mpi_) mpi_->abort(exit_code);
    std::_Exit(exit_code);
  }

 private:
  // The group's stream starts after every kernel issued on the default stream so far.
  void after_issued_kernels() {
    CUDA_CHECK(cudaEventRecord(issued_, cudaStreamLegacy), "event record");
    CUDA_CHECK(cudaStreamWaitEvent(stream_, issued_, 0), "stream wait");
  }
  // Host data through a device buffer of the group's own.
  template <class F>
  void staged(float* host, int64_t n, F&& op) {
    if (n > scratch_n_) {
      if (scratch_) cudaFree(scratch_);
      CUDA_CHECK(cudaMalloc(&scratch_, n * sizeof(float)), "scratch buffer");
      scratch_n_ = n;
    }
    CUDA_CHECK(cudaMemcpy(scratch_, host, n * sizeof(float), cudaMemcpyHostToDevice), "copy");
    op(scratch_);
    CUDA_CHECK(cudaMemcpy(host, scratch_, n * sizeof(float), cudaMemcpyDeviceToHost), "copy");
  }

  Comm* mpi_ = nullptr;
  int rank_ = 0, size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t issued_ = nullptr, done_ = nullptr;
  bool pending_ = false;
  float* scratch_ = nullptr;
  int64_t scratch_n_ = 0;
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(const LaunchEnv& env, Comm* mpi) { return std::make_unique<NcclComm>(env, mpi); }

}  // namespace nala
#endif  // NALA_NCCL
