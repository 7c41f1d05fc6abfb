// models/nalaformer.h - NaLaFormer (docs/SPEC.md §1-§6) built from nn/.
//
// Shape letters: B batch, H x W tokens of the current stage, N = H*W, C the
// stage width, P the head width. Activations are channels-last (B, H, W, C),
// i.e. tokens (B, N, C); forward() takes images (B, H, W, Cin) and returns
// logits (B, classes). Parameter names follow the release (docs/SPEC.md §10),
// so a PyTorch state_dict loads without renaming.
//
// What this file does not do: training loops, data, checkpoints on disk
// (tools/), or any arithmetic of its own (autograd/ops.h).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/attention_kind.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "tensor/rng.h"

namespace nala {

struct NalaConfig {
  std::string name;
  std::vector<int64_t> dims, depths, heads;
  float mlp_ratio = 4.0f;
  std::vector<float> layer_init;  // gamma_1/gamma_2 initial value per stage
  float drop_path_rate = 0.0f;
  int stem_stride_first = 2, stem_stride_last = 2;
  int64_t head_width = 1024;  // P
  // Per stage: the linear kind `attn` (true) or softmax attention (false).
  // attn == softmax makes every stage softmax (docs/SPEC.md §11).
  std::vector<bool> nala_stage;
  AttnKind attn = AttnKind::nala;
  int64_t in_chans = 3, num_classes = 1000;

  int64_t num_stages() const { return (int64_t)dims.size(); }
  AttnKind stage_attn(int64_t s) const { return nala_stage[s] ? attn : AttnKind::softmax; }
  int64_t stem_stride() const { return (int64_t)stem_stride_first * stem_stride_last; }
  // Token grid of stage s for an img x img input (each stride-2 3x3 conv,
  // pad 1, maps n -> (n + 1) / 2).
  std::pair<int64_t, int64_t> stage_grid(int64_t s, int64_t img_h, int64_t img_w) const;
  std::string describe() const;  // one line, for logs and checkpoints ("attn=" only when not nala)
  // Throws (naming the config) unless an h x w image is one the network can
  // take: at least 4 pixels a side and at least one token at the last stage.
  void check_input_size(int64_t h, int64_t w) const;
  // Values in the network's state_dict (parameters and buffers), computed
  // from the config alone, without building anything: what loading a file
  // that claims this config needs it to hold (in double: a lying config may
  // describe more than int64 counts).
  double state_numel() const;
};

// The configs of docs/SPEC.md §5: xt, t, s, b, l, pico. Throws on unknown names.
NalaConfig nalaformer_config(const std::string& name, int64_t in_chans = -1, int64_t num_classes = -1);
std::vector<std::string> nalaformer_config_names();

// What a layer's attention core received, for analysis tools: q and k
// detached, (B, h, N, d), on the model's device; the grid and the kind used.
struct AttnCapture {
  Tensor q, k;
  int64_t H = 0, W = 0;
  AttnKind kind = AttnKind::nala;
};

// x + y * gamma, a block's LayerScale and residual add, with stochastic depth
// x + (y * gamma) * sample_mask[b]: handed to the module that makes y, whose
// last product then adds it in its store (Linear::forward_scale_add). x has
// y's shape, gamma is (C), sample_mask (B) or undefined.
struct ScaledResidual {
  Tensor x, gamma, sample_mask;
};

struct NalaAttention : Module {
  NalaAttention(int64_t C, int64_t heads, AttnKind kind);
  Linear* qkvg;
  DWConv2d* lepe;
  LayerNorm* ln;
  Linear* out_proj;
  int64_t C, heads;
  AttnKind kind;                   // this layer's attention core
  AttnCapture* capture = nullptr;  // when set, every forward stores its q and k there
  // qkvg's output up to this many bytes is one product, larger ones four
  // (nalaformer.cpp says why), on the GPU and on the CPU (0 there: its
  // split copy costs more than the products save); process-wide, tests
  // change them to reach both ways
  static int64_t qkvg_one_product_bytes, qkvg_one_product_bytes_cpu;
  // (B, H, W, C); with res: res->x + forward_hw(x) * res->gamma
  Tensor forward_hw(const Tensor& x, int64_t H, int64_t W, const ScaledResidual* res = nullptr);
};

struct NalaFFN : Module {
  NalaFFN(int64_t C, int64_t hidden);
  Linear* fc1;
  DWConv2d* dwconv;
  Linear* fc2;
  Tensor forward(const Tensor& x) override;  // (B, H, W, C)
  Tensor forward(const Tensor& x, const ScaledResidual* res);  // res->x + forward(x) * res->gamma when res
};

struct NalaBlock : Module {
  NalaBlock(int64_t C, int64_t heads, float mlp_ratio, float layer_init, float drop_path, AttnKind kind, Rng* rng);
  Tensor gamma_1, gamma_2;
  DWConv2d *cpe1, *cpe2;
  Module *norm1, *norm2;  // each holds a LayerNorm child "norm" (eps 1e-6)
  LayerNorm *norm1_ln, *norm2_ln;
  NalaAttention* attn;
  NalaFFN* ffn;
  DropPath* drop_path;
  Tensor forward(const Tensor& x) override;  // (B, H, W, C)
};

struct NalaFormer : Module {
  explicit NalaFormer(const NalaConfig& cfg, uint64_t seed = 0);
  NalaConfig cfg;
  Rng rng;  // drop-path draws; part of a training checkpoint's state

  Sequential* stem;                 // patch_embed.proj
  std::vector<Sequential*> blocks;  // layers.<i>.blocks
  std::vector<Conv2d*> down_conv;   // layers.<i>.downsample.reduction
  std::vector<BatchNorm*> down_bn;  // layers.<i>.downsample.norm
  Linear* proj;
  BatchNorm* norm;
  Conv2d* head;

  Tensor forward(const Tensor& images) override;  // (B, H, W, Cin) -> (B, classes)
  // Does forward take the stem's and merges' BatchNorms (and GELUs) into the
  // convolutions' stores (conv2d_affine)? In eval mode, bf16 mode on the GPU,
  // with no gradient wanted (grad mode off, or nothing requires grad).
  bool fused_eval_convs(const Tensor& images) const;
  // Fill weights per docs/SPEC.md §6.1 from an Rng.
  void init_weights(Rng& init_rng);
};

}  // namespace nala
