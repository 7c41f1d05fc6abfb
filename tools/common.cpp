// tools/common.cpp - see common.h.
#include "tools/common.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "nn/files.h"
#include "tensor/device.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace nala {

void add_data_options(ArgParser& p, DataSpec& d) {
  p.add_choice("data", &d.name, "dataset", {"fashion-mnist", "cifar10", "folder"});
  p.add_string("data-dir", &d.dir, "dataset directory (folder: root with one subfolder per class)");
  p.add_int("img-size", &d.img_size,
            "image size: folders are resized to it (default 224), fashion-mnist and cifar10 too when given", 0, 4096);
  p.add_int("channels", &d.channels, "folders: 1 (grey) or 3 (RGB)", 0, 3);
  p.add_flag("skip-bad", &d.skip_bad, "folders: skip unreadable images and report how many");
  p.add_float("val-split", &d.val_split,
              "folders without val/: hold out this fraction of each class for evaluation (same images every time)",
              0, 0.9);
}

Dataset load_dataset(const DataSpec& d, bool train, int64_t keep) {
  if (d.val_split > 0 && d.name != "folder")
    throw UsageError("--val-split is for --data folder; " + d.name + " has its own test split");
  Dataset ds;
  if (d.name == "fashion-mnist") {
    ds = load_fashion_mnist(d.dir.empty() ? kFashionMnistDir : d.dir, train);
  } else if (d.name == "cifar10") {
    if (d.dir.empty()) throw UsageError("--data cifar10 needs --data-dir (the folder of the binary batches)");
    ds = load_cifar10(d.dir, train);
  } else {
    if (d.dir.empty()) throw UsageError("--data folder needs --data-dir");
    if (d.channels == 2) throw UsageError("--channels must be 1 or 3");
    FolderOptions fo;
    fo.img_size = d.img_size ? (int)d.img_size : 224;
    fo.channels = d.channels ? (int)d.channels : 3;
    fo.skip_bad = d.skip_bad;
    ds = load_folder_split(d.dir, train, fo, d.val_split);
    if (ds.skipped) std::fprintf(stderr, "nala: skipped %lld unreadable images under %s\n", (long long)ds.skipped,
                                 ds.name.c_str());
  }
  ds.truncate(keep);
  if (d.img_size && d.name != "folder") resize_dataset(ds, (int)d.img_size);  // 28 or 32 px sets at another size
  return ds;
}

void data_as_trained(DataSpec& d, const ModelFile& mf, const std::string& weights) {
  const int64_t chans = mf.config.in_chans;
  if (d.name == "folder") {
    if (d.channels && d.channels != chans)
      throw UsageError("--channels " + std::to_string(d.channels) + ": " + weights + " takes " +
                       std::to_string(chans) + "-channel images");
    d.channels = chans;
  }
  if (!mf.has_input()) return;
  if (d.img_size && d.img_size != mf.height)
    throw UsageError("--img-size " + std::to_string(d.img_size) + ": " + weights + " was trained on " +
                     std::to_string(mf.height) + "x" + std::to_string(mf.width) +
                     " images (nala.input.height/width); leave --img-size out");
  NALA_CHECK(mf.height == mf.width, weights, ": trained on ", mf.height, "x", mf.width,
             " images; datasets are resized to squares");
  d.img_size = mf.height;
}

NalaConfig model_config_for(const std::string& model, int64_t in_chans, int64_t classes) {
  try {
    return nalaformer_config(model, in_chans, classes);
  } catch (const Error&) {
    throw UsageError("--model: unknown model '" + model + "' (known: xt, t, s, b, l, pico)");
  }
}

void add_attn_options(ArgParser& p, AttnOptions& a, bool stages, bool weights) {
  p.add_choice("attn", &a.attn,
               weights ? "attention kind the weights must have been trained with (default: the file's; nala for files "
                         "without metadata)"
                       : "attention kind of the linear stages (softmax: every stage softmax)",
               attn_kind_names());
  if (stages)
    p.add_string("nala-stages", &a.stages,
                 "stages that use the --attn kind, the others softmax: indices from 0 (\"0,1\", the release's), "
                 "\"all\" or \"none\"");
}

void apply_attn_options(const AttnOptions& a, NalaConfig& cfg) {
  if (!a.attn.empty()) cfg.attn = parse_attn_kind(a.attn);
  if (a.stages.empty()) return;
  if (cfg.attn == AttnKind::softmax)
    throw UsageError("--nala-stages with --attn softmax: softmax attention is every stage's already");
  const int64_t S = cfg.num_stages();
  std::vector<bool> use(S, a.stages == "all");
  if (a.stages != "all" && a.stages != "none") {
    for (const std::string& item : split_list(a.stages)) {
      char* end = nullptr;
      const long v = item.empty() ? -1 : std::strtol(item.c_str(), &end, 10);
      if (item.empty() || *end != '\0' || v < 0 || v >= S)
        throw UsageError("--nala-stages \"" + a.stages + "\": \"" + item + "\" is not a stage of " + cfg.name +
                         " (0 to " + std::to_string(S - 1) + ")");
      if (use[v]) throw UsageError("--nala-stages \"" + a.stages + "\": stage " + item + " named twice");
      use[v] = true;
    }
  }
  cfg.nala_stage = use;
}

void check_image_size(const NalaConfig& cfg, int64_t h, int64_t w) {
  try {
    cfg.check_input_size(h, w);
  } catch (const Error&) {
    throw UsageError("image size " + std::to_string(h) + "x" + std::to_string(w) + " is too small for " + cfg.name);
  }
}

bool g_check_args_only = false;

// The rule: weights and their gradients (2 x 4 bytes per parameter), the
// optimiser state (4 bytes per slot per parameter), and per image what the
// autograd tape keeps for backward. Per token of a stage of width C that is
// about (25 + 4 x mlp ratio) x C floats per block (the op outputs of
// NalaBlock::forward: ~25 of width C, 4 of the MLP width), plus 2 x heads x N
// floats per token for the scores of softmax-attention stages; the stem keeps
// ~10 maps of width C0/2 at half resolution and the head ~4 of width P. The
// sum is scaled by 1.2 for the gradients in flight during backward and the
// allocator's slack. Calibrated on the slope of peak RSS over batch size
// (28x28 Fashion-MNIST, 2 threads): pico measured 4.1 MB per image (estimate
// 4.4), xt 1.6 MB (estimate 1.5). The data set itself and the evaluation
// batches are not counted; the check refuses only batches whose estimate
// exceeds the whole physical memory, so it errs on the side of trying.
TrainMemory estimate_train_memory(const NalaConfig& cfg, int64_t num_params, int optimizer_slots, int64_t h,
                                  int64_t w, int64_t batch) {
  const double kBlockFloats = 25, kBackward = 1.2;
  TrainMemory m;
  m.weights = 2 * 4 * num_params;
  m.optimizer = 4 * (int64_t)optimizer_slots * num_params;
  double floats = 0;
  const int64_t half_h = (h + 1) / 2, half_w = (w + 1) / 2, C0 = cfg.dims[0];
  floats += 10.0 * half_h * half_w * (C0 / 2) + 2.0 * cfg.stage_grid(0, h, w).first * cfg.stage_grid(0, h, w).second * C0;
  for (int64_t s = 0; s < cfg.num_stages(); s++) {
    auto g = cfg.stage_grid(s, h, w);
    const double N = (double)g.first * g.second, C = (double)cfg.dims[s];
    double per_token = (kBlockFloats + 4 * cfg.mlp_ratio) * C;
    const AttnKind kind = cfg.stage_attn(s);
    if (kind == AttnKind::softmax) per_token += 2.0 * cfg.heads[s] * N;  // scores and probabilities
    // The kinds composed from ops keep their feature maps' intermediates for
    // backward (nala-paper about 30 C per token, the others fewer).
    else if (kind != AttnKind::nala) per_token += 30.0 * C;
    floats += cfg.depths[s] * N * per_token;
    if (s + 1 < cfg.num_stages()) floats += 2.0 * N / 4 * cfg.dims[s + 1];  // downsample conv + BN
  }
  auto last = cfg.stage_grid(cfg.num_stages() - 1, h, w);
  floats += 4.0 * last.first * last.second * cfg.head_width;  // proj, BN, SiLU, pooling
  m.per_image = (int64_t)(kBackward * 4 * floats);
  m.batch = batch;
  return m;
}

int64_t physical_memory_bytes() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  int64_t bytes = pages > 0 && page > 0 ? (int64_t)pages * page : 0;
  // A container's limit (cgroup v2, then v1) is what the kernel enforces.
  // These are kernel pseudo-files (their reported size means nothing), read
  // through nn/files.h's read_system_file; absent or unreadable means no limit.
  for (const char* f : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::string text;
    if (!read_system_file(f, &text, 256)) continue;
    char* end = nullptr;
    const long long lim = std::strtoll(text.c_str(), &end, 10);
    if (end == text.c_str()) continue;  // "max": no limit
    if (lim > 0 && (bytes == 0 || lim < bytes)) bytes = lim;
  }
  return bytes;
}

std::string human_bytes(int64_t b) {
  char buf[48];
  const double x = (double)b;
  if (b >= (1LL << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", x / (1LL << 30));
  else if (b >= (1LL << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", x / (1LL << 20));
  else if (b >= (1LL << 10)) std::snprintf(buf, sizeof buf, "%.1f KiB", x / (1LL << 10));
  else std::snprintf(buf, sizeof buf, "%lld bytes", (long long)b);
  return buf;
}

void check_train_memory(const TrainMemory& m, int64_t available) {
  if (available <= 0 || m.total() <= available) return;
  const int64_t fit = m.per_image > 0 ? (available - m.weights - m.optimizer) / m.per_image : 0;
  throw UsageError("--batch-size " + std::to_string(m.batch) + " does not fit in memory: training needs about " +
                   human_bytes(m.total()) + " (weights and gradients " + human_bytes(m.weights) +
                   ", optimiser state " + human_bytes(m.optimizer) + ", activations " + human_bytes(m.per_image) +
                   " per image), this machine has " + human_bytes(available) +
                   (fit >= 1 ? "; the largest batch that fits is about " + std::to_string(fit)
                             : "; not even a batch of one image fits"));
}

void set_threads(int64_t threads) {
#ifdef _OPENMP
  // Capped at the cores this process may use: OpenMP with more threads than
  // cores spends its time switching (--threads 4096 on 2 cores: 20x slower).
  if (threads > 0) omp_set_num_threads((int)std::min<int64_t>(threads, omp_get_num_procs()));
#else
  (void)threads;
#endif
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  NALA_CHECK(name == "cuda", "unknown device '", name, "' (cpu or cuda)");
  NALA_CHECK(device::cuda_built(), "--device cuda: this build has no CUDA support (rebuild with CUDA=1)");
  NALA_CHECK(device::cuda_available(), "--device cuda: no CUDA device found");
  return Device::CUDA;
}

void add_precision_option(ArgParser& p, std::string* precision) {
  p.add_choice("precision", precision,
               "GPU matrix products (linear layers, convolutions): fp32, or bf16 on tensor cores with float32 "
               "accumulation (weights, activations and the optimiser stay float32)",
               {"fp32", "bf16"});
}

void apply_precision(const std::string& precision, const std::string& device) {
  if (precision == "bf16" && device != "cuda")
    throw UsageError("--precision bf16 needs --device cuda (the CPU computes in float32)");
  device::set_gemm_bf16(precision == "bf16");
}

}  // namespace nala
