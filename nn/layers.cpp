// nn/layers.cpp - layer constructors (parameter shapes and names) and their
// forward, each a thin call into autograd/ops.h.
#include "nn/layers.h"

#include "tensor/device.h"

#include "autograd/ops.h"

namespace nala {

Linear::Linear(int64_t in, int64_t out, bool has_bias) : Module("Linear"), in_features(in), out_features(out) {
  NALA_CHECK(in > 0 && out > 0, "Linear: bad sizes in=", in, " out=", out);
  weight = register_parameter("weight", Tensor::zeros({out, in}));
  if (has_bias) bias = register_parameter("bias", Tensor::zeros({out}));
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }
Tensor Linear::forward(const Tensor& x, DType out) { return linear(x, weight, bias, out); }
Tensor Linear::forward_gelu(const Tensor& x, DType out) { return linear_gelu(x, weight, bias, out); }
Tensor Linear::forward_scale_add(const Tensor& res, const Tensor& x, const Tensor& gamma, const Tensor& sample_mask) {
  return linear_scale_add(res, x, weight, bias, gamma, sample_mask);
}

Conv2d::Conv2d(int64_t cin_, int64_t cout_, int k_, int stride_, int pad_, bool has_bias)
    : Module("Conv2d"), cin(cin_), cout(cout_), k(k_), stride(stride_), pad(pad_) {
  NALA_CHECK(cin > 0 && cout > 0 && k > 0 && stride > 0 && pad >= 0, "Conv2d: bad arguments cin=", cin,
             " cout=", cout, " k=", k, " stride=", stride, " pad=", pad);
  weight = register_parameter("weight", Tensor::zeros({cout, cin, k, k}));
  if (has_bias) bias = register_parameter("bias", Tensor::zeros({cout}));
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight, bias, stride, pad); }

DWConv2d::DWConv2d(int64_t C, int k_, bool has_bias) : Module("DWConv2d"), channels(C), k(k_) {
  NALA_CHECK(C > 0 && k > 0 && k % 2 == 1, "DWConv2d: bad arguments C=", C, " k=", k, " (k must be odd)");
  weight = register_parameter("weight", Tensor::zeros({C, 1, k, k}));
  if (has_bias) bias = register_parameter("bias", Tensor::zeros({C}));
}

Tensor DWConv2d::forward(const Tensor& x) { return dwconv2d(x, weight, bias); }
Tensor DWConv2d::forward_add(const Tensor& x, const Tensor& add) { return dwconv2d(x, weight, bias, add); }
Tensor DWConv2d::forward_gelu_add(const Tensor& pre) { return dwconv2d_gelu_add(pre, weight, bias); }

BatchNorm::BatchNorm(int64_t C, float eps_, float momentum_)
    : Module("BatchNorm"), channels(C), eps(eps_), momentum(momentum_) {
  NALA_CHECK(C > 0, "BatchNorm: bad channel count ", C);
  weight = register_parameter("weight", Tensor::ones({C}));
  bias = register_parameter("bias", Tensor::zeros({C}));
  running_mean = register_buffer("running_mean", Tensor::zeros({C}));
  running_var = register_buffer("running_var", Tensor::ones({C}));
  num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::I64));
}

Tensor BatchNorm::forward(const Tensor& x) {
  bool tr = is_training();
  Tensor y = tr && sync ? batchnorm_sync(x, weight, bias, running_mean, running_var, momentum, eps, dim, sync)
                        : batchnorm(x, weight, bias, running_mean, running_var, tr, momentum, eps, dim);
  if (tr) {
    if (num_batches_tracked.device() == Device::CPU) num_batches_tracked.i64()[0] += 1;
    else device::increment_i64(num_batches_tracked.i64());  // no host round trip
  }
  return y;
}

std::pair<Tensor, Tensor> BatchNorm::eval_affine() const {
  NoGradGuard ng;
  Tensor scale = div(weight, sqrt(add_scalar(running_var, eps)));
  return {scale, sub(bias, mul(running_mean, scale))};
}

LayerNorm::LayerNorm(int64_t C, float eps_) : Module("LayerNorm"), channels(C), eps(eps_) {
  NALA_CHECK(C > 0, "LayerNorm: bad channel count ", C);
  weight = register_parameter("weight", Tensor::ones({C}));
  bias = register_parameter("bias", Tensor::zeros({C}));
}

Tensor LayerNorm::forward(const Tensor& x) { return layernorm(x, weight, bias, eps, dim); }
Tensor LayerNorm::forward(const Tensor& x, DType out) { return layernorm(x, weight, bias, eps, dim, out); }
Tensor LayerNorm::forward_gate(const Tensor& x, const Tensor& g, DType out) {
  NALA_CHECK(dim == -1 || dim == x.dim() - 1, "LayerNorm::forward_gate normalises the last dim only, not ", dim);
  return layernorm_gate(x, g, weight, bias, eps, out);
}

GELU::GELU() : Module("GELU") {}
Tensor GELU::forward(const Tensor& x) { return gelu(x); }

SiLU::SiLU() : Module("SiLU") {}
Tensor SiLU::forward(const Tensor& x) { return silu(x); }

Identity::Identity() : Module("Identity") {}

DropPath::DropPath(float p_, Rng* rng_) : Module("DropPath"), p(p_), rng(rng_) {
  NALA_CHECK(p >= 0.0f && p < 1.0f, "DropPath: probability ", p, " outside [0, 1)");
  NALA_CHECK(p == 0.0f || rng != nullptr, "DropPath: p = ", p, " needs an Rng");
}

Tensor DropPath::forward(const Tensor& x) {
  if (!active()) return x;
  return drop_path(x, p, *rng, true);
}

Tensor DropPath::mask(int64_t B, Device dev) {
  NALA_CHECK(active(), "DropPath::mask: stochastic depth is off (eval, or p = 0)");
  return drop_path_mask(B, p, *rng, dev);
}

Tensor layer_scale(const Tensor& x, const Tensor& gamma) {
  NALA_CHECK(x.defined() && gamma.defined() && x.dim() >= 1, "layer_scale: bad inputs");
  int64_t C = x.size(-1);
  const Shape& g = gamma.shape();
  bool ok = (g == Shape{1, C, 1, 1}) || (g == Shape{C});
  NALA_CHECK(ok, "layer_scale: gamma ", gamma.desc(), " does not match the channels of x ", x.desc(),
             " (expected [1, ", C, ", 1, 1] or [", C, "])");
  return mul(x, g.size() == 1 ? gamma : reshape(gamma, {C}));
}

}  // namespace nala
