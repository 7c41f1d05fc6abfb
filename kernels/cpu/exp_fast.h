// kernels/cpu/exp_fast.h - the one exp approximation of the CPU kernels
// (softmax and log_softmax in reduce.cpp, cross-entropy in loss.cpp, the
// query features u^p = exp(p ln u) in attention.cpp).
//
// The Cephes expf polynomial with Cody-Waite range reduction, branch-free on
// plain float and integer arithmetic so that loops over it vectorise (libm's
// expf is not vectorised without -ffast-math). Naive reference: std::exp.
//
// Accuracy, measured on every float in [-87, 88] against std::exp in double:
// max relative error 8.53e-8 (about 1 float ulp, at x = -5.891129), with or
// without fused multiply-adds; tests/test_reduce.cpp checks this bound.
// Outside that range: x < -87.3 gives exactly 0 (so exp(-inf) = 0; exp itself
// is subnormal there), NaN stays NaN, and x > 88.376 gives inf (exp
// overflows float only above 88.7228; every caller passes x <= 0).
#pragma once
#include <algorithm>
#include <cstdint>

namespace nala {
namespace cpu {

inline float exp_fast(float x) {
  const float xc = std::min(std::max(x, -87.3f), 88.7f);  // NaN stays NaN
  // n = round(x / ln 2) with the 1.5 * 2^23 trick: the integer lands in the
  // low mantissa bits of t (exact for |n| < 2^22; no float->int conversion,
  // which would block vectorisation under the default -ftrapping-math, and
  // a NaN is no undefined behaviour, just a NaN result).
  const float t = xc * 1.44269504088896341f + 12582912.0f;
  const float n = t - 12582912.0f;
  // r = x - n ln 2, with ln 2 split in two so that n * hi is exact.
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  // exp(r) on |r| <= ln 2 / 2.
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n built in the exponent field (unsigned: defined for every clamped n).
  const uint32_t ni = __builtin_bit_cast(uint32_t, t) - 0x4B400000u;  // n mod 2^32
  const float scale = __builtin_bit_cast(float, (ni + 127u) << 23);   // 2^n
  const float v = p * scale;
  return x < -87.3f ? 0.0f : v;
}

}  // namespace cpu
}  // namespace nala
