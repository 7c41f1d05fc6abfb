// tensor/rng.h - a seeded, reproducible random number generator.
//
// xoshiro256** seeded through splitmix64: the same seed gives the same stream
// on every platform and compiler (std:: distributions do not promise that,
// so the distributions here are our own). The state is four words and can be
// saved in a checkpoint and restored for an exact --resume.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace nala {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { seed_(seed); }
  void seed_(uint64_t seed);

  uint64_t next_u64();
  float uniform();                    // [0, 1), 24 random bits
  float uniform(float lo, float hi);  // [lo, hi)
  float normal();                     // N(0, 1), Box-Muller
  uint64_t below(uint64_t n);         // uniform integer in [0, n), unbiased
  bool bernoulli(float p) { return uniform() < p; }

  // Fill a CPU f32 tensor (any strides).
  void fill_uniform(Tensor& t, float lo, float hi);
  void fill_normal(Tensor& t, float mean, float std);
  // Normal(mean, std) redrawn until it lies in [a, b] (absolute bounds).
  void fill_trunc_normal(Tensor& t, float mean, float std, float a, float b);
  std::vector<int64_t> permutation(int64_t n);

  std::array<uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<uint64_t, 4>& s) { s_ = s; }

 private:
  std::array<uint64_t, 4> s_{};
};

}  // namespace nala
