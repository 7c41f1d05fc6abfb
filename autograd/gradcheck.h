// autograd/gradcheck.h - analytic gradients against finite differences.
//
// The function f maps the inputs to one output tensor. The scalar checked is
// L = sum(f(x) * w) with a fixed random w (so every output element and every
// sign matters), accumulated in double. Each input element that requires
// grad is perturbed by +-eps and +-2 eps (4-point stencil, error O(eps^4)),
// which makes float32 checks meaningful at eps ~ 1e-2. Pass when
// |analytic - numeric| <= atol + rtol * |numeric| for every element.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace nala {

struct GradcheckOptions {
  double eps = 1e-2;
  double atol = 2e-3;
  double rtol = 1e-2;
  uint64_t seed = 1234;        // for the weights w
  int64_t max_per_input = 400; // check at most this many elements per input (spread evenly)
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_err = 0, max_rel_err = 0;
  std::string report;  // first failures, with input index and element
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;
GradcheckResult gradcheck(const GradcheckFn& f, std::vector<Tensor> inputs, const GradcheckOptions& opt = {});

}  // namespace nala
