// models/train/evaluate.h - what a trained model says about images:
// accuracy over a dataset (loss, top-1, top-5, per class, the confusion
// matrix), and the top-k classes with their probabilities for a batch.
//
// Shape letters: B images in a batch, H x W pixels, C channels, K classes.
// Images are normalised f32 (B, H, W, C), channels-last (the loader's
// batches; models/train/data.h). Everything runs in eval mode without the
// autograd tape, on the device the model is on; the model's training mode is
// restored afterwards.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/nalaformer.h"
#include "models/train/data.h"
#include "nn/comm.h"

namespace nala {

// Where a module's parameters are (the CPU for a module without any).
Device module_device(const Module& m);

struct EvalResult {
  double loss = 0, top1 = 0, top5 = 0;
  int64_t n = 0;
  std::vector<double> per_class;                 // accuracy per class
  std::vector<std::vector<int64_t>> confusion;   // [true][predicted]
};
class GraphEval;  // models/train/graph_step.h

// Test-time augmentation: the logits of an image are the mean of the logits
// of its views. The views: the image; with shift s > 0 also the image moved
// by s pixels up, down, left and right, black (pixel value 0, as the
// training crop's padding) where it moves in; with flip, the left-right
// mirror of each of those. Every view is one more forward pass.
struct TestTimeAug {
  bool flip = false;
  int shift = 0;
  bool any() const { return flip || shift > 0; }
  int views() const { return (shift > 0 ? 5 : 1) * (flip ? 2 : 1); }
  std::string describe() const;  // "" when none, else e.g. "mirror, shifts of 2 px: the mean of ... 10 views ..."
};

// limit: the first `limit` images only (0 = all). With a data-parallel
// group, each rank evaluates its shard and every rank gets the totals.
// graphs (GPU): the batches run as CUDA graphs held there (kept by the
// caller across passes) and the sums stay on the device until the end; the
// results are the same as without. Not with test-time augmentation (tta:
// evaluated eagerly).
EvalResult evaluate(NalaFormer& model, const Dataset& ds, int64_t batch_size, int64_t limit = 0,
                    Comm* comm = nullptr, GraphEval* graphs = nullptr, const TestTimeAug& tta = {});

// Eval-mode logits (B, K) of a batch of images (moved to the model's device).
Tensor eval_logits(NalaFormer& model, const Tensor& images);

struct Prediction {
  std::vector<int64_t> classes;  // the k most probable, most probable first (ties: the lower class first)
  std::vector<float> probs;      // their softmax probabilities
};
// The top min(k, K) classes of each image of the batch.
std::vector<Prediction> predict(NalaFormer& model, const Tensor& images, int64_t k = 5);

}  // namespace nala
