// bench/closeness.h - how far a GPU result lies from the CPU's, as the
// benchmarks print it ("worst"; <= 1 passes). Element-wise: the CUDA tests'
// atol + rtol |ref|. Normwise: the tests' bound for NaLa's one-pass products
// on bf16 (tests/cuda_harness.h, kOnePassNormTol: ||got - ref|| <= 1.5e-2
// ||ref|| and max |got - ref| <= 2.5e-2 max |ref|), as the larger of the two
// ratios. A NaN or infinity anywhere is infinitely far.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

namespace nala {
namespace bench {

// Largest |got - ref| / (1e-4 + rtol |ref|) over the first n values.
inline double worst_elementwise(const std::vector<float>& got, const std::vector<float>& ref, size_t n, double rtol) {
  double w = 0;
  for (size_t i = 0; i < n; i++) {
    const double r = std::fabs((double)got[i] - ref[i]) / (1e-4 + rtol * std::fabs((double)ref[i]));
    if (!(r <= w)) w = std::isnan(r) ? INFINITY : std::max(w, r);
  }
  return w;
}

// max(normwise / 1.5e-2, max-scaled / 2.5e-2) over the first n values.
inline double worst_normwise(const std::vector<float>& got, const std::vector<float>& ref, size_t n) {
  double e2 = 0, r2 = 0, emax = 0, rmax = 0;
  for (size_t i = 0; i < n; i++) {
    const double e = (double)got[i] - ref[i];
    e2 += e * e, r2 += (double)ref[i] * ref[i];
    emax = std::max(emax, std::fabs(e)), rmax = std::max(rmax, std::fabs((double)ref[i]));
  }
  if (!std::isfinite(e2)) return INFINITY;
  const double nw = r2 > 0 ? std::sqrt(e2 / r2) : (e2 > 0 ? INFINITY : 0);
  const double mx = rmax > 0 ? emax / rmax : (emax > 0 ? INFINITY : 0);
  return std::max(nw / 1.5e-2, mx / 2.5e-2);
}

}  // namespace bench
}  // namespace nala
