// tests/helpers.h - shared test utilities: random tensors, closeness checks
// with atol + rtol * |ref|, and a gradcheck assertion that prints failures.
#pragma once
#include <catch2/catch.hpp>
#include <cmath>
#include <sstream>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tensor/rng.h"

namespace nala {
namespace test {

inline Tensor randn(const Shape& s, Rng& rng, float std = 1.0f, bool grad = false) {
  Tensor t = Tensor::empty(s);
  rng.fill_normal(t, 0.0f, std);
  if (grad) t.set_requires_grad(true);
  return t;
}

inline Tensor randu(const Shape& s, Rng& rng, float lo, float hi, bool grad = false) {
  Tensor t = Tensor::empty(s);
  rng.fill_uniform(t, lo, hi);
  if (grad) t.set_requires_grad(true);
  return t;
}

// Every element within atol + rtol*|ref|; NaN never passes. Returns a message
// naming the first bad element, or "" when all are close.
inline std::string close_report(const std::vector<float>& got, const std::vector<float>& ref, double atol,
                                double rtol) {
  std::ostringstream os;
  if (got.size() != ref.size()) {
    os << "size " << got.size() << " vs reference " << ref.size();
    return os.str();
  }
  double worst = 0;
  size_t wi = 0;
  int bad = 0;
  for (size_t i = 0; i < got.size(); i++) {
    double err = std::fabs((double)got[i] - ref[i]);
    bool ok = err <= atol + rtol * std::fabs((double)ref[i]);
    if (!ok) {
      bad++;
      if (std::isnan(err) || err > worst || bad == 1) worst = std::isnan(err) ? INFINITY : err, wi = i;
    }
  }
  if (bad) os << bad << " of " << got.size() << " elements differ; worst at " << wi << ": " << got[wi] << " vs "
              << ref[wi] << " (atol " << atol << ", rtol " << rtol << ")";
  return os.str();
}

inline std::string close_report(const Tensor& got, const Tensor& ref, double atol, double rtol) {
  if (got.shape() != ref.shape()) return "shape " + got.desc() + " vs reference " + ref.desc();
  return close_report(got.to_vector(), ref.to_vector(), atol, rtol);
}

#define REQUIRE_CLOSE(got, ref, atol, rtol)                                  \
  do {                                                                       \
    std::string _r = ::nala::test::close_report((got), (ref), (atol), (rtol)); \
    INFO(_r);                                                                \
    REQUIRE(_r.empty());                                                     \
  } while (0)

#define REQUIRE_GRADCHECK(fn, ...)                                           \
  do {                                                                       \
    auto _g = ::nala::gradcheck((fn), __VA_ARGS__);                          \
    INFO(_g.report);                                                         \
    INFO("max abs err " << _g.max_abs_err << ", max rel err " << _g.max_rel_err); \
    REQUIRE(_g.ok);                                                          \
  } while (0)

}  // namespace test
}  // namespace nala
