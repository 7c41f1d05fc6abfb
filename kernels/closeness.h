// kernels/closeness.h - how far a result lies from its reference: the
// normwise measure that the CUDA tests (tests/cuda_harness.h), the
// benchmarks (bench/bench_nala_cuda, bench/bench_long_seq) and the kernel
// lab (kernels/lab/lab.h) share, and the bound NaLa's one-pass products are
// held to. Host code, header only.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>

namespace nala {

// ||got - ref|| / ||ref|| and max |got - ref| / max |ref| over n values (0 when
// both are 0, infinity when only the reference is 0), and the index of the
// first non-finite difference (n when there is none).
struct Normwise {
  double rel_norm = 0, rel_max = 0, max_err = 0;  // max_err: max |got - ref|
  size_t first_bad;
};
inline Normwise normwise_error(const float* got, const float* ref, size_t n) {
  Normwise w;
  w.first_bad = n;
  double e2 = 0, r2 = 0, rmax = 0;
  for (size_t i = 0; i < n; i++) {
    const double e = (double)got[i] - ref[i];
    if (!std::isfinite(e)) {
      if (w.first_bad == n) w.first_bad = i;
      continue;
    }
    e2 += e * e, r2 += (double)ref[i] * ref[i];
    w.max_err = std::max(w.max_err, std::fabs(e)), rmax = std::max(rmax, std::fabs((double)ref[i]));
  }
  auto rel = [](double e, double r) { return r > 0 ? e / r : (e > 0 ? INFINITY : 0.0); };
  w.rel_norm = rel(std::sqrt(e2), std::sqrt(r2));
  w.rel_max = rel(w.max_err, rmax);
  if (w.first_bad < n) w.rel_norm = w.rel_max = w.max_err = INFINITY;
  return w;
}

// A normwise bound: rel_norm <= norm and rel_max <= max_rel.
struct NormBound {
  double norm, max_rel;
};
// How much of the bound a result uses: max(rel_norm / norm, rel_max / max_rel); <= 1 passes.
inline double bound_ratio(const Normwise& w, NormBound b) { return std::max(w.rel_norm / b.norm, w.rel_max / b.max_rel); }

// NaLa attention's one-pass products on bf16 arrays (autograd/ops.h,
// kNalaBf16OnePass) against the CPU's bf16 op: three times the worst that an
// emulation of the plan measured at the tests' shapes, 4.0e-3 normwise and
// 7.8e-3 of the largest value (tests/reference/nala_product_precision.py);
// a wrong fragment or a missing term errs by the outputs' own size.
constexpr NormBound kNalaOnePassBound{1.5e-2, 2.5e-2};

// Largest |got - ref| / (1e-4 + rtol |ref|) over n values (infinity at a NaN): the
// CUDA tests' element-wise tolerance as one number, <= 1 passes.
inline double worst_elementwise(const float* got, const float* ref, size_t n, double rtol) {
  double w = 0;
  for (size_t i = 0; i < n; i++) {
    const double r = std::fabs((double)got[i] - ref[i]) / (1e-4 + rtol * std::fabs((double)ref[i]));
    if (!(r <= w)) w = std::isnan(r) ? INFINITY : std::max(w, r);
  }
  return w;
}

}  // namespace nala
