// kernels/fastdiv.h - division by a constant known on the host, for
// index math in kernels that move little data per element (im2col, col2im
// in conv.cu), where the divisions decide the speed: 64-bit division is a
// long emulated sequence on the GPU, 32-bit division about 20 instructions,
// FastDiv a multiply-high, an add and a shift.
//
// The method of Granlund and Montgomery ("Division by invariant integers
// using multiplication", 1994), round-up variant: for a divisor d in
// [1, 2^31), s = ceil(log2 d) and m = floor(2^32 (2^s - d) / d) + 1; then
// n / d = (mulhi(n, m) + n) >> s for every n in [0, 2^31) (the sum stays
// below 2^32). d = 0 (an empty extent, never divided by) keeps n / 1.
// Plain C++ on the host (tested there: tests/test_conv.cpp), the same
// arithmetic in kernels.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define NALA_HOST_DEVICE __host__ __device__
#else
#define NALA_HOST_DEVICE
#endif

namespace nala {

struct FastDiv {
  uint32_t m = 1, s = 0;
  FastDiv() = default;
  explicit FastDiv(int64_t d) {
    if (d <= 0) return;
    while ((uint64_t(1) << s) < (uint64_t)d) s++;
    m = (uint32_t)(((uint64_t(1) << 32) * ((uint64_t(1) << s) - (uint64_t)d)) / (uint64_t)d + 1);
  }
  NALA_HOST_DEVICE int operator()(int n) const {  // n in [0, 2^31)
#ifdef __CUDA_ARCH__
    const uint32_t hi = __umulhi((uint32_t)n, m);
#else
    const uint32_t hi = (uint32_t)(((uint64_t)(uint32_t)n * m) >> 32);
#endif
    return (int)((hi + (uint32_t)n) >> s);
  }
};

}  // namespace nala
