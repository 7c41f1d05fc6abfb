// models/model_file.cpp - model file metadata written and read back, and
// load_model (see model_file.h for the keys).
#include "models/model_file.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "models/weights.h"

namespace nala {

namespace {

const char* const kVersion = "1";
// Normalisation bounds: images are x / 255 in [0, 1] before (x - mean) / std.
constexpr float kMinStd = 1e-6f, kMaxStd = 1e6f, kMaxMean = 1e6f;

// Shortest text that reads back as the same float.
std::string float_str(float v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

template <class T, class F>
std::string join(const std::vector<T>& v, F str) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) s += (i ? "," : "") + str(v[i]);
  return s;
}

std::string int_list(const std::vector<int64_t>& v) {
  return join(v, [](int64_t x) { return std::to_string(x); });
}
std::string float_list(const std::vector<float>& v) { return join(v, float_str); }

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return out;
    start = at + 1;
  }
}

// ---- reading, each value checked; errors name the file and the key ----------

struct Reader {
  const Metadata& m;
  const std::string& path;

  const std::string& get(const std::string& key) const {
    auto it = m.find(key);
    NALA_CHECK(it != m.end(), path, ": model metadata without ", key,
               " (a nala model file records every nala.config.* key)");
    return it->second;
  }
  [[noreturn]] void bad(const std::string& key, const std::string& what) const {
    NALA_FAIL(path, ": metadata ", key, " = \"", get(key), "\": ", what);
  }
  std::vector<std::string> items(const std::string& key) const { return split(get(key), ','); }
  int64_t parse_int(const std::string& key, const std::string& text, int64_t lo, int64_t hi) const {
    int64_t v = 0;
    auto r = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || r.ec != std::errc() || r.ptr != text.data() + text.size()) bad(key, "not an integer");
    if (v < lo || v > hi) bad(key, "out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v;
  }
  float parse_float(const std::string& key, const std::string& text) const {
    // strtof: from_chars for floats is not in every standard library yet.
    char* end = nullptr;
    errno = 0;
    float v = text.empty() || std::isspace((unsigned char)text[0]) ? NAN : std::strtof(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size()) bad(key, "not a number");
    if (!std::isfinite(v)) bad(key, "not a finite number");
    return v;
  }
  int64_t integer(const std::string& key, int64_t lo, int64_t hi) const { return parse_int(key, get(key), lo, hi); }
  float number(const std::string& key) const { return parse_float(key, get(key)); }
  std::vector<int64_t> ints(const std::string& key, size_t n, int64_t lo, int64_t hi) const {
    std::vector<int64_t> v;
    for (auto& t : items(key)) v.push_back(parse_int(key, t, lo, hi));
    if (n && v.size() != n) bad(key, std::to_string(v.size()) + " values, expected " + std::to_string(n));
    return v;
  }
  std::vector<float> floats(const std::string& key, size_t n) const {
    std::vector<float> v;
    for (auto& t : items(key)) v.push_back(parse_float(key, t));
    if (v.size() != n) bad(key, std::to_string(v.size()) + " values, expected " + std::to_string(n));
    return v;
  }
};

const char* const kInputKeys[] = {"nala.input.height", "nala.input.width", "nala.input.channels", "nala.input.mean",
                                  "nala.input.std"};

// The tensor `key` of a plain state_dict or a checkpoint ("model." prefix), or undefined.
Tensor find_tensor(const SafeTensors& st, const std::string& key) {
  for (const char* pre : {"", "model."}) {
    auto it = st.tensors.find(pre + key);
    if (it != st.tensors.end()) return it->second;
  }
  return Tensor();
}

// Values the file holds for the network: a checkpoint's "model.*" tensors, or
// every tensor of a plain state_dict (as load_weights reads them).
double file_state_numel(const SafeTensors& st) {
  bool checkpoint = false;
  for (auto& [k, t] : st.tensors) checkpoint |= k.rfind("model.", 0) == 0;
  double n = 0;
  for (auto& [k, t] : st.tensors)
    if (!checkpoint || k.rfind("model.", 0) == 0) n += (double)t.numel();
  return n;
}

}  // namespace

Metadata model_file_metadata(const ModelFile& mf, const Metadata& extra) {
  const NalaConfig& c = mf.config;
  const int64_t S = c.num_stages();
  NALA_CHECK(S >= 1 && (int64_t)c.depths.size() == S && (int64_t)c.heads.size() == S &&
                 (int64_t)c.layer_init.size() == S && (int64_t)c.nala_stage.size() == S,
             "model file metadata: inconsistent config: ", c.describe());
  NALA_CHECK(mf.classes.empty() || (int64_t)mf.classes.size() == c.num_classes, "model file metadata: ",
             mf.classes.size(), " class names for ", c.num_classes, " classes");
  for (const std::string& n : mf.classes)
    NALA_CHECK(!n.empty() && n.find('\n') == std::string::npos, "model file metadata: class name \"", n,
               "\" is empty or holds a line break");
  Metadata m;
  m["nala.model_file"] = kVersion;
  m["nala.config"] = c.describe();
  m["nala.config.name"] = c.name;
  m["nala.config.dims"] = int_list(c.dims);
  m["nala.config.depths"] = int_list(c.depths);
  m["nala.config.heads"] = int_list(c.heads);
  m["nala.config.mlp_ratio"] = float_str(c.mlp_ratio);
  m["nala.config.layer_init"] = float_list(c.layer_init);
  m["nala.config.drop_path"] = float_str(c.drop_path_rate);
  m["nala.config.nala_stages"] = join(c.nala_stage, [](bool b) { return std::string(b ? "1" : "0"); });
  m["nala.config.attn"] = attn_kind_name(c.attn);
  m["nala.config.stem_strides"] = std::to_string(c.stem_stride_first) + "," + std::to_string(c.stem_stride_last);
  m["nala.config.head_width"] = std::to_string(c.head_width);
  m["nala.config.in_chans"] = std::to_string(c.in_chans);
  m["nala.config.classes"] = std::to_string(c.num_classes);
  if (!mf.classes.empty()) {
    std::string names;
    for (size_t i = 0; i < mf.classes.size(); i++) names += (i ? "\n" : "") + mf.classes[i];
    m["nala.classes"] = names;
  }
  if (mf.has_input()) {
    NALA_CHECK((int64_t)mf.mean.size() == c.in_chans && (int64_t)mf.std.size() == c.in_chans,
               "model file metadata: ", mf.mean.size(), " means and ", mf.std.size(), " stds for ", c.in_chans,
               " input channels");
    for (size_t i = 0; i < mf.mean.size(); i++)
      NALA_CHECK(std::fabs(mf.mean[i]) <= kMaxMean && mf.std[i] >= kMinStd && mf.std[i] <= kMaxStd,
                 "model file metadata: channel ", i, " has mean ", mf.mean[i], " and std ", mf.std[i],
                 " (|mean| <= ", kMaxMean, ", std in [", kMinStd, ", ", kMaxStd, "])");
    NALA_CHECK(mf.height >= 1 && mf.width >= 1, "model file metadata: input size ", mf.height, "x", mf.width);
    m["nala.input.height"] = std::to_string(mf.height);
    m["nala.input.width"] = std::to_string(mf.width);
    m["nala.input.channels"] = std::to_string(c.in_chans);
    m["nala.input.mean"] = float_list(mf.mean);
    m["nala.input.std"] = float_list(mf.std);
  } else {
    NALA_CHECK(mf.std.empty(), "model file metadata: std without mean");
  }
  for (auto& [k, v] : extra) {
    NALA_CHECK(!m.count(k), "model file metadata: the extra key ", k, " is one of the model's");
    m[k] = v;
  }
  return m;
}

bool has_model_metadata(const Metadata& m) {
  for (auto& [k, v] : m)
    if (k == "nala.model_file" || k.rfind("nala.config.", 0) == 0 || k.rfind("nala.input.", 0) == 0) return true;
  return false;
}

ModelFile read_model_metadata(const Metadata& m, const std::string& path) {
  Reader r{m, path};
  NALA_CHECK(r.get("nala.model_file") == kVersion, path, ": metadata nala.model_file = \"", r.get("nala.model_file"),
             "\": this nala reads version ", kVersion, " of the model file layout");
  ModelFile mf;
  mf.described = true;
  NalaConfig& c = mf.config;
  c.name = r.get("nala.config.name");
  if (c.name.empty() || c.name.find_first_of("\n\r\t ") != std::string::npos)
    r.bad("nala.config.name", "not a config name");
  c.dims = r.ints("nala.config.dims", 0, 1, 1 << 16);
  const size_t S = c.dims.size();
  if (S > 16) r.bad("nala.config.dims", "more than 16 stages");
  c.depths = r.ints("nala.config.depths", S, 1, 1024);
  c.heads = r.ints("nala.config.heads", S, 1, 1 << 16);
  for (size_t s = 0; s < S; s++)
    if (c.dims[s] % c.heads[s] != 0 || (c.dims[s] / c.heads[s]) % 4 != 0)
      r.bad("nala.config.heads", "stage " + std::to_string(s) + ": width " + std::to_string(c.dims[s]) +
                                     " (nala.config.dims) with " + std::to_string(c.heads[s]) +
                                     " heads (the head width must be a multiple of 4)");
  if (c.dims[0] % 2 != 0) r.bad("nala.config.dims", "the first stage's width must be even (the stem halves it)");
  c.mlp_ratio = r.number("nala.config.mlp_ratio");
  for (int64_t d : c.dims)
    if (!(c.mlp_ratio > 0) || (int64_t)(c.mlp_ratio * d) < 1 || c.mlp_ratio > 64)
      r.bad("nala.config.mlp_ratio", "the FFN width must be at least 1 and the ratio at most 64");
  c.layer_init = r.floats("nala.config.layer_init", S);
  c.drop_path_rate = r.number("nala.config.drop_path");
  if (c.drop_path_rate < 0 || c.drop_path_rate >= 1) r.bad("nala.config.drop_path", "outside [0, 1)");
  std::vector<int64_t> nala = r.ints("nala.config.nala_stages", S, 0, 1);
  c.nala_stage.assign(nala.begin(), nala.end());
  if (m.count("nala.config.attn")) {  // files written before the kinds existed are nala
    try {
      c.attn = parse_attn_kind(r.get("nala.config.attn"));
    } catch (const Error&) {
      r.bad("nala.config.attn", "not an attention kind (known: nala, nala-paper, relu, elu1, flatten, softmax)");
    }
  }
  std::vector<int64_t> strides = r.ints("nala.config.stem_strides", 2, 1, 2);
  if (strides[0] != 2) r.bad("nala.config.stem_strides", "the first stem stride must be 2 (2,2 or 2,1)");
  c.stem_stride_first = (int)strides[0], c.stem_stride_last = (int)strides[1];
  c.head_width = r.integer("nala.config.head_width", 1, 1 << 20);
  c.in_chans = r.integer("nala.config.in_chans", 1, 1024);
  c.num_classes = r.integer("nala.config.classes", 1, 1 << 24);

  auto names = m.find("nala.classes");
  if (names != m.end()) {
    mf.classes = split(names->second, '\n');
    NALA_CHECK((int64_t)mf.classes.size() == c.num_classes, path, ": metadata nala.classes names ",
               mf.classes.size(), " classes, nala.config.classes says ", c.num_classes);
    std::set<std::string> seen;
    for (auto& n : mf.classes) {
      NALA_CHECK(!n.empty(), path, ": metadata nala.classes: an empty class name");
      NALA_CHECK(seen.insert(n).second, path, ": metadata nala.classes: class \"", n, "\" named twice");
    }
  }

  int present = 0;
  for (const char* k : kInputKeys) present += m.count(k) > 0;
  if (present > 0) {
    for (const char* k : kInputKeys)
      NALA_CHECK(m.count(k), path, ": model metadata has some nala.input.* keys but not ", k, " (all five or none)");
    if (r.integer("nala.input.channels", 1, 1024) != c.in_chans)
      r.bad("nala.input.channels", "nala.config.in_chans is " + std::to_string(c.in_chans));
    mf.height = r.integer("nala.input.height", 1, 1 << 16);
    mf.width = r.integer("nala.input.width", 1, 1 << 16);
    auto last = c.stage_grid(c.num_stages() - 1, mf.height, mf.width);
    if (mf.height < 4 || mf.width < 4 || last.first < 1 || last.second < 1)
      r.bad("nala.input.height", "an image size the network cannot take");
    mf.mean = r.floats("nala.input.mean", (size_t)c.in_chans);
    mf.std = r.floats("nala.input.std", (size_t)c.in_chans);
    // (x / 255 - mean) / std must stay finite and meaningful: a std of 1e-45
    // turns every image into Inf and NaN logits.
    for (float s : mf.std) {
      if (!(s > 0)) r.bad("nala.input.std", "every std must be positive");
      if (s < kMinStd || s > kMaxStd) r.bad("nala.input.std", "every std must be in [1e-06, 1e+06]");
    }
    for (float m : mf.mean)
      if (!(std::fabs(m) <= kMaxMean)) r.bad("nala.input.mean", "every mean must be in [-1e+06, 1e+06]");
  }
  return mf;
}

ModelFile describe_model_file(const SafeTensors& st, const std::string& path, const std::string& config_name,
                              const std::string& attn) {
  const AttnKind want_attn = attn.empty() ? AttnKind::nala : parse_attn_kind(attn);
  if (has_model_metadata(st.metadata)) {
    ModelFile mf = read_model_metadata(st.metadata, path);
    NALA_CHECK(config_name.empty() || config_name == mf.config.name, path, ": not a checkpoint of ", config_name,
               ": its metadata (nala.config.name) says ", mf.config.name);
    NALA_CHECK(attn.empty() || want_attn == mf.config.attn, path, ": the model was trained with attention kind ",
               attn_kind_name(mf.config.attn), " (metadata nala.config.attn), not ", attn,
               ": its weights only make sense with the kind they were trained with");
    // Before anything is built: a network larger than the file's tensors can
    // never load, and metadata that lies (1e9 channels, 1e7 classes) must not
    // cost gigabytes and minutes of allocation before the shapes disagree.
    const double want = mf.config.state_numel(), have = file_state_numel(st);
    auto count = [](double v) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.0f", v);
      return std::string(buf);
    };
    NALA_CHECK(want <= have, path, ": its metadata (nala.config.*) describes a network of ", count(want),
               " values (", mf.config.describe(), "), but the file's tensors hold only ", count(have),
               ": the metadata does not match the weights");
    return mf;
  }
  if (config_name.empty()) {
    std::string hint;
    auto legacy = st.metadata.find("nala.config");  // the one-line description of older nala files
    if (legacy != st.metadata.end() && legacy->second.rfind("model=", 0) == 0)
      hint = " (its nala.config line says " + legacy->second.substr(0, legacy->second.find(' ')) + ")";
    NALA_FAIL(path, ": the file does not say which model it holds (no nala.config.* metadata, as in the release's "
              "and PyTorch's files)", hint, ": name the config (one of xt, t, s, b, l, pico)");
  }
  Tensor w0 = find_tensor(st, "patch_embed.proj.0.weight"), hw = find_tensor(st, "head.weight");
  NALA_CHECK(w0.defined() && hw.defined() && w0.dim() == 4 && hw.dim() >= 1, path,
             ": not NaLaFormer weights (no 4-d patch_embed.proj.0.weight or no head.weight)");
  NALA_CHECK(w0.size(1) >= 1 && hw.size(0) >= 1, path, ": empty patch_embed.proj.0.weight or head.weight");
  ModelFile mf;
  mf.config = nalaformer_config(config_name, w0.size(1), hw.size(0));
  mf.config.attn = want_attn;
  auto names = st.metadata.find("nala.classes");
  if (names != st.metadata.end()) {  // older nala files: names without a description
    std::vector<std::string> v = split(names->second, '\n');
    if ((int64_t)v.size() == mf.config.num_classes) mf.classes = v;
  }
  return mf;
}

LoadedModel load_model_file(const std::string& path, const std::string& config_name, const std::string& attn) {
  SafeTensors st = load_safetensors(path);
  LoadedModel lm;
  lm.file = describe_model_file(st, path, config_name, attn);
  lm.model = std::make_unique<NalaFormer>(lm.file.config);
  try {
    load_weights(*lm.model, st, path);
  } catch (const Error& e) {
    if (!lm.file.described) throw;
    NALA_FAIL(path, ": the tensors do not match the file's own metadata (nala.config.*: ", lm.file.config.describe(),
              "): ", e.what());
  }
  lm.model->eval();
  return lm;
}

std::unique_ptr<NalaFormer> load_model(const std::string& path, const std::string& config_name,
                                       const std::string& attn) {
  return load_model_file(path, config_name, attn).model;
}

void save_model(const NalaFormer& model, const ModelFile& mf, const std::string& path) {
  NALA_CHECK(mf.config.describe() == model.cfg.describe(), "save_model ", path, ": the description is of ",
             mf.config.describe(), ", the model is ", model.cfg.describe());
  save_safetensors(path, model.state_dict(), model_file_metadata(mf));
}

}  // namespace nala
