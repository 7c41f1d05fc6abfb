// tensor/rng.cpp - xoshiro256** and the distributions built on it.
#include "tensor/rng.h"

#include <cmath>

namespace nala {

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void Rng::seed_(uint64_t seed) {
  uint64_t z = seed;
  for (auto& w : s_) {  // splitmix64
    z += 0x9e3779b97f4a7c15ULL;
    uint64_t x = z;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    w = x ^ (x >> 31);
  }
}

uint64_t Rng::next_u64() {
  uint64_t r = rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return r;
}

float Rng::uniform() { return (float)(next_u64() >> 40) * (1.0f / 16777216.0f); }
float Rng::uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }

float Rng::normal() {
  // Box-Muller on (0, 1] x [0, 1): one value per call keeps the stream simple.
  double u1 = ((next_u64() >> 11) + 1) * (1.0 / 9007199254740992.0);
  double u2 = (next_u64() >> 11) * (1.0 / 9007199254740992.0);
  return (float)(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

uint64_t Rng::below(uint64_t n) {
  NALA_CHECK(n > 0, "Rng::below(0)");
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // reject the biased tail
  uint64_t r;
  do r = next_u64();
  while (r >= limit);
  return r % n;
}

namespace {
template <typename F>
void fill_with(Tensor& t, F f) {
  NALA_CHECK(t.device() == Device::CPU && t.dtype() == DType::F32, "rng fill: need a cpu f32 tensor, got ",
             t.desc());
  if (t.is_contiguous()) {
    float* p = t.f32();
    for (int64_t i = 0, n = t.numel(); i < n; i++) p[i] = f();
    return;
  }
  std::vector<float> v(t.numel());
  for (auto& x : v) x = f();
  t.copy_(Tensor::from_vector(t.shape(), v));
}
}  // namespace

void Rng::fill_uniform(Tensor& t, float lo, float hi) { fill_with(t, [&] { return uniform(lo, hi); }); }
void Rng::fill_normal(Tensor& t, float mean, float std) { fill_with(t, [&] { return mean + std * normal(); }); }

void Rng::fill_trunc_normal(Tensor& t, float mean, float std, float a, float b) {
  NALA_CHECK(a < b && mean + 6 * std > a && mean - 6 * std < b, "trunc_normal: interval [", a, ", ", b,
             "] is too far from mean ", mean, " std ", std);
  fill_with(t, [&] {
    for (;;) {
      float v = mean + std * normal();
      if (v >= a && v <= b) return v;
    }
  });
}

std::vector<int64_t> Rng::permutation(int64_t n) {
  std::vector<int64_t> p(n);
  for (int64_t i = 0; i < n; i++) p[i] = i;
  for (int64_t i = n - 1; i > 0; i--) std::swap(p[i], p[below(i + 1)]);  // Fisher-Yates
  return p;
}

}  // namespace nala
