// tools/cmd_model.cpp - `nala info` (layer table: output shape, parameters,
// FLOPs), `nala forward` (eval logits of an input file) and `nala grad`
// (train-mode loss and every parameter gradient), the last two for checking
// the engine against another implementation.
#include <cstdio>
#include <new>

#include "autograd/ops.h"
#include "models/model_file.h"
#include "models/train/evaluate.h"
#include "models/train/step.h"
#include "models/weights.h"
#include "nn/files.h"
#include "nn/safetensors.h"
#include "tools/common.h"

namespace nala {

namespace {

struct Row {
  std::string name, type;
  Shape out;
  int64_t params;
  double flops;  // multiply-adds count 2
};

int64_t own_params(const Module* m) {
  int64_t n = 0;
  for (auto& [k, t] : m->named_parameters()) n += t.numel();
  return n;
}

// Walk the network for a (1, H, W, Cin) input, one row per layer.
std::vector<Row> summary(NalaFormer& m, int64_t H, int64_t W) {
  const NalaConfig& c = m.cfg;
  std::vector<Row> rows;
  int64_t h = H, w = W, C = c.in_chans;
  auto conv_row = [&](const std::string& name, Conv2d* cv) {
    h = (h + 2 * cv->pad - cv->k) / cv->stride + 1;
    w = (w + 2 * cv->pad - cv->k) / cv->stride + 1;
    C = cv->cout;
    rows.push_back({name, "Conv2d " + std::to_string(cv->k) + "x" + std::to_string(cv->k) + " s" +
                              std::to_string(cv->stride), {1, h, w, C}, own_params(cv),
                    2.0 * h * w * C * cv->cin * cv->k * cv->k});
  };
  auto simple = [&](const std::string& name, const std::string& type, Module* mod, double flops_per) {
    rows.push_back({name, type, {1, h, w, C}, mod ? own_params(mod) : 0, flops_per * h * w * C});
  };
  for (size_t i = 0; i < m.stem->size(); i++) {
    Module* mod = (*m.stem)[i];
    std::string name = "patch_embed.proj." + std::to_string(i);
    if (auto* cv = dynamic_cast<Conv2d*>(mod)) conv_row(name, cv);
    else simple(name, mod->type(), mod, mod->type() == "GELU" ? 8 : 4);
  }
  for (int64_t s = 0; s < c.num_stages(); s++) {
    const int64_t heads = c.heads[s], d = C / heads, N = h * w;
    for (size_t j = 0; j < m.blocks[s]->size(); j++) {
      auto* b = static_cast<NalaBlock*>((*m.blocks[s])[j]);
      std::string pre = "layers." + std::to_string(s) + ".blocks." + std::to_string(j) + ".";
      simple(pre + "cpe1", "DWConv2d 3x3", b->cpe1, 2 * 9);
      simple(pre + "norm1", "LayerNorm", b->norm1, 8);
      rows.push_back({pre + "attn.qkvg", "Linear", {1, N, 4 * C}, own_params(b->attn->qkvg), 2.0 * N * C * 4 * C});
      simple(pre + "attn.lepe", "DWConv2d 5x5", b->attn->lepe, 2 * 25);
      const AttnKind kind = b->attn->kind;
      const bool linear = attn_kind_is_linear(kind);
      const double F = kind == AttnKind::nala || kind == AttnKind::nala_paper ? 2.0 * d : (double)d;  // feature width
      double core = linear ? heads * (2.0 * N * F * d * 2 + 30.0 * N * d)  // S, rq S, features
                           : heads * (4.0 * N * N * d + 5.0 * N * N);      // QK^T, PV, softmax
      const std::string what = kind == AttnKind::nala ? "NaLa attention"
                               : linear ? std::string("linear attention (") + attn_kind_name(kind) + ")"
                                        : "softmax attention";
      rows.push_back({pre + "attn.core", what, {1, heads, N, d}, 0, core});
      simple(pre + "attn.ln", "LayerNorm * SiLU(g)", b->attn->ln, 12);
      rows.push_back({pre + "attn.out_proj", "Linear", {1, N, C}, own_params(b->attn->out_proj), 2.0 * N * C * C});
      simple(pre + "cpe2", "DWConv2d 3x3", b->cpe2, 2 * 9);
      simple(pre + "norm2", "LayerNorm", b->norm2, 8);
      const int64_t Hd = b->ffn->fc1->out_features;
      rows.push_back({pre + "ffn.fc1", "Linear + GELU", {1, h, w, Hd}, own_params(b->ffn->fc1), 2.0 * N * C * Hd});
      rows.push_back({pre + "ffn.dwconv", "DWConv2d 3x3", {1, h, w, Hd}, own_params(b->ffn->dwconv), 18.0 * N * Hd});
      rows.push_back({pre + "ffn.fc2", "Linear", {1, h, w, C}, own_params(b->ffn->fc2), 2.0 * N * Hd * C});
      rows.push_back({pre + "gamma", "LayerScale x2", {1, h, w, C}, b->gamma_1.numel() + b->gamma_2.numel(), 4.0 * N * C});
    }
    if (s + 1 < c.num_stages()) {
      std::string pre = "layers." + std::to_string(s) + ".downsample.";
      conv_row(pre + "reduction", m.down_conv[s]);
      simple(pre + "norm", "BatchNorm", m.down_bn[s], 4);
    }
  }
  const int64_t N = h * w, P = c.head_width;
  rows.push_back({"proj", "Linear", {1, N, P}, own_params(m.proj), 2.0 * N * C * P});
  rows.push_back({"norm", "BatchNorm + SiLU", {1, N, P}, own_params(m.norm), 8.0 * N * P});
  rows.push_back({"pool", "global average pool", {1, P}, 0, (double)N * P});
  rows.push_back({"head", "Conv2d 1x1", {1, c.num_classes}, own_params(m.head), 2.0 * P * c.num_classes});
  return rows;
}

std::string human(double v) {
  char buf[32];
  if (v >= 1e9) std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
  else if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.1fK", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

struct ModelArgs {
  std::string model, weights, input, output, device = "cpu";  // model: "" = the weights file's (info: pico)
  AttnOptions attn;
  int64_t in_chans = 0, classes = 0, threads = 0;
};

void add_model_args(ArgParser& p, ModelArgs& a, bool io) {
  // With weights, the file (or its shapes, with --model) decides; the options only check it.
  p.add_choice("model", &a.model, io ? "model config (default: the one the weights file records)" : "model config (default: pico)",
               nalaformer_config_names());
  p.add_int("in-chans", &a.in_chans, io ? "input channels (checked against the weights')" : "input channels (default: the config's)",
            0, 1024);
  p.add_int("classes", &a.classes, io ? "classes (checked against the weights')" : "classes (default: the config's)", 0,
            1 << 20);
  p.add_int("threads", &a.threads, "CPU threads (0 = all)", 0, 4096);
  add_attn_options(p, a.attn, !io, io);
  if (!io) return;
  p.add_string("weights", &a.weights, "weights (.safetensors)");
  p.add_string("input", &a.input, "input .safetensors holding f32 `input` (B, C, H, W)");
  p.add_string("output", &a.output, "output .safetensors");
  p.add_choice("device", &a.device, "where to run", {"cpu", "cuda"});
}

// Builds the model the weights file describes (or --model names), loads the
// weights and reads the NCHW input as NHWC.
Tensor prepare(ModelArgs& a, std::unique_ptr<NalaFormer>& model, SafeTensors& in, float drop_path) {
  if (a.weights.empty() || a.input.empty() || a.output.empty())
    throw UsageError("--weights, --input and --output are required");
  check_output_path(a.output, "output");  // before any work: a device, FIFO or symlink there is refused
  for (const std::string* in : {&a.weights, &a.input})
    if (same_file(a.output, *in))
      throw UsageError("--output " + a.output + " is the same file as --" + (in == &a.weights ? "weights " : "input ") +
                       *in + ": it would be replaced");
  set_threads(a.threads);
  SafeTensors st = load_safetensors(a.weights);
  ModelFile mf = describe_model_file(st, a.weights, a.model, a.attn.attn);
  NalaConfig cfg = mf.config;
  if (a.in_chans && a.in_chans != cfg.in_chans)
    throw UsageError("--in-chans " + std::to_string(a.in_chans) + ": " + a.weights + " takes " +
                     std::to_string(cfg.in_chans) + " channels");
  if (a.classes && a.classes != cfg.num_classes)
    throw UsageError("--classes " + std::to_string(a.classes) + ": " + a.weights + " has " +
                     std::to_string(cfg.num_classes) + " classes");
  cfg.drop_path_rate = drop_path;
  in = load_safetensors(a.input);
  NALA_CHECK(in.tensors.count("input"), a.input, ": no tensor named 'input'");
  Tensor x = in.tensors.at("input");
  NALA_CHECK(x.dtype() == DType::F32 && x.dim() == 4 && x.size(1) == cfg.in_chans, a.input,
             ": 'input' must be f32 (B, ", cfg.in_chans, ", H, W), got ", x.desc());
  NALA_CHECK(x.size(0) >= 1, a.input, ": 'input' holds a batch of 0 images (", x.desc(),
             "): there is nothing to compute; B must be at least 1");
  check_image_size(cfg, x.size(2), x.size(3));
  check_finite(x, "input", a.input, "an input that is not finite gives NaN outputs");
  model = std::make_unique<NalaFormer>(cfg);
  load_weights(*model, st, a.weights);
  Device dev = parse_device(a.device);
  model->to(dev);
  return view::contiguous(view::permute(x, {0, 2, 3, 1})).to(dev);
}

}  // namespace

int cmd_info(int argc, char** argv) {
  ModelArgs a;
  int64_t img = 0;
  ArgParser p("info", "a table of every layer: output shape, parameters and FLOPs for one image");
  add_model_args(p, a, false);
  p.add_int("img-size", &img, "input size (default: 28 for pico, 224 otherwise)", 0, 8192);
  p.parse(argc, argv);
  NalaConfig cfg = model_config_for(a.model.empty() ? "pico" : a.model, a.in_chans ? a.in_chans : -1,
                                    a.classes ? a.classes : -1);
  apply_attn_options(a.attn, cfg);
  if (!img) img = cfg.name == "pico" ? 28 : 224;
  check_image_size(cfg, img, img);
  NalaFormer m(cfg);
  std::vector<Row> rows = summary(m, img, img);
  std::printf("%s\ninput (1, %lld, %lld, %lld) channels-last\n\n", cfg.describe().c_str(), (long long)img,
              (long long)img, (long long)cfg.in_chans);
  std::printf("%-36s %-22s %-22s %10s %10s\n", "layer", "type", "output", "params", "FLOPs");
  double tp = 0, tf = 0;
  for (auto& r : rows) {
    std::printf("%-36s %-22s %-22s %10s %10s\n", r.name.c_str(), r.type.c_str(), shape_str(r.out).c_str(),
                human((double)r.params).c_str(), human(r.flops).c_str());
    tp += r.params, tf += r.flops;
  }
  std::printf("\ntotal: %lld parameters (%s), %s FLOPs per image (forward)\n", (long long)m.num_parameters(),
              human(tp).c_str(), human(tf).c_str());
  NALA_CHECK((int64_t)tp == m.num_parameters(), "info: the layer table misses parameters");
  return 0;
}

int cmd_forward(int argc, char** argv) {
  ModelArgs a;
  ArgParser p("forward", "eval-mode logits of the f32 NCHW tensor `input`, written as `logits`");
  add_model_args(p, a, true);
  p.parse(argc, argv);
  std::unique_ptr<NalaFormer> model;
  SafeTensors in;
  Tensor x = prepare(a, model, in, 0.0f);
  Tensor logits;
  try {
    logits = eval_logits(*model, x);
  } catch (const std::bad_alloc&) {
    NALA_FAIL("out of memory while computing the logits of ", a.input, "'s ", x.size(0), " images of ", x.size(1),
              "x", x.size(2), "x", x.size(3), " (H x W x C); split the batch");
  }
  save_safetensors(a.output, {{"logits", logits}});
  std::printf("wrote logits %s to %s\n", shape_str(logits.shape()).c_str(), a.output.c_str());
  return 0;
}

int cmd_grad(int argc, char** argv) {
  ModelArgs a;
  ArgParser p("grad", "train-mode mean cross-entropy against `labels` and every parameter's gradient");
  add_model_args(p, a, true);
  p.parse(argc, argv);
  std::unique_ptr<NalaFormer> model;
  SafeTensors in;
  Tensor x = prepare(a, model, in, 0.0f);  // drop-path off
  NALA_CHECK(in.tensors.count("labels"), a.input, ": no tensor named 'labels'");
  Tensor labels = in.tensors.at("labels").to(x.device());
  NALA_CHECK(labels.dtype() == DType::I64 && labels.dim() == 1 && labels.size(0) == x.size(0), a.input,
             ": 'labels' must be i64 (", x.size(0), "), got ", labels.desc());
  model->train();
  Tensor loss;
  try {
    loss = forward_backward(*model, x, labels).loss;
  } catch (const std::bad_alloc&) {
    NALA_FAIL("out of memory while computing the gradients for ", a.input, "'s ", x.size(0), " images of ",
              x.size(1), "x", x.size(2), "x", x.size(3), " (H x W x C); split the batch");
  }
  NamedTensors out{{"loss", reshape(loss.detach(), {1})}};
  for (auto& [name, t] : model->named_parameters())
    out.push_back({"grad." + name, t.grad().defined() ? t.grad() : Tensor::zeros(t.shape())});
  save_safetensors(a.output, out);
  std::printf("loss %.6f; wrote %zu gradients to %s\n", loss.item(), out.size() - 1, a.output.c_str());
  return 0;
}

}  // namespace nala
