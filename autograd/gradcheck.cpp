// autograd/gradcheck.cpp
#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/autograd.h"
#include "autograd/ops.h"
#include "tensor/rng.h"

namespace nala {

static double weighted_sum(const Tensor& out, const std::vector<float>& w) {
  std::vector<float> v = out.to_vector();
  double s = 0;
  for (size_t i = 0; i < v.size(); i++) s += (double)v[i] * w[i];
  return s;
}

GradcheckResult gradcheck(const GradcheckFn& f, std::vector<Tensor> inputs, const GradcheckOptions& opt) {
  GradcheckResult res;
  for (auto& t : inputs) {
    if (t.requires_grad()) t.set_grad(Tensor());
  }
  // Analytic gradients.
  Tensor out = f(inputs);
  NALA_CHECK(out.requires_grad(), "gradcheck: the output does not require grad");
  Rng rng(opt.seed);
  std::vector<float> w(out.numel());
  for (auto& x : w) x = rng.uniform(-1.0f, 1.0f);
  backward(out, Tensor::from_vector(out.shape(), w));

  std::ostringstream rep;
  int failures = 0;
  NoGradGuard ng;
  for (size_t i = 0; i < inputs.size(); i++) {
    Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    NALA_CHECK(x.is_contiguous(), "gradcheck: input ", i, " must be contiguous");
    Tensor g = x.grad();
    std::vector<float> ga = g.defined() ? g.to_vector() : std::vector<float>(x.numel(), 0.0f);
    float* p = x.f32();
    int64_t n = x.numel();
    int64_t step = std::max<int64_t>(1, n / std::max<int64_t>(1, opt.max_per_input));
    for (int64_t e = 0; e < n; e += step) {
      float orig = p[e];
      double L[4];
      const double offs[4] = {-2, -1, 1, 2};
      for (int s = 0; s < 4; s++) {
        p[e] = (float)(orig + offs[s] * opt.eps);
        L[s] = weighted_sum(f(inputs), w);
      }
      p[e] = orig;
      double numeric = (L[0] - 8 * L[1] + 8 * L[2] - L[3]) / (12 * opt.eps);
      double analytic = ga[e];
      double err = std::fabs(analytic - numeric);
      double rel = err / std::max(1e-12, std::fabs(numeric));
      res.max_abs_err = std::max(res.max_abs_err, err);
      if (std::fabs(numeric) > opt.atol) res.max_rel_err = std::max(res.max_rel_err, rel);
      if (!(err <= opt.atol + opt.rtol * std::fabs(numeric))) {
        res.ok = false;
        if (failures++ < 8)
          rep << "input " << i << " " << x.desc() << " element " << e << ": analytic " << analytic
              << " numeric " << numeric << "\n";
      }
    }
  }
  res.report = rep.str();
  return res;
}

}  // namespace nala
