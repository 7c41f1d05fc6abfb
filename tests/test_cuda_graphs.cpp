// tests/test_cuda_graphs.cpp - training steps and evaluation batches replayed
// as CUDA graphs (models/train/graph_step.h) against the same work launched
// kernel by kernel: the same weights, optimiser state and Rng state after
// several steps, bit for bit (AdamW and SGD, drop-path on); the same
// evaluation sums with a partial last batch; and drop-path masks that change
// from one replay to the next as they do from one eager step to the next.
// Both precisions (--precision bf16 too). Also the weight average (--ema) on the GPU: after replayed steps the same
// as after eager ones, and the same as the CPU's average of the same values.
#include <cstring>
#include <vector>

#include "autograd/ops.h"
#include "models/nalaformer.h"
#include "models/train/evaluate.h"
#include "models/train/graph_step.h"
#include "models/train/step.h"
#include "nn/ema.h"
#include "nn/optim.h"
#include "tests/cuda_harness.h"

using namespace nala;

namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to(Device::CPU).to_vector(), y = b.to(Device::CPU).to_vector();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

NalaConfig small_pico(float drop_path) {
  NalaConfig cfg = nalaformer_config("pico");
  cfg.drop_path_rate = drop_path;
  return cfg;
}

std::unique_ptr<Optimizer> make_opt(NalaFormer& m, bool adamw) {
  if (adamw) return std::make_unique<AdamW>(m.named_parameters(), 1e-3, 0.9, 0.999, 1e-8, 0.05);
  return std::make_unique<SGD>(m.named_parameters(), 0.05, 0.9, 1e-4);
}

struct Batches {
  std::vector<Tensor> x, y;
  Batches(int64_t steps, int64_t B, uint64_t seed) {
    Rng rng(seed);
    for (int64_t s = 0; s < steps; s++) {
      x.push_back(test::randn({B, 28, 28, 1}, rng));
      std::vector<int64_t> l(B);
      for (auto& v : l) v = (int64_t)rng.below(10);
      y.push_back(Tensor::from_vector_i64({B}, l));
    }
  }
};

}  // namespace

TEST_CASE("cuda graphs: replayed training steps equal eager steps bit for bit", "[cuda][graphs]") {
  SKIP_WITHOUT_CUDA();
  const bool adamw = GENERATE(true, false);
  const bool bf16 = GENERATE(false, true);  // --precision bf16: tensor-core GEMMs, implicit-GEMM convolutions
  INFO((adamw ? "adamw" : "sgd") << (bf16 ? ", bf16 products" : ", float32"));
  test::Bf16Products precision(bf16);
  const NalaConfig cfg = small_pico(0.3f);  // drop-path on: the masks go through the graph's uploads
  NalaFormer eager_m(cfg, 7), graph_m(cfg, 7);
  Rng r1(3), r2(3);
  eager_m.init_weights(r1);
  graph_m.init_weights(r2);
  eager_m.to(Device::CUDA), graph_m.to(Device::CUDA);
  eager_m.train(), graph_m.train();
  auto eager_opt = make_opt(eager_m, adamw), graph_opt = make_opt(graph_m, adamw);
  WeightEma eager_ema(eager_m.state_dict(), 0.9), graph_ema(graph_m.state_dict(), 0.9);
  const int64_t steps = 6, B = 16;
  Batches data(steps, B, 21);

  double eager_loss = 0;
  for (int64_t s = 0; s < steps; s++) {
    eager_opt->set_lr(1e-3 * (s + 1));  // a schedule: the replays must read each step's rate
    ForwardBackward fb = forward_backward(eager_m, data.x[s].to(Device::CUDA), data.y[s].to(Device::CUDA), 0.1f);
    eager_loss += fb.loss.item();
    eager_opt->step();
    eager_opt->zero_grad();
    eager_ema.update();
  }
  GraphTrainStep g(graph_m, *graph_opt, 0.1f);
  g.zero_metrics();
  for (int64_t s = 0; s < steps; s++) {
    graph_opt->set_lr(1e-3 * (s + 1));
    g.step(data.x[s], data.y[s]);
    graph_ema.update();  // as the trainer does: after each replay
  }
  double graph_loss = 0;
  int64_t correct = 0;
  g.read_metrics(&graph_loss, &correct);
  INFO("graphs off: " << g.off_reason);
  REQUIRE(g.graph_on());
  CHECK(g.eager_steps == 1);
  CHECK(g.captures == 1);
  CHECK(g.replays == steps - 2);
  CHECK(graph_loss == eager_loss);
  CHECK(eager_m.rng.state() == graph_m.rng.state());
  auto pe = eager_m.named_parameters(), pg = graph_m.named_parameters();
  for (size_t i = 0; i < pe.size(); i++) {
    INFO("parameter " << pe[i].first);
    CHECK(same_bits(pe[i].second, pg[i].second));
  }
  const std::vector<Tensor> ae = eager_ema.averages(), ag = graph_ema.averages();
  REQUIRE(ae.size() == ag.size());
  for (size_t i = 0; i < ae.size(); i++) {
    INFO("weight average " << i);
    CHECK(ae[i].device() == Device::CUDA);
    CHECK(same_bits(ae[i], ag[i]));
  }
  auto se = eager_opt->state(), sg = graph_opt->state();
  REQUIRE(se.size() == sg.size());
  for (size_t i = 0; i < se.size(); i++) {
    INFO("optimiser state " << se[i].first);
    if (se[i].second.dtype() == DType::I64) CHECK(se[i].second.to_vector_i64() == sg[i].second.to_vector_i64());
    else CHECK(same_bits(se[i].second, sg[i].second));
  }
}

TEST_CASE("cuda graphs: drop-path masks change from replay to replay", "[cuda][graphs]") {
  SKIP_WITHOUT_CUDA();
  // lr 0 and no decay: the weights stay, so the loss of the same batch
  // changes only with the masks. Without drop-path it must not change.
  const float p = GENERATE(0.0f, 0.5f);
  INFO("drop_path " << p);
  NalaFormer m(small_pico(p), 9);
  Rng r(1);
  m.init_weights(r);
  m.to(Device::CUDA);
  m.train();
  SGD opt(m.named_parameters(), 0.0, 0.0, 0.0);
  Batches data(1, 32, 5);
  GraphTrainStep g(m, opt, 0.0f);
  std::vector<double> losses;
  double prev = 0;
  for (int s = 0; s < 6; s++) {
    g.step(data.x[0], data.y[0]);
    double sum = 0;
    int64_t c = 0;
    g.read_metrics(&sum, &c);
    losses.push_back(sum - prev);
    prev = sum;
  }
  REQUIRE(g.graph_on());
  REQUIRE(g.replays == 4);
  int changes = 0;
  for (size_t i = 2; i < losses.size(); i++) changes += losses[i] != losses[i - 1];  // among the replays
  if (p == 0.0f) CHECK(changes == 0);
  else CHECK(changes >= 3);
}

TEST_CASE("cuda graphs: evaluation sums equal the eager ones, partial batch included", "[cuda][graphs]") {
  SKIP_WITHOUT_CUDA();
  NalaFormer m(small_pico(0.1f), 2);
  Rng r(4);
  m.init_weights(r);
  m.to(Device::CUDA);
  m.eval();
  // Batches of 24, 24, 24 and a last one of 10, passed three times: every
  // shape runs eagerly, then is captured, then replays.
  Batches full(3, 24, 8), part(1, 10, 9);
  std::vector<Tensor> xs = full.x, ys = full.y;
  xs.push_back(part.x[0]), ys.push_back(part.y[0]);
  const int64_t K = 10;
  double ref_loss = 0;
  int64_t ref_top1 = 0, ref_top5 = 0;
  std::vector<std::vector<int64_t>> ref_conf(K, std::vector<int64_t>(K, 0));
  {
    NoGradGuard ng;
    for (size_t b = 0; b < xs.size(); b++) {
      const int64_t B = xs[b].size(0);
      Tensor logits = m.forward(xs[b].to(Device::CUDA));
      ref_loss += (double)cross_entropy(logits, ys[b].to(Device::CUDA)).item() * B;
      const std::vector<float> l = logits.to_vector();
      const std::vector<int64_t> y = ys[b].to_vector_i64();
      for (int64_t i = 0; i < B; i++) {
        const float* row = l.data() + i * K;
        int64_t pred = std::max_element(row, row + K) - row, above = 0;
        for (int64_t k = 0; k < K; k++) above += row[k] > row[y[i]];
        ref_top1 += pred == y[i], ref_top5 += above < 5;
        ref_conf[y[i]][pred]++;
      }
    }
  }
  GraphEval g(m);
  for (int pass = 0; pass < 3; pass++) {
    INFO("pass " << pass);
    g.start(K);
    for (size_t b = 0; b < xs.size(); b++) g.batch(xs[b], ys[b]);
    double loss = 0;
    int64_t top1 = 0, top5 = 0;
    std::vector<std::vector<int64_t>> conf;
    g.read(&loss, &top1, &top5, conf);
    CHECK(loss == ref_loss);
    CHECK(top1 == ref_top1);
    CHECK(top5 == ref_top5);
    CHECK(conf == ref_conf);
  }
  INFO("graphs off: " << g.off_reason);
  CHECK(g.off_reason.empty());
  CHECK(g.eager_batches == 2);  // the first batch of each shape
  CHECK(g.captures == 2);
  CHECK(g.replays == 12 - 4);
}

TEST_CASE("cuda: the weight average on the GPU equals the CPU's, and swap exchanges the values", "[cuda][graphs]") {
  SKIP_WITHOUT_CUDA();
  Rng rng(5);
  std::vector<Tensor> cpu_t = {test::randn({37, 5}, rng), test::randn({1000}, rng), test::randn({3, 3, 7}, rng)};
  std::vector<Tensor> gpu_t;
  NamedTensors cpu_named, gpu_named;
  for (size_t i = 0; i < cpu_t.size(); i++) {
    gpu_t.push_back(cpu_t[i].to(Device::CUDA));
    cpu_named.push_back({"t" + std::to_string(i), cpu_t[i]});
    gpu_named.push_back({"t" + std::to_string(i), gpu_t[i]});
  }
  WeightEma ec(cpu_named, 0.99), eg(gpu_named, 0.99);
  for (int step = 0; step < 25; step++) {
    for (size_t i = 0; i < cpu_t.size(); i++) {  // new live values, the same on both devices
      Tensor v = test::randn(cpu_t[i].shape(), rng);
      cpu_t[i].copy_(v);
      gpu_t[i].copy_(v.to(Device::CUDA));
    }
    ec.update();
    eg.update();
  }
  const std::vector<Tensor> ac = ec.averages(), ag = eg.averages();
  for (size_t i = 0; i < ac.size(); i++) {
    INFO("tensor " << i);
    REQUIRE(ag[i].device() == Device::CUDA);
    REQUIRE_CLOSE(ag[i].to(Device::CPU), ac[i], 1e-6, 1e-6);
    REQUIRE(!same_bits(ag[i], gpu_t[i]));  // an average, not the last values
  }
  const std::vector<float> live0 = gpu_t[1].to(Device::CPU).to_vector(), avg0 = ag[1].to(Device::CPU).to_vector();
  eg.swap();
  REQUIRE(gpu_t[1].to(Device::CPU).to_vector() == avg0);
  eg.swap();
  REQUIRE(gpu_t[1].to(Device::CPU).to_vector() == live0);
}

// evaluate() with graphs at hand: the same figures as without them, with and
// without flip TTA (which runs eagerly; its sums once came back as zeros).
TEST_CASE("cuda graphs: evaluate() gives the same figures with graphs, flip TTA included", "[cuda][graphs]") {
  SKIP_WITHOUT_CUDA();
  Dataset ds;
  ds.name = "tiny";
  ds.n = 70, ds.h = ds.w = 28, ds.c = 1;
  ds.mean = {0.3f}, ds.std = {0.3f};
  for (int i = 0; i < 10; i++) ds.classes.push_back("c" + std::to_string(i));
  for (int64_t i = 0; i < ds.n * 28 * 28; i++) ds.images.push_back((uint8_t)(i * 37 % 251));
  for (int64_t i = 0; i < ds.n; i++) ds.labels.push_back(i * 7 % 10);
  NalaFormer m(small_pico(0.0f), 2);
  Rng r(4);
  m.init_weights(r);
  m.to(Device::CUDA);
  GraphEval g(m);
  for (bool flip : {false, true}) {
    INFO("flip TTA " << flip);
    TestTimeAug tta;
    tta.flip = flip;
    const EvalResult plain = evaluate(m, ds, 32, 0, nullptr, nullptr, tta);
    for (int pass = 0; pass < 3; pass++) {  // eager, captured, replayed
      const EvalResult with = evaluate(m, ds, 32, 0, nullptr, &g, tta);
      REQUIRE(with.n == 70);
      CHECK(with.top1 == plain.top1);
      CHECK(with.confusion == plain.confusion);
      CHECK(with.loss == Approx(plain.loss).epsilon(1e-6));
      CHECK(with.loss > 1.0);  // ten classes from random weights: about ln 10, never 0
    }
  }
}
