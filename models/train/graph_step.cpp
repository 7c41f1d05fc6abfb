// models/train/graph_step.cpp - see graph_step.h.
#include "models/train/graph_step.h"

#include <cstring>
#include <exception>

#include "models/train/step.h"
#ifdef NALA_CUDA
#include "kernels/cuda/metrics.h"
#endif

namespace nala {

namespace {

size_t bytes_of(const Tensor& t) { return (size_t)t.numel() * dtype_size(t.dtype()); }

// The device copy of a pinned host tensor (same shape), queued.
void upload(const Tensor& dev, const Tensor& host) { device::copy_async(dev.raw(), Device::CUDA, host.raw(), Device::CPU, bytes_of(host)); }

// The device sums: acc += loss x w, top-1 and top-5 hits; confusion when given.
void add_metrics(const Tensor& acc, const Tensor& loss, double w, const Tensor& logits, const Tensor& labels,
                 const Tensor* confusion) {
#ifdef NALA_CUDA
  const Tensor l = view::contiguous(logits.detach());
  cuda::accumulate_metrics(reinterpret_cast<double*>(acc.raw()), loss.f32(), w, l.f32(), labels.i64(), l.size(0),
                           l.size(1), confusion ? reinterpret_cast<double*>(confusion->raw()) : nullptr);
#else
  (void)acc, (void)loss, (void)w, (void)logits, (void)labels, (void)confusion;
  NALA_FAIL("CUDA graphs: this build has no CUDA support");
#endif
}

// n doubles read back from the device (waits for the GPU).
std::vector<double> read_doubles(const Tensor& t) {
  const std::vector<int64_t> raw = t.to(Device::CPU).to_vector_i64();
  std::vector<double> out(raw.size());
  std::memcpy(out.data(), raw.data(), raw.size() * sizeof(double));
  return out;
}

Tensor pinned_like(const Tensor& t) { return Tensor::empty_pinned(t.shape(), t.dtype()); }

}  // namespace

// ---- UploadRing ---------------------------------------------------------------

UploadRing::~UploadRing() {
  for (Slot& s : slots_) {
    if (s.pending) device::event_wait(s.copied);
    device::event_free(s.copied);
  }
}

UploadRing::Slot& UploadRing::next(const Tensor& images, const Tensor& labels, int64_t scalars, int64_t masks) {
  Slot& s = slots_[at_];
  at_ = (at_ + 1) % kSlots;
  if (s.pending) device::event_wait(s.copied);  // flow control: the host is kSlots steps ahead at most
  s.pending = false;
  if (!s.images.defined() || s.images.shape() != images.shape()) s.images = pinned_like(images);
  if (!s.labels.defined() || s.labels.shape() != labels.shape()) s.labels = pinned_like(labels);
  if (!s.scalars.defined() || s.scalars.numel() < scalars) s.scalars = Tensor::empty_pinned({std::max<int64_t>(scalars, 1)});
  if (!s.masks.defined() || s.masks.numel() < masks) s.masks = Tensor::empty_pinned({std::max<int64_t>(masks, 1)});
  s.images.copy_(images);
  s.labels.copy_(labels);
  return s;
}

void UploadRing::copied(Slot& s) {
  if (!s.copied) s.copied = device::event_new();
  device::event_record(s.copied);
  s.pending = true;
}

// ---- GraphTrainStep ------------------------------------------------------------

GraphTrainStep::GraphTrainStep(NalaFormer& model, Optimizer& opt, float label_smoothing)
    : model_(model), opt_(opt), smoothing_(label_smoothing) {
  for (const Tensor& p : model.parameters())
    NALA_CHECK(p.device() == Device::CUDA, "CUDA graphs: the model must be on the GPU, found ", p.desc());
  acc_ = Tensor::zeros({3}, DType::I64, Device::CUDA);  // 3 doubles, 0.0 = all bits 0
}

GraphTrainStep::~GraphTrainStep() { reset(); }

void GraphTrainStep::reset() {
  masks_.clear();
  device::graph_free(graph_);
  graph_ = nullptr;
  shape_.clear();
  mask_floats_ = 0;
}

void GraphTrainStep::zero_metrics() { device::zero_async(acc_.raw(), 3 * sizeof(double)); }

void GraphTrainStep::read_metrics(double* loss_sum, int64_t* correct) {
  const std::vector<double> a = read_doubles(acc_);
  *loss_sum = a[0];
  *correct = (int64_t)a[1];
}

Tensor GraphTrainStep::device_mask(const Shape& shape, float p, Rng& rng, Device dev) {
  Mask m{&rng, p, mask_floats_, shape_numel(shape), Tensor::empty(shape, DType::F32, dev)};
  capture_draws_.resize((size_t)(mask_floats_ + m.n));
  draw_mask_values(capture_draws_.data() + mask_floats_, m.n, p, rng);
  mask_floats_ += m.n;
  masks_.push_back(m);
  return m.dev;
}

void GraphTrainStep::eager(const Tensor& images, const Tensor& labels) {
  ForwardBackward fb = forward_backward(model_, images, labels, smoothing_);
  add_metrics(acc_, fb.loss, 1.0, fb.logits, labels, nullptr);
  opt_.step();
  opt_.zero_grad();
  eager_steps++;
}

bool GraphTrainStep::capture() {
  const auto rng_state = model_.rng.state();
  opt_.zero_grad();
  masks_.clear(), capture_draws_.clear(), mask_floats_ = 0;
  std::string why;
  set_mask_feed(this);
  device::graph_capture_begin();
  try {
    ForwardBackward fb = forward_backward(model_, images_, labels_, smoothing_);
    add_metrics(acc_, fb.loss, 1.0, fb.logits, labels_, nullptr);
    opt_.step_from(scalars_.f32());
  } catch (const std::exception& e) {
    why = e.what();
  }
  set_mask_feed(nullptr);
  std::string end_why;
  device::Graph* g = device::graph_capture_end(&end_why);
  opt_.zero_grad();  // the captured gradients are the graph's
  if (!why.empty() || !g) {
    device::graph_free(g);
    masks_.clear(), capture_draws_.clear(), mask_floats_ = 0;
    model_.rng.set_state(rng_state);  // the draws of the failed capture never happened
    off_reason = "the step could not be captured (" + (why.empty() ? end_why : why) + ")";
    return false;
  }
  graph_ = g;
  captures++;
  return true;
}

void GraphTrainStep::upload_varying(UploadRing::Slot& s) {
  float* q = s.masks.f32();
  opt_.write_scalars(s.scalars.f32());
  upload(scalars_, s.scalars);
  for (const Mask& m : masks_)
    device::copy_async(m.dev.raw(), Device::CUDA, q + m.offset, Device::CPU, (size_t)m.n * sizeof(float));
}

void GraphTrainStep::step(const Tensor& images, const Tensor& labels) {
  NALA_CHECK(images.dim() == 4 && labels.dim() == 1 && labels.size(0) == images.size(0) &&
                 labels.dtype() == DType::I64,
             "CUDA graph step: expected images (B, H, W, C) and i64 labels (B), got ", images.desc(), " and ",
             labels.desc());
  if (images.shape() != shape_) {  // a new shape: a new graph, after one eager step
    reset();
    shape_ = images.shape();
    images_ = Tensor::empty(images.shape(), DType::F32, Device::CUDA);
    labels_ = Tensor::empty(labels.shape(), DType::I64, Device::CUDA);
    scalars_ = Tensor::empty({std::max<int64_t>(opt_.scalar_count(), 1)}, DType::F32, Device::CUDA);
    UploadRing::Slot& s = ring_.next(images, labels, 0, 0);
    upload(images_, s.images), upload(labels_, s.labels);
    ring_.copied(s);
    eager(images_, labels_);
    return;
  }
  UploadRing::Slot& s = ring_.next(images, labels, opt_.scalar_count(), mask_floats_);
  upload(images_, s.images), upload(labels_, s.labels);
  if (!graph_ && !off_reason.empty()) {
    ring_.copied(s);
    eager(images_, labels_);
    return;
  }
  if (!graph_) {
    if (!capture()) {
      ring_.copied(s);
      eager(images_, labels_);
      return;
    }
    if (s.masks.numel() < mask_floats_) s.masks = Tensor::empty_pinned({mask_floats_});
    std::memcpy(s.masks.f32(), capture_draws_.data(), (size_t)mask_floats_ * sizeof(float));
  } else {
    float* q = s.masks.f32();
    for (const Mask& m : masks_) draw_mask_values(q + m.offset, m.n, m.p, *m.rng);
    replays++;
  }
  upload_varying(s);
  ring_.copied(s);
  device::graph_launch(graph_);
}

// ---- GraphEval ------------------------------------------------------------------

GraphEval::GraphEval(NalaFormer& model) : model_(model) {}

GraphEval::~GraphEval() {
  for (auto& kv : shapes_) device::graph_free(kv.second.graph);
}

void GraphEval::start(int64_t K) {
  if (K != K_) {  // new sums: the graphs wrote into the old ones
    for (auto& kv : shapes_) device::graph_free(kv.second.graph);
    shapes_.clear();
    K_ = K;
    acc_ = Tensor::zeros({3}, DType::I64, Device::CUDA);
    confusion_ = Tensor::zeros({K * K}, DType::I64, Device::CUDA);
  }
  device::zero_async(acc_.raw(), 3 * sizeof(double));
  device::zero_async(confusion_.raw(), (size_t)(K * K) * sizeof(double));
}

void GraphEval::run(PerShape& s, int64_t B) {
  NoGradGuard ng;
  Tensor logits = model_.forward(s.images);
  Tensor loss = cross_entropy(logits, s.labels);
  add_metrics(acc_, loss, (double)B, logits, s.labels, &confusion_);
}

void GraphEval::batch(const Tensor& images, const Tensor& labels) {
  NALA_CHECK(K_ > 0, "GraphEval: start() before batch()");
  const int64_t B = images.size(0);
  PerShape& s = shapes_[images.shape()];
  if (!s.images.defined()) {
    s.images = Tensor::empty(images.shape(), DType::F32, Device::CUDA);
    s.labels = Tensor::empty(labels.shape(), DType::I64, Device::CUDA);
  }
  UploadRing::Slot& slot = ring_.next(images, labels, 0, 0);
  upload(s.images, slot.images), upload(s.labels, slot.labels);
  ring_.copied(slot);
  if (s.graph) {
    device::graph_launch(s.graph);
    replays++;
    return;
  }
  if (!s.seen || !off_reason.empty()) {  // the first batch of a shape runs eagerly
    s.seen = true;
    run(s, B);
    eager_batches++;
    return;
  }
  std::string why, end_why;
  device::graph_capture_begin();
  try {
    run(s, B);
  } catch (const std::exception& e) {
    why = e.what();
  }
  device::Graph* g = device::graph_capture_end(&end_why);
  if (!why.empty() || !g) {
    device::graph_free(g);
    off_reason = "the evaluation batch could not be captured (" + (why.empty() ? end_why : why) + ")";
    run(s, B);
    eager_batches++;
    return;
  }
  s.graph = g;
  captures++;
  device::graph_launch(g);
}

size_t GraphEval::graph_nodes(const Shape& images_shape) const {
  auto it = shapes_.find(images_shape);
  return it == shapes_.end() ? 0 : device::graph_nodes(it->second.graph);
}

void GraphEval::read(double* loss_sum, int64_t* top1, int64_t* top5, std::vector<std::vector<int64_t>>& confusion) {
  const std::vector<double> a = read_doubles(acc_), c = read_doubles(confusion_);
  *loss_sum = a[0], *top1 = (int64_t)a[1], *top5 = (int64_t)a[2];
  confusion.assign(K_, std::vector<int64_t>(K_, 0));
  for (int64_t k = 0; k < K_ * K_; k++) confusion[k / K_][k % K_] = (int64_t)c[k];
}

}  // namespace nala
