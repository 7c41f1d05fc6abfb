// models/train/graph_step.h - a training step and an evaluation batch on the
// GPU as CUDA graphs: captured once per batch shape, then replayed with one
// launch, for models small enough that launching their kernels one by one
// takes longer than running them.
//
// Shape letters: B images in the batch, H x W pixels, C channels, K classes.
//
// How a step goes (GraphTrainStep::step):
//   1. The host batch is copied into a page-locked slot (one of kSlots, used
//      in turn; a slot is reused only once the copies that read it are done)
//      and from there, asynchronously, into the step's fixed device buffers.
//   2. The first step of a shape runs eagerly (forward, backward, the
//      optimiser's step()): it creates what is made once (tables, the
//      optimiser state) and checks the labels. The second is captured:
//      forward, loss, backward, the loss and top-1 sums added on the device,
//      and the optimiser's update reading its learning rate and bias
//      corrections from device memory (Optimizer::step_from). Every later
//      step replays the graph.
//   3. What changes between replays is copied in before the launch, from the
//      same slot: the batch, the optimiser's scalars of this step
//      (Optimizer::write_scalars) and the drop-path/dropout masks, drawn on
//      the host from the model's Rng in the order the eager step draws them
//      (autograd/ops.h MaskFeed). A replayed step therefore computes what the
//      eager step computes, bit for bit, and the Rng state (saved in the
//      checkpoint) advances alike.
//   4. Nothing is read back: the epoch's loss and top-1 sums stay on the
//      device until read_metrics (at a log point or the end of the epoch).
//      The labels of replayed steps are not checked (the eager step checked
//      its own; the loader's labels come from a checked dataset).
//
// The capture runs while the step's memory comes from a pool private to the
// graph (kernels/cuda/memory.cu), so the graph's addresses stay its own. When
// a capture fails (some operation cannot be captured), the step is run
// eagerly instead and `off_reason` says why; later steps stay eager.
//
// GraphEval does the same for evaluation batches (no tape): the logits, the
// loss and the sums (loss x B, top-1, top-5, the confusion matrix) on the
// device, read once at the end; the last, partial batch of a pass is a
// shape of its own (eager the first time, captured the next).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "models/nalaformer.h"
#include "nn/optim.h"
#include "tensor/device.h"
#include "tensor/tensor.h"

namespace nala {

// Page-locked slots for the inputs of a step, used in turn.
class UploadRing {
 public:
  static constexpr int kSlots = 3;
  struct Slot {
    Tensor images, labels, scalars, masks;  // pinned host tensors
    device::Event* copied = nullptr;        // recorded after the copies that read the slot
    bool pending = false;
  };
  UploadRing() = default;
  ~UploadRing();
  UploadRing(const UploadRing&) = delete;
  UploadRing& operator=(const UploadRing&) = delete;
  // The next slot, once the copies that last read it are done, holding this
  // batch; its scalars and masks sized as asked.
  Slot& next(const Tensor& images, const Tensor& labels, int64_t scalars, int64_t masks);
  void copied(Slot& s);  // records the slot's event after the copies queued so far

 private:
  std::array<Slot, kSlots> slots_;
  int at_ = 0;
};

class GraphTrainStep : public MaskFeed {
 public:
  GraphTrainStep(NalaFormer& model, Optimizer& opt, float label_smoothing);
  ~GraphTrainStep() override;
  // One step on a host batch (images f32 (B, H, W, C), labels i64 (B)).
  void step(const Tensor& images, const Tensor& labels);
  void zero_metrics();  // the sums start again (an epoch's start)
  // The sums since zero_metrics: the steps' losses and the top-1 hits (waits for the GPU).
  void read_metrics(double* loss_sum, int64_t* correct);
  bool graph_on() const { return off_reason.empty(); }
  size_t graph_nodes() const { return device::graph_nodes(graph_); }
  std::string off_reason;  // why steps run eagerly (empty: graphs in use)
  int64_t eager_steps = 0, captures = 0, replays = 0;

  Tensor device_mask(const Shape& shape, float p, Rng& rng, Device dev) override;

 private:
  void reset();
  void eager(const Tensor& images, const Tensor& labels);
  bool capture();
  void upload_varying(UploadRing::Slot& s);

  NalaFormer& model_;
  Optimizer& opt_;
  float smoothing_;
  Shape shape_;  // the images' shape of the graph
  Tensor images_, labels_, scalars_, acc_;  // device: the graph's inputs, and the sums (3 doubles)
  device::Graph* graph_ = nullptr;
  struct Mask {
    Rng* rng;
    float p;
    int64_t offset, n;  // in the slot's masks
    Tensor dev;         // the graph's copy
  };
  std::vector<Mask> masks_;
  std::vector<float> capture_draws_;  // the draws made while capturing
  int64_t mask_floats_ = 0;
  UploadRing ring_;
};

class GraphEval {
 public:
  explicit GraphEval(NalaFormer& model);
  ~GraphEval();
  void start(int64_t K);  // zero the sums of a pass over K classes
  void batch(const Tensor& images, const Tensor& labels);
  // The sums since start (waits for the GPU).
  void read(double* loss_sum, int64_t* top1, int64_t* top5, std::vector<std::vector<int64_t>>& confusion);
  std::string off_reason;
  int64_t eager_batches = 0, captures = 0, replays = 0;
  size_t graph_nodes(const Shape& images_shape) const;

 private:
  struct PerShape {
    Tensor images, labels;
    device::Graph* graph = nullptr;
    bool seen = false;
  };
  void run(PerShape& s, int64_t B);
  NalaFormer& model_;
  int64_t K_ = 0;
  Tensor acc_, confusion_;  // device doubles
  std::map<Shape, PerShape> shapes_;
  UploadRing ring_;
};

}  // namespace nala
