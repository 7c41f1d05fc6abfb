// tests/test_closeness.cpp - kernels/closeness.h, the measures the CUDA tests,
// the benchmarks and the kernel lab judge GPU results by, against values
// worked out by hand: the normwise errors, a reference of zeros, a NaN or an
// infinity, the bound's ratio and the element-wise worst.
#include <cmath>
#include <limits>

#include "kernels/closeness.h"
#include "tests/helpers.h"

using namespace nala;

TEST_CASE("closeness: normwise errors by hand", "[closeness]") {
  const float ref[] = {3.0f, -4.0f, 0.0f};  // ||ref|| = 5, max |ref| = 4
  const float got[] = {3.0f, -4.5f, 0.3f};  // error (0, -0.5, 0.3): ||e|| = sqrt(0.34), max 0.5
  const Normwise w = normwise_error(got, ref, 3);
  CHECK(w.first_bad == 3);
  CHECK(w.rel_norm == Approx(std::sqrt(0.34) / 5).epsilon(1e-6));
  CHECK(w.rel_max == Approx(0.5 / 4).epsilon(1e-6));
  CHECK(w.max_err == Approx(0.5).epsilon(1e-6));
  // The bound's ratio is the larger of the two shares: 0.125 / 0.25 = 0.5 beside 0.1166 / 0.5.
  CHECK(bound_ratio(w, NormBound{0.5, 0.25}) == Approx(0.5).epsilon(1e-6));
  CHECK(bound_ratio(w, NormBound{0.1, 1.0}) == Approx(std::sqrt(0.34) / 5 / 0.1).epsilon(1e-6));
  CHECK(bound_ratio(w, kNalaOnePassBound) > 1.0);
  // Exact: both measures 0.
  const Normwise same = normwise_error(ref, ref, 3);
  CHECK(same.rel_norm == 0.0);
  CHECK(same.rel_max == 0.0);
  CHECK(bound_ratio(same, kNalaOnePassBound) == 0.0);
}

TEST_CASE("closeness: a reference of zeros must be matched exactly", "[closeness]") {
  const float zero[] = {0.0f, 0.0f}, tiny[] = {0.0f, 1e-30f};
  CHECK(normwise_error(zero, zero, 2).rel_norm == 0.0);
  const Normwise w = normwise_error(tiny, zero, 2);
  CHECK(std::isinf(w.rel_norm));
  CHECK(std::isinf(w.rel_max));
  CHECK(bound_ratio(w, kNalaOnePassBound) > 1.0);
}

TEST_CASE("closeness: a NaN or an infinity anywhere fails, and is found", "[closeness]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float ref[] = {1.0f, 2.0f, 3.0f};
  const float got_nan[] = {1.0f, nan, 3.0f}, got_inf[] = {1.0f, 2.0f, -inf};
  const Normwise a = normwise_error(got_nan, ref, 3), b = normwise_error(got_inf, ref, 3);
  CHECK(a.first_bad == 1);
  CHECK(b.first_bad == 2);
  CHECK(!(bound_ratio(a, kNalaOnePassBound) <= 1.0));
  CHECK(!(bound_ratio(b, kNalaOnePassBound) <= 1.0));
  const float ref_inf[] = {1.0f, inf, 3.0f};  // an infinite reference is not a finite difference either
  CHECK(normwise_error(ref, ref_inf, 3).first_bad == 1);
  CHECK(std::isinf(worst_elementwise(got_nan, ref, 3, 1e-3)));
}

TEST_CASE("closeness: the element-wise worst by hand", "[closeness]") {
  const float ref[] = {1.0f, -2.0f, 0.0f};
  const float got[] = {1.0011f, -2.0f, 5e-5f};
  // |e| / (1e-4 + 1e-3 |ref|): 0.0011 / 0.0011 = 1, 0, 5e-5 / 1e-4 = 0.5.
  CHECK(worst_elementwise(got, ref, 3, 1e-3) == Approx(1.0).epsilon(1e-3));
  CHECK(worst_elementwise(got + 1, ref + 1, 2, 1e-3) == Approx(0.5).epsilon(1e-3));
}
