// kernels/cpu/loss.h - the fused, label-smoothed cross-entropy on contiguous
// arrays. Same names and signatures as kernels/cuda/loss.h.
//
// Shape letters: B rows (the batch), K classes.
//   logits (B, K) f32, labels (B) i64, lse (B) f32, loss: one f32.
// With t = (1 - s) onehot(label) + s / K, each row's loss is
//   -sum_k t_k log softmax(z)_k = lse - (1 - s) z_label - (s / K) sum_k z_k
// and the loss is the mean over the B rows.
// Saved for backward: the per-row logsumexp lse (B).
// Both kernels overwrite (=) their outputs.
#pragma once
#include <cstdint>

namespace nala {
namespace cpu {

// Writes *loss (one element) and lse[B]. A label outside [0, K) is never
// used as an index: bad[0] (host memory) receives the first bad position and
// bad[1] its value, or bad[0] = -1 when every label is valid; the loss is
// then undefined and the caller raises the error.
void cross_entropy_forward(float* loss, float* lse, const float* logits, const int64_t* labels, int64_t B,
                           int64_t K, float smoothing, int64_t* bad);
void cross_entropy_forward_naive(float* loss, float* lse, const float* logits, const int64_t* labels, int64_t B,
                                 int64_t K, float smoothing, int64_t* bad);
// dlogits = dloss * (softmax(z) - t) / B; dloss points to one element on the
// kernel's device. Labels were validated by the forward pass.
void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits, const int64_t* labels,
                            const float* lse, int64_t B, int64_t K, float smoothing);
void cross_entropy_backward_naive(float* dlogits, const float* dloss, const float* logits, const int64_t* labels,
                                  const float* lse, int64_t B, int64_t K, float smoothing);

}  // namespace cpu
}  // namespace nala
