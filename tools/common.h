// tools/common.h - what the nala subcommands share: choosing a dataset by
// name, building a model for it, the memory estimate, the thread count and
// the device. Evaluation, prediction and the training loop are in the
// library (models/train/).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/model_file.h"
#include "models/nalaformer.h"
#include "tools/cli.h"
#include "tools/datasets.h"

namespace nala {

int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_predict(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_forward(int argc, char** argv);
int cmd_grad(int argc, char** argv);
int cmd_sample(int argc, char** argv);
int cmd_plot(int argc, char** argv);
int cmd_analyze(int argc, char** argv);

// Testing aid (tests, fuzzers): when true, `nala train` returns 0 right
// after checking its command line, before reading any file.
extern bool g_check_args_only;

// --data: "fashion-mnist", "cifar10" or "folder"; --data-dir overrides the
// location (fashion-mnist defaults to Debian's /usr/share/datasets/fashion-mnist).
struct DataSpec {
  std::string name = "fashion-mnist";
  std::string dir;
  int64_t img_size = 0;  // folders: resize to this (0 = 224); fixed-size sets: resized when given
  int64_t channels = 0;  // folders: 1 or 3 (0 = 3)
  bool skip_bad = false;
  float val_split = 0;   // folders without val/: the fraction of each class held out (datasets.h)
};
void add_data_options(ArgParser& p, DataSpec& d);
// keep > 0: only the first keep images (--subset), cut before any resizing.
Dataset load_dataset(const DataSpec& d, bool train, int64_t keep = 0);
// The images as a weights file's model was trained on them (eval, analyze):
// its channels (folders) and, when the file records its input size, that
// size for every dataset (a 28 px set is resized to the 56 px a model was
// trained on); a --img-size that disagrees with the file is a usage error,
// a non-square size for a set resized to squares an error naming the file.
void data_as_trained(DataSpec& d, const ModelFile& mf, const std::string& weights);

// Model config from --model plus the dataset's channels and classes.
NalaConfig model_config_for(const std::string& model, int64_t in_chans, int64_t classes);
// --attn KIND and, when `stages`, --nala-stages LIST (docs/SPEC.md §11).
// With a weights file, --attn only checks the file's kind (pass attn to
// load_model_file) and --nala-stages is not offered.
struct AttnOptions {
  std::string attn;    // "" = the default (nala) or the weights file's kind
  std::string stages;  // "" = the config's (0,1); "all", "none" or stage indices "0,2"
};
void add_attn_options(ArgParser& p, AttnOptions& a, bool stages, bool weights);
// Sets cfg.attn and cfg.nala_stage from the options (UsageError on a bad list).
void apply_attn_options(const AttnOptions& a, NalaConfig& cfg);
// Refuses an image size the model cannot take (UsageError).
void check_image_size(const NalaConfig& cfg, int64_t h, int64_t w);

// Memory check before training (see the rule in common.cpp): throws
// UsageError when the estimate for this batch size exceeds the machine's
// memory. optimizer_slots: tensors of state per parameter (AdamW 2, SGD 1).
struct TrainMemory {
  int64_t weights = 0, optimizer = 0, per_image = 0, batch = 0;
  int64_t total() const { return weights + optimizer + per_image * batch; }
};
TrainMemory estimate_train_memory(const NalaConfig& cfg, int64_t num_params, int optimizer_slots, int64_t h,
                                  int64_t w, int64_t batch);
int64_t physical_memory_bytes();  // sysconf, lowered by a cgroup limit when one is set; 0 if unknown
void check_train_memory(const TrainMemory& m, int64_t available_bytes);
std::string human_bytes(int64_t bytes);  // "512 bytes", "3.4 KiB", "5.0 MiB", "8.00 GiB"

void set_threads(int64_t threads);  // 0 = leave OpenMP's default; capped at the cores
// "cpu" or "cuda"; "cuda" fails clearly without a GPU or a CUDA build.
Device parse_device(const std::string& name);

// --precision fp32|bf16: the matrix products' precision on the GPU
// (device::set_gemm_bf16). bf16 with --device cpu is a usage error.
void add_precision_option(ArgParser& p, std::string* precision);
void apply_precision(const std::string& precision, const std::string& device);

}  // namespace nala
