// nn/init.cpp - see nn/init.h. Dispatch is by Module::type() and the
// parameter names the layers register ("weight", "bias", "running_mean", ...),
// so this file needs no layer code.
#include "nn/init.h"

#include <cmath>

namespace nala {

static void check_host_f32(const Tensor& t, const char* fn) {
  NALA_CHECK(t.defined(), fn, ": undefined tensor");
  NALA_CHECK(t.dtype() == DType::F32 && t.device() == Device::CPU, fn, ": needs a CPU f32 tensor, got ", t.desc());
}

void trunc_normal_(Tensor& t, Rng& rng, float std, float a, float b) {
  check_host_f32(t, "trunc_normal_");
  NALA_CHECK(std > 0.0f, "trunc_normal_: std must be positive, got ", std);
  rng.fill_trunc_normal(t, 0.0f, std, a, b);
}

void uniform_(Tensor& t, Rng& rng, float lo, float hi) {
  check_host_f32(t, "uniform_");
  rng.fill_uniform(t, lo, hi);
}

void constant_(Tensor& t, float v) {
  NALA_CHECK(t.defined(), "constant_: undefined tensor");
  t.fill_(v);
}

int64_t fan_in(const Tensor& weight) {
  NALA_CHECK(weight.defined() && weight.dim() >= 2 && weight.size(0) > 0, "fan_in: needs a weight of 2 or more dims, got ",
             weight.defined() ? weight.desc() : std::string("undefined"));
  return weight.numel() / weight.size(0);
}

void linear_default_(Tensor& weight, Tensor& bias, Rng& rng) {
  // kaiming_uniform(a = sqrt(5)) gives bound = sqrt(6 / ((1 + 5) fan_in)) = 1/sqrt(fan_in).
  float bound = (float)(1.0 / std::sqrt((double)fan_in(weight)));
  uniform_(weight, rng, -bound, bound);
  if (bias.defined()) uniform_(bias, rng, -bound, bound);
}

static void init_one(Module& m, Rng& rng) {
  const std::string& ty = m.type();
  Tensor w = m.own_parameter("weight"), b = m.own_parameter("bias");
  if (ty == "Conv2d" || ty == "DWConv2d") {
    NALA_CHECK(w.defined(), "init_module_default: ", ty, " without a weight");
    trunc_normal_(w, rng, 0.02f, -2.0f, 2.0f);
    if (b.defined()) zeros_(b);
  } else if (ty == "Linear") {
    NALA_CHECK(w.defined(), "init_module_default: Linear without a weight");
    linear_default_(w, b, rng);
  } else if (ty == "LayerNorm" || ty == "BatchNorm") {
    if (w.defined()) ones_(w);
    if (b.defined()) zeros_(b);
    for (const char* name : {"running_mean", "num_batches_tracked"}) {
      Tensor t = m.own_buffer(name);
      if (t.defined()) zeros_(t);
    }
    Tensor rv = m.own_buffer("running_var");
    if (rv.defined()) ones_(rv);
  }
}

void init_module_default(Module& m, Rng& rng) {
  for (auto& nm : m.named_modules()) init_one(*nm.second, rng);
}

}  // namespace nala
