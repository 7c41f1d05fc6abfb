// models/weights.cpp
#include "models/weights.h"

#include <map>
#include <regex>

#include "nn/safetensors.h"

namespace nala {

void load_weights(NalaFormer& model, const std::string& path, bool strict) {
  SafeTensors st = load_safetensors(path);
  bool checkpoint = false;
  for (auto& [k, t] : st.tensors)
    if (k.rfind("model.", 0) == 0) checkpoint = true;
  static const std::regex rope_key(R"(layers\.\d+\.RoPE\.angle)");
  std::map<std::string, Tensor> sd;
  for (auto& [k, t] : st.tensors) {
    std::string key = k;
    if (checkpoint) {
      if (key.rfind("model.", 0) != 0) continue;  // optimiser state etc.
      key = key.substr(6);
    }
    if (std::regex_match(key, rope_key)) continue;
    sd[key] = t;
  }
  try {
    model.load_state_dict(sd, strict);
  } catch (const Error& e) {
    NALA_FAIL(path, ": not a checkpoint of ", model.cfg.name, " (", model.cfg.in_chans, " channels, ",
              model.cfg.num_classes, " classes): ", e.what());
  }
}

void save_weights(const NalaFormer& model, const std::string& path) {
  save_safetensors(path, model.state_dict(), {{"nala.config", model.cfg.describe()}});
}

}  // namespace nala
