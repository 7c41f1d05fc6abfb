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

std::string TestTimeAug::describe() const {
  if (!any()) return "";
  std::string s = flip ? "mirror" : "";
  if (shift > 0) s += (flip ? ", " : "") + std::string("shifts of ") + std::to_string(shift) + " px";
  return s + ": the mean of the logits of " + std::to_string(views()) + " views of each image";
}

namespace {

// The views of a batch of normalised images (B, H, W, C) on the CPU, in the
// order the sum takes them. black[c] is the normalised value of pixel 0.
std::vector<Tensor> tta_views(const Tensor& images, const TestTimeAug& tta, const std::vector<float>& black) {
  const int64_t B = images.size(0), H = images.size(1), W = images.size(2), C = images.size(3);
  std::vector<std::pair<int, int>> moves = {{0, 0}};
  if (tta.shift > 0)
    for (int s : {-tta.shift, tta.shift}) moves.push_back({s, 0}), moves.push_back({0, s});
  std::vector<Tensor> views;
  for (auto [dy, dx] : moves) {
    Tensor v = images;
    if (dy || dx) {
      v = Tensor::empty(images.shape(), DType::F32);
      const float* src = images.f32();
      float* dst = v.f32();
      for (int64_t i = 0; i < B; i++)
        for (int64_t y = 0; y < H; y++)
          for (int64_t x = 0; x < W; x++) {
            const int64_t sy = y + dy, sx = x + dx;  // dst(y, x) = src(y + dy, x + dx)
            const bool in = sy >= 0 && sy < H && sx >= 0 && sx < W;
            for (int64_t c = 0; c < C; c++)
              dst[((i * H + y) * W + x) * C + c] = in ? src[((i * H + sy) * W + sx) * C + c] : black[c];
          }
    }
    views.push_back(v);
    if (tta.flip) {
      Tensor m = v.clone();
      for (int64_t i = 0; i < B; i++) hflip(m.f32() + i * H * W * C, (int)H, (int)W, (int)C);
      views.push_back(m);
    }
  }
  return views;
}

}  // namespace

EvalResult evaluate(NalaFormer& model, const Dataset& ds, int64_t batch_size, int64_t limit, Comm* comm,
                    GraphEval* graphs, const TestTimeAug& tta) {
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
  // Graphs replay the plain forward only: with test-time augmentation
  // (several forwards a batch) every batch runs eagerly, and the graphs'
  // sums, which would be empty, must not replace the eager ones.
  if (graphs && (dev == Device::CPU || tta.any())) graphs = nullptr;
  std::vector<float> black(ds.c, 0.0f);
  for (int64_t c = 0; c < ds.c; c++)
    if (c < (int64_t)ds.mean.size() && c < (int64_t)ds.std.size()) black[c] = -ds.mean[c] / ds.std[c];
  if (graphs) graphs->start(K);
  while (loader.next(b)) {
    const int64_t B = b.images.size(0);
    if (B == 0) continue;  // this rank's share of the last global batch
    if (graphs) {
      graphs->batch(b.images, b.labels);
      r.n += B;
      continue;
    }
    Tensor logits;
    if (!tta.any()) {
      logits = model.forward(b.images.to(dev));
    } else {
      const std::vector<Tensor> views = tta_views(b.images, tta, black);
      for (const Tensor& v : views) {
        Tensor l = model.forward(v.to(dev));
        logits = logits.defined() ? add(logits, l) : l;
      }
      logits = scale(logits, 1.0f / (float)views.size());
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
