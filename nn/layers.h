// nn/layers.h - the layers NaLaFormer is built from, as Modules.
//
// Shape letters: B batch, H x W spatial, N tokens, C channels (Cin, Cout).
// Activations are channels-last: images (B, H, W, C), tokens (B, N, C)
// (autograd/ops.h). Weights keep PyTorch shapes and names so that checkpoints
// of the release load unchanged: Conv2d weight (Cout, Cin, k, k), DWConv2d
// weight (C, 1, k, k), Linear weight (out, in).
//
// Constructors take no Rng and fill weights with zeros (norm layers get their
// final 1/0 values): call init_module_default (nn/init.h) or load a
// checkpoint before use.
#pragma once
#include "autograd/ops.h"
#include "nn/module.h"
#include "tensor/rng.h"

namespace nala {

struct Linear : Module {
  Linear(int64_t in, int64_t out, bool bias = true);
  Tensor weight, bias;  // (out, in), (out) or undefined
  int64_t in_features, out_features;
  Tensor forward(const Tensor& x) override;  // (..., in) -> (..., out)
  Tensor forward(const Tensor& x, DType out);  // the result in f32 or bf16
  // gelu(forward(x)), in one pass (linear_gelu); out: the result's dtype (f32 or bf16)
  Tensor forward_gelu(const Tensor& x, DType out = DType::F32);
  // res + forward(x) * gamma (gamma (out)): LayerScale and a residual, in one pass (linear_scale_add);
  // sample_mask: a drop-path mask (DropPath::mask) applied to forward(x) * gamma
  Tensor forward_scale_add(const Tensor& res, const Tensor& x, const Tensor& gamma,
                           const Tensor& sample_mask = Tensor());
};

struct Conv2d : Module {
  Conv2d(int64_t cin, int64_t cout, int k, int stride, int pad, bool bias = true);
  Tensor weight, bias;  // (Cout, Cin, k, k), (Cout) or undefined
  int64_t cin, cout;
  int k, stride, pad;
  Tensor forward(const Tensor& x) override;  // (B, H, W, Cin) -> (B, Ho, Wo, Cout)
};

// Depthwise, groups = C, stride 1, padding k/2.
struct DWConv2d : Module {
  DWConv2d(int64_t C, int k, bool bias = true);
  Tensor weight, bias;  // (C, 1, k, k), (C) or undefined
  int64_t channels;
  int k;
  Tensor forward(const Tensor& x) override;  // (B, H, W, C) -> (B, H, W, C)
  // add + forward(x) in one pass (add: (B, H, W, C)); x + dwconv(x) is forward_add(x, x).
  Tensor forward_add(const Tensor& x, const Tensor& add);
  // h + forward(h), h = gelu(pre), saving pre alone (dwconv2d_gelu_add).
  Tensor forward_gelu_add(const Tensor& pre);
};

// Over dimension `dim` (default the last, channels-last). Training: batch
// statistics, running estimates updated in place and num_batches_tracked
// (an i64 buffer of shape []) incremented; eval: running statistics.
struct BatchNorm : Module {
  BatchNorm(int64_t C, float eps = 1e-5f, float momentum = 0.1f);
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  int64_t channels;
  float eps, momentum;
  int64_t dim = -1;
  // Data-parallel training: when set, training-mode forward normalises with the
  // statistics of the global batch (batchnorm_sync); empty: this process only.
  RankSum sync;
  Tensor forward(const Tensor& x) override;
  // Eval mode as an affine map, y = x scale + shift: scale = weight /
  // sqrt(running_var + eps), shift = bias - running_mean scale (no gradient).
  std::pair<Tensor, Tensor> eval_affine() const;
};

// Over dimension `dim` (default the last).
struct LayerNorm : Module {
  LayerNorm(int64_t C, float eps);
  Tensor weight, bias;  // (C), (C)
  int64_t channels;
  float eps;
  int64_t dim = -1;
  Tensor forward(const Tensor& x) override;
  Tensor forward(const Tensor& x, DType out);  // the result in f32 or (dim -1) bf16
  // forward(x) * silu(g) in one pass (dim -1 only); x, g f32 or both bf16
  Tensor forward_gate(const Tensor& x, const Tensor& g, DType out = DType::F32);
};

struct GELU : Module {
  GELU();
  Tensor forward(const Tensor& x) override;
};

struct SiLU : Module {
  SiLU();
  Tensor forward(const Tensor& x) override;
};

struct Identity : Module {
  Identity();
  Tensor forward(const Tensor& x) override { return x; }
};

// Stochastic depth per sample; identity in eval or when p == 0. The Rng is
// borrowed (the model owns it) and may be null when p == 0.
struct DropPath : Module {
  DropPath(float p, Rng* rng);
  float p;
  Rng* rng;
  Tensor forward(const Tensor& x) override;
  bool active() const { return is_training() && p != 0.0f; }  // else forward is the identity
  // The mask forward would apply to a batch of B samples (the same draws), for
  // ops that apply it themselves (Linear::forward_scale_add). Needs active().
  Tensor mask(int64_t B, Device dev);
};

// Per-channel scale stored as (1, C, 1, 1) like the release (key e.g.
// "gamma_1"); (C) is accepted too. Returns x (..., C) * gamma, differentiable
// in both.
Tensor layer_scale(const Tensor& x, const Tensor& gamma);

}  // namespace nala
