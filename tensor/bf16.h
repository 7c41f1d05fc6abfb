// tensor/bf16.h - the bfloat16 element type of DType::BF16 tensors.
//
// A bf16 value is the top 16 bits of a float32: the same 8 exponent bits
// (so the same range) and 7 mantissa bits (about 3 significant digits). On
// the GPU the same bits as CUDA's __nv_bfloat16. Ops that take bf16 tensors
// compute in float32 and round each output once, to nearest even; this
// header is that rounding on the host, for the CPU kernels and tests.
#pragma once
#include <cstdint>
#include <cstring>

namespace nala {

struct bf16_t {
  uint16_t bits;
};

// x rounded to the nearest bf16, ties to even; a value past the largest
// finite bf16 becomes infinity, and NaN the canonical NaN 0x7fff (what the
// GPU's cvt.rn.bf16.f32 gives, so both devices agree bit for bit).
inline bf16_t float_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{0x7fffu};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{(uint16_t)(u >> 16)};
}

inline float bf16_to_float(bf16_t x) {
  const uint32_t u = (uint32_t)x.bits << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace nala
