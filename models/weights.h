// models/weights.h - NaLaFormer weights on disk (safetensors, release key names).
//
// load_weights accepts a plain state_dict file (as PyTorch's release or
// `nala train`'s best.safetensors write it) or a training checkpoint (keys
// prefixed "model."). `layers.<i>.RoPE.angle` may be present or absent (it is
// derived, never learned); num_batches_tracked may be i64 or f32. Strict by
// default: every missing key, unexpected key and shape mismatch is reported
// by name, with the file's path, in one error. A tensor holding NaN or Inf is
// refused, naming the tensor and the file, before anything is loaded.
//
// To build the network from a file's own description, see models/model_file.h.
#pragma once
#include <string>

#include "models/nalaformer.h"
#include "nn/safetensors.h"

namespace nala {

void load_weights(NalaFormer& model, const std::string& path, bool strict = true);
// The same from a file already read; `path` names it in errors.
void load_weights(NalaFormer& model, const SafeTensors& st, const std::string& path, bool strict = true);
// Atomic; the metadata describes the config (models/model_file.h), without
// class names or input normalisation (save_model writes those).
void save_weights(const NalaFormer& model, const std::string& path);

// Throws, naming the tensor and `path`, when t (f32) holds a NaN or an Inf;
// `why` ends the message (what the refusal prevents).
void check_finite(const Tensor& t, const std::string& name, const std::string& path,
                  const std::string& why = "refusing weights that would make every output NaN");

}  // namespace nala
