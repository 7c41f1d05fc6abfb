// models/train/checkpoint.cpp - see checkpoint.h.
#include "models/train/checkpoint.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "models/weights.h"

namespace nala {

namespace {

std::string rng_to_string(const std::array<uint64_t, 4>& s) {
  char buf[80];
  std::snprintf(buf, sizeof buf, "%016llx%016llx%016llx%016llx", (unsigned long long)s[0],
                (unsigned long long)s[1], (unsigned long long)s[2], (unsigned long long)s[3]);
  return buf;
}

const std::string& meta_value(const Checkpoint& ck, const char* key) {
  auto it = ck.st.metadata.find(key);
  NALA_CHECK(it != ck.st.metadata.end(), ck.path, ": not a nala training checkpoint (no ", key,
             " in its metadata)");
  return it->second;
}

int64_t meta_integer(const Checkpoint& ck, const char* key, int64_t lo, int64_t hi) {
  const std::string& v = meta_value(ck, key);
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno || v.find_first_of(" \t\n") != std::string::npos) ck.refuse(key, "is not an integer");
  if (x < lo || x > hi) ck.refuse(key, "is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

double meta_number(const Checkpoint& ck, const char* key, double lo, double hi) {
  const std::string& v = meta_value(ck, key);
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || errno || !std::isfinite(x)) ck.refuse(key, "is not a finite number");
  if (x < lo || x > hi) ck.refuse(key, "is out of range");
  return x;
}

std::array<uint64_t, 4> meta_rng(const Checkpoint& ck, const char* key) {
  const std::string& v = meta_value(ck, key);
  if (v.size() != 64 || v.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
    ck.refuse(key, "is not 64 hexadecimal digits");
  std::array<uint64_t, 4> s{};
  for (int i = 0; i < 4; i++) s[i] = std::strtoull(v.substr(16 * i, 16).c_str(), nullptr, 16);
  return s;
}

// A checkpoint whose weights or optimiser state hold NaN or Inf cannot be
// continued: refused naming the tensor, before anything is loaded from it.
void check_finite(const SafeTensors& st, const std::string& path) {
  for (auto& [name, t] : st.tensors) {
    if (t.dtype() != DType::F32) continue;
    const float* p = t.f32();
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < t.numel(); i++)
      if (!std::isfinite(p[i])) bad++, first = first < 0 ? i : first;
    NALA_CHECK(bad == 0, path, ": tensor ", name, " holds ", bad, " non-finite value", bad == 1 ? "" : "s",
               " (NaN or Inf; the first at element ", first, " of ", t.numel(),
               "): the checkpoint is damaged and cannot be resumed; start a new run, or resume from a copy "
               "saved before the damage");
  }
}

}  // namespace

void save_checkpoint(const std::string& path, NalaFormer& model, const Optimizer& opt, const ModelFile& mf,
                     const CheckpointState& s, const NamedTensors& extra) {
  NamedTensors all;
  for (auto& [k, t] : model.state_dict()) all.push_back({"model." + k, t});
  for (auto& [k, t] : opt.state()) all.push_back({"optim." + k, t});
  for (auto& [k, t] : extra) all.push_back({k, t});
  std::map<std::string, std::string> meta = {{"nala.format", "train-checkpoint-1"},
                                             {"nala.args", s.args},
                                             {"nala.epoch", std::to_string(s.epoch)},
                                             {"nala.step", std::to_string(s.step)},
                                             {"nala.global_batch", std::to_string(s.global_batch)},
                                             {"nala.world_size", std::to_string(s.world_size)},
                                             {"nala.best_top1", std::to_string(s.best_top1)},
                                             {"nala.rng", rng_to_string(s.rng)}};
  if (s.best_val_epoch > 0) {
    meta["nala.best_val_top1"] = std::to_string(s.best_val_top1);
    meta["nala.best_val_test_top1"] = std::to_string(s.best_val_test_top1);
    meta["nala.best_val_epoch"] = std::to_string(s.best_val_epoch);
  }
  save_safetensors(path, all, model_file_metadata(mf, meta));
}

void save_best_weights(const std::string& path, NalaFormer& model, const ModelFile& mf, double top1,
                       int64_t epoch, const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> meta = {{"nala.top1", std::to_string(top1)}, {"nala.epoch", std::to_string(epoch)}};
  for (auto& [k, v] : extra) meta[k] = v;
  save_safetensors(path, model.state_dict(), model_file_metadata(mf, meta));
}

void Checkpoint::refuse(const char* key, const std::string& why, const char* cause) const {
  NALA_FAIL(path, ": checkpoint metadata ", key, " = '", meta_value(*this, key), "' ", why, "; ", cause);
}

Checkpoint read_checkpoint(const std::string& path, const NalaConfig& cfg) {
  Checkpoint ck;
  ck.path = path;
  ck.st = load_safetensors(path);
  NALA_CHECK(meta_value(ck, "nala.config") == cfg.describe(), path, ": the checkpoint is of another model: ",
             meta_value(ck, "nala.config"), " (this run: ", cfg.describe(), ")");
  CheckpointState& s = ck.state;
  s.args = meta_value(ck, "nala.args");
  s.epoch = meta_integer(ck, "nala.epoch", 1, 1LL << 40);
  s.step = meta_integer(ck, "nala.step", 0, 1LL << 62);
  s.best_top1 = meta_number(ck, "nala.best_top1", -1, 1);
  s.rng = meta_rng(ck, "nala.rng");
  if (ck.st.metadata.count("nala.best_val_epoch")) {
    s.best_val_epoch = meta_integer(ck, "nala.best_val_epoch", 1, s.epoch);
    s.best_val_top1 = meta_number(ck, "nala.best_val_top1", 0, 1);
    s.best_val_test_top1 = meta_number(ck, "nala.best_val_test_top1", 0, 1);
  }
  if (ck.st.metadata.count("nala.global_batch")) s.global_batch = meta_integer(ck, "nala.global_batch", 1, 1LL << 40);
  return ck;
}

void restore_checkpoint(const Checkpoint& ck, NalaFormer& model, Optimizer& opt) {
  check_finite(ck.st, ck.path);
  load_weights(model, ck.st, ck.path);
  std::map<std::string, Tensor> ost;
  for (auto& [k, t] : ck.st.tensors)
    if (k.rfind("optim.", 0) == 0) ost[k.substr(6)] = t;
  opt.load_state(ost);
  model.rng.set_state(ck.state.rng);
}

}  // namespace nala
