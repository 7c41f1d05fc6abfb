// models/model_file.h - a self-describing model file: besides the weights, a
// safetensors file written by nala carries in its metadata what a program
// needs to use them: the config (enough to rebuild the network), the class
// names, and how input images are prepared (size, channels, per-channel mean
// and std). load_model builds the network from such a file; a file without
// this metadata (the release's, PyTorch's) loads with a named config, the
// input channels and classes read from the weights' shapes.
//
// Metadata keys (every value a string; lists comma-separated, one per stage):
//   nala.model_file          "1": the version of this layout
//   nala.config              the config on one line (NalaConfig::describe), for people and --resume
//   nala.config.name         xt, t, s, b, l, pico (a name only: the fields below rebuild the network)
//   nala.config.dims         stage widths C                  e.g. 32,64,128
//   nala.config.depths       blocks per stage                e.g. 2,2,2
//   nala.config.heads        attention heads per stage       e.g. 1,2,4
//   nala.config.mlp_ratio    FFN width / C                   e.g. 3
//   nala.config.layer_init   gamma_1/gamma_2 initial value per stage
//   nala.config.drop_path    stochastic depth rate of the last block
//   nala.config.nala_stages  per stage: 1 the linear kind below, 0 softmax attention
//   nala.config.attn         the attention kind (attention_kind.h): nala, nala-paper,
//                            relu, elu1, flatten, softmax; absent in older files: nala
//   nala.config.stem_strides the first and last stem convolutions' strides (2,2 or 2,1)
//   nala.config.head_width   P, the width of the head's projection
//   nala.config.in_chans     input channels
//   nala.config.classes      outputs
//   nala.classes             class names, one per line, in label order (optional)
//   nala.input.height, nala.input.width, nala.input.channels
//   nala.input.mean, nala.input.std
//                            what the network was trained on: image size,
//                            channels, and x -> (x / 255 - mean[c]) / std[c]
//                            (optional, all five or none; std in [1e-6, 1e6],
//                            |mean| <= 1e6, so normalised pixels stay finite)
// A config is checked against the file's tensors before the network is built:
// metadata describing a network larger than the tensors it ships is refused.
// Reading validates every field and names the file and the key in its errors.
// Other "nala.*" keys (a checkpoint's epoch, step, ...) are left to their users.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/nalaformer.h"
#include "nn/safetensors.h"

namespace nala {

using Metadata = std::map<std::string, std::string>;

struct ModelFile {
  NalaConfig config;
  std::vector<std::string> classes;  // config.num_classes names, or empty: not recorded
  std::vector<float> mean, std;      // config.in_chans values each, or empty: not recorded
  int64_t height = 0, width = 0;     // input image size; 0 when mean/std are not recorded
  // true: read from nala metadata; false: the config was named by the caller
  // and its channels and classes read from the weights' shapes.
  bool described = false;

  bool has_input() const { return !mean.empty(); }
};

// The metadata for a model file, plus `extra` (other "nala.*" keys, which must
// not collide with the model's). Checks that mf is consistent (lengths,
// finite values, std in [1e-6, 1e6] and |mean| <= 1e6, no newline in a class name).
Metadata model_file_metadata(const ModelFile& mf, const Metadata& extra = {});
// Does the metadata carry a model description (any nala.model_file,
// nala.config.* or nala.input.* key)?
bool has_model_metadata(const Metadata& m);
// Reads and validates the description; `path` names the file in errors.
ModelFile read_model_metadata(const Metadata& m, const std::string& path);

// The description of a loaded file: from its metadata when it has some (a
// config_name that differs from the recorded one is an error), otherwise the
// config named config_name with the channels and classes of its weights
// (class names from a legacy "nala.classes" key when it lists that many). No
// metadata and no config name is an error. attn: "" takes the file's
// attention kind (nala for a file without metadata); a kind name makes a
// file recorded with another kind an error, and gives a file without
// metadata that kind (the tensors do not tell kinds apart).
ModelFile describe_model_file(const SafeTensors& st, const std::string& path, const std::string& config_name = "",
                              const std::string& attn = "");

// Builds the network the file describes and loads its weights (strict, every
// value finite; see models/weights.h). The model is on the CPU in eval mode.
std::unique_ptr<NalaFormer> load_model(const std::string& path, const std::string& config_name = "",
                                       const std::string& attn = "");
struct LoadedModel {
  std::unique_ptr<NalaFormer> model;
  ModelFile file;
};
LoadedModel load_model_file(const std::string& path, const std::string& config_name = "", const std::string& attn = "");

// Writes the model's weights with mf's metadata (mf.config must be the model's).
void save_model(const NalaFormer& model, const ModelFile& mf, const std::string& path);

}  // namespace nala
