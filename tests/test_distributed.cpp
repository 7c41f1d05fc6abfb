// tests/test_distributed.cpp - data-parallel training (distributed/distributed.h).
//
// In one process: backward()'s leaf hook, the bucketed GradReducer over a
// group of threads that stands in for ranks (its all-reduce adds the
// threads' buffers), the loader's sharding, and the library's train() on
// threads as ranks. Across processes: `mpirun
// -np 2` and `-np 3` training equals one process with the same global batch
// (tag [mpi]; needs an MPI build and mpirun, which CI has).
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <map>
#include <chrono>
#include <mutex>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/ops.h"
#include "distributed/distributed.h"
#include "models/train/data.h"
#include "models/train/trainer.h"
#include "nn/safetensors.h"
#include "tests/helpers.h"
#include "tests/process.h"
#include "tools/common.h"

using namespace nala;
using namespace nala::test;

namespace {

// N threads as N ranks: every collective is a rendezvous of all of them.
class ThreadGroup {
 public:
  explicit ThreadGroup(int n) : n_(n), bufs_(n) {}
  int size() const { return n_; }
  // Rank r's n floats become the sum of every rank's.
  void all_reduce_sum(int r, float* data, int64_t n) {
    bufs_[r] = data;
    arrive();
    std::vector<float> sum((size_t)n, 0.0f);
    for (int k = 0; k < n_; k++)  // the same order on every rank
      for (int64_t i = 0; i < n; i++) sum[i] += bufs_[k][i];
    arrive();
    std::copy(sum.begin(), sum.end(), data);
    arrive();
  }
  void broadcast(int r, float* data, int64_t n, int root) {
    bufs_[r] = data;
    arrive();
    if (r != root) std::copy(bufs_[root], bufs_[root] + n, data);
    arrive();
  }

 private:
  void arrive() {  // a reusable barrier
    std::unique_lock<std::mutex> lk(mu_);
    const int64_t gen = gen_;
    if (++count_ == n_) {
      count_ = 0, gen_++;
      cv_.notify_all();
    } else {
      cv_.wait(lk, [&] { return gen_ != gen; });
    }
  }
  int n_;
  std::vector<float*> bufs_;
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
  int64_t gen_ = 0;
};

class ThreadComm : public Comm {
 public:
  ThreadComm(ThreadGroup& g, int r) : g_(g), r_(r) {}
  int rank() const override { return r_; }
  int size() const override { return g_.size(); }
  const char* backend() const override { return "threads"; }
  void all_reduce_sum(float* data, int64_t n, Device) override {
    g_.all_reduce_sum(r_, data, n);
    calls++;
  }
  void broadcast(float* data, int64_t n, Device, int root) override { g_.broadcast(r_, data, n, root); }
  void broadcast_bytes(void*, size_t, int) override { FAIL("not used"); }
  void barrier() override {}
  [[noreturn]] void abort(int) override { std::abort(); }
  int calls = 0;

 private:
  ThreadGroup& g_;
  int r_;
};

// A two-layer perceptron whose first-layer weight is used twice (so its
// gradient accumulates) and a parameter `unused` that no loss reaches.
struct Mlp {
  Tensor w1, b1, w2, unused;
  explicit Mlp(uint64_t seed) {
    Rng rng(seed);
    w1 = randn({7, 5}, rng, 0.5f, true);
    b1 = randn({7}, rng, 0.1f, true);
    w2 = randn({3, 7}, rng, 0.5f, true);
    unused = randn({4}, rng, 1.0f, true);
  }
  std::vector<Tensor> params() const { return {w1, b1, w2, unused}; }
  Tensor loss(const Tensor& x, const Tensor& y) const {
    Tensor h = relu(linear(x, w1, b1));
    Tensor h2 = add(h, scale(linear(x, w1, Tensor()), 0.5f));
    return cross_entropy(linear(h2, w2, Tensor()), y);
  }
};

}  // namespace

TEST_CASE("distributed: backward's leaf hook reports each leaf once, with its final gradient", "[distributed]") {
  Mlp m(1);
  Rng rng(2);
  Tensor x = randn({6, 5}, rng), y = Tensor::empty({6}, DType::I64);
  for (int i = 0; i < 6; i++) y.i64()[i] = i % 3;
  // Reference gradients.
  backward(m.loss(x, y));
  std::vector<std::vector<float>> ref;
  for (auto& p : {m.w1, m.b1, m.w2}) ref.push_back(p.grad().to_vector());
  for (auto& p : m.params()) const_cast<Tensor&>(p).set_grad(Tensor());

  std::vector<const void*> seen;
  std::vector<std::vector<float>> at_hook;
  backward(m.loss(x, y), Tensor(), false, [&](Tensor& leaf) {
    seen.push_back(leaf.impl());
    at_hook.push_back(leaf.grad().defined() ? leaf.grad().to_vector() : std::vector<float>{});
  });
  REQUIRE(seen.size() == 3);  // w1, b1, w2; `unused` is not in the graph
  const Tensor ps[3] = {m.w1, m.b1, m.w2};
  for (int k = 0; k < 3; k++) {
    auto it = std::find(seen.begin(), seen.end(), (const void*)ps[k].impl());
    REQUIRE(it != seen.end());
    REQUIRE_CLOSE(at_hook[it - seen.begin()], ref[k], 0.0, 0.0);  // already final when reported
  }
  // w2 is reached first by the backward pass; w1 (used twice) last.
  REQUIRE(seen.front() == (const void*)m.w2.impl());
}

TEST_CASE("distributed: GradReducer over 3 ranks equals the full batch's gradient", "[distributed]") {
  const int R = 3;
  const int64_t per_rank = 4, B = per_rank * R;
  Rng rng(5);
  Tensor x = randn({B, 5}, rng), y = Tensor::empty({B}, DType::I64);
  for (int i = 0; i < B; i++) y.i64()[i] = (i * 7) % 3;
  Mlp full(9);
  backward(full.loss(x, y));

  for (int64_t bucket_bytes : {int64_t(1), int64_t(64), int64_t(1) << 20}) {  // one bucket per tensor ... one for all
    INFO("bucket bytes " << bucket_bytes);
    ThreadGroup group(R);
    std::vector<Mlp> models;
    for (int r = 0; r < R; r++) models.emplace_back(100 + r);  // different weights: the broadcast must fix them
    std::vector<std::vector<Tensor>> grads(R);
    std::vector<int> buckets(R), calls(R);
    std::vector<std::thread> threads;
    for (int r = 0; r < R; r++)
      threads.emplace_back([&, r] {
        ThreadComm comm(group, r);
        Mlp& m = models[r];
        if (r == 0)
          for (size_t k = 0; k < m.params().size(); k++) m.params()[k].copy_(full.params()[k].detach());
        broadcast_tensors(comm, m.params());
        GradReducer red(m.params(), comm, bucket_bytes);
        buckets[r] = red.num_buckets();
        Tensor xs = view::contiguous(view::narrow(x, 0, r * per_rank, per_rank));
        Tensor ys = view::contiguous(view::narrow(y, 0, r * per_rank, per_rank));
        for (int step = 0; step < 2; step++) {  // twice: the reducer resets between steps
          for (auto& p : m.params()) const_cast<Tensor&>(p).set_grad(Tensor());
          backward(m.loss(xs, ys), Tensor(), false, red.hook());
          red.finish();
        }
        for (auto& p : m.params()) grads[r].push_back(p.grad());
        calls[r] = comm.calls;
      });
    for (auto& t : threads) t.join();
    if (bucket_bytes == 1) REQUIRE(buckets[0] == 4);
    if (bucket_bytes == (1 << 20)) REQUIRE(buckets[0] == 1);
    for (int r = 0; r < R; r++) {
      INFO("rank " << r);
      REQUIRE(calls[r] == 2 * buckets[r]);
      for (int k = 0; k < 3; k++) REQUIRE_CLOSE(grads[r][k].to_vector(), full.params()[k].grad().to_vector(), 1e-6, 1e-5);
      // No rank's graph reaches `unused`: its gradient is zero, not missing.
      REQUIRE(grads[r][3].defined());
      REQUIRE_CLOSE(grads[r][3].to_vector(), std::vector<float>(4, 0.0f), 0.0, 0.0);
    }
  }
}

TEST_CASE("distributed: average_tensors and broadcast_tensors over ranks", "[distributed]") {
  ThreadGroup group(2);
  std::vector<Tensor> t = {Tensor::full({3}, 1.0f), Tensor::full({3}, 5.0f)};
  std::vector<Tensor> u = {Tensor::full({2}, 0.0f), Tensor::full({2}, 7.0f)};
  std::vector<std::thread> th;
  for (int r = 0; r < 2; r++)
    th.emplace_back([&, r] {
      ThreadComm comm(group, r);
      average_tensors(comm, {t[r]});
      broadcast_tensors(comm, {u[r]}, 1);
    });
  for (auto& x : th) x.join();
  for (int r = 0; r < 2; r++) {
    REQUIRE_CLOSE(t[r].to_vector(), std::vector<float>(3, 3.0f), 0.0, 0.0);
    REQUIRE_CLOSE(u[r].to_vector(), std::vector<float>(2, 7.0f), 0.0, 0.0);
  }
}

TEST_CASE("distributed: the loader's shards make up the single-process batches, augmentation included",
          "[distributed]") {
  Dataset ds;
  ds.name = "toy";
  ds.n = 50, ds.h = 6, ds.w = 6, ds.c = 1;
  ds.classes = {"a", "b"};
  Rng fill(3);
  ds.images.resize(ds.n * ds.image_size());
  for (auto& v : ds.images) v = (uint8_t)fill.below(256);
  for (int64_t i = 0; i < ds.n; i++) ds.labels.push_back(i % 2);
  LoaderOptions one;
  one.batch_size = 12, one.drop_last = true, one.workers = 0;
  one.augment.crop_pad = 2, one.augment.hflip = true, one.augment.erase_prob = 0.5f;
  for (int world : {2, 3}) {
    LoaderOptions lo = one;
    lo.batch_size = one.batch_size / world;
    REQUIRE(lo.batch_size * world == one.batch_size);
    BatchLoader ref(ds, one);
    Rng r0(11);
    ref.start_epoch(r0);
    std::vector<std::unique_ptr<BatchLoader>> shards;
    for (int r = 0; r < world; r++) {
      lo.rank = r, lo.world = world;
      shards.push_back(std::make_unique<BatchLoader>(ds, lo));
      Rng rr(11);
      shards.back()->start_epoch(rr);
      REQUIRE(shards.back()->num_batches() == ref.num_batches());
    }
    for (int64_t b = 0; b < ref.num_batches(); b++) {
      Batch whole = ref.build_batch(b);
      std::vector<Tensor> imgs;
      std::vector<int64_t> idx, labs;
      for (auto& s : shards) {
        Batch part = s->build_batch(b);
        imgs.push_back(part.images);
        for (int64_t l : part.labels.to_vector_i64()) labs.push_back(l);
        idx.insert(idx.end(), part.indices.begin(), part.indices.end());
      }
      INFO("world " << world << " batch " << b);
      REQUIRE(idx == whole.indices);
      REQUIRE_CLOSE(concat(imgs, 0).to_vector(), whole.images.to_vector(), 0.0, 0.0);
      REQUIRE(labs == whole.labels.to_vector_i64());
    }
  }
  // Without drop_last the last global batch is split as far as it goes.
  LoaderOptions tail;
  tail.batch_size = 8, tail.world = 4, tail.rank = 3, tail.workers = 0, tail.shuffle = false;
  BatchLoader t(ds, tail);
  Rng r1(1);
  t.start_epoch(r1);
  REQUIRE(t.num_batches() == 2);                         // 32 + 18 images
  REQUIRE(t.build_batch(1).images.size(0) == 0);         // 32..39, 40..47, 48..49, nothing
  tail.rank = 2;
  BatchLoader t2(ds, tail);
  t2.start_epoch(r1);
  REQUIRE(t2.build_batch(1).indices == std::vector<int64_t>{48, 49});
}

TEST_CASE("distributed: the library's train() on 2 and 3 thread ranks equals one process with the global batch",
          "[distributed]") {
  // The data-parallel path of models/train/trainer.h without MPI: threads
  // stand in for ranks (ThreadComm), GradReducer is the GradSync. SGD and
  // synchronised BatchNorm, as the mpirun test below; 48 images in global
  // batches of 12: 4 steps an epoch, 2 epochs.
  Dataset ds;
  ds.name = "toy";
  ds.n = 48, ds.h = 16, ds.w = 16, ds.c = 1;
  ds.classes = {"a", "b", "c"};
  Rng fill(8);
  ds.images.resize(ds.n * ds.image_size());
  for (auto& v : ds.images) v = (uint8_t)fill.below(256);
  for (int64_t i = 0; i < ds.n; i++) ds.labels.push_back(i % 3);
  // Each rank: a model from the same seed, one OpenMP thread (the ICV is per
  // thread, so the test's own setting is untouched).
  auto run = [&](int world, std::vector<std::map<std::string, std::vector<float>>>& weights,
                 std::vector<TrainResult>& results) {
    ThreadGroup group(world);
    weights.assign(world, {});
    results.assign(world, {});
    std::vector<std::string> errors(world);
    std::vector<std::thread> threads;
    for (int r = 0; r < world; r++)
      threads.emplace_back([&, r] {
        try {
#ifdef _OPENMP
          omp_set_num_threads(1);
#endif
          NalaFormer model(nalaformer_config("pico", 1, 3), 5);
          Rng init(4);
          model.init_weights(init);
          TrainOptions o;
          o.epochs = 2, o.batch_size = 12 / world, o.optimizer = "sgd", o.lr = 0.05f, o.warmup_epochs = 0;
          o.augment.crop_pad = 2, o.augment.hflip = true, o.seed = 4, o.workers = 0, o.sync_bn = world > 1;
          std::unique_ptr<Comm> single;
          std::unique_ptr<ThreadComm> comm;
          std::unique_ptr<GradReducer> sync;
          if (world == 1) {
            single = make_single_comm();
            results[r] = train(model, ds, ds, o, *single);
          } else {
            comm = std::make_unique<ThreadComm>(group, r);
            sync = std::make_unique<GradReducer>(model.parameters(), *comm, 1 << 20);
            results[r] = train(model, ds, ds, o, *comm, sync.get());
          }
          for (auto& [k, t] : model.named_parameters()) weights[r][k] = t.to_vector();
        } catch (const std::exception& e) {
          errors[r] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    for (int r = 0; r < world; r++) {
      INFO("rank " << r << " of " << world);
      REQUIRE(errors[r] == "");
    }
  };
  std::vector<std::map<std::string, std::vector<float>>> one, many;
  std::vector<TrainResult> one_res, many_res;
  run(1, one, one_res);
  REQUIRE(one_res[0].step == 8);
  for (int world : {2, 3}) {
    run(world, many, many_res);
    double worst = 0;
    for (int r = 0; r < world; r++) {
      INFO("rank " << r << " of " << world);
      REQUIRE(many_res[r].step == 8);
      // Every rank evaluates its shard; the totals are the whole test set's.
      REQUIRE(many_res[r].last.test.n == 48);
      REQUIRE(many_res[r].last.test.loss == Approx(one_res[0].last.test.loss).epsilon(1e-4));
      for (auto& [k, w] : one[0]) {
        const std::vector<float>& v = many[r].at(k);
        for (size_t i = 0; i < w.size(); i++) worst = std::max(worst, (double)std::fabs(w[i] - v[i]));
      }
    }
    INFO("world " << world << ": max |w_1 - w| = " << worst);
    REQUIRE(worst < 1e-5);
  }
}

// ---------------------------------------------------------------- MPI processes

namespace {

std::string find_mpirun() {
  for (const char* p : {"/usr/bin/mpirun", "/usr/local/bin/mpirun"})
    if (access(p, X_OK) == 0) return p;
  return "";
}

std::map<std::string, Tensor> model_tensors(const std::string& path) {
  std::map<std::string, Tensor> m;
  for (auto& [k, t] : load_safetensors(path).tensors)
    if (k.rfind("model.", 0) == 0 && t.dtype() == DType::F32) m[k] = t;
  return m;
}

void run_ok(const std::string& bin, const std::vector<std::string>& args, const std::string& log) {
  int status = 0;
  pid_t pid = spawn(bin, args, log);
  const bool ended = wait_for(pid, 900, &status);
  std::ifstream f(log);
  std::string out((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  INFO(bin << " ...\n" << out);
  REQUIRE(ended);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

// Largest |a - b| over every model tensor of two checkpoints.
double max_weight_diff(const std::string& a, const std::string& b) {
  auto x = model_tensors(a), y = model_tensors(b);
  REQUIRE(x.size() == y.size());
  double worst = 0;
  for (auto& [k, t] : x) {
    INFO(k);
    REQUIRE(y.count(k));
    std::vector<float> u = t.to_vector(), v = y.at(k).to_vector();
    REQUIRE(u.size() == v.size());
    for (size_t i = 0; i < u.size(); i++) worst = std::max(worst, (double)std::fabs(u[i] - v[i]));
  }
  return worst;
}

}  // namespace

TEST_CASE("distributed: mpirun -np 2 and -np 3 train to the weights of one process with the global batch",
          "[distributed][mpi]") {
  if (!mpi_built()) {
    WARN("this build has no MPI (apt-get install libopenmpi-dev openmpi-bin, then rebuild): skipped");
    return;
  }
  SKIP_WITHOUT_FASHION_MNIST();
  const std::string mpirun = find_mpirun();
  INFO("the build has MPI, so mpirun must be installed too (apt-get install openmpi-bin)");
  REQUIRE(!mpirun.empty());
  const std::string bin = nala_binary();
  REQUIRE(access(bin.c_str(), X_OK) == 0);
  TempDir t;
  // SGD (the update is linear in the gradient, so float noise is not
  // amplified the way Adam's normalisation does for tiny gradients),
  // synchronised BatchNorm, no drop-path, augmentation on.
  auto args = [&](int64_t batch, const std::string& out, std::vector<std::string> extra, bool sync_bn = true) {
    std::vector<std::string> a = {"train", "--model", "pico", "--subset", "48", "--eval-subset", "24",
                                  "--batch-size", std::to_string(batch), "--epochs", "3", "--threads", "1",
                                  "--optimizer", "sgd", "--lr", "0.05", "--warmup-epochs", "0", "--drop-path", "0",
                                  "--hflip", "--crop-pad", "2", "--seed", "4", "--out", out};
    if (sync_bn) a.push_back("--sync-bn");
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  auto under_mpi = [&](int np, std::vector<std::string> a) {
    std::vector<std::string> m = {"--allow-run-as-root", "--oversubscribe", "-np", std::to_string(np),
                                  "--mca", "btl", "self,vader", bin};
    m.insert(m.end(), a.begin(), a.end());
    return m;
  };
  const std::string log = t.path + "/log.txt";
  // Global batch 24: one process of 24, two of 12, three of 8; 2 steps an epoch, 3 epochs. (Over
  // many more steps float rounding, which differs with the split, grows: 30 steps give ~2e-4.)
  run_ok(bin, args(24, t.path + "/one", {}), log);
  run_ok(mpirun, under_mpi(2, args(12, t.path + "/two", {})), log);
  // Three ranks with 1 MiB buckets: pico's 2.6 MB of gradients make 3 buckets whose all-reduces
  // start during the backward pass, between the synchronised BatchNorm layers' own all-reduces.
  run_ok(mpirun, under_mpi(3, args(8, t.path + "/three", {"--bucket-mb", "1"})), log);
  const double d2 = max_weight_diff(t.path + "/one/checkpoint.safetensors", t.path + "/two/checkpoint.safetensors");
  const double d3 = max_weight_diff(t.path + "/one/checkpoint.safetensors", t.path + "/three/checkpoint.safetensors");
  std::printf("mpi equivalence after 6 SGD steps: max |w_1 - w_2| = %.3g, max |w_1 - w_3| = %.3g\n", d2, d3);
  REQUIRE(d2 < 1e-5);
  REQUIRE(d3 < 1e-5);
  // Per-process BatchNorm normalises with other statistics: a real difference, which this comparison sees.
  run_ok(mpirun, under_mpi(2, args(12, t.path + "/local_bn", {}, false)), log);
  const double dl = max_weight_diff(t.path + "/one/checkpoint.safetensors", t.path + "/local_bn/checkpoint.safetensors");
  std::printf("per-process BatchNorm on 2 ranks: max |w_1 - w| = %.3g\n", dl);
  REQUIRE(dl > 1e-3);

  // --resume on another number of ranks: the first epoch on 3 ranks, the second on 2, same global batch.
  run_ok(mpirun, under_mpi(3, args(8, t.path + "/mixed", {"--max-steps", "2"})), log);
  run_ok(mpirun, under_mpi(2, args(12, t.path + "/mixed", {"--resume", t.path + "/mixed"})), log);
  const double dm = max_weight_diff(t.path + "/one/checkpoint.safetensors", t.path + "/mixed/checkpoint.safetensors");
  std::printf("mpi: 3 ranks then --resume on 2: max |w_1 - w| = %.3g\n", dm);
  REQUIRE(dm < 1e-5);
}

// ---------------------------------------------------------------- the --gpus launcher

// One rank of the launcher test, run as `nala_tests --launched-child` (see
// tests/main.cpp): writes what the child was told into
// $NALA_TEST_OUT/rank_<r>; the rank named by NALA_TEST_FAIL_RANK fails at
// once (exit 3), the others then wait to be stopped (with
// NALA_TEST_IGNORE_TERM, as a stuck rank that SIGTERM cannot stop).
namespace nala {
namespace test {
int launched_child_main() {
  const char* out = std::getenv("NALA_TEST_OUT");
  if (!out) return 2;
  const LaunchEnv env = detect_launch();
  if (env.launcher != "nala") return 2;
  {
    std::ofstream f(std::string(out) + "/rank_" + std::to_string(env.rank));
    f << env.rank << " " << env.size << " " << env.local_rank << " " << (env.rendezvous.empty() ? "-" : "dir");
  }
  const char* fail = std::getenv("NALA_TEST_FAIL_RANK");
  if (fail && std::atoi(fail) == env.rank) std::_Exit(3);
  if (fail) {
    if (std::getenv("NALA_TEST_IGNORE_TERM")) std::signal(SIGTERM, SIG_IGN);
    std::this_thread::sleep_for(std::chrono::seconds(60));
  }
  return 0;
}
}  // namespace test
}  // namespace nala

TEST_CASE("distributed: the local launcher starts N ranks and stops them all when one fails", "[distributed]") {
  TempDir t;
  setenv("NALA_TEST_OUT", t.path.c_str(), 1);
  unsetenv("NALA_TEST_FAIL_RANK");
  REQUIRE(launch_local_group(3, {"nala_tests", "--launched-child"}) == 0);
  for (int r = 0; r < 3; r++) {
    std::ifstream f(t.path + "/rank_" + std::to_string(r));
    std::string got((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    REQUIRE(got == std::to_string(r) + " 3 " + std::to_string(r) + " dir");
  }
  setenv("NALA_TEST_FAIL_RANK", "1", 1);
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(launch_local_group(3, {"nala_tests", "--launched-child"}) == 3);  // the failing rank's code
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(secs < 30);  // the two waiting ranks were stopped, not waited for
  // Ranks that ignore SIGTERM are killed after the grace period (10 s).
  setenv("NALA_TEST_IGNORE_TERM", "1", 1);
  t0 = std::chrono::steady_clock::now();
  REQUIRE(launch_local_group(3, {"nala_tests", "--launched-child"}) == 3);
  const double secs_stuck = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(secs_stuck < 30);
  unsetenv("NALA_TEST_IGNORE_TERM");
  unsetenv("NALA_TEST_FAIL_RANK");
  unsetenv("NALA_TEST_OUT");
}

TEST_CASE("distributed: --gpus refuses a machine or a build that cannot run it, before any work", "[distributed]") {
  std::vector<std::string> words = {"--model", "pico", "--gpus", "64", "--out", "/nonexistent/never"};
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(&w[0]);
  argv.push_back(nullptr);
  if (nccl_built())
    REQUIRE_THROWS_WITH(cmd_train((int)words.size(), argv.data()), Catch::Contains("--gpus 64: this machine has"));
  else
    REQUIRE_THROWS_WITH(cmd_train((int)words.size(), argv.data()), Catch::Contains("--gpus 64 needs NCCL"));
}
