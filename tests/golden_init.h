// tests/golden_init.h - the name-seeded deterministic weights shared with the
// PyTorch reference (tests/reference/README.md): every state_dict entry is
// filled from FNV-1a(name) and splitmix64, so golden files need not carry
// the weights.
#pragma once
#include <cmath>
#include <string>

#include "nn/module.h"

namespace nala {
namespace test {

inline uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// The value of element i of the entry `key` with shape `shape`.
inline float golden_init_value(const std::string& key, const Shape& shape, uint64_t h, int64_t i) {
  double u = (double)(splitmix64(h + (uint64_t)i) >> 40) * (1.0 / 16777216.0) * 2.0 - 1.0;
  double v;
  int64_t n = shape_numel(shape);
  if (ends_with(key, "running_var")) v = 1.0 + 0.5 * std::fabs(u);
  else if (ends_with(key, "running_mean")) v = 0.1 * u;
  else if (key.find("gamma_") != std::string::npos) v = 1.0 + 0.2 * u;
  else if (shape.size() == 1 && ends_with(key, ".weight")) v = 1.0 + 0.1 * u;
  else if (ends_with(key, ".bias")) v = 0.1 * u;
  else v = u * std::sqrt(3.0 / (double)(n / shape[0]));
  return (float)v;
}

inline void golden_init(Module& m) {
  for (auto& [key, t] : m.state_dict()) {
    if (ends_with(key, "num_batches_tracked")) continue;
    uint64_t h = fnv1a64(key);
    float* p = t.f32();
    for (int64_t i = 0, n = t.numel(); i < n; i++) p[i] = golden_init_value(key, t.shape(), h, i);
  }
}

}  // namespace test
}  // namespace nala
