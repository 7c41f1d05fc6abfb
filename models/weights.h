// models/weights.h - NaLaFormer weights on disk (safetensors, release key names).
//
// load_weights accepts a plain state_dict file (as PyTorch's release or
// `nala train`'s best.safetensors write it) or a training checkpoint (keys
// prefixed "model."). `layers.<i>.RoPE.angle` may be present or absent (it is
// derived, never learned); num_batches_tracked may be i64 or f32. Strict by
// default: every missing key, unexpected key and shape mismatch is reported
// by name, with the file's path, in one error.
#pragma once
#include <string>

#include "models/nalaformer.h"

namespace nala {

void load_weights(NalaFormer& model, const std::string& path, bool strict = true);
void save_weights(const NalaFormer& model, const std::string& path);  // atomic

}  // namespace nala
