// models/train/evaluate.cpp - see evaluate.h.
#include "models/train/evaluate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/ops.h"
#include "models/train/graph_step.h"
#include "models/train/augment.h"

namespace nala {

Device module_device(const Module& m) {
  auto params = m.parameters();
  return params.empty() ? Device::CPU : params[0].device();
}

EvalResult evaluate(NalaFormer& model, const Dataset& ds, int64_t batch_size, int64_t limit, Comm* comm,
                    GraphEval* graphs, bool flip_tta) {
  NoGradGuard ng;
  bool was_training = model.is_training();
  model.eval();
  const int64_t K = (int64_t)ds.classes.size();
  EvalResult r;
  r.confusion.assign(K, std::vector<int64_t>(K, 0));
  LoaderOptions lo;
  lo.batch_size = limit ? std::min(batch_size, limit) : batch_size;
  lo.shuffle = false;
  lo.limit = limit;
  if (comm) lo.rank = comm->rank(), lo.world = comm->size();
  BatchLoader loader(ds, lo);
  Rng unused(0);
  loader.start_epoch(unused);
  Batch b;
  double loss_sum = 0;
  int64_t top1 = 0, top5 = 0;
  const Device dev = module_device(model);
  // Graphs replay the plain forward only: with flip TTA (two forwards a
  // batch) every batch runs eagerly, and the graphs' sums, which would be
  // empty, must not replace the eager ones.
  if (graphs && (dev == Device::CPU || flip_tta)) graphs = nullptr;
  if (graphs) graphs->start(K);
  while (loader.next(b)) {
    const int64_t B = b.images.size(0);
    if (B == 0) continue;  // this rank's share of the last global batch
    if (graphs) {
      graphs->batch(b.images, b.labels);
      r.n += B;
      continue;
    }
    Tensor logits = model.forward(b.images.to(dev));
    if (flip_tta) {
      Tensor mirror = b.images.clone();
      const int64_t H = mirror.size(1), W = mirror.size(2), C = mirror.size(3);
      for (int64_t i = 0; i < B; i++) hflip(mirror.f32() + i * H * W * C, (int)H, (int)W, (int)C);
      logits = scale(add(logits, model.forward(mirror.to(dev))), 0.5f);
    }
    loss_sum += (double)cross_entropy(logits, b.labels.to(dev)).item() * B;
    std::vector<float> l = logits.to_vector();
    std::vector<int64_t> y = b.labels.to_vector_i64();
    for (int64_t i = 0; i < B; i++) {
      const float* row = l.data() + i * K;
      int64_t pred = std::max_element(row, row + K) - row;
      int64_t rank = 0;  // how many classes score strictly higher than the true one
      for (int64_t k = 0; k < K; k++) rank += row[k] > row[y[i]];
      top1 += pred == y[i];
      top5 += rank < 5;
      r.confusion[y[i]][pred]++;
    }
    r.n += B;
  }
  if (graphs) graphs->read(&loss_sum, &top1, &top5, r.confusion);
  if (comm && comm->size() > 1) {  // totals over the ranks (counts are exact in float below 2^24)
    std::vector<float> sums = {(float)loss_sum, (float)top1, (float)top5, (float)r.n};
    for (auto& row : r.confusion) sums.insert(sums.end(), row.begin(), row.end());
    comm->all_reduce_sum(sums.data(), (int64_t)sums.size(), Device::CPU);
    loss_sum = sums[0], top1 = std::llround(sums[1]), top5 = std::llround(sums[2]), r.n = std::llround(sums[3]);
    for (int64_t k = 0; k < K * K; k++) r.confusion[k / K][k % K] = std::llround(sums[4 + k]);
  }
  model.train(was_training);
  r.loss = r.n ? loss_sum / r.n : 0;
  r.top1 = r.n ? (double)top1 / r.n : 0;
  r.top5 = r.n ? (double)top5 / r.n : 0;
  for (int64_t k = 0; k < K; k++) {
    int64_t total = std::accumulate(r.confusion[k].begin(), r.confusion[k].end(), (int64_t)0);
    r.per_class.push_back(total ? (double)r.confusion[k][k] / total : 0);
  }
  return r;
}

Tensor eval_logits(NalaFormer& model, const Tensor& images) {
  NoGradGuard ng;
  const bool was_training = model.is_training();
  model.eval();
  Tensor logits = model.forward(images.to(module_device(model)));
  model.train(was_training);
  return logits;
}

std::vector<Prediction> predict(NalaFormer& model, const Tensor& images, int64_t k) {
  NALA_CHECK(images.dim() == 4, "predict: images must be (B, H, W, C), got ", images.desc());
  NALA_CHECK(k >= 1, "predict: k must be at least 1, got ", k);
  Tensor prob;
  {
    NoGradGuard ng;
    prob = softmax(eval_logits(model, images), -1);
  }
  const int64_t B = prob.size(0), K = prob.size(1);
  const std::vector<float> pr = prob.to_vector();
  std::vector<Prediction> out(B);
  for (int64_t b = 0; b < B; b++) {
    const float* row = pr.data() + b * K;
    std::vector<int64_t> idx(K);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t x, int64_t y) { return row[x] > row[y]; });
    for (int64_t i = 0; i < std::min(k, K); i++) {
      out[b].classes.push_back(idx[i]);
      out[b].probs.push_back(row[idx[i]]);
    }
  }
  return out;
}

}  // namespace nala
