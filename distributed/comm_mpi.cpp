// distributed/comm_mpi.cpp - the MPI process group (distributed/distributed.h): compiled when
// the build finds MPI (Makefile: MPI=1, detected through mpicxx).
//
// MPI works on host memory here; a CUDA tensor is copied to the host,
// reduced and copied back (a CUDA-aware MPI is not assumed). Asynchronous
// all-reduces use MPI_Iallreduce; MPI progresses them inside its own calls,
// so poll() calls MPI_Testall between gradient buckets.
#ifdef NALA_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <vector>

#include "distributed/distributed.h"
#include "tensor/device.h"

namespace nala {

namespace {

void mpi_check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  NALA_FAIL("MPI ", what, ": ", std::string(msg, len));
}

class MpiComm : public Comm {
 public:
  MpiComm() {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      owns_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiComm() override {
    if (!requests_.empty()) MPI_Waitall((int)requests_.size(), requests_.data(), MPI_STATUSES_IGNORE);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }

  void all_reduce_sum(float* data, int64_t n, Device dev) override {
    if (dev != Device::CPU) return staged(data, n, dev, [&](float* h) { all_reduce_sum(h, n, Device::CPU); });
    for (int64_t off = 0; off < n; off += INT_MAX) {
      const int len = (int)std::min<int64_t>(INT_MAX, n - off);
      mpi_check(MPI_Allreduce(MPI_IN_PLACE, data + off, len, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "all-reduce");
    }
  }
  void all_reduce_sum_start(float* data, int64_t n, Device dev) override {
    if (dev != Device::CPU || n > INT_MAX) return all_reduce_sum(data, n, dev);
    requests_.emplace_back();
    mpi_check(MPI_Iallreduce(MPI_IN_PLACE, data, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &requests_.back()),
              "all-reduce (started)");
  }
  void wait_all() override {
    if (requests_.empty()) return;
    mpi_check(MPI_Waitall((int)requests_.size(), requests_.data(), MPI_STATUSES_IGNORE), "wait");
    requests_.clear();
  }
  void poll() override {
    if (requests_.empty()) return;
    int flag = 0;
    MPI_Testall((int)requests_.size(), requests_.data(), &flag, MPI_STATUSES_IGNORE);
  }
  void broadcast(float* data, int64_t n, Device dev, int root) override {
    if (dev != Device::CPU) return staged(data, n, dev, [&](float* h) { broadcast(h, n, Device::CPU, root); });
    for (int64_t off = 0; off < n; off += INT_MAX)
      mpi_check(MPI_Bcast(data + off, (int)std::min<int64_t>(INT_MAX, n - off), MPI_FLOAT, root, MPI_COMM_WORLD),
                "broadcast");
  }
  void broadcast_bytes(void* data, size_t n, int root) override {
    NALA_CHECK(n <= (size_t)INT_MAX, "MPI broadcast of ", n, " bytes");
    mpi_check(MPI_Bcast(data, (int)n, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
  }
  void barrier() override { mpi_check(MPI_Barrier(MPI_COMM_WORLD), "barrier"); }
  [[noreturn]] void abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  template <class F>
  void staged(float* data, int64_t n, Device dev, F&& op) {
    std::vector<float> host((size_t)n);
    device::copy_bytes(host.data(), Device::CPU, data, dev, n * sizeof(float));
    op(host.data());
    device::copy_bytes(data, dev, host.data(), Device::CPU, n * sizeof(float));
  }
  int rank_ = 0, size_ = 1;
  bool owns_ = false;
  std::vector<MPI_Request> requests_;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm() { return std::make_unique<MpiComm>(); }

}  // namespace nala
#endif  // NALA_MPI
