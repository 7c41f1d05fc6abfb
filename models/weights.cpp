// models/weights.cpp
#include "models/weights.h"

#include <cmath>
#include <map>
#include <regex>

#include "models/model_file.h"

namespace nala {

void check_finite(const Tensor& t, const std::string& name, const std::string& path, const std::string& why) {
  if (t.dtype() != DType::F32) return;
  const float* p = t.f32();
  const int64_t n = t.numel();
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; i++)
    if (!std::isfinite(p[i])) {
      if (first < 0) first = i;
      bad++;
    }
  if (!bad) return;
  NALA_FAIL(path, ": tensor \"", name, "\" holds ", bad, " non-finite value", bad == 1 ? "" : "s", " (",
            std::isnan(p[first]) ? "NaN" : p[first] > 0 ? "Inf" : "-Inf", " at index ", first, " of ", n,
            "): ", why);
}

void load_weights(NalaFormer& model, const SafeTensors& st, const std::string& path, bool strict) {
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
    check_finite(t, k, path);
    sd[key] = t;
  }
  try {
    model.load_state_dict(sd, strict);
  } catch (const Error& e) {
    NALA_FAIL(path, ": not a checkpoint of ", model.cfg.name, " (", model.cfg.in_chans, " channels, ",
              model.cfg.num_classes, " classes): ", e.what());
  }
}

void load_weights(NalaFormer& model, const std::string& path, bool strict) {
  load_weights(model, load_safetensors(path), path, strict);
}

void save_weights(const NalaFormer& model, const std::string& path) {
  ModelFile mf;
  mf.config = model.cfg;
  save_safetensors(path, model.state_dict(), model_file_metadata(mf));
}

}  // namespace nala
