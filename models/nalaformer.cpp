// models/nalaformer.cpp - the NaLaFormer network (see nalaformer.h).
#include "models/nalaformer.h"

#include <sstream>

#include "autograd/ops.h"
#include "tensor/device.h"
#include "nn/init.h"

namespace nala {

namespace {
// A module whose children are added by name from outside (ModuleList-like
// holders such as "patch_embed", "layers", "layers.<i>.downsample").
struct Container : Module {
  explicit Container(std::string type) : Module(std::move(type)) {}
  template <class M>
  M* add(const std::string& name, std::unique_ptr<M> m) {
    return register_module(name, std::move(m));
  }
};

// bf16 mode (--precision bf16, device::gemm_bf16()) on the GPU: the products
// run on bf16 tensor cores and the activations they read are stored in bf16.
bool bf16_mode(const Tensor& x) { return x.device() == Device::CUDA && device::gemm_bf16(); }
}  // namespace

// ---- configs (docs/SPEC.md §5) ---------------------------------------------

std::vector<std::string> nalaformer_config_names() { return {"xt", "t", "s", "b", "l", "pico"}; }

NalaConfig nalaformer_config(const std::string& name, int64_t in_chans, int64_t num_classes) {
  NalaConfig c;
  c.name = name;
  if (name == "xt") {
    c.dims = {32, 64, 128, 384}, c.depths = {2, 2, 2, 2}, c.heads = {1, 2, 4, 12};
    c.mlp_ratio = 3.5f, c.layer_init = {1, 1, 1, 1}, c.drop_path_rate = 0.10f;
  } else if (name == "t") {
    c.dims = {64, 128, 256, 512}, c.depths = {2, 2, 6, 2}, c.heads = {1, 2, 4, 8};
    c.mlp_ratio = 4.0f, c.layer_init = {1, 1, 1, 1}, c.drop_path_rate = 0.10f;
  } else if (name == "s") {
    c.dims = {64, 128, 320, 512}, c.depths = {3, 5, 9, 3}, c.heads = {1, 2, 5, 8};
    c.mlp_ratio = 3.5f, c.layer_init = {1, 1, 1, 1}, c.drop_path_rate = 0.15f;
  } else if (name == "b") {
    c.dims = {96, 192, 384, 512}, c.depths = {4, 6, 12, 6}, c.heads = {1, 2, 6, 8};
    c.mlp_ratio = 4.0f, c.layer_init = {1, 1, 1e-6f, 1e-6f}, c.drop_path_rate = 0.40f;
  } else if (name == "l") {
    c.dims = {96, 192, 448, 640}, c.depths = {4, 7, 19, 8}, c.heads = {1, 2, 7, 10};
    c.mlp_ratio = 3.5f, c.layer_init = {1e-6f, 1e-6f, 1e-6f, 1e-6f}, c.drop_path_rate = 0.55f;
  } else if (name == "pico") {
    c.dims = {32, 64, 128}, c.depths = {2, 2, 2}, c.heads = {1, 2, 4};
    c.mlp_ratio = 3.0f, c.layer_init = {1, 1, 1}, c.drop_path_rate = 0.0f;
    c.stem_stride_last = 1, c.head_width = 256;
    c.in_chans = 1, c.num_classes = 10;
  } else {
    NALA_FAIL("unknown model '", name, "' (known: xt, t, s, b, l, pico)");
  }
  c.nala_stage.assign(c.dims.size(), false);
  c.nala_stage[0] = c.nala_stage[1] = true;
  if (in_chans > 0) c.in_chans = in_chans;
  if (num_classes > 0) c.num_classes = num_classes;
  return c;
}

std::pair<int64_t, int64_t> NalaConfig::stage_grid(int64_t s, int64_t h, int64_t w) const {
  auto down = [](int64_t n) { return (n + 1) / 2; };  // 3x3 conv, stride 2, pad 1
  h = down(h), w = down(w);
  if (stem_stride_last == 2) h = down(h), w = down(w);
  for (int64_t i = 0; i < s; i++) h = down(h), w = down(w);
  return {h, w};
}

void NalaConfig::check_input_size(int64_t h, int64_t w) const {
  bool ok = h >= 4 && w >= 4 && h <= (1 << 20) && w <= (1 << 20);
  if (ok) {
    auto last = stage_grid(num_stages() - 1, h, w);
    ok = last.first >= 1 && last.second >= 1;
  }
  NALA_CHECK(ok, "image size ", h, "x", w, " is not one ", name, " can take (at least 4x4)");
}

double NalaConfig::state_numel() const {
  // Mirrors the constructor below; tests/test_probe.cpp checks it against
  // built networks. Conv2d/Linear/DWConv2d: weight + bias; LayerNorm: 2C;
  // BatchNorm: weight, bias, running mean and var, num_batches_tracked.
  auto conv = [](double cin, double cout, double k) { return cout * cin * k * k + cout; };
  auto bn = [](double c) { return 4 * c + 1; };
  const double half = (double)(dims.empty() ? 0 : dims[0] / 2), C0 = dims.empty() ? 0 : (double)dims[0];
  double n = conv((double)in_chans, half, 3) + 2 * conv(half, half, 3) + conv(half, C0, 3) + 3 * bn(half) + bn(C0);
  for (size_t s = 0; s < dims.size(); s++) {
    const double C = (double)dims[s], hidden = (double)(int64_t)(mlp_ratio * dims[s]);
    const double block = 2 * C                                  // gamma_1, gamma_2
                         + 2 * conv(1, C, 3)                     // cpe1, cpe2 (depthwise)
                         + 2 * 2 * C                             // norm1, norm2
                         + conv(C, 4 * C, 1) + conv(1, C, 5) + 2 * C + conv(C, C, 1)  // attention
                         + conv(C, hidden, 1) + conv(1, hidden, 3) + conv(hidden, C, 1);  // FFN
    n += (s < depths.size() ? (double)depths[s] : 0) * block;
    if (s + 1 < dims.size()) n += conv(C, (double)dims[s + 1], 3) + bn((double)dims[s + 1]);
  }
  const double P = (double)head_width, last = dims.empty() ? 0 : (double)dims.back();
  return n + conv(last, P, 1) + bn(P) + conv(P, (double)num_classes, 1);
}

std::string NalaConfig::describe() const {
  std::ostringstream os;
  auto list = [&](const char* k, const auto& v) {
    os << k << "=";
    for (size_t i = 0; i < v.size(); i++) os << (i ? "," : "") << v[i];
    os << " ";
  };
  os << "model=" << name << " ";
  list("dims", dims);
  list("depths", depths);
  list("heads", heads);
  os << "mlp=" << mlp_ratio << " ";
  list("layer_init", layer_init);
  os << "drop_path=" << drop_path_rate << " stem_strides=" << stem_stride_first << "," << stem_stride_last
     << " P=" << head_width << " ";
  std::vector<int> nala;
  for (size_t i = 0; i < nala_stage.size(); i++)
    if (nala_stage[i]) nala.push_back((int)i);
  if (attn != AttnKind::nala) os << "attn=" << attn_kind_name(attn) << " ";
  list("nala_stages", nala);
  os << "in_chans=" << in_chans << " classes=" << num_classes;
  return os.str();
}

// ---- attention --------------------------------------------------------------

NalaAttention::NalaAttention(int64_t C_, int64_t heads_, AttnKind kind_)
    : Module(kind_ == AttnKind::softmax ? "SoftmaxAttention" : "NalaAttention"), C(C_), heads(heads_), kind(kind_) {
  NALA_CHECK(heads > 0 && C % heads == 0 && (C / heads) % 4 == 0, "attention: width ", C, " with ", heads,
             " heads: the head width must be a multiple of 4 (2-D RoPE)");
  qkvg = register_module("qkvg", std::make_unique<Linear>(C, 4 * C));
  lepe = register_module("lepe", std::make_unique<DWConv2d>(C, 5));
  ln = register_module("ln", std::make_unique<LayerNorm>(C, 1e-5f));
  out_proj = register_module("out_proj", std::make_unique<Linear>(C, C));
}

// qkvg's output up to this size (bytes) is made by one product, then split
// by a copy that stays in the GPU's L2 (50 MB on the H200); larger ones by
// four products of a quarter of the columns each. Measured on pico at batch
// 256 (Nsight Compute, per block): at stage 2 (4,096 rows of 128) the four
// products take 12.7 us each, 128 blocks that do not fill the 132 SMs, and one
// product 30 us, saving 15 us with the copies; at stage 1 (12,544 rows of 64,
// 12.8 MB) 5 us; at stage 0 (50,176 rows of 32, 25.7 MB) the four products
// (392 blocks each) are 4 us faster than one product and its copy.
// The two ways agree to float32 rounding, not bit for bit (dX is one product
// over 4C instead of four added), and the choice depends on the batch size.
// On the CPU (2 cores, pico's inference) the split copy took 50 ms of 13
// passes where the products saved none: there the four products stay.
int64_t NalaAttention::qkvg_one_product_bytes = 16 << 20;
int64_t NalaAttention::qkvg_one_product_bytes_cpu = 0;

Tensor NalaAttention::forward_hw(const Tensor& x, int64_t H, int64_t W, const ScaledResidual* res) {
  const int64_t B = x.size(0), N = H * W, d = C / heads;
  Tensor xt = reshape(x, {B, N, C});
  Tensor q, k, v, g, v_img;  // v_img: LePE's input, v before the split into heads
  // qkvg is one Linear(C, 4C) (the checkpoint layout), applied one of two ways:
  const int64_t one_product = x.device() == Device::CPU ? qkvg_one_product_bytes_cpu : qkvg_one_product_bytes;
  if (B * N * 4 * C * (int64_t)sizeof(float) <= one_product) {
    // a small layer (launch- and latency-bound): one product, then one copy
    // that lays q, k, v (and g when h == 1) out by head, (parts, B, h, N, d)
    const Tensor all = reshape(qkvg->forward(xt), {B, N, 4, heads, d});
    const int64_t parts = heads == 1 ? 4 : 3;
    const Tensor split = contiguous(permute(narrow(all, 2, 0, parts), {2, 0, 3, 1, 4}));
    auto part = [&](int64_t i) { return reshape(narrow(split, 0, i, 1), {B, heads, N, d}); };
    q = part(0), k = part(1), v = part(2);
    if (heads == 1) {  // the head layout is the token layout
      g = reshape(part(3), {B, N, C});
      v_img = reshape(v, {B, H, W, C});
    } else {  // copies of the columns (LayerNorm gate, LePE)
      const Tensor flat = reshape(all, {B, N, 4 * C});
      g = contiguous(narrow(flat, 2, 3 * C, C));
      v_img = reshape(narrow(flat, 2, 2 * C, C), {B, H, W, C});
    }
  } else {
    // a large one: its four row blocks as four products give q, k, v, g
    // contiguous, so no activation-sized split copies are made (the weight's
    // gradient is assembled from the blocks). In bf16 mode on the GPU a NaLa
    // layer's q, k, v are bf16 (its tensor-core kernels read bf16; half the
    // bytes to move and to save for backward), and so are g, its output and
    // o + lepe(v), which the LayerNorm gate reads as they are. The four
    // products share one bf16 input (norm1's bf16 result in bf16 mode, else
    // one copy), saved for their weight gradients; its four bf16 gradients
    // are added in bf16.
    const DType qkv = kind == AttnKind::nala && bf16_mode(x) ? DType::BF16 : DType::F32;
    const Tensor xin = qkv == DType::BF16 ? cast(xt, DType::BF16) : xt;
    auto block = [&](int64_t i, DType dt) {
      return linear(xin, narrow(qkvg->weight, 0, i * C, C), narrow(qkvg->bias, 0, i * C, C), dt);  // (B, N, C)
    };
    q = block(0, qkv), k = block(1, qkv), v = block(2, qkv), g = block(3, qkv);
    v_img = reshape(v, {B, H, W, C});
    auto to_heads = [&](const Tensor& z) { return contiguous(permute(reshape(z, {B, N, heads, d}), {0, 2, 1, 3})); };
    q = to_heads(q), k = to_heads(k), v = to_heads(v);  // (B, h, N, d); no copy when h == 1
  }
  if (capture) *capture = AttnCapture{cast(q.detach(), DType::F32), cast(k.detach(), DType::F32), H, W, kind};
  Tensor o = attention_core(kind, q, k, v, H, W);  // (B, h, N, d)
  o = reshape(contiguous(permute(o, {0, 2, 1, 3})), {B, H, W, C});
  o = reshape(lepe->forward_add(v_img, o), {B, N, C});  // o + lepe(v)
  if (o.dtype() != g.dtype()) o = cast(o, g.dtype());
  // ln(o) * silu(g), one pass; in bf16 mode stored in bf16 (out_proj's input)
  o = ln->forward_gate(o, g, bf16_mode(x) ? DType::BF16 : DType::F32);
  if (res)
    return reshape(out_proj->forward_scale_add(reshape(res->x, {B, N, C}), o, res->gamma, res->sample_mask),
                   {B, H, W, C});
  return reshape(out_proj->forward(o), {B, H, W, C});
}

// ---- FFN ----------------------------------------------------------------------

NalaFFN::NalaFFN(int64_t C, int64_t hidden) : Module("NalaFFN") {
  fc1 = register_module("fc1", std::make_unique<Linear>(C, hidden));
  dwconv = register_module("dwconv", std::make_unique<DWConv2d>(hidden, 3));
  fc2 = register_module("fc2", std::make_unique<Linear>(hidden, C));
}

Tensor NalaFFN::forward(const Tensor& x) { return forward(x, nullptr); }

Tensor NalaFFN::forward(const Tensor& x, const ScaledResidual* res) {
  // In bf16 mode on the GPU the hidden activations (the model's widest, Hd =
  // mlp_ratio * C) are stored in bf16: half the bytes to save for backward
  // and to move; the products already round their operands to bf16.
  const DType hd = bf16_mode(x) ? DType::BF16 : DType::F32;
  Tensor h;
  if (needs_grad({&x, &fc1->weight, &dwconv->weight})) {
    // Training: h = gelu(pre) is a temporary of the depthwise op, which
    // saves pre alone (backward makes h again for the taps' gradient and
    // applies gelu's derivative in its stencil's store): one hidden tensor
    // fewer kept for backward.
    h = dwconv->forward_gelu_add(fc1->forward(x, hd));  // h + dwconv(h)
  } else {
    h = fc1->forward_gelu(x, hd);   // (B, H, W, Hd), gelu in the product's store
    h = dwconv->forward_add(h, h);  // h + dwconv(h)
  }
  return res ? fc2->forward_scale_add(res->x, h, res->gamma, res->sample_mask) : fc2->forward(h);
}

// ---- block --------------------------------------------------------------------

NalaBlock::NalaBlock(int64_t C, int64_t heads, float mlp_ratio, float layer_init, float dp, AttnKind kind, Rng* rng)
    : Module("NalaBlock") {
  gamma_1 = register_parameter("gamma_1", Tensor::full({1, C, 1, 1}, layer_init));
  gamma_2 = register_parameter("gamma_2", Tensor::full({1, C, 1, 1}, layer_init));
  cpe1 = register_module("cpe1", std::make_unique<DWConv2d>(C, 3));
  // norm1/norm2: the release wraps a channels LayerNorm (eps 1e-6) as child "norm".
  auto wrap_ln = [&](const char* name, LayerNorm** inner) {
    auto holder = std::make_unique<Container>("LayerNorm2d");
    *inner = holder->add("norm", std::make_unique<LayerNorm>(C, 1e-6f));
    return register_module(name, std::move(holder));
  };
  norm1 = wrap_ln("norm1", &norm1_ln);
  attn = register_module("attn", std::make_unique<NalaAttention>(C, heads, kind));
  cpe2 = register_module("cpe2", std::make_unique<DWConv2d>(C, 3));
  norm2 = wrap_ln("norm2", &norm2_ln);
  ffn = register_module("ffn", std::make_unique<NalaFFN>(C, (int64_t)(mlp_ratio * C)));
  drop_path = register_module("drop_path", std::make_unique<DropPath>(dp, rng));
}

Tensor NalaBlock::forward(const Tensor& x0) {
  const int64_t H = x0.size(1), W = x0.size(2), C = x0.size(3);
  // LayerScale, drop path and the residual add join the last product's store
  // of the attention and the FFN (linear_scale_add: the bits of mul, drop_path
  // and add). The drop-path masks are drawn in the order the separate ops
  // would draw them (nothing between draws from the Rng).
  auto residual = [&](const Tensor& x, const Tensor& gamma) {
    ScaledResidual r{x, reshape(gamma, {C}), Tensor()};
    if (drop_path->active()) r.sample_mask = drop_path->mask(x.size(0), x.device());
    return r;
  };
  // In bf16 mode the LayerNorms store their results in bf16: the products
  // after them round their inputs to bf16 anyway; half the bytes to write
  // and to save. The residual stream stays float32.
  const DType act = bf16_mode(x0) ? DType::BF16 : DType::F32;
  Tensor x = cpe1->forward_add(x0, x0);  // x0 + cpe1(x0)
  const ScaledResidual r1 = residual(x, gamma_1);
  x = attn->forward_hw(norm1_ln->forward(x, act), H, W, &r1);
  x = cpe2->forward_add(x, x);  // x + cpe2(x)
  const ScaledResidual r2 = residual(x, gamma_2);
  return ffn->forward(norm2_ln->forward(x, act), &r2);
}

// ---- network ------------------------------------------------------------------

NalaFormer::NalaFormer(const NalaConfig& c, uint64_t seed) : Module("NalaFormer"), cfg(c), rng(seed) {
  const int64_t S = cfg.num_stages();
  NALA_CHECK(S >= 1 && (int64_t)cfg.depths.size() == S && (int64_t)cfg.heads.size() == S &&
                 (int64_t)cfg.layer_init.size() == S && (int64_t)cfg.nala_stage.size() == S,
             "NalaFormer: inconsistent config: ", cfg.describe());
  const int64_t C0 = cfg.dims[0], half = C0 / 2;
  auto* patch_embed = register_module("patch_embed", std::make_unique<Container>("PatchEmbed"));
  stem = patch_embed->add("proj", std::make_unique<Sequential>());
  stem->push(std::make_unique<Conv2d>(cfg.in_chans, half, 3, cfg.stem_stride_first, 1));  // 0
  stem->push(std::make_unique<BatchNorm>(half));                                          // 1
  stem->push(std::make_unique<GELU>());                                                   // 2
  stem->push(std::make_unique<Conv2d>(half, half, 3, 1, 1));                             // 3
  stem->push(std::make_unique<BatchNorm>(half));                                          // 4
  stem->push(std::make_unique<GELU>());                                                   // 5
  stem->push(std::make_unique<Conv2d>(half, half, 3, 1, 1));                             // 6
  stem->push(std::make_unique<BatchNorm>(half));                                          // 7
  stem->push(std::make_unique<GELU>());                                                   // 8
  stem->push(std::make_unique<Conv2d>(half, C0, 3, cfg.stem_stride_last, 1));             // 9
  stem->push(std::make_unique<BatchNorm>(C0));                                            // 10

  int64_t total = 0, idx = 0;
  for (int64_t d : cfg.depths) total += d;
  auto* layers = register_module("layers", std::make_unique<Container>("ModuleList"));
  for (int64_t s = 0; s < S; s++) {
    auto* layer = layers->add(std::to_string(s), std::make_unique<Container>("BasicLayer"));
    auto* bl = layer->add("blocks", std::make_unique<Sequential>());
    for (int64_t j = 0; j < cfg.depths[s]; j++, idx++) {
      float dp = total > 1 ? cfg.drop_path_rate * (float)idx / (float)(total - 1) : 0.0f;
      bl->push(std::make_unique<NalaBlock>(cfg.dims[s], cfg.heads[s], cfg.mlp_ratio, cfg.layer_init[s], dp,
                                           cfg.stage_attn(s), &rng));
    }
    blocks.push_back(bl);
    if (s + 1 < S) {
      auto* ds = layer->add("downsample", std::make_unique<Container>("PatchMerging"));
      down_conv.push_back(ds->add("reduction", std::make_unique<Conv2d>(cfg.dims[s], cfg.dims[s + 1], 3, 2, 1)));
      down_bn.push_back(ds->add("norm", std::make_unique<BatchNorm>(cfg.dims[s + 1])));
    }
  }
  proj = register_module("proj", std::make_unique<Linear>(cfg.dims[S - 1], cfg.head_width));
  norm = register_module("norm", std::make_unique<BatchNorm>(cfg.head_width));
  head = register_module("head", std::make_unique<Conv2d>(cfg.head_width, cfg.num_classes, 1, 1, 0));
}

// Inference in bf16 mode on the GPU: each convolution of the stem and the
// merges takes the BatchNorm (eval mode) and the GELU after it into its store
// (conv2d_affine): no pass of their own over the stem's widest activations.
// Elsewhere (training, float32, the CPU) the modules one by one.
bool NalaFormer::fused_eval_convs(const Tensor& images) const {
  if (is_training() || !bf16_mode(images)) return false;
  if (!grad_enabled()) return true;
  for (const Tensor& p : parameters())
    if (p.requires_grad()) return false;
  return !images.requires_grad();
}

namespace {
Tensor conv_bn(Conv2d* conv, BatchNorm* bn, const Tensor& x, bool gelu_after) {
  const auto [scale, shift] = bn->eval_affine();
  return conv2d_affine(x, conv->weight, conv->bias, scale, shift, gelu_after, conv->stride, conv->pad);
}
}  // namespace

Tensor NalaFormer::forward(const Tensor& images) {
  NALA_CHECK(images.dim() == 4 && images.size(3) == cfg.in_chans, "NalaFormer(", cfg.name, "): expected images (B, H, W, ",
             cfg.in_chans, "), got ", images.desc());
  const bool fused = fused_eval_convs(images);
  Tensor x;
  if (fused) {  // (conv, BatchNorm, GELU) x 3, then (conv, BatchNorm): indices 0 .. 10 of patch_embed.proj
    auto conv = [&](size_t i) { return static_cast<Conv2d*>((*stem)[i]); };
    auto bn = [&](size_t i) { return static_cast<BatchNorm*>((*stem)[i]); };
    x = images;
    for (size_t i = 0; i < 9; i += 3) x = conv_bn(conv(i), bn(i + 1), x, true);
    x = conv_bn(conv(9), bn(10), x, false);
  } else {
    x = stem->forward(images);  // (B, H, W, C0)
  }
  for (int64_t s = 0; s < cfg.num_stages(); s++) {
    x = blocks[s]->forward(x);
    if (s + 1 < cfg.num_stages())
      x = fused ? conv_bn(down_conv[s], down_bn[s], x, false) : down_bn[s]->forward(down_conv[s]->forward(x));
  }
  const int64_t B = x.size(0);
  Tensor t = reshape(x, {B, -1, x.size(3)});            // (B, N, C)
  t = silu(norm->forward(proj->forward(t)));            // (B, N, P)
  Tensor pooled = global_avg_pool(t);                   // (B, P)
  Tensor w = reshape(head->weight, {cfg.num_classes, cfg.head_width});
  return linear(pooled, w, head->bias);                 // (B, classes)
}

void NalaFormer::init_weights(Rng& init_rng) {
  init_module_default(*this, init_rng);
  for (int64_t s = 0; s < cfg.num_stages(); s++)
    for (size_t j = 0; j < blocks[s]->size(); j++) {
      auto* b = static_cast<NalaBlock*>((*blocks[s])[j]);
      b->gamma_1.fill_(cfg.layer_init[s]);
      b->gamma_2.fill_(cfg.layer_init[s]);
    }
}

}  // namespace nala
