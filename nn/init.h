// nn/init.h - parameter initialisation (docs/SPEC.md §6.1, the release's scheme).
//
// In-place fills of CPU f32 tensors, drawn from a caller's Rng so that a seed
// reproduces a model exactly. They write values only: no autograd history is
// recorded and requires_grad is left as it is.
//
//   Conv2d, DWConv2d: weight trunc_normal(std 0.02, cut at +-2 absolute), bias 0
//   Linear:           weight and bias U(+-1/sqrt(fan_in))  (PyTorch default)
//   LayerNorm:        weight 1, bias 0
//   BatchNorm:        weight 1, bias 0, running_mean 0, running_var 1,
//                     num_batches_tracked 0
// Parameters the model registers itself (e.g. gamma_1) are left alone: the
// model sets them (layer-init value).
#pragma once
#include "nn/module.h"
#include "tensor/rng.h"

namespace nala {

// Normal(0, std) redrawn until inside [a, b] (absolute bounds, like timm).
void trunc_normal_(Tensor& t, Rng& rng, float std = 0.02f, float a = -2.0f, float b = 2.0f);
void uniform_(Tensor& t, Rng& rng, float lo, float hi);
void constant_(Tensor& t, float v);  // f32 or i64
inline void zeros_(Tensor& t) { constant_(t, 0.0f); }
inline void ones_(Tensor& t) { constant_(t, 1.0f); }

// fan_in of a weight (out, in, ...): numel / out (in * k * k for a conv).
int64_t fan_in(const Tensor& weight);
// PyTorch's nn.Linear / nn.Conv2d reset_parameters: weight and bias
// U(+-1/sqrt(fan_in)). bias may be undefined. Weight first, then bias.
void linear_default_(Tensor& weight, Tensor& bias, Rng& rng);

// Walk m and its descendants in pre-order (m first, then children in
// registration order) and initialise each by its type() as in the table at
// the top of this file. Modules of other types are left unchanged.
void init_module_default(Module& m, Rng& rng);

}  // namespace nala
